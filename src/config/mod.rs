//! The client configuration: Mender's `mender.conf` (JSON), optionally in
//! TOML, read from a main file and a fallback file.
//!
//! Keys are Mender's (spec §4.2) plus a few of mender-rs' own for paths
//! Mender derives at build time (`RootfsScriptsPath`, `ModulesPath`,
//! `BootEnvType`, ...). Names match case-insensitively (ASCII), as Go's
//! `encoding/json` does for the Mender 3.x client; messages always use the
//! canonical spelling.
//!
//! Compared with Mender the parser is stricter about values: a wrong type,
//! a negative number of seconds, an empty path where one is required, or
//! two keys that exclude each other is an error naming the file and the
//! key. Unknown keys are only logged. A JSON `null` counts as "not given".
//! Paths are taken as given: relative paths stay relative and `~` is not
//! expanded.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Default main configuration file.
pub const DEFAULT_MAIN_CONFIG: &str = "/etc/mender/mender.conf";
/// Default fallback configuration file, on persistent storage.
pub const DEFAULT_FALLBACK_CONFIG: &str = "/var/lib/mender/mender.conf";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/mender";
/// The TOML file read next to a main file called `mender.conf`.
pub const TOML_SIBLING: &str = "mender.toml";

const DEFAULT_STATE_SCRIPT_TIMEOUT: u64 = 3600;
const DEFAULT_STATE_SCRIPT_RETRY_INTERVAL: u64 = 60;
const DEFAULT_STATE_SCRIPT_RETRY_TIMEOUT: u64 = 1800;
const DEFAULT_MODULE_TIMEOUT: u64 = 14400;
const DEFAULT_UPDATE_POLL: u64 = 1800;
const DEFAULT_INVENTORY_POLL: u64 = 28800;
const DEFAULT_RETRY_POLL: u64 = 300;
const DEFAULT_UCM_BOOT_EXPIRATION: u64 = 600;
const DEFAULT_RETRY_DOWNLOAD_COUNT: u32 = 10;
const DEFAULT_REBOOT_COMMAND: &str = "reboot";
const DEFAULT_REBOOT_TIMEOUT: u64 = 300;
const DEFAULT_ROOTFS_SCRIPTS: &str = "/etc/mender/scripts";
const DEFAULT_MODULES: &str = "/usr/share/mender/modules/v3";
const DEFAULT_BOOT_ENV_CONFIG: &str = "/etc/fw_env.config";
const DEFAULT_IDENTITY_SCRIPT: &str = "/usr/share/mender/identity/mender-device-identity";
const DEFAULT_INVENTORY_SCRIPTS: &str = "/usr/share/mender/inventory";

/// Largest accepted number of seconds (about 136 years), so that adding a
/// configured duration to a time stamp cannot overflow.
const MAX_SECONDS: u64 = u32::MAX as u64;

/// Largest configuration file read (JSON or TOML). Mender's own files are a
/// few KiB; 1 MiB leaves room for long key and server lists while the
/// parsed tree (a few times the text) stays small on a device.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Largest device-type file read. It holds one short line
/// (`device_type=<name>`), perhaps a few more; 64 KiB is far beyond any
/// real one and cheap to hold.
const MAX_DEVICE_TYPE_FILE: u64 = 64 << 10;

/// The effective configuration, after merging the files and applying the
/// defaults.
#[derive(Debug, Clone)]
pub struct Config {
    // Paths that decide where things are
    /// The data directory (from [`ConfigPaths`], not from a file).
    pub data_dir: PathBuf,
    /// `artifact_info` beside the main configuration file (Mender reads the
    /// installed artifact's name from it until it has one of its own).
    pub artifact_info_file: PathBuf,
    /// `RootfsPartA`.
    pub rootfs_part_a: Option<PathBuf>,
    /// `RootfsPartB`.
    pub rootfs_part_b: Option<PathBuf>,
    /// `DeviceTypeFile`, default `<data_dir>/device_type`.
    pub device_type_file: PathBuf,
    /// `ArtifactVerifyKey` (one) or `ArtifactVerifyKeys` (list, in order).
    pub artifact_verify_keys: Vec<PathBuf>,
    /// `StateScriptTimeoutSeconds`, default 3600 s.
    pub state_script_timeout: Duration,
    /// `StateScriptRetryIntervalSeconds`, default 60 s.
    pub state_script_retry_interval: Duration,
    /// `StateScriptRetryTimeoutSeconds`, default 1800 s.
    pub state_script_retry_timeout: Duration,
    /// `ModuleTimeoutSeconds`, default 14400 s.
    pub module_timeout: Duration,
    /// `RootfsScriptsPath`, default `/etc/mender/scripts`.
    pub rootfs_scripts_path: PathBuf,
    /// `ArtifactScriptsPath`, default `<data_dir>/scripts`.
    pub artifact_scripts_path: PathBuf,
    /// `ModulesPath`, default `/usr/share/mender/modules/v3`.
    pub modules_path: PathBuf,
    /// `ModulesWorkPath`, default `<data_dir>/modules/v3`.
    pub modules_work_path: PathBuf,
    // Boot environment
    /// `BootEnvType`: `uboot` (default), `grub` or `tools`.
    pub boot_env_type: BootEnvType,
    /// `BootEnvConfig`, default `/etc/fw_env.config`.
    pub boot_env_config: PathBuf,
    /// `GrubEnvDir`; `None` means detect it later.
    pub grub_env_dir: Option<PathBuf>,
    /// `BootUtilitiesSetActivePart`.
    pub boot_utilities_set_active_part: Option<String>,
    /// `BootUtilitiesGetNextActivePart`.
    pub boot_utilities_get_next_active_part: Option<String>,
    // Managed mode (parsed and validated now; used by the daemon later)
    /// `ServerURL` (one) or `Servers` (list of `{"ServerURL": ...}`), in
    /// order; a URL without a scheme gets `https://`, trailing `/` are
    /// removed. Empty when no server is configured.
    pub servers: Vec<String>,
    /// `TenantToken`, with surrounding white space removed.
    pub tenant_token: String,
    /// `ServerCertificate`.
    pub server_certificate: Option<PathBuf>,
    /// `SkipVerify`.
    pub skip_verify: bool,
    /// `HttpsClient`; `Some` only when both `Certificate` and `Key` are set.
    pub https_client: Option<HttpsClient>,
    /// `Security.AuthPrivateKey`.
    pub auth_private_key: Option<PathBuf>,
    /// `UpdatePollIntervalSeconds`, default 1800 s.
    pub update_poll_interval: Duration,
    /// `InventoryPollIntervalSeconds`, default 28800 s.
    pub inventory_poll_interval: Duration,
    /// `RetryPollIntervalSeconds`, default 300 s (as configured; the
    /// back-off applies its own minimum).
    pub retry_poll_interval: Duration,
    /// `RetryPollCount`, default 0 (automatic).
    pub retry_poll_count: u32,
    /// `UpdateControlMapExpirationTimeSeconds`; `None` means twice the
    /// update poll interval.
    pub update_control_map_expiration: Option<Duration>,
    /// `UpdateControlMapBootExpirationTimeSeconds`, default 600 s.
    pub update_control_map_boot_expiration: Duration,
    /// `DaemonLogLevel`, as written (not validated here).
    pub daemon_log_level: Option<String>,
    /// `IdentityScript`, default
    /// `/usr/share/mender/identity/mender-device-identity`.
    pub identity_script: PathBuf,
    /// `InventoryScriptsPath`, default `/usr/share/mender/inventory`.
    pub inventory_scripts_path: PathBuf,
    /// `DBus.Enabled`, default true.
    pub dbus_enabled: bool,
    /// `RetryDownloadCount` (from the 4.x client): resume attempts of an
    /// interrupted download without progress, default 10.
    pub retry_download_count: u32,
    /// `RebootCommand` (ours): how the daemon reboots the device for a
    /// `rootfs-image` update, default `reboot`. Split at white space.
    pub reboot_command: String,
    /// `RebootTimeoutSeconds` (ours): how long `RebootCommand` may run
    /// before it is killed and the reboot counts as failed, default 300.
    pub reboot_timeout: Duration,
    /// `DeviceKeyType` (ours): the kind of device key generated on first
    /// start when none exists: `rsa3072` (default), `ed25519`,
    /// `ecdsa-p256`.
    pub device_key_type: crate::device_key::DeviceKeyType,
    // Accepted, type-checked and not used (no warning): Connectivity,
    // UpdateLogPath, DeviceTier,
    // UpdateControlMapPollIntervalSeconds, Security.SSLEngine.
}

/// `HttpsClient`: the client certificate for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsClient {
    /// `HttpsClient.Certificate`: a file or a `pkcs11:` URI.
    pub certificate: PathBuf,
    /// `HttpsClient.Key`: a file or a `pkcs11:` URI.
    pub key: PathBuf,
    /// `HttpsClient.SSLEngine`.
    pub ssl_engine: Option<String>,
}

/// How the boot loader's environment is read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootEnvType {
    /// U-Boot environment (`fw_printenv`/`fw_setenv` semantics).
    #[default]
    UBoot,
    /// GRUB environment block (meta-mender's `grub-mender-grubenv`).
    Grub,
    /// External tools (`BootUtilities*`).
    Tools,
}

