//! Running `mender-rs daemon` for a simulated device ([`SimDevice`],
//! tests/support/device.rs) against the test server: what tests/system/daemon.rs,
//! tests/system/dbus.rs, tests/system/fleet.rs, tests/hardening/ and
//! benches/bench_daemon.rs share.
//!
//! * [`daemon_bin`], [`env_u64`]: the binary under test and the numbers
//!   the benchmarks take from the environment.
//! * [`DeviceSetup`]: the identity, inventory and reboot scripts and the
//!   mender.conf settings of a device run by a daemon.
//! * [`daemon_command`] and [`DaemonChild`]: the daemon's command line, and
//!   the running daemon, killed (with its process group) when dropped.
//! * [`log_tail`], [`rebooted`]: what a supervisor looks at.
//! * [`ManagedDevice`] (built with [`ManagedOptions`]) and
//!   [`final_status_of`]: a device and its supervised daemon, as
//!   tests/system/daemon.rs, tests/system/dbus.rs and
//!   tests/hardening/server_replies.rs run it: started again after each
//!   simulated reboot, as systemd would after a real one.
//! * [`ProcSample`], [`sample`], [`clock_ticks`], [`mib`], [`spread`],
//!   [`median`]: /proc figures of a daemon and their summaries.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::device::{BIN, DEFAULT_PARTITION_SIZE, DEVICE_TYPE, SimDevice, write_executable};
use super::mender_server::MenderServer;

/// The daemon binary: `MENDER_RS_BIN` when set (the device build, say),
/// else the binary cargo built for the tests.
pub fn daemon_bin() -> PathBuf {
    match std::env::var_os("MENDER_RS_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(BIN),
    }
}

/// The number in the environment variable `name`, else `default`; panics
/// on a value that is not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

// ---------------------------------------------------------------------------
// The device's scripts and mender.conf

/// What a device run by a daemon needs besides [`SimDevice::new`]: an
/// identity script, an inventory folder, a reboot command that ends the
/// daemon, an Ed25519 device key (fast to generate) and the poll intervals.
pub struct DeviceSetup<'a> {
    /// `ServerURL`; None leaves it unset (set it before the daemon starts).
    pub server_url: Option<&'a str>,
    /// The `mac` the identity script prints.
    pub mac: &'a str,
    /// An inventory script: its file name and what it prints; None leaves
    /// the inventory folder empty.
    pub inventory_script: Option<(&'a str, &'a str)>,
    /// The reboot command appends a line to this file before it kills the
    /// daemon (see [`rebooted`]); None: it only kills the daemon.
    pub reboot_marker: Option<&'a Path>,
    /// `UpdatePollIntervalSeconds`.
    pub update_poll: u64,
    /// `InventoryPollIntervalSeconds`; None keeps the default.
    pub inventory_poll: Option<u64>,
    /// `RetryPollIntervalSeconds`.
    pub retry_poll: u64,
}

impl DeviceSetup<'_> {
    /// Writes the scripts into the device and the settings into its
    /// mender.conf.
    pub fn apply(&self, dev: &SimDevice) {
        let identity = dev.path("identity/mender-device-identity");
        fs::create_dir_all(identity.parent().unwrap()).unwrap();
        write_executable(&identity, &format!("#!/bin/sh\necho mac={}\n", self.mac));
        let inventory = dev.path("inventory");
        fs::create_dir_all(&inventory).unwrap();
        if let Some((name, lines)) = self.inventory_script {
            let echoes: String = lines.lines().map(|l| format!("echo {l}\n")).collect();
            write_executable(&inventory.join(name), &format!("#!/bin/sh\n{echoes}"));
        }
        let reboot = dev.path("reboot");
        let mark = match self.reboot_marker {
            Some(marker) => format!("echo reboot >> '{}'\n", marker.display()),
            None => String::new(),
        };
        write_executable(
            &reboot,
            &format!("#!/bin/sh\n{mark}kill -KILL $PPID\nsleep 5\n"),
        );
        let set = |k: &str, v: Value| dev.set_config(k, v);
        if let Some(url) = self.server_url {
            set("ServerURL", Value::from(url));
        }
        set("UpdatePollIntervalSeconds", Value::from(self.update_poll));
        if let Some(i) = self.inventory_poll {
            set("InventoryPollIntervalSeconds", Value::from(i));
        }
        set("RetryPollIntervalSeconds", Value::from(self.retry_poll));
        set(
            "IdentityScript",
            Value::from(identity.display().to_string()),
        );
        set(
            "InventoryScriptsPath",
            Value::from(inventory.display().to_string()),
        );
        set("RebootCommand", Value::from(reboot.display().to_string()));
        set("DeviceKeyType", Value::from("ed25519"));
    }
}

