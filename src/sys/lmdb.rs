//! A small safe face of liblmdb (the `lmdb-master-sys` crate builds it
//! from its bundled C source with the C compiler): what reading and
//! writing the Mender client's `mender-store` needs (`docs/takeover.md`),
//! and nothing more. One file opened with `MDB_NOSUBDIR`, its unnamed main
//! database only, values copied out inside the transaction so that nothing
//! borrowed from the memory map outlives it.
//!
//! Written by hand over the `-sys` crate rather than through `heed`:
//! heed's open is `unsafe` as well (the same memory-map contract), its
//! typed-database API ties every handle to a transaction lifetime we do
//! not need for a handful of keys, and it brings seven more crates into a
//! device binary held to about 3 MiB.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use lmdb_master_sys as ffi;

/// The largest file this wrapper opens: LMDB maps the whole file, and
/// Mender's store holds a few short keys (kilobytes in practice).
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// What went wrong, with LMDB's own wording for its codes.
#[derive(Debug, thiserror::Error)]
pub enum LmdbError {
    #[error("{call}: {message} (code {code})")]
    Code {
        call: &'static str,
        code: i32,
        message: String,
    },
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A value larger than the caller's cap, found under `key`.
    #[error("the value of '{key}' is {size} bytes, more than the {max} allowed")]
    TooLarge {
        key: String,
        size: usize,
        max: usize,
    },
    /// The file is shorter than its own header says: reading it would
    /// fault on the memory map.
    #[error("truncated: the database needs {needed} bytes, the file has {actual}")]
    Truncated { needed: u64, actual: u64 },
}

impl LmdbError {
    /// LMDB's "the file is not an LMDB database" (`MDB_INVALID`) and
    /// version mismatches: the file, not the system, is at fault.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            LmdbError::Code { code, .. }
                if *code == ffi::MDB_INVALID
                    || *code == ffi::MDB_VERSION_MISMATCH
                    || *code == ffi::MDB_CORRUPTED
                    || *code == ffi::MDB_PAGE_NOTFOUND
        ) || matches!(self, LmdbError::Truncated { .. })
    }
}

fn check(call: &'static str, code: libc::c_int) -> Result<(), LmdbError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: mdb_strerror returns a pointer to a static or thread-local
    // NUL-terminated string (strerror's for system codes), valid until
    // the next call on this thread; it is copied at once.
    let message = unsafe { CStr::from_ptr(ffi::mdb_strerror(code)) }
        .to_string_lossy()
        .into_owned();
    Err(LmdbError::Code {
        call,
        code,
        message,
    })
}

/// The values of the keys read, `None` for an absent key.
pub type Values = Vec<Option<Vec<u8>>>;

/// One change of a write transaction.
pub enum Change<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
}

/// An open LMDB environment (one data file and its `-lock` file), closed
/// on drop. Not `Send`: LMDB ties read transactions to the thread.
pub struct LmdbFile {
    env: NonNull<ffi::MDB_env>,
    read_only: bool,
}

impl Drop for LmdbFile {
    fn drop(&mut self) {
        // SAFETY: `env` came from a successful mdb_env_create+open and no
        // transaction outlives the methods below, so closing is allowed.
        unsafe { ffi::mdb_env_close(self.env.as_ptr()) };
    }
}

impl LmdbFile {
    /// Opens the file at `path` (`MDB_NOSUBDIR`; its lock file is
    /// `<path>-lock`), read-only or for writing. Writing creates the file
    /// with `mode` when it does not exist; reading never creates it.
    pub fn open(path: &Path, read_only: bool, mode: u32) -> Result<LmdbFile, LmdbError> {
        Self::open_with(path, read_only, false, mode)
    }

    /// Opens the file at `path` read-only without its lock file
    /// (`MDB_NOLOCK`): nothing on disk is created or written, not even the
    /// lock file's reader table. Only for a look taken while no other
    /// process can be writing, or where a wrong answer is asked again
    /// under a lock that keeps writers out (`mender_store::takeover`).
    pub fn open_unlocked(path: &Path) -> Result<LmdbFile, LmdbError> {
        Self::open_with(path, true, true, 0o600)
    }

