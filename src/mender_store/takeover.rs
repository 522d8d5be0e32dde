//! Take-over (`docs/takeover.md`): on start of every command, when the
//! data directory holds a Mender store and no store of our own, the
//! device's installed software (and a standalone update waiting for its
//! commit, or a deployment from the server in flight: [`inflight`]) moves
//! into our store, and Mender's file is renamed to
//! `mender-store.taken-over` so that a person sees what was taken over.
//!
//! Order, for power loss at any point:
//! 1. Mender's store is read (read-only; nothing changes on disk).
//! 2. Our store is written (`crate::persist`: atomic) with what was read
//!    and `mender_store_rename_pending` set.
//! 3. The hand back is built beside Mender's file, Mender's file gets its
//!    second name `mender-store.taken-over` (with its lock file), and the
//!    hand back is renamed over it; the directory is synced.
//! 4. Our store's `mender_store_rename_pending` is cleared.
//!
//! A restart after 2 finds our store with the flag set: it does not read
//! Mender's store again, it only does 3 and 4. Only our store claims the
//! update from 2 on; before 2, only Mender's. A Mender client never finds
//! no store where it had one.
//!
//! Going back and forth: when our store exists and a Mender client wrote
//! its store after our last write (`mender-rs-txn`), the same steps take
//! the device over again, after our store is copied to
//! `mender-rs-store.replaced.json`.
//!
//! Hand back ([`hand_back`]): right after the take-over, after every
//! change of the installed software (a commit, the bootstrap artifact, an
//! `_INCONSISTENT` mark), and on a start that finds it missing, the same
//! name, group and provides are written to `mender-store`, a fresh one
//! once the original was renamed, so that a Mender client started on this
//! data directory reports the same software.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::inflight::{self, Import};
use super::model::StandaloneState;
use super::{Contents, MenderStore, MenderStoreError, lock_path, store_path};
use crate::artifact::header::Provides;
use crate::bootenv::UPGRADE_AVAILABLE;
use crate::config::Config;
use crate::engine::{ArtifactInfo, Phase, UpdateState};
use crate::installer::{InstallerState, Reboot};
use crate::store::{STORE_FILE, Store, StoreError};
use crate::{crash, fsutil};

/// What Mender's store is renamed to.
pub const TAKEN_OVER_FILE: &str = "mender-store.taken-over";

/// The renamed store in `data_dir`.
pub fn taken_over_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TAKEN_OVER_FILE)
}

