//! The built-in `rootfs-image` installer: A/B partitions switched through
//! the boot environment.
//!
//! The payload streams straight into the inactive partition with large
//! writes and is flushed to disk before anything points at it; only then are
//! `mender_boot_part`, `mender_boot_part_hex`, `upgrade_available=1` and
//! `bootcount=0` set, in one write of the environment.
//!
//! Nothing is written to a partition the system may be using: before the
//! payload's first byte, and again before the boot environment is pointed
//! at it, the target must be a different device or file from the other
//! slot and from the running one (compared by device number or inode, so
//! that no alias gets through), must not hold `/`, be mounted anywhere, be
//! held by another block device, or back a loop device; a block device is
//! then opened exclusively, which the kernel refuses while it is mounted or
//! held in any mount namespace.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::{DeviceContext, Installer, InstallerState, Reboot};
use crate::artifact::header::ArtifactHeader;
use crate::bootenv::{self, BootEnv, EnvVars};
use crate::crash;

/// Writes are gathered into blocks of this size (aligned offsets).
const WRITE_BLOCK: usize = 256 << 10;
/// Write-back is started every this many bytes, and the window before it is
/// waited for: the disk works while the next part decompresses, the final
/// fsync has little left to do, and no more than two windows of dirty pages
/// pile up (small devices have little RAM to spare for them).
const WRITEBACK_WINDOW: u64 = 8 << 20;

pub struct RootfsInstaller {
    part_a: PathBuf,
    part_b: PathBuf,
    env: Box<dyn BootEnv>,
    target: Option<PathBuf>,
    previous: Option<PathBuf>,
    writer: Option<PartitionWriter>,
    files: usize,
}

impl RootfsInstaller {
    pub fn new(part_a: PathBuf, part_b: PathBuf, env: Box<dyn BootEnv>) -> Self {
        RootfsInstaller {
            part_a,
            part_b,
            env,
            target: None,
            previous: None,
            writer: None,
            files: 0,
        }
    }

    /// Rebuilds the installer of an update in progress.
    pub fn resume(
        part_a: PathBuf,
        part_b: PathBuf,
        env: Box<dyn BootEnv>,
        target: &str,
        previous: &str,
    ) -> Self {
        let mut i = Self::new(part_a, part_b, env);
        i.target = Some(PathBuf::from(target));
        i.previous = Some(PathBuf::from(previous));
        i
    }

    fn read_env(&self) -> Result<EnvVars> {
        self.env
            .read()
            .with_context(|| format!("reading the boot environment ({})", self.env.describe()))
    }

    fn write_env(&self, changes: &[(&str, Option<&str>)]) -> Result<()> {
        self.env
            .write(changes)
            .with_context(|| format!("writing the boot environment ({})", self.env.describe()))
    }

    /// The partition the device runs from: the one whose device number is
    /// mounted on `/`; when neither is (regular files standing in for
    /// partitions, unusual mounts), the one `mender_boot_part` names. An
    /// update that was switched to but never booted (`upgrade_available=1`,
    /// `bootcount=0`) does not count as running.
    pub fn active_partition(&self, env: &EnvVars) -> Result<PathBuf> {
        // The boot environment's choice is only ever a path of the two
        // slots; check_target makes sure the two are different storage.
        let root = std::fs::metadata("/").context("stat /")?.dev();
        for part in [&self.part_a, &self.part_b] {
            if let Ok(meta) = std::fs::metadata(part)
                && meta.file_type().is_block_device()
                && meta.rdev() == root
            {
                return Ok(part.clone());
            }
        }
        let boot_part = env
            .get("mender_boot_part")
            .ok_or_else(|| anyhow!("cannot tell the active partition: / is on neither RootfsPartA nor RootfsPartB and mender_boot_part is not set in the boot environment"))?;
        let named = self.partition_by_number(boot_part)?;
        let never_booted = env.get("upgrade_available").map(String::as_str) == Some("1")
            && env.get("bootcount").is_none_or(|c| c.trim() == "0");
        Ok(if never_booted {
            self.other(&named).to_path_buf()
        } else {
            named
        })
    }

