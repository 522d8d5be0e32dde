//! Take-over and hand back with the real Mender client 3.4
//! (`/usr/bin/mender`, Debian's mender-client) as the oracle, on one
//! simulated A/B device shared by both clients (same data directory,
//! partitions, boot environment and configuration), built as in
//! `tests/cli/reference_client.rs`: two loop devices as RootfsPartA/B, a
//! U-Boot environment file behind `fw_printenv`/`fw_setenv` wrappers, and
//! every client command in a private mount namespace where a per-device
//! folder is `/etc/mender` and the device node of `/` is hidden (so that
//! 3.4 takes the active partition from `mender_boot_part`).
//!
//! Two devices run the same update:
//! * the reference: 3.4 `install`, reboot, 3.4 `commit`; then mender-rs
//!   starts on that data directory and takes the committed store over;
//! * the take-over: 3.4 `install`, reboot, `mender-rs commit`; then 3.4
//!   reads the store mender-rs handed back.
//!
//! `show-provides` must be the same everywhere, the artifact's commit
//! scripts must run the same way, and the boot environment must end the
//! same. The test needs root and fails (does not skip) without it.

mod daemon_34;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::device::{
    BIN, describe, exit_code, parse_key_values, random_bytes, run_bounded, write_executable,
};

const REFERENCE: &str = "/usr/bin/mender";
const DEVICE_TYPE: &str = "takeover-device";
const PARTITION_LEN: usize = 8 << 20;
const PAYLOAD_LEN: usize = 2 << 20;
const ENV_LEN: usize = 0x4000;
const TIMEOUT: Duration = Duration::from_secs(60);

