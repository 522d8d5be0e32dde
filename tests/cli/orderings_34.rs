//! Mender 3.4's exact orderings, side by side with the reference client:
//! each scenario runs once with Debian's `mender` 3.4 and once with
//! `mender-rs`, standalone, on identical fresh devices, with an artifact
//! for a small Update Module, and the transcripts must be equal: the exit
//! code of every command, the state scripts and module calls in the order
//! they ran (one log), `show-artifact` after every step and `show-provides`
//! at the end.
//!
//! What the scenarios pin down (each confirmed in the 3.4 source,
//! `app/standalone.go` and `statescript/executor.go`):
//! - `SupportsRollback` is asked after the `Download_Leave` scripts, and
//!   `NeedsArtifactReboot` after `ArtifactInstall_Leave`; a `rollback` and
//!   the error path ask `SupportsRollback` again.
//! - A requested rollback whose `ArtifactRollback_Enter` or `_Leave` script
//!   fails goes on to `ArtifactFailure` and marks the device inconsistent.
//! - When the install and every error-path script fail, the device is
//!   marked `<name>_INCONSISTENT` and keeps the artifact's type-info
//!   provides.
//! - Exit code 21 is retried while the retry window has not passed at the
//!   end of an attempt (interval 2 s, window 7 s: five runs), in `Error`
//!   scripts too.
//!
//! The rig is the module-only sibling of `reference_client.rs`: no loop
//! devices and no boot environment. mender 3.4 hard-codes `/etc/mender`
//! (artifact_info, rootfs scripts) and `/usr/share/mender/modules/v3`, so
//! every client command runs in a private mount namespace where per-device
//! folders are bind-mounted there; mender-rs gets the same folders through
//! its configuration. Requires root; fails, rather than skips, without it.
//! `ProvidePayloadFileSizes`, which 3.4 does not know and mender-rs asks
//! as 4.x does, is left out of the comparison (and checked on its own).

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REFERENCE: &str = "/usr/bin/mender";
const OURS: &str = env!("CARGO_BIN_EXE_mender-rs");
const MODULES_DIR: &str = "/usr/share/mender/modules/v3";
const PAYLOAD_TYPE: &str = "orderings-test";
const DEVICE_TYPE: &str = "test-device";
const INSTALLED_NAME: &str = "release-1";
const UPDATE_NAME: &str = "release-2";

/// Limit for one client command (scripts and their retries included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `"$@"` (after the first two arguments) with the first folder on
/// /etc/mender and the second on the Update Modules directory.
const SANDBOX: &str = r#"set -e
mount --bind "$1" /etc/mender
mount --bind "$2" /usr/share/mender/modules/v3
shift 2
exec "$@"
"#;

const ARTIFACT_STATES: [&str; 6] = [
    "ArtifactInstall",
    "ArtifactReboot",
    "ArtifactCommit",
    "ArtifactRollback",
    "ArtifactRollbackReboot",
    "ArtifactFailure",
];
const ROOTFS_SCRIPTS: [&str; 3] = [
    "Download_Enter_01",
    "Download_Leave_01",
    "Download_Error_01",
];

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with no input; kills its process group if it outlives
/// `timeout` (and then fails the test).
fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .process_group(0);
    let what = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            // The process group this test created.
            let _ = mender_rs::sys::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |f: &mut fs::File| {
        use std::io::Seek;
        let mut s = String::new();
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.read_to_string(&mut s).expect("read output");
        s
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A state script: logs its name, then exits with the code in the marker
/// file named after it, if there is one.
fn state_script(log: &Path, fail: &Path, name: &str) -> String {
    format!(
        "#!/bin/sh\necho {name} >> '{log}'\nif [ -e '{fail}/{name}' ]; then exit $(cat '{fail}/{name}'); fi\nexit 0\n",
        log = s(log),
        fail = s(fail)
    )
}

/// The Update Module: logs `module <call>`, streams the payload in
/// `Download`, answers `Yes` to SupportsRollback and `No` to
/// NeedsArtifactReboot (or what a marker `answer-<query>` holds), and fails
/// a call when a marker `module-<call>` exists.
fn module_script(log: &Path, fail: &Path) -> String {
    format!(
        r#"#!/bin/sh
echo "module $1" >> '{log}'
if [ -e '{fail}/module-'"$1" ]; then exit 1; fi
if [ -e '{fail}/answer-'"$1" ]; then cat '{fail}/answer-'"$1"; exit 0; fi
case "$1" in
  SupportsRollback) echo Yes ;;
  NeedsArtifactReboot) echo No ;;
  Download|DownloadWithFileSizes)
    while :; do
      line=$(cat stream-next)
      [ -z "$line" ] && break
      cat "${{line%% *}}" > /dev/null
    done ;;
