//! Power-loss tests: the process is aborted at every persisted store write
//! (`MENDER_RS_CRASH_AT=step:K`) and after every payload block written to
//! the partition (`chunk:K`) of each command of three scenarios on a
//! simulated A/B device; after each crash the power cut is simulated (the
//! bootloader's A/B rule is applied), the next user command resumes the
//! interrupted update, and the device is brought to rest. Each of those
//! resumes is also crashed at each of its own store writes (a second power
//! cut while recovering). At rest the device must boot a partition holding
//! the image its provides name, name release-1 or release-2, have run no
//! script more often than the power-loss rules allow (spec §3.8, §3.9.5),
//! and have nothing pending. Two more tests drive an update into the loop
//! limit (30 persisted transitions).
//!
//! Needs the `crash-injection` feature:
//! `cargo test --features crash-injection --test cli crash_injection -- --nocapture`
//! (`CRASH_INJECTION_TRACE=1` prints every injection point's outcome).

#![cfg(feature = "crash-injection")]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_mender-rs");
const CRASH_VAR: &str = "MENDER_RS_CRASH_AT";
const MIB: usize = 1 << 20;
/// 3.25 MiB: a few payload blocks, the last one partial.
const PAYLOAD_LEN: usize = 3 * MIB + MIB / 4;
const PARTITION_LEN: u64 = 8 << 20;
const DEVICE_TYPE: &str = "qemux86-64";
/// No single command of the simulated device takes more than a fraction of
/// a second; this only stops a hung child from hanging the suite.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of the `K` loops: far beyond the writes/blocks of any command.
const MAX_K: u32 = 256;

const ROOTFS_SCRIPTS: [&str; 3] = [
    "Download_Enter_01",
    "Download_Leave_01",
    "Download_Error_01",
];
const ARTIFACT_STATES: [&str; 6] = [
    "ArtifactInstall",
    "ArtifactReboot",
    "ArtifactCommit",
    "ArtifactRollback",
    "ArtifactRollbackReboot",
    "ArtifactFailure",
];
const ACTIONS: [&str; 3] = ["Enter", "Leave", "Error"];

// ---------------------------------------------------------------------------
// child processes

/// How a child process ended, with its output.
struct Run {
    what: String,
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn aborted_by_injection(&self) -> bool {
        self.signal == Some(libc::SIGABRT) && self.stderr.contains("crash injection: aborting at")
    }

    fn describe(&self) -> String {
        format!(
            "`{}` ended with code {:?} signal {:?}; stderr:\n{}",
            self.what,
            self.code,
            self.signal,
            self.stderr.trim_end()
        )
    }

    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }
}

/// Core dumps of the aborted children would only slow the test down.
fn no_core_dumps() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid, initialised struct; only
        // the soft limit is lowered.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0 {
                limit.rlim_cur = 0;
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
            }
        }
    });
}

