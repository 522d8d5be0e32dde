//! `GET /api/devices/v1/deviceconnect/connect`: the WebSocket that Mender's
//! remote-terminal add-on (`mender-connect`) keeps open to the server, and a
//! scripted "remote terminal operator" that tests drive through
//! [`MenderServer::remote_shell`].
//!
//! The handshake (RFC 6455) is answered here once the bearer token is the
//! one the server currently accepts (401 otherwise, like the real server);
//! the connection thread then owns the socket. Messages are Mender's
//! `ProtoMsg`, msgpack-encoded (mendersoftware/go-lib-micro, `ws/protomsg.go`:
//! a map `{hdr: {proto, typ, sid, props}, body}`; `ws/shell/model.go` for the
//! shell message types and statuses). The operator opens a shell session
//! (`new`), sends one command line (`shell`), collects the output until an
//! expected text appears, and stops the session (`stop`); it answers the
//! add-on's shell `ping` with `pong`. Everything is bounded: message size,
//! collected output, and the time of each run.

use super::*;
use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rmpv::Value as Msgpack;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

/// Largest WebSocket message or frame taken from the device.
const MAX_MESSAGE: usize = 1 << 20;
/// Largest shell output collected by one [`MenderServer::remote_shell`].
const MAX_OUTPUT: usize = 64 * 1024;
/// Longest [`MenderServer::remote_shell`] run.
const MAX_RUN: Duration = Duration::from_secs(120);
/// How long the operator waits for the answer to `stop`.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// A session that relays no byte at all this long after the command (not
/// even the terminal's echo of it) is silent: see [`SESSIONS`].
const QUIET: Duration = Duration::from_secs(5);
/// Sessions one run may open. mender-connect 2.1 starts the goroutine that
/// relays the shell's output before it marks the shell running, and that
/// goroutine returns at once when it looks first (`shell/exec.go`,
/// `MenderShell.Start`): now and then a session relays nothing. An operator
/// then opens another one; so does the run, for silent sessions only.
const SESSIONS: u32 = 3;

/// `ProtoType` values (go-lib-micro `ws/protomsg.go`).
const PROTO_SHELL: u64 = 1;
/// `MenderShellMessageStatus` values (go-lib-micro `ws/shell/model.go`).
const STATUS_NORMAL: i64 = 1;
const STATUS_ERROR: i64 = 2;

/// One accepted deviceconnect WebSocket.
#[derive(Clone, Debug)]
pub struct DeviceConnectRecord {
    /// In order of acceptance, from 1.
    pub id: u64,
    pub device: String,
    /// The bearer token of the handshake.
    pub token: String,
    /// Since the server started.
    pub opened: Duration,
    /// Set when the connection ended (closed by either side, or broken).
    pub closed: Option<Duration>,
    /// `ProtoMsg`s received from the device.
    pub messages: u64,
}

/// What one [`MenderServer::remote_shell`] saw.
#[derive(Clone, Debug)]
pub struct ShellRun {
    /// The [`DeviceConnectRecord::id`] of the connection used.
    pub connection: u64,
    /// The shell's output (terminal bytes, lossily as text), up to the
    /// expected text.
    pub output: String,
    /// Sessions opened: more than 1 when silent ones were replaced
    /// (see `SESSIONS` in `deviceconnect.rs`).
    pub sessions: u32,
}

/// A run waiting for its connection thread.
pub(super) struct ShellJob {
    connection: u64,
    command: String,
    expect: String,
    deadline: Instant,
    reply: mpsc::Sender<Result<(String, u32), String>>,
}

/// The deviceconnect part of [`State`].
#[derive(Default)]
pub(super) struct DeviceConnectState {
    pub(super) connections: Vec<DeviceConnectRecord>,
    pub(super) jobs: VecDeque<ShellJob>,
}

/// What the handshake handler hands to the connection loop.
pub(super) struct Upgrade {
    pub(super) connection: u64,
}

impl MenderServer {
    /// Every deviceconnect connection accepted so far, open or closed.
    pub fn deviceconnect_connections(&self) -> Vec<DeviceConnectRecord> {
        self.lock().deviceconnect.connections.clone()
    }