impl BootEnvType {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BootEnvType::UBoot => "uboot",
            BootEnvType::Grub => "grub",
            BootEnvType::Tools => "tools",
        }
    }

    fn parse(name: &str) -> Option<BootEnvType> {
        [BootEnvType::UBoot, BootEnvType::Grub, BootEnvType::Tools]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for BootEnvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    /// The main file; its keys win over the fallback's.
    pub main: PathBuf,
    /// Given by the user (`--config`): it must exist.
    pub main_explicit: bool,
    /// The fallback file.
    pub fallback: PathBuf,
    /// Given by the user (`--fallback-config`): it must exist.
    pub fallback_explicit: bool,
    /// The data directory, base of several defaults.
    pub data_dir: PathBuf,
}

impl Default for ConfigPaths {
    fn default() -> Self {
        ConfigPaths {
            main: PathBuf::from(DEFAULT_MAIN_CONFIG),
            main_explicit: false,
            fallback: PathBuf::from(DEFAULT_FALLBACK_CONFIG),
            fallback_explicit: false,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

/// A configuration problem. Every message is one line and starts with the
/// file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (for a file the user named: also missing).
    #[error("{file}: {source}")]
    Io { file: String, source: io::Error },
    /// The file is not a regular file, is too large, or cannot be read; the
    /// message starts with its path.
    #[error(transparent)]
    Read(#[from] crate::fsutil::ReadError),
    /// The file is not valid JSON or TOML, or not an object at the top.
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// A key has a value of the wrong type.
    #[error("{file}: {key}: expected {expected}, found {found}")]
    Type {
        file: String,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A key has a value of the right type that is not acceptable.
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    /// Two keys that exclude each other are both set; `other_file` is the
    /// file setting `other_key` when that is not `file`.
    #[error("{file}: {key}: cannot be used together with {other_key}{}", in_other_file(.other_file))]
    Conflict {
        file: String,
        key: &'static str,
        other_key: &'static str,
        other_file: Option<String>,
    },
    /// The device type file has no `device_type=` line.
    #[error("{file}: no device_type=<value> line")]
    NoDeviceType { file: String },
}

fn in_other_file(other: &Option<String>) -> String {
    match other {
        Some(file) => format!(" (set in {file})"),
        None => String::new(),
    }
}

impl Config {
    /// Reads the configuration files named by `paths` and applies defaults.
    ///
    /// Files are read in this order, each key (including each key of a
    /// nested object such as `HttpsClient.Key`) taken from the last file
    /// that sets it; lists (`Servers`, `ArtifactVerifyKeys`) are replaced
    /// as a whole:
    ///
    /// 1. the fallback file (`/var/lib/mender/mender.conf`);
    /// 2. when the main file is not explicit and is called `mender.conf`
    ///    (by default `/etc/mender/mender.conf`): the `mender.toml` next to
    ///    it, if it exists;
    /// 3. the main file.
    ///
    /// So when both `mender.conf` and `mender.toml` exist, the JSON
    /// `mender.conf` wins, key by key: Mender's tooling (`mender setup`,
    /// meta-mender) writes the JSON file, and the TOML file is for people
    /// who prefer writing TOML. A main file given explicitly is read alone
    /// (no sibling).
    ///
    /// A file whose name ends in `.toml` is parsed as TOML, any other as
    /// JSON. A missing file is skipped unless it is explicit; with no file
    /// at all, the defaults apply. Warnings (unknown keys, ...) are logged.
    pub fn load(paths: &ConfigPaths) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let result = load_files(paths, &mut warnings);
        emit(&warnings);
        let mut config = result?;
        let conf_dir = match paths.main.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        config.artifact_info_file = conf_dir.join("artifact_info");
        Ok(config)
    }

    /// Only from text, for tests and for `--config -`: `name` is used in
    /// messages; `toml` selects the syntax.
    pub fn from_str(
        name: &str,
        text: &str,
        toml: bool,
        data_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let result = parse_layer(name, text, toml, &mut warnings)
            .and_then(|layer| build(&layer, data_dir, &mut warnings));
        emit(&warnings);
        result
    }

    /// The device type from `device_type_file`: the value of its
    /// `device_type=<value>` line (white space around the name and the value
    /// ignored; other lines ignored; the first such line counts, as for
    /// Mender). Only a regular file of at most [`MAX_DEVICE_TYPE_FILE`]
    /// bytes is read.
    pub fn device_type(&self) -> Result<String, ConfigError> {
        let path = &self.device_type_file;
        let file = path.display().to_string();
        let bytes = crate::fsutil::read_bounded(path, MAX_DEVICE_TYPE_FILE, "a device-type file")?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
            file: file.clone(),
            key: "device_type".into(),
            message: "the file is not valid UTF-8".into(),
        })?;
        for line in text.trim_start_matches('\u{feff}').lines() {
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if name.trim() != "device_type" {
                continue;
            }
            let value = value.trim();
            if value.is_empty() {
                return Err(ConfigError::Invalid {
                    file,
                    key: "device_type".into(),
                    message: "empty value".into(),
                });
            }
            return Ok(value.to_string());
        }
        Err(ConfigError::NoDeviceType { file })
    }
}

fn emit(warnings: &[String]) {
    for warning in warnings {
        log::warn!("{warning}");
    }
}

fn is_toml_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".toml"))
}

/// The files to read, lowest precedence first, with whether each must
/// exist.
fn files_in_order(paths: &ConfigPaths) -> Vec<(PathBuf, bool)> {
    let mut files = vec![(paths.fallback.clone(), paths.fallback_explicit)];
    if !paths.main_explicit
        && paths.main.file_name().and_then(|n| n.to_str()) == Some("mender.conf")
    {
        files.push((paths.main.with_file_name(TOML_SIBLING), false));
    }
    files.push((paths.main.clone(), paths.main_explicit));
    files
}

fn load_files(paths: &ConfigPaths, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let mut merged = Layer::default();
    for (path, explicit) in files_in_order(paths) {
        let name = path.display().to_string();
        let Some(text) = read_file(&path, &name, explicit)? else {
            continue;
        };
        let layer = parse_layer(&name, &text, is_toml_file(&path), warnings)?;
        merged.overlay(layer);
    }
    build(&merged, &paths.data_dir, warnings)
}

/// The text of a configuration file; `None` if it does not exist and need
/// not. Only a regular file of at most [`MAX_CONFIG_FILE`] bytes is read (a
/// link to `/dev/zero` or a FIFO is refused at once).
fn read_file(path: &Path, name: &str, explicit: bool) -> Result<Option<String>, ConfigError> {
    let bytes = match crate::fsutil::read_bounded(path, MAX_CONFIG_FILE, "a configuration file") {
        Ok(bytes) => bytes,
        Err(error) if error.is_not_found() && !explicit => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|error| ConfigError::Syntax {
            file: name.to_string(),
            message: format!(
                "not valid UTF-8 (at byte {})",
                error.utf8_error().valid_up_to()
            ),
        })
}

// ---------------------------------------------------------------------------
// Syntax: JSON and TOML into one value tree

/// A parsed value, whichever the syntax. Objects keep their keys in file
/// order, duplicates included.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
    Datetime,
}

impl Value {
    fn describe(&self, toml: bool) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) if toml => "a table",
            Value::Object(_) => "an object",
            Value::Datetime => "a date-time",
        }
    }

    fn from_toml(value: toml::Value) -> Value {
        match value {
            toml::Value::String(s) => Value::Str(s),
            toml::Value::Integer(i) => Value::Int(i.into()),
            toml::Value::Float(f) => Value::Float(f),
            toml::Value::Boolean(b) => Value::Bool(b),
            toml::Value::Datetime(_) => Value::Datetime,
            toml::Value::Array(items) => {
                Value::Array(items.into_iter().map(Value::from_toml).collect())
            }
            toml::Value::Table(table) => Value::Object(toml_entries(table)),
        }
    }
}

/// The entries of a TOML table, as [`Value::Object`] holds them.
fn toml_entries(table: toml::Table) -> Vec<(String, Value)> {
    table
        .into_iter()
        .map(|(key, value)| (key, Value::from_toml(value)))
        .collect()
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            entries.push((key, value));
        }
        Ok(Value::Object(entries))
    }
}

/// Parses a whole file into its top-level object.
fn parse_syntax(file: &str, text: &str, toml: bool) -> Result<Vec<(String, Value)>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let syntax = |message: String| ConfigError::Syntax {
        file: file.to_string(),
        message,
    };
    if toml {
        return match text.parse::<toml::Table>() {
            Ok(table) => Ok(toml_entries(table)),
            Err(error) => Err(syntax(toml_error_message(text, &error))),
        };
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(entries)) => Ok(entries),
        Ok(other) => Err(syntax(format!(
            "invalid configuration: expected a JSON object at the top level, found {}",
            other.describe(false)
        ))),
        Err(error) => Err(syntax(format!("invalid JSON: {error}"))),
    }
}

