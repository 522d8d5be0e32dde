//! The add-on forwarder (`docs/managed-mode.md`, "The add-on forwarder"):
//! what `GetJwtToken` and `JwtTokenStateChange` hand add-ons such as
//! mender-connect instead of the server's URL, as Mender 3.x (its local
//! proxy) and 4.x/5.x (mender-auth's HTTP forwarder) do. Add-ons speak
//! plain HTTP to `http://127.0.0.1:<port>`; the forwarder passes each
//! request, WebSocket upgrades included, to the server that issued the
//! current token, with the daemon's own TLS settings (`ServerCertificate`,
//! `SkipVerify`, `HttpsClient`), which add-ons do not know.
//!
//! * Loopback only, on a port the kernel picks, bound the first time a URL
//!   is handed out ([`Forwarder::url`]).
//! * One thread, started when the first add-on connects (the D-Bus
//!   thread polls the listener until then): it serves every connection
//!   from one `poll` loop over non-blocking sockets, with rustls's
//!   non-blocking API for TLS. At most [`MAX_CONNECTIONS`] connections;
//!   more wait in the listen queue until one ends.
//! * Memory: two buffers of `connection::BUFFER` (16 KiB) per connection
//!   and rustls's state; nothing grows with the traffic.
//! * The target follows the token: without a token a request is answered
//!   503; when the token comes from another server, the connections to the
//!   former one are closed.
//! * Through the HTTP proxy of `https_proxy`/`http_proxy` for the server's
//!   URL, unless `no_proxy` exempts it, as the daemon's other requests
//!   (`crate::http_proxy`): a `CONNECT` tunnel (`tunnel`), then the same
//!   session with the server as without a proxy.
//! * Anyone on the device may connect (as with Mender): the forwarder adds
//!   no credentials of its own; the add-on sends the token it got.

mod connection;
pub mod head;
mod tunnel;

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use connection::{Connection, Context};
use head::{Refusal, Target};

use crate::config::Config;
use crate::http_proxy::ProxySettings;
use crate::server::token::{TokenCell, TokenWatch};

pub use connection::{BUFFER, CONNECT_TIMEOUT, HEAD_TIMEOUT};

/// Most connections served at once (mender-connect holds one).
pub const MAX_CONNECTIONS: usize = 16;

/// The TLS settings of `mender.conf` the forwarder uses.
#[derive(Debug, Clone)]
struct TlsSettings {
    extra_ca: Option<PathBuf>,
    skip_verify: bool,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let options = crate::http::HttpOptions {
            extra_ca: self.extra_ca.as_deref(),
            skip_verify: self.skip_verify,
            client_cert: self
                .client_cert
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
            status_as_response: true,
        };
        crate::http::tls_client_config(&options)
            .map(Arc::new)
            .map_err(|e| format!("{e:#}"))
    }
}

/// The forwarder of one daemon: unbound, bound (waiting for its first
/// connection), or running in its thread.
pub struct Forwarder {
    tokens: TokenCell,
    tls: TlsSettings,
    /// The environment's proxies, read once (the daemon refused to start
    /// if they were unusable).
    proxies: Result<ProxySettings, String>,
    url: Option<String>,
    /// Bound, its thread not started yet.
    waiting: Option<TcpListener>,
}

impl Forwarder {
    pub fn new(config: &Config, tokens: TokenCell) -> Forwarder {
        Forwarder {
            tokens,
            tls: TlsSettings {
                extra_ca: config.server_certificate.clone(),
                skip_verify: config.skip_verify,
                client_cert: config
                    .https_client
                    .as_ref()
                    .map(|h| (h.certificate.clone(), h.key.clone())),
            },
            proxies: ProxySettings::from_env().map_err(|e| e.to_string()),
            url: None,
            waiting: None,
        }
    }

    /// Uses `proxies` instead of the environment's (before [`Forwarder::start`]).
    pub fn set_proxies(&mut self, proxies: ProxySettings) {
        self.proxies = Ok(proxies);
    }

    /// The URL add-ons get, `http://127.0.0.1:<port>`; the first call
    /// binds the listener.
    pub fn url(&mut self) -> io::Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        log::info!("add-on forwarder on {url} (add-ons reach the server through it)");
        self.waiting = Some(listener);
        self.url = Some(url.clone());
        Ok(url)
    }

    /// The listener while no thread serves it: readable when the first
    /// add-on connects, which is when [`Forwarder::start`] is due.
    pub fn waiting_fd(&self) -> Option<RawFd> {
        self.waiting.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Starts the forwarder's thread (once; nothing before [`Forwarder::url`]).
    pub fn start(&mut self) {
        let Some(listener) = self.waiting.take() else {
            return;
        };
        let watch = match self.tokens.subscribe() {
            Ok(w) => w,
            Err(e) => {
                log::error!("add-on forwarder not started: {e}");
                return;
            }
        };
        let tokens = self.tokens.clone();
        let tls = self.tls.clone();
        let proxies = self.proxies.clone();
        let spawned = std::thread::Builder::new()
            .name("forwarder".into())
            .spawn(move || serve(&listener, &tokens, &watch, &tls, &proxies));
        match spawned {
            Ok(_) => log::debug!("add-on forwarder started"),
            Err(e) => log::error!("add-on forwarder not started: {e}"),
        }
    }
}

