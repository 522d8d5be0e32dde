//! Calls to the Mender server's device API with the device's JWT.
//!
//! The token lives in memory only. A call without a token authenticates
//! first; a 401 answer (or, with several servers, a transport error) leads
//! to one new authentication, trying the servers in order, and one retry of
//! the call (`docs/managed-mode.md`).

use std::io::Read;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::deployment::DeploymentInstruction;

use crate::artifact::header::Provides;
use crate::device_key::DeviceKey;
use crate::identity::{AttributeValue, Attributes};

const AUTH_PATH: &str = "/api/devices/v1/authentication/auth_requests";
const INVENTORY_PATH: &str = "/api/devices/v1/inventory/device/attributes";
pub(super) const NEXT_V1_PATH: &str = "/api/devices/v1/deployments/device/deployments/next";
const NEXT_V2_PATH: &str = "/api/devices/v2/deployments/device/deployments/next";
const DEPLOYMENTS_V2_PATH: &str = "/api/devices/v2/deployments/device/deployments";
const DEPLOYMENTS_PATH: &str = "/api/devices/v1/deployments/device/deployments";

/// The largest API answer read (deployment instructions are small; an
/// update control map is at most 64 KiB).
const MAX_RESPONSE: u64 = 1 << 20;

/// The longest token accepted. Mender's JWTs are under 2 KiB (an RS256
/// signature of a 4096-bit key is 683 characters); 16 KiB leaves room for
/// large claims and stays far below what the HTTP client can send in a
/// header (128 KiB output buffer) and what proxies take (often 8-16 KiB
/// per header line).
pub const MAX_TOKEN: usize = 16 << 10;

/// The longest deployment id accepted (Mender's are 36-character UUIDs).
pub use crate::states::MAX_DEPLOYMENT_ID;

/// The longest an API call may take, answer body included: a server that
/// trickles its answer cannot hold the daemon (the per-read timeout alone
/// would let one byte a minute go on for ever).
pub const API_CALL_DEADLINE: Duration = Duration::from_secs(300);

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No server accepted the device (yet).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server could not be reached or the connection broke.
    #[error("{0}")]
    Transport(String),
    /// The server answered with an unexpected status.
    #[error("{what}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    /// The server answered 409 to a status report: the deployment was
    /// aborted (or already finished) on the server.
    #[error("the deployment was aborted on the server")]
    Aborted,
    /// The answer did not have the documented shape.
    #[error("{0}")]
    Invalid(String),
    /// The request failed in the client, before reaching the server (a
    /// header the HTTP client cannot send): treated like a 401.
    #[error("{0}")]
    Local(String),
}

/// Deployment status values (`docs/managed-mode.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Downloading,
    PauseBeforeInstalling,
    Installing,
    PauseBeforeRebooting,
    Rebooting,
    PauseBeforeCommitting,
    Success,
    Failure,
    AlreadyInstalled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Downloading => "downloading",
            Status::PauseBeforeInstalling => "pause_before_installing",
            Status::Installing => "installing",
            Status::PauseBeforeRebooting => "pause_before_rebooting",
            Status::Rebooting => "rebooting",
            Status::PauseBeforeCommitting => "pause_before_committing",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::AlreadyInstalled => "already-installed",
        }
    }
}

/// The longest server error message kept for a log line.
const MAX_SERVER_MESSAGE: usize = 1024;

