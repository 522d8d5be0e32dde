//! The client configuration: Mender's `mender.conf` (JSON), optionally in
//! TOML, read from a main file and a fallback file.
//!
//! Keys are Mender's (`docs/configuration.md`) plus a few of mender-rs' own for paths
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

//!
//! This file holds the typed result ([`Config`]) and the public API; the
//! work is split by concern (`docs/architecture.md`, "Layout"):
//! `syntax.rs` reads the files into one tree and merges them, `keys.rs`
//! is the key table, `checks.rs` the checks of values.

mod checks;
mod keys;
mod syntax;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use keys::*;
use syntax::{Layer, Setting, files_in_order, is_toml_file, parse_layer, read_file};

/// Default main configuration file.
pub const DEFAULT_MAIN_CONFIG: &str = "/etc/mender/mender.conf";
/// Default fallback configuration file, on persistent storage.
pub const DEFAULT_FALLBACK_CONFIG: &str = "/var/lib/mender/mender.conf";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/mender";
/// The TOML file read next to a main file called `mender.conf`.
pub const TOML_SIBLING: &str = "mender.toml";

/// Largest device-type file read. It holds one short line
/// (`device_type=<name>`), perhaps a few more; 64 KiB is far beyond any
/// real one and cheap to hold.
const MAX_DEVICE_TYPE_FILE: u64 = 64 << 10;

/// The effective configuration, after merging the files and applying the
/// defaults. Each field names its key; the defaults are those of the key
/// table (`keys.rs`, documented in `docs/configuration.md`).
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
    /// `DeviceTypeFile`.
    pub device_type_file: PathBuf,
    /// `ArtifactVerifyKey` (one) or `ArtifactVerifyKeys` (list, in order).
    pub artifact_verify_keys: Vec<PathBuf>,
    /// `StateScriptTimeoutSeconds`.
    pub state_script_timeout: Duration,
    /// `StateScriptRetryIntervalSeconds`.
    pub state_script_retry_interval: Duration,
    /// `StateScriptRetryTimeoutSeconds`.
    pub state_script_retry_timeout: Duration,
    /// `ModuleTimeoutSeconds`.
    pub module_timeout: Duration,
    /// `RootfsScriptsPath`.
    pub rootfs_scripts_path: PathBuf,
    /// `ArtifactScriptsPath`.
    pub artifact_scripts_path: PathBuf,
    /// `ModulesPath`.
    pub modules_path: PathBuf,
    /// `ModulesWorkPath`.
    pub modules_work_path: PathBuf,
    // Boot environment
    /// `BootEnvType`: `uboot`, `grub` or `tools`.
    pub boot_env_type: BootEnvType,
    /// `BootEnvConfig`.
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
    /// `UpdatePollIntervalSeconds`.
    pub update_poll_interval: Duration,
    /// `InventoryPollIntervalSeconds`.
    pub inventory_poll_interval: Duration,
    /// `RetryPollIntervalSeconds` (as configured; the
    /// back-off applies its own minimum).
    pub retry_poll_interval: Duration,
    /// `RetryPollCount`, 0 meaning automatic.
    pub retry_poll_count: u32,
    /// `UpdateControlMapExpirationTimeSeconds`; `None` means twice the
    /// update poll interval.
    pub update_control_map_expiration: Option<Duration>,
    /// `UpdateControlMapBootExpirationTimeSeconds`.
    pub update_control_map_boot_expiration: Duration,
    /// `DaemonLogLevel`, as written (not validated here).
    pub daemon_log_level: Option<String>,
    /// `IdentityScript`.
    pub identity_script: PathBuf,
    /// `InventoryScriptsPath`.
    pub inventory_scripts_path: PathBuf,
    /// `DBus.Enabled`.
    pub dbus_enabled: bool,
    /// `RetryDownloadCount` (from the 4.x client): resume attempts of an
    /// interrupted download without progress.
    pub retry_download_count: u32,
    /// `RebootCommand` (ours): how the daemon reboots the device for a
    /// `rootfs-image` update. Split at white space.
    pub reboot_command: String,
    /// `RebootTimeoutSeconds` (ours): how long `RebootCommand` may run
    /// before it is killed and the reboot counts as failed.
    pub reboot_timeout: Duration,
    /// `DeviceKeyType` (ours): the kind of device key generated on first
    /// start when none exists: `rsa3072`, `ed25519`,
    /// `ecdsa-p256`.
    pub device_key_type: crate::device_key::DeviceKeyType,
    /// `DeviceTier` (Mender 5.1): `standard`, `system` or `micro`, sent as
    /// `tier` in the auth request; `None` when not set.
    pub device_tier: Option<String>,
    /// `UpdateLogPath`: the directory of the deployment logs; the data
    /// directory unless set.
    pub update_log_path: PathBuf,
    // Accepted, type-checked and not used (no warning): Connectivity,
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

// ---------------------------------------------------------------------------
// From the merged settings to the configuration

