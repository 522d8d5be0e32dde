//! Update control maps from the server (v2 `next` and the map endpoint).

use super::*;

/// Runs `n` devices against `server` with a deployment whose map pauses
/// before the commit; releases them all at once and returns the spread
/// between the first and the last `success`.
fn synchronized_commit(n: usize) -> Duration {
    let server = MenderServer::start();
    server.enable_next_v2(true);
    let mut devices: Vec<ManagedDevice> = (0..n).map(|_| managed(&server)).collect();
    for m in &devices {
        // Maps live 4 s: the daemons fetch them again every 2 s.
        m.dev
            .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(4));
    }
    let artifact = devices[0]
        .dev
        .write_rootfs_artifact("release-sync", 256 << 10, &[], &[]);
    let pause = serde_json::json!({"id": "{id}", "priority": 0,
        "states": {"ArtifactCommit_Enter": {"action": "pause", "on_map_expire": "fail"}}});
    let dep = server.create_deployment(NewDeployment::from_file(
        &artifact,
        "release-sync",
        &[DEVICE_TYPE],
    ));
    server.set_control_map(&dep, Some(pause));
    for m in devices.iter_mut() {
        m.start();
    }
    // Each device reboots into the update and pauses before the commit;
    // the reboots are simulated by hand here (several daemons at once).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "not all devices paused");
        for m in devices.iter_mut() {
            m.tend();
        }
        let paused = server
            .device_ids()
            .iter()
            .filter(|d| {
                server
                    .statuses(d, &dep)
                    .iter()
                    .any(|s| s == "pause_before_committing")
            })
            .count();
        if paused == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Release them all.
    server.set_control_map(
        &dep,
        Some(serde_json::json!({"id": "{id}", "priority": 0,
            "states": {"ArtifactCommit_Enter": {"action": "continue"}}})),
    );
    let released = Instant::now();
    assert!(
        server.wait_until(Duration::from_secs(60), |s| {
            s.device_ids()
                .iter()
                .filter(|d| s.deployment_status(d, &dep).as_deref() == Some("success"))
                .count()
                == n
        }),
        "not all devices committed: {:?}\n{}",
        server.deployment_summary(&dep),
        devices[0].log_tail()
    );
    let times: Vec<Duration> = server
        .device_ids()
        .iter()
        .map(|d| {
            server
                .status_reports(d, &dep)
                .iter()
                .find(|r| r.status == "success")
                .map(|r| r.elapsed)
                .unwrap()
        })
        .collect();
    let first = times.iter().min().unwrap();
    let last = times.iter().max().unwrap();
    eprintln!(
        "synchronized commit of {n} devices: all committed {:?} after the release, spread between the first and the last commit {:?}",
        released.elapsed(),
        *last - *first
    );
    for m in devices.iter_mut() {
        assert_eq!(m.dev.show_artifact(), "release-sync");
        m.stop();
    }
    server.assert_no_violations();
    *last - *first
}

#[test]
fn a_server_map_pauses_before_the_commit_until_released() {
    let spread = synchronized_commit(1);
    assert_eq!(spread, Duration::ZERO);
}

#[test]
fn ten_devices_commit_together_when_the_server_releases_them() {
    let spread = synchronized_commit(10);
    // Each daemon looks at its map again every 2 s (half its 4 s life).
    assert!(spread < Duration::from_secs(5), "spread {spread:?}");
}

#[test]
fn devices_reboot_only_when_the_server_releases_them() {
    let server = MenderServer::start();
    server.enable_next_v2(true);
    let n = 3;
    let mut devices: Vec<ManagedDevice> = (0..n).map(|_| managed(&server)).collect();
    for m in &devices {
        m.dev
            .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(4));
    }
    let artifact = devices[0]
        .dev
        .write_rootfs_artifact("release-reboot", 256 << 10, &[], &[]);
    let dep = server.create_deployment(NewDeployment::from_file(
        &artifact,
        "release-reboot",
        &[DEVICE_TYPE],
    ));
    server.set_control_map(
        &dep,
        Some(serde_json::json!({"id": "{id}", "priority": 0,
            "states": {"ArtifactReboot_Enter": {"action": "pause", "on_map_expire": "fail"}}})),
    );
    let paused = |s: &MenderServer| {
        s.device_ids()
            .iter()
            .filter(|d| {
                s.statuses(d, &dep)
                    .iter()
                    .any(|x| x == "pause_before_rebooting")
            })
            .count()
    };
    // The devices come online (and download) one after the other.
    for (i, m) in devices.iter_mut().enumerate() {
        m.start();
        assert!(
            server.wait_until(Duration::from_secs(30), |s| paused(s) == i + 1),
            "{}",
            m.log_tail()
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    for m in &devices {
        assert!(!m.reboot_marker.exists(), "rebooted before the release");
        assert_eq!(m.dev.env()["upgrade_available"], "1", "installed, waiting");
    }
    server.set_control_map(
        &dep,
        Some(serde_json::json!({"id": "{id}", "priority": 0,
            "states": {"ArtifactReboot_Enter": {"action": "continue"}}})),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .device_ids()
        .iter()
        .filter(|d| server.deployment_status(d, &dep).as_deref() == Some("success"))
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            server.deployment_summary(&dep)
        );
        for m in devices.iter_mut() {
            m.tend();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for m in devices.iter_mut() {
        m.stop();
        assert_eq!(m.dev.show_artifact(), "release-reboot");
    }
    server.assert_no_violations();
}

#[test]
fn a_pause_map_nobody_refreshes_expires_into_its_on_map_expire() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    // Set like `control set` would, then left to expire: the application
    // that owned it is gone.
    m.dev
        .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(3));
    // The daemon's start gives stored maps the boot lifetime.
    m.dev
        .set_config("UpdateControlMapBootExpirationTimeSeconds", Value::from(3));
    let file = m.dev.path("map.json");
    fs::write(
        &file,
        serde_json::json!({"id": MAP_ID, "priority": 2,
            "states": {"ArtifactInstall_Enter": {"action": "pause", "on_map_expire": "fail"}}})
        .to_string(),
    )
    .unwrap();
    m.dev.ok(&["control", "set", &file.display().to_string()]);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-expire", 256 << 10, &[], &[]);
    let dep = server.add_deployment(&artifact, "release-expire", &[DEVICE_TYPE]);
    let dev_id = m.run_to_status(&server, &dep, 60, "failure");
    assert!(
        server
            .statuses(&dev_id, &dep)
            .iter()
            .any(|s| s == "pause_before_installing")
    );
    assert_eq!(m.dev.env()["upgrade_available"], "0");
    assert_eq!(m.dev.env()["mender_boot_part"], "2");
    let log = m.log_text();
    assert!(log.contains("expired"), "{}", m.log_tail());
    // Entering Idle (after the deployment, or at the next start) drops the
    // expired map, as Mender does: it does not fail every later deployment.
    let dep = m.deploy_rootfs(&server, "release-after-expiry", 256 << 10);
    m.run_to_status(&server, &dep, 90, "success");
    let shown = m.dev.ok(&["control", "show"]);
    assert!(!shown.contains(MAP_ID), "{shown}");
}