esac
exit 0
"#,
        log = s(log),
        fail = s(fail)
    )
}

fn preflight() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "tests/cli/orderings_34.rs must run as root (mount namespaces); it runs as uid {euid}"
    );
    for path in [REFERENCE, "/etc/mender", MODULES_DIR] {
        assert!(
            Path::new(path).exists(),
            "{path} is needed: apt-get install mender-client"
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    Reference,
    Ours,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Install,
    Commit,
    Rollback,
}

struct Scenario {
    id: &'static str,
    /// (script or `module-<call>`, exit code) made to fail.
    failing: &'static [(&'static str, i32)],
    /// (query, answer) the module gives instead of its default one.
    answers: &'static [(&'static str, &'static str)],
    steps: &'static [Step],
    /// StateScriptRetryIntervalSeconds, StateScriptRetryTimeoutSeconds.
    retry: (u64, u64),
}

struct Rig {
    dir: tempfile::TempDir,
    artifact: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        preflight();
        let dir = tempfile::Builder::new()
            .prefix("mender-orderings.")
            .tempdir()
            .expect("temp dir");
        let build = dir.path().join("build");
        fs::create_dir(&build).expect("mkdir");
        fs::create_dir(dir.path().join("fail")).expect("mkdir");
        let log = dir.path().join("calls.log");
        let fail = dir.path().join("fail");
        let payload = build.join("payload.bin");
        fs::write(&payload, vec![7u8; 10_000]).expect("write payload");
        let artifact = build.join("update.mender");
        let mut args: Vec<String> = [
            "write",
            "module-image",
            "-T",
            PAYLOAD_TYPE,
            "-t",
            DEVICE_TYPE,
            "-n",
            UPDATE_NAME,
            "-f",
            s(&payload),
            "-o",
            s(&artifact),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let second = ["ArtifactRollback_Enter_02", "ArtifactRollback_Leave_02"];
        for state in ARTIFACT_STATES {
            for action in ["Enter", "Leave", "Error"] {
                let name = format!("{state}_{action}_01");
                let path = build.join(&name);
                write_exec(&path, &state_script(&log, &fail, &name));
                args.push("-s".into());
                args.push(s(&path).into());
            }
        }
        for name in second {
            let path = build.join(name);
            write_exec(&path, &state_script(&log, &fail, name));
            args.push("-s".into());
            args.push(s(&path).into());
        }
        let ran = run(Command::new("mender-artifact").args(&args), TOOL_TIMEOUT);
        assert_eq!(ran.code, 0, "mender-artifact: {}{}", ran.stdout, ran.stderr);
        Rig { dir, artifact }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    fn fail(&self) -> PathBuf {
        self.dir.path().join("fail")
    }
}

struct Device<'r> {
    rig: &'r Rig,
    client: Client,
    dir: PathBuf,
    etc: PathBuf,
    modules: PathBuf,
    config: PathBuf,
    data: PathBuf,
}

