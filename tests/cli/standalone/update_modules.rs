//! Update Modules: Debian's `single-file` and `script` modules.

use super::*;

/// Fails unless Debian's modules are installed; points ModulesPath at them.
fn use_debian_modules(dev: &SimDevice) {
    for m in ["single-file", "script"] {
        let path = Path::new(DEBIAN_MODULES).join(m);
        assert!(
            path.is_file(),
            "{} is missing: install Debian's mender-client package",
            path.display()
        );
    }
    dev.set_config("ModulesPath", json!(DEBIAN_MODULES));
}

/// A single-file artifact installing `content` as `<dest>/app.conf`.
fn single_file_artifact(dev: &SimDevice, name: &str, dest: &Path, content: &str) -> PathBuf {
    let build = dev.new_build_dir(&format!("{name}-files"));
    let files = [
        ("dest_dir", dest.display().to_string()),
        ("filename", "app.conf".to_string()),
        ("permissions", "644".to_string()),
        ("app.conf", content.to_string()),
    ];
    let mut paths = Vec::new();
    for (f, text) in &files {
        let path = build.join(f);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    dev.write_module_artifact(
        name,
        "single-file",
        &refs,
        &[
            ("ArtifactInstall_Enter_01", 0),
            ("ArtifactCommit_Enter_01", 0),
            ("ArtifactRollback_Enter_01", 0),
            ("ArtifactFailure_Enter_01", 0),
        ],
        &[],
    )
}

#[test]
fn single_file_module_install_and_commit() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let dest = dev.path("target-dir");
    let art = single_file_artifact(&dev, "conf-1", &dest, "version 1\n");
    let env = dev.env_bytes();
    // No reboot needed, rollback supported: waits for commit, exit 0 even
    // with --reboot-exit-code.
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        0,
        &["ArtifactInstall_Enter_01"],
    );
    assert_eq!(
        fs::read_to_string(dest.join("app.conf")).unwrap(),
        "version 1\n"
    );
    assert_eq!(dev.show_artifact(), "unknown");
    // The file tree stays until the update ends.
    let tree = dev.modules_work.join("payloads/0000/tree");
    assert_eq!(
        fs::read_to_string(tree.join("header/artifact_name"))
            .unwrap()
            .trim(),
        "conf-1"
    );
    step(&dev, &["commit"], 0, &["ArtifactCommit_Enter_01"]);
    assert_eq!(dev.show_artifact(), "conf-1");
    assert_provides(
        &dev,
        &BTreeMap::from([
            ("artifact_name".to_string(), "conf-1".to_string()),
            (
                "rootfs-image.single-file.version".to_string(),
                "conf-1".to_string(),
            ),
        ]),
    );
    assert!(dev.env_bytes() == env, "a module update touched the env");
    step(&dev, &["commit"], 2, &[]);
    // The module's file tree is gone after the update.
    assert!(!tree.exists(), "file tree left behind: {}", tree.display());
}

#[test]
fn single_file_module_rollback_restores_previous_content() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let dest = dev.path("target-dir");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("app.conf"), "old content\n").unwrap();
    let art = single_file_artifact(&dev, "conf-2", &dest, "new content\n");
    let provides = dev.provides_text();
    step(
        &dev,
        &["install", p(&art)],
        0,
        &["ArtifactInstall_Enter_01"],
    );
    assert_eq!(
        fs::read_to_string(dest.join("app.conf")).unwrap(),
        "new content\n"
    );
    step(
        &dev,
        &["rollback"],
        0,
        // No ArtifactFailure after a requested rollback (see
        // manual_rollback_scripts).
        &["ArtifactRollback_Enter_01"],
    );
    assert_eq!(
        fs::read_to_string(dest.join("app.conf")).unwrap(),
        "old content\n"
    );
    assert_eq!(dev.provides_text(), provides);
    assert_eq!(dev.show_artifact(), "unknown");
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
}

#[test]
fn module_image_without_module_is_refused() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let build = dev.new_build_dir("f");
    let file = build.join("data.bin");
    fs::write(&file, b"payload").unwrap();
    let art = dev.write_module_artifact("nomod-1", "no-such-module", &[&file], &[], &[]);
    let before = snapshot(&dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(&dev, &before, &out, &["no-such-module"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
}

#[test]
fn script_module_without_rollback_commits_at_install() {
    let dev = SimDevice::new();
    use_debian_modules(&dev);
    let build = dev.new_build_dir("script");
    let marker = dev.path("script-ran");
    let script = build.join("run.sh");
    write_executable(
        &script,
        &format!("#!/bin/sh\necho ran > '{}'\n", marker.display()),
    );
    let art = dev.write_module_artifact(
        "script-1",
        "script",
        &[&script],
        &[
            ("ArtifactInstall_Enter_01", 0),
            ("ArtifactCommit_Enter_01", 0),
            ("ArtifactCommit_Leave_01", 0),
            ("ArtifactRollback_Enter_01", 0),
        ],
        &[],
    );
    let env = dev.env_bytes();
    step(
        &dev,
        &["install", "--reboot-exit-code", p(&art)],
        0,
        &[
            "ArtifactInstall_Enter_01",
            "ArtifactCommit_Enter_01",
            "ArtifactCommit_Leave_01",
        ],
    );
    assert_eq!(fs::read_to_string(&marker).unwrap(), "ran\n");
    assert_eq!(dev.show_artifact(), "script-1");
    assert_eq!(
        dev.provides()
            .get("rootfs-image.script.version")
            .map(String::as_str),
        Some("script-1")
    );
    assert!(dev.env_bytes() == env);
    step(&dev, &["commit"], 2, &[]);
    step(&dev, &["rollback"], 2, &[]);
}
