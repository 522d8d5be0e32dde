//! The add-on forwarder (`mender_rs::daemon::forwarder`, feature `dbus`)
//! against test servers on loopback: a rustls server with certificates
//! made by `openssl` (a private CA, one it does not know, a client
//! certificate), and tungstenite for WebSockets. The token is published
//! to the forwarder's `TokenCell` as the daemon's server client does.
//! Proxy settings are handed to the forwarder (`Forwarder::set_proxies`),
//! never set in the test process's environment; the CONNECT proxy is
//! `tests/support/connect_proxy.rs`.
//! Every socket has a read timeout; every wait is bounded.
#![cfg(feature = "dbus")]

use std::io::{self, Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mender_rs::config::Config;
use mender_rs::daemon::forwarder::{self, Forwarder};
use mender_rs::http_proxy::ProxySettings;
use mender_rs::server::token::TokenCell;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::connect_proxy::ConnectProxy;
use crate::support::device::{describe, run_bounded};

const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Certificates

fn openssl(dir: &Path, args: &[&str]) {
    let out = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

/// `ca` (trusted through `ServerCertificate`) signing `server` (for
/// 127.0.0.1 and localhost) and `client`; `other-ca`, which the device does
/// not know, signing `stranger` (for 127.0.0.1).
fn make_pki(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=test {ca}"),
            ],
        );
    }
    for (name, ca, ext) in [
        ("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "ca", "extendedKeyUsage=clientAuth"),
        ("stranger", "other-ca", "subjectAltName=IP:127.0.0.1"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

// ---------------------------------------------------------------------------
// The test server: HTTP echo and WebSocket echo, over TLS or not

/// What the server saw of one connection.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The name the client asked for (SNI).
    sni: Option<String>,
    client_certificate: bool,
    head: String,
    body: Vec<u8>,
    websocket: bool,
}

#[derive(Clone, Copy)]
enum Tls {
    Plain,
    /// A certificate signed by `ca`.
    PrivateCa,
    /// The same, and a client certificate signed by `ca` required.
    Mutual,
    /// A certificate signed by `other-ca`.
    Stranger,
}

struct Backend {
    url: String,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    /// Serves on 127.0.0.1 (a thread per connection: test side only).
    /// Answers say `name`, then the request's body.
    fn start(name: &'static str, tls: Tls, pki: &Path) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = match tls {
            Tls::Plain => None,
            Tls::PrivateCa => Some(server_config(pki, "server", false)),
            Tls::Mutual => Some(server_config(pki, "server", true)),
            Tls::Stranger => Some(server_config(pki, "stranger", false)),
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, log) = (config.clone(), log.clone());
                std::thread::spawn(move || serve_connection(name, stream, config, &log));
            }
        });
        let scheme = if config_is_tls(tls) { "https" } else { "http" };
        Backend {
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn config_is_tls(tls: Tls) -> bool {
    !matches!(tls, Tls::Plain)
}

fn server_config(pki: &Path, cert: &str, mutual: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.join(format!("{cert}.pem")))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{cert}.key"))).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(pki.join("ca.pem")).unwrap())
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

fn serve_connection(
    name: &str,
    mut tcp: TcpStream,
    config: Option<Arc<rustls::ServerConfig>>,
    log: &Mutex<Vec<Seen>>,
) {
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let Some(config) = config else {
        serve_requests(name, tcp, Seen::default(), log);
        return;
    };
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            // Refused (no client certificate) or abandoned.
            let _ = conn.complete_io(&mut tcp);
            return;
        }
    }
    let seen = Seen {
        sni: conn.server_name().map(String::from),
        client_certificate: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        ..Seen::default()
    };
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    if let Some(stream) = serve_requests(name, &mut stream, seen, log) {
        stream.conn.send_close_notify();
        let _ = stream.flush();
    }
}

