//! Side by side with the reference client: every scenario below runs once
//! with the Mender client 3.4 (`/usr/bin/mender`, Debian's mender-client) and
//! once with `mender-rs`, in standalone mode, on identical fresh simulated
//! devices, and the two transcripts are compared step by step: the exit code
//! of every command, the exact list of state scripts that ran, `show-artifact`
//! after every step, the boot environment (`mender_boot_part`,
//! `mender_boot_part_hex`, `upgrade_available`; `bootcount` is shown but not
//! compared), which partition holds the new image, and `show-provides` at the
//! end.
//!
//! The simulated device:
//! - RootfsPartA/B are two loop devices over 8 MiB files (mender 3.4 refuses
//!   regular files: "not a block device"). Their numbers (`/dev/loopN`) are
//!   the partition numbers both clients write to `mender_boot_part`.
//! - The U-Boot environment is a 16 KiB file named by a private
//!   `fw_env.config`: mender-rs reads it natively (`BootEnvConfig`), mender 3.4
//!   through `fw_printenv`/`fw_setenv` wrappers that add `-c <that file>`
//!   (`BootUtilitiesGetNextActivePart` / `BootUtilitiesSetActivePart`). The
//!   harness itself reads and writes it with `fw_printenv`/`fw_setenv` only.
//! - mender 3.4 hard-codes `/etc/mender` for `artifact_info` and for the
//!   rootfs state scripts (`RootfsScriptsPath` in the configuration file is
//!   ignored). Rather than touching the real `/etc/mender`, every client
//!   command runs in a private mount namespace (`unshare --mount`) in which a
//!   per-device folder is bind-mounted on `/etc/mender`; mender-rs gets the
//!   same folder through `RootfsScriptsPath`. Both clients run in the same
//!   sandbox.
//! - Neither loop device is mounted on `/`, so both clients must take the
//!   active partition from `mender_boot_part`. mender 3.4 only does that when
//!   no device node in `/dev` carries the device number of `/`; on these
//!   machines `/` is a real block device (`/dev/vda`), which mender 3.4 would
//!   take as the active partition and then refuse to install ("Active root
//!   partition matches neither RootfsPartA nor RootfsPartB"). The sandbox
//!   therefore also bind-mounts `/dev/null` over that node (in the private
//!   namespace only).
//! - The same artifact file (written by `mender-artifact`) is installed by
//!   both clients. Its state scripts, one for every Artifact state and action,
//!   append their name to a log; a scenario makes one of them fail by
//!   creating a marker file named after it. `Download_*` (and `Idle_*`,
//!   `Sync_*`, which standalone mode must not run) scripts sit in the rootfs
//!   scripts folder.
//! - A "reboot" is simulated by the harness with the bootloader's rule (as in
//!   `scripts/demo`): with `upgrade_available=1`, `bootcount` 0 becomes 1 (the
//!   update is tried); a second boot without a commit switches back.
//!
//! The test requires root (loop devices, mount namespaces) and fails, rather
//! than skips, without it. Loop devices are always detached (guard with
//! `Drop`), every child process is bounded by a timeout.
//!
//! Known differences are listed in [`KNOWN`]: the default test fails on any
//! other difference; the `#[ignore]`d `strict_*` tests fail on those too.
//!
//! What mender 3.4 does on this rig (measured):
//! - `install` needs a current artifact name: with an empty database and no
//!   `/etc/mender/artifact_info` it fails (exit 1) before writing anything.
//! - The `mender_boot_part` fallback makes the partition it names the active
//!   one, so right after `install` (`mender_boot_part` = the new partition)
//!   mender 3.4 already counts the new partition as running. It does not
//!   matter for `commit`, which in 3.4 only checks `upgrade_available=1`
//!   (so it commits without a reboot, fallback or not); `rollback` before or
//!   after the reboot switches back to the old partition either way.
//! - `fw_setenv -s` of libubootenv 0.3.2 only takes `name=value` lines
//!   (mender 3.4 probes for the separator); `name value` lines are silently
//!   ignored.
//! - `bootcount`: both clients set it to 0 on install and never touch it
//!   otherwise; it differs only where the commit differs (scenario 1b).
//!
//! Here: the comparison of the two transcripts and the tests. Helpers:
//! `child` (bounded child processes), `loop_devices`, `rig` (one fresh
//! device per run), `scenarios` (what each run does and observes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// Helpers the cases share.
mod child;
#[cfg(feature = "writer")]
mod chunked;
mod loop_devices;
mod rig;
mod scenarios;

