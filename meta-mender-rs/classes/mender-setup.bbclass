# meta-mender-rs settings: features, the A/B layout variables and their
# defaults (the ones meta-mender users already set, spec 6.2), and the
# image classes. Inherited globally through mender-full (or directly with
# INHERIT += "mender-setup" and your own MENDER_FEATURES_ENABLE).

# ---- features --------------------------------------------------------------
MENDER_FEATURES_ENABLE ??= ""
MENDER_FEATURES_DISABLE ??= ""
# Computed: never set it, use MENDER_FEATURES_ENABLE / _DISABLE.
MENDER_FEATURES = "${@' '.join(mender_rs.features.compute(d.getVar('MENDER_FEATURES_ENABLE'), d.getVar('MENDER_FEATURES_DISABLE')))}"
# Every feature is an override: FOO:mender-uboot = "...".
DISTROOVERRIDES:append = "${@mender_rs.features.overrides(mender_rs.features.compute(d.getVar('MENDER_FEATURES_ENABLE'), d.getVar('MENDER_FEATURES_DISABLE')))}"

python mender_rs_check_features() {
    feats = mender_rs.features.compute(e.data.getVar('MENDER_FEATURES_ENABLE'), e.data.getVar('MENDER_FEATURES_DISABLE'))
    errors = mender_rs.features.check(feats)
    if errors:
        bb.fatal("meta-mender-rs: " + "; ".join(errors))
}
addhandler mender_rs_check_features
mender_rs_check_features[eventmask] = "bb.event.ConfigParsed"

# ---- storage and partitions --------------------------------------------------
MENDER_STORAGE_DEVICE ??= "/dev/mmcblk0"
MENDER_STORAGE_DEVICE_BASE ??= "${@mender_rs.layout.device_base(d.getVar('MENDER_STORAGE_DEVICE'))}"
MENDER_STORAGE_TOTAL_SIZE_MB ??= "1024"
MENDER_STORAGE_PEB_SIZE ??= "8388608"
MENDER_PARTITION_ALIGNMENT ??= "${MENDER_STORAGE_PEB_SIZE}"
MENDER_PARTITION_ALIGNMENT_KB = "${@mender_rs.layout.alignment(d.getVar) // 1024}"
MENDER_PARTITION_TABLE_TYPE ??= ""

MENDER_BOOT_PART_SIZE_MB ??= "16"
MENDER_BOOT_PART_FSTYPE ??= "auto"
MENDER_BOOT_PART_NUMBER ??= "${@mender_rs.layout.part_number(d.getVar, 'boot')}"
MENDER_BOOT_PART ??= "${@'${MENDER_STORAGE_DEVICE_BASE}${MENDER_BOOT_PART_NUMBER}' if d.getVar('MENDER_BOOT_PART_NUMBER') else ''}"
MENDER_BOOT_PART_MOUNT_LOCATION ??= "${@'/uboot' if 'mender-uboot' in d.getVar('MENDER_FEATURES').split() else '/boot/efi'}"

MENDER_ROOTFS_PART_A_NUMBER ??= "${@mender_rs.layout.part_number(d.getVar, 'a')}"
MENDER_ROOTFS_PART_B_NUMBER ??= "${@mender_rs.layout.part_number(d.getVar, 'b')}"
MENDER_ROOTFS_PART_A ??= "${MENDER_STORAGE_DEVICE_BASE}${MENDER_ROOTFS_PART_A_NUMBER}"
MENDER_ROOTFS_PART_B ??= "${MENDER_STORAGE_DEVICE_BASE}${MENDER_ROOTFS_PART_B_NUMBER}"
MENDER_ROOTFS_PART_A_NAME ??= "${MENDER_ROOTFS_PART_A}"
MENDER_ROOTFS_PART_B_NAME ??= "${MENDER_ROOTFS_PART_B}"

MENDER_SWAP_PART_SIZE_MB ??= "0"
MENDER_SWAP_PART_NUMBER ??= "${@mender_rs.layout.part_number(d.getVar, 'swap')}"

MENDER_DATA_PART_SIZE_MB ??= "128"
MENDER_DATA_PART_FSTYPE ??= "auto"
MENDER_DATA_PART_FSTYPE_TO_GEN ??= "${@d.getVar('ARTIFACTIMG_FSTYPE') if d.getVar('MENDER_DATA_PART_FSTYPE') == 'auto' else d.getVar('MENDER_DATA_PART_FSTYPE')}"
MENDER_DATA_PART_NUMBER ??= "${@mender_rs.layout.part_number(d.getVar, 'data')}"
MENDER_DATA_PART ??= "${MENDER_STORAGE_DEVICE_BASE}${MENDER_DATA_PART_NUMBER}"

MENDER_EXTRA_PARTS ??= ""

# Size of each rootfs partition in KiB (the rootfs image must fit).
MENDER_CALC_ROOTFS_SIZE = "${@mender_rs.layout.rootfs_size_kb(d.getVar)}"

