//! Hardening: configuration (issue #13 findings 1 and 5). A misconfigured
//! device must refuse with a clear error naming the file, key or partition,
//! exit 1 and change nothing: above all it must never write the partition
//! it runs from, whatever alias names it. Configuration and device-type
//! files of the wrong kind or size are refused without being read.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::refusal::{assert_refused, snapshot};
use crate::special_files::{HUGE, link_to_zero, mkfifo, replace, sparse};
use crate::support::device::*;

/// Small payloads: the refusals happen before any byte is written.
const PAYLOAD: usize = 64 << 10;

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Installs a fresh artifact and expects the refusal.
#[track_caller]
fn install_refused(dev: &SimDevice, needles: &[&str]) {
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let before = snapshot(dev);
    let out = dev.run(&["install", p(&art)]);
    assert_refused(dev, &before, &out, needles);
}

/// Writes `text` as the device's mender.conf, as is.
fn raw_config(dev: &SimDevice, text: &str) {
    fs::write(&dev.config_file, text).unwrap();
}

/// The device's configuration (as JSON text) with `extra` spliced in
/// before the closing brace, so that keys can repeat.
fn config_with(dev: &SimDevice, extra: &str) -> String {
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(dev.config())).unwrap();
    let end = text.rfind('}').unwrap();
    format!("{}, {extra}\n}}", &text[..end].trim_end())
}

/// Runs `show-artifact` (which loads the configuration) and expects exit 1
/// with one error line naming every needle, within a few seconds.
#[track_caller]
fn config_refused(dev: &SimDevice, needles: &[&str]) -> String {
    let start = Instant::now();
    let out = dev.run_with(&["show-artifact"], &[], Duration::from_secs(20));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    one_error_line(&out, needles)
}

/// `mender-rs --config CONFIG --data DATA show-artifact` for `dev` with
/// another configuration file (a TOML one, say), bounded in time.
fn show_artifact_with_config(dev: &SimDevice, config: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg("--data")
        .arg(&dev.data)
        .arg("show-artifact");
    run_bounded(&mut cmd, DEFAULT_TIMEOUT)
}

fn mknod_block(path: &Path, major: u32, minor: u32) {
    let out = Command::new("mknod")
        .arg(path)
        .arg("b")
        .arg(major.to_string())
        .arg(minor.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "mknod: {}", describe(&out));
}

/// A loop device over a file, detached when dropped.
struct Loop {
    dev: PathBuf,
    mount: Option<PathBuf>,
}

