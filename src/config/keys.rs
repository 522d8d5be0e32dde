//! The key table: every key the client knows, with its type.
//!
//! Separate so that a key is looked up in one place; the syntax walk
//! (`syntax.rs`) and the value checks (`checks.rs`) follow it.

#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// A path that must not be empty.
    Path,
    /// A path; empty means "not set".
    OptPath,
    /// A string; empty means "not set".
    OptText,
    /// Any string.
    Text,
    /// A server URL; empty means "no server".
    Url,
    /// Non-negative integer seconds; 0 means the default.
    Seconds,
    /// Non-negative integer that fits 32 bits.
    Count,
    Bool,
    /// An array of non-empty paths.
    PathList,
    /// An array of `{"ServerURL": ...}` objects.
    ServerList,
    BootEnv,
    /// `rsa3072`, `ed25519` or `ecdsa-p256` (and their aliases).
    KeyType,
    Object(&'static [Key]),
}

#[derive(Debug)]
pub(super) struct Key {
    /// Canonical spelling within its object.
    pub(super) name: &'static str,
    /// Canonical full name, as used in messages and in [`Layer`].
    pub(super) path: &'static str,
    pub(super) kind: Kind,
}

pub(super) const fn key(name: &'static str, kind: Kind) -> Key {
    Key {
        name,
        path: name,
        kind,
    }
}

pub(super) const fn sub(name: &'static str, path: &'static str, kind: Kind) -> Key {
    Key { name, path, kind }
}

pub(super) const SERVER_URL: &str = "ServerURL";
pub(super) const SERVERS: &str = "Servers";
pub(super) const TENANT_TOKEN: &str = "TenantToken";
pub(super) const SERVER_CERTIFICATE: &str = "ServerCertificate";
pub(super) const SKIP_VERIFY: &str = "SkipVerify";
pub(super) const HTTPS_CERTIFICATE: &str = "HttpsClient.Certificate";
pub(super) const HTTPS_KEY: &str = "HttpsClient.Key";
pub(super) const HTTPS_SSL_ENGINE: &str = "HttpsClient.SSLEngine";
pub(super) const AUTH_PRIVATE_KEY: &str = "Security.AuthPrivateKey";
pub(super) const UPDATE_POLL: &str = "UpdatePollIntervalSeconds";
pub(super) const INVENTORY_POLL: &str = "InventoryPollIntervalSeconds";
pub(super) const RETRY_POLL: &str = "RetryPollIntervalSeconds";
pub(super) const RETRY_POLL_COUNT: &str = "RetryPollCount";
pub(super) const STATE_SCRIPT_TIMEOUT: &str = "StateScriptTimeoutSeconds";
pub(super) const STATE_SCRIPT_RETRY_INTERVAL: &str = "StateScriptRetryIntervalSeconds";
pub(super) const STATE_SCRIPT_RETRY_TIMEOUT: &str = "StateScriptRetryTimeoutSeconds";
pub(super) const MODULE_TIMEOUT: &str = "ModuleTimeoutSeconds";
pub(super) const ARTIFACT_VERIFY_KEY: &str = "ArtifactVerifyKey";
pub(super) const ARTIFACT_VERIFY_KEYS: &str = "ArtifactVerifyKeys";
pub(super) const ROOTFS_PART_A: &str = "RootfsPartA";
pub(super) const ROOTFS_PART_B: &str = "RootfsPartB";
pub(super) const BOOT_SET_ACTIVE: &str = "BootUtilitiesSetActivePart";
pub(super) const BOOT_GET_NEXT_ACTIVE: &str = "BootUtilitiesGetNextActivePart";
pub(super) const DEVICE_TYPE_FILE: &str = "DeviceTypeFile";
pub(super) const DBUS_ENABLED: &str = "DBus.Enabled";
pub(super) const UCM_EXPIRATION: &str = "UpdateControlMapExpirationTimeSeconds";
pub(super) const UCM_BOOT_EXPIRATION: &str = "UpdateControlMapBootExpirationTimeSeconds";
pub(super) const DAEMON_LOG_LEVEL: &str = "DaemonLogLevel";
pub(super) const ROOTFS_SCRIPTS_PATH: &str = "RootfsScriptsPath";
pub(super) const ARTIFACT_SCRIPTS_PATH: &str = "ArtifactScriptsPath";
pub(super) const MODULES_PATH: &str = "ModulesPath";
pub(super) const MODULES_WORK_PATH: &str = "ModulesWorkPath";
pub(super) const BOOT_ENV_TYPE: &str = "BootEnvType";
pub(super) const BOOT_ENV_CONFIG: &str = "BootEnvConfig";
pub(super) const GRUB_ENV_DIR: &str = "GrubEnvDir";
pub(super) const IDENTITY_SCRIPT: &str = "IdentityScript";
pub(super) const INVENTORY_SCRIPTS_PATH: &str = "InventoryScriptsPath";
pub(super) const RETRY_DOWNLOAD_COUNT: &str = "RetryDownloadCount";
pub(super) const REBOOT_COMMAND: &str = "RebootCommand";
pub(super) const REBOOT_TIMEOUT: &str = "RebootTimeoutSeconds";
pub(super) const DEVICE_KEY_TYPE: &str = "DeviceKeyType";

