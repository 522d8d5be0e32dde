//! The one supervisor of external programs: state scripts, Update Modules,
//! identity and inventory scripts, boot environment tools and the reboot
//! command all run through [`Spec`].
//!
//! Every program runs in a process group of its own, with stdin on
//! `/dev/null` or fed from a byte buffer, and with stdout and stderr either
//! on `/dev/null` (cap 0) or read into buffers of at most the caller's cap:
//! what goes beyond is read and dropped, so a chatty program never blocks on
//! a full pipe, and the record says the stream was truncated. Output is
//! read with poll(2) by the calling thread (no helper threads).
//!
//! Every wait is bounded: past its deadline the group gets SIGTERM, then
//! SIGKILL after a grace period, and the leader is reaped for at most
//! [`REAP_WAIT`] (a process stuck in the kernel cannot hang us). Once the
//! leader exited, output is read for at most [`DRAIN_LINGER`] more (a
//! process it left behind may keep a pipe open; the record says so).
//! Processes a program leaves behind after a normal exit are left alone;
//! [`Running::terminate`] (a timeout, an abort) ends the whole group.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Default time between SIGTERM and SIGKILL (never longer than the
/// timeout itself).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Longest wait for a killed leader to be reaped.
pub const REAP_WAIT: Duration = Duration::from_secs(5);
/// How long output is still read after the leader exited.
pub const DRAIN_LINGER: Duration = Duration::from_secs(1);
/// How long output is still read after the group was killed.
const KILL_DRAIN: Duration = Duration::from_millis(200);
/// How long a start failing with ETXTBSY is retried (another thread of ours
/// may hold a just-written executable open across its own fork).
const TXTBSY_RETRY: Duration = Duration::from_secs(2);
/// Longest single sleep while nothing happens on the pipes.
const POLL_MAX: Duration = Duration::from_millis(20);
/// Read size; the only per-call buffer besides the captures.
const CHUNK: usize = 8192;

/// What a program gets on its stdin.
#[derive(Debug, Clone, Default)]
pub enum Input {
    /// `/dev/null`.
    #[default]
    Null,
    /// These bytes, then end of file. A program that exits without reading
    /// them all is judged by its exit status alone.
    Bytes(Vec<u8>),
}

/// How to run one program.
#[derive(Debug, Clone)]
pub struct Spec {
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    stdin: Input,
    stdout_cap: usize,
    stderr_cap: usize,
    timeout: Duration,
    grace: Duration,
}

