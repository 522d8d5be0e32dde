"""MENDER_FEATURES: MENDER_FEATURES_ENABLE minus MENDER_FEATURES_DISABLE."""

# The feature names meta-mender knows; a name outside this list is an error,
# as it is there. IMPLEMENTED is what this layer acts on; the rest is
# accepted so that shared configuration parses, and refused by
# check() when enabled, with a message saying so.
KNOWN = (
    "mender-auth-install", "mender-bios", "mender-client-install", "mender-efi-boot",
    "mender-growfs-data", "mender-grub", "mender-image", "mender-image-bios",
    "mender-image-gpt", "mender-image-sd", "mender-image-ubi", "mender-image-uefi",
    "mender-image-uefi-capsule", "mender-orchestrator-install", "mender-partlabel",
    "mender-partuuid", "mender-persist-systemd-machine-id",
    "mender-prepopulate-inactive-partition", "mender-systemd", "mender-systemd-boot",
    "mender-testing-enabled", "mender-ubi", "mender-uboot", "mender-update-install",
)
# No-ops here (the client is one binary; the rootfs B of a wic image is
# always empty) or acted on by the layer.
IMPLEMENTED = (
    "mender-auth-install", "mender-client-install", "mender-update-install",
    "mender-grub", "mender-uboot", "mender-image", "mender-image-uefi",
    "mender-image-sd", "mender-image-gpt", "mender-systemd", "mender-efi-boot",
    "mender-growfs-data", "mender-testing-enabled", "mender-partlabel",
)


def compute(enable, disable):
    """The enabled features in order, each once, minus the disabled ones."""
    off = set((disable or "").split())
    out = []
    for f in (enable or "").split():
        if f not in off and f not in out:
            out.append(f)
    return out


def check(features):
    """Error messages for a feature list (empty when it is fine)."""
    errors = []
    for f in features:
        if f not in KNOWN:
            errors.append("unknown feature '%s' in MENDER_FEATURES_ENABLE (known: %s)" % (f, " ".join(KNOWN)))
        elif f not in IMPLEMENTED:
            errors.append("feature '%s' is not supported by meta-mender-rs yet" % f)
    if any(f.startswith("mender-image-") for f in features) and "mender-image" not in features:
        errors.append("the mender-image-* features need mender-image")
    if "mender-grub" in features and "mender-uboot" in features:
        errors.append("mender-grub and mender-uboot are both enabled: choose one boot loader "
                      "(MENDER_FEATURES_DISABLE:append = \" mender-grub\" for U-Boot)")
    images = [f for f in features if f in ("mender-image-uefi", "mender-image-sd", "mender-image-gpt")]
    if len(images) > 1:
        errors.append("more than one disk image feature enabled: %s" % " ".join(images))
    return errors


def overrides(features):
    """The DISTROOVERRIDES suffix (":mender-grub:mender-image...")."""
    return "".join(":" + f for f in features)
