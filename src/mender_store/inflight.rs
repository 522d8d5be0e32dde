//! Deployments from the server across the two clients (`docs/takeover.md`,
//! "A deployment in flight"):
//! * [`import`]: the Mender client's `state` (or `state-uncommitted`)
//!   becomes our update, so that the daemon's resume finishes the same
//!   deployment (same id) where Mender left it;
//! * [`hand_back_before_reboot`]: before our reboot into a new root
//!   filesystem, Mender's `state` record and the files its clients read
//!   after that reboot, so that a Mender client in the new image finishes
//!   our deployment;
//! * [`clear_handed_back`]: once our deployment is over, that record goes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use super::model::{ManagedState, ROLLBACK_NOT_SUPPORTED, ROLLBACK_SUPPORTED};
use super::{
    KEY_CONTROL_MAPS, KEY_STANDALONE, KEY_STATE, KEY_STATE_UNCOMMITTED, MenderStore, store_path,
};
use crate::artifact::depends;
use crate::artifact::header::{ArtifactHeader, PayloadHeader, Provides};
use crate::bootenv::{MENDER_BOOT_PART, UPGRADE_AVAILABLE};
use crate::config::Config;
use crate::engine::{ArtifactInfo, Phase, UpdateState};
use crate::fsutil;
use crate::installer::rootfs::partition_number;
use crate::installer::{InstallerState, Reboot};
use crate::sys::lmdb::Change;

/// The only payload type carried across: an Update Module's own files
/// describe where its update stands, and they are not ours to continue.
const ROOTFS: &str = "rootfs-image";

/// What becomes of Mender's deployment in flight.
pub enum Import {
    /// Our update (and, when Mender had committed already, the provides
    /// after that commit).
    Carry {
        update: Box<UpdateState>,
        provides: Option<Provides>,
    },
    /// Not ours to finish: no take-over, Mender's store stays.
    Leave,
}

/// Maps Mender's record to our update, by the state it names (the shared
/// table: `docs/takeover.md`, "A deployment in flight").
pub fn import(
    config: &Config,
    mender: &Path,
    managed: &ManagedState,
    installed: &Provides,
) -> Result<Import> {
    let id = managed.deployment_id();
    if id.is_empty() {
        bail!(
            "{}: key 'state': the deployment in flight (state '{}') has no UpdateInfo.ID",
            mender.display(),
            managed.name
        );
    }
    let artifact = managed.artifact();
    if managed.payload_type().as_deref() != Some(ROOTFS) {
        log::error!(
            "{}: the Mender client has deployment '{id}' of '{}' (payload types {:?}) in flight; mender-rs only carries over rootfs-image deployments: the Mender store is left as it is",
            mender.display(),
            artifact.artifact_name,
            artifact.payload_types
        );
        return Ok(Import::Leave);
    }
    let env = crate::engine::open_boot_env(config)?
        .read()
        .context("reading the boot environment to take over Mender's deployment")?;
    let pending = env.get(UPGRADE_AVAILABLE).map(String::as_str) == Some("1");
    let (booted, other) = boot_partitions(config, &env, mender)?;
    // With upgrade_available=1 Mender's install pointed the bootloader at
    // the update; otherwise it still (or again) points at the old software.
    let (target, previous) = if pending {
        (booted, other)
    } else {
        (other, booted)
    };
    let info = ArtifactInfo {
        name: artifact.artifact_name.clone(),
        group: Some(artifact.artifact_group.clone()).filter(|g| !g.is_empty()),
        payload_type: Some(ROOTFS.into()),
        payload_provides: artifact.artifact_provides.clone().unwrap_or_default(),
        clears_provides: artifact.clears_artifact_provides.clone(),
    };
    let mut provides = None;
    let phase = match managed.name.as_str() {
        "reboot" | "after-reboot" if pending => Phase::ArtifactReboot,
        "reboot" | "after-reboot" => {
            log::warn!(
                "{}: deployment '{id}' was rebooted into, but {UPGRADE_AVAILABLE} is no longer 1 (the bootloader rolled it back): it fails",
                mender.display()
            );
            Phase::ArtifactRollbackReboot
        }
        "update-store" => Phase::Download,
        "update-after-commit" | "update-after-first-commit" => {
            provides = Some(depends::provides_after_commit(installed, &header_of(&info)));
            Phase::ArtifactCommitLeave
        }
        "update-error" => Phase::ArtifactFailure,
        "cleanup" => Phase::Cleanup,
        "rollback" => Phase::ArtifactRollback,
        "rollback-reboot" | "verify-rollback-reboot" | "after-rollback-reboot" => {
            Phase::ArtifactRollbackReboot
        }
        // Any other state (installing, committing, reporting, 3.x's
        // control map pauses): the error path, a rollback when the
        // payload supports one, else the `_INCONSISTENT` mark.
        _ => Phase::ArtifactInstall,
    };
    log::warn!(
        "{}: taking over deployment '{id}' of '{}' from the Mender client in state '{}' (resumed as {phase:?})",
        mender.display(),
        info.name,
        managed.name
    );
    Ok(Import::Carry {
        update: Box::new(UpdateState {
            phase,
            artifact: Some(info),
            installer: Some(InstallerState::RootfsImage {
                target: target.display().to_string(),
                previous: previous.display().to_string(),
            }),
            reboot: Some(Reboot::Automatic),
            supports_rollback: managed.supports_rollback(),
            // Mender's loop guard carries into ours.
            steps: managed.store_count(),
            failed: !matches!(
                phase,
                Phase::ArtifactReboot | Phase::ArtifactCommitLeave | Phase::Download
            ),
            manual_rollback: false,
            inconsistent: false,
            deployment_id: Some(id.to_string()),
            stopped_before: None,
        }),
        provides,
    })
}

