//! Decoding the data member of a chunked artifact on several cores.
//!
//! The frames of a chunked data member (docs/artifacts.md, "Chunked
//! rootfs-image artifacts") are independent gzip members or zstd frames, and
//! the chunk index gives each one's length, so they can be decoded apart and
//! the results joined in order. One decoder thread bounds a full install of
//! a zstd artifact otherwise (docs/measured.md, "Chunked artifacts").
//!
//! The calling thread reads the frames from the member in order and groups
//! them into batches; worker threads decode batches; `read` hands out the
//! decoded bytes batch by batch, in order. Each frame must decode to the
//! length its index record says (a chunk's length; a whole number of tar
//! blocks for the header frame; at most [`MAX_EDGE_FRAME`] for either edge
//! frame), else the read fails naming the chunk.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::ArtifactError;
use super::chunk_index::ChunkIndex;
use super::compression::{Compression, read_up_to};

/// Decoded bytes queued, being decoded or being handed out: about 1 MiB.
/// A batch that is larger alone (one frame of a chunk of up to 4 MiB) is
/// let through when nothing else is in flight. The compressed frames of the
/// batches in flight are at most about as large again
/// (`chunk_index::max_frame_len`), so the decoder holds at most about
/// 2 × 1 MiB of buffers (2 × 4 MiB with the largest chunks), reused from
/// batch to batch. 2 MiB took 5.5 MiB more peak RSS in a full install of a
/// 256 MiB gzip-chunked artifact (17.9 against 12.4 MiB, `scripts/bench-install
/// 256 gzip-chunked`; the workers' allocator arenas grow with it) for no
/// speed that could be shown on 2 cores.
const IN_FLIGHT_BYTES: usize = 1 << 20;
/// Frames are grouped into batches of about this many decoded bytes, so
/// that hand-overs between threads stay few (32 KiB chunks would otherwise
/// mean 32,768 of them per GiB).
const BATCH_BYTES: usize = 128 << 10;
/// The most the header frame (the tar header of the image, with any
/// extended headers) or the trailer frame (padding and end-of-archive
/// blocks, 1.5 KiB at most as written) may decode to.
pub const MAX_EDGE_FRAME: usize = 64 << 10;
/// More threads than this gain little against the hashing and writing that
/// follow the decoder.
const MAX_THREADS: usize = 4;

/// The decoder for a data member: frame by frame when the member is
/// chunked (`index`), over all cores when there are several (on one core
/// the calling thread decodes, so that the frames are checked alike
/// everywhere); else the plain streaming decoder.
pub fn payload_decoder<'a>(
    member: &str,
    compression: Compression,
    index: Option<&'a ChunkIndex>,
    raw: Box<dyn Read + 'a>,
) -> Result<Box<dyn Read + 'a>, ArtifactError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if cores > 1 { cores.min(MAX_THREADS) } else { 0 };
    match index {
        Some(index) => Ok(Box::new(FrameDecoder::new(
            compression,
            index,
            raw,
            threads,
        ))),
        None => compression.decoder(member, raw),
    }
}

/// What a frame must decode to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The header frame: a whole number of 512-byte tar blocks.
    Blocks,
    /// A chunk: exactly its length.
    Exactly(usize),
    /// The trailer frame: whatever it holds, up to MAX_EDGE_FRAME.
    AtMost,
}

impl Expect {
    /// The most bytes the frame may decode to.
    fn room(self) -> usize {
        match self {
            Expect::Exactly(n) => n,
            Expect::Blocks | Expect::AtMost => MAX_EDGE_FRAME,
        }
    }
}

/// One frame of a batch: its place in the member and what it must become.
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// 0 the header frame, 1 + i chunk i, count + 1 the trailer frame.
    number: usize,
    /// Its compressed length, within the batch's input.
    len: usize,
    expect: Expect,
}

impl Frame {
    fn name(&self, chunk_count: usize) -> String {
        match self.number {
            0 => "the header frame".to_string(),
            n if n > chunk_count => "the trailer frame".to_string(),
            n => format!("chunk {}", n - 1),
        }
    }
}

/// Frames to decode together, and where to send the result.
struct Job {
    compression: Compression,
    chunk_count: usize,
    frames: Vec<Frame>,
    input: Vec<u8>,
    /// A buffer to decode into (reused: fresh ones cost page faults).
    output: Vec<u8>,
    room: usize,
    reply: mpsc::SyncSender<Decoded>,
}

