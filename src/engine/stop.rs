//! `--stop-before STATE` and `resume`, as the Mender client 5.x has them
//! for standalone updates (`docs/standalone.md`, "Stopping and resuming").
//!
//! A stop persists the update in the phase it stopped before, marked
//! [`UpdateState::stopped_before`], in the one write the phase change makes
//! anyway, then ends the command: a power cut after a stop finds the same
//! record. `resume` clears the mark with a write of its own before the
//! phase's work starts (5.x's `Before_<State>` / `<State>` pair), so a
//! crash once the work started takes the power-loss rules, and asking to
//! stop at the same point again is a no-op.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::{Engine, Outcome, Phase, UpdateState};

/// Where `--stop-before` can stop (5.x's choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopPoint {
    /// After the download (and its Leave scripts), before anything is
    /// installed.
    ArtifactInstallEnter,
    /// Installed, before the commit. Every payload that can roll back stops
    /// here anyway; one that cannot is then not committed at once.
    ArtifactCommitEnter,
    /// Committed (the provides are written), before the Leave scripts.
    ArtifactCommitLeave,
    ArtifactRollbackEnter,
    ArtifactFailureEnter,
    Cleanup,
}

impl StopPoint {
    pub const ALL: [StopPoint; 6] = [
        StopPoint::ArtifactInstallEnter,
        StopPoint::ArtifactCommitEnter,
        StopPoint::ArtifactCommitLeave,
        StopPoint::ArtifactRollbackEnter,
        StopPoint::ArtifactFailureEnter,
        StopPoint::Cleanup,
    ];

    /// The state's name on the command line (5.x's).
    pub fn name(self) -> &'static str {
        match self {
            StopPoint::ArtifactInstallEnter => "ArtifactInstall_Enter",
            StopPoint::ArtifactCommitEnter => "ArtifactCommit_Enter",
            StopPoint::ArtifactCommitLeave => "ArtifactCommit_Leave",
            StopPoint::ArtifactRollbackEnter => "ArtifactRollback_Enter",
            StopPoint::ArtifactFailureEnter => "ArtifactFailure_Enter",
            StopPoint::Cleanup => "Cleanup",
        }
    }
}

impl fmt::Display for StopPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StopPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StopPoint::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = StopPoint::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "cannot stop before unsupported state '{s}' (choose from {})",
                    names.join(", ")
                )
            })
    }
}

/// The command stopped where the user asked. Returned as an error so that
/// it leaves the state machine at once from wherever it happens; the
/// top-level commands turn it into [`Outcome::Stopped`] unless the update
/// had failed (then the command fails, as 5.x's does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before {point} (--stop-before){}; run 'resume' to go on", if *.failed { " after the failure above" } else { "" })]
pub struct Stopped {
    pub point: StopPoint,
    pub failed: bool,
}

