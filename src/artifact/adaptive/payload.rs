//! The payload of an adaptive install as one `Read`: the decoded inner tar
//! stream of the data member (tar header, image, trailer), assembled in
//! order from chunks the device holds and frames fetched by range. Every
//! chunk is checked against its SHA-256 from the signed index before it is
//! handed on; the reader above still hashes the whole image against the
//! manifest. Whatever goes wrong (a refused range, a frame that does not
//! match, a connection that keeps breaking) continues with the full stream
//! from the first frame not yet handed on: frames are independent, so the
//! decoder can start at any frame boundary (docs/artifacts.md, "Adaptive
//! installs").

use std::io::{self, Read};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use super::fetch_plan::{self, Frames, Request};
use super::local::LocalChunks;
use super::{AdaptiveReport, LocalSource, SharedRanges, SharedStream};
use crate::artifact::chunk_index::ChunkIndex;
use crate::artifact::compression::Compression;

/// The header and trailer frames decode to a few blocks of 512 bytes.
const MAX_EDGE_FRAME: u64 = 64 << 10;
/// Re-asks of one request that bring no new frame before the install goes
/// on with the full stream.
const MAX_RETRIES: u32 = 3;
/// Progress lines: one per this share of the frames.
const PROGRESS_STEPS: usize = 10;

/// An open range request: its body, the next frame it delivers, and the
/// last.
struct Open {
    body: Box<dyn Read>,
    next: usize,
    last: usize,
}

pub struct AdaptivePayload<'i> {
    member: String,
    compression: Compression,
    index: &'i ChunkIndex,
    frames: Frames,
    /// Offset of the data member's content in the artifact.
    data_start: u64,
    ranges: SharedRanges,
    local: LocalChunks,
    requests: Vec<Request>,
    next_request: usize,
    /// The next frame to hand on.
    frame: usize,
    open: Option<Open>,
    retries: u32,
    out: Vec<u8>,
    pos: usize,
    raw: Vec<u8>,
    /// The full stream, decoded, once the adaptive path gave up.
    fallback: Option<Box<dyn Read>>,
    report: AdaptiveReport,
    started: Instant,
    reported: bool,
}

