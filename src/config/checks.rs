//! The checks of values: types, ranges, paths and URLs of single keys, and
//! the rules between keys (keys that exclude each other, the rootfs
//! partitions outside the data directory, a reboot command that is not
//! only white space).
//!
//! Separate from the syntax (`syntax.rs`): these are the rules a value must
//! follow whatever file and syntax it came from.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::keys::*;
use super::syntax::{Checker, Layer, Setting, Value};
use super::{BootEnvType, ConfigError};

/// Largest accepted number of seconds (about 136 years), so that adding a
/// configured duration to a time stamp cannot overflow.
pub(super) const MAX_SECONDS: u64 = u32::MAX as u64;

/// The values of `DeviceTier` (Mender 5.1).
pub(super) const DEVICE_TIERS: [&str; 3] = ["standard", "system", "micro"];

impl Checker<'_> {
    pub(super) fn type_error(
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

    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(super) fn string<'v>(&self, key: &str, value: &'v Value) -> Result<&'v str, ConfigError> {
        match value {
            Value::Str(s) => Ok(s),
            other => Err(self.type_error(key, "a string", other)),
        }
    }

    pub(super) fn integer(
        &self,
        key: &str,
        value: &Value,
        max: u64,
        what: &str,
    ) -> Result<u64, ConfigError> {
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

    pub(super) fn setting(&mut self, key: &Key, value: &Value) -> Result<Setting, ConfigError> {
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
            Kind::DeviceTier => {
                let s = self.string(path, value)?;
                // Exact, lower-case names, as Mender 5.1 checks them.
                if !s.is_empty() && !DEVICE_TIERS.contains(&s) {
                    return Err(self.invalid(
                        path,
                        format!("unknown device tier {s:?}; expected \"standard\", \"system\" or \"micro\""),
                    ));
                }
                Setting::Str(s.to_string())
            }
        })
    }

    /// `Servers`: `[{"ServerURL": "..."}, ...]`.
    pub(super) fn servers(
        &mut self,
        path: &str,
        value: &Value,
    ) -> Result<Vec<String>, ConfigError> {
        let Value::Array(items) = value else {
            return Err(self.type_error(path, "an array of objects", value));
        };
        let mut urls = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{path}[{i}]");
            let Value::Object(fields) = item else {
                return Err(self.type_error(item_key, "an object", item));
            };
            let url_key = format!("{item_key}.{}", SERVER_URL.path);
            let mut url = None;
            let mut first: Option<&str> = None;
            for (name, field) in fields {
                if !name.eq_ignore_ascii_case(SERVER_URL.path) {
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
pub(super) fn normalize_url(url: &str) -> Result<String, String> {
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
pub(super) fn check_partition_path(part: &Path, data_dir: &Path) -> Result<(), String> {
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

/// The rules between keys, once the files are merged: keys that exclude
/// each other, the rootfs partitions, the reboot command. Checked in this
/// order, so the first problem found is the one reported.
pub(super) fn across_keys(layer: &Layer, data_dir: &Path) -> Result<(), ConfigError> {
    let conflict = |key: &Key, other_key: &Key| {
        let file = layer.file(key).to_string();
        let other = layer.file(other_key);
        ConfigError::Conflict {
            other_file: (other != file).then(|| other.to_string()),
            file,
            key: key.path,
            other_key: other_key.path,
        }
    };
    if layer.non_empty(&SERVER_URL).is_some() && !layer.urls(&SERVERS).is_empty() {
        return Err(conflict(&SERVER_URL, &SERVERS));
    }
    if layer.opt_path(&ARTIFACT_VERIFY_KEY).is_some()
        && !layer.paths(&ARTIFACT_VERIFY_KEYS).is_empty()
    {
        return Err(conflict(&ARTIFACT_VERIFY_KEY, &ARTIFACT_VERIFY_KEYS));
    }

    for key in [&ROOTFS_PART_A, &ROOTFS_PART_B] {
        if let Some(part) = layer.opt_path(key) {
            check_partition_path(&part, data_dir).map_err(|message| ConfigError::Invalid {
                file: layer.file(key).to_string(),
                key: key.path.to_string(),
                message,
            })?;
        }
    }

    // split_whitespace would find no program, and that only when the
    // daemon reboots into an installed update.
    if let Some(command) = layer.non_empty(&REBOOT_COMMAND)
        && command.trim().is_empty()
    {
        return Err(ConfigError::Invalid {
            file: layer.file(&REBOOT_COMMAND).to_string(),
            key: REBOOT_COMMAND.path.to_string(),
            message: "only white space: no command (leave it out for the default, reboot)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::*;

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
    fn device_tier_values() {
        let tier = |text: &str| parse(text).unwrap().device_tier;
        assert_eq!(tier("{}"), None);
        assert_eq!(tier(r#"{"DeviceTier": ""}"#), None);
        for name in DEVICE_TIERS {
            let text = format!(r#"{{"DeviceTier": "{name}"}}"#);
            assert_eq!(tier(&text).as_deref(), Some(name));
        }
        // As Mender 5.1: exact, lower-case names only.
        for bad in ["Standard", "gold", " micro"] {
            assert_eq!(
                error(&format!(r#"{{"DeviceTier": "{bad}"}}"#)),
                format!(
                    "test.conf: DeviceTier: unknown device tier {bad:?}; expected \"standard\", \"system\" or \"micro\""
                )
            );
        }
        assert!(error(r#"{"DeviceTier": 1}"#).contains("DeviceTier"));
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
