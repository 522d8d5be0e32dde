//! The daemon against the test server (tests/support/mender_server.rs): the
//! canonical script orders and status reports of the Mender client (spec
//! §3.9), authentication, inventory, the resumable download, and restarts
//! at every persisted step of a deployment.
//!
//! Reboots are simulated: `RebootCommand` (and the test Update Module's
//! `ArtifactReboot`) kill the daemon with SIGKILL; the test's supervisor
//! then runs the simulated bootloader ([`SimDevice::reboot`]) and starts
//! the daemon again, as systemd would after a real reboot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::canonical_scripts::{ARTIFACT_SCRIPTS, ROOTFS_SCRIPTS};
use crate::support::device::*;
use crate::support::managed::{
    self, DaemonChild, DeviceSetup, Supervised, daemon_command, log_tail,
};
use crate::support::mender_server::*;
use serde_json::Value;

const MODULE: &str = "module-state-scripts-test";
static MACS: AtomicU32 = AtomicU32::new(1);

/// A simulated device run by the daemon, with a supervisor that restarts
/// the daemon after a (simulated) reboot ([`Supervised`]).
struct Managed {
    dev: SimDevice,
    daemon_log: PathBuf,
    reboot_marker: PathBuf,
    child: Option<DaemonChild>,
    /// Daemon starts so far.
    starts: u32,
    /// Crash injection: (start number, `MENDER_RS_CRASH_AT` value) for
    /// that start of the daemon only.
    crash_at: Option<(u32, String)>,
}

impl Managed {
    fn new(server: &MenderServer) -> Managed {
        Self::with_partition_size(server, 8 << 20)
    }

    fn with_partition_size(server: &MenderServer, size: u64) -> Managed {
        let dev = SimDevice::with_partition_size(size);
        let n = MACS.fetch_add(1, Ordering::SeqCst);
        let reboot_marker = dev.path("rebooted");
        DeviceSetup {
            server_url: Some(&server.url()),
            mac: &format!("02:00:00:00:{:02x}:{:02x}", n >> 8, n & 0xff),
            inventory_script: Some((
                "mender-inventory-test",
                "test_attr=one\ntest_attr=two\nhostname=simulated",
            )),
            reboot_marker: Some(&reboot_marker),
            update_poll: 1,
            inventory_poll: Some(60),
            retry_poll: 1,
        }
        .apply(&dev);
        let daemon_log = dev.path("daemon.log");
        Managed {
            dev,
            daemon_log,
            reboot_marker,
            child: None,
            starts: 0,
            crash_at: None,
        }
    }

    /// Runs the daemon (restarting it after each simulated reboot or
    /// crash, at most 30 times: [`managed::run_until`]) until `done`
    /// holds, then stops it; false on timeout.
    fn run_until(
        &mut self,
        server: &MenderServer,
        timeout: Duration,
        done: impl Fn(&MenderServer) -> bool,
    ) -> bool {
        let done = managed::run_until(self, timeout, || done(server));
        self.stop();
        done
    }

    /// Runs the daemon until deployment `dep` has its final status (see
    /// [`final_status_of`]), within `seconds`; returns the device's id.
    fn run_to_final(&mut self, server: &MenderServer, dep: &str, seconds: u64) -> String {
        assert!(
            self.run_until(
                server,
                Duration::from_secs(seconds),
                final_status_of(dep.to_string())
            ),
            "no final status for {dep}:\n{}",
            self.log_tail()
        );
        self.device_id(server)
    }

    /// SIGTERM, then SIGKILL after 5 s.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            child.stop(Duration::from_secs(5));
        }
    }

    fn device_id(&self, server: &MenderServer) -> String {
        let mac = fs::read_to_string(self.dev.path("identity/mender-device-identity")).unwrap();
        let mac = mac
            .lines()
            .find_map(|l| l.strip_prefix("echo mac="))
            .unwrap()
            .to_string();
        server
            .device_with_identity("mac", &mac)
            .unwrap_or_else(|| panic!("the server does not know {mac}:\n{}", self.log_tail()))
    }
}

impl Supervised for Managed {
    const MAX_RESTARTS: u32 = 30;

    fn parts(&mut self) -> (&SimDevice, &Path, &mut Option<DaemonChild>) {
        (&self.dev, &self.reboot_marker, &mut self.child)
    }