/// Takes the device over from Mender when there is something to take
/// over, or finishes a take-over a power loss interrupted. Returns whether
/// this call took the device over.
pub fn run(config: &Config) -> Result<bool> {
    let data_dir = &config.data_dir;
    let mender = store_path(data_dir);
    // The cheap checks first, without our lock: most starts end here.
    let mender_exists = std::fs::symlink_metadata(&mender).is_ok();
    let ours_exists = std::fs::symlink_metadata(data_dir.join(STORE_FILE)).is_ok();
    if !ours_exists && !mender_exists {
        return Ok(false);
    }
    if ours_exists {
        // Ours decides. One that cannot be read is for the command that
        // needs it to report (`bootenv` works without it).
        let Ok(ours) = Store::read_only(data_dir) else {
            return Ok(false);
        };
        if !ours.data().mender_store_rename_pending {
            drop(ours);
            if !mender_exists {
                restore_hand_back(config);
                return Ok(false);
            }
            if !written_by_mender(&mender) {
                return Ok(false);
            }
        }
    }
    let mut store = match Store::open(data_dir) {
        Ok(store) => store,
        // The process holding our store (the daemon) took over when it
        // started, or does so now.
        Err(StoreError::Busy(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if store.existed() {
        if store.data().mender_store_rename_pending {
            finish(config, &mut store)?;
            return Ok(false);
        }
        // Asked again under our lock: a process that held it may have
        // written the store since.
        if std::fs::symlink_metadata(&mender).is_err() || !written_by_mender(&mender) {
            return Ok(false);
        }
        return take_back(config, &mut store, &mender);
    }
    take_over(config, &mut store, &mender, false)
}

/// Whether a Mender client wrote `mender`, an existing store, after
/// mender-rs last did (or mender-rs never wrote it): the device ran
/// Mender since. A store that cannot be read is not (said in the log):
/// our own store still describes the device.
fn written_by_mender(mender: &Path) -> bool {
    let wrote = || -> Result<bool, MenderStoreError> {
        let store = MenderStore::open_unlocked(mender)?;
        if store.last_write_is_ours()? {
            return Ok(false);
        }
        // Written by Mender, but it says nothing of the device: a 4.x/5.x
        // command run on a device it never updated creates the store (or
        // writes `unknown` as the name). Taking that over would drop what
        // our store knows, an update in flight included (checked with
        // 5.1.0's `show-artifact`).
        let c = store.read()?;
        Ok(c.installed.name.is_some() || c.standalone.is_some() || c.managed.is_some())
    };
    wrote().unwrap_or_else(|e| {
        log::warn!("{e}; mender-rs keeps its own store");
        false
    })
}

/// "Going back and forth" (`docs/takeover.md`): our store exists, and a
/// Mender client wrote its store since our last write. The device ran
/// Mender: what Mender's store says replaces what ours says, as a
/// take-over does, and our old store is kept as [`REPLACED_FILE`]. A
/// Mender store that cannot be read or taken over leaves ours as it is
/// (said in the log); the next start tries again.
fn take_back(config: &Config, store: &mut Store, mender: &Path) -> Result<bool> {
    log::warn!(
        "{}: the Mender client wrote it after mender-rs last did (the device ran Mender): taking the device over again",
        mender.display()
    );
    match take_over(config, store, mender, true) {
        Ok(taken) => Ok(taken),
        // Nothing changed yet: ours stays.
        Err(e) if !store.data().mender_store_rename_pending => {
            log::error!("{e:#}; mender-rs keeps its own store");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Our store as it was before a take-over replaced it, in `data_dir`.
pub const REPLACED_FILE: &str = "mender-rs-store.replaced.json";

fn take_over(config: &Config, store: &mut Store, mender: &Path, replacing: bool) -> Result<bool> {
    let contents = MenderStore::open_read_only(mender)?.read()?;
    let mut provides = contents.installed.provides();
    let mut taken_over_deployment = None;
    let update = if let Some(managed) = &contents.managed {
        if contents.standalone.is_some() {
            log::warn!(
                "{}: a standalone update is recorded beside deployment '{}'; the deployment is taken over",
                mender.display(),
                managed.deployment_id()
            );
        }
        match inflight::import(config, mender, managed, &provides)? {
            Import::Carry {
                update,
                provides: committed,
            } => {
                if let Some(committed) = committed {
                    provides = committed;
                }
                taken_over_deployment = update.deployment_id.clone();
                Some(*update)
            }
            Import::Leave => return Ok(false),
        }
    } else {
        match &contents.standalone {
            Some(standalone) => match pending_update(config, mender, standalone)? {
                Pending::Carry(update) => Some(*update),
                Pending::Drop => None,
                Pending::Leave => return Ok(false),
            },
            None => None,
        }
    };
    log_what(mender, &contents, &provides);
    let update = update.map(|u| serde_json::to_value(&u)).transpose()?;
    if replacing {
        keep_replaced(store, &config.data_dir)?;
    }
    store.save(|d| {
        d.provides = provides;
        d.update = update;
        d.taken_over_deployment = taken_over_deployment;
        d.rollback_reboot_after_report = false;
        d.mender_store_rename_pending = true;
    })?;
    finish(config, store)?;
    Ok(true)
}

/// A copy of our store before a take-over replaces it, for a person to
/// see what was replaced. Written again, the same, when a power loss
/// interrupts the take-over before our store changed.
fn keep_replaced(store: &Store, data_dir: &Path) -> Result<()> {
    let path = data_dir.join(REPLACED_FILE);
    let text = serde_json::to_vec_pretty(store.data())?;
    fsutil::write_atomic(&path, &text, 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    crash::point(crash::Point::Step);
    Ok(())
}

fn log_what(mender: &Path, contents: &Contents, provides: &Provides) {
    log::warn!(
        "taking the device over from the Mender client: {} ({} provides) from {}",
        provides
            .get("artifact_name")
            .map_or("no artifact name", String::as_str),
        provides.len(),
        mender.display()
    );
    if contents.has_control_maps {
        log::warn!(
            "{}: the Mender client's update control maps are not taken over",
            mender.display()
        );
    }
}

/// What becomes of Mender's `standalone-state`.
enum Pending {
    /// Our record of the update, so that `commit` and `rollback` finish it.
    Carry(Box<UpdateState>),
    /// Nothing left to finish (said in the log).
    Drop,
    /// Not ours to finish: no take-over, Mender's store stays.
    Leave,
}

fn pending_update(config: &Config, mender: &Path, standalone: &StandaloneState) -> Result<Pending> {
    let name = &standalone.artifact_name;
    if !standalone.awaits_commit() {
        log::warn!(
            "{}: the Mender client's standalone operation on '{name}' stopped in state '{}' (failed: {}, rolled back: {}); it is not carried over",
            mender.display(),
            standalone.in_state.as_deref().unwrap_or("?"),
            standalone.failed,
            standalone.rolled_back
        );
        return Ok(Pending::Drop);
    }
    if standalone.payload_type() != Some("rootfs-image") {
        // An Update Module's own files describe where its update stands;
        // they are not ours to continue. Mender's store stays in place,
        // for the Mender client to finish.
        log::error!(
            "{}: the Mender client installed '{name}' (payload types {:?}) and it waits for its commit; mender-rs only carries over rootfs-image updates: the Mender store is left as it is",
            mender.display(),
            standalone.payload_types
        );
        return Ok(Pending::Leave);
    }
    let env = crate::engine::open_boot_env(config)?
        .read()
        .context("reading the boot environment to take over Mender's update")?;
    if env.get(UPGRADE_AVAILABLE).map(String::as_str) != Some("1") {
        // The bootloader gave up on the update and went back already.
        log::warn!(
            "{}: the Mender client installed '{name}' but {UPGRADE_AVAILABLE} is no longer 1 (the bootloader rolled it back); it is not carried over",
            mender.display()
        );
        return Ok(Pending::Drop);
    }
    // Mender's install pointed the bootloader at the new partition.
    let (target, previous) = inflight::boot_partitions(config, &env, mender)?;
    let group = Some(standalone.artifact_group.clone()).filter(|g| !g.is_empty());
    Ok(Pending::Carry(Box::new(UpdateState {
        phase: Phase::Installed,
        artifact: Some(ArtifactInfo {
            name: name.clone(),
            group,
            payload_type: Some("rootfs-image".into()),
            payload_provides: standalone.provides.clone().unwrap_or_default(),
            clears_provides: standalone.clears_provides.clone(),
        }),
        installer: Some(InstallerState::RootfsImage {
            target: target.display().to_string(),
            previous: previous.display().to_string(),
        }),
        reboot: Some(Reboot::Automatic),
        supports_rollback: Some(true),
        steps: 0,
        failed: false,
        manual_rollback: false,
        inconsistent: false,
        deployment_id: None,
        stopped_before: None,
    })))
}

/// Where the hand back is built, beside Mender's store, before it takes
/// that store's place.
const STAGED_FILE: &str = "mender-store.handing-back";
/// The second name Mender's store gets before it is renamed over an older
/// `mender-store.taken-over`.
const LINK_FILE: &str = "mender-store.taken-over.new";

/// Steps 3 and 4: Mender's store is kept as `mender-store.taken-over` and
/// the hand back takes its place, then the flag is cleared. The hand back
/// is built beside Mender's file and renamed over it, so that at every
/// moment `mender-store` is Mender's file or ours: a Mender client that a
/// power loss boots never finds none. Each step is skipped when done: a
/// `mender-store` whose last write is ours is the hand back already.
fn finish(config: &Config, store: &mut Store) -> Result<()> {
    let data_dir = &config.data_dir;
    let mender = store_path(data_dir);
    let renamed = taken_over_path(data_dir);
    let mender_exists = std::fs::symlink_metadata(&mender).is_ok();
    let staged = data_dir.join(STAGED_FILE);
    if mender_exists && !is_our_hand_back(&mender) {
        remove_if_present(&staged)?;
        remove_if_present(&lock_path(&staged))?;
        let handed_back = hand_back_taken_over_to(config, store, &staged);
        // Mender's file under its second name, then that name replaces an
        // older one (a device taken over before).
        let link = data_dir.join(LINK_FILE);
        remove_if_present(&link)?;
        match std::fs::hard_link(&mender, &link) {
            Ok(()) => rename(&link, &renamed)?,
            // A file system without hard links: renamed, then the hand
            // back renamed into its place (no store between the two).
            Err(e) => {
                log::warn!(
                    "linking {} as {}: {e}; renaming it",
                    mender.display(),
                    link.display()
                );
                rename(&mender, &renamed)?;
            }
        }
        rename_if_present(&lock_path(&mender), &lock_path(&renamed))?;
        if handed_back {
            rename(&staged, &mender)?;
        } else {
            // Nothing to hand back (no name, or the write failed, which
            // is logged): Mender finds no store, as before it ever wrote
            // one, until the next start writes the hand back.
            remove_if_present(&mender)?;
            remove_if_present(&staged)?;
        }
        remove_if_present(&lock_path(&staged))?;
        fsutil::sync_dir(data_dir).with_context(|| format!("syncing {}", data_dir.display()))?;
    } else if !mender_exists && std::fs::symlink_metadata(&staged).is_ok() {
        // Cut between the two renames of the fallback: the hand back was
        // complete before them.
        rename(&staged, &mender)?;
        remove_if_present(&lock_path(&staged))?;
        fsutil::sync_dir(data_dir).with_context(|| format!("syncing {}", data_dir.display()))?;
    }
    crash::point(crash::Point::Step);
    store.save(|d| d.mender_store_rename_pending = false)?;
    log::info!(
        "the Mender store was taken over and kept as {}",
        renamed.display()
    );
    Ok(())
}

/// Whether `path` is a store whose last write was ours.
fn is_our_hand_back(path: &Path) -> bool {
    MenderStore::open_unlocked(path)
        .and_then(|s| s.last_write_is_ours())
        .unwrap_or(false)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))
}

fn rename_if_present(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.with_context(|| format!("renaming {} to {}", from.display(), to.display())),
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.with_context(|| format!("removing {}", path.display())),
    }
}

/// The hand back right after a take-over, written to `target`; whether it
/// was. A deployment taken over after
/// its reboot (upgrade_available=1) comes back to the Mender client of
/// the previous partition if the power fails before it is committed: the
/// bootloader rolls the device back. So the hand back carries the record
/// `after-rollback-reboot` until the commit or the final report removes
/// it, with which that client reports the failure itself
/// (`docs/takeover.md`, "The failure path").
fn hand_back_taken_over_to(config: &Config, store: &Store, target: &Path) -> bool {
    let data = store.data();
    let update = data
        .update
        .as_ref()
        .and_then(|v| serde_json::from_value::<UpdateState>(v.clone()).ok());
    let pending = update.filter(|u| {
        u.phase == Phase::ArtifactReboot
            && u.deployment_id.is_some()
            && u.deployment_id == data.taken_over_deployment
    });
    let Some(update) = pending else {
        return hand_back_to(target, store.provides());
    };
    match config.device_type() {
        Ok(device_type) => inflight::hand_back_after_rollback_to(
            config,
            &update,
            &store.effective_provides(&config.artifact_info_file),
            &device_type,
            target,
        ),
        Err(e) => {
            log::warn!("the taken-over deployment was not handed back: {e:#}");
            hand_back_to(target, store.provides())
        }
    }
}

/// Our store exists and `mender-store` does not (a device that never ran
/// Mender, or power lost between a take-over and its hand back): writes
/// it, under our lock so that a commit cannot be overtaken by an older
/// copy.
fn restore_hand_back(config: &Config) {
    let data_dir = &config.data_dir;
    // Busy: the process holding our store writes it itself.
    let Ok(store) = Store::open(data_dir) else {
        return;
    };
    if !store.data().mender_store_rename_pending
        && std::fs::symlink_metadata(store_path(data_dir)).is_err()
    {
        // With the record of a taken-over deployment still to commit.
        hand_back_taken_over_to(config, &store, &store_path(data_dir));
    }
}

/// Writes `provides` to `<data_dir>/mender-store` (created if missing).
/// Our store is already written: a failure here is logged, not returned,
/// and the next start or change of the installed software writes it
/// again. Nothing is written while nothing is known to be installed (no
/// name): Mender then falls back on its own defaults.
pub fn hand_back(data_dir: &Path, provides: &Provides) {
    hand_back_to(&store_path(data_dir), provides);
}

/// [`hand_back`] to the store at `path`; whether it was written.
fn hand_back_to(path: &Path, provides: &Provides) -> bool {
    if !provides.contains_key("artifact_name") {
        return false;
    }
    let result =
        MenderStore::open_for_writing(path).and_then(|store| store.write_installed(provides));
    match result {
        Ok(()) => true,
        Err(e) => {
            log::warn!("the installed software was not written for the Mender client: {e}");
            false
        }
    }
}
