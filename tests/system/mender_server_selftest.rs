//! Tests of the Mender device-API test server (`tests/support/mender_server.rs`)
//! with plain HTTP requests, so the daemon tests can trust it. Device keys
//! are made and requests are signed with the `openssl` command.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::mender_server::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Keys and signing with openssl

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rsa,
    Ec,
    Ed25519,
}

struct Key {
    kind: Kind,
    private: PathBuf,
    pem: String,
}

struct Keys {
    _dir: tempfile::TempDir,
    rsa: Key,
    ec: Key,
    ed: Key,
    /// More EC keys for multi-device tests.
    fleet: Vec<Key>,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn make_key(dir: &Path, name: &str, kind: Kind) -> Key {
    let private = dir.join(format!("{name}.pem"));
    let p = private.to_str().unwrap();
    match kind {
        Kind::Rsa => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
            p,
        ]),
        Kind::Ec => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]),
        Kind::Ed25519 => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
    };
    let pem = String::from_utf8(openssl(&["pkey", "-in", p, "-pubout"])).unwrap();
    Key { kind, private, pem }
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Keys {
            rsa: make_key(d, "rsa", Kind::Rsa),
            ec: make_key(d, "ec", Kind::Ec),
            ed: make_key(d, "ed", Kind::Ed25519),
            fleet: (0..6)
                .map(|i| make_key(d, &format!("fleet{i}"), Kind::Ec))
                .collect(),
            _dir: dir,
        }
    })
}

impl Key {
    /// base64 of the signature of `body`: `openssl dgst -sha256 -sign` for
    /// RSA (PKCS#1 v1.5) and ECDSA (DER), `openssl pkeyutl -rawin` for Ed25519.
    fn sign(&self, body: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("body");
        let output = dir.path().join("sig");
        std::fs::write(&input, body).unwrap();
        let (k, i, o) = (
            self.private.to_str().unwrap(),
            input.to_str().unwrap(),
            output.to_str().unwrap(),
        );
        match self.kind {
            Kind::Rsa | Kind::Ec => openssl(&["dgst", "-sha256", "-sign", k, "-out", o, i]),
            Kind::Ed25519 => openssl(&[
                "pkeyutl", "-sign", "-rawin", "-inkey", k, "-in", i, "-out", o,
            ]),
        };
        STANDARD.encode(std::fs::read(&output).unwrap())
    }

    fn id(&self) -> String {
        device_id_of(&self.pem).expect("device id of an openssl key")
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let agent = agent();
    let res = match body {
        Some(body) => agent.run(b.body(body.to_vec()).unwrap()),
        None => agent.run(b.body(()).unwrap()),
    };
    let mut res = res.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let body = res
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .unwrap();
    Resp {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body,
    }
}

/// A JSON request with a Bearer token.
fn api(server: &MenderServer, method: &str, path: &str, token: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {token}");
    let bytes = serde_json::to_vec(body).unwrap();
    send(
        method,
        &format!("{}{path}", server.url()),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&bytes),
    )
}

fn get(server: &MenderServer, path: &str, headers: &[(&str, &str)]) -> Resp {
    send("GET", &format!("{}{path}", server.url()), headers, None)
}

/// The 3.x auth request body: key order id_data, tenant_token, pubkey, and
/// a trailing newline.
fn auth_body(key: &Key, mac: &str, tenant: Option<&str>) -> Vec<u8> {
    let id_data = json!({ "mac": mac }).to_string();
    let mut body = format!(
        "{{\"id_data\":{},\"tenant_token\":{},\"pubkey\":{}}}\n",
        Value::String(id_data),
        Value::String(tenant.unwrap_or("").to_owned()),
        Value::String(key.pem.clone())
    )
    .into_bytes();
    if tenant.is_none() {
        // Like the C++ client: no tenant_token at all.
        let v: Value = serde_json::from_slice(&body).unwrap();
        let mut m = v.as_object().unwrap().clone();
        m.remove("tenant_token");
        body = serde_json::to_vec(&m).unwrap();
    }
    body
}

fn post_auth(server: &MenderServer, body: &[u8], signature: &str) -> Resp {
    send(
        "POST",
        &format!(
            "{}/api/devices/v1/authentication/auth_requests",
            server.url()
        ),
        &[
            ("Content-Type", "application/json"),
            ("X-MEN-Signature", signature),
            ("Authorization", "Bearer "),
        ],
        Some(body),
    )
}

fn authenticate(server: &MenderServer, key: &Key, mac: &str) -> Resp {
    let body = auth_body(key, mac, Some(""));
    post_auth(server, &body, &key.sign(&body))
}

