//! Going back and forth (`docs/takeover.md`): a device mender-rs took
//! over runs a Mender client again, which writes its store; the next
//! mender-rs start takes the device over again from what Mender wrote,
//! replacing what our store says, and keeps our old store as
//! `mender-rs-store.replaced.json`. Our own writes to the Mender store
//! (the hand back) are never mistaken for Mender's. Mender's writes are
//! made here with the same LMDB library, without our stamp, in the JSON
//! 4.x writes; `reference.rs` does the same with the real Mender 3.4.

use super::*;

const REPLACED: &str = "mender-rs-store.replaced.json";

/// A device Mender had at `release-1`, taken over by a first command.
fn taken_over_at_release_1() -> SimDevice {
    let dev = SimDevice::new();
    mender_store(
        &dev.data,
        &[
            ("artifact-name", "release-1"),
            (
                "artifact-provides",
                r#"{"rootfs-image.version":"release-1"}"#,
            ),
        ],
    );
    assert_eq!(dev.show_artifact(), "release-1");
    assert_taken_over(&dev);
    dev
}

/// What a Mender client writes to the store we handed back when it
/// installed `release-3` and waits for its commit after the reboot into
/// it (the boot environment is set first: `bootenv` is a command, which
/// would take the device over itself).
fn mender_installs_release_3(dev: &SimDevice) {
    dev.set_env(&BOOTED_UPDATE);
    mender_store(
        &dev.data,
        &[
            ("artifact-name", "release-2"),
            (
                "artifact-provides",
                r#"{"rootfs-image.version":"release-2"}"#,
            ),
            (
                "standalone-state",
                r#"{"Version":2,"ArtifactName":"release-3","ArtifactGroup":"","PayloadTypes":["rootfs-image"],"ArtifactTypeInfoProvides":{"rootfs-image.version":"release-3"},"ArtifactClearsProvides":["rootfs-image.*"],"InState":"Before_ArtifactCommit_Enter","Failed":false,"RolledBack":false}"#,
            ),
        ],
    );
}

fn ours(dev: &SimDevice) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dev.data.join(OUR_STORE)).unwrap()).unwrap()
}

fn last_write_is_ours(dev: &SimDevice) -> bool {
    MenderStore::open_read_only(&store_path(&dev.data))
        .unwrap()
        .last_write_is_ours()
        .unwrap()
}

#[test]
fn our_own_writes_are_not_taken_for_mender_s() {
    let dev = taken_over_at_release_1();
    assert!(last_write_is_ours(&dev));
    // A standalone update of ours, installed and committed: the hand back
    // after the commit is ours too.
    let artifact = dev.write_rootfs_artifact("release-2", 1 << 20, &[], &[]);
    dev.ok(&["install", artifact.to_str().unwrap()]);
    dev.reboot();
    dev.ok(&["commit"]);
    assert!(last_write_is_ours(&dev));
    for _ in 0..3 {
        assert_eq!(dev.show_artifact(), "release-2");
    }
    assert!(!dev.data.join(REPLACED).exists());
    assert_eq!(read_back(&dev.data).name.as_deref(), Some("release-2"));
}

#[test]
fn a_store_mender_wrote_since_is_taken_over_again() {
    let dev = taken_over_at_release_1();
    let before = ours(&dev);
    mender_installs_release_3(&dev);
    assert!(!last_write_is_ours(&dev));
    let out = dev.run(&["show-artifact"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "release-2");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taking the device over again"),
        "{}",
        describe(&out)
    );
    // Our old store is kept; Mender's is kept as the one taken over, and
    // the hand back is ours again.
    let replaced: serde_json::Value =
        serde_json::from_slice(&fs::read(dev.data.join(REPLACED)).unwrap()).unwrap();
    assert_eq!(replaced, before);
    assert_taken_over(&dev);
    assert!(last_write_is_ours(&dev));
    // Mender's pending update is ours to commit now.
    assert_eq!(ours(&dev)["update"]["artifact"]["name"], "release-3");
    dev.ok(&["commit"]);
    assert_eq!(
        dev.provides(),
        pairs(&[
            ("artifact_name", "release-3"),
            ("rootfs-image.version", "release-3")
        ])
    );
    assert_eq!(read_back(&dev.data).name.as_deref(), Some("release-3"));
    // Once: the next start finds its own write.
    let replaced = fs::read(dev.data.join(REPLACED)).unwrap();
    assert_eq!(dev.show_artifact(), "release-3");
    assert_eq!(fs::read(dev.data.join(REPLACED)).unwrap(), replaced);
}

