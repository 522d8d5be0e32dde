"""The mender-state-scripts class's logic: which scripts a recipe made,
whether their names are valid, and where each one goes.

Names are `<State>_<Enter|Leave|Error>_NN[_text]` (the client's rule:
NN two digits, text non-empty without white space or '/'). Idle, Sync and
Download scripts go into the root filesystem (/etc/mender/scripts); the
Artifact* ones into the Artifact, through the deploy directory.
"""
import os
import shutil
import sys

ROOTFS_STATES = ("Idle", "Sync", "Download")
ARTIFACT_STATES = ("ArtifactInstall", "ArtifactReboot", "ArtifactCommit", "ArtifactRollback",
                   "ArtifactRollbackReboot", "ArtifactFailure")
STATES = ROOTFS_STATES + ARTIFACT_STATES
ACTIONS = ("Enter", "Leave", "Error")


class BadScript(Exception):
    pass


def name_error(name):
    """None for a valid script name, else why it is not one."""
    parts = name.split("_", 3)
    if len(parts) < 3:
        return "not of the form <State>_<Enter|Leave|Error>_NN[_text]"
    state, action, order = parts[:3]
    if state not in STATES:
        return "'%s' is not a state (one of %s)" % (state, ", ".join(STATES))
    if action not in ACTIONS:
        return "'%s' is not Enter, Leave or Error" % action
    if len(order) != 2 or not all(c in "0123456789" for c in order):
        return "'%s' is not a two-digit order number" % order
    if len(parts) == 4:
        text = parts[3]
        if text == "" or any(c.isspace() or c == "/" for c in text):
            return "the text after the number must be non-empty, without spaces or '/'"
    return None


def destination(name):
    """'rootfs' or 'artifact'; BadScript naming the script when the name is invalid."""
    why = name_error(name)
    if why:
        raise BadScript("state script '%s' doesn't have a valid name: %s" % (name, why))
    return "rootfs" if name.split("_", 1)[0] in ROOTFS_STATES else "artifact"


def collect(locations):
    """Regular files under the locations (each must exist), deduplicated by
    real path, sorted by base name then path."""
    seen = {}
    for loc in (locations or "").split() if isinstance(locations, str) else locations:
        if not os.path.isdir(loc):
            raise BadScript("MENDER_STATE_SCRIPTS location '%s' does not exist" % loc)
        for root, dirs, files in os.walk(loc):
            dirs.sort()
            for f in files:
                p = os.path.join(root, f)
                if os.path.isfile(p):
                    seen.setdefault(os.path.realpath(p), p)
    return sorted(seen.values(), key=lambda p: (os.path.basename(p), p))


def plan(locations):
    """[(path, name, 'rootfs'|'artifact')]; BadScript for the first bad name
    or for two scripts with the same name."""
    out, names = [], {}
    for p in collect(locations):
        name = os.path.basename(p)
        if name in names:
            raise BadScript("state script '%s' found twice: %s and %s" % (name, names[name], p))
        names[name] = p
        out.append((p, name, destination(name)))
    return out


def _copy(src, dest_dir, name):
    os.makedirs(dest_dir, exist_ok=True)
    dst = os.path.join(dest_dir, name)
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755)
    return dst


def install(locations, dest_dir):
    """Copies the Idle/Sync/Download scripts into dest_dir
    (${D}${sysconfdir}/mender/scripts); returns the names."""
    return [os.path.basename(_copy(p, dest_dir, n)) for p, n, where in plan(locations) if where == "rootfs"]


def deploy(locations, dest_dir):
    """Copies the Artifact* scripts into dest_dir
    (${DEPLOYDIR}/mender-state-scripts); returns the names."""
    return [os.path.basename(_copy(p, dest_dir, n)) for p, n, where in plan(locations) if where == "artifact"]


def write_version(rootfs, version):
    """/etc/mender/scripts/version in the image (no newline, as the clients expect)."""
    d = os.path.join(rootfs, "etc", "mender", "scripts")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "version"), "w") as f:
        f.write(str(version).strip())


def main(argv):
    """Command line for tests and debugging:
    statescripts.py install|deploy DEST LOCATION... / check NAME..."""
    if len(argv) < 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "check":
            for n in argv[1:]:
                print("%s %s" % (n, destination(n)))
        elif argv[0] in ("install", "deploy") and len(argv) >= 3:
            fn = install if argv[0] == "install" else deploy
            for n in fn(argv[2:], argv[1]):
                print(n)
        else:
            print(main.__doc__, file=sys.stderr)
            return 2
    except BadScript as e:
        print("ERROR: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
