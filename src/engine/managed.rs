//! Deployments from a server (the daemon): the same states as standalone
//! use plus `ArtifactReboot` and `ArtifactRollbackReboot`, which the
//! client performs itself, and the status reports.
//!
//! Every transition is persisted before its work, so a reboot (intended or
//! not) resumes the deployment where it stood; the final status is
//! persisted as a phase of its own and cleared only once the server has it,
//! so each deployment gets exactly one final report.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::{Engine, MAX_STEPS, Phase, UpdateState};
use crate::artifact::adaptive::ArtifactSource;
use crate::artifact::header::Provides;
use crate::config::Config;
use crate::control_map::StateKey;
use crate::deployment_log::DeploymentLog;
use crate::installer::{Installer, Reboot};
use crate::process::{Exit, Spec};
use crate::scripts::{ScriptAction, ScriptState};
use crate::server::DeploymentInstruction;

/// A deployment's hand back to the Mender client (`docs/takeover.md`):
/// before the reboot into the new image, after a rollback of one taken
/// over, and its removal when the deployment ends. Given by the command
/// line when that feature is built: hooks, so that the engine does not
/// depend on the LMDB code that depends on it.
pub struct HandBack {
    /// The config, the update, the installed provides and the device type.
    pub before_reboot: fn(&Config, &UpdateState, &Provides, &str),
    /// As `before_reboot`, for a rolled-back deployment.
    pub after_rollback: fn(&Config, &UpdateState, &Provides, &str),
    /// Removes what was handed back (the data directory).
    pub clear: fn(&std::path::Path),
}

static HAND_BACK: std::sync::OnceLock<HandBack> = std::sync::OnceLock::new();

/// Sets the [`HandBack`] hooks (once per process; later calls are ignored).
pub fn set_hand_back(hooks: HandBack) {
    let _ = HAND_BACK.set(hooks);
}

/// How long the daemon waits to be killed by the reboot it asked for
/// before it calls the reboot failed.
const REBOOT_WAIT: Duration = Duration::from_secs(600);
/// Most output of `RebootCommand` kept for the log, per stream.
const REBOOT_OUTPUT_CAP: usize = 4096;

/// How far a deployment got, as the state machine reports it to its hooks
/// on the way (the daemon maps it to the server's wire status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Downloading,
    Installing,
    Rebooting,
}

/// What the state machine needs from the server side.
pub trait DeploymentHooks {
    /// An intermediate status report. Best effort: only an answer saying
    /// that the server aborted the deployment is an error.
    fn status(&mut self, deployment_id: &str, progress: Progress) -> Result<(), Aborted>;
    /// The report before the commit (after a new authentication): a
    /// failure here fails the commit.
    fn pre_commit(&mut self, deployment_id: &str) -> Result<()>;
    /// Opens the artifact stream.
    /// Opens the deployment's artifact. `provides` and `device_type` are
    /// what the device asked `next` with: a link that expires meanwhile is
    /// renewed by asking again.
    fn open_artifact(
        &mut self,
        deployment: &DeploymentInstruction,
        provides: &Provides,
        device_type: &str,
    ) -> Result<ArtifactSource>;
    /// An update control checkpoint (`ArtifactInstall_Enter`,
    /// `ArtifactReboot_Enter`, `ArtifactCommit_Enter`): returns when the
    /// maps let the deployment go on (after a pause if they say so); an
    /// error fails the deployment there.
    fn checkpoint(&mut self, _deployment_id: &str, _state: StateKey) -> Result<()> {
        Ok(())
    }
    /// The final status, with the deployment log on failure. Returns when
    /// the server has it, refused it for good, or the retries ran out.
    fn final_status(
        &mut self,
        deployment_id: &str,
        success: bool,
        log: &[serde_json::Value],
    ) -> Result<()>;
}

/// The server aborted the deployment (HTTP 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted;

