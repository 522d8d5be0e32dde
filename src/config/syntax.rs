//! The syntax of the configuration files: which files are read and in what
//! order, JSON and TOML into one value tree, the walk of that tree against
//! the key table (names matched case-insensitively, duplicates refused,
//! unknown keys warned about), and the merge of the files key by key.
//!
//! Separate from the key table (`keys.rs`) and the value checks
//! (`checks.rs`): this file knows nothing of what a key means.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::keys::{self, DefaultValue, Found, Key};
use super::{BootEnvType, ConfigError, ConfigPaths, TOML_SIBLING};

/// Largest configuration file read (JSON or TOML). Mender's own files are a
/// few KiB; 1 MiB leaves room for long key and server lists while the
/// parsed tree (a few times the text) stays small on a device.
pub(super) const MAX_CONFIG_FILE: u64 = 1 << 20;

pub(super) fn is_toml_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.ends_with(".toml"))
}

/// The files to read, lowest precedence first, with whether each must
/// exist.
pub(super) fn files_in_order(paths: &ConfigPaths) -> Vec<(PathBuf, bool)> {
    let mut files = vec![(paths.fallback.clone(), paths.fallback_explicit)];
    if !paths.main_explicit
        && paths.main.file_name().and_then(|n| n.to_str()) == Some("mender.conf")
    {
        files.push((paths.main.with_file_name(TOML_SIBLING), false));
    }
    files.push((paths.main.clone(), paths.main_explicit));
    files
}