use child::*;
use loop_devices::*;
use rig::*;
use scenarios::*;

const REFERENCE: &str = "/usr/bin/mender";
const OURS: &str = env!("CARGO_BIN_EXE_mender-rs");

const DEVICE_TYPE: &str = "test-device";
const INSTALLED_NAME: &str = "release-1";
const PAYLOAD_LEN: usize = 3 << 20;
const PARTITION_LEN: usize = 8 << 20;
const ENV_LEN: usize = 0x4000;

/// Limit for one client command (scripts included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);
/// Limit for a helper tool (losetup, fw_setenv, mender-artifact...).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `"$@"` (after the first argument) in a private mount namespace where
/// the folder given first is mounted on /etc/mender and device nodes carrying
/// the device number of / are hidden behind /dev/null.
const SANDBOX: &str = r#"set -e
mount --bind "$1" /etc/mender
shift
root=$(stat -c %Hd:%Ld /)
for node in /dev/*; do
  if [ -b "$node" ] && [ ! -L "$node" ] && [ "$(stat -c %Hr:%Lr "$node")" = "$root" ]; then
    mount --bind /dev/null "$node"
  fi
done
exec "$@"
"#;

const ROOTFS_SCRIPTS: [&str; 7] = [
    "Download_Enter_01",
    "Download_Leave_01",
    "Download_Error_01",
    "Idle_Enter_01",
    "Idle_Leave_01",
    "Sync_Enter_01",
    "Sync_Leave_01",
];

use crate::support::canonical_scripts::ARTIFACT_STATES;

// ---------------------------------------------------------------------------
// Comparison

/// A difference found and accepted for now (the default test passes with
/// it; its `strict_*` test, ignored, fails while it exists). Patterns are
/// exact, or `*` for anything.
struct Known {
    tag: &'static str,
    scenario: &'static str,
    step: &'static str,
    field: &'static str,
    reference: &'static str,
    ours: &'static str,
}

const KNOWN: &[Known] = &[
    // mender 3.4's standalone commit only checks upgrade_available=1, so it
    // commits an update that was never booted (exit 0, ArtifactCommit
    // scripts, upgrade_available=0: the bootloader then boots the new
    // partition with no fallback). mender-rs refuses ("the device has not
    // rebooted into the update yet", exit 1) while bootcount is 0; after the
    // reboot it tries the update (bootcount 1) and its show-provides still
    // shows the old state.
    Known {
        tag: "commit_before_reboot",
        scenario: "1b-install-commit-without-reboot",
        step: "*",
        field: "*",
        reference: "*",
        ours: "*",
    },
];

fn known(
    scenario: &str,
    step: &str,
    field: &str,
    reference: &str,
    ours: &str,
) -> Option<&'static str> {
    let m = |pattern: &str, value: &str| pattern == "*" || pattern == value;
    KNOWN
        .iter()
        .find(|k| {
            m(k.scenario, scenario)
                && m(k.step, step)
                && m(k.field, field)
                && m(k.reference, reference)
                && m(k.ours, ours)
        })
        .map(|k| k.tag)
}

struct Difference {
    scenario: &'static str,
    step: String,
    field: String,
    reference: String,
    ours: String,
    known: Option<&'static str>,
}

fn compare(
    scenario: &Scenario,
    reference: &[Observation],
    ours: &[Observation],
) -> Vec<Difference> {
    let mut found = Vec::new();
    for (r, o) in reference.iter().zip(ours) {
        assert_eq!(r.step, o.step, "the transcripts are out of step");
        for ((field, rv), (field_o, ov)) in r.fields.iter().zip(&o.fields) {
            assert_eq!(field, field_o);
            if rv != ov {
                let known = known(scenario.id, &r.step, field, rv, ov);
                found.push(Difference {
                    scenario: scenario.id,
                    step: r.step.clone(),
                    field: (*field).to_string(),
                    reference: rv.clone(),
                    ours: ov.clone(),
                    known,
                });
            }
        }
        if r.fields.len() != o.fields.len() {
            let extra = |v: &[(&str, String)]| {
                v.iter()
                    .skip(r.fields.len().min(o.fields.len()))
                    .map(|(f, x)| format!("{f}: {x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            found.push(Difference {
                scenario: scenario.id,
                step: r.step.clone(),
                field: "extra".into(),
                reference: extra(&r.fields),
                ours: extra(&o.fields),
                known: None,
            });
        }
    }
    found
}

fn transcript(title: &str, reference: &[Observation], ours: &[Observation]) -> String {
    let mut out = format!("\n=== {title}\n");
    for (r, o) in reference.iter().zip(ours) {
        let _ = writeln!(out, "  {}", r.step);
        for ((field, rv), (_, ov)) in r.fields.iter().zip(&o.fields) {
            let mark = if rv == ov { " " } else { "≠" };
            let _ = writeln!(out, "   {mark} {field:<20} reference: {rv}");
            if rv != ov {
                let _ = writeln!(out, "     {:<20} ours:      {ov}", "");
            }
        }
        if !r.bootcount.is_empty() {
            let mark = if r.bootcount == o.bootcount { " " } else { "~" };
            let _ = writeln!(
                out,
                "   {mark} {:<20} reference: {}, ours: {} (not compared)",
                "bootcount", r.bootcount, o.bootcount
            );
        }
        for (who, note) in [("reference", &r.note), ("ours", &o.note)] {
            if !note.is_empty() {
                let _ = writeln!(out, "     {who} said: {note}");
            }
        }
    }
    out
}

fn table(differences: &[Difference]) -> String {
    let mut out = String::from(
        "\n| scenario | step | field | reference (mender 3.4) | ours (mender-rs) | known |\n|---|---|---|---|---|---|\n",
    );
    for d in differences {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            d.scenario,
            d.step,
            d.field,
            d.reference,
            d.ours,
            d.known.unwrap_or("NEW")
        );
    }
    out
}

/// Runs the scenarios named (all when none) with both clients. Fails on
/// differences not in [`KNOWN`], and on the known ones tagged `strict`.
fn check(ids: &[&str], strict: Option<&str>) {
    let rig = Rig::new();
    let started = Instant::now();
    let mut all = Vec::new();
    for scenario in SCENARIOS
        .iter()
        .filter(|s| ids.is_empty() || ids.contains(&s.id))
    {
        let reference = play(&rig, scenario, Client::Reference);
        let ours = play(&rig, scenario, Client::Ours);
        println!(
            "{}",
            transcript(
                &format!("{}: {}", scenario.id, scenario.title),
                &reference,
                &ours
            )
        );
        all.extend(compare(scenario, &reference, &ours));
    }
    println!(
        "\npartitions: A = {}, B = {}; {} scenario(s) in {:.1} s",
        rig.part_a.display(),
        rig.part_b.display(),
        if ids.is_empty() {
            SCENARIOS.len()
        } else {
            ids.len()
        },
        started.elapsed().as_secs_f64()
    );
    if all.is_empty() {
        println!("no differences");
    } else {
        println!("{}", table(&all));
    }
    let failing: Vec<&Difference> = all
        .iter()
        .filter(|d| d.known.is_none() || d.known == strict)
        .collect();
    assert!(
        failing.is_empty(),
        "{} difference(s) with mender 3.4{}: see the table above",
        failing.len(),
        strict.map_or(String::new(), |tag| format!(" (new, or known as `{tag}`)"))
    );
}

#[test]
fn reference_client_matches() {
    check(&[], None);
}

#[test]
#[ignore = "deliberate difference: commit before the reboot: mender 3.4 commits (exit 0), \
            mender-rs refuses (exit 1) until the update has been booted"]
fn strict_commit_before_reboot() {
    check(
        &["1b-install-commit-without-reboot"],
        Some("commit_before_reboot"),
    );
}
