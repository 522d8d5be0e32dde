//! `POST /api/devices/v1/authentication/auth_requests` and the tokens it
//! issues.

use super::*;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

// -- auth (deviceauth/devices_v1.yaml: AuthRequest, X-MEN-Signature) --------

pub(super) fn handle_auth(ctx: &mut Ctx) -> Response {
    if ctx.req.method != "POST" {
        return ctx.method_not_allowed("POST");
    }
    let body = {
        let mut st = ctx.shared.lock();
        match ctx.json_body(&mut st) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let Some(obj) = body.as_object() else {
        return ctx.refuse_unlocked(400, "auth request body is not a JSON object");
    };
    let id_data = match obj.get("id_data") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return ctx.refuse_unlocked(400, "id_data is not a string"),
        None => return ctx.refuse_unlocked(400, "id_data missing"),
    };
    let identity: Value = match serde_json::from_str(&id_data) {
        Ok(v @ Value::Object(_)) => v,
        _ => return ctx.refuse_unlocked(400, format!("id_data {id_data:?} is not a JSON object")),
    };
    let pubkey = match obj.get("pubkey") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return ctx.refuse_unlocked(400, "pubkey is not a string"),
        None => return ctx.refuse_unlocked(400, "pubkey missing"),
    };
    let tenant_token = match obj.get("tenant_token") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return ctx.refuse_unlocked(400, "tenant_token is not a string"),
    };
    let key = match parse_public_key(&pubkey) {
        Ok(k) => k,
        Err(e) => return ctx.refuse_unlocked(400, format!("pubkey: {e}")),
    };
    let id = key.device_id();
    ctx.device = Some(id.clone());
    let Some(sig_b64) = ctx.req.header("x-men-signature") else {
        return ctx.refuse_unlocked(400, "X-MEN-Signature header missing");
    };
    let sig = match STANDARD.decode(sig_b64.trim()) {
        Ok(s) => s,
        Err(e) => return ctx.refuse_unlocked(400, format!("X-MEN-Signature is not base64: {e}")),
    };
    if !key.verify(&ctx.req.body, &sig) {
        return ctx.refuse_unlocked(
            401,
            format!(
                "X-MEN-Signature does not verify with the {} key",
                key.kind.name()
            ),
        );
    }

    let mut st = ctx.shared.lock();
    let initial = st.preset_auth.get(&id).copied().unwrap_or(st.default_auth);
    let dev = st.devices.entry(id.clone()).or_insert_with(|| DeviceInfo {
        id: id.clone(),
        id_data: String::new(),
        identity: Value::Null,
        pubkey: String::new(),
        key_type: key.kind.name(),
        auth_status: initial,
        tenant_token: None,
        auth_requests: 0,
        requests: 0,
        inventory: Vec::new(),
        inventory_submissions: 0,
        provides: Map::new(),
        deployments: Vec::new(),
    });
    dev.auth_requests += 1;
    dev.id_data = id_data;
    dev.identity = identity;
    dev.pubkey = pubkey;
    dev.tenant_token = tenant_token.clone();
    let status = dev.auth_status;
    if let Some(required) = &st.tenant_token
        && tenant_token.as_deref() != Some(required.as_str())
    {
        return error_response(ctx.shared, 401, "unauthorized: tenant token");
    }
    if status != AuthStatus::Accepted {
        return error_response(ctx.shared, 401, "unauthorized: device not accepted");
    }
    st.seq += 1;
    let token = make_token(&ctx.shared.secret, &id, st.seq);
    st.tokens.insert(token.clone(), id);
    Response::new(200).with_body("application/jwt", token)
}

pub(super) fn make_token(secret: &str, device: &str, seq: u64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 7 * 24 * 3600;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({
        "jti": format!("{seq:08x}-{}", &secret[..8]),
        "sub": device,
        "iss": "mender-rs-test-server",
        "exp": exp,
        "mender.device": true,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = Sha256::digest(format!("{secret}.{header}.{payload}"));
    format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
}
