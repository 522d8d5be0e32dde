//! The data member of a chunked rootfs-image artifact (docs/artifacts.md,
//! "Chunked rootfs-image artifacts"): the inner tar written as independent
//! compressed frames, one for the tar header, one per content-defined chunk
//! of the image, one for the padding and end-of-archive blocks. Any gzip or
//! zstd decoder reads the frames as one stream, so every client installs
//! the artifact as a plain full update.
//!
//! The header (which the manifest and signature cover) carries the chunk
//! index with the frame offsets, so the frames are written first, to a
//! temporary file, and copied into the artifact after the header.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::ArtifactError;
use super::chunk_index::{self, ChunkIndex, ChunkRecord};
use super::chunking::{ChunkParams, Chunker};
use super::compression::Compression;
use super::manifest::Digest;

/// Checks that `compression` can be framed. gzip members and zstd frames
/// concatenate into one valid stream for every decoder; the other choices
/// are refused rather than silently changed.
pub fn check_compression(compression: Compression) -> Result<(), ArtifactError> {
    match compression {
        Compression::Gzip | Compression::Zstd => Ok(()),
        Compression::Xz => Err(ArtifactError::format(
            "chunked artifacts are written with gzip (any Mender client) or zstd (Mender 3.5 and later), not xz: xz blocks per chunk would cost more than they save",
        )),
        Compression::None => Err(ArtifactError::format(
            "chunked artifacts are written with gzip (any Mender client) or zstd (Mender 3.5 and later), not uncompressed: a device would fetch its missing chunks uncompressed",
        )),
    }
}

/// The block size of an ext2/3/4 image (its superblock at byte 1024:
/// `s_log_block_size` at +24, magic 0xEF53 at +56); None for anything else.
/// Read by hand: two fields, where a file system crate would be far larger.
pub fn ext_block_size(path: &Path) -> io::Result<Option<u32>> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path)?;
    let mut sb = [0u8; 64];
    file.seek(SeekFrom::Start(1024))?;
    if super::compression::read_up_to(&mut file, &mut sb)? < sb.len() {
        return Ok(None);
    }
    if sb[56..58] != [0x53, 0xef] {
        return Ok(None);
    }
    let log = u32::from_le_bytes([sb[24], sb[25], sb[26], sb[27]]);
    Ok((log <= 6).then(|| 1024u32 << log))
}

/// The chunk alignment for an image: its file system's block size when
/// that is smaller than 4 KiB (mke2fs makes 1 KiB blocks below 512 MiB,
/// and files then move by 1 KiB), else 4 KiB (docs/measured.md, "Chunked
/// artifacts").
pub fn align_for(path: &Path, params: ChunkParams) -> Result<ChunkParams, ArtifactError> {
    let block = ext_block_size(path)
        .map_err(|e| ArtifactError::io(format!("reading {}", path.display()), e))?;
    match block {
        Some(b) if b < super::chunking::ALIGN => {
            params.aligned_to(b).map_err(ArtifactError::format)
        }
        _ => Ok(params),
    }
}

/// What the frames hold: the payload file as the writer hashed it.
pub struct FramedFile<'a> {
    pub path: &'a Path,
    /// The inner tar header for the file, as a non-chunked writer writes it.
    pub tar_header: &'a [u8; 512],
    pub size: u64,
    pub sha256: &'a Digest,
}

