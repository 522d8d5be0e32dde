SUMMARY = "mender-rs over-the-air update client"
DESCRIPTION = "A drop-in replacement for the Mender client written in Rust: \
standalone and managed A/B rootfs updates, state scripts and Update Modules."
HOMEPAGE = "https://mender.io"
SECTION = "console/tools"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=6;endline=6;md5=5a2f4068ae5dbca1b150c08d956f10a5"

# The source: the project's git repository by default. Override the URL,
# branch and revision (for a mirror or a release) in local.conf or a
# .bbappend. For development from a local checkout, set MENDER_RS_SRC_DIR
# to its absolute path (the recipe then builds that tree with externalsrc;
# Cargo.lock must match mender-rs-crates.inc: run scripts/gen-crates-inc).
MENDER_RS_GIT_URI ??= "git://github.com/mender-rs/mender-rs.git"
MENDER_RS_GIT_PROTOCOL ??= "https"
MENDER_RS_GIT_BRANCH ??= "main"
MENDER_RS_SRCREV ??= "843ed64b150bddd53797b8d7801ea1125a42cf78"
MENDER_RS_SRC_DIR ??= ""

PV = "0.1.0+git"

SRC_URI = "${MENDER_RS_GIT_URI};protocol=${MENDER_RS_GIT_PROTOCOL};branch=${MENDER_RS_GIT_BRANCH} \
           file://mender-data-dir.service \
           file://mender-rs-data-dir.conf \
           "
SRCREV = "${MENDER_RS_SRCREV}"

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd mender-setup
inherit_defer ${@'externalsrc' if d.getVar('MENDER_RS_SRC_DIR') else ''}
EXTERNALSRC = "${MENDER_RS_SRC_DIR}"

# The device build leaves out the artifact writer and its encoders and
# keeps the take-over of the Mender client's store (docs/takeover.md); the
# native build keeps the writer for the image classes (mender-rs artifact
# write).
CARGO_BUILD_FLAGS:append:class-target = " --no-default-features --features mender-store"
CARGO_BUILD_FLAGS:append:class-native = " --no-default-features --features writer"
# Cargo's release profile strips; OE strips itself and keeps -dbg packages.
export CARGO_PROFILE_RELEASE_STRIP = "false"

PACKAGECONFIG ??= "compat-links split-mender-config"
PACKAGECONFIG:class-native = ""
# `mender`, `mender-update` and `mender-auth` links to mender-rs, for scripts
# and units written for Mender 3.x to 5.x.
PACKAGECONFIG[compat-links] = ""
# RootfsPartA/B in /data/mender/mender.conf, outside the updated rootfs.
PACKAGECONFIG[split-mender-config] = ""
# D-Bus API (cargo feature `dbus`, libdbus through pkg-config) and its policy files.
PACKAGECONFIG[dbus] = "--features dbus,,dbus,dbus"
# Device keys encrypted with a passphrase (`mender-auth --passphrase-file`;
# about 70 KiB of decryption code).
PACKAGECONFIG[encrypted-keys] = "--features encrypted-keys"

# Configuration (spec 6.2, 6.4). Empty values are left out of mender.conf.
MENDER_SERVER_URL ??= "https://docker.mender.io"
MENDER_TENANT_TOKEN ??= "dummy"
MENDER_UPDATE_POLL_INTERVAL_SECONDS ??= "1800"
MENDER_INVENTORY_POLL_INTERVAL_SECONDS ??= "28800"
MENDER_RETRY_POLL_INTERVAL_SECONDS ??= "300"
MENDER_ARTIFACT_VERIFY_KEY ??= ""
MENDER_PERSISTENT_CONFIGURATION_VARS ??= "${@bb.utils.contains('PACKAGECONFIG', 'split-mender-config', 'RootfsPartA RootfsPartB', '', d)}"
# The layout (MENDER_ROOTFS_PART_A/B), the boot environment settings and
# MENDER_DEVICE_TYPE come from mender-setup.bbclass.

MENDER_RS_CONF_VARS = "MENDER_SERVER_URL MENDER_TENANT_TOKEN MENDER_UPDATE_POLL_INTERVAL_SECONDS \
    MENDER_INVENTORY_POLL_INTERVAL_SECONDS MENDER_RETRY_POLL_INTERVAL_SECONDS MENDER_ROOTFS_PART_A \
    MENDER_ROOTFS_PART_B MENDER_RS_BOOT_ENV_TYPE MENDER_RS_BOOT_ENV_CONFIG MENDER_RS_GRUB_ENV_DIR \
    MENDER_PERSISTENT_CONFIGURATION_VARS MENDER_ARTIFACT_VERIFY_KEY"

python do_mender_rs_conf() {
    import os
    out = os.path.join(d.getVar('B'), 'mender-rs-conf')
    os.makedirs(out, exist_ok=True)
    key = d.getVar('MENDER_ARTIFACT_VERIFY_KEY')
    srckey = os.path.join(d.getVar('UNPACKDIR'), 'artifact-verify-key.pem')
    keyfile = os.path.join(out, 'artifact-verify-key.pem')
    if os.path.exists(keyfile):
        os.unlink(keyfile)
    if key:
        if not os.path.isfile(key):
            bb.fatal("MENDER_ARTIFACT_VERIFY_KEY = '%s': no such file" % key)
        bb.utils.copyfile(key, keyfile)
    elif os.path.isfile(srckey):
        bb.utils.copyfile(srckey, keyfile)
    user = None
    userconf = os.path.join(d.getVar('UNPACKDIR'), 'mender.conf')
    if os.path.isfile(userconf):
        with open(userconf) as f:
            user = f.read()
    try:
        transient, persistent, warnings = mender_rs.menderconf.generate(d.getVar, user, os.path.exists(keyfile))
    except ValueError as e:
        bb.fatal(str(e))
    for w in warnings:
        bb.warn(w)
    with open(os.path.join(out, 'mender.conf'), 'w') as f:
        f.write(mender_rs.menderconf.dumps(transient))
    with open(os.path.join(out, 'mender.conf.data'), 'w') as f:
        f.write(mender_rs.menderconf.dumps(persistent))
}
do_mender_rs_conf[vardeps] += "${MENDER_RS_CONF_VARS}"
do_mender_rs_conf[file-checksums] += "${@d.getVar('MENDER_ARTIFACT_VERIFY_KEY') + ':True' if d.getVar('MENDER_ARTIFACT_VERIFY_KEY') else ''}"
do_mender_rs_conf[doc] = "Writes mender.conf (transient and persistent parts) from the MENDER_* variables"
addtask mender_rs_conf after do_compile before do_install

