//! Take-over from the Mender client and hand back (`docs/takeover.md`),
//! on Mender stores written here with the same LMDB library, in the exact
//! JSON 3.x and 4.x/5.x write (`mender-4-5-and-store.md` 2.2-2.4 and 2.8
//! in the shared spec): the 3.x quirks (literal `null`, empty group,
//! missing keys), `standalone-state` v1 and v2, a managed `state`, a
//! damaged file, and power loss at each take-over step. The same
//! scenarios with stores written by the real Mender 3.4 client are in
//! [`reference`].

mod back_and_forth;
mod reference;
mod states;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use mender_rs::mender_store::model::Installed;
use mender_rs::mender_store::{MenderStore, store_path};
use mender_rs::sys::lmdb::Change;

use crate::support::device::*;

const TAKEN_OVER: &str = "mender-store.taken-over";
const OUR_STORE: &str = "mender-rs-store.json";

/// Writes a Mender store in `data` with these keys and values.
fn mender_store(data: &Path, entries: &[(&str, &str)]) {
    let store = MenderStore::open_for_writing(&store_path(data)).expect("create the Mender store");
    let changes: Vec<Change<'_>> = entries
        .iter()
        .map(|(k, v)| Change::Put(k.as_bytes(), v.as_bytes()))
        .collect();
    store.write_raw(&changes).expect("write the Mender store");
}

fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The installed software the Mender store in `data` holds now.
fn read_back(data: &Path) -> Installed {
    MenderStore::open_read_only(&store_path(data))
        .expect("open the Mender store")
        .read()
        .expect("read the Mender store")
        .installed
}

/// Only our store claims the device: Mender's file and its lock file were
/// renamed, ours exists. A `mender-store` written since is the hand back
/// and holds no update, except, for a deployment taken over after its
/// reboot, the record `after-rollback-reboot` with which the Mender client
/// of the previous partition reports its failure should the bootloader go
/// back there (`docs/takeover.md`, "The failure path").
#[track_caller]
fn assert_taken_over(dev: &SimDevice) {
    if store_path(&dev.data).exists() {
        let contents = MenderStore::open_read_only(&store_path(&dev.data))
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(contents.standalone, None);
        if let Some(record) = contents.managed {
            let ours: serde_json::Value =
                serde_json::from_slice(&fs::read(dev.data.join(OUR_STORE)).unwrap()).unwrap();
            assert_eq!(record.name, "after-rollback-reboot");
            assert_eq!(ours["update"]["phase"], "artifact-reboot", "{ours}");
            assert_eq!(ours["taken_over_deployment"], record.deployment_id());
        }
    } else {
        assert!(!dev.data.join("mender-store-lock").exists());
    }
    assert!(dev.data.join(TAKEN_OVER).exists(), "no {TAKEN_OVER}");
    assert!(dev.data.join(format!("{TAKEN_OVER}-lock")).exists());
    assert!(dev.data.join(OUR_STORE).exists());
}

#[test]
fn a_3x_store_with_null_provides_and_empty_group_is_taken_over() {
    let dev = SimDevice::new();
    mender_store(
        &dev.data,
        &[
            ("artifact-name", "release-1"),
            ("artifact-group", ""),
            ("artifact-provides", "null"),
        ],
    );
    assert_eq!(dev.provides(), pairs(&[("artifact_name", "release-1")]));
    assert_taken_over(&dev);
    // Handed back at once, without the group or the `null`.
    assert_eq!(read_back(&dev.data).provides(), dev.provides());
    // Lost (or never there): the next start writes it again.
    fs::remove_file(store_path(&dev.data)).unwrap();
    assert_eq!(dev.show_artifact(), "release-1");
    assert_eq!(read_back(&dev.data).provides(), dev.provides());
    // Once: a later start reads our store only.
    let before = fs::read(dev.data.join(OUR_STORE)).unwrap();
    assert_eq!(dev.show_artifact(), "release-1");
    assert_eq!(fs::read(dev.data.join(OUR_STORE)).unwrap(), before);
}

