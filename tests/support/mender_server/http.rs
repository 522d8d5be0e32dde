//! HTTP/1.1 on a socket: reading requests (bounded in size and time),
//! writing responses (artifact bodies, cuts, throttling, hostile replies),
//! and the per-connection loop.

use super::*;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) path: String,
    pub(super) query: String,
    /// Names in lower case.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) keep_alive: bool,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) enum Incoming {
    Request(Request),
    Closed,
    Bad {
        status: u16,
        problem: String,
        method: String,
        target: String,
    },
}

pub(super) enum Fill {
    Data,
    Eof,
    Stop,
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
}

impl Conn {
    /// Reads once more into `buf`; Stop on shutdown, deadline or error.
    pub(super) fn fill(&mut self, shared: &Shared, deadline: Instant) -> Fill {
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if shared.stopping() || Instant::now() >= deadline {
                    Fill::Stop
                } else {
                    Fill::Data
                }
            }
            Err(_) => Fill::Stop,
        }
    }
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(super) fn read_request(conn: &mut Conn, shared: &Shared) -> Incoming {
    // Head.
    let mut deadline = Instant::now() + IDLE_TIMEOUT;
    let mut started = !conn.buf.is_empty();
    if started {
        deadline = Instant::now() + REQUEST_TIMEOUT;
    }
    let head_end = loop {
        if let Some(pos) = find(&conn.buf, b"\r\n\r\n") {
            break pos;
        }
        if conn.buf.len() > MAX_HEAD {
            return bad(431, "request head too large", "", "");
        }
        match conn.fill(shared, deadline) {
            Fill::Data => {
                if !started && !conn.buf.is_empty() {
                    started = true;
                    deadline = Instant::now() + REQUEST_TIMEOUT;
                }
            }
            Fill::Eof | Fill::Stop => return Incoming::Closed,
        }
    };
    let head = match std::str::from_utf8(&conn.buf[..head_end]) {
        Ok(h) => h.to_owned(),
        Err(_) => return bad(400, "request head is not UTF-8", "", ""),
    };
    conn.buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return bad(
            400,
            &format!("malformed request line {request_line:?}"),
            "",
            "",
        );
    };
    let (method, target) = (method.to_string(), target.to_string());
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return bad(400, "malformed method", &method, &target);
    }
    if !target.starts_with('/') {
        return bad(
            400,
            "request target is not an absolute path",
            &method,
            &target,
        );
    }
    let http10 = match *version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return bad(505, "unsupported HTTP version", &method, &target),
    };
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return bad(
                400,
                &format!("malformed header line {line:?}"),
                &method,
                &target,
            );
        };
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return bad(
                400,
                &format!("malformed header name {name:?}"),
                &method,
                &target,
            );
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let mut req = Request {
        method,
        target,
        path,
        query,
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let tokens: Vec<&str> = connection.split(',').map(str::trim).collect();
    req.keep_alive = if http10 {
        tokens.contains(&"keep-alive")
    } else {
        !tokens.contains(&"close")
    };

    // Body.
    let chunked = match req.header("transfer-encoding") {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(te) => {
            return bad(
                400,
                &format!("unsupported Transfer-Encoding {te:?}"),
                &req.method,
                &req.target,
            );
        }
    };
    let lengths: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    if chunked && !lengths.is_empty() {
        return bad(
            400,
            "both Content-Length and Transfer-Encoding",
            &req.method,
            &req.target,
        );
    }
    let mut length = None;
    for l in &lengths {
        match l.parse::<usize>() {
            Ok(n) if length.is_none() || length == Some(n) => length = Some(n),
            _ => {
                return bad(
                    400,
                    &format!("bad Content-Length {l:?}"),
                    &req.method,
                    &req.target,
                );
            }
        }
    }
    if length.is_some_and(|n| n > MAX_BODY) {
        return bad(413, "request body too large", &req.method, &req.target);
    }
    let expects_body = chunked || length.is_some_and(|n| n > 0);
    if expects_body
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        let _ = conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    if chunked {
        loop {
            match parse_chunked(&conn.buf) {
                Ok(Some((body, used))) => {
                    req.body = body;
                    conn.buf.drain(..used);
                    break;
                }
                Ok(None) => {}
                Err(problem) => return bad(400, &problem, &req.method, &req.target),
            }
            if conn.buf.len() > MAX_BODY + MAX_HEAD {
                return bad(413, "request body too large", &req.method, &req.target);
            }
            match conn.fill(shared, deadline) {
                Fill::Data => {}
                Fill::Eof | Fill::Stop => return Incoming::Closed,
            }
        }
    } else if let Some(n) = length {
        while conn.buf.len() < n {
            match conn.fill(shared, deadline) {
                Fill::Data => {}
                Fill::Eof | Fill::Stop => return Incoming::Closed,
            }
        }
        req.body = conn.buf.drain(..n).collect();
    }
    Incoming::Request(req)
}

