//! Standalone mode (`install`, `commit`, `rollback`, `show-artifact`,
//! `show-provides`) on a simulated A/B device (see `tests/support/device.rs`):
//!
//! 1. golden state-script orderings for rootfs-image updates (spec §2.10,
//!    §3.6, §3.9 and the standalone facts of the reference client: only
//!    `Download_*` from the rootfs and `Artifact*` from the artifact run,
//!    never `Idle`/`Sync`/`ArtifactReboot_*`/`ArtifactRollbackReboot_*`),
//!    provides bookkeeping, an artifact written by the real `mender-artifact`;
//! 2. Update Modules (Debian's `single-file` and `script` modules);
//! 3. bad input: refused with a one-line error, nothing changed, nothing left
//!    pending;
//! 4. the command line: http(s) sources, `mender`/`mender-update` links,
//!    `--version`, `--log-file`, the deployment log.
//!
//! These tests fail (they never skip) when `mender-artifact`, `openssl` or
//! Debian's Update Modules (`/usr/share/mender/modules/v3`) are missing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::device::*;
use serde_json::{Value, json};

/// Size of the rootfs payloads (partitions are 2 MiB); small, so that the
/// debug build compresses them quickly.
const PAYLOAD: usize = 256 << 10;
/// Debian's mender-client Update Modules.
const DEBIAN_MODULES: &str = "/usr/share/mender/modules/v3";

// Script inventory of spec §3.9.2
use crate::support::canonical_scripts::{ARTIFACT_SCRIPTS, ROOTFS_SCRIPTS};

/// States whose scripts never run in standalone mode: no Idle/Sync loop, no
/// reboot inside the client; and the error-free states' `Error` actions.
fn never_runs(script: &str) -> bool {
    [
        "Idle_",
        "Sync_",
        "ArtifactReboot_",
        "ArtifactRollbackReboot_",
        "ArtifactRollback_Error_",
        "ArtifactFailure_Error_",
    ]
    .iter()
    .any(|p| script.starts_with(p))
}

// The blocks the expected orderings are made of: every script of a (state,
// action) from the inventory above, in name order.

