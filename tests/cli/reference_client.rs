//! Side by side with the reference client: every scenario below runs once
//! with the Mender client 3.4 (`/usr/bin/mender`, Debian's mender-client) and
//! once with `mender-rs`, in standalone mode, on identical fresh simulated
//! devices, and the two transcripts are compared step by step: the exit code
//! of every command, the exact list of state scripts that ran, `show-artifact`
//! after every step, the boot environment (`mender_boot_part`,
//! `mender_boot_part_hex`, `upgrade_available`; `bootcount` is shown but not
//! compared), which partition holds the new image, and `show-provides` at the
//! end.
//!
//! The simulated device:
//! - RootfsPartA/B are two loop devices over 8 MiB files (mender 3.4 refuses
//!   regular files: "not a block device"). Their numbers (`/dev/loopN`) are
//!   the partition numbers both clients write to `mender_boot_part`.
//! - The U-Boot environment is a 16 KiB file named by a private
//!   `fw_env.config`: mender-rs reads it natively (`BootEnvConfig`), mender 3.4
//!   through `fw_printenv`/`fw_setenv` wrappers that add `-c <that file>`
//!   (`BootUtilitiesGetNextActivePart` / `BootUtilitiesSetActivePart`). The
//!   harness itself reads and writes it with `fw_printenv`/`fw_setenv` only.
//! - mender 3.4 hard-codes `/etc/mender` for `artifact_info` and for the
//!   rootfs state scripts (`RootfsScriptsPath` in the configuration file is
//!   ignored). Rather than touching the real `/etc/mender`, every client
//!   command runs in a private mount namespace (`unshare --mount`) in which a
//!   per-device folder is bind-mounted on `/etc/mender`; mender-rs gets the
//!   same folder through `RootfsScriptsPath`. Both clients run in the same
//!   sandbox.
//! - Neither loop device is mounted on `/`, so both clients must take the
//!   active partition from `mender_boot_part`. mender 3.4 only does that when
//!   no device node in `/dev` carries the device number of `/`; on these
//!   machines `/` is a real block device (`/dev/vda`), which mender 3.4 would
//!   take as the active partition and then refuse to install ("Active root
//!   partition matches neither RootfsPartA nor RootfsPartB"). The sandbox
//!   therefore also bind-mounts `/dev/null` over that node (in the private
//!   namespace only).
//! - The same artifact file (written by `mender-artifact`) is installed by
//!   both clients. Its state scripts, one for every Artifact state and action,
//!   append their name to a log; a scenario makes one of them fail by
//!   creating a marker file named after it. `Download_*` (and `Idle_*`,
//!   `Sync_*`, which standalone mode must not run) scripts sit in the rootfs
//!   scripts folder.
//! - A "reboot" is simulated by the harness with the bootloader's rule (as in
//!   `scripts/demo`): with `upgrade_available=1`, `bootcount` 0 becomes 1 (the
//!   update is tried); a second boot without a commit switches back.
//!
//! The test requires root (loop devices, mount namespaces) and fails, rather
//! than skips, without it. Loop devices are always detached (guard with
//! `Drop`), every child process is bounded by a timeout.
//!
//! Known differences are listed in [`KNOWN`]: the default test fails on any
//! other difference; the `#[ignore]`d `strict_*` tests fail on those too.
//!
//! What mender 3.4 does on this rig (measured):
//! - `install` needs a current artifact name: with an empty database and no
//!   `/etc/mender/artifact_info` it fails (exit 1) before writing anything.
//! - The `mender_boot_part` fallback makes the partition it names the active
//!   one, so right after `install` (`mender_boot_part` = the new partition)
//!   mender 3.4 already counts the new partition as running. It does not
//!   matter for `commit`, which in 3.4 only checks `upgrade_available=1`
//!   (so it commits without a reboot, fallback or not); `rollback` before or
//!   after the reboot switches back to the old partition either way.
//! - `fw_setenv -s` of libubootenv 0.3.2 only takes `name=value` lines
//!   (mender 3.4 probes for the separator); `name value` lines are silently
//!   ignored.
//! - `bootcount`: both clients set it to 0 on install and never touch it
//!   otherwise; it differs only where the commit differs (scenario 1b).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REFERENCE: &str = "/usr/bin/mender";
const OURS: &str = env!("CARGO_BIN_EXE_mender-rs");