impl<'i> AdaptivePayload<'i> {
    /// Finds the local chunks and plans the requests. `data_start` is the
    /// file offset of the data member's first byte.
    pub fn new(
        member: &str,
        compression: Compression,
        index: &'i ChunkIndex,
        data_start: u64,
        ranges: SharedRanges,
        sources: &[LocalSource],
    ) -> AdaptivePayload<'i> {
        let started = Instant::now();
        let mut spans = Vec::with_capacity(index.chunks.len() + 2);
        spans.push((0, u64::from(index.header_frame_len)));
        spans.extend(
            index
                .chunks
                .iter()
                .map(|c| (c.frame_offset, u64::from(c.frame_len))),
        );
        spans.push((
            index.trailer_frame_offset,
            u64::from(index.trailer_frame_len),
        ));
        let frames = Frames { spans };
        let local = LocalChunks::find(index, sources);
        let last = frames.spans.len() - 1;
        let needed = |f: usize| f == 0 || f == last || !local.has(f - 1);
        let requests = fetch_plan::plan(&frames, &needed);
        let artifact_size = ranges.borrow().total();
        let missing: u64 = (1..last)
            .filter(|&f| needed(f))
            .map(|f| frames.spans[f].1)
            .sum();
        log::info!(
            "adaptive install: {} of {} chunks found on the device ({} bytes read in {:.1} s); fetching {missing} bytes of frames in {} requests",
            local.count(),
            index.chunks.len(),
            local.scanned,
            started.elapsed().as_secs_f64(),
            requests.len()
        );
        AdaptivePayload {
            member: member.to_string(),
            compression,
            index,
            frames,
            data_start,
            ranges,
            local,
            requests,
            next_request: 0,
            frame: 0,
            open: None,
            retries: 0,
            out: Vec::new(),
            pos: 0,
            raw: Vec::new(),
            fallback: None,
            report: AdaptiveReport {
                artifact_size,
                chunks: index.chunks.len() as u64,
                ..AdaptiveReport::default()
            },
            started,
            reported: false,
        }
    }

    /// What the install did so far.
    pub fn report(&self) -> AdaptiveReport {
        let mut r = self.report.clone();
        r.fetched = self.ranges.borrow().received();
        r
    }

    fn last_frame(&self) -> usize {
        self.frames.spans.len() - 1
    }

    /// Fills `out` with the next frame's decoded bytes. Ok(false): done.
    fn next_frame(&mut self) -> Result<bool, String> {
        let f = self.frame;
        if f > self.last_frame() {
            return Ok(false);
        }
        let chunk = (1..self.last_frame()).contains(&f).then(|| f - 1);
        if let Some(i) = chunk
            && self.local.has(i)
            && self.open.as_ref().is_none_or(|o| o.next != f)
        {
            let c = &self.index.chunks[i];
            if self.local.read(i, &c.sha256, &mut self.out, c.len) {
                self.report.local_chunks += 1;
                self.report.local_bytes += u64::from(c.len);
                self.frame += 1;
                return Ok(true);
            }
            self.report.local_mismatches += 1;
        }
        self.fetch_frame(f)?;
        self.frame += 1;
        Ok(true)
    }

    /// Reads frame `f` from the open request, opening the planned one (or
    /// one for this frame alone) when none delivers it.
    fn fetch_frame(&mut self, f: usize) -> Result<(), String> {
        loop {
            if self.open.as_ref().is_none_or(|o| o.next != f) {
                self.open_request(f)?;
            }
            let Some(open) = self.open.as_mut() else {
                return Err("no request open".into());
            };
            let (_, len) = self.frames.spans[f];
            self.raw.resize(len as usize, 0);
            match open.body.read_exact(&mut self.raw) {
                Ok(()) => {
                    open.next += 1;
                    if open.next > open.last {
                        self.open = None;
                    }
                    self.retries = 0;
                    return self.decode(f);
                }
                Err(e) => {
                    self.open = None;
                    self.retries += 1;
                    if self.retries > MAX_RETRIES {
                        return Err(format!(
                            "the range request for frame {f} broke {MAX_RETRIES} times ({e})"
                        ));
                    }
                    log::warn!(
                        "adaptive install: the range request broke at frame {f} ({e}); asking again"
                    );
                }
            }
        }
    }

    /// Opens the request that starts at frame `f`, or that a broken one
    /// left at `f`, or one for `f` alone (a local chunk that changed).
    fn open_request(&mut self, f: usize) -> Result<(), String> {
        while self
            .requests
            .get(self.next_request)
            .is_some_and(|r| r.last < f)
        {
            self.next_request += 1;
        }
        let last = match self.requests.get(self.next_request) {
            Some(r) if r.first <= f => r.last,
            _ => f,
        };
        let (start, end) = self.frames.span(f, last);
        let opened = self
            .ranges
            .borrow_mut()
            .open_range(self.data_start + start, self.data_start + end);
        self.report.requests += 1;
        match opened {
            Ok(Some(body)) => {
                self.open = Some(Open {
                    body,
                    next: f,
                    last,
                });
                Ok(())
            }
            Ok(None) => Err("the server stopped answering range requests".into()),
            Err(e) => Err(format!("asking for bytes {start}..{end}: {e}")),
        }
    }

    /// Decodes the fetched frame `f` (in `raw`) into `out` and checks it.
    fn decode(&mut self, f: usize) -> Result<(), String> {
        let chunk = (1..self.last_frame()).contains(&f).then(|| f - 1);
        let cap = match chunk {
            Some(i) => u64::from(self.index.chunks[i].len),
            None => MAX_EDGE_FRAME,
        };
        self.out.clear();
        let decoded = self
            .compression
            .decoder(&self.member, &self.raw[..])
            .map_err(|e| e.to_string())?
            .take(cap + 1)
            .read_to_end(&mut self.out);
        if let Err(e) = decoded {
            return Err(format!("frame {f}: {e}"));
        }
        match chunk {
            Some(i) => {
                let c = &self.index.chunks[i];
                if self.out.len() as u64 != u64::from(c.len)
                    || <[u8; 32]>::from(Sha256::digest(&self.out)) != c.sha256
                {
                    return Err(format!(
                        "chunk {i}: the fetched frame does not match the chunk index"
                    ));
                }
            }
            None if self.out.len() as u64 > MAX_EDGE_FRAME => {
                return Err(format!("frame {f}: larger than {MAX_EDGE_FRAME} bytes"));
            }
            None => {}
        }
        Ok(())
    }

    /// Goes on with the full stream from frame `self.frame`.
    fn fall_back(&mut self, why: String) -> io::Result<()> {
        let (offset, _) = self.frames.spans[self.frame.min(self.last_frame())];
        let data_len = self.index.data_len();
        log::warn!(
            "adaptive install: {why}; going on with the full download from byte {} of the artifact",
            self.data_start + offset
        );
        self.open = None;
        {
            let mut ranges = self.ranges.borrow_mut();
            ranges.seek_stream(self.data_start + offset);
            ranges.stream_rest();
        }
        let stream = SharedStream(self.ranges.clone()).take(data_len - offset);
        let decoder = self
            .compression
            .decoder(&self.member, stream)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.report.fell_back = Some(why);
        self.fallback = Some(decoder);
        Ok(())
    }

    fn progress(&self) {
        let n = self.frames.spans.len();
        let step = (n / PROGRESS_STEPS).max(1);
        if self.frame.is_multiple_of(step) && self.frame > 0 && self.frame < n {
            log::info!(
                "adaptive install: {} % of the image, {} bytes fetched",
                self.frame * 100 / n,
                self.ranges.borrow().received()
            );
        }
    }

    fn log_report(&mut self) {
        if self.reported {
            return;
        }
        self.reported = true;
        let r = self.report();
        let share = |n: u64| 100.0 * n as f64 / r.artifact_size.max(1) as f64;
        log::info!(
            "adaptive install: fetched {} of {} bytes ({:.1} %) in {} range requests; {} of {} chunks ({} bytes) from the device{}; {:.1} s",
            r.fetched,
            r.artifact_size,
            share(r.fetched),
            r.requests,
            r.local_chunks,
            r.chunks,
            r.local_bytes,
            match &r.fell_back {
                Some(why) => format!(", then the full stream ({why})"),
                None => String::new(),
            },
            self.started.elapsed().as_secs_f64()
        );
    }
}