pub(super) const HTTPS_CLIENT_KEYS: &[Key] = &[
    sub("Certificate", HTTPS_CERTIFICATE, Kind::OptPath),
    sub("Key", HTTPS_KEY, Kind::OptPath),
    sub("SSLEngine", HTTPS_SSL_ENGINE, Kind::OptText),
];

pub(super) const SECURITY_KEYS: &[Key] = &[
    sub("AuthPrivateKey", AUTH_PRIVATE_KEY, Kind::OptPath),
    sub("SSLEngine", "Security.SSLEngine", Kind::OptText),
];

pub(super) const CONNECTIVITY_KEYS: &[Key] = &[
    sub(
        "DisableKeepAlive",
        "Connectivity.DisableKeepAlive",
        Kind::Bool,
    ),
    sub(
        "IdleConnTimeoutSeconds",
        "Connectivity.IdleConnTimeoutSeconds",
        Kind::Seconds,
    ),
];

pub(super) const DBUS_KEYS: &[Key] = &[sub("Enabled", DBUS_ENABLED, Kind::Bool)];

/// Every top-level key this client knows.
pub(super) const KEYS: &[Key] = &[
    key(SERVER_URL, Kind::Url),
    key(SERVERS, Kind::ServerList),
    key(TENANT_TOKEN, Kind::Text),
    key(SERVER_CERTIFICATE, Kind::OptPath),
    key(SKIP_VERIFY, Kind::Bool),
    key("HttpsClient", Kind::Object(HTTPS_CLIENT_KEYS)),
    key("Security", Kind::Object(SECURITY_KEYS)),
    key("Connectivity", Kind::Object(CONNECTIVITY_KEYS)),
    key(UPDATE_POLL, Kind::Seconds),
    key(INVENTORY_POLL, Kind::Seconds),
    key(RETRY_POLL, Kind::Seconds),
    key(RETRY_POLL_COUNT, Kind::Count),
    key(RETRY_DOWNLOAD_COUNT, Kind::Count),
    key(STATE_SCRIPT_TIMEOUT, Kind::Seconds),
    key(STATE_SCRIPT_RETRY_INTERVAL, Kind::Seconds),
    key(STATE_SCRIPT_RETRY_TIMEOUT, Kind::Seconds),
    key(MODULE_TIMEOUT, Kind::Seconds),
    key(ARTIFACT_VERIFY_KEY, Kind::OptPath),
    key(ARTIFACT_VERIFY_KEYS, Kind::PathList),
    key(ROOTFS_PART_A, Kind::OptPath),
    key(ROOTFS_PART_B, Kind::OptPath),
    key(BOOT_SET_ACTIVE, Kind::OptText),
    key(BOOT_GET_NEXT_ACTIVE, Kind::OptText),
    key(DEVICE_TYPE_FILE, Kind::Path),
    key("UpdateLogPath", Kind::OptPath),
    key("DBus", Kind::Object(DBUS_KEYS)),
    key(UCM_EXPIRATION, Kind::Seconds),
    key(UCM_BOOT_EXPIRATION, Kind::Seconds),
    key("UpdateControlMapPollIntervalSeconds", Kind::Seconds),
    key(DAEMON_LOG_LEVEL, Kind::OptText),
    key("DeviceTier", Kind::OptText),
    key(ROOTFS_SCRIPTS_PATH, Kind::Path),
    key(ARTIFACT_SCRIPTS_PATH, Kind::Path),
    key(MODULES_PATH, Kind::Path),
    key(MODULES_WORK_PATH, Kind::Path),
    key(BOOT_ENV_TYPE, Kind::BootEnv),
    key(BOOT_ENV_CONFIG, Kind::Path),
    key(GRUB_ENV_DIR, Kind::OptPath),
    key(IDENTITY_SCRIPT, Kind::Path),
    key(INVENTORY_SCRIPTS_PATH, Kind::Path),
    key(REBOOT_COMMAND, Kind::OptText),
    key(REBOOT_TIMEOUT, Kind::Seconds),
    key(DEVICE_KEY_TYPE, Kind::KeyType),
];

// ---------------------------------------------------------------------------
// Semantics: one file's settings, and merging them
