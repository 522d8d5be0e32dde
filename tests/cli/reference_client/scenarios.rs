//! The scenarios, and playing one with either client into a transcript of
//! observations.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// `install [--reboot-exit-code] <the update>`
    Install {
        reboot_exit_code: bool,
    },
    /// `install --reboot-exit-code <an artifact for another device type>`
    InstallForeign,
    Commit,
    Rollback,
    /// The simulated reboot (harness, not client).
    Reboot,
}

pub(super) struct Scenario {
    pub(super) id: &'static str,
    pub(super) title: &'static str,
    /// Scripts made to fail (exit 1).
    pub(super) failing: &'static [&'static str],
    pub(super) steps: &'static [Step],
}

pub(super) const INSTALL_REBOOT: Step = Step::Install {
    reboot_exit_code: true,
};
pub(super) const INSTALL: Step = Step::Install {
    reboot_exit_code: false,
};

pub(super) const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "1-install-reboot-commit",
        title: "install --reboot-exit-code, reboot, commit",
        failing: &[],
        steps: &[INSTALL_REBOOT, Step::Reboot, Step::Commit],
    },
    Scenario {
        id: "1b-install-commit-without-reboot",
        title: "install --reboot-exit-code, commit without a reboot, reboot",
        failing: &[],
        steps: &[INSTALL_REBOOT, Step::Commit, Step::Reboot],
    },
    Scenario {
        id: "2-install-rollback",
        title: "install, rollback (no reboot in between), reboot",
        failing: &[],
        steps: &[INSTALL, Step::Rollback, Step::Reboot],
    },
    Scenario {
        id: "2b-install-reboot-rollback",
        title: "install, reboot, rollback, reboot",
        failing: &[],
        steps: &[INSTALL, Step::Reboot, Step::Rollback, Step::Reboot],
    },
    Scenario {
        id: "3-nothing-pending",
        title: "commit and rollback with nothing pending",
        failing: &[],
        steps: &[Step::Commit, Step::Rollback],
    },
    Scenario {
        id: "4-install-enter-fails",
        title: "install with a failing ArtifactInstall_Enter_01, then commit",
        failing: &["ArtifactInstall_Enter_01"],
        steps: &[INSTALL_REBOOT, Step::Commit],
    },
    Scenario {
        id: "5-commit-enter-fails",
        title: "install, reboot, commit with a failing ArtifactCommit_Enter_01, reboot",
        failing: &["ArtifactCommit_Enter_01"],
        steps: &[INSTALL_REBOOT, Step::Reboot, Step::Commit, Step::Reboot],
    },
    Scenario {
        id: "6-commit-leave-fails",
        title: "install, reboot, commit with a failing ArtifactCommit_Leave_01",
        failing: &["ArtifactCommit_Leave_01"],
        steps: &[INSTALL_REBOOT, Step::Reboot, Step::Commit],
    },
    Scenario {
        id: "7-wrong-device-type",
        title: "install an artifact for another device type, then commit",
        failing: &[],
        steps: &[Step::InstallForeign, Step::Commit],
    },
];

pub(super) struct Observation {
    pub(super) step: String,
    pub(super) fields: Vec<(&'static str, String)>,
    pub(super) bootcount: String,
    /// The failing command's last error message (not compared).
    pub(super) note: String,
}

pub(super) fn play(rig: &Rig, scenario: &Scenario, client: Client) -> Vec<Observation> {
    let device = Device::new(rig, scenario, client);
    let mut seen = vec![device.observe("(fresh device)".into(), None)];
    for (i, step) in scenario.steps.iter().enumerate() {
        let (name, ran) = match *step {
            Step::Install { reboot_exit_code } => {
                let mut args = vec!["install"];
                if reboot_exit_code {
                    args.push("--reboot-exit-code");
                }
                let name = args.join(" ");
                args.push(s(&rig.update));
                (name, Some(device.client(&args)))
            }
            Step::InstallForeign => (
                "install --reboot-exit-code (foreign)".to_string(),
                Some(device.client(&["install", "--reboot-exit-code", s(&rig.foreign)])),
            ),
            Step::Commit => ("commit".to_string(), Some(device.client(&["commit"]))),
            Step::Rollback => ("rollback".to_string(), Some(device.client(&["rollback"]))),
            Step::Reboot => {
                device.reboot();
                ("(reboot)".to_string(), None)
            }
        };
        let mut seen_now =
            device.observe(format!("{}. {name}", i + 1), ran.as_ref().map(|r| r.code));
        if let Some(ran) = ran.filter(|r| r.code != 0) {
            seen_now.note = last_error(&ran.stderr);
        }
        seen.push(seen_now);
    }
    let provides = device.show("show-provides");
    seen.push(Observation {
        step: "(end)".into(),
        fields: vec![("show-provides", provides)],
        bootcount: String::new(),
        note: String::new(),
    });
    seen
}

/// The last error a client printed (for the transcript only).
pub(super) fn last_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("level=error") || l.starts_with("error"))
        .or(lines.last())
        .copied()
        .unwrap_or("");
    line.chars().take(240).collect()
}
