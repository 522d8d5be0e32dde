//! Signals to the daemon, as the Mender client uses them: `SIGUSR1` checks
//! for an update now, `SIGUSR2` sends the inventory now, `SIGTERM`/`SIGINT`
//! stop the daemon at its next idle moment.
//!
//! A stop asked for while a deployment runs ends the process at once, as
//! the Mender client (a Go program that does not catch `SIGTERM`) does:
//! every step of a deployment is persisted before it runs, so this is a
//! power loss the next start resumes from, and a service manager restarting
//! the daemon (an Update Module's `ArtifactReboot` may do that) does not
//! wait for its stop timeout.
//!
//! The handlers only set flags and write a byte to a pipe (the self-pipe
//! trick), so the idle wait is a `poll` on that pipe with a timeout. They
//! are installed with `SA_RESTART`, so system calls elsewhere are not
//! interrupted; child processes get the default handlers back at `exec`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use crate::sys;

static CHECK_UPDATE: AtomicBool = AtomicBool::new(false);
static SEND_INVENTORY: AtomicBool = AtomicBool::new(false);
static TERMINATE: AtomicBool = AtomicBool::new(false);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static BUSY: AtomicBool = AtomicBool::new(false);

/// Marks a deployment as running (a stop then exits at once).
pub fn set_busy(busy: bool) {
    BUSY.store(busy, Ordering::SeqCst);
}

/// Wakes the daemon's wait without a request of its own (the D-Bus thread,
/// `super::dbus`: the update control maps changed, or a token
/// fetch was asked for). An idle daemon goes on waiting; a paused
/// deployment looks at the maps again.
pub fn wake() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // A full pipe drops the byte (a wake-up is pending then).
        sys::write_byte(fd, 1);
    }
}

/// What woke the daemon.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    pub check_update: bool,
    pub send_inventory: bool,
    pub terminate: bool,
}

extern "C" fn on_signal(signal: libc::c_int) {
    match signal {
        libc::SIGUSR1 => CHECK_UPDATE.store(true, Ordering::SeqCst),
        libc::SIGUSR2 => SEND_INVENTORY.store(true, Ordering::SeqCst),
        _ => {
            if BUSY.load(Ordering::SeqCst) {
                // _exit(2): async-signal-safe.
                sys::exit_immediately(128 + signal);
            }
            TERMINATE.store(true, Ordering::SeqCst)
        }
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // Async-signal-safe; a full pipe just drops the byte (the flag is
        // set already).
        sys::write_byte(fd, 1);
    }
}

/// The read end of the self-pipe.
pub struct Signals {
    read: File,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = sys::pipe_nonblocking()?;
        // The write end lives as long as the process (the handler uses it).
        WAKE_FD.store(write.into_raw_fd(), Ordering::SeqCst);
        for signal in [
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
        ] {
            sys::install_signal_handler(signal, on_signal)?;
        }
        Ok(Signals { read })
    }

    /// Whether a stop was asked for (checked between steps).
    pub fn terminating(&self) -> bool {
        TERMINATE.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for a signal; returns (and clears) what
    /// arrived, nothing on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Wake {
        let pending = self.take();
        if pending != Wake::default() {
            return pending;
        }
        let mut pfd = libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let _ = sys::poll(std::slice::from_mut(&mut pfd), ms);
        let mut buf = [0u8; 64];
        while matches!(self.read.read(&mut buf), Ok(n) if n > 0) {}
        self.take()
    }

    fn take(&self) -> Wake {
        Wake {
            check_update: CHECK_UPDATE.swap(false, Ordering::SeqCst),
            send_inventory: SEND_INVENTORY.swap(false, Ordering::SeqCst),
            terminate: TERMINATE.load(Ordering::SeqCst),
        }
    }
}

/// The daemon's pid file in the data directory, locked while it runs, so a
/// second daemon refuses to start and `check-update` can tell a running
/// daemon from a stale file.
pub struct PidFile {
    _file: File,
}

pub const PID_FILE: &str = "mender-rs-daemon.pid";

/// Largest pid file read: a process id (at most 7 digits, `pid_max` being
/// at most 2^22) and a newline, with room for stray whitespace.
pub const MAX_PID_FILE_BYTES: u64 = 32;

/// The pid file's text, at most [`MAX_PID_FILE_BYTES`].
fn read_pid_text(file: &File, path: &Path) -> anyhow::Result<String> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bytes =
        crate::fsutil::read_open_bounded(file, path, size, MAX_PID_FILE_BYTES, "a pid file")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn pid_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PID_FILE)
}

impl PidFile {
    pub fn acquire(data_dir: &Path) -> anyhow::Result<PidFile> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| anyhow::anyhow!("data directory {}: {e}", data_dir.display()))?;
        let path = pid_file_path(data_dir);
        // Non-blocking, and only a regular file: a FIFO or a device there
        // is refused by name instead of being written to.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let kind = file
            .metadata()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .file_type();
        if !kind.is_file() {
            anyhow::bail!(
                "{}: is {}, not a regular file",
                path.display(),
                crate::fsutil::file_kind(kind)
            );
        }
        if file.try_lock().is_err() {
            let text = read_pid_text(&file, &path).unwrap_or_default();
            anyhow::bail!(
                "another mender-rs daemon is running (pid {}, {})",
                text.trim(),
                path.display()
            );
        }
        let write = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            file.sync_all()
        };
        write(&mut file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(PidFile { _file: file })
    }
}

/// Why [`signal_daemon`] did not signal a daemon.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No daemon holds the pid file's lock (the usual case from a shell).
    #[error("no mender-rs daemon is running (no lock on {})", .0.display())]
    NoDaemon(PathBuf),
    /// The pid file or the signal failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Sends `signal` to the running daemon of `data_dir`.
pub fn signal_daemon(data_dir: &Path, signal: libc::c_int) -> Result<u32, SignalError> {
    let path = pid_file_path(data_dir);
    let (file, _) = match crate::fsutil::open_regular(&path) {
        Ok(opened) => opened,
        Err(e) if e.is_not_found() => return Err(SignalError::NoDaemon(path)),
        Err(e) => return Err(anyhow::Error::from(e).into()),
    };
    // A shared lock we get means nobody holds the exclusive one: no daemon.
    if file.try_lock_shared().is_ok() {
        return Err(SignalError::NoDaemon(path));
    }
    let text = read_pid_text(&file, &path)?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{}: not a process id: {:?}", path.display(), text.trim()))?;
    if pid <= 0 {
        return Err(anyhow::anyhow!("{}: not a process id: {pid}", path.display()).into());
    }
    if let Err(e) = sys::kill(pid, signal) {
        return Err(anyhow::anyhow!("signalling the daemon (pid {pid}): {e}").into());
    }
    Ok(pid as u32)
}
