//! A small `log` backend writing to stderr, to a log file (`--log-file`)
//! or, for the daemon, to syslog.
//!
//! While a deployment log is active ([`set_deployment_log`]), every record
//! at info level or above is also appended to it, whatever the level.

use std::io::Write;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::deployment_log::DeploymentLog;

/// Where records go.
enum Sink {
    Stderr,
    /// `--log-file`: time-stamped lines.
    File(std::fs::File),
    Syslog(Syslog),
}

static SINK: Mutex<Sink> = Mutex::new(Sink::Stderr);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        Some(metadata.level().to_level_filter())
            <= filter_from_usize(STDERR_LEVEL.load(Ordering::Acquire))
            || (metadata.level() <= log::Level::Info && DEPLOYMENT_ACTIVE.load(Ordering::Acquire))
    }

    fn log(&self, record: &log::Record) {
        let wanted = filter_from_usize(STDERR_LEVEL.load(Ordering::Acquire))
            .is_some_and(|max| record.level() <= max);
        if wanted {
            let level = record.level().as_str().to_ascii_lowercase();
            let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *sink {
                Sink::File(file) => {
                    let now = crate::deployment_log::rfc3339_utc(std::time::SystemTime::now());
                    let _ = writeln!(file, "{now} {level}: {}", record.args());
                }
                Sink::Stderr => {
                    let _ = writeln!(std::io::stderr(), "{level}: {}", record.args());
                }
                Sink::Syslog(syslog) => syslog.send(record.level(), record.args()),
            }
        }
        write_to_deployment_log(record);
    }

    fn flush(&self) {
        if let Sink::File(file) = &mut *SINK.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = file.flush();
        }
    }
}

/// The stderr level of the installed [`StderrLogger`] (a `LevelFilter` as
/// usize), or `usize::MAX` while none is installed.
static STDERR_LEVEL: AtomicUsize = AtomicUsize::new(usize::MAX);
static DEPLOYMENT_ACTIVE: AtomicBool = AtomicBool::new(false);
static DEPLOYMENT_LOG: Mutex<Option<ActiveDeploymentLog>> = Mutex::new(None);

struct ActiveDeploymentLog {
    log: DeploymentLog,
    /// A write failure was reported already.
    warned: bool,
}

/// Makes `log` the active deployment log (`None`: no deployment log) and
/// returns the previous one.
pub fn set_deployment_log(log: Option<DeploymentLog>) -> Option<DeploymentLog> {
    let mut active = DEPLOYMENT_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let is_some = log.is_some();
    let previous = std::mem::replace(
        &mut *active,
        log.map(|log| ActiveDeploymentLog { log, warned: false }),
    );
    DEPLOYMENT_ACTIVE.store(is_some, Ordering::Release);
    drop(active);
    update_max_level();
    previous.map(|a| a.log)
}

/// Whether a deployment log is active.
pub fn deployment_log_active() -> bool {
    DEPLOYMENT_ACTIVE.load(Ordering::Acquire)
}

/// Appends `record` to the active deployment log if there is one and the
/// record is at info level or above. Loggers call this for every record.
/// A write failure is reported once on stderr, then ignored.
pub fn write_to_deployment_log(record: &log::Record) {
    if record.level() > log::Level::Info || !DEPLOYMENT_ACTIVE.load(Ordering::Acquire) {
        return;
    }
    // Format before locking: formatting may log.
    let message = record.args().to_string();
    let mut active = DEPLOYMENT_LOG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(active) = active.as_mut()
        && let Err(e) = active.log.write_record(record.level(), &message)
        && !active.warned
    {
        active.warned = true;
        let _ = writeln!(
            std::io::stderr(),
            "warning: cannot write to the deployment log {}: {e}",
            active.log.path().display()
        );
    }
}

/// Lets info records through to the logger while a deployment log is
/// active; otherwise only what the stderr level wants.
fn update_max_level() {
    let Some(stderr) = filter_from_usize(STDERR_LEVEL.load(Ordering::Acquire)) else {
        return;
    };
    if DEPLOYMENT_ACTIVE.load(Ordering::Acquire) {
        log::set_max_level(stderr.max(log::LevelFilter::Info));
    } else {
        log::set_max_level(stderr);
    }
}

