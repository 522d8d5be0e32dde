//! The update state machine: states and transitions of Mender's client,
//! state scripts around each state, and the power-loss rules. Standalone
//! use (`install`, `commit`, `rollback`) is here; deployments from a
//! server (the daemon) add the reboot states and status reports in
//! [`managed`].
//!
//! Every transition is persisted (crash-safely, see [`crate::store`]) before
//! its scripts and work run. A process that dies anywhere is resumed by the
//! next command: an interrupted download is abandoned, an interrupted install
//! or commit is rolled back, and error states (`ArtifactRollback`,
//! `ArtifactFailure`, `Cleanup`) and `ArtifactCommit_Leave` are run again.

pub mod bootstrap;
mod download;
pub mod managed;
mod stop;

pub use managed::DeploymentHooks;
pub use stop::{StopPoint, Stopped};

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::artifact::adaptive::ArtifactSource;
use crate::artifact::depends;
use crate::artifact::header::{ArtifactHeader, PayloadHeader, Provides};
use crate::artifact::reader::{self, ReadOptions, SignaturePolicy};
use crate::artifact::signature::VerifyKey;
use crate::bootenv::BootEnv;
use crate::config::Config;
use crate::deployment_log::DeploymentLog;
use crate::installer::module::{self, ModuleConfig, ModuleInstaller};
use crate::installer::rootfs::RootfsInstaller;
use crate::installer::{Installer, InstallerState, Reboot};
use crate::scripts::{ScriptAction, ScriptConfig, ScriptRunner, ScriptState};
use crate::server::DeploymentInstruction;
use crate::states::state_label;
use crate::store::Store;
use download::DownloadHandler;

/// Standalone updates have no server-side deployment id; their log is
/// `deployments.NNNN.standalone.log`.
pub const STANDALONE_DEPLOYMENT_ID: &str = "standalone";

/// An update that keeps crashing is abandoned after this many transitions
/// (Mender's `MaximumStateDataStoreCount`).
pub const MAX_STEPS: u32 = 30;

/// Where an update stands; persisted before the state's work starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Download,
    ArtifactInstall,
    /// Installed, waiting for a reboot and `commit` (or `rollback`).
    Installed,
    ArtifactCommit,
    /// Committed (provides written); the Leave scripts remain.
    ArtifactCommitLeave,
    ArtifactRollback,
    ArtifactFailure,
    Cleanup,
    /// Managed: downloaded and verified, not installed yet.
    Downloaded,
    /// Managed: rebooting into the update (a restart here is the reboot).
    ArtifactReboot,
    /// Managed: rebooting back into the previous software.
    ArtifactRollbackReboot,
    /// Managed: done; the final status is still to be reported.
    StatusReport,
}

/// What the store keeps about the artifact being installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub name: String,
    pub group: Option<String>,
    pub payload_type: Option<String>,
    pub payload_provides: Provides,
    pub clears_provides: Option<Vec<String>>,
}

impl ArtifactInfo {
    fn from_header(h: &ArtifactHeader) -> Self {
        let p = h.payload();
        ArtifactInfo {
            name: h.name.clone(),
            group: h.group.clone(),
            payload_type: p.and_then(|p| p.payload_type.clone()),
            payload_provides: h.payloads.iter().flat_map(|p| p.provides.clone()).collect(),
            clears_provides: h.clears_provides(),
        }
    }

