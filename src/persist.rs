//! The one owner of an on-disk JSON state file: the store
//! (`crate::store`) and the update control maps (`crate::control_map`)
//! both go through here, so the rules below are written, and kept, once.
//! It is separate from `crate::fsutil`, which holds the file primitives
//! (bounded reads, atomic replace) that other files use too; this module
//! adds what makes a file *state*: its lock, its schema and its errors.
//!
//! # The crash-safety contract (see `docs/architecture.md`)
//!
//! * **A write is an atomic replace.** [`StateFile::write`] writes the whole
//!   document to a temporary file beside the target, fsyncs it, renames it
//!   over the target and fsyncs the directory (`fsutil::write_atomic`).
//!   Power can fail between any two of those steps: the file is then the
//!   old one or the new one, never a mix. A leftover temporary file is
//!   named `.<file>.<random>.tmp` and is never read.
//! * **Readers take no lock.** Because of the atomic replace, a read always
//!   sees one complete version. Writers hold the lock file beside the state
//!   file ([`Lock`]) while they read, change and write (the store: for as
//!   long as it is open), so two writers never lose each other's change.
//!   The lock is std's `File::try_lock` (`flock`): the kernel drops it when
//!   the process dies, so a crash never leaves it held.
//! * **Every read is bounded and checked.** At most [`StateFile::max_size`]
//!   bytes of a regular file are read (`fsutil::read_bounded`); the document
//!   must be a JSON object whose `schema` is a known version. A newer schema
//!   is refused (a downgrade must not rewrite what it does not understand);
//!   a missing one, or a document that does not parse, is corrupt. Each
//!   error names the file; nothing guesses at what a damaged file meant.
//! * **Files are private.** State files are written with mode 0600.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::fsutil;

/// Mode of the state files written.
const STATE_FILE_MODE: u32 = 0o600;

/// How a state file or its lock failed. Each user turns these into its own
/// error type, whose messages say which file it is (a store, the maps).
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    /// Not a regular file, or larger than the cap.
    #[error("{0}")]
    Read(fsutil::ReadError),
    #[error("{path}: corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}: written by a newer mender-rs (schema {found})")]
    TooNew { path: String, found: u64 },
    /// The lock is held by another process: at once ([`Lock::try_exclusive`])
    /// or still after the wait ([`Lock::exclusive_within`]).
    #[error("{path}: locked by another process")]
    Busy {
        path: String,
        waited: Option<Duration>,
    },
}

fn io_error(path: &Path, source: io::Error) -> PersistError {
    PersistError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One JSON state file: where it is, how much of it is read, and the
/// schema version this build writes.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
    /// The largest file read back.
    pub max_size: u64,
    /// What the file is, for the bounded read's errors ("the store").
    pub what: &'static str,
    /// The version written in the `schema` field; a larger one is refused.
    pub schema: u64,
}

impl StateFile {
    /// The document, its schema checked; `None` when there is no file.
    pub fn read(&self) -> Result<Option<Value>, PersistError> {
        let bytes = match fsutil::read_bounded(&self.path, self.max_size, self.what) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(PersistError::Read(e)),
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e.to_string()))?;
        if !value.is_object() {
            return Err(self.corrupt("not a JSON object".into()));
        }
        let schema = value.get("schema").and_then(Value::as_u64).unwrap_or(0);
        if schema > self.schema {
            return Err(PersistError::TooNew {
                path: self.path.display().to_string(),
                found: schema,
            });
        }
        if schema == 0 {
            return Err(self.corrupt("no schema version".into()));
        }
        Ok(Some(value))
    }

    /// Replaces the file with `document` (pretty JSON), crash-safely.
    pub fn write(&self, document: &impl Serialize) -> Result<(), PersistError> {
        let bytes = serde_json::to_vec_pretty(document).map_err(|e| self.corrupt(e.to_string()))?;
        fsutil::write_atomic(&self.path, &bytes, STATE_FILE_MODE)
            .map_err(|e| io_error(&self.path, e))
    }

    /// A corrupt-file error naming this file.
    pub fn corrupt(&self, reason: String) -> PersistError {
        PersistError::Corrupt {
            path: self.path.display().to_string(),
            reason,
        }
    }
}

/// An exclusive lock on a lock file, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Opens (or creates, with `mode` before the umask) the lock file,
    /// creating its directory; only a regular file is accepted.
    fn open(path: &Path, mode: u32) -> Result<File, PersistError> {
        let dir = fsutil::parent_dir(path);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        fsutil::open_regular_with(
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(mode),
            path,
        )
        .map_err(|e| io_error(path, e))
    }

    /// The lock at once, or [`PersistError::Busy`]: for a process that must
    /// not wait behind another (two updates never run at once).
    pub fn try_exclusive(path: &Path, mode: u32) -> Result<Lock, PersistError> {
        let file = Self::open(path, mode)?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { _file: file }),
            Err(_) => Err(PersistError::Busy {
                path: path.display().to_string(),
                waited: None,
            }),
        }
    }

    /// The lock, waiting up to `wait` for another process to let it go
    /// (polled, so that the wait is bounded), else [`PersistError::Busy`].
    pub fn exclusive_within(path: &Path, mode: u32, wait: Duration) -> Result<Lock, PersistError> {
        let file = Self::open(path, mode)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(TryLockError::Error(e)) => return Err(io_error(path, e)),
            }
            if Instant::now() >= deadline {
                return Err(PersistError::Busy {
                    path: path.display().to_string(),
                    waited: Some(wait),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_file(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("state.json"),
            max_size: 1024,
            what: "a test state file",
            schema: 2,
        }
    }

    #[test]
    fn round_trip_and_absent_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = state_file(dir.path());
        assert!(file.read().unwrap().is_none());
        file.write(&serde_json::json!({"schema": 2, "x": 1}))
            .unwrap();
        let value = file.read().unwrap().unwrap();
        assert_eq!(value["x"], 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_documents_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = state_file(dir.path());
        let name = file.path.display().to_string();
        for (text, want) in [
            ("{not json", "corrupt"),
            ("[1]", "not a JSON object"),
            ("{}", "no schema version"),
            (r#"{"schema": 3}"#, "newer"),
        ] {
            std::fs::write(&file.path, text).unwrap();
            let e = file.read().unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(&name), "{text}: {e}");
        }
        std::fs::write(&file.path, vec![b' '; 2000]).unwrap();
        assert!(matches!(file.read(), Err(PersistError::Read(_))));
    }

    #[test]
    fn locks_exclude_and_wait_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.lock");
        let held = Lock::try_exclusive(&path, 0o600).unwrap();
        assert!(matches!(
            Lock::try_exclusive(&path, 0o600),
            Err(PersistError::Busy { waited: None, .. })
        ));
        let wait = Duration::from_millis(50);
        assert!(matches!(
            Lock::exclusive_within(&path, 0o600, wait),
            Err(PersistError::Busy {
                waited: Some(_),
                ..
            })
        ));
        drop(held);
        Lock::exclusive_within(&path, 0o600, wait).unwrap();
    }
}
