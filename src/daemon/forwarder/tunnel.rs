//! The way to the server through an HTTP proxy (`docs/managed-mode.md`,
//! "The add-on forwarder"): when `https_proxy`/`http_proxy` name a proxy
//! for the server's URL and `no_proxy` does not exempt it (the decision of
//! `crate::http_proxy`, the same as for the server API and downloads), a
//! forwarded connection goes to the proxy, asks it `CONNECT host:port`,
//! and runs its TLS (or plain) session with the server through the tunnel.
//!
//! Only the exchange with the proxy is here, non-blocking like the rest of
//! the forwarder: the request is written as the socket takes it, the
//! answer read as it comes, at most [`MAX_ANSWER`] bytes. Hand-written
//! rather than with ureq's proxy connector, which blocks its thread.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use base64::Engine as _;
use ureq::ProxyProtocol;
use ureq::http::Uri;

use super::head::Target;
use crate::http_proxy::ProxySettings;

/// Largest answer head accepted from the proxy.
pub const MAX_ANSWER: usize = 8 << 10;
/// Most headers in the proxy's answer.
const MAX_HEADERS: usize = 64;
/// Longest reason phrase of the proxy's kept for the add-on and the log.
const MAX_REASON: usize = 80;

/// The proxy a connection goes through.
#[derive(Debug, Clone)]
pub struct ProxyRoute {
    /// Host name or address, without brackets (resolved).
    pub host: String,
    pub port: u16,
    /// `http://host:port`, for messages: never the credentials.
    pub name: String,
    /// The `Proxy-Authorization` value, from the proxy URL's credentials.
    authorization: Option<String>,
}

