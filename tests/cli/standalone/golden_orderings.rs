//! Golden state-script orderings for rootfs-image updates, provides
//! bookkeeping, an artifact written by the real `mender-artifact`.

use super::*;

#[test]
fn rootfs_success_with_reboot_exit_code() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let provides_before = dev.provides();
    assert_eq!(dev.show_artifact(), "unknown");
    // Nothing committed yet: no rootfs provides (whether a bare
    // `artifact_name=unknown` line shows is not pinned down here).
    assert!(
        provides_before
            .keys()
            .all(|k| k == "artifact_name" && provides_before[k] == "unknown"),
        "{provides_before:?}"
    );

    let install = install_scripts();
    let commit = commit_scripts();

    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_env(&dev, 3, 1);
    assert_eq!(dev.env().get("bootcount").map(String::as_str), Some("0"));
    assert_partition_holds(&dev, 3, &art);
    assert_eq!(
        dev.show_artifact(),
        "unknown",
        "name changes only at commit"
    );
    assert_eq!(dev.provides(), provides_before);

    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 0, &commit);
    assert_env(&dev, 3, 0);
    assert_eq!(dev.show_artifact(), "release-2");
    assert_provides(&dev, &rootfs_provides("release-2", &art));
    assert_eq!(dev.reboot(), Boot::Normal(3));

    // Nothing pending any more.
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert_eq!(dev.script_log(), concat(&[install, commit]));
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_success_without_reboot_exit_code_exits_0() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 0, "install without --reboot-exit-code");
    assert_env(&dev, 3, 1);
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "release-2");
}

#[test]
fn rootfs_failure_in_download_enter() {
    let failing = "Download_Enter_12";
    let dev = device_with_rootfs_scripts(Some(failing));
    let art = artifact_with_scripts(&dev, "release-2", None);
    let before = snapshot(&dev);
    let expected = concat(&[
        block_until(ROOTFS_SCRIPTS, "Download", "Enter", failing),
        r("Download", "Error"),
    ]);
    assert_eq!(expected, ["Download_Enter_12", "Download_Error_25"]);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        1,
        &expected,
    );
    assert!(dev.env_bytes() == before.env, "the env changed");
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    assert_env(&dev, 2, 0);
    assert_eq!(dev.provides_text(), before.provides);
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_download_leave() {
    let failing = "Download_Leave_14";
    let dev = device_with_rootfs_scripts(Some(failing));
    let art = artifact_with_scripts(&dev, "release-2", None);
    let before = snapshot(&dev);
    let expected = concat(&[
        r("Download", "Enter"),
        block_until(ROOTFS_SCRIPTS, "Download", "Leave", failing),
        r("Download", "Error"),
    ]);
    step(&dev, &["install", p(&art)], 1, &expected);
    assert!(dev.env_bytes() == before.env, "the env changed");
    assert_eq!(dev.provides_text(), before.provides);
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_install_enter() {
    let failing = "ArtifactInstall_Enter_01";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let before = snapshot(&dev);
    let expected = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        block_until(ARTIFACT_SCRIPTS, "ArtifactInstall", "Enter", failing),
        a("ArtifactInstall", "Error"),
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
        a("ArtifactFailure", "Enter"),
        a("ArtifactFailure", "Leave"),
    ]);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        1,
        &expected,
    );
    assert_env(&dev, 2, 0);
    assert_eq!(dev.partition_sha256(2), before.running);
    assert_eq!(dev.provides_text(), before.provides);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.reboot(), Boot::Normal(2));
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_install_leave() {
    let failing = "ArtifactInstall_Leave_01";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let expected = concat(&[
        r("Download", "Enter"),
        r("Download", "Leave"),
        a("ArtifactInstall", "Enter"),
        block_until(ARTIFACT_SCRIPTS, "ArtifactInstall", "Leave", failing),
        a("ArtifactInstall", "Error"),
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
        a("ArtifactFailure", "Enter"),
        a("ArtifactFailure", "Leave"),
    ]);
    step(&dev, &["install", p(&art)], 1, &expected);
    // The switch to partition 3 happened before the Leave scripts: undone.
    assert_env(&dev, 2, 0);
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_commit_enter() {
    let failing = "ArtifactCommit_Enter_05";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let provides_before = dev.provides_text();
    let install = install_scripts();
    let commit = concat(&[
        block_until(ARTIFACT_SCRIPTS, "ArtifactCommit", "Enter", failing),
        a("ArtifactCommit", "Error"),
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
        a("ArtifactFailure", "Enter"),
        a("ArtifactFailure", "Leave"),
    ]);
    assert_eq!(
        commit[..3],
        [
            "ArtifactCommit_Enter_01",
            "ArtifactCommit_Enter_05",
            "ArtifactCommit_Error_91"
        ]
    );
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 1, &commit);
    assert_env(&dev, 2, 0);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.provides_text(), provides_before);
    assert_eq!(dev.reboot(), Boot::Normal(2));
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_failure_in_artifact_commit_leave() {
    let failing = "ArtifactCommit_Leave_01_extra_string";
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some(failing));
    let install = install_scripts();
    // Too late to roll back: the Error scripts, then nothing.
    let commit = concat(&[
        a("ArtifactCommit", "Enter"),
        block_until(ARTIFACT_SCRIPTS, "ArtifactCommit", "Leave", failing),
        a("ArtifactCommit", "Error"),
    ]);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 1, &commit);
    // The update stays.
    assert_env(&dev, 3, 0);
    assert_eq!(dev.reboot(), Boot::Normal(3));
    assert_eq!(dev.show_artifact(), "release-2_INCONSISTENT");
    let mut want = rootfs_provides("release-2", &art);
    want.insert("artifact_name".into(), "release-2_INCONSISTENT".into());
    assert_provides(&dev, &want);
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

