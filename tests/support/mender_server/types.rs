//! The public types of the test server: what tests configure it with and
//! what they read back (devices, deployments, requests, violations, hostile
//! replies).

use super::*;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// The endpoint a request was routed to (used by faults and the request log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Auth,
    Inventory,
    NextV2,
    NextV1Post,
    NextV1Get,
    Status,
    Log,
    Download,
    /// `GET /api/devices/v2/deployments/device/deployments/{id}/update_control_map`
    /// (enterprise; spec 5.7).
    ControlMap,
    /// `GET /api/devices/v1/deviceconnect/connect` (the remote-terminal
    /// WebSocket; `deviceconnect.rs`).
    DeviceConnect,
    /// Anything else (answered 404/405 and recorded as a violation).
    Other,
}

/// Authorisation state of a device (deviceauth's accepted/pending/rejected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthStatus {
    Accepted,
    /// 401 until [`MenderServer::accept_device`].
    Pending,
    /// 401; tokens already issued are revoked.
    Rejected,
}

/// One inventory attribute as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    /// A string, a number, or an array of strings or of numbers.
    pub value: Value,
    pub description: Option<String>,
}

/// One `PUT .../{id}/status` as received (also the refused ones).
#[derive(Clone, Debug)]
pub struct StatusReport {
    pub status: String,
    pub substate: Option<String>,
    pub at: SystemTime,
    /// Since the server started.
    pub elapsed: Duration,
    /// What the server answered: 204, or 409 (aborted / already finished).
    pub response: u16,
}

/// One record of an uploaded deployment log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogMessage {
    pub timestamp: String,
    pub level: String,
    pub message: String,
}

/// A deployment as seen by one device.
#[derive(Clone, Debug)]
pub struct DeviceDeployment {
    pub deployment_id: String,
    /// `pending` (offered, nothing reported), a reported status, or the
    /// server-side `already-installed`, `noartifact`, `aborted`.
    pub status: String,
    pub reports: Vec<StatusReport>,
    /// One entry per log upload.
    pub logs: Vec<Vec<LogMessage>>,
    /// How many times `next` returned this deployment to the device.
    pub offered: u32,
    /// Download requests for its artifact by this device.
    pub downloads: u32,
}

/// A snapshot of a device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub id: String,
    /// The `id_data` string of the latest auth request.
    pub id_data: String,
    /// `id_data` parsed (a JSON object).
    pub identity: Value,
    pub pubkey: String,
    /// "RSA", "ECDSA P-256", "ECDSA P-384" or "Ed25519".
    pub key_type: &'static str,
    pub auth_status: AuthStatus,
    /// The `tenant_token` of the latest auth request (None when absent).
    pub tenant_token: Option<String>,
    pub auth_requests: u64,
    /// Requests attributed to this device (auth, JWT or download link).
    pub requests: u64,
    pub inventory: Vec<Attribute>,
    /// Successful inventory PUT/PATCH requests.
    pub inventory_submissions: u64,
    /// The provides of the latest `next` request (GET: the two parameters).
    pub provides: Map<String, Value>,
    pub deployments: Vec<DeviceDeployment>,
}

/// One line of the request log.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// The `X-MEN-RequestID` of the response (hexadecimal there).
    pub id: u64,
    pub at: SystemTime,
    pub elapsed: Duration,
    pub device: Option<String>,
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    pub endpoint: Endpoint,
    pub status: u16,
    /// Body bytes written.
    pub bytes_sent: u64,
}

/// A request that broke the API contract.
#[derive(Clone, Debug)]
pub struct Violation {
    pub at: SystemTime,
    pub device: Option<String>,
    pub method: String,
    pub path: String,
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(device) = &self.device {
            write!(f, " (device {device})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// One artifact download request.
#[derive(Clone, Debug)]
pub struct DownloadRecord {
    pub at: SystemTime,
    pub device: Option<String>,
    pub deployment_id: String,
    pub artifact_id: String,
    /// The `Range` header as sent.
    pub range: Option<String>,
    pub status: u16,
    /// First artifact offset sent.
    pub start: u64,
    /// Body bytes actually written.
    pub bytes_sent: u64,
    /// The connection was closed early on purpose (cut fault).
    pub cut: bool,
    pub authorization_sent: bool,
}

/// A reply a hostile (or broken) server gives instead of the normal one
/// ([`MenderServer::replace_next`]): the request is still handled as usual
/// (a device is registered, a deployment offered), only the answer differs.
#[derive(Clone, Debug)]
pub struct HostileReply {
    pub status: u16,
    /// Sent as given; a `Content-Length` here replaces the true one (a lie).
    pub headers: Vec<(String, String)>,
    pub body: HostileBody,
}

/// The body of a [`HostileReply`].
#[derive(Clone, Debug)]
pub enum HostileBody {
    Bytes(Vec<u8>),
    /// `len` copies of `byte`, made while sent: a 10 GiB body costs no
    /// memory (sending stops when the client hangs up).
    Filler {
        byte: u8,
        len: u64,
    },
    /// The bytes one at a time, `interval` apart (a trickling server).
    Trickle {
        bytes: Vec<u8>,
        interval: Duration,
    },
}

impl HostileReply {
    pub fn new(status: u16, body: HostileBody) -> HostileReply {
        HostileReply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// `status` with `body` as `content_type`.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HostileReply {
        Self::new(status, HostileBody::Bytes(body.into())).header("Content-Type", content_type)
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> HostileReply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Parameters of a deployment; see [`MenderServer::create_deployment`].
#[derive(Clone)]
pub struct NewDeployment {
    pub(super) artifact: Arc<[u8]>,
    pub(super) artifact_name: String,
    pub(super) device_types: Vec<String>,
    pub(super) devices: Option<Vec<String>>,
    pub(super) forced: bool,
    pub(super) control_map: Option<Value>,
}

impl NewDeployment {
    /// Reads the artifact file (panics if it cannot: test set-up error).
    pub fn from_file(path: impl AsRef<Path>, artifact_name: &str, device_types: &[&str]) -> Self {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("reading artifact {}: {e}", path.display()));
        Self::from_bytes(bytes, artifact_name, device_types)
    }

    pub fn from_bytes(
        bytes: impl Into<Vec<u8>>,
        artifact_name: &str,
        device_types: &[&str],
    ) -> Self {
        NewDeployment {
            artifact: Arc::from(bytes.into()),
            artifact_name: artifact_name.to_owned(),
            device_types: device_types.iter().map(|s| s.to_string()).collect(),
            devices: None,
            forced: false,
            control_map: None,
        }
    }

    /// An update control map sent with the deployment (v2 `next` when the
    /// device asks for maps, and the map endpoint). Its `id` should be the
    /// deployment's id: use [`MenderServer::set_control_map`] after
    /// creating the deployment when the id is needed.
    pub fn with_control_map(mut self, map: Value) -> Self {
        self.control_map = Some(map);
        self
    }

    /// Only these devices (ids) get the deployment (default: every device).
    pub fn for_devices<S: AsRef<str>>(mut self, ids: &[S]) -> Self {
        self.devices = Some(ids.iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }

    /// Offered even to devices that already run this artifact name.
    pub fn forced(mut self) -> Self {
        self.forced = true;
        self
    }
}

/// The device id the server derives from a PEM `PUBLIC KEY` (None if the key
/// cannot be parsed).
pub fn device_id_of(pubkey_pem: &str) -> Option<String> {
    parse_public_key(pubkey_pem).ok().map(|k| k.device_id())
}
