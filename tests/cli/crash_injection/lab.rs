//! The scenarios and the lab that runs them: artifacts, the device, a
//! committed snapshot and a checkpoint after each crash.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Scenario {
    /// install → reboot → commit → reboot.
    Success,
    /// ArtifactInstall_Leave_01 exits 1: install rolls back.
    InstallFailure,
    /// ArtifactCommit_Enter_01 exits 1: commit rolls back.
    CommitFailure,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum UserCommand {
    Install,
    Commit,
}

impl UserCommand {
    pub(super) fn name(self) -> &'static str {
        match self {
            UserCommand::Install => "install",
            UserCommand::Commit => "commit",
        }
    }
}

impl Scenario {
    pub(super) fn name(self) -> &'static str {
        match self {
            Scenario::Success => "success",
            Scenario::InstallFailure => "install-failure",
            Scenario::CommitFailure => "commit-failure",
        }
    }

    pub(super) fn failing_script(self) -> Option<&'static str> {
        match self {
            Scenario::Success => None,
            Scenario::InstallFailure => Some("ArtifactInstall_Leave_01"),
            Scenario::CommitFailure => Some("ArtifactCommit_Enter_01"),
        }
    }

    /// The user's commands with their crash-free exit codes; each is
    /// followed by a reboot.
    pub(super) fn commands(self) -> &'static [(UserCommand, i32)] {
        match self {
            Scenario::Success => &[(UserCommand::Install, 0), (UserCommand::Commit, 0)],
            Scenario::InstallFailure => &[(UserCommand::Install, 1)],
            Scenario::CommitFailure => &[(UserCommand::Install, 0), (UserCommand::Commit, 1)],
        }
    }

    /// What the device runs when the scenario is over, with or without a
    /// crash; None when either release is right (it depends on where the
    /// crash hit).
    pub(super) fn final_release(self) -> Option<&'static str> {
        match self {
            Scenario::Success => None,
            Scenario::InstallFailure | Scenario::CommitFailure => Some("release-1"),
        }
    }

    /// The crash-free script log (spec §3.9.4, without the Idle/Sync and
    /// Reboot states the standalone commands do not have).
    pub(super) fn expected_log(self) -> Vec<&'static str> {
        let mut log = vec![
            "Download_Enter_01",
            "Download_Leave_01",
            "ArtifactInstall_Enter_01",
            "ArtifactInstall_Leave_01",
        ];
        let failed = match self {
            Scenario::Success => {
                log.extend(["ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"]);
                return log;
            }
            Scenario::InstallFailure => "ArtifactInstall_Error_01",
            Scenario::CommitFailure => {
                log.push("ArtifactCommit_Enter_01");
                "ArtifactCommit_Error_01"
            }
        };
        log.extend([
            failed,
            "ArtifactRollback_Enter_01",
            "ArtifactRollback_Leave_01",
            "ArtifactFailure_Enter_01",
            "ArtifactFailure_Leave_01",
        ]);
        log
    }
}

/// Scripts the power-loss rules run again (ArtifactRollback, ArtifactFailure
/// and ArtifactCommit_Leave are re-entered after a crash in them).
pub(super) fn rerun_allowed(script: &str) -> bool {
    script.starts_with("ArtifactFailure_")
        || script.starts_with("ArtifactRollback_")
        || script.starts_with("ArtifactCommit_Leave_")
}

/// A workspace: the artifacts of one scenario, the device, a snapshot of the
/// device with release-1 committed (restored before every run) and a
/// checkpoint (the device right after a crash and the power cut).
pub(super) struct Lab {
    pub(super) _dir: tempfile::TempDir,
    pub(super) device: Device,
    pub(super) template: PathBuf,
    pub(super) checkpoint: PathBuf,
    pub(super) release_2: PathBuf,
    /// Name, rootfs-image.checksum and image of release-1 and release-2.
    pub(super) images: Vec<(String, String, Vec<u8>)>,
}

impl Lab {
    pub(super) fn new(scenario: Scenario) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("mender-rs-crash.")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let build = root.join("build");
        let scripts_dir = build.join("scripts");
        fs::create_dir_all(&scripts_dir).unwrap();
        let device_root = root.join("device");
        let log = device_root.join("scripts.log");
        // A private copy: a concurrent `cargo build` in the same target
        // directory (without the feature, or of other sources) must not
        // swap the binary under a running test.
        let bin = root.join("mender-rs");
        fs::copy(BIN, &bin).unwrap();

