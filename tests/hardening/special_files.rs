//! Local files of the wrong kind or size, as the families that refuse them
//! make them: FIFOs (an open would block), links to /dev/zero (a read would
//! never end) and sparse files far larger than any cap (no disk used).

use std::fs;
use std::path::Path;

/// A sparse file larger than any cap.
pub(crate) const HUGE: u64 = 1 << 30;

pub(crate) fn mkfifo(path: &Path) {
    mender_rs::sys::mkfifo(path, 0o600).expect("mkfifo");
}

pub(crate) fn link_to_zero(path: &Path) {
    std::os::unix::fs::symlink("/dev/zero", path).unwrap();
}

/// Creates (or truncates) `path` as a sparse file of `len` bytes.
pub(crate) fn sparse(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Puts `make`'s file where `path` was (a configuration file, say).
pub(crate) fn replace(path: &Path, make: impl FnOnce(&Path)) {
    fs::remove_file(path).unwrap();
    make(path);
}
