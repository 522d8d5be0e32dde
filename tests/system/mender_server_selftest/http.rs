//! Plain HTTP requests to the server, bounded.

use super::*;

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) headers: ureq::http::HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Resp {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

pub(super) fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
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
pub(super) fn api(
    server: &MenderServer,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> Resp {
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

pub(super) fn get(server: &MenderServer, path: &str, headers: &[(&str, &str)]) -> Resp {
    send("GET", &format!("{}{path}", server.url()), headers, None)
}

/// The 3.x auth request body: key order id_data, tenant_token, pubkey, and
/// a trailing newline.
pub(super) fn auth_body(key: &Key, mac: &str, tenant: Option<&str>) -> Vec<u8> {
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

pub(super) fn post_auth(server: &MenderServer, body: &[u8], signature: &str) -> Resp {
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

pub(super) fn authenticate(server: &MenderServer, key: &Key, mac: &str) -> Resp {
    let body = auth_body(key, mac, Some(""));
    post_auth(server, &body, &key.sign(&body))
}

pub(super) fn token(server: &MenderServer, key: &Key, mac: &str) -> String {
    let r = authenticate(server, key, mac);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

pub(super) const NEXT_V1: &str = "/api/devices/v1/deployments/device/deployments/next";
pub(super) const NEXT_V2: &str = "/api/devices/v2/deployments/device/deployments/next";
pub(super) const INVENTORY: &str = "/api/devices/v1/inventory/device/attributes";

pub(super) fn status_path(dep: &str) -> String {
    format!("/api/devices/v1/deployments/device/deployments/{dep}/status")
}

pub(super) fn log_path(dep: &str) -> String {
    format!("/api/devices/v1/deployments/device/deployments/{dep}/log")
}

pub(super) fn next_v1(server: &MenderServer, token: &str, artifact_name: &str) -> Resp {
    api(
        server,
        "POST",
        NEXT_V1,
        token,
        &json!({"artifact_name": artifact_name, "device_type": "qemux86-64", "rootfs-image.version": "1"}),
    )
}

pub(super) fn report(server: &MenderServer, token: &str, dep: &str, status: &str) -> u16 {
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
pub(super) fn artifact(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// The path and query of the download link of an instruction.
pub(super) fn link_path(server: &MenderServer, instruction: &Value) -> String {
    let uri = instruction["artifact"]["source"]["uri"].as_str().unwrap();
    uri.strip_prefix(&server.url()).unwrap().to_owned()
}

pub(super) fn problems(server: &MenderServer) -> Vec<String> {
    server
        .violations()
        .iter()
        .map(|v| v.problem.clone())
        .collect()
}

/// A deployment of `data` for a device of `key`, and its download link.
pub(super) fn deployment_link(server: &MenderServer, key: &Key, data: Vec<u8>) -> (String, String) {
    let tok = token(server, key, "m");
    let dep = server.add_deployment_bytes(data, "r2", &["qemux86-64"]);
    let r = next_v1(server, &tok, "r1");
    assert_eq!(r.status, 200);
    (dep, link_path(server, &r.json()))
}
