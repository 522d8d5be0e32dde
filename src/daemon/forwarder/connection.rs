//! One add-on connection through the forwarder, as a state machine the
//! forwarder's poll loop drives (`docs/managed-mode.md`, "The add-on
//! forwarder"): read the request head, connect to the server (or to the
//! HTTP proxy for it, and open a tunnel: `super::tunnel`), then relay both
//! ways until the server's side ends. Non-blocking throughout: no
//! call here waits, so one thread serves every connection.
//!
//! Each direction has one buffer of [`BUFFER`] bytes; a side is read only
//! when the buffer towards the other has room, so a slow reader slows the
//! writer down instead of growing memory (rustls adds at most one TLS
//! record and its own [`BUFFER`]-sized send limit).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use super::head::{self, Refusal, Target};
use super::tunnel::{self, Handshake, Progress, ProxyRoute};
use crate::http_proxy::ProxySettings;

/// Bytes buffered per direction (and the largest request head).
pub const BUFFER: usize = head::MAX_HEAD;
/// Longest wait for a complete request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the server's TCP and TLS handshakes (and the proxy's
/// tunnel on the way).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may go on after the add-on ended its side.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an error answer may take to leave.
const LINGER: Duration = Duration::from_secs(5);
/// Rounds of relaying per wake-up before the other connections get their
/// turn.
const ROUNDS: usize = 16;

/// What the forwarder's loop knows that a connection needs.
pub struct Context<'a> {
    /// The server of the current token, or why there is none to use.
    pub target: &'a Result<Target, Refusal>,
    /// The TLS client settings, or why they cannot be used.
    pub tls: &'a Result<Arc<rustls::ClientConfig>, String>,
    /// The proxy settings of the environment, or why they cannot be used.
    pub proxies: &'a Result<ProxySettings, String>,
    pub now: Instant,
}

/// The server's side of a relayed connection.
enum Upstream {
    Plain(TcpStream),
    Tls(TcpStream, Box<ClientConnection>),
}

enum Phase {
    /// Reading the request head into `to_server`.
    Head,
    /// The TCP connection to the server (or its proxy) is under way.
    Connecting {
        stream: TcpStream,
        /// Addresses not tried yet.
        untried: Vec<SocketAddr>,
    },
    /// Connected to the proxy: asking it for a tunnel to the server.
    Tunnel {
        stream: TcpStream,
        handshake: Handshake,
    },
    Relay(Upstream),
    /// Sending the forwarder's own (error) answer, then draining the
    /// add-on's input until it closes.
    Answering,
    Done,
}

/// What went wrong, by side: the add-on's problems end its connection
/// quietly, the server's are said (and answered while nothing else was).
enum Failure {
    Client(io::Error),
    Server(String),
}

pub struct Connection {
    client: TcpStream,
    phase: Phase,
    to_server: Buffer,
    to_client: Buffer,
    /// The server this connection goes to, once its head was read.
    target: Option<Target>,
    /// The proxy it goes through, if any.
    proxy: Option<ProxyRoute>,
    /// Method and path, for the log.
    summary: String,
    deadline: Option<Instant>,
    /// The deadline is the server handshakes'.
    connecting: bool,
    client_eof: bool,
    server_eof: bool,
    server_write_shut: bool,
    /// Some of the server's answer went to the add-on: errors can no
    /// longer be answered.
    answered: bool,
    /// The last pump stopped while data still moved.
    busy: bool,
}

