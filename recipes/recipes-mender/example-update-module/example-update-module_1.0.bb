SUMMARY = "Example mender-rs Update Module: installs single files with rollback"
DESCRIPTION = "An Update Module (protocol v3) named example-file. The image's \
Artifact advertises it (rootfs-image.update-module.example-file.*). Artifacts \
for it: mender-rs artifact write module-image -T example-file -f FILE ..."
HOMEPAGE = "https://mender.io"
SECTION = "console/tools"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://example-file"
S = "${UNPACKDIR}"

do_install() {
    install -d ${D}${datadir}/mender/modules/v3
    install -m 0755 ${UNPACKDIR}/example-file ${D}${datadir}/mender/modules/v3/example-file
}

FILES:${PN} += "${datadir}/mender/modules/v3/example-file"
RDEPENDS:${PN} = "${VIRTUAL-RUNTIME_base-utils} mender-rs"
