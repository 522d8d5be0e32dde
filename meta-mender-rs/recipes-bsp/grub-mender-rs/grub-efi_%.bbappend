# meta-mender-rs, only with the mender-grub feature: the GRUB modules the
# mender-rs grub.cfg uses, built into the EFI image (the boot partition has
# no module directory).
GRUB_BUILDIN:append:mender-grub = " echo regexp sleep reboot halt true gzio minicmd search_fs_file search_fs_uuid search_label"