    /// With its stderr appended to daemon.stderr, and the crash injection
    /// of [`Managed::crash_at`] when this is that start.
    fn start(&mut self) {
        let mut cmd = daemon_command(&self.dev, Path::new(BIN), "debug", &self.daemon_log);
        cmd.stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dev.path("daemon.stderr"))
                .expect("daemon stderr file"),
        );
        if let Some((start, spec)) = &self.crash_at
            && *start == self.starts + 1
        {
            cmd.env("MENDER_RS_CRASH_AT", spec);
        }
        self.child = Some(DaemonChild::spawn(&mut cmd));
        self.starts += 1;
    }

    fn log_tail(&self) -> String {
        log_tail(&self.daemon_log, 80)
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The final statuses the server accepted for a deployment.
fn accepted_finals(server: &MenderServer, dev: &str, dep: &str) -> Vec<String> {
    server
        .status_reports(dev, dep)
        .into_iter()
        .filter(|r| r.response == 204 && (r.status == "success" || r.status == "failure"))
        .map(|r| r.status)
        .collect()
}

/// The deployment has its final status (and, after a failure, its log).
fn final_status_of(dep: String) -> impl Fn(&MenderServer) -> bool {
    move |s: &MenderServer| {
        s.device_ids()
            .iter()
            .any(|d| match s.deployment_status(d, &dep).as_deref() {
                Some("success") => true,
                Some("failure") => !s.logs(d, &dep).is_empty(),
                _ => false,
            })
    }
}

// ---------------------------------------------------------------------------
// The canonical state-script scenarios (spec §3.9)

const NEVER: &[&str] = &[
    "Idle_Enter_100",
    "Idle_Error_00",
    "ArtifactRollback_Error_15",
    "ArtifactRollbackReboot_Error_88",
    "ArtifactRollbackReboot_Error_99",
    "ArtifactFailure_Error_55",
];

const PREFIX: &[&str] = &[
    "Idle_Enter_08_testing",
    "Idle_Enter_09",
    "Idle_Leave_09",
    "Idle_Leave_10",
    "Sync_Enter_02",
    "Sync_Enter_03",
    "Sync_Leave_04",
    "Sync_Leave_15",
];

const DOWNLOAD_OK: &[&str] = &[
    "Download_Enter_12",
    "Download_Enter_13",
    "Download_Leave_14",
    "Download_Leave_25",
];
const INSTALL_OK: &[&str] = &[
    "ArtifactInstall_Enter_01",
    "ArtifactInstall_Enter_02",
    "ArtifactInstall_Leave_01",
    "ArtifactInstall_Leave_03",
];
const REBOOT_OK: &[&str] = &[
    "ArtifactReboot_Enter_01",
    "ArtifactReboot_Enter_11",
    "ArtifactReboot_Leave_01",
    "ArtifactReboot_Leave_89",
    "ArtifactReboot_Leave_99",
];
const ROLLBACK: &[&str] = &[
    "ArtifactRollback_Enter_00",
    "ArtifactRollback_Enter_01",
    "ArtifactRollback_Leave_00",
    "ArtifactRollback_Leave_01",
    "ArtifactRollbackReboot_Enter_00",
    "ArtifactRollbackReboot_Enter_99",
    "ArtifactRollbackReboot_Leave_01",
    "ArtifactRollbackReboot_Leave_99",
    "ArtifactFailure_Enter_22",
    "ArtifactFailure_Enter_33",
    "ArtifactFailure_Leave_44",
    "ArtifactFailure_Leave_55",
];

fn seq(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter().map(|s| s.to_string()))
        .collect()
}

fn is_idle_or_sync(name: &str) -> bool {
    name.starts_with("Idle_") || name.starts_with("Sync_")
}

/// Sets up the canonical scripts and module; `body` gives extra shell for
/// a script (by name), `failing` the script that exits 1.
fn canonical_setup(m: &Managed, failing: Option<&str>, bodies: &[(&str, String)]) -> PathBuf {
    let dev = &m.dev;
    let body_of = |name: &str| {
        let mut body = String::new();
        for (n, b) in bodies {
            if *n == name {
                body.push_str(b);
                body.push('\n');
            }
        }
        body.push_str(if failing == Some(name) {
            "exit 1\n"
        } else {
            "exit 0\n"
        });
        body
    };
    for name in ROOTFS_SCRIPTS {
        dev.script_with_body(&dev.rootfs_scripts, name, &body_of(name));
    }
    // The module: reboots restart the "service" (kill the daemon).
    write_executable(
        &dev.modules.join(MODULE),
        "#!/bin/sh\ncase \"$1\" in\n  NeedsArtifactReboot) echo Yes ;;\n  SupportsRollback) echo Yes ;;\n  ArtifactReboot|ArtifactRollbackReboot) kill -KILL $PPID; sleep 5 ;;\nesac\nexit 0\n",
    );
    let dir = dev.new_build_dir("canonical");
    let payload = dir.join("payload.bin");
    fs::write(&payload, random_bytes(8192)).unwrap();
    let mut args: Vec<String> = [
        "artifact",
        "write",
        "module-image",
        "-t",
        DEVICE_TYPE,
        "-n",
        "canonical-2",
        "-T",
        MODULE,
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.join("artifact.mender").display().to_string());
    args.push("-f".into());
    args.push(payload.display().to_string());
    for name in ARTIFACT_SCRIPTS {
        let p = dev.script_with_body(&dir.join("scripts"), name, &body_of(name));
        args.push("-s".into());
        args.push(p.display().to_string());
    }
    let out = run_bounded(Command::new(BIN).args(&args), Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    dir.join("artifact.mender")
}

/// Runs one canonical scenario: `expected` is the whole script list after
/// the Idle/Sync prefix; `status` the final status.
fn canonical(
    failing: Option<&str>,
    bodies: &[(&str, String)],
    expected: Vec<String>,
    status: &str,
) -> Managed {
    canonical_with(failing, |_| bodies.to_vec(), expected, status)
}

/// As [`canonical`], with script bodies that depend on the device's paths.
fn canonical_with<'b>(
    failing: Option<&str>,
    bodies: impl Fn(&Managed) -> Vec<(&'b str, String)>,
    expected: Vec<String>,
    status: &str,
) -> Managed {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let bodies = bodies(&m);
    let artifact = canonical_setup(&m, failing, &bodies);
    let dep = server.add_deployment(&artifact, "canonical-2", &[DEVICE_TYPE]);
    assert!(
        m.run_until(
            &server,
            Duration::from_secs(120),
            final_status_of(dep.clone())
        ),
        "no final status:\n{}",
        m.log_tail()
    );
    let dev_id = m.device_id(&server);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some(status),
        "{}",
        m.log_tail()
    );
    assert_eq!(
        accepted_finals(&server, &dev_id, &dep),
        vec![status.to_string()]
    );
    let log = m.dev.script_log();
    for never in NEVER {
        assert!(!log.iter().any(|l| l == never), "{never} ran: {log:?}");
    }
    // Leading Idle/Sync rounds may repeat; the deployment starts with the
    // first script that is neither.
    let start = log
        .iter()
        .position(|l| !is_idle_or_sync(l))
        .unwrap_or_else(|| panic!("no deployment scripts ran: {log:?}"));
    assert!(start >= PREFIX.len(), "{log:?}");
    assert_eq!(
        &log[start - PREFIX.len()..start],
        &seq(&[PREFIX])[..],
        "the round that found the deployment: {log:?}"
    );
    let end = (start + expected.len()).min(log.len());
    assert_eq!(
        &log[start..end],
        &expected[..],
        "script order after the prefix (whole log {log:?})\n{}",
        m.log_tail()
    );
    assert!(
        log[end..].iter().all(|l| is_idle_or_sync(l)),
        "unexpected scripts after the deployment: {:?}",
        &log[end..]
    );
    let statuses = server.statuses(&dev_id, &dep);
    if status == "success" {
        assert_eq!(
            statuses,
            [
                "downloading",
                "installing",
                "rebooting",
                "installing",
                "success"
            ]
        );
    } else {
        assert_eq!(statuses.last().map(String::as_str), Some("failure"));
        assert!(
            !server.logs(&dev_id, &dep).is_empty(),
            "no deployment log uploaded"
        );
    }
    server.assert_no_violations();
    m
}

