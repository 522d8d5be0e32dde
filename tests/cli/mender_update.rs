//! The Mender 4.x/5.x command line through a link named `mender-update`
//! (`docs/standalone.md`): `resume` and `--stop-before STATE`, with the stop
//! persisted so that a power cut after it (or during the resume) ends
//! right; the 4.x/5.x global options (`--datastore`, `-c`, `-v`) and the
//! environment (`MENDER_CONF_DIR`, `MENDER_DATA_DIR`,
//! `MENDER_DATASTORE_DIR`).

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::device::{
    BIN, Boot, DEFAULT_TIMEOUT, SimDevice, describe, run_bounded, write_executable,
};

/// A link named `mender-update` to the binary under test, in the device's
/// directory.
fn link(dev: &SimDevice) -> PathBuf {
    let dir = dev.path("bin");
    fs::create_dir_all(&dir).unwrap();
    let link = dir.join("mender-update");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    link
}

/// `mender-update -c CONF --datastore DATA ARGS` with `envs`.
fn update_with(dev: &SimDevice, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(link(dev));
    cmd.arg("-c")
        .arg(&dev.config_file)
        .arg("--datastore")
        .arg(&dev.data)
        .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, DEFAULT_TIMEOUT)
}

fn update(dev: &SimDevice, args: &[&str]) -> Output {
    update_with(dev, args, &[])
}

#[track_caller]
fn expect(out: &Output, code: i32, stderr_has: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    assert!(
        stderr.contains(stderr_has),
        "stderr lacks {stderr_has:?}: {}",
        describe(out)
    );
}

/// The update in progress as the store holds it: (phase, stopped_before).
fn pending(dev: &SimDevice) -> Option<(String, Option<String>)> {
    let text = fs::read_to_string(dev.data.join("mender-rs-store.json")).ok()?;
    let store: Value = serde_json::from_str(&text).unwrap();
    let update = store.get("update").filter(|u| !u.is_null())?;
    Some((
        update["phase"].as_str().unwrap_or("?").to_string(),
        update["stopped_before"].as_str().map(str::to_string),
    ))
}

/// Artifact scripts that log themselves, all exiting 0 except `failing`.
fn scripts(failing: Option<&str>) -> Vec<(&'static str, i32)> {
    [
        "ArtifactInstall_Enter_01",
        "ArtifactInstall_Leave_01",
        "ArtifactInstall_Error_01",
        "ArtifactCommit_Enter_01",
        "ArtifactCommit_Leave_01",
        "ArtifactRollback_Enter_01",
        "ArtifactRollback_Leave_01",
        "ArtifactFailure_Enter_01",
        "ArtifactFailure_Leave_01",
    ]
    .into_iter()
    .map(|s| (s, if Some(s) == failing { 1 } else { 0 }))
    .collect()
}

fn ran(dev: &SimDevice, prefix: &str) -> usize {
    dev.script_log()
        .iter()
        .filter(|s| s.starts_with(prefix))
        .count()
}

#[test]
fn stop_before_the_install_then_resume_installs_and_commits() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 64 << 10, &scripts(None), &[]);
    let path = artifact.display().to_string();
    let env_before = dev.env();

    let out = update(
        &dev,
        &["install", &path, "--stop-before", "ArtifactInstall_Enter"],
    );
    expect(&out, 0, "Stopped before ArtifactInstall_Enter");
    assert_eq!(
        pending(&dev),
        Some(("downloaded".into(), Some("ArtifactInstallEnter".into())))
    );
    assert_eq!(ran(&dev, "Artifact"), 0, "{:?}", dev.script_log());
    assert_eq!(dev.env(), env_before, "nothing switched before the install");
    assert_eq!(dev.show_artifact(), "unknown");

    // Other commands refuse and say what to do; nothing changes.
    for args in [vec!["install", path.as_str()], vec!["commit"]] {
        expect(
            &update(&dev, &args),
            1,
            "stopped before ArtifactInstall_Enter",
        );
    }
    // Stopping again where it stands is a no-op.
    let out = update(&dev, &["resume", "--stop-before", "ArtifactInstall_Enter"]);
    expect(&out, 0, "Stopped before ArtifactInstall_Enter");
    assert_eq!(ran(&dev, "Artifact"), 0);

    // A payload that can roll back stops after the install anyway.
    let out = update(&dev, &["resume", "--reboot-exit-code"]);
    expect(&out, 4, "Reboot the device");
    assert_eq!(pending(&dev), Some(("installed".into(), None)));
    assert_eq!(ran(&dev, "ArtifactInstall_Enter"), 1);
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    // `resume` of an installed update commits it (5.x).
    let out = update(&dev, &["resume"]);
    expect(&out, 0, "Committed: release-2");
    assert_eq!(dev.show_artifact(), "release-2");
    assert_eq!(ran(&dev, "ArtifactCommit_Leave"), 1);
    expect(&update(&dev, &["resume"]), 2, "Nothing to resume");
    expect(&update(&dev, &["commit"]), 2, "Nothing to commit");
}