pub(super) fn bad(status: u16, problem: &str, method: &str, target: &str) -> Incoming {
    Incoming::Bad {
        status,
        problem: problem.to_owned(),
        method: method.to_owned(),
        target: target.to_owned(),
    }
}

/// Ok(None): incomplete; Ok(Some((body, bytes used))).
pub(super) fn parse_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            if buf.len() - pos > 1024 {
                return Err("chunk size line too long".into());
            }
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&buf[pos..pos + eol]).map_err(|_| "chunk size line is not text")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers up to an empty line.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if size > MAX_BODY || body.len() + size > MAX_BODY {
            return Err("chunked body too large".into());
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk not terminated by CRLF".into());
        }
        pos += size + 2;
    }
}

pub(super) enum Body {
    Empty,
    Bytes(Vec<u8>),
    Artifact {
        data: Arc<[u8]>,
        start: usize,
        end: usize,
        /// Close after this many body bytes.
        cut_after: Option<u64>,
        throttle: Option<u64>,
    },
    Hostile(HostileBody),
}

pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Body,
    pub(super) download: Option<Box<DownloadRecord>>,
    /// A 101 answer: the connection goes to the deviceconnect loop.
    pub(super) upgrade: Option<Box<Upgrade>>,
}

impl Response {
    pub(super) fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            download: None,
            upgrade: None,
        }
    }

    pub(super) fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.headers
            .push(("Content-Type".into(), content_type.to_owned()));
        self.body = Body::Bytes(body.into());
        self
    }

    pub(super) fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

pub(super) struct Written {
    pub(super) bytes: u64,
    pub(super) cut: bool,
    pub(super) ok: bool,
}

pub(super) fn write_response(
    stream: &mut TcpStream,
    shared: &Shared,
    resp: &Response,
    keep_alive: bool,
) -> Written {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let body_len = match &resp.body {
        Body::Empty => 0,
        Body::Bytes(b) => b.len(),
        Body::Artifact { start, end, .. } => end - start,
        Body::Hostile(HostileBody::Bytes(b)) => b.len(),
        Body::Hostile(HostileBody::Filler { len, .. }) => *len as usize,
        Body::Hostile(HostileBody::Trickle { bytes, .. }) => bytes.len(),
    };
    let length_given = resp
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    if resp.status != 204 && resp.status >= 200 && !length_given {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    match &resp.body {
        Body::Hostile(body) => write_hostile(stream, shared, head.as_bytes(), body),
        Body::Empty => Written {
            bytes: 0,
            cut: false,
            ok: stream.write_all(head.as_bytes()).is_ok(),
        },
        Body::Bytes(b) => {
            let mut all = head.into_bytes();
            all.extend_from_slice(b);
            Written {
                bytes: b.len() as u64,
                cut: false,
                ok: stream.write_all(&all).is_ok(),
            }
        }
        Body::Artifact {
            data,
            start,
            end,
            cut_after,
            throttle,
        } => {
            if stream.write_all(head.as_bytes()).is_err() {
                return Written {
                    bytes: 0,
                    cut: false,
                    ok: false,
                };
            }
            let limit = cut_after.map_or(end - start, |c| (c as usize).min(end - start));
            let mut sent = 0usize;
            let chunk = match throttle {
                Some(rate) => ((*rate / 20) as usize).clamp(1, DOWNLOAD_CHUNK),
                None => DOWNLOAD_CHUNK,
            };
            while sent < limit {
                if shared.stopping() {
                    return Written {
                        bytes: sent as u64,
                        cut: false,
                        ok: false,
                    };
                }
                let n = chunk.min(limit - sent);
                if stream
                    .write_all(&data[start + sent..start + sent + n])
                    .is_err()
                {
                    return Written {
                        bytes: sent as u64,
                        cut: false,
                        ok: false,
                    };
                }
                sent += n;
                if let Some(rate) = throttle {
                    shared.sleep(Duration::from_secs_f64(n as f64 / *rate as f64));
                }
            }
            if cut_after.is_some() && limit < end - start {
                let _ = stream.flush();
                let _ = stream.shutdown(Shutdown::Both);
                return Written {
                    bytes: sent as u64,
                    cut: true,
                    ok: false,
                };
            }
            Written {
                bytes: sent as u64,
                cut: false,
                ok: true,
            }
        }
    }
}

/// Writes a hostile body; stops when the client hangs up.
pub(super) fn write_hostile(
    stream: &mut TcpStream,
    shared: &Shared,
    head: &[u8],
    body: &HostileBody,
) -> Written {
    let mut sent = 0u64;
    let mut put = |stream: &mut TcpStream, data: &[u8], counted: bool| {
        let ok = !shared.stopping() && stream.write_all(data).is_ok();
        if ok && counted {
            sent += data.len() as u64;
        }
        ok
    };
    let ok = put(stream, head, false)
        && match body {
            HostileBody::Bytes(b) => put(stream, b, true),
            HostileBody::Filler { byte, len } => {
                let chunk = vec![*byte; DOWNLOAD_CHUNK];
                let mut left = *len;
                let mut ok = true;
                while ok && left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    ok = put(stream, &chunk[..n], true);
                    left -= n as u64;
                }
                ok
            }
            HostileBody::Trickle { bytes, interval } => {
                let mut ok = true;
                for b in bytes {
                    if !ok {
                        break;
                    }
                    ok = put(stream, &[*b], true);
                    shared.sleep(*interval);
                }
                ok
            }
        };
    Written {
        bytes: sent,
        cut: false,
        ok,
    }
}