impl Spec {
    /// `program` without arguments, cwd `/`, stdin and outputs on
    /// `/dev/null`, timeout `timeout`, grace [`DEFAULT_GRACE`].
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> Spec {
        Spec {
            program: program.into(),
            args: Vec::new(),
            cwd: PathBuf::from("/"),
            stdin: Input::Null,
            stdout_cap: 0,
            stderr_cap: 0,
            timeout,
            grace: DEFAULT_GRACE,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Spec {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Spec {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Spec {
        self.cwd = dir.into();
        self
    }

    pub fn stdin(mut self, input: Input) -> Spec {
        self.stdin = input;
        self
    }

    /// Keep at most `cap` bytes of stdout (0: stdout goes to /dev/null).
    pub fn stdout_cap(mut self, cap: usize) -> Spec {
        self.stdout_cap = cap;
        self
    }

    /// Keep at most `cap` bytes of stderr (0: stderr goes to /dev/null).
    pub fn stderr_cap(mut self, cap: usize) -> Spec {
        self.stderr_cap = cap;
        self
    }

    /// Time between SIGTERM and SIGKILL once the deadline passed (capped
    /// by the timeout).
    pub fn grace(mut self, grace: Duration) -> Spec {
        self.grace = grace;
        self
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs the program to its end (or its deadline).
    pub fn run(&self) -> io::Result<Record> {
        let mut running = self.spawn()?;
        running.finish()
    }

    /// Starts the program; the caller drives it with [`Running`].
    pub fn spawn(&self) -> io::Result<Running> {
        let pipe_or_null = |cap: usize| {
            if cap == 0 {
                Stdio::null()
            } else {
                Stdio::piped()
            }
        };
        let started = Instant::now();
        let mut nap = Duration::from_millis(2);
        let mut child = loop {
            let spawned = Command::new(&self.program)
                .args(&self.args)
                .current_dir(&self.cwd)
                .process_group(0)
                .stdin(match self.stdin {
                    Input::Null => Stdio::null(),
                    Input::Bytes(_) => Stdio::piped(),
                })
                .stdout(pipe_or_null(self.stdout_cap))
                .stderr(pipe_or_null(self.stderr_cap))
                .spawn();
            match spawned {
                Ok(child) => break child,
                Err(e)
                    if e.raw_os_error() == Some(libc::ETXTBSY)
                        && started.elapsed() < TXTBSY_RETRY =>
                {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        };
        let stdin = match (&self.stdin, child.stdin.take()) {
            (Input::Bytes(bytes), Some(pipe)) => {
                // Non-blocking: a program that does not read must not
                // block our write.
                crate::sys::set_nonblocking(&pipe, true)?;
                Some(Feed {
                    pipe,
                    data: bytes.clone(),
                    written: 0,
                })
            }
            _ => None,
        };
        Ok(Running {
            stdin,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            out: Captured::new(self.stdout_cap),
            err: Captured::new(self.stderr_cap),
            child,
            started,
            deadline: started.checked_add(self.timeout),
            timeout: self.timeout,
            grace: self.grace.min(self.timeout),
            exit: None,
            reaped: false,
            abandoned: false,
        })
    }
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Still running at its deadline; its group was killed.
    TimedOut,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => write!(f, "killed by signal {signal}"),
            Exit::TimedOut => f.write_str("timed out"),
        }
    }
}

/// One output stream as captured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// At most the cap's worth of the stream's first bytes.
    pub data: Vec<u8>,
    /// More was written (and dropped).
    pub truncated: bool,
    /// A process the program left behind still held the stream open when
    /// we stopped reading: the data may be incomplete.
    pub held_open: bool,
    cap: usize,
}

impl Captured {
    fn new(cap: usize) -> Captured {
        Captured {
            cap,
            ..Captured::default()
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.data.len());
        self.data.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= data.len() > room;
    }

    /// The non-blank lines, lossily decoded, a trailing `\r` removed: for
    /// logging.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.data
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| String::from_utf8_lossy(l).into_owned())
    }
}

/// What became of one run.
#[derive(Debug, Clone)]
pub struct Record {
    pub exit: Exit,
    /// From the start to the leader's end (or to the kill).
    pub elapsed: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// Bytes still to be written to the program's stdin.
struct Feed {
    pipe: ChildStdin,
    data: Vec<u8>,
    written: usize,
}

/// A started program. Dropping one that has not ended kills its group.
pub struct Running {
    child: Child,
    stdin: Option<Feed>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    out: Captured,
    err: Captured,
    started: Instant,
    deadline: Option<Instant>,
    timeout: Duration,
    grace: Duration,
    /// The leader's end, once seen.
    exit: Option<Exit>,
    reaped: bool,
    /// The leader outlived SIGKILL by [`REAP_WAIT`]: no more waiting.
    abandoned: bool,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the program is killed (`None`: a timeout too long to count).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline.
    pub fn time_left(&self) -> Duration {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::MAX)
    }

    /// The leader's exit if it has ended. It is not reaped, so its process
    /// group id stays reserved for a later kill.
    pub fn peek(&mut self) -> io::Result<Option<Exit>> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C
        // struct; waitid only writes into the one we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; WNOWAIT leaves the child waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: waitid filled in a SIGCHLD siginfo, or left it zeroed
        // (pid 0) when the child is still running.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let exit = if info.si_code == libc::CLD_EXITED {
            Exit::Code(status)
        } else {
            Exit::Signal(status)
        };
        self.exit = Some(exit);
        Ok(Some(exit))
    }

    /// Waits up to `wait` for `fd` to be ready for `events` while feeding
    /// stdin and reading the outputs; true when `fd` is ready (or in error,
    /// which the next read or write reports). For callers that talk to the
    /// program through other channels (an Update Module's FIFOs) and must
    /// keep its pipes flowing meanwhile.
    pub fn wait_fd(
        &mut self,
        fd: RawFd,
        events: libc::c_short,
        wait: Duration,
    ) -> io::Result<bool> {
        self.pump(Some((fd, events)), wait).map(|(_, ready)| ready)
    }

    /// Reads output (and feeds stdin) for up to `wait`, returning early on
    /// any activity.
    pub fn pump_for(&mut self, wait: Duration) -> io::Result<()> {
        self.pump(None, wait).map(drop)
    }

