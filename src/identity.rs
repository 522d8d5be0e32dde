//! Device identity and inventory attributes (`docs/managed-mode.md`): produced by
//! executables that print `key=value` lines.
//!
//! Parsing follows the reference clients: each line is split at its first
//! `=`; neither key nor value is trimmed (` a = b ` gives the key ` a ` and
//! the value ` b `), because the identity must be byte-for-byte what the
//! reference client would send, or the server would see a new device. A
//! trailing `\r` is removed (as line readers do). Lines that are empty or
//! only whitespace are ignored; any other line without `=`, or with an empty
//! key, is an error naming the line number. A key given several times
//! becomes a list, values in order of appearance.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::process::{Exit, Spec};

/// Most stdout read from one script.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Timeout [`device_identity`] gives the identity script.
pub const IDENTITY_TIMEOUT: Duration = Duration::from_secs(60);
/// File name prefix of inventory scripts.
pub const INVENTORY_PREFIX: &str = "mender-inventory-";

/// Most stderr kept for the log.
pub const MAX_STDERR_LOG: usize = 16 * 1024;

/// A value: one string, or a list when the key appeared several times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AttributeValue {
    Single(String),
    List(Vec<String>),
}

impl AttributeValue {
    /// Adds a value for a key seen again: the value becomes a list.
    fn push(&mut self, value: String) {
        match self {
            AttributeValue::Single(first) => {
                *self = AttributeValue::List(vec![std::mem::take(first), value]);
            }
            AttributeValue::List(values) => values.push(value),
        }
    }

    /// The values in order.
    pub fn values(&self) -> &[String] {
        match self {
            AttributeValue::Single(v) => std::slice::from_ref(v),
            AttributeValue::List(v) => v,
        }
    }
}

/// Attributes by name, sorted by name.
pub type Attributes = BTreeMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("line {line}: expected key=value, got {text:?}")]
    BadLine { line: usize, text: String },
    #[error("line {line}: empty attribute name")]
    EmptyKey { line: usize },
    #[error("output of {} is not valid: {error}", script.display())]
    BadOutput {
        script: PathBuf,
        error: Box<IdentityError>,
    },
    #[error("cannot run {}: {error}", script.display())]
    Spawn { script: PathBuf, error: io::Error },
    #[error("{} failed: {status}", script.display())]
    Failed { script: PathBuf, status: String },
    #[error("{} did not finish within {}s and was killed", script.display(), timeout.as_secs_f64())]
    TimedOut { script: PathBuf, timeout: Duration },
    #[error("{} wrote more than {MAX_OUTPUT} bytes to stdout", script.display())]
    TooMuchOutput { script: PathBuf },
    #[error(
        "{} exited but a process it started keeps its stdout open; output incomplete",
        script.display()
    )]
    OutputHeldOpen { script: PathBuf },
    #[error("{} printed no identity attributes", script.display())]
    NoIdentity { script: PathBuf },
}

pub type Result<T> = std::result::Result<T, IdentityError>;

/// Parses `key=value` lines (see the module documentation for the rules).
pub fn parse_attributes(text: &str) -> Result<Attributes> {
    let mut attrs = Attributes::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let Some((key, value)) = line.split_once('=') else {
            return Err(IdentityError::BadLine {
                line: number,
                text: line.chars().take(200).collect(),
            });
        };
        if key.is_empty() {
            return Err(IdentityError::EmptyKey { line: number });
        }
        add(&mut attrs, key.to_owned(), value.to_owned());
    }
    Ok(attrs)
}

fn add(attrs: &mut Attributes, key: String, value: String) {
    match attrs.get_mut(&key) {
        Some(existing) => existing.push(value),
        None => {
            attrs.insert(key, AttributeValue::Single(value));
        }
    }
}

/// Adds `more` to `into`; keys present in both become lists (values of
/// `into` first).
pub fn merge_attributes(into: &mut Attributes, more: Attributes) {
    for (key, value) in more {
        match value {
            AttributeValue::Single(v) => add(into, key, v),
            AttributeValue::List(vs) => {
                for v in vs {
                    add(into, key.clone(), v);
                }
            }
        }
    }
}

/// Runs `path` with no arguments, stdin on /dev/null, in its own process
/// group, and parses its stdout (at most [`MAX_OUTPUT`] bytes). Its stderr
/// is logged. After `timeout` the whole process group is killed. A non-zero
/// exit is an error naming the script and the exit code.
pub fn run_attribute_script(path: &Path, timeout: Duration) -> Result<Attributes> {
    let stdout = run_script(path, timeout)?;
    let text = String::from_utf8_lossy(&stdout);
    parse_attributes(&text).map_err(|error| IdentityError::BadOutput {
        script: path.to_owned(),
        error: Box::new(error),
    })
}