/// The proxy for the server `target`, or None to go direct. `proxies` is
/// the environment's, or why it cannot be used (the daemon refuses bad
/// settings at start: that is for the record only).
pub fn route(
    proxies: &Result<ProxySettings, String>,
    target: &Target,
) -> Result<Option<ProxyRoute>, String> {
    let proxies = proxies
        .as_ref()
        .map_err(|e| format!("the proxy settings: {e}"))?;
    let uri: Uri = target
        .url
        .parse()
        .map_err(|e| format!("the server URL {:?}: {e}", target.url))?;
    let Some(proxy) = proxies.proxy_for_uri(&uri) else {
        return Ok(None);
    };
    let host = proxy.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name = format!("http://{}:{}", bracketed(host), proxy.port());
    if proxy.protocol() != ProxyProtocol::Http {
        // TLS to the proxy and TLS to the server inside it: not done here
        // (docs/differences.md).
        return Err(format!(
            "the proxy for {} is an https:// proxy ({}:{}); the add-on forwarder goes through http:// proxies only",
            target.url,
            bracketed(host),
            proxy.port()
        ));
    }
    let authorization = (proxy.username().is_some() || proxy.password().is_some()).then(|| {
        let credentials = format!(
            "{}:{}",
            proxy.username().unwrap_or_default(),
            proxy.password().unwrap_or_default()
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    });
    Ok(Some(ProxyRoute {
        host: host.to_string(),
        port: proxy.port(),
        name,
        authorization,
    }))
}

/// An IPv6 address in brackets, as an authority needs it.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// What the exchange with the proxy came to so far.
pub enum Progress {
    /// Waiting for the socket.
    Pending,
    /// The tunnel is open; the bytes that came after the proxy's answer
    /// are the server's.
    Open(Vec<u8>),
}

/// The `CONNECT` exchange on a connection to the proxy.
pub struct Handshake {
    request: Vec<u8>,
    sent: usize,
    answer: Vec<u8>,
    /// `host:port` asked for, for messages.
    destination: String,
}

impl Handshake {
    pub fn new(route: &ProxyRoute, target: &Target) -> Handshake {
        let destination = format!("{}:{}", bracketed(&target.host), target.port);
        let mut request = format!("CONNECT {destination} HTTP/1.1\r\nHost: {destination}\r\n");
        if let Some(authorization) = &route.authorization {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        Handshake {
            request: request.into_bytes(),
            sent: 0,
            answer: Vec::new(),
            destination,
        }
    }

    /// The request is not all out yet (the socket's writability matters).
    pub fn wants_write(&self) -> bool {
        self.sent < self.request.len()
    }

    /// Sends what it can of the request, then reads what it can of the
    /// answer. An error says what the proxy did.
    pub fn pump(&mut self, stream: &mut TcpStream, route: &ProxyRoute) -> Result<Progress, String> {
        while self.wants_write() {
            match stream.write(&self.request[self.sent..]) {
                Ok(0) => return Err(format!("the proxy {} closed the connection", route.name)),
                Ok(n) => self.sent += n,
                Err(e) if would_block(&e) => return Ok(Progress::Pending),
                Err(e) => return Err(format!("writing to the proxy {}: {e}", route.name)),
            }
        }
        let mut chunk = [0u8; 1024];
        loop {
            let room = (MAX_ANSWER - self.answer.len()).min(chunk.len());
            if room == 0 {
                return Err(format!(
                    "the proxy {} answered CONNECT with a head larger than {} KiB",
                    route.name,
                    MAX_ANSWER >> 10
                ));
            }
            match stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    return Err(format!(
                        "the proxy {} closed the connection without answering CONNECT {}",
                        route.name, self.destination
                    ));
                }
                Ok(n) => self.answer.extend_from_slice(&chunk[..n]),
                Err(e) if would_block(&e) => return Ok(Progress::Pending),
                Err(e) => return Err(format!("reading from the proxy {}: {e}", route.name)),
            }
            if let Some(progress) = self.parse_answer(route)? {
                return Ok(progress);
            }
        }
    }

    /// The answer so far: None while incomplete.
    fn parse_answer(&self, route: &ProxyRoute) -> Result<Option<Progress>, String> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let consumed = match response.parse(&self.answer) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "the proxy {} answered CONNECT with a malformed head: {e}",
                    route.name
                ));
            }
        };
        let status = response.code.unwrap_or(0);
        if (200..300).contains(&status) {
            return Ok(Some(Progress::Open(self.answer[consumed..].to_vec())));
        }
        // The reason phrase is the proxy's text: printable ASCII, bounded.
        let reason: String = response
            .reason
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(MAX_REASON)
            .collect();
        Err(format!(
            "the proxy {} answered {status} {} to CONNECT {}",
            route.name,
            reason.trim(),
            self.destination
        ))
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn settings(vars: &[(&str, &str)]) -> Result<ProxySettings, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxySettings::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_route_follows_the_client_s_proxy_decision() {
        let target = Target::parse("https://server.test:8443/base").unwrap();
        let proxies = settings(&[("https_proxy", "http://us%40er:p%3Ass@proxy.test:3128")]);
        let found = route(&proxies, &target).unwrap().unwrap();
        assert_eq!((found.host.as_str(), found.port), ("proxy.test", 3128));
        assert_eq!(found.name, "http://proxy.test:3128");
        // Basic "us@er:p:ss"
        assert_eq!(
            found.authorization.as_deref(),
            Some("Basic dXNAZXI6cDpzcw==")
        );
        let request = String::from_utf8(Handshake::new(&found, &target).request).unwrap();
        assert_eq!(
            request,
            "CONNECT server.test:8443 HTTP/1.1\r\nHost: server.test:8443\r\nProxy-Authorization: Basic dXNAZXI6cDpzcw==\r\n\r\n"
        );
        // no_proxy, the other scheme's proxy, no proxy: direct.
        let bypass = settings(&[("https_proxy", "http://p:1"), ("no_proxy", ".test")]);
        assert!(route(&bypass, &target).unwrap().is_none());
        let other = settings(&[("http_proxy", "http://p:1")]);
        assert!(route(&other, &target).unwrap().is_none());
        assert!(route(&settings(&[]), &target).unwrap().is_none());
        // IPv6 servers and proxies keep their brackets where they belong.
        let v6 = Target::parse("https://[::1]:443/").unwrap();
        let proxies = settings(&[("https_proxy", "http://[::1]:3128")]);
        let route6 = route(&proxies, &v6).unwrap().unwrap();
        assert_eq!(
            (route6.host.as_str(), route6.name.as_str()),
            ("::1", "http://[::1]:3128")
        );
        assert!(route6.authorization.is_none());
        let request = String::from_utf8(Handshake::new(&route6, &v6).request).unwrap();
        assert!(
            request.starts_with("CONNECT [::1]:443 HTTP/1.1\r\n"),
            "{request}"
        );
        // An https:// proxy and unusable settings are said.
        let tls_proxy = settings(&[("https_proxy", "https://u:secret@p:1")]);
        let e = route(&tls_proxy, &target).unwrap_err();
        assert!(
            e.contains("http:// proxies only") && !e.contains("secret"),
            "{e}"
        );
        let e = route(&Err("no_proxy: bad".into()), &target).unwrap_err();
        assert!(e.contains("no_proxy: bad"), "{e}");
    }

    /// Runs a handshake against a proxy that answers `answer` (in two
    /// pieces), to its end.
    fn exchange(answer: &[u8]) -> Result<Vec<u8>, String> {
        let answer = answer.to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            // The forwarder may hang up early (an answer too long).
            let (first, rest) = answer.split_at(answer.len() / 2);
            let _ = conn.write_all(first);
            std::thread::sleep(std::time::Duration::from_millis(20));
            let _ = conn.write_all(rest);
            String::from_utf8(head).unwrap()
        });
        let target = Target::parse("https://127.0.0.1:9/").unwrap();
        let proxies = settings(&[("https_proxy", &format!("http://127.0.0.1:{port}"))]);
        let found = route(&proxies, &target).unwrap().unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nonblocking(true).unwrap();
        let mut handshake = Handshake::new(&found, &target);
        let started = std::time::Instant::now();
        let result = loop {
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
            match handshake.pump(&mut stream, &found) {
                Ok(Progress::Pending) => std::thread::sleep(std::time::Duration::from_millis(2)),
                Ok(Progress::Open(rest)) => break Ok(rest),
                Err(e) => break Err(e),
            }
        };
        drop(stream);
        let head = proxy.join().unwrap();
        assert_eq!(
            head,
            "CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
        );
        result
    }

    #[test]
    fn the_proxy_s_answer_opens_the_tunnel_or_is_said() {
        assert_eq!(
            exchange(b"HTTP/1.1 200 Connection established\r\nX-A: b\r\n\r\n").unwrap(),
            b""
        );
        // Bytes after the head are the server's.
        assert_eq!(
            exchange(b"HTTP/1.0 200 OK\r\n\r\n\x16\x03\x03").unwrap(),
            b"\x16\x03\x03"
        );
        let e =
            exchange(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                .unwrap_err();
        assert!(
            e.contains("answered 407 Proxy Authentication Required to CONNECT 127.0.0.1:9"),
            "{e}"
        );
        let long = format!("HTTP/1.1 403 {}\r\n\r\n", "Forbidden ".repeat(20));
        let e = exchange(long.as_bytes()).unwrap_err();
        assert!(
            e.contains(&format!(
                "answered 403 {} to CONNECT",
                &long[13..13 + MAX_REASON].trim()
            )),
            "{e}"
        );
        let e = exchange(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert!(e.contains("malformed head"), "{e}");
        let e = exchange(b"HTTP/1.1 200").unwrap_err();
        assert!(e.contains("without answering CONNECT"), "{e}");
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_ANSWER));
        let e = exchange(huge.as_bytes()).unwrap_err();
        assert!(e.contains("larger than 8 KiB"), "{e}");
    }
}
