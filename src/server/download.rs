//! The artifact download: a (pre-signed) URL read as a stream into the
//! installer, resumed with `Range` requests from the byte reached when the
//! connection breaks (`docs/managed-mode.md`). Nothing is stored on the way.
//!
//! When the server answers ranges, the head of the artifact is read in
//! bounded windows until the reader knows whether the artifact is chunked:
//! then either the rest comes in one request, or the adaptive install asks
//! only for the frames it lacks (`docs/artifacts.md`, "Adaptive installs").
//! Without range support the first answer is the whole artifact, as for
//! Mender's own client.
//!
//! The URL is storage, not the API: the device's JWT is never sent there.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::backoff::backoff;
use super::client::strip_query;
use crate::artifact::adaptive::RangeSource;

/// Artifacts smaller than this are refused, as by Mender 3.x (no valid
/// artifact is that small).
const MIN_ARTIFACT_SIZE: u64 = 4096;

/// The first window of the head: version, manifest, signature and the
/// header member's tar header of any artifact. The reader then says how
/// far the header goes (`stream_until`); windows past a hint double, up
/// to [`MAX_WINDOW`].
const FIRST_WINDOW: u64 = 8 << 10;
const MAX_WINDOW: u64 = 4 << 20;

/// The slowest transfer taken: fewer bytes than this in a window of
/// [`PROGRESS_WINDOW`] is a stall (a server trickling a byte a minute keeps
/// the per-read timeout happy for ever). 4 KiB per 5 min is 14 bytes/s,
/// far below any link a device updates over.
pub const MIN_PROGRESS: u64 = 4096;
pub const PROGRESS_WINDOW: Duration = Duration::from_secs(300);

/// How resumes are paced.
#[derive(Debug, Clone, Copy)]
pub struct DownloadOptions {
    /// Resume attempts without progress before giving up
    /// (`RetryDownloadCount`). An attempt that brings new bytes resets the
    /// count, so a long download over a flaky link still finishes.
    pub max_attempts: u32,
    /// The longest wait between attempts (`RetryPollIntervalSeconds`).
    pub max_interval: Duration,
    /// At least `min_progress` bytes per `progress_window`, else the
    /// connection is dropped and the download resumed; such a resume
    /// counts as an attempt without progress ([`MIN_PROGRESS`],
    /// [`PROGRESS_WINDOW`]).
    pub min_progress: u64,
    pub progress_window: Duration,
}

/// Asks the server for a fresh link when the one in use expired (managed
/// mode: the deployment's `deployments/next` again).
pub type RefreshLink = Box<dyn FnMut() -> anyhow::Result<String>>;

/// A `Read` over the artifact that reconnects where the data stopped, and
/// a [`RangeSource`] when the server answers ranges.
pub struct ResumableDownload {
    agent: ureq::Agent,
    url: String,
    total: u64,
    offset: u64,
    body: Option<ureq::BodyReader<'static>>,
    /// End (exclusive) of what the open connection was asked for.
    conn_end: u64,
    /// The server answered a range request with 206.
    ranged: bool,
    /// The server gave no length: `total` is unknown.
    length_unknown: bool,
    /// The head is read in windows; off once the rest is wanted.
    windowed: bool,
    next_window: u64,
    /// The reader needs nothing past this yet (see [`RangeSource::stream_until`]).
    until: u64,
    /// Body bytes received over every request.
    received: Rc<Cell<u64>>,
    refresh: Option<RefreshLink>,
    options: DownloadOptions,
    /// Failed attempts since the last progress.
    attempts: u32,
    /// Offset at the last (re)connection: progress is measured from there.
    connected_at: u64,
    /// Start of the current progress window, and the offset then.
    window_start: Instant,
    window_offset: u64,
}

fn io_error(message: String) -> io::Error {
    io::Error::other(message)
}

