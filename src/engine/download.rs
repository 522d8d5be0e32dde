//! The bridge from the artifact reader to the installer: the handler the
//! reader calls during `install` (header, then each payload file's bytes).
//! It checks the artifact against the device and the announced deployment,
//! stores the artifact's scripts, persists the update and feeds the payload
//! to the installer. It lives in the engine, not in `installer/`, because it
//! persists the engine's state and stores its scripts; the installers stay
//! unaware of both (`docs/architecture.md`, "The data path").

use anyhow::{Context, Result, anyhow, bail};

use super::{ArtifactInfo, Engine, Phase, UpdateState};
use crate::artifact::ArtifactError;
use crate::artifact::adaptive::LocalSource;
use crate::artifact::depends;
use crate::artifact::header::{ArtifactHeader, Provides};
use crate::artifact::reader::ArtifactHandler;
use crate::installer::{DeviceContext, Installer};
use crate::server::DeploymentInstruction;

/// The artifact is the one the deployment announced: the same name
/// exactly, and the device's own type in both the announced and the
/// artifact's compatible types (what the server checked is what installs).
fn check_announced(
    header: &ArtifactHeader,
    announced: &DeploymentInstruction,
    device_type: &str,
) -> Result<()> {
    if header.name != announced.artifact_name {
        bail!(
            "the artifact is named '{}' but deployment {} announced '{}': refusing an artifact the server did not announce",
            header.name,
            announced.id,
            announced.artifact_name
        );
    }
    let in_artifact = header.compatible_devices.iter().any(|d| d == device_type);
    let in_announced = announced
        .device_types_compatible
        .iter()
        .any(|d| d == device_type);
    if !in_artifact || !in_announced {
        bail!(
            "device type '{device_type}' must be in both the artifact's compatible device types [{}] and those deployment {} announced [{}]",
            header.compatible_devices.join(", "),
            announced.id,
            announced.device_types_compatible.join(", ")
        );
    }
    Ok(())
}

/// Receives the artifact during `install`: checks it against the device,
/// stores its scripts, and feeds the payload to the installer.
pub(super) struct DownloadHandler<'e, 'c, 's> {
    pub(super) engine: &'e mut Engine<'c>,
    pub(super) state: &'s mut UpdateState,
    pub(super) device_type: &'s str,
    pub(super) provides: &'s Provides,
    /// Managed mode: what the server announced; the artifact must be it.
    pub(super) announced: Option<&'s DeploymentInstruction>,
    pub(super) installer: Option<Box<dyn Installer>>,
}

impl DownloadHandler<'_, '_, '_> {
    fn installer(&mut self) -> Result<&mut Box<dyn Installer>> {
        self.installer
            .as_mut()
            .ok_or_else(|| anyhow!("payload data before the header"))
    }
}

impl ArtifactHandler for DownloadHandler<'_, '_, '_> {
    fn header(&mut self, header: &ArtifactHeader) -> Result<()> {
        // Before anything of the artifact is used: a server (or whoever
        // controls its storage) must not swap in another artifact.
        if let Some(announced) = self.announced {
            check_announced(header, announced, self.device_type)?;
        }
        depends::check_compatible(header, self.device_type, self.provides)?;
        let payload_type = header
            .payload()
            .and_then(|p| p.payload_type.clone())
            .ok_or_else(|| {
                anyhow!(
                    "artifact '{}' has an empty payload: nothing to install",
                    header.name
                )
            })?;
        let mut installer = self.engine.new_installer(&payload_type)?;
        // The installer's checks (a target slot that is the running one,
        // mounted, or in use) come before the artifact's scripts replace
        // the stored ones: a refused artifact leaves them as they were.
        installer.prepare(
            header,
            &DeviceContext {
                device_type: self.device_type,
                provides: self.provides,
            },
        )?;
        let scripts: Vec<(&str, &[u8])> = header
            .scripts
            .iter()
            .map(|s| (s.name.as_str(), s.content.as_slice()))
            .collect();
        self.engine
            .scripts
            .store_artifact_scripts(&scripts, header.format_version)
            .context("storing the artifact's state scripts")?;
        self.state.artifact = Some(ArtifactInfo::from_header(header));
        self.state.installer = installer.state();
        let mut state = self.state.clone();
        self.engine.persist(&mut state, Phase::Download)?;
        *self.state = state;
        self.installer = Some(installer);
        Ok(())
    }

    fn begin_file(&mut self, name: &str, size: u64) -> Result<()> {
        self.installer()?.begin_file(name, size)
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.installer()?.write(data)
    }

    fn end_file(&mut self) -> Result<()> {
        self.installer()?.end_file()
    }

    fn local_sources(&mut self) -> Vec<LocalSource> {
        self.installer
            .as_ref()
            .map(|i| i.local_sources())
            .unwrap_or_default()
    }

    fn abort(&mut self, error: &ArtifactError) {
        log::error!("download failed: {error}");
        if let Some(i) = self.installer.as_mut() {
            i.abort_download();
        }
    }
}
