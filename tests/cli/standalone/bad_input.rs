//! Bad input: refused with a one-line error, nothing changed, nothing left
//! pending.

use super::*;

#[test]
fn corrupt_env_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    // Flip a byte of the variables: the CRC no longer matches.
    let mut env = dev.env_bytes();
    let at = env
        .windows(b"mender_boot_part=2".len())
        .position(|w| w == b"mender_boot_part=2")
        .expect("variable in the env");
    env[at + b"mender_boot_part=".len()] = b'3';
    fs::write(&dev.env_file, &env).unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &[p(&dev.env_file), "crc"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn missing_fw_env_config_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let missing = dev.root.join("etc/no-such-fw_env.config");
    dev.set_config("BootEnvConfig", serde_json::json!(p(&missing)));
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "install without fw_env.config");
    assert!(
        stderr(&out).contains("no-such-fw_env.config"),
        "{}",
        stderr(&out)
    );
    assert!(dev.env_bytes() == before.env, "the env file changed");
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn garbage_boot_part_is_refused() {
    for garbage in ["seven", "9", ""] {
        let dev = SimDevice::new();
        let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
        if garbage.is_empty() {
            dev.ok(&["bootenv", "set", "mender_boot_part="]);
        } else {
            dev.set_env(&[("mender_boot_part", garbage)]);
        }
        let before = snapshot(&dev);
        let out = dev.run(&["install", p(&art)]);
        assert_refused(&dev, &before, &out, &["mender_boot_part"]);
        assert_eq!(
            before.inactive,
            Some(dev.partition_sha256(3)),
            "{garbage:?}"
        );
    }
}

#[test]
fn missing_partition_file_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    fs::remove_file(&dev.part_b).unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &[p(&dev.part_b)]);
    assert!(!dev.part_b.exists(), "the missing partition was created");
}

#[test]
fn rootfs_part_b_naming_the_running_partition_is_refused() {
    // The same path, a link and a hard link: B is A, the running one.
    for how in ["same", "symlink", "hard link"] {
        let dev = SimDevice::new();
        let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
        let b = match how {
            "same" => dev.part_a.clone(),
            "symlink" => {
                let l = dev.path("dev/by-name-rootfs-b3");
                std::os::unix::fs::symlink(&dev.part_a, &l).unwrap();
                l
            }
            _ => {
                let l = dev.path("dev/mmcblk1p3");
                fs::hard_link(&dev.part_a, &l).unwrap();
                l
            }
        };
        dev.set_config("RootfsPartB", json!(p(&b)));
        let before = snapshot(&dev);
        let out = dev.run(&["install", p(&art)]);
        assert_refused(&dev, &before, &out, &["RootfsPartA", "RootfsPartB", "same"]);
        assert_eq!(dev.env()["upgrade_available"], "0", "{how}");
    }
}

#[test]
fn payload_bigger_than_partition_is_refused() {
    let dev = SimDevice::with_partition_size(PAYLOAD as u64);
    let art = dev.write_rootfs_artifact("too-big", PAYLOAD + 4096, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &[p(&dev.part_b)]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    assert_eq!(fs::metadata(&dev.part_b).unwrap().len(), PAYLOAD as u64);
}

#[test]
fn artifact_for_another_device_type_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    fs::write(&dev.device_type_file, "device_type=other-board\n").unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["other-board"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn depends_on_another_artifact_name_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &["-N", "release-1"]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["release-1"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn corrupt_payload_fails_its_checksum() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &["--compression", "none"]);
    let payload = fs::read(payload_of(&art)).unwrap();
    let mut bytes = fs::read(&art).unwrap();
    // The uncompressed payload appears verbatim: flip a byte in its middle.
    let probe = &payload[PAYLOAD / 2..PAYLOAD / 2 + 64];
    let at = bytes
        .windows(probe.len())
        .position(|w| w == probe)
        .expect("payload bytes in the artifact");
    bytes[at + 10] ^= 0x01;
    fs::write(&art, &bytes).unwrap();
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["checksum"]);
}