/// A decoded batch (the buffer and how much of it is filled), and its
/// input buffer back for reuse.
struct Decoded {
    result: io::Result<(Vec<u8>, usize)>,
    input: Vec<u8>,
}

/// What the workers share: the job queue and the flag that tells them to
/// drop what is left when the reader is dropped early.
struct Shared {
    jobs: Mutex<mpsc::Receiver<Job>>,
    cancelled: AtomicBool,
}

/// A batch handed out or on its way.
struct Pending {
    result: mpsc::Receiver<Decoded>,
    /// Its share of IN_FLIGHT_BYTES.
    room: usize,
}

/// A `Read` over the decoded inner tar of a chunked data member.
pub struct FrameDecoder<'a> {
    compression: Compression,
    index: &'a ChunkIndex,
    raw: Box<dyn Read + 'a>,
    /// The next frame to read from `raw` (as Frame::number).
    next_frame: usize,
    pending: VecDeque<Pending>,
    /// Sum of `room` over `pending` and the batch in `out`.
    in_flight: usize,
    /// The batch being handed out: its first `out_len` bytes, from `out_at`.
    out: Vec<u8>,
    out_len: usize,
    out_at: usize,
    out_room: usize,
    /// Buffers of decoded and of compressed batches, for reuse.
    spare_outputs: Vec<Vec<u8>>,
    spare_inputs: Vec<Vec<u8>>,
    jobs: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// The zstd context of the calling thread when there are no workers.
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    /// A read failed: every later one fails too.
    failed: bool,
}

impl<'a> FrameDecoder<'a> {
    /// Starts `threads` workers (none: batches are decoded on the calling
    /// thread).
    pub fn new(
        compression: Compression,
        index: &'a ChunkIndex,
        raw: Box<dyn Read + 'a>,
        threads: usize,
    ) -> FrameDecoder<'a> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            jobs: Mutex::new(receiver),
            cancelled: AtomicBool::new(false),
        });
        let mut decoder = FrameDecoder {
            compression,
            index,
            raw,
            next_frame: 0,
            pending: VecDeque::new(),
            in_flight: 0,
            out: Vec::new(),
            out_len: 0,
            out_at: 0,
            out_room: 0,
            spare_outputs: Vec::new(),
            spare_inputs: Vec::new(),
            jobs: Some(sender),
            shared,
            workers: Vec::new(),
            zstd: None,
            failed: false,
        };
        for i in 0..threads {
            let shared = Arc::clone(&decoder.shared);
            let spawned = std::thread::Builder::new()
                .name(format!("frame-decoder-{i}"))
                .spawn(move || work(&shared));
            match spawned {
                Ok(handle) => decoder.workers.push(handle),
                // Fewer workers still decode everything; none means the
                // calling thread does.
                Err(e) => {
                    log::warn!("cannot start a frame decoding thread: {e}");
                    break;
                }
            }
        }
        if decoder.workers.is_empty() {
            decoder.jobs = None;
        }
        decoder
    }

    fn frame_count(&self) -> usize {
        self.index.chunks.len() + 2
    }

    fn frame(&self, number: usize) -> Frame {
        let count = self.index.chunks.len();
        let (len, expect) = match number {
            0 => (self.index.header_frame_len, Expect::Blocks),
            n if n > count => (self.index.trailer_frame_len, Expect::AtMost),
            n => {
                let c = &self.index.chunks[n - 1];
                (c.frame_len, Expect::Exactly(c.len as usize))
            }
        };
        Frame {
            number,
            len: len as usize,
            expect,
        }
    }

    /// Reads the next batch of frames from the member and queues it;
    /// false when every frame has been queued.
    fn queue_batch(&mut self) -> io::Result<bool> {
        if self.next_frame >= self.frame_count() {
            return Ok(false);
        }
        let mut frames = Vec::new();
        let mut room = 0usize;
        let mut input_len = 0usize;
        while self.next_frame < self.frame_count() {
            let frame = self.frame(self.next_frame);
            if !frames.is_empty() && room + frame.expect.room() > BATCH_BYTES {
                break;
            }
            room += frame.expect.room();
            input_len += frame.len;
            frames.push(frame);
            self.next_frame += 1;
        }
        let mut input = self.spare_inputs.pop().unwrap_or_default();
        grow(&mut input, input_len);
        let got = read_up_to(&mut self.raw, &mut input[..input_len])?;
        if got < input_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the frames end before the chunk index says",
            ));
        }
        let (reply, result) = mpsc::sync_channel(1);
        let job = Job {
            compression: self.compression,
            chunk_count: self.index.chunks.len(),
            frames,
            input,
            output: self.spare_outputs.pop().unwrap_or_default(),
            room,
            reply,
        };
        let job = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = job {
            // No workers: decode here.
            decode_batch(job, &mut self.zstd);
        }
        self.pending.push_back(Pending { result, room });
        self.in_flight += room;
        Ok(true)
    }

    /// Queues batches while they fit in IN_FLIGHT_BYTES (one always does
    /// when nothing is in flight). Without workers, one batch at a time:
    /// decoding ahead would gain nothing.
    fn fill(&mut self) -> io::Result<()> {
        loop {
            if self.next_frame >= self.frame_count() {
                return Ok(());
            }
            let next = self.frame(self.next_frame).expect.room().min(BATCH_BYTES);
            let limit = if self.workers.is_empty() {
                0
            } else {
                IN_FLIGHT_BYTES
            };
            if self.in_flight > 0 && self.in_flight + next > limit {
                return Ok(());
            }
            if !self.queue_batch()? {
                return Ok(());
            }
        }
    }

    /// Takes the next decoded batch into `out`; false at the end.
    fn next_batch(&mut self) -> io::Result<bool> {
        self.in_flight -= self.out_room;
        self.out_room = 0;
        self.spare_outputs.push(std::mem::take(&mut self.out));
        self.out_at = 0;
        self.out_len = 0;
        self.fill()?;
        let Some(pending) = self.pending.pop_front() else {
            // Every frame is decoded: the member must end with the trailer.
            let mut extra = [0u8; 1];
            if read_up_to(&mut self.raw, &mut extra)? != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the trailer frame",
                ));
            }
            return Ok(false);
        };
        let decoded = pending
            .result
            .recv()
            .map_err(|_| io::Error::other("a frame decoding thread failed"))?;
        self.spare_inputs.push(decoded.input);
        let (out, len) = decoded.result?;
        self.out = out;
        self.out_len = len;
        self.out_room = pending.room;
        // Keep the workers busy while this batch is handed out.
        self.fill()?;
        Ok(true)
    }
}

