//! The artifact download: one GET of the (pre-signed) URL, streamed into
//! the installer, resumed with `Range` requests from the byte reached when
//! the connection breaks (spec §5.4). Nothing is stored on the way.
//!
//! The URL is storage, not the API: the device's JWT is never sent there.

use std::io::{self, Read};
use std::time::Duration;

use super::backoff::backoff;
use super::client::strip_query;

/// Artifacts smaller than this are refused, as by Mender 3.x (no valid
/// artifact is that small).
const MIN_ARTIFACT_SIZE: u64 = 4096;

/// How resumes are paced.
#[derive(Debug, Clone, Copy)]
pub struct DownloadOptions {
    /// Resume attempts without progress before giving up
    /// (`RetryDownloadCount`). An attempt that brings new bytes resets the
    /// count, so a long download over a flaky link still finishes.
    pub max_attempts: u32,
    /// The longest wait between attempts (`RetryPollIntervalSeconds`).
    pub max_interval: Duration,
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
    resumes: u32,
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
            resumes: 0,
        })
    }

    /// The artifact's size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes delivered so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many times the download was resumed.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    fn shown(&self) -> &str {
        strip_query(&self.url)
    }

    /// Waits and reconnects at `offset`; checks that the server honours
    /// the range.
    fn reconnect(&mut self, cause: &str) -> io::Result<()> {
        self.body = None;
        if self.offset > self.connected_at {
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
            self.resumes += 1;
            self.connected_at = self.offset;
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
            self.reconnect(&cause)?;
        }
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
