//! Update control maps ("synchronized updates"): the device-side model, its
//! validation, the merge of several maps by priority, expiry, and the
//! crash-safe file that keeps the maps across restarts and reboots.
//!
//! A map tells the daemon what to do at three checkpoints of a deployment:
//! before the install (`ArtifactInstall_Enter`), before the reboot
//! (`ArtifactReboot_Enter`) and before the commit (`ArtifactCommit_Enter`):
//! `continue`, `force_continue`, `pause` or `fail`. The rules are those of
//! the Mender client 3.5 (see the spec `update-control-maps.md`); where we
//! chose differently, the item says so.
//!
//! # API for the daemon
//!
//! ```text
//! let mut maps = ControlMapSet::load(&config)?;      // daemon start: boot expiry applied
//! // deployments/next carried a map (or none: None deletes that id's maps)
//! maps.insert_from_server(&deployment_id, map, BootTime::now())?;
//! // at a checkpoint
//! let now = BootTime::now();
//! for gone in maps.expire(now) { log it; its on_map_expire now counts }
//! let decision = maps.decision(StateKey::ArtifactInstallEnter, now);
//! match decision.action {
//!     Action::Continue | Action::ForceContinue => { maps.after_action(state, now); enter the state }
//!     Action::Fail => { maps.after_action(state, now); error path ("Forced a failed update") }
//!     Action::Pause => { first time at this checkpoint: maps.after_action(state, now);
//!                        report state.pause_status(); wait for SIGUSR1 (a CLI change),
//!                        maps.earliest_halfway(now) or maps.next_expiry(now); then
//!                        maps.save() (which also reads other processes' changes)
//!                        and evaluate again }
//! }
//! maps.save()?;                                      // after every change
//! // Idle: maps.purge_expired(now); deployment cleanup: maps.remove(&deployment_id, None)
//! ```
//!
//! * [`ControlMapSet::load`] is for the daemon's start: every stored map gets
//!   a fresh lifetime of `UpdateControlMapBootExpirationTimeSeconds`, maps
//!   stored as expired stay expired (spec §4). [`ControlMapSet::open`] is for
//!   the command line: within the same boot the stored lifetimes are kept;
//!   a file last written in an earlier boot (another
//!   `/proc/sys/kernel/random/boot_id`) gets the boot rule too, and is
//!   rewritten at once so that it applies only once.
//! * [`ControlMapSet::decision`] does not change anything;
//!   [`ControlMapSet::after_action`] applies `on_action_executed`. Mender
//!   applies it at every evaluation (spec §10 Q3), which with a pause that
//!   is evaluated again and again rewrites the maps in a loop. Here the daemon
//!   calls `after_action` once for each action it carries out: when it enters
//!   the state (continue), takes the failure path (fail), or starts a pause
//!   (not at each re-evaluation while paused). It changes, like Mender, every
//!   map that has the state at every priority level visited, down to the
//!   level that decided (all levels when none decided).
//! * Time is a [`BootTime`] passed in by the caller: milliseconds of
//!   `CLOCK_BOOTTIME`, which wall-clock jumps (NTP at boot on a device
//!   without a real-time clock) do not move and which is the same for every
//!   process of one boot. Tests pass made-up instants.
//! * Several processes share the file (the daemon, `mender-rs control`).
//!   Every change is recorded as an operation; [`ControlMapSet::save`] takes
//!   the lock file beside the maps (`crate::persist`), reads the file again, replays
//!   this process's operations on what it finds, writes the result and keeps
//!   it. A change made by another process in between is therefore never lost,
//!   and the in-memory set also picks up other processes' changes. An
//!   `on_action_executed` or expiry change is dropped when the map was
//!   replaced meanwhile (a refresh replaces the copy, spec §5.3).
//!
//! # Validation ([`ControlMap::parse`])
//!
//! All-or-nothing: a map is checked completely before anything changes. The
//! checks run in Mender's order (spec §2.4): structure (unknown fields, JSON
//! types) everywhere first, then `id`, `priority`, the state names, the
//! action values. Errors start with the path of the field:
//! `states.ArtifactReboot_Enter.action: unknown action "stop" (expected
//! continue, force_continue, pause or fail)`.
//!
//! Choices where the spec is silent or where we differ from Mender:
//! * The input is at most [`MAX_MAP_BYTES`] (64 KiB); the device side keeps
//!   at most [`MAX_DEVICE_MAPS`] maps (a new (id, priority) beyond that is
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
//! # The file
//!
//! `<data>/mender-rs-control-maps.json`, replaced atomically, mode 0600:
//! `{"schema": 1, "boot_id": "...", "maps": [{"id", "priority", "states",
//! "source": "device"|"server", "stamped_ms", "expires_ms", "expired"}]}`.
//! The states are stored with their three values filled in. Each map is
//! validated again when the file is read; a file that does not parse is an
//! error naming the file and the entry (nothing guesses at a pause that may
//! have been meant). The lock is `<data>/mender-rs-control-maps.lock`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::fsutil;
use crate::persist::{Lock, PersistError, StateFile};