/// After the daemon ended: if it asked for a reboot (the reboot command
/// of [`DeviceSetup::reboot_marker`] ran), clears the marker and runs the
/// simulated bootloader; true then.
pub fn rebooted(dev: &SimDevice, marker: &Path) -> bool {
    if !marker.exists() {
        return false;
    }
    fs::remove_file(marker).unwrap();
    dev.reboot();
    true
}

// ---------------------------------------------------------------------------
// The daemon process

/// `BIN --config C --data D --no-syslog --log-level LEVEL --log-file LOG
/// daemon`, in a process group of its own, with stdin, stdout and stderr
/// on /dev/null; the caller may add environment variables or another
/// stderr before [`DaemonChild::spawn`].
pub fn daemon_command(dev: &SimDevice, bin: &Path, log_level: &str, log: &Path) -> Command {
    let mut cmd = dev.command_as(bin);
    cmd.args(["--no-syslog", "--log-level", log_level, "--log-file"])
        .arg(log)
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    cmd
}

/// A running daemon (or one that ended but was not yet reaped). Dropping
/// it kills the daemon and its process group (scripts it started) with
/// SIGKILL; [`DaemonChild::stop`] asks it to end first.
pub struct DaemonChild {
    child: Child,
    reaped: bool,
}

impl DaemonChild {
    /// Starts `cmd` (from [`daemon_command`]); panics if it cannot.
    pub fn spawn(cmd: &mut Command) -> DaemonChild {
        DaemonChild {
            child: cmd.spawn().expect("starting the daemon"),
            reaped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs (an error asking counts as ended).
    pub fn running(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(_)) => {
                self.reaped = true;
                false
            }
            Err(_) => false,
        }
    }