pub(super) fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    let mut upgraded = None;
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        if shared.stopping() {
            break;
        }
        match read_request(&mut conn, &shared) {
            Incoming::Closed => break,
            Incoming::Bad {
                status,
                problem,
                method,
                target,
            } => {
                let rid = shared.request_ids.fetch_add(1, Ordering::Relaxed);
                REQUEST_ID.with(|c| c.set(rid));
                let resp = error_response(&shared, status, &problem)
                    .header("X-MEN-RequestID", format!("{rid:016x}"));
                let bytes = match &resp.body {
                    Body::Bytes(b) => b.len() as u64,
                    _ => 0,
                };
                {
                    let mut st = shared.lock();
                    let problem = format!("malformed HTTP request: {problem}");
                    st.violation(None, &method, &target, problem);
                    st.record(
                        &shared,
                        rid,
                        None,
                        &method,
                        &target,
                        Endpoint::Other,
                        status,
                        bytes,
                    );
                }
                write_response(&mut conn.stream, &shared, &resp, false);
                break;
            }
            Incoming::Request(req) => {
                let rid = shared.request_ids.fetch_add(1, Ordering::Relaxed);
                REQUEST_ID.with(|c| c.set(rid));
                let (mut resp, device, endpoint) = handle(&shared, &req);
                resp.headers
                    .push(("X-MEN-RequestID".into(), format!("{rid:016x}")));
                // Logged before the client can see the answer (so a test
                // that got a response finds it), with the planned byte count;
                // corrected afterwards if the write went otherwise.
                let (planned, planned_cut) = match &resp.body {
                    Body::Empty => (0, false),
                    Body::Bytes(b) => (b.len() as u64, false),
                    Body::Hostile(_) => (0, false),
                    Body::Artifact {
                        start,
                        end,
                        cut_after,
                        ..
                    } => {
                        let len = (end - start) as u64;
                        let n = cut_after.map_or(len, |c| c.min(len));
                        (n, n < len)
                    }
                };
                let download_index = {
                    let mut st = shared.lock();
                    st.record(
                        &shared,
                        rid,
                        device.as_deref(),
                        &req.method,
                        &req.target,
                        endpoint,
                        resp.status,
                        planned,
                    );
                    resp.download.take().map(|mut d| {
                        d.bytes_sent = planned;
                        d.cut = planned_cut;
                        st.downloads.push(*d);
                        st.downloads.len() - 1
                    })
                };
                // A hostile reply ends its connection: a body shorter than
                // its Content-Length then shows as a short body.
                let hostile = matches!(resp.body, Body::Hostile(_));
                // A 101 keeps the connection (no `Connection: close`).
                let upgrade = resp.upgrade.take();
                let keep_alive = (req.keep_alive || upgrade.is_some()) && !hostile;
                let w = write_response(&mut conn.stream, &shared, &resp, keep_alive);
                if let Some(upgrade) = upgrade {
                    if w.ok {
                        upgraded = Some(upgrade);
                    } else {
                        mark_closed(&shared, upgrade.connection);
                    }
                    break;
                }
                if w.bytes != planned || w.cut != planned_cut {
                    let mut st = shared.lock();
                    if let Some(r) = st.log.iter_mut().rev().find(|r| r.id == rid) {
                        r.bytes_sent = w.bytes;
                    }
                    if let Some(d) = download_index.and_then(|i| st.downloads.get_mut(i)) {
                        d.bytes_sent = w.bytes;
                        d.cut = w.cut;
                    }
                }
                if !w.ok || !keep_alive {
                    break;
                }
            }
        }
    }
    if let Some(upgrade) = upgraded {
        serve_deviceconnect(shared, conn.stream, conn.buf, *upgrade);
        return;
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
}
