//! Routing a request to its handler, the per-request context (bearer token,
//! JSON body, refusals recorded as violations) and injected faults.

use super::*;
use std::collections::VecDeque;

use serde_json::{Value, json};

thread_local! {
    /// The id of the request the connection thread is answering.
    pub(super) static REQUEST_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

pub(super) fn error_response(_shared: &Shared, status: u16, message: &str) -> Response {
    let id = format!("{:016x}", REQUEST_ID.with(|c| c.get()));
    let body = json!({"error": message, "request_id": id}).to_string();
    Response::new(status).with_body("application/json", body)
}

/// Per-request context.
pub(super) struct Ctx<'a> {
    pub(super) shared: &'a Shared,
    pub(super) req: &'a Request,
    pub(super) device: Option<String>,
}

impl Ctx<'_> {
    /// Records a violation and answers `status`.
    pub(super) fn refuse(
        &self,
        st: &mut State,
        status: u16,
        problem: impl Into<String>,
    ) -> Response {
        let problem = problem.into();
        st.violation(
            self.device.as_deref(),
            &self.req.method,
            &self.req.target,
            problem.clone(),
        );
        error_response(self.shared, status, &problem)
    }

    pub(super) fn refuse_unlocked(&self, status: u16, problem: impl Into<String>) -> Response {
        let mut st = self.shared.lock();
        self.refuse(&mut st, status, problem)
    }

    /// The device of the `Bearer` token; 401 (a violation when the header is
    /// missing or malformed, not when the token expired).
    pub(super) fn authenticate(&mut self, st: &mut State) -> Result<String, Response> {
        let Some(auth) = self.req.header("authorization") else {
            return Err(self.refuse(st, 401, "missing Authorization: Bearer <JWT>"));
        };
        let token = match auth.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                token.trim()
            }
            _ => {
                return Err(self.refuse(
                    st,
                    401,
                    format!("malformed Authorization header {auth:?}"),
                ));
            }
        };
        match st.tokens.get(token) {
            Some(device) => {
                self.device = Some(device.clone());
                Ok(device.clone())
            }
            None => Err(error_response(self.shared, 401, "invalid or expired token")),
        }
    }

    /// The JSON body, with `Content-Type: application/json` checked.
    pub(super) fn json_body(&self, st: &mut State) -> Result<Value, Response> {
        let ct = self.req.header("content-type").unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            // The device API only takes JSON; a wrong type is a client bug.
            return Err(self.refuse(
                st,
                400,
                format!("Content-Type {ct:?} is not application/json"),
            ));
        }
        serde_json::from_slice(&self.req.body)
            .map_err(|e| self.refuse(st, 400, format!("body is not valid JSON: {e}")))
    }

    pub(super) fn method_not_allowed(&self, allowed: &str) -> Response {
        let mut st = self.shared.lock();
        self.refuse(
            &mut st,
            405,
            format!(
                "method {} not allowed (allowed: {allowed})",
                self.req.method
            ),
        )
        .header("Allow", allowed)
    }
}

pub(super) enum Route {
    Auth,
    Inventory,
    NextV2,
    NextV1,
    Status(String),
    Log(String),
    ControlMap(String),
    Download { artifact: String, device: String },
    DeviceConnect,
    Unknown,
}

