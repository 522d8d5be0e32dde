//! The Mender client's own store, `<data dir>/mender-store`: an LMDB file
//! (`MDB_NOSUBDIR`, unnamed main database; lock file `mender-store-lock`)
//! that Mender 3.x, 4.x and 5.x share. mender-rs reads it once to take a
//! device over from Mender, and writes it after every change of the
//! installed software so that a Mender client can take the device back
//! (`docs/takeover.md`). The values are parsed in [`model`], the take-over
//! itself is [`takeover`].

pub mod inflight;
pub mod model;
pub mod takeover;

use std::path::{Path, PathBuf};

use crate::artifact::header::Provides;
use crate::sys::lmdb::{Change, LmdbError, LmdbFile};
use model::{Installed, ManagedState, StandaloneState};

/// The file name Mender uses, in the data directory.
pub const STORE_FILE: &str = "mender-store";
/// LMDB's lock file beside it (`MDB_NOSUBDIR` appends `-lock`).
pub const LOCK_SUFFIX: &str = "-lock";
/// Mender's file mode for the store.
const STORE_MODE: u32 = 0o600;

/// The largest value read for a name, group or provides: the provides of
/// a commit are capped at 1 MiB (`artifact::depends::MAX_PROVIDES_SIZE`).
pub const MAX_VALUE_SIZE: usize = 1 << 20;
/// The largest `state`/`standalone-state`/maps record read: an artifact's
/// provides and clears, a URL, a few fields.
pub const MAX_STATE_SIZE: usize = 4 << 20;

pub const KEY_NAME: &str = "artifact-name";
pub const KEY_GROUP: &str = "artifact-group";
pub const KEY_PROVIDES: &str = "artifact-provides";
pub const KEY_STANDALONE: &str = "standalone-state";
pub const KEY_STATE: &str = "state";
pub const KEY_STATE_UNCOMMITTED: &str = "state-uncommitted";
pub const KEY_CONTROL_MAPS: &str = "update-control-maps";
/// Not Mender's: the id of the LMDB transaction of mender-rs's last write
/// to the store, written in that transaction. A store whose last
/// transaction has another id was written by a Mender client since
/// (`docs/takeover.md`, "Going back and forth"). Mender reads only the
/// keys above and leaves this one alone.
pub const KEY_OUR_TXN: &str = "mender-rs-txn";
/// What 4.x and 5.x store as `artifact-name` when they know none.
pub const UNKNOWN_NAME: &str = "unknown";
/// The longest [`KEY_OUR_TXN`] value read (a u64 in decimal).
const MAX_TXN_SIZE: usize = 20;

/// An error about the store, naming the file (and the key when one value
/// is at fault).
#[derive(Debug, thiserror::Error)]
#[error("Mender store {path}: {reason}")]
pub struct MenderStoreError {
    pub path: String,
    pub reason: String,
}

/// `<data_dir>/mender-store`.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_FILE)
}

/// The lock file of the store at `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(LOCK_SUFFIX);
    PathBuf::from(name)
}

/// Everything a take-over reads, in one snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contents {
    pub installed: Installed,
    pub standalone: Option<StandaloneState>,
    /// `state`, or `state-uncommitted` when only that one is there.
    pub managed: Option<ManagedState>,
    /// `update-control-maps` is present (3.x only; 4.x deletes it).
    pub has_control_maps: bool,
}

/// An open Mender store.
pub struct MenderStore {
    path: PathBuf,
    file: LmdbFile,
}