/// What one request brought.
enum Answer {
    /// 206 with the range asked for (from its start to `end`, exclusive).
    Partial {
        body: ureq::BodyReader<'static>,
        end: u64,
        total: Option<u64>,
    },
    /// 200: the whole artifact, whatever was asked.
    Whole {
        body: ureq::BodyReader<'static>,
        length: Option<u64>,
    },
}

/// Whether a failed request may succeed when tried again: the network,
/// not a certificate or a malformed answer.
fn transient(e: &ureq::Error) -> bool {
    use io::ErrorKind::*;
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ConnectionRefused
                | ConnectionReset
                | ConnectionAborted
                | NotConnected
                | BrokenPipe
                | TimedOut
                | UnexpectedEof
                | Interrupted
                | HostUnreachable
                | NetworkUnreachable
                | NetworkDown
        ),
        ureq::Error::Timeout(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        _ => false,
    }
}

/// Link statuses that mean "expired or revoked": worth one refresh.
fn link_expired(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 410)
}

impl ResumableDownload {
    /// Starts the download. With range support the first request asks for
    /// the head only; a server without it answers 200 with everything.
    /// The first request is tried again as `options` say (the daemon).
    pub fn start(agent: ureq::Agent, url: &str, options: DownloadOptions) -> io::Result<Self> {
        Self::open(agent, url, options, true)
    }

    /// As [`start`](Self::start), but a first request that fails is an
    /// error at once (`install URL`: a person is waiting); later breaks
    /// resume as `options` say.
    pub fn start_once(agent: ureq::Agent, url: &str, options: DownloadOptions) -> io::Result<Self> {
        Self::open(agent, url, options, false)
    }