fn reader_thread(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` to its end, killing it (and failing) after [`CHILD_TIMEOUT`].
fn run_child(mut cmd: Command, what: String) -> Run {
    no_core_dumps();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A binary copied a moment ago may still be open for writing in a
    // child another thread forked meanwhile (ETXTBSY): try again.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("starting `{what}`: {e}"),
        }
    };
    let pid = child.id() as libc::pid_t;
    let out = reader_thread(child.stdout.take().unwrap());
    let err = reader_thread(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for `{what}`: {e}")),
        Err(_) => {
            // The child is not reaped yet (its waiter has not returned), so
            // the pid is still ours.
            let _ = mender_rs::sys::kill(pid, libc::SIGKILL);
            panic!("`{what}` did not finish within {CHILD_TIMEOUT:?}");
        }
    };
    // A grandchild holding a pipe open must not hang the test either.
    let text = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        String::from_utf8_lossy(&rx.recv_timeout(left).unwrap_or_default()).into_owned()
    };
    let stdout = text(out);
    let stderr = text(err);
    Run {
        what,
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    }
}

/// `mender-rs artifact write rootfs-image` (build time, not on the device).
fn write_artifact(bin: &Path, name: &str, payload: &Path, scripts: &[PathBuf], out: &Path) {
    let mut cmd = Command::new(bin);
    cmd.env_remove(CRASH_VAR)
        .args(["artifact", "--compression", "none", "write", "rootfs-image"])
        .args(["-t", DEVICE_TYPE, "-n", name, "-f"])
        .arg(payload)
        .arg("-o")
        .arg(out);
    for s in scripts {
        cmd.arg("-s").arg(s);
    }
    run_child(cmd, format!("artifact write {name}")).expect_code(0);
}

// ---------------------------------------------------------------------------
// the simulated device

/// A throw-away A/B device in a folder: two partition files, a U-Boot
/// environment file named by fw_env.config, configuration, data directory,
/// rootfs state scripts, and a log every state script appends its name to.
struct Device {
    root: PathBuf,
    /// The lab's own copy of the mender-rs binary.
    bin: PathBuf,
}

impl Device {
    fn conf(&self) -> PathBuf {
        self.root.join("etc/mender/mender.conf")
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("scripts.log")
    }

    fn partition(&self, n: &str) -> PathBuf {
        self.root.join(format!("dev/mmcblk0p{n}"))
    }

    /// Lays out a fresh device (nothing installed, booting partition 2).
    fn create(root: &Path, bin: &Path) -> Device {
        let dev = Device {
            root: root.to_path_buf(),
            bin: bin.to_path_buf(),
        };
        let scripts = root.join("etc/mender/scripts");
        for d in [root.join("dev"), scripts.clone(), dev.data()] {
            fs::create_dir_all(d).unwrap();
        }
        for n in ["2", "3"] {
            let f = fs::File::create(dev.partition(n)).unwrap();
            f.set_len(PARTITION_LEN).unwrap();
        }
        fs::write(root.join("boot-env"), vec![0u8; 0x4000]).unwrap();
        fs::write(
            root.join("etc/fw_env.config"),
            format!("{} 0x0 0x4000\n", root.join("boot-env").display()),
        )
        .unwrap();
        fs::write(
            dev.data().join("device_type"),
            format!("device_type={DEVICE_TYPE}\n"),
        )
        .unwrap();
        let conf = serde_json::json!({
            "RootfsPartA": dev.partition("2"),
            "RootfsPartB": dev.partition("3"),
            "BootEnvConfig": root.join("etc/fw_env.config"),
            "DeviceTypeFile": dev.data().join("device_type"),
            "RootfsScriptsPath": scripts,
            "ModulesPath": root.join("modules"),
            "StateScriptRetryIntervalSeconds": 1,
        });
        fs::write(dev.conf(), serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
        for name in ROOTFS_SCRIPTS {
            write_script(&scripts, name, &dev.log_path(), 0);
        }
        fs::write(scripts.join("version"), "3").unwrap();
        fs::write(dev.log_path(), "").unwrap();
        dev.run(
            &[
                "bootenv",
                "set",
                "--create",
                "mender_boot_part=2",
                "mender_boot_part_hex=2",
                "upgrade_available=0",
                "bootcount=0",
            ],
            None,
        )
        .expect_code(0);
        dev
    }

    /// `mender-rs --config C --data D ARGS`, with `crash` as MENDER_RS_CRASH_AT.
    fn run(&self, args: &[&str], crash: Option<&str>) -> Run {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(self.conf())
            .arg("--data")
            .arg(self.data())
            .args(args);
        match crash {
            Some(spec) => cmd.env(CRASH_VAR, spec),
            None => cmd.env_remove(CRASH_VAR),
        };
        let what = match crash {
            Some(spec) => format!("{} [{CRASH_VAR}={spec}]", args.join(" ")),
            None => args.join(" "),
        };
        run_child(cmd, what)
    }

    fn boot_env(&self) -> BTreeMap<String, String> {
        let r = self.run(&["bootenv", "print"], None);
        r.expect_code(0);
        key_values(&r.stdout)
    }

    fn set_boot_env(&self, vars: &[(&str, &str)]) {
        let mut args = vec!["bootenv".to_string(), "set".to_string()];
        args.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args, None).expect_code(0);
    }

    /// The power cycle, as the bootloader sees it (the rule of our U-Boot
    /// and GRUB scripts): an uncommitted update gets one try; booting it
    /// again without a commit switches back.
    fn reboot(&self) {
        let env = self.boot_env();
        let part = env.get("mender_boot_part").cloned().unwrap_or_default();
        if env.get("upgrade_available").map(String::as_str) != Some("1") {
            return;
        }
        let count: u32 = env
            .get("bootcount")
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        if count >= 1 {
            let other = if part == "2" { "3" } else { "2" };
            self.set_boot_env(&[
                ("mender_boot_part", other),
                ("mender_boot_part_hex", other),
                ("upgrade_available", "0"),
            ]);
        } else {
            self.set_boot_env(&[("bootcount", &(count + 1).to_string())]);
        }
    }

    fn provides(&self) -> BTreeMap<String, String> {
        let r = self.run(&["show-provides"], None);
        r.expect_code(0);
        key_values(&r.stdout)
    }

    fn artifact_name(&self) -> String {
        let r = self.run(&["show-artifact"], None);
        r.expect_code(0);
        r.stdout.trim().to_string()
    }

    fn script_log(&self) -> Vec<String> {
        fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The update in progress, as the store holds it: (phase, steps).
    fn pending(&self) -> Option<(String, u64)> {
        let store = mender_rs::store::Store::read_only(&self.data()).expect("readable store");
        let update = store.data().update.as_ref()?;
        let phase = update.get("phase")?.as_str()?.to_string();
        let steps = update.get("steps").and_then(|s| s.as_u64()).unwrap_or(0);
        Some((phase, steps))
    }

    /// The image-sized start of partition `n`.
    fn partition_image(&self, n: &str) -> Vec<u8> {
        let mut bytes = fs::read(self.partition(n)).unwrap();
        bytes.truncate(PAYLOAD_LEN);
        bytes
    }
}

fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A state script that appends its name to `log` and exits with `code`.
fn write_script(dir: &Path, name: &str, log: &Path, code: i32) -> PathBuf {
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "#!/bin/sh\necho {name} >> '{}'\nexit {code}\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Deterministic, incompressible payload bytes.
fn payload(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(PAYLOAD_LEN + 8);
    while out.len() < PAYLOAD_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(PAYLOAD_LEN);
    out
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).unwrap();
        } else {
            panic!("unexpected file type: {}", entry.path().display());
        }
    }
}

// ---------------------------------------------------------------------------
// scenarios

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    /// install → reboot → commit → reboot.
    Success,
    /// ArtifactInstall_Leave_01 exits 1: install rolls back.
    InstallFailure,
    /// ArtifactCommit_Enter_01 exits 1: commit rolls back.
    CommitFailure,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum UserCommand {
    Install,
    Commit,
}

impl UserCommand {
    fn name(self) -> &'static str {
        match self {
            UserCommand::Install => "install",
            UserCommand::Commit => "commit",
        }
    }
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Success => "success",
            Scenario::InstallFailure => "install-failure",
            Scenario::CommitFailure => "commit-failure",
        }
    }

    fn failing_script(self) -> Option<&'static str> {
        match self {
            Scenario::Success => None,
            Scenario::InstallFailure => Some("ArtifactInstall_Leave_01"),
            Scenario::CommitFailure => Some("ArtifactCommit_Enter_01"),
        }
    }

    /// The user's commands with their crash-free exit codes; each is
    /// followed by a reboot.
    fn commands(self) -> &'static [(UserCommand, i32)] {
        match self {
            Scenario::Success => &[(UserCommand::Install, 0), (UserCommand::Commit, 0)],
            Scenario::InstallFailure => &[(UserCommand::Install, 1)],
            Scenario::CommitFailure => &[(UserCommand::Install, 0), (UserCommand::Commit, 1)],
        }
    }

    /// What the device runs when the scenario is over, with or without a
    /// crash; None when either release is right (it depends on where the
    /// crash hit).
    fn final_release(self) -> Option<&'static str> {
        match self {
            Scenario::Success => None,
            Scenario::InstallFailure | Scenario::CommitFailure => Some("release-1"),
        }
    }

    /// The crash-free script log (spec §3.9.4, without the Idle/Sync and
    /// Reboot states the standalone commands do not have).
    fn expected_log(self) -> Vec<&'static str> {
        let mut log = vec![
            "Download_Enter_01",
            "Download_Leave_01",
            "ArtifactInstall_Enter_01",
            "ArtifactInstall_Leave_01",
        ];
        let failed = match self {
            Scenario::Success => {
                log.extend(["ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"]);
                return log;
            }
            Scenario::InstallFailure => "ArtifactInstall_Error_01",
            Scenario::CommitFailure => {
                log.push("ArtifactCommit_Enter_01");
                "ArtifactCommit_Error_01"
            }
        };
        log.extend([
            failed,
            "ArtifactRollback_Enter_01",
            "ArtifactRollback_Leave_01",
            "ArtifactFailure_Enter_01",
            "ArtifactFailure_Leave_01",
        ]);
        log
    }
}

/// Scripts the power-loss rules run again (ArtifactRollback, ArtifactFailure
/// and ArtifactCommit_Leave are re-entered after a crash in them).
fn rerun_allowed(script: &str) -> bool {
    script.starts_with("ArtifactFailure_")
        || script.starts_with("ArtifactRollback_")
        || script.starts_with("ArtifactCommit_Leave_")
}

/// A workspace: the artifacts of one scenario, the device, a snapshot of the
/// device with release-1 committed (restored before every run) and a
/// checkpoint (the device right after a crash and the power cut).
struct Lab {
    _dir: tempfile::TempDir,
    device: Device,
    template: PathBuf,
    checkpoint: PathBuf,
    release_2: PathBuf,
    /// Name, rootfs-image.checksum and image of release-1 and release-2.
    images: Vec<(String, String, Vec<u8>)>,
}

impl Lab {
    fn new(scenario: Scenario) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("mender-rs-crash.")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let build = root.join("build");
        let scripts_dir = build.join("scripts");
        fs::create_dir_all(&scripts_dir).unwrap();
        let device_root = root.join("device");
        let log = device_root.join("scripts.log");
        // A private copy: a concurrent `cargo build` in the same target
        // directory (without the feature, or of other sources) must not
        // swap the binary under a running test.
        let bin = root.join("mender-rs");
        fs::copy(BIN, &bin).unwrap();

        let mut images = Vec::new();
        let mut artifacts = Vec::new();
        for (name, seed) in [("release-1", 0x5eed_0001u64), ("release-2", 0x5eed_0002)] {
            let bytes = payload(seed);
            let image = build.join(format!("{name}.ext4"));
            fs::write(&image, &bytes).unwrap();
            let mut scripts = Vec::new();
            if name == "release-2" {
                for state in ARTIFACT_STATES {
                    for action in ACTIONS {
                        let script = format!("{state}_{action}_01");
                        let code = i32::from(scenario.failing_script() == Some(script.as_str()));
                        scripts.push(write_script(&scripts_dir, &script, &log, code));
                    }
                }
            }
            let out = build.join(format!("{name}.mender"));
            write_artifact(&bin, name, &image, &scripts, &out);
            artifacts.push(out);
            images.push((name.to_string(), hex(&Sha256::digest(&bytes)), bytes));
        }
        let release_2 = artifacts.pop().unwrap();
        let release_1 = artifacts.pop().unwrap();

        // Release-1, installed and committed by our client.
        let device = Device::create(&device_root, &bin);
        device
            .run(&["install", release_1.to_str().unwrap()], None)
            .expect_code(0);
        device.reboot();
        device.run(&["commit"], None).expect_code(0);
        device.reboot();
        fs::write(device.log_path(), "").unwrap();
        let template = root.join("template");
        copy_tree(&device_root, &template);
        let checkpoint = root.join("checkpoint");
        let lab = Lab {
            _dir: dir,
            device,
            template,
            checkpoint,
            release_2,
            images,
        };
        assert_eq!(lab.device.artifact_name(), "release-1");
        assert_eq!(lab.booted_image(), Ok("release-1".to_string()));
        lab
    }

    /// The device as it was with release-1 committed.
    fn restore(&self) {
        self.restore_from(&self.template);
    }

    fn restore_from(&self, from: &Path) {
        fs::remove_dir_all(&self.device.root).unwrap();
        copy_tree(from, &self.device.root);
    }

    fn save_checkpoint(&self) {
        if self.checkpoint.exists() {
            fs::remove_dir_all(&self.checkpoint).unwrap();
        }
        copy_tree(&self.device.root, &self.checkpoint);
    }

    fn run_command(&self, command: UserCommand, crash: Option<&str>) -> Run {
        match command {
            UserCommand::Install => self
                .device
                .run(&["install", self.release_2.to_str().unwrap()], crash),
            UserCommand::Commit => self.device.run(&["commit"], crash),
        }
    }

    fn release_by_name(&self, name: &str) -> Option<&(String, String, Vec<u8>)> {
        self.images.iter().find(|(n, _, _)| n == name)
    }

    /// Invariant 1: the partition the boot environment points at holds the
    /// image whose checksum the provides name, and nothing is pending in the
    /// boot environment. Returns that image's release.
    fn booted_image(&self) -> Result<String, String> {
        let env = self.device.boot_env();
        let part = env.get("mender_boot_part").cloned().unwrap_or_default();
        if part != "2" && part != "3" {
            return Err(format!("mender_boot_part is {part:?}"));
        }
        if env.get("upgrade_available").map(String::as_str) != Some("0") {
            return Err(format!(
                "upgrade_available is {:?} at rest",
                env.get("upgrade_available")
            ));
        }
        let provides = self.device.provides();
        let Some(checksum) = provides.get("rootfs-image.checksum") else {
            return Err(format!("no rootfs-image.checksum in {provides:?}"));
        };
        let Some((release, _, image)) = self.images.iter().find(|(_, c, _)| c == checksum) else {
            return Err(format!(
                "rootfs-image.checksum {checksum} is neither release"
            ));
        };
        if self.device.partition_image(&part) != *image {
            return Err(format!(
                "the booted partition {part} does not hold {release}, whose checksum the provides name"
            ));
        }
        Ok(release.clone())
    }
}

/// Where one injected crash (or two) hit, for the checks.
struct CrashCase {
    scenario: Scenario,
    command: UserCommand,
    label: String,
    /// The store's update phase right after the (first) crash; None when no
    /// update was left.
    phase_at_crash: Option<String>,
    /// Script log lines written before the (first) crash.
    log_at_crash: usize,
}

/// Checks the device at rest (invariants 1 to 4); returns the violations.
fn check_at_rest(lab: &Lab, crash_free_log: &[String], case: &CrashCase) -> Vec<String> {
    let dev = &lab.device;
    let mut bad = Vec::new();
    let mut fail = |msg: String| {
        bad.push(format!(
            "{} / {} / {}: {msg}",
            case.scenario.name(),
            case.command.name(),
            case.label
        ))
    };

    // 1. The booted partition holds the image the provides name.
    let booted = lab.booted_image().unwrap_or_else(|e| {
        fail(e);
        String::new()
    });

    // 2. A consistent release.
    let name = dev.artifact_name();
    match lab.release_by_name(&name) {
        None => fail(format!("show-artifact says {name:?}")),
        Some(_) if !booted.is_empty() && booted != name => fail(format!(
            "show-artifact says {name}, the provides and the booted partition {booted}"
        )),
        Some(_) => {}
    }
    if let Some(want) = case.scenario.final_release()
        && name != want
    {
        fail(format!("ended with {name}, the scenario leaves {want}"));
    }

    // 3. Script runs.
    let log = dev.script_log();
    let n = case.log_at_crash.min(log.len());
    if log[..n] != crash_free_log[..n.min(crash_free_log.len())] {
        fail(format!(
            "the scripts before the crash differ from the crash-free run: {:?}",
            &log[..n]
        ));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &log {
        *counts.entry(s).or_default() += 1;
    }
    for (script, &count) in &counts {
        let free = crash_free_log.iter().filter(|s| s == script).count();
        let allowed = if rerun_allowed(script) {
            free.max(2)
        } else {
            free
        };
        if count > allowed {
            fail(format!(
                "{script} ran {count} times (crash-free: {free}); log: {log:?}"
            ));
        }
    }
    let in_download = case.phase_at_crash.as_deref() == Some("download");
    if in_download && log[n..].iter().any(|s| s.starts_with("Artifact")) {
        fail(format!(
            "Artifact scripts ran after a crash in the download: {:?}",
            &log[n..]
        ));
    }
    let ran = |script: &str| counts.contains_key(script);
    if name == "release-1" && !in_download {
        for script in [
            "ArtifactRollback_Enter_01",
            "ArtifactRollback_Leave_01",
            "ArtifactFailure_Enter_01",
            "ArtifactFailure_Leave_01",
        ] {
            if !ran(script) {
                fail(format!("rolled back without {script}; log: {log:?}"));
            }
        }
    }
    if name == "release-1" && ran("ArtifactCommit_Leave_01") {
        fail(format!(
            "rolled back after ArtifactCommit_Leave; log: {log:?}"
        ));
    }
    if name == "release-2" {
        if !ran("ArtifactCommit_Leave_01") {
            fail(format!(
                "committed without ArtifactCommit_Leave; log: {log:?}"
            ));
        }
        if counts.keys().any(|s| s.starts_with("ArtifactRollback_")) {
            fail(format!("committed after a rollback; log: {log:?}"));
        }
    }

    // 4. Nothing pending.
    for command in ["commit", "rollback"] {
        let r = dev.run(&[command], None);
        if r.code != Some(2) {
            fail(format!("{command} at rest: {}", r.describe()));
        }
    }
    if trace() {
        eprintln!(
            "crash injection trace: {} / {} / {}: phase at crash {:?} -> {name}; log {log:?}",
            case.scenario.name(),
            case.command.name(),
            case.label,
            case.phase_at_crash
        );
    }
    bad
}

/// `CRASH_INJECTION_TRACE=1`: one line per injection point.
fn trace() -> bool {
    std::env::var_os("CRASH_INJECTION_TRACE").is_some()
}

/// After a crash and the power cut: the next user command (`commit`, which
/// resumes whatever was interrupted), then reboot and commit until nothing
/// is pending, and a last reboot.
fn resume_and_settle(lab: &Lab, case: &CrashCase) -> Vec<String> {
    let dev = &lab.device;
    let mut bad = Vec::new();
    let mut attempts = 0;
    loop {
        let r = dev.run(&["commit"], None);
        if r.signal.is_some() || !matches!(r.code, Some(0..=2)) || r.stderr.contains("panicked") {
            bad.push(format!(
                "{} / {} / {}: resuming: {}",
                case.scenario.name(),
                case.command.name(),
                case.label,
                r.describe()
            ));
        }
        if dev.pending().is_none() {
            break;
        }
        attempts += 1;
        if attempts > 3 {
            bad.push(format!(
                "{} / {} / {}: still pending after {attempts} commits: {:?}",
                case.scenario.name(),
                case.command.name(),
                case.label,
                dev.pending()
            ));
            break;
        }
        dev.reboot();
    }
    dev.reboot();
    bad
}

#[derive(Default)]
struct Counts {
    /// Crashes per command and kind.
    points: BTreeMap<(&'static str, &'static str), u32>,
    /// Second crashes, while resuming after a first one.
    resume_crashes: u32,
    /// How the crashed updates ended, per release.
    ended: BTreeMap<String, u32>,
    violations: Vec<String>,
}

impl Counts {
    fn total(&self) -> u32 {
        self.points.values().sum()
    }

    fn summary(&self, scenario: Scenario) -> String {
        let kind = |k: &str| -> String {
            let per: Vec<String> = self
                .points
                .iter()
                .filter(|((_, kind), _)| *kind == k)
                .map(|((cmd, _), n)| format!("{cmd} {n}"))
                .collect();
            let sum: u32 = self
                .points
                .iter()
                .filter(|((_, kind), _)| *kind == k)
                .map(|(_, n)| n)
                .sum();
            if per.len() > 1 {
                format!("{k} {sum} [{}]", per.join(", "))
            } else {
                format!("{k} {sum}")
            }
        };
        format!("{}: {}, {}", scenario.name(), kind("step"), kind("chunk"))
    }
}

/// Runs the scenario crash-free; returns its script log.
fn crash_free(lab: &Lab, scenario: Scenario) -> Vec<String> {
    lab.restore();
    for &(command, code) in scenario.commands() {
        lab.run_command(command, None).expect_code(code);
        lab.device.reboot();
    }
    let log = lab.device.script_log();
    assert_eq!(
        log,
        scenario.expected_log(),
        "{}: crash-free script log",
        scenario.name()
    );
    let case = CrashCase {
        scenario,
        command: UserCommand::Install,
        label: "no crash".into(),
        phase_at_crash: None,
        log_at_crash: 0,
    };
    let bad = check_at_rest(lab, &log, &case);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    log
}

/// Every injection point of every command of `scenario`, and for each, every
/// step of the resume after it (a second crash while recovering).
fn crash_scenario(scenario: Scenario) -> Counts {
    let lab = Lab::new(scenario);
    let reference = crash_free(&lab, scenario);
    let mut counts = Counts::default();
    for (index, &(command, free_code)) in scenario.commands().iter().enumerate() {
        let kinds: &[&'static str] = match command {
            UserCommand::Install => &["step", "chunk"],
            UserCommand::Commit => &["step"],
        };
        for &kind in kinds {
            let mut finished = false;
            for k in 1..=MAX_K {
                let spec = format!("{kind}:{k}");
                lab.restore();
                for &(earlier, code) in &scenario.commands()[..index] {
                    lab.run_command(earlier, None).expect_code(code);
                    lab.device.reboot();
                }
                let run = lab.run_command(command, Some(&spec));
                if !run.aborted_by_injection() {
                    // The command got past its last injection point.
                    if run.code != Some(free_code) || run.stderr.contains("panicked") {
                        counts.violations.push(format!(
                            "{} / {} / {spec}: completion differs from the crash-free run: {}",
                            scenario.name(),
                            command.name(),
                            run.describe()
                        ));
                    }
                    finished = true;
                    break;
                }
                *counts.points.entry((command.name(), kind)).or_default() += 1;
                let mut case = CrashCase {
                    scenario,
                    command,
                    label: spec.clone(),
                    phase_at_crash: lab.device.pending().map(|(phase, _)| phase),
                    log_at_crash: lab.device.script_log().len(),
                };
                // The power cut.
                lab.device.reboot();
                lab.save_checkpoint();
                counts.violations.extend(resume_and_settle(&lab, &case));
                counts
                    .violations
                    .extend(check_at_rest(&lab, &reference, &case));
                *counts.ended.entry(lab.device.artifact_name()).or_default() += 1;

                // A second crash, at each step of the resume.
                let mut resumed = false;
                for k2 in 1..=MAX_K {
                    lab.restore_from(&lab.checkpoint);
                    let resume_spec = format!("step:{k2}");
                    let r = lab.device.run(&["commit"], Some(&resume_spec));
                    if !r.aborted_by_injection() {
                        resumed = true;
                        break;
                    }
                    counts.resume_crashes += 1;
                    case.label = format!("{spec}, then {resume_spec} while resuming");
                    lab.device.reboot();
                    counts.violations.extend(resume_and_settle(&lab, &case));
                    counts
                        .violations
                        .extend(check_at_rest(&lab, &reference, &case));
                }
                assert!(
                    resumed,
                    "{} / {} / {spec}: the resume still crashes at step {MAX_K}",
                    scenario.name(),
                    command.name()
                );
            }
            assert!(
                finished,
                "{} / {} / {kind}: still crashing at K={MAX_K}",
                scenario.name(),
                command.name()
            );
        }
    }
    for kind in ["step", "chunk"] {
        assert!(
            counts.points.keys().any(|(_, k)| *k == kind),
            "{}: no {kind} injection point was hit; is the crash-injection feature on?",
            scenario.name()
        );
    }
    counts
}

#[test]
fn power_loss_at_every_injection_point() {
    let started = Instant::now();
    let scenarios = [
        Scenario::Success,
        Scenario::InstallFailure,
        Scenario::CommitFailure,
    ];
    let results: Vec<(Scenario, Counts)> = thread::scope(|s| {
        let handles: Vec<_> = scenarios
            .iter()
            .map(|&sc| (sc, s.spawn(move || crash_scenario(sc))))
            .collect();
        handles
            .into_iter()
            .map(|(sc, h)| match h.join() {
                Ok(c) => (sc, c),
                Err(e) => std::panic::resume_unwind(e),
            })
            .collect()
    });
    let total: u32 = results.iter().map(|(_, c)| c.total()).sum();
    let resume: u32 = results.iter().map(|(_, c)| c.resume_crashes).sum();
    let parts: Vec<String> = results.iter().map(|(sc, c)| c.summary(*sc)).collect();
    let mut ended: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, c) in &results {
        for (name, n) in &c.ended {
            *ended.entry(name).or_default() += n;
        }
    }
    println!(
        "crash injection: {total} points ({}); {resume} second crashes while resuming; first crashes ended in {ended:?}; {:.1?}",
        parts.join("; "),
        started.elapsed()
    );
    let violations: Vec<&String> = results.iter().flat_map(|(_, c)| &c.violations).collect();
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations
            .iter()
            .take(40)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------
// the loop limit

/// A device whose release-2 install crashed right after persisting
/// ArtifactInstall (before anything was switched).
fn crashed_install() -> Lab {
    let lab = Lab::new(Scenario::Success);
    lab.restore();
    let r = lab.run_command(UserCommand::Install, Some("step:3"));
    assert!(r.aborted_by_injection(), "{}", r.describe());
    assert_eq!(
        lab.device.pending().map(|(p, _)| p).as_deref(),
        Some("artifact-install")
    );
    lab
}

/// Power cuts, each followed by a `commit` that crashes at its first store
/// write, for at most `attempts` rounds or, with `until_marked`, until the
/// name is marked `_INCONSISTENT`. Returns the number of crashed resumes,
/// the round that marked the name, and the run that did not crash.
fn crash_looping_resumes(
    lab: &Lab,
    attempts: usize,
    until_marked: bool,
) -> (usize, Option<usize>, Option<Run>) {
    let mut crashed = 0;
    let mut marked = None;
    for attempt in 1..=attempts {
        lab.device.reboot();
        let r = lab.device.run(&["commit"], Some("step:1"));
        if marked.is_none() && lab.device.artifact_name().ends_with("_INCONSISTENT") {
            marked = Some(attempt);
        }
        if !r.aborted_by_injection() {
            return (crashed, marked, Some(r));
        }
        crashed += 1;
        if until_marked && marked.is_some() {
            break;
        }
    }
    (crashed, marked, None)
}

/// The update is gone, the name marked, and the device boots the image its
/// provides name.
fn assert_abandoned(lab: &Lab) {
    let dev = &lab.device;
    assert_eq!(dev.pending(), None, "the update is still pending");
    dev.reboot();
    let name = dev.artifact_name();
    assert!(name.ends_with("_INCONSISTENT"), "show-artifact: {name}");
    lab.booted_image().unwrap();
    for command in ["commit", "rollback"] {
        let r = dev.run(&[command], None);
        assert_eq!(r.code, Some(2), "{command} at rest: {}", r.describe());
    }
}

/// Spec §3.8: after 30 persisted transitions a crash-looping update is
/// given up and the artifact marked `_INCONSISTENT`. Every resume crashes at
/// its first store write until the name is marked; the next resume (power
/// stable again) finishes abandoning the update.
#[test]
fn crash_loop_hits_the_loop_limit() {
    let lab = crashed_install();
    let max = mender_rs::engine::MAX_STEPS as usize;
    let (crashed, marked, ended) = crash_looping_resumes(&lab, max + 5, true);
    println!(
        "crash injection loop limit: name marked _INCONSISTENT by crashed resume {} of {crashed} (loop limit {max}; update state then: {:?})",
        marked.map_or("-".to_string(), |m| m.to_string()),
        lab.device.pending()
    );
    assert!(ended.is_none(), "{}", ended.unwrap().describe());
    let marked = marked.expect("never marked _INCONSISTENT");
    assert!(marked <= max + 2, "marked only after {marked} resumes");
    lab.device.reboot();
    let r = lab.device.run(&["commit"], None);
    assert!(
        r.signal.is_none() && matches!(r.code, Some(0..=2)) && !r.stderr.contains("panicked"),
        "{}",
        r.describe()
    );
    assert_abandoned(&lab);
}

/// The same loop, with every resume crashing at its first store write for
/// good: the update must still be abandoned within the loop limit and a few
/// more resumes.
#[test]

fn crash_loop_at_the_first_write_is_abandoned() {
    let lab = crashed_install();
    let max = mender_rs::engine::MAX_STEPS as usize;
    let (crashed, marked, ended) = crash_looping_resumes(&lab, max + 5, false);
    let r = ended.unwrap_or_else(|| {
        panic!(
            "still crashing after {crashed} resumes (name marked by resume {marked:?}); update state {:?}",
            lab.device.pending()
        )
    });
    assert!(
        r.signal.is_none() && matches!(r.code, Some(0..=2)) && !r.stderr.contains("panicked"),
        "{}",
        r.describe()
    );
    assert_abandoned(&lab);
}
