//! The deployments API of a device: `next` (v1 GET/POST, v2 POST), the
//! update control map, status reports and logs.

use super::*;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

// -- next (deployments/devices_v1.yaml GET; spec 5.3 for the POSTs) ---------

pub(super) fn handle_next(ctx: &mut Ctx, endpoint: Endpoint) -> Response {
    let mut st = ctx.shared.lock();
    let allowed = match endpoint {
        Endpoint::NextV2 => {
            if !st.faults.next_v2 {
                // Not a violation: the client is expected to try it first.
                return error_response(ctx.shared, 404, "not found");
            }
            "POST"
        }
        _ => "GET, POST",
    };
    if endpoint == Endpoint::NextV1Post && ctx.req.method == "POST" && st.faults.next_v1_post_404 {
        return error_response(ctx.shared, 404, "not found");
    }
    if !allowed.split(", ").any(|m| m == ctx.req.method) {
        drop(st);
        return ctx.method_not_allowed(allowed);
    }
    let device = match ctx.authenticate(&mut st) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let provides: Map<String, Value> = if ctx.req.method == "GET" {
        let mut m = Map::new();
        for (k, v) in match parse_query(&ctx.req.query) {
            Ok(q) => q,
            Err(p) => return ctx.refuse(&mut st, 400, p),
        } {
            if k == "artifact_name" || k == "device_type" {
                m.insert(k, Value::String(v));
            }
        }
        m
    } else {
        let body = match ctx.json_body(&mut st) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let provides = if endpoint == Endpoint::NextV2 {
            let Some(obj) = body.as_object() else {
                return ctx.refuse(&mut st, 400, "body is not a JSON object");
            };
            if let Some(ucm) = obj.get("update_control_map")
                && !ucm.is_boolean()
            {
                return ctx.refuse(&mut st, 400, "update_control_map is not a boolean");
            }
            obj.get("device_provides").cloned()
        } else {
            Some(body)
        };
        match provides {
            Some(Value::Object(m)) => m,
            _ => {
                let what = if endpoint == Endpoint::NextV2 {
                    "device_provides is missing or not an object"
                } else {
                    "body is not a JSON object"
                };
                return ctx.refuse(&mut st, 400, what);
            }
        }
    };
    let mut fields = [String::new(), String::new()];
    for (i, name) in ["artifact_name", "device_type"].iter().enumerate() {
        match provides.get(*name) {
            Some(Value::String(s)) if !s.is_empty() => fields[i] = s.clone(),
            Some(Value::String(_)) | None => {
                return ctx.refuse(&mut st, 400, format!("{name} missing or empty"));
            }
            Some(_) => return ctx.refuse(&mut st, 400, format!("{name} is not a string")),
        }
    }
    if let Some((k, _)) = provides.iter().find(|(_, v)| !v.is_string()) {
        return ctx.refuse(
            &mut st,
            400,
            format!("provides value {k:?} is not a string"),
        );
    }
    let [artifact_name, device_type] = fields;
    let with_map = endpoint == Endpoint::NextV2
        && ctx.req.method == "POST"
        && serde_json::from_slice::<Value>(&ctx.req.body)
            .ok()
            .and_then(|b| b.get("update_control_map").and_then(Value::as_bool))
            == Some(true);
    next_for(
        ctx.shared,
        &mut st,
        &device,
        &artifact_name,
        &device_type,
        provides,
        with_map,
    )
}

/// `GET .../v2/.../{id}/update_control_map`: the deployment's map, 404 when
/// the deployment is unknown to the device, aborted or finished.
pub(super) fn handle_control_map(ctx: &mut Ctx, id: &str) -> Response {
    let mut st = ctx.shared.lock();
    if ctx.req.method != "GET" {
        drop(st);
        return ctx.method_not_allowed("GET");
    }
    let device = match ctx.authenticate(&mut st) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let live = st
        .devices
        .get(&device)
        .and_then(|d| d.deployments.iter().find(|x| x.deployment_id == id))
        .is_some_and(|x| !is_finished(&x.status));
    match st.deployments.iter().find(|d| d.id == id) {
        Some(dep) if live && !dep.aborted => match &dep.control_map {
            Some(map) => Response::new(200).with_body(
                "application/json",
                json!({ "update_control_map": map }).to_string(),
            ),
            None => error_response(ctx.shared, 404, "no update control map"),
        },
        _ => error_response(ctx.shared, 404, "deployment not found"),
    }
}