fn filter_from_usize(n: usize) -> Option<log::LevelFilter> {
    [
        log::LevelFilter::Off,
        log::LevelFilter::Error,
        log::LevelFilter::Warn,
        log::LevelFilter::Info,
        log::LevelFilter::Debug,
        log::LevelFilter::Trace,
    ]
    .into_iter()
    .find(|f| *f as usize == n)
}

/// Parses a level name as Mender spells them (`debug`, `info`, `warning`,
/// `error`, ...).
pub fn parse_level(name: &str) -> Option<log::LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => log::LevelFilter::Trace,
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" | "warning" => log::LevelFilter::Warn,
        "error" | "fatal" | "panic" => log::LevelFilter::Error,
        "off" => log::LevelFilter::Off,
        _ => return None,
    })
}

static LOGS_TO_FILE: AtomicBool = AtomicBool::new(false);

/// Whether `--log-file` sends log records to a file (not stderr).
pub fn logs_to_file() -> bool {
    LOGS_TO_FILE.load(Ordering::Acquire)
}

/// Logs to `path` (appending) instead of stderr.
pub fn init_file(level: log::LevelFilter, path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("log file {}: {e}", path.display())))?;
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::File(file);
    LOGS_TO_FILE.store(true, Ordering::Release);
    install(level);
    Ok(())
}

pub fn init_stderr(level: log::LevelFilter) {
    install(level);
}

/// Sends the records to syslog (facility daemon) from now on; stays with
/// the current sink when syslog cannot be reached.
pub fn use_syslog(process: &str) -> std::io::Result<()> {
    let paths = SYSLOG_SOCKETS.map(Path::new);
    let syslog = Syslog::open(process, &paths)?;
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Syslog(syslog);
    Ok(())
}

/// Where the local syslog daemon listens, in the order tried.
const SYSLOG_SOCKETS: [&str; 3] = ["/dev/log", "/var/run/syslog", "/var/run/log"];

/// How long sending one record may wait for a busy syslog daemon before the
/// record is dropped.
const SYSLOG_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the local syslog daemon that writes RFC 3164 records,
/// `<PRI>Mmm dd hh:mm:ss process[pid]: message`, facility daemon, local
/// time, as glibc's syslog(3) does.
struct Syslog {
    /// The socket connected to (again, after a failed send).
    path: PathBuf,
    /// `None` after a reconnection failed: the next record tries again.
    conn: Option<SyslogConn>,
    process: String,
    pid: u32,
    send_timeout: Duration,
    /// The record being sent, kept for its capacity.
    buf: Vec<u8>,
    /// A send timed out: until one goes through again, records are sent
    /// without waiting (and dropped when the daemon's queue is full), so a
    /// stalled syslog daemon costs one timeout, not one per record.
    stalled: bool,
}

enum SyslogConn {
    Datagram(UnixDatagram),
    /// A syslog daemon listening on a stream socket: records end with NUL.
    Stream(UnixStream),
}

