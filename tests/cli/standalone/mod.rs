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
//!
//! One module per part above (`golden_orderings`, `update_modules`,
//! `bad_input`, `command_line`); the helpers they share are here.

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

mod bad_input;
mod command_line;
mod golden_orderings;
mod update_modules;

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

/// The scripts a successful `install` runs, in order.
fn install_scripts() -> Vec<&'static str> {
    concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        a("ArtifactInstall", "Leave"),
    ])
}

/// The scripts a successful `commit` runs, in order.
fn commit_scripts() -> Vec<&'static str> {
    concat(&[a("ArtifactCommit", "Enter"), a("ArtifactCommit", "Leave")])
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
    one_error_line(out, needles);
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
