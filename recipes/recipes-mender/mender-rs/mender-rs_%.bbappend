# Example product settings for the client (copy into your product layer).
# Device type and signing key are image-wide settings: set them in local.conf
# or your distro configuration (see ../../README.md):
#   MENDER_DEVICE_TYPE = "acme-gateway"
#   MENDER_ARTIFACT_SIGNING_KEY = "/secure/keys/acme-artifact-signing.pem"

MENDER_SERVER_URL = "https://hosted.mender.io"
MENDER_TENANT_TOKEN = "replace-with-your-tenant-token"
MENDER_UPDATE_POLL_INTERVAL_SECONDS = "3600"
MENDER_INVENTORY_POLL_INTERVAL_SECONDS = "86400"

# The public key devices verify Artifacts with: either a path
#   MENDER_ARTIFACT_VERIFY_KEY = "/secure/keys/acme-artifact-verify.pem"
# or a file of this layer:
#   FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
#   SRC_URI:append = " file://artifact-verify-key.pem"

# Build the device binary with the D-Bus API and its policy files.
# PACKAGECONFIG:append = " dbus"