fn success_sequence() -> Vec<String> {
    seq(&[
        DOWNLOAD_OK,
        INSTALL_OK,
        REBOOT_OK,
        &[
            "ArtifactCommit_Enter_01",
            "ArtifactCommit_Enter_05",
            "ArtifactCommit_Leave_01_extra_string",
            "ArtifactCommit_Leave_91",
        ],
    ])
}

#[test]
fn s1_normal_success() {
    let m = canonical(None, &[], success_sequence(), "success");
    assert_eq!(m.dev.show_artifact(), "canonical-2");
}

#[test]
fn s2_failure_in_idle_enter_is_ignored() {
    canonical(Some("Idle_Enter_09"), &[], success_sequence(), "success");
}

#[test]
fn s3_failure_in_idle_leave_is_ignored() {
    canonical(Some("Idle_Leave_09"), &[], success_sequence(), "success");
}

/// S4/S5: a failing Sync script stops every round: no deployment starts.
fn sync_failure(failing: &str, round: &[&str]) {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = canonical_setup(&m, Some(failing), &[]);
    let dep = server.add_deployment(&artifact, "canonical-2", &[DEVICE_TYPE]);
    let rounds = |m: &Managed| {
        let log = m.dev.script_log();
        log.len() / round.len()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    m.start();
    while rounds(&m) < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    m.stop();
    let log = m.dev.script_log();
    let n = log.len() / round.len();
    assert!((5..50).contains(&n), "{n} rounds: {log:?}");
    for (i, name) in log.iter().enumerate().take(n * round.len()) {
        assert_eq!(name, round[i % round.len()], "{log:?}");
    }
    for id in server.device_ids() {
        assert!(
            server.statuses(&id, &dep).is_empty(),
            "a deployment started"
        );
    }
    server.assert_no_violations();
}

#[test]
fn s4_failure_in_sync_enter_skips_the_round() {
    sync_failure(
        "Sync_Enter_02",
        &[
            "Idle_Enter_08_testing",
            "Idle_Enter_09",
            "Idle_Leave_09",
            "Idle_Leave_10",
            "Sync_Enter_02",
            "Sync_Error_15",
            "Sync_Error_16",
        ],
    );
}

#[test]
fn s5_failure_in_sync_leave_skips_the_round() {
    let mut round: Vec<&str> = PREFIX.to_vec();
    round.extend(["Sync_Error_15", "Sync_Error_16"]);
    sync_failure("Sync_Leave_15", &round);
}

#[test]
fn s6_failure_in_download_enter() {
    canonical(
        Some("Download_Enter_12"),
        &[],
        seq(&[&["Download_Enter_12", "Download_Error_25"]]),
        "failure",
    );
}

#[test]
fn s7_failure_in_download_leave() {
    canonical(
        Some("Download_Leave_14"),
        &[],
        seq(&[&[
            "Download_Enter_12",
            "Download_Enter_13",
            "Download_Leave_14",
            "Download_Error_25",
        ]]),
        "failure",
    );
}

#[test]
fn s8_failure_in_artifact_install_enter() {
    canonical(
        Some("ArtifactInstall_Enter_01"),
        &[],
        seq(&[
            DOWNLOAD_OK,
            &[
                "ArtifactInstall_Enter_01",
                "ArtifactInstall_Error_01",
                "ArtifactInstall_Error_02",
                "ArtifactInstall_Error_99",
            ],
            ROLLBACK,
        ]),
        "failure",
    );
}

/// S9 and S12 (spec 3.9.4): the commit fails after the Enter scripts and
/// the update is rolled back.
fn commit_failure_sequence() -> Vec<String> {
    seq(&[
        DOWNLOAD_OK,
        INSTALL_OK,
        REBOOT_OK,
        &[
            "ArtifactCommit_Enter_01",
            "ArtifactCommit_Enter_05",
            "ArtifactCommit_Error_91",
        ],
        ROLLBACK,
    ])
}

#[test]
fn s9_failure_in_artifact_commit_enter() {
    canonical(
        Some("ArtifactCommit_Enter_05"),
        &[],
        commit_failure_sequence(),
        "failure",
    );
}

#[test]
fn s10_failure_in_artifact_commit_leave() {
    let m = canonical(
        Some("ArtifactCommit_Leave_01_extra_string"),
        &[],
        seq(&[
            DOWNLOAD_OK,
            INSTALL_OK,
            REBOOT_OK,
            &[
                "ArtifactCommit_Enter_01",
                "ArtifactCommit_Enter_05",
                "ArtifactCommit_Leave_01_extra_string",
                "ArtifactCommit_Error_91",
            ],
        ]),
        "failure",
    );
    // Committed, no rollback: the name says the state is not trusted.
    assert_eq!(m.dev.show_artifact(), "canonical-2_INCONSISTENT");
}

#[test]
fn s11_corrupted_script_version_in_data() {
    let m = canonical_with(
        None,
        |m| {
            let version = m.dev.artifact_scripts.join("version");
            vec![(
                "ArtifactReboot_Enter_11",
                format!("echo 1000 > '{}'", version.display()),
            )]
        },
        seq(&[
            DOWNLOAD_OK,
            INSTALL_OK,
            &["ArtifactReboot_Enter_01", "ArtifactReboot_Enter_11"],
        ]),
        "failure",
    );
    // Rolled back, but the rollback scripts could not run: not trusted.
    assert_eq!(m.dev.show_artifact(), "canonical-2_INCONSISTENT");
}

#[test]
fn s12_corrupted_script_version_in_etc() {
    canonical_with(
        None,
        |m| {
            let version = m.dev.rootfs_scripts.join("version");
            vec![
                (
                    "ArtifactReboot_Leave_99",
                    format!("printf 1000 > '{}'", version.display()),
                ),
                (
                    "ArtifactRollbackReboot_Leave_99",
                    format!("printf 3 > '{}'", version.display()),
                ),
            ]
        },
        commit_failure_sequence(),
        "failure",
    );
}

// ---------------------------------------------------------------------------
// rootfs-image through the daemon, with real (simulated) reboots

#[test]
fn rootfs_update_reboots_commits_and_reports() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = m.dev.write_rootfs_artifact("release-2", 3 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-2", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 120);
    assert_eq!(
        server.statuses(&dev_id, &dep),
        [
            "downloading",
            "installing",
            "rebooting",
            "installing",
            "success"
        ],
        "{}",
        m.log_tail()
    );
    assert_eq!(m.dev.show_artifact(), "release-2");
    let env = m.dev.env();
    assert_eq!(env["mender_boot_part"], "3");
    assert_eq!(env["upgrade_available"], "0");
    let payload = fs::read(payload_of(&artifact)).unwrap();
    assert_eq!(
        m.dev.partition_sha256_prefix(3, Some(payload.len())),
        sha256_hex(&payload)
    );
    // The inventory after the deployment names the new artifact.
    assert!(
        server.wait_until(Duration::from_secs(20), |s| {
            s.inventory_value(&dev_id, "artifact_name") == Some(Value::from("release-2"))
        }) || {
            // The daemon was stopped right after the final status: run it once
            // more for the inventory.
            m.run_until(&server, Duration::from_secs(30), |s| {
                s.inventory_value(&dev_id, "artifact_name") == Some(Value::from("release-2"))
            })
        }
    );
    assert_eq!(
        server.inventory_value(&dev_id, "test_attr"),
        Some(serde_json::json!(["one", "two"]))
    );
    assert_eq!(
        server.inventory_value(&dev_id, "device_type"),
        Some(Value::from(DEVICE_TYPE))
    );
    assert!(
        server
            .inventory_value(&dev_id, "mender_client_version")
            .is_some()
    );
    server.assert_no_violations();
}

#[test]
fn a_download_cut_twenty_times_resumes_and_installs() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-cut", 4 << 20, &[], &[]);
    let size = fs::metadata(&artifact).unwrap().len();
    // 20 distinct cut offsets spread over the artifact (deterministic
    // pseudo-random).
    let mut offsets: Vec<u64> = Vec::new();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while offsets.len() < 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let o = 1 + x % (size - 1);
        if !offsets.contains(&o) {
            offsets.push(o);
        }
    }
    offsets.sort();
    server.cut_downloads_at(&offsets);
    let dep = server.add_deployment(&artifact, "release-cut", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 180);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("success"),
        "{}",
        m.log_tail()
    );
    let downloads = server.downloads();
    assert_eq!(downloads.len(), 21, "{downloads:#?}");
    assert_eq!(downloads[0].start, 0);
    assert!(downloads[0].range.is_none());
    for (i, d) in downloads.iter().enumerate().skip(1) {
        assert_eq!(
            d.start,
            offsets[i - 1],
            "download {i} did not resume where the last one stopped"
        );
        assert!(d.range.is_some());
        assert!(!d.authorization_sent);
    }
    let sent: u64 = downloads.iter().map(|d| d.bytes_sent).sum();
    assert_eq!(sent, size, "every byte sent exactly once");
    let payload = fs::read(payload_of(&artifact)).unwrap();
    assert_eq!(
        m.dev.partition_sha256_prefix(3, Some(payload.len())),
        sha256_hex(&payload)
    );
    server.assert_no_violations();
}

