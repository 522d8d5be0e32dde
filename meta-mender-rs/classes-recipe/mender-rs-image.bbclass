# Image side of meta-mender-rs (added to IMAGE_CLASSES by mender-setup with
# the mender-image feature): the `mender` Artifact image type, the A/B disk
# images (uefiimg, sdimg, gptimg) through wic, and the root filesystem
# adjustments (fstab, /data, the state scripts version file).

# image_types.bbclass assigns IMAGE_TYPES after this class: append.
IMAGE_TYPES:append = " mender uefiimg sdimg gptimg"

MENDER_RS_DISK_IMAGE = "${@'uefiimg' if bb.utils.contains('MENDER_FEATURES', 'mender-image-uefi', True, False, d) else 'sdimg' if bb.utils.contains('MENDER_FEATURES', 'mender-image-sd', True, False, d) else 'gptimg' if bb.utils.contains('MENDER_FEATURES', 'mender-image-gpt', True, False, d) else ''}"
IMAGE_FSTYPES:append = " ${ARTIFACTIMG_FSTYPE} mender ${@'wic ${MENDER_RS_DISK_IMAGE}' if d.getVar('MENDER_RS_DISK_IMAGE') else ''}"

# The rootfs image fills its partition; /data goes to the data partition and
# the boot partition's mount point stays empty.
# (a hard assignment: image recipes and machines set their own sizes; change
# the layout with MENDER_STORAGE_TOTAL_SIZE_MB and the partition sizes)
IMAGE_ROOTFS_SIZE = "${MENDER_CALC_ROOTFS_SIZE}"
IMAGE_ROOTFS_EXCLUDE_PATH:append = " data/ ${@d.getVar('MENDER_BOOT_PART_MOUNT_LOCATION').strip('/')}/"

# ---- root filesystem ---------------------------------------------------------
ROOTFS_POSTPROCESS_COMMAND:append = " mender_rs_update_fstab mender_rs_scripts_version_file"

mender_rs_update_fstab() {
    label=${@bb.utils.contains('MENDER_FEATURES', 'mender-partlabel', 'true', 'false', d)}
    install -d ${IMAGE_ROOTFS}${sysconfdir} ${IMAGE_ROOTFS}/data
    if [ "${MENDER_BOOT_PART_SIZE_MB}" != "0" ] && [ -n "${MENDER_BOOT_PART}" ]; then
        install -d ${IMAGE_ROOTFS}${MENDER_BOOT_PART_MOUNT_LOCATION}
        dev=${MENDER_BOOT_PART}
        if $label; then dev=LABEL=boot; fi
        printf '%s %s %s %s 0 0\n' "$dev" "${MENDER_BOOT_PART_MOUNT_LOCATION}" vfat defaults,sync >> ${IMAGE_ROOTFS}${sysconfdir}/fstab
    fi
    dev=${MENDER_DATA_PART}
    if $label; then dev=LABEL=data; fi
    printf '%s %s %s %s 0 0\n' "$dev" /data "${MENDER_DATA_PART_FSTYPE}" defaults >> ${IMAGE_ROOTFS}${sysconfdir}/fstab
    if [ "${MENDER_SWAP_PART_SIZE_MB}" != "0" ]; then
        printf '%s none swap swap 0 0\n' "${MENDER_STORAGE_DEVICE_BASE}${MENDER_SWAP_PART_NUMBER}" >> ${IMAGE_ROOTFS}${sysconfdir}/fstab
    fi
}

python mender_rs_scripts_version_file() {
    mender_rs.statescripts.write_version(d.getVar('IMAGE_ROOTFS'), d.getVar('MENDER_STATE_SCRIPTS_VERSION'))
}

# ---- the Artifact ------------------------------------------------------------
# "1": a chunked Artifact (--chunked: independent frames per content-defined
# chunk and a signed chunk index, for adaptive updates; still a plain full
# update for every Mender client). Needs MENDER_ARTIFACT_COMPRESSION gzip or
# zstd. docs/artifacts.md, "Chunked rootfs-image artifacts".
MENDER_ARTIFACT_CHUNKED ??= "0"
IMAGE_TYPEDEP:mender = "${ARTIFACTIMG_FSTYPE}"
do_image_mender[depends] += "mender-rs-native:do_populate_sysroot"
# the Artifact scripts deployed by mender-state-scripts recipes in the image
do_image_mender[recrdeptask] += "do_deploy"
do_image_mender[vardeps] += "MENDER_CALC_ROOTFS_SIZE MENDER_DEVICE_TYPES_COMPATIBLE MENDER_ARTIFACT_NAME \
    MENDER_ARTIFACT_SIGNING_KEY MENDER_ARTIFACT_COMPRESSION MENDER_ARTIFACT_PROVIDES MENDER_ARTIFACT_DEPENDS \
    MENDER_ARTIFACT_PROVIDES_GROUP MENDER_ARTIFACT_DEPENDS_GROUPS MENDER_ARTIFACT_NAME_DEPENDS MENDER_ARTIFACT_EXTRA_ARGS \
    MENDER_ARTIFACT_CHUNKED"