/// Checks that an authentication answer is a token: at most
/// [`MAX_TOKEN`] bytes of visible ASCII forming three non-empty base64url
/// parts separated by dots (a JWT). Anything else would be sent back in
/// every `Authorization` header, where it could break or inject headers.
/// Trailing whitespace (a final newline) is dropped. The error never
/// contains the body.
pub fn parse_token(body: &[u8]) -> Result<String, String> {
    let body = body.trim_ascii();
    if body.len() > MAX_TOKEN {
        return Err(format!("the token is longer than {MAX_TOKEN} bytes"));
    }
    if body.is_empty() {
        return Err("the token is empty".into());
    }
    if let Some(i) = body.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "byte {i} of the token is not visible ASCII (0x{:02x})",
            body[i]
        ));
    }
    let parts: Vec<&[u8]> = body.split(|&b| b == b'.').collect();
    if parts.len() != 3 {
        return Err(format!(
            "the token has {} dot-separated parts, a JWT has 3",
            parts.len()
        ));
    }
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=');
    if let Some(n) = parts
        .iter()
        .position(|p| p.is_empty() || !p.iter().all(base64url))
    {
        return Err(format!("part {} of the token is not base64url", n + 1));
    }
    // Visible ASCII throughout: valid UTF-8.
    Ok(String::from_utf8_lossy(body).into_owned())
}