const DEVICE_TYPE: &str = "test-device";
const INSTALLED_NAME: &str = "release-1";
const PAYLOAD_LEN: usize = 3 << 20;
const PARTITION_LEN: usize = 8 << 20;
const ENV_LEN: usize = 0x4000;

/// Limit for one client command (scripts included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);
/// Limit for a helper tool (losetup, fw_setenv, mender-artifact...).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `"$@"` (after the first argument) in a private mount namespace where
/// the folder given first is mounted on /etc/mender and device nodes carrying
/// the device number of / are hidden behind /dev/null.
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

const ARTIFACT_STATES: [&str; 6] = [
    "ArtifactInstall",
    "ArtifactReboot",
    "ArtifactCommit",
    "ArtifactRollback",
    "ArtifactRollbackReboot",
    "ArtifactFailure",
];
const ROOTFS_SCRIPTS: [&str; 7] = [
    "Download_Enter_01",
    "Download_Leave_01",
    "Download_Error_01",
    "Idle_Enter_01",
    "Idle_Leave_01",
    "Sync_Enter_01",
    "Sync_Leave_01",
];

// ---------------------------------------------------------------------------
// Child processes, always bounded
// ---------------------------------------------------------------------------

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with no input; kills its process group if it outlives
/// `timeout` (and then fails the test).
fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .process_group(0);
    let what = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let group = child.id() as libc::pid_t;
            // The process group this test created.
            let _ = mender_rs::sys::kill(-group, libc::SIGKILL);
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |f: &mut fs::File| {
        use std::io::Seek;
        let mut s = String::new();
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.read_to_string(&mut s).expect("read output");
        s
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// Runs a helper tool and fails the test unless it succeeds.
fn tool(program: &str, args: &[&str]) -> String {
    let ran = run(Command::new(program).args(args), TOOL_TIMEOUT);
    assert!(
        ran.code == 0,
        "`{program} {}` failed (exit {}): {}{}",
        args.join(" "),
        ran.code,
        ran.stdout,
        ran.stderr
    );
    ran.stdout
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------
// Loop devices, always detached
// ---------------------------------------------------------------------------

/// Every loop device this test attached; detached on drop, panic or not.
struct Loops {
    attached: Vec<PathBuf>,
}

impl Drop for Loops {
    fn drop(&mut self) {
        for dev in self.attached.drain(..) {
            let ran = run(Command::new("losetup").arg("-d").arg(&dev), TOOL_TIMEOUT);
            if ran.code != 0 {
                eprintln!("could not detach {}: {}", dev.display(), ran.stderr);
            }
        }
    }
}

/// The digits that end a device path: what both clients take as its
/// partition number.
fn number_of(dev: &Path) -> String {
    let name = s(dev);
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].to_string()
}

/// The source of the mount on `/`, as `mount` prints it.
fn root_source() -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut source = String::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) == Some(&"/")
            && let Some(dash) = fields.iter().position(|f| *f == "-")
            && let Some(src) = fields.get(dash + 2)
        {
            source = (*src).to_string();
        }
    }
    source
}

/// Attaches loop devices over 8 MiB files until two are found whose numbers
/// cannot be confused by mender 3.4, which matches `mender_boot_part` as a
/// suffix of device paths (`1` would match `/dev/loop11`, and the device
/// mounted on `/`).
fn attach_pair(dir: &Path, loops: &mut Loops) -> (PathBuf, PathBuf) {
    let root = root_source();
    let mut usable: Vec<PathBuf> = Vec::new();
    for i in 0..8 {
        let backing = dir.join(format!("partition-{i}.img"));
        fs::write(&backing, vec![0u8; PARTITION_LEN]).expect("write backing file");
        let dev = PathBuf::from(tool("losetup", &["-f", "--show", s(&backing)]).trim());
        loops.attached.push(dev.clone());
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
    panic!(
        "no two loop devices with distinct partition numbers among {:?}",
        loops.attached
    );
}

// ---------------------------------------------------------------------------
// The rig: loop devices, artifacts, one fresh device per run
// ---------------------------------------------------------------------------

struct Rig {
    // Field order matters: the loop devices are detached before the folder
    // holding their backing files is removed.
    _loops: Loops,
    part_a: PathBuf,
    part_b: PathBuf,
    payload: Vec<u8>,
    update: PathBuf,
    foreign: PathBuf,
    dir: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    Reference,
    Ours,
}

impl Client {
    fn program(self) -> &'static str {
        match self {
            Client::Reference => REFERENCE,
            Client::Ours => OURS,
        }
    }
}

