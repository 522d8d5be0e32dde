//! A Mender-compatible device-API server for integration tests, written on
//! `std::net` (one thread per connection, plain HTTP/1.1 with keep-alive,
//! loopback only) so that tests have byte-level control over faults.
//!
//! Shared by the test tiers through `tests/support/mod.rs`
//! (`use crate::support::mender_server::*;`).
//!
//! # Endpoints (all under [`MenderServer::url`])
//!
//! | Request | Endpoint | Answers |
//! |---|---|---|
//! | `POST /api/devices/v1/authentication/auth_requests` | [`Endpoint::Auth`] | 200 JWT (`application/jwt`), 401 pending/rejected/bad signature/tenant token, 400 malformed |
//! | `PUT`, `PATCH /api/devices/v1/inventory/device/attributes` | [`Endpoint::Inventory`] | 200; PUT replaces, PATCH upserts; 405 to PUT when [`MenderServer::inventory_put_not_allowed`] |
//! | `POST /api/devices/v2/deployments/device/deployments/next` | [`Endpoint::NextV2`] | 404 unless [`MenderServer::enable_next_v2`] (like the OSS server) |
//! | `POST /api/devices/v1/deployments/device/deployments/next` | [`Endpoint::NextV1Post`] | 200 instruction / 204; 404 when [`MenderServer::disable_next_v1_post`] |
//! | `GET /api/devices/v1/deployments/device/deployments/next?artifact_name=&device_type=` | [`Endpoint::NextV1Get`] | 200 instruction / 204 |
//! | `PUT /api/devices/v1/deployments/device/deployments/{id}/status` | [`Endpoint::Status`] | 204; 409 once aborted or a final status is recorded |
//! | `PUT /api/devices/v1/deployments/device/deployments/{id}/log` | [`Endpoint::Log`] | 204 |
//! | `GET /download/{artifact-id}/{device-id}?x-men-expire=&x-men-signature=` | [`Endpoint::Download`] | the "pre-signed" link of an instruction: 200, 206 for `Range: bytes=N-[M]`, 416 past the end; no JWT |
//!
//! The request and response shapes follow the device OpenAPI files of the
//! Mender server (mendersoftware/mender-server,
//! `backend/docs/api/deviceauth/devices_v1.yaml`,
//! `backend/docs/api/inventory/devices_v1.yaml` with `inventory/schemas.yaml`
//! (`Attribute`), `backend/docs/api/deployments/devices_v1.yaml`) and §5 of
//! the project's device specification (the undocumented v1 `POST next` and the
//! v2 `next`, the `already-installed` bookkeeping, 409 semantics).
//!
//! # Devices
//!
//! A device is identified by its public key: its id ([`device_id_of`]) is the
//! first 16 hex digits of the SHA-256 of the key's DER (SubjectPublicKeyInfo),
//! so it does not depend on PEM line wrapping. Its latest `id_data` is kept
//! too ([`MenderServer::device_with_identity`] finds a device by an identity
//! attribute). New devices get the default [`AuthStatus`]
//! ([`MenderServer::set_default_auth`], initially `Accepted`) unless a status
//! was preset for their id with [`MenderServer::set_auth_status`].
//!
//! # Deployments
//!
//! [`MenderServer::add_deployment`] (or [`MenderServer::create_deployment`]
//! with a [`NewDeployment`] for target devices / forced) holds the artifact in
//! memory. `next` offers a device the oldest deployment that targets it and is
//! not finished for it; like the real server it answers 204 and records
//! `already-installed` itself when the device's `artifact_name` equals the
//! deployment's artifact name (unless forced), and records `noartifact` (and
//! looks further) when the device type is not compatible. Per device and
//! deployment the server keeps a [`DeviceDeployment`]: its status (`pending`
//! when offered, then the reported ones; `aborted` after
//! [`MenderServer::abort_deployment`]), every status report in order (also the
//! refused ones, with the answer given), and the uploaded logs.
//!
//! # Violations
//!
//! Every request that the real server would refuse as malformed (missing or
//! mistyped fields, unknown status values, missing `Bearer` token, wrong
//! `Content-Type` on a JSON body, a bad auth signature, unknown paths and
//! methods), and every `Authorization` header sent to the artifact storage
//! link, is answered like the real server (400/401/404/405) and recorded in
//! [`MenderServer::violations`]; tests end with
//! [`MenderServer::assert_no_violations`]. Legitimate refusals (pending
//! device, expired token, 409, injected faults, switched-off endpoints) are
//! not violations.
//!
//! # Fault injection (thread-safe, at any time)
//!
//! * [`MenderServer::fail_next`] / [`MenderServer::fail_always`]: answer a
//!   status (500, 503, ...) on an endpoint.
//! * [`MenderServer::set_delay`]: sleep before answering (capped at 30 s).
//! * [`MenderServer::expire_tokens`] / [`MenderServer::expire_token_of`].
//! * [`MenderServer::abort_deployment`] / [`MenderServer::abort_deployment_for`].
//! * [`MenderServer::cut_downloads_after`] (the next K downloads send N body
//!   bytes, then the connection is closed) and
//!   [`MenderServer::cut_downloads_at`] (absolute artifact offsets, one per
//!   download request).
//! * [`MenderServer::ignore_range`] (answer 200 with the whole artifact),
//!   [`MenderServer::throttle_downloads`] (bytes per second).
//! * [`MenderServer::replace_next`] / [`MenderServer::replace_always`]: a
//!   hostile reply ([`HostileReply`]: any status, headers, a body that may
//!   be huge, trickled, or shorter than its `Content-Length`) instead of the
//!   normal one, after the request was handled as usual.
//! * [`MenderServer::inventory_put_not_allowed`],
//!   [`MenderServer::enable_next_v2`], [`MenderServer::disable_next_v1_post`].
//!
//! # Observation
//!
//! [`MenderServer::device`] returns a snapshot ([`DeviceInfo`]); shortcuts:
//! [`MenderServer::statuses`], [`MenderServer::deployment_status`],
//! [`MenderServer::logs`], [`MenderServer::inventory_value`],
//! [`MenderServer::auth_requests`]. [`MenderServer::requests`] is the request
//! log (capped, see [`MenderServer::set_request_log_limit`]);
//! [`MenderServer::request_count`], [`MenderServer::requests_per_device`] and
//! [`MenderServer::requests_per_minute`] are cheap counters for fleet tests;
//! [`MenderServer::downloads`] lists the artifact downloads;
//! [`MenderServer::wait_until`] polls a condition with a deadline.
//!
//! ```ignore
//! let server = MenderServer::start();
//! let dep = server.add_deployment(&artifact, "release-2", &["qemux86-64"]);
//! // ... start the daemon with ServerURL = server.url() ...
//! let dev = server.wait_for_device(Duration::from_secs(10)).unwrap();
//! assert!(server.wait_until(Duration::from_secs(60), |s| {
//!     s.deployment_status(&dev, &dep).as_deref() == Some("success")
//! }));
//! assert_eq!(server.statuses(&dev, &dep), ["downloading", "installing", "rebooting", "installing", "success"]);
//! server.assert_no_violations();
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use spki::der::Decode as _;
use spki::der::asn1::ObjectIdentifier;

