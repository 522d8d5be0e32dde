//! The remote-terminal add-on: Debian's real `mender-connect` (2.1) beside
//! the daemon on a private D-Bus bus (`dbus::Bus`), against the test
//! server's deviceconnect WebSocket (`tests/support/mender_server/
//! deviceconnect.rs`), as a new user would set it up. mender-connect gets
//! the token and the server URL over D-Bus (`GetJwtToken`,
//! `JwtTokenStateChange`), opens the WebSocket with the token, and the
//! server's scripted operator runs a command in a remote shell.
//!
//! * a shell round trip; a device accepted late connects through the
//!   signal; a revoked token is replaced and mender-connect reconnects;
//! * a private CA (trusted only through `ServerCertificate`) and mutual
//!   TLS (`HttpsClient`): mender-connect ignores both, so these go through
//!   the daemon's add-on forwarder (issue 15).
//!
//! mender-connect runs the shell as the current user (it switches users
//! only when run as root); everything else lives in temporary directories.
//! Without `mender-connect` the tests that need it say so and pass, except
//! in CI (`CI` set), where scripts/install-deps must have installed it.
//! The last test needs no add-on: a client of its own plays the device.
#![cfg(feature = "dbus")]

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::managed::{DaemonChild, ManagedDevice};
use crate::support::mender_server::*;
use serde_json::{Value, json};

use super::dbus::{Bus, managed_on};

const MENDER_CONNECT: &str = "/usr/bin/mender-connect";
/// How long mender-connect may take to (re)connect: its retry interval is
/// set to 1 s, the daemon polls every second.
const CONNECT_WAIT: Duration = Duration::from_secs(45);
const SHELL_WAIT: Duration = Duration::from_secs(30);

/// False (with the reason printed) when mender-connect is missing outside
/// CI; panics when it is missing in CI.
fn mender_connect_installed() -> bool {
    if Path::new(MENDER_CONNECT).exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{MENDER_CONNECT} is missing: scripts/install-deps installs it (package mender-connect)"
        );
    }
    eprintln!("skipped: {MENDER_CONNECT} is not installed (scripts/install-deps installs it)");
    false
}

/// `mender-connect daemon` on the private bus, with a configuration of its
/// own; killed (with its process group) on drop.
struct MenderConnect {
    _dir: tempfile::TempDir,
    log: PathBuf,
    _child: DaemonChild,
}