pub(super) fn next_for(
    shared: &Shared,
    st: &mut State,
    device: &str,
    artifact_name: &str,
    device_type: &str,
    provides: Map<String, Value>,
    with_map: bool,
) -> Response {
    let State {
        deployments,
        devices,
        ..
    } = st;
    let Some(dev) = devices.get_mut(device) else {
        return error_response(shared, 401, "unknown device");
    };
    dev.provides = provides;
    for dep in deployments.iter() {
        if dep.aborted {
            continue;
        }
        if let Some(targets) = &dep.devices
            && !targets.iter().any(|t| t == device)
        {
            continue;
        }
        let same_artifact = !dep.forced && dep.artifact_name == artifact_name;
        let idx = match dev
            .deployments
            .iter()
            .position(|d| d.deployment_id == dep.id)
        {
            Some(i) if is_finished(&dev.deployments[i].status) => continue,
            Some(i) => i,
            None => {
                if !dep.device_types.iter().any(|t| t == device_type) {
                    dev.deployments
                        .push(new_device_deployment(&dep.id, "noartifact"));
                    continue;
                }
                dev.deployments
                    .push(new_device_deployment(&dep.id, "pending"));
                dev.deployments.len() - 1
            }
        };
        let dd = &mut dev.deployments[idx];
        if same_artifact && dd.status == "pending" {
            dd.status = "already-installed".into();
            return Response::new(204);
        }
        dd.offered += 1;
        let mut body = instruction(shared, dep, device);
        if with_map && let Some(map) = &dep.control_map {
            body["update_control_map"] = map.clone();
        }
        return Response::new(200).with_body("application/json", body.to_string());
    }
    Response::new(204)
}

pub(super) fn new_device_deployment(id: &str, status: &str) -> DeviceDeployment {
    DeviceDeployment {
        deployment_id: id.to_owned(),
        status: status.to_owned(),
        reports: Vec::new(),
        logs: Vec::new(),
        offered: 0,
        downloads: 0,
    }
}

pub(super) fn is_finished(status: &str) -> bool {
    FINISHED.contains(&status)
}

pub(super) fn instruction(shared: &Shared, dep: &Deployment, device: &str) -> Value {
    let expire = rfc3339(SystemTime::now() + Duration::from_secs(24 * 3600));
    let path = format!("/download/{}/{device}", dep.artifact_id);
    let sig = link_signature(&shared.secret, &path, &expire);
    // Every link is numbered (unsigned, for the test's link-expiry fault).
    static LINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = LINKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let uri = format!(
        "{}{path}?x-men-expire={}&x-men-signature={sig}&x-men-link={n}",
        shared.url,
        percent_encode(&expire)
    );
    json!({
        "id": dep.id,
        "artifact": {
            "id": dep.artifact_id,
            "artifact_name": dep.artifact_name,
            "source": {"uri": uri, "expire": expire},
            "device_types_compatible": dep.device_types,
        }
    })
}

pub(super) fn link_signature(secret: &str, path: &str, expire: &str) -> String {
    hex(&Sha256::digest(format!("{secret}|{path}|{expire}"))[..16])
}

// -- status and log (deployments/devices_v1.yaml DeploymentStatus, DeploymentLog)

