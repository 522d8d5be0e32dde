//! A simulated A/B device for integration tests of `mender-rs`, shared by
//! the test tiers through `tests/support/mod.rs`
//! (`use crate::support::device::*;`).
//!
//! Everything lives in one temporary directory (removed when the
//! [`SimDevice`] is dropped), so tests can run in parallel:
//!
//! ```text
//! <root>/dev/mmcblk0p2, dev/mmcblk0p3   the rootfs partitions (regular files)
//! <root>/boot-env                       the U-Boot environment (16 KiB area)
//! <root>/etc/fw_env.config              "<root>/boot-env 0x0 0x4000"
//! <root>/etc/mender/mender.conf         JSON configuration (see set_config)
//! <root>/etc/mender/scripts/            rootfs state scripts + `version` = 3
//! <root>/data/                          data dir (--data); device_type file
//! <root>/modules/                       ModulesPath (empty unless a test fills it)
//! <root>/build/NNN-<name>/              inputs and output of each artifact written
//! <root>/scripts.log                    names of the scripts made by `script`, as they ran
//! ```
//!
//! The configuration sets `RootfsPartA/B`, `BootEnvConfig`, `DeviceTypeFile`,
//! `RootfsScriptsPath`, `ArtifactScriptsPath` (`<data>/scripts`),
//! `ModulesPath`, `ModulesWorkPath` (`<data>/modules/v3`) and
//! `StateScriptRetryIntervalSeconds` = 1. The boot environment starts as
//! `mender_boot_part=2 mender_boot_part_hex=2 upgrade_available=0
//! bootcount=0`, the device type is [`DEVICE_TYPE`].
//!
//! API overview:
//!
//! * [`SimDevice::new`], [`SimDevice::with_partition_size`]: build a device
//!   (the public fields name every path above).
//! * [`SimDevice::run`] (`mender-rs --config C --data D ARGS`, bounded by
//!   [`DEFAULT_TIMEOUT`]), [`SimDevice::run_with`] (extra environment
//!   variables, own timeout), [`SimDevice::ok`] (run, must exit 0, returns
//!   stdout), [`SimDevice::command`] / [`SimDevice::command_as`] (a prepared
//!   `Command`, e.g. through a link named `mender`, for [`run_bounded`]).
//! * [`SimDevice::reboot`] -> [`Boot`]: the simulated bootloader's A/B rule,
//!   the same as `reboot()` in `scripts/demo`.
//! * [`SimDevice::env`] (parsed `bootenv print`), [`SimDevice::env_bytes`]
//!   (the raw file), [`SimDevice::set_env`] (`bootenv set`).
//! * [`SimDevice::script`], [`SimDevice::script_with_body`]: state scripts
//!   that append their own name to `scripts.log` and say
//!   `script <name> ran` on stderr; [`SimDevice::script_log`],
//!   [`SimDevice::clear_script_log`].
//! * [`SimDevice::write_rootfs_artifact`] (random payload, kept beside the
//!   artifact: [`payload_of`]), [`SimDevice::write_module_artifact`],
//!   [`SimDevice::new_build_dir`], [`SimDevice::artifact_dir`]: artifacts
//!   written with `mender-rs artifact write`.
//! * [`SimDevice::partition`], [`SimDevice::partition_sha256`],
//!   [`SimDevice::partition_sha256_prefix`], [`SimDevice::provides`]
//!   (parsed `show-provides`), [`SimDevice::provides_text`],
//!   [`SimDevice::show_artifact`].
//! * [`SimDevice::set_config`], [`SimDevice::remove_config`],
//!   [`SimDevice::config`]: mender.conf; [`SimDevice::path`]: a path under
//!   the root.
//! * Free functions: [`run_bounded`], [`describe`], [`exit_code`],
//!   [`parse_key_values`], [`sha256_hex`], [`sha256_file`],
//!   [`random_bytes`], [`write_executable`].
//!
//! Every child process is waited for with a timeout; on expiry its process
//! group is killed and the test panics with the output so far.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mender-rs");
/// The device type of every simulated device.
pub const DEVICE_TYPE: &str = "sim-device";
/// Size of each rootfs partition made by [`SimDevice::new`].
pub const DEFAULT_PARTITION_SIZE: u64 = 2 << 20;
/// Size of the U-Boot environment area.
pub const ENV_SIZE: usize = 0x4000;
/// Bound of every command run through [`SimDevice::run`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the simulated bootloader did in [`SimDevice::reboot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// No update pending: booted this partition.
    Normal(u32),
    /// `upgrade_available=1`, first try: booted the update on this partition
    /// (bootcount 0 → 1).
    TryUpdate(u32),
    /// `upgrade_available=1` and already tried once: switched back to this
    /// partition, `upgrade_available=0`.
    RolledBack(u32),
}