impl Engine<'_> {
    /// Where this command is to stop (`--stop-before`, repeatable).
    pub fn set_stop_before(&mut self, points: &[StopPoint]) {
        self.stop_before = points.to_vec();
    }

    pub(super) fn stop_requested(&self, point: StopPoint) -> bool {
        self.stop_before.contains(&point)
    }

    /// Persists `phase`; when the user asked to stop before `point`, marks
    /// the update stopped in that same write and returns [`Stopped`].
    pub(super) fn persist_or_stop(
        &mut self,
        state: &mut UpdateState,
        phase: Phase,
        point: StopPoint,
    ) -> Result<()> {
        if !self.stop_requested(point) {
            return self.persist(state, phase);
        }
        state.phase = phase;
        state.steps += 1;
        state.stopped_before = Some(point);
        let value = serde_json::to_value(&*state)?;
        self.store.save(|d| d.update = Some(value))?;
        Err(self.stopped(state, point))
    }

    pub(super) fn stopped(&self, state: &UpdateState, point: StopPoint) -> anyhow::Error {
        crate::logging::set_deployment_log(None);
        Stopped {
            point,
            failed: state.failed,
        }
        .into()
    }

    /// A command's result, with a stop as its outcome, unless the update
    /// failed during this command (then the command fails, as 5.x's does).
    /// `failed_before`: the update had failed before this command started
    /// (`resume` after a failure, `rollback`, which marks the update
    /// failed itself): that failure was the earlier command's to report.
    pub(super) fn outcome_of(result: Result<Outcome>, failed_before: bool) -> Result<Outcome> {
        match result {
            Err(e) => match e.downcast_ref::<Stopped>() {
                Some(stop) if failed_before || !stop.failed => Ok(Outcome::Stopped(stop.point)),
                _ => Err(e),
            },
            ok => ok,
        }
    }

    /// The refusal of `install`, `commit` and `rollback` (the latter where
    /// it cannot go on) when an update is stopped.
    pub(super) fn refuse_stopped(state: &UpdateState, point: StopPoint) -> anyhow::Error {
        let name = state
            .artifact
            .as_ref()
            .map(|a| a.name.as_str())
            .unwrap_or("?");
        anyhow!(
            "the update to '{name}' is stopped before {point} (--stop-before): run 'resume' to go on{}",
            match point {
                StopPoint::ArtifactInstallEnter | StopPoint::ArtifactRollbackEnter =>
                    " or 'rollback' to undo it",
                _ => "",
            }
        )
    }

    /// `resume`: goes on with a standalone update stopped by
    /// `--stop-before`, finishes one a crash interrupted (the power-loss
    /// rules), or commits one that is installed (as 5.x does).
    pub fn resume_update(&mut self) -> Result<Outcome> {
        let failed_before = self.update()?.is_some_and(|s| s.failed);
        let result = self.resume_steps();
        Self::outcome_of(result, failed_before)
    }

    fn resume_steps(&mut self) -> Result<Outcome> {
        let Some(mut state) = self.update()? else {
            return Ok(Outcome::NothingToDo);
        };
        if let Some(id) = &state.deployment_id {
            bail!(
                "deployment {id} from the server is in progress ({:?}); the daemon finishes it",
                state.phase
            );
        }
        if state.phase == Phase::Installed {
            return self.commit();
        }
        if let Some(point) = state.stopped_before {
            if self.stop_requested(point) {
                // Stopping again where it stands: nothing to do (5.x).
                return Err(self.stopped(&state, point));
            }
            if state.phase != Phase::Downloaded {
                // 5.x's `<State>` after `Before_<State>`: the work starts
                // now (the install persists its own phase first).
                let phase = state.phase;
                self.persist(&mut state, phase)?;
            }
        }
        if state.phase == Phase::Downloaded {
            let installer_state = state
                .installer
                .clone()
                .ok_or_else(|| anyhow!("no installer recorded for the stopped update"))?;
            let installer = self.resume_installer(&installer_state)?;
            self.attach_deployment_log(&state, false);
            return self.finish_install(state, installer);
        }
        let name = state.artifact.as_ref().map(|a| a.name.clone());
        self.resume(state)?;
        let now = self.provides().get("artifact_name").cloned();
        Ok(if name.is_some() && name == now {
            Outcome::Committed { reboot: false }
        } else {
            Outcome::RolledBack
        })
    }

    /// `rollback` of an update stopped before the install (nothing
    /// installed: the installer's rollback and the rollback scripts run, as
    /// in 5.x) or before the rollback (it goes on).
    pub(super) fn rollback_stopped(
        &mut self,
        mut state: UpdateState,
        point: StopPoint,
    ) -> Result<Outcome> {
        match point {
            StopPoint::ArtifactInstallEnter | StopPoint::ArtifactRollbackEnter => {}
            _ => return Err(Self::refuse_stopped(&state, point)),
        }
        let installer_state = state
            .installer
            .clone()
            .ok_or_else(|| anyhow!("no installer recorded for the stopped update"))?;
        let mut installer = self.resume_installer(&installer_state)?;
        self.attach_deployment_log(&state, false);
        if point == StopPoint::ArtifactInstallEnter {
            if !installer.supports_rollback()? {
                bail!(
                    "the downloaded payload does not support rollback: run 'resume' to install it"
                );
            }
            state.supports_rollback = Some(true);
            state.manual_rollback = true;
        }
        self.rollback_and_fail(&mut state, installer)?;
        if state.inconsistent {
            bail!("the rollback did not complete cleanly: the device is marked inconsistent");
        }
        Ok(Outcome::RolledBack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in StopPoint::ALL {
            assert_eq!(p.name().parse::<StopPoint>(), Ok(p));
        }
        let e = "ArtifactReboot_Enter".parse::<StopPoint>().unwrap_err();
        assert!(
            e.contains("ArtifactReboot_Enter") && e.contains("Cleanup"),
            "{e}"
        );
        assert!("artifactinstall_enter".parse::<StopPoint>().is_err());
    }

    #[test]
    fn a_stop_reads_as_an_instruction() {
        let s = Stopped {
            point: StopPoint::Cleanup,
            failed: true,
        };
        assert_eq!(
            s.to_string(),
            "stopped before Cleanup (--stop-before) after the failure above; run 'resume' to go on"
        );
    }
}