/// One request (or a WebSocket session); gives the stream back after an
/// HTTP answer so that TLS can close properly.
fn serve_requests<S: Read + Write>(
    name: &str,
    mut stream: S,
    mut seen: Seen,
    log: &Mutex<Vec<Seen>>,
) -> Option<S> {
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        input.extend_from_slice(&chunk[..n]);
        assert!(input.len() < 64 << 10, "head too long");
    };
    seen.head = String::from_utf8_lossy(&input[..head_end]).into_owned();
    let lower = seen.head.to_ascii_lowercase();
    if lower.contains("\r\nupgrade: websocket\r\n") {
        seen.websocket = true;
        log.lock().unwrap().push(seen);
        let replay = Prefixed {
            prefix: Cursor::new(input),
            inner: stream,
        };
        let mut ws = tungstenite::accept(replay).ok()?;
        while let Ok(message) = ws.read() {
            if message.is_text() || message.is_binary() {
                if ws.send(message).is_err() {
                    break;
                }
            } else if message.is_close() {
                let _ = ws.flush();
                break;
            }
        }
        return None;
    }
    let length: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = input[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    seen.body = body.clone();
    log.lock().unwrap().push(seen);
    let answer = [format!("{name}\n").into_bytes(), body].concat();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(&answer).ok()?;
    stream.flush().ok()?;
    Some(stream)
}

/// A stream that first replays bytes already read.
struct Prefixed<S> {
    prefix: Cursor<Vec<u8>>,
    inner: S,
}

impl<S: Read> Read for Prefixed<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prefix.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Prefixed<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------
// The forwarder under test

