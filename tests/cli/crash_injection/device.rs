//! The simulated A/B device, its state scripts and payloads.

use super::*;

/// A throw-away A/B device in a folder: two partition files, a U-Boot
/// environment file named by fw_env.config, configuration, data directory,
/// rootfs state scripts, and a log every state script appends its name to.
pub(super) struct Device {
    pub(super) root: PathBuf,
    /// The lab's own copy of the mender-rs binary.
    pub(super) bin: PathBuf,
}

impl Device {
    pub(super) fn conf(&self) -> PathBuf {
        self.root.join("etc/mender/mender.conf")
    }

    pub(super) fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.root.join("scripts.log")
    }

    pub(super) fn partition(&self, n: &str) -> PathBuf {
        self.root.join(format!("dev/mmcblk0p{n}"))
    }

    /// Lays out a fresh device (nothing installed, booting partition 2).
    pub(super) fn create(root: &Path, bin: &Path) -> Device {
        let dev = Device {
            root: root.to_path_buf(),
            bin: bin.to_path_buf(),
        };
        let scripts = root.join("etc/mender/scripts");
        for d in [root.join("dev"), scripts.clone(), dev.data()] {
            fs::create_dir_all(d).unwrap();
        }
        for n in ["2", "3"] {
            let f = fs::File::create(dev.partition(n)).unwrap();
            f.set_len(PARTITION_LEN).unwrap();
        }
        fs::write(root.join("boot-env"), vec![0u8; 0x4000]).unwrap();
        fs::write(
            root.join("etc/fw_env.config"),
            format!("{} 0x0 0x4000\n", root.join("boot-env").display()),
        )
        .unwrap();
        fs::write(
            dev.data().join("device_type"),
            format!("device_type={DEVICE_TYPE}\n"),
        )
        .unwrap();
        let conf = serde_json::json!({
            "RootfsPartA": dev.partition("2"),
            "RootfsPartB": dev.partition("3"),
            "BootEnvConfig": root.join("etc/fw_env.config"),
            "DeviceTypeFile": dev.data().join("device_type"),
            "RootfsScriptsPath": scripts,
            "ModulesPath": root.join("modules"),
            "StateScriptRetryIntervalSeconds": 1,
        });
        fs::write(dev.conf(), serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
        for name in ROOTFS_SCRIPTS {
            write_script(&scripts, name, &dev.log_path(), 0);
        }
        fs::write(scripts.join("version"), "3").unwrap();
        fs::write(dev.log_path(), "").unwrap();
        dev.run(
            &[
                "bootenv",
                "set",
                "--create",
                "mender_boot_part=2",
                "mender_boot_part_hex=2",
                "upgrade_available=0",
                "bootcount=0",
            ],
            None,
        )
        .expect_code(0);
        dev
    }

    /// `mender-rs --config C --data D ARGS`, with `crash` as MENDER_RS_CRASH_AT.
    pub(super) fn run(&self, args: &[&str], crash: Option<&str>) -> Run {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(self.conf())
            .arg("--data")
            .arg(self.data())
            .args(args);
        match crash {
            Some(spec) => cmd.env(CRASH_VAR, spec),
            None => cmd.env_remove(CRASH_VAR),
        };
        let what = match crash {
            Some(spec) => format!("{} [{CRASH_VAR}={spec}]", args.join(" ")),
            None => args.join(" "),
        };
        run_child(cmd, what)
    }

    pub(super) fn boot_env(&self) -> BTreeMap<String, String> {
        let r = self.run(&["bootenv", "print"], None);
        r.expect_code(0);
        key_values(&r.stdout)
    }

    pub(super) fn set_boot_env(&self, vars: &[(&str, &str)]) {
        let mut args = vec!["bootenv".to_string(), "set".to_string()];
        args.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args, None).expect_code(0);
    }

    /// The power cycle, as the bootloader sees it (the rule of our U-Boot
    /// and GRUB scripts): an uncommitted update gets one try; booting it
    /// again without a commit switches back.
    pub(super) fn reboot(&self) {
        let env = self.boot_env();
        let part = env.get("mender_boot_part").cloned().unwrap_or_default();
        if env.get("upgrade_available").map(String::as_str) != Some("1") {
            return;
        }
        let count: u32 = env
            .get("bootcount")
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        if count >= 1 {
            let other = if part == "2" { "3" } else { "2" };
            self.set_boot_env(&[
                ("mender_boot_part", other),
                ("mender_boot_part_hex", other),
                ("upgrade_available", "0"),
            ]);
        } else {
            self.set_boot_env(&[("bootcount", &(count + 1).to_string())]);
        }
    }

    pub(super) fn provides(&self) -> BTreeMap<String, String> {
        let r = self.run(&["show-provides"], None);
        r.expect_code(0);
        key_values(&r.stdout)
    }

    pub(super) fn artifact_name(&self) -> String {
        let r = self.run(&["show-artifact"], None);
        r.expect_code(0);
        r.stdout.trim().to_string()
    }

    pub(super) fn script_log(&self) -> Vec<String> {
        fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The update in progress, as the store holds it: (phase, steps).
    pub(super) fn pending(&self) -> Option<(String, u64)> {
        let store = mender_rs::store::Store::read_only(&self.data()).expect("readable store");
        let update = store.data().update.as_ref()?;
        let phase = update.get("phase")?.as_str()?.to_string();
        let steps = update.get("steps").and_then(|s| s.as_u64()).unwrap_or(0);
        Some((phase, steps))
    }

    /// The image-sized start of partition `n`.
    pub(super) fn partition_image(&self, n: &str) -> Vec<u8> {
        let mut bytes = fs::read(self.partition(n)).unwrap();
        bytes.truncate(PAYLOAD_LEN);
        bytes
    }
}

pub(super) fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A state script that appends its name to `log` and exits with `code`.
pub(super) fn write_script(dir: &Path, name: &str, log: &Path, code: i32) -> PathBuf {
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "#!/bin/sh\necho {name} >> '{}'\nexit {code}\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Deterministic, incompressible payload bytes.
pub(super) fn payload(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(PAYLOAD_LEN + 8);
    while out.len() < PAYLOAD_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(PAYLOAD_LEN);
    out
}

pub(super) fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).unwrap();
        } else {
            panic!("unexpected file type: {}", entry.path().display());
        }
    }
}