fn token(server: &MenderServer, key: &Key, mac: &str) -> String {
    let r = authenticate(server, key, mac);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

const NEXT_V1: &str = "/api/devices/v1/deployments/device/deployments/next";
const NEXT_V2: &str = "/api/devices/v2/deployments/device/deployments/next";
const INVENTORY: &str = "/api/devices/v1/inventory/device/attributes";

fn status_path(dep: &str) -> String {
    format!("/api/devices/v1/deployments/device/deployments/{dep}/status")
}

fn log_path(dep: &str) -> String {
    format!("/api/devices/v1/deployments/device/deployments/{dep}/log")
}

fn next_v1(server: &MenderServer, token: &str, artifact_name: &str) -> Resp {
    api(
        server,
        "POST",
        NEXT_V1,
        token,
        &json!({"artifact_name": artifact_name, "device_type": "qemux86-64", "rootfs-image.version": "1"}),
    )
}

fn report(server: &MenderServer, token: &str, dep: &str, status: &str) -> u16 {
    api(
        server,
        "PUT",
        &status_path(dep),
        token,
        &json!({ "status": status }),
    )
    .status
}

/// Deterministic artifact-like bytes.
fn artifact(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// The path and query of the download link of an instruction.
fn link_path(server: &MenderServer, instruction: &Value) -> String {
    let uri = instruction["artifact"]["source"]["uri"].as_str().unwrap();
    uri.strip_prefix(&server.url()).unwrap().to_owned()
}

fn problems(server: &MenderServer) -> Vec<String> {
    server
        .violations()
        .iter()
        .map(|v| v.problem.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Authentication

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

// ---------------------------------------------------------------------------
// Inventory

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

// ---------------------------------------------------------------------------
// next

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

// ---------------------------------------------------------------------------
// Status and log

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

// ---------------------------------------------------------------------------
// Download

fn deployment_link(server: &MenderServer, key: &Key, data: Vec<u8>) -> (String, String) {
    let tok = token(server, key, "m");
    let dep = server.add_deployment_bytes(data, "r2", &["qemux86-64"]);
    let r = next_v1(server, &tok, "r1");
    assert_eq!(r.status, 200);
    (dep, link_path(server, &r.json()))
}

#[test]
fn download_full_range_and_416() {
    let server = MenderServer::start();
    let data = artifact(300_000);
    let (dep, link) = deployment_link(&server, &keys().rsa, data.clone());
    let r = get(&server, &link, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").as_deref(), Some("300000"));
    assert_eq!(r.body, data);

    let r = get(&server, &link, &[("Range", "bytes=1000-")]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 1000-299999/300000")
    );
    assert_eq!(r.header("content-length").as_deref(), Some("299000"));
    assert_eq!(r.body, &data[1000..]);

    let r = get(&server, &link, &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 10-19/300000")
    );
    assert_eq!(r.body, &data[10..20]);

    let r = get(&server, &link, &[("Range", "bytes=300000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */300000"));

    // Range ignored on request of the test.
    server.ignore_range(true);
    let r = get(&server, &link, &[("Range", "bytes=1000-")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 300_000);
    server.assert_no_violations();

    let id = keys().rsa.id();
    let downloads = server.downloads();
    assert_eq!(downloads.len(), 5);
    assert_eq!(downloads[1].start, 1000);
    assert_eq!(downloads[1].bytes_sent, 299_000);
    assert!(
        downloads
            .iter()
            .all(|d| d.device.as_deref() == Some(id.as_str()) && d.deployment_id == dep)
    );
    assert_eq!(server.device(&id).unwrap().deployments[0].downloads, 5);

    // The JWT must not be sent to storage; a tampered link is refused.
    let r = get(&server, &link, &[("Authorization", "Bearer x")]);
    assert_eq!(r.status, 200);
    assert!(server.downloads().last().unwrap().authorization_sent);
    assert!(problems(&server)[0].contains("Authorization"));
    let tampered = link.replace("x-men-signature=", "x-men-signature=0");
    assert_eq!(get(&server, &tampered, &[]).status, 403);
    assert_eq!(server.violations().len(), 2);
}

/// Raw GET on a fresh connection: (head, body bytes until EOF).
fn raw_get(server: &MenderServer, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8(all[..split].to_vec()).unwrap(),
        all[split + 4..].to_vec(),
    )
}

#[test]
fn download_cut_after_n_bytes_and_resume() {
    let server = MenderServer::start();
    let data = artifact(200_000);
    let (_dep, link) = deployment_link(&server, &keys().ec, data.clone());

    server.cut_downloads_after(12_345, 1);
    let (head, body) = raw_get(&server, &link, "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 200000"), "{head}");
    assert_eq!(body, &data[..12_345]);
    // ureq sees the short body as an error.
    let mut res = agent()
        .get(format!("{}{link}", server.url()))
        .call()
        .unwrap();
    assert_eq!(
        res.body_mut().read_to_vec().unwrap(),
        data,
        "cut applies once"
    );

    // Absolute offsets, one per request: 0.. cut at 50000, resume cut at 120000, then complete.
    server.cut_downloads_at(&[50_000, 120_000]);
    let (_, b1) = raw_get(&server, &link, "");
    assert_eq!(b1.len(), 50_000);
    let (head, b2) = raw_get(&server, &link, "Range: bytes=50000-\r\n");
    assert!(
        head.contains("206 Partial Content")
            && head.contains("Content-Range: bytes 50000-199999/200000"),
        "{head}"
    );
    assert_eq!(b2.len(), 70_000);
    let (_, b3) = raw_get(
        &server,
        &link,
        "Range: bytes=120000-\r\nConnection: close\r\n",
    );
    let mut whole = b1;
    whole.extend(b2);
    whole.extend(b3);
    assert_eq!(whole, data);
    let d = server.downloads();
    assert_eq!(d.iter().filter(|d| d.cut).count(), 3);
    assert_eq!(d[3].bytes_sent, 70_000);

    server.cut_downloads_after(100, 1);
    let mut res = agent()
        .get(format!("{}{link}", server.url()))
        .call()
        .unwrap();
    assert!(res.body_mut().read_to_vec().is_err());
    server.assert_no_violations();
}

#[test]
fn throttled_download_takes_time() {
    let server = MenderServer::start();
    let (_dep, link) = deployment_link(&server, &keys().ed, artifact(20_000));
    server.throttle_downloads(Some(50_000));
    let t = Instant::now();
    let r = get(&server, &link, &[]);
    assert_eq!(r.body.len(), 20_000);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Faults, HTTP details, concurrency, shutdown

#[test]
fn injected_failures_and_delays() {
    let server = MenderServer::start();
    let k = keys();
    server.fail_next(Endpoint::Auth, 503, 2);
    assert_eq!(authenticate(&server, &k.ec, "m").status, 503);
    assert_eq!(authenticate(&server, &k.ec, "m").status, 503);
    let tok = token(&server, &k.ec, "m");
    server.fail_always(Endpoint::NextV1Post, Some(500));
    assert_eq!(next_v1(&server, &tok, "a").status, 500);
    assert_eq!(next_v1(&server, &tok, "a").status, 500);
    server.fail_always(Endpoint::NextV1Post, None);
    assert_eq!(next_v1(&server, &tok, "a").status, 204);

    server.set_delay(Some(Endpoint::NextV1Post), Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(next_v1(&server, &tok, "a").status, 204);
    assert!(t.elapsed() >= Duration::from_millis(300));
    server.clear_faults();
    let t = Instant::now();
    assert_eq!(next_v1(&server, &tok, "a").status, 204);
    assert!(t.elapsed() < Duration::from_millis(300));

    let log = server.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200, 500, 500, 204, 204, 204]);
    assert_eq!(log[3].device.as_deref(), Some(k.ec.id().as_str()));
    assert_eq!(log[3].endpoint, Endpoint::NextV1Post);
    assert_eq!(server.requests_to(Endpoint::Auth).len(), 3);
    assert_eq!(server.requests_per_endpoint()[&Endpoint::NextV1Post], 5);
    server.assert_no_violations();
}

#[test]
fn keep_alive_chunked_connection_close_and_malformed_requests() {
    let server = MenderServer::start();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = r#"{"artifact_name":"a","device_type":"t"}"#;
    // Two pipelined requests on one connection, the second chunked.
    let (a, b) = body.split_at(10);
    write!(
        s,
        "POST {NEXT_V1} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
         POST {NEXT_V1} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        body.len(),
        a.len(),
        b.len()
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap(); // EOF: Connection: close honoured
    assert_eq!(all.matches("HTTP/1.1 204 No Content").count(), 2, "{all}");
    assert!(all.contains("Connection: close"));

    // Malformed request: 400, recorded, server still fine.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"BROKEN\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PUT /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    assert_eq!(server.violations().len(), 2);
    assert_eq!(next_v1(&server, &tok, "a").status, 204);

    // ureq reuses its pooled connection: many requests, few connections.
    let agent = agent();
    for _ in 0..20 {
        let r = agent
            .post(format!("{}{NEXT_V1}", server.url()))
            .header("Authorization", &format!("Bearer {tok}"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    assert_eq!(server.requests_per_device()[&k.ec.id()], 24);
    assert_eq!(
        server.requests_per_minute().iter().sum::<u64>(),
        server.request_count()
    );
}

#[test]
fn many_concurrent_clients() {
    let server = MenderServer::start();
    let k = keys();
    let tokens: Vec<(String, String)> = k.fleet[..4]
        .iter()
        .enumerate()
        .map(|(i, key)| (key.id(), token(&server, key, &format!("f{i}"))))
        .collect();
    let dep = server.add_deployment_bytes(artifact(4096), "r9", &["qemux86-64"]);
    std::thread::scope(|scope| {
        for t in 0..100 {
            let (server, tokens) = (&server, &tokens);
            scope.spawn(move || {
                let agent = agent();
                let (_, tok) = &tokens[t % tokens.len()];
                for _ in 0..5 {
                    let r = agent
                        .post(format!("{}{NEXT_V1}", server.url()))
                        .header("Authorization", &format!("Bearer {tok}"))
                        .header("Content-Type", "application/json")
                        .send(r#"{"artifact_name":"r1","device_type":"qemux86-64"}"#)
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });
    assert_eq!(server.request_count(), 4 + 500);
    for (id, _) in &tokens {
        assert_eq!(server.requests_per_device()[id], 1 + 125);
    }
    assert_eq!(server.deployment_summary(&dep).get("pending"), Some(&4));
    server.assert_no_violations();
}

#[test]
fn drop_is_prompt_with_open_connections() {
    let server = MenderServer::start();
    let url = server.url();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    let (_dep, link) = deployment_link(&server, &k.ec, artifact(10_000_000));
    // An idle keep-alive connection, and a download the client does not read.
    let _idle = TcpStream::connect(server.addr()).unwrap();
    let mut stalled = TcpStream::connect(server.addr()).unwrap();
    write!(stalled, "GET {link} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    server.set_delay(None, Duration::from_secs(30));
    let slow = std::thread::spawn(move || {
        let _ = agent()
            .post(format!("{url}{NEXT_V1}"))
            .header("Authorization", &format!("Bearer {tok}"))
            .send("{}");
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    drop(server);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    slow.join().unwrap();
}

#[test]
fn time_helpers() {
    use std::time::UNIX_EPOCH;
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
        "2024-02-29T12:34:56Z"
    );
    for ok in [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05.5+01:00",
        "2016-03-11T13:03:17.063493443Z",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "2024-01-02",
        "2024-13-02T03:04:05Z",
        "2024-01-02T03:04:05",
        "2024-01-02T03:04:05+0100",
        "2024-01-02T03:04:05.Z",
        "x",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
}

/// Sends `GET path` on a raw socket and reads at most `limit` bytes of the
/// answer (head and body), until the server closes.
fn raw_get_capped(server: &MenderServer, path: &str, limit: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = (&mut s).take(limit as u64).read_to_end(&mut out);
    out
}

#[test]
fn hostile_replies_replace_answers_after_normal_handling() {
    let server = MenderServer::start();
    let key = &keys().ed;
    // A 10 GiB auth answer: the device is still registered.
    let huge = HostileReply::new(
        200,
        HostileBody::Filler {
            byte: b'A',
            len: 10 << 30,
        },
    );
    server.replace_next(Endpoint::Auth, huge, 1);
    let body = auth_body(key, "aa:bb", Some(""));
    let url = format!(
        "{}/api/devices/v1/authentication/auth_requests",
        server.url()
    );
    let mut res = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-MEN-Signature", &key.sign(&body))
        .send(&body[..])
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-length").unwrap(),
        &(10u64 << 30).to_string()
    );
    let mut first = Vec::new();
    res.body_mut()
        .as_reader()
        .take(1 << 20)
        .read_to_end(&mut first)
        .unwrap();
    assert!(first.iter().all(|&b| b == b'A') && first.len() == 1 << 20);
    drop(res);
    assert_eq!(server.device_ids().len(), 1);
    // The next answer is the normal one again.
    assert_eq!(authenticate(&server, key, "aa:bb").status, 200);

    // A Content-Length lie and an end of connection; then a trickle.
    let lie = HostileReply::new(200, HostileBody::Bytes(b"short".to_vec()))
        .header("Content-Length", "1000");
    server.replace_next(Endpoint::Other, lie, 1);
    let text = String::from_utf8(raw_get_capped(&server, "/nowhere", 4096)).unwrap();
    assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nshort"), "{text}");
    let trickle = HostileReply::new(
        200,
        HostileBody::Trickle {
            bytes: b"abc".to_vec(),
            interval: Duration::from_millis(200),
        },
    );
    server.replace_always(Endpoint::Other, Some(trickle));
    let started = Instant::now();
    let text = String::from_utf8(raw_get_capped(&server, "/nowhere", 4096)).unwrap();
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.replace_always(Endpoint::Other, None);
    assert!(
        String::from_utf8(raw_get_capped(&server, "/nowhere", 4096))
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );
}