    /// Enough of a header for the provides bookkeeping.
    fn as_header(&self) -> ArtifactHeader {
        ArtifactHeader {
            name: self.name.clone(),
            group: self.group.clone(),
            payloads: vec![PayloadHeader {
                payload_type: self.payload_type.clone(),
                provides: self.payload_provides.clone(),
                clears_provides: self.clears_provides.clone(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// The update in progress, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateState {
    pub phase: Phase,
    pub artifact: Option<ArtifactInfo>,
    pub installer: Option<InstallerState>,
    pub reboot: Option<Reboot>,
    pub supports_rollback: Option<bool>,
    /// Persisted transitions so far (loop protection).
    pub steps: u32,
    /// The update has failed; what remains is cleaning up.
    pub failed: bool,
    /// The user asked for the rollback (standalone `rollback`): like Mender,
    /// no ArtifactFailure follows it.
    #[serde(default)]
    pub manual_rollback: bool,
    /// The device was marked `_INCONSISTENT` during this update.
    #[serde(default)]
    pub inconsistent: bool,
    /// The server's deployment (managed mode); `None` for standalone.
    #[serde(default)]
    pub deployment_id: Option<String>,
    /// Stopped by `--stop-before` before this point, the phase not started
    /// (see [`stop`]); cleared by the next transition.
    #[serde(default)]
    pub stopped_before: Option<StopPoint>,
}

impl UpdateState {
    fn new(deployment_id: Option<String>) -> UpdateState {
        UpdateState {
            phase: Phase::Download,
            artifact: None,
            installer: None,
            reboot: None,
            supports_rollback: None,
            steps: 0,
            failed: false,
            manual_rollback: false,
            inconsistent: false,
            deployment_id,
            stopped_before: None,
        }
    }

    fn needs_reboot(&self) -> bool {
        self.reboot.is_some_and(|r| r != Reboot::No)
    }
}

/// How a command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Installed; waiting for commit (a reboot first when `reboot`).
    Installed { reboot: bool },
    /// Installed and committed at once (the payload cannot roll back); a
    /// reboot may still be needed for it to take effect.
    Committed { reboot: bool },
    /// Rolled back on request.
    RolledBack,
    /// `commit` or `rollback` with no update in progress.
    NothingToDo,
    /// Stopped where `--stop-before` asked; `resume` goes on.
    Stopped(StopPoint),
}

pub struct Engine<'c> {
    config: &'c Config,
    store: Store,
    scripts: ScriptRunner,
    verify_keys: Vec<VerifyKey>,
    /// `--stop-before` (standalone commands only).
    stop_before: Vec<StopPoint>,
}

impl<'c> Engine<'c> {
    pub fn open(config: &'c Config) -> Result<Self> {
        let store = Store::open(&config.data_dir)?;
        let scripts = ScriptRunner::new(ScriptConfig::from_config(config));
        let mut verify_keys = Vec::new();
        for path in &config.artifact_verify_keys {
            match VerifyKey::load(path) {
                Ok(k) => verify_keys.push(k),
                // Mender skips unreadable keys with a log; when none is left
                // we refuse every artifact rather than accept unsigned ones.
                Err(e) => log::error!("artifact verification key skipped: {e}"),
            }
        }
        if !config.artifact_verify_keys.is_empty() && verify_keys.is_empty() {
            bail!(
                "none of the configured ArtifactVerifyKey(s) could be loaded; refusing to install anything"
            );
        }
        Ok(Engine {
            config,
            store,
            scripts,
            verify_keys,
            stop_before: Vec::new(),
        })
    }

    /// What the device provides now (see [`Store::effective_provides`]).
    pub fn provides(&self) -> Provides {
        self.store
            .effective_provides(&self.config.artifact_info_file)
    }

    fn update(&self) -> Result<Option<UpdateState>> {
        match &self.store.data().update {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| anyhow!("the stored update state is unreadable: {e}")),
        }
    }

    /// Persists `state` (counting the step) and, with `commit_provides`, the
    /// provides after commit in the same write.
    fn persist(&mut self, state: &mut UpdateState, phase: Phase) -> Result<()> {
        state.phase = phase;
        state.steps += 1;
        state.stopped_before = None;
        let value = serde_json::to_value(&*state)?;
        self.store.save(|d| d.update = Some(value))?;
        Ok(())
    }

    fn clear_update(&mut self) -> Result<()> {
        self.store.save(|d| d.update = None)?;
        crate::logging::set_deployment_log(None);
        Ok(())
    }

    /// Sends the log records of this update to its deployment log (a new
    /// one for a new update).
    fn attach_deployment_log(&self, state: &UpdateState, new: bool) {
        let dir = &self.config.update_log_path;
        let id = state
            .deployment_id
            .as_deref()
            .unwrap_or(STANDALONE_DEPLOYMENT_ID);
        let log = if new {
            DeploymentLog::start(dir, id)
        } else {
            DeploymentLog::resume(dir, id)
        };
        match log {
            Ok(log) => {
                crate::logging::set_deployment_log(Some(log));
            }
            Err(e) => log::warn!("no deployment log: {e}"),
        }
    }

    fn inconsistent_name(&self, state: &UpdateState) -> String {
        let name = state
            .artifact
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_else(|| self.provides()["artifact_name"].clone());
        log::error!(
            "the device is in an inconsistent state: artifact name set to {name}_INCONSISTENT"
        );
        format!("{name}_INCONSISTENT")
    }

    /// Marks the device `<name>_INCONSISTENT`. Standalone, the artifact's
    /// provides are committed with that name, as Mender 3.4 and 4.x/5.x do
    /// in standalone mode; a deployment from a server keeps the provides
    /// the device had and changes only the name, as their daemons do
    /// (`docs/state-scripts.md`, "Inconsistent").
    fn mark_inconsistent(&mut self, state: &mut UpdateState) -> Result<()> {
        state.inconsistent = true;
        let name = self.inconsistent_name(state);
        let mut next = match (&state.artifact, &state.deployment_id) {
            (Some(artifact), None) => {
                depends::provides_after_commit(self.store.provides(), &artifact.as_header())
            }
            _ => self.store.provides().clone(),
        };
        next.insert("artifact_name".into(), name);
        self.store.save(|d| d.provides = next)?;
        Ok(())
    }

    fn run_scripts(&self, state: ScriptState, action: ScriptAction) -> Result<()> {
        self.scripts.run(state, action, false)?;
        Ok(())
    }

    /// Runs every script of the action; false when one failed.
    fn run_all_scripts(&self, state: ScriptState, action: ScriptAction) -> bool {
        match self.scripts.run_all(state, action) {
            Ok(_) => true,
            Err(e) => {
                log::error!("{} {:?} scripts: {e}", state.name(), action);
                false
            }
        }
    }

    /// Scripts whose failures are only logged.
    fn run_scripts_ignoring(&self, state: ScriptState, action: ScriptAction) {
        if let Err(e) = self.scripts.run(state, action, true) {
            log::error!("{} {:?} scripts: {e}", state.name(), action);
        }
    }

    fn device_type(&self) -> Result<String> {
        Ok(self.config.device_type()?)
    }

    fn boot_env(&self) -> Result<Box<dyn BootEnv>> {
        open_boot_env(self.config)
    }

    fn rootfs_parts(&self) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        match (&self.config.rootfs_part_a, &self.config.rootfs_part_b) {
            (Some(a), Some(b)) => Ok((a.clone(), b.clone())),
            _ => {
                bail!("rootfs-image updates need RootfsPartA and RootfsPartB in the configuration")
            }
        }
    }

    fn module_config(&self) -> ModuleConfig {
        ModuleConfig {
            modules_dir: self.config.modules_path.clone(),
            work_dir: self.config.modules_work_path.clone(),
            timeout: self.config.module_timeout,
        }
    }

    /// A fresh installer for `payload_type`.
    fn new_installer(&self, payload_type: &str) -> Result<Box<dyn Installer>> {
        if payload_type == "rootfs-image" {
            let (a, b) = self.rootfs_parts()?;
            return Ok(Box::new(RootfsInstaller::new(a, b, self.boot_env()?)));
        }
        match module::find_module(&self.config.modules_path, payload_type)? {
            Some(path) => Ok(Box::new(ModuleInstaller::new(
                &self.module_config(),
                payload_type,
                path,
            ))),
            None => bail!(
                "no Update Module for payload type '{payload_type}' in {}",
                self.config.modules_path.display()
            ),
        }
    }

    /// The installer of an update in progress.
    fn resume_installer(&self, state: &InstallerState) -> Result<Box<dyn Installer>> {
        Ok(match state {
            InstallerState::RootfsImage { target, previous } => {
                let (a, b) = self.rootfs_parts()?;
                Box::new(RootfsInstaller::resume(
                    a,
                    b,
                    self.boot_env()?,
                    target,
                    previous,
                ))
            }
            InstallerState::Module {
                payload_type,
                module,
            } => Box::new(ModuleInstaller::new(
                &self.module_config(),
                payload_type,
                module.into(),
            )),
        })
    }

    /// Finishes whatever an earlier process left in a transient state.
    /// Returns the name of the artifact whose interrupted update was
    /// finished (and so did not end installed), if there was one.
    pub fn resume_interrupted(&mut self) -> Result<Option<String>> {
        let Some(state) = self.update()? else {
            return Ok(None);
        };
        if state.phase == Phase::Installed {
            return Ok(None);
        }
        if let Some(point) = state.stopped_before {
            return Err(Self::refuse_stopped(&state, point));
        }
        if let Some(id) = &state.deployment_id {
            bail!(
                "deployment {id} from the server is in progress ({:?}); the daemon finishes it",
                state.phase
            );
        }
        let name = state
            .artifact
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_else(|| "?".into());
        self.resume(state)?;
        Ok(Some(name))
    }

    fn resume(&mut self, mut state: UpdateState) -> Result<()> {
        self.attach_deployment_log(&state, false);
        log::warn!("resuming an update interrupted in state {:?}", state.phase);
        if state.steps >= MAX_STEPS {
            log::error!(
                "the update was interrupted {} times; giving up",
                state.steps
            );
            // One write: a crash here must not leave the loop running.
            let name = self.inconsistent_name(&state);
            self.store.save(|d| {
                d.provides.insert("artifact_name".into(), name);
                d.update = None;
            })?;
            crate::logging::set_deployment_log(None);
            return Ok(());
        }
        let mut installer = match &state.installer {
            Some(i) => Some(self.resume_installer(i)?),
            None => None,
        };
        match state.phase {
            Phase::Installed => Ok(()),
            Phase::Download => {
                // The payload was never fully verified: no artifact script
                // runs, nothing was switched.
                log::error!("the interrupted download is abandoned");
                state.failed = true;
                self.cleanup(&mut state, installer.as_deref_mut())
            }
            // Downloaded: `resume` after a stop before the install was
            // interrupted; as 5.x, the error path (nothing was switched).
            Phase::ArtifactInstall | Phase::ArtifactCommit | Phase::Downloaded => {
                let inst = installer
                    .ok_or_else(|| anyhow!("no installer recorded for the interrupted update"))?;
                self.error_path(&mut state, inst)
            }
            Phase::ArtifactCommitLeave => {
                let mut inst = installer.ok_or_else(|| anyhow!("no installer recorded"))?;
                self.commit_leave(&mut state, inst.as_mut())
            }
            Phase::ArtifactRollback => {
                let inst = installer.ok_or_else(|| anyhow!("no installer recorded"))?;
                self.rollback_and_fail(&mut state, inst)
            }
            Phase::ArtifactFailure => {
                let mut inst = installer.ok_or_else(|| anyhow!("no installer recorded"))?;
                self.failure(&mut state, inst.as_mut())?;
                self.cleanup(&mut state, Some(inst.as_mut()))
            }
            Phase::Cleanup => self.cleanup(&mut state, installer.as_deref_mut()),
            // Managed phases; a standalone resume never sees them (see
            // `resume_interrupted`), the daemon resumes them itself.
            Phase::ArtifactReboot | Phase::ArtifactRollbackReboot | Phase::StatusReport => {
                bail!(
                    "the update was left in {:?}, which only the daemon resumes",
                    state.phase
                )
            }
        }
    }

    /// `install`: download into the installer, install, and stop before the
    /// reboot (or commit at once when the payload cannot roll back).
    pub fn install(&mut self, input: ArtifactSource) -> Result<Outcome> {
        let result = self.install_steps(input);
        Self::outcome_of(result, false)
    }

    fn install_steps(&mut self, input: ArtifactSource) -> Result<Outcome> {
        self.resume_interrupted()?;
        if let Some(old) = self.update()? {
            log::warn!(
                "replacing the uncommitted update '{}'",
                old.artifact
                    .as_ref()
                    .map(|a| a.name.as_str())
                    .unwrap_or("?")
            );
        }
        let mut state = UpdateState::new(None);
        self.persist(&mut state, Phase::Download)?;
        self.attach_deployment_log(&state, true);

        let mut input = Some(input);
        let mut open = || {
            input
                .take()
                .ok_or_else(|| anyhow!("the artifact stream was already used"))
        };
        let installer = match self.download(&mut state, &mut open, None) {
            Ok(installer) => installer,
            Err((e, mut installer)) => {
                self.run_scripts_ignoring(ScriptState::Download, ScriptAction::Error);
                state.failed = true;
                if let Err(c) = self.cleanup(&mut state, installer.as_deref_mut()) {
                    log::error!("cleanup after the failed download: {c:#}");
                }
                return Err(e);
            }
        };
        // Mender 3.4 asks after Download_Leave; a failed answer ends the
        // update before any artifact script runs (`docs/update-modules.md`).
        let mut installer = installer;
        match installer.supports_rollback() {
            Ok(r) => state.supports_rollback = Some(r),
            Err(e) => {
                state.failed = true;
                if let Err(c) = self.cleanup(&mut state, Some(installer.as_mut())) {
                    log::error!("cleanup after the failed query: {c:#}");
                }
                return Err(e.context("asking the payload whether it can roll back"));
            }
        }
        if self.stop_requested(StopPoint::ArtifactInstallEnter) {
            self.persist_or_stop(
                &mut state,
                Phase::Downloaded,
                StopPoint::ArtifactInstallEnter,
            )?;
        }
        self.finish_install(state, installer)
    }

    /// From the downloaded payload to installed (or committed, when the
    /// payload cannot roll back).
    fn finish_install(
        &mut self,
        mut state: UpdateState,
        installer: Box<dyn Installer>,
    ) -> Result<Outcome> {
        let (reboot, mut installer) = self
            .install_state(&mut state, installer, &mut || Ok(()))
            .map_err(|e| e.context("the update was rolled back"))?;
        state.reboot = Some(reboot);
        // Asked after the download (`install_steps`), also before a stop.
        let rollback = match state.supports_rollback {
            Some(r) => r,
            None => installer.supports_rollback()?,
        };
        state.supports_rollback = Some(rollback);
        self.persist(&mut state, Phase::Installed)?;
        if !rollback && !self.stop_requested(StopPoint::ArtifactCommitEnter) {
            log::info!("the payload cannot be rolled back: committing at once");
            self.commit_installed(&mut state, installer, None)?;
            return Ok(Outcome::Committed {
                reboot: reboot != Reboot::No,
            });
        }
        Ok(Outcome::Installed {
            reboot: reboot != Reboot::No,
        })
    }

    /// The ArtifactInstall state: Enter scripts, `before` (managed mode
    /// reports the status there), the install, Leave scripts. A failure
    /// runs the Error scripts and the error path (rollback) and is
    /// returned.
    fn install_state(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
        before: &mut dyn FnMut() -> Result<()>,
    ) -> Result<(Reboot, Box<dyn Installer>)> {
        self.persist(state, Phase::ArtifactInstall)?;
        // `NeedsArtifactReboot` is asked before ArtifactInstall_Leave by
        // Mender 3.x's daemon, after it in standalone mode.
        let standalone = state.deployment_id.is_none();
        let installed = (|| -> Result<Option<Reboot>> {
            self.run_scripts(ScriptState::ArtifactInstall, ScriptAction::Enter)?;
            before()?;
            installer.install()?;
            let reboot = if standalone {
                None
            } else {
                Some(installer.needs_reboot()?)
            };
            self.run_scripts(ScriptState::ArtifactInstall, ScriptAction::Leave)?;
            Ok(reboot)
        })();
        match installed {
            Ok(Some(reboot)) => Ok((reboot, installer)),
            Ok(None) => match installer.needs_reboot() {
                Ok(reboot) => Ok((reboot, installer)),
                Err(e) => {
                    // Past the state: its Error scripts do not run (3.4).
                    log::error!("installing failed: {e:#}");
                    self.error_path(state, installer)?;
                    Err(e.context("installing failed"))
                }
            },
            Err(e) => {
                log::error!("installing failed: {e:#}");
                self.run_scripts_ignoring(ScriptState::ArtifactInstall, ScriptAction::Error);
                self.error_path(state, installer)?;
                Err(e.context("installing failed"))
            }
        }
    }

    /// Download with its scripts; on error returns the installer (if one was
    /// made) so the caller can clean it up.
    #[allow(clippy::type_complexity)]
    fn download(
        &mut self,
        state: &mut UpdateState,
        open: &mut dyn FnMut() -> Result<ArtifactSource>,
        announced: Option<&DeploymentInstruction>,
    ) -> std::result::Result<Box<dyn Installer>, (anyhow::Error, Option<Box<dyn Installer>>)> {
        if let Err(e) = self.run_scripts(ScriptState::Download, ScriptAction::Enter) {
            return Err((e, None));
        }
        let input = match open() {
            Ok(input) => input,
            Err(e) => return Err((e, None)),
        };
        let device_type = match self.device_type() {
            Ok(d) => d,
            Err(e) => return Err((e, None)),
        };
        let provides = self.provides();
        let mut handler = DownloadHandler {
            engine: self,
            state,
            device_type: &device_type,
            provides: &provides,
            announced,
            installer: None,
        };
        let options = ReadOptions {
            verify_keys: &handler.engine.verify_keys.clone(),
            policy: SignaturePolicy::Enforce,
            ranges: input.ranges,
        };
        let result = reader::read_artifact(input.stream, &options, &mut handler);
        let installer = handler.installer.take();
        let mut installer = match (result, installer) {
            (Ok(_), Some(i)) => i,
            (Ok(_), None) => return Err((anyhow!("the artifact has no payload to install"), None)),
            (Err(e), i) => return Err((anyhow::Error::from(e), i)),
        };
        if let Err(e) = installer.finish_download() {
            installer.abort_download();
            return Err((e, Some(installer)));
        }
        if announced.is_some() {
            // Mender 3.x's daemon asks right after the download, before
            // Download_Leave; standalone asks after it (`install`).
            match installer.supports_rollback() {
                Ok(r) => state.supports_rollback = Some(r),
                Err(e) => return Err((e, Some(installer))),
            }
        }
        if let Err(e) = self.run_scripts(ScriptState::Download, ScriptAction::Leave) {
            return Err((e, Some(installer)));
        }
        Ok(installer)
    }

    /// The installed update `commit` or `rollback` acts on, after finishing
    /// whatever an earlier process left interrupted. None: nothing pending.
    fn pending_update(&mut self, verb: &str) -> Result<Option<(UpdateState, Box<dyn Installer>)>> {
        if let Some(name) = self.resume_interrupted()? {
            bail!(
                "the interrupted update to '{name}' was finished by the power-loss rules; nothing left to {verb}"
            );
        }
        let Some(state) = self.update()? else {
            return Ok(None);
        };
        if state.phase != Phase::Installed {
            return Ok(None);
        }
        let installer_state = state
            .installer
            .clone()
            .ok_or_else(|| anyhow!("no installer recorded for the pending update"))?;
        let installer = self.resume_installer(&installer_state)?;
        self.attach_deployment_log(&state, false);
        Ok(Some((state, installer)))
    }

    /// `commit`: verify the reboot, commit, record the new provides.
    pub fn commit(&mut self) -> Result<Outcome> {
        let result = self.commit_steps();
        Self::outcome_of(result, false)
    }

    fn commit_steps(&mut self) -> Result<Outcome> {
        let Some((mut state, mut installer)) = self.pending_update("commit")? else {
            return Ok(Outcome::NothingToDo);
        };
        // Only the built-in rootfs installer checks the reboot here (our
        // deliberate refusal, `docs/differences.md`): for an Update Module
        // standalone `commit` runs the commit states alone, as Mender 3.4
        // and 4.x do; the module's `ArtifactCommit` checks what it needs.
        let rootfs = matches!(state.installer, Some(InstallerState::RootfsImage { .. }));
        if rootfs && state.reboot.is_some_and(|r| r != Reboot::No) {
            if installer.awaiting_reboot()? {
                bail!("the device has not rebooted into the update yet: reboot first, then commit");
            }
            if let Err(e) = installer.verify_reboot() {
                log::error!("the update did not come up after the reboot: {e:#}");
                self.error_path(&mut state, installer)?;
                return Err(e.context("the update failed after the reboot and was rolled back; reboot to return to the previous software"));
            }
        }
        self.commit_installed(&mut state, installer, None)?;
        Ok(Outcome::Committed { reboot: false })
    }

    /// Commits; `hooks` (managed mode) reports to the server first, and a
    /// failure of that report fails the commit.
    fn commit_installed(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
        hooks: Option<&mut dyn DeploymentHooks>,
    ) -> Result<()> {
        if self.stop_requested(StopPoint::ArtifactCommitEnter) {
            // Installed is where the update stands: no write needed.
            return Err(self.stopped(state, StopPoint::ArtifactCommitEnter));
        }
        self.persist(state, Phase::ArtifactCommit)?;
        let id = state.deployment_id.clone();
        let committed = (|| -> Result<()> {
            self.run_scripts(ScriptState::ArtifactCommit, ScriptAction::Enter)?;
            if let (Some(hooks), Some(id)) = (hooks, id) {
                hooks.pre_commit(&id)?;
            }
            self.scripts.check_rootfs_version()?;
            installer.commit()
        })();
        if let Err(e) = committed {
            log::error!("committing failed: {e:#}");
            self.run_scripts_ignoring(ScriptState::ArtifactCommit, ScriptAction::Error);
            self.error_path(state, installer)?;
            return Err(e.context("committing failed; the update was rolled back (reboot to return to the previous software if the device runs the update)"));
        }
        // The point of no return: the provides change with the state.
        let artifact = state
            .artifact
            .clone()
            .ok_or_else(|| anyhow!("no artifact recorded for the update"))?;
        let next = depends::provides_after_commit(self.store.provides(), &artifact.as_header());
        state.phase = Phase::ArtifactCommitLeave;
        state.steps += 1;
        let stop = StopPoint::ArtifactCommitLeave;
        state.stopped_before = self.stop_requested(stop).then_some(stop);
        let value = serde_json::to_value(&*state)?;
        self.store.save(|d| {
            d.provides = next;
            d.update = Some(value);
        })?;
        if state.stopped_before.is_some() {
            return Err(self.stopped(state, stop));
        }
        self.commit_leave(state, installer.as_mut())
    }

    fn commit_leave(
        &mut self,
        state: &mut UpdateState,
        installer: &mut (dyn Installer + 'static),
    ) -> Result<()> {
        if let Err(e) = self.run_scripts(ScriptState::ArtifactCommit, ScriptAction::Leave) {
            // Too late to roll back.
            self.run_scripts_ignoring(ScriptState::ArtifactCommit, ScriptAction::Error);
            self.mark_inconsistent(state)?;
            state.failed = true;
            self.cleanup(state, Some(installer))?;
            let label = state_label(ScriptState::ArtifactCommit, ScriptAction::Leave);
            return Err(e.context(format!("{label} failed after the commit")));
        }
        self.cleanup(state, Some(installer))
    }

    /// `rollback` of an installed, uncommitted update.
    pub fn rollback(&mut self) -> Result<Outcome> {
        let stopped = self
            .update()?
            .filter(|s| s.deployment_id.is_none())
            .and_then(|s| s.stopped_before.map(|point| (s, point)));
        let result = match stopped {
            Some((state, point)) => self.rollback_stopped(state, point),
            None => self.rollback_steps(),
        };
        Self::outcome_of(result, true)
    }

    fn rollback_steps(&mut self) -> Result<Outcome> {
        let Some((mut state, mut installer)) = self.pending_update("roll back")? else {
            return Ok(Outcome::NothingToDo);
        };
        // Asked again, as Mender 3.4 does; nothing has changed yet when the
        // answer is an error or No.
        if !installer.supports_rollback()? {
            bail!("the installed payload does not support rollback");
        }
        state.manual_rollback = true;
        self.rollback_and_fail(&mut state, installer)?;
        if state.inconsistent {
            bail!("the rollback did not complete cleanly: the device is marked inconsistent");
        }
        Ok(Outcome::RolledBack)
    }

    /// After a failure past the download: roll back when possible, run the
    /// failure state, clean up.
    fn error_path(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
    ) -> Result<()> {
        state.failed = true;
        let ask = state.deployment_id.is_none() || state.supports_rollback.is_none();
        let rollback = if ask {
            // Standalone, Mender 3.4 asks the payload again here; a failed
            // answer means no rollback (and so an inconsistent device).
            installer.supports_rollback().unwrap_or_else(|e| {
                log::error!("asking the payload whether it can roll back: {e:#}");
                false
            })
        } else {
            state.supports_rollback.unwrap_or(false)
        };
        state.supports_rollback = Some(rollback);
        if rollback {
            self.rollback_and_fail(state, installer)
        } else {
            self.mark_inconsistent(state)?;
            self.failure(state, installer.as_mut())?;
            self.cleanup(state, Some(installer.as_mut()))
        }
    }

    fn rollback_and_fail(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
    ) -> Result<()> {
        state.failed = true;
        self.persist_or_stop(
            state,
            Phase::ArtifactRollback,
            StopPoint::ArtifactRollbackEnter,
        )?;
        if self.taken_over(state) {
            // Before the boot environment switches back: from here a
            // power loss boots the partition that runs the Mender client,
            // which reports the failure from this record
            // (`docs/takeover.md`, "The failure path").
            self.hand_back_after_rollback(state);
        }
        // A failing rollback script does not stop the rollback, but the
        // device can no longer be trusted to be in a known state (Mender
        // marks it inconsistent too).
        // Standalone, the first failing script ends its list, as in Mender
        // 3.4; the daemon runs every one (`docs/state-scripts.md`).
        let standalone = state.deployment_id.is_none();
        let scripts = |engine: &Self, action| {
            if standalone {
                engine
                    .run_scripts(ScriptState::ArtifactRollback, action)
                    .is_ok()
            } else {
                engine.run_all_scripts(ScriptState::ArtifactRollback, action)
            }
        };
        let mut consistent = scripts(self, ScriptAction::Enter);
        if let Err(e) = installer.rollback() {
            log::error!("rollback failed: {e:#}");
            consistent = false;
        }
        crate::crash::point(crate::crash::Point::Rollback);
        consistent &= scripts(self, ScriptAction::Leave);
        if !consistent && !state.inconsistent {
            self.mark_inconsistent(state)?;
        }
        if state.deployment_id.is_some() {
            // Managed: reboot back now when the payload needs reboots (asked
            // now if the install never got that far, as Mender does); a
            // restart resumes after it.
            if state.reboot.is_none() {
                state.reboot = installer.needs_reboot().ok();
            }
            if state.needs_reboot() {
                self.rollback_reboot(state, installer.as_mut())?;
            }
        }
        self.after_rollback(state, installer)
    }

    /// What follows a rollback (and its reboot): the failure state, unless
    /// the user asked for the rollback and it went cleanly (Mender 3.4 runs
    /// ArtifactFailure after a requested rollback whose scripts or module
    /// failed), and the cleanup.
    fn after_rollback(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
    ) -> Result<()> {
        if !state.manual_rollback || state.inconsistent {
            self.failure(state, installer.as_mut())?;
        }
        self.cleanup(state, Some(installer.as_mut()))
    }

    fn failure(
        &mut self,
        state: &mut UpdateState,
        installer: &mut (dyn Installer + 'static),
    ) -> Result<()> {
        state.failed = true;
        self.persist_or_stop(
            state,
            Phase::ArtifactFailure,
            StopPoint::ArtifactFailureEnter,
        )?;
        self.run_scripts_ignoring(ScriptState::ArtifactFailure, ScriptAction::Enter);
        let failed = installer.failure();
        if let Err(e) = &failed {
            log::error!("ArtifactFailure: {e:#}");
        }
        self.run_scripts_ignoring(ScriptState::ArtifactFailure, ScriptAction::Leave);
        // Standalone, Mender 3.4 counts a failed ArtifactFailure call as a
        // failed error path: the device is marked inconsistent.
        if failed.is_err() && state.deployment_id.is_none() && !state.inconsistent {
            self.mark_inconsistent(state)?;
        }
        Ok(())
    }

    fn cleanup(
        &mut self,
        state: &mut UpdateState,
        installer: Option<&mut (dyn Installer + 'static)>,
    ) -> Result<()> {
        self.persist_or_stop(state, Phase::Cleanup, StopPoint::Cleanup)?;
        let cleaned = match installer {
            Some(i) => i.cleanup(),
            None => Ok(()),
        };
        if let Err(e) = &cleaned {
            log::error!("cleanup: {e:#}");
        }
        if state.deployment_id.is_some() {
            // Managed: the final status is still to be sent (exactly once,
            // across restarts).
            return self.persist(state, Phase::StatusReport);
        }
        self.clear_update()?;
        // Standalone, a failed Cleanup fails a command that otherwise
        // succeeded (Mender 3.4's exit code); after a failure the caller's
        // own error says more.
        match cleaned {
            Err(e) if !state.failed || (state.manual_rollback && !state.inconsistent) => {
                Err(e.context("the update is done, but its Cleanup failed"))
            }
            _ => Ok(()),
        }
    }
}

/// The boot environment the configuration selects.
pub fn open_boot_env(config: &Config) -> Result<Box<dyn BootEnv>> {
    Ok(crate::bootenv::open(config)?)
}