#[test]
fn a_4x_store_with_group_and_provides_is_taken_over_by_every_command() {
    for command in [&["show-artifact"][..], &["commit"], &["rollback"]] {
        let dev = SimDevice::new();
        mender_store(
            &dev.data,
            &[
                ("artifact-name", "release-1"),
                ("artifact-group", "fleet-a"),
                (
                    "artifact-provides",
                    r#"{"rootfs-image.checksum":"c1","rootfs-image.version":"release-1"}"#,
                ),
            ],
        );
        let out = dev.run(command);
        assert!(
            matches!(exit_code(&out), 0 | 2),
            "{command:?}: {}",
            describe(&out)
        );
        assert_taken_over(&dev);
        assert_eq!(
            dev.provides(),
            pairs(&[
                ("artifact_name", "release-1"),
                ("artifact_group", "fleet-a"),
                ("rootfs-image.checksum", "c1"),
                ("rootfs-image.version", "release-1"),
            ])
        );
    }
}

#[test]
fn an_empty_store_is_taken_over_as_nothing_installed() {
    let dev = SimDevice::new();
    mender_store(&dev.data, &[]);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_taken_over(&dev);
}

#[test]
fn a_damaged_store_is_an_error_naming_the_file_and_nothing_changes() {
    let dev = SimDevice::new();
    let path = store_path(&dev.data);
    fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let out = dev.run(&["show-artifact"]);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(path.exists() && !dev.data.join(OUR_STORE).exists());

    // A value of the wrong shape names its key.
    fs::remove_file(&path).unwrap();
    mender_store(
        &dev.data,
        &[("artifact-name", "r1"), ("artifact-provides", "[1,2]")],
    );
    let out = dev.run(&["show-provides"]);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'artifact-provides'"), "{stderr}");
    assert!(!dev.data.join(OUR_STORE).exists());
}

/// `state` as 4.x writes it once the reboot was scheduled (field order and
/// values as in the shared spec, 2.3).
const STATE_4X: &str = r#"{"Version":2,"Name":"reboot","UpdateInfo":{"Artifact":{"Source":{"URI":"https://s3.example/artifact?sig=1","Expire":"2026-12-08T10:00:00Z"},"device_types_compatible":["sim-device"],"PayloadTypes":["rootfs-image"],"artifact_name":"release-2","artifact_group":"","artifact_provides":{"rootfs-image.version":"release-2","rootfs-image.checksum":"c2"},"clears_artifact_provides":["artifact_group","rootfs_image_checksum","rootfs-image.*"]},"ID":"dep-7","RebootRequested":["reboot-type-automatic"],"SupportsRollback":"rollback-supported","StateDataStoreCount":7,"HasDBSchemaUpdate":false,"AllRollbacksSuccessful":false}}"#;