    fn open(
        agent: ureq::Agent,
        url: &str,
        options: DownloadOptions,
        retry_first: bool,
    ) -> io::Result<Self> {
        let mut d = ResumableDownload {
            agent,
            url: url.to_string(),
            total: 0,
            offset: 0,
            body: None,
            conn_end: 0,
            ranged: false,
            length_unknown: false,
            windowed: true,
            next_window: FIRST_WINDOW,
            until: 0,
            received: Rc::new(Cell::new(0)),
            refresh: None,
            options,
            attempts: 0,
            connected_at: 0,
            window_start: Instant::now(),
            window_offset: 0,
        };
        let shown = d.shown().to_string();
        let mut attempt = 0;
        let answer = loop {
            match d.request(0, Some(FIRST_WINDOW)) {
                Ok(a) => break a,
                Err((e, retry)) => {
                    let wait = backoff(attempt, options.max_interval, options.max_attempts)
                        .filter(|_| retry && retry_first);
                    let Some(wait) = wait else {
                        return Err(io_error(format!("downloading {shown}: {e}")));
                    };
                    log::warn!("downloading {shown}: {e}; trying again in {wait:?}");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        };
        match answer {
            Answer::Partial {
                body,
                end,
                total: Some(total),
            } => {
                d.ranged = true;
                d.total = total;
                d.conn_end = end;
                d.body = Some(body);
                d.next_window = FIRST_WINDOW * 2;
            }
            Answer::Partial { total: None, .. } => {
                return Err(io_error(format!(
                    "downloading {shown}: the server did not send the length of the artifact"
                )));
            }
            Answer::Whole { body, length } => {
                // Without a length (a close-delimited answer) the stream
                // ends where the body does and cannot be resumed.
                d.length_unknown = length.is_none();
                d.total = length.unwrap_or(u64::MAX);
                d.windowed = false;
                d.conn_end = d.total;
                d.body = Some(body);
            }
        }
        if d.length_unknown {
            log::info!("downloading {shown} (no length given: no resume)");
            return Ok(d);
        }
        if d.total < MIN_ARTIFACT_SIZE {
            return Err(io_error(format!(
                "downloading {shown}: the artifact is {} bytes, smaller than any valid artifact",
                d.total
            )));
        }
        log::info!(
            "downloading {} bytes from {shown}{}",
            d.total,
            if d.ranged {
                ""
            } else {
                " (the server does not answer range requests)"
            }
        );
        Ok(d)
    }

    /// A way to renew an expired link; asked once per expiry.
    pub fn set_refresh(&mut self, refresh: RefreshLink) {
        self.refresh = Some(refresh);
    }

    fn shown(&self) -> &str {
        strip_query(&self.url)
    }

    /// One GET from `start`, for `len` bytes or to the end. Errors say
    /// whether trying again may help; an expired link is renewed once here.
    fn request(&mut self, start: u64, len: Option<u64>) -> Result<Answer, (String, bool)> {
        let mut refreshed = false;
        loop {
            let mut req = self.agent.get(&self.url);
            let range = match len {
                Some(len) => format!("bytes={start}-{}", start + len.max(1) - 1),
                None => format!("bytes={start}-"),
            };
            if len.is_some() || start > 0 {
                req = req.header("Range", &range);
            }
            // The agent reports 4xx and 5xx as errors: an expired link is
            // one of them.
            let (response, status) = match req.call() {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (Some(r), status)
                }
                Err(ureq::Error::StatusCode(s)) => (None, s),
                Err(e) => {
                    let transient = transient(&e);
                    return Err((e.to_string(), transient));
                }
            };
            let response = match response {
                Some(r) if matches!(status, 200 | 206) => r,
                _ if link_expired(status) && !refreshed && self.refresh.is_some() => {
                    refreshed = true;
                    log::warn!(
                        "{}: HTTP {status}; asking the server for a new link",
                        self.shown()
                    );
                    let fresh = self.refresh.as_mut().map(|r| r());
                    match fresh {
                        Some(Ok(url)) => self.url = url,
                        Some(Err(e)) => {
                            return Err((format!("HTTP {status}, and no new link: {e:#}"), false));
                        }
                        None => return Err((format!("HTTP {status}"), false)),
                    }
                    continue;
                }
                _ if link_expired(status) => {
                    return Err((
                        format!(
                            "HTTP {status}: the link expired or was revoked (in standalone mode, get a new link and install again)"
                        ),
                        false,
                    ));
                }
                _ => return Err((format!("HTTP {status}"), status >= 500)),
            };
            match status {
                206 => {
                    let header = response
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    return match parse_content_range(&header) {
                        Some((s, end, total))
                            if s == start
                                && len.is_none_or(|l| end < start + l)
                                && (self.total == 0 || total.is_none_or(|t| t == self.total)) =>
                        {
                            Ok(Answer::Partial {
                                body: response.into_body().into_reader(),
                                end: end + 1,
                                total,
                            })
                        }
                        _ => Err((
                            format!(
                                "asked for {range}, the server answered Content-Range {header:?}"
                            ),
                            false,
                        )),
                    };
                }
                _ => {
                    let length = content_length(&response);
                    return Ok(Answer::Whole {
                        body: response.into_body().into_reader(),
                        length,
                    });
                }
            }
        }
    }

    /// Where the next connection of the sequential stream should end.
    fn window_end(&mut self) -> Option<u64> {
        if !self.windowed || !self.ranged {
            return None;
        }
        let end = if self.until > self.offset {
            self.until
        } else {
            let end = self.offset + self.next_window;
            self.next_window = (self.next_window * 2).min(MAX_WINDOW);
            end
        };
        Some(end.min(self.total))
    }

    /// Connects the sequential stream at `offset`: after a failure (with a
    /// wait and an attempt counted) or for the next window (at once).
    fn reconnect(&mut self, cause: &str, failed: bool, stalled: bool) -> io::Result<()> {
        self.body = None;
        if self.offset > self.connected_at && !stalled {
            self.attempts = 0;
        }
        loop {
            if failed || self.attempts > 0 {
                let Some(wait) = backoff(
                    self.attempts,
                    self.options.max_interval,
                    self.options.max_attempts,
                ) else {
                    return Err(io_error(format!(
                        "downloading {}: giving up at byte {} of {} after {} attempts: {cause}",
                        self.shown(),
                        self.offset,
                        self.total,
                        self.attempts
                    )));
                };
                log::warn!(
                    "download interrupted at byte {} of {} ({cause}); resuming in {wait:?}",
                    self.offset,
                    self.total
                );
                std::thread::sleep(wait);
                self.attempts += 1;
            }
            let end = self.window_end();
            let answer = match self.request(self.offset, end.map(|e| e - self.offset)) {
                Ok(a) => a,
                Err((e, true)) => {
                    log::warn!("resuming {}: {e}", self.shown());
                    if !failed && self.attempts == 0 {
                        self.attempts = 1;
                    }
                    continue;
                }
                Err((e, false)) => {
                    return Err(io_error(format!(
                        "resuming {} at byte {}: {e}",
                        self.shown(),
                        self.offset
                    )));
                }
            };
            match answer {
                Answer::Partial { body, end, .. } => {
                    self.conn_end = end;
                    self.body = Some(body);
                }
                Answer::Whole { body, length } => {
                    if length.is_some_and(|l| l != self.total) {
                        return Err(io_error(format!(
                            "resuming {}: the artifact is now {} bytes, it was {}",
                            self.shown(),
                            length.unwrap_or_default(),
                            self.total
                        )));
                    }
                    // The server stopped answering ranges: the whole
                    // artifact again, of which the bytes already read are
                    // skipped (never fed twice).
                    log::warn!(
                        "{}: the server ignored the range; skipping the first {} bytes of the whole artifact",
                        self.shown(),
                        self.offset
                    );
                    self.ranged = false;
                    self.windowed = false;
                    let mut body = body;
                    let skipped = io::copy(&mut (&mut body).take(self.offset), &mut io::sink());
                    match skipped {
                        Ok(n) if n == self.offset => {}
                        Ok(n) => {
                            log::warn!("the answer ended after {n} bytes");
                            continue;
                        }
                        Err(e) => {
                            log::warn!("skipping to byte {}: {e}", self.offset);
                            continue;
                        }
                    }
                    self.received.set(self.received.get() + self.offset);
                    self.conn_end = self.total;
                    self.body = Some(body);
                }
            }
            self.connected_at = self.offset;
            self.window_start = Instant::now();
            self.window_offset = self.offset;
            return Ok(());
        }
    }
}

impl Read for ResumableDownload {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.offset >= self.total {
            return Ok(0);
        }
        // Bounded: each reconnection either brings data or uses up an
        // attempt, and the attempts are finite.
        loop {
            if let Some(cause) = self.stalled() {
                self.reconnect(&cause, true, true)?;
            }
            if self.body.is_none() || self.offset >= self.conn_end {
                // The window was read (or the stream moved): the next one.
                self.reconnect("next window", false, false)?;
            }
            let cause = match self.body.as_mut() {
                None => "not connected".to_string(),
                Some(body) => {
                    let room = (self.conn_end - self.offset).min(buf.len() as u64) as usize;
                    match body.read(&mut buf[..room]) {
                        Ok(0) if self.length_unknown => return Ok(0),
                        Ok(0) => "the connection closed early".to_string(),
                        Ok(n) => {
                            self.offset += n as u64;
                            self.received.set(self.received.get() + n as u64);
                            return Ok(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => e.to_string(),
                    }
                }
            };
            if self.length_unknown {
                return Err(io_error(format!(
                    "downloading {}: {cause} at byte {} (no length given: cannot resume)",
                    self.shown(),
                    self.offset
                )));
            }
            self.reconnect(&cause, true, false)?;
        }
    }
}

/// A range body that counts what it brings into the download's total.
struct Counted {
    body: io::Take<ureq::BodyReader<'static>>,
    received: Rc<Cell<u64>>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf)?;
        self.received.set(self.received.get() + n as u64);
        Ok(n)
    }
}

