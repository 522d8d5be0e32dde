//! The update control map itself: actions, states, the map, and its
//! validation from JSON with errors that name the field. Separate from the
//! set (`merge`) and the file (`file`): this is what an application sends,
//! checked before anything changes.
//!
//! # Validation ([`ControlMap::parse`])
//!
//! All-or-nothing: a map is checked completely before anything changes. The
//! checks run in Mender's order: structure (unknown fields, JSON
//! types) everywhere first, then `id`, `priority`, the state names, the
//! action values. Errors start with the path of the field:
//! `states.ArtifactReboot_Enter.action: unknown action "stop" (expected
//! continue, force_continue, pause or fail)`.
//!
//! Choices where Mender leaves it open or where we differ from Mender:
//! * The input is at most [`MAX_MAP_BYTES`](super::MAX_MAP_BYTES) (64 KiB); the device side keeps
//!   at most [`MAX_DEVICE_MAPS`](super::MAX_DEVICE_MAPS) maps (a new (id, priority) beyond that is
//!   refused, replacing one is always possible). Server maps are not counted:
//!   there is one id per deployment and its maps go at the deployment's end.
//! * Field names match without regard to ASCII case, as Mender's decoder
//!   does (`ID`, `Priority`, `States`, `Action`); the same field given twice
//!   in two spellings is refused (Mender keeps the last one). State names and
//!   values are case-sensitive.
//! * A JSON `null` for a field means "absent" (Mender's decoder leaves the
//!   default). A `null` document is refused ("expected a JSON object"), where
//!   Mender accepts it and does nothing.
//! * `priority` must be a JSON integer; `1.0` is refused, as in Mender.
//! * A priority out of range prints the number (Mender prints a character).
//!

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value, json};

use super::{MAX_MAP_BYTES, MAX_PRIORITY, MIN_PRIORITY};
use crate::states::{self, ScriptAction, ScriptState};

/// What a map says to do at a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Go on, unless something else says otherwise (never overrides).
    Continue,
    /// Go on, overriding pauses and failures of lower priorities.
    ForceContinue,
    /// Wait at the checkpoint.
    Pause,
    /// Fail the deployment (rollback path).
    Fail,
}

