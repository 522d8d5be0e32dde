//! The deployment log (`docs/managed-mode.md`): the log records of one deployment, kept
//! in the data directory as JSON lines so that they can be uploaded to the
//! server when the deployment fails.
//!
//! Files are named `deployments.NNNN.<id>.log` as in Mender 3.x: the newest
//! log is `0001`; starting a new one renames the others up by one and keeps
//! at most [`MAX_LOGS`] in all. Each line is one record:
//! `{"level":"info","message":"...","timestamp":"2026-11-22T15:04:05Z"}`.
//!
//! While a deployment log is registered with
//! [`crate::logging::set_deployment_log`], every log record at info level or
//! above is appended to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fsutil::sync_dir;

/// How many deployment logs are kept (the new one included).
pub const MAX_LOGS: usize = 5;
/// Most of a deployment log read back for the server: its newest 1 MiB
/// (some 10 000 records, the end of the log being where a failure is told).
/// The server keeps a deployment's log in one MongoDB document of at most
/// 16 MiB, and the records are held in memory while sent.
pub const MAX_UPLOAD_BYTES: u64 = 1 << 20;

const PREFIX: &str = "deployments.";
const SUFFIX: &str = ".log";

/// An open deployment log.
#[derive(Debug)]
pub struct DeploymentLog {
    path: PathBuf,
    id: String,
    file: File,
}

impl DeploymentLog {
    /// Rotates and opens a new log for deployment `id` (id:
    /// `[A-Za-z0-9._-]+`, else error). Creates `data_dir` if needed.
    pub fn start(data_dir: &Path, id: &str) -> io::Result<DeploymentLog> {
        check_id(id)?;
        fs::create_dir_all(data_dir)?;
        rotate(data_dir)?;
        let path = data_dir.join(log_name(1, id));
        let file = open_append(&path)?;
        sync_dir(data_dir)?;
        Ok(DeploymentLog {
            path,
            id: id.to_owned(),
            file,
        })
    }

    /// Re-opens the newest log of `id` for appending (after a restart
    /// mid-deployment); creates it (as [`DeploymentLog::start`] does) if
    /// absent.
    pub fn resume(data_dir: &Path, id: &str) -> io::Result<DeploymentLog> {
        check_id(id)?;
        match newest_log_of(data_dir, id)? {
            Some(path) => {
                let file = open_append(&path)?;
                Ok(DeploymentLog {
                    path,
                    id: id.to_owned(),
                    file,
                })
            }
            None => DeploymentLog::start(data_dir, id),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends one record (one write of one line, then a flush).
    pub fn write_record(&mut self, level: log::Level, message: &str) -> io::Result<()> {
        let mut line = record_json(level, message, SystemTime::now()).to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }

    /// All records of the newest log of `id` (for upload to the server), as
    /// `serde_json::Value` objects. Lines that are not JSON objects with
    /// `timestamp`, `level` and `message` are skipped; no log means no
    /// records.
    pub fn read_records(data_dir: &Path, id: &str) -> io::Result<Vec<serde_json::Value>> {
        check_id(id)?;
        let Some(path) = newest_log_of(data_dir, id)? else {
            return Ok(Vec::new());
        };
        let (bytes, skipped) = crate::fsutil::read_tail(&path, MAX_UPLOAD_BYTES)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut lines = bytes.split(|&b| b == b'\n');
        let mut records = Vec::new();
        if skipped > 0 {
            // The first line is (most likely) cut: a note takes its place.
            lines.next();
        }
        for line in lines {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let complete = value.as_object().is_some_and(|o| {
                ["timestamp", "level", "message"]
                    .iter()
                    .all(|k| o.contains_key(*k))
            });
            if complete {
                records.push(value);
            }
        }
        if skipped > 0 {
            let note = format!(
                "(the first {skipped} bytes of this deployment log are left out: only its last {MAX_UPLOAD_BYTES} bytes are sent)"
            );
            let mut note = record_json(log::Level::Warn, &note, SystemTime::now());
            // Dated as the first record kept, so the order holds.
            if let Some(first) = records.first() {
                note["timestamp"] = first["timestamp"].clone();
            }
            records.insert(0, note);
        }
        Ok(records)
    }
}

fn check_id(id: &str) -> io::Result<()> {
    if crate::states::is_deployment_id(id) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid deployment id {id:?}"),
        ))
    }
}