impl MenderConnect {
    fn start(bus: &Bus) -> MenderConnect {
        let dir = tempfile::tempdir().unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        // Empty ShellArguments: the default `--login` is refused by dash.
        let config = json!({
            "User": user,
            "ShellCommand": "/bin/sh",
            "ShellArguments": [],
            "ReconnectIntervalSeconds": 1,
            "Terminal": {"Width": 80, "Height": 24},
        });
        let conf = dir.path().join("mender-connect.conf");
        fs::write(&conf, config.to_string()).unwrap();
        let log = dir.path().join("mender-connect.log");
        let mut cmd = Command::new(MENDER_CONNECT);
        cmd.arg("--config")
            .arg(&conf)
            .arg("--fallback-config")
            .arg(dir.path().join("absent.conf"))
            .args(["--debug", "daemon"])
            .current_dir(dir.path())
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .process_group(0);
        let child = DaemonChild::spawn(&mut cmd);
        MenderConnect {
            _dir: dir,
            log,
            _child: child,
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The daemon, mender-connect and the server, for the assertions.
struct Setup {
    server: MenderServer,
    bus: Bus,
    daemon: ManagedDevice,
    connect: Option<MenderConnect>,
}

impl Setup {
    /// The server and the daemon on a private bus; `configure` adjusts the
    /// device (TLS settings) before the daemon starts.
    fn new(configure: impl FnOnce(&ManagedDevice, &MenderServer)) -> Setup {
        let server = MenderServer::start();
        let bus = Bus::start();
        let daemon = managed_on(&server, &bus);
        configure(&daemon, &server);
        Setup {
            server,
            bus,
            daemon,
            connect: None,
        }
    }

    fn start(&mut self) {
        self.daemon.start();
        assert!(
            self.bus.wait_for_names(Duration::from_secs(20)),
            "{}",
            self.logs()
        );
        self.connect = Some(MenderConnect::start(&self.bus));
    }

    fn logs(&self) -> String {
        let connect = self
            .connect
            .as_ref()
            .map_or(String::from("(not started)"), MenderConnect::log_tail);
        format!(
            "--- daemon log\n{}\n--- mender-connect log\n{connect}\n--- deviceconnect connections\n{:#?}",
            self.daemon.log_tail(),
            self.server.deviceconnect_connections()
        )
    }

    /// The device id, once the daemon authenticated.
    fn device(&self) -> String {
        let found = self.server.wait_until(CONNECT_WAIT, |s| {
            s.devices()
                .iter()
                .any(|d| d.auth_status == AuthStatus::Accepted && d.auth_requests > 0)
        });
        assert!(found, "the daemon never authenticated\n{}", self.logs());
        self.server.device_ids()[0].clone()
    }

    /// Waits for an open deviceconnect connection of `device` other than
    /// `not`; returns it.
    fn wait_connection(&self, device: &str, not: Option<u64>) -> DeviceConnectRecord {
        let mut found = None;
        self.server.wait_until(CONNECT_WAIT, |s| {
            found = s.open_deviceconnect(device).filter(|c| Some(c.id) != not);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("mender-connect did not connect\n{}", self.logs()))
    }

    /// A command whose output differs from its echo on the terminal: the
    /// marker only appears if the shell ran it.
    fn round_trip(&self, device: &str) -> ShellRun {
        let marker = random_hex();
        let (a, b) = marker.split_at(marker.len() / 2);
        let command = format!("printf 'rt-%s%s-end\\n' {a} {b}");
        let expect = format!("rt-{marker}-end");
        let run = self
            .server
            .remote_shell(device, &command, &expect, SHELL_WAIT)
            .unwrap_or_else(|e| panic!("remote shell: {e}\n{}", self.logs()));
        assert!(run.output.contains(&expect), "{run:?}");
        if run.sessions > 1 {
            eprintln!(
                "{} sessions (mender-connect relayed nothing in the first)",
                run.sessions
            );
        }
        run
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_remote_shell_round_trip() {
    if !mender_connect_installed() {
        return;
    }
    let mut s = Setup::new(|_, _| {});
    s.start();
    let device = s.device();
    let conn = s.wait_connection(&device, None);
    assert!(
        s.server.token_is_valid(&conn.token),
        "connected with a token the server does not know"
    );
    let run = s.round_trip(&device);
    assert_eq!(run.connection, conn.id);
    // A second session on the same connection (the first was stopped).
    s.round_trip(&device);
    s.server.assert_no_violations();
}

#[test]
fn a_device_accepted_late_connects_through_the_token_signal() {
    if !mender_connect_installed() {
        return;
    }
    // Authentication retried every second: the daemon must not announce
    // each failed attempt of a pending device (JwtTokenStateChange with
    // empty strings), since mender-connect keeps one pending signal and
    // drops newer ones, so the token's signal would be lost behind a stale
    // empty one and mender-connect would never connect (seen in its
    // --trace log before the daemon announced failures only as changes).
    let mut s = Setup::new(|d, _| {
        d.dev.set_config("RetryPollIntervalSeconds", Value::from(1));
    });
    s.server.set_default_auth(AuthStatus::Pending);
    s.start();
    // mender-connect starts without a token: nothing to connect with.
    let pending = s.server.wait_until(CONNECT_WAIT, |srv| {
        srv.devices().iter().any(|d| d.auth_requests > 0)
    });
    assert!(pending, "{}", s.logs());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        s.server.deviceconnect_connections().is_empty(),
        "connected before the device was accepted\n{}",
        s.logs()
    );
    let device = s.server.device_ids()[0].clone();
    s.server.accept_device(&device);
    let conn = s.wait_connection(&device, None);
    assert!(s.server.token_is_valid(&conn.token));
    s.round_trip(&device);
    s.server.assert_no_violations();
}

#[test]
fn a_revoked_token_is_replaced_and_mender_connect_reconnects() {
    if !mender_connect_installed() {
        return;
    }
    let mut s = Setup::new(|_, _| {});
    s.start();
    let device = s.device();
    let first = s.wait_connection(&device, None);
    assert_eq!(s.round_trip(&device).connection, first.id);
    let auths = s.server.auth_requests(&device);

    // The server forgets the token: the daemon's next request gets 401, it
    // authenticates again and announces the new token
    // (JwtTokenStateChange); mender-connect drops the old connection and
    // opens one with the new token.
    s.server.expire_tokens();
    let second = s.wait_connection(&device, Some(first.id));
    assert!(s.server.auth_requests(&device) > auths, "{}", s.logs());
    assert_ne!(second.token, first.token, "{}", s.logs());
    assert!(s.server.token_is_valid(&second.token), "{}", s.logs());
    let old_closed = s.server.wait_until(CONNECT_WAIT, |srv| {
        srv.deviceconnect_connections()
            .iter()
            .any(|c| c.id == first.id && c.closed.is_some())
    });
    assert!(old_closed, "the old connection stayed open\n{}", s.logs());
    assert_eq!(s.round_trip(&device).connection, second.id);
    // Only tokens the server had issued were used.
    for c in s.server.deviceconnect_connections() {
        assert!(c.token == first.token || c.token == second.token, "{c:?}");
    }
    s.server.assert_no_violations();
}

/// The daemon's TLS settings for `front`: the test CA through
/// `ServerCertificate` only (not in the system's store), and with
/// `mutual` the client certificate through `HttpsClient`.
fn use_tls(daemon: &ManagedDevice, pki: &TestPki, front: &TlsFront, mutual: bool) {
    daemon
        .dev
        .set_config("ServerURL", Value::from(front.url.clone()));
    daemon
        .dev
        .set_config("ServerCertificate", Value::from(pki.file("ca.pem")));
    if mutual {
        daemon.dev.set_config(
            "HttpsClient",
            json!({"Certificate": pki.file("client.pem"), "Key": pki.file("client.key")}),
        );
    }
}

/// The round trip through a TLS front the daemon trusts and mender-connect
/// does not: only the daemon's forwarder can carry it.
fn round_trip_through_tls(mutual: bool) {
    if !mender_connect_installed() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::make(pki_dir.path());
    let mut holder = None;
    let mut s = Setup::new(|d, server| {
        let front = TlsFront::start(&pki, &server.url(), mutual);
        use_tls(d, &pki, &front, mutual);
        holder = Some(front);
    });
    s.start();
    let device = s.device();
    s.wait_connection(&device, None);
    s.round_trip(&device);
    s.server.assert_no_violations();
    drop(holder);
}

#[test]
fn a_private_ca_trusted_through_server_certificate() {
    round_trip_through_tls(false);
}

#[test]
fn mutual_tls_with_the_https_client_certificate() {
    round_trip_through_tls(true);
}

// ---------------------------------------------------------------------------
// The endpoint itself, with a client of the test's own in mender-connect's
// place (no add-on needed): what the server accepts and what its operator
// sends, so that a failure above can be told from a server bug.

type DeviceSocket =
    tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

fn ws_url(server: &MenderServer) -> String {
    format!(
        "{}/api/devices/v1/deviceconnect/connect",
        server.url().replace("http://", "ws://")
    )
}

/// Opens the WebSocket with `token`: the socket, or the HTTP status of
/// the refusal.
fn ws_connect(server: &MenderServer, token: &str) -> Result<DeviceSocket, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut request = ws_url(server).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    match tungstenite::connect(request) {
        Ok((socket, _)) => {
            // Every read below is bounded.
            if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
                tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            }
            Ok(socket)
        }
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket handshake: {e}"),
    }
}

/// A shell `ProtoMsg` as the add-on sends it.
fn device_message(typ: &str, sid: &str, body: &[u8]) -> tungstenite::Message {
    use rmpv::Value as V;
    let msg = V::Map(vec![
        (
            V::from("hdr"),
            V::Map(vec![
                (V::from("proto"), V::from(1)),
                (V::from("typ"), V::from(typ)),
                (V::from("sid"), V::from(sid)),
                (
                    V::from("props"),
                    V::Map(vec![(V::from("status"), V::from(1))]),
                ),
            ]),
        ),
        (V::from("body"), V::Binary(body.to_vec())),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &msg).unwrap();
    tungstenite::Message::Binary(bytes.into())
}

/// The next message from the operator: (typ, sid, body, props).
fn operator_message(socket: &mut DeviceSocket) -> (String, String, Vec<u8>, rmpv::Value) {
    loop {
        match socket.read().expect("reading from the server") {
            tungstenite::Message::Binary(bytes) => {
                let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
                let get = |m: &rmpv::Value, k: &str| {
                    m.as_map()
                        .unwrap()
                        .iter()
                        .find(|(n, _)| n.as_str() == Some(k))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(rmpv::Value::Nil)
                };
                let hdr = get(&v, "hdr");
                assert_eq!(get(&hdr, "proto").as_u64(), Some(1), "{v}");
                let text = |k| get(&hdr, k).as_str().unwrap_or("").to_string();
                let body = get(&v, "body").as_slice().unwrap_or(&[]).to_vec();
                return (text("typ"), text("sid"), body, get(&hdr, "props"));
            }
            tungstenite::Message::Close(_) => panic!("the server closed the WebSocket"),
            _ => {}
        }
    }
}

/// Plays the add-on for one session: answers `new`, and unless `silent`
/// relays `output` after the command; answers `stop`. Returns the command.
fn play_session(socket: &mut DeviceSocket, silent: bool, output: &str) -> String {
    let (typ, sid, _, props) = operator_message(socket);
    assert_eq!(typ, "new");
    assert!(props.to_string().contains("user_id"), "{props}");
    socket
        .send(device_message("new", &sid, b"Shell started"))
        .unwrap();
    let (typ, cmd_sid, command, _) = operator_message(socket);
    assert_eq!((typ.as_str(), cmd_sid.as_str()), ("shell", sid.as_str()));
    if !silent {
        socket
            .send(device_message("shell", &sid, output.as_bytes()))
            .unwrap();
    }
    let (typ, stop_sid, _, _) = operator_message(socket);
    assert_eq!((typ.as_str(), stop_sid.as_str()), ("stop", sid.as_str()));
    socket.send(device_message("stop", &sid, b"")).unwrap();
    String::from_utf8(command).unwrap()
}

#[test]
fn the_deviceconnect_endpoint_and_its_operator() {
    let mut s = Setup::new(|_, _| {});
    s.daemon.start();
    let device = s.device();
    let token = s.server.token_of(&device).expect("a valid token");

    // A token the server does not know: 401, nothing recorded.
    assert_eq!(ws_connect(&s.server, "not.a.token").err(), Some(401));
    // Not a WebSocket handshake: 400, a violation.
    let plain = ureq::get(ws_url(&s.server).replace("ws://", "http://"))
        .header("Authorization", &format!("Bearer {token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(plain.status().as_u16(), 400);
    let violations = s.server.violations();
    assert!(
        violations.len() == 1 && violations[0].problem.contains("Upgrade"),
        "{violations:?}"
    );
    s.server.clear_violations();
    assert!(s.server.deviceconnect_connections().is_empty());

    let mut socket = ws_connect(&s.server, &token).expect("handshake");
    let conn = s.wait_connection(&device, None);
    assert_eq!(conn.token, token);

    // A run: the operator's command comes back as typed, the output ends it.
    let server = &s.server;
    std::thread::scope(|scope| {
        let run = scope.spawn(|| server.remote_shell(&device, "echo hi", "hi-there", SHELL_WAIT));
        let command = play_session(&mut socket, false, "$ echo hi\r\nhi-there\r\n");
        assert_eq!(command, "echo hi\n");
        let run = run.join().unwrap().expect("the run");
        assert_eq!((run.connection, run.sessions), (conn.id, 1));
        assert!(run.output.contains("hi-there"), "{run:?}");
    });
    // A silent session is stopped and replaced by a second one.
    std::thread::scope(|scope| {
        let run = scope.spawn(|| server.remote_shell(&device, "true", "done", SHELL_WAIT));
        play_session(&mut socket, true, "");
        play_session(&mut socket, false, "done\r\n");
        assert_eq!(run.join().unwrap().expect("the run").sessions, 2);
    });
    // Output that never shows the expected text: an error naming it.
    std::thread::scope(|scope| {
        let run =
            scope.spawn(|| server.remote_shell(&device, "x", "never", Duration::from_secs(3)));
        play_session(&mut socket, false, "something else\r\n");
        let err = run.join().unwrap().unwrap_err();
        assert!(err.contains("\"never\" not in the shell output"), "{err}");
    });
    s.server.assert_no_violations();

    // What the server cannot decode is a violation; the connection stays.
    socket
        .send(tungstenite::Message::Binary(vec![0xc1u8].into()))
        .unwrap();
    assert!(s.server.wait_until(Duration::from_secs(10), |srv| {
        srv.violations()
            .iter()
            .any(|v| v.problem.contains("malformed ProtoMsg"))
    }));
    // Closed by the device: recorded, and no run can use it.
    socket.close(None).unwrap();
    while socket.read().is_ok() {}
    assert!(s.server.wait_until(Duration::from_secs(10), |srv| {
        srv.open_deviceconnect(&device).is_none()
    }));
    let err = s
        .server
        .remote_shell(&device, "true", "x", Duration::from_secs(1))
        .unwrap_err();
    assert!(err.contains("no open deviceconnect connection"), "{err}");
}
