//! Authentication and inventory.

use super::*;

#[test]
fn a_pending_device_polls_until_accepted_then_reauthenticates_after_expiry() {
    let server = MenderServer::start();
    server.set_default_auth(AuthStatus::Pending);
    let mut m = managed(&server);
    m.dev
        .set_config("TenantToken", Value::from("tenant-secret"));
    m.start();
    assert!(server.wait_until(Duration::from_secs(20), |s| {
        s.devices().iter().any(|d| d.auth_requests >= 2)
    }));
    let dev_id = m.device_id(&server);
    assert_eq!(
        server.device(&dev_id).unwrap().tenant_token.as_deref(),
        Some("tenant-secret")
    );
    assert!(server.inventory(&dev_id).is_empty());
    server.accept_device(&dev_id);
    assert!(
        server.wait_until(Duration::from_secs(20), |s| {
            !s.inventory(&dev_id).is_empty()
        }),
        "{}",
        m.log_tail()
    );
    let before = server.auth_requests(&dev_id);
    server.expire_tokens();
    let dep = m.deploy_rootfs(&server, "release-3", 1 << 20);
    assert!(
        m.run_until(
            &server,
            Duration::from_secs(60),
            final_status_of(dep.clone())
        ),
        "{}",
        m.log_tail()
    );
    assert!(server.auth_requests(&dev_id) > before);
    assert_eq!(server.device(&dev_id).unwrap().key_type, "Ed25519");
    server.assert_no_violations();
}

#[test]
fn inventory_falls_back_to_patch_and_next_to_get() {
    let server = MenderServer::start();
    server.inventory_put_not_allowed(true);
    server.disable_next_v1_post(true);
    let mut m = managed(&server);
    let dep = m.deploy_rootfs(&server, "release-4", 1 << 20);
    let dev_id = m.run_to_final(&server, &dep, 60);
    assert_eq!(
        server.inventory_value(&dev_id, "hostname"),
        Some(Value::from("simulated"))
    );
    assert!(!server.requests_to(Endpoint::NextV1Get).is_empty());
    server.assert_no_violations();
}

#[test]
fn rsa_device_key_is_generated_once_and_kept() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    m.dev.set_config("DeviceKeyType", Value::from("rsa3072"));
    m.start();
    assert!(server.wait_until(Duration::from_secs(120), |s| !s.device_ids().is_empty()));
    m.stop();
    let key = m.dev.data.join("mender-agent.pem");
    let pem = fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let dev_id = m.device_id(&server);
    assert_eq!(server.device(&dev_id).unwrap().key_type, "RSA");
    // A second start uses the same key: the same device.
    m.start();
    assert!(server.wait_until(Duration::from_secs(20), |s| s.auth_requests(&dev_id) >= 2));
    m.stop();
    assert_eq!(fs::read_to_string(&key).unwrap(), pem);
    assert_eq!(server.device_ids().len(), 1);
}

#[test]
fn check_update_and_send_inventory_wake_the_daemon() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    // No daemon yet: a clear error.
    let out = m.dev.run(&["check-update"]);
    assert_eq!(exit_code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no mender-rs daemon is running"),
        "{}",
        describe(&out)
    );
    // Long enough that no poll of its own comes during the test; the
    // start-up jitter is at most a tenth of it (10 s).
    m.dev
        .set_config("UpdatePollIntervalSeconds", Value::from(100));
    m.dev
        .set_config("InventoryPollIntervalSeconds", Value::from(100));
    m.start();
    assert!(server.wait_until(Duration::from_secs(30), |s| {
        s.devices().iter().any(|d| !d.inventory.is_empty())
    }));
    let dev_id = m.device_id(&server);
    // Let the start-up jitter and first round pass.
    std::thread::sleep(Duration::from_secs(1));
    let next_before = server.requests_to(Endpoint::NextV1Post).len();
    let inv_before = server.requests_to(Endpoint::Inventory).len();
    m.dev.ok(&["check-update"]);
    assert!(
        server.wait_until(Duration::from_secs(10), |s| {
            s.requests_to(Endpoint::NextV1Post).len() > next_before
        }),
        "{}",
        m.log_tail()
    );
    m.dev.ok(&["send-inventory"]);
    assert!(
        server.wait_until(Duration::from_secs(10), |s| {
            s.requests_to(Endpoint::Inventory).len() > inv_before
        }),
        "{}",
        m.log_tail()
    );
    let _ = dev_id;
    // A second daemon refuses to start.
    let out = run_bounded(
        m.dev.command().args(["--no-syslog", "daemon"]),
        Duration::from_secs(10),
    );
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("another mender-rs daemon is running"));
    m.stop();
}