impl Read for FrameDecoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("an earlier read of the frames failed"));
        }
        while self.out_at >= self.out_len {
            match self.next_batch() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.out_len - self.out_at);
        buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
        self.out_at += n;
        Ok(n)
    }
}

impl Drop for FrameDecoder<'_> {
    /// Stops the workers: queued batches are dropped undecoded, the one
    /// being decoded finishes (a few MiB at most), and every thread is
    /// joined, so an aborted install leaves none behind.
    fn drop(&mut self) {
        self.shared.cancelled.store(true, Ordering::SeqCst);
        self.jobs = None;
        self.pending.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A worker: decodes batches until the queue closes.
fn work(shared: &Shared) {
    // One zstd context per worker, reused for every frame.
    let mut zstd = None;
    loop {
        let job = {
            let jobs = shared
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            jobs.recv()
        };
        let Ok(job) = job else {
            return;
        };
        if shared.cancelled.load(Ordering::SeqCst) {
            continue;
        }
        decode_batch(job, &mut zstd);
    }
}

/// Decodes a batch and sends the result back (the reader may be gone:
/// nothing to do then).
fn decode_batch(mut job: Job, zstd: &mut Option<zstd::bulk::Decompressor<'static>>) {
    let mut output = std::mem::take(&mut job.output);
    let result = decode_frames(&job, &mut output, zstd).map(|len| (output, len));
    let _ = job.reply.send(Decoded {
        result,
        input: job.input,
    });
}

/// Decodes the frames of a batch one after the other into `out`; returns
/// the length decoded.
fn decode_frames(
    job: &Job,
    out: &mut Vec<u8>,
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> io::Result<usize> {
    grow(out, job.room);
    let mut filled = 0usize;
    let mut at = 0usize;
    for frame in &job.frames {
        let input = &job.input[at..at + frame.len];
        at += frame.len;
        let name = || frame.name(job.chunk_count);
        let room = frame.expect.room();
        let target = &mut out[filled..filled + room];
        let n = decode_frame(job.compression, input, target, zstd)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", name())))?;
        let wrong = match frame.expect {
            Expect::Exactly(len) => (n != len).then(|| format!("{n} bytes, the index says {len}")),
            Expect::Blocks => (n == 0 || n % 512 != 0)
                .then(|| format!("{n} bytes, not a whole number of 512-byte tar blocks")),
            Expect::AtMost => None,
        };
        if let Some(wrong) = wrong {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} decodes to {wrong}", name()),
            ));
        }
        filled += n;
    }
    Ok(filled)
}

