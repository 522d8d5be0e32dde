//! Hardening: local files other than the configuration, the store and
//! artifacts (issue #13 finding 5): the device key, TLS files, update
//! control maps, boot environments, the daemon's pid file. Each is made a
//! link to /dev/zero, a FIFO, a directory, a huge sparse file or a file
//! just over its cap; the client must refuse it quickly, naming the file,
//! exit non-zero and change nothing. Every run has an address-space limit,
//! so a read without a cap fails here instead of eating the test machine.
//! (Tests run as root, so unreadable permissions prove nothing here.)

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::special_files::{HUGE, link_to_zero, mkfifo, sparse};
use crate::support::device::{SimDevice, describe, exit_code, run_bounded, write_executable};

/// What any of these refusals may take (a hang is the failure they guard
/// against).
const BOUND: Duration = Duration::from_secs(10);
/// Address space given to each run: far more than the client needs, far
/// less than reading a link to /dev/zero whole would take.
const ADDRESS_SPACE: u64 = 1 << 30;

/// Runs the client with `args`, bounded in time and memory; returns the
/// output and how long it took.
fn run_limited(mut cmd: Command) -> (Output, Duration) {
    // SAFETY: setrlimit is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let out = run_bounded(&mut cmd, BOUND * 2);
    (out, start.elapsed())
}

fn run(dev: &SimDevice, args: &[&str]) -> (Output, Duration) {
    let mut cmd = dev.command();
    cmd.arg("--no-syslog").args(args);
    run_limited(cmd)
}

/// The run failed, quickly, with an error naming `file` and saying each
/// of `words`.
#[track_caller]
fn assert_refused(out: &(Output, Duration), file: &Path, words: &[&str]) {
    let (out, took) = out;
    assert_ne!(exit_code(out), 0, "{}", describe(out));
    assert!(exit_code(out) > 0, "killed by a signal: {}", describe(out));
    assert!(*took < BOUND, "took {took:?}: {}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = file.display().to_string();
    assert!(
        stderr.contains(&name),
        "{name} not named: {}",
        describe(out)
    );
    for word in words {
        assert!(stderr.contains(word), "no {word:?}: {}", describe(out));
    }
}

/// A device set up for `mender-rs daemon` up to its first connection:
/// the server is never reached, the runs end at the local file under test.
fn daemon_device() -> SimDevice {
    let dev = SimDevice::new();
    let identity = dev.path("identity");
    write_executable(&identity, "#!/bin/sh\necho mac=00:11:22:33:44:55\n");
    dev.set_config("ServerURL", json!("https://127.0.0.1:9"));
    dev.set_config("IdentityScript", json!(identity.display().to_string()));
    dev.set_config("DeviceKeyType", json!("ed25519"));
    dev.set_config("DBus", json!({"Enabled": false}));
    dev
}

/// The files of `dir` but the daemon's pid file.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "mender-rs-daemon.pid")
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------- device key

#[test]
fn device_key_fifo_is_refused_without_waiting() {
    let dev = daemon_device();
    let key = dev.data.join("mender-agent.pem");
    mkfifo(&key);
    let before = files_in(&dev.data);
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &key, &["a FIFO"]);
    assert_eq!(files_in(&dev.data), before);
}

#[test]
fn device_key_link_to_dev_zero_is_refused() {
    let dev = daemon_device();
    let key = dev.path("key.pem");
    link_to_zero(&key);
    dev.set_config(
        "Security",
        json!({"AuthPrivateKey": key.display().to_string()}),
    );
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &key, &["a character device"]);
}

#[test]
fn device_key_one_byte_over_its_cap_is_refused_at_its_cap_parsed() {
    let dev = daemon_device();
    let key = dev.path("key.pem");
    dev.set_config(
        "Security",
        json!({"AuthPrivateKey": key.display().to_string()}),
    );
    // 64 KiB: read, then found not to be a key.
    fs::write(&key, vec![b'#'; 64 << 10]).unwrap();
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &key, &["no PEM private key"]);
    // One byte more: not read at all.
    fs::write(&key, vec![b'#'; (64 << 10) + 1]).unwrap();
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &key, &["65537 bytes, more than the 65536 allowed"]);
}

#[test]
fn device_key_dangling_link_is_not_replaced_by_a_new_key() {
    let dev = daemon_device();
    let key = dev.data.join("mender-agent.pem");
    std::os::unix::fs::symlink(dev.path("nowhere.pem"), &key).unwrap();
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &key, &["No such file"]);
    assert!(!dev.path("nowhere.pem").exists(), "a key was created");
    assert!(fs::symlink_metadata(&key).unwrap().file_type().is_symlink());
}