/// The device's deployment entry, or a 404 violation.
pub(super) fn device_deployment<'s>(
    ctx: &Ctx,
    st: &'s mut State,
    device: &str,
    deployment: &str,
) -> Result<&'s mut DeviceDeployment, Response> {
    if !st.deployments.iter().any(|d| d.id == deployment) {
        return Err(ctx.refuse(st, 404, format!("no deployment {deployment}")));
    }
    let found = st.devices.get(device).is_some_and(|d| {
        d.deployments
            .iter()
            .any(|dd| dd.deployment_id == deployment)
    });
    if !found {
        return Err(ctx.refuse(
            st,
            404,
            format!("deployment {deployment} was never given to this device"),
        ));
    }
    st.devices
        .get_mut(device)
        .and_then(|d| {
            d.deployments
                .iter_mut()
                .find(|dd| dd.deployment_id == deployment)
        })
        .ok_or_else(|| error_response(ctx.shared, 404, "not found"))
}

pub(super) fn handle_status(ctx: &mut Ctx, deployment: &str) -> Response {
    if ctx.req.method != "PUT" {
        return ctx.method_not_allowed("PUT");
    }
    let mut st = ctx.shared.lock();
    let device = match ctx.authenticate(&mut st) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = match ctx.json_body(&mut st) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(obj) = body.as_object() else {
        return ctx.refuse(&mut st, 400, "status body is not a JSON object");
    };
    let status = match obj.get("status") {
        Some(Value::String(s)) if STATUS_VALUES.contains(&s.as_str()) => s.clone(),
        Some(Value::String(s)) => {
            return ctx.refuse(&mut st, 400, format!("unknown status value {s:?}"));
        }
        Some(_) => return ctx.refuse(&mut st, 400, "status is not a string"),
        None => return ctx.refuse(&mut st, 400, "status missing"),
    };
    let substate = match obj.get("substate") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return ctx.refuse(&mut st, 400, "substate is not a string"),
    };
    let elapsed = ctx.shared.started.elapsed();
    let dd = match device_deployment(ctx, &mut st, &device, deployment) {
        Ok(dd) => dd,
        Err(r) => return r,
    };
    let response = if is_finished(&dd.status) { 409 } else { 204 };
    dd.reports.push(StatusReport {
        status: status.clone(),
        substate,
        at: SystemTime::now(),
        elapsed,
        response,
    });
    if response == 409 {
        let why = if dd.status == "aborted" {
            "deployment aborted".to_owned()
        } else {
            format!("device deployment already finished ({})", dd.status)
        };
        return error_response(ctx.shared, 409, &why);
    }
    dd.status = status;
    Response::new(204)
}

pub(super) fn handle_log(ctx: &mut Ctx, deployment: &str) -> Response {
    if ctx.req.method != "PUT" {
        return ctx.method_not_allowed("PUT");
    }
    let mut st = ctx.shared.lock();
    let device = match ctx.authenticate(&mut st) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = match ctx.json_body(&mut st) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let messages = match parse_log(&body) {
        Ok(m) => m,
        Err(p) => return ctx.refuse(&mut st, 400, p),
    };
    let dd = match device_deployment(ctx, &mut st, &device, deployment) {
        Ok(dd) => dd,
        Err(r) => return r,
    };
    dd.logs.push(messages);
    Response::new(204)
}

pub(super) fn parse_log(body: &Value) -> Result<Vec<LogMessage>, String> {
    let Some(obj) = body.as_object() else {
        return Err("log body is not a JSON object".into());
    };
    let Some(messages) = obj.get("messages") else {
        return Err("messages missing".into());
    };
    let Some(list) = messages.as_array() else {
        return Err("messages is not an array".into());
    };
    if list.is_empty() {
        return Err("messages is empty".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let Some(m) = m.as_object() else {
            return Err(format!("message {i} is not an object"));
        };
        let field = |name: &str| match m.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("message {i}: {name} is not a string")),
            None => Err(format!("message {i}: {name} missing")),
        };
        let timestamp = field("timestamp")?;
        let level = field("level")?;
        let message = field("message")?;
        if !is_rfc3339(&timestamp) {
            return Err(format!(
                "message {i}: timestamp {timestamp:?} is not RFC 3339"
            ));
        }
        out.push(LogMessage {
            timestamp,
            level,
            message,
        });
    }
    Ok(out)
}