/// One line for a TOML syntax error (the crate's own rendering spans
/// several lines).
fn toml_error_message(text: &str, error: &toml::de::Error) -> String {
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            format!("invalid TOML at line {line} column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}

// ---------------------------------------------------------------------------
// Keys

#[derive(Debug, Clone, Copy)]
enum Kind {
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
struct Key {
    /// Canonical spelling within its object.
    name: &'static str,
    /// Canonical full name, as used in messages and in [`Layer`].
    path: &'static str,
    kind: Kind,
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key {
        name,
        path: name,
        kind,
    }
}

const fn sub(name: &'static str, path: &'static str, kind: Kind) -> Key {
    Key { name, path, kind }
}

const SERVER_URL: &str = "ServerURL";
const SERVERS: &str = "Servers";
const TENANT_TOKEN: &str = "TenantToken";
const SERVER_CERTIFICATE: &str = "ServerCertificate";
const SKIP_VERIFY: &str = "SkipVerify";
const HTTPS_CERTIFICATE: &str = "HttpsClient.Certificate";
const HTTPS_KEY: &str = "HttpsClient.Key";
const HTTPS_SSL_ENGINE: &str = "HttpsClient.SSLEngine";
const AUTH_PRIVATE_KEY: &str = "Security.AuthPrivateKey";
const UPDATE_POLL: &str = "UpdatePollIntervalSeconds";
const INVENTORY_POLL: &str = "InventoryPollIntervalSeconds";
const RETRY_POLL: &str = "RetryPollIntervalSeconds";
const RETRY_POLL_COUNT: &str = "RetryPollCount";
const STATE_SCRIPT_TIMEOUT: &str = "StateScriptTimeoutSeconds";
const STATE_SCRIPT_RETRY_INTERVAL: &str = "StateScriptRetryIntervalSeconds";
const STATE_SCRIPT_RETRY_TIMEOUT: &str = "StateScriptRetryTimeoutSeconds";
const MODULE_TIMEOUT: &str = "ModuleTimeoutSeconds";
const ARTIFACT_VERIFY_KEY: &str = "ArtifactVerifyKey";
const ARTIFACT_VERIFY_KEYS: &str = "ArtifactVerifyKeys";
const ROOTFS_PART_A: &str = "RootfsPartA";
const ROOTFS_PART_B: &str = "RootfsPartB";
const BOOT_SET_ACTIVE: &str = "BootUtilitiesSetActivePart";
const BOOT_GET_NEXT_ACTIVE: &str = "BootUtilitiesGetNextActivePart";
const DEVICE_TYPE_FILE: &str = "DeviceTypeFile";
const DBUS_ENABLED: &str = "DBus.Enabled";
const UCM_EXPIRATION: &str = "UpdateControlMapExpirationTimeSeconds";
const UCM_BOOT_EXPIRATION: &str = "UpdateControlMapBootExpirationTimeSeconds";
const DAEMON_LOG_LEVEL: &str = "DaemonLogLevel";
const ROOTFS_SCRIPTS_PATH: &str = "RootfsScriptsPath";
const ARTIFACT_SCRIPTS_PATH: &str = "ArtifactScriptsPath";
const MODULES_PATH: &str = "ModulesPath";
const MODULES_WORK_PATH: &str = "ModulesWorkPath";
const BOOT_ENV_TYPE: &str = "BootEnvType";
const BOOT_ENV_CONFIG: &str = "BootEnvConfig";
const GRUB_ENV_DIR: &str = "GrubEnvDir";
const IDENTITY_SCRIPT: &str = "IdentityScript";
const INVENTORY_SCRIPTS_PATH: &str = "InventoryScriptsPath";
const RETRY_DOWNLOAD_COUNT: &str = "RetryDownloadCount";
const REBOOT_COMMAND: &str = "RebootCommand";
const REBOOT_TIMEOUT: &str = "RebootTimeoutSeconds";
const DEVICE_KEY_TYPE: &str = "DeviceKeyType";

const HTTPS_CLIENT_KEYS: &[Key] = &[
    sub("Certificate", HTTPS_CERTIFICATE, Kind::OptPath),
    sub("Key", HTTPS_KEY, Kind::OptPath),
    sub("SSLEngine", HTTPS_SSL_ENGINE, Kind::OptText),
];

const SECURITY_KEYS: &[Key] = &[
    sub("AuthPrivateKey", AUTH_PRIVATE_KEY, Kind::OptPath),
    sub("SSLEngine", "Security.SSLEngine", Kind::OptText),
];

const CONNECTIVITY_KEYS: &[Key] = &[
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

const DBUS_KEYS: &[Key] = &[sub("Enabled", DBUS_ENABLED, Kind::Bool)];

/// Every top-level key this client knows.
const KEYS: &[Key] = &[
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

/// A checked value of a key.
#[derive(Debug, Clone, PartialEq)]
enum Setting {
    Str(String),
    Num(u64),
    Bool(bool),
    Paths(Vec<PathBuf>),
    Urls(Vec<String>),
    Boot(BootEnvType),
}

#[derive(Debug, Clone)]
struct Entry {
    /// The file that set it.
    file: String,
    setting: Setting,
}

/// The settings of one file, or of several merged; keyed by the canonical
/// full key name (`HttpsClient.Key`).
#[derive(Debug, Default)]
struct Layer {
    entries: HashMap<&'static str, Entry>,
}

impl Layer {
    /// Takes every key `upper` sets from `upper`.
    fn overlay(&mut self, upper: Layer) {
        self.entries.extend(upper.entries);
    }

    fn get(&self, key: &str) -> Option<&Setting> {
        self.entries.get(key).map(|entry| &entry.setting)
    }

    fn file(&self, key: &str) -> &str {
        self.entries.get(key).map_or("", |entry| &entry.file)
    }

    fn text(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Setting::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A string that is set and not empty.
    fn non_empty(&self, key: &str) -> Option<&str> {
        self.text(key).filter(|s| !s.is_empty())
    }

    fn opt_path(&self, key: &str) -> Option<PathBuf> {
        self.non_empty(key).map(PathBuf::from)
    }

    fn path_or(&self, key: &str, default: PathBuf) -> PathBuf {
        self.opt_path(key).unwrap_or(default)
    }

    fn opt_string(&self, key: &str) -> Option<String> {
        self.non_empty(key).map(str::to_string)
    }

    fn num(&self, key: &str) -> Option<u64> {
        match self.get(key) {
            Some(Setting::Num(n)) => Some(*n),
            _ => None,
        }
    }

    /// Seconds, with 0 or absent meaning `None`.
    fn opt_seconds(&self, key: &str) -> Option<Duration> {
        self.num(key).filter(|&n| n > 0).map(Duration::from_secs)
    }

    fn seconds_or(&self, key: &str, default: u64) -> Duration {
        self.opt_seconds(key)
            .unwrap_or(Duration::from_secs(default))
    }

    fn bool_or(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            Some(Setting::Bool(b)) => *b,
            _ => default,
        }
    }

    fn paths(&self, key: &str) -> &[PathBuf] {
        match self.get(key) {
            Some(Setting::Paths(paths)) => paths,
            _ => &[],
        }
    }

    fn urls(&self, key: &str) -> &[String] {
        match self.get(key) {
            Some(Setting::Urls(urls)) => urls,
            _ => &[],
        }
    }
}

/// Parses and checks one file.
fn parse_layer(
    file: &str,
    text: &str,
    toml: bool,
    warnings: &mut Vec<String>,
) -> Result<Layer, ConfigError> {
    let entries = parse_syntax(file, text, toml)?;
    let mut checker = Checker {
        file,
        toml,
        warnings,
        layer: Layer::default(),
    };
    checker.object(&entries, KEYS, "")?;
    Ok(checker.layer)
}

struct Checker<'a> {
    file: &'a str,
    toml: bool,
    warnings: &'a mut Vec<String>,
    layer: Layer,
}

impl Checker<'_> {
    fn type_error(
        &self,
        key: impl Into<String>,
        expected: &'static str,
        found: &Value,
    ) -> ConfigError {
        ConfigError::Type {
            file: self.file.to_string(),
            key: key.into(),
            expected,
            found: found.describe(self.toml),
        }
    }

    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks the entries of an object against `keys`; `prefix` is the
    /// object's own canonical name followed by `.` (empty at the top).
    fn object(
        &mut self,
        entries: &[(String, Value)],
        keys: &'static [Key],
        prefix: &str,
    ) -> Result<(), ConfigError> {
        // Each known key with the spelling it was first given in.
        let mut seen: Vec<(&'static str, &str)> = Vec::new();
        for (name, value) in entries {
            let Some(key) = keys.iter().find(|k| k.name.eq_ignore_ascii_case(name)) else {
                self.warnings.push(format!(
                    "{}: {prefix}{name}: unknown configuration key, ignored",
                    self.file
                ));
                continue;
            };
            if let Some((_, first)) = seen.iter().find(|(path, _)| *path == key.path) {
                return Err(self.duplicate(key.path, first, name));
            }
            seen.push((key.path, name));
            if *value == Value::Null {
                continue;
            }
            if let Kind::Object(sub_keys) = key.kind {
                let Value::Object(sub_entries) = value else {
                    return Err(self.type_error(key.path, "an object", value));
                };
                self.object(sub_entries, sub_keys, &format!("{}.", key.path))?;
                continue;
            }
            let setting = self.setting(key, value)?;
            self.layer.entries.insert(
                key.path,
                Entry {
                    file: self.file.to_string(),
                    setting,
                },
            );
        }
        Ok(())
    }

    /// A key given twice in one object. Go's `encoding/json` (and so
    /// Mender) silently keeps the last one, matching names without regard
    /// to case; which value a device runs with must not hinge on that.
    fn duplicate(&self, key: &str, first: &str, again: &str) -> ConfigError {
        let message = if first == again {
            format!("given twice (as {first:?})")
        } else {
            format!("given twice, as {first:?} and as {again:?} (names are case-insensitive)")
        };
        self.invalid(key, message)
    }

    fn string<'v>(&self, key: &str, value: &'v Value) -> Result<&'v str, ConfigError> {
        match value {
            Value::Str(s) => Ok(s),
            other => Err(self.type_error(key, "a string", other)),
        }
    }

    fn integer(&self, key: &str, value: &Value, max: u64, what: &str) -> Result<u64, ConfigError> {
        let Value::Int(n) = *value else {
            return Err(self.type_error(key, "an integer", value));
        };
        if n < 0 {
            return Err(self.invalid(key, format!("must not be negative, found {n}")));
        }
        u64::try_from(n)
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| self.invalid(key, format!("{n} is too large (at most {max}{what})")))
    }

    fn setting(&mut self, key: &Key, value: &Value) -> Result<Setting, ConfigError> {
        let path = key.path;
        Ok(match key.kind {
            Kind::Path => {
                let s = self.string(path, value)?;
                if s.is_empty() {
                    return Err(self.invalid(path, "empty path"));
                }
                Setting::Str(s.to_string())
            }
            Kind::OptPath | Kind::OptText | Kind::Text => {
                Setting::Str(self.string(path, value)?.to_string())
            }
            Kind::Url => {
                let url = normalize_url(self.string(path, value)?)
                    .map_err(|message| self.invalid(path, message))?;
                Setting::Str(url)
            }
            Kind::Seconds => Setting::Num(self.integer(path, value, MAX_SECONDS, " seconds")?),
            Kind::Count => Setting::Num(self.integer(path, value, u32::MAX.into(), "")?),
            Kind::Bool => match value {
                Value::Bool(b) => Setting::Bool(*b),
                other => return Err(self.type_error(path, "a boolean", other)),
            },
            Kind::PathList => {
                let Value::Array(items) = value else {
                    return Err(self.type_error(path, "an array of strings", value));
                };
                let mut paths = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_key = format!("{path}[{i}]");
                    let s = self.string(&item_key, item)?;
                    if s.is_empty() {
                        return Err(self.invalid(item_key, "empty path"));
                    }
                    paths.push(PathBuf::from(s));
                }
                Setting::Paths(paths)
            }
            Kind::ServerList => Setting::Urls(self.servers(path, value)?),
            Kind::BootEnv => {
                let s = self.string(path, value)?;
                let boot = BootEnvType::parse(s).ok_or_else(|| {
                    self.invalid(
                        path,
                        format!("unknown boot environment {s:?}; expected \"uboot\", \"grub\" or \"tools\""),
                    )
                })?;
                Setting::Boot(boot)
            }
            Kind::KeyType => {
                let s = self.string(path, value)?;
                if crate::device_key::DeviceKeyType::from_str(s).is_err() {
                    return Err(self.invalid(
                        path,
                        format!("unknown key type {s:?}; expected \"rsa3072\", \"ed25519\" or \"ecdsa-p256\""),
                    ));
                }
                Setting::Str(s.to_string())
            }
            // Handled by `object`.
            Kind::Object(_) => return Err(self.type_error(path, "an object", value)),
        })
    }

    /// `Servers`: `[{"ServerURL": "..."}, ...]`.
    fn servers(&mut self, path: &str, value: &Value) -> Result<Vec<String>, ConfigError> {
        let Value::Array(items) = value else {
            return Err(self.type_error(path, "an array of objects", value));
        };
        let mut urls = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{path}[{i}]");
            let Value::Object(fields) = item else {
                return Err(self.type_error(item_key, "an object", item));
            };
            let url_key = format!("{item_key}.{SERVER_URL}");
            let mut url = None;
            let mut first: Option<&str> = None;
            for (name, field) in fields {
                if !name.eq_ignore_ascii_case(SERVER_URL) {
                    self.warnings.push(format!(
                        "{}: {item_key}.{name}: unknown configuration key, ignored",
                        self.file
                    ));
                    continue;
                }
                if let Some(first) = first {
                    return Err(self.duplicate(&url_key, first, name));
                }
                first = Some(name);
                if *field != Value::Null {
                    url = Some(self.string(&url_key, field)?);
                }
            }
            let url = normalize_url(url.unwrap_or(""))
                .map_err(|message| self.invalid(&url_key, message))?;
            if url.is_empty() {
                return Err(self.invalid(url_key, "missing or empty"));
            }
            urls.push(url);
        }
        Ok(urls)
    }
}

