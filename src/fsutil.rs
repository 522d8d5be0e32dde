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

/// Why a bounded read failed. Every file the client reads comes from
/// outside (an image, a technician, a server-written store), so each read
/// has a cap that fits the kind of file, and only regular files are read:
/// a link to `/dev/zero` or a FIFO must not hang or exhaust the device
/// (docs: README "Limits").
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: {size} bytes, more than the {cap} allowed for {what}")]
    TooLarge {
        path: PathBuf,
        size: u64,
        cap: u64,
        what: &'static str,
    },
}

impl ReadError {
    /// The file does not exist (callers that treat that as "empty").
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What a file type is called in errors.
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

impl ReadError {
    /// The message without the path (for errors that name it themselves).
    pub fn reason(&self) -> String {
        match self {
            ReadError::Io { source, .. } => source.to_string(),
            ReadError::NotRegular { kind, .. } => format!("is {kind}, not a regular file"),
            ReadError::TooLarge {
                size, cap, what, ..
            } => format!("{size} bytes, more than the {cap} allowed for {what}"),
        }
    }
}

/// Opens `path` for reading (links followed) without ever blocking: the
/// open is non-blocking, so a FIFO without a writer, or a device that waits
/// for a carrier, does not hang the client. `accept` says which file types
/// are fine; others are refused naming what the file is. The returned file
/// blocks again as usual (O_NONBLOCK is cleared once the type is known).
pub fn open_checked(
    path: &Path,
    write: bool,
    accept: impl Fn(std::fs::FileType) -> bool,
) -> Result<(File, std::fs::Metadata), ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !accept(meta.file_type()) {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(meta.file_type()),
        });
    }
    crate::sys::set_nonblocking(&file, false).map_err(io_err)?;
    Ok((file, meta))
}

/// Opens `path` with `options` (which should include read: a FIFO opened
/// write-only without a reader fails before its type can be told) and
/// O_NONBLOCK, so a FIFO or device put where a lock or log file belongs
/// cannot make the client wait; anything but a regular file is refused
/// with an error saying what it is. O_NONBLOCK stays set: it changes
/// nothing for regular files.
pub fn open_regular_with(options: &mut std::fs::OpenOptions, path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = options
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", file_kind(kind)),
        ));
    }
    Ok(file)
}

/// [`open_checked`] for a regular file, read-only.
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), ReadError> {
    open_checked(path, false, |ft| ft.is_file())
}

/// Reads the rest of `file` (opened from `path`, `size` bytes as stat
/// says, 0 when unknown) if it is at most `cap` bytes; checked before
/// reading and while reading (a file that grows meanwhile, or a kernel
/// file whose stat size says nothing).
pub fn read_open_bounded(
    file: &File,
    path: &Path,
    size: u64,
    cap: u64,
    what: &'static str,
) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let too_large = |size| ReadError::TooLarge {
        path: path.to_path_buf(),
        size,
        cap,
        what,
    };
    if size > cap {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > cap {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads the whole of `path`, a regular file (links are followed) of at
/// most `cap` bytes; `what` names the kind of file in the error ("a
/// configuration file"). The file is opened non-blocking so that a FIFO is
/// refused instead of waiting for a writer, and the size is checked both
/// before reading and while reading (a file that grows meanwhile).
pub fn read_bounded(path: &Path, cap: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path)?;
    read_open_bounded(&file, path, meta.len(), cap, what)
}

/// [`read_bounded`] for text: the bytes must be UTF-8.
pub fn read_bounded_string(path: &Path, cap: u64, what: &'static str) -> Result<String, ReadError> {
    let bytes = read_bounded(path, cap, what)?;
    utf8(path, bytes)
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ReadError> {
    String::from_utf8(bytes).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        ),
    })
}

/// [`read_bounded_string`] for the kernel's files in /proc and /sys, whose
/// stat size says nothing (0, or a page): only what the read returns is
/// held against `cap`.
pub fn read_kernel_file(path: &Path, cap: u64, what: &'static str) -> Result<String, ReadError> {
    let (file, _) = open_regular(path)?;
    let bytes = read_open_bounded(&file, path, 0, cap, what)?;
    utf8(path, bytes)
}

/// The last at most `cap` bytes of `path`, a regular file, and how many
/// bytes before them were left out. For logs, whose newest part is the one
/// worth keeping when they grew too large.
pub fn read_tail(path: &Path, cap: u64) -> Result<(Vec<u8>, u64), ReadError> {
    use std::io::{Read, Seek, SeekFrom};
    let io_err = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (mut file, meta) = open_regular(path)?;
    let skipped = meta.len().saturating_sub(cap);
    file.seek(SeekFrom::Start(skipped)).map_err(io_err)?;
    // Whatever was appended since the stat is left out, not an error.
    let mut bytes = Vec::with_capacity((meta.len() - skipped) as usize);
    file.take(cap).read_to_end(&mut bytes).map_err(io_err)?;
    Ok((bytes, skipped))
}

#[cfg(test)]
mod bounded_read_tests {
    use super::*;

    #[test]
    fn reads_a_small_regular_file_and_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_bounded(&file, 3, "a test file").unwrap(), b"abc");
        assert_eq!(read_bounded(&link, 3, "a test file").unwrap(), b"abc");
    }

    #[test]
    fn refuses_a_file_over_the_cap_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sparse");
        let f = File::create(&file).unwrap();
        f.set_len(1 << 30).unwrap();
        let err = read_bounded(&file, 4096, "a test file").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1073741824 bytes"), "{text}");
        assert!(text.contains("4096 allowed for a test file"), "{text}");
    }

    #[test]
    fn refuses_devices_fifos_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read_bounded(&link, 4096, "a test file").unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
        let fifo = dir.path().join("fifo");
        crate::sys::mkfifo(&fifo, 0o600).unwrap();
        let err = read_bounded(&fifo, 4096, "a test file").unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let err = read_bounded(dir.path(), 4096, "a test file").unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = read_bounded(&dir.path().join("none"), 1, "a test file").unwrap_err();
        assert!(err.is_not_found());
    }

    #[test]
    fn kernel_files_are_read_whatever_their_stat_size() {
        // /proc files say 0 bytes; the cap holds against what is read.
        let text = read_kernel_file(Path::new("/proc/self/status"), 1 << 20, "a test file");
        assert!(text.unwrap().contains("Pid:"));
        let err = read_kernel_file(Path::new("/proc/self/status"), 16, "a test file");
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("more than the 16 allowed")
        );
    }

    #[test]
    fn open_checked_does_not_wait_on_a_fifo_and_leaves_it_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        crate::sys::mkfifo(&fifo, 0o600).unwrap();
        let (file, meta) = open_checked(&fifo, false, |_| true).unwrap();
        assert_eq!(file_kind(meta.file_type()), "a FIFO");
        let flags = crate::sys::status_flags(&file).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.reason(), "is a FIFO, not a regular file");
    }

    #[test]
    fn read_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("log");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_tail(&file, 4).unwrap(), (b"6789".to_vec(), 6));
        assert_eq!(read_tail(&file, 10).unwrap(), (b"0123456789".to_vec(), 0));
        assert_eq!(read_tail(&file, 99).unwrap(), (b"0123456789".to_vec(), 0));
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_tail(&link, 4).is_err());
    }
}
