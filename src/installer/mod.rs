//! Installers: what receives a payload and carries it through install,
//! reboot, commit and rollback. The built-in `rootfs-image` A/B installer and
//! Update Modules share this interface, so the state machine does not care
//! which one it drives.

pub mod module;
pub mod rootfs;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::artifact::adaptive::LocalSource;
use crate::artifact::header::{ArtifactHeader, Provides};

/// How a payload wants the device rebooted after install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reboot {
    No,
    /// The installer reboots (Update Module `ArtifactReboot`).
    Yes,
    /// The client runs the system's `reboot`.
    Automatic,
}

/// What the device knows about itself when an artifact arrives.
pub struct DeviceContext<'a> {
    pub device_type: &'a str,
    pub provides: &'a Provides,
}

/// What an installer needs to be rebuilt after a restart, persisted with the
/// update state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum InstallerState {
    RootfsImage {
        /// The partition the payload goes to (the inactive one).
        target: String,
        /// The partition that was running when the update started.
        previous: String,
    },
    Module {
        payload_type: String,
        module: String,
    },
}

pub trait Installer {
    /// The header is verified: prepare to receive the payload.
    fn prepare(&mut self, header: &ArtifactHeader, device: &DeviceContext) -> Result<()>;
    fn begin_file(&mut self, name: &str, size: u64) -> Result<()>;
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// The file is complete and its checksum held.
    fn end_file(&mut self) -> Result<()>;
    /// Every payload file arrived intact.
    fn finish_download(&mut self) -> Result<()>;
    /// The download failed: undo whatever began.
    fn abort_download(&mut self);
    fn install(&mut self) -> Result<()>;
    fn needs_reboot(&mut self) -> Result<Reboot>;
    fn supports_rollback(&mut self) -> Result<bool>;
    /// Called by the installer's own reboot (`Yes`).
    fn reboot(&mut self) -> Result<()>;
    /// After the reboot: did the new software come up?
    fn verify_reboot(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    fn rollback(&mut self) -> Result<()>;
    fn rollback_reboot(&mut self) -> Result<()>;
    fn verify_rollback_reboot(&mut self) -> Result<()>;
    fn failure(&mut self) -> Result<()>;
    fn cleanup(&mut self) -> Result<()>;
    /// True while the update is installed but the device has not rebooted
    /// into it yet (standalone `commit` refuses then).
    fn awaiting_reboot(&mut self) -> Result<bool> {
        Ok(false)
    }
    /// What to persist to rebuild this installer after a restart.
    fn state(&self) -> Option<InstallerState>;
    /// Earlier images on the device an adaptive install may take chunks
    /// from (after `prepare`); empty for payloads that are not images.
    fn local_sources(&self) -> Vec<LocalSource> {
        Vec::new()
    }
}