// ---------------------------------------------------------------------------
// Limits

/// Read timeout of connection sockets: how often an idle connection thread
/// looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);
/// An idle keep-alive connection is closed after this long (ureq drops pooled
/// connections after 15 s itself).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request must be complete this long after its first byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 8 * 1024 * 1024;
const MAX_REQUESTS_PER_CONNECTION: usize = 1_000_000;
const MAX_DELAY: Duration = Duration::from_secs(30);
const DOWNLOAD_CHUNK: usize = 64 * 1024;
/// How long `Drop` waits for connection threads.
const JOIN_WAIT: Duration = Duration::from_secs(5);

/// Status values of `DeploymentStatus.status` (deployments/devices_v1.yaml).
pub const STATUS_VALUES: &[&str] = &[
    "installing",
    "pause_before_installing",
    "downloading",
    "pause_before_rebooting",
    "rebooting",
    "pause_before_committing",
    "success",
    "failure",
    "already-installed",
];

/// Device-deployment statuses after which nothing changes any more.
const FINISHED: &[&str] = &[
    "success",
    "failure",
    "already-installed",
    "noartifact",
    "aborted",
    "decommissioned",
];

// ---------------------------------------------------------------------------
// Public types

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
    /// The `tier` of the latest auth request (Mender 5.1; None when absent).
    pub tier: Option<String>,
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
    artifact: Arc<[u8]>,
    artifact_name: String,
    device_types: Vec<String>,
    devices: Option<Vec<String>>,
    forced: bool,
    control_map: Option<Value>,
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

// ---------------------------------------------------------------------------
// State

struct Deployment {
    id: String,
    artifact_id: String,
    artifact_name: String,
    device_types: Vec<String>,
    artifact: Arc<[u8]>,
    devices: Option<Vec<String>>,
    forced: bool,
    aborted: bool,
    control_map: Option<Value>,
}

#[derive(Clone, Copy)]
enum Cut {
    /// Close after this many body bytes of the response.
    After(u64),
    /// Close when this artifact offset is reached.
    At(u64),
}

#[derive(Default)]
struct Faults {
    fail_next: HashMap<Endpoint, VecDeque<u16>>,
    fail_always: HashMap<Endpoint, u16>,
    delay_all: Duration,
    delay: HashMap<Endpoint, Duration>,
    cuts: VecDeque<Cut>,
    ignore_range: bool,
    throttle: Option<u64>,
    inventory_put_405: bool,
    next_v2: bool,
    next_v1_post_404: bool,
    replace_next: HashMap<Endpoint, VecDeque<HostileReply>>,
    replace_always: HashMap<Endpoint, HostileReply>,
}

struct State {
    devices: BTreeMap<String, DeviceInfo>,
    preset_auth: HashMap<String, AuthStatus>,
    default_auth: AuthStatus,
    tenant_token: Option<String>,
    tokens: HashMap<String, String>,
    deployments: Vec<Deployment>,
    faults: Faults,
    log: VecDeque<RequestRecord>,
    log_limit: usize,
    total_requests: u64,
    per_endpoint: BTreeMap<Endpoint, u64>,
    per_minute: Vec<u64>,
    violations: Vec<Violation>,
    downloads: Vec<DownloadRecord>,
    seq: u64,
}

struct Shared {
    state: Mutex<State>,
    shutdown: AtomicBool,
    started: Instant,
    started_at: SystemTime,
    url: String,
    secret: String,
    request_ids: AtomicU64,
    conns: Mutex<Vec<(JoinHandle<()>, Option<TcpStream>)>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Sleeps `d` (capped) in small steps; returns early on shutdown.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d.min(MAX_DELAY);
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }
}

// ---------------------------------------------------------------------------
// The server