impl Engine<'_> {
    /// The deployment an earlier process left unfinished, if any: its id.
    pub fn interrupted_deployment(&self) -> Result<Option<String>> {
        Ok(match self.update()? {
            Some(state) => state.deployment_id,
            // A taken-over deployment reported but not yet forgotten (its
            // reboot back into the Mender client may be left):
            // `resume_deployment` finishes that.
            None => self.store.data().taken_over_deployment.clone(),
        })
    }

    /// Continues a deployment an earlier process (or boot) left, up to and
    /// including its final report. Ok(false): there was none.
    pub fn resume_deployment(&mut self, hooks: &mut dyn DeploymentHooks) -> Result<bool> {
        let Some(mut state) = self.update()? else {
            // Power lost after the final report of a taken-over deployment
            // and before its reboot back into the Mender client.
            self.finish_taken_over()?;
            return Ok(false);
        };
        let Some(id) = state.deployment_id.clone() else {
            return Ok(false);
        };
        self.attach_deployment_log(&state, false);
        if state.phase != Phase::StatusReport {
            log::info!("deployment {id}: resuming in state {:?}", state.phase);
            let result = self.resume_managed(&mut state, hooks);
            self.settle(result)?;
        }
        self.report_final(hooks)?;
        Ok(true)
    }

    fn resume_managed(
        &mut self,
        state: &mut UpdateState,
        hooks: &mut dyn DeploymentHooks,
    ) -> Result<()> {
        if state.steps >= MAX_STEPS {
            log::error!(
                "the deployment was interrupted {} times; giving up",
                state.steps
            );
            state.failed = true;
            self.mark_inconsistent(state)?;
            return self.cleanup(state, None);
        }
        let mut installer = match &state.installer {
            Some(i) => Some(self.resume_installer(i)?),
            None => None,
        };
        let need = || anyhow!("no installer recorded for the interrupted deployment");
        match state.phase {
            Phase::StatusReport => Ok(()),
            Phase::Download => {
                log::error!("the interrupted download is abandoned");
                state.failed = true;
                self.cleanup(state, installer.as_deref_mut())
            }
            Phase::Downloaded => self.install_downloaded(state, installer.ok_or_else(need)?, hooks),
            Phase::Installed => self.reboot_installed(state, installer.ok_or_else(need)?, hooks),
            Phase::ArtifactInstall | Phase::ArtifactCommit => {
                self.error_path(state, installer.ok_or_else(need)?)
            }
            Phase::ArtifactReboot => self.after_reboot(state, installer.ok_or_else(need)?, hooks),
            Phase::ArtifactCommitLeave => {
                let mut inst = installer.ok_or_else(need)?;
                self.commit_leave(state, inst.as_mut())
            }
            Phase::ArtifactRollback => self.rollback_and_fail(state, installer.ok_or_else(need)?),
            Phase::ArtifactRollbackReboot => {
                let mut inst = installer.ok_or_else(need)?;
                self.finish_rollback_reboot(state, inst.as_mut());
                self.after_rollback(state, inst)
            }
            Phase::ArtifactFailure => {
                let mut inst = installer.ok_or_else(need)?;
                self.failure(state, inst.as_mut())?;
                self.cleanup(state, Some(inst.as_mut()))
            }
            Phase::Cleanup => self.cleanup(state, installer.as_deref_mut()),
        }
    }

    /// An error of the state machine is fine once the deployment reached
    /// its final report (the error is the deployment's failure, logged and
    /// reported); anything else (the store cannot be written, ...) is
    /// returned.
    fn settle(&mut self, result: Result<()>) -> Result<()> {
        if let Err(e) = result {
            match self.update()? {
                Some(s) if s.phase == Phase::StatusReport => {
                    log::error!("{e:#}");
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs a deployment from download to final report.
    pub fn deploy(
        &mut self,
        deployment: &DeploymentInstruction,
        hooks: &mut dyn DeploymentHooks,
    ) -> Result<()> {
        if let Some(old) = self.update()? {
            if old.deployment_id.is_some() {
                bail!("another deployment is still in progress");
            }
            if let Some(point) = old.stopped_before {
                // The user's, stopped by `--stop-before`: not ours to drop.
                return Err(Self::refuse_stopped(&old, point));
            }
            log::warn!(
                "replacing the uncommitted standalone update '{}'",
                old.artifact
                    .as_ref()
                    .map(|a| a.name.as_str())
                    .unwrap_or("?")
            );
        }
        let id = deployment.id.clone();
        let mut state = UpdateState::new(Some(id.clone()));
        self.persist(&mut state, Phase::Download)?;
        self.attach_deployment_log(&state, true);
        log::info!(
            "deployment {id}: installing artifact '{}'",
            deployment.artifact_name
        );
        let result = self.deploy_steps(&mut state, deployment, hooks);
        self.settle(result)?;
        self.report_final(hooks)
    }

    fn deploy_steps(
        &mut self,
        state: &mut UpdateState,
        deployment: &DeploymentInstruction,
        hooks: &mut dyn DeploymentHooks,
    ) -> Result<()> {
        let id = deployment.id.clone();
        if hooks.status(&id, Progress::Downloading).is_err() {
            state.failed = true;
            self.cleanup(state, None)?;
            bail!("deployment {id} was aborted on the server");
        }
        let provides = self.provides();
        let device_type = self.device_type().unwrap_or_default();
        let mut open = || hooks.open_artifact(deployment, &provides, &device_type);
        let installer = match self.download(state, &mut open, Some(deployment)) {
            Ok(installer) => installer,
            Err((e, mut installer)) => {
                log::error!("download failed: {e:#}");
                self.run_scripts_ignoring(ScriptState::Download, ScriptAction::Error);
                state.failed = true;
                self.cleanup(state, installer.as_deref_mut())?;
                return Err(e.context("the download failed"));
            }
        };

        // Verified and complete: a restart from here (say, during a pause)
        // goes on with the install instead of downloading again.
        self.persist(state, Phase::Downloaded)?;
        self.install_downloaded(state, installer, hooks)
    }

    /// The install checkpoint and the install.
    fn install_downloaded(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
        hooks: &mut dyn DeploymentHooks,
    ) -> Result<()> {
        let id = state.deployment_id.clone().unwrap_or_default();
        if let Err(e) = hooks.checkpoint(&id, StateKey::ArtifactInstallEnter) {
            // Downloaded, nothing installed yet: no rollback needed.
            log::error!("{e:#}");
            state.failed = true;
            self.cleanup(state, Some(installer.as_mut()))?;
            return Err(e);
        }
        let (reboot, mut installer) = self.install_state(state, installer, &mut || {
            if hooks.status(&id, Progress::Installing).is_err() {
                bail!("the deployment was aborted on the server");
            }
            Ok(())
        })?;
        state.reboot = Some(reboot);
        // Asked after the download (before Download_Leave, as Mender 3.x's
        // daemon); only a deployment resumed from before that asks here.
        if state.supports_rollback.is_none() {
            state.supports_rollback = Some(installer.supports_rollback()?);
        }
        // Installed: a restart from here (a pause before the reboot) goes
        // on with the reboot.
        self.persist(state, Phase::Installed)?;
        self.reboot_installed(state, installer, hooks)
    }

    /// The reboot checkpoint and the reboot (or, without one, the commit).
    fn reboot_installed(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
        hooks: &mut dyn DeploymentHooks,
    ) -> Result<()> {
        let id = state.deployment_id.clone().unwrap_or_default();
        let reboot = state.reboot.unwrap_or(Reboot::Automatic);
        if reboot == Reboot::No {
            return self.checkpoint_commit(state, installer, hooks);
        }
        if let Err(e) = hooks.checkpoint(&id, StateKey::ArtifactRebootEnter) {
            log::error!("{e:#}");
            self.error_path(state, installer)?;
            return Err(e);
        }
        self.persist(state, Phase::ArtifactReboot)?;
        self.hand_back_before_reboot(state);
        let rebooted = (|| -> Result<()> {
            if hooks.status(&id, Progress::Rebooting).is_err() {
                bail!("the deployment was aborted on the server");
            }
            self.run_scripts(ScriptState::ArtifactReboot, ScriptAction::Enter)?;
            match reboot {
                Reboot::Yes => installer.reboot(),
                _ => self.system_reboot(),
            }
        })();
        if let Err(e) = rebooted {
            return self.reboot_failed(state, installer, e, "rebooting into the update failed");
        }
        // The installer's reboot returned (an Update Module that restarts
        // services rather than the device): continue as after a reboot.
        self.after_reboot(state, installer, hooks)
    }

    /// After the reboot into the update: check it came up, then commit.
    fn after_reboot(
        &mut self,
        state: &mut UpdateState,
        mut installer: Box<dyn Installer>,
        hooks: &mut dyn DeploymentHooks,
    ) -> Result<()> {
        let verified = (|| -> Result<()> {
            installer.verify_reboot()?;
            self.run_scripts(ScriptState::ArtifactReboot, ScriptAction::Leave)
        })();
        if let Err(e) = verified {
            return self.reboot_failed(state, installer, e, "the update failed after the reboot");
        }
        self.checkpoint_commit(state, installer, hooks)
    }

    /// A failure in the ArtifactReboot state: its Error scripts, then the
    /// rollback path; returns the error with `what` as context.
    fn reboot_failed(
        &mut self,
        state: &mut UpdateState,
        installer: Box<dyn Installer>,
        e: anyhow::Error,
        what: &'static str,
    ) -> Result<()> {
        log::error!("{what}: {e:#}");
        self.run_scripts_ignoring(ScriptState::ArtifactReboot, ScriptAction::Error);
        self.error_path(state, installer)?;
        Err(e.context(what))
    }

    /// The commit checkpoint, then the commit.
    fn checkpoint_commit(
        &mut self,
        state: &mut UpdateState,
        installer: Box<dyn Installer>,
        hooks: &mut dyn DeploymentHooks,
    ) -> Result<()> {
        let id = state.deployment_id.clone().unwrap_or_default();
        if let Err(e) = hooks.checkpoint(&id, StateKey::ArtifactCommitEnter) {
            log::error!("{e:#}");
            self.error_path(state, installer)?;
            return Err(e);
        }
        self.commit_installed(state, installer, Some(hooks))
    }

    /// Whichever client the new image runs finishes the deployment: the
    /// Mender client from the record handed back (`docs/takeover.md`).
    fn hand_back_before_reboot(&self, state: &UpdateState) {
        let Some(hooks) = HAND_BACK.get() else { return };
        match self.device_type() {
            Ok(device_type) => {
                (hooks.before_reboot)(self.config, state, &self.provides(), &device_type)
            }
            Err(e) => log::warn!("the deployment was not handed back: {e:#}"),
        }
    }

    /// Should power be lost before the failure report, the Mender client
    /// of the old partition reports it (`docs/takeover.md`): written
    /// before the rollback switches the boot environment back.
    pub(super) fn hand_back_after_rollback(&self, state: &UpdateState) {
        let Some(hooks) = HAND_BACK.get() else { return };
        match self.device_type() {
            Ok(device_type) => {
                (hooks.after_rollback)(self.config, state, &self.provides(), &device_type)
            }
            Err(e) => log::warn!("the rolled-back deployment was not handed back: {e:#}"),
        }
    }

    /// A deployment taken over from the Mender client: the previous
    /// partition runs Mender, which knows nothing of it.
    pub(super) fn taken_over(&self, state: &UpdateState) -> bool {
        state.deployment_id.is_some()
            && self.store.data().taken_over_deployment == state.deployment_id
    }

    /// Reboots back into the previous software after a rollback (managed
    /// mode, payloads that needed a reboot).
    pub(super) fn rollback_reboot(
        &mut self,
        state: &mut UpdateState,
        installer: &mut (dyn Installer + 'static),
    ) -> Result<()> {
        if self.taken_over(state) {
            // The Mender client there would find no deployment in flight
            // and be sent the same one again: the failure is reported
            // first, then the device reboots (`docs/takeover.md`, "The
            // failure path").
            // The Mender store has the record `after-rollback-reboot`
            // since before the switch back (`rollback_and_fail`).
            log::info!(
                "the previous partition runs the Mender client: rebooting into it once the failure is reported"
            );
            self.store.save(|d| d.rollback_reboot_after_report = true)?;
            return Ok(());
        }
        self.persist(state, Phase::ArtifactRollbackReboot)?;
        self.run_all_scripts(ScriptState::ArtifactRollbackReboot, ScriptAction::Enter);
        let rebooted = match state.reboot {
            Some(Reboot::Yes) => installer.rollback_reboot(),
            _ => self.system_reboot(),
        };
        if let Err(e) = rebooted {
            log::error!("rebooting after the rollback: {e:#}");
        }
        self.finish_rollback_reboot(state, installer);
        Ok(())
    }

    /// After the reboot back: check the old software runs, Leave scripts.
    fn finish_rollback_reboot(
        &mut self,
        state: &mut UpdateState,
        installer: &mut (dyn Installer + 'static),
    ) {
        if let Err(e) = installer.verify_rollback_reboot() {
            log::error!("after the rollback reboot: {e:#}");
            if !state.inconsistent
                && let Err(e) = self.mark_inconsistent(state)
            {
                log::error!("{e:#}");
            }
        }
        self.run_all_scripts(ScriptState::ArtifactRollbackReboot, ScriptAction::Leave);
    }

    /// Runs `RebootCommand` (killed after `RebootTimeoutSeconds`) and
    /// waits to be killed by the reboot. A command that fails or hangs is
    /// an error: the caller takes the failure path (rollback), which is
    /// safe since the device still runs the old software.
    fn system_reboot(&self) -> Result<()> {
        let command = &self.config.reboot_command;
        let mut words = command.split_whitespace();
        let program = words
            .next()
            .ok_or_else(|| anyhow!("RebootCommand is empty"))?;
        let timeout = self.config.reboot_timeout;
        log::info!("rebooting the device ({command})");
        log::logger().flush();
        let record = Spec::new(program, timeout)
            .args(words)
            .stdout_cap(REBOOT_OUTPUT_CAP)
            .stderr_cap(REBOOT_OUTPUT_CAP)
            .run()
            .map_err(|e| anyhow!("RebootCommand '{command}' cannot run: {e}"))?;
        for line in record.stdout.lines().chain(record.stderr.lines()) {
            log::info!("{program}: {line}");
        }
        match record.exit {
            Exit::Code(0) => {}
            Exit::TimedOut => bail!(
                "RebootCommand '{command}' had not returned after {} s (RebootTimeoutSeconds) and was killed; the device did not reboot",
                timeout.as_secs()
            ),
            other => bail!("RebootCommand '{command}' failed ({other}); the device did not reboot"),
        }
        let start = Instant::now();
        while start.elapsed() < REBOOT_WAIT {
            std::thread::sleep(Duration::from_secs(1));
        }
        bail!(
            "the device did not reboot within {} s of '{command}'",
            REBOOT_WAIT.as_secs()
        )
    }

    /// Sends the persisted final status (and the log on failure), then
    /// forgets the deployment.
    fn report_final(&mut self, hooks: &mut dyn DeploymentHooks) -> Result<()> {
        let Some(state) = self.update()? else {
            return Ok(());
        };
        let Some(id) = state.deployment_id.clone() else {
            return Ok(());
        };
        if state.phase != Phase::StatusReport {
            bail!(
                "deployment {id} stopped in state {:?} without a final status",
                state.phase
            );
        }
        let success = !state.failed;
        if success {
            log::info!("deployment {id}: success");
        } else {
            log::error!("deployment {id}: failure");
        }
        // Detach the log first: the upload must not race its own records.
        crate::logging::set_deployment_log(None);
        let records = if success {
            Vec::new()
        } else {
            DeploymentLog::read_records(&self.config.update_log_path, &id).unwrap_or_else(|e| {
                log::warn!("reading the deployment log: {e}");
                Vec::new()
            })
        };
        if let Err(e) = hooks.final_status(&id, success, &records) {
            log::error!("deployment {id}: the final status could not be sent: {e:#}");
        }
        // The record handed back goes before our update does: a restart in
        // between sends the final status again and comes here again.
        if let Some(hooks) = HAND_BACK.get() {
            (hooks.clear)(&self.config.data_dir);
        }
        self.clear_update()?;
        self.finish_taken_over()
    }

    /// After the final report of a deployment taken over from the Mender
    /// client: forget that it was, and after a failure reboot back into the
    /// partition that runs Mender (`docs/takeover.md`). Also run at start,
    /// for a process that died between the report and this.
    fn finish_taken_over(&mut self) -> Result<()> {
        let reboot_back = self.store.data().rollback_reboot_after_report;
        if self.store.data().taken_over_deployment.is_some() || reboot_back {
            self.store.save(|d| {
                d.taken_over_deployment = None;
                d.rollback_reboot_after_report = false;
            })?;
        }
        if reboot_back {
            self.run_all_scripts(ScriptState::ArtifactRollbackReboot, ScriptAction::Enter);
            if let Err(e) = self.system_reboot() {
                log::error!("rebooting into the previous partition: {e:#}");
            }
        }
        Ok(())
    }
}