#[test]
fn stop_before_commit_leave_keeps_the_leave_scripts_for_resume() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 32 << 10, &scripts(None), &[]);
    dev.ok(&["install", &artifact.display().to_string()]);
    dev.reboot();
    let out = update(&dev, &["commit", "--stop-before", "ArtifactCommit_Leave"]);
    expect(&out, 0, "Stopped before ArtifactCommit_Leave");
    assert_eq!(ran(&dev, "ArtifactCommit_Enter"), 1);
    assert_eq!(ran(&dev, "ArtifactCommit_Leave"), 0);
    // The commit point is passed: the provides are the new ones.
    assert_eq!(dev.show_artifact(), "release-2");
    expect(
        &update(&dev, &["rollback"]),
        1,
        "stopped before ArtifactCommit_Leave",
    );
    let out = update(&dev, &["resume"]);
    expect(&out, 0, "Committed: release-2");
    assert_eq!(ran(&dev, "ArtifactCommit_Leave"), 1);
    assert_eq!(pending(&dev), None);
}

#[test]
fn a_failed_install_stops_before_the_rollback_and_rollback_or_resume_goes_on() {
    for finish in ["rollback", "resume"] {
        let dev = SimDevice::new();
        let failing = scripts(Some("ArtifactInstall_Enter_01"));
        let artifact = dev.write_rootfs_artifact("release-2", 32 << 10, &failing, &[]);
        let path = artifact.display().to_string();
        let out = update(
            &dev,
            &["install", &path, "--stop-before", "ArtifactRollback_Enter"],
        );
        // The install failed: the command fails, and says where it stopped.
        expect(&out, 1, "stopped before ArtifactRollback_Enter");
        assert_eq!(
            pending(&dev),
            Some((
                "artifact-rollback".into(),
                Some("ArtifactRollbackEnter".into())
            ))
        );
        assert_eq!(ran(&dev, "ArtifactRollback"), 0);
        assert_eq!(ran(&dev, "ArtifactInstall_Error"), 1);
        let out = update(&dev, &[finish, "--stop-before", "Cleanup"]);
        expect(&out, 0, "Stopped before Cleanup");
        assert_eq!(ran(&dev, "ArtifactRollback_Enter"), 1);
        assert_eq!(ran(&dev, "ArtifactFailure_Leave"), 1);
        let out = update(&dev, &["resume"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert_eq!(pending(&dev), None);
        assert_eq!(dev.show_artifact(), "unknown");
        assert_eq!(dev.env()["mender_boot_part"], "2");
        // Every script ran once.
        for s in [
            "ArtifactRollback_Enter",
            "ArtifactFailure_Enter",
            "ArtifactInstall_Enter",
        ] {
            assert_eq!(ran(&dev, s), 1, "{finish}: {s}: {:?}", dev.script_log());
        }
    }
}

#[test]
fn a_manual_rollback_stops_and_resumes() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 32 << 10, &scripts(None), &[]);
    dev.ok(&["install", &artifact.display().to_string()]);
    let out = update(
        &dev,
        &["rollback", "--stop-before", "ArtifactRollback_Enter"],
    );
    expect(&out, 0, "Stopped before ArtifactRollback_Enter");
    assert_eq!(dev.env()["upgrade_available"], "1", "not rolled back yet");
    let out = update(&dev, &["resume"]);
    expect(&out, 0, "Rolled back");
    assert_eq!(dev.env()["upgrade_available"], "0");
    assert_eq!(dev.env()["mender_boot_part"], "2");
    assert_eq!(ran(&dev, "ArtifactRollback_Leave"), 1);
    expect(&update(&dev, &["rollback"]), 2, "Nothing to roll back");
}

