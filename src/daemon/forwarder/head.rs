//! What the add-on forwarder reads of a request: the server it goes to
//! (from the token's URL) and the request head, rewritten for that server
//! (`docs/managed-mode.md`, "The add-on forwarder"). The body and the
//! answer are relayed as they come, never parsed.
//!
//! The rewrite: the request target gets the server URL's path in front
//! (origin form; an absolute-form target keeps only its path), `Host`
//! names the server, and the hop-by-hop headers (RFC 9110, 7.6.1) are
//! dropped. Every request goes on a connection of its own: `Connection:
//! close`, or `Connection: Upgrade` with the add-on's `Upgrade` header for
//! a WebSocket, so the answer ends where the server's connection ends and
//! nothing needs to be parsed on the way back.

use ureq::http::Uri;

/// Largest request head read (request line and headers).
pub const MAX_HEAD: usize = 16 << 10;
/// Most headers in one request head.
const MAX_HEADERS: usize = 100;

/// The server a token came from, as the forwarder reaches it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as the token came with it (for the log).
    pub url: String,
    pub tls: bool,
    /// Host name or address, without the brackets of an IPv6 address: the
    /// name resolved, and the name the certificate must carry (SNI).
    pub host: String,
    pub port: u16,
    /// The `Host` header: the URL's authority.
    authority: String,
    /// The URL's path without its final `/` (empty for most servers).
    prefix: String,
}

impl Target {
    /// The server of `url` (`http://` or `https://`, no query).
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("the server URL {url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("the server URL {url:?} is not http:// or https://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("the server URL {url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("the server URL {url:?} carries user information"));
        }
        if uri.query().is_some() {
            return Err(format!("the server URL {url:?} has a query"));
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Ok(Target {
            url: url.to_string(),
            tls,
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The same server (and path): connections to it may stay.
    pub fn same_server(&self, other: &Target) -> bool {
        (self.tls, &self.host, self.port, &self.prefix)
            == (other.tls, &other.host, other.port, &other.prefix)
    }
}

/// A request head, read whole and rewritten.
#[derive(Debug)]
pub struct Request {
    /// The head to send to the server.
    pub head: Vec<u8>,
    /// How many bytes of the input the head took (the body follows).
    pub consumed: usize,
    /// A protocol upgrade (WebSocket) was asked for.
    pub upgrade: bool,
    /// Method and path, for the log (never the headers: they carry the
    /// token).
    pub summary: String,
}

/// Why a request is refused, as the HTTP answer says it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub detail: String,
}

impl Refusal {
    pub fn new(status: u16, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            detail: detail.into(),
        }
    }
}

/// Headers that concern one connection only (RFC 9110, 7.6.1), plus
/// `Host` (replaced) and the proxy's own: never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "upgrade",
    "host",
];

