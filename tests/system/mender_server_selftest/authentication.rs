//! Authentication.

use super::*;

#[test]
fn auth_accepts_rsa_ecdsa_and_ed25519_signatures() {
    let server = MenderServer::start();
    let k = keys();
    for (key, mac) in [
        (&k.rsa, "52:54:00:00:00:01"),
        (&k.ec, "52:54:00:00:00:02"),
        (&k.ed, "52:54:00:00:00:03"),
    ] {
        let r = authenticate(&server, key, mac);
        assert_eq!(r.status, 200, "{:?}: {}", key.kind, r.text());
        assert_eq!(r.header("content-type").as_deref(), Some("application/jwt"));
        let jwt = r.text();
        assert_eq!(jwt.split('.').count(), 3, "{jwt}");
        assert!(jwt.split('.').all(|p| !p.is_empty()));
        let dev = server.device(&key.id()).unwrap();
        assert_eq!(dev.identity, json!({ "mac": mac }));
        assert_eq!(dev.pubkey, key.pem);
        assert_eq!(dev.auth_requests, 1);
        assert_eq!(dev.tenant_token.as_deref(), Some(""));
        assert_eq!(server.device_with_identity("mac", mac), Some(key.id()));
    }
    assert_eq!(server.device(&k.rsa.id()).unwrap().key_type, "RSA");
    assert_eq!(server.device(&k.ec.id()).unwrap().key_type, "ECDSA P-256");
    assert_eq!(server.device(&k.ed.id()).unwrap().key_type, "Ed25519");
    assert_eq!(server.device_ids().len(), 3);
    // A fresh token each time; both stay valid.
    let t1 = token(&server, &k.ec, "52:54:00:00:00:02");
    let t2 = token(&server, &k.ec, "52:54:00:00:00:02");
    assert_ne!(t1, t2);
    assert_eq!(server.auth_requests(&k.ec.id()), 3);
    server.assert_no_violations();
}

#[test]
fn auth_refuses_bad_signatures_and_records_them() {
    let server = MenderServer::start();
    let k = keys();
    let body = auth_body(&k.ec, "aa", Some(""));
    // Signed by another key.
    let r = post_auth(&server, &body, &k.rsa.sign(&body));
    assert_eq!(r.status, 401);
    // Signature over other bytes (the body without its trailing newline).
    let r = post_auth(&server, &body, &k.ec.sign(&body[..body.len() - 1]));
    assert_eq!(r.status, 401);
    // Ed25519 over a SHA-256 digest is not what the server expects either.
    let ed_body = auth_body(&k.ed, "bb", None);
    let r = post_auth(&server, &ed_body, &k.ed.sign(&sha(&ed_body)));
    assert_eq!(r.status, 401);
    assert_eq!(server.violations().len(), 3, "{:?}", problems(&server));
    assert!(
        problems(&server)
            .iter()
            .all(|p| p.contains("does not verify"))
    );
    // No device is created by a request that does not verify.
    assert!(server.device_ids().is_empty());
    assert_eq!(server.token_count(), 0);
    // Not base64 / missing header: 400.
    server.clear_violations();
    assert_eq!(post_auth(&server, &body, "***").status, 400);
    let r = send(
        "POST",
        &format!(
            "{}/api/devices/v1/authentication/auth_requests",
            server.url()
        ),
        &[("Content-Type", "application/json")],
        Some(&body),
    );
    assert_eq!(r.status, 400);
    assert_eq!(server.violations().len(), 2);
}