#[test]
fn rollback_of_an_update_stopped_before_the_install() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 32 << 10, &scripts(None), &[]);
    let path = artifact.display().to_string();
    let env_before = dev.env();
    let out = update(
        &dev,
        &["install", &path, "--stop-before", "ArtifactInstall_Enter"],
    );
    expect(&out, 0, "Stopped before ArtifactInstall_Enter");
    let out = update(&dev, &["rollback"]);
    expect(&out, 0, "Rolled back");
    assert_eq!(pending(&dev), None);
    assert_eq!(dev.env(), env_before);
    assert_eq!(ran(&dev, "ArtifactInstall"), 0);
    assert_eq!(dev.show_artifact(), "unknown");
}

#[test]
fn a_payload_without_rollback_waits_for_commit_when_told_to_stop_before_it() {
    let dev = SimDevice::new();
    let module = dev.modules.join("no-rollback");
    write_executable(
        &module,
        "#!/bin/sh\ncase \"$1\" in\n  SupportsRollback) echo No ;;\n  NeedsArtifactReboot) echo No ;;\nesac\nexit 0\n",
    );
    let file = dev.path("payload.txt");
    fs::write(&file, "hello").unwrap();
    let artifact = dev.write_module_artifact("module-2", "no-rollback", &[&file], &[], &[]);
    let path = artifact.display().to_string();
    let out = update(
        &dev,
        &["install", &path, "--stop-before", "ArtifactCommit_Enter"],
    );
    expect(&out, 0, "Run 'commit' to keep the update");
    assert_eq!(pending(&dev), Some(("installed".into(), None)));
    assert_eq!(dev.show_artifact(), "unknown");
    let out = update(&dev, &["resume"]);
    expect(&out, 0, "Committed: module-2");
    // Without the option it commits at once, as before.
    let again = dev.write_module_artifact("module-3", "no-rollback", &[&file], &[], &[]);
    let out = update(&dev, &["install", &again.display().to_string()]);
    expect(&out, 0, "Installed and committed: module-3");
}

#[test]
fn bad_stop_states_and_lone_version_are_checked() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 16 << 10, &[], &[]);
    let path = artifact.display().to_string();
    let out = update(
        &dev,
        &["install", &path, "--stop-before", "ArtifactReboot_Enter"],
    );
    expect(
        &out,
        1,
        "cannot stop before unsupported state 'ArtifactReboot_Enter'",
    );
    assert_eq!(pending(&dev), None);

    for flag in ["-v", "--version"] {
        let out = run_bounded(Command::new(link(&dev)).arg(flag), DEFAULT_TIMEOUT);
        assert!(out.status.success(), "{}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.trim(),
            format!("mender-update {}", env!("CARGO_PKG_VERSION"))
        );
    }
    let out = update(&dev, &["-v", "show-artifact"]);
    expect(&out, 1, "--version can not be combined");
    let out = run_bounded(&mut Command::new(link(&dev)), DEFAULT_TIMEOUT);
    expect(&out, 1, "a command is required");
}

#[test]
fn environment_variables_place_the_directories_and_flags_win() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 16 << 10, &[], &[]);
    let path = artifact.display().to_string();
    let conf_dir = dev.config_file.parent().unwrap().display().to_string();
    let data = dev.data.display().to_string();
    let run_env = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = Command::new(link(&dev));
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        run_bounded(&mut cmd, DEFAULT_TIMEOUT)
    };
    let envs = [
        ("MENDER_CONF_DIR", conf_dir.as_str()),
        ("MENDER_DATASTORE_DIR", data.as_str()),
    ];
    let out = run_env(&["install", &path], &envs);
    expect(&out, 0, "Reboot the device");
    assert_eq!(pending(&dev).map(|p| p.0), Some("installed".into()));
    // --datastore wins over MENDER_DATASTORE_DIR: another, empty store.
    let other = dev.path("other-data");
    fs::create_dir_all(&other).unwrap();
    let other_s = other.display().to_string();
    let out = run_env(&["--datastore", &other_s, "commit"], &envs);
    expect(&out, 2, "Nothing to commit");
    // MENDER_DATA_DIR places the Update Modules when the configuration
    // does not: a module found there installs.
    dev.remove_config("ModulesPath");
    let share = dev.path("share");
    let module = share.join("modules/v3/marker");
    fs::create_dir_all(module.parent().unwrap()).unwrap();
    let marker = dev.path("module-ran");
    write_executable(
        &module,
        &format!(
            "#!/bin/sh\ncase \"$1\" in\n  ArtifactInstall) touch '{}' ;;\n  SupportsRollback) echo No ;;\n  NeedsArtifactReboot) echo No ;;\nesac\nexit 0\n",
            marker.display()
        ),
    );
    let fresh = dev.path("fresh-data");
    fs::create_dir_all(&fresh).unwrap();
    fs::copy(dev.data.join("device_type"), fresh.join("device_type")).unwrap();
    let file = dev.path("p.txt");
    fs::write(&file, "x").unwrap();
    let module_artifact = dev.write_module_artifact("module-1", "marker", &[&file], &[], &[]);
    let share_s = share.display().to_string();
    let fresh_s = fresh.display().to_string();
    let out = run_env(
        &["install", &module_artifact.display().to_string()],
        &[
            ("MENDER_CONF_DIR", conf_dir.as_str()),
            ("MENDER_DATASTORE_DIR", fresh_s.as_str()),
            ("MENDER_DATA_DIR", share_s.as_str()),
        ],
    );
    expect(&out, 0, "Installed and committed: module-1");
    assert!(marker.exists());
    // The first device's update is still there, untouched.
    assert_eq!(pending(&dev).map(|p| p.0), Some("installed".into()));
}