struct Setup {
    _dir: tempfile::TempDir,
    pki: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        make_pki(&pki);
        Setup { _dir: dir, pki }
    }

    fn path(&self, name: &str) -> String {
        self.pki.join(name).display().to_string()
    }

    /// A forwarder, started, with `mender.conf` settings `json` (an
    /// object's members) and the token `(jwt, url)`.
    fn forwarder(&self, json: &str, token: Option<(&str, &str)>) -> (TokenCell, String) {
        self.forwarder_with_proxies(json, token, &[])
    }

    /// The same, with the proxy variables `proxies` (name, value) instead
    /// of the environment's.
    fn forwarder_with_proxies(
        &self,
        json: &str,
        token: Option<(&str, &str)>,
        proxies: &[(&str, &str)],
    ) -> (TokenCell, String) {
        let text = format!("{{\"ServerURL\": \"https://unused.test\"{json}}}");
        let config = Config::from_str("test.conf", &text, false, &self.pki).unwrap();
        let tokens = TokenCell::new().unwrap();
        tokens.publish(token, true);
        let mut forwarder = Forwarder::new(&config, tokens.clone());
        let proxies = ProxySettings::from_lookup(|name| {
            proxies
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        forwarder.set_proxies(proxies);
        let url = forwarder.url().unwrap();
        forwarder.start();
        (tokens, url)
    }
}

fn connect(url: &str) -> TcpStream {
    let address = url.strip_prefix("http://").unwrap();
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Sends `request` and reads the answer to its end: (status, body).
fn exchange(url: &str, request: &[u8]) -> (u16, String) {
    let mut stream = connect(url);
    stream.write_all(request).unwrap();
    read_answer(&mut stream)
}

fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("{e}; got {:?}", String::from_utf8_lossy(&answer)));
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(url: &str, path: &str) -> (u16, String) {
    exchange(
        url,
        format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", &url[7..]).as_bytes(),
    )
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn requests_reach_a_private_ca_server_with_host_path_and_sni_rewritten() {
    let s = Setup::new();
    let backend = Backend::start("private-ca", Tls::PrivateCa, &s.pki);
    // By name: SNI carries it, and "localhost" may resolve to ::1 first,
    // where nothing listens (the next address is tried).
    let server = format!("https://localhost:{}/base/", backend.port);
    let trusted = format!(", \"ServerCertificate\": \"{}\"", s.path("ca.pem"));
    let (_tokens, url) = s.forwarder(&trusted, Some(("jwt", &server)));
    let request = format!(
        "POST /api/devices/v1/x?id=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer jwt\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello",
        &url[7..]
    );
    let (status, body) = exchange(&url, request.as_bytes());
    assert_eq!((status, body.as_str()), (200, "private-ca\nhello"));
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = &seen[0].head;
    assert!(
        head.starts_with("POST /base/api/devices/v1/x?id=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nHost: localhost:{}\r\n", backend.port)),
        "{head}"
    );
    assert!(head.contains("\r\nAuthorization: Bearer jwt\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("keep-alive"), "{head}");
    assert_eq!(seen[0].sni.as_deref(), Some("localhost"));
    assert!(!seen[0].client_certificate);

    // Without ServerCertificate the server is not trusted: a clear 502.
    let (_tokens, url) = s.forwarder("", Some(("jwt", &server)));
    let (status, body) = get(&url, "/api/x");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("UnknownIssuer"), "{body}");
    assert_eq!(backend.seen().len(), 1);
}

#[test]
fn mutual_tls_presents_the_https_client_certificate() {
    let s = Setup::new();
    let backend = Backend::start("mutual", Tls::Mutual, &s.pki);
    let trusted = format!(", \"ServerCertificate\": \"{}\"", s.path("ca.pem"));
    let with_client = format!(
        "{trusted}, \"HttpsClient\": {{\"Certificate\": \"{}\", \"Key\": \"{}\"}}",
        s.path("client.pem"),
        s.path("client.key")
    );
    let (_tokens, url) = s.forwarder(&with_client, Some(("jwt", &backend.url)));
    let (status, body) = get(&url, "/api/devices/v1/authentication");
    assert_eq!((status, body.as_str()), (200, "mutual\n"));
    let seen = backend.seen();
    assert!(seen[0].client_certificate, "{seen:?}");
    // An IP address: no SNI (RFC 6066).
    assert_eq!(seen[0].sni, None);

    // Without the client certificate the server refuses the handshake.
    let (_tokens, url) = s.forwarder(&trusted, Some(("jwt", &backend.url)));
    let (status, body) = get(&url, "/api/x");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TLS"), "{body}");
    assert_eq!(backend.seen().len(), 1);
}

#[test]
fn skip_verify_reaches_a_server_no_ca_vouches_for() {
    let s = Setup::new();
    let backend = Backend::start("stranger", Tls::Stranger, &s.pki);
    let (_tokens, url) = s.forwarder(", \"SkipVerify\": true", Some(("jwt", &backend.url)));
    let (status, body) = get(&url, "/x");
    assert_eq!((status, body.as_str()), (200, "stranger\n"));
    // Trusting another CA is not enough.
    let trusted = format!(", \"ServerCertificate\": \"{}\"", s.path("ca.pem"));
    let (_tokens, url) = s.forwarder(&trusted, Some(("jwt", &backend.url)));
    assert_eq!(get(&url, "/x").0, 502);
}

/// Opens a WebSocket through the forwarder at `url`.
fn websocket(url: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = connect(url);
    let (ws, answer) = tungstenite::client(format!("ws://{}/ws", &url[7..]), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake through {url}: {e}"));
    assert_eq!(answer.status().as_u16(), 101);
    ws
}

#[test]
fn websocket_upgrades_round_trip_over_tls() {
    let s = Setup::new();
    let backend = Backend::start("ws", Tls::PrivateCa, &s.pki);
    let trusted = format!(", \"ServerCertificate\": \"{}\"", s.path("ca.pem"));
    let (_tokens, url) = s.forwarder(&trusted, Some(("jwt", &backend.url)));
    let mut sockets: Vec<_> = (0..4).map(|_| websocket(&url)).collect();
    // Larger than the forwarder's buffers both ways: back-pressure, not
    // growth.
    let big: Vec<u8> = (0..(4 * forwarder::BUFFER + 123))
        .map(|i| (i % 251) as u8)
        .collect();
    for (i, ws) in sockets.iter_mut().enumerate() {
        let text = format!("shell {i}");
        ws.send(tungstenite::Message::text(text.clone())).unwrap();
        assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), text);
        ws.send(tungstenite::Message::binary(big.clone())).unwrap();
        assert_eq!(ws.read().unwrap().into_data().as_ref(), &big[..]);
    }
    for mut ws in sockets {
        ws.close(None).unwrap();
        // The close handshake completes through the forwarder.
        loop {
            match ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("closing: {e}"),
            }
        }
    }
    let seen = backend.seen();
    assert_eq!(seen.iter().filter(|s| s.websocket).count(), 4, "{seen:?}");
    let head = &seen[0].head;
    assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: Upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nSec-WebSocket-Key: "), "{head}");
}