/// All scripts of `state`_`action` in `inventory`, sorted by name.
fn block(inventory: &[&'static str], state: &str, action: &str) -> Vec<&'static str> {
    let prefix = format!("{state}_{action}_");
    let mut v: Vec<&'static str> = inventory
        .iter()
        .copied()
        .filter(|s| s.starts_with(&prefix))
        .collect();
    v.sort_unstable();
    v
}

/// The scripts of `state`_`action` up to and including `failing` (the first
/// failing script ends its action).
fn block_until(
    inventory: &[&'static str],
    state: &str,
    action: &str,
    failing: &str,
) -> Vec<&'static str> {
    let all = block(inventory, state, action);
    let end = all
        .iter()
        .position(|s| *s == failing)
        .unwrap_or_else(|| panic!("{failing} is not a {state}_{action} script"));
    all[..=end].to_vec()
}

fn concat(blocks: &[Vec<&'static str>]) -> Vec<&'static str> {
    blocks.concat()
}

fn r(state: &str, action: &str) -> Vec<&'static str> {
    block(ROOTFS_SCRIPTS, state, action)
}

fn a(state: &str, action: &str) -> Vec<&'static str> {
    block(ARTIFACT_SCRIPTS, state, action)
}

#[test]
fn expected_blocks_match_spec_listing() {
    // The derived blocks, spelled out once (spec §3.9.4, S1/S8/S9).
    assert_eq!(
        r("Download", "Enter"),
        ["Download_Enter_12", "Download_Enter_13"]
    );
    assert_eq!(
        r("Download", "Leave"),
        ["Download_Leave_14", "Download_Leave_25"]
    );
    assert_eq!(
        a("ArtifactInstall", "Error"),
        [
            "ArtifactInstall_Error_01",
            "ArtifactInstall_Error_02",
            "ArtifactInstall_Error_99"
        ]
    );
    assert_eq!(
        a("ArtifactCommit", "Leave"),
        [
            "ArtifactCommit_Leave_01_extra_string",
            "ArtifactCommit_Leave_91"
        ]
    );
    assert_eq!(
        a("ArtifactFailure", "Leave"),
        ["ArtifactFailure_Leave_44", "ArtifactFailure_Leave_55"]
    );
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A device with every rootfs script of the inventory (the one named
/// `failing`, if any, exits 1).
fn device_with_rootfs_scripts(failing: Option<&str>) -> SimDevice {
    let dev = SimDevice::new();
    for s in ROOTFS_SCRIPTS {
        let code = if Some(*s) == failing { 1 } else { 0 };
        dev.script(&dev.rootfs_scripts, s, code);
    }
    dev
}

/// A rootfs artifact with every artifact script of the inventory (the one
/// named `failing`, if any, exits 1).
fn artifact_with_scripts(dev: &SimDevice, name: &str, failing: Option<&str>) -> PathBuf {
    let scripts: Vec<(&str, i32)> = ARTIFACT_SCRIPTS
        .iter()
        .map(|s| (*s, if Some(*s) == failing { 1 } else { 0 }))
        .collect();
    dev.write_rootfs_artifact(name, PAYLOAD, &scripts, &[])
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[track_caller]
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        exit_code(out),
        code,
        "{what}: expected exit code {code}: {}",
        describe(out)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args`, checks the exit code and that exactly `scripts` ran (in
/// this order) while it did.
#[track_caller]
fn step(dev: &SimDevice, args: &[&str], code: i32, scripts: &[&str]) -> Output {
    let before = dev.script_log().len();
    let out = dev.run(args);
    assert_exit(&out, code, &format!("{args:?}"));
    let ran = dev.script_log()[before..].to_vec();
    assert_eq!(ran, scripts, "scripts run by {args:?}\n{}", describe(&out));
    out
}

/// The whole script log holds no script that must never run standalone.
#[track_caller]
fn assert_no_forbidden_scripts(dev: &SimDevice) {
    let bad: Vec<String> = dev
        .script_log()
        .into_iter()
        .filter(|s| never_runs(s))
        .collect();
    assert!(bad.is_empty(), "scripts that must never run did: {bad:?}");
}

#[track_caller]
fn assert_env(dev: &SimDevice, part: u32, upgrade: u32) {
    let env = dev.env();
    let want = [
        ("mender_boot_part", part.to_string()),
        ("mender_boot_part_hex", part.to_string()),
        ("upgrade_available", upgrade.to_string()),
    ];
    for (k, v) in want {
        assert_eq!(env.get(k), Some(&v), "{k} in {env:?}");
    }
}

/// The provides of a device that committed rootfs artifact `name` (built
/// by `write_rootfs_artifact`) over a fresh device: mender-artifact's
/// defaults (spec §1.16).
fn rootfs_provides(name: &str, artifact: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("artifact_name".to_string(), name.to_string()),
        (
            "rootfs-image.checksum".to_string(),
            sha256_file(&payload_of(artifact)),
        ),
        ("rootfs-image.version".to_string(), name.to_string()),
    ])
}

/// `show-provides` prints sorted `key=value` lines equal to `want`.
#[track_caller]
fn assert_provides(dev: &SimDevice, want: &BTreeMap<String, String>) {
    let text = dev.provides_text();
    let expected: String = want.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    assert_eq!(text, expected, "show-provides");
}

/// Partition `n` starts with the payload of `artifact`.
#[track_caller]
fn assert_partition_holds(dev: &SimDevice, n: u32, artifact: &Path) {
    let payload = fs::read(payload_of(artifact)).unwrap();
    assert_eq!(
        dev.partition_sha256_prefix(n, Some(payload.len())),
        sha256_hex(&payload),
        "partition {n} does not hold the payload of {}",
        artifact.display()
    );
}

/// What must not change when an install is refused.
struct Snapshot {
    env: Vec<u8>,
    running: String,
    inactive: Option<String>,
    provides: String,
    artifact: String,
}

fn snapshot(dev: &SimDevice) -> Snapshot {
    Snapshot {
        env: dev.env_bytes(),
        running: dev.partition_sha256(2),
        inactive: dev.partition(3).exists().then(|| dev.partition_sha256(3)),
        provides: dev.provides_text(),
        artifact: dev.show_artifact(),
    }
}

/// `out` is a refusal: exit 1, one `mender-rs: error:` line naming each of
/// `needles`; the env file is byte-identical, the running partition
/// untouched, provides and name unchanged, and no update is left pending
/// (`commit` exits 2).
#[track_caller]
fn assert_refused(dev: &SimDevice, before: &Snapshot, out: &Output, needles: &[&str]) {
    assert_exit(out, 1, "refused install");
    let err = stderr(out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("mender-rs: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    for n in needles {
        assert!(
            lines[0].to_lowercase().contains(&n.to_lowercase()),
            "the error line does not name '{n}': {}",
            lines[0]
        );
    }
    assert!(dev.env_bytes() == before.env, "the env file changed");
    assert_eq!(
        dev.partition_sha256(2),
        before.running,
        "the running partition changed"
    );
    assert_eq!(dev.provides_text(), before.provides, "provides changed");
    assert_eq!(
        dev.show_artifact(),
        before.artifact,
        "artifact name changed"
    );
    let commit = dev.run(&["commit"]);
    assert_exit(&commit, 2, "commit after a refused install");
    assert!(
        dev.env_bytes() == before.env,
        "the env file changed after commit"
    );
}

// ---------------------------------------------------------------------------
// 1. Golden orderings, rootfs-image
// ---------------------------------------------------------------------------

#[test]
fn rootfs_success_with_reboot_exit_code() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let provides_before = dev.provides();
    assert_eq!(dev.show_artifact(), "unknown");
    // Nothing committed yet: no rootfs provides (whether a bare
    // `artifact_name=unknown` line shows is not pinned down here).
    assert!(
        provides_before
            .keys()
            .all(|k| k == "artifact_name" && provides_before[k] == "unknown"),
        "{provides_before:?}"
    );

    let install = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        a("ArtifactInstall", "Leave"),
    ]);
    let commit = concat(&[a("ArtifactCommit", "Enter"), a("ArtifactCommit", "Leave")]);

    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_env(&dev, 3, 1);
    assert_eq!(dev.env().get("bootcount").map(String::as_str), Some("0"));
    assert_partition_holds(&dev, 3, &art);
    assert_eq!(
        dev.show_artifact(),
        "unknown",
        "name changes only at commit"
    );
    assert_eq!(dev.provides(), provides_before);

    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 0, &commit);
    assert_env(&dev, 3, 0);
    assert_eq!(dev.show_artifact(), "release-2");
    assert_provides(&dev, &rootfs_provides("release-2", &art));
    assert_eq!(dev.reboot(), Boot::Normal(3));

    // Nothing pending any more.
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert_eq!(dev.script_log(), concat(&[install, commit]));
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_success_without_reboot_exit_code_exits_0() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 0, "install without --reboot-exit-code");
    assert_env(&dev, 3, 1);
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "release-2");
}

#[test]
fn rootfs_failure_in_download_enter() {
    let failing = "Download_Enter_12";
    let dev = device_with_rootfs_scripts(Some(failing));
    let art = artifact_with_scripts(&dev, "release-2", None);
    let before = snapshot(&dev);
    let expected = concat(&[
        block_until(ROOTFS_SCRIPTS, "Download", "Enter", failing),
        r("Download", "Error"),
    ]);
    assert_eq!(expected, ["Download_Enter_12", "Download_Error_25"]);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        1,
        &expected,
    );
    assert!(dev.env_bytes() == before.env, "the env changed");
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    assert_env(&dev, 2, 0);
    assert_eq!(dev.provides_text(), before.provides);
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_download_leave() {
    let failing = "Download_Leave_14";
    let dev = device_with_rootfs_scripts(Some(failing));
    let art = artifact_with_scripts(&dev, "release-2", None);
    let before = snapshot(&dev);
    let expected = concat(&[
        r("Download", "Enter"),
        block_until(ROOTFS_SCRIPTS, "Download", "Leave", failing),
        r("Download", "Error"),
    ]);
    step(&dev, &["install", p(&art)], 1, &expected);
    assert!(dev.env_bytes() == before.env, "the env changed");
    assert_eq!(dev.provides_text(), before.provides);
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_install_enter() {
    let failing = "ArtifactInstall_Enter_01";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let before = snapshot(&dev);
    let expected = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        block_until(ARTIFACT_SCRIPTS, "ArtifactInstall", "Enter", failing),
        a("ArtifactInstall", "Error"),
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
        a("ArtifactFailure", "Enter"),
        a("ArtifactFailure", "Leave"),
    ]);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        1,
        &expected,
    );
    assert_env(&dev, 2, 0);
    assert_eq!(dev.partition_sha256(2), before.running);
    assert_eq!(dev.provides_text(), before.provides);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.reboot(), Boot::Normal(2));
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_install_leave() {
    let failing = "ArtifactInstall_Leave_01";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let expected = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        block_until(ARTIFACT_SCRIPTS, "ArtifactInstall", "Leave", failing),
        a("ArtifactInstall", "Error"),
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
        a("ArtifactFailure", "Enter"),
        a("ArtifactFailure", "Leave"),
    ]);
    step(&dev, &["install", p(&art)], 1, &expected);
    // The switch to partition 3 happened before the Leave scripts: undone.
    assert_env(&dev, 2, 0);
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_commit_enter() {
    let failing = "ArtifactCommit_Enter_05";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let provides_before = dev.provides_text();
    let install = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        a("ArtifactInstall", "Leave"),
    ]);
    let commit = concat(&[
        block_until(ARTIFACT_SCRIPTS, "ArtifactCommit", "Enter", failing),
        a("ArtifactCommit", "Error"),
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
        a("ArtifactFailure", "Enter"),
        a("ArtifactFailure", "Leave"),
    ]);
    assert_eq!(
        commit[..3],
        [
            "ArtifactCommit_Enter_01",
            "ArtifactCommit_Enter_05",
            "ArtifactCommit_Error_91"
        ]
    );
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 1, &commit);
    assert_env(&dev, 2, 0);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.provides_text(), provides_before);
    assert_eq!(dev.reboot(), Boot::Normal(2));
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_commit_leave() {
    let failing = "ArtifactCommit_Leave_01_extra_string";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let install = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        a("ArtifactInstall", "Leave"),
    ]);
    // Too late to roll back: the Error scripts, then nothing.
    let commit = concat(&[
        a("ArtifactCommit", "Enter"),
        block_until(ARTIFACT_SCRIPTS, "ArtifactCommit", "Leave", failing),
        a("ArtifactCommit", "Error"),
    ]);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 1, &commit);
    // The update stays.
    assert_env(&dev, 3, 0);
    assert_eq!(dev.reboot(), Boot::Normal(3));
    assert_eq!(dev.show_artifact(), "release-2_INCONSISTENT");
    let mut want = rootfs_provides("release-2", &art);
    want.insert("artifact_name".into(), "release-2_INCONSISTENT".into());
    assert_provides(&dev, &want);
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

/// The scripts of a requested (manual) `rollback` that succeeds: the
/// ArtifactRollback ones only. Both reference clients agree: Mender 3.x
/// (`DoStandaloneRollback`) runs the failure states only when the rollback
/// itself failed, and 4.x (`standalone::Rollback`) runs ArtifactFailure only
/// from its installation-failure handler. (The brief and the sentence of
/// spec §2.10 also list ArtifactFailure here; the reference code does not.)
fn manual_rollback_scripts() -> Vec<&'static str> {
    concat(&[
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
    ])
}

#[test]
fn rootfs_manual_rollback_after_install() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let before = snapshot(&dev);
    let install = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        a("ArtifactInstall", "Leave"),
    ]);
    let rollback = manual_rollback_scripts();
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_env(&dev, 3, 1);
    step(&dev, &["rollback"], 0, &rollback);
    assert_env(&dev, 2, 0);
    assert_eq!(dev.partition_sha256(2), before.running);
    assert_eq!(dev.provides_text(), before.provides);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.reboot(), Boot::Normal(2));
    step(&dev, &["rollback"], 2, &[]);
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_manual_rollback_after_reboot() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let rollback = manual_rollback_scripts();
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["rollback"], 0, &rollback);
    assert_env(&dev, 2, 0);
    assert_eq!(dev.reboot(), Boot::Normal(2));
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]

fn failing_rollback_script_in_manual_rollback_marks_inconsistent() {
    // Reference standalone fact: a failing rollback script marks the name
    // `<name>_INCONSISTENT`; the rollback itself still happens.
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some("ArtifactRollback_Leave_01"));
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    let out = dev.run(&["rollback"]);
    assert_env(&dev, 2, 0);
    assert_eq!(
        dev.show_artifact(),
        "release-2_INCONSISTENT",
        "{}",
        describe(&out)
    );
    assert_exit(
        &out,
        1,
        "rollback with a failing ArtifactRollback_Leave script",
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
    assert_no_forbidden_scripts(&dev);
}

#[test]

fn failing_rollback_script_after_failed_install_marks_inconsistent() {
    let dev = device_with_rootfs_scripts(None);
    let scripts: Vec<(&str, i32)> = ARTIFACT_SCRIPTS
        .iter()
        .map(|s| {
            let fails = matches!(*s, "ArtifactInstall_Enter_01" | "ArtifactRollback_Leave_00");
            (*s, i32::from(fails))
        })
        .collect();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &scripts, &[]);
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "failing install");
    assert_env(&dev, 2, 0);
    assert_eq!(
        dev.show_artifact(),
        "release-2_INCONSISTENT",
        "{}",
        describe(&out)
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn commit_and_rollback_with_nothing_pending_exit_2() {
    let dev = device_with_rootfs_scripts(None);
    let env = dev.env_bytes();
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert!(dev.env_bytes() == env);
    // After a committed update too.
    let art = artifact_with_scripts(&dev, "release-2", None);
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    let env = dev.env_bytes();
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert!(dev.env_bytes() == env);
    assert_eq!(dev.show_artifact(), "release-2");
}

#[test]
fn install_while_another_is_pending_second_wins() {
    let dev = device_with_rootfs_scripts(None);
    let first = artifact_with_scripts(&dev, "release-2", None);
    let second = artifact_with_scripts(&dev, "release-3", None);
    let install = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        a("ArtifactInstall", "Leave"),
    ]);
    let commit = concat(&[a("ArtifactCommit", "Enter"), a("ArtifactCommit", "Leave")]);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&first)],
        4,
        &install,
    );
    assert_partition_holds(&dev, 3, &first);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&second)],
        4,
        &install,
    );
    assert_env(&dev, 3, 1);
    assert_partition_holds(&dev, 3, &second);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 0, &commit);
    assert_env(&dev, 3, 0);
    assert_eq!(dev.show_artifact(), "release-3");
    assert_provides(&dev, &rootfs_provides("release-3", &second));
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn second_rootfs_update_goes_back_to_partition_a() {
    let dev = SimDevice::new();
    let two = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let three = dev.write_rootfs_artifact("release-3", PAYLOAD, &[], &[]);
    assert_exit(&dev.run(&["install", p(&two)]), 0, "install 2");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit 2");
    let running = dev.partition_sha256(3);
    assert_exit(&dev.run(&["install", p(&three)]), 0, "install 3");
    assert_env(&dev, 2, 1);
    assert_partition_holds(&dev, 2, &three);
    assert_eq!(dev.partition_sha256(3), running, "the running side changed");
    assert_eq!(dev.reboot(), Boot::TryUpdate(2));
    assert_exit(&dev.run(&["commit"]), 0, "commit 3");
    assert_env(&dev, 2, 0);
    assert_provides(&dev, &rootfs_provides("release-3", &three));
}

#[test]
fn bootloader_rollback_makes_commit_fail() {
    // The update did not come up: the bootloader switched back on the
    // second boot; commit must refuse and clean up.
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    assert_eq!(dev.reboot(), Boot::RolledBack(2));
    dev.clear_script_log();
    let out = dev.run(&["commit"]);
    assert_exit(&out, 1, "commit after the bootloader rolled back");
    assert_env(&dev, 2, 0);
    assert_eq!(dev.show_artifact(), "unknown");
    assert!(
        dev.script_log()
            .iter()
            .all(|s| !s.starts_with("ArtifactCommit_")),
        "commit scripts ran: {:?}",
        dev.script_log()
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing left");
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn clears_provides_semantics_over_a_module_artifact() {
    let dev = SimDevice::new();
    dev.set_config("ModulesPath", json!(DEBIAN_MODULES));
    let build = dev.new_build_dir("script-payload");
    let marker = dev.path("script-ran");
    let script = build.join("run.sh");
    write_executable(
        &script,
        &format!("#!/bin/sh\necho ok > '{}'\n", marker.display()),
    );
    // The `script` module cannot roll back: committed by install.
    let app = dev.write_module_artifact(
        "app-1",
        "script",
        &[&script],
        &[],
        &["-p", "app.version:1", "-p", "legacy.key:x"],
    );
    assert_exit(&dev.run(&["install", p(&app)]), 0, "module install");
    assert!(marker.exists());
    assert_provides(
        &dev,
        &BTreeMap::from([
            ("artifact_name".to_string(), "app-1".to_string()),
            ("app.version".to_string(), "1".to_string()),
            ("legacy.key".to_string(), "x".to_string()),
            (
                "rootfs-image.script.version".to_string(),
                "app-1".to_string(),
            ),
        ]),
    );

    // A rootfs update clearing legacy.* (and, by default, rootfs-image.*).
    let rootfs = dev.write_rootfs_artifact(
        "release-2",
        PAYLOAD,
        &[],
        &["--clears-provides", "legacy.*"],
    );
    assert_exit(&dev.run(&["install", p(&rootfs)]), 0, "rootfs install");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    let mut want = rootfs_provides("release-2", &rootfs);
    want.insert("app.version".into(), "1".into());
    assert_provides(&dev, &want);

    // One clearing everything.
    let all = dev.write_rootfs_artifact(
        "release-3",
        PAYLOAD,
        &[],
        &["--no-default-clears-provides", "--clears-provides", "*"],
    );
    assert_exit(&dev.run(&["install", p(&all)]), 0, "rootfs install");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_provides(&dev, &rootfs_provides("release-3", &all));
}

#[test]
fn artifact_written_by_mender_artifact_installs() {
    let dev = device_with_rootfs_scripts(None);
    let build = dev.new_build_dir("reference");
    let payload = build.join("rootfs.img");
    fs::write(&payload, random_bytes(PAYLOAD)).unwrap();
    let mut scripts = Vec::new();
    for s in [
        "ArtifactInstall_Enter_01",
        "ArtifactCommit_Leave_01",
        "ArtifactRollback_Enter_00",
    ] {
        scripts.push("-s".to_string());
        scripts.push(p(&dev.script(&build.join("scripts"), s, 0)).to_string());
    }
    let artifact = build.join("ref.mender");
    let mut cmd = Command::new("mender-artifact");
    cmd.args(["write", "rootfs-image", "-t", DEVICE_TYPE, "-n", "ref-1"])
        .args(["-f", p(&payload), "-o", p(&artifact)])
        .args(&scripts);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "mender-artifact write: {}",
        describe(&out)
    );

    step(
        &dev,
        &["install", "--reboot-exit-code", p(&artifact)],
        4,
        &concat(&[
            r("Download", "Enter"),
            r("Download", "Leave"),
            vec!["ArtifactInstall_Enter_01"],
        ]),
    );
    let data = fs::read(&payload).unwrap();
    assert_eq!(
        dev.partition_sha256_prefix(3, Some(data.len())),
        sha256_hex(&data)
    );
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 0, &["ArtifactCommit_Leave_01"]);
    assert_eq!(dev.show_artifact(), "ref-1");
    let provides = dev.provides();
    assert_eq!(
        provides.get("rootfs-image.checksum"),
        Some(&sha256_hex(&data)),
        "{provides:?}"
    );
    assert_eq!(
        provides.get("artifact_name").map(String::as_str),
        Some("ref-1")
    );
}

// ---------------------------------------------------------------------------
// 2. Update Modules
// ---------------------------------------------------------------------------

/// Fails unless Debian's modules are installed; points ModulesPath at them.
fn use_debian_modules(dev: &SimDevice) {
    for m in ["single-file", "script"] {
        let path = Path::new(DEBIAN_MODULES).join(m);
        assert!(
            path.is_file(),
            "{} is missing: install Debian's mender-client package",
            path.display()
        );
    }
    dev.set_config("ModulesPath", json!(DEBIAN_MODULES));
}

/// A single-file artifact installing `content` as `<dest>/app.conf`.
fn single_file_artifact(dev: &SimDevice, name: &str, dest: &Path, content: &str) -> PathBuf {
    let build = dev.new_build_dir(&format!("{name}-files"));
    let files = [
        ("dest_dir", dest.display().to_string()),
        ("filename", "app.conf".to_string()),
        ("permissions", "644".to_string()),
        ("app.conf", content.to_string()),
    ];
    let mut paths = Vec::new();
    for (f, text) in &files {
        let path = build.join(f);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    dev.write_module_artifact(
        name,
        "single-file",
        &refs,
        &[
            ("ArtifactInstall_Enter_01", 0),
            ("ArtifactCommit_Enter_01", 0),
            ("ArtifactRollback_Enter_01", 0),
            ("ArtifactFailure_Enter_01", 0),
        ],
        &[],
    )
}

#[test]
fn single_file_module_install_and_commit() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let dest = dev.path("target-dir");
    let art = single_file_artifact(&dev, "conf-1", &dest, "version 1\n");
    let env = dev.env_bytes();
    // No reboot needed, rollback supported: waits for commit, exit 0 even
    // with --reboot-exit-code.
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        0,
        &["ArtifactInstall_Enter_01"],
    );
    assert_eq!(
        fs::read_to_string(dest.join("app.conf")).unwrap(),
        "version 1\n"
    );
    assert_eq!(dev.show_artifact(), "unknown");
    // The file tree stays until the update ends.
    let tree = dev.modules_work.join("payloads/0000/tree");
    assert_eq!(
        fs::read_to_string(tree.join("header/artifact_name"))
            .unwrap()
            .trim(),
        "conf-1"
    );
    step(&dev, &["commit"], 0, &["ArtifactCommit_Enter_01"]);
    assert_eq!(dev.show_artifact(), "conf-1");
    assert_provides(
        &dev,
        &BTreeMap::from([
            ("artifact_name".to_string(), "conf-1".to_string()),
            (
                "rootfs-image.single-file.version".to_string(),
                "conf-1".to_string(),
            ),
        ]),
    );
    assert!(dev.env_bytes() == env, "a module update touched the env");
    step(&dev, &["commit"], 2, &[]);
    // The module's file tree is gone after the update.
    assert!(!tree.exists(), "file tree left behind: {}", tree.display());
}

#[test]
fn single_file_module_rollback_restores_previous_content() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let dest = dev.path("target-dir");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("app.conf"), "old content\n").unwrap();
    let art = single_file_artifact(&dev, "conf-2", &dest, "new content\n");
    let provides = dev.provides_text();
    step(
        &dev,
        &["install", p(&art)],
        0,
        &["ArtifactInstall_Enter_01"],
    );
    assert_eq!(
        fs::read_to_string(dest.join("app.conf")).unwrap(),
        "new content\n"
    );
    step(
        &dev,
        &["rollback"],
        0,
        // No ArtifactFailure after a requested rollback (see
        // manual_rollback_scripts).
        &["ArtifactRollback_Enter_01"],
    );
    assert_eq!(
        fs::read_to_string(dest.join("app.conf")).unwrap(),
        "old content\n"
    );
    assert_eq!(dev.provides_text(), provides);
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
}

#[test]
fn module_image_without_module_is_refused() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("nomod-1", "no-such-module", &[&file], &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["no-such-module"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn script_module_without_rollback_commits_at_install() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let build = dev.new_build_dir("script");
    let marker = dev.path("script-ran");
    let script = build.join("run.sh");
    write_executable(
        &script,
        &format!("#!/bin/sh\necho ran > '{}'\n", marker.display()),
    );
    let art = dev.write_module_artifact(
        "script-1",
        "script",
        &[&script],
        &[
            ("ArtifactInstall_Enter_01", 0),
            ("ArtifactCommit_Enter_01", 0),
            ("ArtifactCommit_Leave_01", 0),
            ("ArtifactRollback_Enter_01", 0),
        ],
        &[],
    );
    let env = dev.env_bytes();
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        0,
        &[
            "ArtifactInstall_Enter_01",
            "ArtifactCommit_Enter_01",
            "ArtifactCommit_Leave_01",
        ],
    );
    assert_eq!(fs::read_to_string(&marker).unwrap(), "ran\n");
    assert_eq!(dev.show_artifact(), "script-1");
    assert_eq!(
        dev.provides()
            .get("rootfs-image.script.version")
            .map(String::as_str),
        Some("script-1")
    );
    assert!(dev.env_bytes() == env);
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
}

// ---------------------------------------------------------------------------
// 3. Bad input
// ---------------------------------------------------------------------------

#[test]
fn corrupt_env_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    // Flip a byte of the variables: the CRC no longer matches.
    let mut env = dev.env_bytes();
    let at = env
        .windows(b"mender_boot_part=2".len())
        .position(|w| w == b"mender_boot_part=2")
        .expect("variable in the env");
    env[at + b"mender_boot_part=".len()] = b'3';
    fs::write(&dev.env_file, &env).unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &[p(&dev.env_file), "crc"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn missing_fw_env_config_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let missing = dev.root.join("etc/no-such-fw_env.config");
    dev.set_config("BootEnvConfig", serde_json::json!(p(&missing)));
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "install without fw_env.config");
    assert!(
        stderr(&out).contains("no-such-fw_env.config"),
        "{}",
        stderr(&out)
    );
    assert!(dev.env_bytes() == before.env, "the env file changed");
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn garbage_boot_part_is_refused() {
    for garbage in ["seven", "9", ""] {
        let dev = SimDevice::new();
        let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
        if garbage.is_empty() {
            dev.ok(&["bootenv", "set", "mender_boot_part="]);
        } else {
            dev.set_env(&[("mender_boot_part", garbage)]);
        }
        let before = snapshot(&dev);
        let out = dev.run(&["install", p(&art)]);
        assert_refused(&dev, &before, &out, &["mender_boot_part"]);
        assert_eq!(
            before.inactive,
            Some(dev.partition_sha256(3)),
            "{garbage:?}"
        );
    }
}

#[test]
fn missing_partition_file_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    fs::remove_file(&dev.part_b).unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &[p(&dev.part_b)]);
    assert!(!dev.part_b.exists(), "the missing partition was created");
}

#[test]
fn rootfs_part_b_naming_the_running_partition_is_refused() {
    // The same path, a link and a hard link: B is A, the running one.
    for how in ["same", "symlink", "hard link"] {
        let dev = SimDevice::new();
        let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
        let b = match how {
            "same" => dev.part_a.clone(),
            "symlink" => {
                let l = dev.path("dev/by-name-rootfs-b3");
                std::os::unix::fs::symlink(&dev.part_a, &l).unwrap();
                l
            }
            _ => {
                let l = dev.path("dev/mmcblk1p3");
                fs::hard_link(&dev.part_a, &l).unwrap();
                l
            }
        };
        dev.set_config("RootfsPartB", json!(p(&b)));
        let before = snapshot(&dev);
        let out = dev.run(&["install", p(&art)]);
        assert_refused(&dev, &before, &out, &["RootfsPartA", "RootfsPartB", "same"]);
        assert_eq!(dev.env()["upgrade_available"], "0", "{how}");
    }
}

#[test]
fn payload_bigger_than_partition_is_refused() {
    let dev = SimDevice::with_partition_size(PAYLOAD as u64);
    let art = dev.write_rootfs_artifact("too-big", PAYLOAD + 4096, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &[p(&dev.part_b)]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    assert_eq!(fs::metadata(&dev.part_b).unwrap().len(), PAYLOAD as u64);
}

#[test]
fn artifact_for_another_device_type_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    fs::write(&dev.device_type_file, "device_type=other-board\n").unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["other-board"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn depends_on_another_artifact_name_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &["-N", "release-1"]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["release-1"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn corrupt_payload_fails_its_checksum() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &["--compression", "none"]);
    let payload = fs::read(payload_of(&art)).unwrap();
    let mut bytes = fs::read(&art).unwrap();
    // The uncompressed payload appears verbatim: flip a byte in its middle.
    let probe = &payload[PAYLOAD / 2..PAYLOAD / 2 + 64];
    let at = bytes
        .windows(probe.len())
        .position(|w| w == probe)
        .expect("payload bytes in the artifact");
    bytes[at + 10] ^= 0x01;
    fs::write(&art, &bytes).unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["checksum"]);
}

/// A module that logs each call's first argument to `<root>/module.log`;
/// `install_body` is run for ArtifactInstall.
fn custom_module(dev: &SimDevice, name: &str, rollback: bool, install_body: &str) -> PathBuf {
    let dir = dev.path("custom-modules");
    fs::create_dir_all(&dir).unwrap();
    let log = dev.path("module.log");
    write_executable(
        &dir.join(name),
        &format!(
            "#!/bin/sh\necho \"$1\" >> '{log}'\ncase \"$1\" in\n\
             SupportsRollback) echo {answer} ;;\n\
             NeedsArtifactReboot) echo No ;;\n\
             ArtifactInstall) {install_body} ;;\n\
             esac\nexit 0\n",
            log = log.display(),
            answer = if rollback { "Yes" } else { "No" },
        ),
    );
    dev.set_config("ModulesPath", json!(p(&dir)));
    log
}

/// The state calls (queries left out) a module logged.
fn module_calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !matches!(*l, "SupportsRollback" | "NeedsArtifactReboot"))
        .filter(|l| !l.starts_with("Provide"))
        .map(str::to_string)
        .collect()
}

#[test]
fn module_needing_reboot_waits_for_commit_and_exits_4() {
    let dev = SimDevice::new();
    let log = custom_module(&dev, "reboot-mod", true, "true");
    fs::write(
        dev.path("custom-modules/reboot-mod"),
        fs::read_to_string(dev.path("custom-modules/reboot-mod"))
            .unwrap()
            .replace(
                "NeedsArtifactReboot) echo No",
                "NeedsArtifactReboot) echo Yes",
            ),
    )
    .unwrap();
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("reboot-1", "reboot-mod", &[&file], &[], &[]);
    let out = dev.run(&["install", "--reboot-exit-code", p(&art)]);
    assert_exit(&out, 4, "install of a payload needing a reboot");
    assert_eq!(dev.show_artifact(), "unknown");
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "reboot-1");
    let calls = module_calls(&log);
    assert!(
        !calls
            .iter()
            .any(|c| c == "ArtifactReboot" || c == "ArtifactRollbackReboot"),
        "the client rebooted: {calls:?}"
    );
    assert_eq!(calls.first().map(String::as_str), Some("Download"));
    assert!(calls.contains(&"ArtifactCommit".to_string()), "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("Cleanup"));
}

#[test]

fn module_needing_reboot_without_rollback_commits_and_exits_4() {
    // Spec §2.10: auto-commit when rollback is not supported, and exit 4
    // with --reboot-exit-code whenever a payload needs a reboot.
    let dev = SimDevice::new();
    let log = custom_module(&dev, "reboot-mod", false, "true");
    fs::write(
        dev.path("custom-modules/reboot-mod"),
        fs::read_to_string(dev.path("custom-modules/reboot-mod"))
            .unwrap()
            .replace(
                "NeedsArtifactReboot) echo No",
                "NeedsArtifactReboot) echo Yes",
            ),
    )
    .unwrap();
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("reboot-2", "reboot-mod", &[&file], &[], &[]);
    let out = dev.run(&["install", "--reboot-exit-code", p(&art)]);
    assert_eq!(dev.show_artifact(), "reboot-2", "not committed at install");
    assert_exit(
        &out,
        4,
        "auto-committed install of a payload needing a reboot",
    );
    let calls = module_calls(&log);
    assert_eq!(
        calls,
        ["Download", "ArtifactInstall", "ArtifactCommit", "Cleanup"]
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
}

#[test]
fn failing_module_is_rolled_back() {
    let dev = SimDevice::new();
    let log = custom_module(
        &dev,
        "failing-mod",
        true,
        "echo 'install broke' >&2; exit 1",
    );
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact(
        "bad-1",
        "failing-mod",
        &[&file],
        &[
            ("ArtifactRollback_Enter_01", 0),
            ("ArtifactFailure_Enter_01", 0),
        ],
        &[],
    );
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["failing-mod", "ArtifactInstall"]);
    assert_eq!(
        module_calls(&log),
        [
            "Download",
            "ArtifactInstall",
            "ArtifactRollback",
            "ArtifactFailure",
            "Cleanup"
        ]
    );
    assert_eq!(
        dev.script_log(),
        ["ArtifactRollback_Enter_01", "ArtifactFailure_Enter_01"]
    );
}

#[test]
fn failing_module_without_rollback_marks_inconsistent() {
    // Spec §2.5: no rollback support → ArtifactFailure, name _INCONSISTENT.
    let dev = SimDevice::new();
    let log = custom_module(&dev, "failing-mod", false, "exit 1");
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("bad-2", "failing-mod", &[&file], &[], &[]);
    let env = dev.env_bytes();
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "failing install");
    assert_eq!(
        module_calls(&log),
        ["Download", "ArtifactInstall", "ArtifactFailure", "Cleanup"]
    );
    assert_eq!(dev.show_artifact(), "bad-2_INCONSISTENT");
    assert!(dev.env_bytes() == env);
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
}

#[test]
fn hanging_module_is_killed_after_its_timeout() {
    let dev = SimDevice::new();
    let pids = dev.path("hang-pids");
    let log = custom_module(
        &dev,
        "hanging-mod",
        true,
        &format!("sleep 120 & echo \"$$ $!\" > '{}'; wait", pids.display()),
    );
    dev.set_config("ModuleTimeoutSeconds", json!(2));
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("hang-1", "hanging-mod", &[&file], &[], &[]);
    let before = snapshot(&dev);
    let start = Instant::now();
    let out = dev.run_with(&["install", p(&art)], &[], Duration::from_secs(30));
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "install took {took:?} with ModuleTimeoutSeconds=2"
    );
    assert!(took >= Duration::from_secs(2), "finished in {took:?}");
    assert_refused(&dev, &before, &out, &["hanging-mod", "timed out"]);
    assert_eq!(
        module_calls(&log),
        [
            "Download",
            "ArtifactInstall",
            "ArtifactRollback",
            "ArtifactFailure",
            "Cleanup"
        ]
    );
    // The module and what it started are gone.
    let text = fs::read_to_string(&pids).expect("the module's pids");
    for pid in text.split_whitespace() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "process {pid} of the hung module still runs");
    }
}

/// A process exists and is not a zombie.
fn alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

#[test]
fn non_executable_state_script_is_an_error() {
    let dev = SimDevice::new();
    let script = dev.script(&dev.rootfs_scripts, "Download_Enter_01", 0);
    dev.script(&dev.rootfs_scripts, "Download_Error_01", 0);
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["Download_Enter_01", "executable"]);
    assert_eq!(dev.script_log(), ["Download_Error_01"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn signature_required_when_a_verify_key_is_configured() {
    let dev = SimDevice::new();
    let keys = dev.new_build_dir("keys");
    let (good_key, good_pub) = ec_key_pair(&keys, "good");
    let (wrong_key, _) = ec_key_pair(&keys, "wrong");
    dev.set_config("ArtifactVerifyKey", json!(p(&good_pub)));

    let unsigned = dev.write_rootfs_artifact("unsigned-1", PAYLOAD, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&unsigned)]);
    assert_refused(&dev, &before, &out, &["sign"]);

    let wrong = dev.write_rootfs_artifact("wrong-1", PAYLOAD, &[], &["-k", p(&wrong_key)]);
    let out = dev.run(&["install", p(&wrong)]);
    assert_refused(&dev, &before, &out, &["sign"]);

    let signed = dev.write_rootfs_artifact("signed-1", PAYLOAD, &[], &["-k", p(&good_key)]);
    let out = dev.run(&["install", "--reboot-exit-code", p(&signed)]);
    assert_exit(&out, 4, "signed install");
    assert_partition_holds(&dev, 3, &signed);
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "signed-1");

    // Without a key configured, signed artifacts install.
    dev.remove_config("ArtifactVerifyKey");
    let other = dev.write_rootfs_artifact("signed-2", PAYLOAD, &[], &["-k", p(&wrong_key)]);
    assert_exit(&dev.run(&["install", p(&other)]), 0, "signed, no key");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "signed-2");
}

#[test]
fn canary_mismatch_is_refused_before_writing() {
    let dev = SimDevice::new();
    dev.set_env(&[("mender_check_saveenv_canary", "1")]);
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["canary"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    // With the canary the bootloader leaves, it installs.
    dev.set_env(&[("mender_saveenv_canary", "1")]);
    assert_exit(
        &dev.run(&["install", p(&art)]),
        0,
        "install with the canary",
    );
    assert_partition_holds(&dev, 3, &art);
}

// ---------------------------------------------------------------------------
// 4. Command line
// ---------------------------------------------------------------------------

/// Serves one HTTP/1.1 request on 127.0.0.1 (ephemeral port): `body` with
/// 200 for path `/x.mender`, 404 for any other path. Returns the base URL
/// and the thread (which yields the request line). Gives up after 30 s.
fn serve_once(body: Vec<u8>) -> (String, JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return None,
            }
        };
        stream.set_nonblocking(false).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&request).into_owned();
        let line = text.lines().next().unwrap_or_default().to_string();
        let found = line.starts_with("GET /x.mender ");
        let (status, body) = if found {
            ("200 OK", body)
        } else {
            ("404 Not Found", b"not found\n".to_vec())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
        let _ = stream.flush();
        Some(line)
    });
    (url, handle)
}

#[test]
fn install_from_http_url() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let (url, server) = serve_once(fs::read(&art).unwrap());
    let install = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        a("ArtifactInstall", "Leave"),
    ]);
    step(
        &dev,
        &["install", "--reboot-exit-code", &format!("{url}/x.mender")],
        4,
        &install,
    );
    assert_eq!(
        server.join().unwrap().as_deref(),
        Some("GET /x.mender HTTP/1.1")
    );
    assert_env(&dev, 3, 1);
    assert_partition_holds(&dev, 3, &art);
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(
        &dev,
        &["commit"],
        0,
        &concat(&[a("ArtifactCommit", "Enter"), a("ArtifactCommit", "Leave")]),
    );
    assert_provides(&dev, &rootfs_provides("release-2", &art));
}

#[test]
fn install_from_http_404_is_refused() {
    let dev = SimDevice::new();
    let (url, server) = serve_once(Vec::new());
    let before = snapshot(&dev);
    let missing = format!("{url}/missing.mender");
    let out = dev.run(&["install", &missing]);
    assert_refused(&dev, &before, &out, &["404"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    assert!(
        server.join().unwrap().is_some(),
        "the server saw no request"
    );
}

#[test]
fn links_named_mender_and_mender_update_take_the_same_commands() {
    let dev = SimDevice::new();
    for (i, name) in ["mender", "mender-update"].iter().enumerate() {
        let link = dev.path(name);
        std::os::unix::fs::symlink(BIN, &link).unwrap();
        let run = |args: &[&str]| {
            let mut cmd = dev.command_as(&link);
            cmd.args(args);
            run_bounded(&mut cmd, DEFAULT_TIMEOUT)
        };
        let previous = if i == 0 { "unknown" } else { "via-mender" };
        let out = run(&["show-artifact"]);
        assert_exit(&out, 0, &format!("{name} show-artifact"));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), previous);

        let artifact_name = format!("via-{name}");
        let art = dev.write_rootfs_artifact(&artifact_name, PAYLOAD, &[], &[]);
        let out = run(&["install", "--reboot-exit-code", p(&art)]);
        assert_exit(&out, 4, &format!("{name} install"));
        dev.reboot();
        let out = run(&["commit"]);
        assert_exit(&out, 0, &format!("{name} commit"));
        let out = run(&["show-artifact"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), artifact_name);
        let out = run(&["commit"]);
        assert_exit(&out, 2, &format!("{name} commit with nothing pending"));
    }
}

#[test]
fn version_flag_prints_a_version() {
    let mut cmd = Command::new(BIN);
    cmd.arg("--version");
    let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
    assert_exit(&out, 0, "--version");
    let text = String::from_utf8_lossy(&out.stdout);
    let has_version = text.split_whitespace().any(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() >= 2 && parts[..2].iter().all(|p| p.parse::<u32>().is_ok())
    });
    assert!(has_version, "no version number in {text:?}");
}

#[test]
fn log_file_receives_the_logs() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let log = dev.path("client.log");
    let out = dev.run(&[
        "--log-level",
        "info",
        "--log-file",
        p(&log),
        "install",
        p(&art),
    ]);
    assert_exit(&out, 0, "install with --log-file");
    let text = fs::read_to_string(&log).expect("the log file");
    assert!(
        text.contains("release-2") && text.contains(p(&dev.part_b)),
        "the install is not logged in the log file:\n{text}"
    );
    let err = stderr(&out);
    assert!(
        !err.contains(p(&dev.part_b)),
        "log records went to stderr too:\n{err}"
    );
}

#[test]
fn deployment_log_holds_json_lines_with_script_stderr() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact(
        "release-2",
        PAYLOAD,
        &[("ArtifactInstall_Enter_01", 1)],
        &[],
    );
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "failing install");
    let path = dev.data.join("deployments.0001.standalone.log");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["level", "message", "timestamp"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        messages.push(v["message"].as_str().unwrap().to_string());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("script ArtifactInstall_Enter_01 ran")),
        "the failing script's stderr is not in the deployment log:\n{text}"
    );
}