    fn partition_by_number(&self, number: &str) -> Result<PathBuf> {
        let n: u32 = number
            .trim()
            .parse()
            .map_err(|_| anyhow!("mender_boot_part '{number}' is not a partition number"))?;
        for part in [&self.part_a, &self.part_b] {
            if partition_number(part)? == n {
                return Ok(part.clone());
            }
        }
        bail!(
            "mender_boot_part={n} names neither RootfsPartA ({}) nor RootfsPartB ({})",
            self.part_a.display(),
            self.part_b.display()
        )
    }

    fn other(&self, part: &Path) -> &Path {
        if part == self.part_a {
            &self.part_b
        } else {
            &self.part_a
        }
    }

    /// What the two slots are; an error when they are the same storage
    /// (then whichever is "inactive" is the running one).
    fn slot_ids(&self) -> Result<(SlotId, SlotId)> {
        let id_a = SlotId::of(&self.part_a)?;
        let id_b = SlotId::of(&self.part_b)?;
        if id_a == id_b {
            bail!(
                "RootfsPartA ({}) and RootfsPartB ({}) are the same {}: an update would overwrite the running system; fix the configuration",
                self.part_a.display(),
                self.part_b.display(),
                id_a
            );
        }
        Ok((id_a, id_b))
    }

    /// Whether `target` may be written: one of the two slots, which are
    /// different storage, not the running one by the boot environment
    /// (`env`), and not in use by the system. Returns what it is, for the
    /// writer to check that it opened the same.
    fn check_target(&self, env: &EnvVars, target: &Path) -> Result<SlotId> {
        let (id_a, id_b) = self.slot_ids()?;
        let id = SlotId::of(target)?;
        let key = if id == id_a {
            "RootfsPartA"
        } else if id == id_b {
            "RootfsPartB"
        } else {
            bail!(
                "{} is neither RootfsPartA ({}) nor RootfsPartB ({}) (did the configuration change during the update?)",
                target.display(),
                self.part_a.display(),
                self.part_b.display()
            );
        };
        let active = self.active_partition(env)?;
        if SlotId::of(&active)? == id {
            bail!(
                "{key} ({}) is the running partition: refusing to write it",
                target.display()
            );
        }
        if let Some(reason) = in_use(id)? {
            bail!(
                "{key} ({}) {reason}: refusing to write it",
                target.display()
            );
        }
        Ok(id)
    }

    fn target(&self) -> Result<&Path> {
        self.target
            .as_deref()
            .ok_or_else(|| anyhow!("no target partition chosen"))
    }

    /// Points the boot environment at `part`, with the flags of `upgrade`.
    fn switch_to(&self, part: &Path, upgrade: bool) -> Result<()> {
        let n = partition_number(part)?;
        let dec = n.to_string();
        let hex = format!("{n:X}");
        let mut changes = vec![
            ("mender_boot_part", Some(dec.as_str())),
            ("mender_boot_part_hex", Some(hex.as_str())),
            ("upgrade_available", Some(if upgrade { "1" } else { "0" })),
        ];
        if upgrade {
            changes.push(("bootcount", Some("0")));
        }
        self.write_env(&changes)
    }
}

/// The number at the end of a partition's path (`/dev/mmcblk0p3` → 3).
pub fn partition_number(part: &Path) -> Result<u32> {
    let resolved = std::fs::canonicalize(part).unwrap_or_else(|_| part.to_path_buf());
    let s = resolved.to_string_lossy();
    let digits: String = s.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    let digits: String = digits.chars().rev().collect();
    digits.parse().map_err(|_| {
        anyhow!(
            "{}: a rootfs partition path must end in its partition number",
            part.display()
        )
    })
}

