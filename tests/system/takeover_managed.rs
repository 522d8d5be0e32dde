//! A deployment from the server that the Mender client left in flight,
//! finished by our daemon (`docs/takeover.md`, "A deployment in flight"),
//! and ours handed back before the reboot.
//!
//! The first half of the deployment (download, install, the reboot) is
//! driven by our daemon against the test server, so that the server has
//! the deployment in progress for the device; at the reboot the data
//! directory is turned into what the Mender client leaves there: our store
//! goes, and `mender-store` holds the old software and a `state` record
//! `reboot` in the exact JSON 3.x writes (`json.Marshal(StateData)`,
//! shared spec 2.3). The real 3.4 daemon is not run here (see
//! `docs/takeover.md`, "Not yet", for why).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use mender_rs::mender_store::{MenderStore, store_path};
use mender_rs::sys::lmdb::Change;

use crate::support::device::{DEVICE_TYPE, SimDevice};
use crate::support::managed::ManagedDevice;
use crate::support::mender_server::{Endpoint, MenderServer};

const OUR_STORE: &str = "mender-rs-store.json";
/// The provides Mender's record gives the artifact (our artifact writer
/// adds a checksum; these are what the device must end with).
const VERSION_KEY: &str = "rootfs-image.version";

fn managed(server: &MenderServer) -> ManagedDevice {
    ManagedDevice::options(server)
        .partition_size(8 << 20)
        .inventory_poll(60)
        .max_restarts(30)
        .build()
}