// ---------------------------------------------------------------- TLS files

#[test]
fn server_certificate_fifo_is_refused_without_waiting() {
    let dev = daemon_device();
    let cert = dev.path("server.crt");
    mkfifo(&cert);
    dev.set_config("ServerCertificate", json!(cert.display().to_string()));
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &cert, &["a FIFO"]);
}

#[test]
fn server_certificate_link_to_dev_zero_is_refused() {
    let dev = daemon_device();
    let cert = dev.path("server.crt");
    link_to_zero(&cert);
    dev.set_config("ServerCertificate", json!(cert.display().to_string()));
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &cert, &["a character device"]);
}

#[test]
fn client_certificate_huge_sparse_file_is_refused_unread() {
    let dev = daemon_device();
    let cert = dev.path("client.crt");
    sparse(&cert, HUGE);
    // The client key is the device key too: a real one, made by a first run.
    let key = dev.path("client.key");
    dev.set_config(
        "Security",
        json!({"AuthPrivateKey": key.display().to_string()}),
    );
    dev.set_config(
        "HttpsClient",
        json!({"Certificate": cert.display().to_string(), "Key": key.display().to_string()}),
    );
    mender_rs::device_key::DeviceKey::generate_replacing(
        &key,
        mender_rs::device_key::DeviceKeyType::Ed25519,
    )
    .unwrap();
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &cert, &[&format!("{HUGE} bytes, more than the")]);
}

// ---------------------------------------------------------------- control maps

fn maps_file(dev: &SimDevice) -> PathBuf {
    dev.data.join("mender-rs-control-maps.json")
}

#[test]
fn control_maps_file_fifo_is_refused_without_waiting() {
    let dev = SimDevice::new();
    let file = maps_file(&dev);
    mkfifo(&file);
    let out = run(&dev, &["control", "show"]);
    assert_refused(&out, &file, &["a FIFO"]);
}