#[test]
fn a_server_that_ignores_the_range_fails_the_download_cleanly() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-norange", 1 << 20, &[], &[]);
    server.cut_downloads_at(&[300_000]);
    server.ignore_range(true);
    let dep = server.add_deployment(&artifact, "release-norange", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 60);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("failure")
    );
    let logs = server.logs(&dev_id, &dep);
    assert!(
        logs.iter().any(|l| l.message.contains("range")),
        "{logs:#?}"
    );
    // Nothing switched.
    assert_eq!(m.dev.env()["mender_boot_part"], "2");
    assert_eq!(m.dev.env()["upgrade_available"], "0");
}

#[test]
fn an_aborted_deployment_stops_before_installing() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-abort", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-abort", &[DEVICE_TYPE]);
    // Slow downloads so the abort lands during the download.
    server.throttle_downloads(Some(256 << 10));
    let dep2 = dep.clone();
    let mut aborted = false;
    let ok = m.run_until(&server, Duration::from_secs(60), |s| {
        let started = s
            .device_ids()
            .iter()
            .any(|d| s.statuses(d, &dep2).iter().any(|x| x == "downloading"));
        if started && !aborted {
            s.abort_deployment(&dep2);
        }
        // Done once the device has tried to report something after the
        // abort and gone back to polling.
        s.device_ids()
            .iter()
            .any(|d| s.status_reports(d, &dep2).iter().any(|r| r.response == 409))
    });
    aborted = true;
    let _ = aborted;
    assert!(ok, "{}", m.log_tail());
    assert_eq!(m.dev.env()["upgrade_available"], "0");
    assert_eq!(m.dev.env()["mender_boot_part"], "2");
}

// ---------------------------------------------------------------------------
// Authentication and inventory

