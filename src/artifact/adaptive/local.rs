//! Finds the chunks of the new image the device already holds: the running
//! image is chunked with the index's own parameters (FastCDC, the same
//! alignment) and each chunk's SHA-256 looked up among the index's; the
//! partition being written is checked chunk by chunk at each chunk's own
//! offset. A chunk found here is still re-hashed when it is used, because
//! the running root file system may have been written to since.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::{LocalLayout, LocalSource};
use crate::artifact::chunk_index::ChunkIndex;
use crate::artifact::chunking::Chunker;

/// The key chunks are looked up by: the first half of the SHA-256. Half
/// the memory of the whole hash; a collision only costs a re-hash that
/// fails and a fetch, never a wrong byte.
type Key = [u8; 16];

fn key(hash: &[u8; 32]) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&hash[..16]);
    k
}

/// The local copies found for the chunks of one index.
pub(super) struct LocalChunks {
    files: Vec<File>,
    names: Vec<String>,
    /// Per chunk of the index: the file (index into `files`) and offset of
    /// bytes that hashed to the chunk's SHA-256 when looked for.
    at: Vec<Option<(u8, u64)>>,
    /// Bytes read while looking, for the log.
    pub(super) scanned: u64,
}

impl LocalChunks {
    /// Looks in `sources` for the chunks of `index`. A source that cannot
    /// be opened or read is skipped with a warning: the chunks are then
    /// fetched, the install does not fail for it.
    pub(super) fn find(index: &ChunkIndex, sources: &[LocalSource]) -> LocalChunks {
        let mut local = LocalChunks {
            files: Vec::new(),
            names: Vec::new(),
            at: vec![None; index.chunks.len()],
            scanned: 0,
        };
        for source in sources.iter().take(usize::from(u8::MAX)) {
            let file = match File::open(&source.path) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!(
                        "adaptive install: cannot read {}: {e}; its chunks will be fetched",
                        source.path.display()
                    );
                    continue;
                }
            };
            let n = local.files.len() as u8;
            let found = match source.layout {
                LocalLayout::Scan => local.scan(n, &file, &source.path, index),
                LocalLayout::InPlace => local.in_place(n, &file, index),
            };
            if let Err(e) = found {
                log::warn!(
                    "adaptive install: reading {}: {e}; its chunks will be fetched",
                    source.path.display()
                );
            }
            local.files.push(file);
            local.names.push(source.path.display().to_string());
        }
        local
    }

    /// Whether chunk `i` was found on the device.
    pub(super) fn has(&self, i: usize) -> bool {
        self.at.get(i).is_some_and(Option::is_some)
    }

    pub(super) fn count(&self) -> usize {
        self.at.iter().filter(|a| a.is_some()).count()
    }

    /// Reads chunk `i` into `buf` (`len` bytes) and checks its hash.
    /// `Ok(false)`: not found, short, or the bytes changed since.
    pub(super) fn read(&self, i: usize, sha256: &[u8; 32], buf: &mut Vec<u8>, len: u32) -> bool {
        let Some(Some((file, offset))) = self.at.get(i).copied() else {
            return false;
        };
        let Some(f) = self.files.get(usize::from(file)) else {
            return false;
        };
        // Grows (zero-filling) only past the buffer's last length.
        buf.resize(len as usize, 0);
        if let Err(e) = f.read_exact_at(buf, offset) {
            log::warn!(
                "adaptive install: {} at byte {offset}: {e}",
                self.names[usize::from(file)]
            );
            return false;
        }
        let ok = <[u8; 32]>::from(Sha256::digest(&buf[..])) == *sha256;
        if !ok {
            log::warn!(
                "adaptive install: chunk {i} at byte {offset} of {} changed since it was found; fetching it",
                self.names[usize::from(file)]
            );
        }
        ok
    }

    /// Chunks the image in `file` as the writer chunked the new one and
    /// notes where each chunk the index lists was found.
    fn scan(&mut self, n: u8, file: &File, path: &Path, index: &ChunkIndex) -> io::Result<()> {
        let mut wanted: HashMap<Key, Option<u64>> = HashMap::new();
        for (i, c) in index.chunks.iter().enumerate() {
            if self.at[i].is_none() {
                wanted.insert(key(&c.sha256), None);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let size = image_size(file)?;
        log::info!(
            "adaptive install: looking for chunks in {} ({size} bytes)",
            path.display()
        );
        let chunker = Chunker::new(index.params);
        let mut offset = 0u64;
        // `&File` reads from the file's position, which `image_size` left
        // at 0.
        let mut reader = file.take(size);
        chunker.for_each_chunk(&mut reader, |chunk| -> io::Result<()> {
            let hash: [u8; 32] = Sha256::digest(chunk).into();
            if let Some(slot) = wanted.get_mut(&key(&hash))
                && slot.is_none()
            {
                *slot = Some(offset);
            }
            offset += chunk.len() as u64;
            Ok(())
        })?;
        self.scanned += offset;
        for (i, c) in index.chunks.iter().enumerate() {
            if self.at[i].is_none()
                && let Some(Some(at)) = wanted.get(&key(&c.sha256))
            {
                self.at[i] = Some((n, *at));
            }
        }
        Ok(())
    }

    /// Checks each chunk not found yet at its own offset in `file`.
    fn in_place(&mut self, n: u8, file: &File, index: &ChunkIndex) -> io::Result<()> {
        let size = device_size(file)?;
        let mut buf = Vec::new();
        let mut offset = 0u64;
        for (i, c) in index.chunks.iter().enumerate() {
            let end = offset + u64::from(c.len);
            if self.at[i].is_none() && end <= size {
                buf.resize(c.len as usize, 0);
                file.read_exact_at(&mut buf, offset)?;
                self.scanned += u64::from(c.len);
                if <[u8; 32]>::from(Sha256::digest(&buf)) == c.sha256 {
                    self.at[i] = Some((n, offset));
                }
            }
            offset = end;
        }
        Ok(())
    }
}

/// The length of a file or block device (whose metadata says 0).
fn device_size(file: &File) -> io::Result<u64> {
    let mut handle = file;
    let size = handle.seek(SeekFrom::End(0))?;
    handle.seek(SeekFrom::Start(0))?;
    Ok(size)
}

/// How much of a partition to chunk: the ext2/3/4 file system's own size
/// when there is one (a partition is often larger than the image written
/// to it), else the whole device.
fn image_size(file: &File) -> io::Result<u64> {
    let device = device_size(file)?;
    let mut sb = [0u8; 1024];
    if device < 2048 || file.read_exact_at(&mut sb, 1024).is_err() {
        return Ok(device);
    }
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Ok(device);
    }
    let log_block = u32_at(0x18);
    if log_block > 6 {
        return Ok(device);
    }
    let mut blocks = u64::from(u32_at(0x04));
    // INCOMPAT_64BIT: the high half of the block count is in use.
    if u32_at(0x60) & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    let size = blocks.saturating_mul(1024u64 << log_block);
    Ok(if size == 0 { device } else { size.min(device) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::chunk_index::ChunkRecord;
    use crate::artifact::chunking::ChunkParams;
    use crate::artifact::chunking::noise;
    use crate::artifact::compression::Compression;
    use std::io::Write;

    fn index_of(data: &[u8]) -> ChunkIndex {
        let params = ChunkParams::for_average(16 << 10).unwrap();
        let mut chunks = Vec::new();
        let mut offset = 100;
        Chunker::new(params)
            .for_each_chunk(data, |c| -> io::Result<()> {
                chunks.push(ChunkRecord {
                    frame_offset: offset,
                    frame_len: 10,
                    len: c.len() as u32,
                    sha256: Sha256::digest(c).into(),
                });
                offset += 10;
                Ok(())
            })
            .unwrap();
        ChunkIndex {
            compression: Compression::Zstd,
            params,
            payload_size: data.len() as u64,
            header_frame_len: 100,
            trailer_frame_offset: offset,
            trailer_frame_len: 10,
            chunks,
        }
    }

    fn file_with(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        File::create(&path).unwrap().write_all(data).unwrap();
        path
    }

    #[test]
    fn chunks_are_found_in_a_shifted_copy_and_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let new = noise(1 << 20, 3);
        // The old image: the new one with two blocks inserted near the
        // start (content-defined cuts resynchronise after them; file systems
        // move whole blocks) and its end replaced.
        let mut old = noise(8192, 9);
        old.splice(0..0, new[..4096].iter().copied());
        old.extend_from_slice(&new[4096..700 << 10]);
        old.extend_from_slice(&noise(300 << 10, 11));
        let index = index_of(&new);
        let running = file_with(dir.path(), "a", &old);
        let local = LocalChunks::find(
            &index,
            &[LocalSource {
                path: running.clone(),
                layout: LocalLayout::Scan,
            }],
        );
        let found = local.count();
        assert!(
            found > index.chunks.len() / 2,
            "{found} of {}",
            index.chunks.len()
        );
        assert!(found < index.chunks.len());
        let mut buf = Vec::new();
        for (i, c) in index.chunks.iter().enumerate() {
            assert_eq!(local.read(i, &c.sha256, &mut buf, c.len), local.has(i));
        }

        // The target holds the new image's start (which the running image
        // lacks) and its end at their places.
        let mut partial = vec![0u8; new.len()];
        partial[..100 << 10].copy_from_slice(&new[..100 << 10]);
        partial[600 << 10..].copy_from_slice(&new[600 << 10..]);
        let target = file_with(dir.path(), "b", &partial);
        let both = LocalChunks::find(
            &index,
            &[
                LocalSource {
                    path: running,
                    layout: LocalLayout::Scan,
                },
                LocalSource {
                    path: target,
                    layout: LocalLayout::InPlace,
                },
            ],
        );
        assert_eq!(both.count(), index.chunks.len());
    }

    #[test]
    fn a_chunk_changed_after_it_was_found_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(256 << 10, 5);
        let index = index_of(&data);
        let path = file_with(dir.path(), "a", &data);
        let local = LocalChunks::find(
            &index,
            &[LocalSource {
                path: path.clone(),
                layout: LocalLayout::Scan,
            }],
        );
        assert_eq!(local.count(), index.chunks.len());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"changed", 10).unwrap();
        let c = &index.chunks[0];
        let mut buf = Vec::new();
        assert!(!local.read(0, &c.sha256, &mut buf, c.len));
        let c = &index.chunks[1];
        assert!(local.read(1, &c.sha256, &mut buf, c.len));
    }

    #[test]
    fn a_missing_source_is_skipped() {
        let data = noise(64 << 10, 5);
        let index = index_of(&data);
        let local = LocalChunks::find(
            &index,
            &[LocalSource {
                path: "/nonexistent/partition".into(),
                layout: LocalLayout::Scan,
            }],
        );
        assert_eq!(local.count(), 0);
    }

    #[test]
    fn the_scan_stops_at_the_ext_file_system_end() {
        let dir = tempfile::tempdir().unwrap();
        // A fake ext superblock: 64 blocks of 1 KiB, in a 1 MiB partition.
        let mut part = vec![0u8; 1 << 20];
        part[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        part[1024 + 4..1024 + 8].copy_from_slice(&64u32.to_le_bytes());
        let path = file_with(dir.path(), "p", &part);
        assert_eq!(image_size(&File::open(&path).unwrap()).unwrap(), 64 << 10);
        let plain = file_with(dir.path(), "q", &noise(5000, 1));
        assert_eq!(image_size(&File::open(&plain).unwrap()).unwrap(), 5000);
    }
}
