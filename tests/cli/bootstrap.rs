//! The bootstrap artifact (`docs/standalone.md`): `<data>/bootstrap.mender`
//! names a freshly flashed device on its first command, as Mender 4.x does,
//! whether `mender-artifact` or `mender-rs artifact write` made it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::device::{DEVICE_TYPE, SimDevice, describe, ec_key_pair, exit_code};

fn bootstrap_file(dev: &SimDevice) -> PathBuf {
    dev.data.join("bootstrap.mender")
}

/// `mender-artifact write bootstrap-artifact` (the reference writer).
fn reference_bootstrap(dev: &SimDevice, name: &str, device_type: &str) -> PathBuf {
    let out = dev.new_build_dir(name).join("bootstrap.mender");
    let status = Command::new("mender-artifact")
        .args(["write", "bootstrap-artifact", "-n", name, "-t", device_type])
        .args(["-p", &format!("rootfs-image.version:{name}")])
        .args(["-p", "rootfs-image.checksum:0123abcd"])
        .arg("--no-progress")
        .arg("-o")
        .arg(&out)
        .output()
        .expect("running mender-artifact");
    assert!(status.status.success(), "{}", describe(&status));
    out
}

/// `mender-rs artifact write bootstrap-artifact ARGS`.
fn our_bootstrap(dev: &SimDevice, name: &str, extra: &[&str]) -> PathBuf {
    let out = dev.new_build_dir(name).join("bootstrap.mender");
    let mut args = vec![
        "artifact",
        "write",
        "bootstrap-artifact",
        "-n",
        name,
        "-t",
        DEVICE_TYPE,
        "-o",
    ];
    let out_text = out.display().to_string();
    args.push(&out_text);
    args.extend_from_slice(extra);
    dev.ok(&args);
    out
}

fn place(dev: &SimDevice, artifact: &Path) {
    fs::copy(artifact, bootstrap_file(dev)).expect("placing bootstrap.mender");
}

#[test]
fn a_reference_bootstrap_artifact_names_the_device_on_first_start_and_is_removed() {
    let dev = SimDevice::new();
    place(&dev, &reference_bootstrap(&dev, "factory-1", DEVICE_TYPE));
    assert_eq!(dev.show_artifact(), "factory-1");
    assert!(
        !bootstrap_file(&dev).exists(),
        "bootstrap.mender is removed"
    );
    let provides = dev.provides();
    assert_eq!(provides["artifact_name"], "factory-1");
    assert_eq!(provides["rootfs-image.version"], "factory-1");
    assert_eq!(provides["rootfs-image.checksum"], "0123abcd");
}

#[test]
fn ours_validates_with_mender_artifact_and_installs_unverified_even_when_keys_are_set() {
    let dev = SimDevice::new();
    // Signed with one key while the device trusts only another: the
    // signature of a bootstrap artifact is not checked (as in Mender 4.x).
    let (signing, signing_pub) = ec_key_pair(&dev.build, "signing");
    let (_, trusted) = ec_key_pair(&dev.build, "trusted");
    dev.set_config(
        "ArtifactVerifyKey",
        serde_json::Value::String(trusted.display().to_string()),
    );
    let signing_text = signing.display().to_string();
    let artifact = our_bootstrap(
        &dev,
        "factory-2",
        &[
            "-p",
            "rootfs-image.version:factory-2",
            "-g",
            "fleet-a",
            "-k",
            &signing_text,
        ],
    );
    let validate = Command::new("mender-artifact")
        .arg("validate")
        .arg("-k")
        .arg(&signing_pub)
        .arg(&artifact)
        .output()
        .expect("running mender-artifact");
    assert!(validate.status.success(), "{}", describe(&validate));
    let read = Command::new("mender-artifact")
        .arg("read")
        .arg(&artifact)
        .output()
        .expect("running mender-artifact");
    let text = String::from_utf8_lossy(&read.stdout);
    assert!(text.contains("Empty type"), "{text}");

    place(&dev, &artifact);
    let provides = dev.provides();
    assert_eq!(provides["artifact_name"], "factory-2");
    assert_eq!(provides["artifact_group"], "fleet-a");
    assert_eq!(provides["rootfs-image.version"], "factory-2");
    assert!(!bootstrap_file(&dev).exists());
}

#[test]
fn a_named_device_ignores_a_bootstrap_artifact_and_removes_it() {
    let dev = SimDevice::new();
    place(&dev, &our_bootstrap(&dev, "first", &[]));
    assert_eq!(dev.show_artifact(), "first");
    place(&dev, &our_bootstrap(&dev, "second", &[]));
    assert_eq!(dev.show_artifact(), "first");
    assert!(!bootstrap_file(&dev).exists());
}

#[test]
fn a_bad_bootstrap_artifact_fails_once_naming_the_file_then_is_gone() {
    let dev = SimDevice::new();
    let cases: Vec<(&str, PathBuf)> = vec![
        (
            "another device type",
            reference_bootstrap(&dev, "wrong-type", "other-board"),
        ),
        (
            "a rootfs-image artifact",
            dev.write_rootfs_artifact("not-bootstrap", 4096, &[], &[]),
        ),
        ("not an artifact", {
            let p = dev.build.join("garbage.mender");
            fs::write(&p, b"this is not a tar file at all").unwrap();
            p
        }),
    ];
    for (what, artifact) in cases {
        place(&dev, &artifact);
        let out = dev.run(&["show-artifact"]);
        assert_eq!(exit_code(&out), 1, "{what}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bootstrap.mender"), "{what}: {err}");
        assert!(!bootstrap_file(&dev).exists(), "{what}: removed");
        // The next start goes on as if there had been none.
        assert_eq!(dev.show_artifact(), "unknown", "{what}");
    }
    // Nothing was half-applied: no provides were stored.
    let provides = dev.provides();
    assert!(
        provides.keys().all(|k| k == "artifact_name"),
        "{provides:?}"
    );
}

#[test]
fn a_full_install_after_the_bootstrap_clears_its_rootfs_provides() {
    let dev = SimDevice::new();
    place(&dev, &reference_bootstrap(&dev, "factory-3", DEVICE_TYPE));
    let artifact = dev.write_rootfs_artifact("release-2", 64 << 10, &[], &[]);
    let artifact_text = artifact.display().to_string();
    // `install` itself installs the bootstrap first, as 4.x does.
    dev.ok(&["install", &artifact_text]);
    dev.reboot();
    dev.ok(&["commit"]);
    let provides = dev.provides();
    assert_eq!(provides["artifact_name"], "release-2");
    assert_eq!(provides["rootfs-image.version"], "release-2");
    assert_ne!(provides["rootfs-image.checksum"], "0123abcd");
}