fn header_of(info: &ArtifactInfo) -> ArtifactHeader {
    ArtifactHeader {
        name: info.name.clone(),
        group: info.group.clone(),
        payloads: vec![PayloadHeader {
            payload_type: info.payload_type.clone(),
            provides: info.payload_provides.clone(),
            clears_provides: info.clears_provides.clone(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The partition `mender_boot_part` names, and the other one.
pub fn boot_partitions(
    config: &Config,
    env: &std::collections::BTreeMap<String, String>,
    mender: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let (a, b) = match (&config.rootfs_part_a, &config.rootfs_part_b) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        _ => bail!(
            "{}: the Mender client has an update in flight, but RootfsPartA/RootfsPartB are not configured",
            mender.display()
        ),
    };
    let boot_part = env
        .get(MENDER_BOOT_PART)
        .ok_or_else(|| anyhow!("{MENDER_BOOT_PART} is not set in the boot environment"))?;
    let n: u32 = boot_part
        .trim()
        .parse()
        .map_err(|_| anyhow!("{MENDER_BOOT_PART} '{boot_part}' is not a partition number"))?;
    if partition_number(&a)? == n {
        Ok((a, b))
    } else if partition_number(&b)? == n {
        Ok((b, a))
    } else {
        bail!("{MENDER_BOOT_PART}={n} names neither RootfsPartA nor RootfsPartB")
    }
}

/// `RebootRequested` of the record handed back: what 3.x writes for its
/// built-in rootfs-image; 4.x then asks its `rootfs-image` module's
/// `ArtifactVerifyReboot` after the reboot, which that module has.
const REBOOT_TYPE: &str = "reboot-type-custom";
/// `Source.Expire` of the record handed back: the download is over, and
/// 3.x parses the field as a time (Go's zero time is what it writes for
/// none).
const NO_EXPIRY: &str = "0001-01-01T00:00:00Z";
/// The 4.x `rootfs-image` module's record of the partition to roll back
/// to, under `ModulesWorkPath`.
const ORIG_PART: &str = "payloads/0000/tree/tmp/orig-part";

/// Mender's state name before the reboot into the update.
pub const REBOOT: &str = "reboot";
/// Mender's state name after the reboot back from a rollback.
pub const AFTER_ROLLBACK_REBOOT: &str = "after-rollback-reboot";

/// The `state` record (`Name` = `name`) a Mender client finishes
/// `state`'s deployment from after a reboot (`docs/takeover.md`, "Hand
/// back before the reboot").
pub fn state_record(state: &UpdateState, device_type: &str, name: &str) -> Result<Value> {
    let id = state
        .deployment_id
        .as_deref()
        .ok_or_else(|| anyhow!("not a deployment"))?;
    let a = state
        .artifact
        .as_ref()
        .ok_or_else(|| anyhow!("no artifact recorded for the update"))?;
    let mut artifact = json!({
        "Source": {"URI": "", "Expire": NO_EXPIRY},
        "device_types_compatible": [device_type],
        "PayloadTypes": [ROOTFS],
        "artifact_name": a.name,
        "artifact_group": a.group.clone().unwrap_or_default(),
    });
    // 3.x leaves both out when empty (`omitempty`); 4.x defaults them.
    if !a.payload_provides.is_empty() {
        artifact["artifact_provides"] = json!(a.payload_provides);
    }
    if let Some(clears) = &a.clears_provides {
        artifact["clears_artifact_provides"] = json!(clears);
    }
    // Not asked yet: "", as 4.x and 5.x write it until a failure asks.
    let rollback = match state.supports_rollback {
        Some(true) => ROLLBACK_SUPPORTED,
        Some(false) => ROLLBACK_NOT_SUPPORTED,
        None => "",
    };
    Ok(json!({
        "Version": 2,
        "Name": name,
        "UpdateInfo": {
            "Artifact": artifact,
            "ID": id,
            "RebootRequested": [REBOOT_TYPE],
            "SupportsRollback": rollback,
            // Small: each load counts one up, and 4.x gives up at 28.
            "StateDataStoreCount": 1,
            "HasDBSchemaUpdate": false,
            "AllRollbacksSuccessful": false,
        }
    }))
}

/// Before our reboot into a new root filesystem: the `state` record (with
/// the installed software, in one LMDB write) and the 4.x module's
/// `orig-part` file, so that whichever client the new image runs finishes
/// the deployment. The artifact's state scripts are already where Mender
/// looks (`ArtifactScriptsPath`, with their `version` file). Only rootfs
/// images are handed back. Logged, not returned: a device that stays with
/// mender-rs does not need it.
pub fn hand_back_before_reboot(
    config: &Config,
    state: &UpdateState,
    installed: &Provides,
    device_type: &str,
) {
    let store = store_path(&config.data_dir);
    hand_back(config, state, installed, device_type, REBOOT, &store);
}

/// A taken-over deployment was rolled back; until its failure is
/// reported, a power loss would boot the partition that runs Mender: the
/// record `after-rollback-reboot` lets that client report the failure
/// itself (`docs/takeover.md`, "The failure path"). Removed with our
/// report ([`clear_handed_back`]).
pub fn hand_back_after_rollback(
    config: &Config,
    state: &UpdateState,
    installed: &Provides,
    device_type: &str,
) {
    let store = store_path(&config.data_dir);
    hand_back_after_rollback_to(config, state, installed, device_type, &store);
}

/// [`hand_back_after_rollback`] to the store at `store` (the take-over
/// builds it beside Mender's, then puts it in its place). Whether it was
/// written.
pub fn hand_back_after_rollback_to(
    config: &Config,
    state: &UpdateState,
    installed: &Provides,
    device_type: &str,
    store: &Path,
) -> bool {
    hand_back(
        config,
        state,
        installed,
        device_type,
        AFTER_ROLLBACK_REBOOT,
        store,
    )
}

fn hand_back(
    config: &Config,
    state: &UpdateState,
    installed: &Provides,
    device_type: &str,
    name: &str,
    store: &Path,
) -> bool {
    let Some(InstallerState::RootfsImage { previous, .. }) = &state.installer else {
        return false;
    };
    let result = (|| -> Result<()> {
        let record = serde_json::to_vec(&state_record(state, device_type, name)?)?;
        let n = partition_number(Path::new(previous))?;
        let orig = config.modules_work_path.join(ORIG_PART);
        let dir = orig.parent().ok_or_else(|| anyhow!("no parent"))?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fsutil::write_atomic(
            &orig,
            format!("orig_part_num={n}\norig_part_num_hex={n:X}\n").as_bytes(),
            0o644,
        )
        .with_context(|| format!("writing {}", orig.display()))?;
        let store = MenderStore::open_for_writing(store)?;
        store.write_installed_with(
            installed,
            &[
                Change::Put(KEY_STATE.as_bytes(), &record),
                Change::Delete(KEY_STATE_UNCOMMITTED.as_bytes()),
                Change::Delete(KEY_STANDALONE.as_bytes()),
                Change::Delete(KEY_CONTROL_MAPS.as_bytes()),
            ],
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            log::info!(
                "deployment handed back for a Mender client ({name}, {})",
                store.display()
            );
            true
        }
        Err(e) => {
            log::warn!("the deployment was not handed back for the Mender client: {e:#}");
            false
        }
    }
}

/// Our deployment is over (committed, rolled back or failed): the `state`
/// record handed back before its reboot goes, so that no Mender client
/// finishes it again. Nothing when there is no Mender store.
pub fn clear_handed_back(data_dir: &Path) {
    let path = store_path(data_dir);
    if std::fs::symlink_metadata(&path).is_err() {
        return;
    }
    let result = MenderStore::open_for_writing(&path).and_then(|s| {
        s.write_ours(&[
            Change::Delete(KEY_STATE.as_bytes()),
            Change::Delete(KEY_STATE_UNCOMMITTED.as_bytes()),
        ])
    });
    if let Err(e) = result {
        log::warn!("the handed-back deployment was not removed from the Mender store: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_handed_back_reads_as_mender_writes_it() {
        let state = UpdateState {
            phase: Phase::ArtifactReboot,
            artifact: Some(ArtifactInfo {
                name: "release-2".into(),
                group: None,
                payload_type: Some(ROOTFS.into()),
                payload_provides: [("rootfs-image.version".to_string(), "release-2".to_string())]
                    .into(),
                clears_provides: Some(vec!["rootfs-image.*".into()]),
            }),
            installer: None,
            reboot: Some(Reboot::Automatic),
            supports_rollback: Some(true),
            steps: 9,
            failed: false,
            manual_rollback: false,
            inconsistent: false,
            deployment_id: Some("d-9".into()),
            stopped_before: None,
        };
        let record = state_record(&state, "rpi4", REBOOT).unwrap();
        let text = serde_json::to_vec(&record).unwrap();
        let back = ManagedState::parse(&text).unwrap();
        assert_eq!((back.version, back.name.as_str()), (2, "reboot"));
        assert_eq!(back.deployment_id(), "d-9");
        assert_eq!(back.payload_type().as_deref(), Some(ROOTFS));
        assert_eq!(back.supports_rollback(), Some(true));
        assert_eq!(back.store_count(), 1);
        let a = back.artifact();
        assert_eq!(a.artifact_name, "release-2");
        assert_eq!(
            a.artifact_provides.unwrap()["rootfs-image.version"],
            "release-2"
        );
        // The fields 4.x requires, and a time 3.x can parse.
        let info = &record["UpdateInfo"];
        for field in ["RebootRequested", "SupportsRollback", "HasDBSchemaUpdate"] {
            assert!(!info[field].is_null(), "{field}");
        }
        assert_eq!(info["Artifact"]["Source"]["Expire"], NO_EXPIRY);
        assert_eq!(info["Artifact"]["device_types_compatible"][0], "rpi4");
        assert_eq!(info["Artifact"]["artifact_group"], "");
        let mut standalone = state.clone();
        standalone.deployment_id = None;
        assert!(state_record(&standalone, "rpi4", REBOOT).is_err());
    }
}
