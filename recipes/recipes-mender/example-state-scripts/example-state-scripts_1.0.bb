SUMMARY = "Example mender-rs state scripts, one for each of the nine states"
DESCRIPTION = "Idle, Sync and Download scripts go into the root filesystem; \
the Artifact* ones into every Artifact the image build writes. Each one logs \
its name to stderr, which the client keeps in the deployment log."
HOMEPAGE = "https://mender.io"
SECTION = "console/tools"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://log-state"
S = "${UNPACKDIR}"

inherit mender-state-scripts

# One script per state; for the two reboot states the Leave scripts, which
# run once the device is back up.
EXAMPLE_STATE_SCRIPTS = "Idle_Enter_10_log \
    Sync_Enter_10_log \
    Download_Enter_10_log \
    ArtifactInstall_Enter_10_log \
    ArtifactReboot_Leave_10_log \
    ArtifactCommit_Enter_10_log \
    ArtifactRollback_Enter_10_log \
    ArtifactRollbackReboot_Leave_10_log \
    ArtifactFailure_Enter_10_log \
    "

do_compile() {
    for name in ${EXAMPLE_STATE_SCRIPTS}; do
        install -m 0755 ${UNPACKDIR}/log-state ${MENDER_STATE_SCRIPTS_DIR}/$name
    done
}

RDEPENDS:${PN} = "${VIRTUAL-RUNTIME_base-utils}"
