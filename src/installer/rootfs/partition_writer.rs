//! The tuned block writer of the rootfs installer: streams one image into a
//! partition in aligned blocks, with `O_DIRECT` and on a thread of its own.
//! Separate from the A/B policy because it changes for throughput and memory
//! reasons (`docs/measured.md`), not for what gets written where.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::slot::SlotId;
use crate::crash;

/// Writes are gathered into blocks of this size (aligned offsets).
const WRITE_BLOCK: usize = 256 << 10;
/// Write-back is started every this many bytes, and the window before it is
/// waited for: the disk works while the next part decompresses, the final
/// fsync has little left to do, and no more than two windows of dirty pages
/// pile up (small devices have little RAM to spare for them).
const WRITEBACK_WINDOW: u64 = 8 << 20;
/// All the blocks there are, filled, queued or being written: each costs
/// 256 KiB on devices with little RAM.
const BLOCKS: usize = 6;

/// Most blocks in one write request. A disk's cost per request is what
/// holds back small direct writes (on a virtio disk 256 KiB requests reach
/// 1.1 GB/s, 1 MiB ones 1.6); half of all blocks keeps the other half
/// filling while a request is under way.
const MAX_BATCH: usize = BLOCKS / 2;

/// What `O_DIRECT` asks of buffer addresses, lengths and offsets: 4 KiB
/// covers the logical block sizes in use (512 B and 4 KiB).
const DIRECT_ALIGN: usize = 4096;

/// One block of the image, in memory that starts on a [`DIRECT_ALIGN`]
/// boundary so that it can go to the disk without passing through the page
/// cache.
struct Block {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Block {
    fn new() -> Self {
        let storage = vec![0u8; WRITE_BLOCK + DIRECT_ALIGN];
        let misalign = storage.as_ptr() as usize % DIRECT_ALIGN;
        Block {
            storage,
            start: (DIRECT_ALIGN - misalign) % DIRECT_ALIGN,
            len: 0,
        }
    }

    /// Appends as much of `data` as fits; returns how much that was.
    fn fill(&mut self, data: &[u8]) -> usize {
        let take = (WRITE_BLOCK - self.len).min(data.len());
        let at = self.start + self.len;
        self.storage[at..at + take].copy_from_slice(&data[..take]);
        self.len += take;
        take
    }