/// The outcome of a `next` call.
#[derive(Debug)]
pub enum NextDeployment {
    None,
    Deploy(DeploymentInstruction),
    /// The server offered a deployment the device cannot use: report it
    /// failed.
    Malformed {
        id: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Token {
    jwt: String,
    /// The server that issued it; API calls go there.
    server: String,
}

/// The device's connection to its server(s).
pub struct ServerClient {
    agent: ureq::Agent,
    servers: Vec<String>,
    tenant_token: String,
    key: DeviceKey,
    /// The identity as the `id_data` string of the auth request.
    id_data: String,
    /// `DeviceTier`, sent as `tier` in the auth request when set.
    device_tier: Option<String>,
    token: Option<Token>,
    /// The server answered 404 to POST `next` v2 (no update control maps
    /// there): use v1 from now on.
    next_v1_only: bool,
    /// The server answered 404 to POST `next` v1: use GET from now on.
    next_get_only: bool,
    /// The server answered 405 to PUT inventory: use PATCH from now on.
    inventory_patch_only: bool,
    /// D-Bus (`GetJwtToken`, the `JwtTokenStateChange` signal): where
    /// every change of the token is published, when the daemon shares it.
    shared_token: Option<super::token::TokenCell>,
    /// [`API_CALL_DEADLINE`] (shorter in tests).
    deadline: Duration,
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// The body to parse; one larger than [`MAX_RESPONSE`] (read one byte
    /// past it) is refused rather than parsed cut short.
    fn complete(&self, what: &str) -> Result<&[u8], ApiError> {
        if self.body.len() as u64 > MAX_RESPONSE {
            return Err(ApiError::Invalid(format!(
                "{what}: the answer is larger than {MAX_RESPONSE} bytes"
            )));
        }
        Ok(&self.body)
    }

    fn message(&self) -> String {
        // The server's `{"error": ...}`, else the start of the body.
        #[derive(Deserialize)]
        struct ServerError {
            error: String,
        }
        // Either way the text goes into log lines: control characters are
        // escaped (a server must not write lines of its own into the log)
        // and it is cut to what a message needs.
        let text = match serde_json::from_slice::<ServerError>(&self.body) {
            Ok(e) => e.error,
            Err(_) => String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned(),
        };
        let mut shown = crate::artifact::escape_controls(&text);
        if shown.len() > MAX_SERVER_MESSAGE {
            let mut end = MAX_SERVER_MESSAGE;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
            shown.push_str("...");
        }
        shown
    }
}

impl ServerClient {
    pub fn new(
        agent: ureq::Agent,
        servers: Vec<String>,
        tenant_token: String,
        key: DeviceKey,
        id_data: String,
    ) -> ServerClient {
        ServerClient {
            agent,
            servers,
            tenant_token,
            key,
            id_data,
            device_tier: None,
            token: None,
            next_v1_only: false,
            next_get_only: false,
            inventory_patch_only: false,
            shared_token: None,
            deadline: API_CALL_DEADLINE,
        }
    }

    /// `DeviceTier` (Mender 5.1): sent as `tier` in each auth request from
    /// now on; `None` leaves it out, so the body is what 3.x/4.x send.
    pub fn set_device_tier(&mut self, tier: Option<String>) {
        self.device_tier = tier;
    }

    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// The current token and the server that issued it.
    pub fn token(&self) -> Option<(&str, &str)> {
        self.token
            .as_ref()
            .map(|t| (t.jwt.as_str(), t.server.as_str()))
    }

    /// Forgets the token: the next call authenticates again (done before
    /// the commit, so the new software must prove it can authenticate).
    pub fn drop_token(&mut self) {
        self.token = None;
        self.publish_token(false); // D-Bus
    }

    /// D-Bus: publishes the token (and each change of it) to `cell`.
    pub fn share_token(&mut self, cell: super::token::TokenCell) {
        self.shared_token = Some(cell);
        self.publish_token(false);
    }

    /// D-Bus: the cell the token is published to, if shared.
    pub fn token_cell(&self) -> Option<&super::token::TokenCell> {
        self.shared_token.as_ref()
    }

    /// D-Bus: `announce` also when unchanged (an authentication's result).
    fn publish_token(&self, announce: bool) {
        if let Some(cell) = &self.shared_token {
            cell.publish(self.token(), announce);
        }
    }

    /// Authenticates with the first server that accepts the device.
    pub fn authenticate(&mut self) -> Result<(), ApiError> {
        let result = self.authenticate_once();
        // D-Bus: a new token is always announced; a failure only when it
        // loses a token. Announcing "no token" after every failed attempt
        // of a pending device (twice a poll) buries the signal of the token
        // that finally comes: mender-connect keeps one pending signal and
        // drops newer ones (docs/managed-mode.md).
        self.publish_token(result.is_ok());
        result
    }

    fn authenticate_once(&mut self) -> Result<(), ApiError> {
        self.token = None;
        #[derive(Serialize)]
        struct AuthRequest<'a> {
            id_data: &'a str,
            tenant_token: &'a str,
            pubkey: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            tier: Option<&'a str>,
        }
        let pubkey = self.key.public_key_pem();
        let mut body = serde_json::to_vec(&AuthRequest {
            id_data: &self.id_data,
            tenant_token: &self.tenant_token,
            pubkey: &pubkey,
            tier: self.device_tier.as_deref(),
        })
        .map_err(|e| ApiError::Invalid(format!("encoding the auth request: {e}")))?;
        // Mender 3.x's JSON encoder ends the body with a newline; the
        // signature covers the exact bytes.
        body.push(b'\n');
        let signature = self
            .key
            .signature_header(&body)
            .map_err(|e| ApiError::Auth(format!("signing the auth request: {e:#}")))?;
        if self.servers.is_empty() {
            return Err(ApiError::Auth("no server configured (ServerURL)".into()));
        }
        let mut failures = Vec::new();
        for server in self.servers.clone() {
            let url = format!("{server}{AUTH_PATH}");
            let result = self
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(self.deadline))
                .build()
                .header("Content-Type", "application/json")
                .header("Authorization", &format!("Bearer {}", self.tenant_token))
                .header("X-MEN-Signature", &signature)
                .send(&body[..]);
            // One byte past the cap tells an oversized token from a full
            // one, without reading a huge body.
            let answer = result
                .map_err(|e| transport(&url, e))
                .and_then(|r| read_answer(r, MAX_TOKEN as u64 + 1));
            match answer {
                Ok(answer) if answer.status == 200 => match parse_token(&answer.body) {
                    Ok(jwt) => {
                        log::info!("authenticated with {server}");
                        self.token = Some(Token { jwt, server });
                        return Ok(());
                    }
                    Err(why) => {
                        log::error!(
                            "{server}: the authentication answer is not a usable token: {why}"
                        );
                        failures.push(format!("{server}: not a usable token: {why}"));
                    }
                },
                Ok(answer) if answer.status == 401 => failures.push(format!(
                    "{server}: the device is not accepted (yet): {}",
                    answer.message()
                )),
                Ok(answer) => failures.push(format!(
                    "{server}: HTTP {}: {}",
                    answer.status,
                    answer.message()
                )),
                Err(e) => failures.push(format!("{e}")),
            }
        }
        Err(ApiError::Auth(failures.join("; ")))
    }

