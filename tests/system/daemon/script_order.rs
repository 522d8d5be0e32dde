//! The canonical state-script scenarios (spec §3.9): the scripts the daemon
//! runs, in order, for success, failure and rollback.

use super::*;

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
fn canonical_setup(m: &ManagedDevice, failing: Option<&str>, bodies: &[(&str, String)]) -> PathBuf {
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
) -> ManagedDevice {
    canonical_with(failing, |_| bodies.to_vec(), expected, status)
}

/// As [`canonical`], with script bodies that depend on the device's paths.
fn canonical_with<'b>(
    failing: Option<&str>,
    bodies: impl Fn(&ManagedDevice) -> Vec<(&'b str, String)>,
    expected: Vec<String>,
    status: &str,
) -> ManagedDevice {
    let server = MenderServer::start();
    let mut m = managed(&server);
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
    let mut m = managed(&server);
    let artifact = canonical_setup(&m, Some(failing), &[]);
    let dep = server.add_deployment(&artifact, "canonical-2", &[DEVICE_TYPE]);
    let rounds = |m: &ManagedDevice| {
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