impl Installer for RootfsInstaller {
    fn prepare(&mut self, header: &ArtifactHeader, _device: &DeviceContext) -> Result<()> {
        // Before the boot environment's choice, which is meaningless when
        // the two slots are one.
        self.slot_ids()?;
        let env = self.read_env()?;
        bootenv::check_canary(&env)?;
        let active = self.active_partition(&env)?;
        let inactive = self.other(&active).to_path_buf();
        self.check_target(&env, &inactive)?;
        log::info!(
            "installing '{}' to {} (running from {})",
            header.name,
            inactive.display(),
            active.display()
        );
        self.previous = Some(active);
        self.target = Some(inactive);
        Ok(())
    }

    fn begin_file(&mut self, name: &str, size: u64) -> Result<()> {
        self.files += 1;
        if self.files > 1 {
            bail!("a rootfs-image payload holds exactly one file; '{name}' is a second one");
        }
        let target = self.target()?.to_path_buf();
        // Again: a mount or a changed link since prepare.
        let env = self.read_env()?;
        let id = self.check_target(&env, &target)?;
        self.writer = Some(PartitionWriter::open(&target, id, name, size)?);
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.writer
            .as_mut()
            .ok_or_else(|| anyhow!("payload data before its file"))?
            .write(data)
    }

    fn end_file(&mut self) -> Result<()> {
        self.writer
            .as_mut()
            .ok_or_else(|| anyhow!("end of a file never begun"))?
            .finish()
    }

    fn finish_download(&mut self) -> Result<()> {
        if self.files != 1 {
            bail!(
                "a rootfs-image payload holds exactly one file, this one has {}",
                self.files
            );
        }
        self.writer = None;
        Ok(())
    }

    fn abort_download(&mut self) {
        // The inactive partition holds a partial image; nothing points at
        // it, so there is nothing to undo.
        self.writer = None;
    }

    fn install(&mut self) -> Result<()> {
        let target = self.target()?.to_path_buf();
        // The boot environment must not be pointed at a partition that is
        // (now) the running one or in use.
        let env = self.read_env()?;
        self.check_target(&env, &target)?;
        self.switch_to(&target, true)
    }

    fn needs_reboot(&mut self) -> Result<Reboot> {
        Ok(Reboot::Automatic)
    }

    fn supports_rollback(&mut self) -> Result<bool> {
        Ok(true)
    }

    fn reboot(&mut self) -> Result<()> {
        Ok(())
    }

