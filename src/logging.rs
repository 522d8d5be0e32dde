//! A small `log` backend writing to stderr, to a log file (`--log-file`)
//! or, for the daemon, to syslog.
//!
//! While a deployment log is active ([`set_deployment_log`]), every record
//! at info level or above is also appended to it, whatever the level.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::deployment_log::DeploymentLog;

type Syslog = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// Where records go.
enum Sink {
    Stderr,
    /// `--log-file`: time-stamped lines.
    File(std::fs::File),
    Syslog(Box<Syslog>),
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
                Sink::Syslog(syslog) => {
                    let message = record.args().to_string();
                    let _ = match record.level() {
                        log::Level::Error => syslog.err(message),
                        log::Level::Warn => syslog.warning(message),
                        log::Level::Info => syslog.info(message),
                        log::Level::Debug | log::Level::Trace => syslog.debug(message),
                    };
                }
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
    let logger =
        syslog::unix(syslog_format(process)).map_err(|e| std::io::Error::other(e.to_string()))?;
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Syslog(Box::new(logger));
    Ok(())
}

/// RFC 3164 lines, `<PRI>timestamp process[pid]: message`, facility daemon.
fn syslog_format(process: &str) -> syslog::Formatter3164 {
    syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: process.to_string(),
        pid: std::process::id(),
    }
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
        let server = UnixDatagram::bind(&socket).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        init_stderr(log::LevelFilter::Info);
        set_level(log::LevelFilter::Info); // no other unit test sets a level
        let logger = syslog::unix_custom(syslog_format("mender-rs-test"), &socket).unwrap();
        *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Syslog(Box::new(logger));
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
}