    fn is_full(&self) -> bool {
        self.len == WRITE_BLOCK
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

/// Streams one image into a partition (block device or file standing in for
/// one) in aligned blocks, never past its end. The writes happen on a thread
/// of their own, so the decompression that feeds them never waits for the
/// disk. Full blocks go to the disk with `O_DIRECT` where the file system
/// allows it: no copy into the page cache (which costs as much CPU as the
/// decompression), and no image-sized pile of dirty pages on a device with
/// little RAM. The tail, and everything on file systems without `O_DIRECT`,
/// is written through the page cache with write-back started as it goes.
pub(super) struct PartitionWriter {
    path: PathBuf,
    block: Block,
    /// Full blocks to the writer thread.
    to_writer: Option<std::sync::mpsc::SyncSender<Block>>,
    /// Written blocks back, for reuse.
    spare: std::sync::mpsc::Receiver<Block>,
    /// Blocks made so far, at most [`BLOCKS`].
    allocated: usize,
    thread: Option<std::thread::JoinHandle<Result<Written>>>,
}

impl PartitionWriter {
    /// Opens `path`, which must still be `id` (a link changed meanwhile
    /// would point elsewhere). A block device is opened with `O_EXCL`: the
    /// kernel refuses that while anything mounts or holds it.
    pub(super) fn open(path: &Path, id: SlotId, name: &str, size: u64) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let exclusive = if matches!(id, SlotId::Block(_)) {
            libc::O_EXCL
        } else {
            0
        };
        let mut file = OpenOptions::new()
            .write(true)
            .custom_flags(exclusive)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => anyhow!(
                    "opening rootfs partition {}: it is in use (mounted or held by another device)",
                    path.display()
                ),
                _ => anyhow::Error::new(e)
                    .context(format!("opening rootfs partition {}", path.display())),
            })?;
        let opened = SlotId::from_meta(
            path,
            &file
                .metadata()
                .with_context(|| format!("stat {}", path.display()))?,
        )?;
        if opened != id {
            bail!(
                "rootfs partition {} changed while the update was prepared (it was {id}, now {opened})",
                path.display()
            );
        }
        let capacity = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("size of {}", path.display()))?;
        if size > capacity {
            bail!(
                "payload '{name}' is {size} bytes but partition {} holds only {capacity}",
                path.display()
            );
        }
        let direct = open_direct(path);
        let (to_writer, blocks) = std::sync::mpsc::sync_channel::<Block>(BLOCKS);
        let (give_back, spare) = std::sync::mpsc::channel();
        let target = Target {
            path: path.to_path_buf(),
            buffered: file,
            direct,
            direct_failure: None,
        };
        let thread = std::thread::Builder::new()
            .name("partition-writer".into())
            .spawn(move || target.write_blocks(blocks, give_back))
            .context("starting the partition writer")?;
        Ok(PartitionWriter {
            path: path.to_path_buf(),
            block: Block::new(),
            to_writer: Some(to_writer),
            spare,
            allocated: 1,
            thread: Some(thread),
        })
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let took = self.block.fill(data);
            data = &data[took..];
            if self.block.is_full() {
                self.send_block()?;
            }
        }
        Ok(())
    }

    /// Hands the current block to the writer thread and takes an empty one:
    /// a returned one, a new one while fewer than [`BLOCKS`] exist, or else
    /// the next one the writer gives back (it holds all the others then).
    fn send_block(&mut self) -> Result<()> {
        let next = match self.spare.try_recv() {
            Ok(block) => block,
            Err(_) if self.allocated < BLOCKS => {
                self.allocated += 1;
                Block::new()
            }
            Err(_) => match self.spare.recv() {
                Ok(block) => block,
                Err(_) => return Err(self.writer_gone()),
            },
        };
        let full = std::mem::replace(&mut self.block, next);
        self.block.len = 0;
        match self.to_writer.as_ref().map(|tx| tx.send(full)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.writer_gone()),
        }
    }

    /// The writer thread ended before the image did: its error.
    fn writer_gone(&mut self) -> anyhow::Error {
        match self.join() {
            Err(e) => e,
            Ok(_) => anyhow!("the writer of {} stopped early", self.path.display()),
        }
    }

    /// Stops the writer thread and returns its file and why direct writes
    /// stopped (if they did), or its error.
    fn join(&mut self) -> Result<Written> {
        self.to_writer = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the writer of {} panicked", self.path.display()))?,
            None => bail!("the writer of {} stopped already", self.path.display()),
        }
    }

    pub(super) fn finish(&mut self) -> Result<()> {
        if self.block.len > 0 {
            self.send_block()?;
        }
        // fsync covers the direct writes too: it flushes the inode's
        // metadata and the disk's own write cache.
        let written = self.join()?;
        written
            .file
            .sync_all()
            .with_context(|| match written.direct_failure {
                Some(first) => format!("flushing {} (after a failed {first})", self.path.display()),
                None => format!("flushing {}", self.path.display()),
            })
    }
}

impl Drop for PartitionWriter {
    /// An abandoned download: let the thread finish its queue (at most
    /// [`BLOCKS`]) rather than write behind our back later.
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// A second descriptor of the partition that bypasses the page cache, or
/// None where the file system has no `O_DIRECT` (tmpfs, some FUSE).
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            log::debug!("{}: writing through the page cache ({e})", path.display());
            None
        }
    }
}

/// What the writer thread leaves: the buffered descriptor for the final
/// fsync, and why direct writes stopped if they did.
struct Written {
    file: File,
    direct_failure: Option<String>,
}

/// The writer thread's side: the partition, opened once through the page
/// cache and, where possible, once around it.
struct Target {
    path: PathBuf,
    buffered: File,
    direct: Option<File>,
    /// Why direct writes stopped, if they did: a disk error that the
    /// buffered rewrite hides until the final fsync is reported with it.
    direct_failure: Option<String>,
}

