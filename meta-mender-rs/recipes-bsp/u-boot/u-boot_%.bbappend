# meta-mender-rs, only with the mender-uboot feature and
# MENDER_UBOOT_ENV_STORAGE = "device": the Mender settings (bootlimit,
# altbootcmd switching back, the save-env canary, ...) are appended to the
# board's text environment file, MENDER_UBOOT_ENV_TEXT_FILE (a path inside
# the U-Boot source, e.g. board/emulation/qemu-arm/qemu-arm.env), so they are
# part of U-Boot's default environment. The board's U-Boot configuration must
# keep the environment on the storage device with redundant copies at
# MENDER_UBOOT_ENV_STORAGE_DEVICE_OFFSET_1/_2 and BOOTENV_SIZE, and enable
# CONFIG_BOOTCOUNT_LIMIT and CONFIG_BOOTCOUNT_ENV.
FILESEXTRAPATHS:prepend:mender-uboot := "${THISDIR}/files:"
SRC_URI:append:mender-uboot = " file://mender-rs-uboot-env.txt"

inherit_defer ${@'mender-rs-uboot' if 'mender-uboot' in (d.getVar('MENDER_FEATURES') or '').split() else ''}

do_configure:prepend:mender-uboot() {
    if [ "${MENDER_UBOOT_ENV_STORAGE}" = "device" ]; then
        if [ -z "${MENDER_UBOOT_ENV_TEXT_FILE}" ]; then
            bbfatal "MENDER_UBOOT_ENV_STORAGE is 'device': set MENDER_UBOOT_ENV_TEXT_FILE to the board's .env file in the U-Boot source"
        fi
        if ! grep -q '^mender_setup=' ${S}/${MENDER_UBOOT_ENV_TEXT_FILE}; then
            mender_rs_uboot_env_subst ${UNPACKDIR}/mender-rs-uboot-env.txt ${B}/mender-rs-uboot-env.txt
            cat ${B}/mender-rs-uboot-env.txt >> ${S}/${MENDER_UBOOT_ENV_TEXT_FILE}
        fi
    fi
}