    /// The newest open deviceconnect connection of `device`.
    pub fn open_deviceconnect(&self, device: &str) -> Option<DeviceConnectRecord> {
        let st = self.lock();
        st.deviceconnect
            .connections
            .iter()
            .rev()
            .find(|c| c.device == device && c.closed.is_none())
            .cloned()
    }

    /// The remote terminal operator: on the newest open deviceconnect
    /// connection of `device`, opens a shell session, types `command` and a
    /// newline, collects the output until it contains `expect`, and stops
    /// the session. Errs when there is no open connection, the device
    /// refuses the session, the output never shows `expect` within
    /// `timeout` (capped at 120 s) or grows past 64 KiB, or the connection
    /// ends.
    pub fn remote_shell(
        &self,
        device: &str,
        command: &str,
        expect: &str,
        timeout: Duration,
    ) -> Result<ShellRun, String> {
        let timeout = timeout.min(MAX_RUN);
        let Some(conn) = self.open_deviceconnect(device) else {
            return Err(format!(
                "device {device} has no open deviceconnect connection"
            ));
        };
        let (reply, answer) = mpsc::channel();
        self.lock().deviceconnect.jobs.push_back(ShellJob {
            connection: conn.id,
            command: command.to_owned(),
            expect: expect.to_owned(),
            deadline: Instant::now() + timeout,
            reply,
        });
        // The connection thread answers by the deadline; the margin covers
        // the `stop` exchange after it.
        match answer.recv_timeout(timeout + STOP_WAIT + Duration::from_secs(5)) {
            Ok(Ok((output, sessions))) => Ok(ShellRun {
                connection: conn.id,
                output,
                sessions,
            }),
            Ok(Err(e)) => Err(format!("connection {}: {e}", conn.id)),
            Err(_) => Err(format!(
                "connection {}: no answer from its thread (connection gone)",
                conn.id
            )),
        }
    }
}

/// Checks the WebSocket handshake of an authenticated request; the 101
/// answer, or a 400 violation naming the header.
pub(super) fn handle_deviceconnect(ctx: &mut Ctx) -> Response {
    if ctx.req.method != "GET" {
        return ctx.method_not_allowed("GET");
    }
    let mut st = ctx.shared.lock();
    let device = match ctx.authenticate(&mut st) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let has_token = |name: &str, token: &str| {
        ctx.req
            .header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return ctx.refuse(&mut st, 400, "Upgrade: websocket missing");
    }
    if !has_token("connection", "upgrade") {
        return ctx.refuse(&mut st, 400, "Connection: Upgrade missing");
    }
    if ctx.req.header("sec-websocket-version") != Some("13") {
        return ctx.refuse(&mut st, 400, "Sec-WebSocket-Version is not 13");
    }
    let key = ctx.req.header("sec-websocket-key").unwrap_or("");
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return ctx.refuse(
            &mut st,
            400,
            format!("Sec-WebSocket-Key {key:?} is not 16 bytes in base64"),
        );
    }
    let token = ctx
        .req
        .header("authorization")
        .and_then(|a| a.split_once(' '))
        .map(|(_, t)| t.trim().to_owned())
        .unwrap_or_default();
    let opened = ctx.shared.started.elapsed();
    let connections = &mut st.deviceconnect.connections;
    let id = connections.len() as u64 + 1;
    connections.push(DeviceConnectRecord {
        id,
        device,
        token,
        opened,
        closed: None,
        messages: 0,
    });
    let mut resp = Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header(
            "Sec-WebSocket-Accept",
            tungstenite::handshake::derive_accept_key(key.as_bytes()),
        );
    resp.upgrade = Some(Box::new(Upgrade { connection: id }));
    resp
}

/// Marks a connection closed (also when its 101 could not be written).
pub(super) fn mark_closed(shared: &Shared, connection: u64) {
    let mut st = shared.lock();
    let now = shared.started.elapsed();
    if let Some(c) = st
        .deviceconnect
        .connections
        .iter_mut()
        .find(|c| c.id == connection)
    {
        c.closed.get_or_insert(now);
    }
    // Runs queued for it get their answer (the channel) dropped.
    st.deviceconnect.jobs.retain(|j| j.connection != connection);
}