    /// Sends SIGTERM (the daemon's orderly stop), without waiting.
    pub fn terminate(&self) {
        if !self.reaped {
            // The child is not reaped, so its pid is still ours.
            let _ = mender_rs::sys::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// SIGTERM, then after `grace` SIGKILL to the process group.
    pub fn stop(mut self, grace: Duration) {
        self.terminate();
        let deadline = Instant::now() + grace;
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drop: SIGKILL if still running.
    }
}

impl Drop for DaemonChild {
    fn drop(&mut self) {
        if self.running() {
            // The child leads its own process group and is not reaped yet.
            let _ = mender_rs::sys::kill(-(self.child.id() as i32), libc::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of a daemon log, without the debug records (the
/// HTTP client's drown the daemon's own).
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" debug: ")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// The supervised device

/// Gives each [`ManagedDevice`] of a test process its own `mac`, so that
/// the server tells the devices of one test apart.
static MACS: AtomicU32 = AtomicU32::new(1);

/// Restarts [`ManagedDevice::run_until`] allows by default before it
/// panics (the daemon keeps stopping).
const MAX_RESTARTS: u32 = 10;

/// How a [`ManagedDevice`] is built: [`ManagedDevice::options`], then
/// the options that differ from the defaults, then
/// [`ManagedOptions::build`].
pub struct ManagedOptions<'a> {
    server_url: String,
    partition_size: u64,
    inventory_script: Option<(&'a str, &'a str)>,
    inventory_poll: u64,
    env: Vec<(String, String)>,
    max_restarts: u32,
}

impl<'a> ManagedOptions<'a> {
    /// Partitions of `size` bytes (default [`DEFAULT_PARTITION_SIZE`]).
    pub fn partition_size(mut self, size: u64) -> Self {
        self.partition_size = size;
        self
    }

    /// An inventory script `name` printing `lines` (default: none).
    pub fn inventory_script(mut self, name: &'a str, lines: &'a str) -> Self {
        self.inventory_script = Some((name, lines));
        self
    }

    /// `InventoryPollIntervalSeconds` (default 1).
    pub fn inventory_poll(mut self, seconds: u64) -> Self {
        self.inventory_poll = seconds;
        self
    }

    /// An environment variable for every start of the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Restarts [`ManagedDevice::run_until`] allows (default 10); the
    /// power-loss tests restart at every persisted step.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }

    /// The device with its scripts and mender.conf written; no daemon
    /// runs yet.
    pub fn build(self) -> ManagedDevice {
        let dev = SimDevice::with_partition_size(self.partition_size);
        let n = MACS.fetch_add(1, Ordering::SeqCst);
        let mac = format!("02:00:00:00:{:02x}:{:02x}", n >> 8, n & 0xff);
        let reboot_marker = dev.path("rebooted");
        DeviceSetup {
            server_url: Some(&self.server_url),
            mac: &mac,
            inventory_script: self.inventory_script,
            reboot_marker: Some(&reboot_marker),
            update_poll: 1,
            inventory_poll: Some(self.inventory_poll),
            retry_poll: 1,
        }
        .apply(&dev);
        let log = dev.path("daemon.log");
        ManagedDevice {
            dev,
            log,
            reboot_marker,
            mac,
            child: None,
            env: self.env,
            max_restarts: self.max_restarts,
            starts: 0,
            crash_at: None,
        }
    }
}

/// A simulated device whose daemon a test runs as systemd would: started
/// again after each (simulated) reboot or crash. The daemon logs at debug
/// level to [`ManagedDevice::log`] and appends its stderr to
/// `daemon.stderr` in the device; it is stopped when this is dropped,
/// before the device's directory goes.
pub struct ManagedDevice {
    pub dev: SimDevice,
    /// The daemon's log file.
    pub log: PathBuf,
    /// The file the reboot command appends to ([`rebooted`]).
    pub reboot_marker: PathBuf,
    /// The `mac` of the device's identity.
    pub mac: String,
    child: Option<DaemonChild>,
    env: Vec<(String, String)>,
    max_restarts: u32,
    /// Daemon starts so far.
    pub starts: u32,
    /// Crash injection: (start number, `MENDER_RS_CRASH_AT` value) for
    /// that start of the daemon only.
    crash_at: Option<(u32, String)>,
}

impl ManagedDevice {
    /// A device for `server`: 2 MiB partitions, no inventory script, all
    /// poll intervals 1 s, at most 10 restarts.
    pub fn options<'a>(server: &MenderServer) -> ManagedOptions<'a> {
        ManagedOptions {
            server_url: server.url(),
            partition_size: DEFAULT_PARTITION_SIZE,
            inventory_script: None,
            inventory_poll: 1,
            env: Vec::new(),
            max_restarts: MAX_RESTARTS,
        }
    }

    /// The device with the default [`ManagedDevice::options`].
    pub fn new(server: &MenderServer) -> ManagedDevice {
        Self::options(server).build()
    }

    /// The `start`-th start of the daemon (counting from 1) runs with
    /// `MENDER_RS_CRASH_AT=spec`.
    pub fn crash_at(&mut self, start: u32, spec: &str) {
        self.crash_at = Some((start, spec.to_string()));
    }

    /// The running daemon's pid; panics when none was started.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon was started").pid()
    }

    /// Starts the daemon (with the crash injection of
    /// [`ManagedDevice::crash_at`] when this is that start).
    pub fn start(&mut self) {
        let mut cmd = daemon_command(&self.dev, Path::new(BIN), "debug", &self.log);
        cmd.stderr(
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dev.path("daemon.stderr"))
                .expect("daemon stderr file"),
        );
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some((start, spec)) = &self.crash_at
            && *start == self.starts + 1
        {
            cmd.env("MENDER_RS_CRASH_AT", spec);
        }
        self.child = Some(DaemonChild::spawn(&mut cmd));
        self.starts += 1;
    }

    /// SIGTERM, then SIGKILL after 5 s; nothing when no daemon runs.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            child.stop(Duration::from_secs(5));
        }
    }

    /// Starts the daemon again if it ended, after the simulated reboot it
    /// asked for (if it did); true when it had ended.
    pub fn tend(&mut self) -> bool {
        if self.child.as_mut().is_none_or(|c| c.running()) {
            return false;
        }
        self.child = None;
        rebooted(&self.dev, &self.reboot_marker);
        self.start();
        true
    }

    /// Runs the daemon (started if none runs, started again after each
    /// simulated reboot or crash, at most `max_restarts` times) until
    /// `done` holds, asking every 50 ms, then stops it; false when
    /// `timeout` passes first.
    pub fn run_until(
        &mut self,
        server: &MenderServer,
        timeout: Duration,
        done: impl Fn(&MenderServer) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut restarts = 0;
        let mut held = false;
        while Instant::now() < deadline {
            if self.child.is_none() {
                self.start();
            }
            if done(server) {
                held = true;
                break;
            }
            if self.tend() {
                restarts += 1;
                assert!(
                    restarts <= self.max_restarts,
                    "the daemon keeps stopping:\n{}",
                    self.log_tail()
                );
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        held
    }

    /// Runs the daemon until deployment `dep` has its final status (see
    /// [`final_status_of`]), within `seconds`; returns the device's id.
    pub fn run_to_final(&mut self, server: &MenderServer, dep: &str, seconds: u64) -> String {
        assert!(
            self.run_until(
                server,
                Duration::from_secs(seconds),
                final_status_of(dep.to_string())
            ),
            "no final status for {dep}:\n{}",
            self.log_tail()
        );
        self.device_id(server)
    }

    /// [`ManagedDevice::run_to_final`], and the final status must be
    /// `want` (`success` or `failure`); returns the device's id.
    pub fn run_to_status(
        &mut self,
        server: &MenderServer,
        dep: &str,
        seconds: u64,
        want: &str,
    ) -> String {
        let id = self.run_to_final(server, dep, seconds);
        assert_eq!(
            server.deployment_status(&id, dep).as_deref(),
            Some(want),
            "{}",
            self.log_tail()
        );
        id
    }

    /// Writes a rootfs-image artifact `name` with a payload of `size`
    /// bytes and deploys it on `server` to the device type; returns the
    /// deployment's id.
    pub fn deploy_rootfs(&self, server: &MenderServer, name: &str, size: usize) -> String {
        let artifact = self.dev.write_rootfs_artifact(name, size, &[], &[]);
        server.add_deployment(&artifact, name, &[DEVICE_TYPE])
    }

    /// The device's id on `server` (panics if the server does not know it).
    pub fn device_id(&self, server: &MenderServer) -> String {
        server
            .device_with_identity("mac", &self.mac)
            .unwrap_or_else(|| {
                panic!(
                    "the server does not know {}:\n{}",
                    self.mac,
                    self.log_tail()
                )
            })
    }

    /// The whole daemon log.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the daemon log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 80)
    }
}

impl Drop for ManagedDevice {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The deployment has its final status (and, after a failure, its log).
pub fn final_status_of(dep: String) -> impl Fn(&MenderServer) -> bool {
    move |s: &MenderServer| {
        s.device_ids()
            .iter()
            .any(|d| match s.deployment_status(d, &dep).as_deref() {
                Some("success") => true,
                Some("failure") => !s.logs(d, &dep).is_empty(),
                _ => false,
            })
    }
}

// ---------------------------------------------------------------------------
// /proc

/// From /proc/<pid>/status and /proc/<pid>/stat.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub threads: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// cutime + cstime (waited-for children), in clock ticks.
    pub child_ticks: u64,
}

/// None once the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut s = ProcSample::default();
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let n = || {
            v.split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        };
        match k {
            "VmRSS" => s.rss_kib = n(),
            "VmHWM" => s.hwm_kib = n(),
            "RssAnon" => s.rss_anon_kib = n(),
            "RssFile" => s.rss_file_kib = n(),
            "Threads" => s.threads = n(),
            _ => {}
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3; utime 14, stime 15,
    // cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    s.cpu_ticks = f.get(11)? + f.get(12)?;
    s.child_ticks = f.get(13)? + f.get(14)?;
    Some(s)
}

/// Clock ticks per second (the unit of [`ProcSample::cpu_ticks`]).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf(3) takes an integer and touches no memory of ours.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// (min, median, max); all default for an empty list.
pub fn spread<T: Copy + Ord + Default>(mut v: Vec<T>) -> (T, T, T) {
    if v.is_empty() {
        return (T::default(), T::default(), T::default());
    }
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// The median (upper one for an even count); 0 for an empty list.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}