/// Makes `buffer` at least `len` long. Reused buffers keep their length
/// rather than being cleared and refilled: `Vec::resize` compiles to a
/// byte-by-byte loop at the size-optimised release level, which took a
/// fifth of a chunked install's CPU time.
fn grow(buffer: &mut Vec<u8>, len: usize) {
    if buffer.len() < len {
        *buffer = vec![0u8; len];
    }
}

/// Decodes one frame into `out`; more than `out` holds is an error.
fn decode_frame(
    compression: Compression,
    input: &[u8],
    out: &mut [u8],
    zstd: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> io::Result<usize> {
    let room = out.len();
    let too_long = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decodes to more than {room} bytes"),
        )
    };
    match compression {
        Compression::Zstd => {
            let decompressor = match zstd {
                Some(d) => d,
                None => zstd.insert(zstd::bulk::Decompressor::new()?),
            };
            // One call into the whole output: no window buffer is needed,
            // and a frame that decodes to more than `out` fails. Checksums
            // are verified (libzstd's default).
            match decompressor.decompress_to_buffer(input, out) {
                Ok(n) => Ok(n),
                Err(e)
                    if e.to_string()
                        == zstd_error_name(
                            zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall,
                        ) =>
                {
                    Err(too_long())
                }
                Err(e) => Err(e),
            }
        }
        Compression::Gzip => {
            let mut decoder = flate2::bufread::MultiGzDecoder::new(input);
            let n = read_up_to(&mut decoder, out)?;
            if n == room && read_up_to(&mut decoder, &mut [0u8; 1])? != 0 {
                return Err(too_long());
            }
            Ok(n)
        }
        other => Err(io::Error::other(format!(
            "{} frames are not decoded apart",
            other.name()
        ))),
    }
}

/// libzstd's name for an error code, as the zstd crate reports errors.
fn zstd_error_name(code: zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode) -> &'static str {
    zstd::zstd_safe::get_error_name(0usize.wrapping_sub(code as usize))
}

#[cfg(all(test, feature = "writer"))]
mod tests {
    use std::time::Duration;

    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::artifact::chunked_writer::{FramedFile, write_frames};
    use crate::artifact::chunking::ChunkParams;