#[test]
fn a_pending_device_polls_until_accepted_then_reauthenticates_after_expiry() {
    let server = MenderServer::start();
    server.set_default_auth(AuthStatus::Pending);
    let mut m = Managed::new(&server);
    m.dev
        .set_config("TenantToken", Value::from("tenant-secret"));
    m.start();
    assert!(server.wait_until(Duration::from_secs(20), |s| {
        s.devices().iter().any(|d| d.auth_requests >= 2)
    }));
    let dev_id = m.device_id(&server);
    assert_eq!(
        server.device(&dev_id).unwrap().tenant_token.as_deref(),
        Some("tenant-secret")
    );
    assert!(server.inventory(&dev_id).is_empty());
    server.accept_device(&dev_id);
    assert!(
        server.wait_until(Duration::from_secs(20), |s| {
            !s.inventory(&dev_id).is_empty()
        }),
        "{}",
        m.log_tail()
    );
    let before = server.auth_requests(&dev_id);
    server.expire_tokens();
    let artifact = m.dev.write_rootfs_artifact("release-3", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-3", &[DEVICE_TYPE]);
    assert!(
        m.run_until(
            &server,
            Duration::from_secs(60),
            final_status_of(dep.clone())
        ),
        "{}",
        m.log_tail()
    );
    assert!(server.auth_requests(&dev_id) > before);
    assert_eq!(server.device(&dev_id).unwrap().key_type, "Ed25519");
    server.assert_no_violations();
}

#[test]
fn inventory_falls_back_to_patch_and_next_to_get() {
    let server = MenderServer::start();
    server.inventory_put_not_allowed(true);
    server.disable_next_v1_post(true);
    let mut m = Managed::new(&server);
    let artifact = m.dev.write_rootfs_artifact("release-4", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-4", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 60);
    assert_eq!(
        server.inventory_value(&dev_id, "hostname"),
        Some(Value::from("simulated"))
    );
    assert!(!server.requests_to(Endpoint::NextV1Get).is_empty());
    server.assert_no_violations();
}

#[test]
fn rsa_device_key_is_generated_once_and_kept() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    m.dev.set_config("DeviceKeyType", Value::from("rsa3072"));
    m.start();
    assert!(server.wait_until(Duration::from_secs(120), |s| !s.device_ids().is_empty()));
    m.stop();
    let key = m.dev.data.join("mender-agent.pem");
    let pem = fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let dev_id = m.device_id(&server);
    assert_eq!(server.device(&dev_id).unwrap().key_type, "RSA");
    // A second start uses the same key: the same device.
    m.start();
    assert!(server.wait_until(Duration::from_secs(20), |s| s.auth_requests(&dev_id) >= 2));
    m.stop();
    assert_eq!(fs::read_to_string(&key).unwrap(), pem);
    assert_eq!(server.device_ids().len(), 1);
}

#[test]
fn check_update_and_send_inventory_wake_the_daemon() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    // No daemon yet: a clear error.
    let out = m.dev.run(&["check-update"]);
    assert_eq!(exit_code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no mender-rs daemon is running"),
        "{}",
        describe(&out)
    );
    // Long enough that no poll of its own comes during the test; the
    // start-up jitter is at most a tenth of it (10 s).
    m.dev
        .set_config("UpdatePollIntervalSeconds", Value::from(100));
    m.dev
        .set_config("InventoryPollIntervalSeconds", Value::from(100));
    m.start();
    assert!(server.wait_until(Duration::from_secs(30), |s| {
        s.devices().iter().any(|d| !d.inventory.is_empty())
    }));
    let dev_id = m.device_id(&server);
    // Let the start-up jitter and first round pass.
    std::thread::sleep(Duration::from_secs(1));
    let next_before = server.requests_to(Endpoint::NextV1Post).len();
    let inv_before = server.requests_to(Endpoint::Inventory).len();
    m.dev.ok(&["check-update"]);
    assert!(
        server.wait_until(Duration::from_secs(10), |s| {
            s.requests_to(Endpoint::NextV1Post).len() > next_before
        }),
        "{}",
        m.log_tail()
    );
    m.dev.ok(&["send-inventory"]);
    assert!(
        server.wait_until(Duration::from_secs(10), |s| {
            s.requests_to(Endpoint::Inventory).len() > inv_before
        }),
        "{}",
        m.log_tail()
    );
    let _ = dev_id;
    // A second daemon refuses to start.
    let out = run_bounded(
        m.dev.command().args(["--no-syslog", "daemon"]),
        Duration::from_secs(10),
    );
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("another mender-rs daemon is running"));
    m.stop();
}

// ---------------------------------------------------------------------------
// Restarts at every persisted step

/// Kills the daemon at its K-th persisted step (crash injection), for
/// every K of the process that starts a deployment and of the process
/// after the reboot, on the success path and on a path that fails the
/// commit and rolls back; checks that each deployment ends with exactly
/// one final status and a device in a known state.
#[test]
fn a_restart_at_every_persisted_step_gives_exactly_one_final_status() {
    if !cfg!(feature = "crash-injection") {
        eprintln!("skipped: needs --features crash-injection");
        return;
    }
    // (which daemon start crashes, the failing artifact script)
    let families: [(u32, Option<&str>); 4] = [
        (1, None),
        (2, None),
        (2, Some("ArtifactCommit_Enter_01")),
        // After the reboot back into the old software.
        (3, Some("ArtifactCommit_Enter_01")),
    ];
    let mut runs = 0;
    for (start, failing) in families {
        let mut k = 1;
        loop {
            assert!(k <= 40, "more than 40 persisted steps?");
            let server = MenderServer::start();
            let mut m = Managed::new(&server);
            let name = format!("release-s{start}-k{k}");
            let scripts: Vec<(&str, i32)> = failing.iter().map(|f| (*f, 1)).collect();
            let artifact = m.dev.write_rootfs_artifact(&name, 256 << 10, &scripts, &[]);
            let dep = server.add_deployment(&artifact, &name, &[DEVICE_TYPE]);
            m.crash_at = Some((start, format!("step:{k}")));
            let what = format!("start {start}, step {k}, failing {failing:?}");
            assert!(
                m.run_until(
                    &server,
                    Duration::from_secs(90),
                    final_status_of(dep.clone())
                ),
                "{what}: {}",
                m.log_tail()
            );
            // Give a resend (state not cleared yet) its chance.
            m.run_until(&server, Duration::from_secs(2), |_| false);
            let dev_id = m.device_id(&server);
            let finals = accepted_finals(&server, &dev_id, &dep);
            assert_eq!(finals.len(), 1, "{what}: {finals:?}\n{}", m.log_tail());
            let env = m.dev.env();
            let shown = m.dev.show_artifact();
            match finals[0].as_str() {
                "success" => {
                    assert!(failing.is_none(), "{what}");
                    assert_eq!(shown, name, "{what}");
                    assert_eq!(env["mender_boot_part"], "3", "{what}");
                }
                _ => {
                    assert_eq!(env["mender_boot_part"], "2", "{what}: {}", m.log_tail());
                    assert_ne!(shown, name, "{what}");
                }
            }
            assert_eq!(env["upgrade_available"], "0", "{what}");
            runs += 1;
            let stderr = fs::read_to_string(m.dev.path("daemon.stderr")).unwrap_or_default();
            eprintln!("{what}: {} after {} starts", finals[0], m.starts);
            if !stderr.contains("crash injection") {
                // K is past the last step of that process.
                assert!(k > 2, "{what}: too few steps");
                break;
            }
            k += 1;
        }
    }
    eprintln!("{runs} crash runs");
}