impl RangeSource for ResumableDownload {
    fn total(&self) -> u64 {
        self.total
    }

    fn ranges_supported(&self) -> bool {
        self.ranged
    }

    fn stream_rest(&mut self) {
        self.windowed = false;
    }

    fn stream_until(&mut self, end: u64) {
        self.until = end;
    }

    fn seek_stream(&mut self, pos: u64) {
        if pos != self.offset {
            self.body = None;
            self.offset = pos.min(self.total);
            self.conn_end = self.offset;
        }
    }

    fn open_range(&mut self, start: u64, end: u64) -> io::Result<Option<Box<dyn Read>>> {
        if !self.ranged || start >= end || end > self.total {
            return Ok(None);
        }
        let mut attempt = 0;
        loop {
            match self.request(start, Some(end - start)) {
                Ok(Answer::Partial { body, end: got, .. }) if got == end => {
                    return Ok(Some(Box::new(Counted {
                        body: body.take(end - start),
                        received: self.received.clone(),
                    })));
                }
                Ok(Answer::Partial { end: got, .. }) => {
                    return Err(io_error(format!(
                        "asked for bytes {start}..{end}, the server sent up to {got}"
                    )));
                }
                Ok(Answer::Whole { .. }) => {
                    self.ranged = false;
                    return Ok(None);
                }
                Err((e, retry)) => {
                    let wait = backoff(
                        attempt,
                        self.options.max_interval,
                        self.options.max_attempts,
                    )
                    .filter(|_| retry);
                    let Some(wait) = wait else {
                        return Err(io_error(format!("{}: {e}", self.shown())));
                    };
                    log::warn!("{}: {e}; trying again in {wait:?}", self.shown());
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }

    fn received(&self) -> u64 {
        self.received.get()
    }
}

impl ResumableDownload {
    /// Whether the window ran out with too few bytes (then why); starts a
    /// new window otherwise when it ran out.
    fn stalled(&mut self) -> Option<String> {
        if self.window_start.elapsed() < self.options.progress_window {
            return None;
        }
        let got = self.offset - self.window_offset;
        if got < self.options.min_progress {
            return Some(format!(
                "too slow: {got} bytes in {} s (at least {} wanted)",
                self.options.progress_window.as_secs(),
                self.options.min_progress
            ));
        }
        self.window_start = Instant::now();
        self.window_offset = self.offset;
        None
    }
}

fn content_length(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    response
        .headers()
        .get("content-length")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `bytes START-END/TOTAL` → (START, END, TOTAL); TOTAL `*` is `None`.
fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `total` bytes (206 from a `Range` start) trickled a byte per
    /// 50 ms, to at most 10 connections.
    fn trickle_server(total: u64) -> String {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/artifact", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(10) {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let start: u64 = head
                        .split("range: bytes=")
                        .nth(1)
                        .and_then(|r| r.split('-').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let reply = if start == 0 {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n")
                    } else {
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{total}\r\n\r\n",
                            total - start,
                            total - 1
                        )
                    };
                    let _ = stream.write_all(reply.as_bytes());
                    for _ in start..total {
                        if stream.write_all(b"x").is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
        });
        url
    }

    #[test]
    fn a_trickling_server_is_given_up_on() {
        let url = trickle_server(100_000);
        let agent = crate::http::agent(None, false).unwrap();
        let options = DownloadOptions {
            max_attempts: 2,
            max_interval: Duration::from_millis(10),
            min_progress: 1000,
            progress_window: Duration::from_secs(1),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = ResumableDownload::start(agent, &url, options)
                .and_then(|mut d| std::io::copy(&mut d, &mut std::io::sink()));
            let _ = tx.send(result);
        });
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the download did not end");
        let e = result.unwrap_err().to_string();
        assert!(e.contains("too slow"), "{e}");
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