    /// 1.5 MiB like a file system image: noise, a repeat, zeros.
    fn image() -> Vec<u8> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut bytes: Vec<u8> = (0..(768 << 10))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 16) as u8
            })
            .collect();
        let repeat = bytes[..200 << 10].to_vec();
        bytes.extend_from_slice(&repeat);
        bytes.extend_from_slice(&vec![0u8; (568 << 10) + 333]);
        bytes
    }

    /// The data member of a chunked artifact of `image`, as the writer
    /// makes it, and its index.
    fn framed(compression: Compression, image: &[u8]) -> (Vec<u8>, ChunkIndex) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.ext4");
        std::fs::write(&path, image).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("rootfs.ext4").unwrap();
        header.set_size(image.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let out = tempfile::tempfile().unwrap();
        let index = write_frames(
            compression,
            ChunkParams::for_average(16 << 10).unwrap(),
            &FramedFile {
                path: &path,
                tar_header: header.as_bytes(),
                size: image.len() as u64,
                sha256: &Sha256::digest(image).into(),
            },
            &out,
        )
        .unwrap();
        let mut data = Vec::new();
        let mut out = out;
        std::io::Seek::rewind(&mut out).unwrap();
        out.read_to_end(&mut data).unwrap();
        (data, index)
    }

    fn decode_all(
        compression: Compression,
        index: &ChunkIndex,
        data: &[u8],
        threads: usize,
    ) -> io::Result<Vec<u8>> {
        let mut decoder = FrameDecoder::new(compression, index, Box::new(data), threads);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The error of decoding on the calling thread, the same as on workers.
    fn error_of(compression: Compression, index: &ChunkIndex, data: &[u8]) -> String {
        let [inline, workers] = [0, 2].map(|threads| {
            decode_all(compression, index, data, threads)
                .expect_err("the frames are refused")
                .to_string()
        });
        assert_eq!(inline, workers);
        workers
    }

    #[test]
    fn decodes_what_one_stream_decoder_does() {
        let image = image();
        for compression in [Compression::Gzip, Compression::Zstd] {
            let (data, index) = framed(compression, &image);
            assert!(index.chunks.len() > 20, "{} chunks", index.chunks.len());
            let mut expected = Vec::new();
            compression
                .decoder("data", &data[..])
                .unwrap()
                .read_to_end(&mut expected)
                .unwrap();
            assert_eq!(&expected[512..512 + image.len()], &image[..]);
            for threads in [0, 1, 3] {
                let got = decode_all(compression, &index, &data, threads).unwrap();
                assert!(got == expected, "{compression:?}, {threads} threads");
            }
            // Small reads see the same bytes.
            let mut decoder = FrameDecoder::new(compression, &index, Box::new(&data[..]), 2);
            let mut got = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                let n = decoder.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == expected, "{compression:?}, small reads");
        }
    }

    #[test]
    fn a_frame_of_the_wrong_length_is_refused_naming_the_chunk() {
        let image = image();
        for compression in [Compression::Gzip, Compression::Zstd] {
            let (data, index) = framed(compression, &image);
            let len = index.chunks[5].len;
            let mut longer = index.clone();
            longer.chunks[5].len += 1;
            let e = error_of(compression, &longer, &data);
            assert!(
                e.contains(&format!(
                    "chunk 5 decodes to {len} bytes, the index says {}",
                    len + 1
                )),
                "{compression:?}: {e}"
            );
            let mut shorter = index.clone();
            shorter.chunks[5].len -= 1;
            let e = error_of(compression, &shorter, &data);
            assert!(
                e.contains(&format!("chunk 5: decodes to more than {} bytes", len - 1)),
                "{compression:?}: {e}"
            );
            // A damaged frame.
            let mut damaged = data.clone();
            let c = &index.chunks[7];
            damaged[(c.frame_offset + u64::from(c.frame_len) / 2) as usize] ^= 0x55;
            let e = error_of(compression, &index, &damaged);
            assert!(e.contains("chunk 7: "), "{compression:?}: {e}");
            // Frame boundaries elsewhere than the frames.
            let mut shifted = index.clone();
            shifted.chunks[3].frame_len += 1;
            shifted.chunks[4].frame_len -= 1;
            let e = error_of(compression, &shifted, &data);
            assert!(e.contains("chunk 3: "), "{compression:?}: {e}");
            // A header frame that holds no tar block (empty: zstd decodes
            // it to nothing, gzip refuses it).
            let mut header = index.clone();
            header.header_frame_len = 0;
            header.chunks[0].frame_len += index.header_frame_len;
            let e = error_of(compression, &header, &data);
            assert!(e.contains("the header frame"), "{compression:?}: {e}");
            // Cut short, or followed by more.
            let e = decode_all(compression, &index, &data[..data.len() - 1], 2).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
            let mut longer_member = data.clone();
            longer_member.push(0);
            let e = error_of(compression, &index, &longer_member);
            assert!(e.contains("data after the trailer frame"), "{e}");
        }
    }

    #[test]
    fn dropping_the_reader_early_ends_the_threads() {
        let image = image();
        let (data, index) = framed(Compression::Zstd, &image);
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        let index: &'static ChunkIndex = Box::leak(Box::new(index));
        for read_first in [0usize, 1000, 700 << 10] {
            // Run on another thread so that a hang fails the test instead
            // of stalling it.
            let (done, finished) = mpsc::channel();
            std::thread::spawn(move || {
                let mut decoder = FrameDecoder::new(Compression::Zstd, index, Box::new(data), 3);
                assert_eq!(decoder.workers.len(), 3);
                let shared = Arc::clone(&decoder.shared);
                let mut buf = vec![0u8; read_first];
                decoder.read_exact(&mut buf).unwrap();
                drop(decoder);
                let _ = done.send(shared);
            });
            let shared = finished
                .recv_timeout(Duration::from_secs(30))
                .expect("the reader reads and drops within 30 s");
            // Every worker has let go of what they share: they have ended.
            assert_eq!(Arc::strong_count(&shared), 1, "after {read_first} bytes");
        }
    }
}
