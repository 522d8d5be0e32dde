//! What every refused install of the hardening families must show, in one
//! place: exit 1, one error line naming what was wrong, and the boot
//! environment, both partitions, the data directory, the provides and the
//! artifact name as they were (docs: README "Limits"). Used by
//! `artifact_metadata`, `compression` and `config`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::device::*;

/// Peak RSS a refused install may reach (KiB): the debug binary alone needs
/// a few MiB; before the limits a 1 GiB xz dictionary cost over 1 GiB.
pub(crate) const REFUSED_RSS_KIB: u64 = 48 << 10;

/// What must not change when an install is refused.
pub(crate) struct Snapshot {
    env: Vec<u8>,
    part_a: String,
    part_b: String,
    data_files: Vec<(PathBuf, Vec<u8>)>,
    provides: String,
    artifact: String,
}

pub(crate) fn snapshot(dev: &SimDevice) -> Snapshot {
    let mut data_files = Vec::new();
    for entry in fs::read_dir(&dev.data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = fs::read(&path).unwrap();
            data_files.push((path, bytes));
        }
    }
    data_files.sort();
    Snapshot {
        env: dev.env_bytes(),
        part_a: sha256_file(&dev.part_a),
        part_b: sha256_file(&dev.part_b),
        data_files,
        provides: dev.provides_text(),
        artifact: dev.show_artifact(),
    }
}

/// Exit 1, one error line naming every needle (case-insensitive), and the
/// boot environment, both partition files and the data directory's files
/// byte for byte as before; no update left pending.
#[track_caller]
pub(crate) fn assert_refused(dev: &SimDevice, before: &Snapshot, out: &Output, needles: &[&str]) {
    assert_eq!(exit_code(out), 1, "{}", describe(out));
    one_error_line(out, needles);
    assert!(
        dev.env_bytes() == before.env,
        "the boot environment changed"
    );
    assert_eq!(
        sha256_file(&dev.part_a),
        before.part_a,
        "partition A changed"
    );
    assert_eq!(
        sha256_file(&dev.part_b),
        before.part_b,
        "partition B changed"
    );
    // Files that were there are unchanged; the engine may add only its
    // lock, an empty store and the deployment log of the refused attempt.
    let after = snapshot(dev);
    for (path, bytes) in &before.data_files {
        let now = after.data_files.iter().find(|(p, _)| p == path);
        assert!(
            now.is_some_and(|(_, b)| same_content(path, b, bytes)),
            "{} changed",
            path.display()
        );
    }
    for (path, _) in &after.data_files {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            before.data_files.iter().any(|(p, _)| p == path)
                || name == "mender-rs.lock"
                || name == "mender-rs-store.json"
                || name.starts_with("deployments."),
            "new file {}",
            path.display()
        );
    }
    assert_eq!(dev.provides_text(), before.provides, "provides changed");
    assert_eq!(
        dev.show_artifact(),
        before.artifact,
        "artifact name changed"
    );
    let commit = dev.run(&["commit"]);
    assert_eq!(
        exit_code(&commit),
        2,
        "an update was left pending: {}",
        describe(&commit)
    );
    assert!(
        dev.env_bytes() == before.env,
        "the boot environment changed"
    );
}

/// Whether a data-directory file holds what it held: byte for byte, except
/// the store, which the engine may write again in its own serialization
/// (a store written by hand, say) as long as it holds the same JSON with
/// no update in progress.
fn same_content(path: &Path, now: &[u8], before: &[u8]) -> bool {
    if now == before {
        return true;
    }
    if path.file_name().is_none_or(|n| n != "mender-rs-store.json") {
        return false;
    }
    let parse = |bytes: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let object = v.as_object_mut()?;
        if object.get("update").is_some_and(|u| u.is_null()) {
            object.remove("update");
        }
        Some(v)
    };
    parse(now).is_some_and(|n| Some(n) == parse(before))
}

/// Runs `install ARTIFACT` under /usr/bin/time; returns the output, the
/// peak RSS in KiB and the elapsed time.
pub(crate) fn install_measured(dev: &SimDevice, artifact: &Path) -> (Output, u64, Duration) {
    let rss_file = dev.path("rss.txt");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-o")
        .arg(&rss_file)
        .args(["-f", "%M", BIN, "--config"])
        .arg(&dev.config_file)
        .arg("--data")
        .arg(&dev.data)
        .arg("install")
        .arg(artifact);
    let start = Instant::now();
    let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
    let elapsed = start.elapsed();
    let text = fs::read_to_string(&rss_file).expect("time output");
    let rss = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no RSS in {text:?}"));
    (out, rss, elapsed)
}

/// Installs `artifact` and expects [`assert_refused`], within
/// [`REFUSED_RSS_KIB`] of memory and 20 seconds.
#[track_caller]
pub(crate) fn assert_install_refused_cheaply(
    dev: &SimDevice,
    before: &Snapshot,
    artifact: &Path,
    needles: &[&str],
) {
    let (out, rss, elapsed) = install_measured(dev, artifact);
    assert_refused(dev, before, &out, needles);
    assert!(
        rss < REFUSED_RSS_KIB,
        "peak RSS {rss} KiB: {}",
        describe(&out)
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}
