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
//!   TLS (`HttpsClient`): mender-connect ignores both, so these need the
//!   daemon's local forwarder (issue 15); ignored until it lands.
//!
//! mender-connect runs the shell as the current user (it must be root or
//! may switch to itself), everything else lives in temporary directories.
//! Without `mender-connect` the tests say so and pass, except in CI
//! (`CI` set), where scripts/install-deps must have installed it.
#![cfg(feature = "dbus")]

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::managed::{DaemonChild, Supervised};
use crate::support::mender_server::*;
use serde_json::{Value, json};

use super::dbus::{Bus, Daemon};

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
    daemon: Daemon,
    connect: Option<MenderConnect>,
}

impl Setup {
    /// The server and the daemon on a private bus; `configure` adjusts the
    /// device (TLS settings) before the daemon starts.
    fn new(configure: impl FnOnce(&Daemon, &MenderServer)) -> Setup {
        let server = MenderServer::start();
        let bus = Bus::start();
        let daemon = Daemon::new(&server, &bus);
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
    // Authentication retried every 5 s, nearer a real device than the 1 s
    // of the other tests: the daemon announces every failed authentication
    // (JwtTokenStateChange with empty strings), and mender-connect keeps
    // one pending signal and drops newer ones, so at 1 s the token's
    // signal can be lost behind a stale empty one and mender-connect never
    // connects (seen with its --trace log; reported on issue 15).
    let mut s = Setup::new(|d, _| {
        d.dev.set_config("RetryPollIntervalSeconds", Value::from(5));
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
fn use_tls(daemon: &Daemon, pki: &TestPki, front: &TlsFront, mutual: bool) {
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
#[ignore = "needs the add-on forwarder (issue 15)"]
fn a_private_ca_trusted_through_server_certificate() {
    round_trip_through_tls(false);
}

#[test]
#[ignore = "needs the add-on forwarder (issue 15)"]
fn mutual_tls_with_the_https_client_certificate() {
    round_trip_through_tls(true);
}