impl Read for AdaptivePayload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(stream) = self.fallback.as_mut() {
                let n = stream.read(buf)?;
                if n == 0 {
                    self.log_report();
                }
                return Ok(n);
            }
            if self.pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.pos);
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            // `out` is not cleared here: each frame sets its length, and a
            // local chunk then overwrites the buffer in place rather than
            // zero-filling it first (a byte loop at `opt-level = "z"`, on
            // the bytes of almost every chunk).
            self.pos = 0;
            match self.next_frame() {
                Ok(true) => self.progress(),
                Ok(false) => {
                    self.out.clear();
                    self.log_report();
                    return Ok(0);
                }
                Err(why) => {
                    self.out.clear();
                    self.fall_back(why)?;
                }
            }
        }
    }
}

#[cfg(all(test, feature = "writer"))]
mod tests {
    use super::*;
    use crate::artifact::adaptive::{LocalLayout, RangeSource};
    use crate::artifact::chunked_writer::{FramedFile, write_frames};
    use crate::artifact::chunking::ChunkParams;
    use crate::artifact::chunking::noise;
    use std::cell::RefCell;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;
    use std::rc::Rc;

    /// The data member in memory, answering ranges until `ranges_for`
    /// requests were made (then 200s: `None`).
    struct Memory {
        data: Vec<u8>,
        pos: u64,
        requests: usize,
        ranges_for: usize,
        received: u64,
    }

    impl Read for Memory {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let rest = &self.data[self.pos as usize..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n as u64;
            self.received += n as u64;
            Ok(n)
        }
    }

    impl RangeSource for Memory {
        fn total(&self) -> u64 {
            self.data.len() as u64
        }
        fn ranges_supported(&self) -> bool {
            self.requests < self.ranges_for
        }
        fn stream_rest(&mut self) {}
        fn stream_until(&mut self, _end: u64) {}
        fn seek_stream(&mut self, pos: u64) {
            self.pos = pos;
        }
        fn open_range(&mut self, start: u64, end: u64) -> io::Result<Option<Box<dyn Read>>> {
            self.requests += 1;
            if self.requests > self.ranges_for {
                return Ok(None);
            }
            let bytes = self.data[start as usize..end as usize].to_vec();
            self.received += bytes.len() as u64;
            Ok(Some(Box::new(io::Cursor::new(bytes))))
        }
        fn received(&self) -> u64 {
            self.received
        }
    }

