//! Time for the maps: the boot clock ([`BootTime`]), the boot id, and each
//! map's lifetime ([`ActiveMap`]: expiry, the halfway point for a refresh,
//! the boot rule). Separate because every instant here is on
//! `CLOCK_BOOTTIME` and tests pass made-up ones.

use std::path::Path;
use std::time::Duration;

use super::model::{Action, ControlMap, StateKey};
use crate::fsutil;

/// Largest `/proc/sys/kernel/random/boot_id` read: a UUID and a newline.
const MAX_BOOT_ID_BYTES: u64 = 64;

/// An instant on the `CLOCK_BOOTTIME` clock, in milliseconds: monotonic,
/// counts suspended time, and is the same for every process of one boot.
/// Milliseconds so that an instant survives the file unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BootTime(u64);

impl BootTime {
    /// The clock now.
    pub fn now() -> BootTime {
        for clock in [libc::CLOCK_BOOTTIME, libc::CLOCK_MONOTONIC] {
            if let Ok(ts) = crate::sys::clock_gettime(clock) {
                let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
                let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
                return BootTime(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000));
            }
        }
        BootTime(0)
    }

    /// An instant given in milliseconds (tests, the file).
    pub const fn from_millis(ms: u64) -> BootTime {
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
pub(super) fn current_boot_id() -> String {
    fsutil::read_kernel_file(
        Path::new("/proc/sys/kernel/random/boot_id"),
        MAX_BOOT_ID_BYTES,
        "a boot id",
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_default()
}

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

    pub(super) fn parse(name: &str) -> Option<Source> {
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
    /// Marked expired (by
    /// [`ControlMapSet::expire`](super::ControlMapSet::expire), or stored
    /// so).
    pub expired: bool,
}

impl ActiveMap {
    pub(super) fn new(
        map: ControlMap,
        source: Source,
        now: BootTime,
        lifetime: Duration,
    ) -> ActiveMap {
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

    pub(super) fn version(&self) -> Version {
        Version {
            id: self.map.id.clone(),
            priority: self.map.priority,
            stamped: self.stamped,
        }
    }

    pub(super) fn is(&self, v: &Version) -> bool {
        self.map.id == v.id && self.map.priority == v.priority && self.stamped == v.stamped
    }
}

/// Identifies one version of a map: a refresh makes a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Version {
    id: String,
    priority: i32,
    stamped: BootTime,
}

/// Every map gets a fresh lifetime of `lifetime` from `now`; maps that were
/// expired stay expired (as Mender's load at start-up). Within the same boot a
/// map whose stored lifetime is over counts as expired; across a reboot
/// only the stored mark counts (the old boot's instants mean nothing now).
pub(super) fn restamp(maps: &mut [ActiveMap], now: BootTime, lifetime: Duration, same_boot: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
