//! rootfs-image through the daemon, with real (simulated) reboots.

use super::*;

#[test]
fn rootfs_update_reboots_commits_and_reports() {
    let server = MenderServer::start();
    let mut m = managed(&server);
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
    let mut m = managed(&server);
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
    m.run_to_status(&server, &dep, 180, "success");
    // The head comes in bounded windows (docs/managed-mode.md), then the
    // rest; every request starts where the last one stopped.
    let downloads = server.downloads();
    assert!(downloads.len() >= 21, "{downloads:#?}");
    assert_eq!(downloads[0].start, 0);
    let mut next = 0;
    for (i, d) in downloads.iter().enumerate() {
        assert_eq!(
            d.start, next,
            "download {i} did not resume where the last one stopped"
        );
        assert!(d.range.is_some());
        assert!(!d.authorization_sent);
        next = d.start + d.bytes_sent;
    }
    // Each request takes the next cut; those of the head's short windows
    // fall past their end, the others cut the rest.
    let resumed = offsets
        .iter()
        .filter(|o| downloads.iter().any(|d| d.start == **o))
        .count();
    assert!(resumed >= 15, "{resumed} resumes at a cut: {downloads:#?}");
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
fn a_server_that_ignores_the_range_is_read_again_from_the_start() {
    // A resume answered 200 (the whole artifact again): the bytes already
    // installed are skipped, never fed twice, and the update goes on.
    let server = MenderServer::start();
    let mut m = managed(&server);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-norange", 1 << 20, &[], &[]);
    let size = fs::metadata(&artifact).unwrap().len();
    server.cut_downloads_at(&[300_000]);
    server.ignore_range(true);
    let dep = server.add_deployment(&artifact, "release-norange", &[DEVICE_TYPE]);
    let dev_id = m.run_to_status(&server, &dep, 60, "success");
    let logs = server.logs(&dev_id, &dep);
    assert!(logs.is_empty(), "{logs:#?}");
    let downloads = server.downloads();
    assert_eq!(downloads.len(), 2, "{downloads:#?}");
    assert_eq!(downloads[0].bytes_sent, 300_000);
    assert_eq!(downloads[1].start, 0);
    assert_eq!(downloads[1].bytes_sent, size);
    let payload = fs::read(payload_of(&artifact)).unwrap();
    assert_eq!(
        m.dev.partition_sha256_prefix(3, Some(payload.len())),
        sha256_hex(&payload)
    );
    assert_eq!(m.dev.env()["mender_boot_part"], "3");
}

#[test]
fn an_aborted_deployment_stops_before_installing() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let dep = m.deploy_rootfs(&server, "release-abort", 1 << 20);
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
