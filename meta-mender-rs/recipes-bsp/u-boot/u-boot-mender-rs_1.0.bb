SUMMARY = "mender-rs U-Boot integration: boot script, environment and fw_env.config"
DESCRIPTION = "Builds boot.scr from the mender-rs boot script with the machine's \
partition layout, the initial environment file of the boot partition, the \
default environment settings for boards keeping their environment on storage, \
and /etc/fw_env.config for the client."
HOMEPAGE = "https://mender.io"
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

DEPENDS = "mender-rs-native u-boot-tools-native"

SRC_URI = "file://boot.cmd \
           file://mender-rs-uboot-env.txt \
           "
S = "${UNPACKDIR}"

inherit deploy mender-setup mender-rs-uboot

PACKAGE_ARCH = "${MACHINE_ARCH}"

do_compile() {
    mender_rs_boot_cmd_subst ${UNPACKDIR}/boot.cmd ${B}/boot.cmd
    mkimage -A ${UBOOT_ARCH} -O linux -T script -C none -d ${B}/boot.cmd ${B}/boot.scr
    mender_rs_uboot_env_subst ${UNPACKDIR}/mender-rs-uboot-env.txt ${B}/mender-rs-uboot-env.txt

    # The environment file of the boot partition, written by the client's
    # own code (the format boot.scr imports and libubootenv reads).
    rm -rf ${B}/env && mkdir -p ${B}/env/data
    head -c $(printf '%d' ${MENDER_UBOOT_ENV_FILE_SIZE}) /dev/zero > ${B}/env/uboot.env
    echo "${B}/env/uboot.env 0x0 ${MENDER_UBOOT_ENV_FILE_SIZE}" > ${B}/env/fw_env.config
    printf '{"RootfsPartA": "%s", "RootfsPartB": "%s", "BootEnvType": "uboot", "BootEnvConfig": "%s"}\n' \
        "${MENDER_ROOTFS_PART_A}" "${MENDER_ROOTFS_PART_B}" "${B}/env/fw_env.config" > ${B}/env/mender.conf
    mender-rs --config ${B}/env/mender.conf --data ${B}/env/data --no-syslog bootenv set --create \
        mender_boot_part=${MENDER_ROOTFS_PART_A_NUMBER} \
        mender_boot_part_hex=${@mender_rs.layout.hexnum(d.getVar('MENDER_ROOTFS_PART_A_NUMBER'))} \
        upgrade_available=0 bootcount=0

    # What the client on the device uses.
    if [ "${MENDER_UBOOT_ENV_STORAGE}" = "device" ]; then
        printf '%s %s %s\n%s %s %s\n' \
            ${MENDER_STORAGE_DEVICE} ${MENDER_UBOOT_ENV_STORAGE_DEVICE_OFFSET_1} ${BOOTENV_SIZE} \
            ${MENDER_STORAGE_DEVICE} ${MENDER_UBOOT_ENV_STORAGE_DEVICE_OFFSET_2} ${BOOTENV_SIZE} > ${B}/fw_env.config
    else
        echo "${MENDER_BOOT_PART_MOUNT_LOCATION}/uboot.env 0x0 ${MENDER_UBOOT_ENV_FILE_SIZE}" > ${B}/fw_env.config
    fi
}

do_install() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${B}/fw_env.config ${D}${sysconfdir}/fw_env.config
}

# The boot partition's files (the wic layouts take mender-rs-boot/ whole).
do_deploy() {
    install -d ${DEPLOYDIR}/mender-rs-boot
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/mender-rs-boot/boot.scr
    if [ "${MENDER_UBOOT_ENV_STORAGE}" != "device" ]; then
        install -m 0644 ${B}/env/uboot.env ${DEPLOYDIR}/mender-rs-boot/uboot.env
    fi
    install -m 0644 ${B}/mender-rs-uboot-env.txt ${DEPLOYDIR}/mender-rs-uboot-env.txt
}
addtask deploy after do_compile before do_build

CONFFILES:${PN} = "${sysconfdir}/fw_env.config"