/// Parses the head at the start of `input` for `target`: `Ok(None)` while
/// it is incomplete.
pub fn parse(input: &[u8], target: &Target) -> Result<Option<Request>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD => {
            return Err(head_too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(
                431,
                format!("more than {MAX_HEADERS} request headers"),
            ));
        }
        Err(e) => return Err(Refusal::new(400, format!("malformed request head: {e}"))),
    };
    if consumed > MAX_HEAD {
        return Err(head_too_large());
    }
    let method = request.method.unwrap_or("");
    let path = request.path.unwrap_or("");
    if method == "CONNECT" {
        return Err(Refusal::new(
            405,
            "CONNECT refused: the forwarder only reaches the Mender server",
        ));
    }
    let path = origin_form(path)?;
    // Connection: the options named there are hop-by-hop too.
    let mut connection_options = Vec::new();
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for option in String::from_utf8_lossy(h.value).split(',') {
                connection_options.push(option.trim().to_ascii_lowercase());
            }
        }
    }
    let upgrade_header = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value);
    let upgrade = upgrade_header.filter(|_| connection_options.iter().any(|o| o == "upgrade"));

    let mut head = Vec::with_capacity(consumed + target.authority.len() + target.prefix.len());
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.prefix.as_bytes());
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(format!(" HTTP/1.{}\r\n", request.version.unwrap_or(1)).as_bytes());
    head.extend_from_slice(format!("Host: {}\r\n", target.authority).as_bytes());
    for h in request.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str()) || connection_options.contains(&name) {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    match upgrade {
        Some(protocol) => {
            head.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
            head.extend_from_slice(protocol);
            head.extend_from_slice(b"\r\n");
        }
        None => head.extend_from_slice(b"Connection: close\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    // The query stays out of the log too (it may carry anything).
    let shown = path.split('?').next().unwrap_or("");
    Ok(Some(Request {
        head,
        consumed,
        upgrade: upgrade.is_some(),
        summary: format!("{method} {shown}"),
    }))
}

fn head_too_large() -> Refusal {
    Refusal::new(
        431,
        format!("request head larger than {} KiB", MAX_HEAD >> 10),
    )
}

/// The path and query of a request target: origin form as it is, absolute
/// form (`http://host/path`, what a client configured with the forwarder
/// as its proxy sends) without scheme and host.
fn origin_form(target: &str) -> Result<String, Refusal> {
    if target.starts_with('/') {
        return Ok(target.to_string());
    }
    let refused = || {
        Refusal::new(
            400,
            format!("request target {target:?} is neither a path nor an http:// URL"),
        )
    };
    let uri: Uri = target.parse().map_err(|_| refused())?;
    if uri.scheme_str() != Some("http") && uri.scheme_str() != Some("https") {
        return Err(refused());
    }
    Ok(uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Request) -> &str {
        std::str::from_utf8(&r.head).unwrap()
    }

    #[test]
    fn targets_come_from_the_token_url() {
        let t = Target::parse("https://mender.example.com").unwrap();
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.port), ("mender.example.com", 443));
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("mender.example.com", "")
        );
        let t = Target::parse("http://[::1]:8080/base/").unwrap();
        assert!(!t.tls);
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("[::1]:8080", "/base")
        );
        assert!(t.same_server(&Target::parse("http://[::1]:8080/base").unwrap()));
        assert!(!t.same_server(&Target::parse("https://[::1]:8080/base").unwrap()));
        for bad in [
            "ftp://h",
            "https://u:p@h",
            "https://h/?q=1",
            "not a url",
            "/path",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn heads_are_rewritten_for_the_server() {
        let t = Target::parse("https://server.test:8443/prefix").unwrap();
        let input = b"GET /api/devices/v1/x?a=b HTTP/1.1\r\nHost: 127.0.0.1:5\r\nAuthorization: Bearer T\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: 5\r\nContent-Length: 3\r\n\r\nabc";
        let r = parse(input, &t).unwrap().unwrap();
        assert_eq!(r.consumed, input.len() - 3);
        assert!(!r.upgrade);
        assert_eq!(r.summary, "GET /api/devices/v1/x");
        assert_eq!(
            text(&r),
            "GET /prefix/api/devices/v1/x?a=b HTTP/1.1\r\nHost: server.test:8443\r\nAuthorization: Bearer T\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
        // Incomplete, then complete.
        assert!(parse(&input[..20], &t).unwrap().is_none());
        // A WebSocket upgrade keeps its headers; absolute form loses its host.
        let input = b"GET http://127.0.0.1:5/ws HTTP/1.1\r\nHost: 127.0.0.1:5\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n";
        let r = parse(input, &t).unwrap().unwrap();
        assert!(r.upgrade);
        assert_eq!(
            text(&r),
            "GET /prefix/ws HTTP/1.1\r\nHost: server.test:8443\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
        // An Upgrade header without the Connection option is not an upgrade.
        let r = parse(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", &t)
            .unwrap()
            .unwrap();
        assert!(!r.upgrade);
        assert!(text(&r).ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn bad_heads_are_refused_with_their_status() {
        let t = Target::parse("http://s").unwrap();
        let status = |input: &[u8]| parse(input, &t).unwrap_err().status;
        assert_eq!(status(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
        assert_eq!(status(b"CONNECT s:443 HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status(b"OPTIONS * HTTP/1.1\r\n\r\n"), 400);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(status(&big), 431);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many), 431);
    }
}