/// The scripts of a requested (manual) `rollback` that succeeds: the
/// ArtifactRollback ones only. Both reference clients agree: Mender 3.x
/// (`DoStandaloneRollback`) runs the failure states only when the rollback
/// itself failed, and 4.x (`standalone::Rollback`) runs ArtifactFailure only
/// from its installation-failure handler. (The brief and the sentence of
/// spec §2.10 also list ArtifactFailure here; the reference code does not.)
fn manual_rollback_scripts() -> Vec<&'static str> {
    concat(&[
        a("ArtifactRollback", "Enter"),
        a("ArtifactRollback", "Leave"),
    ])
}

#[test]
fn rootfs_manual_rollback_after_install() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let before = snapshot(&dev);
    let install = install_scripts();
    let rollback = manual_rollback_scripts();
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        4,
        &install,
    );
    assert_env(&dev, 3, 1);
    step(&dev, &["rollback"], 0, &rollback);
    assert_env(&dev, 2, 0);
    assert_eq!(dev.partition_sha256(2), before.running);
    assert_eq!(dev.provides_text(), before.provides);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.reboot(), Boot::Normal(2));
    step(&dev, &["rollback"], 2, &[]);
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn rootfs_manual_rollback_after_reboot() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let rollback = manual_rollback_scripts();
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["rollback"], 0, &rollback);
    assert_env(&dev, 2, 0);
    assert_eq!(dev.reboot(), Boot::Normal(2));
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]

fn failing_rollback_script_in_manual_rollback_marks_inconsistent() {
    // Reference standalone fact: a failing rollback script marks the name
    // `<name>_INCONSISTENT`; the rollback itself still happens.
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", Some("ArtifactRollback_Leave_01"));
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    let out = dev.run(&["rollback"]);
    assert_env(&dev, 2, 0);
    assert_eq!(
        dev.show_artifact(),
        "release-2_INCONSISTENT",
        "{}",
        describe(&out)
    );
    assert_exit(
        &out,
        1,
        "rollback with a failing ArtifactRollback_Leave script",
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
    assert_no_forbidden_scripts(&dev);
}

#[test]

fn failing_rollback_script_after_failed_install_marks_inconsistent() {
    let dev = device_with_rootfs_scripts(None);
    let scripts: Vec<(&str, i32)> = ARTIFACT_SCRIPTS
        .iter()
        .map(|s| {
            let fails = matches!(*s, "ArtifactInstall_Enter_01" | "ArtifactRollback_Leave_00");
            (*s, i32::from(fails))
        })
        .collect();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &scripts, &[]);
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "failing install");
    assert_env(&dev, 2, 0);
    assert_eq!(
        dev.show_artifact(),
        "release-2_INCONSISTENT",
        "{}",
        describe(&out)
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn commit_and_rollback_with_nothing_pending_exit_2() {
    let dev = device_with_rootfs_scripts(None);
    let env = dev.env_bytes();
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert!(dev.env_bytes() == env);
    // After a committed update too.
    let art = artifact_with_scripts(&dev, "release-2", None);
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    let env = dev.env_bytes();
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
    assert!(dev.env_bytes() == env);
    assert_eq!(dev.show_artifact(), "release-2");
}

#[test]
fn install_while_another_is_pending_second_wins() {
    let dev = device_with_rootfs_scripts(None);
    let first = artifact_with_scripts(&dev, "release-2", None);
    let second = artifact_with_scripts(&dev, "release-3", None);
    let install = install_scripts();
    let commit = commit_scripts();
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&first)],
        4,
        &install,
    );
    assert_partition_holds(&dev, 3, &first);
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&second)],
        4,
        &install,
    );
    assert_env(&dev, 3, 1);
    assert_partition_holds(&dev, 3, &second);
    assert_eq!(dev.show_artifact(), "unknown");
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 0, &commit);
    assert_env(&dev, 3, 0);
    assert_eq!(dev.show_artifact(), "release-3");
    assert_provides(&dev, &rootfs_provides("release-3", &second));
    step(&dev, &["commit"], 2, &[]);
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn second_rootfs_update_goes_back_to_partition_a() {
    let dev = SimDevice::new();
    let two = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let three = dev.write_rootfs_artifact("release-3", PAYLOAD, &[], &[]);
    assert_exit(&dev.run(&["install", p(&two)]), 0, "install 2");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit 2");
    let running = dev.partition_sha256(3);
    assert_exit(&dev.run(&["install", p(&three)]), 0, "install 3");
    assert_env(&dev, 2, 1);
    assert_partition_holds(&dev, 2, &three);
    assert_eq!(dev.partition_sha256(3), running, "the running side changed");
    assert_eq!(dev.reboot(), Boot::TryUpdate(2));
    assert_exit(&dev.run(&["commit"]), 0, "commit 3");
    assert_env(&dev, 2, 0);
    assert_provides(&dev, &rootfs_provides("release-3", &three));
}