#[test]
fn a_token_from_another_server_moves_the_target_and_closes_the_old_connections() {
    let s = Setup::new();
    let first = Backend::start("first", Tls::Plain, &s.pki);
    let second = Backend::start("second", Tls::Plain, &s.pki);
    let (tokens, url) = s.forwarder("", Some(("jwt1", &first.url)));
    let mut ws = websocket(&url);
    ws.send(tungstenite::Message::text("on first")).unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "on first");
    // A renewed token from the same server keeps the connection.
    tokens.publish(Some(("jwt2", &first.url)), true);
    assert_eq!(get(&url, "/a").1, "first\n");
    ws.send(tungstenite::Message::text("still")).unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "still");
    // Another server: the WebSocket to the first is closed.
    tokens.publish(Some(("jwt3", &second.url)), true);
    let started = Instant::now();
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            panic!("the old connection stayed open")
        }
        Err(_) => {}
        Ok(m) => panic!("got {m:?} after the target changed"),
    }
    assert!(started.elapsed() < TIMEOUT);
    assert_eq!(get(&url, "/b").1, "second\n");
    // No token: refused, clearly.
    tokens.publish(None, true);
    let (status, body) = get(&url, "/c");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no token"), "{body}");
    assert_eq!(first.seen().len(), 2);
    assert_eq!(second.seen().len(), 1);
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let s = Setup::new();
    let backend = Backend::start("limit", Tls::Plain, &s.pki);
    let (_tokens, url) = s.forwarder("", Some(("jwt", &backend.url)));
    // Idle connections (no request yet) take every slot.
    let mut idle: Vec<TcpStream> = (0..forwarder::MAX_CONNECTIONS)
        .map(|_| connect(&url))
        .collect();
    // Accepted by the kernel, not served.
    let mut waiting = connect(&url);
    waiting
        .write_all(b"GET /waiting HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let e = waiting.read(&mut byte).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    assert!(backend.seen().is_empty());
    // One slot frees: the waiting request goes through.
    drop(idle.pop());
    waiting.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_answer(&mut waiting), (200, "limit\n".to_string()));
    // The idle ones are still there, and still served.
    let mut one = idle.pop().unwrap();
    one.write_all(b"GET /late HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut one).0, 200);
}

#[test]
fn bad_and_oversized_request_heads_are_refused() {
    let s = Setup::new();
    let backend = Backend::start("heads", Tls::Plain, &s.pki);
    let (_tokens, url) = s.forwarder("", Some(("jwt", &backend.url)));
    let mut big = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(20 << 10, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let (status, body) = exchange(&url, &big);
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("16 KiB"), "{body}");
    let (status, _) = exchange(&url, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _) = exchange(&url, b"GET / HTTP/1.1\r\nBroken header\r\n\r\n");
    assert_eq!(status, 400);
    assert!(backend.seen().is_empty());
    // And the forwarder still serves.
    assert_eq!(get(&url, "/ok").0, 200);
}

#[test]
fn an_unreachable_or_unusable_server_is_a_clear_502() {
    let s = Setup::new();
    // A port nothing listens on (bound, then closed).
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (tokens, url) = s.forwarder("", Some(("jwt", &dead_url)));
    let (status, body) = get(&url, "/x");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("cannot connect to 127.0.0.1:"), "{body}");
    tokens.publish(Some(("jwt", "ftp://server.test")), true);
    let (status, body) = get(&url, "/x");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not http:// or https://"), "{body}");
}

