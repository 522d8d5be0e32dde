# Shared by the U-Boot recipes of meta-mender-rs: fills in the @MENDER_...@
# placeholders of mender-rs-uboot-env.txt and the defines of boot.cmd for
# the machine.

inherit kernel-arch

MENDER_BOOT_KERNEL_TYPE ??= "${@mender_rs_kernel_boot_cmd(d)}"

def mender_rs_kernel_boot_cmd(d):
    t = d.getVar('MENDER_KERNEL_IMAGETYPE') or ''
    if t in ('uImage', 'fitImage'):
        return 'bootm'
    if t.startswith('Image') and d.getVar('TARGET_ARCH') in ('aarch64', 'riscv64', 'riscv32'):
        return 'booti'
    if t in ('bzImage', 'vmlinuz'):
        return 'zboot'
    return 'bootz'

mender_rs_uboot_env_subst() {
    sed -e 's|@MENDER_ROOTFS_PART_A_NUMBER@|${MENDER_ROOTFS_PART_A_NUMBER}|g' \
        -e 's|@MENDER_ROOTFS_PART_B_NUMBER@|${MENDER_ROOTFS_PART_B_NUMBER}|g' \
        -e 's|@MENDER_ROOTFS_PART_A_NUMBER_HEX@|${@mender_rs.layout.hexnum(d.getVar('MENDER_ROOTFS_PART_A_NUMBER'))}|g' \
        -e 's|@MENDER_ROOTFS_PART_B_NUMBER_HEX@|${@mender_rs.layout.hexnum(d.getVar('MENDER_ROOTFS_PART_B_NUMBER'))}|g' \
        -e 's|@MENDER_UBOOT_STORAGE_INTERFACE@|${MENDER_UBOOT_STORAGE_INTERFACE}|g' \
        -e 's|@MENDER_UBOOT_STORAGE_DEVICE@|${MENDER_UBOOT_STORAGE_DEVICE}|g' \
        -e 's|@MENDER_STORAGE_DEVICE_BASE@|${MENDER_STORAGE_DEVICE_BASE}|g' \
        -e 's|@MENDER_KERNEL_IMAGETYPE@|${MENDER_KERNEL_IMAGETYPE}|g' \
        -e 's|@MENDER_DTB_NAME@|${MENDER_DTB_NAME}|g' \
        -e 's|@MENDER_BOOT_KERNEL_TYPE@|${MENDER_BOOT_KERNEL_TYPE}|g' \
        "$1" > "$2"
    if grep -n '@MENDER_[A-Z_]*@' "$2"; then
        bbfatal "$1: placeholders left unreplaced (above)"
    fi
}

# boot.cmd's defines block, set for the machine.
mender_rs_boot_cmd_subst() {
    sed -e 's|^setenv mender_rootfsa_part .*|setenv mender_rootfsa_part ${MENDER_ROOTFS_PART_A_NUMBER}|' \
        -e 's|^setenv mender_rootfsb_part .*|setenv mender_rootfsb_part ${MENDER_ROOTFS_PART_B_NUMBER}|' \
        -e 's|^setenv mender_rootfsa_part_hex .*|setenv mender_rootfsa_part_hex ${@mender_rs.layout.hexnum(d.getVar('MENDER_ROOTFS_PART_A_NUMBER'))}|' \
        -e 's|^setenv mender_rootfsb_part_hex .*|setenv mender_rootfsb_part_hex ${@mender_rs.layout.hexnum(d.getVar('MENDER_ROOTFS_PART_B_NUMBER'))}|' \
        -e 's|^setenv mender_kernel_root_base .*|setenv mender_kernel_root_base ${MENDER_STORAGE_DEVICE_BASE}|' \
        -e 's|^setenv mender_kernel_path .*|setenv mender_kernel_path /boot/${MENDER_KERNEL_IMAGETYPE}|' \
        -e 's|^setenv mender_initrd_path .*|setenv mender_initrd_path ${MENDER_RS_INITRD_PATH}|' \
        -e 's|^setenv mender_boot_kernel_type .*|setenv mender_boot_kernel_type ${MENDER_BOOT_KERNEL_TYPE}|' \
        -e 's|^setenv mender_kernel_args .*|setenv mender_kernel_args "${MENDER_RS_KERNEL_ARGS}"|' \
        -e 's|^setenv mender_env_file .*|setenv mender_env_file uboot.env|' \
        -e 's|^setenv mender_env_size .*|setenv mender_env_size ${MENDER_UBOOT_ENV_FILE_SIZE}|' \
        "$1" > "$2"
    for v in mender_rootfsa_part mender_rootfsb_part mender_kernel_root_base mender_kernel_path mender_boot_kernel_type mender_env_size; do
        grep -q "^setenv $v " "$2" || bbfatal "$1: no 'setenv $v' line in its defines block"
    done
}
MENDER_RS_INITRD_PATH ??= "/boot/initrd"
# The board's text environment file in the U-Boot source (u-boot bbappend).
MENDER_UBOOT_ENV_TEXT_FILE ??= ""