#[test]
fn control_maps_file_link_to_dev_zero_is_refused() {
    let dev = SimDevice::new();
    let file = maps_file(&dev);
    link_to_zero(&file);
    let out = run(&dev, &["control", "show"]);
    assert_refused(&out, &file, &["a character device"]);
    assert!(
        fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

fn map_json(id: &str) -> Value {
    json!({"id": id, "priority": 1, "states": {"ArtifactInstall_Enter": {"action": "pause"}}})
}

#[test]
fn control_set_input_fifo_is_refused_without_waiting() {
    let dev = SimDevice::new();
    let input = dev.path("map.json");
    mkfifo(&input);
    let out = run(&dev, &["control", "set", &input.display().to_string()]);
    assert_refused(&out, &input, &["a FIFO"]);
    assert!(!maps_file(&dev).exists());
}

#[test]
fn control_set_input_at_its_cap_is_read_one_byte_over_is_not() {
    let dev = SimDevice::new();
    let input = dev.path("map.json");
    let mut text = map_json("01234567-89ab-cdef-0123-456789abcdef")
        .to_string()
        .into_bytes();
    text.resize(64 << 10, b' ');
    fs::write(&input, &text).unwrap();
    let (out, _) = run(&dev, &["control", "set", &input.display().to_string()]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    let saved = fs::read(maps_file(&dev)).unwrap();
    text.push(b' ');
    fs::write(&input, &text).unwrap();
    let out = run(&dev, &["control", "set", &input.display().to_string()]);
    assert_refused(&out, &input, &["too large"]);
    assert_eq!(fs::read(maps_file(&dev)).unwrap(), saved);
}

#[test]
fn control_set_input_directory_is_refused() {
    let dev = SimDevice::new();
    let input = dev.path("maps.d");
    fs::create_dir(&input).unwrap();
    let out = run(&dev, &["control", "set", &input.display().to_string()]);
    assert_refused(&out, &input, &["a directory"]);
    assert!(!maps_file(&dev).exists());
}

// ---------------------------------------------------------------- U-Boot

#[test]
fn fw_env_config_link_to_dev_zero_is_refused() {
    let dev = SimDevice::new();
    fs::remove_file(&dev.fw_env_config).unwrap();
    link_to_zero(&dev.fw_env_config);
    let out = run(&dev, &["bootenv", "print"]);
    assert_refused(&out, &dev.fw_env_config, &["a character device"]);
}

#[test]
fn fw_env_config_fifo_is_refused_without_waiting() {
    let dev = SimDevice::new();
    fs::remove_file(&dev.fw_env_config).unwrap();
    mkfifo(&dev.fw_env_config);
    let env = fs::read(&dev.env_file).unwrap();
    let out = run(&dev, &["bootenv", "set", "bootcount=1"]);
    assert_refused(&out, &dev.fw_env_config, &["a FIFO"]);
    assert_eq!(fs::read(&dev.env_file).unwrap(), env);
}

#[test]
fn fw_env_config_at_its_cap_is_read_one_byte_over_is_not() {
    let dev = SimDevice::new();
    let line = format!("{} 0x0 0x4000\n", dev.env_file.display());
    let mut text = vec![b'#'; (64 << 10) - line.len() - 1];
    text.push(b'\n');
    text.extend_from_slice(line.as_bytes());
    fs::write(&dev.fw_env_config, &text).unwrap();
    let printed = dev.ok(&["bootenv", "print"]);
    assert!(printed.contains("mender_boot_part=2"), "{printed}");
    text.insert(0, b'#');
    fs::write(&dev.fw_env_config, &text).unwrap();
    let out = run(&dev, &["bootenv", "print"]);
    assert_refused(&out, &dev.fw_env_config, &["65537 bytes, more than the"]);
}

#[test]
fn uboot_env_storage_fifo_is_refused_without_waiting() {
    let dev = SimDevice::new();
    let fifo = dev.path("env-fifo");
    mkfifo(&fifo);
    fs::write(
        &dev.fw_env_config,
        format!("{} 0x0 0x4000\n", fifo.display()),
    )
    .unwrap();
    let out = run(&dev, &["bootenv", "set", "bootcount=1"]);
    assert_refused(&out, &fifo, &["a FIFO", "block device"]);
}

#[test]
fn uboot_env_storage_link_to_dev_zero_is_refused_naming_its_kind() {
    let dev = SimDevice::new();
    let zero = dev.path("env-zero");
    link_to_zero(&zero);
    fs::write(
        &dev.fw_env_config,
        format!("{} 0x0 0x4000\n", zero.display()),
    )
    .unwrap();
    let out = run(&dev, &["bootenv", "print"]);
    assert_refused(&out, &zero, &["a character device", "BootEnvType"]);
}

#[test]
fn uboot_env_storage_at_an_offset_in_a_huge_sparse_file_still_works() {
    // The cap of an environment area is its configured size, not the
    // size of the file or device holding it.
    let dev = SimDevice::new();
    let big = dev.path("disk.img");
    sparse(&big, HUGE);
    let offset = HUGE - 0x8000;
    fs::write(
        &dev.fw_env_config,
        format!("{} {offset:#x} 0x4000\n", big.display()),
    )
    .unwrap();
    dev.ok(&["bootenv", "set", "--create", "mender_boot_part=3"]);
    let printed = dev.ok(&["bootenv", "print"]);
    assert!(printed.contains("mender_boot_part=3"), "{printed}");
    assert_eq!(fs::metadata(&big).unwrap().len(), HUGE);
}

// ---------------------------------------------------------------- GRUB

/// A device on GRUB with both environment copies made by `bootenv set
/// --create`; returns the environment directory.
fn grub_device() -> (SimDevice, PathBuf) {
    let dev = SimDevice::new();
    let dir = dev.path("grubenv");
    fs::create_dir(&dir).unwrap();
    dev.set_config("BootEnvType", json!("grub"));
    dev.set_config("GrubEnvDir", json!(dir.display().to_string()));
    dev.ok(&["bootenv", "set", "--create", "mender_boot_part=2"]);
    (dev, dir)
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    for copy in ["mender_grubenv1", "mender_grubenv2"] {
        for name in ["env", "lock", "lock.sha256sum"] {
            let path = dir.join(copy).join(name);
            let bytes = match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() => fs::read(&path).unwrap(),
                Ok(m) => format!("{:?}", m.file_type()).into_bytes(),
                Err(e) => e.to_string().into_bytes(),
            };
            all.push((path, bytes));
        }
    }
    all
}

#[test]
fn grub_env_fifos_are_refused_without_waiting() {
    let (dev, dir) = grub_device();
    for copy in ["mender_grubenv1", "mender_grubenv2"] {
        let env = dir.join(copy).join("env");
        fs::remove_file(&env).unwrap();
        mkfifo(&env);
    }
    let before = snapshot(&dir);
    let out = run(&dev, &["bootenv", "set", "bootcount=1"]);
    assert_refused(&out, &dir, &["mender_grubenv1/env: is a FIFO"]);
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn grub_env_one_copy_linked_to_dev_zero_is_repaired_from_the_other() {
    let (dev, dir) = grub_device();
    let env = dir.join("mender_grubenv1/env");
    fs::remove_file(&env).unwrap();
    link_to_zero(&env);
    let (out, took) = run(&dev, &["bootenv", "print"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert!(took < BOUND);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mender_grubenv1/env: is a character device"),
        "{stderr}"
    );
    assert!(fs::symlink_metadata(&env).unwrap().file_type().is_file());
}

#[test]
fn grub_env_blocks_over_their_cap_are_refused_unread() {
    let (dev, dir) = grub_device();
    for copy in ["mender_grubenv1", "mender_grubenv2"] {
        let env = dir.join(copy).join("env");
        let f = fs::OpenOptions::new().write(true).open(&env).unwrap();
        f.set_len(HUGE).unwrap();
    }
    let before = snapshot(&dir);
    let out = run(&dev, &["bootenv", "print"]);
    assert_refused(&out, &dir, &[&format!("{HUGE} bytes, more than the")]);
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn grub_config_file_fifo_and_oversized_are_refused() {
    // /etc/mender_grubenv.config is read only when GrubEnvDir is unset;
    // its reader is reached through the library with another root, in a
    // thread, so that a hang fails the test instead of blocking it.
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    let config = root.path().join("etc/mender_grubenv.config");
    let locate = |words: &'static str| {
        let (tx, rx) = std::sync::mpsc::channel();
        let under = root.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(mender_rs::bootenv::GrubEnv::locate_under(&under, None));
        });
        let err = rx
            .recv_timeout(BOUND)
            .expect("locate did not finish")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&config.display().to_string()), "{text}");
        assert!(text.contains(words), "{text}");
    };
    mkfifo(&config);
    locate("a FIFO");
    fs::remove_file(&config).unwrap();
    let mut text = b"ENV_DIR=/boot/grub\n".to_vec();
    text.resize((64 << 10) + 1, b'#');
    fs::write(&config, &text).unwrap();
    locate("65537 bytes, more than the 65536 allowed");
}

