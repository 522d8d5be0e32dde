//! Hardening: processes. Hostile external programs (state scripts, Update
//! Modules, identity and inventory scripts, boot environment tools, the
//! reboot command): each is bounded in time and memory by the one
//! supervisor, `mender_rs::process`, and its failure is a clear error.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mender_rs::bootenv::BootEnv;
use mender_rs::bootenv::tools::ToolsEnv;
use mender_rs::identity::{IdentityError, device_identity, run_attribute_script};
use mender_rs::modules::{ModuleConfig, ModuleError, UpdateModule};
use mender_rs::scripts::{ScriptAction, ScriptConfig, ScriptError, ScriptRunner, ScriptState};
use serde_json::Value;

use crate::support::device::{BIN, DEVICE_TYPE, SimDevice, write_executable};
use crate::support::managed::{DaemonChild, DeviceSetup, daemon_command, log_tail};
use crate::support::mender_server::MenderServer;

fn executable(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    write_executable(&path, &format!("#!/bin/sh\n{body}\n"));
    path
}

/// Whether `pid` is gone (or a zombie nobody reaped yet), waiting up to 5 s.
fn gone_soon(pid_file: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid = loop {
        if let Ok(text) = fs::read_to_string(pid_file)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            break pid;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn runner(dir: &Path, timeout: Duration) -> ScriptRunner {
    let rootfs = dir.join("rootfs-scripts");
    fs::create_dir_all(&rootfs).unwrap();
    fs::write(rootfs.join("version"), "3").unwrap();
    let mut config = ScriptConfig::new(&rootfs, dir.join("artifact-scripts"));
    config.timeout = timeout;
    ScriptRunner::new(config)
}

// ---------------------------------------------------------------- scripts

/// A state script that ignores SIGTERM and hangs: killed (with the process
/// it started) after the timeout and the grace period, not waited for.
#[test]
fn state_script_ignoring_sigterm_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let r = runner(dir.path(), Duration::from_millis(500));
    let pid = dir.path().join("pid");
    executable(
        &r.config().rootfs_dir,
        "Idle_Enter_01",
        &format!(
            "trap '' TERM\nsleep 1000 &\necho $! > '{}'\nwhile :; do sleep 1; done",
            pid.display()
        ),
    );
    let started = Instant::now();
    let err = r
        .run(ScriptState::Idle, ScriptAction::Enter, false)
        .unwrap_err();
    assert!(matches!(err, ScriptError::TimedOut { .. }), "{err}");
    // 0.5 s timeout + at most 0.5 s grace, plus slack.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(gone_soon(&pid), "the script's child survived");
}

/// A state script whose grandchild keeps stderr open: the script's own
/// success counts, without waiting for the grandchild.
#[test]
fn state_script_grandchild_holding_stderr_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let r = runner(dir.path(), Duration::from_secs(30));
    executable(
        &r.config().rootfs_dir,
        "Sync_Enter_01",
        "(sleep 20 >&2 &) ; echo hello >&2; exit 0",
    );
    let started = Instant::now();
    r.run(ScriptState::Sync, ScriptAction::Enter, false)
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A state script printing without end to stderr: memory stays bounded
/// (the excess is read and dropped) and the deadline still holds.
#[test]
fn state_script_flooding_stderr_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let r = runner(dir.path(), Duration::from_secs(2));
    executable(
        &r.config().rootfs_dir,
        "Download_Enter_01",
        "cat /dev/zero >&2",
    );
    let started = Instant::now();
    let err = r
        .run(ScriptState::Download, ScriptAction::Enter, false)
        .unwrap_err();
    assert!(matches!(err, ScriptError::TimedOut { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// A state script killed by a signal is a failure naming the signal.
#[test]
fn state_script_killed_by_signal() {
    let dir = tempfile::tempdir().unwrap();
    let r = runner(dir.path(), Duration::from_secs(30));
    executable(&r.config().rootfs_dir, "Idle_Leave_01", "kill -SEGV $$");
    let err = r
        .run(ScriptState::Idle, ScriptAction::Leave, false)
        .unwrap_err();
    assert!(
        matches!(err, ScriptError::Killed { signal: 11, .. }),
        "{err}"
    );
}

/// The `version` file of a scripts directory as a FIFO nobody writes, or
/// as a link to an endless device: refused at once (the read used to block
/// for ever on the FIFO).
#[test]
fn state_script_version_file_fifo_or_endless_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = runner(dir.path(), Duration::from_secs(30));
    let rootfs = r.config().rootfs_dir.clone();
    executable(&rootfs, "Idle_Enter_01", "exit 0");
    let version = rootfs.join("version");
    fs::remove_file(&version).unwrap();
    mender_rs::sys::mkfifo(&version, 0o600).unwrap();
    let started = Instant::now();
    let err = r
        .run(ScriptState::Idle, ScriptAction::Enter, false)
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, ScriptError::Version { .. }), "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");

    fs::remove_file(&version).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &version).unwrap();
    let err = r
        .run(ScriptState::Idle, ScriptAction::Enter, false)
        .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

// ---------------------------------------------------------------- modules

fn module(dir: &Path, body: &str, timeout: Duration) -> UpdateModule {
    let modules_dir = dir.join("modules");
    fs::create_dir_all(&modules_dir).unwrap();
    let path = executable(&modules_dir, "hostile", body);
    let config = ModuleConfig {
        modules_dir,
        work_dir: dir.join("work"),
        timeout,
    };
    let m = UpdateModule::new(&config, path);
    fs::create_dir_all(m.tree()).unwrap();
    m
}

/// A module that closes its stdout and stderr early, then hangs: the call
/// times out (closed pipes do not count as its end).
#[test]
fn module_closing_stdout_then_hanging_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let m = module(
        dir.path(),
        "exec >/dev/null 2>&1\nexec sleep 1000",
        Duration::from_secs(1),
    );
    let started = Instant::now();
    let err = m.call("ArtifactInstall").unwrap_err();
    assert!(matches!(err, ModuleError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A query answered by a module whose grandchild keeps stdout open: the
/// answer counts, without waiting for the grandchild.
#[test]
fn module_query_with_grandchild_holding_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let m = module(
        dir.path(),
        "echo Yes\n(sleep 20 &)\nexit 0",
        Duration::from_secs(30),
    );
    let started = Instant::now();
    assert!(m.supports_rollback().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A streaming module that prints megabytes to stdout before it reads
/// its stream: its output is read while we wait to write the stream, so
/// neither side blocks the other.
#[test]
fn module_chatty_while_streaming_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let m = module(
        dir.path(),
        "[ \"$1\" = Download ] || exit 0\n\
         f=$(cat stream-next)\n\
         head -c 4194304 /dev/zero\n\
         cat \"$f\" > /dev/null\n\
         cat stream-next > /dev/null\n\
         exit 0",
        Duration::from_secs(20),
    );
    let started = Instant::now();
    let mut s = m.start_download().unwrap();
    let data = vec![7u8; 1 << 20];
    s.begin_file("a", data.len() as u64).unwrap();
    s.write(&data).unwrap();
    s.end_file().unwrap();
    s.finish().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- identity

/// Identity scripts that cannot run (missing, not executable, a
/// directory) or die by a signal: clear errors naming the script.
#[test]
fn identity_script_missing_not_executable_directory_or_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = device_identity(&missing).unwrap_err();
    assert!(matches!(err, IdentityError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    let plain = dir.path().join("plain");
    fs::write(&plain, "#!/bin/sh\necho mac=1\n").unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    let err = device_identity(&plain).unwrap_err();
    assert!(matches!(err, IdentityError::Spawn { .. }), "{err}");

    let err = device_identity(dir.path()).unwrap_err();
    assert!(matches!(err, IdentityError::Spawn { .. }), "{err}");

    let killed = executable(dir.path(), "killed", "echo mac=1\nkill -ABRT $$");
    let err = device_identity(&killed).unwrap_err();
    assert!(err.to_string().contains("signal 6"), "{err}");
}

/// An inventory script printing a gigabyte: refused once past the 1 MiB
/// cap, the rest read and dropped, in bounded time and memory.
#[test]
fn inventory_script_printing_a_gigabyte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = executable(
        dir.path(),
        "big",
        "yes k=0123456789abcdef | head -c 1073741824",
    );
    let started = Instant::now();
    let err = run_attribute_script(&big, Duration::from_secs(60)).unwrap_err();
    assert!(matches!(err, IdentityError::TooMuchOutput { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

// ---------------------------------------------------------------- boot tools

/// A print tool printing far more than any boot environment: refused
/// (it used to be held in memory up to 64 MiB and parsed).
#[test]
fn boot_print_tool_printing_too_much_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let print = executable(
        dir.path(),
        "print",
        "echo mender_boot_part=2\nyes x=0123456789abcdef | head -c 8388608",
    );
    let err = ToolsEnv::new(print.to_str().unwrap(), "fw_setenv")
        .read()
        .unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

/// A set tool that never reads its input and ignores SIGTERM: killed
/// after the timeout; the write is an error.
#[test]
fn boot_set_tool_not_reading_and_hanging_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let print = executable(dir.path(), "print", "echo a=1");
    let set = executable(dir.path(), "set", "trap '' TERM\nwhile :; do sleep 1; done");
    let tools = ToolsEnv::new(print.to_str().unwrap(), set.to_str().unwrap())
        .with_timeout(Duration::from_millis(500));
    let big = "y".repeat(100_000);
    let started = Instant::now();
    let err = tools
        .write(&[("a", Some("2")), ("b", Some(&big))])
        .unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A print tool that is a directory or missing: an error naming it.
#[test]
fn boot_tool_missing_or_directory() {
    let dir = tempfile::tempdir().unwrap();
    for tool in [dir.path().to_path_buf(), dir.path().join("missing")] {
        let err = ToolsEnv::new(tool.to_str().unwrap(), "fw_setenv")
            .read()
            .unwrap_err();
        assert!(err.to_string().contains(tool.to_str().unwrap()), "{err}");
    }
}

// ---------------------------------------------------------------- reboot

/// A device whose `RebootCommand` runs `body`, deploying a rootfs update;
/// returns the final status and the daemon log.
fn deploy_with_reboot_command(name: &str, body: &str, mac: &str) -> (String, String, SimDevice) {
    let server = MenderServer::start();
    let dev = SimDevice::new();
    DeviceSetup {
        server_url: Some(&server.url()),
        mac,
        inventory_script: None,
        reboot_marker: None,
        update_poll: 1,
        inventory_poll: None,
        retry_poll: 1,
    }
    .apply(&dev);
    write_executable(&dev.path("reboot"), &format!("#!/bin/sh\n{body}\n"));
    dev.set_config("RebootTimeoutSeconds", Value::from(2));
    let artifact = dev.write_rootfs_artifact(name, 64 << 10, &[], &[]);
    let dep = server.add_deployment(&artifact, name, &[DEVICE_TYPE]);
    let log = dev.path("daemon.log");
    let mut daemon = DaemonChild::spawn(&mut daemon_command(&dev, Path::new(BIN), "info", &log));
    let done = server.wait_until(Duration::from_secs(60), |s| {
        s.device_ids()
            .iter()
            .any(|d| s.deployment_status(d, &dep).as_deref() == Some("failure"))
    });
    let alive = daemon.running();
    daemon.terminate();
    let tail = log_tail(&log, 60);
    assert!(done, "no final failure status:\n{tail}");
    assert!(alive, "the daemon died:\n{tail}");
    let dev_id = server.device_ids().into_iter().next().unwrap();
    let status = server.deployment_status(&dev_id, &dep).unwrap_or_default();
    (status, tail, dev)
}

/// A reboot command that hangs for ever: killed after
/// `RebootTimeoutSeconds`, the deployment rolls back and reports failure,
/// and the daemon goes on (it used to wait for the command for ever).
#[test]
fn hanging_reboot_command_fails_the_deployment_without_hanging() {
    let (status, log, dev) = deploy_with_reboot_command(
        "release-hang",
        "trap '' TERM\nwhile :; do sleep 1; done",
        "02:00:00:13:07:01",
    );
    assert_eq!(status, "failure");
    assert!(log.contains("RebootTimeoutSeconds"), "{log}");
    let env = dev.env();
    assert_eq!(env["mender_boot_part"], "2", "{log}");
    assert_eq!(env.get("upgrade_available").map(String::as_str), Some("0"));
}

/// A reboot command that fails: the deployment rolls back and reports
/// failure, the log names the command's exit code.
#[test]
fn failing_reboot_command_fails_the_deployment() {
    let (status, log, dev) = deploy_with_reboot_command(
        "release-rebootfail",
        "echo cannot reboot >&2\nexit 7",
        "02:00:00:13:07:02",
    );
    assert_eq!(status, "failure");
    assert!(log.contains("exit code 7"), "{log}");
    assert!(log.contains("cannot reboot"), "{log}");
    assert_eq!(dev.env()["mender_boot_part"], "2", "{log}");
}