// ---------------------------------------------------------------------------
// Power cuts at each persisted step of a stop and of the resume after it

/// Whether the process was aborted by crash injection.
fn crashed(out: &Output) -> bool {
    out.status.signal() == Some(libc::SIGABRT)
        || String::from_utf8_lossy(&out.stderr).contains("crash injection: aborting")
}

/// After a power cut: `resume` (and reboots) until nothing is pending;
/// then the device must name what it boots.
fn settle(dev: &SimDevice, label: &str) {
    for _ in 0..4 {
        if pending(dev).is_none() {
            break;
        }
        let out = update(dev, &["resume"]);
        assert!(
            !crashed(&out) && matches!(out.status.code(), Some(0..=2 | 4)),
            "{label}: resume: {}",
            describe(&out)
        );
        if pending(dev).is_some_and(|p| p.0 == "installed") {
            dev.reboot();
        }
    }
    assert_eq!(pending(dev), None, "{label}: still pending");
    let name = dev.show_artifact();
    let boot = dev.env()["mender_boot_part"].clone();
    let want = if name == "release-2" { "3" } else { "2" };
    assert!(
        name == "release-2" || name == "unknown",
        "{label}: ended as {name}"
    );
    assert_eq!(boot, want, "{label}: {name} but boots partition {boot}");
    assert_eq!(dev.env()["upgrade_available"], "0", "{label}");
    for s in ["ArtifactInstall_Enter", "ArtifactCommit_Leave"] {
        assert!(ran(dev, s) <= 2, "{label}: {s} ran more than twice");
    }
}

/// A device with release-2 installed and booted, not committed.
fn booted_into_update(path: &str) -> SimDevice {
    let dev = SimDevice::new();
    dev.ok(&["install", path]);
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    dev
}

#[cfg(feature = "crash-injection")]
#[test]
fn power_cuts_around_a_stop_and_its_resume_end_consistently() {
    let template = SimDevice::new();
    let artifact = template.write_rootfs_artifact("release-2", 48 << 10, &scripts(None), &[]);
    let path = artifact.display().to_string();
    let mut cases = 0;
    for (command, stop) in [
        ("install", "ArtifactInstall_Enter"),
        ("commit", "ArtifactCommit_Leave"),
        ("rollback", "ArtifactRollback_Enter"),
    ] {
        let new_device = || match command {
            "install" => SimDevice::new(),
            _ => booted_into_update(&path),
        };
        let mut args = vec![command];
        if command == "install" {
            args.push(&path);
        }
        args.extend(["--stop-before", stop]);
        let stopped = format!("Stopped before {stop}");
        for resume in [false, true] {
            for k in 1..=30 {
                let spec = format!("step:{k}");
                let crash = [("MENDER_RS_CRASH_AT", spec.as_str())];
                let label = format!(
                    "{} with a crash at {spec} of the {}",
                    args.join(" "),
                    if resume { "resume" } else { "stopping command" }
                );
                let dev = new_device();
                let out = if resume {
                    expect(&update(&dev, &args), 0, &stopped);
                    update_with(&dev, &["resume"], &crash)
                } else {
                    update_with(&dev, &args, &crash)
                };
                if !crashed(&out) {
                    if !resume {
                        expect(&out, 0, &stopped);
                    }
                    settle(&dev, &label);
                    break;
                }
                cases += 1;
                // The power cut: the bootloader's rule, then the user.
                dev.reboot();
                settle(&dev, &label);
                assert!(k < 30, "{label}: still crashing at step 30");
            }
        }
    }
    assert!(cases >= 10, "only {cases} crash points");
}

