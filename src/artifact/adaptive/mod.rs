//! Adaptive installs of chunked rootfs-image artifacts: the payload is
//! assembled from chunks the device already holds and frames fetched with
//! HTTP `Range` requests, instead of decoding the whole data member
//! (docs/artifacts.md, "Adaptive installs").
//!
//! The reader (`reader.rs`) takes this path when the artifact has a chunk
//! index, the source can answer ranges ([`RangeSource`]) and the installer
//! names local sources ([`LocalSource`]). What comes out is the same
//! decoded inner tar stream a full install decodes, so the payload's
//! SHA-256 against the signed manifest, the installer and the power-loss
//! rules are exactly those of a full install.
//!
//! - `local.rs` finds the chunks the device holds;
//! - `fetch_plan.rs` groups the missing frames into bounded range requests;
//! - `payload.rs` is the stream: local chunks, fetched frames, and the
//!   fall back to the full stream.

mod fetch_plan;
mod local;
mod payload;

use std::cell::RefCell;
use std::io::{self, Read};
use std::path::PathBuf;
use std::rc::Rc;

pub use payload::AdaptivePayload;

/// An artifact that can be read from the start and also asked for byte
/// ranges: an HTTP(S) download whose server answers `Range`.
pub trait RangeSource: Read {
    /// The artifact's length in bytes.
    fn total(&self) -> u64;
    /// Whether the server answered a range request with 206 so far.
    fn ranges_supported(&self) -> bool;
    /// The sequential stream will be read to its end: fetch the rest in
    /// one request rather than in bounded windows.
    fn stream_rest(&mut self);
    /// The sequential stream need not fetch beyond `end` before it is told
    /// more (the reader knows where the data member's content starts).
    fn stream_until(&mut self, end: u64);
    /// The sequential stream continues at `pos` (a later offset): the
    /// adaptive path gave up and the rest is decoded from there.
    fn seek_stream(&mut self, pos: u64);
    /// Bytes `start..end` of the artifact in one request. `Ok(None)` when
    /// the server does not answer with that range (no `Range` support).
    fn open_range(&mut self, start: u64, end: u64) -> io::Result<Option<Box<dyn Read>>>;
    /// Bytes received so far over every request, for the report.
    fn received(&self) -> u64;
}

/// The shared handle the reader and the adaptive payload both use: the
/// reader reads the artifact's head through it, the payload asks ranges.
pub type SharedRanges = Rc<RefCell<dyn RangeSource>>;

/// Reads the sequential stream of a [`SharedRanges`]; never borrowed
/// across a call, so range requests can be made between reads.
pub struct SharedStream(pub SharedRanges);

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// Where an install reads the artifact from.
pub struct ArtifactSource {
    pub stream: Box<dyn Read>,
    /// Set when the same artifact can also be read by ranges.
    pub ranges: Option<SharedRanges>,
}

impl ArtifactSource {
    /// A download that may also answer ranges: the reader reads the
    /// stream through the same handle the adaptive path asks ranges of.
    pub fn ranged(source: impl RangeSource + 'static) -> Self {
        let shared: SharedRanges = Rc::new(RefCell::new(source));
        ArtifactSource {
            stream: Box::new(SharedStream(shared.clone())),
            ranges: Some(shared),
        }
    }

    /// A stream only (a local file, stdin): always a full install.
    pub fn stream(stream: Box<dyn Read>) -> Self {
        ArtifactSource {
            stream,
            ranges: None,
        }
    }
}

/// A local copy of an earlier image the installer can offer chunks from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSource {
    pub path: PathBuf,
    pub layout: LocalLayout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalLayout {
    /// Another image (the running root file system): chunked with the
    /// index's parameters to find equal chunks anywhere in it.
    Scan,
    /// The partition being written: after an interrupted attempt it holds
    /// chunks of this image at their own offsets, so each chunk is looked
    /// for at its place only. Read ahead of the writes, never behind them.
    InPlace,
}

/// What an adaptive install did, for the log and the deployment log.
#[derive(Debug, Default, Clone)]
pub struct AdaptiveReport {
    /// Bytes received for the artifact, head and ranges.
    pub fetched: u64,
    /// The full artifact's length.
    pub artifact_size: u64,
    pub requests: u64,
    pub chunks: u64,
    pub local_chunks: u64,
    pub local_bytes: u64,
    /// Local chunks whose bytes did not match their hash when read.
    pub local_mismatches: u64,
    /// Set when the install went on with the full stream, and why.
    pub fell_back: Option<String>,
}