    /// One API call with the token; re-authenticates and retries once on
    /// 401 (or on a transport error when there are other servers).
    fn call(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer, ApiError> {
        let mut fresh = false;
        if self.token.is_none() {
            self.authenticate()?;
            fresh = true;
        }
        loop {
            let token = self
                .token
                .clone()
                .ok_or_else(|| ApiError::Auth("no token".into()))?;
            let url = format!("{}{path}", token.server);
            let result = self.send(method, &url, &token.jwt, body);
            // A request that could not even be built or written with this
            // token (a header too large or invalid) is the token's fault:
            // like a 401, it is dropped and a new one fetched.
            let refused = match &result {
                Ok(answer) => answer.status == 401,
                Err(ApiError::Local(_)) => true,
                Err(_) => false,
            };
            let retry =
                refused || matches!(&result, Err(ApiError::Transport(_)) if self.servers.len() > 1);
            if !retry || fresh {
                if refused {
                    self.token = None;
                    self.publish_token(false); // D-Bus
                }
                return result;
            }
            log::info!(
                "{method} {path}: not authorized with the current token; authenticating again"
            );
            self.authenticate()?;
            fresh = true;
        }
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        jwt: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, ApiError> {
        let bearer = format!("Bearer {jwt}");
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(self.deadline))
                .build()
                .header("Authorization", &bearer)
                .call(),
            (m, Some(body)) => {
                let request = match m {
                    "POST" => self.agent.post(url),
                    "PUT" => self.agent.put(url),
                    "PATCH" => self.agent.patch(url),
                    _ => return Err(ApiError::Invalid(format!("unsupported method {m}"))),
                };
                request
                    .config()
                    .timeout_global(Some(self.deadline))
                    .build()
                    .header("Authorization", &bearer)
                    .header("Content-Type", "application/json")
                    .send(body)
            }
            (m, None) => return Err(ApiError::Invalid(format!("{m} needs a body"))),
        };
        result
            .map_err(|e| transport(url, e))
            .and_then(|r| read_answer(r, MAX_RESPONSE + 1))
    }

