//! A Mender-compatible device-API server for integration tests, written on
//! `std::net` (one thread per connection, plain HTTP/1.1 with keep-alive,
//! loopback only) so that tests have byte-level control over faults.
//!
//! Shared by the test tiers through `tests/support/mod.rs`
//! (`use crate::support::mender_server::*;`).
//!
//! # Layout
//!
//! * `types`: the public types tests configure the server with and read back.
//! * `server`: [`MenderServer`] (set-up, faults, observation) and the accept loop.
//! * `state`: the shared state behind one mutex; request log and violations.
//! * `http`: HTTP/1.1 on a socket (reading requests, writing responses).
//! * `routing`: request routing, the per-request context, injected faults.
//! * `auth`, `inventory`, `deployments`, `download`: the device API, one
//!   concern each; `keys`: device keys and signatures.
//! * `deviceconnect`: the remote-terminal WebSocket and its scripted operator.
//! * `tls_front`: a private CA and `socat` terminating (mutual) TLS in front.
//! * `formats`: hex, ids, percent-encoding, query strings, RFC 3339 times.
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
//! | `GET /api/devices/v1/deviceconnect/connect` (WebSocket) | [`Endpoint::DeviceConnect`] | 101 when the bearer token is valid (401 otherwise), then `ProtoMsg`s: [`MenderServer::remote_shell`] runs a command in a remote shell |
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

mod auth;
mod deployments;
mod deviceconnect;
mod download;
mod formats;
mod http;
mod inventory;
mod keys;
mod routing;
mod server;
mod state;
mod tls_front;
mod types;

use auth::*;
use deployments::*;
#[allow(unused_imports)]
pub use deviceconnect::*;
use download::*;
#[allow(unused_imports)]
pub use formats::*;
use http::*;
use inventory::*;
use keys::*;
use routing::*;
#[allow(unused_imports)]
pub use server::*;
use state::*;
#[allow(unused_imports)]
pub use tls_front::*;
// Each tier uses part of the server (as `#[allow(dead_code)]` at the tier
// roots says for the helpers as a whole).
#[allow(unused_imports)]
pub use types::*;

use std::time::Duration;

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