    fn open_with(
        path: &Path,
        read_only: bool,
        no_lock: bool,
        mode: u32,
    ) -> Result<LmdbFile, LmdbError> {
        let existing = match std::fs::metadata(path) {
            Ok(meta) => Some(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !read_only => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(len) = existing
            && len > MAX_FILE_SIZE
        {
            return Err(io::Error::other(format!(
                "{len} bytes, more than the {MAX_FILE_SIZE} a Mender store may have"
            ))
            .into());
        }
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let mut env: *mut ffi::MDB_env = ptr::null_mut();
        // SAFETY: mdb_env_create writes a fresh handle into `env`.
        check("mdb_env_create", unsafe { ffi::mdb_env_create(&mut env) })?;
        let env = NonNull::new(env).ok_or_else(|| io::Error::other("mdb_env_create: null"))?;
        // From here on `file` closes the handle on every error path.
        let file = LmdbFile { env, read_only };
        let mut flags = ffi::MDB_NOSUBDIR;
        if read_only {
            flags |= ffi::MDB_RDONLY;
        }
        if no_lock {
            flags |= ffi::MDB_NOLOCK;
        }
        // SAFETY: the handle is fresh and `c_path` outlives the call. The
        // memory map this creates is only read through LMDB's own
        // transactions below, and LMDB's lock file keeps other LMDB
        // processes (the Mender client) from changing pages a reader
        // still uses. Without it (`open_unlocked`) a writer at the same
        // time could reuse a page being read: the values read may be
        // wrong, but every page stays inside the file (a writer only
        // appends, and the file was checked against its header below).
        check("mdb_env_open", unsafe {
            ffi::mdb_env_open(
                env.as_ptr(),
                c_path.as_ptr(),
                flags,
                mode as ffi::mdb_mode_t,
            )
        })?;
        file.check_not_truncated(path)?;
        Ok(file)
    }

    /// Refuses a file shorter than the pages its header claims: LMDB would
    /// read those through the memory map and the process would die of
    /// SIGBUS instead of reporting a damaged file.
    fn check_not_truncated(&self, path: &Path) -> Result<(), LmdbError> {
        let info = self.info()?;
        // SAFETY: all zeroes is a valid value of this plain C struct (a
        // few integers), which the call fills in.
        let mut stat: ffi::MDB_stat = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is open; the call writes only `stat`.
        check("mdb_env_stat", unsafe {
            ffi::mdb_env_stat(self.env.as_ptr(), &mut stat)
        })?;
        let needed = (info.me_last_pgno as u64 + 1).saturating_mul(stat.ms_psize as u64);
        let actual = std::fs::metadata(path)?.len();
        if needed > actual {
            return Err(LmdbError::Truncated { needed, actual });
        }
        Ok(())
    }

    /// The id of the last committed write transaction: changes whenever
    /// any process wrote to the file.
    pub fn last_txn_id(&self) -> Result<u64, LmdbError> {
        Ok(self.info()?.me_last_txnid as u64)
    }

    fn info(&self) -> Result<ffi::MDB_envinfo, LmdbError> {
        // SAFETY: all zeroes is a valid value of this plain C struct (a
        // null pointer and integers), which the call fills in.
        let mut info: ffi::MDB_envinfo = unsafe { std::mem::zeroed() };
        // SAFETY: the handle is open; the call writes only `info`.
        check("mdb_env_info", unsafe {
            ffi::mdb_env_info(self.env.as_ptr(), &mut info)
        })?;
        Ok(info)
    }

    /// Begins a transaction and opens the unnamed database in it.
    fn begin(&self, read_only: bool) -> Result<(Txn, ffi::MDB_dbi), LmdbError> {
        let mut txn: *mut ffi::MDB_txn = ptr::null_mut();
        let flags = if read_only { ffi::MDB_RDONLY } else { 0 };
        // SAFETY: the handle is open; no parent transaction; `txn` is
        // written on success.
        check("mdb_txn_begin", unsafe {
            ffi::mdb_txn_begin(self.env.as_ptr(), ptr::null_mut(), flags, &mut txn)
        })?;
        let txn = Txn(NonNull::new(txn).ok_or_else(|| io::Error::other("mdb_txn_begin: null"))?);
        let mut dbi: ffi::MDB_dbi = 0;
        // SAFETY: the transaction is live; a null name is the unnamed
        // database, which always exists.
        check("mdb_dbi_open", unsafe {
            ffi::mdb_dbi_open(txn.0.as_ptr(), ptr::null(), 0, &mut dbi)
        })?;
        Ok((txn, dbi))
    }

    /// The values of `keys`, read in one transaction (one consistent
    /// snapshot); `None` for an absent key. A value larger than `max` is
    /// an error naming its key.
    pub fn get_all(&self, keys: &[&str], max: usize) -> Result<Values, LmdbError> {
        Ok(self.snapshot(keys, max)?.1)
    }

    /// [`LmdbFile::get_all`], with the id of the last write transaction
    /// committed before that snapshot (0 for a file never written).
    pub fn snapshot(&self, keys: &[&str], max: usize) -> Result<(u64, Values), LmdbError> {
        let (txn, dbi) = self.begin(true)?;
        // SAFETY: the transaction is live; the call only reads it.
        let txn_id = unsafe { ffi::mdb_txn_id(txn.0.as_ptr()) } as u64;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let mut k = ffi::MDB_val {
                mv_size: key.len(),
                mv_data: key.as_ptr() as *mut libc::c_void,
            };
            let mut v = ffi::MDB_val {
                mv_size: 0,
                mv_data: ptr::null_mut(),
            };
            // SAFETY: the transaction is live; `k` points at `key` for
            // the call (LMDB does not write through it); `v` is written.
            let code = unsafe { ffi::mdb_get(txn.0.as_ptr(), dbi, &mut k, &mut v) };
            if code == ffi::MDB_NOTFOUND {
                values.push(None);
                continue;
            }
            check("mdb_get", code)?;
            if v.mv_size > max {
                return Err(LmdbError::TooLarge {
                    key: key.to_string(),
                    size: v.mv_size,
                    max,
                });
            }
            let bytes = if v.mv_size == 0 {
                Vec::new()
            } else {
                // SAFETY: LMDB returned `mv_size` bytes at `mv_data`, valid
                // until the transaction ends (below); they are copied now.
                unsafe { std::slice::from_raw_parts(v.mv_data as *const u8, v.mv_size) }.to_vec()
            };
            values.push(Some(bytes));
        }
        // Read-only: ending it is an abort (Txn's drop).
        drop(txn);
        Ok((txn_id, values))
    }

    /// Applies `changes` in one write transaction: all of them or none.
    /// Deleting an absent key is not an error.
    pub fn write(&self, changes: &[Change<'_>]) -> Result<(), LmdbError> {
        self.write_stamped(changes, None).map(|_| ())
    }

    /// [`LmdbFile::write`], plus, with `stamp`, that key set to this
    /// transaction's own id (in decimal) in the same transaction: a
    /// reader whose snapshot's id ([`LmdbFile::snapshot`]) equals the
    /// stamp knows that nobody wrote after it. Returns the id committed.
    pub fn write_stamped(
        &self,
        changes: &[Change<'_>],
        stamp: Option<&[u8]>,
    ) -> Result<u64, LmdbError> {
        if self.read_only {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only").into());
        }
        let (txn, dbi) = self.begin(false)?;
        // SAFETY: the write transaction is live; for one, this is the id
        // it commits as.
        let txn_id = unsafe { ffi::mdb_txn_id(txn.0.as_ptr()) } as u64;
        let stamp_value = txn_id.to_string();
        let stamp = stamp.map(|key| Change::Put(key, stamp_value.as_bytes()));
        for change in changes.iter().chain(stamp.as_ref()) {
            let (key, value) = match change {
                Change::Put(k, v) => (*k, Some(*v)),
                Change::Delete(k) => (*k, None),
            };
            let mut k = ffi::MDB_val {
                mv_size: key.len(),
                mv_data: key.as_ptr() as *mut libc::c_void,
            };
            match value {
                Some(value) => {
                    let mut v = ffi::MDB_val {
                        mv_size: value.len(),
                        mv_data: value.as_ptr() as *mut libc::c_void,
                    };
                    // SAFETY: the write transaction is live; LMDB copies
                    // the bytes `k` and `v` point at (no MDB_RESERVE).
                    check("mdb_put", unsafe {
                        ffi::mdb_put(txn.0.as_ptr(), dbi, &mut k, &mut v, 0)
                    })?;
                }
                None => {
                    // SAFETY: as above; a null data pointer deletes the key.
                    let code =
                        unsafe { ffi::mdb_del(txn.0.as_ptr(), dbi, &mut k, ptr::null_mut()) };
                    if code != ffi::MDB_NOTFOUND {
                        check("mdb_del", code)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(txn_id)
    }
}

/// A live transaction; aborted on drop unless committed.
struct Txn(NonNull<ffi::MDB_txn>);

impl Txn {
    fn commit(self) -> Result<(), LmdbError> {
        let txn = self.0;
        std::mem::forget(self);
        // SAFETY: the transaction is live and is freed by the commit
        // whatever its outcome; `forget` above keeps drop from aborting
        // it a second time.
        check("mdb_txn_commit", unsafe {
            ffi::mdb_txn_commit(txn.as_ptr())
        })
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        // SAFETY: the transaction is live (commit forgets `self`).
        unsafe { ffi::mdb_txn_abort(self.0.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back_in_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let f = LmdbFile::open(&path, false, 0o600).unwrap();
            f.write(&[Change::Put(b"a", b"1"), Change::Put(b"b", b"")])
                .unwrap();
            f.write(&[Change::Delete(b"b"), Change::Delete(b"never")])
                .unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(dir.path().join("store-lock").exists());
        let f = LmdbFile::open(&path, true, 0o600).unwrap();
        let got = f.get_all(&["a", "b"], 10).unwrap();
        assert_eq!(got, vec![Some(b"1".to_vec()), None]);
        assert!(f.last_txn_id().unwrap() >= 2);
        let (id, got) = f.snapshot(&["a"], 10).unwrap();
        assert_eq!(
            (id, got),
            (f.last_txn_id().unwrap(), vec![Some(b"1".to_vec())])
        );
        assert!(f.write(&[Change::Delete(b"a")]).is_err());
        drop(f);
        // A look without the lock file writes nothing, not even that.
        std::fs::remove_file(dir.path().join("store-lock")).unwrap();
        let f = LmdbFile::open_unlocked(&path).unwrap();
        assert_eq!(f.get_all(&["a"], 10).unwrap(), vec![Some(b"1".to_vec())]);
        assert!(!dir.path().join("store-lock").exists());
        let e = f.get_all(&["a"], 0).unwrap_err().to_string();
        assert!(e.contains("'a'"), "{e}");
    }

    #[test]
    fn a_stamp_names_its_own_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let f = LmdbFile::open(&path, false, 0o600).unwrap();
        f.write(&[Change::Put(b"a", b"1")]).unwrap();
        let id = f
            .write_stamped(&[Change::Put(b"a", b"2")], Some(b"stamp"))
            .unwrap();
        let (seen, got) = f.snapshot(&["a", "stamp"], 10).unwrap();
        assert_eq!(seen, id);
        assert_eq!(got[0].as_deref(), Some(&b"2"[..]));
        assert_eq!(got[1].as_deref(), Some(id.to_string().as_bytes()));
        // Another writer moves the id past the stamp.
        f.write(&[Change::Put(b"b", b"3")]).unwrap();
        assert_eq!(f.snapshot(&["stamp"], 10).unwrap().0, id + 1);
    }

    #[test]
    fn damaged_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        assert!(LmdbFile::open(&path, true, 0o600).is_err());
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = LmdbFile::open(&path, true, 0o600).err().unwrap();
        assert!(e.is_corrupt(), "{e}");
        // A real store cut short after its header.
        std::fs::remove_file(&path).unwrap();
        {
            let f = LmdbFile::open(&path, false, 0o600).unwrap();
            let big = vec![7u8; 100_000];
            f.write(&[Change::Put(b"big", &big)]).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        let e = LmdbFile::open(&path, true, 0o600).err().unwrap();
        assert!(e.is_corrupt(), "{e}");
    }
}
