# State scripts from any recipe (the contract of meta-mender's class of the
# same name, so existing recipes build unchanged):
#
#   inherit mender-state-scripts
#   do_compile() {
#       cp ${S}/my-script ${MENDER_STATE_SCRIPTS_DIR}/ArtifactInstall_Leave_50_check
#   }
#
# Scripts found under MENDER_STATE_SCRIPTS (by default ${S}/mender-state-scripts
# and ${MENDER_STATE_SCRIPTS_DIR}, both created for the recipe before
# do_configure) go:
#   Idle*, Sync*, Download*  -> ${sysconfdir}/mender/scripts/ (rootfs, package)
#   Artifact*                -> ${DEPLOY_DIR_IMAGE}/mender-state-scripts/ (into the Artifact)
# Every name must be <State>_<Enter|Leave|Error>_NN[_text] with one of the
# nine states: anything else stops the build with an error naming the script
# (the client would refuse it at run time). The logic is in
# lib/mender_rs/statescripts.py, tested by tests/yocto/.
#
# Deployed scripts are not removed when a recipe stops providing them: after
# removing such a recipe, clean it (bitbake -c clean <recipe>).

inherit deploy

MENDER_STATE_SCRIPTS_DIR = "${B}/mender-state-scripts"
MENDER_STATE_SCRIPTS ?= "${S}/mender-state-scripts ${MENDER_STATE_SCRIPTS_DIR}"

do_create_default_script_dirs() {
    mkdir -p ${S}/mender-state-scripts ${MENDER_STATE_SCRIPTS_DIR}
}
do_create_default_script_dirs[doc] = "Creates the directories state scripts are copied into"
addtask create_default_script_dirs after do_patch before do_configure

python mender_state_scripts_install() {
    import os
    dest = d.expand('${D}${sysconfdir}/mender/scripts')
    try:
        names = mender_rs.statescripts.install(d.getVar('MENDER_STATE_SCRIPTS'), dest)
    except mender_rs.statescripts.BadScript as e:
        bb.fatal(str(e))
    for n in names:
        bb.note("state script %s -> %s" % (n, d.expand('${sysconfdir}/mender/scripts')))
}
do_install[postfuncs] += "mender_state_scripts_install"

python mender_state_scripts_deploy() {
    dest = d.expand('${DEPLOYDIR}/mender-state-scripts')
    try:
        names = mender_rs.statescripts.deploy(d.getVar('MENDER_STATE_SCRIPTS'), dest)
    except mender_rs.statescripts.BadScript as e:
        bb.fatal(str(e))
    for n in names:
        bb.note("state script %s -> Artifact (deployed to mender-state-scripts/)" % n)
}
do_deploy[postfuncs] += "mender_state_scripts_deploy"

# For recipes that deploy nothing else; a recipe's own do_deploy replaces it
# and the scripts are still deployed.
do_deploy() {
    :
}
addtask deploy after do_compile before do_build

FILES:${PN} += "${sysconfdir}/mender/scripts"