/// A text message and one larger than the forwarder's buffers, echoed.
fn websocket_round_trip(ws: &mut tungstenite::WebSocket<TcpStream>, text: &str) {
    ws.send(tungstenite::Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), text);
    let big: Vec<u8> = (0..(2 * forwarder::BUFFER + 7))
        .map(|i| (i % 253) as u8)
        .collect();
    ws.send(tungstenite::Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap().into_data().as_ref(), &big[..]);
}

#[test]
fn websockets_and_requests_go_through_the_proxy_tunnel() {
    let s = Setup::new();
    let backend = Backend::start("tunnelled", Tls::Mutual, &s.pki);
    let proxy = ConnectProxy::start();
    let with_client = format!(
        ", \"ServerCertificate\": \"{}\", \"HttpsClient\": {{\"Certificate\": \"{}\", \"Key\": \"{}\"}}",
        s.path("ca.pem"),
        s.path("client.pem"),
        s.path("client.key")
    );
    let proxy_url = format!("http://dev%40site:p%3Ass@127.0.0.1:{}", proxy.port());
    let (_tokens, url) = s.forwarder_with_proxies(
        &with_client,
        Some(("jwt", &backend.url)),
        // http_proxy serves http:// servers only: not this one.
        &[
            ("https_proxy", &proxy_url),
            ("http_proxy", "http://127.0.0.1:9"),
        ],
    );
    let mut ws = websocket(&url);
    websocket_round_trip(&mut ws, "shell through the proxy");
    let (status, body) = get(&url, "/api/x");
    assert_eq!((status, body.as_str()), (200, "tunnelled\n"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    // One tunnel per forwarded connection, to the server, with the proxy
    // URL's credentials; TLS (with the client certificate) end to end.
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("dev@site:p:ss")
    );
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 2, "{tunnels:?}");
    for (target, auth) in &tunnels {
        assert_eq!(target, &format!("127.0.0.1:{}", backend.port));
        assert_eq!(auth.as_deref(), Some(want.as_str()));
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.client_certificate), "{seen:?}");
    assert_eq!(seen.iter().filter(|s| s.websocket).count(), 1);

    // A plain http:// server goes through http_proxy, the session plain
    // inside the tunnel.
    let plain = Backend::start("plain", Tls::Plain, &s.pki);
    let (_tokens, url) = s.forwarder_with_proxies(
        "",
        Some(("jwt", &plain.url)),
        &[("http_proxy", &proxy.url())],
    );
    let mut ws = websocket(&url);
    websocket_round_trip(&mut ws, "plain");
    assert_eq!(get(&url, "/p").1, "plain\n");
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 4, "{tunnels:?}");
    assert_eq!(tunnels[3], (format!("127.0.0.1:{}", plain.port), None));
    assert!(proxy.refused().is_empty());
}

#[test]
fn no_proxy_sends_the_forwarder_past_the_proxy() {
    let s = Setup::new();
    let backend = Backend::start("direct", Tls::PrivateCa, &s.pki);
    let proxy = ConnectProxy::start();
    let trusted = format!(", \"ServerCertificate\": \"{}\"", s.path("ca.pem"));
    for no_proxy in ["127.0.0.1", "other.test 127.0.0.1", "."] {
        let (_tokens, url) = s.forwarder_with_proxies(
            &trusted,
            Some(("jwt", &backend.url)),
            &[("https_proxy", &proxy.url()), ("no_proxy", no_proxy)],
        );
        let mut ws = websocket(&url);
        websocket_round_trip(&mut ws, no_proxy);
        assert_eq!(get(&url, "/d").1, "direct\n", "{no_proxy}");
    }
    assert_eq!(backend.seen().len(), 6);
    // The proxy saw nothing at all.
    assert!(proxy.tunnels().is_empty(), "{:?}", proxy.tunnels());
    assert!(proxy.refused().is_empty(), "{:?}", proxy.refused());
    // An entry for another host does not exempt this one.
    let (_tokens, url) = s.forwarder_with_proxies(
        &trusted,
        Some(("jwt", &backend.url)),
        &[
            ("https_proxy", &proxy.url()),
            ("no_proxy", ".127.0.0.1 127.0.0.2"),
        ],
    );
    assert_eq!(get(&url, "/d").1, "direct\n");
    assert_eq!(proxy.tunnels().len(), 1);
}