#[test]
fn a_power_cut_after_a_stop_finds_it_again() {
    // The stop is one store write: the record after it is the stop itself.
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 32 << 10, &scripts(None), &[]);
    let path = artifact.display().to_string();
    let out = update(
        &dev,
        &["install", &path, "--stop-before", "ArtifactInstall_Enter"],
    );
    expect(&out, 0, "Stopped before ArtifactInstall_Enter");
    assert_eq!(dev.reboot(), Boot::Normal(2));
    assert_eq!(
        pending(&dev),
        Some(("downloaded".into(), Some("ArtifactInstallEnter".into())))
    );
    let out = update(&dev, &["resume"]);
    expect(&out, 0, "Reboot the device");
}

#[test]
fn trusted_certs_and_skipverify_override_the_configuration() {
    let dev = SimDevice::new();
    dev.set_config(
        "ServerCertificate",
        Value::from(dev.path("configured.pem").display().to_string()),
    );
    // An unreachable URL: the agent (and its certificates) comes first.
    let url = "https://127.0.0.1:9/a.mender";
    let out = update(&dev, &["install", url]);
    expect(&out, 1, "configured.pem");
    let given = dev.path("given.pem").display().to_string();
    let out = update(&dev, &["-E", &given, "install", url]);
    expect(&out, 1, "given.pem");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("configured.pem"));
    let out = update(&dev, &["--trusted-certs", &given, "install", url]);
    expect(&out, 1, "given.pem");

    dev.remove_config("ServerCertificate");
    let out = update(&dev, &["--skipverify", "install", url]);
    expect(&out, 1, "TLS certificate verification is DISABLED");
    let out = update(&dev, &["install", url]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("DISABLED"));
    assert_eq!(pending(&dev), None);
}

/// `support/mender-rs.service` and the recipe's links to it.
fn unit_and_recipe() -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |rel: &str| fs::read_to_string(root.join(rel)).unwrap();
    (
        read("support/mender-rs.service"),
        read("meta-mender-rs/recipes-mender/mender-rs/mender-rs_git.bb"),
    )
}