pub struct SimDevice {
    _tmp: tempfile::TempDir,
    /// The device's root directory (the temporary directory).
    pub root: PathBuf,
    /// `mender.conf`, passed as `--config`.
    pub config_file: PathBuf,
    /// The data directory, passed as `--data`.
    pub data: PathBuf,
    /// RootfsPartA (`.../mmcblk0p2`).
    pub part_a: PathBuf,
    /// RootfsPartB (`.../mmcblk0p3`).
    pub part_b: PathBuf,
    /// The U-Boot environment file.
    pub env_file: PathBuf,
    /// `fw_env.config`.
    pub fw_env_config: PathBuf,
    /// The device_type file.
    pub device_type_file: PathBuf,
    /// RootfsScriptsPath.
    pub rootfs_scripts: PathBuf,
    /// ArtifactScriptsPath.
    pub artifact_scripts: PathBuf,
    /// ModulesPath (can be changed with `set_config("ModulesPath", ..)`).
    pub modules: PathBuf,
    /// ModulesWorkPath.
    pub modules_work: PathBuf,
    /// Where artifacts are built.
    pub build: PathBuf,
    /// The log every script made by `script` appends its name to.
    pub script_log_file: PathBuf,
    config: Mutex<Map<String, Value>>,
    builds: AtomicU32,
}

impl SimDevice {
    /// A device with [`DEFAULT_PARTITION_SIZE`] partitions.
    pub fn new() -> Self {
        Self::with_partition_size(DEFAULT_PARTITION_SIZE)
    }

    /// A device whose partitions hold `size` bytes each.
    pub fn with_partition_size(size: u64) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("mender-rs-sim.")
            .tempdir()
            .expect("temporary directory");
        let root = tmp.path().to_path_buf();
        let etc = root.join("etc");
        let rootfs_scripts = etc.join("mender/scripts");
        let data = root.join("data");
        for d in [
            root.join("dev"),
            rootfs_scripts.clone(),
            data.clone(),
            root.join("modules"),
            root.join("build"),
        ] {
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let part_a = root.join("dev/mmcblk0p2");
        let part_b = root.join("dev/mmcblk0p3");
        for p in [&part_a, &part_b] {
            let f = fs::File::create(p).expect("partition file");
            f.set_len(size).expect("partition size");
        }
        let env_file = root.join("boot-env");
        fs::write(&env_file, vec![0u8; ENV_SIZE]).expect("env file");
        let fw_env_config = etc.join("fw_env.config");
        fs::write(
            &fw_env_config,
            format!("{} 0x0 0x{ENV_SIZE:x}\n", env_file.display()),
        )
        .expect("fw_env.config");
        let device_type_file = data.join("device_type");
        fs::write(&device_type_file, format!("device_type={DEVICE_TYPE}\n")).expect("device_type");
        fs::write(rootfs_scripts.join("version"), "3").expect("scripts version");

        let artifact_scripts = data.join("scripts");
        let modules = root.join("modules");
        let modules_work = data.join("modules/v3");
        let mut config = Map::new();
        let p = |p: &Path| Value::String(p.display().to_string());
        config.insert("RootfsPartA".into(), p(&part_a));
        config.insert("RootfsPartB".into(), p(&part_b));
        config.insert("BootEnvConfig".into(), p(&fw_env_config));
        config.insert("DeviceTypeFile".into(), p(&device_type_file));
        config.insert("RootfsScriptsPath".into(), p(&rootfs_scripts));
        config.insert("ArtifactScriptsPath".into(), p(&artifact_scripts));
        config.insert("ModulesPath".into(), p(&modules));
        config.insert("ModulesWorkPath".into(), p(&modules_work));
        config.insert("StateScriptRetryIntervalSeconds".into(), Value::from(1));

        let dev = SimDevice {
            config_file: etc.join("mender/mender.conf"),
            script_log_file: root.join("scripts.log"),
            build: root.join("build"),
            _tmp: tmp,
            root,
            data,
            part_a,
            part_b,
            env_file,
            fw_env_config,
            device_type_file,
            rootfs_scripts,
            artifact_scripts,
            modules,
            modules_work,
            config: Mutex::new(config),
            builds: AtomicU32::new(0),
        };
        dev.write_config();
        dev.ok(&[
            "bootenv",
            "set",
            "--create",
            "mender_boot_part=2",
            "mender_boot_part_hex=2",
            "upgrade_available=0",
            "bootcount=0",
        ]);
        dev
    }