pub(super) fn route(path: &str) -> Route {
    const DEPLOYMENTS: &str = "/api/devices/v1/deployments/device/deployments/";
    match path {
        "/api/devices/v1/authentication/auth_requests" => return Route::Auth,
        "/api/devices/v1/inventory/device/attributes" => return Route::Inventory,
        "/api/devices/v1/deviceconnect/connect" => return Route::DeviceConnect,
        "/api/devices/v2/deployments/device/deployments/next" => return Route::NextV2,
        "/api/devices/v1/deployments/device/deployments/next" => return Route::NextV1,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix(DEPLOYMENTS)
        && let Some((id, what)) = rest.split_once('/')
        && !id.is_empty()
    {
        match what {
            "status" => return Route::Status(id.to_owned()),
            "log" => return Route::Log(id.to_owned()),
            _ => {}
        }
    }
    if let Some(rest) = path.strip_prefix("/api/devices/v2/deployments/device/deployments/")
        && let Some((id, "update_control_map")) = rest.split_once('/')
        && !id.is_empty()
    {
        return Route::ControlMap(id.to_owned());
    }
    if let Some(rest) = path.strip_prefix("/download/")
        && let Some((artifact, device)) = rest.split_once('/')
        && !artifact.is_empty()
        && !device.is_empty()
        && !device.contains('/')
    {
        return Route::Download {
            artifact: artifact.to_owned(),
            device: device.to_owned(),
        };
    }
    Route::Unknown
}

pub(super) fn handle(shared: &Shared, req: &Request) -> (Response, Option<String>, Endpoint) {
    let route = route(&req.path);
    let endpoint = match (&route, req.method.as_str()) {
        (Route::Auth, _) => Endpoint::Auth,
        (Route::Inventory, _) => Endpoint::Inventory,
        (Route::NextV2, _) => Endpoint::NextV2,
        (Route::NextV1, "GET") => Endpoint::NextV1Get,
        (Route::NextV1, _) => Endpoint::NextV1Post,
        (Route::Status(_), _) => Endpoint::Status,
        (Route::Log(_), _) => Endpoint::Log,
        (Route::ControlMap(_), _) => Endpoint::ControlMap,
        (Route::Download { .. }, _) => Endpoint::Download,
        (Route::DeviceConnect, _) => Endpoint::DeviceConnect,
        (Route::Unknown, _) => Endpoint::Other,
    };
    let mut ctx = Ctx {
        shared,
        req,
        device: None,
    };
    if let Route::Download { device, .. } = &route {
        ctx.device = Some(device.clone());
    }

    // Injected delay and failure.
    let (delay, failure) = {
        let mut st = shared.lock();
        let f = &mut st.faults;
        let delay = f.delay.get(&endpoint).copied().unwrap_or(f.delay_all);
        let failure = match f.fail_next.get_mut(&endpoint).and_then(VecDeque::pop_front) {
            Some(s) => Some(s),
            None => f.fail_always.get(&endpoint).copied(),
        };
        (delay, failure)
    };
    if !delay.is_zero() {
        shared.sleep(delay);
    }
    if let Some(status) = failure {
        if ctx.device.is_none() {
            // Attribute the request for the log (no checks, no violation).
            let bearer = req
                .header("authorization")
                .and_then(|a| a.split_once(' '))
                .map(|(_, t)| t.trim());
            if let Some(token) = bearer {
                ctx.device = shared.lock().tokens.get(token).cloned();
            }
        }
        let resp = error_response(shared, status, "injected failure");
        return (resp, ctx.device, endpoint);
    }

    let resp = match route {
        Route::Auth => handle_auth(&mut ctx),
        Route::Inventory => handle_inventory(&mut ctx),
        Route::NextV2 => handle_next(&mut ctx, endpoint),
        Route::NextV1 => handle_next(&mut ctx, endpoint),
        Route::Status(id) => handle_status(&mut ctx, &id),
        Route::Log(id) => handle_log(&mut ctx, &id),
        Route::ControlMap(id) => handle_control_map(&mut ctx, &id),
        Route::Download { artifact, device } => handle_download(&mut ctx, &artifact, &device),
        Route::DeviceConnect => handle_deviceconnect(&mut ctx),
        Route::Unknown => ctx.refuse_unlocked(404, "unknown path"),
    };
    let replacement = {
        let mut st = shared.lock();
        let f = &mut st.faults;
        match f
            .replace_next
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
        {
            Some(r) => Some(r),
            None => f.replace_always.get(&endpoint).cloned(),
        }
    };
    let resp = match replacement {
        None => resp,
        Some(r) => {
            // A hostile answer instead of a 101: no WebSocket after all.
            if let Some(upgrade) = &resp.upgrade {
                mark_closed(shared, upgrade.connection);
            }
            Response {
                status: r.status,
                headers: r.headers,
                body: Body::Hostile(r.body),
                download: None,
                upgrade: None,
            }
        }
    };
    (resp, ctx.device, endpoint)
}