impl Syslog {
    /// Connects to the first of `paths` that exists.
    fn open(process: &str, paths: &[&Path]) -> std::io::Result<Syslog> {
        for path in paths {
            match SyslogConn::connect(path, SYSLOG_SEND_TIMEOUT) {
                Ok(conn) => {
                    return Ok(Syslog {
                        path: path.to_path_buf(),
                        conn: Some(conn),
                        process: process.to_string(),
                        pid: std::process::id(),
                        send_timeout: SYSLOG_SEND_TIMEOUT,
                        buf: Vec::new(),
                        stalled: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    ));
                }
            }
        }
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no syslog socket ({})", names.join(", ")),
        ))
    }

    /// Sends one record; reconnects once if the send fails (the daemon was
    /// restarted, say). A record the daemon does not take within the send
    /// timeout, or that cannot be sent after reconnecting, is dropped.
    fn send(&mut self, level: log::Level, message: &std::fmt::Arguments) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let stamp = Stamp::local(SystemTime::now());
        format_record(
            &mut buf,
            level,
            stamp.as_ref(),
            &self.process,
            self.pid,
            message,
        );
        for _attempt in 0..2 {
            let conn = match self.conn.as_mut() {
                Some(conn) => conn,
                None => match SyslogConn::connect(&self.path, self.send_timeout) {
                    Ok(conn) => self.conn.insert(conn),
                    Err(_) => break,
                },
            };
            // Without waiting while stalled; with the send timeout again
            // once a record got through.
            if self.stalled {
                let _ = conn.set_nonblocking(true);
            }
            match conn.send(&mut buf) {
                Ok(()) => {
                    if self.stalled {
                        let _ = conn.set_nonblocking(false);
                        self.stalled = false;
                    }
                    break;
                }
                // Busy, not gone: a new connection would not help.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.stalled = true;
                    // A stream may have taken part of the record: start over.
                    if matches!(conn, SyslogConn::Stream(_)) {
                        self.conn = None;
                    }
                    break;
                }
                Err(_) => self.conn = None,
            }
        }
        self.buf = buf;
    }
}

impl SyslogConn {
    fn connect(path: &Path, send_timeout: Duration) -> std::io::Result<SyslogConn> {
        let socket = UnixDatagram::unbound()?;
        match socket.connect(path) {
            Ok(()) => {
                socket.set_write_timeout(Some(send_timeout))?;
                Ok(SyslogConn::Datagram(socket))
            }
            Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                crate::sys::connect_unix_stream(path, send_timeout).map(SyslogConn::Stream)
            }
            Err(e) => Err(e),
        }
    }

    fn set_nonblocking(&self, nonblocking: bool) -> std::io::Result<()> {
        match self {
            SyslogConn::Datagram(socket) => socket.set_nonblocking(nonblocking),
            SyslogConn::Stream(stream) => stream.set_nonblocking(nonblocking),
        }
    }

    /// Sends `record` (and, on a stream, appends its NUL terminator).
    fn send(&mut self, record: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            SyslogConn::Datagram(socket) => socket.send(record).map(drop),
            SyslogConn::Stream(stream) => {
                record.push(0);
                let sent = stream.write_all(record);
                record.pop();
                sent
            }
        }
    }
}

/// The RFC 3164 time stamp fields of an instant, in local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// 0 (January) to 11.
    month: usize,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Stamp {
    /// `None` when the C library cannot convert `time`.
    fn local(time: SystemTime) -> Option<Stamp> {
        let secs = time.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let secs = libc::time_t::try_from(secs).ok()?;
        let tm = crate::sys::localtime(secs)?;
        let field = |v: libc::c_int| u32::try_from(v).ok();
        Some(Stamp {
            month: usize::try_from(tm.tm_mon).ok().filter(|m| *m < 12)?,
            day: field(tm.tm_mday)?,
            hour: field(tm.tm_hour)?,
            minute: field(tm.tm_min)?,
            second: field(tm.tm_sec)?,
        })
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Facility daemon (3) in the PRI value: facility * 8 + severity.
const FACILITY_DAEMON: u8 = 3 << 3;

/// Syslog severity of a log level: err 3, warning 4, info 6, debug 7.
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Appends the RFC 3164 record `<PRI>Mmm dd hh:mm:ss process[pid]: message`
/// (the day space-padded) to `out`; without a time stamp when `stamp` is
/// `None`, and the syslog daemon stamps it.
fn format_record(
    out: &mut Vec<u8>,
    level: log::Level,
    stamp: Option<&Stamp>,
    process: &str,
    pid: u32,
    message: &std::fmt::Arguments,
) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "<{}>", FACILITY_DAEMON | severity(level));
    if let Some(s) = stamp {
        let month = MONTHS.get(s.month).copied().unwrap_or("Jan");
        let _ = write!(
            out,
            "{month} {:>2} {:02}:{:02}:{:02} ",
            s.day, s.hour, s.minute, s.second
        );
    }
    let _ = write!(out, "{process}[{pid}]: {message}");
}

