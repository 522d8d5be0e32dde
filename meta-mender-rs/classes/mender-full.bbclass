# Enables mender-rs with the default feature set, as meta-mender's class of
# the same name does: in local.conf, INHERIT += "mender-full".
#
# GRUB on UEFI by default. For U-Boot on an SD card or eMMC:
#   MENDER_FEATURES_ENABLE:append = " mender-uboot mender-image-sd"
#   MENDER_FEATURES_DISABLE:append = " mender-grub mender-image-uefi"

MENDER_FEATURES_ENABLE:append = " mender-grub mender-image mender-image-uefi \
    mender-client-install mender-systemd"

inherit mender-setup
