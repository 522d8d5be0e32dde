//! `http_proxy`, `https_proxy` and `no_proxy` with the rules of the Mender
//! client 4.x/5.x (`docs/configuration.md`, "Proxies"): server API calls
//! and artifact downloads go through a loopback CONNECT proxy started by
//! the test, which counts what it tunnels; `no_proxy` bypasses it; a comma
//! in `no_proxy` is a clear error.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::support::connect_proxy::{ConnectProxy, read_head};
use crate::support::device::{DEFAULT_TIMEOUT, SimDevice, describe};
use crate::support::managed::{DaemonChild, DeviceSetup, daemon_bin, daemon_command};
use crate::support::mender_server::MenderServer;

/// Connections a test file server serves at most (a runaway client fails
/// the test instead of spinning).
const MAX_CONNECTIONS: usize = 200;

/// A loopback HTTP server answering every GET with `body`; counts requests.
fn serve_file(body: Vec<u8>) -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    let body = Arc::new(body);
    thread::spawn(move || {
        for conn in listener.incoming().take(MAX_CONNECTIONS) {
            let Ok(conn) = conn else { continue };
            let (c, body) = (c.clone(), body.clone());
            thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if read_head(&mut reader).is_none() {
                    return;
                }
                *c.lock().unwrap() += 1;
                let mut conn = conn;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            });
        }
    });
    (port, count)
}

#[test]
fn an_artifact_url_is_downloaded_through_http_proxy_with_its_credentials() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("via-proxy", 64 << 10, &[], &[]);
    let (port, served) = serve_file(std::fs::read(&artifact).unwrap());
    let proxy = ConnectProxy::start();
    let proxy_url = format!("http://dev%40site:p%3Ass@127.0.0.1:{}", proxy.port());
    let url = format!("http://127.0.0.1:{port}/artifact.mender");
    let out = dev.run_with(
        &["install", &url],
        &[("http_proxy", &proxy_url), ("https_proxy", "")],
        DEFAULT_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(tunnels[0].0, format!("127.0.0.1:{port}"));
    let want = base64::engine::general_purpose::STANDARD.encode("dev@site:p:ss");
    assert_eq!(
        tunnels[0].1.as_deref(),
        Some(format!("Basic {want}").as_str())
    );
    assert_eq!(*served.lock().unwrap(), 1);
    dev.reboot();
    dev.ok(&["commit"]);
    assert_eq!(dev.show_artifact(), "via-proxy");
}