python mender_rs_check_rootfs_size() {
    import os
    img = os.path.join(d.getVar('IMGDEPLOYDIR'), d.getVar('IMAGE_NAME') + '.' + d.getVar('ARTIFACTIMG_FSTYPE'))
    err = mender_rs.layout.check_rootfs_fits(os.path.getsize(img), d.getVar('MENDER_CALC_ROOTFS_SIZE'), os.path.basename(img))
    if err:
        bb.fatal(err)
}
do_image_mender[prefuncs] += "mender_rs_check_rootfs_size"

IMAGE_CMD:mender() {
    if [ -z "${MENDER_ARTIFACT_NAME}" ]; then
        bbfatal "MENDER_ARTIFACT_NAME is not set: set it (in local.conf or the image recipe) to name the Artifact"
    fi
    if [ -z "$(echo ${MENDER_DEVICE_TYPES_COMPATIBLE})" ]; then
        bbfatal "MENDER_DEVICE_TYPES_COMPATIBLE is empty"
    fi
    set -- -n "${MENDER_ARTIFACT_NAME}" --compression "${MENDER_ARTIFACT_COMPRESSION}"
    for t in ${MENDER_DEVICE_TYPES_COMPATIBLE}; do set -- "$@" -t "$t"; done
    if [ -n "${MENDER_ARTIFACT_SIGNING_KEY}" ]; then
        [ -f "${MENDER_ARTIFACT_SIGNING_KEY}" ] || bbfatal "MENDER_ARTIFACT_SIGNING_KEY = ${MENDER_ARTIFACT_SIGNING_KEY}: no such file"
        set -- "$@" -k "${MENDER_ARTIFACT_SIGNING_KEY}"
    fi
    for s in ${DEPLOY_DIR_IMAGE}/mender-state-scripts/*; do
        [ -f "$s" ] && set -- "$@" -s "$s"
    done
    for p in ${MENDER_ARTIFACT_PROVIDES}; do set -- "$@" --provides "$p"; done
    for p in ${MENDER_ARTIFACT_DEPENDS}; do set -- "$@" --depends "$p"; done
    for p in ${MENDER_ARTIFACT_PROVIDES_GROUP}; do set -- "$@" --provides-group "$p"; done
    for p in ${MENDER_ARTIFACT_DEPENDS_GROUPS}; do set -- "$@" --depends-groups "$p"; done
    for p in ${MENDER_ARTIFACT_NAME_DEPENDS}; do set -- "$@" --artifact-name-depends "$p"; done
    case "${MENDER_ARTIFACT_CHUNKED}" in
        1) set -- "$@" --chunked ;;
        0|"") ;;
        *) bbfatal "MENDER_ARTIFACT_CHUNKED = ${MENDER_ARTIFACT_CHUNKED}: use 1 or 0" ;;
    esac
    # Update Modules in the rootfs are advertised (spec 6.4).
    for m in ${IMAGE_ROOTFS}${datadir}/mender/modules/v3/*; do
        if [ -f "$m" ] && [ -x "$m" ]; then
            n=$(basename "$m")
            set -- "$@" --provides "rootfs-image.update-module.$n.version:${MENDER_ARTIFACT_NAME}" \
                --provides "rootfs-image.update-module.$n.mender_update_module:$n"
        fi
    done
    mender-rs artifact write rootfs-image "$@" \
        -f ${IMGDEPLOYDIR}/${IMAGE_NAME}.${ARTIFACTIMG_FSTYPE} \
        ${MENDER_ARTIFACT_EXTRA_ARGS} \
        -o ${IMGDEPLOYDIR}/${IMAGE_NAME}.mender
}

# ---- the bootstrap Artifact ------------------------------------------------------
# On the data partition, so that a freshly flashed device knows its name and
# provides from its first start (MENDER_RS_BOOTSTRAP_ARTIFACT = "0" leaves it
# out). It describes the filesystem image the disk image carries, so it is
# made when that image exists, just before wic reads ${IMAGE_ROOTFS}/data.
MENDER_RS_BOOTSTRAP_ARTIFACT ??= "1"
do_image_wic[depends] += "mender-rs-native:do_populate_sysroot"
do_image_wic[vardeps] += "MENDER_RS_BOOTSTRAP_ARTIFACT MENDER_RS_DATA_DIR MENDER_ARTIFACT_NAME \
    MENDER_DEVICE_TYPES_COMPATIBLE MENDER_ARTIFACT_PROVIDES MENDER_ARTIFACT_PROVIDES_GROUP"

python mender_rs_bootstrap_artifact() {
    import os, subprocess
    out = mender_rs.bootstrap.destination(d.getVar('IMAGE_ROOTFS'), d.getVar('MENDER_RS_DATA_DIR'))
    if os.path.exists(out):
        os.remove(out)
    if d.getVar('MENDER_RS_BOOTSTRAP_ARTIFACT') != '1':
        return
    img = os.path.join(d.getVar('IMGDEPLOYDIR'), d.getVar('IMAGE_NAME') + '.' + d.getVar('ARTIFACTIMG_FSTYPE'))
    try:
        argv = mender_rs.bootstrap.command(d.getVar, img, out)
    except ValueError as e:
        bb.fatal("meta-mender-rs: bootstrap Artifact: %s" % e)
    # The data directory is the client's: only root may read it.
    os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
    env = dict(os.environ, PATH=d.getVar('PATH'))
    run = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if run.returncode != 0:
        bb.fatal("meta-mender-rs: %s failed: %s" % (' '.join(argv), run.stdout))
}
do_image_wic[prefuncs] += "${@'mender_rs_bootstrap_artifact' if d.getVar('MENDER_RS_DISK_IMAGE') else ''}"

# ---- disk images ---------------------------------------------------------------
# Overrides, so that they win over the machines' own WKS_FILE.
WKS_FILE:mender-image-uefi = "mender-rs-uefi.wks.in"
WKS_FILE:mender-image-gpt = "mender-rs-uefi.wks.in"
WKS_FILE:mender-image-sd = "mender-rs-sd.wks.in"
MENDER_RS_BOOT_FILES_RECIPE = "${@'grub-mender-rs' if bb.utils.contains('MENDER_FEATURES', 'mender-grub', True, False, d) else 'u-boot-mender-rs'}"
MENDER_RS_ESP_TYPE = "${@'--part-type C12A7328-F81F-11D2-BA4B-00A0C93EC93B' if d.getVar('MENDER_RS_DISK_IMAGE') == 'uefiimg' else ''}"
MENDER_RS_FIRST_PART_OFFSET_KB = "${@(mender_rs.layout.alignment(d.getVar) + int(d.getVar('MENDER_RESERVED_SPACE_BOOTLOADER_DATA') or 0)) // 1024}"
IMAGE_TYPEDEP:wic += "${ARTIFACTIMG_FSTYPE}"
do_image_wic[depends] += "${MENDER_RS_BOOT_FILES_RECIPE}:do_deploy"
do_image_wic[prefuncs] += "mender_rs_check_rootfs_size"

# meta-mender's names for the disk image: links to the .wic.
IMAGE_TYPEDEP:uefiimg = "wic"
IMAGE_TYPEDEP:sdimg = "wic"
IMAGE_TYPEDEP:gptimg = "wic"
IMAGE_CMD:uefiimg() {
    ln -sf ${IMAGE_NAME}.wic ${IMGDEPLOYDIR}/${IMAGE_NAME}.uefiimg
}
IMAGE_CMD:sdimg() {
    ln -sf ${IMAGE_NAME}.wic ${IMGDEPLOYDIR}/${IMAGE_NAME}.sdimg
}
IMAGE_CMD:gptimg() {
    ln -sf ${IMAGE_NAME}.wic ${IMGDEPLOYDIR}/${IMAGE_NAME}.gptimg
}
do_image_wic[prefuncs] += "mender_rs_check_disk_layout"
MENDER_RS_WKS_SWAP = "${@'part --fstype=swap --label swap --align ${MENDER_PARTITION_ALIGNMENT_KB} --fixed-size ${MENDER_SWAP_PART_SIZE_MB}M --no-fstab-update' if int(d.getVar('MENDER_SWAP_PART_SIZE_MB') or 0) else ''}"

python mender_rs_check_disk_layout() {
    if int(d.getVar('MENDER_BOOT_PART_SIZE_MB') or 0) == 0:
        bb.fatal("meta-mender-rs: the disk images need a boot partition (MENDER_BOOT_PART_SIZE_MB is 0)")
    if (d.getVar('MENDER_EXTRA_PARTS') or '').split():
        bb.fatal("meta-mender-rs: MENDER_EXTRA_PARTS is not supported by the disk images yet")
}