/// A server URL as Mender uses it: surrounding white space removed,
/// `https://` added when there is no scheme, trailing `/` removed. Empty
/// stays empty (no server).
fn normalize_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(String::new());
    }
    let mut url = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    while url.ends_with('/') {
        url.pop();
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
    if scheme.is_empty() || rest.is_empty() {
        return Err(format!(
            "{url:?} is not a server URL (no scheme or no host)"
        ));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!(
            "{url:?} is not a server URL (contains white space)"
        ));
    }
    Ok(url)
}

/// `RootfsPartA`/`RootfsPartB`: images are written there, so the path must
/// not depend on the working directory, and must not lie inside the data
/// directory (the store, keys and scripts would be overwritten). Whether
/// the two name the same partition, or the running one, is for the
/// installer to tell from the devices themselves.
fn check_partition_path(part: &Path, data_dir: &Path) -> Result<(), String> {
    if !part.is_absolute() {
        return Err(format!(
            "{} is not an absolute path (a relative one depends on the directory the client runs in)",
            part.display()
        ));
    }
    let inside = |part: &Path, data: &Path| part.starts_with(data);
    let resolved = match (std::fs::canonicalize(part), std::fs::canonicalize(data_dir)) {
        (Ok(part), Ok(data)) => inside(&part, &data),
        _ => false,
    };
    if inside(part, data_dir) || resolved {
        return Err(format!(
            "{} is inside the data directory {}",
            part.display(),
            data_dir.display()
        ));
    }
    Ok(())
}

