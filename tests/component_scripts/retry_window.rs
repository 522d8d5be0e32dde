//! The retry window of exit code 21, to Mender 3.4's rule
//! (`docs/state-scripts.md`, "Running one script"): another attempt as
//! long as the window has not passed when an attempt ends. `Error`
//! scripts, whose failures are ignored, are retried alike.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use mender_rs::scripts::{ScriptAction, ScriptConfig, ScriptError, ScriptRunner, ScriptState};

/// A scripts directory with one script that logs itself and exits 21.
fn runner(name: &str, interval: Duration, window: Duration) -> (tempfile::TempDir, ScriptRunner) {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    fs::create_dir(&scripts).unwrap();
    fs::write(scripts.join("version"), "3\n").unwrap();
    let path = scripts.join(name);
    let log = dir.path().join("log");
    fs::write(
        &path,
        format!("#!/bin/sh\necho run >> '{}'\nexit 21\n", log.display()),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = ScriptConfig::new(&scripts, &scripts);
    config.retry_interval = interval;
    config.retry_timeout = window;
    (dir, ScriptRunner::new(config))
}

fn runs(dir: &tempfile::TempDir) -> usize {
    fs::read_to_string(dir.path().join("log"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Interval 1 s, window 3.5 s: attempts start at 0, 1, 2, 3 and 4 s; the
/// one at 3 s ends inside the window, so the one at 4 s runs (3.4 ran 5
/// times, where a rule that wants the next start inside the window runs 4).
#[test]
fn an_attempt_ending_inside_the_window_is_retried_once_more() {
    let (dir, runner) = runner(
        "ArtifactInstall_Enter_01",
        Duration::from_secs(1),
        Duration::from_millis(3500),
    );
    let start = Instant::now();
    let err = runner
        .run(ScriptState::ArtifactInstall, ScriptAction::Enter, false)
        .unwrap_err();
    assert!(matches!(err, ScriptError::RetryExpired { .. }), "{err}");
    assert_eq!(runs(&dir), 5, "after {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn error_scripts_are_retried_too() {
    let (dir, runner) = runner(
        "ArtifactInstall_Error_01",
        Duration::from_millis(500),
        Duration::from_millis(1200),
    );
    // Ignored failure: Ok, but only after the window (0, 0.5, 1.0, 1.5 s).
    runner
        .run(ScriptState::ArtifactInstall, ScriptAction::Error, true)
        .unwrap();
    assert_eq!(runs(&dir), 4);
}
