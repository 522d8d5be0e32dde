//! The maps' file, a thin user of `crate::persist` (lock, schema, bounded
//! read, atomic replace): its layout, and the set's load, open and save
//! with the replay of this process's changes under the lock.
//!
//! `<data>/mender-rs-control-maps.json`, replaced atomically, mode 0600:
//! `{"schema": 1, "boot_id": "...", "maps": [{"id", "priority", "states",
//! "source": "device"|"server", "stamped_ms", "expires_ms", "expired"}]}`.
//! The states are stored with their three values filled in. Each map is
//! validated again when the file is read; a file that does not parse is an
//! error naming the file and the entry (nothing guesses at a pause that may
//! have been meant). The lock is `<data>/mender-rs-control-maps.lock`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::lifetime::{ActiveMap, BootTime, Source, current_boot_id, restamp};
use super::merge::{ControlMapSet, apply};
use super::model::ControlMap;
use super::{ControlMapError, LOCK_FILE, MAPS_FILE, MAX_FILE_BYTES, SCHEMA_VERSION, Settings};
use crate::config::Config;
use crate::persist::{Lock, PersistError, StateFile};

/// How long a writer waits for the lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);

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

impl ControlMapSet {
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
    use super::super::test_support::*;
    use super::*;
    use crate::control_map::Action;
    use std::time::Instant;

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
}