/// The configuration from the merged settings and the defaults.
fn build(
    layer: &Layer,
    data_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let conflict = |key: &'static str, other_key: &'static str| {
        let file = layer.file(key).to_string();
        let other = layer.file(other_key);
        ConfigError::Conflict {
            other_file: (other != file).then(|| other.to_string()),
            file,
            key,
            other_key,
        }
    };

    let servers = layer.urls(SERVERS);
    let server_url = layer.non_empty(SERVER_URL);
    let servers = match (server_url, servers.is_empty()) {
        (Some(_), false) => return Err(conflict(SERVER_URL, SERVERS)),
        (Some(url), true) => vec![url.to_string()],
        (None, _) => servers.to_vec(),
    };

    let verify_keys = layer.paths(ARTIFACT_VERIFY_KEYS);
    let artifact_verify_keys = match (layer.opt_path(ARTIFACT_VERIFY_KEY), verify_keys.is_empty()) {
        (Some(_), false) => return Err(conflict(ARTIFACT_VERIFY_KEY, ARTIFACT_VERIFY_KEYS)),
        (Some(key), true) => vec![key],
        (None, _) => verify_keys.to_vec(),
    };

    for key in [ROOTFS_PART_A, ROOTFS_PART_B] {
        if let Some(part) = layer.opt_path(key) {
            check_partition_path(&part, data_dir).map_err(|message| ConfigError::Invalid {
                file: layer.file(key).to_string(),
                key: key.to_string(),
                message,
            })?;
        }
    }

    // split_whitespace would find no program, and that only when the
    // daemon reboots into an installed update.
    if let Some(command) = layer.non_empty(REBOOT_COMMAND)
        && command.trim().is_empty()
    {
        return Err(ConfigError::Invalid {
            file: layer.file(REBOOT_COMMAND).to_string(),
            key: REBOOT_COMMAND.to_string(),
            message: "only white space: no command (leave it out for the default, reboot)".into(),
        });
    }

    let https_client = match (layer.opt_path(HTTPS_CERTIFICATE), layer.opt_path(HTTPS_KEY)) {
        (Some(certificate), Some(key)) => Some(HttpsClient {
            certificate,
            key,
            ssl_engine: layer.opt_string(HTTPS_SSL_ENGINE),
        }),
        (Some(_), None) => {
            warnings.push(format!(
                "{}: {HTTPS_CERTIFICATE}: set without {HTTPS_KEY}; no client certificate is used",
                layer.file(HTTPS_CERTIFICATE)
            ));
            None
        }
        (None, Some(_)) => {
            warnings.push(format!(
                "{}: {HTTPS_KEY}: set without {HTTPS_CERTIFICATE}; no client certificate is used",
                layer.file(HTTPS_KEY)
            ));
            None
        }
        (None, None) => None,
    };

    Ok(Config {
        data_dir: data_dir.to_path_buf(),
        artifact_info_file: PathBuf::from("/etc/mender/artifact_info"),
        rootfs_part_a: layer.opt_path(ROOTFS_PART_A),
        rootfs_part_b: layer.opt_path(ROOTFS_PART_B),
        device_type_file: layer.path_or(DEVICE_TYPE_FILE, data_dir.join("device_type")),
        artifact_verify_keys,
        state_script_timeout: layer.seconds_or(STATE_SCRIPT_TIMEOUT, DEFAULT_STATE_SCRIPT_TIMEOUT),
        state_script_retry_interval: layer.seconds_or(
            STATE_SCRIPT_RETRY_INTERVAL,
            DEFAULT_STATE_SCRIPT_RETRY_INTERVAL,
        ),
        state_script_retry_timeout: layer.seconds_or(
            STATE_SCRIPT_RETRY_TIMEOUT,
            DEFAULT_STATE_SCRIPT_RETRY_TIMEOUT,
        ),
        module_timeout: layer.seconds_or(MODULE_TIMEOUT, DEFAULT_MODULE_TIMEOUT),
        rootfs_scripts_path: layer.path_or(ROOTFS_SCRIPTS_PATH, DEFAULT_ROOTFS_SCRIPTS.into()),
        artifact_scripts_path: layer.path_or(ARTIFACT_SCRIPTS_PATH, data_dir.join("scripts")),
        modules_path: layer.path_or(MODULES_PATH, DEFAULT_MODULES.into()),
        modules_work_path: layer.path_or(MODULES_WORK_PATH, data_dir.join("modules/v3")),
        boot_env_type: match layer.get(BOOT_ENV_TYPE) {
            Some(Setting::Boot(boot)) => *boot,
            _ => BootEnvType::default(),
        },
        boot_env_config: layer.path_or(BOOT_ENV_CONFIG, DEFAULT_BOOT_ENV_CONFIG.into()),
        grub_env_dir: layer.opt_path(GRUB_ENV_DIR),
        boot_utilities_set_active_part: layer.opt_string(BOOT_SET_ACTIVE),
        boot_utilities_get_next_active_part: layer.opt_string(BOOT_GET_NEXT_ACTIVE),
        servers,
        tenant_token: layer.text(TENANT_TOKEN).unwrap_or("").trim().to_string(),
        server_certificate: layer.opt_path(SERVER_CERTIFICATE),
        skip_verify: layer.bool_or(SKIP_VERIFY, false),
        https_client,
        auth_private_key: layer.opt_path(AUTH_PRIVATE_KEY),
        update_poll_interval: layer.seconds_or(UPDATE_POLL, DEFAULT_UPDATE_POLL),
        inventory_poll_interval: layer.seconds_or(INVENTORY_POLL, DEFAULT_INVENTORY_POLL),
        retry_poll_interval: layer.seconds_or(RETRY_POLL, DEFAULT_RETRY_POLL),
        retry_poll_count: layer
            .num(RETRY_POLL_COUNT)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        update_control_map_expiration: layer.opt_seconds(UCM_EXPIRATION),
        update_control_map_boot_expiration: layer
            .seconds_or(UCM_BOOT_EXPIRATION, DEFAULT_UCM_BOOT_EXPIRATION),
        daemon_log_level: layer.opt_string(DAEMON_LOG_LEVEL),
        identity_script: layer.path_or(IDENTITY_SCRIPT, DEFAULT_IDENTITY_SCRIPT.into()),
        inventory_scripts_path: layer
            .path_or(INVENTORY_SCRIPTS_PATH, DEFAULT_INVENTORY_SCRIPTS.into()),
        dbus_enabled: layer.bool_or(DBUS_ENABLED, true),
        retry_download_count: layer
            .num(RETRY_DOWNLOAD_COUNT)
            .filter(|&n| n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_RETRY_DOWNLOAD_COUNT),
        reboot_command: layer
            .opt_string(REBOOT_COMMAND)
            .unwrap_or_else(|| DEFAULT_REBOOT_COMMAND.to_string()),
        // 0 would kill the command at once: the default instead.
        reboot_timeout: layer
            .opt_seconds(REBOOT_TIMEOUT)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(DEFAULT_REBOOT_TIMEOUT)),
        device_key_type: layer
            .non_empty(DEVICE_KEY_TYPE)
            .and_then(|s| crate::device_key::DeviceKeyType::from_str(s).ok())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = "/data/mender";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with_warnings("test.conf", text, false).0
    }

    fn parse_toml(text: &str) -> Result<Config, ConfigError> {
        parse_with_warnings("test.toml", text, true).0
    }

    fn parse_with_warnings(
        name: &str,
        text: &str,
        toml: bool,
    ) -> (Result<Config, ConfigError>, Vec<String>) {
        let mut warnings = Vec::new();
        let result = parse_layer(name, text, toml, &mut warnings)
            .and_then(|layer| build(&layer, Path::new(DATA), &mut warnings));
        (result, warnings)
    }

    /// Merges the texts in order (lowest precedence first).
    fn merge(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let mut merged = Layer::default();
        for (name, text) in files {
            merged.overlay(parse_layer(
                name,
                text,
                name.ends_with(".toml"),
                &mut warnings,
            )?);
        }
        build(&merged, Path::new(DATA), &mut warnings)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(c.data_dir, Path::new(DATA));
        assert_eq!(c.rootfs_part_a, None);
        assert_eq!(c.rootfs_part_b, None);
        assert_eq!(c.device_type_file, Path::new("/data/mender/device_type"));
        assert!(c.artifact_verify_keys.is_empty());
        assert_eq!(c.state_script_timeout, secs(3600));
        assert_eq!(c.state_script_retry_interval, secs(60));
        assert_eq!(c.state_script_retry_timeout, secs(1800));
        assert_eq!(c.module_timeout, secs(14400));
        assert_eq!(c.rootfs_scripts_path, Path::new("/etc/mender/scripts"));
        assert_eq!(c.artifact_scripts_path, Path::new("/data/mender/scripts"));
        assert_eq!(c.modules_path, Path::new("/usr/share/mender/modules/v3"));
        assert_eq!(c.modules_work_path, Path::new("/data/mender/modules/v3"));
        assert_eq!(c.boot_env_type, BootEnvType::UBoot);
        assert_eq!(c.boot_env_config, Path::new("/etc/fw_env.config"));
        assert_eq!(c.grub_env_dir, None);
        assert_eq!(c.boot_utilities_set_active_part, None);
        assert_eq!(c.boot_utilities_get_next_active_part, None);
        assert!(c.servers.is_empty());
        assert_eq!(c.tenant_token, "");
        assert_eq!(c.server_certificate, None);
        assert!(!c.skip_verify);
        assert_eq!(c.https_client, None);
        assert_eq!(c.auth_private_key, None);
        assert_eq!(c.update_poll_interval, secs(1800));
        assert_eq!(c.inventory_poll_interval, secs(28800));
        assert_eq!(c.retry_poll_interval, secs(300));
        assert_eq!(c.retry_poll_count, 0);
        assert_eq!(c.update_control_map_expiration, None);
        assert_eq!(c.update_control_map_boot_expiration, secs(600));
        assert_eq!(c.daemon_log_level, None);
        assert_eq!(
            c.identity_script,
            Path::new("/usr/share/mender/identity/mender-device-identity")
        );
        assert_eq!(
            c.inventory_scripts_path,
            Path::new("/usr/share/mender/inventory")
        );
        assert!(c.dbus_enabled);
    }

    #[test]
    fn empty_toml_gives_defaults() {
        let c = parse_toml("").unwrap();
        assert_eq!(c.module_timeout, secs(14400));
        assert!(c.servers.is_empty());
    }

    const FULL_JSON: &str = r#"{
        "RootfsPartA": "/dev/mmcblk0p2",
        "RootfsPartB": "/dev/mmcblk0p3",
        "DeviceTypeFile": "/etc/device_type",
        "ArtifactVerifyKeys": ["/etc/mender/a.pem", "keys/b.pem"],
        "StateScriptTimeoutSeconds": 10,
        "StateScriptRetryIntervalSeconds": 11,
        "StateScriptRetryTimeoutSeconds": 12,
        "ModuleTimeoutSeconds": 13,
        "RootfsScriptsPath": "/opt/scripts",
        "ArtifactScriptsPath": "/opt/art-scripts",
        "ModulesPath": "/opt/modules",
        "ModulesWorkPath": "/opt/work",
        "BootEnvType": "grub",
        "BootEnvConfig": "/etc/my_fw_env.config",
        "GrubEnvDir": "/boot/efi/EFI/BOOT",
        "BootUtilitiesSetActivePart": "my-setenv",
        "BootUtilitiesGetNextActivePart": "my-printenv",
        "Servers": [{"ServerURL": "https://a.example.com/"}, {"ServerURL": "b.example.com:8443"}],
        "TenantToken": "  secret-token\n",
        "ServerCertificate": "/etc/mender/server.crt",
        "SkipVerify": true,
        "HttpsClient": {"Certificate": "/c.pem", "Key": "pkcs11:object=k", "SSLEngine": "pkcs11"},
        "Security": {"AuthPrivateKey": "/k.pem", "SSLEngine": "pkcs11"},
        "UpdatePollIntervalSeconds": 20,
        "InventoryPollIntervalSeconds": 21,
        "RetryPollIntervalSeconds": 22,
        "RetryPollCount": 7,
        "UpdateControlMapExpirationTimeSeconds": 23,
        "UpdateControlMapBootExpirationTimeSeconds": 24,
        "DaemonLogLevel": "debug",
        "IdentityScript": "/opt/identity",
        "InventoryScriptsPath": "/opt/inventory",
        "DBus": {"Enabled": false},
        "Connectivity": {"DisableKeepAlive": true, "IdleConnTimeoutSeconds": 30},
        "UpdateLogPath": "/var/log/mender",
        "DeviceTier": "standard",
        "RetryDownloadCount": 10,
        "UpdateControlMapPollIntervalSeconds": 5
    }"#;

    fn check_full(c: &Config) {
        assert_eq!(
            c.rootfs_part_a.as_deref(),
            Some(Path::new("/dev/mmcblk0p2"))
        );
        assert_eq!(
            c.rootfs_part_b.as_deref(),
            Some(Path::new("/dev/mmcblk0p3"))
        );
        assert_eq!(c.device_type_file, Path::new("/etc/device_type"));
        assert_eq!(
            c.artifact_verify_keys,
            [
                PathBuf::from("/etc/mender/a.pem"),
                PathBuf::from("keys/b.pem")
            ]
        );
        assert_eq!(c.state_script_timeout, secs(10));
        assert_eq!(c.state_script_retry_interval, secs(11));
        assert_eq!(c.state_script_retry_timeout, secs(12));
        assert_eq!(c.module_timeout, secs(13));
        assert_eq!(c.rootfs_scripts_path, Path::new("/opt/scripts"));
        assert_eq!(c.artifact_scripts_path, Path::new("/opt/art-scripts"));
        assert_eq!(c.modules_path, Path::new("/opt/modules"));
        assert_eq!(c.modules_work_path, Path::new("/opt/work"));
        assert_eq!(c.boot_env_type, BootEnvType::Grub);
        assert_eq!(c.boot_env_config, Path::new("/etc/my_fw_env.config"));
        assert_eq!(
            c.grub_env_dir.as_deref(),
            Some(Path::new("/boot/efi/EFI/BOOT"))
        );
        assert_eq!(
            c.boot_utilities_set_active_part.as_deref(),
            Some("my-setenv")
        );
        assert_eq!(
            c.boot_utilities_get_next_active_part.as_deref(),
            Some("my-printenv")
        );
        assert_eq!(
            c.servers,
            ["https://a.example.com", "https://b.example.com:8443"]
        );
        assert_eq!(c.tenant_token, "secret-token");
        assert_eq!(
            c.server_certificate.as_deref(),
            Some(Path::new("/etc/mender/server.crt"))
        );
        assert!(c.skip_verify);
        assert_eq!(
            c.https_client,
            Some(HttpsClient {
                certificate: "/c.pem".into(),
                key: "pkcs11:object=k".into(),
                ssl_engine: Some("pkcs11".into()),
            })
        );
        assert_eq!(c.auth_private_key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(c.update_poll_interval, secs(20));
        assert_eq!(c.inventory_poll_interval, secs(21));
        assert_eq!(c.retry_poll_interval, secs(22));
        assert_eq!(c.retry_poll_count, 7);
        assert_eq!(c.update_control_map_expiration, Some(secs(23)));
        assert_eq!(c.update_control_map_boot_expiration, secs(24));
        assert_eq!(c.daemon_log_level.as_deref(), Some("debug"));
        assert_eq!(c.identity_script, Path::new("/opt/identity"));
        assert_eq!(c.inventory_scripts_path, Path::new("/opt/inventory"));
        assert!(!c.dbus_enabled);
    }

    #[test]
    fn every_key_json() {
        let (c, warnings) = parse_with_warnings("full.conf", FULL_JSON, false);
        check_full(&c.unwrap());
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn every_key_toml() {
        let text = r#"
RootfsPartA = "/dev/mmcblk0p2"
RootfsPartB = "/dev/mmcblk0p3"
DeviceTypeFile = "/etc/device_type"
ArtifactVerifyKeys = ["/etc/mender/a.pem", "keys/b.pem"]
StateScriptTimeoutSeconds = 10
StateScriptRetryIntervalSeconds = 11
StateScriptRetryTimeoutSeconds = 12
ModuleTimeoutSeconds = 13
RootfsScriptsPath = "/opt/scripts"
ArtifactScriptsPath = "/opt/art-scripts"
ModulesPath = "/opt/modules"
ModulesWorkPath = "/opt/work"
BootEnvType = "grub"
BootEnvConfig = "/etc/my_fw_env.config"
GrubEnvDir = "/boot/efi/EFI/BOOT"
BootUtilitiesSetActivePart = "my-setenv"
BootUtilitiesGetNextActivePart = "my-printenv"
TenantToken = "  secret-token\n"
ServerCertificate = "/etc/mender/server.crt"
SkipVerify = true
UpdatePollIntervalSeconds = 20
InventoryPollIntervalSeconds = 21
RetryPollIntervalSeconds = 22
RetryPollCount = 7
UpdateControlMapExpirationTimeSeconds = 23
UpdateControlMapBootExpirationTimeSeconds = 24
DaemonLogLevel = "debug"
IdentityScript = "/opt/identity"
InventoryScriptsPath = "/opt/inventory"
UpdateLogPath = "/var/log/mender"
DeviceTier = "standard"
RetryDownloadCount = 10
UpdateControlMapPollIntervalSeconds = 5

[[Servers]]
ServerURL = "https://a.example.com/"

[[Servers]]
ServerURL = "b.example.com:8443"

[HttpsClient]
Certificate = "/c.pem"
Key = "pkcs11:object=k"
SSLEngine = "pkcs11"

[Security]
AuthPrivateKey = "/k.pem"
SSLEngine = "pkcs11"

[DBus]
Enabled = false

[Connectivity]
DisableKeepAlive = true
IdleConnTimeoutSeconds = 30
"#;
        let (c, warnings) = parse_with_warnings("full.toml", text, true);
        check_full(&c.unwrap());
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn keys_match_case_insensitively() {
        let c = parse(
            r#"{"serverurl": "hosted.mender.io", "ROOTFSPARTA": "/dev/sda2",
                "httpsclient": {"certificate": "/c", "KEY": "/k"},
                "dbus": {"enabled": false}, "bootenvtype": "TOOLS"}"#,
        )
        .unwrap();
        assert_eq!(c.servers, ["https://hosted.mender.io"]);
        assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/sda2")));
        assert_eq!(c.https_client.unwrap().key, Path::new("/k"));
        assert!(!c.dbus_enabled);
        assert_eq!(c.boot_env_type, BootEnvType::Tools);
        let c = parse_toml("rootfsparta = \"/dev/sda2\"\n[Dbus]\nENABLED = false\n").unwrap();
        assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/sda2")));
        assert!(!c.dbus_enabled);
    }

    #[test]
    fn messages_use_canonical_spelling() {
        assert_eq!(
            error(r#"{"statescripttimeoutseconds": "5"}"#),
            "test.conf: StateScriptTimeoutSeconds: expected an integer, found a string"
        );
        assert_eq!(
            error(r#"{"httpsCLIENT": {"certificate": 5}}"#),
            "test.conf: HttpsClient.Certificate: expected a string, found an integer"
        );
    }

    #[test]
    fn unknown_keys_warn_and_load() {
        let (c, warnings) = parse_with_warnings(
            "/etc/mender/mender.conf",
            r#"{"ServerURL": "https://x", "NoSuchKey": 1,
                "HttpsClient": {"Bogus": true},
                "Servers2": [], "DBus": {"Enabled": true, "Extra": "x"}}"#,
            false,
        );
        assert_eq!(c.unwrap().servers, ["https://x"]);
        assert_eq!(
            warnings,
            [
                "/etc/mender/mender.conf: NoSuchKey: unknown configuration key, ignored",
                "/etc/mender/mender.conf: HttpsClient.Bogus: unknown configuration key, ignored",
                "/etc/mender/mender.conf: Servers2: unknown configuration key, ignored",
                "/etc/mender/mender.conf: DBus.Extra: unknown configuration key, ignored",
            ]
        );
        let (c, warnings) = parse_with_warnings(
            "x.conf",
            r#"{"Servers": [{"ServerURL": "a", "Weight": 1}]}"#,
            false,
        );
        assert_eq!(c.unwrap().servers, ["https://a"]);
        assert_eq!(
            warnings,
            ["x.conf: Servers[0].Weight: unknown configuration key, ignored"]
        );
    }

    #[test]
    fn unused_keys_do_not_warn_but_are_checked() {
        let (c, warnings) = parse_with_warnings(
            "x.conf",
            r#"{"Connectivity": {"DisableKeepAlive": true}, "DeviceTier": "micro",
                "UpdateLogPath": "/x", "RetryDownloadCount": 3,
                "UpdateControlMapPollIntervalSeconds": 3}"#,
            false,
        );
        c.unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            error(r#"{"Connectivity": {"IdleConnTimeoutSeconds": -1}}"#),
            "test.conf: Connectivity.IdleConnTimeoutSeconds: must not be negative, found -1"
        );
        assert_eq!(
            error(r#"{"RetryDownloadCount": "10"}"#),
            "test.conf: RetryDownloadCount: expected an integer, found a string"
        );
    }

    #[test]
    fn duplicate_keys() {
        // Unlike Go's encoding/json (the last one silently wins), an error
        // naming both spellings, at every level read case-insensitively.
        for (text, want) in [
            (
                r#"{"RootfsPartB": "/dev/p3", "rootfspartb": "/dev/p2"}"#,
                r#"test.conf: RootfsPartB: given twice, as "RootfsPartB" and as "rootfspartb" (names are case-insensitive)"#,
            ),
            (
                r#"{"RootfsPartB": "/dev/p3", "RootfsPartB": "/dev/p2"}"#,
                r#"test.conf: RootfsPartB: given twice (as "RootfsPartB")"#,
            ),
            (
                r#"{"RootfsPartB": "/dev/p3", "ROOTFSPARTB": null}"#,
                r#"test.conf: RootfsPartB: given twice, as "RootfsPartB" and as "ROOTFSPARTB" (names are case-insensitive)"#,
            ),
            (
                r#"{"HttpsClient": {"Key": "/a", "key": "/b"}}"#,
                r#"test.conf: HttpsClient.Key: given twice, as "Key" and as "key" (names are case-insensitive)"#,
            ),
            (
                r#"{"DBus": {"Enabled": true}, "dbus": {"Enabled": false}}"#,
                r#"test.conf: DBus: given twice, as "DBus" and as "dbus" (names are case-insensitive)"#,
            ),
            (
                r#"{"Servers": [{"ServerURL": "a"}, {"ServerURL": "b", "SERVERURL": "c"}]}"#,
                r#"test.conf: Servers[1].ServerURL: given twice, as "ServerURL" and as "SERVERURL" (names are case-insensitive)"#,
            ),
        ] {
            assert_eq!(error(text), want, "for {text}");
        }
        // Unknown keys are only warned about, twice or not.
        assert!(parse(r#"{"Foo": 1, "foo": 2}"#).is_ok());
        // TOML forbids exact duplicates itself; spellings differing in case
        // are caught here.
        assert_eq!(
            parse_toml("RootfsPartA = \"/dev/a\"\nrootfsparta = \"/dev/b\"\n")
                .unwrap_err()
                .to_string(),
            r#"test.toml: RootfsPartA: given twice, as "RootfsPartA" and as "rootfsparta" (names are case-insensitive)"#
        );
        assert!(parse_toml("RootfsPartA = \"/dev/a\"\nRootfsPartA = \"/dev/b\"\n").is_err());
    }

    #[test]
    fn rootfs_partition_paths() {
        assert_eq!(
            error(r#"{"RootfsPartB": "dev/mmcblk0p3"}"#),
            "test.conf: RootfsPartB: dev/mmcblk0p3 is not an absolute path (a relative one depends on the directory the client runs in)"
        );
        assert_eq!(
            error(r#"{"RootfsPartA": "/data/mender/./part"}"#),
            "test.conf: RootfsPartA: /data/mender/./part is inside the data directory /data/mender"
        );
        // Through a link to the data directory.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("store"), "x").unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("link")).unwrap();
        let text = format!(
            r#"{{"RootfsPartA": "{}/link/store"}}"#,
            dir.path().display()
        );
        let e = Config::from_str("t.conf", &text, false, &data)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is inside the data directory"), "{e}");
        assert!(
            parse(r#"{"RootfsPartA": "/dev/mmcblk0p2", "RootfsPartB": "/dev/mmcblk0p3"}"#).is_ok()
        );
    }

    #[test]
    fn white_space_reboot_command() {
        assert_eq!(
            error(r#"{"RebootCommand": " \t"}"#),
            "test.conf: RebootCommand: only white space: no command (leave it out for the default, reboot)"
        );
        assert_eq!(
            parse(r#"{"RebootCommand": ""}"#).unwrap().reboot_command,
            "reboot"
        );
        assert_eq!(
            parse(r#"{"RebootCommand": "systemctl reboot"}"#)
                .unwrap()
                .reboot_command,
            "systemctl reboot"
        );
    }

    #[test]
    fn null_means_not_given() {
        let c = parse(r#"{"ModuleTimeoutSeconds": null, "HttpsClient": null, "Servers": null}"#)
            .unwrap();
        assert_eq!(c.module_timeout, secs(14400));
        assert!(c.servers.is_empty());
    }

    #[test]
    fn zero_seconds_means_default() {
        let c = parse(
            r#"{"StateScriptTimeoutSeconds": 0, "ModuleTimeoutSeconds": 0,
                "UpdatePollIntervalSeconds": 0, "UpdateControlMapExpirationTimeSeconds": 0,
                "RetryPollCount": 0}"#,
        )
        .unwrap();
        assert_eq!(c.state_script_timeout, secs(3600));
        assert_eq!(c.module_timeout, secs(14400));
        assert_eq!(c.update_poll_interval, secs(1800));
        assert_eq!(c.update_control_map_expiration, None);
        assert_eq!(c.retry_poll_count, 0);
    }

    #[test]
    fn server_url_normalisation() {
        let servers = |text: &str| parse(text).unwrap().servers;
        assert_eq!(
            servers(r#"{"ServerURL": "hosted.mender.io"}"#),
            ["https://hosted.mender.io"]
        );
        assert_eq!(
            servers(r#"{"ServerURL": "https://hosted.mender.io/"}"#),
            ["https://hosted.mender.io"]
        );
        assert_eq!(
            servers(r#"{"ServerURL": " http://10.0.0.1:8080// "}"#),
            ["http://10.0.0.1:8080"]
        );
        assert_eq!(
            servers(r#"{"ServerURL": "docker.mender.io/base/"}"#),
            ["https://docker.mender.io/base"]
        );
        assert!(servers(r#"{"ServerURL": ""}"#).is_empty());
        assert!(servers(r#"{"Servers": []}"#).is_empty());
        assert_eq!(
            servers(r#"{"Servers": [{"ServerURL": "a.example/"}, {"serverurl": "http://b"}]}"#),
            ["https://a.example", "http://b"]
        );
        // An empty ServerURL next to Servers is no conflict (as Mender).
        assert_eq!(
            servers(r#"{"ServerURL": "", "Servers": [{"ServerURL": "a"}]}"#),
            ["https://a"]
        );
    }

    #[test]
    fn server_url_errors() {
        assert_eq!(
            error(r#"{"ServerURL": "https://"}"#),
            r#"test.conf: ServerURL: "https:" is not a server URL (no scheme or no host)"#
        );
        assert_eq!(
            error(r#"{"ServerURL": "https://a b"}"#),
            r#"test.conf: ServerURL: "https://a b" is not a server URL (contains white space)"#
        );
        assert_eq!(
            error(r#"{"Servers": [{"ServerURL": "a"}, {}]}"#),
            "test.conf: Servers[1].ServerURL: missing or empty"
        );
        assert_eq!(
            error(r#"{"Servers": [{"ServerURL": "a"}, {"ServerURL": 3}]}"#),
            "test.conf: Servers[1].ServerURL: expected a string, found an integer"
        );
        assert_eq!(
            error(r#"{"Servers": ["https://a"]}"#),
            "test.conf: Servers[0]: expected an object, found a string"
        );
        assert_eq!(
            error(r#"{"Servers": {"ServerURL": "a"}}"#),
            "test.conf: Servers: expected an array of objects, found an object"
        );
    }

    #[test]
    fn tenant_token_trimmed() {
        let c = parse("{\"TenantToken\": \"\\n\\teyJhbGciOi.x.y \\n\"}").unwrap();
        assert_eq!(c.tenant_token, "eyJhbGciOi.x.y");
    }

    #[test]
    fn artifact_verify_key_forms() {
        let c = parse(r#"{"ArtifactVerifyKey": "/etc/mender/artifact-verify-key.pem"}"#).unwrap();
        assert_eq!(
            c.artifact_verify_keys,
            [PathBuf::from("/etc/mender/artifact-verify-key.pem")]
        );
        let c = parse(r#"{"ArtifactVerifyKey": "", "ArtifactVerifyKeys": ["/a", "/b"]}"#).unwrap();
        assert_eq!(
            c.artifact_verify_keys,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        let c = parse(r#"{"ArtifactVerifyKey": "/a", "ArtifactVerifyKeys": []}"#).unwrap();
        assert_eq!(c.artifact_verify_keys, [PathBuf::from("/a")]);
    }

    #[test]
    fn https_client_needs_both() {
        let (c, warnings) =
            parse_with_warnings("x.conf", r#"{"HttpsClient": {"Certificate": "/c"}}"#, false);
        assert_eq!(c.unwrap().https_client, None);
        assert_eq!(
            warnings,
            [
                "x.conf: HttpsClient.Certificate: set without HttpsClient.Key; no client certificate is used"
            ]
        );
        let (c, warnings) = parse_with_warnings(
            "x.conf",
            r#"{"HttpsClient": {"Certificate": "", "Key": "/k"}}"#,
            false,
        );
        assert_eq!(c.unwrap().https_client, None);
        assert_eq!(warnings.len(), 1);
        let c = parse(r#"{"HttpsClient": {"Certificate": "/c", "Key": "/k", "SSLEngine": ""}}"#)
            .unwrap();
        assert_eq!(c.https_client.unwrap().ssl_engine, None);
    }

    #[test]
    fn empty_optional_strings_are_unset() {
        let c = parse(
            r#"{"RootfsPartA": "", "ServerCertificate": "", "GrubEnvDir": "",
                "DaemonLogLevel": "", "BootUtilitiesSetActivePart": ""}"#,
        )
        .unwrap();
        assert_eq!(c.rootfs_part_a, None);
        assert_eq!(c.server_certificate, None);
        assert_eq!(c.grub_env_dir, None);
        assert_eq!(c.daemon_log_level, None);
        assert_eq!(c.boot_utilities_set_active_part, None);
    }

    #[test]
    fn relative_and_tilde_paths_are_kept() {
        let c = parse(r#"{"DeviceTypeFile": "device_type", "ModulesPath": "~/modules"}"#).unwrap();
        assert_eq!(c.device_type_file, Path::new("device_type"));
        assert_eq!(c.modules_path, Path::new("~/modules"));
    }

    #[test]
    fn boot_env_types() {
        for (name, want) in [
            ("uboot", BootEnvType::UBoot),
            ("grub", BootEnvType::Grub),
            ("tools", BootEnvType::Tools),
            ("GRUB", BootEnvType::Grub),
        ] {
            let c = parse(&format!(r#"{{"BootEnvType": "{name}"}}"#)).unwrap();
            assert_eq!(c.boot_env_type, want);
        }
        assert_eq!(
            error(r#"{"BootEnvType": "efi"}"#),
            r#"test.conf: BootEnvType: unknown boot environment "efi"; expected "uboot", "grub" or "tools""#
        );
        assert_eq!(BootEnvType::Grub.to_string(), "grub");
    }

    #[test]
    fn type_errors_name_file_and_key() {
        let cases = [
            (
                r#"{"StateScriptTimeoutSeconds": "60"}"#,
                "test.conf: StateScriptTimeoutSeconds: expected an integer, found a string",
            ),
            (
                r#"{"ModuleTimeoutSeconds": 1.5}"#,
                "test.conf: ModuleTimeoutSeconds: expected an integer, found a float",
            ),
            (
                r#"{"SkipVerify": "true"}"#,
                "test.conf: SkipVerify: expected a boolean, found a string",
            ),
            (
                r#"{"RootfsPartA": 2}"#,
                "test.conf: RootfsPartA: expected a string, found an integer",
            ),
            (
                r#"{"ArtifactVerifyKeys": "/a"}"#,
                "test.conf: ArtifactVerifyKeys: expected an array of strings, found a string",
            ),
            (
                r#"{"ArtifactVerifyKeys": ["/a", false]}"#,
                "test.conf: ArtifactVerifyKeys[1]: expected a string, found a boolean",
            ),
            (
                r#"{"HttpsClient": "/c"}"#,
                "test.conf: HttpsClient: expected an object, found a string",
            ),
            (
                r#"{"DBus": {"Enabled": 1}}"#,
                "test.conf: DBus.Enabled: expected a boolean, found an integer",
            ),
            (
                r#"{"Security": {"AuthPrivateKey": ["/k"]}}"#,
                "test.conf: Security.AuthPrivateKey: expected a string, found an array",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "for {text}");
        }
        assert_eq!(
            parse_toml("ModuleTimeoutSeconds = 1979-05-27T07:32:00Z")
                .unwrap_err()
                .to_string(),
            "test.toml: ModuleTimeoutSeconds: expected an integer, found a date-time"
        );
        assert_eq!(
            parse_toml("HttpsClient = 1").unwrap_err().to_string(),
            "test.toml: HttpsClient: expected an object, found an integer"
        );
        assert_eq!(
            parse_toml("[ServerURL]\nx = 1").unwrap_err().to_string(),
            "test.toml: ServerURL: expected a string, found a table"
        );
    }

    #[test]
    fn invalid_values_name_file_and_key() {
        let cases = [
            (
                r#"{"StateScriptTimeoutSeconds": -1}"#,
                "test.conf: StateScriptTimeoutSeconds: must not be negative, found -1",
            ),
            (
                r#"{"RetryPollCount": -3}"#,
                "test.conf: RetryPollCount: must not be negative, found -3",
            ),
            (
                r#"{"RetryPollCount": 4294967296}"#,
                "test.conf: RetryPollCount: 4294967296 is too large (at most 4294967295)",
            ),
            (
                r#"{"UpdatePollIntervalSeconds": 18446744073709551615}"#,
                "test.conf: UpdatePollIntervalSeconds: 18446744073709551615 is too large (at most 4294967295 seconds)",
            ),
            (
                r#"{"DeviceTypeFile": ""}"#,
                "test.conf: DeviceTypeFile: empty path",
            ),
            (
                r#"{"ModulesPath": ""}"#,
                "test.conf: ModulesPath: empty path",
            ),
            (
                r#"{"ArtifactVerifyKeys": ["/a", ""]}"#,
                "test.conf: ArtifactVerifyKeys[1]: empty path",
            ),
            (
                r#"{"ServerURL": "https://a", "Servers": [{"ServerURL": "https://b"}]}"#,
                "test.conf: ServerURL: cannot be used together with Servers",
            ),
            (
                r#"{"ArtifactVerifyKey": "/a", "ArtifactVerifyKeys": ["/b"]}"#,
                "test.conf: ArtifactVerifyKey: cannot be used together with ArtifactVerifyKeys",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "for {text}");
        }
    }

    #[test]
    fn syntax_errors_name_the_file() {
        assert_eq!(
            error("{\"ServerURL\": \"x\",\n}"),
            "test.conf: invalid JSON: trailing comma at line 2 column 1"
        );
        assert_eq!(
            error(""),
            "test.conf: invalid JSON: EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(
            error("[1]"),
            "test.conf: invalid configuration: expected a JSON object at the top level, found an array"
        );
        let message = parse_toml("ServerURL = \"x\"\nRootfsPartA = \n")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("test.toml: invalid TOML at line 2 column "),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let c = parse("\u{feff}{\"RootfsPartA\": \"/dev/a\"}").unwrap();
        assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/a")));
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let c = merge(&[
            (
                "fallback.conf",
                r#"{"RootfsPartA": "/dev/fa", "RootfsPartB": "/dev/fb",
                    "ModuleTimeoutSeconds": 100, "HttpsClient": {"Certificate": "/c"},
                    "ArtifactVerifyKeys": ["/1", "/2"]}"#,
            ),
            (
                "main.conf",
                r#"{"RootfsPartA": "/dev/ma", "ModuleTimeoutSeconds": 0,
                    "HttpsClient": {"Key": "/k"}, "ArtifactVerifyKeys": ["/3"]}"#,
            ),
        ])
        .unwrap();
        assert_eq!(c.rootfs_part_a.as_deref(), Some(Path::new("/dev/ma")));
        assert_eq!(c.rootfs_part_b.as_deref(), Some(Path::new("/dev/fb")));
        // An explicit 0 in the main file overrides and means the default.
        assert_eq!(c.module_timeout, secs(14400));
        // Nested objects merge key by key, lists are replaced.
        assert_eq!(
            c.https_client,
            Some(HttpsClient {
                certificate: "/c".into(),
                key: "/k".into(),
                ssl_engine: None
            })
        );
        assert_eq!(c.artifact_verify_keys, [PathBuf::from("/3")]);
    }

    #[test]
    fn conflicts_across_files_name_both() {
        let message = merge(&[
            (
                "/var/lib/mender/mender.conf",
                r#"{"ServerURL": "https://a"}"#,
            ),
            (
                "/etc/mender/mender.conf",
                r#"{"Servers": [{"ServerURL": "https://b"}]}"#,
            ),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "/var/lib/mender/mender.conf: ServerURL: cannot be used together with Servers (set in /etc/mender/mender.conf)"
        );
        // The main file clearing ServerURL resolves it.
        let c = merge(&[
            ("fallback.conf", r#"{"ServerURL": "https://a"}"#),
            (
                "main.conf",
                r#"{"ServerURL": "", "Servers": [{"ServerURL": "https://b"}]}"#,
            ),
        ])
        .unwrap();
        assert_eq!(c.servers, ["https://b"]);
    }

    #[test]
    fn error_in_any_layer_names_that_layer() {
        let message = merge(&[
            ("fallback.conf", r#"{"RootfsPartA": 1}"#),
            ("main.conf", r#"{"RootfsPartA": "/dev/a"}"#),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            message,
            "fallback.conf: RootfsPartA: expected a string, found an integer"
        );
    }

    #[test]
    fn sibling_toml_order() {
        let paths = ConfigPaths::default();
        assert_eq!(
            files_in_order(&paths),
            [
                (PathBuf::from("/var/lib/mender/mender.conf"), false),
                (PathBuf::from("/etc/mender/mender.toml"), false),
                (PathBuf::from("/etc/mender/mender.conf"), false),
            ]
        );
        let explicit = ConfigPaths {
            main: "/etc/mender/mender.conf".into(),
            main_explicit: true,
            ..ConfigPaths::default()
        };
        assert_eq!(files_in_order(&explicit).len(), 2);
        let other = ConfigPaths {
            main: "/etc/mender/other.conf".into(),
            ..ConfigPaths::default()
        };
        assert_eq!(files_in_order(&other).len(), 2);
        assert!(is_toml_file(Path::new("/x/mender.toml")));
        assert!(!is_toml_file(Path::new("/x/mender.conf")));
        assert!(!is_toml_file(Path::new("/x/toml")));
    }

    #[test]
    fn from_str_public() {
        let c = Config::from_str("-", "ModulesPath = \"/m\"", true, Path::new("/d")).unwrap();
        assert_eq!(c.modules_path, Path::new("/m"));
        assert_eq!(c.modules_work_path, Path::new("/d/modules/v3"));
        let e = Config::from_str("<stdin>", "{\"ModulesPath\": 1}", false, Path::new("/d"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "<stdin>: ModulesPath: expected a string, found an integer"
        );
    }

    #[test]
    fn device_type_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = parse("{}").unwrap();
        c.device_type_file = dir.path().join("device_type");
        let file = c.device_type_file.display().to_string();
        for (text, want) in [
            ("device_type=qemux86-64\n", "qemux86-64"),
            ("\u{feff}device_type = rpi4 \r\nartifact_name=x\n", "rpi4"),
            ("x=1\ndevice_type=a=b\n", "a=b"),
        ] {
            std::fs::write(&c.device_type_file, text).unwrap();
            assert_eq!(c.device_type().unwrap(), want, "for {text:?}");
        }
        std::fs::write(&c.device_type_file, "devicetype=x\n").unwrap();
        assert_eq!(
            c.device_type().unwrap_err().to_string(),
            format!("{file}: no device_type=<value> line")
        );
        std::fs::write(&c.device_type_file, "").unwrap();
        assert_eq!(
            c.device_type().unwrap_err().to_string(),
            format!("{file}: no device_type=<value> line")
        );
        std::fs::File::create(&c.device_type_file)
            .unwrap()
            .set_len(MAX_DEVICE_TYPE_FILE + 1)
            .unwrap();
        let e = c.device_type().unwrap_err().to_string();
        assert!(e.starts_with(&format!("{file}: ")), "{e}");
        assert!(e.contains("more than the 65536 allowed"), "{e}");
        std::fs::remove_file(&c.device_type_file).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &c.device_type_file).unwrap();
        assert_eq!(
            c.device_type().unwrap_err().to_string(),
            format!("{file}: is a character device, not a regular file")
        );
        std::fs::remove_file(&c.device_type_file).unwrap();
        assert!(
            c.device_type()
                .unwrap_err()
                .to_string()
                .starts_with(&format!("{file}: "))
        );
    }

    #[test]
    fn url_normaliser() {
        assert_eq!(normalize_url("").unwrap(), "");
        assert_eq!(normalize_url("   ").unwrap(), "");
        assert_eq!(normalize_url("a").unwrap(), "https://a");
        assert_eq!(
            normalize_url("localhost:443/").unwrap(),
            "https://localhost:443"
        );
        assert!(normalize_url("://x").is_err());
        assert!(normalize_url("/").is_err());
    }
}
