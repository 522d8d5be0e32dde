//! The persistent store in the data directory: the device's provides and
//! the state of an update in progress, in one JSON file replaced atomically
//! (temporary file, fsync, rename, fsync of the directory). One file means a
//! commit changes the provides and the update state in the same write.
//!
//! Mender keeps these in an LMDB database (`mender-store`); mender-rs uses
//! its own file, `mender-rs-store.json`, with a schema version. Locking,
//! reading and replacing it follow `crate::persist`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::sync::OnceLock;

use crate::artifact::header::Provides;
use crate::persist::{Lock, PersistError, StateFile};
use crate::{crash, fsutil};

pub const STORE_FILE: &str = "mender-rs-store.json";
pub const LOCK_FILE: &str = "mender-rs.lock";
pub const SCHEMA_VERSION: u32 = 1;
/// Mode of a newly created lock file (before the umask), as `open(2)`'s
/// default.
const LOCK_FILE_MODE: u32 = 0o666;

/// Name a device has before anything was ever installed (as Mender).
pub const UNKNOWN_ARTIFACT: &str = "unknown";

/// The largest store file read. What we write stays far below: the
/// provides are capped at 1 MiB after a commit
/// (`artifact::depends::MAX_PROVIDES_SIZE`), stored twice at most (the
/// provides and the update's record of the artifact), JSON-escaped.
pub const MAX_STORE_SIZE: u64 = 16 << 20;
/// The largest `artifact_info` read: two short `key=value` lines in practice.
pub const MAX_ARTIFACT_INFO_SIZE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: corrupt store: {reason}")]
    Corrupt { path: String, reason: String },
    #[error(
        "{path}: written by a newer mender-rs (schema {found}, this one knows {SCHEMA_VERSION})"
    )]
    TooNew { path: String, found: u64 },
    #[error("another mender-rs process is working on {0}")]
    Busy(String),
    #[error("{0}")]
    Read(#[from] fsutil::ReadError),
}

impl StoreError {
    /// The store's wording of a [`PersistError`] on the store in `data_dir`.
    fn from_persist(data_dir: &Path, e: PersistError) -> StoreError {
        match e {
            PersistError::Io { path, source } => StoreError::Io { path, source },
            PersistError::Read(e) => StoreError::Read(e),
            PersistError::Corrupt { path, reason } => StoreError::Corrupt { path, reason },
            PersistError::TooNew { path, found } => StoreError::TooNew { path, found },
            PersistError::Busy { .. } => StoreError::Busy(data_dir.display().to_string()),
        }
    }
}

/// Called after every write that changed the provides (with the data
/// directory and the new provides): the hand back to Mender's store
/// (`docs/takeover.md`), set by the command line when that feature is
/// built. A hook, so that the store does not depend on the LMDB code
/// that depends on it.
static PROVIDES_CHANGED: OnceLock<fn(&Path, &Provides)> = OnceLock::new();

/// Sets the [`PROVIDES_CHANGED`] hook (once per process; later calls are
/// ignored).
pub fn on_provides_changed(hook: fn(&Path, &Provides)) {
    let _ = PROVIDES_CHANGED.set(hook);
}

/// Everything the store holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreData {
    pub schema: u32,
    /// `artifact_name`, `artifact_group` (when set) and the type-info
    /// provides, as `show-provides` prints them.
    pub provides: Provides,
    /// The update in progress, if any.
    #[serde(default)]
    pub update: Option<serde_json::Value>,
    /// A take-over from the Mender client wrote this store and has not yet
    /// renamed Mender's (`crate::mender_store::takeover`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mender_store_rename_pending: bool,
    /// The deployment in flight was the Mender client's, taken over: its
    /// rollback reboots into a partition that runs Mender, so its failure
    /// is reported before that reboot (`docs/takeover.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_deployment: Option<String>,
    /// That deployment was rolled back and the reboot into the previous
    /// partition waits for its failure report.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback_reboot_after_report: bool,
}

impl Default for StoreData {
    fn default() -> Self {
        StoreData {
            schema: SCHEMA_VERSION,
            provides: Provides::new(),
            update: None,
            mender_store_rename_pending: false,
            taken_over_deployment: None,
            rollback_reboot_after_report: false,
        }
    }
}

/// The open store, holding the data directory's lock for its lifetime so two
/// processes never drive an update at once.
pub struct Store {
    data_dir: PathBuf,
    file: StateFile,
    data: StoreData,
    existed: bool,
    /// None for a read-only view.
    _lock: Option<Lock>,
}