SYSTEMD_SERVICE:${PN} = "mender-rs.service mender-data-dir.service"

do_install:append:class-target() {
    if ${@bb.utils.contains('PACKAGECONFIG', 'compat-links', 'true', 'false', d)}; then
        ln -sf mender-rs ${D}${bindir}/mender
        ln -sf mender-rs ${D}${bindir}/mender-update
        ln -sf mender-rs ${D}${bindir}/mender-auth
    fi

    # Configuration, device type, verification key.
    install -d -m 0755 ${D}${sysconfdir}/mender/scripts
    install -m 0600 ${B}/mender-rs-conf/mender.conf ${D}${sysconfdir}/mender/mender.conf
    if [ -f ${B}/mender-rs-conf/artifact-verify-key.pem ]; then
        install -m 0644 ${B}/mender-rs-conf/artifact-verify-key.pem ${D}${sysconfdir}/mender/artifact-verify-key.pem
    fi
    install -d -m 0700 ${D}${MENDER_RS_DATA_DIR}
    if [ "$(cat ${B}/mender-rs-conf/mender.conf.data)" != "{}" ]; then
        install -m 0600 ${B}/mender-rs-conf/mender.conf.data ${D}${MENDER_RS_DATA_DIR}/mender.conf
    fi
    printf 'device_type=%s\n' "${MENDER_DEVICE_TYPE}" > ${D}${MENDER_RS_DATA_DIR}/device_type
    chmod 0444 ${D}${MENDER_RS_DATA_DIR}/device_type
    # The state directory lives on the data partition.
    install -d ${D}${localstatedir}/lib
    ln -sf ${MENDER_RS_DATA_DIR} ${D}${localstatedir}/lib/mender

    # Daemon unit and the data directory service.
    if [ ! -f ${S}/support/mender-rs.service ]; then
        bbfatal "support/mender-rs.service is missing from the mender-rs source (${S})"
    fi
    install -d ${D}${systemd_system_unitdir}/mender-rs.service.d
    install -m 0644 ${S}/support/mender-rs.service ${D}${systemd_system_unitdir}/mender-rs.service
    install -m 0644 ${UNPACKDIR}/mender-data-dir.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${UNPACKDIR}/mender-rs-data-dir.conf ${D}${systemd_system_unitdir}/mender-rs.service.d/data-dir.conf
    # The Mender 4.x/5.x service names, as aliases of the one daemon, so that
    # `systemctl restart mender-updated` works even with the unit disabled.
    ln -sf mender-rs.service ${D}${systemd_system_unitdir}/mender-updated.service
    ln -sf mender-rs.service ${D}${systemd_system_unitdir}/mender-authd.service

    # Identity and inventory scripts, the Update Modules we ship.
    install -d ${D}${datadir}/mender/identity ${D}${datadir}/mender/inventory ${D}${datadir}/mender/modules/v3
    install -m 0755 ${S}/support/mender-device-identity ${D}${datadir}/mender/identity/mender-device-identity
    for f in ${S}/support/inventory/mender-inventory-*; do
        [ -f "$f" ] && install -m 0755 "$f" ${D}${datadir}/mender/inventory/
    done
    if [ -d ${S}/support/modules ]; then
        for f in ${S}/support/modules/*; do
            if [ -f "$f" ] && [ -x "$f" ]; then
                install -m 0755 "$f" ${D}${datadir}/mender/modules/v3/
            fi
        done
    fi

    if ${@bb.utils.contains('PACKAGECONFIG', 'dbus', 'true', 'false', d)}; then
        install -d ${D}${datadir}/dbus-1/system.d
        for f in ${S}/support/dbus/*.conf; do
            [ -f "$f" ] && install -m 0644 "$f" ${D}${datadir}/dbus-1/system.d/
        done
    fi
}

FILES:${PN} += "${systemd_system_unitdir}/mender-rs.service.d \
    ${systemd_system_unitdir}/mender-updated.service \
    ${systemd_system_unitdir}/mender-authd.service \
    ${datadir}/mender \
    ${datadir}/dbus-1/system.d \
    ${MENDER_RS_DATA_DIR} \
    "
CONFFILES:${PN} = "${sysconfdir}/mender/mender.conf"
# The inventory and identity scripts are shell scripts.
RDEPENDS:${PN}:class-target = "${VIRTUAL-RUNTIME_base-utils} ${@bb.utils.contains('MENDER_FEATURES', 'mender-uboot', 'u-boot-mender-rs', '', d)}"

# The links take the names of the Mender clients' binaries; the unit
# aliases take the names of the 4.x/5.x services (packages mender-auth and
# mender-update of meta-mender).
RCONFLICTS:${PN} = "mender-auth mender-update ${@bb.utils.contains('PACKAGECONFIG', 'compat-links', 'mender-client', '', d)}"

BBCLASSEXTEND = "native"