impl Loop {
    fn attach(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", describe(&out));
        Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            mount: None,
        }
    }

    fn mount_on(&mut self, dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .arg(&self.dev)
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", describe(&out));
        self.mount = Some(dir.to_path_buf());
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(dir) = &self.mount {
            let _ = Command::new("umount").arg(dir).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

// ---------------------------------------------------------------------------
// The running partition, under every alias

#[test]
fn slot_b_equal_to_slot_a_is_refused() {
    let dev = SimDevice::new();
    dev.set_config("RootfsPartB", json!(p(&dev.part_a)));
    install_refused(&dev, &["RootfsPartA", "RootfsPartB", "same"]);
}

#[test]
fn slot_b_symlink_to_slot_a_is_refused() {
    let dev = SimDevice::new();
    let link = dev.path("dev/rootfs-b");
    symlink(&dev.part_a, &link).unwrap();
    dev.set_config("RootfsPartB", json!(p(&link)));
    install_refused(&dev, &["RootfsPartB", "same"]);
}

#[test]
fn slot_b_by_label_alias_of_slot_a_is_refused() {
    let dev = SimDevice::new();
    let by = dev.path("dev/disk/by-partlabel");
    fs::create_dir_all(&by).unwrap();
    symlink("../../mmcblk0p2", by.join("rootfs-b3")).unwrap();
    dev.set_config("RootfsPartB", json!(p(&by.join("rootfs-b3"))));
    install_refused(&dev, &["RootfsPartB", "same"]);
}

#[test]
fn slot_b_hard_link_to_slot_a_is_refused() {
    let dev = SimDevice::new();
    let link = dev.path("dev/mmcblk1p3");
    fs::hard_link(&dev.part_a, &link).unwrap();
    dev.set_config("RootfsPartB", json!(p(&link)));
    install_refused(&dev, &["RootfsPartB", "same"]);
}

#[test]
fn slot_b_dot_path_to_slot_a_is_refused() {
    let dev = SimDevice::new();
    let dotted = format!("{}/dev/./../dev/./mmcblk0p2", dev.root.display());
    dev.set_config("RootfsPartB", json!(dotted));
    install_refused(&dev, &["RootfsPartB", "same"]);
}

#[test]
fn alias_of_the_active_slot_b_is_refused() {
    // B runs (mender_boot_part=3); A is a link to B.
    let dev = SimDevice::new();
    dev.set_env(&[("mender_boot_part", "3"), ("mender_boot_part_hex", "3")]);
    let link = dev.path("dev/alias-of-b2");
    symlink(&dev.part_b, &link).unwrap();
    dev.set_config("RootfsPartA", json!(p(&link)));
    install_refused(&dev, &["RootfsPartA", "same"]);
}

#[test]
fn two_block_nodes_of_one_device_are_refused_before_opening() {
    // Two nodes with one device number (one that no driver serves, so even
    // an open would fail): refused for being the same device.
    let dev = SimDevice::new();
    let a = dev.path("dev/blk-a2");
    let b = dev.path("dev/blk-b3");
    mknod_block(&a, 4000, 77);
    mknod_block(&b, 4000, 77);
    dev.set_config("RootfsPartA", json!(p(&a)));
    dev.set_config("RootfsPartB", json!(p(&b)));
    install_refused(&dev, &["same", "4000:77"]);
}

#[test]
fn inactive_slot_file_behind_a_loop_device_is_refused() {
    let dev = SimDevice::new();
    let _loop = Loop::attach(&dev.part_b);
    install_refused(&dev, &["RootfsPartB", "loop"]);
}

#[test]
fn mounted_inactive_block_slot_is_refused() {
    let dev = SimDevice::new();
    let image = dev.path("loop-image");
    fs::File::create(&image).unwrap().set_len(4 << 20).unwrap();
    let out = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs: {}", describe(&out));
    let mut lo = Loop::attach(&image);
    let mnt = dev.path("mnt");
    lo.mount_on(&mnt);
    dev.set_config("RootfsPartB", json!(p(&lo.dev)));
    install_refused(&dev, &["mounted", p(&mnt)]);
    drop(lo);
    // Mounting changes the superblock; the payload would have started at
    // byte 0, where ext4 leaves 1 KiB of zeros.
    let head = fs::read(&image).unwrap();
    assert!(
        head[..1024].iter().all(|&b| b == 0),
        "the mounted image was written"
    );
}

#[test]
fn both_slots_one_file_via_relative_looking_names_are_refused() {
    // RootfsPartA itself reached through a link chain: still one file.
    let dev = SimDevice::new();
    let l1 = dev.path("dev/l1");
    let l2 = dev.path("dev/l2-3");
    symlink(&dev.part_b, &l1).unwrap();
    symlink(&l1, &l2).unwrap();
    dev.set_config("RootfsPartB", json!(p(&l2)));
    dev.set_config("RootfsPartA", json!(p(&dev.part_b)));
    install_refused(&dev, &["same"]);
}

// ---------------------------------------------------------------------------
// Duplicate keys

#[test]
fn case_insensitive_duplicate_rootfs_key_names_both() {
    let dev = SimDevice::new();
    let text = config_with(&dev, r#""rootfspartb": "/dev/p2""#);
    raw_config(&dev, &text);
    config_refused(&dev, &["RootfsPartB", "\"rootfspartb\"", "twice"]);
}

#[test]
fn exact_duplicate_key_is_refused() {
    let dev = SimDevice::new();
    raw_config(
        &dev,
        r#"{"UpdatePollIntervalSeconds": 5, "UpdatePollIntervalSeconds": 6}"#,
    );
    config_refused(&dev, &["UpdatePollIntervalSeconds", "twice"]);
}

#[test]
fn duplicate_with_null_is_refused() {
    let dev = SimDevice::new();
    let text = config_with(&dev, r#""ROOTFSPARTA": null"#);
    raw_config(&dev, &text);
    config_refused(&dev, &["RootfsPartA", "\"ROOTFSPARTA\""]);
}

#[test]
fn duplicate_inside_https_client_is_refused() {
    let dev = SimDevice::new();
    raw_config(
        &dev,
        r#"{"HttpsClient": {"Certificate": "/c", "Key": "/k1", "KEY": "/k2"}}"#,
    );
    config_refused(&dev, &["HttpsClient.Key", "\"KEY\""]);
}

#[test]
fn duplicate_object_keys_differing_in_case_are_refused() {
    let dev = SimDevice::new();
    raw_config(
        &dev,
        r#"{"Security": {"AuthPrivateKey": "/a"}, "security": {"AuthPrivateKey": "/b"}}"#,
    );
    config_refused(&dev, &["Security", "\"security\""]);
}

#[test]
fn duplicate_inside_a_servers_entry_is_refused() {
    let dev = SimDevice::new();
    raw_config(
        &dev,
        r#"{"Servers": [{"ServerURL": "https://a.example", "serverurl": "https://b.example"}]}"#,
    );
    config_refused(&dev, &["Servers[0].ServerURL", "\"serverurl\""]);
}

#[test]
fn toml_duplicate_differing_in_case_is_refused() {
    let dev = SimDevice::new();
    let toml = dev.path("etc/mender/mender.toml");
    fs::write(
        &toml,
        "RootfsPartA = \"/dev/a\"\nROOTFSPARTA = \"/dev/b\"\n",
    )
    .unwrap();
    let out = show_artifact_with_config(&dev, &toml);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("RootfsPartA") && err.contains("\"ROOTFSPARTA\""),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Numbers, types and paths

#[test]
fn hostile_numbers_and_types_are_refused() {
    let dev = SimDevice::new();
    for (text, needles) in [
        (
            r#"{"UpdatePollIntervalSeconds": -1}"#,
            &["UpdatePollIntervalSeconds", "negative"][..],
        ),
        (
            r#"{"InventoryPollIntervalSeconds": 4294967296}"#,
            &["InventoryPollIntervalSeconds", "too large"],
        ),
        (
            r#"{"RetryPollIntervalSeconds": 100000000000000000000000000000}"#,
            &["RetryPollIntervalSeconds", "integer"],
        ),
        (
            r#"{"ModuleTimeoutSeconds": 1e3}"#,
            &["ModuleTimeoutSeconds", "integer"],
        ),
        (
            r#"{"StateScriptTimeoutSeconds": "60"}"#,
            &["StateScriptTimeoutSeconds", "string"],
        ),
        (r#"{"RootfsPartA": {"x": 1}}"#, &["RootfsPartA", "object"]),
        (r#"{"RetryPollCount": -3}"#, &["RetryPollCount", "negative"]),
        (r#"{"SkipVerify": 1}"#, &["SkipVerify", "boolean"]),
    ] {
        raw_config(&dev, text);
        config_refused(&dev, needles);
    }
}

#[test]
fn white_space_reboot_command_is_refused() {
    let dev = SimDevice::new();
    dev.set_config("RebootCommand", json!("  \t "));
    config_refused(&dev, &["RebootCommand"]);
}

#[test]
fn relative_rootfs_partition_is_refused() {
    let dev = SimDevice::new();
    dev.set_config("RootfsPartB", json!("dev/mmcblk0p3"));
    config_refused(&dev, &["RootfsPartB", "absolute"]);
}

#[test]
fn rootfs_partition_inside_the_data_directory_is_refused() {
    let dev = SimDevice::new();
    let inside = dev.data.join("mmcblk0p3");
    fs::copy(&dev.part_b, &inside).unwrap();
    dev.set_config("RootfsPartB", json!(p(&inside)));
    config_refused(&dev, &["RootfsPartB", "data directory"]);
}

// ---------------------------------------------------------------------------
// Configuration files of the wrong kind or size

#[test]
fn config_that_is_a_fifo_is_refused_without_blocking() {
    let dev = SimDevice::new();
    replace(&dev.config_file, mkfifo);
    config_refused(&dev, &[p(&dev.config_file), "FIFO"]);
}

#[test]
fn config_linked_to_dev_zero_is_refused() {
    let dev = SimDevice::new();
    replace(&dev.config_file, link_to_zero);
    config_refused(&dev, &[p(&dev.config_file), "character device"]);
}

#[test]
fn config_that_is_a_directory_is_refused() {
    let dev = SimDevice::new();
    fs::remove_file(&dev.config_file).unwrap();
    fs::create_dir(&dev.config_file).unwrap();
    config_refused(&dev, &[p(&dev.config_file), "directory"]);
}

#[test]
fn huge_sparse_config_is_refused_without_reading() {
    let dev = SimDevice::new();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&dev.config_file)
        .unwrap();
    f.set_len(4 << 30).unwrap();
    config_refused(&dev, &[p(&dev.config_file), "bytes"]);
}

#[test]
fn config_link_loop_is_refused() {
    let dev = SimDevice::new();
    fs::remove_file(&dev.config_file).unwrap();
    let other = dev.path("etc/mender/other.conf");
    symlink(&other, &dev.config_file).unwrap();
    symlink(&dev.config_file, &other).unwrap();
    config_refused(&dev, &[p(&dev.config_file)]);
}

#[test]
fn fallback_config_linked_to_dev_zero_is_refused() {
    let dev = SimDevice::new();
    let fallback = dev.data.join("mender.conf");
    link_to_zero(&fallback);
    config_refused(&dev, &[p(&fallback), "character device"]);
}

#[test]
fn huge_toml_config_is_refused() {
    let dev = SimDevice::new();
    let toml = dev.path("etc/mender/big.toml");
    sparse(&toml, HUGE);
    let out = show_artifact_with_config(&dev, &toml);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    assert!(stderr(&out).contains(p(&toml)), "{}", stderr(&out));
}

#[test]
fn deeply_nested_config_is_refused_without_crashing() {
    let dev = SimDevice::new();
    let depth = 100_000;
    let text = format!(
        "{{\"Servers\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    raw_config(&dev, &text);
    config_refused(&dev, &[p(&dev.config_file)]);
}

// ---------------------------------------------------------------------------
// The device-type file

#[test]
fn device_type_file_linked_to_dev_zero_is_refused() {
    let dev = SimDevice::new();
    replace(&dev.device_type_file, link_to_zero);
    install_refused(&dev, &[p(&dev.device_type_file), "character device"]);
}

#[test]
fn huge_device_type_file_is_refused_without_reading() {
    let dev = SimDevice::new();
    sparse(&dev.device_type_file, HUGE);
    install_refused(&dev, &[p(&dev.device_type_file), "bytes"]);
}

#[test]
fn device_type_fifo_is_refused_without_blocking() {
    let dev = SimDevice::new();
    replace(&dev.device_type_file, mkfifo);
    install_refused(&dev, &[p(&dev.device_type_file), "FIFO"]);
}

#[test]
fn empty_device_type_file_is_refused() {
    let dev = SimDevice::new();
    fs::write(&dev.device_type_file, "").unwrap();
    install_refused(&dev, &[p(&dev.device_type_file), "device_type"]);
}

#[test]
fn device_type_file_without_the_key_is_refused() {
    let dev = SimDevice::new();
    fs::write(&dev.device_type_file, "sim-device\nartifact_name=x\n").unwrap();
    install_refused(&dev, &[p(&dev.device_type_file), "device_type"]);
}

#[test]
fn device_type_file_with_two_device_types_keeps_the_first() {
    // As Mender: the first device_type line counts; an artifact for the
    // second is refused.
    let dev = SimDevice::new();
    fs::write(
        &dev.device_type_file,
        format!("device_type=other-board\ndevice_type={DEVICE_TYPE}\n"),
    )
    .unwrap();
    install_refused(&dev, &["other-board"]);
}

#[test]
fn device_type_file_with_other_lines_still_installs() {
    // The positive control: extra lines of other keys are fine.
    let dev = SimDevice::new();
    fs::write(
        &dev.device_type_file,
        format!("# written by the image\nartifact_name=x\ndevice_type={DEVICE_TYPE}\n"),
    )
    .unwrap();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let out = dev.run(&["install", p(&art)]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
}
