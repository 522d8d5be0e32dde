//! Server answers: what the daemon does with the statuses and replies it
//! gets.

use super::*;

#[test]
fn a_forced_deployment_of_the_installed_artifact_is_already_installed() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let artifact = m
        .dev
        .write_rootfs_artifact("release-1", 256 << 10, &[], &[]);
    m.dev.ok(&["install", &artifact.display().to_string()]);
    m.dev.reboot();
    m.dev.ok(&["commit"]);
    let dep = server.create_deployment(
        NewDeployment::from_file(&artifact, "release-1", &[DEVICE_TYPE]).forced(),
    );
    let dep2 = dep.clone();
    assert!(
        m.run_until(&server, Duration::from_secs(30), move |s| {
            s.device_ids()
                .iter()
                .any(|d| s.deployment_status(d, &dep2).as_deref() == Some("already-installed"))
        }),
        "{}",
        m.log_tail()
    );
    assert!(
        server.downloads().is_empty(),
        "downloaded what is installed"
    );
    assert_eq!(m.dev.env()["mender_boot_part"], "3");
    server.assert_no_violations();
}

#[test]
fn server_errors_on_status_reports_are_retried_before_the_commit() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let dep = m.deploy_rootfs(&server, "release-5", 1 << 20);
    // The intermediate reports are best effort; the one before the commit
    // and the final one are retried.
    server.fail_next(Endpoint::Status, 503, 5);
    m.run_to_status(&server, &dep, 90, "success");
    assert_eq!(m.dev.show_artifact(), "release-5");
    server.assert_no_violations();
}

#[test]
fn a_server_that_never_takes_the_pre_commit_report_gets_a_rollback() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let dep = m.deploy_rootfs(&server, "release-6", 1 << 20);
    // The deployment is offered again (the server never got its status):
    // a longer poll leaves time to look at the end of the first attempt.
    m.dev
        .set_config("UpdatePollIntervalSeconds", Value::from(5));
    let store = m.dev.data.join("mender-rs-store.json");
    let failing = std::cell::Cell::new(false);
    // Once the device has reported "rebooting", every status report fails:
    // the report before the commit cannot get through.
    let done = m.run_until(&server, Duration::from_secs(120), |s| {
        if !failing.get()
            && s.device_ids()
                .iter()
                .any(|d| s.statuses(d, &dep).iter().any(|x| x == "rebooting"))
        {
            s.fail_always(Endpoint::Status, Some(503));
            failing.set(true);
        }
        // Finished: the deployment is no longer in the store.
        failing.get()
            && fs::read_to_string(&store)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["update"].is_null())
    });
    assert!(done, "{}", m.log_tail());
    let env = m.dev.env();
    assert_eq!(env["mender_boot_part"], "2", "{}", m.log_tail());
    assert_eq!(env["upgrade_available"], "0");
    assert_ne!(m.dev.show_artifact(), "release-6");
    let log = m.log_text();
    assert!(log.contains("before the commit"), "{}", m.log_tail());
}
