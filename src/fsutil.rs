//! Crash-safe file replacement: write a temporary file beside the target,
//! fsync it, rename it over the target, fsync the directory. Power can fail
//! between any two of these steps and leave either the old or the new file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file in the directory of `dest`, named after it so a
/// leftover is recognisable. `mode` is filtered by the umask, as for any
/// newly created file.
pub fn temp_beside(dest: &Path, mode: u32) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(parent_dir(dest))
}

/// Flushes `tmp` to disk, renames it to `dest` and flushes the directory.
pub fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    sync_dir(&parent_dir(dest))
}

/// Writes `bytes` to `dest` crash-safely.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = temp_beside(dest, mode)?;
    tmp.write_all(bytes)?;
    persist(tmp, dest)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