// ---------------------------------------------------------------- pid file

fn pid_file(dev: &SimDevice) -> PathBuf {
    dev.data.join("mender-rs-daemon.pid")
}

#[test]
fn pid_file_fifo_is_refused_without_waiting() {
    let dev = SimDevice::new();
    let pid = pid_file(&dev);
    mkfifo(&pid);
    let out = run(&dev, &["check-update"]);
    assert_refused(&out, &pid, &["a FIFO"]);
    let daemon = daemon_device();
    mkfifo(&pid_file(&daemon));
    let out = run(&daemon, &["daemon"]);
    assert_refused(&out, &pid_file(&daemon), &["a FIFO"]);
}

#[test]
fn pid_file_link_to_dev_zero_is_refused() {
    let dev = daemon_device();
    let pid = pid_file(&dev);
    link_to_zero(&pid);
    let out = run(&dev, &["check-update"]);
    assert_refused(&out, &pid, &["a character device"]);
    let out = run(&dev, &["daemon"]);
    assert_refused(&out, &pid, &["a character device"]);
}

#[test]
fn locked_huge_pid_file_is_not_read_whole() {
    let dev = SimDevice::new();
    let pid = pid_file(&dev);
    sparse(&pid, HUGE);
    // Held as a running daemon holds it.
    let holder = fs::File::open(&pid).unwrap();
    holder.lock().unwrap();
    let out = run(&dev, &["check-update"]);
    assert_refused(&out, &pid, &[&format!("{HUGE} bytes, more than the")]);
    assert_eq!(fs::metadata(&pid).unwrap().len(), HUGE);
}

// ---------------------------------------------------------------- lock files

#[test]
fn control_maps_lock_file_fifo_is_refused_without_waiting() {
    let dev = SimDevice::new();
    let lock = dev.data.join("mender-rs-control-maps.lock");
    mkfifo(&lock);
    let input = dev.path("map.json");
    fs::write(
        &input,
        map_json("01234567-89ab-cdef-0123-456789abcdef").to_string(),
    )
    .unwrap();
    let out = run(&dev, &["control", "set", &input.display().to_string()]);
    assert_refused(&out, &lock, &["a FIFO"]);
    assert!(!maps_file(&dev).exists());
}