/// A module that logs each call's first argument to `<root>/module.log`;
/// `install_body` is run for ArtifactInstall.
fn custom_module(dev: &SimDevice, name: &str, rollback: bool, install_body: &str) -> PathBuf {
    let dir = dev.path("custom-modules");
    fs::create_dir_all(&dir).unwrap();
    let log = dev.path("module.log");
    write_executable(
        &dir.join(name),
        &format!(
            "#!/bin/sh\necho \"$1\" >> '{log}'\ncase \"$1\" in\n\
             SupportsRollback) echo {answer} ;;\n\
             NeedsArtifactReboot) echo No ;;\n\
             ArtifactInstall) {install_body} ;;\n\
             esac\nexit 0\n",
            log = log.display(),
            answer = if rollback { "Yes" } else { "No" },
        ),
    );
    dev.set_config("ModulesPath", json!(p(&dir)));
    log
}

/// The state calls (queries left out) a module logged.
fn module_calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !matches!(*l, "SupportsRollback" | "NeedsArtifactReboot"))
        .filter(|l| !l.starts_with("Provide"))
        .map(str::to_string)
        .collect()
}

/// A custom module `reboot-mod` whose payloads need a reboot (and that
/// supports rollback or not), and an artifact `name` of one small file for
/// it: (the module's call log, the artifact).
fn reboot_module_artifact(dev: &SimDevice, name: &str, rollback: bool) -> (PathBuf, PathBuf) {
    let log = custom_module(dev, "reboot-mod", rollback, "true");
    let module = dev.path("custom-modules/reboot-mod");
    let script = fs::read_to_string(&module).unwrap();
    fs::write(
        &module,
        script.replace(
            "NeedsArtifactReboot) echo No",
            "NeedsArtifactReboot) echo Yes",
        ),
    )
    .unwrap();
    let file = dev.new_build_dir("f").join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact(name, "reboot-mod", &[&file], &[], &[]);
    (log, art)
}

#[test]
fn module_needing_reboot_waits_for_commit_and_exits_4() {
    let dev = SimDevice::new();
    let (log, art) = reboot_module_artifact(&dev, "reboot-1", true);
    let out = dev.run(&["install", "--reboot-exit-code", p(&art)]);
    assert_exit(&out, 4, "install of a payload needing a reboot");
    assert_eq!(dev.show_artifact(), "unknown");
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "reboot-1");
    let calls = module_calls(&log);
    assert!(
        !calls
            .iter()
            .any(|c| c == "ArtifactReboot" || c == "ArtifactRollbackReboot"),
        "the client rebooted: {calls:?}"
    );
    assert_eq!(calls.first().map(String::as_str), Some("Download"));
    assert!(calls.contains(&"ArtifactCommit".to_string()), "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("Cleanup"));
}

#[test]

fn module_needing_reboot_without_rollback_commits_and_exits_4() {
    // Spec §2.10: auto-commit when rollback is not supported, and exit 4
    // with --reboot-exit-code whenever a payload needs a reboot.
    let dev = SimDevice::new();
    let (log, art) = reboot_module_artifact(&dev, "reboot-2", false);
    let out = dev.run(&["install", "--reboot-exit-code", p(&art)]);
    assert_eq!(dev.show_artifact(), "reboot-2", "not committed at install");
    assert_exit(
        &out,
        4,
        "auto-committed install of a payload needing a reboot",
    );
    let calls = module_calls(&log);
    assert_eq!(
        calls,
        ["Download", "ArtifactInstall", "ArtifactCommit", "Cleanup"]
    );
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
}

#[test]
fn failing_module_is_rolled_back() {
    let dev = SimDevice::new();
    let log = custom_module(
        &dev,
        "failing-mod",
        true,
        "echo 'install broke' >&2; exit 1",
    );
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact(
        "bad-1",
        "failing-mod",
        &[&file],
        &[
            ("ArtifactRollback_Enter_01", 0),
            ("ArtifactFailure_Enter_01", 0),
        ],
        &[],
    );
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["failing-mod", "ArtifactInstall"]);
    assert_eq!(
        module_calls(&log),
        [
            "Download",
            "ArtifactInstall",
            "ArtifactRollback",
            "ArtifactFailure",
            "Cleanup"
        ]
    );
    assert_eq!(
        dev.script_log(),
        ["ArtifactRollback_Enter_01", "ArtifactFailure_Enter_01"]
    );
}