/// The configuration from the merged settings and the keys' defaults
/// (`keys.rs`), once the rules between keys hold (`checks.rs`).
fn build(
    layer: &Layer,
    data_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    checks::across_keys(layer, data_dir)?;

    // Neither pair is set together: `across_keys` refused that.
    let servers = match layer.non_empty(&SERVER_URL) {
        Some(url) => vec![url.to_string()],
        None => layer.urls(&SERVERS).to_vec(),
    };
    let artifact_verify_keys = match layer.opt_path(&ARTIFACT_VERIFY_KEY) {
        Some(key) => vec![key],
        None => layer.paths(&ARTIFACT_VERIFY_KEYS).to_vec(),
    };

    let https_client = match (
        layer.opt_path(&HTTPS_CERTIFICATE),
        layer.opt_path(&HTTPS_KEY),
    ) {
        (Some(certificate), Some(key)) => Some(HttpsClient {
            certificate,
            key,
            ssl_engine: layer.opt_string(&HTTPS_SSL_ENGINE),
        }),
        (Some(_), None) => {
            warnings.push(format!(
                "{}: {}: set without {}; no client certificate is used",
                layer.file(&HTTPS_CERTIFICATE),
                HTTPS_CERTIFICATE.path,
                HTTPS_KEY.path
            ));
            None
        }
        (None, Some(_)) => {
            warnings.push(format!(
                "{}: {}: set without {}; no client certificate is used",
                layer.file(&HTTPS_KEY),
                HTTPS_KEY.path,
                HTTPS_CERTIFICATE.path
            ));
            None
        }
        (None, None) => None,
    };

    Ok(Config {
        data_dir: data_dir.to_path_buf(),
        artifact_info_file: PathBuf::from("/etc/mender/artifact_info"),
        rootfs_part_a: layer.opt_path(&ROOTFS_PART_A),
        rootfs_part_b: layer.opt_path(&ROOTFS_PART_B),
        device_type_file: layer.path(&DEVICE_TYPE_FILE, data_dir),
        artifact_verify_keys,
        state_script_timeout: layer.seconds(&STATE_SCRIPT_TIMEOUT),
        state_script_retry_interval: layer.seconds(&STATE_SCRIPT_RETRY_INTERVAL),
        state_script_retry_timeout: layer.seconds(&STATE_SCRIPT_RETRY_TIMEOUT),
        module_timeout: layer.seconds(&MODULE_TIMEOUT),
        rootfs_scripts_path: layer.path(&ROOTFS_SCRIPTS_PATH, data_dir),
        artifact_scripts_path: layer.path(&ARTIFACT_SCRIPTS_PATH, data_dir),
        modules_path: layer.path(&MODULES_PATH, data_dir),
        modules_work_path: layer.path(&MODULES_WORK_PATH, data_dir),
        boot_env_type: match layer.get(&BOOT_ENV_TYPE) {
            Some(Setting::Boot(boot)) => *boot,
            _ => BootEnvType::default(),
        },
        boot_env_config: layer.path(&BOOT_ENV_CONFIG, data_dir),
        grub_env_dir: layer.opt_path(&GRUB_ENV_DIR),
        boot_utilities_set_active_part: layer.opt_string(&BOOT_SET_ACTIVE),
        boot_utilities_get_next_active_part: layer.opt_string(&BOOT_GET_NEXT_ACTIVE),
        servers,
        tenant_token: layer.text(&TENANT_TOKEN).unwrap_or("").trim().to_string(),
        server_certificate: layer.opt_path(&SERVER_CERTIFICATE),
        skip_verify: layer.flag(&SKIP_VERIFY),
        https_client,
        auth_private_key: layer.opt_path(&AUTH_PRIVATE_KEY),
        update_poll_interval: layer.seconds(&UPDATE_POLL),
        inventory_poll_interval: layer.seconds(&INVENTORY_POLL),
        retry_poll_interval: layer.seconds(&RETRY_POLL),
        retry_poll_count: layer.count(&RETRY_POLL_COUNT),
        update_control_map_expiration: layer.opt_seconds(&UCM_EXPIRATION),
        update_control_map_boot_expiration: layer.seconds(&UCM_BOOT_EXPIRATION),
        daemon_log_level: layer.opt_string(&DAEMON_LOG_LEVEL),
        identity_script: layer.path(&IDENTITY_SCRIPT, data_dir),
        inventory_scripts_path: layer.path(&INVENTORY_SCRIPTS_PATH, data_dir),
        dbus_enabled: layer.flag(&DBUS_ENABLED),
        retry_download_count: layer.count(&RETRY_DOWNLOAD_COUNT),
        reboot_command: layer.string(&REBOOT_COMMAND),
        // 0 (which would kill the command at once) means the default.
        reboot_timeout: layer.seconds(&REBOOT_TIMEOUT),
        device_key_type: layer
            .non_empty(&DEVICE_KEY_TYPE)
            .and_then(|s| crate::device_key::DeviceKeyType::from_str(s).ok())
            .unwrap_or_default(),
        device_tier: layer.opt_string(&DEVICE_TIER),
        update_log_path: layer
            .opt_path(&UPDATE_LOG_PATH)
            .unwrap_or_else(|| data_dir.to_path_buf()),
    })
}

#[cfg(test)]
mod test_support {
    //! Helpers shared by the unit tests of every file of the module.
    use super::syntax::{Layer, parse_layer};
    use super::*;

    pub(super) const DATA: &str = "/data/mender";

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_with_warnings("test.conf", text, false).0
    }

    pub(super) fn parse_toml(text: &str) -> Result<Config, ConfigError> {
        parse_with_warnings("test.toml", text, true).0
    }

    pub(super) fn parse_with_warnings(
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
    pub(super) fn merge(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
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

    pub(super) fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    pub(super) fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
}