// ---------------------------------------------------------------------------
// Servers fail-over and TLS

#[test]
fn servers_fail_over_to_the_next_one() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    // A port nothing listens on (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    m.dev.remove_config("ServerURL");
    m.dev.set_config(
        "Servers",
        serde_json::json!([{"ServerURL": dead_url}, {"ServerURL": server.url()}]),
    );
    let artifact = m.dev.write_rootfs_artifact("release-fo", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-fo", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 60);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("success")
    );
    server.assert_no_violations();
}

/// Runs `openssl` with `args` in `dir`, panicking on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// all signed by that CA.
fn make_pki(dir: &std::path::Path) {
    fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// `socat` terminating TLS (requiring a client certificate signed by the
/// CA when `mutual`) in front of the test server; killed on drop.
struct TlsFront {
    child: Child,
    url: String,
}

impl TlsFront {
    fn start(dir: &std::path::Path, backend: &str, mutual: bool) -> TlsFront {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let backend = backend.trim_start_matches("http://");
        let verify = if mutual {
            format!("verify=1,cafile={}", dir.join("ca.pem").display())
        } else {
            "verify=0".to_string()
        };
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let child = Command::new("socat")
            .args([listen, format!("TCP:{backend}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/install-deps installs it)");
        // Wait until it listens (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsFront {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tls_with_server_certificate_and_client_certificate() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let pki = m.dev.path("pki");
    make_pki(&pki);
    let front = TlsFront::start(&pki, &server.url(), true);
    let p = |name: &str| Value::from(pki.join(name).display().to_string());
    m.dev
        .set_config("ServerURL", Value::from(front.url.clone()));
    m.dev.set_config("ServerCertificate", p("ca.pem"));
    m.dev.set_config(
        "HttpsClient",
        serde_json::json!({"Certificate": p("client.pem"), "Key": p("client.key")}),
    );
    let artifact = m
        .dev
        .write_rootfs_artifact("release-tls", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-tls", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 60);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("success")
    );
    server.assert_no_violations();
}

#[test]
fn tls_refuses_an_untrusted_server_unless_skip_verify() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let pki = m.dev.path("pki");
    make_pki(&pki);
    let front = TlsFront::start(&pki, &server.url(), false);
    m.dev
        .set_config("ServerURL", Value::from(front.url.clone()));
    // No ServerCertificate: the test CA is not trusted.
    m.start();
    std::thread::sleep(Duration::from_secs(4));
    m.stop();
    assert!(
        server.device_ids().is_empty(),
        "authenticated over untrusted TLS"
    );
    let log = fs::read_to_string(&m.daemon_log).unwrap();
    assert!(
        log.to_lowercase().contains("certificate"),
        "no certificate error logged:\n{}",
        m.log_tail()
    );
    // SkipVerify: it works, with a loud warning.
    m.dev.set_config("SkipVerify", Value::from(true));
    m.start();
    assert!(
        server.wait_until(Duration::from_secs(20), |s| !s.device_ids().is_empty()),
        "{}",
        m.log_tail()
    );
    m.stop();
    let log = fs::read_to_string(&m.daemon_log).unwrap();
    assert!(log.contains("verification is DISABLED"), "{}", m.log_tail());
}

// ---------------------------------------------------------------------------
// Server answers

#[test]
fn a_forced_deployment_of_the_installed_artifact_is_already_installed() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-1", 256 << 10, &[], &[]);
    m.dev.ok(&["install", &artifact.display().to_string()]);
    m.dev.reboot();
    m.dev.ok(&["commit"]);
    let dep = server.create_deployment(
        NewDeployment::from_file(&artifact, "release-1", &[DEVICE_TYPE]).forced(),
    );
    let dep2 = dep.clone();
    assert!(
        m.run_until(&server, Duration::from_secs(30), move |s| {
            s.device_ids()
                .iter()
                .any(|d| s.deployment_status(d, &dep2).as_deref() == Some("already-installed"))
        }),
        "{}",
        m.log_tail()
    );
    assert!(
        server.downloads().is_empty(),
        "downloaded what is installed"
    );
    assert_eq!(m.dev.env()["mender_boot_part"], "3");
    server.assert_no_violations();
}

#[test]
fn server_errors_on_status_reports_are_retried_before_the_commit() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = m.dev.write_rootfs_artifact("release-5", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-5", &[DEVICE_TYPE]);
    // The intermediate reports are best effort; the one before the commit
    // and the final one are retried.
    server.fail_next(Endpoint::Status, 503, 5);
    let dev_id = m.run_to_final(&server, &dep, 90);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("success"),
        "{}",
        m.log_tail()
    );
    assert_eq!(m.dev.show_artifact(), "release-5");
    server.assert_no_violations();
}

#[test]
fn a_server_that_never_takes_the_pre_commit_report_gets_a_rollback() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    let artifact = m.dev.write_rootfs_artifact("release-6", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-6", &[DEVICE_TYPE]);
    // The deployment is offered again (the server never got its status):
    // a longer poll leaves time to look at the end of the first attempt.
    m.dev
        .set_config("UpdatePollIntervalSeconds", Value::from(5));
    let store = m.dev.data.join("mender-rs-store.json");
    let failing = std::cell::Cell::new(false);
    // Once the device has reported "rebooting", every status report fails:
    // the report before the commit cannot get through.
    let done = m.run_until(&server, Duration::from_secs(120), |s| {
        if !failing.get()
            && s.device_ids()
                .iter()
                .any(|d| s.statuses(d, &dep).iter().any(|x| x == "rebooting"))
        {
            s.fail_always(Endpoint::Status, Some(503));
            failing.set(true);
        }
        // Finished: the deployment is no longer in the store.
        failing.get()
            && fs::read_to_string(&store)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["update"].is_null())
    });
    assert!(done, "{}", m.log_tail());
    let env = m.dev.env();
    assert_eq!(env["mender_boot_part"], "2", "{}", m.log_tail());
    assert_eq!(env["upgrade_available"], "0");
    assert_ne!(m.dev.show_artifact(), "release-6");
    let log = fs::read_to_string(&m.daemon_log).unwrap();
    assert!(log.contains("before the commit"), "{}", m.log_tail());
}