/// The connection thread after the 101: `early` holds bytes the client
/// sent right behind its handshake. Returns when the connection ends or
/// the server stops.
pub(super) fn serve_deviceconnect(
    shared: Arc<Shared>,
    stream: TcpStream,
    early: Vec<u8>,
    upgrade: Upgrade,
) {
    let id = upgrade.connection;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(4 * MAX_MESSAGE);
    let mut ws = WebSocket::from_partially_read(stream, early, Role::Server, Some(config));
    let mut peer = Peer {
        shared: &shared,
        id,
        ws: &mut ws,
    };
    while !shared.stopping() {
        let job = {
            let mut st = shared.lock();
            let jobs = &mut st.deviceconnect.jobs;
            jobs.iter()
                .position(|j| j.connection == id)
                .and_then(|i| jobs.remove(i))
        };
        if let Some(job) = job {
            let mut sessions = 0;
            let result = loop {
                sessions += 1;
                match run_shell(&mut peer, &job) {
                    Err(Broken::Silent)
                        if sessions < SESSIONS && Instant::now() + QUIET < job.deadline =>
                    {
                        continue;
                    }
                    other => break other.map(|out| (out, sessions)),
                }
            };
            let broken = matches!(&result, Err(Broken::Connection(_)));
            let _ = job.reply.send(result.map_err(|e| e.to_string()));
            if broken {
                break;
            }
            continue;
        }
        match peer.next(Instant::now() + POLL) {
            Ok(Some(msg)) => peer.answer_ping(&msg),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    mark_closed(&shared, id);
    let _ = ws.close(None);
    let _ = ws.flush();
    let _ = ws.get_ref().shutdown(Shutdown::Both);
}

/// Why a run failed: the session (the connection stays usable) or the
/// connection itself.
enum Broken {
    Session(String),
    /// Not one byte from the session after the command.
    Silent,
    Connection(String),
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Session(e) => write!(f, "{e}"),
            Broken::Silent => write!(f, "{SESSIONS} shell sessions relayed no output"),
            Broken::Connection(e) => write!(f, "connection lost: {e}"),
        }
    }
}

/// One `ProtoMsg`.
#[derive(Clone, Debug, Default)]
struct ProtoMsg {
    proto: u64,
    typ: String,
    sid: String,
    props: Vec<(String, Msgpack)>,
    body: Vec<u8>,
}

impl ProtoMsg {
    fn shell(typ: &str, sid: &str) -> ProtoMsg {
        ProtoMsg {
            proto: PROTO_SHELL,
            typ: typ.to_owned(),
            sid: sid.to_owned(),
            ..ProtoMsg::default()
        }
    }

    fn prop(&self, name: &str) -> Option<&Msgpack> {
        self.props.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn encode(&self) -> Vec<u8> {
        let props = self
            .props
            .iter()
            .map(|(n, v)| (Msgpack::from(n.as_str()), v.clone()))
            .collect();
        let hdr = Msgpack::Map(vec![
            (Msgpack::from("proto"), Msgpack::from(self.proto)),
            (Msgpack::from("typ"), Msgpack::from(self.typ.as_str())),
            (Msgpack::from("sid"), Msgpack::from(self.sid.as_str())),
            (Msgpack::from("props"), Msgpack::Map(props)),
        ]);
        let msg = Msgpack::Map(vec![
            (Msgpack::from("hdr"), hdr),
            (Msgpack::from("body"), Msgpack::Binary(self.body.clone())),
        ]);
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &msg);
        out
    }

