//! Status reports and deployment logs.

use super::*;

#[test]
fn status_reports_log_and_409_after_abort_or_final() {
    let server = MenderServer::start();
    let k = keys();
    let (a, b) = (&k.fleet[2], &k.fleet[3]);
    let ta = token(&server, a, "a");
    let tb = token(&server, b, "b");
    let dep = server.add_deployment_bytes(artifact(100), "r2", &["qemux86-64"]);
    assert_eq!(next_v1(&server, &ta, "r1").status, 200);
    assert_eq!(next_v1(&server, &tb, "r1").status, 200);
    for s in ["downloading", "installing", "rebooting", "installing"] {
        assert_eq!(report(&server, &ta, &dep, s), 204);
    }
    let r = api(
        &server,
        "PUT",
        &status_path(&dep),
        &ta,
        &json!({"status": "installing", "substate": "ArtifactCommit_Enter_01"}),
    );
    assert_eq!(r.status, 204);
    assert_eq!(report(&server, &ta, &dep, "success"), 204);
    // After a final status: 409.
    assert_eq!(report(&server, &ta, &dep, "failure"), 409);
    assert_eq!(
        server.statuses(&a.id(), &dep),
        [
            "downloading",
            "installing",
            "rebooting",
            "installing",
            "installing",
            "success"
        ]
    );
    let reports = server.status_reports(&a.id(), &dep);
    assert_eq!(reports.len(), 7);
    assert_eq!(
        reports[4].substate.as_deref(),
        Some("ArtifactCommit_Enter_01")
    );
    assert_eq!(reports[6].response, 409);
    assert!(reports.windows(2).all(|w| w[0].elapsed <= w[1].elapsed));
    assert_eq!(
        server.deployment_status(&a.id(), &dep).as_deref(),
        Some("success")
    );
    // Not offered again.
    assert_eq!(next_v1(&server, &ta, "r1").status, 204);

    // Abort: b's reports get 409 and next no longer offers it.
    assert_eq!(report(&server, &tb, &dep, "downloading"), 204);
    server.abort_deployment(&dep);
    assert_eq!(
        server.deployment_status(&b.id(), &dep).as_deref(),
        Some("aborted")
    );
    assert_eq!(report(&server, &tb, &dep, "installing"), 409);
    assert_eq!(report(&server, &tb, &dep, "failure"), 409);
    assert_eq!(next_v1(&server, &tb, "r1").status, 204);
    let log = json!({"messages": [
        {"timestamp": "2024-01-02T03:04:05Z", "level": "info", "message": "one"},
        {"timestamp": "2024-01-02T03:04:06.123456+01:00", "level": "error", "message": "two"},
    ]});
    assert_eq!(api(&server, "PUT", &log_path(&dep), &tb, &log).status, 204);
    let logs = server.logs(&b.id(), &dep);
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1].message, "two");
    assert_eq!(logs[1].level, "error");
    server.assert_no_violations();
}

#[test]
fn abort_for_one_device_only() {
    let server = MenderServer::start();
    let k = keys();
    let (a, b) = (&k.fleet[4], &k.fleet[5]);
    let ta = token(&server, a, "a");
    let tb = token(&server, b, "b");
    let dep = server.add_deployment_bytes(artifact(100), "r2", &["qemux86-64"]);
    server.abort_deployment_for(&dep, &a.id());
    assert_eq!(next_v1(&server, &ta, "r1").status, 204);
    assert_eq!(next_v1(&server, &tb, "r1").status, 200);
    assert_eq!(report(&server, &tb, &dep, "downloading"), 204);
    server.abort_deployment_for(&dep, &b.id());
    assert_eq!(report(&server, &tb, &dep, "installing"), 409);
    server.assert_no_violations();
}

#[test]
fn status_and_log_schema_violations() {
    let server = MenderServer::start();
    let k = keys();
    let tok = token(&server, &k.ed, "m");
    let dep = server.add_deployment_bytes(artifact(100), "r2", &["qemux86-64"]);
    assert_eq!(next_v1(&server, &tok, "r1").status, 200);
    let bad_status = [
        json!({}),
        json!({"status": "done"}),
        json!({"status": "aborted"}),
        json!({"status": 1}),
        json!({"status": "installing", "substate": 2}),
        json!("installing"),
    ];
    for body in &bad_status {
        assert_eq!(
            api(&server, "PUT", &status_path(&dep), &tok, body).status,
            400,
            "{body}"
        );
    }
    let bad_logs = [
        json!({}),
        json!({"messages": "x"}),
        json!({"messages": []}),
        json!({"messages": [{"level": "info", "message": "m"}]}),
        json!({"messages": [{"timestamp": "2024-01-02T03:04:05Z", "message": "m"}]}),
        json!({"messages": [{"timestamp": "2024-01-02T03:04:05Z", "level": "info"}]}),
        json!({"messages": [{"timestamp": "yesterday", "level": "info", "message": "m"}]}),
        json!({"messages": [{"timestamp": "2024-01-02 03:04:05", "level": "info", "message": "m"}]}),
        json!({"messages": [{"timestamp": "2024-01-02T03:04:05Z", "level": 1, "message": "m"}]}),
    ];
    for body in &bad_logs {
        assert_eq!(
            api(&server, "PUT", &log_path(&dep), &tok, body).status,
            400,
            "{body}"
        );
    }
    // Unknown deployment, wrong method, unknown path.
    assert_eq!(report(&server, &tok, "no-such-id", "installing"), 404);
    assert_eq!(
        api(
            &server,
            "POST",
            &status_path(&dep),
            &tok,
            &json!({"status": "installing"})
        )
        .status,
        405
    );
    assert_eq!(get(&server, "/api/devices/v1/nothing", &[]).status, 404);
    assert_eq!(
        server.violations().len(),
        bad_status.len() + bad_logs.len() + 3,
        "{:?}",
        problems(&server)
    );
    assert!(server.statuses(&k.ed.id(), &dep).is_empty());
}