#[test]
fn failing_module_without_rollback_marks_inconsistent() {
    // Spec §2.5: no rollback support → ArtifactFailure, name _INCONSISTENT.
    let dev = SimDevice::new();
    let log = custom_module(&dev, "failing-mod", false, "exit 1");
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("bad-2", "failing-mod", &[&file], &[], &[]);
    let env = dev.env_bytes();
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "failing install");
    assert_eq!(
        module_calls(&log),
        ["Download", "ArtifactInstall", "ArtifactFailure", "Cleanup"]
    );
    assert_eq!(dev.show_artifact(), "bad-2_INCONSISTENT");
    assert!(dev.env_bytes() == env);
    assert_exit(&dev.run(&["commit"]), 2, "nothing pending");
}

#[test]
fn hanging_module_is_killed_after_its_timeout() {
    let dev = SimDevice::new();
    let pids = dev.path("hang-pids");
    let log = custom_module(
        &dev,
        "hanging-mod",
        true,
        &format!("sleep 120 & echo \"$$ $!\" > '{}'; wait", pids.display()),
    );
    dev.set_config("ModuleTimeoutSeconds", json!(2));
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("hang-1", "hanging-mod", &[&file], &[], &[]);
    let before = snapshot(&dev);
    let start = Instant::now();
    let out = dev.run_with(&["install", p(&art)], &[], Duration::from_secs(30));
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "install took {took:?} with ModuleTimeoutSeconds=2"
    );
    assert!(took >= Duration::from_secs(2), "finished in {took:?}");
    assert_refused(&dev, &before, &out, &["hanging-mod", "timed out"]);
    assert_eq!(
        module_calls(&log),
        [
            "Download",
            "ArtifactInstall",
            "ArtifactRollback",
            "ArtifactFailure",
            "Cleanup"
        ]
    );
    // The module and what it started are gone.
    let text = fs::read_to_string(&pids).expect("the module's pids");
    for pid in text.split_whitespace() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "process {pid} of the hung module still runs");
    }
}

/// A process exists and is not a zombie.
fn alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

#[test]
fn non_executable_state_script_is_an_error() {
    let dev = SimDevice::new();
    let script = dev.script(&dev.rootfs_scripts, "Download_Enter_01", 0);
    dev.script(&dev.rootfs_scripts, "Download_Error_01", 0);
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["Download_Enter_01", "executable"]);
    assert_eq!(dev.script_log(), ["Download_Error_01"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn signature_required_when_a_verify_key_is_configured() {
    let dev = SimDevice::new();
    let keys = dev.new_build_dir("keys");
    let (good_key, good_pub) = ec_key_pair(&keys, "good");
    let (wrong_key, _) = ec_key_pair(&keys, "wrong");
    dev.set_config("ArtifactVerifyKey", json!(p(&good_pub)));

    let unsigned = dev.write_rootfs_artifact("unsigned-1", PAYLOAD, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&unsigned)]);
    assert_refused(&dev, &before, &out, &["sign"]);

    let wrong = dev.write_rootfs_artifact("wrong-1", PAYLOAD, &[], &["-k", p(&wrong_key)]);
    let out = dev.run(&["install", p(&wrong)]);
    assert_refused(&dev, &before, &out, &["sign"]);

    let signed = dev.write_rootfs_artifact("signed-1", PAYLOAD, &[], &["-k", p(&good_key)]);
    let out = dev.run(&["install", "--reboot-exit-code", p(&signed)]);
    assert_exit(&out, 4, "signed install");
    assert_partition_holds(&dev, 3, &signed);
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "signed-1");

    // Without a key configured, signed artifacts install.
    dev.remove_config("ArtifactVerifyKey");
    let other = dev.write_rootfs_artifact("signed-2", PAYLOAD, &[], &["-k", p(&wrong_key)]);
    assert_exit(&dev.run(&["install", p(&other)]), 0, "signed, no key");
    dev.reboot();
    assert_exit(&dev.run(&["commit"]), 0, "commit");
    assert_eq!(dev.show_artifact(), "signed-2");
}

#[test]
fn canary_mismatch_is_refused_before_writing() {
    let dev = SimDevice::new();
    dev.set_env(&[("mender_check_saveenv_canary", "1")]);
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["canary"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    // With the canary the bootloader leaves, it installs.
    dev.set_env(&[("mender_saveenv_canary", "1")]);
    assert_exit(
        &dev.run(&["install", p(&art)]),
        0,
        "install with the canary",
    );
    assert_partition_holds(&dev, 3, &art);
}