/// The test server; stops (and joins its threads, bounded) when dropped.
pub struct MenderServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl MenderServer {
    /// Binds `127.0.0.1:0` and starts accepting.
    pub fn start() -> MenderServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let mut secret = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .expect("random secret");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                devices: BTreeMap::new(),
                preset_auth: HashMap::new(),
                default_auth: AuthStatus::Accepted,
                tenant_token: None,
                tokens: HashMap::new(),
                deployments: Vec::new(),
                faults: Faults::default(),
                log: VecDeque::new(),
                log_limit: 200_000,
                total_requests: 0,
                per_endpoint: BTreeMap::new(),
                per_minute: Vec::new(),
                violations: Vec::new(),
                downloads: Vec::new(),
                seq: 0,
            }),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
            started_at: SystemTime::now(),
            url: format!("http://{addr}"),
            secret: hex(&secret),
            request_ids: AtomicU64::new(1),
            conns: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let accept = thread::Builder::new()
            .name("mender-server-accept".into())
            .spawn(move || accept_loop(accept_shared, listener))
            .expect("spawning the accept thread");
        MenderServer {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port>` (no trailing slash): the `ServerURL`.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    // -- authorisation ------------------------------------------------------

    /// Status given to devices on first contact (initially `Accepted`).
    pub fn set_default_auth(&self, status: AuthStatus) {
        self.lock().default_auth = status;
    }

    /// Sets a device's status; works before the device first appears.
    /// `Rejected` and `Pending` revoke its tokens.
    pub fn set_auth_status(&self, device: &str, status: AuthStatus) {
        let mut st = self.lock();
        st.preset_auth.insert(device.to_owned(), status);
        if let Some(d) = st.devices.get_mut(device) {
            d.auth_status = status;
        }
        if status != AuthStatus::Accepted {
            st.tokens.retain(|_, d| d != device);
        }
    }

    pub fn accept_device(&self, device: &str) {
        self.set_auth_status(device, AuthStatus::Accepted);
    }

    pub fn reject_device(&self, device: &str) {
        self.set_auth_status(device, AuthStatus::Rejected);
    }

    /// Auth requests must carry this `tenant_token` (else 401); None: any.
    pub fn require_tenant_token(&self, token: Option<&str>) {
        self.lock().tenant_token = token.map(str::to_owned);
    }

    /// Forgets every issued token: the next authenticated call gets 401.
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn expire_token_of(&self, device: &str) {
        self.lock().tokens.retain(|_, d| d != device);
    }

    /// Number of valid tokens.
    pub fn token_count(&self) -> usize {
        self.lock().tokens.len()
    }

    // -- deployments --------------------------------------------------------

    /// A deployment of the artifact file for every device; returns its id.
    pub fn add_deployment(
        &self,
        artifact_path: impl AsRef<Path>,
        artifact_name: &str,
        device_types: &[&str],
    ) -> String {
        self.create_deployment(NewDeployment::from_file(
            artifact_path,
            artifact_name,
            device_types,
        ))
    }

    pub fn add_deployment_bytes(
        &self,
        artifact: impl Into<Vec<u8>>,
        artifact_name: &str,
        device_types: &[&str],
    ) -> String {
        self.create_deployment(NewDeployment::from_bytes(
            artifact,
            artifact_name,
            device_types,
        ))
    }

    pub fn create_deployment(&self, new: NewDeployment) -> String {
        let mut st = self.lock();
        st.seq += 1;
        let id = uuid_like(&self.shared.secret, "deployment", st.seq);
        let artifact_id = uuid_like(&self.shared.secret, "artifact", st.seq);
        st.deployments.push(Deployment {
            id: id.clone(),
            artifact_id,
            artifact_name: new.artifact_name,
            device_types: new.device_types,
            artifact: new.artifact,
            devices: new.devices,
            forced: new.forced,
            control_map: new.control_map,
            aborted: false,
        });
        id
    }

    /// Aborts for every device: unfinished device deployments become
    /// `aborted` (status reports get 409) and `next` no longer offers it.
    /// Sets (or with None removes) the update control map of a deployment;
    /// `{id}` in the map's `"id"` string is replaced by the deployment id.
    pub fn set_control_map(&self, deployment: &str, map: Option<Value>) {
        let mut st = self.lock();
        if let Some(dep) = st.deployments.iter_mut().find(|d| d.id == deployment) {
            dep.control_map = map.map(|mut m| {
                if m.get("id").and_then(Value::as_str) == Some("{id}") {
                    m["id"] = Value::String(deployment.to_owned());
                }
                m
            });
        }
    }

    pub fn abort_deployment(&self, deployment: &str) {
        let mut st = self.lock();
        let State {
            deployments,
            devices,
            ..
        } = &mut *st;
        if let Some(dep) = deployments.iter_mut().find(|d| d.id == deployment) {
            dep.aborted = true;
        }
        for dev in devices.values_mut() {
            for dd in &mut dev.deployments {
                if dd.deployment_id == deployment && !is_finished(&dd.status) {
                    dd.status = "aborted".into();
                }
            }
        }
    }

    /// Aborts the deployment for one device only.
    pub fn abort_deployment_for(&self, deployment: &str, device: &str) {
        let mut st = self.lock();
        if let Some(dev) = st.devices.get_mut(device) {
            match dev
                .deployments
                .iter_mut()
                .find(|d| d.deployment_id == deployment)
            {
                Some(dd) if !is_finished(&dd.status) => dd.status = "aborted".into(),
                Some(_) => {}
                None => dev
                    .deployments
                    .push(new_device_deployment(deployment, "aborted")),
            }
        }
    }

    pub fn deployment_ids(&self) -> Vec<String> {
        self.lock()
            .deployments
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }

    /// Number of devices per device-deployment status.
    pub fn deployment_summary(&self, deployment: &str) -> BTreeMap<String, usize> {
        let st = self.lock();
        let mut out = BTreeMap::new();
        for dev in st.devices.values() {
            for dd in &dev.deployments {
                if dd.deployment_id == deployment {
                    *out.entry(dd.status.clone()).or_insert(0) += 1;
                }
            }
        }
        out
    }

    // -- faults -------------------------------------------------------------

    /// The next `count` requests to `endpoint` get `status` (error JSON body).
    pub fn fail_next(&self, endpoint: Endpoint, status: u16, count: usize) {
        let mut st = self.lock();
        let queue = st.faults.fail_next.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(status, count));
    }

    /// Every request to `endpoint` gets `status` until set to None.
    pub fn fail_always(&self, endpoint: Endpoint, status: Option<u16>) {
        let mut st = self.lock();
        match status {
            Some(s) => st.faults.fail_always.insert(endpoint, s),
            None => st.faults.fail_always.remove(&endpoint),
        };
    }

    /// Sleep this long (capped at 30 s) before answering requests to
    /// `endpoint` (None: every endpoint). `Duration::ZERO` turns it off.
    pub fn set_delay(&self, endpoint: Option<Endpoint>, delay: Duration) {
        let mut st = self.lock();
        match endpoint {
            None => st.faults.delay_all = delay,
            Some(e) => {
                st.faults.delay.insert(e, delay);
            }
        }
    }

    /// The next `count` download responses stop after `bytes` body bytes and
    /// the connection is closed (the client sees a short body).
    pub fn cut_downloads_after(&self, bytes: u64, count: usize) {
        let mut st = self.lock();
        st.faults
            .cuts
            .extend(std::iter::repeat_n(Cut::After(bytes), count));
    }

    /// One absolute artifact offset per coming download request: the
    /// response is cut when that offset is reached (a request starting at or
    /// beyond it gets the headers and no body).
    pub fn cut_downloads_at(&self, offsets: &[u64]) {
        let mut st = self.lock();
        st.faults.cuts.extend(offsets.iter().map(|&o| Cut::At(o)));
    }

    /// Answer 200 with the whole artifact even to a Range request.
    pub fn ignore_range(&self, on: bool) {
        self.lock().faults.ignore_range = on;
    }

    /// Limit artifact bodies to this many bytes per second (None: no limit).
    pub fn throttle_downloads(&self, bytes_per_second: Option<u64>) {
        self.lock().faults.throttle = bytes_per_second.map(|b| b.max(1));
    }

    /// Answer 405 to `PUT .../inventory/device/attributes` (old servers).
    pub fn inventory_put_not_allowed(&self, on: bool) {
        self.lock().faults.inventory_put_405 = on;
    }

    /// Serve `POST /api/devices/v2/.../next` (default: 404 like OSS).
    pub fn enable_next_v2(&self, on: bool) {
        self.lock().faults.next_v2 = on;
    }

    /// Answer 404 to `POST /api/devices/v1/.../next` (to test the GET).
    pub fn disable_next_v1_post(&self, on: bool) {
        self.lock().faults.next_v1_post_404 = on;
    }

    /// The next `count` requests to `endpoint` are handled as usual but
    /// answered with `reply` (a hostile server).
    pub fn replace_next(&self, endpoint: Endpoint, reply: HostileReply, count: usize) {
        let mut st = self.lock();
        let queue = st.faults.replace_next.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(reply, count));
    }

    /// Every request to `endpoint` is answered with `reply` until set to
    /// None ([`Self::replace_next`] replies go first).
    pub fn replace_always(&self, endpoint: Endpoint, reply: Option<HostileReply>) {
        let mut st = self.lock();
        match reply {
            Some(r) => st.faults.replace_always.insert(endpoint, r),
            None => st.faults.replace_always.remove(&endpoint),
        };
    }

    /// Removes every fault and switch (back to the defaults).
    pub fn clear_faults(&self) {
        self.lock().faults = Faults::default();
    }

    // -- observation --------------------------------------------------------

    pub fn device_ids(&self) -> Vec<String> {
        self.lock().devices.keys().cloned().collect()
    }

    pub fn device(&self, id: &str) -> Option<DeviceInfo> {
        self.lock().devices.get(id).cloned()
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.lock().devices.values().cloned().collect()
    }

    /// The device whose identity has `key` = `value` (or a list containing it).
    pub fn device_with_identity(&self, key: &str, value: &str) -> Option<String> {
        let st = self.lock();
        st.devices
            .values()
            .find(|d| match d.identity.get(key) {
                Some(Value::String(s)) => s == value,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(value)),
                _ => false,
            })
            .map(|d| d.id.clone())
    }

    /// Waits for the first device to send an auth request.
    pub fn wait_for_device(&self, timeout: Duration) -> Option<String> {
        let mut found = None;
        self.wait_until(timeout, |s| {
            found = s.device_ids().into_iter().next();
            found.is_some()
        });
        found
    }

    pub fn auth_requests(&self, device: &str) -> u64 {
        self.device(device).map_or(0, |d| d.auth_requests)
    }

    fn with_dd<T>(
        &self,
        device: &str,
        deployment: &str,
        f: impl FnOnce(&DeviceDeployment) -> T,
    ) -> Option<T> {
        let st = self.lock();
        st.devices
            .get(device)?
            .deployments
            .iter()
            .find(|d| d.deployment_id == deployment)
            .map(f)
    }

    /// The accepted (204) status reports, in order.
    pub fn statuses(&self, device: &str, deployment: &str) -> Vec<String> {
        self.with_dd(device, deployment, |dd| {
            dd.reports
                .iter()
                .filter(|r| r.response == 204)
                .map(|r| r.status.clone())
                .collect()
        })
        .unwrap_or_default()
    }

    /// Every status report, refused ones included.
    pub fn status_reports(&self, device: &str, deployment: &str) -> Vec<StatusReport> {
        self.with_dd(device, deployment, |dd| dd.reports.clone())
            .unwrap_or_default()
    }

    /// The device deployment's status (None: never offered).
    pub fn deployment_status(&self, device: &str, deployment: &str) -> Option<String> {
        self.with_dd(device, deployment, |dd| dd.status.clone())
    }

    /// All uploaded log records, in upload order.
    pub fn logs(&self, device: &str, deployment: &str) -> Vec<LogMessage> {
        self.with_dd(device, deployment, |dd| dd.logs.concat())
            .unwrap_or_default()
    }

    pub fn inventory(&self, device: &str) -> Vec<Attribute> {
        self.device(device).map(|d| d.inventory).unwrap_or_default()
    }

    pub fn inventory_value(&self, device: &str, name: &str) -> Option<Value> {
        let st = self.lock();
        st.devices
            .get(device)?
            .inventory
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.clone())
    }

    /// The request log (the latest [`Self::set_request_log_limit`] entries).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }

    /// Requests to one endpoint in the (capped) log.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RequestRecord> {
        let st = self.lock();
        st.log
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    pub fn set_request_log_limit(&self, limit: usize) {
        let mut st = self.lock();
        st.log_limit = limit;
        while st.log.len() > limit {
            st.log.pop_front();
        }
    }

    /// All requests answered since the start (not capped).
    pub fn request_count(&self) -> u64 {
        self.lock().total_requests
    }

    /// Requests answered per endpoint since the start (not capped).
    pub fn requests_per_endpoint(&self) -> BTreeMap<Endpoint, u64> {
        self.lock().per_endpoint.clone()
    }

    pub fn requests_per_device(&self) -> BTreeMap<String, u64> {
        let st = self.lock();
        st.devices
            .values()
            .map(|d| (d.id.clone(), d.requests))
            .collect()
    }

    /// Index i: requests answered in minute i since the server started.
    pub fn requests_per_minute(&self) -> Vec<u64> {
        self.lock().per_minute.clone()
    }

    pub fn downloads(&self) -> Vec<DownloadRecord> {
        self.lock().downloads.clone()
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    pub fn clear_violations(&self) {
        self.lock().violations.clear();
    }

    /// Panics listing the violations, if any.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|v| format!("  {v}")).collect();
            panic!("{} API violation(s):\n{}", v.len(), list.join("\n"));
        }
    }

    /// Polls `cond` every 20 ms until it holds (true) or `timeout` (false).
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&MenderServer) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MenderServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let conns =
            std::mem::take(&mut *self.shared.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, stream) in &conns {
            if let Some(s) = stream {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let end = Instant::now() + JOIN_WAIT;
        for (handle, _) in conns {
            while !handle.is_finished() && Instant::now() < end {
                thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let clone = stream.try_clone().ok();
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("mender-server-conn".into())
            .spawn(move || serve_connection(conn_shared, stream));
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|(h, _)| !h.is_finished());
        if let Ok(handle) = spawned {
            conns.push((handle, clone));
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 on a socket

struct Request {
    method: String,
    target: String,
    path: String,
    query: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Incoming {
    Request(Request),
    Closed,
    Bad {
        status: u16,
        problem: String,
        method: String,
        target: String,
    },
}

enum Fill {
    Data,
    Eof,
    Stop,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads once more into `buf`; Stop on shutdown, deadline or error.
    fn fill(&mut self, shared: &Shared, deadline: Instant) -> Fill {
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if shared.stopping() || Instant::now() >= deadline {
                    Fill::Stop
                } else {
                    Fill::Data
                }
            }
            Err(_) => Fill::Stop,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_request(conn: &mut Conn, shared: &Shared) -> Incoming {
    // Head.
    let mut deadline = Instant::now() + IDLE_TIMEOUT;
    let mut started = !conn.buf.is_empty();
    if started {
        deadline = Instant::now() + REQUEST_TIMEOUT;
    }
    let head_end = loop {
        if let Some(pos) = find(&conn.buf, b"\r\n\r\n") {
            break pos;
        }
        if conn.buf.len() > MAX_HEAD {
            return bad(431, "request head too large", "", "");
        }
        match conn.fill(shared, deadline) {
            Fill::Data => {
                if !started && !conn.buf.is_empty() {
                    started = true;
                    deadline = Instant::now() + REQUEST_TIMEOUT;
                }
            }
            Fill::Eof | Fill::Stop => return Incoming::Closed,
        }
    };
    let head = match std::str::from_utf8(&conn.buf[..head_end]) {
        Ok(h) => h.to_owned(),
        Err(_) => return bad(400, "request head is not UTF-8", "", ""),
    };
    conn.buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return bad(
            400,
            &format!("malformed request line {request_line:?}"),
            "",
            "",
        );
    };
    let (method, target) = (method.to_string(), target.to_string());
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return bad(400, "malformed method", &method, &target);
    }
    if !target.starts_with('/') {
        return bad(
            400,
            "request target is not an absolute path",
            &method,
            &target,
        );
    }
    let http10 = match *version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return bad(505, "unsupported HTTP version", &method, &target),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return bad(
                400,
                &format!("malformed header line {line:?}"),
                &method,
                &target,
            );
        };
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return bad(
                400,
                &format!("malformed header name {name:?}"),
                &method,
                &target,
            );
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let mut req = Request {
        method,
        target,
        path,
        query,
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let tokens: Vec<&str> = connection.split(',').map(str::trim).collect();
    req.keep_alive = if http10 {
        tokens.contains(&"keep-alive")
    } else {
        !tokens.contains(&"close")
    };

    // Body.
    let chunked = match req.header("transfer-encoding") {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(te) => {
            return bad(
                400,
                &format!("unsupported Transfer-Encoding {te:?}"),
                &req.method,
                &req.target,
            );
        }
    };
    let lengths: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if chunked && !lengths.is_empty() {
        return bad(
            400,
            "both Content-Length and Transfer-Encoding",
            &req.method,
            &req.target,
        );
    }
    let mut length = None;
    for l in &lengths {
        match l.parse::<usize>() {
            Ok(n) if length.is_none() || length == Some(n) => length = Some(n),
            _ => {
                return bad(
                    400,
                    &format!("bad Content-Length {l:?}"),
                    &req.method,
                    &req.target,
                );
            }
        }
    }
    if length.is_some_and(|n| n > MAX_BODY) {
        return bad(413, "request body too large", &req.method, &req.target);
    }
    let expects_body = chunked || length.is_some_and(|n| n > 0);
    if expects_body
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    if chunked {
        loop {
            match parse_chunked(&conn.buf) {
                Ok(Some((body, used))) => {
                    req.body = body;
                    conn.buf.drain(..used);
                    break;
                }
                Ok(None) => {}
                Err(problem) => return bad(400, &problem, &req.method, &req.target),
            }
            if conn.buf.len() > MAX_BODY + MAX_HEAD {
                return bad(413, "request body too large", &req.method, &req.target);
            }
            match conn.fill(shared, deadline) {
                Fill::Data => {}
                Fill::Eof | Fill::Stop => return Incoming::Closed,
            }
        }
    } else if let Some(n) = length {
        while conn.buf.len() < n {
            match conn.fill(shared, deadline) {
                Fill::Data => {}
                Fill::Eof | Fill::Stop => return Incoming::Closed,
            }
        }
        req.body = conn.buf.drain(..n).collect();
    }
    Incoming::Request(req)
}

fn bad(status: u16, problem: &str, method: &str, target: &str) -> Incoming {
    Incoming::Bad {
        status,
        problem: problem.to_owned(),
        method: method.to_owned(),
        target: target.to_owned(),
    }
}

/// Ok(None): incomplete; Ok(Some((body, bytes used))).
fn parse_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            if buf.len() - pos > 1024 {
                return Err("chunk size line too long".into());
            }
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&buf[pos..pos + eol]).map_err(|_| "chunk size line is not text")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers up to an empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if size > MAX_BODY || body.len() + size > MAX_BODY {
            return Err("chunked body too large".into());
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk not terminated by CRLF".into());
        }
        pos += size + 2;
    }
}

enum Body {
    Empty,
    Bytes(Vec<u8>),
    Artifact {
        data: Arc<[u8]>,
        start: usize,
        end: usize,
        /// Close after this many body bytes.
        cut_after: Option<u64>,
        throttle: Option<u64>,
    },
    Hostile(HostileBody),
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    download: Option<Box<DownloadRecord>>,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            download: None,
        }
    }

    fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.headers
            .push(("Content-Type".into(), content_type.to_owned()));
        self.body = Body::Bytes(body.into());
        self
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

struct Written {
    bytes: u64,
    cut: bool,
    ok: bool,
}

fn write_response(
    stream: &mut TcpStream,
    shared: &Shared,
    resp: &Response,
    keep_alive: bool,
) -> Written {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let body_len = match &resp.body {
        Body::Empty => 0,
        Body::Bytes(b) => b.len(),
        Body::Artifact { start, end, .. } => end - start,
        Body::Hostile(HostileBody::Bytes(b)) => b.len(),
        Body::Hostile(HostileBody::Filler { len, .. }) => *len as usize,
        Body::Hostile(HostileBody::Trickle { bytes, .. }) => bytes.len(),
    };
    let length_given = resp
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    if resp.status != 204 && resp.status >= 200 && !length_given {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    match &resp.body {
        Body::Hostile(body) => write_hostile(stream, shared, head.as_bytes(), body),
        Body::Empty => Written {
            bytes: 0,
            cut: false,
            ok: stream.write_all(head.as_bytes()).is_ok(),
        },
        Body::Bytes(b) => {
            let mut all = head.into_bytes();
            all.extend_from_slice(b);
            Written {
                bytes: b.len() as u64,
                cut: false,
                ok: stream.write_all(&all).is_ok(),
            }
        }
        Body::Artifact {
            data,
            start,
            end,
            cut_after,
            throttle,
        } => {
            if stream.write_all(head.as_bytes()).is_err() {
                return Written {
                    bytes: 0,
                    cut: false,
                    ok: false,
                };
            }
            let limit = cut_after.map_or(end - start, |c| (c as usize).min(end - start));
            let mut sent = 0usize;
            let chunk = match throttle {
                Some(rate) => ((*rate / 20) as usize).clamp(1, DOWNLOAD_CHUNK),
                None => DOWNLOAD_CHUNK,
            };
            while sent < limit {
                if shared.stopping() {
                    return Written {
                        bytes: sent as u64,
                        cut: false,
                        ok: false,
                    };
                }
                let n = chunk.min(limit - sent);
                if stream
                    .write_all(&data[start + sent..start + sent + n])
                    .is_err()
                {
                    return Written {
                        bytes: sent as u64,
                        cut: false,
                        ok: false,
                    };
                }
                sent += n;
                if let Some(rate) = throttle {
                    shared.sleep(Duration::from_secs_f64(n as f64 / *rate as f64));
                }
            }
            if cut_after.is_some() && limit < end - start {
                let _ = stream.flush();
                let _ = stream.shutdown(Shutdown::Both);
                return Written {
                    bytes: sent as u64,
                    cut: true,
                    ok: false,
                };
            }
            Written {
                bytes: sent as u64,
                cut: false,
                ok: true,
            }
        }
    }
}

/// Writes a hostile body; stops when the client hangs up.
fn write_hostile(
    stream: &mut TcpStream,
    shared: &Shared,
    head: &[u8],
    body: &HostileBody,
) -> Written {
    let mut sent = 0u64;
    let mut put = |stream: &mut TcpStream, data: &[u8], counted: bool| {
        let ok = !shared.stopping() && stream.write_all(data).is_ok();
        if ok && counted {
            sent += data.len() as u64;
        }
        ok
    };
    let ok = put(stream, head, false)
        && match body {
            HostileBody::Bytes(b) => put(stream, b, true),
            HostileBody::Filler { byte, len } => {
                let chunk = vec![*byte; DOWNLOAD_CHUNK];
                let mut left = *len;
                let mut ok = true;
                while ok && left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    ok = put(stream, &chunk[..n], true);
                    left -= n as u64;
                }
                ok
            }
            HostileBody::Trickle { bytes, interval } => {
                let mut ok = true;
                for b in bytes {
                    if !ok {
                        break;
                    }
                    ok = put(stream, &[*b], true);
                    shared.sleep(*interval);
                }
                ok
            }
        };
    Written {
        bytes: sent,
        cut: false,
        ok,
    }
}

fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        if shared.stopping() {
            break;
        }
        match read_request(&mut conn, &shared) {
            Incoming::Closed => break,
            Incoming::Bad {
                status,
                problem,
                method,
                target,
            } => {
                let rid = shared.request_ids.fetch_add(1, Ordering::Relaxed);
                REQUEST_ID.with(|c| c.set(rid));
                let resp = error_response(&shared, status, &problem)
                    .header("X-MEN-RequestID", format!("{rid:016x}"));
                let bytes = match &resp.body {
                    Body::Bytes(b) => b.len() as u64,
                    _ => 0,
                };
                {
                    let mut st = shared.lock();
                    let problem = format!("malformed HTTP request: {problem}");
                    st.violation(None, &method, &target, problem);
                    st.record(
                        &shared,
                        rid,
                        None,
                        &method,
                        &target,
                        Endpoint::Other,
                        status,
                        bytes,
                    );
                }
                write_response(&mut conn.stream, &shared, &resp, false);
                break;
            }
            Incoming::Request(req) => {
                let rid = shared.request_ids.fetch_add(1, Ordering::Relaxed);
                REQUEST_ID.with(|c| c.set(rid));
                let (mut resp, device, endpoint) = handle(&shared, &req);
                resp.headers
                    .push(("X-MEN-RequestID".into(), format!("{rid:016x}")));
                // Logged before the client can see the answer (so a test
                // that got a response finds it), with the planned byte count;
                // corrected afterwards if the write went otherwise.
                let (planned, planned_cut) = match &resp.body {
                    Body::Empty => (0, false),
                    Body::Bytes(b) => (b.len() as u64, false),
                    Body::Hostile(_) => (0, false),
                    Body::Artifact {
                        start,
                        end,
                        cut_after,
                        ..
                    } => {
                        let len = (end - start) as u64;
                        let n = cut_after.map_or(len, |c| c.min(len));
                        (n, n < len)
                    }
                };
                let download_index = {
                    let mut st = shared.lock();
                    st.record(
                        &shared,
                        rid,
                        device.as_deref(),
                        &req.method,
                        &req.target,
                        endpoint,
                        resp.status,
                        planned,
                    );
                    resp.download.take().map(|mut d| {
                        d.bytes_sent = planned;
                        d.cut = planned_cut;
                        st.downloads.push(*d);
                        st.downloads.len() - 1
                    })
                };
                // A hostile reply ends its connection: a body shorter than
                // its Content-Length then shows as a short body.
                let hostile = matches!(resp.body, Body::Hostile(_));
                let keep_alive = req.keep_alive && !hostile;
                let w = write_response(&mut conn.stream, &shared, &resp, keep_alive);
                if w.bytes != planned || w.cut != planned_cut {
                    let mut st = shared.lock();
                    if let Some(r) = st.log.iter_mut().rev().find(|r| r.id == rid) {
                        r.bytes_sent = w.bytes;
                    }
                    if let Some(d) = download_index.and_then(|i| st.downloads.get_mut(i)) {
                        d.bytes_sent = w.bytes;
                        d.cut = w.cut;
                    }
                }
                if !w.ok || !keep_alive {
                    break;
                }
            }
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Request handling

impl State {
    fn violation(&mut self, device: Option<&str>, method: &str, path: &str, problem: String) {
        self.violations.push(Violation {
            at: SystemTime::now(),
            device: device.map(str::to_owned),
            method: method.to_owned(),
            path: path.to_owned(),
            problem,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        shared: &Shared,
        id: u64,
        device: Option<&str>,
        method: &str,
        path: &str,
        endpoint: Endpoint,
        status: u16,
        bytes_sent: u64,
    ) {
        let elapsed = shared.started.elapsed();
        self.total_requests += 1;
        *self.per_endpoint.entry(endpoint).or_insert(0) += 1;
        let minute = (elapsed.as_secs() / 60) as usize;
        if self.per_minute.len() <= minute {
            self.per_minute.resize(minute + 1, 0);
        }
        self.per_minute[minute] += 1;
        if let Some(d) = device.and_then(|d| self.devices.get_mut(d)) {
            d.requests += 1;
        }
        if self.log_limit > 0 {
            while self.log.len() >= self.log_limit {
                self.log.pop_front();
            }
            self.log.push_back(RequestRecord {
                id,
                at: SystemTime::now(),
                elapsed,
                device: device.map(str::to_owned),
                method: method.to_owned(),
                path: path.to_owned(),
                endpoint,
                status,
                bytes_sent,
            });
        }
    }
}

thread_local! {
    /// The id of the request the connection thread is answering.
    static REQUEST_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn error_response(_shared: &Shared, status: u16, message: &str) -> Response {
    let id = format!("{:016x}", REQUEST_ID.with(|c| c.get()));
    let body = json!({"error": message, "request_id": id}).to_string();
    Response::new(status).with_body("application/json", body)
}

/// Per-request context.
struct Ctx<'a> {
    shared: &'a Shared,
    req: &'a Request,
    device: Option<String>,
}

impl Ctx<'_> {
    /// Records a violation and answers `status`.
    fn refuse(&self, st: &mut State, status: u16, problem: impl Into<String>) -> Response {
        let problem = problem.into();
        st.violation(
            self.device.as_deref(),
            &self.req.method,
            &self.req.target,
            problem.clone(),
        );
        error_response(self.shared, status, &problem)
    }

    fn refuse_unlocked(&self, status: u16, problem: impl Into<String>) -> Response {
        let mut st = self.shared.lock();
        self.refuse(&mut st, status, problem)
    }

    /// The device of the `Bearer` token; 401 (a violation when the header is
    /// missing or malformed, not when the token expired).
    fn authenticate(&mut self, st: &mut State) -> Result<String, Response> {
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
    fn json_body(&self, st: &mut State) -> Result<Value, Response> {
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

    fn method_not_allowed(&self, allowed: &str) -> Response {
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

enum Route {
    Auth,
    Inventory,
    NextV2,
    NextV1,
    Status(String),
    Log(String),
    ControlMap(String),
    Download { artifact: String, device: String },
    Unknown,
}

fn route(path: &str) -> Route {
    const DEPLOYMENTS: &str = "/api/devices/v1/deployments/device/deployments/";
    match path {
        "/api/devices/v1/authentication/auth_requests" => return Route::Auth,
        "/api/devices/v1/inventory/device/attributes" => return Route::Inventory,
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

fn handle(shared: &Shared, req: &Request) -> (Response, Option<String>, Endpoint) {
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
        Some(r) => Response {
            status: r.status,
            headers: r.headers,
            body: Body::Hostile(r.body),
            download: None,
        },
    };
    (resp, ctx.device, endpoint)
}

// -- auth (deviceauth/devices_v1.yaml: AuthRequest, X-MEN-Signature) --------

fn handle_auth(ctx: &mut Ctx) -> Response {
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
    let tier = match obj.get("tier") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return ctx.refuse_unlocked(400, "tier is not a string"),
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
        tier: None,
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
    dev.tier = tier;
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

fn make_token(secret: &str, device: &str, seq: u64) -> String {
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

// -- inventory (inventory/devices_v1.yaml, inventory/schemas.yaml Attribute) --

fn handle_inventory(ctx: &mut Ctx) -> Response {
    let put = match ctx.req.method.as_str() {
        "PUT" => true,
        "PATCH" => false,
        _ => return ctx.method_not_allowed("PUT, PATCH"),
    };
    let mut st = ctx.shared.lock();
    if put && st.faults.inventory_put_405 {
        return error_response(ctx.shared, 405, "method not allowed").header("Allow", "PATCH");
    }
    let device = match ctx.authenticate(&mut st) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = match ctx.json_body(&mut st) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let attrs = match parse_attributes(&body) {
        Ok(a) => a,
        Err(problem) => return ctx.refuse(&mut st, 400, problem),
    };
    let Some(dev) = st.devices.get_mut(&device) else {
        return error_response(ctx.shared, 401, "unknown device");
    };
    if put {
        dev.inventory.clear();
    }
    for a in attrs {
        match dev.inventory.iter_mut().find(|x| x.name == a.name) {
            Some(x) => *x = a,
            None => dev.inventory.push(a),
        }
    }
    dev.inventory_submissions += 1;
    Response::new(200)
}

fn parse_attributes(body: &Value) -> Result<Vec<Attribute>, String> {
    let Some(list) = body.as_array() else {
        return Err("inventory body is not a JSON array".into());
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(format!("attribute {i} is not an object"));
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(format!("attribute {i}: empty name")),
            Some(_) => return Err(format!("attribute {i}: name is not a string")),
            None => return Err(format!("attribute {i}: name missing")),
        };
        let value = match obj.get("value") {
            None => return Err(format!("attribute {name:?}: value missing")),
            Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
            Some(v @ Value::Array(items)) => {
                let strings = items.iter().all(Value::is_string);
                let numbers = items.iter().all(Value::is_number);
                if !strings && !numbers {
                    return Err(format!(
                        "attribute {name:?}: value must be an array of strings or of numbers (no mixed arrays)"
                    ));
                }
                v.clone()
            }
            Some(other) => {
                return Err(format!(
                    "attribute {name:?}: value {other} is not a string, number or array"
                ));
            }
        };
        let description = match obj.get("description") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("attribute {name:?}: description is not a string")),
        };
        out.push(Attribute {
            name,
            value,
            description,
        });
    }
    Ok(out)
}

// -- next (deployments/devices_v1.yaml GET; spec 5.3 for the POSTs) ---------

fn handle_next(ctx: &mut Ctx, endpoint: Endpoint) -> Response {
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
fn handle_control_map(ctx: &mut Ctx, id: &str) -> Response {
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

fn next_for(
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

fn new_device_deployment(id: &str, status: &str) -> DeviceDeployment {
    DeviceDeployment {
        deployment_id: id.to_owned(),
        status: status.to_owned(),
        reports: Vec::new(),
        logs: Vec::new(),
        offered: 0,
        downloads: 0,
    }
}

fn is_finished(status: &str) -> bool {
    FINISHED.contains(&status)
}

fn instruction(shared: &Shared, dep: &Deployment, device: &str) -> Value {
    let expire = rfc3339(SystemTime::now() + Duration::from_secs(24 * 3600));
    let path = format!("/download/{}/{device}", dep.artifact_id);
    let sig = link_signature(&shared.secret, &path, &expire);
    let uri = format!(
        "{}{path}?x-men-expire={}&x-men-signature={sig}",
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

fn link_signature(secret: &str, path: &str, expire: &str) -> String {
    hex(&Sha256::digest(format!("{secret}|{path}|{expire}"))[..16])
}

// -- status and log (deployments/devices_v1.yaml DeploymentStatus, DeploymentLog)

/// The device's deployment entry, or a 404 violation.
fn device_deployment<'s>(
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

fn handle_status(ctx: &mut Ctx, deployment: &str) -> Response {
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

fn handle_log(ctx: &mut Ctx, deployment: &str) -> Response {
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

fn parse_log(body: &Value) -> Result<Vec<LogMessage>, String> {
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

// -- artifact download (the "pre-signed" link; spec 5.4) --------------------

fn handle_download(ctx: &mut Ctx, artifact_id: &str, device: &str) -> Response {
    if ctx.req.method != "GET" {
        return ctx.method_not_allowed("GET");
    }
    let mut st = ctx.shared.lock();
    let authorization_sent = ctx.req.header("authorization").is_some();
    if authorization_sent {
        ctx.refuse(
            &mut st,
            400,
            "Authorization header sent to the artifact storage link (the JWT must not leave the API)",
        );
    }
    let query = match parse_query(&ctx.req.query) {
        Ok(q) => q,
        Err(p) => return ctx.refuse(&mut st, 400, p),
    };
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (Some(expire), Some(sig)) = (get("x-men-expire"), get("x-men-signature")) else {
        return ctx.refuse(
            &mut st,
            403,
            "download link without x-men-expire/x-men-signature",
        );
    };
    if link_signature(&ctx.shared.secret, &ctx.req.path, expire) != sig {
        return ctx.refuse(&mut st, 403, "download link signature does not match");
    }
    let Some(dep) = st.deployments.iter().find(|d| d.artifact_id == artifact_id) else {
        return ctx.refuse(&mut st, 404, format!("no artifact {artifact_id}"));
    };
    let data = dep.artifact.clone();
    let deployment_id = dep.id.clone();
    if let Some(dd) = st.devices.get_mut(device).and_then(|d| {
        d.deployments
            .iter_mut()
            .find(|dd| dd.deployment_id == deployment_id)
    }) {
        dd.downloads += 1;
    }
    let total = data.len();
    let range_header = ctx.req.header("range").map(str::to_owned);
    let range = match (&range_header, st.faults.ignore_range) {
        (Some(r), false) => match parse_range(r, total) {
            RangeSpec::Bad => {
                // RFC 9110: an unparsable Range is ignored; still a client bug.
                st.violation(
                    Some(device),
                    &ctx.req.method,
                    &ctx.req.target,
                    format!("malformed Range header {r:?}"),
                );
                None
            }
            other => Some(other),
        },
        _ => None,
    };
    let mut record = DownloadRecord {
        at: SystemTime::now(),
        device: Some(device.to_owned()),
        deployment_id,
        artifact_id: artifact_id.to_owned(),
        range: range_header,
        status: 200,
        start: 0,
        bytes_sent: 0,
        cut: false,
        authorization_sent,
    };
    let (status, start, end) = match range {
        None => (200, 0, total),
        Some(RangeSpec::Unsatisfiable) => {
            record.status = 416;
            let mut resp = error_response(ctx.shared, 416, "range not satisfiable")
                .header("Content-Range", format!("bytes */{total}"));
            resp.download = Some(Box::new(record));
            return resp;
        }
        Some(RangeSpec::Bytes(s, e)) => (206, s, e),
        Some(RangeSpec::Bad) => (200, 0, total),
    };
    let cut_after = st.faults.cuts.pop_front().map(|c| match c {
        Cut::After(n) => n,
        Cut::At(offset) => offset.saturating_sub(start as u64),
    });
    record.status = status;
    record.start = start as u64;
    let mut resp = Response::new(status)
        .header("Content-Type", "application/vnd.mender-artifact")
        .header("Accept-Ranges", "bytes");
    if status == 206 {
        resp = resp.header(
            "Content-Range",
            format!("bytes {start}-{}/{total}", end.saturating_sub(1)),
        );
    }
    resp.body = Body::Artifact {
        data,
        start,
        end,
        cut_after,
        throttle: st.faults.throttle,
    };
    resp.download = Some(Box::new(record));
    resp
}

enum RangeSpec {
    /// [start, end) to send.
    Bytes(usize, usize),
    Unsatisfiable,
    Bad,
}

/// `bytes=N-`, `bytes=N-M` or `bytes=-S` (one range only).
fn parse_range(header: &str, total: usize) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Bad;
    };
    if total == 0 {
        return RangeSpec::Unsatisfiable;
    }
    if spec.contains(',') {
        return RangeSpec::Bad;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Bad;
    };
    let num = |s: &str| -> Option<usize> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeSpec::Bad,
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(suffix) => RangeSpec::Bytes(total.saturating_sub(suffix), total),
            None => RangeSpec::Bad,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeSpec::Bad;
            };
            let end = if b.is_empty() {
                total
            } else {
                match num(b) {
                    Some(e) if e >= start => e.saturating_add(1).min(total),
                    _ => return RangeSpec::Bad,
                }
            };
            if start >= total {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(start, end)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Keys and signatures

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "ECDSA P-256",
            KeyKind::EcP384 => "ECDSA P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

struct DeviceKey {
    kind: KeyKind,
    /// The SubjectPublicKeyInfo DER.
    spki: Vec<u8>,
    /// The subjectPublicKey bits: PKCS#1 RSAPublicKey, SEC1 point, or the
    /// 32-byte Ed25519 key (the forms ring verifies with).
    key: Vec<u8>,
}

impl DeviceKey {
    fn device_id(&self) -> String {
        hex(&Sha256::digest(&self.spki)[..8])
    }

    /// RSA PKCS#1 v1.5 and ECDSA (ASN.1 DER signature) over SHA-256 of the
    /// body, Ed25519 over the body (deviceauth/devices_v1.yaml).
    fn verify(&self, body: &[u8], sig: &[u8]) -> bool {
        use ring::signature::{
            ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA256_ASN1, ED25519, RSA_PKCS1_2048_8192_SHA256,
            UnparsedPublicKey, VerificationAlgorithm,
        };
        let alg: &'static dyn VerificationAlgorithm = match self.kind {
            KeyKind::Rsa => &RSA_PKCS1_2048_8192_SHA256,
            KeyKind::EcP256 => &ECDSA_P256_SHA256_ASN1,
            KeyKind::EcP384 => &ECDSA_P384_SHA256_ASN1,
            KeyKind::Ed25519 => &ED25519,
        };
        UnparsedPublicKey::new(alg, &self.key)
            .verify(body, sig)
            .is_ok()
    }
}

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

fn parse_public_key(pem: &str) -> Result<DeviceKey, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem
        .find(BEGIN)
        .ok_or("no \"-----BEGIN PUBLIC KEY-----\" block")?
        + BEGIN.len();
    let stop = pem[start..]
        .find(END)
        .ok_or("no \"-----END PUBLIC KEY-----\" line")?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&der)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("subjectPublicKey has unused bits")?
        .to_vec();
    let oid = spki.algorithm.oid;
    let kind = if oid == OID_RSA {
        KeyKind::Rsa
    } else if oid == OID_EC {
        match spki.algorithm.parameters_oid() {
            Ok(c) if c == OID_P256 => KeyKind::EcP256,
            Ok(c) if c == OID_P384 => KeyKind::EcP384,
            Ok(c) => return Err(format!("unsupported EC curve {c}")),
            Err(e) => return Err(format!("EC key without a named curve: {e}")),
        }
    } else if oid == OID_ED25519 {
        if key.len() != 32 {
            return Err("Ed25519 key is not 32 bytes".into());
        }
        KeyKind::Ed25519
    } else {
        return Err(format!("unsupported key algorithm {oid}"));
    };
    Ok(DeviceKey {
        kind,
        spki: der,
        key,
    })
}

// ---------------------------------------------------------------------------
// Small helpers

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_like(secret: &str, what: &str, seq: u64) -> String {
    let h = hex(&Sha256::digest(format!("{secret}/{what}/{seq}"))[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hexpair = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hexpair {
                    Some(b) => out.push(b),
                    None => return Err(format!("bad percent-encoding in {s:?}")),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("query value {s:?} is not UTF-8"))
}

fn parse_query(q: &str) -> Result<Vec<(String, String)>, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let ok = (|| -> Option<bool> {
        let (_y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let (h, mi, se) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        if b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Some(false);
        }
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return Some(false);
        }
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let from = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == from {
                return Some(false);
            }
        }
        match b.get(i)? {
            b'Z' | b'z' => Some(i + 1 == b.len()),
            b'+' | b'-' => {
                let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
                Some(b.get(i + 3) == Some(&b':') && i + 6 == b.len() && oh <= 23 && om <= 59)
            }
            _ => Some(false),
        }
    })();
    ok.unwrap_or(false)
}