    fn verify_reboot(&mut self) -> Result<()> {
        let env = self.read_env()?;
        if env.get("upgrade_available").map(String::as_str) != Some("1") {
            bail!(
                "the new partition did not boot: the bootloader rolled back (upgrade_available is not 1)"
            );
        }
        let active = self.active_partition(&env)?;
        let target = self.target()?;
        if active != target {
            bail!(
                "running from {}, not from the updated {}",
                active.display(),
                target.display()
            );
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let env = self.read_env()?;
        if env.get("upgrade_available").map(String::as_str) != Some("1") {
            bail!("nothing to commit in the boot environment (upgrade_available is not 1)");
        }
        self.write_env(&[("upgrade_available", Some("0"))])
    }

    fn rollback(&mut self) -> Result<()> {
        let previous = self
            .previous
            .clone()
            .ok_or_else(|| anyhow!("no previous partition recorded"))?;
        let env = self.read_env()?;
        let n = partition_number(&previous)?.to_string();
        let pointed = env
            .get("mender_boot_part")
            .map(|s| s.trim() == n)
            .unwrap_or(false);
        let pending = env.get("upgrade_available").map(String::as_str) == Some("1");
        if pointed && !pending {
            return Ok(()); // the bootloader (or an earlier run) already did it
        }
        self.switch_to(&previous, false)
    }

    fn rollback_reboot(&mut self) -> Result<()> {
        Ok(())
    }

    fn verify_rollback_reboot(&mut self) -> Result<()> {
        let env = self.read_env()?;
        if env.get("upgrade_available").map(String::as_str) == Some("1") {
            bail!("the boot environment still has upgrade_available=1 after the rollback");
        }
        Ok(())
    }

    fn failure(&mut self) -> Result<()> {
        Ok(())
    }

    fn cleanup(&mut self) -> Result<()> {
        Ok(())
    }

    fn awaiting_reboot(&mut self) -> Result<bool> {
        let env = self.read_env()?;
        let target = self.target()?;
        // A counted try (bootcount > 0) while the old partition still runs
        // means the update was booted and failed (a bootloader that could
        // not save its fallback): that is for verify_reboot to report.
        let never_tried = env.get("bootcount").is_none_or(|c| c.trim() == "0");
        Ok(
            env.get("upgrade_available").map(String::as_str) == Some("1")
                && never_tried
                && self.active_partition(&env)? != target,
        )
    }

    fn state(&self) -> Option<InstallerState> {
        Some(InstallerState::RootfsImage {
            target: self.target.as_ref()?.display().to_string(),
            previous: self.previous.as_ref()?.display().to_string(),
        })
    }
}

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
struct PartitionWriter {
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
    fn open(path: &Path, id: SlotId, name: &str, size: u64) -> Result<Self> {
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

    fn write(&mut self, mut data: &[u8]) -> Result<()> {
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

    fn finish(&mut self) -> Result<()> {
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
    use std::os::unix::io::AsRawFd;
    let mut index = 0; // first slice not completely written
    let mut skip = 0; // bytes of it already written
    while index < slices.len() {
        let iov: Vec<libc::iovec> = slices[index..]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = if i == 0 { &s[skip..] } else { s };
                libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                }
            })
            .collect();
        // SAFETY: every iovec points into a live slice of the stated length
        // that the kernel only reads; the count matches the vector.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
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
    use std::os::unix::io::AsRawFd;
    let end = offset / WRITEBACK_WINDOW * WRITEBACK_WINDOW;
    let fd = file.as_raw_fd();
    // SAFETY: sync_file_range only reads its integer arguments.
    unsafe {
        libc::sync_file_range(
            fd,
            end.saturating_sub(WRITEBACK_WINDOW) as libc::off64_t,
            WRITEBACK_WINDOW as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
        if end >= 2 * WRITEBACK_WINDOW {
            libc::sync_file_range(
                fd,
                (end - 2 * WRITEBACK_WINDOW) as libc::off64_t,
                WRITEBACK_WINDOW as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
        }
    }
}

/// What a slot is, to tell whether two names reach the same storage: a
/// block device by its device number, a regular file (simulated devices)
/// by its file system and inode. Links, `/dev/disk/by-*` names, hard links
/// and `.`/`..` in paths all come out the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotId {
    Block(u64),
    File { dev: u64, ino: u64 },
}

impl SlotId {
    fn of(path: &Path) -> Result<SlotId> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("rootfs partition {}", path.display()))?;
        Self::from_meta(path, &meta)
    }

    fn from_meta(path: &Path, meta: &std::fs::Metadata) -> Result<SlotId> {
        let kind = meta.file_type();
        if kind.is_block_device() {
            Ok(SlotId::Block(meta.rdev()))
        } else if kind.is_file() {
            Ok(SlotId::File {
                dev: meta.dev(),
                ino: meta.ino(),
            })
        } else {
            bail!(
                "rootfs partition {} is neither a block device nor a file",
                path.display()
            )
        }
    }
}

impl std::fmt::Display for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SlotId::Block(rdev) => write!(f, "device {}", dev_name(rdev)),
            SlotId::File { dev, ino } => {
                write!(f, "file (inode {ino} on device {})", dev_name(dev))
            }
        }
    }
}

