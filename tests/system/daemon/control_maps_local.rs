//! Update control maps set on the device (`mender-rs control`).

use super::*;

/// Sets a device map (with a lifetime long enough for the test: by
/// default maps live twice the 1 s poll interval of these tests).
fn control_set(m: &ManagedDevice, map: &Value) {
    m.dev
        .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(120));
    let file = m.dev.path("map.json");
    fs::write(&file, map.to_string()).unwrap();
    m.dev.ok(&["control", "set", &file.display().to_string()]);
}

#[test]
fn a_device_map_pauses_before_installing_until_the_application_continues() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    control_set(
        &m,
        &serde_json::json!({"id": MAP_ID, "priority": 1,
            "states": {"ArtifactInstall_Enter": {"action": "pause"}}}),
    );
    let dep = m.deploy_rootfs(&server, "release-ucm", 1 << 20);
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
    let downloads = server.downloads().len();
    assert!(downloads >= 1);
    m.stop();
    m.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.dev.env()["upgrade_available"], "0");
    assert_eq!(m.dev.env()["mender_boot_part"], "2");
    assert_eq!(server.downloads().len(), downloads);
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
    let mut m = managed(&server);
    control_set(
        &m,
        &serde_json::json!({"id": MAP_ID, "priority": 0,
            "states": {"ArtifactCommit_Enter": {"action": "fail"}}}),
    );
    let dep = m.deploy_rootfs(&server, "release-ucm-fail", 1 << 20);
    let dev_id = m.run_to_status(&server, &dep, 60, "failure");
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
