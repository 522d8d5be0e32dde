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
//!
//! The A/B policy is here; what a slot is and whether the system uses it is
//! in `slot.rs`, and the tuned block writer that puts the image on it in
//! `partition_writer.rs`: they change for different reasons.

mod partition_writer;
mod slot;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use super::{DeviceContext, Installer, InstallerState, Reboot};
use crate::artifact::adaptive::{LocalLayout, LocalSource};
use crate::artifact::header::ArtifactHeader;
use crate::bootenv::{
    self, BOOTCOUNT, BootEnv, EnvVars, MENDER_BOOT_PART, MENDER_BOOT_PART_HEX, UPGRADE_AVAILABLE,
};
use partition_writer::PartitionWriter;
use slot::{SlotId, in_use};

pub struct RootfsInstaller {
    part_a: PathBuf,
    part_b: PathBuf,
    env: Box<dyn BootEnv>,
    target: Option<PathBuf>,
    /// The identity `prepare` checked the target under: the writer opens
    /// the partition only if it is still that storage.
    target_id: Option<SlotId>,
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
            target_id: None,
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
            .get(MENDER_BOOT_PART)
            .ok_or_else(|| anyhow!("cannot tell the active partition: / is on neither RootfsPartA nor RootfsPartB and mender_boot_part is not set in the boot environment"))?;
        let named = self.partition_by_number(boot_part)?;
        let never_booted = env.get(UPGRADE_AVAILABLE).map(String::as_str) == Some("1")
            && env.get(BOOTCOUNT).is_none_or(|c| c.trim() == "0");
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
            .map_err(|_| anyhow!("{MENDER_BOOT_PART} '{number}' is not a partition number"))?;
        for part in [&self.part_a, &self.part_b] {
            if partition_number(part)? == n {
                return Ok(part.clone());
            }
        }
        bail!(
            "{MENDER_BOOT_PART}={n} names neither RootfsPartA ({}) nor RootfsPartB ({})",
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
            (MENDER_BOOT_PART, Some(dec.as_str())),
            (MENDER_BOOT_PART_HEX, Some(hex.as_str())),
            (UPGRADE_AVAILABLE, Some(if upgrade { "1" } else { "0" })),
        ];
        if upgrade {
            changes.push((BOOTCOUNT, Some("0")));
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
        self.target_id = Some(self.check_target(&env, &inactive)?);
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
        // Checked in prepare, moments ago in the same stream; the writer
        // refuses storage that is no longer the one checked (a changed
        // link) and, with O_EXCL, a block device mounted since. install()
        // checks everything again before the boot environment switches.
        let id = match self.target_id {
            Some(id) => id,
            None => {
                let env = self.read_env()?;
                self.check_target(&env, &target)?
            }
        };
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
        if env.get(UPGRADE_AVAILABLE).map(String::as_str) != Some("1") {
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
        if env.get(UPGRADE_AVAILABLE).map(String::as_str) != Some("1") {
            bail!("nothing to commit in the boot environment (upgrade_available is not 1)");
        }
        self.write_env(&[(UPGRADE_AVAILABLE, Some("0"))])
    }

    fn rollback(&mut self) -> Result<()> {
        let previous = self
            .previous
            .clone()
            .ok_or_else(|| anyhow!("no previous partition recorded"))?;
        let env = self.read_env()?;
        let n = partition_number(&previous)?.to_string();
        let pointed = env
            .get(MENDER_BOOT_PART)
            .map(|s| s.trim() == n)
            .unwrap_or(false);
        let pending = env.get(UPGRADE_AVAILABLE).map(String::as_str) == Some("1");
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
        if env.get(UPGRADE_AVAILABLE).map(String::as_str) == Some("1") {
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
        let never_tried = env.get(BOOTCOUNT).is_none_or(|c| c.trim() == "0");
        Ok(env.get(UPGRADE_AVAILABLE).map(String::as_str) == Some("1")
            && never_tried
            && self.active_partition(&env)? != target)
    }

    fn state(&self) -> Option<InstallerState> {
        Some(InstallerState::RootfsImage {
            target: self.target.as_ref()?.display().to_string(),
            previous: self.previous.as_ref()?.display().to_string(),
        })
    }

    /// The running image (chunked to find equal chunks anywhere), then the
    /// target, which after an interrupted attempt holds chunks of the new
    /// image at their own places (docs/artifacts.md, "Adaptive installs").
    fn local_sources(&self) -> Vec<LocalSource> {
        let mut sources = Vec::new();
        if let Some(previous) = &self.previous {
            sources.push(LocalSource {
                path: previous.clone(),
                layout: LocalLayout::Scan,
            });
        }
        if let Some(target) = &self.target {
            sources.push(LocalSource {
                path: target.clone(),
                layout: LocalLayout::InPlace,
            });
        }
        sources
    }
}