// ---------------------------------------------------------------------------
// Update control maps set on the device (`mender-rs control`)

const MAP_ID: &str = "01234567-89ab-4def-8123-456789abcdef";

/// Sets a device map (with a lifetime long enough for the test: by
/// default maps live twice the 1 s poll interval of these tests).
fn control_set(m: &Managed, map: &Value) {
    m.dev
        .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(120));
    let file = m.dev.path("map.json");
    fs::write(&file, map.to_string()).unwrap();
    m.dev.ok(&["control", "set", &file.display().to_string()]);
}

#[test]
fn a_device_map_pauses_before_installing_until_the_application_continues() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    control_set(
        &m,
        &serde_json::json!({"id": MAP_ID, "priority": 1,
            "states": {"ArtifactInstall_Enter": {"action": "pause"}}}),
    );
    let artifact = m
        .dev
        .write_rootfs_artifact("release-ucm", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-ucm", &[DEVICE_TYPE]);
    m.start();
    let paused = server.wait_until(Duration::from_secs(30), |s| {
        s.device_ids().iter().any(|d| {
            s.statuses(d, &dep)
                .iter()
                .any(|x| x == "pause_before_installing")
        })
    });
    assert!(paused, "{}", m.log_tail());
    // Still paused a while later, also across a restart of the daemon:
    // nothing installed, nothing downloaded again.
    std::thread::sleep(Duration::from_secs(1));
    m.stop();
    m.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.dev.env()["upgrade_available"], "0");
    assert_eq!(m.dev.env()["mender_boot_part"], "2");
    assert_eq!(server.downloads().len(), 1);
    // "Start update": the application replaces its map with a continue.
    control_set(
        &m,
        &serde_json::json!({"id": MAP_ID, "priority": 1,
            "states": {"ArtifactInstall_Enter": {"action": "force_continue"}}}),
    );
    let dev_id = m.run_to_final(&server, &dep, 60);
    let mut statuses = server.statuses(&dev_id, &dep);
    // The restart reports the pause again.
    statuses.dedup();
    assert_eq!(
        statuses,
        [
            "downloading",
            "pause_before_installing",
            "installing",
            "rebooting",
            "installing",
            "success"
        ],
        "{}",
        m.log_tail()
    );
    server.assert_no_violations();
}

#[test]
fn a_device_map_that_fails_the_commit_rolls_back() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    control_set(
        &m,
        &serde_json::json!({"id": MAP_ID, "priority": 0,
            "states": {"ArtifactCommit_Enter": {"action": "fail"}}}),
    );
    let artifact = m
        .dev
        .write_rootfs_artifact("release-ucm-fail", 1 << 20, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-ucm-fail", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 60);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("failure")
    );
    let env = m.dev.env();
    assert_eq!(env["mender_boot_part"], "2");
    assert_eq!(env["upgrade_available"], "0");
    assert_ne!(m.dev.show_artifact(), "release-ucm-fail");
    let logs = server.logs(&dev_id, &dep);
    assert!(
        logs.iter()
            .any(|l| l.message.contains("update control map")),
        "{logs:#?}"
    );
}

// ---------------------------------------------------------------------------
// Update control maps from the server (v2 `next` and the map endpoint)

