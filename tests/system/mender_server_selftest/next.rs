//! `next`: the deployment the server offers a device.

use super::*;

#[test]
fn next_v2_v1_and_get_fallbacks() {
    let server = MenderServer::start();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    let dep = server.add_deployment_bytes(artifact(5000), "release-2", &["qemux86-64", "other"]);
    let v2_body = json!({"device_provides": {"artifact_name": "release-1", "device_type": "qemux86-64"}, "update_control_map": true});

    // v2 is absent by default (OSS): 404, not a violation.
    assert_eq!(api(&server, "POST", NEXT_V2, &tok, &v2_body).status, 404);
    server.assert_no_violations();

    // v1 POST.
    let r = next_v1(&server, &tok, "release-1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let ins = r.json();
    assert_eq!(ins["id"], dep.as_str());
    assert_eq!(ins["artifact"]["artifact_name"], "release-2");
    assert_eq!(
        ins["artifact"]["device_types_compatible"],
        json!(["qemux86-64", "other"])
    );
    assert!(ins["artifact"]["id"].as_str().is_some());
    assert!(is_rfc3339(
        ins["artifact"]["source"]["expire"].as_str().unwrap()
    ));
    assert!(
        ins["artifact"]["source"]["uri"]
            .as_str()
            .unwrap()
            .starts_with(&server.url())
    );
    let id = k.ec.id();
    assert_eq!(
        server.deployment_status(&id, &dep).as_deref(),
        Some("pending")
    );
    assert_eq!(
        server.device(&id).unwrap().provides["rootfs-image.version"],
        "1"
    );

    // v1 POST switched off: 404 (the client falls back to GET).
    server.disable_next_v1_post(true);
    assert_eq!(next_v1(&server, &tok, "release-1").status, 404);
    let r = get(
        &server,
        &format!("{NEXT_V1}?artifact_name=release-1&device_type=qemux86-64"),
        &[("Authorization", &format!("Bearer {tok}"))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], dep.as_str());

    // v2 switched on.
    server.enable_next_v2(true);
    let r = api(&server, "POST", NEXT_V2, &tok, &v2_body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], dep.as_str());
    assert_eq!(server.device(&id).unwrap().deployments[0].offered, 3);
    server.assert_no_violations();

    // Schema violations.
    let cases = [
        (NEXT_V2, json!({"device_provides": {"artifact_name": "a"}})),
        (NEXT_V2, json!({"artifact_name": "a", "device_type": "t"})),
        (
            NEXT_V2,
            json!({"device_provides": {"artifact_name": "a", "device_type": "t"}, "update_control_map": "yes"}),
        ),
    ];
    for (path, body) in &cases {
        assert_eq!(api(&server, "POST", path, &tok, body).status, 400, "{body}");
    }
    server.disable_next_v1_post(false);
    for body in [
        json!({"device_type": "t"}),
        json!({"artifact_name": "a", "device_type": 3}),
        json!({"artifact_name": "", "device_type": "t"}),
        json!({"artifact_name": "a", "device_type": "t", "x": 1}),
    ] {
        assert_eq!(
            api(&server, "POST", NEXT_V1, &tok, &body).status,
            400,
            "{body}"
        );
    }
    let auth = format!("Bearer {tok}");
    assert_eq!(
        get(
            &server,
            &format!("{NEXT_V1}?artifact_name=a"),
            &[("Authorization", &auth)]
        )
        .status,
        400
    );
    assert_eq!(
        get(
            &server,
            &format!("{NEXT_V1}?device_type=%ZZ"),
            &[("Authorization", &auth)]
        )
        .status,
        400
    );
    assert_eq!(server.violations().len(), 9, "{:?}", problems(&server));
}

#[test]
fn next_already_installed_forced_targets_and_device_types() {
    let server = MenderServer::start();
    let k = keys();
    let (a, b) = (&k.fleet[0], &k.fleet[1]);
    let ta = token(&server, a, "a");
    let tb = token(&server, b, "b");
    assert_eq!(next_v1(&server, &ta, "r1").status, 204);

    // Same artifact name: 204 and already-installed recorded by the server.
    let d1 = server.add_deployment_bytes(artifact(100), "r1", &["qemux86-64"]);
    assert_eq!(next_v1(&server, &ta, "r1").status, 204);
    assert_eq!(
        server.deployment_status(&a.id(), &d1).as_deref(),
        Some("already-installed")
    );
    assert!(server.statuses(&a.id(), &d1).is_empty());
    assert_eq!(report(&server, &ta, &d1, "downloading"), 409);

    // Forced: offered even so.
    let d2 = server.create_deployment(
        NewDeployment::from_bytes(artifact(100), "r1", &["qemux86-64"]).forced(),
    );
    let r = next_v1(&server, &ta, "r1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], d2.as_str());
    assert_eq!(report(&server, &ta, &d2, "success"), 204);

    // Targeted at b only; incompatible device type is skipped (noartifact).
    let d3 = server.create_deployment(
        NewDeployment::from_bytes(artifact(100), "r3", &["rpi"]).for_devices(&[b.id()]),
    );
    let d4 = server.create_deployment(
        NewDeployment::from_bytes(artifact(100), "r4", &["qemux86-64"]).for_devices(&[b.id()]),
    );
    assert_eq!(next_v1(&server, &ta, "r1").status, 204);
    // b runs r1 too: d1 is already installed (one 204), d2 is forced, then
    // d3 does not fit its device type and d4 is offered.
    assert_eq!(next_v1(&server, &tb, "r1").status, 204);
    assert_eq!(
        server.deployment_status(&b.id(), &d1).as_deref(),
        Some("already-installed")
    );
    assert_eq!(next_v1(&server, &tb, "r1").json()["id"], d2.as_str());
    assert_eq!(report(&server, &tb, &d2, "failure"), 204);
    let r = next_v1(&server, &tb, "r1");
    assert_eq!(r.json()["id"], d4.as_str());
    assert_eq!(
        server.deployment_status(&b.id(), &d3).as_deref(),
        Some("noartifact")
    );
    assert_eq!(server.deployment_summary(&d4).get("pending"), Some(&1));
    // Status for a deployment the device never got: 404 + violation.
    assert_eq!(report(&server, &ta, &d4, "downloading"), 404);
    assert_eq!(server.violations().len(), 1);
    assert_eq!(server.deployment_ids(), [d1, d2, d3, d4]);
}