fn preflight() {
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

fn artifact_script(log: &Path, fail_dir: &Path, name: &str) -> String {
    format!(
        "#!/bin/sh\necho {name} >> '{}'\nif [ -e '{}/{name}' ]; then exit 1; fi\nexit 0\n",
        s(log),
        s(fail_dir)
    )
}

impl Rig {
    fn new() -> Rig {
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

    fn label(&self, value: &str, hex: bool) -> String {
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
struct Device<'r> {
    rig: &'r Rig,
    client: Client,
    dir: PathBuf,
    etc: PathBuf,
    config: PathBuf,
    fallback: PathBuf,
    data: PathBuf,
    fw_config: PathBuf,
    log: PathBuf,
}

impl<'r> Device<'r> {
    fn new(rig: &'r Rig, scenario: &Scenario, client: Client) -> Device<'r> {
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
    fn client(&self, args: &[&str]) -> Ran {
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
    fn take_scripts(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }

    fn env(&self) -> BTreeMap<String, String> {
        let text = tool("fw_printenv", &["-c", s(&self.fw_config)]);
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set_env(&self, vars: &[(&str, String)]) {
        let script = self.dir.join("reboot-env");
        let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(&script, text).expect("write");
        tool("fw_setenv", &["-c", s(&self.fw_config), "-s", s(&script)]);
    }

    /// The bootloader's rule, applied to the environment.
    fn reboot(&self) {
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
    fn image_on(&self) -> String {
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

    fn show(&self, command: &str) -> String {
        let ran = self.client(&[command]);
        let lines: Vec<&str> = ran.stdout.lines().map(str::trim).collect();
        let mut value = lines.join("; ");
        if ran.code != 0 {
            let _ = write!(value, " (exit {})", ran.code);
        }
        value
    }

    /// The state after a step.
    fn observe(&self, step: String, exit: Option<i32>) -> Observation {
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

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    /// `install [--reboot-exit-code] <the update>`
    Install {
        reboot_exit_code: bool,
    },
    /// `install --reboot-exit-code <an artifact for another device type>`
    InstallForeign,
    Commit,
    Rollback,
    /// The simulated reboot (harness, not client).
    Reboot,
}

struct Scenario {
    id: &'static str,
    title: &'static str,
    /// Scripts made to fail (exit 1).
    failing: &'static [&'static str],
    steps: &'static [Step],
}

const INSTALL_REBOOT: Step = Step::Install {
    reboot_exit_code: true,
};
const INSTALL: Step = Step::Install {
    reboot_exit_code: false,
};

const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "1-install-reboot-commit",
        title: "install --reboot-exit-code, reboot, commit",
        failing: &[],
        steps: &[INSTALL_REBOOT, Step::Reboot, Step::Commit],
    },
    Scenario {
        id: "1b-install-commit-without-reboot",
        title: "install --reboot-exit-code, commit without a reboot, reboot",
        failing: &[],
        steps: &[INSTALL_REBOOT, Step::Commit, Step::Reboot],
    },
    Scenario {
        id: "2-install-rollback",
        title: "install, rollback (no reboot in between), reboot",
        failing: &[],
        steps: &[INSTALL, Step::Rollback, Step::Reboot],
    },
    Scenario {
        id: "2b-install-reboot-rollback",
        title: "install, reboot, rollback, reboot",
        failing: &[],
        steps: &[INSTALL, Step::Reboot, Step::Rollback, Step::Reboot],
    },
    Scenario {
        id: "3-nothing-pending",
        title: "commit and rollback with nothing pending",
        failing: &[],
        steps: &[Step::Commit, Step::Rollback],
    },
    Scenario {
        id: "4-install-enter-fails",
        title: "install with a failing ArtifactInstall_Enter_01, then commit",
        failing: &["ArtifactInstall_Enter_01"],
        steps: &[INSTALL_REBOOT, Step::Commit],
    },
    Scenario {
        id: "5-commit-enter-fails",
        title: "install, reboot, commit with a failing ArtifactCommit_Enter_01, reboot",
        failing: &["ArtifactCommit_Enter_01"],
        steps: &[INSTALL_REBOOT, Step::Reboot, Step::Commit, Step::Reboot],
    },
    Scenario {
        id: "6-commit-leave-fails",
        title: "install, reboot, commit with a failing ArtifactCommit_Leave_01",
        failing: &["ArtifactCommit_Leave_01"],
        steps: &[INSTALL_REBOOT, Step::Reboot, Step::Commit],
    },
    Scenario {
        id: "7-wrong-device-type",
        title: "install an artifact for another device type, then commit",
        failing: &[],
        steps: &[Step::InstallForeign, Step::Commit],
    },
];

struct Observation {
    step: String,
    fields: Vec<(&'static str, String)>,
    bootcount: String,
    /// The failing command's last error message (not compared).
    note: String,
}

fn play(rig: &Rig, scenario: &Scenario, client: Client) -> Vec<Observation> {
    let device = Device::new(rig, scenario, client);
    let mut seen = vec![device.observe("(fresh device)".into(), None)];
    for (i, step) in scenario.steps.iter().enumerate() {
        let (name, ran) = match *step {
            Step::Install { reboot_exit_code } => {
                let mut args = vec!["install"];
                if reboot_exit_code {
                    args.push("--reboot-exit-code");
                }
                let name = args.join(" ");
                args.push(s(&rig.update));
                (name, Some(device.client(&args)))
            }
            Step::InstallForeign => (
                "install --reboot-exit-code (foreign)".to_string(),
                Some(device.client(&["install", "--reboot-exit-code", s(&rig.foreign)])),
            ),
            Step::Commit => ("commit".to_string(), Some(device.client(&["commit"]))),
            Step::Rollback => ("rollback".to_string(), Some(device.client(&["rollback"]))),
            Step::Reboot => {
                device.reboot();
                ("(reboot)".to_string(), None)
            }
        };
        let mut seen_now =
            device.observe(format!("{}. {name}", i + 1), ran.as_ref().map(|r| r.code));
        if let Some(ran) = ran.filter(|r| r.code != 0) {
            seen_now.note = last_error(&ran.stderr);
        }
        seen.push(seen_now);
    }
    let provides = device.show("show-provides");
    seen.push(Observation {
        step: "(end)".into(),
        fields: vec![("show-provides", provides)],
        bootcount: String::new(),
        note: String::new(),
    });
    seen
}

/// The last error a client printed (for the transcript only).
fn last_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("level=error") || l.starts_with("error"))
        .or(lines.last())
        .copied()
        .unwrap_or("");
    line.chars().take(240).collect()
}

// ---------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------

/// A difference found and accepted for now (the default test passes with
/// it; its `strict_*` test, ignored, fails while it exists). Patterns are
/// exact, or `*` for anything.
struct Known {
    tag: &'static str,
    scenario: &'static str,
    step: &'static str,
    field: &'static str,
    reference: &'static str,
    ours: &'static str,
}

const KNOWN: &[Known] = &[
    // mender 3.4's standalone commit only checks upgrade_available=1, so it
    // commits an update that was never booted (exit 0, ArtifactCommit
    // scripts, upgrade_available=0: the bootloader then boots the new
    // partition with no fallback). mender-rs refuses ("the device has not
    // rebooted into the update yet", exit 1) while bootcount is 0; after the
    // reboot it tries the update (bootcount 1) and its show-provides still
    // shows the old state.
    Known {
        tag: "commit_before_reboot",
        scenario: "1b-install-commit-without-reboot",
        step: "*",
        field: "*",
        reference: "*",
        ours: "*",
    },
];

fn known(
    scenario: &str,
    step: &str,
    field: &str,
    reference: &str,
    ours: &str,
) -> Option<&'static str> {
    let m = |pattern: &str, value: &str| pattern == "*" || pattern == value;
    KNOWN
        .iter()
        .find(|k| {
            m(k.scenario, scenario)
                && m(k.step, step)
                && m(k.field, field)
                && m(k.reference, reference)
                && m(k.ours, ours)
        })
        .map(|k| k.tag)
}

struct Difference {
    scenario: &'static str,
    step: String,
    field: String,
    reference: String,
    ours: String,
    known: Option<&'static str>,
}

fn compare(
    scenario: &Scenario,
    reference: &[Observation],
    ours: &[Observation],
) -> Vec<Difference> {
    let mut found = Vec::new();
    for (r, o) in reference.iter().zip(ours) {
        assert_eq!(r.step, o.step, "the transcripts are out of step");
        for ((field, rv), (field_o, ov)) in r.fields.iter().zip(&o.fields) {
            assert_eq!(field, field_o);
            if rv != ov {
                let known = known(scenario.id, &r.step, field, rv, ov);
                found.push(Difference {
                    scenario: scenario.id,
                    step: r.step.clone(),
                    field: (*field).to_string(),
                    reference: rv.clone(),
                    ours: ov.clone(),
                    known,
                });
            }
        }
        if r.fields.len() != o.fields.len() {
            let extra = |v: &[(&str, String)]| {
                v.iter()
                    .skip(r.fields.len().min(o.fields.len()))
                    .map(|(f, x)| format!("{f}: {x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            found.push(Difference {
                scenario: scenario.id,
                step: r.step.clone(),
                field: "extra".into(),
                reference: extra(&r.fields),
                ours: extra(&o.fields),
                known: None,
            });
        }
    }
    found
}

fn transcript(title: &str, reference: &[Observation], ours: &[Observation]) -> String {
    let mut out = format!("\n=== {title}\n");
    for (r, o) in reference.iter().zip(ours) {
        let _ = writeln!(out, "  {}", r.step);
        for ((field, rv), (_, ov)) in r.fields.iter().zip(&o.fields) {
            let mark = if rv == ov { " " } else { "≠" };
            let _ = writeln!(out, "   {mark} {field:<20} reference: {rv}");
            if rv != ov {
                let _ = writeln!(out, "     {:<20} ours:      {ov}", "");
            }
        }
        if !r.bootcount.is_empty() {
            let mark = if r.bootcount == o.bootcount { " " } else { "~" };
            let _ = writeln!(
                out,
                "   {mark} {:<20} reference: {}, ours: {} (not compared)",
                "bootcount", r.bootcount, o.bootcount
            );
        }
        for (who, note) in [("reference", &r.note), ("ours", &o.note)] {
            if !note.is_empty() {
                let _ = writeln!(out, "     {who} said: {note}");
            }
        }
    }
    out
}

fn table(differences: &[Difference]) -> String {
    let mut out = String::from(
        "\n| scenario | step | field | reference (mender 3.4) | ours (mender-rs) | known |\n|---|---|---|---|---|---|\n",
    );
    for d in differences {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            d.scenario,
            d.step,
            d.field,
            d.reference,
            d.ours,
            d.known.unwrap_or("NEW")
        );
    }
    out
}

/// Runs the scenarios named (all when none) with both clients. Fails on
/// differences not in [`KNOWN`], and on the known ones tagged `strict`.
fn check(ids: &[&str], strict: Option<&str>) {
    let rig = Rig::new();
    let started = Instant::now();
    let mut all = Vec::new();
    for scenario in SCENARIOS
        .iter()
        .filter(|s| ids.is_empty() || ids.contains(&s.id))
    {
        let reference = play(&rig, scenario, Client::Reference);
        let ours = play(&rig, scenario, Client::Ours);
        println!(
            "{}",
            transcript(
                &format!("{}: {}", scenario.id, scenario.title),
                &reference,
                &ours
            )
        );
        all.extend(compare(scenario, &reference, &ours));
    }
    println!(
        "\npartitions: A = {}, B = {}; {} scenario(s) in {:.1} s",
        rig.part_a.display(),
        rig.part_b.display(),
        if ids.is_empty() {
            SCENARIOS.len()
        } else {
            ids.len()
        },
        started.elapsed().as_secs_f64()
    );
    if all.is_empty() {
        println!("no differences");
    } else {
        println!("{}", table(&all));
    }
    let failing: Vec<&Difference> = all
        .iter()
        .filter(|d| d.known.is_none() || d.known == strict)
        .collect();
    assert!(
        failing.is_empty(),
        "{} difference(s) with mender 3.4{}: see the table above",
        failing.len(),
        strict.map_or(String::new(), |tag| format!(" (new, or known as `{tag}`)"))
    );
}

#[test]
fn reference_client_matches() {
    check(&[], None);
}

#[test]
#[ignore = "deliberate difference: commit before the reboot: mender 3.4 commits (exit 0), \
            mender-rs refuses (exit 1) until the update has been booted"]
fn strict_commit_before_reboot() {
    check(
        &["1b-install-commit-without-reboot"],
        Some("commit_before_reboot"),
    );
}