/// Runs `n` devices against `server` with a deployment whose map pauses
/// before the commit; releases them all at once and returns the spread
/// between the first and the last `success`.
fn synchronized_commit(n: usize) -> Duration {
    let server = MenderServer::start();
    server.enable_next_v2(true);
    let mut devices: Vec<Managed> = (0..n).map(|_| Managed::new(&server)).collect();
    for m in &devices {
        // Maps live 4 s: the daemons fetch them again every 2 s.
        m.dev
            .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(4));
    }
    let artifact = devices[0]
        .dev
        .write_rootfs_artifact("release-sync", 256 << 10, &[], &[]);
    let pause = serde_json::json!({"id": "{id}", "priority": 0,
        "states": {"ArtifactCommit_Enter": {"action": "pause", "on_map_expire": "fail"}}});
    let dep = server.create_deployment(NewDeployment::from_file(
        &artifact,
        "release-sync",
        &[DEVICE_TYPE],
    ));
    server.set_control_map(&dep, Some(pause));
    for m in devices.iter_mut() {
        m.start();
    }
    // Each device reboots into the update and pauses before the commit;
    // the reboots are simulated by hand here (several daemons at once).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "not all devices paused");
        for m in devices.iter_mut() {
            m.tend();
        }
        let paused = server
            .device_ids()
            .iter()
            .filter(|d| {
                server
                    .statuses(d, &dep)
                    .iter()
                    .any(|s| s == "pause_before_committing")
            })
            .count();
        if paused == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Release them all.
    server.set_control_map(
        &dep,
        Some(serde_json::json!({"id": "{id}", "priority": 0,
            "states": {"ArtifactCommit_Enter": {"action": "continue"}}})),
    );
    let released = Instant::now();
    assert!(
        server.wait_until(Duration::from_secs(60), |s| {
            s.device_ids()
                .iter()
                .filter(|d| s.deployment_status(d, &dep).as_deref() == Some("success"))
                .count()
                == n
        }),
        "not all devices committed: {:?}\n{}",
        server.deployment_summary(&dep),
        devices[0].log_tail()
    );
    let times: Vec<Duration> = server
        .device_ids()
        .iter()
        .map(|d| {
            server
                .status_reports(d, &dep)
                .iter()
                .find(|r| r.status == "success")
                .map(|r| r.elapsed)
                .unwrap()
        })
        .collect();
    let first = times.iter().min().unwrap();
    let last = times.iter().max().unwrap();
    eprintln!(
        "synchronized commit of {n} devices: all committed {:?} after the release, spread between the first and the last commit {:?}",
        released.elapsed(),
        *last - *first
    );
    for m in devices.iter_mut() {
        assert_eq!(m.dev.show_artifact(), "release-sync");
        m.stop();
    }
    server.assert_no_violations();
    *last - *first
}

#[test]
fn a_server_map_pauses_before_the_commit_until_released() {
    let spread = synchronized_commit(1);
    assert_eq!(spread, Duration::ZERO);
}

#[test]
fn ten_devices_commit_together_when_the_server_releases_them() {
    let spread = synchronized_commit(10);
    // Each daemon looks at its map again every 2 s (half its 4 s life).
    assert!(spread < Duration::from_secs(5), "spread {spread:?}");
}

#[test]
fn devices_reboot_only_when_the_server_releases_them() {
    let server = MenderServer::start();
    server.enable_next_v2(true);
    let n = 3;
    let mut devices: Vec<Managed> = (0..n).map(|_| Managed::new(&server)).collect();
    for m in &devices {
        m.dev
            .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(4));
    }
    let artifact = devices[0]
        .dev
        .write_rootfs_artifact("release-reboot", 256 << 10, &[], &[]);
    let dep = server.create_deployment(NewDeployment::from_file(
        &artifact,
        "release-reboot",
        &[DEVICE_TYPE],
    ));
    server.set_control_map(
        &dep,
        Some(serde_json::json!({"id": "{id}", "priority": 0,
            "states": {"ArtifactReboot_Enter": {"action": "pause", "on_map_expire": "fail"}}})),
    );
    let paused = |s: &MenderServer| {
        s.device_ids()
            .iter()
            .filter(|d| {
                s.statuses(d, &dep)
                    .iter()
                    .any(|x| x == "pause_before_rebooting")
            })
            .count()
    };
    // The devices come online (and download) one after the other.
    for (i, m) in devices.iter_mut().enumerate() {
        m.start();
        assert!(
            server.wait_until(Duration::from_secs(30), |s| paused(s) == i + 1),
            "{}",
            m.log_tail()
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    for m in &devices {
        assert!(!m.reboot_marker.exists(), "rebooted before the release");
        assert_eq!(m.dev.env()["upgrade_available"], "1", "installed, waiting");
    }
    server.set_control_map(
        &dep,
        Some(serde_json::json!({"id": "{id}", "priority": 0,
            "states": {"ArtifactReboot_Enter": {"action": "continue"}}})),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .device_ids()
        .iter()
        .filter(|d| server.deployment_status(d, &dep).as_deref() == Some("success"))
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            server.deployment_summary(&dep)
        );
        for m in devices.iter_mut() {
            m.tend();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for m in devices.iter_mut() {
        m.stop();
        assert_eq!(m.dev.show_artifact(), "release-reboot");
    }
    server.assert_no_violations();
}

#[test]
fn a_pause_map_nobody_refreshes_expires_into_its_on_map_expire() {
    let server = MenderServer::start();
    let mut m = Managed::new(&server);
    // Set like `control set` would, then left to expire: the application
    // that owned it is gone.
    m.dev
        .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(3));
    // The daemon's start gives stored maps the boot lifetime.
    m.dev
        .set_config("UpdateControlMapBootExpirationTimeSeconds", Value::from(3));
    let file = m.dev.path("map.json");
    fs::write(
        &file,
        serde_json::json!({"id": MAP_ID, "priority": 2,
            "states": {"ArtifactInstall_Enter": {"action": "pause", "on_map_expire": "fail"}}})
        .to_string(),
    )
    .unwrap();
    m.dev.ok(&["control", "set", &file.display().to_string()]);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-expire", 256 << 10, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-expire", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 60);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("failure")
    );
    assert!(
        server
            .statuses(&dev_id, &dep)
            .iter()
            .any(|s| s == "pause_before_installing")
    );
    assert_eq!(m.dev.env()["upgrade_available"], "0");
    assert_eq!(m.dev.env()["mender_boot_part"], "2");
    let log = fs::read_to_string(&m.daemon_log).unwrap();
    assert!(log.contains("expired"), "{}", m.log_tail());
    // Entering Idle (after the deployment, or at the next start) drops the
    // expired map, as Mender does: it does not fail every later deployment.
    let artifact = m
        .dev
        .write_rootfs_artifact("release-after-expiry", 256 << 10, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-after-expiry", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 90);
    assert_eq!(
        server.deployment_status(&dev_id, &dep).as_deref(),
        Some("success"),
        "{}",
        m.log_tail()
    );
    let shown = m.dev.ok(&["control", "show"]);
    assert!(!shown.contains(MAP_ID), "{shown}");
}
