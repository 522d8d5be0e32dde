//! Inventory.

use super::*;

#[test]
fn inventory_put_replaces_patch_upserts_and_405_switch() {
    let server = MenderServer::start();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    let id = k.ec.id();
    let attrs = json!([
        {"name": "device_type", "value": "qemux86-64"},
        {"name": "artifact_name", "value": "release-1", "description": "current"},
        {"name": "ipv4_eth0", "value": ["10.0.0.2/8", "192.168.1.5/24"]},
        {"name": "cpus", "value": 4},
        {"name": "loads", "value": [0.5, 1]},
    ]);
    let r = api(&server, "PUT", INVENTORY, &tok, &attrs);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.inventory(&id).len(), 5);
    assert_eq!(server.inventory_value(&id, "cpus"), Some(json!(4)));
    assert_eq!(
        server.inventory(&id)[1].description.as_deref(),
        Some("current")
    );
    let r = api(
        &server,
        "PATCH",
        INVENTORY,
        &tok,
        &json!([{"name": "cpus", "value": 8}, {"name": "new", "value": "x"}]),
    );
    assert_eq!(r.status, 200);
    assert_eq!(server.inventory(&id).len(), 6);
    assert_eq!(server.inventory_value(&id, "cpus"), Some(json!(8)));
    let r = api(
        &server,
        "PUT",
        INVENTORY,
        &tok,
        &json!([{"name": "only", "value": "one"}]),
    );
    assert_eq!(r.status, 200);
    assert_eq!(server.inventory(&id).len(), 1);
    assert_eq!(server.device(&id).unwrap().inventory_submissions, 3);

    server.inventory_put_not_allowed(true);
    assert_eq!(api(&server, "PUT", INVENTORY, &tok, &attrs).status, 405);
    assert_eq!(api(&server, "PATCH", INVENTORY, &tok, &attrs).status, 200);
    assert_eq!(server.inventory(&id).len(), 6);
    server.assert_no_violations();
}

#[test]
fn inventory_schema_violations() {
    let server = MenderServer::start();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    let bad = [
        json!({"name": "a", "value": "b"}),
        json!([{"value": "b"}]),
        json!([{"name": 1, "value": "b"}]),
        json!([{"name": "a"}]),
        json!([{"name": "a", "value": true}]),
        json!([{"name": "a", "value": ["x", 1]}]),
        json!([{"name": "a", "value": {"x": 1}}]),
        json!([{"name": "a", "value": "b", "description": 3}]),
        json!(["a"]),
    ];
    for (i, body) in bad.iter().enumerate() {
        let r = api(&server, "PUT", INVENTORY, &tok, body);
        assert_eq!(r.status, 400, "case {i}");
        assert_eq!(server.violations().len(), i + 1);
    }
    // No token at all.
    let r = send(
        "PATCH",
        &format!("{}{INVENTORY}", server.url()),
        &[("Content-Type", "application/json")],
        Some(b"[]"),
    );
    assert_eq!(r.status, 401);
    // Not JSON.
    let r = send(
        "PUT",
        &format!("{}{INVENTORY}", server.url()),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {tok}")),
        ],
        Some(b"[{"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(server.violations().len(), bad.len() + 2);
    assert!(server.inventory(&k.ec.id()).is_empty());
}