        let mut images = Vec::new();
        let mut artifacts = Vec::new();
        for (name, seed) in [("release-1", 0x5eed_0001u64), ("release-2", 0x5eed_0002)] {
            let bytes = payload(seed);
            let image = build.join(format!("{name}.ext4"));
            fs::write(&image, &bytes).unwrap();
            let mut scripts = Vec::new();
            if name == "release-2" {
                for state in ARTIFACT_STATES {
                    for action in ACTIONS {
                        let script = format!("{state}_{action}_01");
                        let code = i32::from(scenario.failing_script() == Some(script.as_str()));
                        scripts.push(write_script(&scripts_dir, &script, &log, code));
                    }
                }
            }
            let out = build.join(format!("{name}.mender"));
            write_artifact(&bin, name, &image, &scripts, &out);
            artifacts.push(out);
            images.push((name.to_string(), hex(&Sha256::digest(&bytes)), bytes));
        }
        let release_2 = artifacts.pop().unwrap();
        let release_1 = artifacts.pop().unwrap();

        // Release-1, installed and committed by our client.
        let device = Device::create(&device_root, &bin);
        device
            .run(&["install", release_1.to_str().unwrap()], None)
            .expect_code(0);
        device.reboot();
        device.run(&["commit"], None).expect_code(0);
        device.reboot();
        fs::write(device.log_path(), "").unwrap();
        let template = root.join("template");
        copy_tree(&device_root, &template);
        let checkpoint = root.join("checkpoint");
        let lab = Lab {
            _dir: dir,
            device,
            template,
            checkpoint,
            release_2,
            images,
        };
        assert_eq!(lab.device.artifact_name(), "release-1");
        assert_eq!(lab.booted_image(), Ok("release-1".to_string()));
        lab
    }

    /// The device as it was with release-1 committed.
    pub(super) fn restore(&self) {
        self.restore_from(&self.template);
    }

    pub(super) fn restore_from(&self, from: &Path) {
        fs::remove_dir_all(&self.device.root).unwrap();
        copy_tree(from, &self.device.root);
    }

    pub(super) fn save_checkpoint(&self) {
        if self.checkpoint.exists() {
            fs::remove_dir_all(&self.checkpoint).unwrap();
        }
        copy_tree(&self.device.root, &self.checkpoint);
    }

    pub(super) fn run_command(&self, command: UserCommand, crash: Option<&str>) -> Run {
        match command {
            UserCommand::Install => self
                .device
                .run(&["install", self.release_2.to_str().unwrap()], crash),
            UserCommand::Commit => self.device.run(&["commit"], crash),
        }
    }

    pub(super) fn release_by_name(&self, name: &str) -> Option<&(String, String, Vec<u8>)> {
        self.images.iter().find(|(n, _, _)| n == name)
    }

    /// Invariant 1: the partition the boot environment points at holds the
    /// image whose checksum the provides name, and nothing is pending in the
    /// boot environment. Returns that image's release.
    pub(super) fn booted_image(&self) -> Result<String, String> {
        let env = self.device.boot_env();
        let part = env.get("mender_boot_part").cloned().unwrap_or_default();
        if part != "2" && part != "3" {
            return Err(format!("mender_boot_part is {part:?}"));
        }
        if env.get("upgrade_available").map(String::as_str) != Some("0") {
            return Err(format!(
                "upgrade_available is {:?} at rest",
                env.get("upgrade_available")
            ));
        }
        let provides = self.device.provides();
        let Some(checksum) = provides.get("rootfs-image.checksum") else {
            return Err(format!("no rootfs-image.checksum in {provides:?}"));
        };
        let Some((release, _, image)) = self.images.iter().find(|(_, c, _)| c == checksum) else {
            return Err(format!(
                "rootfs-image.checksum {checksum} is neither release"
            ));
        };
        if self.device.partition_image(&part) != *image {
            return Err(format!(
                "the booted partition {part} does not hold {release}, whose checksum the provides name"
            ));
        }
        Ok(release.clone())
    }
}

/// Where one injected crash (or two) hit, for the checks.
pub(super) struct CrashCase {
    pub(super) scenario: Scenario,
    pub(super) command: UserCommand,
    pub(super) label: String,
    /// The store's update phase right after the (first) crash; None when no
    /// update was left.
    pub(super) phase_at_crash: Option<String>,
    /// Script log lines written before the (first) crash.
    pub(super) log_at_crash: usize,
}