impl Action {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Continue => "continue",
            Action::ForceContinue => "force_continue",
            Action::Pause => "pause",
            Action::Fail => "fail",
        }
    }

    fn parse(name: &str) -> Option<Action> {
        [
            Action::Continue,
            Action::ForceContinue,
            Action::Pause,
            Action::Fail,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three checkpoints a map can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    /// Before the install (after the download and its `Download_Leave` scripts).
    ArtifactInstallEnter,
    /// Before the reboot (only when a payload needs one).
    ArtifactRebootEnter,
    /// Before the commit.
    ArtifactCommitEnter,
}

impl StateKey {
    /// All three, in the order of a deployment.
    pub const ALL: [StateKey; 3] = [
        StateKey::ArtifactInstallEnter,
        StateKey::ArtifactRebootEnter,
        StateKey::ArtifactCommitEnter,
    ];

    /// The update state this checkpoint is the entry of.
    pub fn state(self) -> ScriptState {
        match self {
            StateKey::ArtifactInstallEnter => ScriptState::ArtifactInstall,
            StateKey::ArtifactRebootEnter => ScriptState::ArtifactReboot,
            StateKey::ArtifactCommitEnter => ScriptState::ArtifactCommit,
        }
    }

    /// The name used in JSON, as the state scripts spell it
    /// (`ArtifactInstall_Enter`, from [`states::state_label`]).
    pub fn label(self) -> String {
        states::state_label(self.state(), ScriptAction::Enter)
    }

    /// The state named exactly `name` (case-sensitive).
    pub fn parse(name: &str) -> Option<StateKey> {
        Self::ALL.into_iter().find(|s| s.label() == name)
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A map's rule for one state, with its defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRule {
    /// What to do while the map is alive.
    pub action: Action,
    /// What counts once the map expired (never `Pause`).
    pub on_map_expire: Action,
    /// What `action` becomes after the action was carried out.
    pub on_action_executed: Action,
}

impl StateRule {
    /// The rule with Mender's defaults: `action` continue;
    /// `on_map_expire` the action, pause becoming fail;
    /// `on_action_executed` the action.
    pub fn new(
        action: Option<Action>,
        on_map_expire: Option<Action>,
        on_action_executed: Option<Action>,
    ) -> StateRule {
        let action = action.unwrap_or(Action::Continue);
        let expire_default = match action {
            Action::Pause => Action::Fail,
            other => other,
        };
        StateRule {
            action,
            on_map_expire: on_map_expire.unwrap_or(expire_default),
            on_action_executed: on_action_executed.unwrap_or(action),
        }
    }

    /// Continue all three: such a state says nothing and is dropped.
    pub fn is_noop(&self) -> bool {
        self.action == Action::Continue
            && self.on_map_expire == Action::Continue
            && self.on_action_executed == Action::Continue
    }
}

/// One validated, sanitized map: every state has its three values, states
/// that say nothing are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMap {
    /// A UUID (36 characters, any case).
    pub id: String,
    /// -10 to 10; higher wins.
    pub priority: i32,
    /// The rules, by checkpoint.
    pub states: BTreeMap<StateKey, StateRule>,
}

/// A refused map: the path of the field (empty for the whole document) and
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    /// `states.ArtifactReboot_Enter.action`, or empty.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl MapError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> MapError {
        MapError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn whole(reason: impl Into<String>) -> MapError {
        MapError::new("", reason)
    }

    /// The same error for a map nested under `prefix` (`maps[2]`).
    pub(super) fn under(self, prefix: &str) -> MapError {
        let field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        MapError::new(field, self.reason)
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "update control map: {}", self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for MapError {}

const ACTIONS: &str = "continue, force_continue, pause or fail";
const EXPIRE_ACTIONS: &str = "continue, force_continue or fail";

/// The state names a map may use, for an error message:
/// `ArtifactInstall_Enter, ArtifactReboot_Enter or ArtifactCommit_Enter`.
fn state_names() -> String {
    let [first, second, third] = StateKey::ALL.map(StateKey::label);
    format!("{first}, {second} or {third}")
}

/// A short rendering of a JSON value for an error message.
fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

/// A key as it appears in a field path: plain names as they are, anything
/// else quoted (and shortened), so an error stays on one line.
fn key_name(key: &str) -> String {
    if !key.is_empty()
        && key.len() <= 40
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        describe(&Value::String(key.to_string()))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key_name(key)
    } else {
        format!("{path}.{}", key_name(key))
    }
}

/// Picks the known fields out of an object, matching names without regard
/// to ASCII case (as Mender's decoder); `null` counts as absent. Unknown
/// fields and a field given twice are errors.
fn pick<'a, const N: usize>(
    obj: &'a Map<String, Value>,
    names: [&str; N],
    path: &str,
    expected: &str,
) -> Result<[Option<&'a Value>; N], MapError> {
    let mut out: [Option<&Value>; N] = [None; N];
    let mut seen: [Option<&str>; N] = [None; N];
    for (key, value) in obj {
        let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(key)) else {
            return Err(MapError::new(
                join(path, key),
                format!("unknown field (expected {expected})"),
            ));
        };
        if let Some(first) = seen[i] {
            return Err(MapError::new(
                join(path, key),
                format!("duplicate field (also given as \"{first}\")"),
            ));
        }
        seen[i] = Some(key);
        if !value.is_null() {
            out[i] = Some(value);
        }
    }
    Ok(out)
}

fn as_str<'a>(v: Option<&'a Value>, field: &str) -> Result<Option<&'a str>, MapError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(MapError::new(
            field,
            format!("expected a string, found {}", describe(other)),
        )),
    }
}

/// Checks a map id: 36 characters, `-` at 8, 13, 18 and 23, hex digits
/// (either case) elsewhere. Version and variant bits are not checked.
pub fn validate_id(id: &str) -> Result<(), MapError> {
    let b = id.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else if id.is_empty() {
        Err(MapError::new("id", "must be a UUID, found \"\""))
    } else {
        Err(MapError::new(
            "id",
            format!(
                "must be a UUID (8-4-4-4-12 hex digits), found {}",
                describe(&Value::String(id.to_string()))
            ),
        ))
    }
}