impl MenderStore {
    /// Opens an existing store for reading. A file that is not an LMDB
    /// store, is cut short or cannot be opened is an error naming it.
    pub fn open_read_only(path: &Path) -> Result<MenderStore, MenderStoreError> {
        let file = LmdbFile::open(path, true, STORE_MODE).map_err(|e| error(path, e))?;
        Ok(MenderStore {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens an existing store for a look that writes nothing at all,
    /// not even LMDB's lock file ([`LmdbFile::open_unlocked`]): the check
    /// at every start whether Mender wrote the store since
    /// (`takeover::run`), which must leave the data directory as it is.
    pub fn open_unlocked(path: &Path) -> Result<MenderStore, MenderStoreError> {
        let file = LmdbFile::open_unlocked(path).map_err(|e| error(path, e))?;
        Ok(MenderStore {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens the store for writing, creating it (mode 0600) if missing.
    pub fn open_for_writing(path: &Path) -> Result<MenderStore, MenderStoreError> {
        let file = LmdbFile::open(path, false, STORE_MODE).map_err(|e| error(path, e))?;
        Ok(MenderStore {
            path: path.to_path_buf(),
            file,
        })
    }

    fn fail(&self, key: &str, reason: impl std::fmt::Display) -> MenderStoreError {
        MenderStoreError {
            path: self.path.display().to_string(),
            reason: format!("key '{key}': {reason}"),
        }
    }

    /// Reads and parses every key a take-over uses.
    pub fn read(&self) -> Result<Contents, MenderStoreError> {
        let small = self
            .file
            .get_all(&[KEY_NAME, KEY_GROUP, KEY_PROVIDES], MAX_VALUE_SIZE)
            .map_err(|e| error(&self.path, e))?;
        let large = self
            .file
            .get_all(
                &[
                    KEY_STANDALONE,
                    KEY_STATE,
                    KEY_STATE_UNCOMMITTED,
                    KEY_CONTROL_MAPS,
                ],
                MAX_STATE_SIZE,
            )
            .map_err(|e| error(&self.path, e))?;
        let [name, group, provides]: [Option<Vec<u8>>; 3] = small
            .try_into()
            .map_err(|_| self.fail(KEY_NAME, "short read"))?;
        let [standalone, state, uncommitted, maps]: [Option<Vec<u8>>; 4] = large
            .try_into()
            .map_err(|_| self.fail(KEY_STATE, "short read"))?;
        let installed = Installed {
            // 4.x and 5.x write `unknown` when they find no name (checked
            // with 5.1.0): no name, not a software called so.
            name: model::parse_text(name)
                .map_err(|e| self.fail(KEY_NAME, e))?
                .filter(|n| n != UNKNOWN_NAME),
            group: model::parse_text(group).map_err(|e| self.fail(KEY_GROUP, e))?,
            type_info: model::parse_provides(provides).map_err(|e| self.fail(KEY_PROVIDES, e))?,
        };
        let standalone = standalone
            .map(|b| StandaloneState::parse(&b).map_err(|e| self.fail(KEY_STANDALONE, e)))
            .transpose()?;
        // 3.x and 4.x use `state-uncommitted` while a client upgrade is in
        // flight; whichever is there describes the deployment.
        let managed = match (state, uncommitted) {
            (Some(b), _) => Some(ManagedState::parse(&b).map_err(|e| self.fail(KEY_STATE, e))?),
            (None, Some(b)) => {
                Some(ManagedState::parse(&b).map_err(|e| self.fail(KEY_STATE_UNCOMMITTED, e))?)
            }
            (None, None) => None,
        };
        Ok(Contents {
            installed,
            standalone,
            managed,
            has_control_maps: maps.is_some_and(|m| !m.trim_ascii().is_empty()),
        })
    }

    /// Hand back: the installed software as a Mender client reads it, in
    /// one write transaction. `artifact-group` is removed when there is
    /// none (as 3.x and 4.x do); the provides are written as a JSON object
    /// (`{}` when empty, which both read).
    /// A deployment in flight handed back before its reboot
    /// ([`inflight::hand_back_before_reboot`]) is over once the installed
    /// software changes (the commit): its `state` goes in the same write.
    pub fn write_installed(&self, provides: &Provides) -> Result<(), MenderStoreError> {
        self.write_installed_with(
            provides,
            &[
                Change::Delete(KEY_STATE.as_bytes()),
                Change::Delete(KEY_STATE_UNCOMMITTED.as_bytes()),
            ],
        )
    }

    /// [`MenderStore::write_installed`] with `more` changes in the same
    /// transaction (after the installed software's).
    pub fn write_installed_with(
        &self,
        provides: &Provides,
        more: &[Change<'_>],
    ) -> Result<(), MenderStoreError> {
        let installed = Installed::from_provides(provides);
        let name = installed.name.unwrap_or_default();
        let json =
            serde_json::to_vec(&installed.type_info).map_err(|e| self.fail(KEY_PROVIDES, e))?;
        let mut changes = vec![
            Change::Put(KEY_NAME.as_bytes(), name.as_bytes()),
            Change::Put(KEY_PROVIDES.as_bytes(), &json),
        ];
        match &installed.group {
            Some(group) => changes.push(Change::Put(KEY_GROUP.as_bytes(), group.as_bytes())),
            None => changes.push(Change::Delete(KEY_GROUP.as_bytes())),
        }
        changes.extend(more.iter().map(|c| match c {
            Change::Put(k, v) => Change::Put(k, v),
            Change::Delete(k) => Change::Delete(k),
        }));
        self.write_ours(&changes)
    }

    /// A write of mender-rs: `changes` and the [`KEY_OUR_TXN`] stamp, in
    /// one transaction.
    pub fn write_ours(&self, changes: &[Change<'_>]) -> Result<(), MenderStoreError> {
        self.file
            .write_stamped(changes, Some(KEY_OUR_TXN.as_bytes()))
            .map_err(|e| error(&self.path, e))?;
        crate::crash::point(crate::crash::Point::MenderStore);
        Ok(())
    }

    /// Whether the last write to the store was ours ([`KEY_OUR_TXN`]
    /// names the last transaction). False for a store Mender wrote after
    /// us, or one we never wrote.
    pub fn last_write_is_ours(&self) -> Result<bool, MenderStoreError> {
        let (last, values) = self
            .file
            .snapshot(&[KEY_OUR_TXN], MAX_TXN_SIZE)
            .map_err(|e| error(&self.path, e))?;
        let stamp = values.into_iter().next().flatten();
        Ok(stamp.is_some_and(|s| s == last.to_string().as_bytes()))
    }

    /// Raw access for tests and fixtures (a store as Mender writes it: no
    /// [`KEY_OUR_TXN`]): puts and deletes in one transaction.
    pub fn write_raw(&self, changes: &[Change<'_>]) -> Result<(), MenderStoreError> {
        self.file.write(changes).map_err(|e| error(&self.path, e))
    }
}

fn error(path: &Path, e: LmdbError) -> MenderStoreError {
    let reason = if e.is_corrupt() {
        format!("not a readable LMDB store: {e}")
    } else {
        e.to_string()
    };
    MenderStoreError {
        path: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_back_round_trips_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        let provides: Provides = [
            ("artifact_name", "r2"),
            ("artifact_group", "g"),
            ("rootfs-image.version", "r2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        MenderStore::open_for_writing(&path)
            .unwrap()
            .write_installed(&provides)
            .unwrap();
        let read = MenderStore::open_read_only(&path).unwrap().read().unwrap();
        assert_eq!(read.installed.provides(), provides);
        assert_eq!(read.standalone, None);

        let store = MenderStore::open_for_writing(&path).unwrap();
        store
            .write_raw(&[Change::Put(KEY_PROVIDES.as_bytes(), b"{\"a\":1}")])
            .unwrap();
        let e = store.read().unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("'artifact-provides'"),
            "{e}"
        );
    }

    #[test]
    fn a_write_of_mender_after_ours_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        let store = MenderStore::open_for_writing(&path).unwrap();
        // Mender's own store: never written by us.
        store
            .write_raw(&[Change::Put(KEY_NAME.as_bytes(), b"r1")])
            .unwrap();
        assert!(!store.last_write_is_ours().unwrap());
        let provides: Provides = [("artifact_name".to_string(), "r2".to_string())].into();
        store.write_installed(&provides).unwrap();
        assert!(store.last_write_is_ours().unwrap());
        drop(store);
        // Read back by another process (a read-only open).
        let reader = MenderStore::open_read_only(&path).unwrap();
        assert!(reader.last_write_is_ours().unwrap());
        // Mender commits r3 (its writes keep our stamp as it was).
        MenderStore::open_for_writing(&path)
            .unwrap()
            .write_raw(&[Change::Put(KEY_NAME.as_bytes(), b"r3")])
            .unwrap();
        assert!(!reader.last_write_is_ours().unwrap());
    }

    #[test]
    fn damaged_store_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(dir.path());
        std::fs::write(&path, b"not lmdb at all, just text").unwrap();
        let e = MenderStore::open_read_only(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