/// `major:minor`, as in `/proc/self/mountinfo` and `/sys/dev/block`.
fn dev_name(dev: u64) -> String {
    let dev = dev as libc::dev_t;
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

/// Largest mount table read. A device has tens of mounts (about 150 bytes
/// each); 4 MiB is tens of thousands, more than any host has.
const MAX_MOUNTINFO: u64 = 4 << 20;

/// Largest sysfs attribute read (a loop device's backing file is a path).
const MAX_SYSFS_ATTR: u64 = 16 << 10;

/// Most loop devices looked at, and most holders named.
const MAX_LOOP_DEVICES: usize = 4096;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The mounted device's number (`st_dev` of files on it).
    dev: u64,
    /// Where it is mounted.
    point: String,
    /// The device it was mounted from, when that is a block device node
    /// (file systems such as btrfs report an anonymous `dev`).
    source_dev: Option<u64>,
}

/// Why the storage `id` must not be written now, if it must not.
fn in_use(id: SlotId) -> Result<Option<String>> {
    match id {
        SlotId::Block(rdev) => {
            let root = std::fs::metadata("/").context("stat /")?.dev();
            let table = crate::fsutil::read_bounded(
                Path::new("/proc/self/mountinfo"),
                MAX_MOUNTINFO,
                "the mount table",
            )
            .context("cannot tell whether the partition is mounted")?;
            let mounts = parse_mountinfo(&String::from_utf8_lossy(&table));
            let holders = holders(rdev);
            Ok(block_in_use(rdev, root, &mounts, &holders, &sysfs_related))
        }
        SlotId::File { dev, ino } => Ok(loop_backed_by(dev, ino)
            .map(|lo| format!("backs the loop device {lo} (it may be mounted)"))),
    }
}

/// The decision for a block device `rdev`, from what the system reports:
/// `root` is `st_dev` of `/`, `holders` what sysfs lists as built on it,
/// `related(a, b)` whether one device is a partition of the other.
fn block_in_use(
    rdev: u64,
    root: u64,
    mounts: &[Mount],
    holders: &[String],
    related: &dyn Fn(u64, u64) -> bool,
) -> Option<String> {
    let same = |dev: u64| dev == rdev || related(rdev, dev);
    if same(root) {
        return Some(format!(
            "is {}, which holds the running root file system /",
            dev_name(rdev)
        ));
    }
    if !holders.is_empty() {
        return Some(format!(
            "is {}, which is in use by {} (device-mapper, RAID or the like)",
            dev_name(rdev),
            holders.join(", ")
        ));
    }
    mounts
        .iter()
        .find(|m| same(m.dev) || m.source_dev.is_some_and(same))
        .map(|m| format!("is {}, which is mounted on {}", dev_name(rdev), m.point))
}

/// The mounts of `/proc/self/mountinfo` (lines it cannot read are left
/// out: the exclusive open still guards them).
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(majmin), Some(point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let Some((major, minor)) = majmin.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let source = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|sep| fields.get(sep + 2))
            .map(|s| unescape_mount_field(s));
        let source_dev = source
            .filter(|s| s.starts_with("/dev/"))
            .and_then(|s| std::fs::metadata(s).ok())
            .filter(|m| m.file_type().is_block_device())
            .map(|m| m.rdev());
        mounts.push(Mount {
            dev: libc::makedev(major, minor),
            point: unescape_mount_field(point),
            source_dev,
        });
    }
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The sysfs directory of a block device, resolved.
fn sysfs_dir(dev: u64) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/dev/block/{}", dev_name(dev))).ok()
}

/// Whether `a` is a partition of `b` or `b` of `a` (sysfs nests partitions
/// inside their disk). False where sysfs is not there to tell.
fn sysfs_related(a: u64, b: u64) -> bool {
    match (sysfs_dir(a), sysfs_dir(b)) {
        (Some(a), Some(b)) => a != b && (a.starts_with(&b) || b.starts_with(&a)),
        _ => false,
    }
}