#[test]
fn no_proxy_sends_a_download_past_the_proxy() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("direct", 32 << 10, &[], &[]);
    let (port, served) = serve_file(std::fs::read(&artifact).unwrap());
    let proxy = ConnectProxy::start();
    let url = format!("http://127.0.0.1:{port}/a.mender");
    // Upper-case names work too; "localhost 127.0.0.1" is space-separated.
    let out = dev.run_with(
        &["install", &url],
        &[
            ("HTTP_PROXY", &proxy.url()),
            ("NO_PROXY", "localhost 127.0.0.1"),
        ],
        DEFAULT_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(proxy.tunnels().is_empty(), "{:?}", proxy.tunnels());
    assert_eq!(*served.lock().unwrap(), 1);

    // https_proxy is for https URLs only: a plain http URL goes direct.
    let dev = SimDevice::new();
    let out = dev.run_with(
        &["install", &url],
        &[("https_proxy", &proxy.url())],
        DEFAULT_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(proxy.tunnels().is_empty(), "{:?}", proxy.tunnels());
}

#[test]
fn a_comma_in_no_proxy_or_a_bad_proxy_url_is_a_clear_error() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("never", 16 << 10, &[], &[]);
    let path = artifact.display().to_string();
    for (vars, want) in [
        (
            vec![("no_proxy", "localhost,127.0.0.1")],
            "no_proxy: unsupported syntax: use space-separated values",
        ),
        (
            vec![("http_proxy", "http://a:1"), ("HTTP_PROXY", "http://b:1")],
            "http_proxy and HTTP_PROXY are both set",
        ),
        (
            vec![("https_proxy", "socks5://u:secret@127.0.0.1:1080")],
            "https_proxy: not a usable proxy URL: the scheme must be http:// or https://",
        ),
    ] {
        let out = dev.run_with(&["install", &path], &vars, DEFAULT_TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{vars:?}: {}", describe(&out));
        assert!(stderr.contains(want), "{vars:?}: {stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
    // Nothing was installed.
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.run(&["commit"]).status.code(), Some(2));
}

#[test]
fn the_daemon_reaches_the_server_through_the_proxy() {
    let server = MenderServer::start();
    let dev = SimDevice::new();
    let url = server.url();
    DeviceSetup {
        server_url: Some(&url),
        mac: "02:00:00:00:00:01",
        inventory_script: Some(("mender-inventory-test", "hello=proxy")),
        reboot_marker: None,
        update_poll: 1,
        inventory_poll: Some(1),
        retry_poll: 1,
    }
    .apply(&dev);
    let proxy = ConnectProxy::start();
    let log = dev.path("daemon.log");
    let mut cmd = daemon_command(&dev, &daemon_bin(), "debug", &log);
    cmd.env("http_proxy", format!("{}/", proxy.url()));
    let daemon = DaemonChild::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = false;
    while Instant::now() < deadline {
        if let Some(id) = server.device_ids().first()
            && server.inventory_value(id, "hello").is_some()
        {
            done = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    daemon.stop(Duration::from_secs(5));
    assert!(
        done,
        "no inventory reached the server; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty());
    let server_addr = format!("127.0.0.1:{}", server.addr().port());
    assert!(
        tunnels.iter().all(|(t, _)| *t == server_addr),
        "{tunnels:?}"
    );
    assert!(proxy.refused().is_empty());
    server.assert_no_violations();
}

/// `openssl s_server -WWW` serving `dir` over TLS on loopback with a
/// self-signed certificate for 127.0.0.1 (`dir/cert.pem`); killed on drop.
struct TlsFileServer {
    child: std::process::Child,
    port: u16,
}

impl TlsFileServer {
    fn start(dir: &std::path::Path) -> TlsFileServer {
        let openssl = |args: &[&str]| {
            let out = crate::support::device::run_bounded(
                std::process::Command::new("openssl")
                    .args(args)
                    .current_dir(dir),
                DEFAULT_TIMEOUT,
            );
            assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=127.0.0.1",
            "-days",
            "2",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("openssl")
            .args([
                "s_server", "-quiet", "-WWW", "-cert", "cert.pem", "-key", "key.pem",
            ])
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            thread::sleep(Duration::from_millis(50));
        }
        TlsFileServer { child, port }
    }
}

impl Drop for TlsFileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_url_is_tunnelled_through_https_proxy_with_tls_end_to_end() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("over-tls", 32 << 10, &[], &[]);
    let www = dev.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(&artifact, www.join("a.mender")).unwrap();
    let server = TlsFileServer::start(&www);
    let proxy = ConnectProxy::start();
    let url = format!("https://127.0.0.1:{}/a.mender", server.port);
    let cert = www.join("cert.pem").display().to_string();
    let envs = [("https_proxy", proxy.url()), ("http_proxy", String::new())];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Not trusted: the tunnel opens, the TLS handshake with the server
    // (not with the proxy) refuses the certificate.
    let out = dev.run_with(&["install", &url], &envs, DEFAULT_TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        describe(&out)
    );
    assert_eq!(proxy.tunnels().len(), 1, "{:?}", proxy.tunnels());
    // Trusted with -E: installed through the tunnel.
    let out = dev.run_with(&["-E", &cert, "install", &url], &envs, DEFAULT_TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 2, "{tunnels:?}");
    assert!(
        tunnels
            .iter()
            .all(|(t, _)| *t == format!("127.0.0.1:{}", server.port))
    );
    dev.reboot();
    dev.ok(&["commit"]);
    assert_eq!(dev.show_artifact(), "over-tls");
}
