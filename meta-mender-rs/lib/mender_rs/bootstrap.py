"""The bootstrap Artifact on the data partition (docs/standalone.md, "The
bootstrap artifact"): an empty-payload Artifact that names a freshly flashed
device and gives it the provides of the image it was flashed with, so the
first update can already depend on them. The client installs
`<data dir>/bootstrap.mender` on its first start and removes it.

Its provides match those of the image's own Artifact: the name, the
`rootfs-image.version` and `rootfs-image.checksum` of the filesystem image,
the provides group and MENDER_ARTIFACT_PROVIDES.
"""
import hashlib
import os


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def destination(image_rootfs, data_dir):
    """Where the file goes in the tree the data partition is made from:
    the data partition is `${IMAGE_ROOTFS}/data`, mounted at /data."""
    data_dir = "/" + data_dir.strip("/")
    if data_dir != "/data" and not data_dir.startswith("/data/"):
        raise ValueError("MENDER_RS_DATA_DIR = %s: the bootstrap Artifact needs the data directory "
                         "on the data partition (/data/...)" % data_dir)
    return os.path.join(image_rootfs, data_dir.lstrip("/"), "bootstrap.mender")


def command(getvar, rootfs_image, output):
    """The `mender-rs artifact write bootstrap-artifact` command line."""
    name = (getvar("MENDER_ARTIFACT_NAME") or "").strip()
    if not name:
        raise ValueError("MENDER_ARTIFACT_NAME is not set")
    types = (getvar("MENDER_DEVICE_TYPES_COMPATIBLE") or "").split()
    if not types:
        raise ValueError("MENDER_DEVICE_TYPES_COMPATIBLE is empty")
    argv = ["mender-rs", "artifact", "write", "bootstrap-artifact", "-n", name, "-o", output]
    for t in types:
        argv += ["-t", t]
    argv += ["-p", "rootfs-image.version:" + name,
             "-p", "rootfs-image.checksum:" + sha256_file(rootfs_image)]
    for p in (getvar("MENDER_ARTIFACT_PROVIDES") or "").split():
        argv += ["-p", p]
    for g in (getvar("MENDER_ARTIFACT_PROVIDES_GROUP") or "").split():
        argv += ["-g", g]
    return argv