#[test]
fn bootloader_rollback_makes_commit_fail() {
    // The update did not come up: the bootloader switched back on the
    // second boot; commit must refuse and clean up.
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    assert_exit(&dev.run(&["install", p(&art)]), 0, "install");
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    assert_eq!(dev.reboot(), Boot::RolledBack(2));
    dev.clear_script_log();
    let out = dev.run(&["commit"]);
    assert_exit(&out, 1, "commit after the bootloader rolled back");
    assert_env(&dev, 2, 0);
    assert_eq!(dev.show_artifact(), "unknown");
    assert!(
        dev.script_log()
            .iter()
            .all(|s| !s.starts_with("ArtifactCommit_")),
        "commit scripts ran: {:?}",
        dev.script_log()
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing left");
    assert_no_forbidden_scripts(&dev);
}

#[test]
fn clears_provides_semantics_over_a_module_artifact() {
    let dev = SimDevice::new();
    dev.set_config("ModulesPath", json!(DEBIAN_MODULES));
    let build = dev.new_build_dir("script-payload");
    let marker = dev.path("script-ran");
    let script = build.join("run.sh");
    write_executable(
        &script,
        &format!("#!/bin/sh\necho ok > '{}'\n", marker.display()),
    );
    // The `script` module cannot roll back: committed by install.
    let app = dev.write_module_artifact(
        "app-1",
        "script",
        &[&script],
        &[],
        &["-p", "app.version:1", "-p", "legacy.key:x"],
    );
    assert_exit(&dev.run(&["install", p(&app)]), 0, "module install");
    assert!(marker.exists());
    assert_provides(
        &dev,
        &BTreeMap::from([
            ("artifact_name".to_string(), "app-1".to_string()),
            ("app.version".to_string(), "1".to_string()),
            ("legacy.key".to_string(), "x".to_string()),
            (
                "rootfs-image.script.version".to_string(),
                "app-1".to_string(),
            ),
        ]),
    );

    // A rootfs update clearing legacy.* (and, by default, rootfs-image.*).
    let rootfs = dev.write_rootfs_artifact(
        "release-2",
        PAYLOAD,
        &[],
        &["--clears-provides", "legacy.*"],
    );
    assert_exit(&dev.run(&["install", p(&rootfs)]), 0, "rootfs install");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    let mut want = rootfs_provides("release-2", &rootfs);
    want.insert("app.version".into(), "1".into());
    assert_provides(&dev, &want);

    // One clearing everything.
    let all = dev.write_rootfs_artifact(
        "release-3",
        PAYLOAD,
        &[],
        &["--no-default-clears-provides", "--clears-provides", "*"],
    );
    assert_exit(&dev.run(&["install", p(&all)]), 0, "rootfs install");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_provides(&dev, &rootfs_provides("release-3", &all));
}

#[test]
fn artifact_written_by_mender_artifact_installs() {
    let dev = device_with_rootfs_scripts(None);
    let build = dev.new_build_dir("reference");
    let payload = build.join("rootfs.img");
    fs::write(&payload, random_bytes(PAYLOAD)).unwrap();
    let mut scripts = Vec::new();
    for s in [
        "ArtifactInstall_Enter_01",
        "ArtifactCommit_Leave_01",
        "ArtifactRollback_Enter_00",
    ] {
        scripts.push("-s".to_string());
        scripts.push(p(&dev.script(&build.join("scripts"), s, 0)).to_string());
    }
    let artifact = build.join("ref.mender");
    let mut cmd = Command::new("mender-artifact");
    cmd.args(["write", "rootfs-image", "-t", DEVICE_TYPE, "-n", "ref-1"])
        .args(["-f", p(&payload), "-o", p(&artifact)])
        .args(&scripts);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "mender-artifact write: {}",
        describe(&out)
    );

    step(
        &dev,
        &["install", "--reboot-exit-code", p(&artifact)],
        4,
        &concat(&[
            r("Download", "Enter"),
            r("Download", "Leave"),
            vec!["ArtifactInstall_Enter_01"],
        ]),
    );
    let data = fs::read(&payload).unwrap();
    assert_eq!(
        dev.partition_sha256_prefix(3, Some(data.len())),
        sha256_hex(&data)
    );
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(&dev, &["commit"], 0, &["ArtifactCommit_Leave_01"]);
    assert_eq!(dev.show_artifact(), "ref-1");
    let provides = dev.provides();
    assert_eq!(
        provides.get("rootfs-image.checksum"),
        Some(&sha256_hex(&data)),
        "{provides:?}"
    );
    assert_eq!(
        provides.get("artifact_name").map(String::as_str),
        Some("ref-1")
    );
}