fn log_name(number: usize, id: &str) -> String {
    format!("{PREFIX}{number:04}.{id}{SUFFIX}")
}

/// Parses `deployments.NNNN.<id>.log` into (NNNN, id).
fn parse_log_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (number, id) = rest.split_once('.')?;
    if number.len() < 4 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    check_id(id).ok()?;
    Some((number.parse().ok()?, id))
}

/// A deployment log file found in the data directory.
struct Found {
    number: u64,
    id: String,
    name: String,
}

/// The deployment logs in `data_dir`, newest first.
fn list_logs(data_dir: &Path) -> io::Result<Vec<Found>> {
    let entries = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some((number, id)) = parse_log_name(&name) {
            found.push(Found {
                number,
                id: id.to_owned(),
                name,
            });
        }
    }
    found.sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
    Ok(found)
}

fn newest_log_of(data_dir: &Path, id: &str) -> io::Result<Option<PathBuf>> {
    Ok(list_logs(data_dir)?
        .into_iter()
        .find(|f| f.id == id)
        .map(|f| data_dir.join(f.name)))
}

/// Renames the existing logs up by one (by position, so gaps close) and
/// deletes those that would get a number above [`MAX_LOGS`], leaving room
/// for a new `0001`.
fn rotate(data_dir: &Path) -> io::Result<()> {
    let logs = list_logs(data_dir)?;
    for (position, log) in logs.iter().enumerate().rev() {
        let from = data_dir.join(&log.name);
        let number = position + 2;
        if number > MAX_LOGS {
            remove_if_present(&from)?;
            continue;
        }
        let to = data_dir.join(log_name(number, &log.id));
        if to == from {
            continue;
        }
        if to.exists() {
            // Only possible with gaps and duplicate ids left by someone
            // else; the file taking the place is the newer one.
            remove_if_present(&from)?;
        } else {
            fs::rename(&from, &to)?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Opens a log for appending; a FIFO or device in its place is refused
/// (naming it), not waited on.
fn open_append(path: &Path) -> io::Result<File> {
    crate::fsutil::open_regular_with(
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600),
        path,
    )
    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Level names as logrus (and so the Mender server) spells them.
pub fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

fn record_json(level: log::Level, message: &str, time: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "level": level_name(level),
        "message": message,
        "timestamp": rfc3339_utc(time),
    })
}

/// `time` as RFC 3339 in UTC with whole seconds: `2026-11-22T15:04:05Z`.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        Err(e) => {
            // Before 1970: round down to the whole second.
            let d = e.duration();
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            -i64::try_from(secs).unwrap_or(i64::MAX / 2)
        }
    };
    let days = secs.div_euclid(86_400);
    let secs_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (eras of
/// 400 years starting on March 1st, so the leap day is last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_utc(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(at(1_795_359_845)), "2026-11-22T15:04:05Z");
        assert_eq!(rfc3339_utc(at(4_102_444_799)), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(at(1_709_164_800)), "2024-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn names() {
        assert_eq!(log_name(1, "abc-1"), "deployments.0001.abc-1.log");
        assert_eq!(
            parse_log_name("deployments.0003.a.b_c-d.log"),
            Some((3, "a.b_c-d"))
        );
        assert_eq!(parse_log_name("deployments.003.a.log"), None);
        assert_eq!(parse_log_name("deployments.0003..log"), None);
        assert_eq!(parse_log_name("deployments.000x.a.log"), None);
        assert_eq!(parse_log_name("deployments.0001.a.txt"), None);
        assert!(check_id("a/b").is_err());
        assert!(check_id("").is_err());
        assert!(check_id("..").is_err()); // one rule with the server client (states::is_deployment_id)
    }

    #[test]
    fn record_format() {
        let v = record_json(log::Level::Warn, "a \"b\"\nc", at(1_795_359_845));
        assert_eq!(
            v.to_string(),
            r#"{"level":"warning","message":"a \"b\"\nc","timestamp":"2026-11-22T15:04:05Z"}"#
        );
    }

    #[test]
    fn rotation_closes_gaps_and_keeps_five() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "deployments.0001.a.log",
            "deployments.0004.b.log",
            "deployments.0009.c.log",
            "deployments.0010.d.log",
            "deployments.0011.e.log",
            "other.log",
        ] {
            fs::write(dir.path().join(name), name).unwrap();
        }
        let log = DeploymentLog::start(dir.path(), "f").unwrap();
        assert_eq!(log.path(), dir.path().join("deployments.0001.f.log"));
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "deployments.0001.f.log",
                "deployments.0002.a.log",
                "deployments.0003.b.log",
                "deployments.0004.c.log",
                "deployments.0005.d.log",
                "other.log",
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("deployments.0004.c.log")).unwrap(),
            "deployments.0009.c.log"
        );
    }

    #[test]
    fn read_records_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeploymentLog::start(dir.path(), "x").unwrap();
        log.write_record(log::Level::Info, "first").unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(b"not json\n{\"level\":\"info\"}\n[1]\n\xff\xfe\n")
            .unwrap();
        log.write_record(log::Level::Error, "second").unwrap();
        let records = DeploymentLog::read_records(dir.path(), "x").unwrap();
        let messages: Vec<&str> = records
            .iter()
            .map(|r| r["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["first", "second"]);
        assert_eq!(records[1]["level"], "error");
        assert!(
            DeploymentLog::read_records(dir.path(), "nothing")
                .unwrap()
                .is_empty()
        );
        assert!(DeploymentLog::start(dir.path(), "bad id").is_err());
    }

    #[test]
    fn read_records_sends_only_the_newest_part_of_a_huge_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeploymentLog::start(dir.path(), "big").unwrap();
        log.write_record(log::Level::Info, "oldest").unwrap();
        let filler = "x".repeat(1000);
        let per_record = record_json(log::Level::Info, &filler, at(0))
            .to_string()
            .len()
            + 1;
        let count = 2 * MAX_UPLOAD_BYTES as usize / per_record;
        for _ in 0..count {
            log.write_record(log::Level::Info, &filler).unwrap();
        }
        log.write_record(log::Level::Error, "newest").unwrap();
        let records = DeploymentLog::read_records(dir.path(), "big").unwrap();
        let messages: Vec<&str> = records
            .iter()
            .map(|r| r["message"].as_str().unwrap())
            .collect();
        assert!(messages[0].contains("bytes of this deployment log are left out"));
        assert_eq!(records[0]["level"], "warning");
        assert_eq!(records[0]["timestamp"], records[1]["timestamp"]);
        assert_eq!(messages.last(), Some(&"newest"));
        assert!(!messages.contains(&"oldest"));
        let kept = messages.len() - 2;
        assert!(kept * per_record <= MAX_UPLOAD_BYTES as usize, "{kept}");
        assert!(
            (kept + 2) * per_record > MAX_UPLOAD_BYTES as usize,
            "{kept}"
        );
    }

    #[test]
    fn read_records_refuses_a_log_that_is_no_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(log_name(1, "z"));
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = DeploymentLog::read_records(dir.path(), "z").unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_log_that_is_a_fifo_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(log_name(1, "f"));
        crate::sys::mkfifo(&path, 0o600).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let data = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(DeploymentLog::resume(&data, "f").map(|_| ()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("resume hung");
        let err = result.unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