/// Largest accepted map document, in bytes.
pub const MAX_MAP_BYTES: usize = 64 * 1024;
/// Most maps the device side (CLI, D-Bus) may keep at once.
pub const MAX_DEVICE_MAPS: usize = 64;
/// Lowest accepted priority.
pub const MIN_PRIORITY: i32 = -10;
/// Highest accepted priority.
pub const MAX_PRIORITY: i32 = 10;
/// The maps' file in the data directory.
pub const MAPS_FILE: &str = "mender-rs-control-maps.json";
/// The lock file beside it.
pub const LOCK_FILE: &str = "mender-rs-control-maps.lock";
/// Version of the file's layout.
pub const SCHEMA_VERSION: u64 = 1;
/// Largest maps file read back (64 device maps of 64 KiB, with room to
/// spare for the server's).
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// Largest `/proc/sys/kernel/random/boot_id` read: a UUID and a newline.
const MAX_BOOT_ID_BYTES: u64 = 64;
/// How long a writer waits for the lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The map

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

    /// The name used in JSON (and by the state scripts).
    pub fn as_str(self) -> &'static str {
        match self {
            StateKey::ArtifactInstallEnter => "ArtifactInstall_Enter",
            StateKey::ArtifactRebootEnter => "ArtifactReboot_Enter",
            StateKey::ArtifactCommitEnter => "ArtifactCommit_Enter",
        }
    }

    /// The state named exactly `name` (case-sensitive).
    pub fn parse(name: &str) -> Option<StateKey> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The deployment status reported while paused here.
    pub fn pause_status(self) -> &'static str {
        match self {
            StateKey::ArtifactInstallEnter => "pause_before_installing",
            StateKey::ArtifactRebootEnter => "pause_before_rebooting",
            StateKey::ArtifactCommitEnter => "pause_before_committing",
        }
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn under(self, prefix: &str) -> MapError {
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
const STATES: &str = "ArtifactInstall_Enter, ArtifactReboot_Enter or ArtifactCommit_Enter";

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
                    format!("unknown state (expected {STATES})"),
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
                    key.as_str().to_string(),
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

// ---------------------------------------------------------------------------
// Time

/// An instant on the `CLOCK_BOOTTIME` clock, in milliseconds: monotonic,
/// counts suspended time, and is the same for every process of one boot.
/// Milliseconds so that an instant survives the file unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BootTime(u64);

impl BootTime {
    /// The clock now.
    pub fn now() -> BootTime {
        for clock in [libc::CLOCK_BOOTTIME, libc::CLOCK_MONOTONIC] {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes into the timespec we own.
            if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
                let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
                let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
                return BootTime(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000));
            }
        }
        BootTime(0)
    }

    /// An instant given in milliseconds (tests, the file).
    pub fn from_millis(ms: u64) -> BootTime {
        BootTime(ms)
    }

    /// An instant given in seconds (tests).
    pub fn from_secs(secs: u64) -> BootTime {
        BootTime(secs.saturating_mul(1000))
    }

    /// Milliseconds since boot.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant plus `d` (saturating).
    pub fn after(self, d: Duration) -> BootTime {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        BootTime(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to this instant (zero if `earlier` is later).
    pub fn since(self, earlier: BootTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// The current boot's id (empty when the kernel does not say).
fn current_boot_id() -> String {
    fsutil::read_kernel_file(
        Path::new("/proc/sys/kernel/random/boot_id"),
        MAX_BOOT_ID_BYTES,
        "a boot id",
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The set

/// Where a map came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A device application (`mender-rs control`, D-Bus).
    Device,
    /// The server, with a deployment (its id is the deployment id).
    Server,
}

impl Source {
    /// The name used in the file and in `control show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Device => "device",
            Source::Server => "server",
        }
    }

    fn parse(name: &str) -> Option<Source> {
        [Source::Device, Source::Server]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A map in the set, with its source and lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveMap {
    /// The map (its actions changed by `on_action_executed`).
    pub map: ControlMap,
    /// Who set it.
    pub source: Source,
    /// When it was set, refreshed or restored.
    pub stamped: BootTime,
    /// When it expires.
    pub expires: BootTime,
    /// Marked expired (by [`ControlMapSet::expire`], or stored so).
    pub expired: bool,
}

impl ActiveMap {
    fn new(map: ControlMap, source: Source, now: BootTime, lifetime: Duration) -> ActiveMap {
        ActiveMap {
            map,
            source,
            stamped: now,
            expires: now.after(lifetime),
            expired: false,
        }
    }

    /// Whether the map has expired at `now`: its `on_map_expire` values count.
    pub fn is_expired(&self, now: BootTime) -> bool {
        self.expired || now >= self.expires
    }

    /// Half of the lifetime: when a server map is due for a refresh.
    pub fn halfway(&self) -> BootTime {
        BootTime(self.stamped.0 + self.expires.0.saturating_sub(self.stamped.0) / 2)
    }

    /// Time left before it expires (zero once expired).
    pub fn remaining(&self, now: BootTime) -> Duration {
        if self.is_expired(now) {
            Duration::ZERO
        } else {
            self.expires.since(now)
        }
    }

    /// What this map says for `state` at `now`, if anything.
    pub fn value(&self, state: StateKey, now: BootTime) -> Option<Action> {
        let rule = self.map.states.get(&state)?;
        Some(if self.is_expired(now) {
            rule.on_map_expire
        } else {
            rule.action
        })
    }

    fn version(&self) -> Version {
        Version {
            id: self.map.id.clone(),
            priority: self.map.priority,
            stamped: self.stamped,
        }
    }

    fn is(&self, v: &Version) -> bool {
        self.map.id == v.id && self.map.priority == v.priority && self.stamped == v.stamped
    }
}

/// The merged answer for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Continue` when no priority level decided; `ForceContinue` when a
    /// level decided to go on over everything below it (the daemon treats
    /// both as continue and may log the second as forced).
    pub action: Action,
    /// The priority level that decided, if any.
    pub priority: Option<i32>,
    /// The ids of the maps at that level that have the state.
    pub ids: Vec<String>,
}

impl Decision {
    /// Whether the deployment goes on.
    pub fn proceeds(&self) -> bool {
        matches!(self.action, Action::Continue | Action::ForceContinue)
    }
}

/// The lifetimes, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `UpdateControlMapExpirationTimeSeconds`, default twice
    /// `UpdatePollIntervalSeconds` (the effective poll interval: 3600 s by
    /// default; Mender's raw 0 when the poll interval is unset is not copied).
    pub expiration: Duration,
    /// `UpdateControlMapBootExpirationTimeSeconds`, default 600 s.
    pub boot_expiration: Duration,
    /// [`MAX_DEVICE_MAPS`].
    pub max_device_maps: usize,
}

impl Settings {
    /// The settings of a configuration.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            expiration: config
                .update_control_map_expiration
                .unwrap_or(config.update_poll_interval.saturating_mul(2)),
            boot_expiration: config.update_control_map_boot_expiration,
            max_device_maps: MAX_DEVICE_MAPS,
        }
    }
}

/// What a device insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    /// The map was added, or replaced the one with its (id, priority).
    Inserted {
        /// A map with that (id, priority) was there.
        replaced: bool,
    },
    /// The map had no states left after the defaults: the map with its
    /// (id, priority) was removed, as `SetUpdateControlMap` does.
    Removed {
        /// A map with that (id, priority) was there.
        existed: bool,
    },
}

/// Errors of the set and its file.
#[derive(Debug, thiserror::Error)]
pub enum ControlMapError {
    #[error(transparent)]
    Invalid(#[from] MapError),
    #[error("too many update control maps from the device (at most {0}); clear some first")]
    TooMany(usize),
    #[error("id: {found:?} does not match the deployment ID {deployment:?}")]
    Mismatch { found: String, deployment: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    /// The file is not a regular file, or larger than [`MAX_FILE_BYTES`].
    #[error("{0} (remove it to start over)")]
    Read(crate::fsutil::ReadError),
    #[error("{path}: corrupt update control maps: {reason} (remove the file to start over)")]
    Corrupt { path: String, reason: String },
    #[error(
        "{path}: written by a newer mender-rs (schema {found}, this one knows {SCHEMA_VERSION})"
    )]
    TooNew { path: String, found: u64 },
    #[error("{path}: still locked by another process after {secs} s")]
    Busy { path: String, secs: u64 },
}