    // -- configuration ------------------------------------------------------

    fn write_config(&self) {
        let config = self.config.lock().unwrap();
        let text = serde_json::to_string_pretty(&Value::Object(config.clone())).unwrap();
        fs::write(&self.config_file, text).expect("writing mender.conf");
    }

    /// Adds or replaces a key of mender.conf.
    pub fn set_config(&self, key: &str, value: Value) {
        self.config.lock().unwrap().insert(key.to_string(), value);
        self.write_config();
    }

    /// Removes a key of mender.conf.
    pub fn remove_config(&self, key: &str) {
        self.config.lock().unwrap().remove(key);
        self.write_config();
    }

    /// The current mender.conf as JSON.
    pub fn config(&self) -> Map<String, Value> {
        self.config.lock().unwrap().clone()
    }

    /// A path inside the device's root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    // -- running the client -------------------------------------------------

    /// `mender-rs --config C --data D` with stdin from /dev/null, ready for
    /// more arguments and [`run_bounded`].
    pub fn command(&self) -> Command {
        self.command_as(Path::new(BIN))
    }

    /// As [`SimDevice::command`], with another program (a link to the
    /// binary, say).
    pub fn command_as(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--config")
            .arg(&self.config_file)
            .arg("--data")
            .arg(&self.data);
        cmd
    }