/// The device identity from the identity script; at least one attribute.
pub fn device_identity(script: &Path) -> Result<Attributes> {
    let attrs = run_attribute_script(script, IDENTITY_TIMEOUT)?;
    if attrs.is_empty() {
        return Err(IdentityError::NoIdentity {
            script: script.to_owned(),
        });
    }
    Ok(attrs)
}

/// The identity as the auth request's `id_data` string: a compact JSON
/// object, keys sorted (as Go's encoder writes maps), lists as arrays.
pub fn identity_json(attrs: &Attributes) -> String {
    // Serialising string maps cannot fail; fall back to "{}" rather than panic.
    serde_json::to_string(attrs).unwrap_or_else(|_| "{}".to_owned())
}

/// Runs every executable regular file in `dir` whose name starts with
/// [`INVENTORY_PREFIX`], in name order, and merges their attributes
/// (repeated keys become lists). A script that fails, times out or prints
/// something unparsable is logged and its output dropped. A missing
/// directory gives no attributes.
pub fn collect_inventory(dir: &Path, timeout: Duration) -> Attributes {
    let mut attrs = Attributes::new();
    for script in inventory_scripts(dir) {
        match run_attribute_script(&script, timeout) {
            Ok(more) => merge_attributes(&mut attrs, more),
            Err(e) => log::warn!("inventory script skipped: {e}"),
        }
    }
    attrs
}

/// The inventory scripts in `dir`, sorted by name.
fn inventory_scripts(dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::debug!("no inventory directory {}", dir.display());
            return Vec::new();
        }
        Err(e) => {
            log::warn!("cannot read inventory directory {}: {e}", dir.display());
            return Vec::new();
        }
    };
    let mut scripts = Vec::new();
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(INVENTORY_PREFIX) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: a link to an executable counts.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                scripts.push(path);
            }
            Ok(_) => log::debug!("{} is not an executable file; skipped", path.display()),
            Err(e) => log::warn!("inventory script {} skipped: {e}", path.display()),
        }
    }
    scripts.sort();
    scripts
}

/// Runs the script and returns its stdout.
fn run_script(path: &Path, timeout: Duration) -> Result<Vec<u8>> {
    let script = || path.to_owned();
    let record = Spec::new(path, timeout)
        .stdout_cap(MAX_OUTPUT)
        .stderr_cap(MAX_STDERR_LOG)
        .run()
        .map_err(|error| IdentityError::Spawn {
            script: script(),
            error,
        })?;
    for line in record.stderr.lines() {
        log::info!("{}: {line}", path.display());
    }
    if record.stderr.truncated {
        log::info!("{}: (further stderr output dropped)", path.display());
    }
    match record.exit {
        Exit::Code(0) => {}
        Exit::TimedOut => {
            return Err(IdentityError::TimedOut {
                script: script(),
                timeout,
            });
        }
        other => {
            return Err(IdentityError::Failed {
                script: script(),
                status: other.to_string(),
            });
        }
    }
    if record.stdout.held_open {
        return Err(IdentityError::OutputHeldOpen { script: script() });
    }
    if record.stdout.truncated {
        return Err(IdentityError::TooMuchOutput { script: script() });
    }
    Ok(record.stdout.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(s: &str) -> AttributeValue {
        AttributeValue::Single(s.to_owned())
    }

    #[test]
    fn parses_lines() {
        let a =
            parse_attributes("mac=aa:bb\n\nserial=1=2\r\n  \nmac=cc\nmac=dd\nempty=\n").unwrap();
        assert_eq!(a["serial"], single("1=2"));
        assert_eq!(a["empty"], single(""));
        assert_eq!(
            a["mac"],
            AttributeValue::List(vec!["aa:bb".into(), "cc".into(), "dd".into()])
        );
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn keys_and_values_not_trimmed() {
        let a = parse_attributes(" k = v ").unwrap();
        assert_eq!(a[" k "], single(" v "));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_attributes("a=1\n\nnoequals\n").unwrap_err();
        assert!(matches!(e, IdentityError::BadLine { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("line 3"));
        let e = parse_attributes("=x").unwrap_err();
        assert!(matches!(e, IdentityError::EmptyKey { line: 1 }));
    }

    #[test]
    fn json_encoding() {
        let a = parse_attributes("mac=52:54:00:12:34:56\nb=\"q\"\nb=2\n").unwrap();
        assert_eq!(
            identity_json(&a),
            r#"{"b":["\"q\"","2"],"mac":"52:54:00:12:34:56"}"#
        );
        assert_eq!(identity_json(&Attributes::new()), "{}");
    }

    #[test]
    fn merge_makes_lists() {
        let mut a = parse_attributes("x=1\ny=1").unwrap();
        merge_attributes(&mut a, parse_attributes("x=2\nx=3\nz=1").unwrap());
        assert_eq!(
            a["x"],
            AttributeValue::List(vec!["1".into(), "2".into(), "3".into()])
        );
        assert_eq!(a["y"], single("1"));
        assert_eq!(a["z"], single("1"));
    }
}