    /// A chunked zstd data member of `image`, its index, and the inner tar
    /// a full install decodes from it.
    fn framed(dir: &std::path::Path, image: &[u8]) -> (Vec<u8>, ChunkIndex, Vec<u8>) {
        let path = dir.join("image");
        std::fs::write(&path, image).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("rootfs.img").unwrap();
        header.set_size(image.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar_header = [0u8; 512];
        tar_header.copy_from_slice(header.as_bytes());
        let sha256: [u8; 32] = Sha256::digest(image).into();
        let mut out = tempfile::tempfile().unwrap();
        let index = write_frames(
            Compression::Zstd,
            ChunkParams::for_average(16 << 10).unwrap(),
            &FramedFile {
                path: &path,
                tar_header: &tar_header,
                size: image.len() as u64,
                sha256: &sha256,
            },
            &out,
        )
        .unwrap();
        out.flush().unwrap();
        out.seek(SeekFrom::Start(0)).unwrap();
        let mut data = Vec::new();
        out.read_to_end(&mut data).unwrap();
        data.truncate(index.data_len() as usize);
        let mut decoded = Vec::new();
        Compression::Zstd
            .decoder("data", &data[..])
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        (data, index, decoded)
    }

    fn memory(data: &[u8], ranges_for: usize) -> Rc<RefCell<Memory>> {
        Rc::new(RefCell::new(Memory {
            data: data.to_vec(),
            pos: 0,
            requests: 0,
            ranges_for,
            received: 0,
        }))
    }

    #[test]
    fn a_local_chunk_changed_after_the_scan_is_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let image = noise(1 << 20, 4);
        let (data, index, decoded) = framed(dir.path(), &image);
        let running = dir.path().join("running");
        std::fs::write(&running, &image).unwrap();
        let source = memory(&data, usize::MAX);
        let shared: SharedRanges = source.clone();
        let mut payload = AdaptivePayload::new(
            "data/0000.tar.zst",
            Compression::Zstd,
            &index,
            0,
            shared,
            &[LocalSource {
                path: running.clone(),
                layout: LocalLayout::Scan,
            }],
        );
        // The running image changes under the install: chunk 3.
        let at: u64 = index.chunks[..3].iter().map(|c| u64::from(c.len)).sum();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&running)
            .unwrap();
        f.write_all_at(b"changed", at + 100).unwrap();
        let mut got = Vec::new();
        payload.read_to_end(&mut got).unwrap();
        assert!(got == decoded);
        let report = payload.report();
        assert_eq!(report.local_mismatches, 1);
        assert_eq!(report.local_chunks, index.chunks.len() as u64 - 1);
        // The tar header frame, chunk 3 alone, the trailer.
        assert_eq!(report.requests, 3);
        assert!(report.fell_back.is_none());
    }

    #[test]
    fn ranges_refused_part_way_continue_with_the_stream_from_that_frame() {
        let dir = tempfile::tempdir().unwrap();
        let image = noise(1 << 20, 5);
        let (data, index, decoded) = framed(dir.path(), &image);
        // Nothing local; every other 64 KiB of the running image matches.
        let mut other = noise(1 << 20, 6);
        for k in (0..16).step_by(2) {
            let r = k << 16..(k + 1) << 16;
            other[r.clone()].copy_from_slice(&image[r]);
        }
        let running = dir.path().join("running");
        std::fs::write(&running, &other).unwrap();
        let source = memory(&data, 3);
        let shared: SharedRanges = source.clone();
        let mut payload = AdaptivePayload::new(
            "data/0000.tar.zst",
            Compression::Zstd,
            &index,
            0,
            shared,
            &[LocalSource {
                path: running,
                layout: LocalLayout::Scan,
            }],
        );
        let mut got = Vec::new();
        payload.read_to_end(&mut got).unwrap();
        assert!(got == decoded);
        let report = payload.report();
        assert!(report.fell_back.is_some(), "{report:?}");
        assert!(report.requests >= 4, "{report:?}");
    }
}