impl<'r> Device<'r> {
    fn new(rig: &'r Rig, scenario: &Scenario, client: Client) -> Device<'r> {
        let dir = rig
            .dir
            .path()
            .join(format!("{}-{client:?}", scenario.id).to_lowercase());
        let etc = dir.join("etc-mender");
        let scripts = etc.join("scripts");
        let modules = dir.join("modules");
        let data = dir.join("data");
        for d in [&scripts, &modules, &data] {
            fs::create_dir_all(d).expect("mkdir");
        }
        // mender 3.4 reads /etc/mender/artifact_info (bind-mounted here),
        // mender-rs the one beside its configuration file.
        let info = etc.join("artifact_info");
        for file in [&info, &dir.join("artifact_info")] {
            fs::write(file, format!("artifact_name={INSTALLED_NAME}\n")).expect("write");
        }
        fs::write(scripts.join("version"), "3\n").expect("write");
        for name in ROOTFS_SCRIPTS {
            write_exec(
                &scripts.join(name),
                &state_script(&rig.log(), &rig.fail(), name),
            );
        }
        write_exec(
            &modules.join(PAYLOAD_TYPE),
            &module_script(&rig.log(), &rig.fail()),
        );
        fs::write(
            data.join("device_type"),
            format!("device_type={DEVICE_TYPE}\n"),
        )
        .expect("write");
        let config = dir.join("mender.conf");
        let conf = serde_json::json!({
            "DeviceTypeFile": s(&data.join("device_type")),
            "RootfsScriptsPath": s(&scripts),
            "ArtifactScriptsPath": s(&data.join("scripts")),
            "ModulesPath": s(&modules),
            "ModulesWorkPath": s(&data.join("modules/v3")),
            "StateScriptTimeoutSeconds": 20,
            "StateScriptRetryIntervalSeconds": scenario.retry.0,
            "StateScriptRetryTimeoutSeconds": scenario.retry.1,
        });
        fs::write(&config, serde_json::to_string_pretty(&conf).expect("json")).expect("write");
        fs::write(dir.join("fallback.conf"), "{}\n").expect("write");

        for entry in fs::read_dir(rig.fail()).expect("read fail dir") {
            fs::remove_file(entry.expect("entry").path()).expect("remove marker");
        }
        for (name, code) in scenario.failing {
            fs::write(rig.fail().join(name), code.to_string()).expect("write marker");
        }
        for (query, answer) in scenario.answers {
            fs::write(rig.fail().join(format!("answer-{query}")), answer).expect("write marker");
        }
        let _ = fs::remove_file(rig.log());
        Device {
            rig,
            client,
            dir,
            etc,
            modules,
            config,
            data,
        }
    }

    fn client(&self, args: &[&str]) -> Ran {
        let program = match self.client {
            Client::Reference => REFERENCE,
            Client::Ours => OURS,
        };
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", SANDBOX])
            .arg("sandbox")
            .arg(&self.etc)
            .arg(&self.modules)
            .arg(program)
            .arg("--config")
            .arg(&self.config)
            .arg("--fallback-config")
            .arg(self.dir.join("fallback.conf"))
            .arg("--data")
            .arg(&self.data)
            .arg("--no-syslog")
            .args(args)
            .current_dir(&self.dir);
        run(&mut cmd, CLIENT_TIMEOUT)
    }

    /// The calls logged since the last look, `ProvidePayloadFileSizes`
    /// apart (3.4 does not know it).
    fn take_calls(&self) -> (Vec<String>, usize) {
        let text = fs::read_to_string(self.rig.log()).unwrap_or_default();
        let _ = fs::remove_file(self.rig.log());
        let all: Vec<String> = text.lines().map(str::to_string).collect();
        let sizes = all
            .iter()
            .filter(|l| *l == "module ProvidePayloadFileSizes")
            .count();
        let calls = all
            .into_iter()
            .filter(|l| l != "module ProvidePayloadFileSizes")
            .collect();
        (calls, sizes)
    }

    fn show(&self, command: &str) -> String {
        let ran = self.client(&[command]);
        let mut value = ran
            .stdout
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ");
        if ran.code != 0 {
            let _ = write!(value, " (exit {})", ran.code);
        }
        value
    }
}

struct Transcript {
    lines: Vec<String>,
    /// How often `ProvidePayloadFileSizes` was asked, per step.
    size_queries: Vec<usize>,
    errors: Vec<String>,
}

fn play(rig: &Rig, scenario: &Scenario, client: Client) -> Transcript {
    let device = Device::new(rig, scenario, client);
    let mut t = Transcript {
        lines: Vec::new(),
        size_queries: Vec::new(),
        errors: Vec::new(),
    };
    for step in scenario.steps {
        let artifact = s(&rig.artifact);
        let ran = match step {
            Step::Install => device.client(&["install", artifact]),
            Step::Commit => device.client(&["commit"]),
            Step::Rollback => device.client(&["rollback"]),
        };
        let (calls, sizes) = device.take_calls();
        t.size_queries.push(sizes);
        t.lines.push(format!("{step:?}: exit {}", ran.code));
        t.lines.push(format!("  calls: {}", calls.join(" ")));
        t.lines
            .push(format!("  show-artifact: {}", device.show("show-artifact")));
        if ran.code != 0 {
            t.errors.push(format!(
                "{step:?}: {}",
                ran.stderr
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
    }
    t.lines
        .push(format!("show-provides: {}", device.show("show-provides")));
    t
}

/// Plays `scenario` with both clients; the transcripts must be equal.
/// Returns ours.
fn check(scenario: &Scenario) -> Transcript {
    let rig = Rig::new();
    let reference = play(&rig, scenario, Client::Reference);
    let ours = play(&rig, scenario, Client::Ours);
    let mut report = format!("=== {}\n--- mender 3.4\n", scenario.id);
    for l in &reference.lines {
        let _ = writeln!(report, "{l}");
    }
    let _ = writeln!(report, "--- mender-rs");
    for l in &ours.lines {
        let _ = writeln!(report, "{l}");
    }
    let _ = writeln!(
        report,
        "--- errors: 3.4 {:?}\n    ours {:?}",
        reference.errors, ours.errors
    );
    println!("{report}");
    assert!(
        reference.size_queries.iter().all(|n| *n == 0),
        "mender 3.4 asked ProvidePayloadFileSizes?\n{report}"
    );
    assert_eq!(reference.lines, ours.lines, "\n{report}");
    ours
}

/// The calls line of step `i` of a transcript.
fn calls(t: &Transcript, step: usize) -> Vec<&str> {
    t.lines[step * 3 + 1]
        .trim_start_matches("  calls: ")
        .split(' ')
        .collect()
}

#[test]
fn install_and_commit_ask_the_module_in_34_order() {
    let ours = check(&Scenario {
        id: "install-commit",
        failing: &[],
        answers: &[],
        steps: &[Step::Install, Step::Commit],
        retry: (1, 2),
    });
    assert_eq!(
        calls(&ours, 0),
        [
            "Download_Enter_01",
            "module",
            "Download",
            "Download_Leave_01",
            "module",
            "SupportsRollback",
            "ArtifactInstall_Enter_01",
            "module",
            "ArtifactInstall",
            "ArtifactInstall_Leave_01",
            "module",
            "NeedsArtifactReboot",
        ]
    );
    // mender-rs asks the 4.0 query once, before the download.
    assert_eq!(ours.size_queries, [1, 0]);
}

#[test]
fn requested_rollback_with_a_clean_run() {
    check(&Scenario {
        id: "install-rollback",
        failing: &[],
        answers: &[],
        steps: &[Step::Install, Step::Rollback],
        retry: (1, 2),
    });
}

#[test]
fn failing_rollback_enter_script_runs_artifact_failure() {
    let ours = check(&Scenario {
        id: "rollback-enter-fails",
        failing: &[("ArtifactRollback_Enter_01", 1)],
        answers: &[],
        steps: &[Step::Install, Step::Rollback],
        retry: (1, 2),
    });
    let rollback = calls(&ours, 1).join(" ");
    // The first failing script ends its list (ArtifactRollback_Enter_02
    // does not run); the rollback and the Leave scripts still do.
    assert!(
        rollback.contains("ArtifactRollback_Enter_01 module ArtifactRollback ArtifactRollback_Leave_01 ArtifactRollback_Leave_02 ArtifactFailure_Enter_01 module ArtifactFailure ArtifactFailure_Leave_01"),
        "{rollback}"
    );
}

#[test]
fn failing_rollback_leave_script_runs_artifact_failure() {
    check(&Scenario {
        id: "rollback-leave-fails",
        failing: &[("ArtifactRollback_Leave_01", 1)],
        answers: &[],
        steps: &[Step::Install, Step::Rollback],
        retry: (1, 2),
    });
}

#[test]
fn everything_failing_keeps_the_artifact_provides() {
    let ours = check(&Scenario {
        id: "everything-fails",
        failing: &[
            ("ArtifactInstall_Enter_01", 1),
            ("ArtifactInstall_Error_01", 1),
            ("ArtifactRollback_Enter_01", 1),
            ("ArtifactFailure_Enter_01", 1),
        ],
        answers: &[],
        steps: &[Step::Install],
        retry: (1, 2),
    });
    let provides = ours.lines.last().expect("provides line");
    assert!(
        provides.contains(&format!("artifact_name={UPDATE_NAME}_INCONSISTENT"))
            && provides.contains(&format!(
                "rootfs-image.{PAYLOAD_TYPE}.version={UPDATE_NAME}"
            )),
        "{provides}"
    );
}

#[test]
fn retry_later_runs_five_times_in_a_seven_second_window_error_scripts_too() {
    let ours = check(&Scenario {
        id: "retry-window",
        failing: &[
            ("ArtifactInstall_Enter_01", 21),
            ("ArtifactInstall_Error_01", 21),
        ],
        answers: &[],
        steps: &[Step::Install],
        retry: (2, 7),
    });
    let install = calls(&ours, 0);
    let count = |name: &str| install.iter().filter(|c| **c == name).count();
    assert_eq!(count("ArtifactInstall_Enter_01"), 5, "{install:?}");
    assert_eq!(count("ArtifactInstall_Error_01"), 5, "{install:?}");
}

/// A module that needs a reboot: standalone `commit` runs the commit
/// states alone (no `ArtifactVerifyReboot`: 3.4, like 4.x, never runs the
/// reboot states from the command line).
#[test]
fn commit_of_a_module_that_needs_a_reboot_runs_no_reboot_state() {
    const YES: &[(&str, &str)] = &[("NeedsArtifactReboot", "Yes")];
    const AUTOMATIC: &[(&str, &str)] = &[("NeedsArtifactReboot", "Automatic")];
    for (answer, answers) in [("Yes", YES), ("Automatic", AUTOMATIC)] {
        let ours = check(&Scenario {
            id: "module-reboot-commit",
            failing: &[],
            answers,
            steps: &[Step::Install, Step::Commit],
            retry: (1, 2),
        });
        assert_eq!(
            calls(&ours, 1).join(" "),
            "ArtifactCommit_Enter_01 module ArtifactCommit ArtifactCommit_Leave_01 module Cleanup",
            "{answer}"
        );
    }
}

/// The module's `ArtifactFailure` fails after a clean rollback: 3.4 counts
/// that as a failed error path and marks the device inconsistent.
#[test]
fn failing_module_artifact_failure_marks_the_device_inconsistent() {
    check(&Scenario {
        id: "module-failure-fails",
        failing: &[
            ("ArtifactInstall_Enter_01", 1),
            ("module-ArtifactFailure", 1),
        ],
        answers: &[],
        steps: &[Step::Install],
        retry: (1, 2),
    });
}

/// The module's `Cleanup` fails after a good commit.
#[test]
fn failing_module_cleanup_after_a_commit() {
    check(&Scenario {
        id: "module-cleanup-fails",
        failing: &[("module-Cleanup", 1)],
        answers: &[],
        steps: &[Step::Install, Step::Commit],
        retry: (1, 2),
    });
}