    /// Waits up to `limit` for the leader to end, keeping the pipes flowing.
    pub fn wait_exit(&mut self, limit: Duration) -> io::Result<Option<Exit>> {
        let until = Instant::now().checked_add(limit);
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(exit) = self.peek()? {
                return Ok(Some(exit));
            }
            let left = until.map_or(Duration::MAX, |u| {
                u.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Ok(None);
            }
            if self.pump(None, nap.min(left))?.0 {
                nap = Duration::from_millis(1);
            } else {
                nap = (nap * 2).min(POLL_MAX);
            }
        }
    }

    /// Waits for the end within the deadline (past it, terminates the
    /// group), reads the rest of the output and reaps the leader.
    pub fn finish(&mut self) -> io::Result<Record> {
        let exit = match self.wait_exit(self.time_left()) {
            Ok(Some(exit)) => exit,
            Ok(None) => {
                self.terminate();
                Exit::TimedOut
            }
            Err(e) => {
                self.terminate();
                return Err(e);
            }
        };
        let elapsed = self.started.elapsed();
        if exit != Exit::TimedOut {
            self.stdin = None;
            self.drain(DRAIN_LINGER);
            self.reap(REAP_WAIT);
        }
        let (stdout, stderr) = self.take_output();
        Ok(Record {
            exit,
            elapsed,
            stdout,
            stderr,
        })
    }

    /// Ends the whole group: SIGTERM, up to the grace period for the leader
    /// to go, then SIGKILL for whatever is left (also when the leader had
    /// already ended: processes it left behind). Reaps the leader (bounded)
    /// and reads what output is left for a moment.
    pub fn terminate(&mut self) {
        if self.reaped || self.abandoned {
            return;
        }
        if matches!(self.peek(), Ok(None)) {
            self.signal_group(libc::SIGTERM);
            if !matches!(self.wait_exit(self.grace), Ok(Some(_))) {
                log::warn!(
                    "process {} still running {:?} after SIGTERM; killing it",
                    self.child.id(),
                    self.grace
                );
            }
        }
        self.signal_group(libc::SIGKILL);
        self.stdin = None;
        self.reap(REAP_WAIT);
        self.drain(KILL_DRAIN);
    }

    /// The output captured so far (what is read later is kept anew).
    pub fn take_output(&mut self) -> (Captured, Captured) {
        let out = Captured::new(self.out.cap);
        let err = Captured::new(self.err.cap);
        (
            std::mem::replace(&mut self.out, out),
            std::mem::replace(&mut self.err, err),
        )
    }

    /// The timeout the program was given.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn signal_group(&self, signal: libc::c_int) {
        let Ok(pgid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: a plain system call. The leader is not reaped yet, so
        // its id still names the group we created.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }

    /// Reaps the leader once it ended, waiting at most `limit` for that.
    fn reap(&mut self, limit: Duration) {
        if self.reaped || self.abandoned {
            return;
        }
        match self.wait_exit(limit) {
            Ok(Some(_)) => {
                // It has ended: this wait returns at once.
                let _ = self.child.wait();
                self.reaped = true;
            }
            Ok(None) => {
                self.abandoned = true;
                log::warn!(
                    "process {} did not end within {limit:?} after SIGKILL; not waiting for it",
                    self.child.id()
                );
            }
            Err(e) => {
                self.abandoned = true;
                log::warn!("waiting for process {}: {e}", self.child.id());
            }
        }
    }

    /// Reads the outputs until both are at end of file or `limit` passed;
    /// a stream still open then is marked as held open and closed.
    fn drain(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.stdout.is_some() || self.stderr.is_some() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.pump(None, left).is_err() {
                break;
            }
        }
        if self.stdout.take().is_some() {
            self.out.held_open = true;
        }
        if self.stderr.take().is_some() {
            self.err.held_open = true;
        }
    }