    /// Sends the inventory: PUT, or PATCH when the server does not know
    /// PUT (405; Mender servers before 2.6).
    pub fn send_inventory(&mut self, attributes: &Attributes) -> Result<(), ApiError> {
        #[derive(Serialize)]
        struct Attribute<'a> {
            name: &'a str,
            value: &'a AttributeValue,
        }
        let list: Vec<Attribute> = attributes
            .iter()
            .map(|(name, value)| Attribute { name, value })
            .collect();
        let body = serde_json::to_vec(&list)
            .map_err(|e| ApiError::Invalid(format!("encoding the inventory: {e}")))?;
        if !self.inventory_patch_only {
            let answer = self.call("PUT", INVENTORY_PATH, Some(&body))?;
            match answer.status {
                200 | 201 | 204 => return Ok(()),
                405 => {
                    log::info!("the server does not accept PUT for the inventory; using PATCH");
                    self.inventory_patch_only = true;
                }
                status => return Err(status_error("PUT inventory", status, &answer)),
            }
        }
        let answer = self.call("PATCH", INVENTORY_PATH, Some(&body))?;
        match answer.status {
            200 | 201 | 204 => Ok(()),
            status => Err(status_error("PATCH inventory", status, &answer)),
        }
    }

    /// Asks for a deployment: POST with the provides, GET when the server
    /// does not know POST (404).
    pub fn next_deployment(
        &mut self,
        provides: &Provides,
        device_type: &str,
    ) -> Result<NextDeployment, ApiError> {
        let mut answer = None;
        if !self.next_v1_only {
            // v2 (enterprise servers): the same provides, and the update
            // control map of the deployment.
            let mut provides = provides.clone();
            provides.insert("device_type".into(), device_type.into());
            let body = serde_json::to_vec(&serde_json::json!({
                "device_provides": provides,
                "update_control_map": true,
            }))
            .map_err(|e| ApiError::Invalid(format!("encoding the provides: {e}")))?;
            let a = self.call("POST", NEXT_V2_PATH, Some(&body))?;
            if a.status == 404 {
                log::info!("the server has no deployments/next v2; using v1");
                self.next_v1_only = true;
            } else {
                answer = Some(a);
            }
        }
        if answer.is_none() && !self.next_get_only {
            let mut body = provides.clone();
            body.insert("device_type".into(), device_type.into());
            let body = serde_json::to_vec(&body)
                .map_err(|e| ApiError::Invalid(format!("encoding the provides: {e}")))?;
            let a = self.call("POST", NEXT_V1_PATH, Some(&body))?;
            if a.status == 404 {
                log::info!("the server does not accept POST deployments/next; using GET");
                self.next_get_only = true;
            } else {
                answer = Some(a);
            }
        }
        let answer = match answer {
            Some(a) => a,
            None => {
                let name = provides
                    .get("artifact_name")
                    .map(String::as_str)
                    .unwrap_or("");
                let path = format!(
                    "{NEXT_V1_PATH}?artifact_name={}&device_type={}",
                    url_encode(name),
                    url_encode(device_type)
                );
                self.call("GET", &path, None)?
            }
        };
        match answer.status {
            204 => Ok(NextDeployment::None),
            200 => match DeploymentInstruction::parse(answer.complete("deployments/next")?) {
                Ok(d) => Ok(NextDeployment::Deploy(d)),
                Err((Some(id), reason)) => Ok(NextDeployment::Malformed { id, reason }),
                Err((None, reason)) => Err(ApiError::Invalid(reason)),
            },
            status => Err(status_error("deployments/next", status, &answer)),
        }
    }

    /// Reports a deployment's status; 409 is [`ApiError::Aborted`].
    pub fn report_status(
        &mut self,
        deployment_id: &str,
        status: Status,
        substate: Option<&str>,
    ) -> Result<(), ApiError> {
        #[derive(Serialize)]
        struct Report<'a> {
            status: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            substate: Option<&'a str>,
        }
        let body = serde_json::to_vec(&Report {
            status: status.as_str(),
            substate,
        })
        .map_err(|e| ApiError::Invalid(format!("encoding the status: {e}")))?;
        let path = format!("{DEPLOYMENTS_PATH}/{}/status", url_encode(deployment_id));
        let answer = self.call("PUT", &path, Some(&body))?;
        match answer.status {
            200 | 204 => Ok(()),
            409 => Err(ApiError::Aborted),
            s => Err(status_error(
                &format!("status {}", status.as_str()),
                s,
                &answer,
            )),
        }
    }

    /// The current update control map of a deployment (`docs/managed-mode.md`): `None`
    /// when the server has none for it any more (404: the deployment is
    /// gone or aborted).
    pub fn control_map(
        &mut self,
        deployment_id: &str,
    ) -> Result<Option<serde_json::Value>, ApiError> {
        let path = format!(
            "{DEPLOYMENTS_V2_PATH}/{}/update_control_map",
            url_encode(deployment_id)
        );
        let answer = self.call("GET", &path, None)?;
        match answer.status {
            200 => {
                #[derive(Deserialize)]
                struct Answer {
                    update_control_map: Option<serde_json::Value>,
                }
                let a: Answer = serde_json::from_slice(answer.complete("the update control map")?)
                    .map_err(|e| {
                        ApiError::Invalid(format!("the update control map is not valid JSON: {e}"))
                    })?;
                Ok(a.update_control_map.filter(|m| !m.is_null()))
            }
            404 => Ok(None),
            s => Err(status_error("update control map", s, &answer)),
        }
    }

    /// Uploads the deployment log (after a `failure` report).
    pub fn upload_log(
        &mut self,
        deployment_id: &str,
        records: &[serde_json::Value],
    ) -> Result<(), ApiError> {
        #[derive(Serialize)]
        struct Log<'a> {
            messages: &'a [serde_json::Value],
        }
        let body = serde_json::to_vec(&Log { messages: records })
            .map_err(|e| ApiError::Invalid(format!("encoding the log: {e}")))?;
        let path = format!("{DEPLOYMENTS_PATH}/{}/log", url_encode(deployment_id));
        let answer = self.call("PUT", &path, Some(&body))?;
        match answer.status {
            200 | 204 => Ok(()),
            s => Err(status_error("deployment log", s, &answer)),
        }
    }
}

