"""mender.conf from the MENDER_* variables: the transient file for
/etc/mender/mender.conf and the persistent one for /data/mender/mender.conf
(the keys of MENDER_PERSISTENT_CONFIGURATION_VARS, RootfsPartA/B by default)."""
import json

# variable -> (key, integer?)
SIMPLE = (
    ("MENDER_SERVER_URL", "ServerURL", False),
    ("MENDER_TENANT_TOKEN", "TenantToken", False),
    ("MENDER_UPDATE_POLL_INTERVAL_SECONDS", "UpdatePollIntervalSeconds", True),
    ("MENDER_INVENTORY_POLL_INTERVAL_SECONDS", "InventoryPollIntervalSeconds", True),
    ("MENDER_RETRY_POLL_INTERVAL_SECONDS", "RetryPollIntervalSeconds", True),
    ("MENDER_ROOTFS_PART_A", "RootfsPartA", False),
    ("MENDER_ROOTFS_PART_B", "RootfsPartB", False),
    ("MENDER_RS_BOOT_ENV_TYPE", "BootEnvType", False),
    ("MENDER_RS_BOOT_ENV_CONFIG", "BootEnvConfig", False),
    ("MENDER_RS_GRUB_ENV_DIR", "GrubEnvDir", False),
)
VERIFY_KEY_PATH = "/etc/mender/artifact-verify-key.pem"


def generate(get, user_conf=None, have_verify_key=False):
    """(transient dict, persistent dict, warnings). `user_conf` is the text
    of a mender.conf from SRC_URI, merged under the variables."""
    warnings = []
    conf = {}
    if user_conf:
        conf = json.loads(user_conf)
        if not isinstance(conf, dict):
            raise ValueError("the mender.conf in SRC_URI is not a JSON object")
    lower = {k.lower(): k for k in conf}
    for var, key, is_int in SIMPLE:
        v = (get(var) or "").strip()
        if v == "":
            continue
        if is_int:
            try:
                value = int(v)
            except ValueError:
                raise ValueError("%s = '%s' is not an integer" % (var, v))
        else:
            value = v
        old = lower.get(key.lower())
        if old is not None:
            if conf[old] != value:
                warnings.append("%s from %s replaces %s = %s of the mender.conf in SRC_URI"
                                % (key, var, old, json.dumps(conf[old])))
            del conf[old]
        conf[key] = value
        lower[key.lower()] = key
    if have_verify_key:
        conf["ArtifactVerifyKey"] = VERIFY_KEY_PATH
    persistent_keys = {k.lower() for k in (get("MENDER_PERSISTENT_CONFIGURATION_VARS") or "").split()}
    transient = {k: v for k, v in conf.items() if k.lower() not in persistent_keys}
    persistent = {k: v for k, v in conf.items() if k.lower() in persistent_keys}
    return transient, persistent, warnings


def dumps(conf):
    return json.dumps(conf, indent=4, sort_keys=True) + "\n"