    /// Decodes strictly: the error names the field.
    fn decode(bytes: &[u8]) -> Result<ProtoMsg, String> {
        let mut rd = bytes;
        let value = rmpv::decode::read_value_with_max_depth(&mut rd, 16)
            .map_err(|e| format!("not msgpack: {e}"))?;
        if !rd.is_empty() {
            return Err(format!("{} bytes after the message", rd.len()));
        }
        let top = as_map(&value, "message")?;
        let hdr = as_map(field(top, "hdr").ok_or("hdr missing")?, "hdr")?;
        let proto = field(hdr, "proto")
            .ok_or("hdr.proto missing")?
            .as_u64()
            .filter(|p| *p <= u64::from(u16::MAX))
            .ok_or("hdr.proto is not a 16-bit unsigned integer")?;
        let text = |name: &str| -> Result<String, String> {
            match field(hdr, name) {
                None | Some(Msgpack::Nil) => Ok(String::new()),
                Some(Msgpack::String(s)) => s
                    .as_str()
                    .map(str::to_owned)
                    .ok_or(format!("hdr.{name} is not UTF-8")),
                Some(_) => Err(format!("hdr.{name} is not a string")),
            }
        };
        let (typ, sid) = (text("typ")?, text("sid")?);
        let props = match field(hdr, "props") {
            None | Some(Msgpack::Nil) => Vec::new(),
            Some(p) => as_map(p, "hdr.props")?
                .iter()
                .map(|(k, v)| match k.as_str() {
                    Some(k) => Ok((k.to_owned(), v.clone())),
                    None => Err("hdr.props has a key that is not a string".to_owned()),
                })
                .collect::<Result<_, _>>()?,
        };
        let body = match field(top, "body") {
            None | Some(Msgpack::Nil) => Vec::new(),
            Some(Msgpack::Binary(b)) => b.clone(),
            Some(Msgpack::String(s)) => s.as_bytes().to_vec(),
            Some(_) => return Err("body is not bytes".into()),
        };
        Ok(ProtoMsg {
            proto,
            typ,
            sid,
            props,
            body,
        })
    }
}

fn as_map<'v>(v: &'v Msgpack, what: &str) -> Result<&'v [(Msgpack, Msgpack)], String> {
    match v {
        Msgpack::Map(m) => Ok(m),
        _ => Err(format!("{what} is not a map")),
    }
}

fn field<'v>(map: &'v [(Msgpack, Msgpack)], name: &str) -> Option<&'v Msgpack> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// The device end of one connection, for its thread.
struct Peer<'a> {
    shared: &'a Shared,
    id: u64,
    ws: &'a mut WebSocket<TcpStream>,
}

impl Peer<'_> {
    fn send(&mut self, msg: &ProtoMsg) -> Result<(), Broken> {
        self.ws
            .send(Message::Binary(msg.encode().into()))
            .map_err(|e| Broken::Connection(format!("sending {}: {e}", msg.typ)))
    }

    /// The next `ProtoMsg` by `deadline` (None: none came). WebSocket
    /// pings are answered by tungstenite on the next read or flush. A
    /// message that does not decode is a violation and is skipped.
    fn next(&mut self, deadline: Instant) -> Result<Option<ProtoMsg>, Broken> {
        loop {
            if self.shared.stopping() {
                return Err(Broken::Connection("server stopping".into()));
            }
            match self.ws.read() {
                Ok(Message::Binary(bytes)) => {
                    let decoded = ProtoMsg::decode(&bytes);
                    let mut st = self.shared.lock();
                    let rec = st
                        .deviceconnect
                        .connections
                        .iter_mut()
                        .find(|c| c.id == self.id);
                    let device = rec.map(|c| {
                        c.messages += 1;
                        c.device.clone()
                    });
                    match decoded {
                        Ok(msg) => return Ok(Some(msg)),
                        Err(problem) => st.violation(
                            device.as_deref(),
                            "WS",
                            "/api/devices/v1/deviceconnect/connect",
                            format!("malformed ProtoMsg: {problem}"),
                        ),
                    }
                }
                Ok(Message::Text(_)) => {
                    let mut st = self.shared.lock();
                    st.violation(
                        None,
                        "WS",
                        "/api/devices/v1/deviceconnect/connect",
                        "text message (ProtoMsgs are binary)".into(),
                    );
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    let _ = self.ws.flush();
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(Broken::Connection(e.to_string())),
            }
        }
    }

    /// The add-on's session health check: a shell `ping` gets a `pong`.
    fn answer_ping(&mut self, msg: &ProtoMsg) {
        if msg.proto == PROTO_SHELL && msg.typ == "ping" {
            let _ = self.send(&ProtoMsg::shell("pong", &msg.sid));
        }
    }

    /// The next message of session `sid` by `deadline`.
    fn next_of(&mut self, sid: &str, deadline: Instant) -> Result<Option<ProtoMsg>, Broken> {
        while Instant::now() < deadline {
            match self.next(deadline)? {
                Some(m) if m.proto == PROTO_SHELL && m.sid == sid && m.typ != "ping" => {
                    return Ok(Some(m));
                }
                Some(m) => self.answer_ping(&m),
                None => {}
            }
        }
        Ok(None)
    }
}

