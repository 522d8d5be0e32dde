//! The key table: every key the client knows, declared once with its
//! type, its default and the line `docs/configuration.md` gives it.
//!
//! Everything else follows this table: the syntax walk looks keys up here
//! (`syntax.rs`), so a key not in it is warned about as unknown; the checks
//! of a value follow its [`Kind`] (`checks.rs`); the defaults of
//! [`super::Config`] come from [`Key::default`]; and a unit test holds the
//! tables of `docs/configuration.md` to it. Separate from the syntax and the
//! checks because it is the one list a newcomer reads to learn the keys.

use std::path::{Path, PathBuf};

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
    /// `standard`, `system` or `micro` (Mender 5.1's device tiers); empty
    /// means "not set".
    DeviceTier,
}

/// What applies when a key is not set (or set to `null`, an empty string
/// where empty means "not set", or 0 seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DefaultValue {
    /// Nothing: the feature is off or the key is optional.
    None,
    /// A number (seconds or a count).
    Number(u64),
    Bool(bool),
    /// A string or path; the empty string renders as "empty".
    Text(&'static str),
    /// A path under the data directory.
    InDataDir(&'static str),
    /// Not a value of the configuration: decided where it is used. The text
    /// is the default column of the documentation.
    Described(&'static str),
}

impl DefaultValue {
    /// The number, for [`Kind::Seconds`] and [`Kind::Count`] keys.
    pub(super) fn number(self) -> u64 {
        match self {
            DefaultValue::Number(n) => n,
            _ => 0,
        }
    }

    /// The string, for [`Kind::OptText`] keys with a default.
    pub(super) fn text(self) -> &'static str {
        match self {
            DefaultValue::Text(text) => text,
            _ => "",
        }
    }

    /// The path, for [`Kind::Path`] keys.
    pub(super) fn path(self, data_dir: &Path) -> PathBuf {
        match self {
            DefaultValue::Text(path) => PathBuf::from(path),
            DefaultValue::InDataDir(path) => data_dir.join(path),
            _ => PathBuf::new(),
        }
    }
}

/// One key of the configuration.
#[derive(Debug)]
pub(super) struct Key {
    /// Canonical full name, as used in messages and in the merged settings:
    /// `HttpsClient.Key` for the key `Key` of the object `HttpsClient`.
    pub(super) path: &'static str,
    pub(super) kind: Kind,
    pub(super) default: DefaultValue,
}

/// Declares each key once: a constant named after it, its place in
/// [`KEYS`], and (for the documentation test only, so the text stays out
/// of the binary) its line in `docs/configuration.md`.
macro_rules! keys {
    ($($constant:ident = $path:literal, $kind:ident, $default:expr, $doc:literal;)*) => {
        $(
            pub(super) const $constant: Key = Key {
                path: $path,
                kind: Kind::$kind,
                default: $default,
            };
        )*

        /// Every key this client knows.
        pub(super) const KEYS: &[Key] = &[$($constant),*];

        /// Each key's description in `docs/configuration.md`.
        #[cfg(test)]
        pub(super) const DOCS: &[(&str, &str)] = &[$(($path, $doc)),*];
    };
}

use DefaultValue::{Bool, Described, InDataDir, None as Unset, Number, Text};

keys! {
    // Both modes
    ROOTFS_PART_A = "RootfsPartA", OptPath, Unset,
        "A/B root partition A (a block device; a regular file works too, for simulation)";
    ROOTFS_PART_B = "RootfsPartB", OptPath, Unset, "A/B root partition B";
    DEVICE_TYPE_FILE = "DeviceTypeFile", Path, InDataDir("device_type"), "`device_type=<name>`";
    ARTIFACT_VERIFY_KEY = "ArtifactVerifyKey", OptPath, Unset,
        "a PEM public key; with any set, unsigned artifacts are refused";
    ARTIFACT_VERIFY_KEYS = "ArtifactVerifyKeys", PathList, Unset,
        "a list of them, any of which may sign; not together with `ArtifactVerifyKey`";
    STATE_SCRIPT_TIMEOUT = "StateScriptTimeoutSeconds", Seconds, Number(3600), "per script";
    STATE_SCRIPT_RETRY_INTERVAL = "StateScriptRetryIntervalSeconds", Seconds, Number(60),
        "after exit 21";
    STATE_SCRIPT_RETRY_TIMEOUT = "StateScriptRetryTimeoutSeconds", Seconds, Number(1800),
        "total retry window";
    MODULE_TIMEOUT = "ModuleTimeoutSeconds", Seconds, Number(14400), "per Update Module call";
    ROOTFS_SCRIPTS_PATH = "RootfsScriptsPath", Path, Text("/etc/mender/scripts"),
        "Idle, Sync, Download scripts";
    ARTIFACT_SCRIPTS_PATH = "ArtifactScriptsPath", Path, InDataDir("scripts"),
        "the artifact's scripts, replaced at each install";
    MODULES_PATH = "ModulesPath", Path, Text("/usr/share/mender/modules/v3"), "Update Modules";
    MODULES_WORK_PATH = "ModulesWorkPath", Path, InDataDir("modules/v3"), "their file trees";
    BOOT_ENV_TYPE = "BootEnvType", BootEnv, Text("uboot"),
        "`uboot` (native, libubootenv's format), `grub` (native, the two-copy grubenv layout), `tools` (runs the two commands below)";
    BOOT_ENV_CONFIG = "BootEnvConfig", Path, Text("/etc/fw_env.config"),
        "where the U-Boot environment lives (one line, or two for redundant copies)";
    GRUB_ENV_DIR = "GrubEnvDir", OptPath,
        Described("first of `/boot/efi/grub-mender-grubenv`, `/boot/grub/grub-mender-grubenv`, `/boot/efi/EFI/BOOT`, `/boot/grub` holding `mender_grubenv1`"),
        "the GRUB environment copies";
    BOOT_GET_NEXT_ACTIVE = "BootUtilitiesGetNextActivePart", OptText, Described("`fw_printenv`"),
        "with `BootEnvType` `tools`, reads the environment, for storage not handled natively (MTD, UBI)";
    BOOT_SET_ACTIVE = "BootUtilitiesSetActivePart", OptText, Described("`fw_setenv`"),
        "with `BootEnvType` `tools`, writes it";
    // Managed mode
    SERVER_URL = "ServerURL", Url, Unset, "the server";
    SERVERS = "Servers", ServerList, Unset,
        "instead of `ServerURL`, a fail-over list `[{\"ServerURL\": ...}, ...]` tried in order";
    TENANT_TOKEN = "TenantToken", Text, Text(""), "sent with the auth request";
    SERVER_CERTIFICATE = "ServerCertificate", OptPath, Unset,
        "a PEM CA or server certificate trusted besides the system store";
    SKIP_VERIFY = "SkipVerify", Bool, Bool(false),
        "no certificate checks (logged loudly at every start)";
    HTTPS_CERTIFICATE = "HttpsClient.Certificate", OptPath, Unset,
        "client certificate for mutual TLS, with `HttpsClient.Key`; its key also signs auth requests (as Mender 3.x) when neither `Security.AuthPrivateKey` nor `<data>/mender-agent.pem` is there";
    HTTPS_KEY = "HttpsClient.Key", OptPath, Unset, "the key of that certificate";
    AUTH_PRIVATE_KEY = "Security.AuthPrivateKey", OptPath, Unset,
        "the device key to use instead of `<data>/mender-agent.pem`";
    DEVICE_TIER = "DeviceTier", DeviceTier, Unset,
        "`standard`, `system` or `micro` (Mender 5.1), sent as `tier` in the auth request; not sent when unset; any other value is an error";
    UPDATE_POLL = "UpdatePollIntervalSeconds", Seconds, Number(1800), "how often to ask for an update";
    INVENTORY_POLL = "InventoryPollIntervalSeconds", Seconds, Number(28800),
        "how often to send the inventory";
    RETRY_POLL = "RetryPollIntervalSeconds", Seconds, Number(300),
        "the back-off after a failed request";
    RETRY_POLL_COUNT = "RetryPollCount", Count, Number(0),
        "attempts at each back-off interval; 0 means automatic";
    RETRY_DOWNLOAD_COUNT = "RetryDownloadCount", Count, Number(10),
        "resume attempts of a broken download without progress";
    IDENTITY_SCRIPT = "IdentityScript", Path,
        Text("/usr/share/mender/identity/mender-device-identity"), "prints the device identity";
    INVENTORY_SCRIPTS_PATH = "InventoryScriptsPath", Path, Text("/usr/share/mender/inventory"),
        "runs every `mender-inventory-*`";
    DAEMON_LOG_LEVEL = "DaemonLogLevel", OptText, Described("info"), "`--log-level` wins";
    DBUS_ENABLED = "DBus.Enabled", Bool, Bool(true), "the D-Bus API, when the bus is there";
    UCM_EXPIRATION = "UpdateControlMapExpirationTimeSeconds", Seconds,
        Described("twice `UpdatePollIntervalSeconds`"), "how long an update control map holds";
    UCM_BOOT_EXPIRATION = "UpdateControlMapBootExpirationTimeSeconds", Seconds, Number(600),
        "how long the maps kept over a restart hold";
    DEVICE_KEY_TYPE = "DeviceKeyType", KeyType, Text("ed25519"),
        "(ours) the key generated on first start (or by `mender-auth bootstrap --forcebootstrap`): `ed25519` (as Mender 5.x), `rsa3072` (as Mender 3.x/4.x), `ecdsa-p256`";
    REBOOT_COMMAND = "RebootCommand", OptText, Text("reboot"),
        "(ours) how the daemon reboots into (or back from) a rootfs update; white space alone is an error";
    REBOOT_TIMEOUT = "RebootTimeoutSeconds", Seconds, Number(300),
        "(ours) deadline of `RebootCommand`; a command that hangs or fails takes the failure path (rollback, `failure` reported)";
    UPDATE_LOG_PATH = "UpdateLogPath", OptPath, Described("the data directory"),
        "where the deployment logs `deployments.NNNN.<id>.log` are kept, as Mender 4.x/5.x";
    // Accepted and checked, not used
    HTTPS_SSL_ENGINE = "HttpsClient.SSLEngine", OptText, Unset, "accepted and checked, not used";
    SECURITY_SSL_ENGINE = "Security.SSLEngine", OptText, Unset, "accepted and checked, not used";
    DISABLE_KEEP_ALIVE = "Connectivity.DisableKeepAlive", Bool, Unset,
        "accepted and checked, not used";
    IDLE_CONN_TIMEOUT = "Connectivity.IdleConnTimeoutSeconds", Seconds, Unset,
        "accepted and checked, not used";
    UCM_POLL = "UpdateControlMapPollIntervalSeconds", Seconds, Unset,
        "accepted and checked, not used";
}

/// What a name in the configuration is.
pub(super) enum Found {
    Key(&'static Key),
    /// An object holding keys (`HttpsClient`), by its canonical full name.
    Object(&'static str),
}

/// The key or object called `name` (in any case) inside the object whose
/// canonical full name is `prefix` followed by `.` (`prefix` empty at the
/// top).
pub(super) fn find(prefix: &str, name: &str) -> Option<Found> {
    KEYS.iter().find_map(|key| {
        let rest = key.path.strip_prefix(prefix)?;
        let (first, nested) = match rest.split_once('.') {
            Some((first, _)) => (first, true),
            None => (rest, false),
        };
        if !first.eq_ignore_ascii_case(name) {
            return None;
        }
        Some(if nested {
            Found::Object(&key.path[..prefix.len() + first.len()])
        } else {
            Found::Key(key)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration reference, held to this table.
    const DOC: &str = include_str!("../../docs/configuration.md");

    /// How the default column of `docs/configuration.md` shows a default.
    fn rendered(default: DefaultValue) -> String {
        match default {
            DefaultValue::None => "–".to_string(),
            DefaultValue::Number(n) => n.to_string(),
            DefaultValue::Bool(b) => b.to_string(),
            DefaultValue::Text("") => "empty".to_string(),
            DefaultValue::Text(text) => format!("`{text}`"),
            DefaultValue::InDataDir(path) => format!("`<data>/{path}`"),
            DefaultValue::Described(text) => text.to_string(),
        }
    }

    /// The table's rows, as the documentation shows them:
    /// key, default, description.
    fn table_rows() -> Vec<[String; 3]> {
        KEYS.iter()
            .zip(DOCS)
            .map(|(key, (path, doc))| {
                assert_eq!(key.path, *path);
                [key.path.to_string(), rendered(key.default), doc.to_string()]
            })
            .collect()
    }

    /// The rows of the documentation's key tables (those starting with a
    /// key in back quotes).
    fn documented_rows() -> Vec<[String; 3]> {
        DOC.lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                assert_eq!(cells.len(), 3, "not a row of three cells: {line}");
                let key = cells[0].trim_matches('`');
                assert!(!key.contains('`'), "one key per row: {line}");
                [key.to_string(), cells[1].to_string(), cells[2].to_string()]
            })
            .collect()
    }

    fn as_markdown(rows: &[[String; 3]]) -> String {
        rows.iter()
            .map(|[key, default, doc]| format!("| `{key}` | {default} | {doc} |\n"))
            .collect()
    }

    #[test]
    fn docs_tables_match_the_key_table() {
        let table = table_rows();
        let documented = documented_rows();
        let hint = format!(
            "the tables of docs/configuration.md should read, in this order:\n{}",
            as_markdown(&table)
        );
        for [key, default, doc] in &table {
            let Some(row) = documented.iter().find(|row| row[0] == *key) else {
                panic!("{key} is not in docs/configuration.md\n{hint}");
            };
            assert_eq!(row[1], *default, "default of {key}\n{hint}");
            assert_eq!(row[2], *doc, "description of {key}\n{hint}");
        }
        for [key, ..] in &documented {
            assert!(
                table.iter().any(|row| row[0] == *key),
                "{key} is documented but not in the key table\n{hint}"
            );
        }
        assert_eq!(documented, table, "{hint}");
    }

    #[test]
    fn defaults_fit_kinds() {
        for key in KEYS {
            // What `Layer` reads for each kind (`syntax.rs`): a number for
            // seconds and counts, a path for required paths, and so on;
            // `None` and `Described` only where the setting is optional.
            let fits = match (key.kind, key.default) {
                (Kind::Path | Kind::Count, DefaultValue::None | DefaultValue::Described(_)) => {
                    false
                }
                (_, DefaultValue::None | DefaultValue::Described(_)) => true,
                (Kind::Seconds | Kind::Count, DefaultValue::Number(_)) => true,
                (Kind::Bool, DefaultValue::Bool(_)) => true,
                (Kind::Path, DefaultValue::Text(_) | DefaultValue::InDataDir(_)) => true,
                (
                    Kind::Text | Kind::OptText | Kind::KeyType | Kind::BootEnv,
                    DefaultValue::Text(_),
                ) => true,
                _ => false,
            };
            assert!(fits, "{}: {:?} with {:?}", key.path, key.kind, key.default);
        }
        assert_eq!(
            BOOT_ENV_TYPE.default,
            DefaultValue::Text(super::super::BootEnvType::default().as_str())
        );
        assert_eq!(
            rendered(DEVICE_KEY_TYPE.default),
            format!("`{}`", crate::device_key::DeviceKeyType::default())
        );
    }

    #[test]
    fn keys_are_unique_and_found_in_any_case() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                !KEYS[..i]
                    .iter()
                    .any(|k| k.path.eq_ignore_ascii_case(key.path)),
                "{} twice",
                key.path
            );
            let (prefix, name) = match key.path.rsplit_once('.') {
                Some((object, name)) => (format!("{object}."), name),
                None => (String::new(), key.path),
            };
            let found = find(&prefix, &name.to_ascii_uppercase());
            assert!(matches!(found, Some(Found::Key(k)) if k.path == key.path));
        }
        assert!(matches!(
            find("", "httpsclient"),
            Some(Found::Object("HttpsClient"))
        ));
        assert!(find("", "Key").is_none());
        assert!(find("", "HttpsClient.Key").is_none());
    }
}