impl Connection {
    pub fn new(client: TcpStream, now: Instant) -> Connection {
        Connection {
            client,
            phase: Phase::Head,
            to_server: Buffer::default(),
            to_client: Buffer::default(),
            target: None,
            proxy: None,
            summary: String::new(),
            deadline: Some(now + HEAD_TIMEOUT),
            connecting: false,
            client_eof: false,
            server_eof: false,
            server_write_shut: false,
            answered: false,
            busy: false,
        }
    }

    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Has more to do without waiting for its sockets.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Ends the connection at once (its server is no longer the token's).
    pub fn close(&mut self) {
        self.phase = Phase::Done;
    }

    /// What to wait for: the add-on's socket and the server's. A side
    /// with nothing to wait for gets descriptor -1, which poll skips (a
    /// hung-up socket would otherwise wake it for ever).
    pub fn poll_fds(&self) -> [libc::pollfd; 2] {
        let (mut client, mut server) = (0, None);
        let out_if = |pending: bool| if pending { libc::POLLOUT } else { 0 };
        match &self.phase {
            Phase::Head => client = libc::POLLIN,
            Phase::Connecting { stream, .. } => server = Some((stream, libc::POLLOUT)),
            Phase::Tunnel { stream, handshake } => {
                server = Some((
                    stream,
                    if handshake.wants_write() {
                        libc::POLLOUT
                    } else {
                        libc::POLLIN
                    },
                ));
            }
            Phase::Relay(up) => {
                if !self.client_eof && self.to_server.room() > 0 {
                    client |= libc::POLLIN;
                }
                client |= out_if(!self.to_client.is_empty());
                let room = !self.server_eof && self.to_client.room() > 0;
                server = Some(match up {
                    Upstream::Plain(s) => (
                        s,
                        if room { libc::POLLIN } else { 0 } | out_if(!self.to_server.is_empty()),
                    ),
                    Upstream::Tls(s, tls) => (
                        s,
                        if room && tls.wants_read() {
                            libc::POLLIN
                        } else {
                            0
                        } | out_if(tls.wants_write()),
                    ),
                });
            }
            Phase::Answering => {
                client = if self.to_client.is_empty() {
                    libc::POLLIN
                } else {
                    libc::POLLOUT
                }
            }
            Phase::Done => {}
        }
        let entry = |fd: i32, events: libc::c_short| libc::pollfd {
            fd: if events == 0 { -1 } else { fd },
            events,
            revents: 0,
        };
        [
            entry(self.client.as_raw_fd(), client),
            match server {
                Some((s, events)) => entry(s.as_raw_fd(), events),
                None => entry(-1, 0),
            },
        ]
    }

    /// Does what can be done now without waiting.
    pub fn pump(&mut self, ctx: &Context) {
        if self.deadline.is_some_and(|d| ctx.now >= d) {
            self.expire();
            return;
        }
        let result = match self.phase {
            Phase::Head => self.read_head(ctx),
            Phase::Connecting { .. } => self.finish_connect(ctx),
            Phase::Tunnel { .. } => self.open_tunnel(ctx),
            Phase::Relay(_) => self.relay(ctx.now),
            Phase::Answering => self.linger(),
            Phase::Done => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(Failure::Client(e)) => {
                log::debug!("add-on forwarder: {}: the add-on's side: {e}", self.what());
                self.phase = Phase::Done;
            }
            Err(Failure::Server(e)) => self.server_failed(&e, 502, ctx.now),
        }
    }

    /// "GET /path → https://server", for the log.
    fn what(&self) -> String {
        match &self.target {
            Some(t) => format!("{} → {}", self.summary, t.url),
            None if self.summary.is_empty() => "a request".into(),
            None => self.summary.clone(),
        }
    }

    fn expire(&mut self) {
        match self.phase {
            Phase::Head => {
                let detail = format!(
                    "no complete request head within {} s",
                    HEAD_TIMEOUT.as_secs()
                );
                log::debug!("add-on forwarder: {detail}");
                self.answer(408, &detail, Instant::now());
            }
            _ if self.connecting => {
                let e = match (&self.phase, &self.proxy) {
                    (Phase::Connecting { .. } | Phase::Tunnel { .. }, Some(proxy)) => format!(
                        "the proxy {} did not open a tunnel to the server within {} s",
                        proxy.name,
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    _ => format!(
                        "the server did not complete its handshake within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                };
                self.server_failed(&e, 504, Instant::now());
            }
            _ => self.phase = Phase::Done,
        }
    }

    /// A server-side failure: said, and answered if the add-on has had
    /// nothing from the server yet.
    fn server_failed(&mut self, e: &str, status: u16, now: Instant) {
        log::warn!("add-on forwarder: {}: {e}", self.what());
        if self.answered {
            self.phase = Phase::Done;
        } else {
            self.answer(status, e, now);
        }
    }

    /// Queues the forwarder's own answer, then lingers until it is out.
    fn answer(&mut self, status: u16, detail: &str, now: Instant) {
        let reason = match status {
            400 => "Bad Request",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Error",
        };
        let body = format!("mender-rs add-on forwarder: {detail}\n");
        let text = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.to_client.clear();
        self.to_client.extend(text.as_bytes());
        self.to_server.clear();
        self.phase = Phase::Answering;
        self.connecting = false;
        self.deadline = Some(now + LINGER);
    }

    fn read_head(&mut self, ctx: &Context) -> Result<(), Failure> {
        let room = self.to_server.room();
        match self.to_server.fill(room, |b| self.client.read(b)) {
            Ok(0) if room > 0 => {
                self.phase = Phase::Done;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return Err(Failure::Client(e)),
        }
        let target = match ctx.target {
            Ok(t) => t,
            Err(refusal) => {
                // Nowhere to go: refused at once (the rest of the head is
                // read and dropped while the answer leaves).
                log::warn!("add-on forwarder: request refused: {}", refusal.detail);
                self.answer(refusal.status, &refusal.detail, ctx.now);
                return Ok(());
            }
        };
        let request = match head::parse(self.to_server.data(), target) {
            Ok(None) => return Ok(()),
            Ok(Some(r)) => r,
            Err(bad) => {
                self.refuse(&bad, ctx.now);
                return Ok(());
            }
        };
        let body = self.to_server.data()[request.consumed..].to_vec();
        self.to_server.clear();
        self.to_server.extend(&request.head);
        self.to_server.extend(&body);
        self.summary = request.summary;
        self.target = Some(target.clone());
        log::debug!(
            "add-on forwarder: {}{}",
            self.what(),
            if request.upgrade { " (upgrade)" } else { "" }
        );
        self.proxy = tunnel::route(ctx.proxies, target).map_err(Failure::Server)?;
        if let Some(proxy) = &self.proxy {
            log::debug!(
                "add-on forwarder: {}: through the proxy {}",
                self.what(),
                proxy.name
            );
        }
        let mut untried = None;
        match connect_to_server(target, self.proxy.as_ref(), &mut untried) {
            Ok(stream) => {
                self.phase = Phase::Connecting {
                    stream,
                    untried: untried.unwrap_or_default(),
                };
                self.connecting = true;
                self.deadline = Some(ctx.now + CONNECT_TIMEOUT);
                Ok(())
            }
            Err(e) => Err(Failure::Server(cannot_connect(
                target,
                self.proxy.as_ref(),
                &e,
            ))),
        }
    }

    fn refuse(&mut self, bad: &Refusal, now: Instant) {
        log::warn!("add-on forwarder: request refused: {}", bad.detail);
        self.answer(bad.status, &bad.detail, now);
    }

    fn finish_connect(&mut self, ctx: &Context) -> Result<(), Failure> {
        let Phase::Connecting { stream, untried } = &mut self.phase else {
            return Ok(());
        };
        let Some(target) = &self.target else {
            return Ok(());
        };
        let failed = match stream.take_error() {
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                // Not there yet.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => Some(e),
            },
            Ok(Some(e)) | Err(e) => Some(e),
        };
        if let Some(e) = failed {
            let mut rest = Some(std::mem::take(untried));
            return match connect_to_server(target, self.proxy.as_ref(), &mut rest) {
                Ok(next) => {
                    *stream = next;
                    *untried = rest.unwrap_or_default();
                    Ok(())
                }
                Err(_) => Err(Failure::Server(cannot_connect(
                    target,
                    self.proxy.as_ref(),
                    &e,
                ))),
            };
        }
        let Phase::Connecting { stream, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Ok(());
        };
        let _ = stream.set_nodelay(true);
        if let Some(proxy) = &self.proxy {
            let handshake = Handshake::new(proxy, target);
            self.phase = Phase::Tunnel { stream, handshake };
            return self.open_tunnel(ctx);
        }
        self.start_session(stream, &[], ctx)
    }

    /// [`Phase::Tunnel`]: the `CONNECT` exchange with the proxy; the
    /// session with the server starts when the tunnel is open.
    fn open_tunnel(&mut self, ctx: &Context) -> Result<(), Failure> {
        let (Phase::Tunnel { stream, handshake }, Some(proxy)) = (&mut self.phase, &self.proxy)
        else {
            return Ok(());
        };
        match handshake.pump(stream, proxy).map_err(Failure::Server)? {
            Progress::Pending => Ok(()),
            Progress::Open(early) => {
                let Phase::Tunnel { stream, .. } = std::mem::replace(&mut self.phase, Phase::Done)
                else {
                    return Ok(());
                };
                self.start_session(stream, &early, ctx)
            }
        }
    }

    /// Starts the TLS (or plain) session with the server on `stream`,
    /// direct or through a tunnel; `early` is what the server sent already
    /// (after the proxy's answer).
    fn start_session(
        &mut self,
        stream: TcpStream,
        early: &[u8],
        ctx: &Context,
    ) -> Result<(), Failure> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let upstream = if target.tls {
            let config = ctx
                .tls
                .as_ref()
                .map_err(|e| Failure::Server(format!("TLS settings: {e}")))?;
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| Failure::Server(format!("server name {:?}: {e}", target.host)))?;
            let mut tls = ClientConnection::new(config.clone(), name)
                .map_err(|e| Failure::Server(format!("TLS: {e}")))?;
            tls.set_buffer_limit(Some(BUFFER));
            // At most the proxy's MAX_ANSWER bytes (a server does not
            // speak first in TLS: rustls says what is wrong with them).
            let mut early = early;
            while !early.is_empty() {
                let n = tls
                    .read_tls(&mut early)
                    .and_then(|n| {
                        tls.process_new_packets().map_err(io::Error::other)?;
                        Ok(n)
                    })
                    .map_err(|e| Failure::Server(format!("TLS with the server: {e}")))?;
                if n == 0 {
                    break;
                }
            }
            Upstream::Tls(stream, Box::new(tls))
        } else {
            self.connecting = false;
            self.deadline = None;
            if !early.is_empty() {
                self.to_client.extend(early);
                self.answered = true;
            }
            Upstream::Plain(stream)
        };
        self.phase = Phase::Relay(upstream);
        self.relay(ctx.now)
    }

    fn relay(&mut self, now: Instant) -> Result<(), Failure> {
        let Phase::Relay(up) = &mut self.phase else {
            return Ok(());
        };
        self.busy = true;
        for _ in 0..ROUNDS {
            let mut moved = write_out(&mut self.client, &mut self.to_client)?;
            let got = up
                .read(&mut self.to_client, &mut self.server_eof)
                .map_err(Failure::Server)?;
            self.answered |= got > 0;
            moved += got + write_out(&mut self.client, &mut self.to_client)?;
            if !self.client_eof {
                let room = self.to_server.room();
                match self.to_server.fill(room, |b| self.client.read(b)) {
                    Ok(0) if room > 0 => {
                        self.client_eof = true;
                        if !self.connecting {
                            self.deadline = Some(now + CLOSE_TIMEOUT);
                        }
                    }
                    Ok(n) => moved += n,
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(Failure::Client(e)),
                }
            }
            moved += up.write(&mut self.to_server).map_err(Failure::Server)?;
            if self.client_eof && self.to_server.is_empty() && !self.server_write_shut {
                // The add-on ended its side: so does the server's.
                up.shut_write();
                self.server_write_shut = true;
                moved += 1;
            }
            if self.connecting && !up.handshaking() {
                self.connecting = false;
                self.deadline = self.client_eof.then_some(now + CLOSE_TIMEOUT);
            }
            if self.server_eof && self.to_client.is_empty() {
                if !self.answered {
                    return Err(Failure::Server(
                        "the server closed the connection without answering".into(),
                    ));
                }
                self.phase = Phase::Done;
                self.busy = false;
                return Ok(());
            }
            if moved == 0 {
                self.busy = false;
                break;
            }
        }
        Ok(())
    }

    /// [`Phase::Answering`]: out with the answer, then read (and drop)
    /// what the add-on still sends until it closes: closing with unread
    /// input would reset the connection and could lose the answer.
    fn linger(&mut self) -> Result<(), Failure> {
        if !self.to_client.is_empty() {
            write_out(&mut self.client, &mut self.to_client)?;
            if self.to_client.is_empty() {
                let _ = self.client.shutdown(Shutdown::Write);
            }
            return Ok(());
        }
        let mut sink = [0u8; 1024];
        loop {
            match self.client.read(&mut sink) {
                Ok(0) => {
                    self.phase = Phase::Done;
                    return Ok(());
                }
                Ok(_) => continue,
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) => return Err(Failure::Client(e)),
            }
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Writes what `buffer` holds to the add-on; the bytes written.
fn write_out(client: &mut TcpStream, buffer: &mut Buffer) -> Result<usize, Failure> {
    if buffer.is_empty() {
        return Ok(0);
    }
    match client.write(buffer.data()) {
        Ok(n) => {
            buffer.consume(n);
            Ok(n)
        }
        Err(e) if would_block(&e) => Ok(0),
        Err(e) => Err(Failure::Client(e)),
    }
}

impl Upstream {
    /// Reads from the server into `into` (when it has room); sets `eof`
    /// when the server's side ended. The bytes read.
    fn read(&mut self, into: &mut Buffer, eof: &mut bool) -> Result<usize, String> {
        if *eof {
            return Ok(0);
        }
        match self {
            Upstream::Plain(stream) => {
                let room = into.room();
                match into.fill(room, |b| stream.read(b)) {
                    Ok(0) if room > 0 => {
                        *eof = true;
                        Ok(0)
                    }
                    Ok(n) => Ok(n),
                    Err(e) if would_block(&e) => Ok(0),
                    Err(e) => Err(format!("reading from the server: {e}")),
                }
            }
            Upstream::Tls(stream, tls) => {
                let mut total = 0;
                loop {
                    let room = into.room();
                    if room == 0 {
                        return Ok(total);
                    }
                    match into.fill(room, |b| tls.reader().read(b)) {
                        Ok(0) => {
                            // close_notify: the server's answer is complete.
                            *eof = true;
                            return Ok(total);
                        }
                        Ok(n) => {
                            total += n;
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            // Closed without close_notify: HTTP/1.1 framing
                            // (or the WebSocket's) still tells the add-on
                            // whether it got everything.
                            *eof = true;
                            return Ok(total);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(format!("TLS: {e}")),
                    }
                    if !tls.wants_read() {
                        return Ok(total);
                    }
                    match tls.read_tls(stream) {
                        Ok(n) => {
                            // After the TCP end (0), rustls says above
                            // whether it was orderly.
                            tls.process_new_packets().map_err(|e| {
                                // The alert goes out if it can.
                                let _ = tls.write_tls(stream);
                                format!("TLS with the server: {e}")
                            })?;
                            if n == 0 && tls.wants_read() {
                                *eof = true;
                                return Ok(total);
                            }
                        }
                        Err(e) if would_block(&e) => return Ok(total),
                        Err(e) => return Err(format!("reading from the server: {e}")),
                    }
                }
            }
        }
    }

    /// Writes what `from` holds towards the server; the bytes that left
    /// `from` or went out on the socket.
    fn write(&mut self, from: &mut Buffer) -> Result<usize, String> {
        let sent = |e: io::Error| format!("writing to the server: {e}");
        match self {
            Upstream::Plain(stream) => {
                if from.is_empty() {
                    return Ok(0);
                }
                match stream.write(from.data()) {
                    Ok(n) => {
                        from.consume(n);
                        Ok(n)
                    }
                    Err(e) if would_block(&e) => Ok(0),
                    Err(e) => Err(sent(e)),
                }
            }
            Upstream::Tls(stream, tls) => {
                let mut moved = 0;
                loop {
                    if !from.is_empty() {
                        // Buffered by rustls up to its limit (sent once
                        // the handshake is done).
                        let n = tls.writer().write(from.data()).map_err(sent)?;
                        from.consume(n);
                        moved += n;
                    }
                    if !tls.wants_write() {
                        return Ok(moved);
                    }
                    match tls.write_tls(stream) {
                        Ok(n) => moved += n,
                        Err(e) if would_block(&e) => return Ok(moved),
                        Err(e) => return Err(sent(e)),
                    }
                }
            }
        }
    }

    /// Ends the way towards the server (the add-on ended its side).
    fn shut_write(&mut self) {
        match self {
            Upstream::Plain(stream) => {
                let _ = stream.shutdown(Shutdown::Write);
            }
            // Sent by the next write().
            Upstream::Tls(_, tls) => tls.send_close_notify(),
        }
    }

    fn handshaking(&self) -> bool {
        match self {
            Upstream::Plain(_) => false,
            Upstream::Tls(_, tls) => tls.is_handshaking(),
        }
    }
}

/// Opens the TCP connection towards the server: to `proxy` when it goes
/// through one (the tunnel follows), else to `target`. Resolves the name
/// the first time (`untried` None), then starts a connection to the next
/// address not tried. Every forwarded request reaches the server through
/// here.
///
/// Name resolution blocks (getaddrinfo): the forwarder's other connections
/// wait meanwhile; the connection itself does not (see `crate::sys::tcp`).
fn connect_to_server(
    target: &Target,
    proxy: Option<&ProxyRoute>,
    untried: &mut Option<Vec<SocketAddr>>,
) -> io::Result<TcpStream> {
    let (host, port) = match proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (target.host.as_str(), target.port),
    };
    let addresses = match untried {
        Some(a) => a,
        None => {
            let mut resolved: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
            // Tried in the resolver's order: pop() takes from the end.
            resolved.reverse();
            untried.insert(resolved)
        }
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    while let Some(address) = addresses.pop() {
        match crate::sys::tcp::connect_nonblocking(&address) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn cannot_connect(target: &Target, proxy: Option<&ProxyRoute>, e: &io::Error) -> String {
    match proxy {
        Some(p) => format!(
            "cannot connect to the proxy {} (for {}:{}): {e}",
            p.name, target.host, target.port
        ),
        None => format!("cannot connect to {}:{}: {e}", target.host, target.port),
    }
}

/// A byte buffer of at most [`BUFFER`] bytes that [`Buffer::fill`] reads
/// into (it may hold more after [`Buffer::extend`]: a rewritten head),
/// allocated on first use.
#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buffer {
    fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn room(&self) -> usize {
        BUFFER.saturating_sub(self.len())
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Moves the data to the front.
    fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Appends `data`, beyond [`BUFFER`] if need be.
    fn extend(&mut self, data: &[u8]) {
        self.compact();
        self.bytes.truncate(self.end);
        self.bytes.extend_from_slice(data);
        self.end = self.bytes.len();
        if self.bytes.len() < BUFFER {
            self.bytes.resize(BUFFER, 0);
        }
    }

    /// Reads at most `room` bytes with `read` (which gets the free space);
    /// `Ok(0)` when `room` is 0 or the source ended.
    fn fill(
        &mut self,
        room: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if room == 0 {
            return Ok(0);
        }
        if self.bytes.is_empty() {
            self.bytes = vec![0; BUFFER];
        }
        if self.bytes.len() - self.end < room {
            self.compact();
        }
        let stop = (self.end + room).min(self.bytes.len());
        let n = read(&mut self.bytes[self.end..stop])?;
        self.end += n.min(stop - self.end);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_holds_at_most_its_size_and_keeps_order() {
        let mut b = Buffer::default();
        assert_eq!(b.room(), BUFFER);
        let n = b.fill(b.room(), |s| Ok(s.len())).unwrap();
        assert_eq!((n, b.room()), (BUFFER, 0));
        assert_eq!(b.fill(b.room(), |_| panic!("no room")).unwrap(), 0);
        b.consume(BUFFER - 3);
        b.bytes[BUFFER - 3..].copy_from_slice(b"abc");
        // Compacted before the next read.
        let n = b.fill(b.room(), |s| {
            s[..2].copy_from_slice(b"de");
            Ok(2)
        });
        assert_eq!(n.unwrap(), 2);
        assert_eq!(b.data(), b"abcde");
        b.extend(&vec![b'x'; BUFFER]);
        assert_eq!((b.len(), b.room()), (BUFFER + 5, 0));
        b.consume(BUFFER + 5);
        assert!(b.is_empty());
        assert_eq!(b.room(), BUFFER);
    }
}