/// The server of the current token, or why requests cannot go anywhere.
fn current_target(tokens: &TokenCell) -> Result<Target, Refusal> {
    match tokens.get() {
        Some((jwt, url)) if !jwt.is_empty() => {
            Target::parse(&url).map_err(|e| Refusal::new(502, e))
        }
        _ => Err(Refusal::new(
            503,
            "no token: the device is not authenticated with the server (yet)",
        )),
    }
}

/// The forwarder's thread: one poll loop over the listener, the token's
/// wake-up pipe and every connection's two sockets. Runs as long as the
/// daemon.
fn serve(
    listener: &TcpListener,
    tokens: &TokenCell,
    watch: &TokenWatch,
    tls: &TlsSettings,
    proxies: &Result<ProxySettings, String>,
) {
    let tls = tls.client_config();
    if let Err(e) = proxies {
        log::error!("add-on forwarder: the proxy settings cannot be used: {e}");
    }
    if let Err(e) = &tls {
        log::error!("add-on forwarder: the TLS settings cannot be used: {e}");
    }
    let mut target = current_target(tokens);
    if let Err(refused) = &target
        && refused.status == 502
    {
        log::error!("add-on forwarder: {}", refused.detail);
    }
    let mut connections: Vec<Connection> = Vec::new();
    let mut said_full = false;
    loop {
        let full = connections.len() >= MAX_CONNECTIONS;
        if full && !said_full {
            log::warn!(
                "add-on forwarder: {MAX_CONNECTIONS} connections open: more wait until one ends"
            );
        }
        said_full = full;
        let mut fds = Vec::with_capacity(2 + 2 * connections.len());
        fds.push(libc::pollfd {
            fd: if full { -1 } else { listener.as_raw_fd() },
            events: libc::POLLIN,
            revents: 0,
        });
        fds.push(libc::pollfd {
            fd: watch.watch_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for c in &connections {
            fds.extend(c.poll_fds());
        }
        let now = Instant::now();
        let timeout = if connections.iter().any(Connection::busy) {
            0
        } else {
            connections
                .iter()
                .filter_map(Connection::deadline)
                .min()
                .map_or(-1, |d| {
                    // Rounded up: a wake-up just before the deadline
                    // would find nothing to do.
                    let ms = d.saturating_duration_since(now).as_micros().div_ceil(1000);
                    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
                })
        };
        if let Err(e) = crate::sys::poll(&mut fds, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("add-on forwarder: poll: {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            continue;
        }
        let ctx = Context {
            target: &target,
            tls: &tls,
            proxies,
            now: Instant::now(),
        };
        for (i, c) in connections.iter_mut().enumerate() {
            let woken = fds[2 + 2 * i].revents != 0 || fds[3 + 2 * i].revents != 0;
            if woken || c.busy() || c.deadline().is_some_and(|d| d <= ctx.now) {
                c.pump(&ctx);
            }
        }
        if fds[1].revents != 0 {
            // Emptied before the cell is read: a change after the read
            // leaves a byte for the next poll.
            watch.drain();
            let now = current_target(tokens);
            follow_token(&target, &now, &mut connections);
            target = now;
        }
        connections.retain(|c| !c.is_done());
        if fds[0].revents != 0 {
            accept(listener, &mut connections, Instant::now());
        }
    }
}

/// The token changed from `before` to `now`: the connections to a server
/// that is no longer the token's are closed (all of them when the token is
/// gone); those to the same server stay.
fn follow_token(
    before: &Result<Target, Refusal>,
    now: &Result<Target, Refusal>,
    connections: &mut [Connection],
) {
    if let Err(refused) = now
        && refused.status == 502
        && !matches!(before, Err(r) if r == refused)
    {
        log::error!("add-on forwarder: {}", refused.detail);
    }
    let stays = |c: &Connection| match (c.target(), now) {
        (None, _) => true,
        (Some(old), Ok(new)) => old.same_server(new),
        (Some(_), Err(_)) => false,
    };
    let mut closed = 0;
    for c in connections.iter_mut().filter(|c| !c.is_done() && !stays(c)) {
        c.close();
        closed += 1;
    }
    if closed > 0 {
        log::info!(
            "add-on forwarder: the token {}: closed {closed} connection(s) to the former server",
            match now {
                Ok(t) => format!("now comes from {}", t.url),
                Err(_) => "is gone".to_string(),
            }
        );
    }
}

/// Takes the waiting connections, up to [`MAX_CONNECTIONS`].
fn accept(listener: &TcpListener, connections: &mut Vec<Connection>, now: Instant) {
    while connections.len() < MAX_CONNECTIONS {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nonblocking(true) {
                    log::warn!("add-on forwarder: {e}");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                connections.push(Connection::new(stream, now));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and the like: said, tried again shortly (the
                // listener stays readable: no busy loop meanwhile).
                log::warn!("add-on forwarder: accepting a connection: {e}");
                std::thread::sleep(std::time::Duration::from_millis(200));
                return;
            }
        }
    }
}
