//! Payloads handled by an Update Module (protocol v3, as
//! `docs/update-modules.md` describes it): the [`Installer`] adapter that
//! drives the protocol, which lives in the files below it:
//!
//! * `calls.rs`: finding a module, the state calls and queries, the errors;
//! * `file_tree.rs`: the file tree written before `Download`;
//! * `download.rs`: the streaming `Download` (or `DownloadWithFileSizes`)
//!   session (the FIFOs).

mod calls;
mod download;
mod file_tree;

pub use calls::{
    KILL_GRACE, ModuleCall, ModuleConfig, ModuleError, OUTPUT_CAP, RebootKind, UpdateModule,
    find_module,
};
pub use download::DownloadSession;

use anyhow::{Context, Result, anyhow};

use super::{DeviceContext, Installer, InstallerState, Reboot};
use crate::artifact::header::ArtifactHeader;

pub struct ModuleInstaller {
    payload_type: String,
    module: UpdateModule,
    module_path: std::path::PathBuf,
    session: Option<DownloadSession>,
    reboot: Option<Reboot>,
}

impl ModuleInstaller {
    pub fn new(config: &ModuleConfig, payload_type: &str, module_path: std::path::PathBuf) -> Self {
        ModuleInstaller {
            payload_type: payload_type.to_string(),
            module: UpdateModule::new(config, module_path.clone()),
            module_path,
            session: None,
            reboot: None,
        }
    }

    fn session(&mut self) -> Result<&mut DownloadSession> {
        self.session
            .as_mut()
            .ok_or_else(|| anyhow!("the module's download is not running"))
    }
}

impl Installer for ModuleInstaller {
    fn prepare(&mut self, header: &ArtifactHeader, device: &DeviceContext) -> Result<()> {
        self.module
            .prepare_tree(header, device.provides, device.device_type)?;
        // Asked in the prepared tree right before the download, as Mender
        // 4.x does; a 3.x module answers nothing, which means No.
        let file_sizes = self.module.provide_payload_file_sizes()?;
        self.session = Some(self.module.start_download_with(file_sizes)?);
        Ok(())
    }

    fn begin_file(&mut self, name: &str, size: u64) -> Result<()> {
        Ok(self.session()?.begin_file(name, size)?)
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        Ok(self.session()?.write(data)?)
    }

    fn end_file(&mut self) -> Result<()> {
        Ok(self.session()?.end_file()?)
    }

    fn finish_download(&mut self) -> Result<()> {
        let session = self
            .session
            .take()
            .ok_or_else(|| anyhow!("the module's download is not running"))?;
        session.finish()?;
        Ok(())
    }

    fn abort_download(&mut self) {
        if let Some(session) = self.session.take() {
            session.abort();
        }
    }

    fn install(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactInstall)?)
    }

    fn needs_reboot(&mut self) -> Result<Reboot> {
        if let Some(r) = self.reboot {
            return Ok(r);
        }
        let r = match self.module.needs_reboot()? {
            RebootKind::No => Reboot::No,
            RebootKind::Yes => Reboot::Yes,
            RebootKind::Automatic => Reboot::Automatic,
        };
        self.reboot = Some(r);
        Ok(r)
    }

    /// Asks the module every time: the engine decides when (Mender 3.4
    /// asks again before a rollback) and keeps the answer in its state.
    fn supports_rollback(&mut self) -> Result<bool> {
        Ok(self.module.supports_rollback()?)
    }

    fn reboot(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactReboot)?)
    }

    fn verify_reboot(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactVerifyReboot)?)
    }

    fn commit(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactCommit)?)
    }

    fn rollback(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactRollback)?)
    }

    fn rollback_reboot(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactRollbackReboot)?)
    }

    fn verify_rollback_reboot(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactVerifyRollbackReboot)?)
    }

    fn failure(&mut self) -> Result<()> {
        Ok(self.module.call(ModuleCall::ArtifactFailure)?)
    }

    fn cleanup(&mut self) -> Result<()> {
        self.module.cleanup().with_context(|| {
            format!(
                "module {}: {}",
                self.module_path.display(),
                ModuleCall::Cleanup
            )
        })
    }

    fn state(&self) -> Option<InstallerState> {
        Some(InstallerState::Module {
            payload_type: self.payload_type.clone(),
            module: self.module_path.display().to_string(),
        })
    }
}