/// As in `reference_client.rs`: mounts `$1` on /etc/mender, hides the
/// node of `/`, runs the rest.
const SANDBOX: &str = r#"set -e
mount --bind "$1" /etc/mender
shift
root=$(stat -c %Hd:%Ld /)
for node in /dev/*; do
  if [ -b "$node" ] && [ ! -L "$node" ] && [ "$(stat -c %Hr:%Lr "$node")" = "$root" ]; then
    mount --bind /dev/null "$node"
  fi
done
exec "$@"
"#;

const COMMIT_SCRIPTS: [&str; 4] = [
    "ArtifactCommit_Enter_01",
    "ArtifactCommit_Leave_01",
    "ArtifactRollback_Enter_01",
    "ArtifactRollback_Leave_01",
];

#[track_caller]
fn tool(program: &str, args: &[&str]) -> String {
    let out = run_bounded(Command::new(program).args(args), TIMEOUT);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn number_of(dev: &Path) -> String {
    let name = s(dev);
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].to_string()
}

/// Loop devices, detached on drop.
struct Loops(Vec<PathBuf>);

impl Drop for Loops {
    fn drop(&mut self) {
        for dev in self.0.drain(..) {
            let _ = run_bounded(Command::new("losetup").arg("-d").arg(&dev), TIMEOUT);
        }
    }
}

/// Two loop devices whose numbers are not suffixes of each other nor of
/// the device of `/` (3.4 matches `mender_boot_part` as a suffix).
fn attach_pair(dir: &Path, loops: &mut Loops) -> (PathBuf, PathBuf) {
    let root = fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            (f.get(4) == Some(&"/")).then(|| f.get(dash + 2).map(|x| x.to_string()))?
        })
        .unwrap_or_default();
    let mut usable: Vec<PathBuf> = Vec::new();
    for i in 0..8 {
        let backing = dir.join(format!("part-{i}.img"));
        fs::write(&backing, vec![0u8; PARTITION_LEN]).expect("backing file");
        let dev = PathBuf::from(tool("losetup", &["-f", "--show", s(&backing)]).trim());
        loops.0.push(dev.clone());
        let n = number_of(&dev);
        let clash = n.is_empty()
            || root.ends_with(&n)
            || usable.iter().any(|u| {
                let m = number_of(u);
                m.ends_with(&n) || n.ends_with(&m)
            });
        if !clash {
            usable.push(dev);
        }
        if usable.len() == 2 {
            return (usable[0].clone(), usable[1].clone());
        }
    }
    panic!("no two usable loop devices among {:?}", loops.0);
}

struct Device {
    dir: PathBuf,
    etc: PathBuf,
    data: PathBuf,
    config: PathBuf,
    fw_config: PathBuf,
    log: PathBuf,
    part_b: PathBuf,
}

impl Device {
    fn new(root: &Path, name: &str, part_a: &Path, part_b: &Path) -> Device {
        let _ = fs::remove_file(root.join("scripts.log"));
        let dir = root.join(name);
        let etc = dir.join("etc-mender");
        let data = dir.join("data");
        fs::create_dir_all(etc.join("scripts")).expect("mkdir");
        fs::create_dir_all(&data).expect("mkdir");
        fs::write(etc.join("scripts/version"), "3\n").expect("write");
        // 3.4 reads /etc/mender/artifact_info, mender-rs the one beside
        // its configuration file.
        for info in [etc.join("artifact_info"), dir.join("artifact_info")] {
            fs::write(info, "artifact_name=release-1\n").expect("write");
        }
        fs::write(
            data.join("device_type"),
            format!("device_type={DEVICE_TYPE}\n"),
        )
        .expect("write");
        for part in [part_a, part_b] {
            fs::write(part, vec![0u8; PARTITION_LEN]).expect("blank partition");
        }
        let env_file = dir.join("boot-env");
        fs::write(&env_file, vec![0u8; ENV_LEN]).expect("write");
        let fw_config = dir.join("fw_env.config");
        fs::write(&fw_config, format!("{} 0x0 0x{ENV_LEN:x}\n", s(&env_file))).expect("write");
        for name in ["fw_printenv", "fw_setenv"] {
            write_executable(
                &dir.join(name),
                &format!("#!/bin/sh\nexec {name} -c '{}' \"$@\"\n", s(&fw_config)),
            );
        }
        let config = dir.join("mender.conf");
        let conf = serde_json::json!({
            "RootfsPartA": s(part_a),
            "RootfsPartB": s(part_b),
            "BootEnvConfig": s(&fw_config),
            "BootUtilitiesGetNextActivePart": s(&dir.join("fw_printenv")),
            "BootUtilitiesSetActivePart": s(&dir.join("fw_setenv")),
            "DeviceTypeFile": s(&data.join("device_type")),
            "RootfsScriptsPath": s(&etc.join("scripts")),
            "ArtifactScriptsPath": s(&data.join("scripts")),
            "StateScriptRetryIntervalSeconds": 1,
        });
        fs::write(&config, conf.to_string()).expect("write");
        let dev = Device {
            log: root.join("scripts.log"),
            dir,
            etc,
            data,
            config,
            fw_config,
            part_b: part_b.to_path_buf(),
        };
        let a = number_of(part_a);
        let vars = format!(
            "mender_boot_part={a}\nmender_boot_part_hex={:X}\nupgrade_available=0\nbootcount=0\n",
            a.parse::<u32>().expect("number")
        );
        // A blank area: fw_setenv starts from these defaults.
        let defaults = dev.dir.join("default-env");
        fs::write(&defaults, &vars).expect("write");
        let script = dev.dir.join("env-script");
        fs::write(&script, &vars).expect("write");
        tool(
            "fw_setenv",
            &[
                "-c",
                s(&dev.fw_config),
                "-f",
                s(&defaults),
                "-s",
                s(&script),
            ],
        );
        dev
    }

    fn set_env(&self, vars: &str) {
        let script = self.dir.join("env-script");
        fs::write(&script, vars).expect("write");
        tool("fw_setenv", &["-c", s(&self.fw_config), "-s", s(&script)]);
    }

    fn env(&self) -> std::collections::BTreeMap<String, String> {
        parse_key_values(&tool("fw_printenv", &["-c", s(&self.fw_config)]))
    }

    /// `program --config ... args` in the sandbox.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", SANDBOX])
            .arg("sandbox")
            .arg(&self.etc)
            .arg(program)
            .arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(&self.data)
            .arg("--no-syslog")
            .args(args)
            .current_dir(&self.dir)
            .process_group(0);
        run_bounded(&mut cmd, TIMEOUT)
    }

    #[track_caller]
    fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert_eq!(exit_code(&out), 0, "{program} {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The bootloader's first boot of a pending update (bootcount 0 → 1).
    fn reboot_into_update(&self) {
        let env = self.env();
        assert_eq!(env["upgrade_available"], "1", "{env:?}");
        assert_eq!(env["mender_boot_part"], number_of(&self.part_b), "{env:?}");
        self.set_env("bootcount=1\n");
    }

    fn scripts(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }

    fn image_on_b(&self, payload: &[u8]) -> bool {
        let mut head = fs::read(&self.part_b).expect("read partition");
        head.truncate(payload.len());
        head == payload
    }
}

fn preflight() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the take-over oracle test needs root (loop devices, mount namespaces); uid {euid}"
    );
    for program in [
        REFERENCE,
        "mender-artifact",
        "fw_setenv",
        "losetup",
        "unshare",
    ] {
        assert!(
            Path::new(program).exists()
                || run_bounded(
                    Command::new("sh").args(["-c", "command -v \"$1\"", "sh", program]),
                    TIMEOUT
                )
                .status
                .success(),
            "`{program}` is needed (scripts/install-deps)"
        );
    }
}

/// The artifact both devices install: a rootfs image with commit and
/// rollback scripts that log their names.
fn write_artifact(dir: &Path) -> (PathBuf, Vec<u8>) {
    let log = dir.join("scripts.log");
    let build = dir.join("build");
    fs::create_dir_all(&build).expect("mkdir");
    let payload = random_bytes(PAYLOAD_LEN);
    let image = build.join("rootfs.img");
    fs::write(&image, &payload).expect("write");
    let out = build.join("release-2.mender");
    let mut args: Vec<String> = [
        "write",
        "rootfs-image",
        "-t",
        DEVICE_TYPE,
        "-n",
        "release-2",
        "-f",
        s(&image),
        "-o",
        s(&out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for name in COMMIT_SCRIPTS {
        let path = build.join(name);
        // One log: the devices run one after the other.
        write_executable(&path, &format!("#!/bin/sh\necho {name} >> '{}'\n", s(&log)));
        args.push("-s".into());
        args.push(s(&path).into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("mender-artifact", &refs);
    (out, payload)
}

/// Loop devices and the artifact; the loops are detached (field order)
/// before the folder holding their backing files is removed.
struct Rig {
    _loops: Loops,
    part_a: PathBuf,
    part_b: PathBuf,
    artifact: PathBuf,
    payload: Vec<u8>,
    root: tempfile::TempDir,
}

fn rig() -> Rig {
    preflight();
    let root = tempfile::Builder::new()
        .prefix("mender-takeover.")
        .tempdir()
        .expect("temp dir");
    let mut loops = Loops(Vec::new());
    let (part_a, part_b) = attach_pair(root.path(), &mut loops);
    let (artifact, payload) = write_artifact(root.path());
    Rig {
        _loops: loops,
        part_a,
        part_b,
        artifact,
        payload,
        root,
    }
}

#[test]
fn mender_3_4_installs_mender_rs_commits_and_3_4_reads_it_back() {
    let rig = rig();
    let (root, part_a, part_b) = (&rig.root, &rig.part_a, &rig.part_b);
    let (artifact, payload) = (&rig.artifact, &rig.payload);

    // The reference: Mender 3.4 from install to commit.
    let reference = Device::new(root.path(), "reference", part_a, part_b);
    reference.ok(REFERENCE, &["install", s(artifact)]);
    reference.reboot_into_update();
    reference.ok(REFERENCE, &["commit"]);
    let reference_scripts = reference.scripts();
    let reference_provides = parse_key_values(&reference.ok(REFERENCE, &["show-provides"]));
    let reference_env = reference.env();
    assert!(reference.image_on_b(payload));
    assert_eq!(reference_provides["artifact_name"], "release-2");
    assert!(
        reference_provides.contains_key("rootfs-image.checksum"),
        "{reference_provides:?}"
    );
    // mender-rs on the committed 3.4 store reads the same provides.
    assert_eq!(
        parse_key_values(&reference.ok(BIN, &["show-provides"])),
        reference_provides
    );
    assert!(reference.data.join("mender-store.taken-over").exists());
    drop(reference);

    // The take-over: Mender 3.4 installs, mender-rs commits.
    let device = Device::new(root.path(), "takeover", part_a, part_b);
    device.ok(REFERENCE, &["install", s(artifact)]);
    device.reboot_into_update();
    assert_eq!(device.scripts(), Vec::<String>::new());
    let out = device.run(BIN, &["commit"]);
    assert_eq!(exit_code(&out), 0, "mender-rs commit: {}", describe(&out));
    assert_eq!(device.scripts(), reference_scripts);
    assert_eq!(
        reference_scripts,
        vec!["ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"]
    );
    let env = device.env();
    for key in [
        "mender_boot_part",
        "mender_boot_part_hex",
        "upgrade_available",
    ] {
        assert_eq!(env.get(key), reference_env.get(key), "{key}");
    }
    assert!(device.image_on_b(payload));
    assert_eq!(
        parse_key_values(&device.ok(BIN, &["show-provides"])),
        reference_provides
    );
    assert!(device.data.join("mender-store.taken-over").exists());
    // Hand back: Mender 3.4 reads the store mender-rs wrote.
    assert_eq!(
        parse_key_values(&device.ok(REFERENCE, &["show-provides"])),
        reference_provides
    );
    assert_eq!(device.ok(REFERENCE, &["show-artifact"]).trim(), "release-2");
    let out = device.run(REFERENCE, &["commit"]);
    assert_ne!(exit_code(&out), 0, "3.4 found something left to commit");
}

#[test]
fn mender_3_4_installs_and_mender_rs_rolls_back_as_3_4_would() {
    let rig = rig();
    let (root, part_a, part_b) = (&rig.root, &rig.part_a, &rig.part_b);
    let mut seen = Vec::new();
    for (name, program) in [("reference", REFERENCE), ("takeover", BIN)] {
        let device = Device::new(root.path(), name, part_a, part_b);
        device.ok(REFERENCE, &["install", s(&rig.artifact)]);
        device.reboot_into_update();
        let out = device.run(program, &["rollback"]);
        assert_eq!(exit_code(&out), 0, "{program} rollback: {}", describe(&out));
        let env = device.env();
        let env: Vec<Option<String>> = [
            "mender_boot_part",
            "mender_boot_part_hex",
            "upgrade_available",
        ]
        .iter()
        .map(|k| env.get(*k).cloned())
        .collect();
        let scripts = device.scripts();
        let artifact = device.ok(program, &["show-artifact"]);
        let again = exit_code(&device.run(program, &["rollback"]));
        if program == BIN {
            // Back on a partition that runs Mender, 3.4 finds the software
            // it runs there, and nothing in flight.
            assert_eq!(device.ok(REFERENCE, &["show-artifact"]).trim(), "release-1");
            assert_ne!(exit_code(&device.run(REFERENCE, &["rollback"])), 0);
        }
        seen.push((env, scripts, artifact, again));
    }
    assert_eq!(seen[0], seen[1], "3.4 first, mender-rs second");
    assert_eq!(
        seen[0].1,
        vec!["ArtifactRollback_Enter_01", "ArtifactRollback_Leave_01"]
    );
    assert_eq!(seen[0].2.trim(), "release-1");
    assert_eq!(seen[0].0[0].as_deref(), Some(number_of(part_a).as_str()));
}

/// A rootfs image `release-3` without scripts, for the rig's device type.
fn artifact_release_3(rig: &Rig) -> PathBuf {
    let dir = rig.root.path().join("build-3");
    fs::create_dir_all(&dir).expect("mkdir");
    let image = dir.join("rootfs.img");
    fs::write(&image, random_bytes(PAYLOAD_LEN)).expect("write");
    let out = dir.join("release-3.mender");
    let args = [
        "write",
        "rootfs-image",
        "-t",
        DEVICE_TYPE,
        "-n",
        "release-3",
        "-f",
        s(&image),
        "-o",
        s(&out),
    ];
    tool("mender-artifact", &args);
    out
}

/// Going back and forth (`docs/takeover.md`): 3.4 installs release-2 and
/// mender-rs commits it (the take-over, then the hand back); the device
/// runs Mender again: 3.4 reads the hand back (a read is not a write:
/// mender-rs keeps its store), installs release-3 and commits it; the
/// next mender-rs command takes the device over again and reads what 3.4
/// reads, and 3.4 reads it back from the new hand back.
#[test]
fn mender_3_4_commits_after_mender_rs_and_mender_rs_takes_the_device_over_again() {
    const REPLACED: &str = "mender-rs-store.replaced.json";
    let rig = rig();
    let device = Device::new(rig.root.path(), "back-and-forth", &rig.part_a, &rig.part_b);
    device.ok(REFERENCE, &["install", s(&rig.artifact)]);
    device.reboot_into_update();
    device.ok(BIN, &["commit"]);
    assert_eq!(device.ok(REFERENCE, &["show-artifact"]).trim(), "release-2");
    assert_eq!(device.ok(BIN, &["show-artifact"]).trim(), "release-2");
    assert!(
        !device.data.join(REPLACED).exists(),
        "3.4's read was taken for a write"
    );
    let ours_before = fs::read(device.data.join("mender-rs-store.json")).expect("our store");

    // Mender again: 3.4 installs release-3 on partition A, the bootloader
    // boots it once, 3.4 commits.
    let release_3 = artifact_release_3(&rig);
    device.ok(REFERENCE, &["install", s(&release_3)]);
    let env = device.env();
    assert_eq!(env["mender_boot_part"], number_of(&rig.part_a), "{env:?}");
    assert_eq!(env["upgrade_available"], "1", "{env:?}");
    device.set_env("bootcount=1\n");
    device.ok(REFERENCE, &["commit"]);
    let reference = parse_key_values(&device.ok(REFERENCE, &["show-provides"]));
    assert_eq!(reference["artifact_name"], "release-3");

    // mender-rs again: the software 3.4 committed, our old store kept.
    let out = device.run(BIN, &["show-provides"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_eq!(
        parse_key_values(&String::from_utf8_lossy(&out.stdout)),
        reference
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taking the device over again"),
        "{}",
        describe(&out)
    );
    let replaced = fs::read(device.data.join(REPLACED)).expect("our old store");
    let (old, kept): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&ours_before).expect("json"),
        serde_json::from_slice(&replaced).expect("json"),
    );
    assert_eq!(kept, old);
    assert!(device.data.join("mender-store.taken-over").exists());
    // The hand back, read by 3.4; and once only.
    assert_eq!(
        parse_key_values(&device.ok(REFERENCE, &["show-provides"])),
        reference
    );
    assert_eq!(device.ok(BIN, &["show-artifact"]).trim(), "release-3");
    assert_eq!(
        fs::read(device.data.join(REPLACED)).expect("our old store"),
        replaced
    );
    let out = device.run(BIN, &["commit"]);
    assert_eq!(exit_code(&out), 2, "nothing to commit: {}", describe(&out));
}