/// The devices built on `dev` (device-mapper, md, bcache: sysfs
/// `holders`).
fn holders(dev: u64) -> Vec<String> {
    let Some(dir) = sysfs_dir(dev) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("holders")) else {
        return Vec::new();
    };
    entries
        .take(MAX_LOOP_DEVICES)
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The loop device (`/dev/loopN`) whose backing file is the file `dev`,
/// `ino`, if one is attached (mounted or not, in any mount namespace that
/// shares our view of the path sysfs reports).
fn loop_backed_by(dev: u64, ino: u64) -> Option<String> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    for entry in entries.take(MAX_LOOP_DEVICES).filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = crate::fsutil::read_bounded_string(
            &entry.path().join("loop/backing_file"),
            MAX_SYSFS_ATTR,
            "a sysfs attribute",
        ) else {
            continue; // not attached
        };
        let backing = backing.trim_end_matches('\n');
        if let Ok(meta) = std::fs::metadata(backing)
            && meta.is_file()
            && meta.dev() == dev
            && meta.ino() == ino
        {
            return Some(format!("/dev/{name}"));
        }
    }
    None
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

    fn dev(major: u32, minor: u32) -> u64 {
        libc::makedev(major, minor)
    }

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
            45 27 7:3 / /mnt/with\\040space rw - ext4 /dev/loop3 rw\n\
            garbage\n\
            46 27 0:51 / /data rw - btrfs /dev/null rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].dev, dev(254, 0));
        assert_eq!(mounts[0].point, "/");
        assert_eq!(mounts[1].point, "/mnt/with space");
        // A source that is not a block device node is not taken.
        assert_eq!(mounts[2].source_dev, None);
        assert_eq!(unescape_mount_field("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_mount_field("tail\\04"), "tail\\04");
    }

    #[test]
    fn a_block_slot_in_use_is_named_with_the_reason() {
        let target = dev(179, 3);
        let none = |_: u64, _: u64| false;
        let mount = |d: u64, point: &str, source_dev: Option<u64>| Mount {
            dev: d,
            point: point.into(),
            source_dev,
        };
        let others = [
            mount(dev(179, 2), "/", None),
            mount(dev(0, 22), "/sys", None),
        ];
        assert_eq!(block_in_use(target, dev(179, 2), &others, &[], &none), None);
        // Holding the root file system.
        let why = block_in_use(target, target, &[], &[], &none).unwrap();
        assert!(
            why.contains("179:3") && why.contains("root file system"),
            "{why}"
        );
        // Mounted elsewhere, by number or (btrfs) by its source node.
        let mounted = [mount(target, "/mnt/b", None)];
        let why = block_in_use(target, dev(179, 2), &mounted, &[], &none).unwrap();
        assert!(why.contains("mounted on /mnt/b"), "{why}");
        let btrfs = [mount(dev(0, 51), "/data", Some(target))];
        let why = block_in_use(target, dev(179, 2), &btrfs, &[], &none).unwrap();
        assert!(why.contains("mounted on /data"), "{why}");
        // Under device-mapper (dm-verity root, LVM).
        let why = block_in_use(target, dev(253, 0), &[], &["dm-0".into()], &none).unwrap();
        assert!(why.contains("in use by dm-0"), "{why}");
        // A whole disk whose partition runs /.
        let disk = dev(179, 0);
        let parent = |a: u64, b: u64| a == disk && b == dev(179, 2);
        let why = block_in_use(disk, dev(179, 2), &[], &[], &parent).unwrap();
        assert!(why.contains("root file system"), "{why}");
    }

    #[test]
    fn slot_identity_sees_through_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("mmcblk0p2");
        std::fs::write(&a, b"x").unwrap();
        let b = dir.path().join("mmcblk0p3");
        std::fs::write(&b, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(&a, &hard).unwrap();
        let dotted = PathBuf::from(format!(
            "{}/./../{}/./mmcblk0p2",
            dir.path().display(),
            dir.path().file_name().unwrap().to_string_lossy()
        ));
        let id = SlotId::of(&a).unwrap();
        for alias in [&link, &hard, &dotted] {
            assert_eq!(SlotId::of(alias).unwrap(), id, "{}", alias.display());
        }
        assert_ne!(SlotId::of(&b).unwrap(), id);
        let e = SlotId::of(dir.path()).unwrap_err().to_string();
        assert!(e.contains("neither a block device nor a file"), "{e}");
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
