SUMMARY = "mender-rs GRUB integration: grub.cfg, its defines and the two-copy environment"
DESCRIPTION = "The boot partition's files for mender-grub: GRUB EFI, the \
mender-rs grub.cfg (A/B with bootcount rollback), mender_grubenv_defines for \
the machine's layout, and the initial environment copies mender_grubenv1/ and \
mender_grubenv2/ (env, lock, lock.sha256sum) written by the client's code."
HOMEPAGE = "https://mender.io"
SECTION = "bootloaders"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

DEPENDS = "mender-rs-native"

SRC_URI = "file://grub.cfg"
S = "${UNPACKDIR}"

inherit deploy nopackages mender-setup
require conf/image-uefi.conf

PACKAGE_ARCH = "${MACHINE_ARCH}"
COMPATIBLE_HOST = "(x86_64.*|i.86.*|aarch64.*|arm.*|riscv.*|loongarch64.*)-(linux.*|elf)"

MENDER_RS_GRUB_STORAGE_DEVICE ??= ""
MENDER_RS_INITRD_IMAGETYPE ??= ""

do_compile() {
    {
        echo "mender_rootfsa_part=${MENDER_ROOTFS_PART_A_NUMBER}"
        echo "mender_rootfsb_part=${MENDER_ROOTFS_PART_B_NUMBER}"
        echo "mender_kernel_root_base=${MENDER_STORAGE_DEVICE_BASE}"
        echo "kernel_imagetype=${MENDER_KERNEL_IMAGETYPE}"
        if [ -n "${MENDER_RS_INITRD_IMAGETYPE}" ]; then echo "initrd_imagetype=${MENDER_RS_INITRD_IMAGETYPE}"; fi
        if [ -n "${MENDER_RS_GRUB_STORAGE_DEVICE}" ]; then echo "mender_grub_storage_device=${MENDER_RS_GRUB_STORAGE_DEVICE}"; fi
        echo "mender_kernel_args=\"${MENDER_RS_KERNEL_ARGS}\""
    } > ${B}/mender_grubenv_defines

    # Both environment copies, locks and checksums, by the client's code.
    rm -rf ${B}/env && mkdir -p ${B}/env/data ${B}/env/grub-mender-grubenv/mender_grubenv1 ${B}/env/grub-mender-grubenv/mender_grubenv2
    printf '{"RootfsPartA": "%s", "RootfsPartB": "%s", "BootEnvType": "grub", "GrubEnvDir": "%s"}\n' \
        "${MENDER_ROOTFS_PART_A}" "${MENDER_ROOTFS_PART_B}" "${B}/env/grub-mender-grubenv" > ${B}/env/mender.conf
    mender-rs --config ${B}/env/mender.conf --data ${B}/env/data --no-syslog bootenv set --create \
        mender_boot_part=${MENDER_ROOTFS_PART_A_NUMBER} \
        mender_boot_part_hex=${@mender_rs.layout.hexnum(d.getVar('MENDER_ROOTFS_PART_A_NUMBER'))} \
        upgrade_available=0 bootcount=0
    for i in 1 2; do
        for f in env lock lock.sha256sum; do
            [ -f ${B}/env/grub-mender-grubenv/mender_grubenv$i/$f ] || bbfatal "the client did not write mender_grubenv$i/$f"
        done
    done
}

# The boot partition, as the wic layouts take it (mender-rs-boot/ whole):
#   EFI/BOOT/boot<arch>.efi, EFI/BOOT/grub.cfg, EFI/BOOT/mender_grubenv_defines,
#   grub-mender-grubenv/mender_grubenv{1,2}/{env,lock,lock.sha256sum}
do_deploy() {
    rm -rf ${DEPLOYDIR}/mender-rs-boot
    install -d ${DEPLOYDIR}/mender-rs-boot${EFIDIR}
    install -m 0644 ${DEPLOY_DIR_IMAGE}/grub-efi-${EFI_BOOT_IMAGE} ${DEPLOYDIR}/mender-rs-boot${EFIDIR}/${EFI_BOOT_IMAGE}
    install -m 0644 ${UNPACKDIR}/grub.cfg ${DEPLOYDIR}/mender-rs-boot${EFIDIR}/grub.cfg
    install -m 0644 ${B}/mender_grubenv_defines ${DEPLOYDIR}/mender-rs-boot${EFIDIR}/mender_grubenv_defines
    cp -R ${B}/env/grub-mender-grubenv ${DEPLOYDIR}/mender-rs-boot/
}
do_deploy[depends] += "grub-efi:do_deploy"
addtask deploy after do_compile before do_build