impl Store {
    /// Opens (or starts) the store in `data_dir`, taking its lock.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let lock = Lock::try_exclusive(&data_dir.join(LOCK_FILE), LOCK_FILE_MODE)
            .map_err(|e| StoreError::from_persist(data_dir, e))?;
        let mut store = Self::read_only(data_dir)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// A read-only view that takes no lock (`show-artifact` while a daemon
    /// runs). The file is replaced atomically, so a read never sees half of
    /// a write. [`Store::open`] is this plus the lock.
    pub fn read_only(data_dir: &Path) -> Result<Store, StoreError> {
        let file = StateFile {
            path: data_dir.join(STORE_FILE),
            max_size: MAX_STORE_SIZE,
            what: "the store",
            schema: SCHEMA_VERSION.into(),
        };
        let from_persist = |e| StoreError::from_persist(data_dir, e);
        let (data, existed) = match file.read().map_err(from_persist)? {
            Some(value) => {
                let data = serde_json::from_value(value)
                    .map_err(|e| from_persist(file.corrupt(e.to_string())))?;
                (data, true)
            }
            None => (StoreData::default(), false),
        };
        Ok(Store {
            data_dir: data_dir.to_path_buf(),
            file,
            data,
            existed,
            _lock: None,
        })
    }

    /// Whether a store file existed when it was opened (a fresh device has none).
    pub fn existed(&self) -> bool {
        self.existed
    }

    pub fn data(&self) -> &StoreData {
        &self.data
    }

    pub fn provides(&self) -> &Provides {
        &self.data.provides
    }

    /// The stored provides, plus, while nothing was ever committed, the
    /// name (and group) from `artifact_info` (Mender's pre-bootstrap way for
    /// an image to name itself), else `unknown`.
    pub fn effective_provides(&self, artifact_info: &Path) -> Provides {
        let mut provides = self.data.provides.clone();
        if !provides.contains_key("artifact_name") {
            // Unreadable, oversized or not a regular file: as if absent
            // (the name is then `unknown`), with a warning.
            let text = match fsutil::read_bounded_string(
                artifact_info,
                MAX_ARTIFACT_INFO_SIZE,
                "artifact_info",
            ) {
                Ok(text) => text,
                Err(e) => {
                    if !e.is_not_found() {
                        log::warn!("ignoring {e}");
                    }
                    String::new()
                }
            };
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    let (k, v) = (k.trim(), v.trim());
                    if (k == "artifact_name" || k == "artifact_group") && !v.is_empty() {
                        provides
                            .entry(k.to_string())
                            .or_insert_with(|| v.to_string());
                    }
                }
            }
            provides
                .entry("artifact_name".to_string())
                .or_insert_with(|| UNKNOWN_ARTIFACT.to_string());
        }
        provides
    }

    /// The stored artifact name, if any.
    pub fn artifact_name(&self) -> Option<&str> {
        self.data.provides.get("artifact_name").map(String::as_str)
    }

    /// Changes the data and persists it before returning. On error the
    /// in-memory copy is left as it was on disk.
    pub fn save(&mut self, change: impl FnOnce(&mut StoreData)) -> Result<(), StoreError> {
        if self._lock.is_none() {
            return Err(StoreError::Busy(format!(
                "{} (opened read-only)",
                self.file.path.display()
            )));
        }
        let mut next = self.data.clone();
        change(&mut next);
        next.schema = SCHEMA_VERSION;
        self.file
            .write(&next)
            .map_err(|e| StoreError::from_persist(&self.data_dir, e))?;
        if next.provides != self.data.provides
            && !next.mender_store_rename_pending
            && let Some(hook) = PROVIDES_CHANGED.get()
        {
            hook(&self.data_dir, &next.provides);
        }
        self.data = next;
        self.existed = true;
        crash::point(crash::Point::Step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_store_reports_unknown_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            assert!(!s.existed());
            assert_eq!(s.artifact_name(), None);
            assert_eq!(
                s.effective_provides(Path::new("/nonexistent"))["artifact_name"],
                "unknown"
            );
            s.save(|d| {
                d.provides.insert("artifact_name".into(), "r1".into());
            })
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert!(s.existed());
        assert_eq!(s.artifact_name(), Some("r1"));
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Busy(_))));
    }

    #[test]
    fn corrupt_and_newer_stores_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), b"{not json").unwrap();
        let e = Store::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("corrupt store"), "{e}");
        std::fs::write(
            dir.path().join(STORE_FILE),
            br#"{"schema":99,"provides":{}}"#,
        )
        .unwrap();
        let e = Store::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("newer"), "{e}");
    }
}