/// Our update in flight is replaced by what Mender says: here Mender
/// committed the update itself (no standalone state left).
#[test]
fn our_update_in_flight_gives_way_to_what_mender_committed() {
    let dev = taken_over_at_release_1();
    let artifact = dev.write_rootfs_artifact("release-2", 1 << 20, &[], &[]);
    dev.ok(&["install", artifact.to_str().unwrap()]);
    dev.reboot();
    assert!(ours(&dev)["update"].is_object());
    // Mender on the new partition commits release-2.
    dev.set_env(&[("upgrade_available", "0")]);
    mender_store(
        &dev.data,
        &[
            ("artifact-name", "release-2"),
            (
                "artifact-provides",
                r#"{"rootfs-image.version":"release-2"}"#,
            ),
        ],
    );
    assert_eq!(dev.show_artifact(), "release-2");
    assert!(ours(&dev)["update"].is_null(), "{}", ours(&dev));
    assert_eq!(exit_code(&dev.run(&["commit"])), 2, "nothing to commit");
    let replaced: serde_json::Value =
        serde_json::from_slice(&fs::read(dev.data.join(REPLACED)).unwrap()).unwrap();
    assert!(replaced["update"].is_object(), "{replaced}");
}

/// A power loss after each step of taking the device over again: our old
/// store copied (1), ours written with the rename pending (2), the hand
/// back built beside Mender's store (`mender-store:1`), the hand back in
/// its place (3), the flag cleared (4). The next command finishes it; the
/// copy is of our store as it was before; `mender-store` is Mender's or
/// ours at every cut, never missing; the update is committed once.
#[cfg(feature = "crash-injection")]
#[test]
fn power_loss_at_each_step_of_taking_over_again_resumes() {
    let cuts = ["step:1", "step:2", "mender-store:1", "step:3", "step:4"];
    for cut in cuts {
        let dev = taken_over_at_release_1();
        let before = ours(&dev);
        mender_installs_release_3(&dev);
        let out = dev.run_with(
            &["show-artifact"],
            &[("MENDER_RS_CRASH_AT", cut)],
            DEFAULT_TIMEOUT,
        );
        assert_ne!(exit_code(&out), 0, "{cut}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("crash injection"),
            "{cut}: {}",
            describe(&out)
        );
        let now = ours(&dev);
        // Mender's file still in place: either ours is as before (it is
        // read again), or ours says it is a leftover to rename.
        assert!(store_path(&dev.data).exists(), "{cut}: no Mender store");
        assert!(
            now == before || now["mender_store_rename_pending"] == true || last_write_is_ours(&dev),
            "{cut}: {now}"
        );
        assert_eq!(dev.show_artifact(), "release-2", "{cut}");
        assert_taken_over(&dev);
        assert!(last_write_is_ours(&dev), "{cut}");
        let replaced: serde_json::Value =
            serde_json::from_slice(&fs::read(dev.data.join(REPLACED)).unwrap()).unwrap();
        assert_eq!(replaced, before, "{cut}");
        dev.ok(&["commit"]);
        assert_eq!(dev.show_artifact(), "release-3", "{cut}");
        assert_eq!(read_back(&dev.data).name.as_deref(), Some("release-3"));
        assert_eq!(exit_code(&dev.run(&["commit"])), 2, "{cut}");
    }
}

/// A 4.x/5.x command run on a device mender-rs updated, with no Mender
/// store yet, creates one that says nothing (no keys, or `artifact-name`
/// `unknown`: checked by hand with 5.1.0's `show-artifact`). That is not
/// the device running Mender: our update in flight goes on, and the name
/// `unknown` is never adopted.
#[test]
fn a_store_mender_created_without_knowing_anything_changes_nothing() {
    for entries in [&[][..], &[("artifact-name", "unknown")][..]] {
        let dev = SimDevice::new();
        let artifact = dev.write_rootfs_artifact("release-2", 1 << 20, &[], &[]);
        dev.ok(&["install", artifact.to_str().unwrap()]);
        mender_store(&dev.data, entries);
        assert!(!last_write_is_ours(&dev));
        dev.reboot();
        dev.ok(&["commit"]);
        assert_eq!(dev.show_artifact(), "release-2", "{entries:?}");
        assert!(!dev.data.join(REPLACED).exists(), "{entries:?}");
    }
}