/// Runs the daemon until it asks for the reboot into the update; the
/// device is not rebooted yet.
fn run_to_reboot(m: &mut ManagedDevice, server: &MenderServer, dep: &str) {
    m.start();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !m.reboot_marker.exists() {
        assert!(
            Instant::now() < deadline,
            "no reboot for {dep}:\n{}",
            m.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m.stop();
    fs::remove_file(&m.reboot_marker).unwrap();
    let id = m.device_id(server);
    assert_eq!(
        server.statuses(&id, dep),
        ["downloading", "installing", "rebooting"]
    );
}

/// What Mender 3.4 leaves in the data directory after it installed
/// `name` for deployment `dep` and saved `reboot`: its store (the old
/// software, the record) and no store of ours.
fn as_mender_left_it(dev: &SimDevice, dep: &str, name: &str, store_count: u32) {
    as_mender_left_it_asking(dev, dep, name, store_count, "rollback-supported");
}

/// The same, with `SupportsRollback` as given: 3.x writes
/// `rollback-supported`, 4.x and 5.x `""` until a failure asks the
/// module (seen with 5.1.0).
fn as_mender_left_it_asking(
    dev: &SimDevice,
    dep: &str,
    name: &str,
    store_count: u32,
    supports_rollback: &str,
) {
    fs::remove_file(dev.data.join(OUR_STORE)).unwrap();
    for f in ["mender-store", "mender-store-lock"] {
        let _ = fs::remove_file(dev.data.join(f));
    }
    let state = format!(
        r#"{{"Version":2,"Name":"reboot","UpdateInfo":{{"Artifact":{{"Source":{{"URI":"http://127.0.0.1:1/x","Expire":"2030-01-01T00:00:00Z"}},"device_types_compatible":["{DEVICE_TYPE}"],"PayloadTypes":["rootfs-image"],"artifact_name":"{name}","artifact_group":"","artifact_provides":{{"{VERSION_KEY}":"{name}"}},"clears_artifact_provides":["artifact_group","rootfs_image_checksum","rootfs-image.*"]}},"ID":"{dep}","RebootRequested":["reboot-type-custom"],"SupportsRollback":"{supports_rollback}","StateDataStoreCount":{store_count},"HasDBSchemaUpdate":false}}}}"#
    );
    let store = MenderStore::open_for_writing(&store_path(&dev.data)).unwrap();
    store
        .write_raw(&[
            Change::Put(b"artifact-name", b"release-1"),
            Change::Put(
                b"artifact-provides",
                br#"{"rootfs-image.version":"release-1"}"#,
            ),
            Change::Put(b"state", state.as_bytes()),
        ])
        .unwrap();
}

/// The requests the server had from `start` on, up to and including the
/// last status report for `dep` (the final one: nothing is reported
/// after it).
fn requests_until_final(server: &MenderServer, start: usize, dep: &str) -> Vec<Endpoint> {
    let requests: Vec<_> = server.requests().into_iter().skip(start).collect();
    let last = requests
        .iter()
        .rposition(|r| r.endpoint == Endpoint::Status && r.path.contains(dep))
        .expect("a status report after the reboot");
    requests[..=last].iter().map(|r| r.endpoint).collect()
}

/// Our store has no update and no take-over marks left.
fn our_update_is_over(data: &Path) -> bool {
    let Ok(bytes) = fs::read(data.join(OUR_STORE)) else {
        return false;
    };
    let Ok(ours) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    ours["update"].is_null()
        && ours.get("taken_over_deployment").is_none()
        && ours.get("rollback_reboot_after_report").is_none()
}

fn mender_state(data: &Path) -> Option<String> {
    let contents = MenderStore::open_read_only(&store_path(data))
        .unwrap()
        .read()
        .unwrap();
    contents.managed.map(|m| m.name)
}

#[test]
fn a_deployment_mender_rebooted_into_is_finished_by_our_daemon() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let dep = m.deploy_rootfs(&server, "release-2", 2 << 20);
    run_to_reboot(&mut m, &server, &dep);
    m.dev.reboot();
    as_mender_left_it(&m.dev, &dep, "release-2", 5);
    let before = server.requests().len();
    let id = m.run_to_status(&server, &dep, 120, "success");
    assert_eq!(
        server.statuses(&id, &dep),
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
    let after = requests_until_final(&server, before, &dep);
    assert!(
        !after.iter().any(|e| matches!(
            e,
            Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
        )),
        "deployments/next before the final status: {after:?}"
    );
    assert!(after.contains(&Endpoint::Auth), "no fresh authentication");
    let provides = m.dev.provides();
    assert_eq!(provides["artifact_name"], "release-2");
    assert_eq!(provides[VERSION_KEY], "release-2");
    let env = m.dev.env();
    assert_eq!(
        (
            env["mender_boot_part"].as_str(),
            env["upgrade_available"].as_str()
        ),
        ("3", "0")
    );
    // Only our store claims the device; the hand back names the new
    // software and holds nothing in flight.
    assert!(m.dev.data.join("mender-store.taken-over").exists());
    assert_eq!(mender_state(&m.dev.data), None);
    let installed = MenderStore::open_read_only(&store_path(&m.dev.data))
        .unwrap()
        .read()
        .unwrap()
        .installed;
    assert_eq!(installed.name.as_deref(), Some("release-2"));
    server.assert_no_violations();
}

#[test]
fn a_failing_commit_of_a_taken_over_deployment_reports_failure_before_the_reboot_back() {
    failing_commit_of_a_taken_over_deployment("rollback-supported");
}

/// 4.x and 5.x leave `SupportsRollback` empty until a failure: the
/// installer is asked then, and the rootfs image rolls back.
#[test]
fn a_failing_commit_of_a_5x_deployment_asks_and_rolls_back() {
    failing_commit_of_a_taken_over_deployment("");
}

fn failing_commit_of_a_taken_over_deployment(supports_rollback: &str) {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let artifact =
        m.dev
            .write_rootfs_artifact("release-2", 2 << 20, &[("ArtifactCommit_Enter_01", 1)], &[]);
    let dep = server.add_deployment(&artifact, "release-2", &[DEVICE_TYPE]);
    run_to_reboot(&mut m, &server, &dep);
    m.dev.reboot();
    as_mender_left_it_asking(&m.dev, &dep, "release-2", 3, supports_rollback);
    m.start();
    // The daemon reboots back only once the server has the failure: the
    // partition it reboots into runs the Mender client, which would ask
    // for the deployment again.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !m.reboot_marker.exists() {
        assert!(
            Instant::now() < deadline,
            "no reboot back:\n{}",
            m.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = m.device_id(&server);
    assert_eq!(
        server.deployment_status(&id, &dep).as_deref(),
        Some("failure"),
        "{}",
        m.log_tail()
    );
    assert!(!server.logs(&id, &dep).is_empty());
    m.stop();
    fs::remove_file(&m.reboot_marker).unwrap();
    m.dev.reboot();
    let env = m.dev.env();
    assert_eq!(
        (
            env["mender_boot_part"].as_str(),
            env["upgrade_available"].as_str()
        ),
        ("2", "0")
    );
    // ArtifactCommit_Enter fails before the report that precedes the
    // commit.
    assert_eq!(
        server.statuses(&id, &dep),
        ["downloading", "installing", "rebooting", "failure"]
    );
    // What the Mender client of the old partition finds: the old
    // software, nothing in flight; the server offers nothing more.
    let contents = MenderStore::open_read_only(&store_path(&m.dev.data))
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(contents.installed.name.as_deref(), Some("release-1"));
    assert_eq!(contents.managed, None);
    let ours: serde_json::Value =
        serde_json::from_slice(&fs::read(m.dev.data.join(OUR_STORE)).unwrap()).unwrap();
    assert!(ours["update"].is_null(), "{ours}");
    assert!(ours.get("taken_over_deployment").is_none(), "{ours}");
    server.assert_no_violations();
}

#[test]
fn our_deployment_is_handed_back_before_the_reboot_and_cleared_after_the_commit() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let dep = m.deploy_rootfs(&server, "release-2", 2 << 20);
    run_to_reboot(&mut m, &server, &dep);
    // What a Mender client in the new image would find.
    let contents = MenderStore::open_read_only(&store_path(&m.dev.data))
        .unwrap()
        .read()
        .unwrap();
    let state = contents.managed.expect("a state record");
    assert_eq!(
        (state.name.as_str(), state.deployment_id()),
        ("reboot", dep.as_str())
    );
    assert_eq!(state.artifact().artifact_name, "release-2");
    assert_eq!(state.payload_type().as_deref(), Some("rootfs-image"));
    assert_eq!(state.supports_rollback(), Some(true));
    // The device had no name before (no artifact_info): Mender's default,
    // `unknown`, which reads back as no name.
    assert_eq!(contents.installed.name.as_deref(), None);
    let orig = fs::read_to_string(
        m.dev
            .data
            .join("modules/v3/payloads/0000/tree/tmp/orig-part"),
    );
    assert_eq!(orig.unwrap(), "orig_part_num=2\norig_part_num_hex=2\n");
    assert!(m.dev.data.join("scripts/version").exists());
    // The new image runs mender-rs after all: it finishes, and the record
    // goes.
    m.dev.reboot();
    m.run_to_status(&server, &dep, 120, "success");
    assert_eq!(mender_state(&m.dev.data), None);
    server.assert_no_violations();
}

/// A crash of the daemon (restarted as systemd would) after each
/// persisted step of the take-over and of the resume: the deployment ends
/// in exactly one final status for the same id, with no `next` before it.
/// A crash inside the commit rolls back (the power-loss rule Mender
/// follows too, `docs/takeover.md`); everywhere else it succeeds.
#[test]
fn a_take_over_crashed_at_each_step_resumes_to_one_final_status() {
    let mut outcomes = Vec::new();
    for step in 1..=7 {
        // A server each: `next` offers a device the oldest deployment.
        let server = MenderServer::start();
        let mut m = managed(&server);
        let name = format!("release-c{step}");
        let dep = m.deploy_rootfs(&server, &name, 1 << 20);
        run_to_reboot(&mut m, &server, &dep);
        m.dev.reboot();
        as_mender_left_it(&m.dev, &dep, &name, 2);
        m.crash_at(m.starts + 1, &format!("step:{step}"));
        let before = server.requests().len();
        let id = m.run_to_final(&server, &dep, 120);
        let status = server.deployment_status(&id, &dep).unwrap_or_default();
        let statuses = server.statuses(&id, &dep);
        assert_eq!(
            statuses
                .iter()
                .filter(|s| *s == "success" || *s == "failure")
                .count(),
            1,
            "step {step}: {statuses:?}"
        );
        assert_eq!(&statuses[..3], ["downloading", "installing", "rebooting"]);
        let after = requests_until_final(&server, before, &dep);
        assert!(
            !after.iter().any(|e| matches!(
                e,
                Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
            )),
            "step {step}: deployments/next before the final status: {after:?}"
        );
        let stderr = fs::read_to_string(m.dev.path("daemon.stderr")).unwrap_or_default();
        assert!(
            stderr.contains(&format!("crash injection: aborting at step {step}")),
            "step {step}: the crash did not happen:\n{}",
            m.log_tail()
        );
        let (want_name, want_part) = if status == "success" {
            (name.as_str(), "3")
        } else {
            ("release-1", "2")
        };
        let installed = MenderStore::open_read_only(&store_path(&m.dev.data))
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(
            installed.installed.name.as_deref(),
            Some(want_name),
            "step {step}"
        );
        assert_eq!(installed.managed, None, "step {step}");
        // After a failure the rollback pointed the bootloader back before
        // the report.
        assert_eq!(m.dev.env()["mender_boot_part"], want_part, "step {step}");
        assert!(m.dev.data.join("mender-store.taken-over").exists());
        server.assert_no_violations();
        outcomes.push(status);
    }
    // Steps 1-3 are the take-over (our store, the renames, the flag), 4
    // enters ArtifactCommit (a crash there rolls back), 5-7 are the
    // commit's provides, Cleanup and the final status.
    assert_eq!(
        outcomes,
        [
            "success", "success", "success", "failure", "success", "success", "success"
        ]
    );
}

/// The failure path of a taken-over deployment, crashed at each persisted
/// step, after each write to the Mender store (the take-over's hand back
/// with the record `after-rollback-reboot`, that record again before the
/// rollback, its removal after the report) and right after the boot
/// environment switched back: one `failure` for the id, the old
/// partition, the Mender store with nothing in flight, no `next` before
/// the report. The record a restart finds is ours: it is not taken over.
#[test]
fn a_failing_take_over_crashed_at_each_step_reports_one_failure() {
    let cuts = (1..=9)
        .map(|k| format!("step:{k}"))
        .chain((1..=3).map(|k| format!("mender-store:{k}")))
        .chain(["rollback:1".to_string()]);
    for step in cuts {
        let server = MenderServer::start();
        let mut m = managed(&server);
        let artifact = m.dev.write_rootfs_artifact(
            "release-2",
            1 << 20,
            &[("ArtifactCommit_Enter_01", 1)],
            &[],
        );
        let dep = server.add_deployment(&artifact, "release-2", &[DEVICE_TYPE]);
        run_to_reboot(&mut m, &server, &dep);
        m.dev.reboot();
        as_mender_left_it(&m.dev, &dep, "release-2", 2);
        m.crash_at(m.starts + 1, &step);
        let before = server.requests().len();
        let id = m.run_to_status(&server, &dep, 120, "failure");
        let statuses = server.statuses(&id, &dep);
        assert_eq!(
            statuses.iter().filter(|s| *s == "failure").count(),
            1,
            "step {step}: {statuses:?}"
        );
        let after = requests_until_final(&server, before, &dep);
        assert!(
            !after.iter().any(|e| matches!(
                e,
                Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
            )),
            "step {step}: deployments/next before the final status: {after:?}"
        );
        let stderr = fs::read_to_string(m.dev.path("daemon.stderr")).unwrap_or_default();
        assert!(
            stderr.contains(&format!(
                "crash injection: aborting at {}",
                step.replace(':', " ")
            )),
            "step {step}: the crash did not happen:\n{}",
            m.log_tail()
        );
        assert!(
            !m.dev.data.join("mender-rs-store.replaced.json").exists(),
            "step {step}: our own record was taken for Mender's:\n{}",
            m.log_tail()
        );
        // The daemon was stopped as soon as the server had the report: run
        // it until it forgot the deployment (a restart reports again).
        let data = m.dev.data.clone();
        assert!(
            m.run_until(&server, Duration::from_secs(60), move |_| {
                our_update_is_over(&data)
            }),
            "step {step}: the deployment stayed in our store:\n{}",
            m.log_tail()
        );
        assert_eq!(m.dev.env()["mender_boot_part"], "2", "step {step}");
        assert_eq!(m.dev.env()["upgrade_available"], "0", "step {step}");
        assert_eq!(mender_state(&m.dev.data), None, "step {step}");
        server.assert_no_violations();
    }
}
