
/// Power loss (a crash of the daemon, restarted as systemd would) after
/// each persisted step of the take-over and of the resume: the deployment
/// still ends in one `success` for the same id, with no `next` before it.
#[test]
fn a_take_over_crashed_at_each_step_resumes_and_succeeds() {
    let server = MenderServer::start();
    for step in 1..=9 {
        let mut m = managed(&server);
        let dep = m.deploy_rootfs(&server, &format!("release-c{step}"), 1 << 20);
        run_to_reboot(&mut m, &server, &dep);
        as_mender_left_it(&m.dev, &dep, &format!("release-c{step}"), 2);
        m.dev.reboot();
        m.crash_at(m.starts + 1, &format!("step:{step}"));
        let before = server.requests().len();
        let id = m.run_to_status(&server, &dep, 120, "success");
        let statuses = server.statuses(&id, &dep);
        assert_eq!(
            statuses.iter().filter(|s| *s == "success").count(),
            1,
            "step {step}: {statuses:?}"
        );
        assert_eq!(&statuses[..3], ["downloading", "installing", "rebooting"]);
        assert!(
            statuses[3..].iter().all(|s| s == "installing" || s == "success"),
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
        assert!(m.starts >= 3, "step {step}: the crash did not happen:\n{}", m.log_tail());
        assert_eq!(m.dev.provides()["artifact_name"], format!("release-c{step}"));
        assert_eq!(mender_state(&m.dev.data), None, "step {step}");
        assert!(m.dev.data.join("mender-store.taken-over").exists());
    }
    server.assert_no_violations();
}