fn transport(url: &str, e: ureq::Error) -> ApiError {
    let message = format!("{}: {e}", strip_query(url));
    match e {
        // Failed here, before the server saw the request: a header value
        // the HTTP crate refuses, or a request head larger than the
        // client's buffer.
        ureq::Error::Http(_) => ApiError::Local(message),
        ureq::Error::Protocol(ureq_proto::Error::OutputOverflow) => ApiError::Local(message),
        _ => ApiError::Transport(message),
    }
}

/// A URL without its query (pre-signed URLs carry secrets there).
pub(crate) fn strip_query(url: &str) -> &str {
    url.split_once('?').map_or(url, |(u, _)| u)
}

/// The status and at most `cap` bytes of the body (the rest is not read:
/// the connection is dropped). Whoever parses the body refuses one that
/// fills the cap.
fn read_answer(response: ureq::http::Response<ureq::Body>, cap: u64) -> Result<Answer, ApiError> {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(cap)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::Transport(format!("reading the answer: {e}")))?;
    Ok(Answer { status, body })
}

fn status_error(what: &str, status: u16, answer: &Answer) -> ApiError {
    ApiError::Status {
        what: what.to_string(),
        status,
        message: answer.message(),
    }
}

/// Percent-encoding of a query value or path segment (RFC 3986 unreserved
/// characters kept).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// For the fuzz target `server_reply` only: a `deployments/next` 200 body
/// as [`ServerClient::next_deployment`] parses it, and any body as the
/// message of an error answer.
#[doc(hidden)]
pub fn fuzz_parse_reply(
    body: &[u8],
) -> (
    Result<DeploymentInstruction, (Option<String>, String)>,
    String,
) {
    let answer = Answer {
        status: 500,
        body: body.to_vec(),
    };
    (DeploymentInstruction::parse(body), answer.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_cannot_write_log_lines() {
        let (parsed, message) = fuzz_parse_reply(br#"{"error":"a\nb"}"#);
        assert!(parsed.is_err());
        assert_eq!(message, "a\\nb");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(5000));
        let (_, message) = fuzz_parse_reply(long.as_bytes());
        assert!(message.len() <= MAX_SERVER_MESSAGE + 3, "{}", message.len());
        let name = br#"{"id":"d1","artifact":{"artifact_name":"a\nartifact_name=evil","source":{"uri":"u"},"device_types_compatible":["t"]}}"#;
        let (id, reason) = DeploymentInstruction::parse(name).unwrap_err();
        assert_eq!(id.as_deref(), Some("d1"));
        assert!(!reason.contains('\n'), "{reason}");
        assert!(reason.contains("control characters"), "{reason}");
    }

    #[test]
    fn instruction_fields_are_required() {
        let ok = br#"{"id":"d1","artifact":{"artifact_name":"a","source":{"uri":"http://x/y","expire":"z"},"device_types_compatible":["t"]}}"#;
        let d = DeploymentInstruction::parse(ok).unwrap();
        assert_eq!(d.id, "d1");
        assert_eq!(d.uri, "http://x/y");
        let no_uri = br#"{"id":"d1","artifact":{"artifact_name":"a","source":{},"device_types_compatible":["t"]}}"#;
        let e = DeploymentInstruction::parse(no_uri).unwrap_err();
        assert_eq!(e.0.as_deref(), Some("d1"));
        assert!(e.1.contains("artifact.source.uri"), "{}", e.1);
        let no_types = br#"{"id":"d1","artifact":{"artifact_name":"a","source":{"uri":"u"},"device_types_compatible":[]}}"#;
        assert!(DeploymentInstruction::parse(no_types).is_err());
        assert_eq!(DeploymentInstruction::parse(b"{}").unwrap_err().0, None);
        assert!(DeploymentInstruction::parse(b"not json").is_err());
    }

    #[test]
    fn tokens_must_look_like_jwts() {
        assert_eq!(parse_token(b"aGVh.cGF5.c2ln\n").unwrap(), "aGVh.cGF5.c2ln");
        assert_eq!(parse_token(b"a-_=.b.c").unwrap(), "a-_=.b.c");
        let refused: &[&[u8]] = &[
            b"",
            b"  \n",
            b"aGVh.cGF5",
            b"a.b.c.d",
            b"a..c",
            b"a.b.c d",
            b"a.b.c\r\nX-Evil: 1",
            b"a.b.\x01c",
            "a.b.cé".as_bytes(),
            b"a+/.b.c",
        ];
        for body in refused {
            let e = parse_token(body).unwrap_err();
            // The reason never repeats the body.
            assert!(!e.contains("Evil"), "{e}");
        }
        let mut big = vec![b'a'; MAX_TOKEN + 1];
        big[10] = b'.';
        big[20] = b'.';
        assert!(parse_token(&big).unwrap_err().contains("longer than"));
        big.pop();
        assert!(parse_token(&big).is_ok());
    }

    /// A loopback server for `ServerClient`: a valid token for auth
    /// requests, 204 to calls with that token, 401 to others; `trickle`
    /// answers calls with a 100-byte body sent a byte every 200 ms.
    /// Returns the URL and the count of auth requests.
    fn tiny_server(trickle: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let auths = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = auths.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(20) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < (1 << 20) {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                let _ = stream.read_exact(&mut body);
                let reply: &[u8] = if head.contains("auth_requests") {
                    counter.fetch_add(1, Ordering::SeqCst);
                    b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\naGVh.cGF5.c2ln"
                } else if !head.contains("authorization: bearer agvh.cgf5.c2ln\r\n") {
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else if trickle {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
                    for _ in 0..100 {
                        if stream.write_all(b"x").is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    continue;
                } else {
                    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
                };
                let _ = stream.write_all(reply);
            }
        });
        (url, auths)
    }

    fn test_client(url: &str, dir: &std::path::Path) -> ServerClient {
        let (key, _) = DeviceKey::load_or_generate(
            &dir.join("key.pem"),
            crate::device_key::DeviceKeyType::Ed25519,
        )
        .unwrap();
        let agent = crate::http::agent_with(&crate::http::HttpOptions {
            status_as_response: true,
            ..Default::default()
        })
        .unwrap();
        ServerClient::new(
            agent,
            vec![url.to_string()],
            String::new(),
            key,
            r#"{"mac":"m"}"#.into(),
        )
    }

    #[test]
    fn a_token_the_client_cannot_send_is_replaced_like_a_401() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let (url, auths) = tiny_server(false);
        let mut client = test_client(&url, dir.path());
        // Larger than the HTTP client's output buffer, then a header value
        // the HTTP crate refuses: each fails before reaching the server.
        for jwt in ["a".repeat(200 << 10), "a.b\nc".to_string()] {
            client.token = Some(Token {
                jwt,
                server: url.clone(),
            });
            client
                .send_inventory(&Attributes::new())
                .expect("the call goes through after a new authentication");
            assert_eq!(client.token().map(|t| t.0), Some("aGVh.cGF5.c2ln"));
        }
        assert_eq!(auths.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_trickled_answer_ends_at_the_call_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _) = tiny_server(true);
        let mut client = test_client(&url, dir.path());
        client.deadline = Duration::from_secs(1);
        let started = std::time::Instant::now();
        let result = client.send_inventory(&Attributes::new());
        assert!(result.is_err(), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn url_encoding_keeps_unreserved_characters() {
        assert_eq!(url_encode("release-1.0_a~b"), "release-1.0_a~b");
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