# ---- boot environment --------------------------------------------------------
# U-Boot: "boot-file" keeps the Mender variables in uboot.env on the boot
# partition (boot.scr, works with an unpatched U-Boot); "device" uses the
# two environment copies U-Boot keeps on the storage device (the board's
# U-Boot needs CONFIG_ENV_IS_IN_MMC, CONFIG_ENV_REDUNDANT, the bootcount
# options, and MENDER_UBOOT_ENV_TEXT_FILE for the default settings).
MENDER_UBOOT_ENV_STORAGE ??= "boot-file"
MENDER_UBOOT_ENV_FILE_SIZE ??= "0x4000"
BOOTENV_SIZE ??= "0x20000"
MENDER_UBOOT_ENV_STORAGE_DEVICE_OFFSET ??= "${MENDER_PARTITION_ALIGNMENT}"
MENDER_UBOOT_ENV_STORAGE_DEVICE_OFFSET_1 = "${@hex(mender_rs.layout.uboot_env_offsets(d.getVar)[0])}"
MENDER_UBOOT_ENV_STORAGE_DEVICE_OFFSET_2 = "${@hex(mender_rs.layout.uboot_env_offsets(d.getVar)[1])}"
MENDER_RESERVED_SPACE_BOOTLOADER_DATA ??= "${@mender_rs.layout.reserved_bootloader_space(d.getVar)}"
MENDER_UBOOT_STORAGE_INTERFACE ??= "mmc"
MENDER_UBOOT_STORAGE_DEVICE ??= "${@(d.getVar('MENDER_STORAGE_DEVICE') or '').replace('/dev/mmcblk', '') if (d.getVar('MENDER_STORAGE_DEVICE') or '').startswith('/dev/mmcblk') else '0'}"
MENDER_KERNEL_IMAGETYPE_FORCE ??= ""

# What the client is told (mender.conf keys BootEnvType, BootEnvConfig, GrubEnvDir).
MENDER_RS_BOOT_ENV_TYPE ??= "${@'grub' if 'mender-grub' in d.getVar('MENDER_FEATURES').split() else 'uboot'}"
MENDER_RS_BOOT_ENV_CONFIG ??= "${@'/etc/fw_env.config' if d.getVar('MENDER_RS_BOOT_ENV_TYPE') == 'uboot' else ''}"
MENDER_RS_GRUB_ENV_DIR ??= "${@'${MENDER_BOOT_PART_MOUNT_LOCATION}/grub-mender-grubenv' if d.getVar('MENDER_RS_BOOT_ENV_TYPE') == 'grub' else ''}"
MENDER_RS_DATA_DIR ??= "/data/mender"

# Kernel the boot loaders load from /boot of the active rootfs.
MENDER_KERNEL_IMAGETYPE ??= "${@d.getVar('MENDER_KERNEL_IMAGETYPE_FORCE') or d.getVar('KERNEL_IMAGETYPE') or ''}"
MENDER_DTB_NAME ??= "${@os.path.basename((d.getVar('KERNEL_DEVICETREE') or '').split()[0]) if (d.getVar('KERNEL_DEVICETREE') or '').split() else ''}"
# Kernel command line after root=: the first serial console, rootwait.
MENDER_RS_KERNEL_ARGS ??= "${@' '.join(['console=%s,%s' % (c.split(';')[1], c.split(';')[0]) for c in (d.getVar('SERIAL_CONSOLES') or '').split()[:1] if ';' in c] + ['rootwait'])}"

# ---- artifacts ---------------------------------------------------------------
MENDER_DEVICE_TYPE ??= "${MACHINE}"
MENDER_DEVICE_TYPES_COMPATIBLE ??= "${MENDER_DEVICE_TYPE}"
MENDER_ARTIFACT_NAME ??= ""
MENDER_ARTIFACT_SIGNING_KEY ??= ""
MENDER_ARTIFACT_COMPRESSION ??= "gzip"
MENDER_ARTIFACT_EXTRA_ARGS ??= ""
MENDER_ARTIFACT_PROVIDES ??= ""
MENDER_ARTIFACT_PROVIDES_GROUP ??= ""
MENDER_ARTIFACT_DEPENDS ??= ""
MENDER_ARTIFACT_DEPENDS_GROUPS ??= ""
MENDER_ARTIFACT_NAME_DEPENDS ??= ""
ARTIFACTIMG_FSTYPE ??= "ext4"
MENDER_STATE_SCRIPTS_VERSION ??= "3"

# ---- images ------------------------------------------------------------------
IMAGE_CLASSES += "${@'mender-rs-image' if 'mender-image' in d.getVar('MENDER_FEATURES').split() else ''}"
IMAGE_INSTALL:append = "${@' kernel-image' + (' kernel-devicetree' if d.getVar('KERNEL_DEVICETREE') else '') if 'mender-image' in d.getVar('MENDER_FEATURES').split() else ''}"
IMAGE_INSTALL:append = "${@' mender-rs' if bb.utils.contains_any('MENDER_FEATURES', 'mender-client-install mender-update-install', True, False, d) else ''}"