    /// `mender-rs --config C --data D ARGS`, bounded by [`DEFAULT_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[], DEFAULT_TIMEOUT)
    }

    /// As [`SimDevice::run`], with extra environment variables and a timeout.
    pub fn run_with(&self, args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        run_bounded(&mut cmd, timeout)
    }

    /// Runs ARGS and panics unless it exits 0; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mender-rs {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    // -- boot environment ---------------------------------------------------

    /// The boot environment, through `mender-rs bootenv print`.
    #[track_caller]
    pub fn env(&self) -> BTreeMap<String, String> {
        parse_key_values(&self.ok(&["bootenv", "print"]))
    }

    /// The raw bytes of the environment file.
    pub fn env_bytes(&self) -> Vec<u8> {
        fs::read(&self.env_file).expect("reading the env file")
    }

    /// `mender-rs bootenv set NAME=VALUE...` (an empty value deletes).
    #[track_caller]
    pub fn set_env(&self, vars: &[(&str, &str)]) {
        let mut args = vec!["bootenv".to_string(), "set".to_string()];
        args.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }

    /// The simulated bootloader (the rule of `reboot()` in `scripts/demo`):
    /// with `upgrade_available=1`, a `bootcount` >= 1 means the update was
    /// tried already: switch back to the other partition and set
    /// `upgrade_available=0`; otherwise `bootcount` += 1 and boot the update.
    /// Without a pending upgrade nothing changes.
    #[track_caller]
    pub fn reboot(&self) -> Boot {
        let env = self.env();
        let part: u32 = env
            .get("mender_boot_part")
            .and_then(|p| p.trim().parse().ok())
            .expect("mender_boot_part in the boot environment");
        if env.get("upgrade_available").map(String::as_str) != Some("1") {
            return Boot::Normal(part);
        }
        let count: u64 = env
            .get("bootcount")
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        if count >= 1 {
            let back = if part == 2 { 3 } else { 2 };
            let b = back.to_string();
            self.set_env(&[
                ("mender_boot_part", &b),
                ("mender_boot_part_hex", &b),
                ("upgrade_available", "0"),
            ]);
            Boot::RolledBack(back)
        } else {
            self.set_env(&[("bootcount", &(count + 1).to_string())]);
            Boot::TryUpdate(part)
        }
    }

    // -- device state -------------------------------------------------------

    /// Partition `n` (2 = A, 3 = B).
    pub fn partition(&self, n: u32) -> &Path {
        match n {
            2 => &self.part_a,
            3 => &self.part_b,
            _ => panic!("the simulated device has partitions 2 and 3, not {n}"),
        }
    }

    /// SHA-256 (hex) of the first `len` bytes of partition `n` (all of it
    /// with `None`).
    pub fn partition_sha256_prefix(&self, n: u32, len: Option<usize>) -> String {
        let data = fs::read(self.partition(n)).expect("reading a partition");
        let len = len.unwrap_or(data.len()).min(data.len());
        sha256_hex(&data[..len])
    }

    /// SHA-256 (hex) of the whole partition `n`.
    pub fn partition_sha256(&self, n: u32) -> String {
        self.partition_sha256_prefix(n, None)
    }

    /// `show-provides`, parsed (panics unless it exits 0).
    #[track_caller]
    pub fn provides(&self) -> BTreeMap<String, String> {
        parse_key_values(&self.ok(&["show-provides"]))
    }

    /// `show-provides`, raw stdout.
    #[track_caller]
    pub fn provides_text(&self) -> String {
        self.ok(&["show-provides"])
    }

    /// `show-artifact`, trimmed.
    #[track_caller]
    pub fn show_artifact(&self) -> String {
        self.ok(&["show-artifact"]).trim().to_string()
    }

    // -- state scripts ------------------------------------------------------

    /// Writes an executable script `dir/name` that appends `name` to
    /// [`SimDevice::script_log_file`], says `script <name> ran` on stderr
    /// and exits with `exit_code`.
    pub fn script(&self, dir: &Path, name: &str, exit_code: i32) -> PathBuf {
        self.script_with_body(dir, name, &format!("exit {exit_code}\n"))
    }

    /// As [`SimDevice::script`], but `body` (shell) follows the logging
    /// instead of the `exit`.
    pub fn script_with_body(&self, dir: &Path, name: &str, body: &str) -> PathBuf {
        fs::create_dir_all(dir).expect("script dir");
        let path = dir.join(name);
        let text = format!(
            "#!/bin/sh\necho '{name}' >> '{log}'\necho 'script {name} ran' >&2\n{body}",
            log = self.script_log_file.display()
        );
        write_executable(&path, &text);
        path
    }

    /// The names logged by the scripts so far, in order.
    pub fn script_log(&self) -> Vec<String> {
        match fs::read_to_string(&self.script_log_file) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {}: {e}", self.script_log_file.display()),
        }
    }

    /// Empties the script log.
    pub fn clear_script_log(&self) {
        let _ = fs::remove_file(&self.script_log_file);
    }

    // -- artifacts ----------------------------------------------------------

    /// A fresh directory `build/NNN-<name>` for the inputs of one artifact.
    pub fn new_build_dir(&self, name: &str) -> PathBuf {
        let n = self.builds.fetch_add(1, Ordering::Relaxed);
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = self.build.join(format!("{n:03}-{safe}"));
        fs::create_dir_all(dir.join("scripts")).expect("build dir");
        dir
    }

    /// The build directory of an artifact written by this helper.
    pub fn artifact_dir(artifact: &Path) -> &Path {
        artifact.parent().expect("artifact in a build dir")
    }

    /// Writes a rootfs-image artifact `name` for [`DEVICE_TYPE`] whose
    /// payload is `size` random bytes (kept as [`payload_of`]`(artifact)`),
    /// with artifact state scripts made by [`SimDevice::script`] from
    /// `(name, exit code)` pairs, and `extra` arguments for
    /// `mender-rs artifact write rootfs-image`. Returns the artifact's path
    /// (`build/NNN-<name>/artifact.mender`).
    #[track_caller]
    pub fn write_rootfs_artifact(
        &self,
        name: &str,
        size: usize,
        scripts: &[(&str, i32)],
        extra: &[&str],
    ) -> PathBuf {
        let dir = self.new_build_dir(name);
        let payload = dir.join("rootfs.img");
        fs::write(&payload, random_bytes(size)).expect("payload");
        let mut args: Vec<String> = vec![
            "artifact".into(),
            "write".into(),
            "rootfs-image".into(),
            "-t".into(),
            DEVICE_TYPE.into(),
            "-n".into(),
            name.into(),
            "-f".into(),
            payload.display().to_string(),
            "-o".into(),
            dir.join("artifact.mender").display().to_string(),
        ];
        for (script, code) in scripts {
            let p = self.script(&dir.join("scripts"), script, *code);
            args.push("-s".into());
            args.push(p.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
        assert!(
            out.status.success(),
            "writing the rootfs artifact failed: {}",
            describe(&out)
        );
        dir.join("artifact.mender")
    }

    /// Writes a module-image artifact `name` of `payload_type` with the
    /// given payload files, scripts (as in `write_rootfs_artifact`) and
    /// `extra` arguments. Returns `build/NNN-<name>/artifact.mender`.
    #[track_caller]
    pub fn write_module_artifact(
        &self,
        name: &str,
        payload_type: &str,
        files: &[&Path],
        scripts: &[(&str, i32)],
        extra: &[&str],
    ) -> PathBuf {
        let dir = self.new_build_dir(name);
        let mut args: Vec<String> = vec![
            "artifact".into(),
            "write".into(),
            "module-image".into(),
            "-t".into(),
            DEVICE_TYPE.into(),
            "-n".into(),
            name.into(),
            "-T".into(),
            payload_type.into(),
            "-o".into(),
            dir.join("artifact.mender").display().to_string(),
        ];
        for f in files {
            args.push("-f".into());
            args.push(f.display().to_string());
        }
        for (script, code) in scripts {
            let p = self.script(&dir.join("scripts"), script, *code);
            args.push("-s".into());
            args.push(p.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
        assert!(
            out.status.success(),
            "writing the module artifact failed: {}",
            describe(&out)
        );
        dir.join("artifact.mender")
    }
}

impl Default for SimDevice {
    fn default() -> Self {
        Self::new()
    }
}

/// The payload file of a rootfs artifact made by
/// [`SimDevice::write_rootfs_artifact`].
pub fn payload_of(artifact: &Path) -> PathBuf {
    SimDevice::artifact_dir(artifact).join("rootfs.img")
}

/// `name=value` lines into a map (lines without '=' are ignored).
pub fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes `text` to `path` with mode 0755 (via a temporary name, so no
/// process can be executing a half-written file).
pub fn write_executable(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::rename(&tmp, path).expect("rename");
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
}

/// `n` bytes from /dev/urandom.
/// Image-like test content, the same for the same `seed`: `noise` bytes of
/// incompressible file data (xorshift, so that content-defined chunking
/// finds cut points), a repeat of its first 256 KiB, then `zeros` zero
/// bytes, as file system images have.
pub fn image_like(noise: usize, zeros: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut bytes: Vec<u8> = (0..noise)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let repeated = bytes[..(256 << 10).min(noise)].to_vec();
    bytes.extend_from_slice(&repeated);
    bytes.extend_from_slice(&vec![0u8; zeros]);
    bytes
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// The one `mender-rs: error:` line of `out`'s stderr (panics unless
/// there is exactly one), after checking that it names each of `needles`
/// (case-insensitive): what every refusal of the CLI must print.
#[track_caller]
pub fn one_error_line(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("mender-rs: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    let line = lines[0];
    for n in needles {
        assert!(
            line.to_lowercase().contains(&n.to_lowercase()),
            "the error line does not name '{n}': {line}"
        );
    }
    line.to_string()
}

/// The exit code (-1 when killed by a signal).
pub fn exit_code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Status, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Where an output reader thread collects a pipe's bytes.
type Sink = Arc<Mutex<Vec<u8>>>;

/// Runs `cmd` (stdin from /dev/null, output captured) in a process group of
/// its own and waits at most `timeout`; on expiry kills the group and
/// panics with the output so far. A program that cannot be started panics
/// too (tests fail rather than skip when a tool is missing). Output still
/// held open by a stray grandchild is collected for at most 5 s after the
/// process ended.
#[track_caller]
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?} (is it installed?): {e}"));
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers: [(Box<dyn Read + Send>, Sink); 2] = [
        (Box::new(child.stdout.take().unwrap()), stdout.clone()),
        (Box::new(child.stderr.take().unwrap()), stderr.clone()),
    ];
    for (mut pipe, sink) in readers {
        let tx = done_tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(());
        });
    }
    drop(done_tx);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break Some(status);
        }
        if start.elapsed() >= timeout {
            // The child's own process group.
            let _ = mender_rs::sys::kill(-pid, libc::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let linger = Instant::now() + Duration::from_secs(5);
    for _ in 0..2 {
        let left = linger.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let take = |v: &Sink| std::mem::take(&mut *v.lock().unwrap());
    let (stdout, stderr) = (take(&stdout), take(&stderr));
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} did not finish within {timeout:?}; killed\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// An EC P-256 key pair made by openssl: (private, public).
pub fn ec_key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let mut genkey = Command::new("openssl");
    genkey
        .args([
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
        ])
        .arg(&private);
    let out = run_bounded(&mut genkey, Duration::from_secs(30));
    assert!(out.status.success(), "openssl ecparam: {}", describe(&out));
    let mut pubout = Command::new("openssl");
    pubout
        .args(["ec", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public);
    let out = run_bounded(&mut pubout, Duration::from_secs(30));
    assert!(out.status.success(), "openssl ec: {}", describe(&out));
    (private, public)
}