/// Changes the level of the installed logger.
pub fn set_level(level: log::LevelFilter) {
    STDERR_LEVEL.store(level as usize, Ordering::Release);
    update_max_level();
}

fn install(level: log::LevelFilter) {
    if log::set_logger(&Logger).is_ok() {
        set_level(level);
    }
}

#[cfg(test)]
mod syslog_tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn records_reach_syslog_with_the_daemon_facility_and_their_severity() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        let server = listen(&socket);
        init_stderr(log::LevelFilter::Info);
        set_level(log::LevelFilter::Info); // no other unit test sets a level
        let syslog =
            Syslog::open("mender-rs-test", &[Path::new("/nonexistent/log"), &socket]).unwrap();
        *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Syslog(syslog);
        let tag = format!("syslog check {}", std::process::id());
        log::error!("{tag} error");
        log::warn!("{tag} warning");
        log::info!("{tag} info");
        log::debug!("{tag} debug (below the level)");
        *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Stderr;

        // Other tests of this process may log meanwhile: keep only ours.
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < 3 {
            let n = server.recv(&mut buf).expect("a syslog datagram within 5 s");
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            if line.contains(&tag) {
                got.push(line);
            }
        }
        // daemon = 3, severities error 3, warning 4, info 6: PRI = 8 * 3 + s.
        let pid = std::process::id();
        for (line, (pri, what)) in got
            .iter()
            .zip([(27, "error"), (28, "warning"), (30, "info")])
        {
            assert!(line.starts_with(&format!("<{pri}>")), "{line}");
            assert!(
                line.contains(&format!("mender-rs-test[{pid}]: {tag} {what}")),
                "{line}"
            );
        }
        server
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        while let Ok(n) = server.recv(&mut buf) {
            let line = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !line.contains(&tag),
                "a record below the level was sent: {line}"
            );
        }
    }

    fn record(level: log::Level, stamp: Option<&Stamp>, message: &str) -> String {
        let mut out = Vec::new();
        format_record(
            &mut out,
            level,
            stamp,
            "mender-rs",
            42,
            &format_args!("{message}"),
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn records_follow_rfc_3164() {
        let stamp = Stamp {
            month: 0,
            day: 5,
            hour: 7,
            minute: 3,
            second: 9,
        };
        for (level, pri) in [
            (log::Level::Error, 27),
            (log::Level::Warn, 28),
            (log::Level::Info, 30),
            (log::Level::Debug, 31),
            (log::Level::Trace, 31),
        ] {
            assert_eq!(
                record(level, Some(&stamp), "hello: world"),
                format!("<{pri}>Jan  5 07:03:09 mender-rs[42]: hello: world")
            );
        }
        // Two-digit days are not padded; months by their English short name.
        let stamp = Stamp {
            month: 11,
            day: 24,
            hour: 23,
            minute: 59,
            second: 58,
        };
        assert_eq!(
            record(log::Level::Info, Some(&stamp), "x"),
            "<30>Dec 24 23:59:58 mender-rs[42]: x"
        );
        let months: Vec<String> = (0..12)
            .map(|month| {
                let stamp = Stamp { month, ..stamp };
                record(log::Level::Info, Some(&stamp), "x")[4..7].to_string()
            })
            .collect();
        assert_eq!(
            months.join(" "),
            "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec"
        );
        // No time stamp when the C library gives none: the daemon adds one.
        assert_eq!(record(log::Level::Warn, None, "x"), "<28>mender-rs[42]: x");
    }

    #[test]
    fn the_time_stamp_is_local_time() {
        // 2024-02-29 12:00:07 UTC: 29 February from UTC-12 to UTC+11, 1 March
        // east of that; no time zone offset has seconds.
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_208_007);
        let stamp = Stamp::local(leap).unwrap();
        assert!(
            [(1, 29), (2, 1)].contains(&(stamp.month, stamp.day)),
            "{stamp:?}"
        );
        assert!(stamp.hour < 24 && stamp.minute < 60, "{stamp:?}");
        assert_eq!(stamp.second, 7);
        let now = Stamp::local(SystemTime::now()).unwrap();
        assert!(now.month < 12 && (1..=31).contains(&now.day));
    }

    /// A syslog daemon's socket at `socket` that waits up to 5 s for a
    /// record.
    fn listen(socket: &Path) -> UnixDatagram {
        let server = UnixDatagram::bind(socket).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        server
    }

    fn receive(server: &UnixDatagram) -> String {
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).expect("a syslog datagram within 5 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_restarted_syslog_daemon_gets_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        let server = listen(&socket);
        let mut syslog = Syslog::open("restart-test", &[&socket]).unwrap();
        syslog.send(log::Level::Info, &format_args!("before"));
        let pid = std::process::id();
        let line = receive(&server);
        assert!(
            line.ends_with(&format!("restart-test[{pid}]: before")),
            "{line}"
        );
        // The daemon goes away and comes back on the same path.
        drop(server);
        std::fs::remove_file(&socket).unwrap();
        syslog.send(log::Level::Info, &format_args!("while away"));
        let server = listen(&socket);
        syslog.send(log::Level::Warn, &format_args!("after"));
        let line = receive(&server);
        assert!(line.starts_with("<28>"), "{line}");
        assert!(
            line.ends_with(&format!("restart-test[{pid}]: after")),
            "{line}"
        );
    }

    #[test]
    fn a_stalled_syslog_daemon_does_not_block_logging() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        // Never reads: its queue fills up.
        let server = UnixDatagram::bind(&socket).unwrap();
        let mut syslog = Syslog::open("stall-test", &[&socket]).unwrap();
        let timeout = Duration::from_millis(20);
        syslog.send_timeout = timeout;
        syslog.conn = Some(SyslogConn::connect(&socket, timeout).unwrap());
        // Fill the queue: a send then waits for the timeout and gives up.
        let mut full = false;
        for i in 0..10_000 {
            let start = std::time::Instant::now();
            syslog.send(log::Level::Info, &format_args!("record {i}"));
            if start.elapsed() >= timeout / 2 {
                full = true;
                break;
            }
        }
        assert!(full, "the receive queue never filled up");
        // Stalled now: the next records are dropped without waiting again.
        let start = std::time::Instant::now();
        for _ in 0..20 {
            syslog.send(log::Level::Info, &format_args!("dropped"));
        }
        assert!(start.elapsed() < timeout * 10, "{:?}", start.elapsed());
        // Busy is not gone: the connection stays.
        assert!(matches!(syslog.conn, Some(SyslogConn::Datagram(_))));
        assert!(syslog.stalled);
        // Once the daemon reads again, records go through and sends wait
        // again when needed.
        let mut drain = [0u8; 512];
        server.set_nonblocking(true).unwrap();
        while server.recv(&mut drain).is_ok() {}
        syslog.send(log::Level::Info, &format_args!("through"));
        assert!(!syslog.stalled);
    }

    #[test]
    fn a_stream_socket_gets_nul_terminated_records() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let mut syslog = Syslog::open("stream-test", &[&socket]).unwrap();
        assert!(matches!(syslog.conn, Some(SyslogConn::Stream(_))));
        let (mut server, _) = listener.accept().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        syslog.send(log::Level::Error, &format_args!("one"));
        syslog.send(log::Level::Debug, &format_args!("two"));
        drop(syslog);
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        let got = String::from_utf8(got).unwrap();
        let records: Vec<&str> = got.split_terminator('\0').collect();
        let pid = std::process::id();
        assert_eq!(records.len(), 2, "{got:?}");
        assert!(records[0].starts_with("<27>"), "{got:?}");
        assert!(
            records[0].ends_with(&format!("stream-test[{pid}]: one")),
            "{got:?}"
        );
        assert!(records[1].starts_with("<31>"), "{got:?}");
        assert!(
            records[1].ends_with(&format!("stream-test[{pid}]: two")),
            "{got:?}"
        );
    }

    #[test]
    fn without_a_syslog_socket_opening_fails() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("log");
        let e = Syslog::open("x", &[&missing]).err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        // A path that is no socket is an error, not skipped.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(Syslog::open("x", &[&file, &missing]).is_err());
    }
}
