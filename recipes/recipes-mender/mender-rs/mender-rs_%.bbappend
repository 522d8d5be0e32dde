# Example product settings for the client (copy into your product layer).
# Device type and signing key are image-wide settings: set them in local.conf
# or your distro configuration (see ../../README.md):
#   MENDER_DEVICE_TYPE = "acme-gateway"
#   MENDER_ARTIFACT_SIGNING_KEY = "/secure/keys/acme-artifact-signing.pem"
#
# The settings apply only with the mender-client-install feature (on with
# INHERIT += "mender-full"): adding this layer to a build that does not enable
# mender-rs changes nothing (yocto-check-layer's test_signatures).

MENDER_SERVER_URL:mender-client-install = "https://hosted.mender.io"
MENDER_TENANT_TOKEN:mender-client-install = "replace-with-your-tenant-token"
MENDER_UPDATE_POLL_INTERVAL_SECONDS:mender-client-install = "3600"
MENDER_INVENTORY_POLL_INTERVAL_SECONDS:mender-client-install = "86400"

# The public key devices verify Artifacts with: either a path
#   MENDER_ARTIFACT_VERIFY_KEY:mender-client-install = "/secure/keys/acme-artifact-verify.pem"
# or a file of this layer:
#   FILESEXTRAPATHS:prepend:mender-client-install := "${THISDIR}/files:"
#   SRC_URI:append:mender-client-install = " file://artifact-verify-key.pem"

# Build the device binary with the D-Bus API and its policy files.
# PACKAGECONFIG:append:mender-client-install = " dbus"