    /// One poll(2) over stdin, stdout, stderr and `extra`, at most `wait`
    /// long, then one write or read on each ready pipe. Returns whether
    /// anything was ready, and whether `extra` was.
    fn pump(
        &mut self,
        extra: Option<(RawFd, libc::c_short)>,
        wait: Duration,
    ) -> io::Result<(bool, bool)> {
        const NONE: libc::pollfd = libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        };
        // Slots: 0 stdin, 1 stdout, 2 stderr, 3 extra; -1 fds are ignored.
        let mut fds = [NONE; 4];
        if let Some(feed) = &self.stdin {
            fds[0] = pollfd(feed.pipe.as_raw_fd(), libc::POLLOUT);
        }
        if let Some(p) = &self.stdout {
            fds[1] = pollfd(p.as_raw_fd(), libc::POLLIN);
        }
        if let Some(p) = &self.stderr {
            fds[2] = pollfd(p.as_raw_fd(), libc::POLLIN);
        }
        if let Some((fd, events)) = extra {
            fds[3] = pollfd(fd, events);
        }
        let ms = wait.as_micros().div_ceil(1000).min(1000) as libc::c_int;
        match crate::sys::poll(&mut fds, ms) {
            Ok(0) => return Ok((false, false)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok((false, false)),
            Err(e) => return Err(e),
        }
        if fds[0].revents != 0 {
            self.feed();
        }
        let mut buf = [0u8; CHUNK];
        if fds[1].revents != 0 && read_into(self.stdout.as_mut(), &mut buf, &mut self.out) {
            self.stdout = None;
        }
        if fds[2].revents != 0 && read_into(self.stderr.as_mut(), &mut buf, &mut self.err) {
            self.stderr = None;
        }
        Ok((true, fds[3].revents != 0))
    }

    /// Writes what stdin takes without blocking; closes it when all is
    /// written or the program closed its end.
    fn feed(&mut self) {
        let Some(feed) = self.stdin.as_mut() else {
            return;
        };
        let done = loop {
            if feed.written >= feed.data.len() {
                break true;
            }
            match feed.pipe.write(&feed.data[feed.written..]) {
                Ok(0) => break true,
                Ok(n) => feed.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                // EPIPE: the program does not want the rest.
                Err(_) => break true,
            }
        };
        if done {
            self.stdin = None;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.reaped || self.abandoned {
            return;
        }
        if self.exit.is_none() {
            // Not ended and nobody waits for it any more: no grace.
            self.signal_group(libc::SIGKILL);
        }
        self.reap(REAP_WAIT);
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// One read from a ready pipe into `capture`; true at end of file or on
/// an error (the pipe is done).
fn read_into<P: Read>(pipe: Option<&mut P>, buf: &mut [u8], capture: &mut Captured) -> bool {
    let Some(pipe) = pipe else { return false };
    match pipe.read(buf) {
        Ok(0) => true,
        Ok(n) => {
            capture.push(&buf[..n]);
            false
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) =>
        {
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Spec {
        Spec::new("/bin/sh", timeout).arg("-c").arg(script)
    }

    #[test]
    fn captures_and_caps() {
        let r = sh("echo out; echo err >&2; exit 3", Duration::from_secs(10))
            .stdout_cap(100)
            .stderr_cap(2)
            .run()
            .unwrap();
        assert_eq!(r.exit, Exit::Code(3));
        assert_eq!(r.stdout.data, b"out\n");
        assert!(!r.stdout.truncated);
        assert_eq!(r.stderr.data, b"er");
        assert!(r.stderr.truncated);
    }

    #[test]
    fn stdin_bytes_and_signals() {
        let big = vec![b'x'; 1 << 20];
        let r = sh("wc -c", Duration::from_secs(10))
            .stdin(Input::Bytes(big))
            .stdout_cap(64)
            .run()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout.data).trim(), "1048576");
        // Not read at all: judged by the exit status.
        let r = sh("exit 0", Duration::from_secs(10))
            .stdin(Input::Bytes(vec![0; 1 << 20]))
            .run()
            .unwrap();
        assert!(r.exit.success());
        let r = sh("kill -9 $$", Duration::from_secs(10)).run().unwrap();
        assert_eq!(r.exit, Exit::Signal(9));
    }

    #[test]
    fn deadline_kills_the_group() {
        let started = Instant::now();
        let r = sh("trap '' TERM; sleep 30 & wait", Duration::from_millis(200))
            .stdout_cap(10)
            .run()
            .unwrap();
        assert_eq!(r.exit, Exit::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn lines_for_logging() {
        let c = Captured {
            data: b"a\r\n\n  \nb".to_vec(),
            ..Captured::default()
        };
        assert_eq!(c.lines().collect::<Vec<_>>(), ["a", "b"]);
    }
}