/// A rootfs-image deployment Mender rebooted into becomes ours, for the
/// daemon to finish (tests/system/takeover_managed.rs); an Update
/// Module's is left to the Mender client.
#[test]
fn a_rootfs_deployment_in_flight_is_taken_over_an_update_modules_is_left() {
    // 3.x keeps the record under `state-uncommitted` while a client
    // upgrade is in flight; either key means a deployment in flight.
    for key in ["state", "state-uncommitted"] {
        let dev = SimDevice::new();
        dev.set_env(&BOOTED_UPDATE);
        mender_store(
            &dev.data,
            &[("artifact-name", "release-1"), (key, STATE_4X)],
        );
        let out = dev.run(&["show-artifact"]);
        assert_eq!(exit_code(&out), 0, "{key}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("dep-7") && stderr.contains("'reboot'"),
            "{stderr}"
        );
        assert_taken_over(&dev);
        let ours: serde_json::Value =
            serde_json::from_slice(&fs::read(dev.data.join(OUR_STORE)).unwrap()).unwrap();
        let update = &ours["update"];
        assert_eq!(update["phase"], "artifact-reboot", "{ours}");
        assert_eq!(update["deployment_id"], "dep-7");
        assert_eq!(update["steps"], 7, "Mender's loop guard carries over");
        assert_eq!(update["artifact"]["name"], "release-2");
        assert_eq!(ours["taken_over_deployment"], "dep-7");
        let handed_back = MenderStore::open_read_only(&store_path(&dev.data))
            .unwrap()
            .read()
            .unwrap();
        let record = handed_back.managed.expect("the record for a power loss");
        assert_eq!(
            (record.name.as_str(), record.deployment_id()),
            ("after-rollback-reboot", "dep-7")
        );
        assert_eq!(handed_back.installed.name.as_deref(), Some("release-1"));
    }
    let dev = SimDevice::new();
    dev.set_env(&BOOTED_UPDATE);
    let module = STATE_4X.replace("\"rootfs-image\"]", "\"single-file\"]");
    mender_store(
        &dev.data,
        &[("artifact-name", "release-1"), ("state", &module)],
    );
    let out = dev.run(&["show-artifact"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert!(store_path(&dev.data).exists());
    assert!(!dev.data.join(TAKEN_OVER).exists());
    assert!(!dev.data.join(OUR_STORE).exists());
    let contents = MenderStore::open_read_only(&store_path(&dev.data))
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(contents.managed.unwrap().deployment_id(), "dep-7");
}

/// The boot environment after Mender installed a rootfs image on
/// partition 3 and the bootloader booted it once (set before the Mender
/// store is written: `bootenv set` is a command, and takes over too).
const BOOTED_UPDATE: [(&str, &str); 4] = [
    ("mender_boot_part", "3"),
    ("mender_boot_part_hex", "3"),
    ("upgrade_available", "1"),
    ("bootcount", "1"),
];
/// The same after the bootloader gave up on it and went back.
const ROLLED_BACK: [(&str, &str); 4] = [
    ("mender_boot_part", "2"),
    ("mender_boot_part_hex", "2"),
    ("upgrade_available", "0"),
    ("bootcount", "1"),
];

/// A device on which Mender 4.x/5.x installed `release-2` (standalone),
/// pointed the bootloader at partition 3, and rebooted into it.
fn pending_v2(dev: &SimDevice, boot: &[(&str, &str)]) {
    dev.set_env(boot);
    mender_store(
        &dev.data,
        &[
            ("artifact-name", "release-1"),
            (
                "artifact-provides",
                r#"{"rootfs-image.version":"release-1","rootfs-image.checksum":"c1","site.keep":"yes"}"#,
            ),
            (
                "standalone-state",
                r#"{"Version":2,"ArtifactName":"release-2","ArtifactGroup":"","PayloadTypes":["rootfs-image"],"ArtifactTypeInfoProvides":{"rootfs-image.version":"release-2","rootfs-image.checksum":"c2"},"ArtifactClearsProvides":["artifact_group","rootfs_image_checksum","rootfs-image.*"],"InState":"Before_ArtifactCommit_Enter","Failed":false,"RolledBack":false}"#,
            ),
        ],
    );
    // The artifact's scripts, where Mender keeps them for the commit.
    fs::create_dir_all(&dev.artifact_scripts).unwrap();
    fs::write(dev.artifact_scripts.join("version"), "3").unwrap();
    for name in ["ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"] {
        dev.script(&dev.artifact_scripts, name, 0);
    }
    for name in ["ArtifactRollback_Enter_01", "ArtifactRollback_Leave_01"] {
        dev.script(&dev.artifact_scripts, name, 0);
    }
}

fn committed_release_2() -> BTreeMap<String, String> {
    pairs(&[
        ("artifact_name", "release-2"),
        ("rootfs-image.checksum", "c2"),
        ("rootfs-image.version", "release-2"),
        ("site.keep", "yes"),
    ])
}

#[test]
fn commit_finishes_a_v2_standalone_update_and_hands_back() {
    let dev = SimDevice::new();
    pending_v2(&dev, &BOOTED_UPDATE);
    let out = dev.run(&["commit"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_taken_over(&dev);
    assert_eq!(
        dev.script_log(),
        vec!["ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"]
    );
    assert_eq!(dev.env()["upgrade_available"], "0");
    assert_eq!(dev.provides(), committed_release_2());
    // Hand back: a fresh Mender store with the same software.
    assert_eq!(read_back(&dev.data).provides(), committed_release_2());
    assert_eq!(exit_code(&dev.run(&["commit"])), 2);
}

#[test]
fn rollback_finishes_a_v1_standalone_update() {
    let dev = SimDevice::new();
    dev.set_env(&BOOTED_UPDATE);
    mender_store(
        &dev.data,
        &[
            ("artifact-name", "release-1"),
            (
                "standalone-state",
                r#"{"Version":1,"ArtifactName":"release-2","ArtifactGroup":"","ArtifactTypeInfoProvides":{"rootfs-image.version":"release-2"},"PayloadTypes":["rootfs-image"]}"#,
            ),
        ],
    );
    let out = dev.run(&["rollback"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_taken_over(&dev);
    let env = dev.env();
    assert_eq!(
        (
            env["mender_boot_part"].as_str(),
            env["upgrade_available"].as_str()
        ),
        ("2", "0")
    );
    assert_eq!(dev.show_artifact(), "release-1");
    assert_eq!(exit_code(&dev.run(&["commit"])), 2);
}

#[test]
fn an_update_the_bootloader_already_rolled_back_is_dropped() {
    let dev = SimDevice::new();
    pending_v2(&dev, &ROLLED_BACK);
    assert_eq!(dev.show_artifact(), "release-1");
    assert_taken_over(&dev);
    assert_eq!(exit_code(&dev.run(&["commit"])), 2);
    assert_eq!(dev.env()["mender_boot_part"], "2");
}

/// Power loss after each take-over step (`MENDER_RS_CRASH_AT=step:K`,
/// `mender-store:1`): 1 = our store written, the hand back built beside
/// Mender's store, 2 = the hand back in its place, 3 = our flag cleared.
/// The next command finishes the take-over without reading Mender's store
/// again, and the update is committed once, with the right provides.
#[cfg(feature = "crash-injection")]
#[test]
fn power_loss_at_each_take_over_step_resumes() {
    for k in ["step:1", "mender-store:1", "step:2", "step:3"] {
        let dev = SimDevice::new();
        pending_v2(&dev, &BOOTED_UPDATE);
        let out = dev.run_with(
            &["show-artifact"],
            &[("MENDER_RS_CRASH_AT", k)],
            DEFAULT_TIMEOUT,
        );
        assert_ne!(exit_code(&out), 0, "step {k}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("crash injection"),
            "step {k}: {}",
            describe(&out)
        );
        let ours: serde_json::Value =
            serde_json::from_slice(&fs::read(dev.data.join(OUR_STORE)).unwrap()).unwrap();
        assert!(ours["update"].is_object(), "step {k}: {ours}");
        // Whenever Mender's file is still in place, ours says it is a
        // leftover to rename: never two stores that both hold the update.
        // Once the flag is cleared, `mender-store` is our hand back.
        assert!(store_path(&dev.data).exists(), "step {k}: no Mender store");
        assert!(
            ours["mender_store_rename_pending"] == true
                || MenderStore::open_read_only(&store_path(&dev.data))
                    .unwrap()
                    .last_write_is_ours()
                    .unwrap(),
            "step {k}: {ours}"
        );
        if k == "step:1" {
            // Were Mender's store read again, this name would show.
            mender_store(&dev.data, &[("artifact-name", "read-twice")]);
        }
        assert_eq!(dev.show_artifact(), "release-1", "step {k}");
        assert_taken_over(&dev);
        let out = dev.run(&["commit"]);
        assert_eq!(exit_code(&out), 0, "step {k}: {}", describe(&out));
        assert_eq!(dev.provides(), committed_release_2(), "step {k}");
        assert_eq!(read_back(&dev.data).provides(), committed_release_2());
    }
}

#[test]
fn a_pending_update_module_install_is_left_to_the_mender_client() {
    let dev = SimDevice::new();
    mender_store(
        &dev.data,
        &[
            ("artifact-name", "release-1"),
            (
                "standalone-state",
                r#"{"Version":2,"ArtifactName":"config-2","ArtifactGroup":"","PayloadTypes":["single-file"],"InState":"Before_ArtifactCommit_Enter","Failed":false,"RolledBack":false}"#,
            ),
        ],
    );
    let out = dev.run(&["commit"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("single-file"), "{}", describe(&out));
    assert!(store_path(&dev.data).exists() && !dev.data.join(TAKEN_OVER).exists());
    assert!(!dev.data.join(OUR_STORE).exists());
}

#[test]
fn a_5x_store_named_unknown_until_the_commit() {
    // 5.x: a fresh store is named `unknown`, and stays so until the commit
    // of the first install (the shared spec, 2.8).
    let dev = SimDevice::new();
    pending_v2(&dev, &BOOTED_UPDATE);
    mender_store(&dev.data, &[("artifact-name", "unknown")]);
    assert_eq!(exit_code(&dev.run(&["commit"])), 0);
    assert_eq!(dev.show_artifact(), "release-2");
    assert_eq!(read_back(&dev.data).name.as_deref(), Some("release-2"));
}

#[test]
fn bootenv_works_beside_a_damaged_store_of_ours() {
    let dev = SimDevice::new();
    mender_store(&dev.data, &[("artifact-name", "release-1")]);
    fs::write(dev.data.join(OUR_STORE), b"{not json").unwrap();
    assert!(dev.ok(&["bootenv", "print"]).contains("mender_boot_part=2"));
    // Ours exists, damaged or not: Mender's is not taken over behind it.
    assert!(store_path(&dev.data).exists());
    let out = dev.run(&["show-artifact"]);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));
}