/// The text of a configuration file; `None` if it does not exist and need
/// not. Only a regular file of at most [`MAX_CONFIG_FILE`] bytes is read (a
/// link to `/dev/zero` or a FIFO is refused at once).
pub(super) fn read_file(
    path: &Path,
    name: &str,
    explicit: bool,
) -> Result<Option<String>, ConfigError> {
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
pub(super) enum Value {
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
    pub(super) fn describe(&self, toml: bool) -> &'static str {
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

    pub(super) fn from_toml(value: toml::Value) -> Value {
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
pub(super) fn toml_entries(table: toml::Table) -> Vec<(String, Value)> {
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

pub(super) struct ValueVisitor;

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
pub(super) fn parse_syntax(
    file: &str,
    text: &str,
    toml: bool,
) -> Result<Vec<(String, Value)>, ConfigError> {
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
pub(super) fn toml_error_message(text: &str, error: &toml::de::Error) -> String {
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

// ---------------------------------------------------------------------------
// Merging: one file's settings, and several files key by key

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Setting {
    Str(String),
    Num(u64),
    Bool(bool),
    Paths(Vec<PathBuf>),
    Urls(Vec<String>),
    Boot(BootEnvType),
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The file that set it.
    pub(super) file: String,
    pub(super) setting: Setting,
}

/// The settings of one file, or of several merged; keyed by the canonical
/// full key name (`HttpsClient.Key`).
#[derive(Debug, Default)]
pub(super) struct Layer {
    pub(super) entries: HashMap<&'static str, Entry>,
}

impl Layer {
    /// Takes every key `upper` sets from `upper`.
    pub(super) fn overlay(&mut self, upper: Layer) {
        self.entries.extend(upper.entries);
    }

    pub(super) fn get(&self, key: &Key) -> Option<&Setting> {
        self.entries.get(key.path).map(|entry| &entry.setting)
    }

    /// The file that set `key` (empty when none did).
    pub(super) fn file(&self, key: &Key) -> &str {
        self.entries.get(key.path).map_or("", |entry| &entry.file)
    }

    pub(super) fn text(&self, key: &Key) -> Option<&str> {
        match self.get(key) {
            Some(Setting::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A string that is set and not empty.
    pub(super) fn non_empty(&self, key: &Key) -> Option<&str> {
        self.text(key).filter(|s| !s.is_empty())
    }

    pub(super) fn opt_path(&self, key: &Key) -> Option<PathBuf> {
        self.non_empty(key).map(PathBuf::from)
    }

    /// A path, or the key's default.
    pub(super) fn path(&self, key: &Key, data_dir: &Path) -> PathBuf {
        self.opt_path(key)
            .unwrap_or_else(|| key.default.path(data_dir))
    }

    pub(super) fn opt_string(&self, key: &Key) -> Option<String> {
        self.non_empty(key).map(str::to_string)
    }

    /// A string, or the key's default.
    pub(super) fn string(&self, key: &Key) -> String {
        self.non_empty(key)
            .unwrap_or(key.default.text())
            .to_string()
    }

    fn num(&self, key: &Key) -> Option<u64> {
        match self.get(key) {
            Some(Setting::Num(n)) => Some(*n),
            _ => None,
        }
    }

    /// Seconds, with 0 or absent meaning `None`.
    pub(super) fn opt_seconds(&self, key: &Key) -> Option<Duration> {
        self.num(key).filter(|&n| n > 0).map(Duration::from_secs)
    }

    /// Seconds, with 0 or absent meaning the key's default.
    pub(super) fn seconds(&self, key: &Key) -> Duration {
        self.opt_seconds(key)
            .unwrap_or(Duration::from_secs(key.default.number()))
    }

    /// A count, with 0 or absent meaning the key's default.
    pub(super) fn count(&self, key: &Key) -> u32 {
        self.num(key)
            .filter(|&n| n > 0)
            .unwrap_or(key.default.number())
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// A boolean, or the key's default.
    pub(super) fn flag(&self, key: &Key) -> bool {
        match self.get(key) {
            Some(Setting::Bool(b)) => *b,
            _ => key.default == DefaultValue::Bool(true),
        }
    }

    pub(super) fn paths(&self, key: &Key) -> &[PathBuf] {
        match self.get(key) {
            Some(Setting::Paths(paths)) => paths,
            _ => &[],
        }
    }

    pub(super) fn urls(&self, key: &Key) -> &[String] {
        match self.get(key) {
            Some(Setting::Urls(urls)) => urls,
            _ => &[],
        }
    }
}

/// Parses and checks one file.
pub(super) fn parse_layer(
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
    checker.object(&entries, "")?;
    Ok(checker.layer)
}

pub(super) struct Checker<'a> {
    pub(super) file: &'a str,
    pub(super) toml: bool,
    pub(super) warnings: &'a mut Vec<String>,
    pub(super) layer: Layer,
}

impl Checker<'_> {
    /// Checks the entries of an object against the key table; `prefix` is
    /// the object's own canonical name followed by `.` (empty at the top).
    pub(super) fn object(
        &mut self,
        entries: &[(String, Value)],
        prefix: &str,
    ) -> Result<(), ConfigError> {
        // Each known key with the spelling it was first given in.
        let mut seen: Vec<(&'static str, &str)> = Vec::new();
        for (name, value) in entries {
            let Some(found) = keys::find(prefix, name) else {
                self.warnings.push(format!(
                    "{}: {prefix}{name}: unknown configuration key, ignored",
                    self.file
                ));
                continue;
            };
            let path = match found {
                Found::Key(key) => key.path,
                Found::Object(path) => path,
            };
            if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == path) {
                return Err(self.duplicate(path, first, name));
            }
            seen.push((path, name));
            if *value == Value::Null {
                continue;
            }
            let key = match found {
                Found::Key(key) => key,
                Found::Object(path) => {
                    let Value::Object(sub_entries) = value else {
                        return Err(self.type_error(path, "an object", value));
                    };
                    self.object(sub_entries, &format!("{path}."))?;
                    continue;
                }
            };
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
    pub(super) fn duplicate(&self, key: &str, first: &str, again: &str) -> ConfigError {
        let message = if first == again {
            format!("given twice (as {first:?})")
        } else {
            format!("given twice, as {first:?} and as {again:?} (names are case-insensitive)")
        };
        self.invalid(key, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpsClient;
    use crate::config::test_support::*;

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
    fn null_means_not_given() {
        let c = parse(r#"{"ModuleTimeoutSeconds": null, "HttpsClient": null, "Servers": null}"#)
            .unwrap();
        assert_eq!(c.module_timeout, secs(14400));
        assert!(c.servers.is_empty());
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
}