/// The `status` property of an answer (absent: normal).
fn status_of(msg: &ProtoMsg) -> i64 {
    msg.prop("status")
        .and_then(Msgpack::as_i64)
        .unwrap_or(STATUS_NORMAL)
}

fn run_shell(peer: &mut Peer, job: &ShellJob) -> Result<String, Broken> {
    let sid = {
        let mut st = peer.shared.lock();
        st.seq += 1;
        uuid_like(&peer.shared.secret, "shell-session", st.seq)
    };
    let mut new = ProtoMsg::shell("new", &sid);
    new.props = vec![
        ("user_id".into(), Msgpack::from(format!("operator-{sid}"))),
        ("terminal_width".into(), Msgpack::from(80)),
        ("terminal_height".into(), Msgpack::from(24)),
    ];
    peer.send(&new)?;
    // The add-on starts relaying the shell's output (its prompt) before it
    // answers `new`: that output is kept.
    let mut output = Vec::new();
    let answer = loop {
        match peer.next_of(&sid, job.deadline)? {
            Some(m) if m.typ == "shell" && status_of(&m) == STATUS_NORMAL => {
                output.extend_from_slice(&m.body);
                if output.len() > MAX_OUTPUT {
                    return Err(Broken::Session(
                        "64 KiB of output before the session opened".into(),
                    ));
                }
            }
            Some(m) => break m,
            None => {
                return Err(Broken::Session(
                    "no answer to the shell \"new\" message".into(),
                ));
            }
        }
    };
    if answer.typ != "new" || status_of(&answer) != STATUS_NORMAL {
        return Err(Broken::Session(format!(
            "shell session refused: {} (status {}): {}",
            answer.typ,
            status_of(&answer),
            String::from_utf8_lossy(&answer.body)
        )));
    }
    let mut line = ProtoMsg::shell("shell", &sid);
    line.body = format!("{}\n", job.command).into_bytes();
    peer.send(&line)?;
    let quiet_until = Instant::now() + QUIET;
    let found = loop {
        let wait = if output.is_empty() {
            quiet_until.min(job.deadline)
        } else {
            job.deadline
        };
        let Some(msg) = peer.next_of(&sid, wait)? else {
            break false;
        };
        if msg.typ == "shell" && status_of(&msg) != STATUS_ERROR {
            output.extend_from_slice(&msg.body);
        } else {
            output.extend_from_slice(
                format!(
                    "\n[{} status {}: {}]\n",
                    msg.typ,
                    status_of(&msg),
                    String::from_utf8_lossy(&msg.body)
                )
                .as_bytes(),
            );
        }
        if output.len() > MAX_OUTPUT {
            output.truncate(MAX_OUTPUT);
            break false;
        }
        if String::from_utf8_lossy(&output).contains(&job.expect) {
            break true;
        }
    };
    // Stopped whatever happened, so that the add-on's per-user session
    // limit does not refuse the next run.
    peer.send(&ProtoMsg::shell("stop", &sid))?;
    let _ = peer.next_of(&sid, Instant::now() + STOP_WAIT)?;
    let text = String::from_utf8_lossy(&output).into_owned();
    if found {
        Ok(text)
    } else if output.is_empty() {
        Err(Broken::Silent)
    } else {
        Err(Broken::Session(format!(
            "{:?} not in the shell output (timeout or 64 KiB): {text:?}",
            job.expect
        )))
    }
}