fn sha(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

#[test]
fn auth_request_schema_violations() {
    let server = MenderServer::start();
    let k = keys();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"pubkey": k.ec.pem}), "id_data missing"),
        (
            json!({"id_data": {"mac": "x"}, "pubkey": k.ec.pem}),
            "id_data is not a string",
        ),
        (
            json!({"id_data": "not json", "pubkey": k.ec.pem}),
            "is not a JSON object",
        ),
        (json!({"id_data": "{\"mac\":\"x\"}"}), "pubkey missing"),
        (
            json!({"id_data": "{\"mac\":\"x\"}", "pubkey": "garbage"}),
            "pubkey:",
        ),
        (
            json!({"id_data": "{\"mac\":\"x\"}", "pubkey": k.ec.pem, "tenant_token": 5}),
            "tenant_token",
        ),
        (json!(["not", "an", "object"]), "not a JSON object"),
    ];
    for (i, (body, expect)) in cases.iter().enumerate() {
        let bytes = serde_json::to_vec(body).unwrap();
        let r = post_auth(&server, &bytes, &k.ec.sign(&bytes));
        assert_eq!(r.status, 400, "case {i}: {}", r.text());
        assert!(
            r.json()["error"].as_str().unwrap().contains(expect),
            "case {i}: {}",
            r.text()
        );
        let v = server.violations();
        assert_eq!(v.len(), i + 1);
        assert!(v[i].problem.contains(expect), "case {i}: {}", v[i]);
    }
    // Wrong content type.
    let body = auth_body(&k.ec, "cc", Some(""));
    let r = send(
        "POST",
        &format!(
            "{}/api/devices/v1/authentication/auth_requests",
            server.url()
        ),
        &[
            ("Content-Type", "text/plain"),
            ("X-MEN-Signature", &k.ec.sign(&body)),
        ],
        Some(&body),
    );
    assert_eq!(r.status, 400);
    assert!(problems(&server).last().unwrap().contains("Content-Type"));
    // Wrong method.
    let r = get(&server, "/api/devices/v1/authentication/auth_requests", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(server.violations().len(), cases.len() + 2);
    assert!(server.device_ids().is_empty());
}

#[test]
fn auth_policies_pending_rejected_and_tenant_token() {
    let server = MenderServer::start();
    let k = keys();
    server.set_default_auth(AuthStatus::Pending);
    assert_eq!(authenticate(&server, &k.ec, "m1").status, 401);
    assert_eq!(authenticate(&server, &k.ec, "m1").status, 401);
    let id = k.ec.id();
    assert_eq!(server.device(&id).unwrap().auth_status, AuthStatus::Pending);
    server.accept_device(&id);
    let tok = token(&server, &k.ec, "m1");
    assert_eq!(server.auth_requests(&id), 3);
    // Rejecting revokes the token.
    server.reject_device(&id);
    assert_eq!(next_v1(&server, &tok, "a").status, 401);
    assert_eq!(authenticate(&server, &k.ec, "m1").status, 401);
    // Preset before first contact.
    server.set_auth_status(&k.ed.id(), AuthStatus::Accepted);
    assert_eq!(authenticate(&server, &k.ed, "m2").status, 200);
    // Tenant token.
    server.require_tenant_token(Some("tenant-1"));
    assert_eq!(authenticate(&server, &k.ed, "m2").status, 401);
    let body = auth_body(&k.ed, "m2", Some("tenant-1"));
    assert_eq!(post_auth(&server, &body, &k.ed.sign(&body)).status, 200);
    let body = auth_body(&k.ed, "m2", None);
    assert_eq!(post_auth(&server, &body, &k.ed.sign(&body)).status, 401);
    server.assert_no_violations();
}

#[test]
fn expired_tokens_get_401_and_reauth_works() {
    let server = MenderServer::start();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    assert_eq!(next_v1(&server, &tok, "a").status, 204);
    server.expire_tokens();
    assert_eq!(server.token_count(), 0);
    assert_eq!(next_v1(&server, &tok, "a").status, 401);
    let tok2 = token(&server, &k.ec, "m");
    assert_eq!(next_v1(&server, &tok2, "a").status, 204);
    server.expire_token_of(&k.ec.id());
    assert_eq!(next_v1(&server, &tok2, "a").status, 401);
    // An expired token is not a violation; a missing one is.
    server.assert_no_violations();
    let r = send(
        "POST",
        &format!("{}{NEXT_V1}", server.url()),
        &[("Content-Type", "application/json")],
        Some(br#"{"artifact_name":"a","device_type":"t"}"#),
    );
    assert_eq!(r.status, 401);
    let r = send(
        "POST",
        &format!("{}{NEXT_V1}", server.url()),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Basic abc"),
        ],
        Some(br#"{"artifact_name":"a","device_type":"t"}"#),
    );
    assert_eq!(r.status, 401);
    assert_eq!(server.violations().len(), 2, "{:?}", problems(&server));
}