impl Target {
    /// Writes each block at its offset and returns the buffered descriptor
    /// for the final fsync. Blocks that are waiting together go down in one
    /// vectored write: the disk sees requests of up to [`MAX_BATCH`] blocks
    /// (its per-request cost is what limits small direct writes) without
    /// buffers of that size.
    fn write_blocks(
        mut self,
        blocks: std::sync::mpsc::Receiver<Block>,
        give_back: std::sync::mpsc::Sender<Block>,
    ) -> Result<Written> {
        let mut offset = 0u64;
        let mut batch: Vec<Block> = Vec::with_capacity(MAX_BATCH);
        while let Ok(first) = blocks.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match blocks.try_recv() {
                    Ok(block) => batch.push(block),
                    Err(_) => break,
                }
            }
            // Only whole blocks (multiples of the alignment) go direct; a
            // tail, always last, goes through the cache.
            let direct_count = batch
                .iter()
                .take_while(|b| b.len.is_multiple_of(DIRECT_ALIGN))
                .count();
            let direct_done = direct_count > 0 && self.write_direct(&batch[..direct_count], offset);
            for (i, block) in batch.drain(..).enumerate() {
                let bytes = block.bytes();
                if !(direct_done && i < direct_count) {
                    self.buffered.write_all_at(bytes, offset).with_context(|| {
                        format!("writing {} at offset {offset}", self.path.display())
                    })?;
                    let end = offset + bytes.len() as u64;
                    if offset / WRITEBACK_WINDOW != end / WRITEBACK_WINDOW {
                        start_writeback(&self.buffered, end);
                    }
                }
                offset += bytes.len() as u64;
                crash::point(crash::Point::Chunk);
                let _ = give_back.send(block);
            }
        }
        Ok(Written {
            file: self.buffered,
            direct_failure: self.direct_failure,
        })
    }

    /// Writes `blocks` (contiguous from `offset`) around the page cache if
    /// it can; false means the caller writes them through it, after which
    /// direct writes are not tried again (a file system that turned
    /// `O_DIRECT` down, or a disk error that the final fsync will meet).
    fn write_direct(&mut self, blocks: &[Block], offset: u64) -> bool {
        let Some(direct) = &self.direct else {
            return false;
        };
        let slices: Vec<&[u8]> = blocks.iter().map(Block::bytes).collect();
        match write_all_vectored_at(direct, &slices, offset) {
            Ok(()) => true,
            Err(e) => {
                // A short or refused direct write leaves nothing the
                // buffered rewrite of the same range does not replace.
                log::debug!(
                    "{}: O_DIRECT write at {offset} failed ({e}); writing through the page cache",
                    self.path.display()
                );
                self.direct_failure = Some(format!("direct write at offset {offset}: {e}"));
                self.direct = None;
                false
            }
        }
    }
}