/// The values of `key=` lines of a unit file, split at white space.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn the_unit_answers_to_the_4x_service_names() {
    let (unit, recipe) = unit_and_recipe();
    let names = ["mender-updated.service", "mender-authd.service"];
    let aliases = unit_values(&unit, "Alias");
    let conflicts = unit_values(&unit, "Conflicts");
    for name in names {
        assert!(aliases.iter().any(|a| a == name), "Alias= lacks {name}");
        // A unit that conflicted with its own alias would stop itself.
        assert!(!conflicts.iter().any(|c| c == name), "Conflicts={name}");
        let link = format!("ln -sf mender-rs.service ${{D}}${{systemd_system_unitdir}}/{name}");
        assert!(recipe.contains(&link), "the recipe does not install {name}");
        assert!(recipe.contains(&format!("${{systemd_system_unitdir}}/{name} \\")));
    }
    for other in ["mender-client.service", "mender.service"] {
        assert!(
            conflicts.iter().any(|c| c == other),
            "Conflicts= lacks {other}"
        );
    }

    // systemctl itself, offline on a root laid out as the recipe does:
    // the names resolve to the unit, and enabling it (Alias=) works beside
    // the recipe's links.
    let Ok(systemctl) = which("systemctl") else {
        eprintln!("systemctl is not installed: the offline systemctl check is left out");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let unit_dir = root.path().join("usr/lib/systemd/system");
    fs::create_dir_all(&unit_dir).unwrap();
    fs::create_dir_all(root.path().join("etc/systemd/system")).unwrap();
    fs::write(unit_dir.join("mender-rs.service"), &unit).unwrap();
    for name in names {
        std::os::unix::fs::symlink("mender-rs.service", unit_dir.join(name)).unwrap();
    }
    let root_arg = format!("--root={}", root.path().display());
    let systemctl_out = |args: &[&str]| {
        run_bounded(
            Command::new(&systemctl).arg(&root_arg).args(args),
            DEFAULT_TIMEOUT,
        )
    };
    for name in names {
        let out = systemctl_out(&["is-enabled", name]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "alias",
            "{}",
            describe(&out)
        );
    }
    let out = systemctl_out(&["enable", "mender-rs.service"]);
    assert!(out.status.success(), "{}", describe(&out));
    for name in names {
        let link = root.path().join("etc/systemd/system").join(name);
        let target = fs::read_link(&link).unwrap();
        assert!(
            target.ends_with("mender-rs.service"),
            "{}",
            target.display()
        );
    }
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn a_failure_during_resume_fails_it_even_when_it_stops() {
    let dev = SimDevice::new();
    let artifact = dev.write_rootfs_artifact("release-2", 32 << 10, &scripts(None), &[]);
    dev.ok(&["install", &artifact.display().to_string()]);
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    // The update did not come up: the bootloader went back.
    assert_eq!(dev.reboot(), Boot::RolledBack(2));
    // `resume` commits, the commit finds the failure and rolls back, and
    // stops there: this run failed, so it exits 1.
    let out = update(&dev, &["resume", "--stop-before", "ArtifactRollback_Enter"]);
    expect(
        &out,
        1,
        "stopped before ArtifactRollback_Enter (--stop-before) after the failure",
    );
    // The next resume finishes the rollback: nothing failed in it.
    let out = update(&dev, &["resume"]);
    expect(&out, 0, "Rolled back");
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(ran(&dev, "ArtifactFailure_Leave"), 1);
}

#[test]
fn the_daemon_leaves_a_stopped_update_alone() {
    use crate::support::managed::{DaemonChild, DeviceSetup, daemon_bin, daemon_command};
    use crate::support::mender_server::{Endpoint, MenderServer};

    let server = MenderServer::start();
    let dev = SimDevice::new();
    let url = server.url();
    DeviceSetup {
        server_url: Some(&url),
        mac: "02:00:00:00:00:02",
        inventory_script: None,
        reboot_marker: None,
        update_poll: 1,
        inventory_poll: None,
        retry_poll: 1,
    }
    .apply(&dev);
    let mine = dev.write_rootfs_artifact("mine", 32 << 10, &[], &[]);
    let theirs = dev.write_rootfs_artifact("theirs", 32 << 10, &[], &[]);
    let out = update(
        &dev,
        &[
            "install",
            &mine.display().to_string(),
            "--stop-before",
            "ArtifactInstall_Enter",
        ],
    );
    expect(&out, 0, "Stopped before ArtifactInstall_Enter");
    let dep = server.add_deployment(&theirs, "theirs", &[crate::support::device::DEVICE_TYPE]);
    let log = dev.path("daemon.log");
    let daemon = DaemonChild::spawn(&mut daemon_command(&dev, &daemon_bin(), "info", &log));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.requests_to(Endpoint::NextV1Post).len() < 3 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    daemon.stop(std::time::Duration::from_secs(5));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        server.requests_to(Endpoint::NextV1Post).len() >= 3,
        "the daemon did not poll: {text}"
    );
    assert!(
        text.contains("stopped before ArtifactInstall_Enter"),
        "{text}"
    );
    // The stopped update is untouched, and goes on when the user says so.
    assert_eq!(
        pending(&dev),
        Some(("downloaded".into(), Some("ArtifactInstallEnter".into())))
    );
    assert!(
        server
            .statuses(&server.device_ids()[0], &dep)
            .iter()
            .all(|s| s == "pending")
    );
    let out = update(&dev, &["resume"]);
    expect(&out, 0, "Reboot the device");
}

#[test]
fn update_log_path_places_the_deployment_logs() {
    let dev = SimDevice::new();
    let logs = dev.path("logs");
    fs::create_dir_all(&logs).unwrap();
    dev.set_config("UpdateLogPath", Value::String(logs.display().to_string()));
    let artifact = dev.write_rootfs_artifact("release-2", 64 << 10, &[], &[]);
    dev.ok(&["install", artifact.to_str().unwrap()]);
    let names = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("deployments."))
            .collect()
    };
    assert_eq!(names(&logs), ["deployments.0001.standalone.log"]);
    assert!(names(&dev.data).is_empty(), "{:?}", names(&dev.data));
}
