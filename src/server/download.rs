//! The artifact download: one GET of the (pre-signed) URL, streamed into
//! the installer, resumed with `Range` requests from the byte reached when
//! the connection breaks (`docs/managed-mode.md`). Nothing is stored on the way.
//!
//! The URL is storage, not the API: the device's JWT is never sent there.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::backoff::backoff;
use super::client::strip_query;

/// Artifacts smaller than this are refused, as by Mender 3.x (no valid
/// artifact is that small).
const MIN_ARTIFACT_SIZE: u64 = 4096;

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

/// A `Read` over the artifact that reconnects where the data stopped.
pub struct ResumableDownload {
    agent: ureq::Agent,
    url: String,
    total: u64,
    offset: u64,
    body: Option<ureq::BodyReader<'static>>,
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

impl ResumableDownload {
    /// Starts the download: the first answer must be 200 with a length.
    pub fn start(agent: ureq::Agent, url: &str, options: DownloadOptions) -> io::Result<Self> {
        let shown = strip_query(url).to_string();
        let mut attempt = 0;
        let response = loop {
            match agent.get(url).call() {
                Ok(r) if r.status() == 200 => break r,
                Ok(r) => {
                    return Err(io_error(format!(
                        "downloading {shown}: HTTP {}",
                        r.status().as_u16()
                    )));
                }
                Err(e) => {
                    let Some(wait) = backoff(attempt, options.max_interval, options.max_attempts)
                    else {
                        return Err(io_error(format!("downloading {shown}: {e}")));
                    };
                    log::warn!("downloading {shown}: {e}; trying again in {wait:?}");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        };
        let total = content_length(&response).ok_or_else(|| {
            io_error(format!(
                "downloading {shown}: the server did not send the length of the artifact"
            ))
        })?;
        if total < MIN_ARTIFACT_SIZE {
            return Err(io_error(format!(
                "downloading {shown}: the artifact is {total} bytes, smaller than any valid artifact"
            )));
        }
        log::info!("downloading {total} bytes from {shown}");
        Ok(ResumableDownload {
            agent,
            url: url.to_string(),
            total,
            offset: 0,
            body: Some(response.into_body().into_reader()),
            options,
            attempts: 0,
            connected_at: 0,
            window_start: Instant::now(),
            window_offset: 0,
        })
    }

    fn shown(&self) -> &str {
        strip_query(&self.url)
    }

    /// Waits and reconnects at `offset`; checks that the server honours
    /// the range.
    fn reconnect(&mut self, cause: &str, stalled: bool) -> io::Result<()> {
        self.body = None;
        if self.offset > self.connected_at && !stalled {
            self.attempts = 0;
        }
        loop {
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
            let range = format!("bytes={}-", self.offset);
            let response = match self.agent.get(&self.url).header("Range", &range).call() {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("resuming {}: {e}", self.shown());
                    continue;
                }
            };
            let status = response.status().as_u16();
            if status != 206 {
                if status >= 500 {
                    log::warn!("resuming {}: HTTP {status}", self.shown());
                    continue;
                }
                // A 200 would restart from byte 0: the bytes already
                // installed cannot be fed again.
                return Err(io_error(format!(
                    "resuming {} at byte {}: HTTP {status} instead of 206 Partial Content (the server does not honour the range)",
                    self.shown(),
                    self.offset
                )));
            }
            let header = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            match parse_content_range(&header) {
                Some((start, total))
                    if start == self.offset && total.is_none_or(|t| t == self.total) => {}
                _ => {
                    return Err(io_error(format!(
                        "resuming {} at byte {}: the server answered Content-Range {header:?}",
                        self.shown(),
                        self.offset
                    )));
                }
            }
            self.connected_at = self.offset;
            self.window_start = Instant::now();
            self.window_offset = self.offset;
            self.body = Some(response.into_body().into_reader());
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
                self.reconnect(&cause, true)?;
            }
            let cause = match self.body.as_mut() {
                None => "not connected".to_string(),
                Some(body) => {
                    let room = (self.total - self.offset).min(buf.len() as u64) as usize;
                    match body.read(&mut buf[..room]) {
                        Ok(0) => "the connection closed early".to_string(),
                        Ok(n) => {
                            self.offset += n as u64;
                            return Ok(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => e.to_string(),
                    }
                }
            };
            self.reconnect(&cause, false)?;
        }
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

/// `bytes START-END/TOTAL` → (START, TOTAL); TOTAL `*` is `None`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
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
    Some((start, total))
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
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
