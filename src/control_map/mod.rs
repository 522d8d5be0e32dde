//! Update control maps ("synchronized updates"): the public API. The
//! concerns live in their own files: the map and its validation
//! (`model`), lifetimes on the boot clock (`lifetime`), the set and its
//! merge by priority (`merge`), and the file that keeps the maps across
//! restarts and reboots (`file`, a user of `crate::persist`).
//!
//! A map tells the daemon what to do at three checkpoints of a deployment:
//! before the install (`ArtifactInstall_Enter`), before the reboot
//! (`ArtifactReboot_Enter`) and before the commit (`ArtifactCommit_Enter`):
//! `continue`, `force_continue`, `pause` or `fail`. The rules are those of
//! the Mender client 3.5 (see `docs/managed-mode.md`); where we
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
//!                        report the pause status; wait for SIGUSR1 (a CLI change),
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
//!   stored as expired stay expired, as in Mender. [`ControlMapSet::open`] is for
//!   the command line: within the same boot the stored lifetimes are kept;
//!   a file last written in an earlier boot (another
//!   `/proc/sys/kernel/random/boot_id`) gets the boot rule too, and is
//!   rewritten at once so that it applies only once.
//! * [`ControlMapSet::decision`] does not change anything;
//!   [`ControlMapSet::after_action`] applies `on_action_executed`. Mender
//!   applies it at every evaluation, which with a pause that
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
//!   replaced meanwhile (a refresh replaces the copy).
//! * [`set_device_map`] is the one way a device application sets a map
//!   (`mender-rs control set`, D-Bus `SetUpdateControlMap`).

mod file;
mod lifetime;
mod merge;
mod model;

use std::io;
use std::time::Duration;

use crate::config::Config;

pub use lifetime::{ActiveMap, BootTime, Source};
pub use merge::{ControlMapSet, Decision, DeviceChange};
pub use model::{
    Action, ControlMap, MapError, StateKey, StateRule, validate_id, validate_priority,
};

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

/// What [`set_device_map`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMapOutcome {
    /// Inserted, replaced or removed.
    pub change: DeviceChange,
    /// What `SetUpdateControlMap` answers ([`ControlMapSet::refresh_timeout`]).
    pub refresh_timeout: i32,
}

/// Sets a map from a device application, the one way for both `mender-rs
/// control set` and D-Bus `SetUpdateControlMap`: the stored maps are
/// opened, expired ones marked, the map inserted (or, with no state left
/// after the defaults, its (id, priority) removed) and the file saved. The
/// caller wakes the daemon, each in its own way.
pub fn set_device_map(
    config: &Config,
    map: ControlMap,
    now: BootTime,
) -> Result<DeviceMapOutcome, ControlMapError> {
    let mut maps = ControlMapSet::open_at(config, now)?;
    maps.expire(now);
    let change = maps.insert_from_device(map, now)?;
    maps.save()?;
    Ok(DeviceMapOutcome {
        change,
        refresh_timeout: maps.refresh_timeout(),
    })
}

/// What the tests of the submodules share.
#[cfg(test)]
mod test_support {
    use super::*;
    use std::path::Path;

    pub(super) const ID: &str = "01234567-89ab-cdef-0123-456789abcdef";
    pub(super) const ID2: &str = "11111111-2222-3333-4444-555555555555";
    pub(super) const ID3: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    pub(super) fn err(text: &str) -> String {
        ControlMap::parse(text.as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| format!("accepted: {text}"))
    }

    pub(super) fn map(text: &str) -> ControlMap {
        match ControlMap::parse(text.as_bytes()) {
            Ok(m) => m,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    pub(super) fn with_state(id: &str, priority: i32, state: &str, rule: &str) -> ControlMap {
        map(&format!(
            r#"{{"id":"{id}","priority":{priority},"states":{{"{state}":{rule}}}}}"#
        ))
    }

    pub(super) fn settings() -> Settings {
        Settings {
            expiration: Duration::from_secs(120),
            boot_expiration: Duration::from_secs(600),
            max_device_maps: 4,
        }
    }

    pub(super) const INSTALL: StateKey = StateKey::ArtifactInstallEnter;
    pub(super) const T0: BootTime = BootTime::from_millis(1_000_000);

    pub(super) fn rule(a: Action, e: Action, x: Action) -> StateRule {
        StateRule {
            action: a,
            on_map_expire: e,
            on_action_executed: x,
        }
    }

    pub(super) fn set_of(maps: &[(&str, i32, &str)]) -> ControlMapSet {
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

    pub(super) fn config(dir: &Path, extra: &str) -> Config {
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
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
    fn set_device_map_inserts_saves_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), r#""UpdateControlMapExpirationTimeSeconds": 91"#);
        let pause = with_state(ID, 1, "ArtifactInstall_Enter", r#"{"action":"pause"}"#);
        let outcome = set_device_map(&c, pause, T0).unwrap();
        assert_eq!(outcome.change, DeviceChange::Inserted { replaced: false });
        assert_eq!(outcome.refresh_timeout, 45);
        let stored = ControlMapSet::open_at(&c, T0).unwrap();
        assert_eq!(stored.decision(INSTALL, T0).action, Action::Pause);
        let empty = map(&format!(r#"{{"id":"{ID}","priority":1}}"#));
        let outcome = set_device_map(&c, empty, T0).unwrap();
        assert_eq!(outcome.change, DeviceChange::Removed { existed: true });
        assert!(ControlMapSet::open_at(&c, T0).unwrap().maps().is_empty());
    }
}