/// Checks a priority.
pub fn validate_priority(priority: i64) -> Result<i32, MapError> {
    i32::try_from(priority)
        .ok()
        .filter(|p| (MIN_PRIORITY..=MAX_PRIORITY).contains(p))
        .ok_or_else(|| {
            MapError::new(
                "priority",
                format!("{priority} is out of range [{MIN_PRIORITY}, {MAX_PRIORITY}]"),
            )
        })
}

/// The fields of a state as found in the document (types checked).
struct RawRule<'a> {
    path: String,
    action: Option<&'a str>,
    on_map_expire: Option<&'a str>,
    on_action_executed: Option<&'a str>,
}

impl ControlMap {
    /// Parses and validates a map document (at most [`MAX_MAP_BYTES`]).
    pub fn parse(bytes: &[u8]) -> Result<ControlMap, MapError> {
        if bytes.len() > MAX_MAP_BYTES {
            return Err(MapError::whole(format!(
                "too large (more than {MAX_MAP_BYTES} bytes)"
            )));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| MapError::whole(format!("invalid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Validates a map given as JSON, then fills the defaults and drops the
    /// states that say nothing.
    pub fn from_value(value: &Value) -> Result<ControlMap, MapError> {
        // 1. Structure: unknown fields and JSON types, everywhere.
        let Value::Object(obj) = value else {
            return Err(MapError::whole(format!(
                "expected a JSON object, found {}",
                describe(value)
            )));
        };
        let [id, priority, states] = pick(
            obj,
            ["id", "priority", "states"],
            "",
            "id, priority or states",
        )?;
        let id = as_str(id, "id")?;
        let priority = match priority {
            None => None,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n),
            Some(other) => {
                return Err(MapError::new(
                    "priority",
                    format!("expected an integer, found {}", describe(other)),
                ));
            }
        };
        let mut raw_states = Vec::new();
        match states {
            None => {}
            Some(Value::Object(states)) => {
                for (name, rule) in states {
                    let path = join("states", name);
                    let fields = match rule {
                        Value::Null => [None, None, None],
                        Value::Object(rule) => pick(
                            rule,
                            ["action", "on_map_expire", "on_action_executed"],
                            &path,
                            "action, on_map_expire or on_action_executed",
                        )?,
                        other => {
                            return Err(MapError::new(
                                path,
                                format!("expected an object, found {}", describe(other)),
                            ));
                        }
                    };
                    let [action, expire, executed] = fields;
                    raw_states.push((
                        name.as_str(),
                        RawRule {
                            action: as_str(action, &format!("{path}.action"))?,
                            on_map_expire: as_str(expire, &format!("{path}.on_map_expire"))?,
                            on_action_executed: as_str(
                                executed,
                                &format!("{path}.on_action_executed"),
                            )?,
                            path,
                        },
                    ));
                }
            }
            Some(other) => {
                return Err(MapError::new(
                    "states",
                    format!("expected an object, found {}", describe(other)),
                ));
            }
        }

        // 2. Values, in Mender's order: id, priority, state names, actions.
        let id = id.unwrap_or("");
        validate_id(id)?;
        let priority = match priority {
            None => 0,
            Some(n) => match n.as_i64() {
                Some(p) => validate_priority(p)?,
                None => {
                    return Err(MapError::new(
                        "priority",
                        format!("{n} is out of range [{MIN_PRIORITY}, {MAX_PRIORITY}]"),
                    ));
                }
            },
        };
        let mut keyed = Vec::with_capacity(raw_states.len());
        for (name, raw) in raw_states {
            let Some(key) = StateKey::parse(name) else {
                return Err(MapError::new(
                    raw.path,
                    format!("unknown state (expected {})", state_names()),
                ));
            };
            keyed.push((key, raw));
        }
        let mut rules = BTreeMap::new();
        for (key, raw) in keyed {
            let action = Self::action(raw.action, &raw.path, "action")?;
            let on_map_expire = Self::action(raw.on_map_expire, &raw.path, "on_map_expire")?;
            if on_map_expire == Some(Action::Pause) {
                return Err(MapError::new(
                    format!("{}.on_map_expire", raw.path),
                    format!("\"pause\" is not allowed here (expected {EXPIRE_ACTIONS})"),
                ));
            }
            let on_action_executed =
                Self::action(raw.on_action_executed, &raw.path, "on_action_executed")?;
            // 3. Sanitize.
            let rule = StateRule::new(action, on_map_expire, on_action_executed);
            if !rule.is_noop() {
                rules.insert(key, rule);
            }
        }
        Ok(ControlMap {
            id: id.to_string(),
            priority,
            states: rules,
        })
    }

    /// An action value: empty or absent is `None` (the default applies).
    fn action(value: Option<&str>, path: &str, field: &str) -> Result<Option<Action>, MapError> {
        match value {
            None | Some("") => Ok(None),
            Some(name) => Action::parse(name).map(Some).ok_or_else(|| {
                let expected = if field == "on_map_expire" {
                    EXPIRE_ACTIONS
                } else {
                    ACTIONS
                };
                MapError::new(
                    format!("{path}.{field}"),
                    format!(
                        "unknown action {} (expected {expected})",
                        describe(&Value::String(name.to_string()))
                    ),
                )
            }),
        }
    }

    /// The map as JSON, states with their three values.
    pub fn to_value(&self) -> Value {
        let states: Map<String, Value> = self
            .states
            .iter()
            .map(|(key, rule)| {
                (
                    key.label(),
                    json!({
                        "action": rule.action.as_str(),
                        "on_map_expire": rule.on_map_expire.as_str(),
                        "on_action_executed": rule.on_action_executed.as_str(),
                    }),
                )
            })
            .collect();
        json!({ "id": self.id, "priority": self.priority, "states": states })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn state_keys_spell_the_script_states() {
        let labels = StateKey::ALL.map(StateKey::label);
        assert_eq!(
            labels,
            [
                "ArtifactInstall_Enter",
                "ArtifactReboot_Enter",
                "ArtifactCommit_Enter"
            ]
        );
        for key in StateKey::ALL {
            assert_eq!(StateKey::parse(&key.label()), Some(key));
            assert_eq!(key.to_string(), key.label());
        }
        assert_eq!(StateKey::parse("ArtifactInstall_Leave"), None);
        assert_eq!(StateKey::parse("artifactinstall_enter"), None);
    }

    #[test]
    fn defaults_and_sanitizing() {
        use Action::*;
        let m = map(&format!(
            r#"{{"id":"{ID}","priority":-1,"states":{{"ArtifactInstall_Enter":{{"action":"pause"}}}}}}"#
        ));
        assert_eq!(m.priority, -1);
        assert_eq!(m.states[&INSTALL], rule(Pause, Fail, Pause));
        let cases = [
            (
                r#"{"action":"force_continue"}"#,
                rule(ForceContinue, ForceContinue, ForceContinue),
            ),
            (r#"{"action":"fail"}"#, rule(Fail, Fail, Fail)),
            (
                r#"{"action":"continue","on_action_executed":"pause"}"#,
                rule(Continue, Continue, Pause),
            ),
            (
                r#"{"action":"pause","on_map_expire":"continue"}"#,
                rule(Pause, Continue, Pause),
            ),
            (
                r#"{"on_map_expire":"fail"}"#,
                rule(Continue, Fail, Continue),
            ),
            (
                r#"{"action":"","on_map_expire":null,"on_action_executed":"fail"}"#,
                rule(Continue, Continue, Fail),
            ),
        ];
        for (text, want) in cases {
            let m = with_state(ID, 0, "ArtifactCommit_Enter", text);
            assert_eq!(m.states[&StateKey::ArtifactCommitEnter], want, "{text}");
        }
        // All-continue states disappear; no states at all is fine.
        for text in [
            r#"{"action":"continue"}"#,
            "{}",
            "null",
            r#"{"action":"continue","on_map_expire":"continue","on_action_executed":"continue"}"#,
        ] {
            assert!(
                with_state(ID, 0, "ArtifactReboot_Enter", text)
                    .states
                    .is_empty(),
                "{text}"
            );
        }
        for text in [
            format!(r#"{{"id":"{ID}"}}"#),
            format!(r#"{{"id":"{ID}","states":null,"priority":null}}"#),
            format!(r#"{{"id":"{ID}","states":{{}}}}"#),
        ] {
            let m = map(&text);
            assert!(m.states.is_empty() && m.priority == 0, "{text}");
        }
    }

    #[test]
    fn field_names_ignore_case_values_do_not() {
        let m = map(&format!(
            r#"{{"ID":"{}","Priority":10,"States":{{"ArtifactInstall_Enter":{{"Action":"pause","ON_MAP_EXPIRE":"continue"}}}}}}"#,
            ID.to_uppercase()
        ));
        assert_eq!(m.priority, 10);
        assert_eq!(m.states[&INSTALL].on_map_expire, Action::Continue);
        assert_eq!(
            err(&format!(
                r#"{{"id":"{ID}","states":{{"artifactinstall_enter":{{"action":"pause"}}}}}}"#
            )),
            "states.artifactinstall_enter: unknown state (expected ArtifactInstall_Enter, \
             ArtifactReboot_Enter or ArtifactCommit_Enter)"
        );
        assert_eq!(
            err(&format!(
                r#"{{"id":"{ID}","states":{{"ArtifactInstall_Enter":{{"action":"Pause"}}}}}}"#
            )),
            "states.ArtifactInstall_Enter.action: unknown action \"Pause\" \
             (expected continue, force_continue, pause or fail)"
        );
        assert_eq!(
            err(&format!(r#"{{"id":"{ID}","ID":"{ID}"}}"#)),
            "id: duplicate field (also given as \"ID\")"
        );
    }

    #[test]
    fn every_field_is_validated_with_its_name() {
        let st =
            |state: &str, rule: &str| format!(r#"{{"id":"{ID}","states":{{"{state}":{rule}}}}}"#);
        let cases: Vec<(String, &str)> = vec![
            (
                "".into(),
                "update control map: invalid JSON: EOF while parsing a value at line 1 column 0",
            ),
            (
                "null".into(),
                "update control map: expected a JSON object, found null",
            ),
            (
                "[1]".into(),
                "update control map: expected a JSON object, found [1]",
            ),
            (
                "{".into(),
                "update control map: invalid JSON: EOF while parsing an object at line 1 column 1",
            ),
            // top level
            (
                format!(r#"{{"id":"{ID}","bogus":1}}"#),
                "bogus: unknown field (expected id, priority or states)",
            ),
            (
                format!(r#"{{"id":"{ID}","a b":1}}"#),
                "\"a b\": unknown field (expected id, priority or states)",
            ),
            ("{}".into(), "id: must be a UUID, found \"\""),
            (r#"{"id":null}"#.into(), "id: must be a UUID, found \"\""),
            (r#"{"id":5}"#.into(), "id: expected a string, found 5"),
            (
                r#"{"id":"abc"}"#.into(),
                "id: must be a UUID (8-4-4-4-12 hex digits), found \"abc\"",
            ),
            (
                r#"{"id":"0123456789ab-cdef-0123-456789abcdef"}"#.into(),
                "id: must be a UUID (8-4-4-4-12 hex digits), found \"0123456789ab-cdef-0123-456789abcdef\"",
            ),
            (
                r#"{"id":"01234567-89ab-cdef-0123-456789abcdeg"}"#.into(),
                "id: must be a UUID (8-4-4-4-12 hex digits), found \"01234567-89ab-cdef-0123-456789abcdeg\"",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":"1"}}"#),
                "priority: expected an integer, found \"1\"",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":1.0}}"#),
                "priority: expected an integer, found 1.0",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":1.5}}"#),
                "priority: expected an integer, found 1.5",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":true}}"#),
                "priority: expected an integer, found true",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":11}}"#),
                "priority: 11 is out of range [-10, 10]",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":-11}}"#),
                "priority: -11 is out of range [-10, 10]",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":18446744073709551615}}"#),
                "priority: 18446744073709551615 is out of range [-10, 10]",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":1e3}}"#),
                "priority: expected an integer, found 1000.0",
            ),
            (
                format!(r#"{{"id":"{ID}","states":[]}}"#),
                "states: expected an object, found []",
            ),
            (
                format!(r#"{{"id":"{ID}","states":"pause"}}"#),
                "states: expected an object, found \"pause\"",
            ),
            // states
            (
                st("ArtifactDownload_Enter", r#"{"action":"pause"}"#),
                "states.ArtifactDownload_Enter: unknown state (expected ArtifactInstall_Enter, ArtifactReboot_Enter or ArtifactCommit_Enter)",
            ),
            (
                st("ArtifactReboot_Enter", r#""pause""#),
                "states.ArtifactReboot_Enter: expected an object, found \"pause\"",
            ),
            (
                st("ArtifactReboot_Enter", r#"{"action":"stop"}"#),
                "states.ArtifactReboot_Enter.action: unknown action \"stop\" (expected continue, force_continue, pause or fail)",
            ),
            (
                st("ArtifactReboot_Enter", r#"{"action":1}"#),
                "states.ArtifactReboot_Enter.action: expected a string, found 1",
            ),
            (
                st("ArtifactReboot_Enter", r#"{"action":["pause"]}"#),
                "states.ArtifactReboot_Enter.action: expected a string, found [\"pause\"]",
            ),
            (
                st("ArtifactCommit_Enter", r#"{"on_map_expire":"pause"}"#),
                "states.ArtifactCommit_Enter.on_map_expire: \"pause\" is not allowed here (expected continue, force_continue or fail)",
            ),
            (
                st("ArtifactCommit_Enter", r#"{"on_map_expire":"later"}"#),
                "states.ArtifactCommit_Enter.on_map_expire: unknown action \"later\" (expected continue, force_continue or fail)",
            ),
            (
                st("ArtifactCommit_Enter", r#"{"on_map_expire":false}"#),
                "states.ArtifactCommit_Enter.on_map_expire: expected a string, found false",
            ),
            (
                st("ArtifactInstall_Enter", r#"{"on_action_executed":"wait"}"#),
                "states.ArtifactInstall_Enter.on_action_executed: unknown action \"wait\" (expected continue, force_continue, pause or fail)",
            ),
            (
                st("ArtifactInstall_Enter", r#"{"on_action_executed":{}}"#),
                "states.ArtifactInstall_Enter.on_action_executed: expected a string, found {}",
            ),
            (
                st(
                    "ArtifactInstall_Enter",
                    r#"{"action":"pause","when":"now"}"#,
                ),
                "states.ArtifactInstall_Enter.when: unknown field (expected action, on_map_expire or on_action_executed)",
            ),
            // Structure errors come first (Mender's order), then id, priority, state names.
            (
                r#"{"id":"bad","states":{"ArtifactInstall_Enter":{"bogus":1}}}"#.into(),
                "states.ArtifactInstall_Enter.bogus: unknown field (expected action, on_map_expire or on_action_executed)",
            ),
            (
                r#"{"id":"bad","priority":99}"#.into(),
                "id: must be a UUID (8-4-4-4-12 hex digits), found \"bad\"",
            ),
            (
                format!(r#"{{"id":"{ID}","priority":99,"states":{{"X":{{}}}}}}"#),
                "priority: 99 is out of range [-10, 10]",
            ),
            (
                format!(r#"{{"id":"{ID}","states":{{"X":{{"action":"stop"}}}}}}"#),
                "states.X: unknown state (expected ArtifactInstall_Enter, ArtifactReboot_Enter or ArtifactCommit_Enter)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(&text), want, "input: {text}");
        }
        // Long values are shortened, so the error stays one short line.
        let long = "x".repeat(1000);
        let e = err(&format!(r#"{{"id":"{long}"}}"#));
        assert!(
            e.len() < 120 && e.ends_with("...") && !e.contains('\n'),
            "{e}"
        );
        let e = err(&format!(r#"{{"id":"{ID}","{long}\n":1}}"#));
        assert!(e.len() < 120 && !e.contains('\n'), "{e}");
    }

    #[test]
    fn huge_and_deep_inputs_are_refused() {
        let mut big = format!(r#"{{"id":"{ID}","states":{{}},"pad":""#).into_bytes();
        big.resize(MAX_MAP_BYTES + 1, b' ');
        assert_eq!(
            ControlMap::parse(&big).err().map(|e| e.to_string()),
            Some("update control map: too large (more than 65536 bytes)".into())
        );
        let deep = format!(r#"{{"id":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
        let e = err(&deep);
        assert!(
            e.starts_with("update control map: invalid JSON: recursion limit"),
            "{e}"
        );
    }

    #[test]
    fn round_trip_through_json() {
        let m = with_state(
            ID,
            3,
            "ArtifactReboot_Enter",
            r#"{"action":"pause","on_action_executed":"continue"}"#,
        );
        assert_eq!(ControlMap::from_value(&m.to_value()), Ok(m));
    }
}
