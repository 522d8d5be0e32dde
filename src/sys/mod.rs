//! The system calls std does not offer, as small safe functions: the one
//! place (with `crate::process`, which forks and reaps) where the crate
//! uses `unsafe`, so an auditor reads these files and nothing else (see
//! `docs/architecture.md`). Everything here is a thin wrapper: the policy
//! stays with the caller.
//!
//! Every `unsafe` block says, in its `// SAFETY:` comment, why it is sound.
//! Raw descriptors are only taken where the call cannot touch memory
//! (`poll`, `write` of our own byte): a wrong number there fails with
//! `EBADF` or reaches another descriptor, never memory.

pub mod code_pages;
#[cfg(feature = "mender-store")]
pub mod lmdb;
pub mod tcp;

use std::ffi::CString;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// `path` as a C string; a NUL inside is refused.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// A pipe, both ends close-on-exec and non-blocking: (read end, write end).
pub fn pipe_nonblocking() -> io::Result<(File, File)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is an array of two ints that pipe2 fills on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors nothing else owns.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// poll(2) over `fds` for up to `timeout_ms` (-1: no limit). The number of
/// ready entries; `Interrupted` when a signal arrived first.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `fds`, which we borrow
    // mutably for the call; poll only writes their `revents`.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// The file status flags (`F_GETFL`: `O_NONBLOCK`, `O_APPEND`...) of `fd`.
pub fn status_flags(fd: impl AsFd) -> io::Result<libc::c_int> {
    // SAFETY: fcntl(F_GETFL) on a descriptor we borrow; no memory involved.
    let flags = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags)
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: impl AsFd, nonblocking: bool) -> io::Result<()> {
    let fd = fd.as_fd();
    let flags = status_flags(fd)?;
    let flags = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: fcntl(F_SETFL) with an integer argument on a descriptor we
    // borrow; no memory involved.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes one byte to `fd`, ignoring the outcome (a full pipe drops it).
/// Async-signal-safe: signal handlers use it on their self-pipe.
pub fn write_byte(fd: RawFd, byte: u8) {
    // SAFETY: write(2) reads one byte from a live local; a stale `fd`
    // fails with EBADF. write is async-signal-safe.
    unsafe { libc::write(fd, std::ptr::from_ref(&byte).cast(), 1) };
}

/// Ends the process at once with `code`: no destructors, no atexit
/// handlers, no flush. Async-signal-safe (`_exit(2)`).
pub fn exit_immediately(code: libc::c_int) -> ! {
    // SAFETY: _exit takes an integer and does not return; it is
    // async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Installs `handler` for `signal`, with `SA_RESTART` (system calls
/// elsewhere are resumed, not interrupted) and no signals masked. The
/// handler must only do async-signal-safe things (atomics,
/// [`write_byte`], [`exit_immediately`]).
pub fn install_signal_handler(
    signal: libc::c_int,
    handler: extern "C" fn(libc::c_int),
) -> io::Result<()> {
    // SAFETY: `sigaction` is plain C data; all zeroes is a valid value
    // (no flags, empty mask, default handler), filled in below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: sigemptyset writes only the mask we own; sigaction reads our
    // `action` and writes no old action (null). The handler is a plain
    // `extern "C" fn(c_int)`, the type SA_SIGINFO-less handlers have.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// kill(2): sends `signal` to process `pid`.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers only; no memory involved.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a FIFO at `path` with `mode` (filtered by the umask).
/// (std's `mkfifo` is not stable yet.)
pub fn mkfifo(path: &Path, mode: libc::mode_t) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c.as_ptr(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// clock_gettime(2) on `clock` (`CLOCK_BOOTTIME`, which std does not
/// offer, ...).
pub fn clock_gettime(clock: libc::clockid_t) -> io::Result<libc::timespec> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we own.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts)
}

/// `secs` since the epoch in local time (localtime_r(3)); `None` when the
/// C library cannot convert it.
pub fn localtime(secs: libc::time_t) -> Option<libc::tm> {
    // SAFETY: `tm` is plain data (integers and a pointer, which may be
    // null); all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r (reentrant) reads `secs` and writes only `tm`,
    // both ours for the duration of the call.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return None;
    }
    Some(tm)
}

/// `UnixStream::connect` with a time limit: connect(2) on a Unix stream
/// socket waits while the listener's backlog is full, as long as the
/// socket's send timeout allows. The stream keeps `timeout` as its write
/// timeout.
pub fn connect_unix_stream(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SO_SNDTIMEO: bounds connect(2) as well as the writes.
    stream.set_write_timeout(Some(timeout))?;
    // SAFETY: `sockaddr_un` is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // Keep the terminating NUL.
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid, NUL-terminated `sockaddr_un` of `len`
    // bytes that outlives the call; `fd` is open (owned by `stream`).
    let r = unsafe { libc::connect(fd, std::ptr::from_ref(&addr).cast::<libc::sockaddr>(), len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// pwritev(2): one positional gathering write of `slices` at `offset`,
/// straight from the caller's buffers (no copy). The bytes written, which
/// may be fewer than asked.
/// (std's vectored positional write is not stable yet.)
pub fn pwritev(file: &File, slices: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let count = libc::c_int::try_from(slices.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many slices"))?;
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std guarantees it
    // on Unix); every one points into a live slice of its stated length
    // that the kernel only reads; the count matches the array.
    let n = unsafe {
        libc::pwritev(
            file.as_raw_fd(),
            slices.as_ptr().cast::<libc::iovec>(),
            count,
            offset,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// sync_file_range(2) on `len` bytes of `file` from `offset`, with `flags`
/// (`SYNC_FILE_RANGE_*`).
pub fn sync_file_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: sync_file_range only reads its integer arguments.
    let r = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            flags,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Returns glibc's free heap memory to the kernel (malloc_trim(3)); does
/// nothing with other C libraries.
pub fn malloc_trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_made_and_flags_are_set_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo, 0o600).unwrap();
        let kind = std::fs::metadata(&fifo).unwrap().file_type();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kind));
        let (read, write) = pipe_nonblocking().unwrap();
        assert_ne!(status_flags(&read).unwrap() & libc::O_NONBLOCK, 0);
        set_nonblocking(&read, false).unwrap();
        assert_eq!(status_flags(&read).unwrap() & libc::O_NONBLOCK, 0);
        write_byte(write.as_raw_fd(), 7);
        let mut fds = [libc::pollfd {
            fd: read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, 1000).unwrap(), 1);
    }

    #[test]
    fn a_vectored_write_lands_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let n = pwritev(&file, &[IoSlice::new(b"ab"), IoSlice::new(b"cd")], 2).unwrap();
        assert_eq!(n, 4);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"\0\0abcd");
    }
}
