//! The set of active maps and their merge by priority: device and server
//! inserts, removal, expiry marks, and the decision at a checkpoint with
//! `on_action_executed` after it. Every change is recorded as an operation
//! so that the file (`file`) can replay it on what other processes wrote.

use std::path::PathBuf;

use super::lifetime::{ActiveMap, BootTime, Source, Version};
use super::model::{Action, ControlMap, StateKey};
use super::{ControlMapError, Settings};

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

/// A change, kept until saved so that it can be replayed on the file as
/// another process may have left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
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

pub(super) fn apply(maps: &mut Vec<ActiveMap>, op: &Op) {
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

/// The active maps (device and server), their lifetimes, and the file that
/// keeps them. See the module documentation for how the daemon uses it.
#[derive(Debug, Clone)]
pub struct ControlMapSet {
    pub(super) settings: Settings,
    /// None: in memory only.
    pub(super) data_dir: Option<PathBuf>,
    pub(super) boot_id: String,
    pub(super) maps: Vec<ActiveMap>,
    pub(super) pending: Vec<Op>,
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use std::time::Duration;

    #[test]
    fn merge_precedence_table() {
        use Action::*;
        // Mender's precedence table, as (priority, action) pairs; distinct ids.
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
}