/// Writes the frames of the data member to `out` (at its start) and returns
/// the chunk index that describes them.
pub fn write_frames(
    compression: Compression,
    params: ChunkParams,
    file: &FramedFile<'_>,
    out: &File,
) -> Result<ChunkIndex, ArtifactError> {
    check_compression(compression)?;
    let path = file.path;
    let out_err = |e: io::Error| ArtifactError::io("writing the chunk frames", e);
    let mut sink = BufWriter::with_capacity(1 << 20, out);
    let mut frame = Vec::new();
    compress(compression, file.tar_header, &mut frame).map_err(out_err)?;
    sink.write_all(&frame).map_err(out_err)?;
    let header_frame_len = frame.len() as u32;

    let mut offset = u64::from(header_frame_len);
    let mut chunks = Vec::new();
    let mut whole = Sha256::new();
    let mut total: u64 = 0;
    let input = File::open(path)
        .map_err(|e| ArtifactError::io(format!("reading {}", path.display()), e))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut batch = Batch::default();
    let mut emit = |batch: &mut Batch| -> io::Result<()> {
        for (frame, record) in batch.compress(compression, threads)? {
            sink.write_all(&frame)?;
            chunks.push(ChunkRecord {
                frame_offset: offset,
                ..record
            });
            offset += frame.len() as u64;
        }
        Ok(())
    };
    Chunker::new(params)
        .for_each_chunk(input, |chunk: &[u8]| -> io::Result<()> {
            whole.update(chunk);
            total += chunk.len() as u64;
            batch.chunks.push(chunk.to_vec());
            batch.bytes += chunk.len();
            if batch.bytes >= BATCH_BYTES {
                emit(&mut batch)?;
            }
            Ok(())
        })
        .and_then(|()| emit(&mut batch))
        .map_err(|e| ArtifactError::io(format!("chunking {} into frames", path.display()), e))?;
    let digest: Digest = whole.finalize().into();
    if total != file.size || digest != *file.sha256 {
        return Err(ArtifactError::format(format!(
            "{}: the file changed while the artifact was being written",
            path.display()
        )));
    }

    // The tar padding to a whole block, then the two end-of-archive blocks
    // (as tar::Builder::finish writes them).
    let tail = vec![0u8; padding(file.size) + 1024];
    compress(compression, &tail, &mut frame).map_err(out_err)?;
    sink.write_all(&frame).map_err(out_err)?;
    sink.flush().map_err(out_err)?;

    let index = ChunkIndex {
        compression,
        params,
        payload_size: total,
        header_frame_len,
        trailer_frame_offset: offset,
        trailer_frame_len: frame.len() as u32,
        chunks,
    };
    if index.encoded_len() as u64 > chunk_index::MAX_INDEX_SIZE {
        return Err(ArtifactError::format(format!(
            "{}: {} chunks need a {} byte index, over the limit of {}: choose a larger --chunk-size",
            path.display(),
            index.chunks.len(),
            index.encoded_len(),
            chunk_index::MAX_INDEX_SIZE
        )));
    }
    Ok(index)
}

/// Chunks are compressed in batches of about this many bytes, spread over
/// the cores: gzip at the default level runs at about 30 MB/s on one core.
const BATCH_BYTES: usize = 8 << 20;

/// A compressed chunk and its index record (frame offset not yet known).
type Framed = (Vec<u8>, ChunkRecord);

#[derive(Default)]
struct Batch {
    chunks: Vec<Vec<u8>>,
    bytes: usize,
}

impl Batch {
    /// Compresses and hashes the chunks on up to `threads` threads; returns
    /// each frame with its record (frame offset left 0), in order, and
    /// empties the batch.
    fn compress(&mut self, compression: Compression, threads: usize) -> io::Result<Vec<Framed>> {
        let chunks = std::mem::take(&mut self.chunks);
        self.bytes = 0;
        if chunks.is_empty() {
            return Ok(Vec::new());
        }
        let per_thread = chunks.len().div_ceil(threads.max(1));
        let groups: Vec<io::Result<Vec<Framed>>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .chunks(per_thread)
                .map(|group| {
                    s.spawn(move || {
                        group
                            .iter()
                            .map(|chunk| {
                                let mut frame = Vec::new();
                                compress(compression, chunk, &mut frame)?;
                                let record = ChunkRecord {
                                    frame_offset: 0,
                                    frame_len: frame.len() as u32,
                                    len: chunk.len() as u32,
                                    sha256: Sha256::digest(chunk).into(),
                                };
                                Ok((frame, record))
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a compression thread failed")))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(chunks.len());
        for group in groups {
            out.extend(group?);
        }
        Ok(out)
    }
}

/// One independent frame (a whole gzip member or zstd frame) into `out`.
fn compress(compression: Compression, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    let mut encoder = compression.encoder(&mut *out)?;
    encoder.write_all(data)?;
    encoder.finish()?;
    Ok(())
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_follows_small_ext4_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let params = ChunkParams::for_average(32 << 10).unwrap();
        for (log, align) in [(0u32, 1024u32), (1, 2048), (2, 4096), (4, 4096)] {
            let mut image = vec![0u8; 4096];
            image[1024 + 24..1024 + 28].copy_from_slice(&log.to_le_bytes());
            image[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xef]);
            std::fs::write(&path, &image).unwrap();
            assert_eq!(ext_block_size(&path).unwrap(), Some(1024 << log));
            assert_eq!(align_for(&path, params).unwrap().align, align);
        }
        // Not a file system, or too short to hold a superblock.
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        assert_eq!(ext_block_size(&path).unwrap(), None);
        assert_eq!(align_for(&path, params).unwrap().align, 4096);
        std::fs::write(&path, b"tiny").unwrap();
        assert_eq!(ext_block_size(&path).unwrap(), None);
    }
}