#[test]
fn a_proxy_refusing_the_tunnel_is_a_502_naming_its_answer() {
    let s = Setup::new();
    let backend = Backend::start("unreached", Tls::PrivateCa, &s.pki);
    let trusted = format!(", \"ServerCertificate\": \"{}\"", s.path("ca.pem"));
    for answer in ["407 Proxy Authentication Required", "403 Forbidden"] {
        let proxy = ConnectProxy::refusing(answer);
        let (_tokens, url) = s.forwarder_with_proxies(
            &trusted,
            Some(("jwt", &backend.url)),
            &[(
                "https_proxy",
                &format!("http://user:secret@127.0.0.1:{}", proxy.port()),
            )],
        );
        let (status, body) = get(&url, "/api/x");
        assert_eq!(status, 502, "{body}");
        let said = format!(
            "the proxy {} answered {answer} to CONNECT 127.0.0.1:{}",
            proxy.url(),
            backend.port
        );
        assert!(body.contains(&said), "{body}");
        assert!(!body.contains("secret"), "{body}");
        // A WebSocket upgrade gets the same answer.
        match tungstenite::client(format!("ws://{}/ws", &url[7..]), connect(&url)) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(answer))) => {
                assert_eq!(answer.status().as_u16(), 502);
                let body =
                    String::from_utf8_lossy(answer.body().as_deref().unwrap_or(&[])).into_owned();
                assert!(body.contains(&said), "{body}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a WebSocket opened past a refusing proxy"),
        }
        let refused = proxy.refused();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused
                .iter()
                .all(|l| l == &format!("CONNECT 127.0.0.1:{} HTTP/1.1", backend.port)),
            "{refused:?}"
        );
    }
    // A proxy nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (_tokens, url) = s.forwarder_with_proxies(
        &trusted,
        Some(("jwt", &backend.url)),
        &[("https_proxy", &dead_url)],
    );
    let (status, body) = get(&url, "/x");
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("cannot connect to the proxy {dead_url}")),
        "{body}"
    );
    assert!(backend.seen().is_empty());
}

/// A proxy for one connection: reads the request head, then sends `answer`
/// and ends its side. Its port.
fn one_shot_proxy(answer: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
            if conn.read_exact(&mut byte).is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let _ = conn.write_all(answer);
        // The "server" is done; then wait until the forwarder hangs up.
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let _ = conn.read_to_end(&mut head);
    });
    port
}

#[test]
fn bytes_after_the_proxy_s_answer_are_the_server_s() {
    let s = Setup::new();
    // Plain: they reach the add-on as the server's answer.
    let port = one_shot_proxy(b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    let (_tokens, url) = s.forwarder_with_proxies(
        "",
        Some(("jwt", "http://127.0.0.1:9")),
        &[("http_proxy", &format!("http://127.0.0.1:{port}"))],
    );
    assert_eq!(get(&url, "/x"), (204, String::new()));
    // TLS: they go to the TLS session (here a fatal handshake_failure
    // alert, which fails it clearly).
    let port = one_shot_proxy(b"HTTP/1.1 200 OK\r\n\r\n\x15\x03\x03\x00\x02\x02\x28");
    let (_tokens, url) = s.forwarder_with_proxies(
        "",
        Some(("jwt", "https://127.0.0.1:9")),
        &[("https_proxy", &format!("http://127.0.0.1:{port}"))],
    );
    let (status, body) = get(&url, "/x");
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("TLS with the server") && body.contains("HandshakeFailure"),
        "{body}"
    );
}