impl From<PersistError> for ControlMapError {
    fn from(e: PersistError) -> ControlMapError {
        match e {
            PersistError::Io { path, source } => ControlMapError::Io { path, source },
            PersistError::Read(e) => ControlMapError::Read(e),
            PersistError::Corrupt { path, reason } => ControlMapError::Corrupt { path, reason },
            PersistError::TooNew { path, found } => ControlMapError::TooNew { path, found },
            PersistError::Busy { path, waited } => ControlMapError::Busy {
                path,
                secs: waited.unwrap_or(LOCK_WAIT).as_secs(),
            },
        }
    }
}

/// Identifies one version of a map: a refresh makes a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    id: String,
    priority: i32,
    stamped: BootTime,
}

/// A change, kept until saved so that it can be replayed on the file as
/// another process may have left it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Add, or replace the map with the same (id, priority).
    Put(ActiveMap),
    /// Replace every map with this id (whatever its priority) by `map`.
    PutServer {
        id: String,
        map: Option<ActiveMap>,
    },
    /// Remove the maps with this id (one priority or all).
    Remove {
        id: String,
        priority: Option<i32>,
    },
    MarkExpired(Version),
    Purge(BootTime),
    SetAction(Version, StateKey, Action),
}

fn apply(maps: &mut Vec<ActiveMap>, op: &Op) {
    match op {
        Op::Put(new) => {
            match maps
                .iter_mut()
                .find(|m| m.map.id == new.map.id && m.map.priority == new.map.priority)
            {
                Some(slot) => *slot = new.clone(),
                None => maps.push(new.clone()),
            }
        }
        Op::PutServer { id, map } => {
            maps.retain(|m| m.map.id != *id);
            if let Some(map) = map {
                maps.push(map.clone());
            }
        }
        Op::Remove { id, priority } => {
            maps.retain(|m| !(m.map.id == *id && priority.is_none_or(|p| m.map.priority == p)))
        }
        Op::MarkExpired(v) => {
            if let Some(m) = maps.iter_mut().find(|m| m.is(v)) {
                m.expired = true;
            }
        }
        Op::Purge(now) => maps.retain(|m| !m.is_expired(*now)),
        Op::SetAction(v, state, action) => {
            if let Some(rule) = maps
                .iter_mut()
                .find(|m| m.is(v))
                .and_then(|m| m.map.states.get_mut(state))
            {
                rule.action = *action;
            }
        }
    }
}

/// Every map gets a fresh lifetime of `lifetime` from `now`; maps that were
/// expired stay expired (spec §4, load at start-up). Within the same boot a
/// map whose stored lifetime is over counts as expired; across a reboot
/// only the stored mark counts (the old boot's instants mean nothing now).
fn restamp(maps: &mut [ActiveMap], now: BootTime, lifetime: Duration, same_boot: bool) {
    for m in maps {
        let expired = if same_boot {
            m.is_expired(now)
        } else {
            m.expired
        };
        m.stamped = now;
        m.expires = now.after(lifetime);
        m.expired = expired;
    }
}

/// The active maps (device and server), their lifetimes, and the file that
/// keeps them. See the module documentation for how the daemon uses it.
#[derive(Debug, Clone)]
pub struct ControlMapSet {
    settings: Settings,
    /// None: in memory only.
    data_dir: Option<PathBuf>,
    boot_id: String,
    maps: Vec<ActiveMap>,
    pending: Vec<Op>,
}