/// `pwritev` until every byte of `slices` is written at `offset` onwards.
/// (std's vectored positional write is not stable yet.)
fn write_all_vectored_at(file: &File, slices: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    let mut index = 0; // first slice not completely written
    let mut skip = 0; // bytes of it already written
    while index < slices.len() {
        // Views of the caller's buffers: nothing is copied.
        let iov: Vec<std::io::IoSlice<'_>> = slices[index..]
            .iter()
            .enumerate()
            .map(|(i, s)| std::io::IoSlice::new(if i == 0 { &s[skip..] } else { s }))
            .collect();
        let mut n = match crate::sys::pwritev(file, &iov, offset) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        offset += n as u64;
        while n > 0 && index < slices.len() {
            let left = slices[index].len() - skip;
            if n >= left {
                n -= left;
                index += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Starts write-back of the window just completed and waits for the one
/// before it. Only a performance hint: errors surface at the fsync.
fn start_writeback(file: &File, offset: u64) {
    use crate::sys::sync_file_range;
    let end = offset / WRITEBACK_WINDOW * WRITEBACK_WINDOW;
    let _ = sync_file_range(
        file,
        end.saturating_sub(WRITEBACK_WINDOW),
        WRITEBACK_WINDOW,
        libc::SYNC_FILE_RANGE_WRITE,
    );
    if end >= 2 * WRITEBACK_WINDOW {
        let _ = sync_file_range(
            file,
            end - 2 * WRITEBACK_WINDOW,
            WRITEBACK_WINDOW,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `image` in uneven pieces into a partition file pre-filled with
    /// 0xAA in `dir` and returns what the file holds afterwards.
    fn write_through_writer(dir: &Path, image: &[u8], capacity: usize) -> Vec<u8> {
        let part = dir.join("mmcblk0p3");
        std::fs::write(&part, vec![0xAAu8; capacity]).unwrap();
        let id = SlotId::of(&part).unwrap();
        let mut w = PartitionWriter::open(&part, id, "rootfs.img", image.len() as u64).unwrap();
        let mut rest = image;
        let mut piece = 1usize;
        while !rest.is_empty() {
            let take = piece.min(rest.len());
            w.write(&rest[..take]).unwrap();
            rest = &rest[take..];
            piece = piece * 7 % 300_007 + 1;
        }
        w.finish().unwrap();
        drop(w);
        std::fs::read(&part).unwrap()
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn the_image_lands_exactly_and_nothing_past_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        // Whole blocks (direct where the file system allows), a tail that
        // is not a multiple of 4 KiB (through the page cache), and an
        // image smaller than one block.
        // More blocks than exist, so that they are reused and batched.
        for len in [
            3 * WRITE_BLOCK,
            2 * WRITE_BLOCK + 4097,
            1000,
            (2 * BLOCKS + 1) * WRITE_BLOCK + 8192,
        ] {
            let img = image(len);
            let capacity = (2 * BLOCKS + 3) * WRITE_BLOCK;
            let got = write_through_writer(dir.path(), &img, capacity);
            assert_eq!(got.len(), capacity);
            assert!(got[..len] == img[..], "image differs ({len} bytes)");
            assert!(
                got[len..].iter().all(|&b| b == 0xAA),
                "bytes past the image changed"
            );
        }
    }

    #[test]
    fn a_file_system_without_o_direct_still_gets_the_image() {
        // tmpfs refuses O_DIRECT at open: everything goes through the cache.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let len = 2 * WRITE_BLOCK + 12345;
        let img = image(len);
        let got = write_through_writer(dir.path(), &img, 3 * WRITE_BLOCK);
        assert!(got[..len] == img[..]);
        assert!(got[len..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn a_vectored_write_puts_every_slice_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        std::fs::write(&path, vec![0u8; 64]).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        write_all_vectored_at(&file, &[b"abc", b"", b"defgh", b"i"], 10).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[10..19], b"abcdefghi");
        assert!(got[..10].iter().chain(&got[19..]).all(|&b| b == 0));
    }

    #[test]
    fn blocks_start_on_the_direct_alignment() {
        for _ in 0..4 {
            let b = Block::new();
            assert_eq!(b.bytes().as_ptr() as usize % DIRECT_ALIGN, 0);
        }
    }
    #[test]
    fn the_writer_refuses_a_partition_that_changed_since_it_was_checked() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("mmcblk0p3");
        std::fs::write(&part, vec![0xAAu8; 4096]).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, vec![0xAAu8; 4096]).unwrap();
        let id = SlotId::of(&other).unwrap();
        let err = PartitionWriter::open(&part, id, "rootfs.img", 10)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("changed while"), "{err}");
    }

    #[test]
    fn a_payload_larger_than_the_partition_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("mmcblk0p3");
        std::fs::write(&part, vec![0xAAu8; 4096]).unwrap();
        let id = SlotId::of(&part).unwrap();
        let err = PartitionWriter::open(&part, id, "rootfs.img", 4097)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("holds only 4096"), "{err}");
        assert!(std::fs::read(&part).unwrap().iter().all(|&b| b == 0xAA));
    }
}
