//! The rig: loop devices, artifacts, one fresh device per run.

use super::*;

pub(super) struct Rig {
    // Field order matters: the loop devices are detached before the folder
    // holding their backing files is removed.
    pub(super) _loops: Loops,
    pub(super) part_a: PathBuf,
    pub(super) part_b: PathBuf,
    pub(super) payload: Vec<u8>,
    pub(super) update: PathBuf,
    pub(super) foreign: PathBuf,
    pub(super) dir: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Client {
    Reference,
    Ours,
}

impl Client {
    pub(super) fn program(self) -> &'static str {
        match self {
            Client::Reference => REFERENCE,
            Client::Ours => OURS,
        }
    }
}

pub(super) fn preflight() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "tests/cli/reference_client.rs must run as root (loop devices and mount \
         namespaces); it runs as uid {euid}. Run e.g. `sudo -E cargo test --test cli reference_client`."
    );
    for program in [
        REFERENCE,
        "mender-artifact",
        "fw_printenv",
        "fw_setenv",
        "losetup",
        "unshare",
        "mount",
    ] {
        let found = run(
            Command::new("sh").args(["-c", "command -v \"$1\"", "sh", program]),
            TOOL_TIMEOUT,
        )
        .code
            == 0;
        assert!(
            found,
            "`{program}` is needed (apt-get install mender-client mender-artifact libubootenv-tool util-linux)"
        );
    }
    assert!(
        Path::new("/etc/mender").is_dir(),
        "/etc/mender must exist (the sandbox mounts a private folder on it); install mender-client"
    );
}

pub(super) fn artifact_script(log: &Path, fail_dir: &Path, name: &str) -> String {
    format!(
        "#!/bin/sh\necho {name} >> '{}'\nif [ -e '{}/{name}' ]; then exit 1; fi\nexit 0\n",
        s(log),
        s(fail_dir)
    )
}

impl Rig {
    pub(super) fn new() -> Rig {
        preflight();
        let dir = tempfile::Builder::new()
            .prefix("mender-reference.")
            .tempdir()
            .expect("temp dir");
        let mut loops = Loops {
            attached: Vec::new(),
        };
        // The sandbox must work, or every client command would fail alike.
        let probe = dir.path().join("probe");
        fs::create_dir(&probe).expect("mkdir");
        fs::write(probe.join("here"), "").expect("write");
        let ran = run(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", SANDBOX])
                .arg("sandbox")
                .arg(&probe)
                .args(["test", "-e", "/etc/mender/here"]),
            TOOL_TIMEOUT,
        );
        assert!(
            ran.code == 0,
            "cannot mount a private /etc/mender in a mount namespace (exit {}): {}",
            ran.code,
            ran.stderr
        );
        let (part_a, part_b) = attach_pair(dir.path(), &mut loops);
        fs::create_dir(dir.path().join("fail")).expect("mkdir");

        // One payload and two artifacts for every run of both clients.
        let build = dir.path().join("build");
        fs::create_dir(&build).expect("mkdir");
        let mut payload = vec![0u8; PAYLOAD_LEN];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut payload))
            .expect("read /dev/urandom");
        let payload_file = build.join("rootfs.img");
        fs::write(&payload_file, &payload).expect("write payload");
        let mut script_args: Vec<String> = Vec::new();
        for state in ARTIFACT_STATES {
            for action in ["Enter", "Leave", "Error"] {
                let name = format!("{state}_{action}_01");
                let path = build.join(&name);
                write_exec(
                    &path,
                    &artifact_script(
                        &dir.path().join("scripts.log"),
                        &dir.path().join("fail"),
                        &name,
                    ),
                );
                script_args.push("-s".into());
                script_args.push(s(&path).into());
            }
        }
        let write = |device_type: &str, name: &str| -> PathBuf {
            let out = build.join(format!("{name}.mender"));
            let mut args = vec![
                "write",
                "rootfs-image",
                "-t",
                device_type,
                "-n",
                name,
                "-f",
                s(&payload_file),
                "-o",
                s(&out),
            ];
            args.extend(script_args.iter().map(String::as_str));
            tool("mender-artifact", &args);
            out
        };
        let update = write(DEVICE_TYPE, "release-2");
        let foreign = write("another-device", "release-foreign");
        Rig {
            _loops: loops,
            part_a,
            part_b,
            payload,
            update,
            foreign,
            dir,
        }
    }

    pub(super) fn label(&self, value: &str, hex: bool) -> String {
        for (dev, label) in [(&self.part_a, "A"), (&self.part_b, "B")] {
            let n = number_of(dev);
            let want = if hex {
                format!("{:X}", n.parse::<u32>().expect("number"))
            } else {
                n
            };
            if value == want {
                return label.to_string();
            }
        }
        value.to_string()
    }
}