impl ControlMapSet {
    /// An empty set in memory only ([`ControlMapSet::save`] does nothing).
    pub fn new(settings: Settings) -> ControlMapSet {
        ControlMapSet {
            settings,
            data_dir: None,
            boot_id: String::new(),
            maps: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn for_config(config: &Config) -> ControlMapSet {
        ControlMapSet {
            settings: Settings::from_config(config),
            data_dir: Some(config.data_dir.clone()),
            boot_id: current_boot_id(),
            maps: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The daemon's start: the stored maps, each alive for
    /// `UpdateControlMapBootExpirationTimeSeconds` from now (expired ones
    /// stay expired); the file is rewritten with the new lifetimes.
    pub fn load(config: &Config) -> Result<ControlMapSet, ControlMapError> {
        Self::load_at(config, BootTime::now())
    }

    /// [`ControlMapSet::load`] at a given instant.
    pub fn load_at(config: &Config, now: BootTime) -> Result<ControlMapSet, ControlMapError> {
        let mut set = Self::for_config(config);
        let path = set.path();
        if read_file(&path)?.is_none() {
            return Ok(set);
        }
        let _lock = lock(&config.data_dir)?;
        if let Some((boot_id, mut maps)) = read_file(&path)? {
            restamp(
                &mut maps,
                now,
                set.settings.boot_expiration,
                boot_id == set.boot_id,
            );
            write_file(&path, &set.boot_id, &maps)?;
            set.maps = maps;
        }
        Ok(set)
    }

    /// The stored maps as they are, for the command line. A file from an
    /// earlier boot gets the boot rule of [`ControlMapSet::load`] (and is
    /// rewritten, so that the rule applies once per boot).
    pub fn open(config: &Config) -> Result<ControlMapSet, ControlMapError> {
        Self::open_at(config, BootTime::now())
    }

    /// [`ControlMapSet::open`] at a given instant.
    pub fn open_at(config: &Config, now: BootTime) -> Result<ControlMapSet, ControlMapError> {
        let mut set = Self::for_config(config);
        let path = set.path();
        match read_file(&path)? {
            None => {}
            Some((boot_id, maps)) if boot_id == set.boot_id => set.maps = maps,
            Some(_) => {
                let _lock = lock(&config.data_dir)?;
                if let Some((boot_id, mut maps)) = read_file(&path)? {
                    if boot_id != set.boot_id {
                        restamp(&mut maps, now, set.settings.boot_expiration, false);
                        write_file(&path, &set.boot_id, &maps)?;
                    }
                    set.maps = maps;
                }
            }
        }
        Ok(set)
    }

    fn path(&self) -> PathBuf {
        self.data_dir
            .as_deref()
            .unwrap_or(Path::new("."))
            .join(MAPS_FILE)
    }

    /// The lifetimes in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every map, expired ones included.
    pub fn maps(&self) -> &[ActiveMap] {
        &self.maps
    }

    /// The maps not expired at `now`.
    pub fn active(&self, now: BootTime) -> impl Iterator<Item = &ActiveMap> {
        self.maps.iter().filter(move |m| !m.is_expired(now))
    }

    /// Whether any map (expired or not) has this id: for a deployment id,
    /// whether its map is to be fetched again from the server.
    pub fn has_id(&self, id: &str) -> bool {
        self.maps.iter().any(|m| m.map.id == id)
    }

    /// What `SetUpdateControlMap` answers: half the expiration, in whole
    /// seconds; the application must set its map again within that time.
    pub fn refresh_timeout(&self) -> i32 {
        i32::try_from(self.settings.expiration.as_secs() / 2).unwrap_or(i32::MAX)
    }

    fn record(&mut self, op: Op) {
        apply(&mut self.maps, &op);
        if self.data_dir.is_some() {
            self.pending.push(op);
        }
    }

    /// A map from a device application: with states, it is stamped with the
    /// expiration and replaces the map with the same (id, priority); without
    /// states (after the defaults), it removes that map.
    pub fn insert_from_device(
        &mut self,
        map: ControlMap,
        now: BootTime,
    ) -> Result<DeviceChange, ControlMapError> {
        let there = self
            .maps
            .iter()
            .any(|m| m.map.id == map.id && m.map.priority == map.priority);
        if map.states.is_empty() {
            self.record(Op::Remove {
                id: map.id,
                priority: Some(map.priority),
            });
            return Ok(DeviceChange::Removed { existed: there });
        }
        if !there {
            let device = self
                .maps
                .iter()
                .filter(|m| m.source == Source::Device)
                .count();
            if device >= self.settings.max_device_maps {
                return Err(ControlMapError::TooMany(self.settings.max_device_maps));
            }
        }
        let active = ActiveMap::new(map, Source::Device, now, self.settings.expiration);
        self.record(Op::Put(active));
        Ok(DeviceChange::Inserted { replaced: there })
    }

    /// The map the server sent with a deployment (`deployments/next` or the
    /// map endpoint): it replaces every map with the deployment's id,
    /// whatever the priority (even with no states: it still marks the
    /// deployment as having a server map). `None` removes them. A map with
    /// another id is refused and changes nothing.
    pub fn insert_from_server(
        &mut self,
        deployment_id: &str,
        map: Option<ControlMap>,
        now: BootTime,
    ) -> Result<(), ControlMapError> {
        if let Some(map) = &map
            && map.id != deployment_id
        {
            return Err(ControlMapError::Mismatch {
                found: map.id.clone(),
                deployment: deployment_id.to_string(),
            });
        }
        let map = map.map(|m| ActiveMap::new(m, Source::Server, now, self.settings.expiration));
        self.record(Op::PutServer {
            id: deployment_id.to_string(),
            map,
        });
        Ok(())
    }

    /// Removes the maps with `id` (all priorities, or one); returns how
    /// many were there. Also the deployment cleanup (`remove(deployment_id,
    /// None)`).
    pub fn remove(&mut self, id: &str, priority: Option<i32>) -> usize {
        let count = self
            .maps
            .iter()
            .filter(|m| m.map.id == id && priority.is_none_or(|p| m.map.priority == p))
            .count();
        self.record(Op::Remove {
            id: id.to_string(),
            priority,
        });
        count
    }

    /// Marks the maps whose lifetime is over at `now` and returns them (as
    /// they are now): from here on their `on_map_expire` values count.
    /// Expired maps stay in the set until [`ControlMapSet::purge_expired`].
    pub fn expire(&mut self, now: BootTime) -> Vec<ActiveMap> {
        let newly: Vec<ActiveMap> = self
            .maps
            .iter()
            .filter(|m| !m.expired && m.is_expired(now))
            .cloned()
            .collect();
        for m in &newly {
            self.record(Op::MarkExpired(m.version()));
        }
        newly
            .into_iter()
            .map(|mut m| {
                m.expired = true;
                m
            })
            .collect()
    }

    /// Removes the expired maps (the daemon does it on entering Idle, as
    /// Mender); returns how many.
    pub fn purge_expired(&mut self, now: BootTime) -> usize {
        let count = self.maps.iter().filter(|m| m.is_expired(now)).count();
        if count > 0 {
            self.record(Op::Purge(now));
        }
        count
    }

    /// The earliest expiry among the maps alive at `now`.
    pub fn next_expiry(&self, now: BootTime) -> Option<BootTime> {
        self.active(now).map(|m| m.expires).min()
    }

    /// The earliest halfway point among the maps alive at `now` (with `id`,
    /// if given): when to refresh a server map while paused.
    pub fn earliest_halfway(&self, now: BootTime, id: Option<&str>) -> Option<BootTime> {
        self.active(now)
            .filter(|m| id.is_none_or(|id| m.map.id == id))
            .map(|m| m.halfway())
            .min()
    }

    /// The priority levels that have `state`, highest first.
    fn levels(&self, state: StateKey) -> Vec<i32> {
        let mut levels: Vec<i32> = self
            .maps
            .iter()
            .filter(|m| m.map.states.contains_key(&state))
            .map(|m| m.map.priority)
            .collect();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        levels
    }

    /// The merged answer for `state` at `now`, changing nothing. Levels are
    /// visited from the highest priority down; at a level `fail` beats
    /// `pause`, which beats `force_continue`; a level with only `continue`
    /// decides nothing, so `continue` never overrides. An expired map
    /// counts with its `on_map_expire` value. No decision: continue.
    pub fn decision(&self, state: StateKey, now: BootTime) -> Decision {
        for level in self.levels(state) {
            let mut values = Vec::new();
            let mut ids = Vec::new();
            for m in self.maps.iter().filter(|m| m.map.priority == level) {
                if let Some(v) = m.value(state, now) {
                    values.push(v);
                    ids.push(m.map.id.clone());
                }
            }
            let decided = [Action::Fail, Action::Pause, Action::ForceContinue]
                .into_iter()
                .find(|a| values.contains(a));
            if let Some(action) = decided {
                return Decision {
                    action,
                    priority: Some(level),
                    ids,
                };
            }
        }
        Decision {
            action: Action::Continue,
            priority: None,
            ids: Vec::new(),
        }
    }

    /// Applies `on_action_executed` after the daemon carried out the
    /// decision for `state` (see the module documentation for when): every
    /// map having the state, at every level down to the one that decided
    /// (all levels when none did), gets its action replaced; expired maps
    /// too (their `on_map_expire` is unchanged). Returns how many changed.
    pub fn after_action(&mut self, state: StateKey, now: BootTime) -> usize {
        let lowest = self.decision(state, now).priority;
        let ops: Vec<Op> = self
            .maps
            .iter()
            .filter(|m| lowest.is_none_or(|p| m.map.priority >= p))
            .filter_map(|m| {
                let rule = m.map.states.get(&state)?;
                (rule.action != rule.on_action_executed)
                    .then(|| Op::SetAction(m.version(), state, rule.on_action_executed))
            })
            .collect();
        let count = ops.len();
        for op in ops {
            self.record(op);
        }
        count
    }

    /// Writes this process's changes into the file, under its lock, on top
    /// of what other processes wrote meanwhile, and takes the result as the
    /// set. With no change of its own it only reads the file again (the
    /// daemon's way to see a `mender-rs control` change). On error the
    /// changes stay pending and the next save tries again.
    pub fn save(&mut self) -> Result<(), ControlMapError> {
        let Some(dir) = self.data_dir.clone() else {
            self.pending.clear();
            return Ok(());
        };
        let path = self.path();
        let _lock = if self.pending.is_empty() {
            None
        } else {
            Some(lock(&dir)?)
        };
        let mut maps = match read_file(&path)? {
            None => Vec::new(),
            Some((boot_id, mut maps)) => {
                if boot_id != self.boot_id {
                    restamp(
                        &mut maps,
                        BootTime::now(),
                        self.settings.boot_expiration,
                        false,
                    );
                }
                maps
            }
        };
        if !self.pending.is_empty() {
            for op in &self.pending {
                apply(&mut maps, op);
            }
            write_file(&path, &self.boot_id, &maps)?;
            self.pending.clear();
        }
        self.maps = maps;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The file and its lock

/// The maps' file, as `crate::persist` handles it.
fn state_file(path: &Path) -> StateFile {
    StateFile {
        path: path.to_path_buf(),
        max_size: MAX_FILE_BYTES,
        what: "an update control maps file",
        schema: SCHEMA_VERSION,
    }
}

/// The lock beside the maps' file, waiting up to [`LOCK_WAIT`].
fn lock(data_dir: &Path) -> Result<Lock, ControlMapError> {
    Ok(Lock::exclusive_within(
        &data_dir.join(LOCK_FILE),
        0o600,
        LOCK_WAIT,
    )?)
}

/// The file's boot id and maps; `None` when there is no file.
fn read_file(path: &Path) -> Result<Option<(String, Vec<ActiveMap>)>, ControlMapError> {
    let file = state_file(path);
    let corrupt = |reason: String| ControlMapError::from(file.corrupt(reason));
    let top = match file.read()? {
        None => return Ok(None),
        Some(Value::Object(top)) => top,
        Some(_) => return Err(corrupt("not a JSON object".into())),
    };
    let boot_id = match top.get("boot_id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(corrupt("boot_id: expected a string".into())),
    };
    let entries = match top.get("maps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(corrupt("maps: expected an array".into())),
    };
    let mut maps = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let at = format!("maps[{i}]");
        let Value::Object(mut entry) = entry else {
            return Err(corrupt(format!("{at}: expected an object")));
        };
        let mut take = |name: &str| {
            entry
                .remove(name)
                .ok_or_else(|| corrupt(format!("{at}.{name}: missing")))
        };
        let source = take("source")?;
        let source = source
            .as_str()
            .and_then(Source::parse)
            .ok_or_else(|| corrupt(format!("{at}.source: expected \"device\" or \"server\"")))?;
        let millis = |v: Value, name: &str| {
            v.as_u64()
                .map(BootTime::from_millis)
                .ok_or_else(|| corrupt(format!("{at}.{name}: expected an integer")))
        };
        let stamped = millis(take("stamped_ms")?, "stamped_ms")?;
        let expires = millis(take("expires_ms")?, "expires_ms")?;
        let expired = take("expired")?
            .as_bool()
            .ok_or_else(|| corrupt(format!("{at}.expired: expected true or false")))?;
        let map = ControlMap::from_value(&Value::Object(entry))
            .map_err(|e| corrupt(e.under(&at).to_string()))?;
        maps.push(ActiveMap {
            map,
            source,
            stamped,
            expires,
            expired,
        });
    }
    Ok(Some((boot_id, maps)))
}

fn write_file(path: &Path, boot_id: &str, maps: &[ActiveMap]) -> Result<(), ControlMapError> {
    let entries: Vec<Value> = maps
        .iter()
        .map(|m| {
            let mut v = m.map.to_value();
            if let Value::Object(o) = &mut v {
                o.insert("source".into(), m.source.as_str().into());
                o.insert("stamped_ms".into(), m.stamped.as_millis().into());
                o.insert("expires_ms".into(), m.expires.as_millis().into());
                o.insert("expired".into(), m.expired.into());
            }
            v
        })
        .collect();
    let doc = json!({ "schema": SCHEMA_VERSION, "boot_id": boot_id, "maps": entries });
    Ok(state_file(path).write(&doc)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const ID: &str = "01234567-89ab-cdef-0123-456789abcdef";
    const ID2: &str = "11111111-2222-3333-4444-555555555555";
    const ID3: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn err(text: &str) -> String {
        ControlMap::parse(text.as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| format!("accepted: {text}"))
    }

    fn map(text: &str) -> ControlMap {
        match ControlMap::parse(text.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn with_state(id: &str, priority: i32, state: &str, rule: &str) -> ControlMap {
        map(&format!(
            r#"{{"id":"{id}","priority":{priority},"states":{{"{state}":{rule}}}}}"#
        ))
    }

    fn settings() -> Settings {
        Settings {
            expiration: Duration::from_secs(120),
            boot_expiration: Duration::from_secs(600),
            max_device_maps: 4,
        }
    }

    const INSTALL: StateKey = StateKey::ArtifactInstallEnter;
    const T0: BootTime = BootTime(1_000_000);

    fn rule(a: Action, e: Action, x: Action) -> StateRule {
        StateRule {
            action: a,
            on_map_expire: e,
            on_action_executed: x,
        }
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

    fn set_of(maps: &[(&str, i32, &str)]) -> ControlMapSet {
        let mut set = ControlMapSet::new(settings());
        for (id, prio, action) in maps {
            let m = with_state(
                id,
                *prio,
                "ArtifactInstall_Enter",
                &format!(r#"{{"action":"{action}"}}"#),
            );
            set.insert_from_device(m, T0).unwrap();
        }
        set
    }

    #[test]
    fn merge_precedence_table() {
        use Action::*;
        // spec §5.1, as (priority, action) pairs; distinct ids.
        let cases: [(&[(i32, &str)], Action); 11] = [
            (&[(0, "pause"), (0, "fail")], Fail),
            (&[(0, "pause"), (0, "force_continue")], Pause),
            (&[(1, "continue"), (0, "pause")], Pause),
            (&[(1, "force_continue"), (0, "pause")], ForceContinue),
            (&[(1, "force_continue"), (0, "fail")], ForceContinue),
            (&[(1, "pause"), (0, "fail")], Pause),
            (&[(-1, "pause"), (0, "continue")], Pause),
            (&[(1, "continue"), (0, "fail")], Fail),
            (&[(0, "fail"), (-1, "force_continue")], Fail),
            (&[(5, "continue"), (0, "continue")], Continue),
            (&[], Continue),
        ];
        let ids = [ID, ID2, ID3];
        for (maps, want) in cases {
            let list: Vec<(&str, i32, &str)> = maps
                .iter()
                .enumerate()
                .map(|(i, (p, a))| (ids[i], *p, *a))
                .collect();
            let d = set_of(&list).decision(INSTALL, T0);
            assert_eq!(d.action, want, "{maps:?}");
            assert_eq!(d.proceeds(), matches!(want, Continue | ForceContinue));
        }
        let d = set_of(&[(ID, 1, "force_continue"), (ID2, 0, "pause")]).decision(INSTALL, T0);
        assert_eq!((d.priority, d.ids), (Some(1), vec![ID.to_string()]));
        // Other states are not affected.
        let d = set_of(&[(ID, 0, "pause")]).decision(StateKey::ArtifactCommitEnter, T0);
        assert_eq!((d.action, d.priority), (Continue, None));
    }

    #[test]
    fn insert_replace_remove_by_id_and_priority() {
        let mut set = set_of(&[(ID, 0, "pause"), (ID, 1, "fail")]);
        assert_eq!(
            set.maps().len(),
            2,
            "same id, other priority: a separate map"
        );
        let change = set
            .insert_from_device(
                with_state(ID, 0, "ArtifactInstall_Enter", r#"{"action":"fail"}"#),
                T0,
            )
            .unwrap();
        assert_eq!(change, DeviceChange::Inserted { replaced: true });
        assert_eq!(set.maps().len(), 2);
        // Empty states delete exactly that pair.
        let change = set.insert_from_device(map(&format!(r#"{{"id":"{ID}","priority":1}}"#)), T0);
        assert_eq!(change.unwrap(), DeviceChange::Removed { existed: true });
        assert_eq!(set.maps().len(), 1);
        assert_eq!(set.maps()[0].map.priority, 0);
        let change = set.insert_from_device(map(&format!(r#"{{"id":"{ID2}"}}"#)), T0);
        assert_eq!(change.unwrap(), DeviceChange::Removed { existed: false });
        // Remove by id: every priority.
        let mut set = set_of(&[(ID, 0, "pause"), (ID, -3, "fail"), (ID2, 0, "pause")]);
        assert_eq!(set.remove(ID, None), 2);
        assert_eq!(set.remove(ID, None), 0);
        assert_eq!(set.remove(ID2, Some(1)), 0);
        assert_eq!(set.remove(ID2, Some(0)), 1);
        assert!(set.maps().is_empty());
    }

    #[test]
    fn device_maps_are_capped_and_refusal_changes_nothing() {
        let ids = [
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-000000000002",
            "00000000-0000-0000-0000-000000000003",
            "00000000-0000-0000-0000-000000000004",
        ];
        let list: Vec<(&str, i32, &str)> = ids.iter().map(|id| (*id, 0, "pause")).collect();
        let mut set = set_of(&list);
        let before = set.maps().to_vec();
        let e = set
            .insert_from_device(
                with_state(ID, 0, "ArtifactInstall_Enter", r#"{"action":"pause"}"#),
                T0,
            )
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("too many update control maps from the device (at most 4); clear some first")
        );
        assert_eq!(set.maps(), &before[..]);
        // Replacing one still works; server maps are not counted.
        set.insert_from_device(
            with_state(ids[0], 0, "ArtifactInstall_Enter", r#"{"action":"fail"}"#),
            T0,
        )
        .unwrap();
        set.insert_from_server(
            ID,
            Some(with_state(
                ID,
                0,
                "ArtifactCommit_Enter",
                r#"{"action":"pause"}"#,
            )),
            T0,
        )
        .unwrap();
        assert_eq!(set.maps().len(), 5);
    }

    #[test]
    fn server_maps_replace_every_priority_of_their_id() {
        let mut set = set_of(&[(ID, 0, "pause"), (ID, 5, "pause"), (ID2, 0, "pause")]);
        let m = with_state(ID, -2, "ArtifactCommit_Enter", r#"{"action":"pause"}"#);
        set.insert_from_server(ID, Some(m), T0).unwrap();
        let with_id: Vec<_> = set.maps().iter().filter(|m| m.map.id == ID).collect();
        assert_eq!(with_id.len(), 1);
        assert_eq!(
            (with_id[0].map.priority, with_id[0].source),
            (-2, Source::Server)
        );
        // Another id: refused, nothing changed.
        let before = set.maps().to_vec();
        let e = set.insert_from_server(ID3, Some(map(&format!(r#"{{"id":"{ID}"}}"#))), T0);
        assert_eq!(
            e.err().map(|e| e.to_string()).as_deref(),
            Some(&*format!(
                "id: \"{ID}\" does not match the deployment ID \"{ID3}\""
            ))
        );
        assert_eq!(set.maps(), &before[..]);
        // A map without states stays (the deployment keeps its server map).
        set.insert_from_server(ID, Some(map(&format!(r#"{{"id":"{ID}"}}"#))), T0)
            .unwrap();
        assert!(set.has_id(ID));
        assert_eq!(
            set.decision(StateKey::ArtifactCommitEnter, T0).action,
            Action::Continue
        );
        // None removes them; the deployment cleanup removes device maps with that id too.
        set.insert_from_server(ID, None, T0).unwrap();
        assert!(!set.has_id(ID));
        assert_eq!(set.remove(ID2, None), 1);
    }

    #[test]
    fn expiry_with_injected_time() {
        let mut set = ControlMapSet::new(settings());
        let pause = with_state(ID, 0, "ArtifactInstall_Enter", r#"{"action":"pause"}"#);
        let keep_going = with_state(
            ID2,
            0,
            "ArtifactInstall_Enter",
            r#"{"action":"pause","on_map_expire":"continue"}"#,
        );
        set.insert_from_device(pause, T0).unwrap();
        set.insert_from_device(keep_going, T0.after(Duration::from_secs(60)))
            .unwrap();
        let m = &set.maps()[0];
        assert_eq!(m.expires, T0.after(Duration::from_secs(120)));
        assert_eq!(m.halfway(), T0.after(Duration::from_secs(60)));
        assert_eq!(set.refresh_timeout(), 60);
        let t = |s: u64| T0.after(Duration::from_secs(s));
        assert_eq!(set.next_expiry(T0), Some(t(120)));
        assert_eq!(set.earliest_halfway(T0, Some(ID2)), Some(t(120)));
        assert_eq!(set.decision(INSTALL, t(119)).action, Action::Pause);
        assert!(set.expire(t(119)).is_empty());
        // At 120 s the first map expired: its on_map_expire (fail by default) wins.
        assert_eq!(set.decision(INSTALL, t(120)).action, Action::Fail);
        let gone = set.expire(t(120));
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].map.id.as_str(), gone[0].expired), (ID, true));
        assert!(set.expire(t(121)).is_empty(), "reported once");
        assert_eq!(set.active(t(121)).count(), 1);
        // A refresh replaces the expired copy and revives it.
        set.insert_from_device(
            with_state(ID, 0, "ArtifactInstall_Enter", r#"{"action":"pause"}"#),
            t(150),
        )
        .unwrap();
        assert_eq!(set.active(t(150)).count(), 2);
        assert_eq!(set.decision(INSTALL, t(150)).action, Action::Pause);
        // A continue-only map deletes the pair.
        let change = set.insert_from_device(
            with_state(ID, 0, "ArtifactInstall_Enter", r#"{"action":"continue"}"#),
            t(150),
        );
        assert_eq!(change.ok(), Some(DeviceChange::Removed { existed: true }));
        // ID2 expired: its on_map_expire is continue.
        assert_eq!(set.decision(INSTALL, t(180)).action, Action::Continue);
        assert_eq!(set.expire(t(180)).len(), 1);
        // Expired maps stay until purged (on entering Idle).
        assert_eq!(set.maps().len(), 1);
        assert_eq!(set.purge_expired(t(180)), 1);
        assert!(set.maps().is_empty());
    }

    #[test]
    fn on_action_executed_transitions() {
        use Action::*;
        // "Start update": continue once, then pause (level undecided, visited).
        let mut set = ControlMapSet::new(settings());
        let once = with_state(
            ID,
            0,
            "ArtifactInstall_Enter",
            r#"{"action":"continue","on_action_executed":"pause"}"#,
        );
        set.insert_from_device(once, T0).unwrap();
        assert_eq!(set.decision(INSTALL, T0).action, Continue);
        assert_eq!(
            set.decision(INSTALL, T0).action,
            Continue,
            "decision changes nothing"
        );
        assert_eq!(set.after_action(INSTALL, T0), 1);
        assert_eq!(
            set.maps()[0].map.states[&INSTALL],
            rule(Pause, Continue, Pause)
        );
        assert_eq!(set.decision(INSTALL, T0).action, Pause);
        assert_eq!(set.after_action(INSTALL, T0), 0, "pause stays pause");
        // on_map_expire is not recomputed: expiring lets the update through.
        assert_eq!(
            set.decision(INSTALL, T0.after(Duration::from_secs(120)))
                .action,
            Continue
        );

        // Pause once, then continue.
        let mut set = ControlMapSet::new(settings());
        let m = with_state(
            ID,
            0,
            "ArtifactInstall_Enter",
            r#"{"action":"pause","on_action_executed":"continue"}"#,
        );
        set.insert_from_device(m, T0).unwrap();
        assert_eq!(set.decision(INSTALL, T0).action, Pause);
        set.after_action(INSTALL, T0);
        assert_eq!(set.decision(INSTALL, T0).action, Continue);

        // Only the levels visited change: a higher force_continue decides,
        // the lower pause keeps its action; maps of the deciding level
        // change even when their value did not win.
        let mut set = ControlMapSet::new(settings());
        let hi = with_state(
            ID,
            2,
            "ArtifactInstall_Enter",
            r#"{"action":"force_continue","on_action_executed":"fail"}"#,
        );
        let hi2 = with_state(
            ID2,
            2,
            "ArtifactInstall_Enter",
            r#"{"action":"continue","on_action_executed":"pause"}"#,
        );
        let lo = with_state(
            ID3,
            0,
            "ArtifactInstall_Enter",
            r#"{"action":"pause","on_action_executed":"fail"}"#,
        );
        for m in [hi, hi2, lo] {
            set.insert_from_device(m, T0).unwrap();
        }
        let d = set.decision(INSTALL, T0);
        assert_eq!((d.action, d.priority), (ForceContinue, Some(2)));
        assert_eq!(set.after_action(INSTALL, T0), 2);
        let action = |set: &ControlMapSet, id: &str| {
            set.maps()
                .iter()
                .find(|m| m.map.id == id)
                .map(|m| m.map.states[&INSTALL].action)
        };
        assert_eq!(action(&set, ID), Some(Fail));
        assert_eq!(action(&set, ID2), Some(Pause));
        assert_eq!(action(&set, ID3), Some(Pause));
        assert_eq!(set.decision(INSTALL, T0).action, Fail);
        // Another state's rules are untouched.
        let mut set = ControlMapSet::new(settings());
        set.insert_from_device(
            with_state(
                ID,
                0,
                "ArtifactCommit_Enter",
                r#"{"action":"pause","on_action_executed":"continue"}"#,
            ),
            T0,
        )
        .unwrap();
        assert_eq!(set.after_action(INSTALL, T0), 0);
        assert_eq!(
            set.decision(StateKey::ArtifactCommitEnter, T0).action,
            Pause
        );
    }

    fn config(dir: &Path, extra: &str) -> Config {
        let conf = dir.join("mender.conf");
        std::fs::write(&conf, format!("{{{extra}}}")).unwrap();
        let paths = crate::config::ConfigPaths {
            main: conf,
            main_explicit: true,
            fallback: dir.join("none.conf"),
            fallback_explicit: false,
            data_dir: dir.join("data"),
        };
        Config::load(&paths).unwrap()
    }

    #[test]
    fn settings_follow_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::from_config(&config(dir.path(), ""));
        assert_eq!(s.expiration, Duration::from_secs(3600));
        assert_eq!(s.boot_expiration, Duration::from_secs(600));
        let s = Settings::from_config(&config(dir.path(), r#""UpdatePollIntervalSeconds": 60"#));
        assert_eq!(s.expiration, Duration::from_secs(120));
        let c = config(
            dir.path(),
            r#""UpdateControlMapExpirationTimeSeconds": 91, "UpdateControlMapBootExpirationTimeSeconds": 45"#,
        );
        let set = ControlMapSet::new(Settings::from_config(&c));
        assert_eq!(set.refresh_timeout(), 45);
        assert_eq!(set.settings().boot_expiration, Duration::from_secs(45));
    }

    #[test]
    fn persistence_boot_rule_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(
            dir.path(),
            r#""UpdateControlMapExpirationTimeSeconds": 100, "UpdateControlMapBootExpirationTimeSeconds": 30"#,
        );
        let path = c.data_dir.join(MAPS_FILE);
        let t = |s: u64| T0.after(Duration::from_secs(s));
        // Nothing stored: empty, and nothing written.
        assert!(ControlMapSet::load_at(&c, T0).unwrap().maps().is_empty());
        assert!(!path.exists());

        let mut set = ControlMapSet::open_at(&c, T0).unwrap();
        set.insert_from_device(
            with_state(ID, 0, "ArtifactInstall_Enter", r#"{"action":"pause"}"#),
            T0,
        )
        .unwrap();
        set.insert_from_device(
            with_state(ID2, 1, "ArtifactCommit_Enter", r#"{"action":"pause"}"#),
            t(10),
        )
        .unwrap();
        set.save().unwrap();
        // The CLI's view keeps the lifetimes.
        let again = ControlMapSet::open_at(&c, t(50)).unwrap();
        assert_eq!(again.maps(), set.maps());
        // Mark ID expired and save; then the daemon starts at 200 s: ID2
        // (lifetime over at 110 s, same boot) counts as expired too; none
        // comes back to life; both get the boot lifetime.
        assert_eq!(set.expire(t(105)).len(), 1);
        set.save().unwrap();
        let daemon = ControlMapSet::load_at(&c, t(200)).unwrap();
        assert_eq!(daemon.maps().len(), 2);
        assert!(
            daemon
                .maps()
                .iter()
                .all(|m| m.expired && m.expires == t(230))
        );
        // Maps alive at the daemon's start get the boot lifetime, not the rest of theirs.
        let mut set = ControlMapSet::open_at(&c, t(300)).unwrap();
        set.remove(ID2, None);
        set.insert_from_device(
            with_state(ID, 0, "ArtifactInstall_Enter", r#"{"action":"pause"}"#),
            t(300),
        )
        .unwrap();
        set.save().unwrap();
        let daemon = ControlMapSet::load_at(&c, t(301)).unwrap();
        assert_eq!(daemon.maps().len(), 1);
        assert_eq!(
            (daemon.maps()[0].expired, daemon.maps()[0].expires),
            (false, t(331))
        );
        assert_eq!(daemon.decision(INSTALL, t(330)).action, Action::Pause);
        assert_eq!(daemon.decision(INSTALL, t(331)).action, Action::Fail);
        let stored = ControlMapSet::open_at(&c, t(301)).unwrap();
        assert_eq!(
            stored.maps(),
            daemon.maps(),
            "the boot lifetime is written back"
        );

        // A file from another boot: the CLI applies the boot rule once.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        doc["boot_id"] = "an-earlier-boot".into();
        std::fs::write(&path, doc.to_string()).unwrap();
        let set = ControlMapSet::open_at(&c, BootTime::from_secs(5)).unwrap();
        assert_eq!(set.maps()[0].expires, BootTime::from_secs(35));
        assert!(!set.maps()[0].expired);
        let set = ControlMapSet::open_at(&c, BootTime::from_secs(9)).unwrap();
        assert_eq!(set.maps()[0].expires, BootTime::from_secs(35), "only once");
    }

    #[test]
    fn save_replays_on_top_of_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        let mut daemon = ControlMapSet::load_at(&c, T0).unwrap();
        daemon
            .insert_from_device(
                with_state(
                    ID,
                    0,
                    "ArtifactInstall_Enter",
                    r#"{"action":"continue","on_action_executed":"pause"}"#,
                ),
                T0,
            )
            .unwrap();
        daemon.save().unwrap();
        // A CLI adds a map while the daemon works on its copy.
        let mut cli = ControlMapSet::open_at(&c, T0).unwrap();
        cli.insert_from_device(
            with_state(ID2, 0, "ArtifactCommit_Enter", r#"{"action":"pause"}"#),
            T0,
        )
        .unwrap();
        cli.save().unwrap();
        assert_eq!(daemon.after_action(INSTALL, T0), 1);
        daemon.save().unwrap();
        assert_eq!(daemon.maps().len(), 2, "the CLI's map is kept and seen");
        let stored = ControlMapSet::open_at(&c, T0).unwrap();
        assert_eq!(stored.maps(), daemon.maps());
        assert_eq!(stored.decision(INSTALL, T0).action, Action::Pause);
        // A refresh by the CLI wins over the daemon's on_action_executed.
        let mut cli = ControlMapSet::open_at(&c, T0).unwrap();
        cli.insert_from_device(
            with_state(
                ID,
                0,
                "ArtifactInstall_Enter",
                r#"{"action":"fail","on_action_executed":"continue"}"#,
            ),
            T0.after(Duration::from_secs(1)),
        )
        .unwrap();
        cli.save().unwrap();
        assert_eq!(
            daemon.after_action(INSTALL, T0),
            0,
            "daemon's copy: already pause"
        );
        daemon
            .insert_from_device(
                with_state(ID3, 0, "ArtifactReboot_Enter", r#"{"action":"pause"}"#),
                T0,
            )
            .unwrap();
        daemon.expire(T0.after(Duration::from_secs(7200)));
        daemon.save().unwrap();
        assert_eq!(daemon.maps().len(), 3);
        let id = daemon.maps().iter().find(|m| m.map.id == ID).unwrap();
        assert_eq!(id.map.states[&INSTALL].action, Action::Fail);
        assert!(
            !id.expired,
            "the refreshed copy is not the one marked expired"
        );
        // With nothing pending, save only reads: the CLI's clear is seen.
        let mut cli = ControlMapSet::open_at(&c, T0).unwrap();
        cli.remove(ID3, None);
        cli.save().unwrap();
        daemon.save().unwrap();
        assert!(!daemon.has_id(ID3));
    }

    #[test]
    fn bad_files_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        std::fs::create_dir_all(&c.data_dir).unwrap();
        let path = c.data_dir.join(MAPS_FILE);
        let cases = [
            (
                "{not json",
                "corrupt update control maps: key must be a string",
            ),
            ("[]", "corrupt update control maps: not a JSON object"),
            (r#"{"maps":[]}"#, "no schema version"),
            (
                r#"{"schema":2,"maps":[]}"#,
                "written by a newer mender-rs (schema 2, this one knows 1)",
            ),
            (
                r#"{"schema":1,"maps":[{"id":"x"}]}"#,
                "maps[0].source: missing",
            ),
            (
                &*format!(
                    r#"{{"schema":1,"maps":[{{"id":"{ID}","source":"device","stamped_ms":0,"expires_ms":9,"expired":false,"states":{{"Nope":{{}}}}}}]}}"#
                ),
                "maps[0].states.Nope: unknown state",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            for e in [
                ControlMapSet::open_at(&c, T0).err(),
                ControlMapSet::load_at(&c, T0).err(),
            ] {
                let e = e.map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    e.contains(want) && e.contains(&*path.display().to_string()),
                    "{text}: {e}"
                );
            }
        }
    }

    #[test]
    fn the_lock_is_exclusive_and_waits() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let dir2 = dir.path().to_path_buf();
        let started = Instant::now();
        let waiter = std::thread::spawn(move || lock(&dir2).map(|_| started.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        let waited = waiter.join().unwrap().unwrap();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }

    #[test]
    fn boot_time_is_monotonic_milliseconds() {
        let a = BootTime::now();
        let b = BootTime::now();
        assert!(b >= a && a.as_millis() > 0);
        assert_eq!(
            BootTime::from_secs(2)
                .after(Duration::from_millis(1500))
                .as_millis(),
            3500
        );
        assert_eq!(
            BootTime::from_secs(1).since(BootTime::from_secs(2)),
            Duration::ZERO
        );
        assert_eq!(
            BootTime::from_millis(u64::MAX)
                .after(Duration::from_secs(1))
                .as_millis(),
            u64::MAX
        );
    }
}
