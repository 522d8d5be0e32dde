//! State script runner and deployment log, with shell scripts generated in
//! temporary directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use mender_rs::deployment_log::DeploymentLog;
use mender_rs::logging;
use mender_rs::scripts::{ScriptAction, ScriptConfig, ScriptError, ScriptRunner, ScriptState};

use ScriptAction::{Enter, Error as ErrorAction, Leave};
use ScriptState::*;

/// Serialises the tests that use the (process-wide) deployment log.
static DEPLOYMENT_LOG_LOCK: Mutex<()> = Mutex::new(());

fn init_logging() {
    static INIT: Once = Once::new();
    // stderr at warning: info records must still reach the deployment log.
    INIT.call_once(|| logging::init_stderr(log::LevelFilter::Warn));
}

fn lock_deployment_log() -> MutexGuard<'static, ()> {
    init_logging();
    DEPLOYMENT_LOG_LOCK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        init_logging();
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(f.rootfs()).unwrap();
        fs::create_dir(f.artifact()).unwrap();
        fs::write(f.rootfs().join("version"), "3").unwrap();
        fs::write(f.artifact().join("version"), "3\n").unwrap();
        f
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("etc-scripts")
    }

    fn artifact(&self) -> PathBuf {
        self.dir.path().join("data-scripts")
    }

    /// A file the scripts append their names to.
    fn trace(&self) -> PathBuf {
        self.dir.path().join("trace")
    }

    fn traced(&self) -> Vec<String> {
        fs::read_to_string(self.trace())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn config(&self) -> ScriptConfig {
        ScriptConfig {
            rootfs_dir: self.rootfs(),
            artifact_dir: self.artifact(),
            timeout: Duration::from_secs(10),
            retry_interval: Duration::from_millis(100),
            retry_timeout: Duration::from_secs(5),
        }
    }

    fn runner(&self) -> ScriptRunner {
        ScriptRunner::new(self.config())
    }

    /// Writes an executable script `name` in `dir` that records its name in
    /// the trace file, then runs `body`.
    fn script(&self, dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        let text = format!(
            "#!/bin/sh\necho {name} >> '{}'\n{body}\n",
            self.trace().display()
        );
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn ok(&self, dir: &Path, name: &str) -> PathBuf {
        self.script(dir, name, "exit 0")
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Whether `pid` is gone (or a zombie nobody reaps yet).
fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn wait_for_pid_file(path: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn scripts_run_sorted_byte_wise() {
    let f = Fixture::new();
    let a = f.artifact();
    f.ok(&a, "ArtifactInstall_Enter_10_x");
    f.ok(&a, "ArtifactInstall_Enter_02");
    f.ok(&a, "ArtifactInstall_Enter_01");
    f.ok(&a, "ArtifactInstall_Enter_02_B");
    f.ok(&a, "ArtifactInstall_Enter_02_a");
    f.ok(&a, "ArtifactInstall_Leave_01");
    let expected = names(&[
        "ArtifactInstall_Enter_01",
        "ArtifactInstall_Enter_02",
        "ArtifactInstall_Enter_02_B",
        "ArtifactInstall_Enter_02_a",
        "ArtifactInstall_Enter_10_x",
    ]);
    let ran = f.runner().run(ArtifactInstall, Enter, false).unwrap();
    assert_eq!(ran, expected);
    assert_eq!(f.traced(), expected);
}

#[test]
fn wrong_names_are_skipped() {
    let f = Fixture::new();
    let r = f.rootfs();
    f.ok(&r, "Idle_Enter_100");
    f.ok(&r, "Idle_Enter_1");
    f.ok(&r, "Idle_Enter_01_");
    f.ok(&r, "idle_Enter_01");
    f.ok(&r, "Idle_Enter_01");
    f.ok(&r, "Download_Enter_1");
    f.ok(&r, "Download_Enter_01.sh");
    let a = f.artifact();
    f.ok(&a, "ArtifactInstall_Start_01");
    f.ok(&a, "ArtifactInstall_Enter_ab");
    let runner = f.runner();
    assert_eq!(
        runner.run(Idle, Enter, false).unwrap(),
        names(&["Idle_Enter_01"])
    );
    assert!(runner.run(Download, Enter, false).unwrap().is_empty());
    assert!(
        runner
            .run(ArtifactInstall, Enter, false)
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.traced(), names(&["Idle_Enter_01"]));
}

#[test]
fn each_state_uses_its_directory() {
    let f = Fixture::new();
    let (r, a) = (f.rootfs(), f.artifact());
    // Rootfs states are only looked up in the rootfs dir, artifact states
    // only in the artifact dir.
    f.ok(&r, "Sync_Enter_01");
    f.ok(&a, "Sync_Enter_02");
    f.ok(&r, "Download_Leave_01");
    f.ok(&a, "ArtifactCommit_Enter_01");
    f.ok(&r, "ArtifactCommit_Enter_02");
    f.ok(&a, "ArtifactRollbackReboot_Leave_01");
    let runner = f.runner();
    assert_eq!(
        runner.run(Sync, Enter, false).unwrap(),
        names(&["Sync_Enter_01"])
    );
    assert_eq!(
        runner.run(Download, Leave, false).unwrap(),
        names(&["Download_Leave_01"])
    );
    assert_eq!(
        runner.run(ArtifactCommit, Enter, false).unwrap(),
        names(&["ArtifactCommit_Enter_01"])
    );
    assert_eq!(
        runner.run(ArtifactRollbackReboot, Leave, true).unwrap(),
        names(&["ArtifactRollbackReboot_Leave_01"])
    );
    assert!(runner.run(Sync, Leave, false).unwrap().is_empty());
    assert_eq!(
        f.traced(),
        names(&[
            "Sync_Enter_01",
            "Download_Leave_01",
            "ArtifactCommit_Enter_01",
            "ArtifactRollbackReboot_Leave_01"
        ])
    );
}

#[test]
fn scripts_run_in_root_without_arguments_and_in_their_own_group() {
    let f = Fixture::new();
    let out = f.dir.path().join("out");
    f.script(
        &f.artifact(),
        "ArtifactReboot_Enter_01",
        &format!(
            "echo \"$# $(pwd) $(ps -o pgid= -p $$ | tr -d ' ') $$\" > '{}'",
            out.display()
        ),
    );
    f.runner().run(ArtifactReboot, Enter, false).unwrap();
    let text = fs::read_to_string(&out).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields[0], "0", "{text}");
    assert_eq!(fields[1], "/", "{text}");
    if fields.len() == 4 {
        // Process group id = the script's pid (ps may be missing).
        assert_eq!(fields[2], fields[3], "{text}");
    }
}

#[test]
fn failing_enter_stops_the_sequence() {
    let f = Fixture::new();
    let a = f.artifact();
    f.ok(&a, "ArtifactInstall_Enter_01");
    let failing = f.script(&a, "ArtifactInstall_Enter_02", "exit 3");
    f.ok(&a, "ArtifactInstall_Enter_03");
    let err = f.runner().run(ArtifactInstall, Enter, false).unwrap_err();
    match &err {
        ScriptError::Failed { script, code } => {
            assert_eq!(script, &failing);
            assert_eq!(*code, 3);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(err.script(), Some(failing.as_path()));
    assert!(
        err.to_string().contains("ArtifactInstall_Enter_02"),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'));
    assert_eq!(
        f.traced(),
        names(&["ArtifactInstall_Enter_01", "ArtifactInstall_Enter_02"])
    );
}

#[test]
fn ignore_errors_runs_all() {
    let f = Fixture::new();
    let a = f.artifact();
    f.script(&a, "ArtifactRollback_Enter_01", "exit 1");
    f.script(&a, "ArtifactRollback_Enter_02", "kill -9 $$");
    f.ok(&a, "ArtifactRollback_Enter_03");
    let expected = names(&[
        "ArtifactRollback_Enter_01",
        "ArtifactRollback_Enter_02",
        "ArtifactRollback_Enter_03",
    ]);
    assert_eq!(
        f.runner().run(ArtifactRollback, Enter, true).unwrap(),
        expected
    );
    assert_eq!(f.traced(), expected);
}

#[test]
fn killed_by_signal_is_a_failure() {
    let f = Fixture::new();
    f.script(&f.rootfs(), "Sync_Error_01", "kill -TERM $$");
    let err = f.runner().run(Sync, ErrorAction, false).unwrap_err();
    assert!(
        matches!(err, ScriptError::Killed { signal, .. } if signal == libc::SIGTERM),
        "{err:?}"
    );
}

#[test]
fn retry_later_then_success() {
    let f = Fixture::new();
    let counter = f.dir.path().join("count");
    // Exit 21 twice, then 0.
    f.script(
        &f.artifact(),
        "ArtifactCommit_Leave_01",
        &format!(
            "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'; [ $n -ge 3 ] && exit 0; exit 21",
            c = counter.display()
        ),
    );
    let start = Instant::now();
    let ran = f.runner().run(ArtifactCommit, Leave, false).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(ran, names(&["ArtifactCommit_Leave_01"]));
    assert_eq!(f.traced().len(), 3);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn retry_later_until_the_window_expires() {
    let f = Fixture::new();
    let script = f.script(&f.rootfs(), "Download_Enter_01", "exit 21");
    f.ok(&f.rootfs(), "Download_Enter_02");
    let mut config = f.config();
    config.retry_interval = Duration::from_millis(100);
    config.retry_timeout = Duration::from_millis(450);
    let start = Instant::now();
    let err = ScriptRunner::new(config)
        .run(Download, Enter, false)
        .unwrap_err();
    let elapsed = start.elapsed();
    match err {
        ScriptError::RetryExpired { script: s } => assert_eq!(s, script),
        other => panic!("unexpected error {other:?}"),
    }
    // Attempts start at about 0, 100, 200, 300, 400 and 500 ms (the one at
    // 400 ms ends within 450 ms; fewer on a loaded machine).
    let attempts = f.traced();
    assert!(
        (3..=6).contains(&attempts.len()),
        "{attempts:?} in {elapsed:?}"
    );
    assert!(attempts.iter().all(|a| a == "Download_Enter_01"));
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn timeout_kills_the_whole_group() {
    let f = Fixture::new();
    let pid_file = f.dir.path().join("bg.pid");
    let script = f.script(
        &f.artifact(),
        "ArtifactInstall_Enter_01",
        &format!(
            "sleep 1000 &\necho $! > '{}'\necho started >&2\nsleep 1000",
            pid_file.display()
        ),
    );
    let mut config = f.config();
    config.timeout = Duration::from_millis(500);
    let start = Instant::now();
    let err = ScriptRunner::new(config)
        .run(ArtifactInstall, Enter, false)
        .unwrap_err();
    let elapsed = start.elapsed();
    match err {
        ScriptError::TimedOut { script: s, after } => {
            assert_eq!(s, script);
            assert_eq!(after, Duration::from_millis(500));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let pid = wait_for_pid_file(&pid_file);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "background sleep {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn background_process_holding_stderr_does_not_hang() {
    let f = Fixture::new();
    let pid_file = f.dir.path().join("bg.pid");
    f.script(
        &f.rootfs(),
        "Idle_Leave_01",
        &format!("sleep 1000 &\necho $! > '{}'\nexit 0", pid_file.display()),
    );
    let start = Instant::now();
    let result = f.runner().run(Idle, Leave, false);
    let elapsed = start.elapsed();
    let pid = wait_for_pid_file(&pid_file);
    // The runner leaves a finished script's background processes alone.
    let alive = !process_gone(pid);
    let _ = mender_rs::sys::kill(pid, libc::SIGKILL);
    assert_eq!(result.unwrap(), names(&["Idle_Leave_01"]));
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(alive);
}

#[test]
fn non_executable_script() {
    let f = Fixture::new();
    let a = f.artifact();
    f.ok(&a, "ArtifactFailure_Enter_01");
    let plain = f.ok(&a, "ArtifactFailure_Enter_02");
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    f.ok(&a, "ArtifactFailure_Enter_03");
    let runner = f.runner();
    let err = runner.run(ArtifactFailure, Enter, false).unwrap_err();
    match &err {
        ScriptError::NotExecutable { script } => assert_eq!(script, &plain),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(f.traced().is_empty());
    // Ignored: the others still run.
    assert_eq!(
        runner.run(ArtifactFailure, Enter, true).unwrap(),
        names(&["ArtifactFailure_Enter_01", "ArtifactFailure_Enter_03"])
    );
}

#[test]
fn version_file_is_required_when_scripts_run() {
    let f = Fixture::new();
    let r = f.rootfs();
    let runner = f.runner();
    // No scripts for the action: no version needed.
    fs::remove_file(r.join("version")).unwrap();
    assert!(runner.run(Sync, Enter, false).unwrap().is_empty());
    runner.check_rootfs_version().unwrap(); // empty dir

    f.ok(&r, "Sync_Enter_01");
    let err = runner.run(Sync, Enter, false).unwrap_err();
    assert!(matches!(err, ScriptError::Version { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(matches!(
        runner.check_rootfs_version(),
        Err(ScriptError::Version { .. })
    ));

    fs::write(r.join("version"), "1000").unwrap();
    let err = runner.run(Sync, Enter, false).unwrap_err();
    assert!(matches!(err, ScriptError::Version { .. }), "{err:?}");
    assert!(err.to_string().contains("1000"), "{err}");
    assert!(runner.check_rootfs_version().is_err());
    // Ignored: logged, nothing runs.
    assert!(runner.run(Sync, Enter, true).unwrap().is_empty());
    assert!(f.traced().is_empty());

    fs::write(r.join("version"), " 2 \n").unwrap();
    runner.check_rootfs_version().unwrap();
    assert_eq!(
        runner.run(Sync, Enter, false).unwrap(),
        names(&["Sync_Enter_01"])
    );
}

#[test]
fn store_artifact_scripts_replaces_old_scripts() {
    let f = Fixture::new();
    let a = f.artifact();
    f.ok(&a, "ArtifactInstall_Enter_01_old");
    fs::write(a.join("junk"), "x").unwrap();
    let runner = f.runner();
    let trace = f.trace();
    let new_script = format!("#!/bin/sh\necho new >> '{}'\n", trace.display());
    runner
        .store_artifact_scripts(
            &[
                ("ArtifactInstall_Enter_02_new", new_script.as_bytes()),
                ("ArtifactCommit_Leave_01", b"#!/bin/sh\nexit 0\n"),
            ],
            3,
        )
        .unwrap();
    let mut entries: Vec<String> = fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            "ArtifactCommit_Leave_01",
            "ArtifactInstall_Enter_02_new",
            "version"
        ]
    );
    assert_eq!(fs::read_to_string(a.join("version")).unwrap(), "3");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&a), 0o755);
    assert_eq!(mode(&a.join("ArtifactCommit_Leave_01")), 0o755);
    assert_eq!(
        runner.run(ArtifactInstall, Enter, false).unwrap(),
        names(&["ArtifactInstall_Enter_02_new"])
    );
    assert_eq!(f.traced(), names(&["new"]));

    // A missing directory is created; invalid names are refused.
    fs::remove_dir_all(&a).unwrap();
    runner.store_artifact_scripts(&[], 2).unwrap();
    assert_eq!(fs::read_to_string(a.join("version")).unwrap(), "2");
    for bad in ["a/b", ".", "..", ""] {
        assert!(
            runner.store_artifact_scripts(&[(bad, b"x")], 3).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn stderr_is_logged_truncated_to_10_kib() {
    let _guard = lock_deployment_log();
    let f = Fixture::new();
    let data = f.dir.path().join("data");
    let log = DeploymentLog::start(&data, "big-stderr").unwrap();
    logging::set_deployment_log(Some(log));
    // 1 MiB on stderr in lines of 37 bytes.
    f.script(
        &f.artifact(),
        "ArtifactInstall_Leave_01_bigstderr",
        "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 1048576 >&2\necho after >&2",
    );
    let result = f.runner().run(ArtifactInstall, Leave, false);
    logging::set_deployment_log(None);
    assert_eq!(
        result.unwrap(),
        names(&["ArtifactInstall_Leave_01_bigstderr"])
    );
    let prefix = "ArtifactInstall_Leave_01_bigstderr: ";
    let records = DeploymentLog::read_records(&data, "big-stderr").unwrap();
    let lines: Vec<&str> = records
        .iter()
        .filter_map(|r| r["message"].as_str()?.strip_prefix(prefix))
        .collect();
    assert_eq!(lines.last(), Some(&"... (truncated to 10 KiB)"));
    let body = &lines[..lines.len() - 1];
    let logged: usize = body.iter().map(|l| l.len() + 1).sum();
    assert!(logged <= 10 * 1024 + 1, "{logged}");
    assert!(logged > 10 * 1024 - 64, "{logged}");
    assert!(
        body[..body.len() - 1]
            .iter()
            .all(|l| *l == "0123456789abcdefghijklmnopqrstuvwxyz")
    );
    assert!(!lines.contains(&"after"));
}

#[test]
fn script_stderr_goes_to_the_active_deployment_log() {
    let _guard = lock_deployment_log();
    let f = Fixture::new();
    let data = f.dir.path().join("data");
    let log = DeploymentLog::start(&data, "dep-1").unwrap();
    let path = log.path().to_path_buf();
    assert!(logging::set_deployment_log(Some(log)).is_none());
    assert!(logging::deployment_log_active());
    f.script(
        &f.rootfs(),
        "Download_Error_01_report",
        "echo 'line one' >&2\nprintf 'no newline' >&2\nexit 1",
    );
    let result = f.runner().run(Download, ErrorAction, true);
    log::info!("dep-1 info record");
    log::debug!("dep-1 debug record");
    let previous = logging::set_deployment_log(None).unwrap();
    assert_eq!(previous.path(), path);
    log::warn!("dep-1 after the log was closed");
    assert!(result.is_ok());

    let records = DeploymentLog::read_records(&data, "dep-1").unwrap();
    for r in &records {
        let o = r.as_object().unwrap();
        for key in ["level", "message", "timestamp"] {
            assert!(o[key].is_string(), "{r}");
        }
        let ts = o["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }
    let messages: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["level"].as_str().unwrap(), r["message"].as_str().unwrap()))
        .collect();
    let has = |level: &str, text: &str| {
        messages
            .iter()
            .any(|(l, m)| *l == level && m.contains(text))
    };
    assert!(has("info", "running state script"), "{messages:#?}");
    assert!(has("info", "Download_Error_01_report: line one"));
    assert!(has("info", "Download_Error_01_report: no newline"));
    assert!(has(
        "error",
        "Download_Error_01_report failed with exit code 1"
    ));
    assert!(has("info", "dep-1 info record"));
    assert!(!has("debug", "dep-1 debug record"));
    assert!(
        !messages
            .iter()
            .any(|(_, m)| m.contains("after the log was closed"))
    );
    // Every line of the file is one JSON object.
    let text = fs::read_to_string(&path).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v.is_object());
    }
}

#[test]
fn deployment_log_rotation_keeps_five() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=7 {
        let mut log = DeploymentLog::start(dir.path(), &format!("d{i}")).unwrap();
        assert_eq!(
            log.path(),
            dir.path().join(format!("deployments.0001.d{i}.log"))
        );
        log.write_record(log::Level::Info, &format!("from d{i}"))
            .unwrap();
    }
    let mut files: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "deployments.0001.d7.log",
            "deployments.0002.d6.log",
            "deployments.0003.d5.log",
            "deployments.0004.d4.log",
            "deployments.0005.d3.log",
        ]
    );
    for i in 3..=7 {
        let records = DeploymentLog::read_records(dir.path(), &format!("d{i}")).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["message"], format!("from d{i}"));
        assert_eq!(records[0]["level"], "info");
    }
    assert!(
        DeploymentLog::read_records(dir.path(), "d1")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn deployment_log_resume_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = DeploymentLog::start(dir.path(), "abc").unwrap();
    log.write_record(log::Level::Info, "before restart")
        .unwrap();
    drop(log);
    // Another deployment started meanwhile: abc is now 0002.
    DeploymentLog::start(dir.path(), "other").unwrap();
    let mut log = DeploymentLog::resume(dir.path(), "abc").unwrap();
    assert_eq!(log.path(), dir.path().join("deployments.0002.abc.log"));
    log.write_record(log::Level::Error, "after restart")
        .unwrap();
    let records = DeploymentLog::read_records(dir.path(), "abc").unwrap();
    let messages: Vec<&str> = records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["before restart", "after restart"]);
    assert_eq!(records[1]["level"], "error");

    // Resuming an unknown deployment starts its log.
    let log = DeploymentLog::resume(dir.path(), "new").unwrap();
    assert_eq!(log.path(), dir.path().join("deployments.0001.new.log"));
    assert!(dir.path().join("deployments.0003.abc.log").exists());
    assert!(DeploymentLog::resume(dir.path(), "../x").is_err());
}