/// One simulated device, fresh for every run.
pub(super) struct Device<'r> {
    pub(super) rig: &'r Rig,
    pub(super) client: Client,
    pub(super) dir: PathBuf,
    pub(super) etc: PathBuf,
    pub(super) config: PathBuf,
    pub(super) fallback: PathBuf,
    pub(super) data: PathBuf,
    pub(super) fw_config: PathBuf,
    pub(super) log: PathBuf,
}

impl<'r> Device<'r> {
    pub(super) fn new(rig: &'r Rig, scenario: &Scenario, client: Client) -> Device<'r> {
        let dir = rig
            .dir
            .path()
            .join(format!("{}-{:?}", scenario.id, client).to_lowercase());
        let etc = dir.join("etc-mender");
        let scripts = etc.join("scripts");
        let data = dir.join("data");
        fs::create_dir_all(&scripts).expect("mkdir");
        fs::create_dir_all(&data).expect("mkdir");
        let log = rig.dir.path().join("scripts.log");
        let fail = rig.dir.path().join("fail");

        // mender 3.4 reads /etc/mender/artifact_info (bind-mounted here);
        // mender-rs reads the one beside its configuration file.
        for info in [etc.join("artifact_info"), dir.join("artifact_info")] {
            fs::write(info, format!("artifact_name={INSTALLED_NAME}\n")).expect("write");
        }
        fs::write(scripts.join("version"), "3\n").expect("write");
        for name in ROOTFS_SCRIPTS {
            write_exec(&scripts.join(name), &artifact_script(&log, &fail, name));
        }
        fs::write(
            data.join("device_type"),
            format!("device_type={DEVICE_TYPE}\n"),
        )
        .expect("write");

        // The boot environment, through a private fw_env.config.
        let env_file = dir.join("boot-env");
        fs::write(&env_file, vec![0u8; ENV_LEN]).expect("write");
        let fw_config = dir.join("fw_env.config");
        fs::write(&fw_config, format!("{} 0x0 0x{ENV_LEN:x}\n", s(&env_file))).expect("write");
        for tool_name in ["fw_printenv", "fw_setenv"] {
            write_exec(
                &dir.join(tool_name),
                &format!(
                    "#!/bin/sh\nexec {tool_name} -c '{}' \"$@\"\n",
                    s(&fw_config)
                ),
            );
        }
        let a = number_of(&rig.part_a);
        let a_hex = format!("{:X}", a.parse::<u32>().expect("number"));
        let vars = format!(
            "mender_boot_part={a}\nmender_boot_part_hex={a_hex}\nupgrade_available=0\nbootcount=0\n"
        );
        let defaults = dir.join("default-env");
        fs::write(&defaults, &vars).expect("write");
        let script = dir.join("initial-env");
        fs::write(&script, vars).expect("write");
        tool(
            "fw_setenv",
            &["-c", s(&fw_config), "-f", s(&defaults), "-s", s(&script)],
        );

        // Both partitions start blank.
        for part in [&rig.part_a, &rig.part_b] {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(part)
                .unwrap_or_else(|e| panic!("open {}: {e}", part.display()));
            f.write_all(&vec![0u8; PARTITION_LEN])
                .expect("blank partition");
            f.sync_all().expect("sync");
        }

        let config = dir.join("mender.conf");
        let conf = serde_json::json!({
            "RootfsPartA": s(&rig.part_a),
            "RootfsPartB": s(&rig.part_b),
            "BootEnvConfig": s(&fw_config),
            "BootUtilitiesGetNextActivePart": s(&dir.join("fw_printenv")),
            "BootUtilitiesSetActivePart": s(&dir.join("fw_setenv")),
            "DeviceTypeFile": s(&data.join("device_type")),
            "RootfsScriptsPath": s(&scripts),
            "ArtifactScriptsPath": s(&data.join("scripts")),
            "StateScriptTimeoutSeconds": 20,
            "StateScriptRetryIntervalSeconds": 1,
            "StateScriptRetryTimeoutSeconds": 2,
        });
        fs::write(&config, serde_json::to_string_pretty(&conf).expect("json")).expect("write");
        let fallback = dir.join("fallback.conf");
        fs::write(&fallback, "{}\n").expect("write");

        // The failure markers of this scenario (none left from the last run).
        for entry in fs::read_dir(&fail).expect("read fail dir") {
            fs::remove_file(entry.expect("entry").path()).expect("remove marker");
        }
        for name in scenario.failing {
            fs::write(fail.join(name), "").expect("write marker");
        }
        let _ = fs::remove_file(&log);

        Device {
            rig,
            client,
            dir,
            etc,
            config,
            fallback,
            data,
            fw_config,
            log,
        }
    }

    /// `<client> --config ... <args>` in the sandbox.
    pub(super) fn client(&self, args: &[&str]) -> Ran {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", SANDBOX])
            .arg("sandbox")
            .arg(&self.etc)
            .arg(self.client.program())
            .arg("--config")
            .arg(&self.config)
            .arg("--fallback-config")
            .arg(&self.fallback)
            .arg("--data")
            .arg(&self.data)
            .arg("--no-syslog")
            .args(args)
            .current_dir(&self.dir);
        run(&mut cmd, CLIENT_TIMEOUT)
    }

    /// The scripts that ran since the last call, in order.
    pub(super) fn take_scripts(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }

    pub(super) fn env(&self) -> BTreeMap<String, String> {
        let text = tool("fw_printenv", &["-c", s(&self.fw_config)]);
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(super) fn set_env(&self, vars: &[(&str, String)]) {
        let script = self.dir.join("reboot-env");
        let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(&script, text).expect("write");
        tool("fw_setenv", &["-c", s(&self.fw_config), "-s", s(&script)]);
    }

    /// The bootloader's rule, applied to the environment.
    pub(super) fn reboot(&self) {
        let env = self.env();
        if env.get("upgrade_available").map(String::as_str) != Some("1") {
            return;
        }
        let count: u32 = env
            .get("bootcount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if count >= 1 {
            let current = env.get("mender_boot_part").cloned().unwrap_or_default();
            let a = number_of(&self.rig.part_a);
            let back = if current == a {
                number_of(&self.rig.part_b)
            } else {
                a
            };
            let hex = format!("{:X}", back.parse::<u32>().expect("number"));
            self.set_env(&[
                ("mender_boot_part", back),
                ("mender_boot_part_hex", hex),
                ("upgrade_available", "0".into()),
            ]);
        } else {
            self.set_env(&[("bootcount", (count + 1).to_string())]);
        }
    }

    /// Which partitions start with the update's payload.
    pub(super) fn image_on(&self) -> String {
        let mut on = Vec::new();
        for (part, label) in [(&self.rig.part_a, "A"), (&self.rig.part_b, "B")] {
            let mut head = vec![0u8; PAYLOAD_LEN];
            fs::File::open(part)
                .and_then(|mut f| f.read_exact(&mut head))
                .unwrap_or_else(|e| panic!("read {}: {e}", part.display()));
            if head == self.rig.payload {
                on.push(label);
            }
        }
        if on.is_empty() {
            "-".into()
        } else {
            on.join("+")
        }
    }

    pub(super) fn show(&self, command: &str) -> String {
        let ran = self.client(&[command]);
        let lines: Vec<&str> = ran.stdout.lines().map(str::trim).collect();
        let mut value = lines.join("; ");
        if ran.code != 0 {
            let _ = write!(value, " (exit {})", ran.code);
        }
        value
    }

    /// The state after a step.
    pub(super) fn observe(&self, step: String, exit: Option<i32>) -> Observation {
        let scripts = self.take_scripts();
        let env = self.env();
        let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| "(unset)".into());
        let mut fields = vec![
            ("exit code", exit.map_or("(none)".into(), |c| c.to_string())),
            (
                "scripts",
                if scripts.is_empty() {
                    "(none)".into()
                } else {
                    scripts.join(" ")
                },
            ),
            ("show-artifact", self.show("show-artifact")),
            (
                "mender_boot_part",
                self.rig.label(&get("mender_boot_part"), false),
            ),
            (
                "mender_boot_part_hex",
                self.rig.label(&get("mender_boot_part_hex"), true),
            ),
            ("upgrade_available", get("upgrade_available")),
            ("image on", self.image_on()),
        ];
        // Taking show-artifact must not run scripts.
        let extra = self.take_scripts();
        if !extra.is_empty() {
            fields.push(("scripts of show-artifact", extra.join(" ")));
        }
        Observation {
            step,
            fields,
            bootcount: get("bootcount"),
            note: String::new(),
        }
    }
}
