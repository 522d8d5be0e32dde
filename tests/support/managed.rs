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
//! * [`Supervised`] and [`run_until`]: the supervisor of tests/system/daemon.rs
//!   and tests/system/dbus.rs, which starts the daemon again after each
//!   simulated reboot, as systemd would after a real one.
//! * [`ProcSample`], [`sample`], [`clock_ticks`], [`mib`], [`spread`],
//!   [`median`]: /proc figures of a daemon and their summaries.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::device::{BIN, SimDevice, write_executable};

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
// The supervisor

/// A device whose daemon a test runs as systemd would: started again
/// after each (simulated) reboot or crash. What differs between the
/// implementations is how the daemon starts (its environment, where its
/// stderr goes), how many restarts [`run_until`] allows and how much of
/// the log a failure shows.
pub trait Supervised {
    /// Restarts [`run_until`] allows before it panics (the daemon keeps
    /// stopping).
    const MAX_RESTARTS: u32;

    /// The simulated device, the marker its reboot command writes
    /// ([`DeviceSetup::reboot_marker`]), and the daemon (None while none
    /// was started).
    fn parts(&mut self) -> (&SimDevice, &Path, &mut Option<DaemonChild>);

    /// Starts the daemon into the third of [`Supervised::parts`].
    fn start(&mut self);

    /// The end of the daemon's log, for failure messages.
    fn log_tail(&self) -> String;

    /// Starts the daemon again if it ended, after the simulated reboot it
    /// asked for (if it did); true when it had ended.
    fn tend(&mut self) -> bool {
        let (dev, marker, daemon) = self.parts();
        if daemon.as_mut().is_none_or(|c| c.running()) {
            return false;
        }
        *daemon = None;
        rebooted(dev, marker);
        self.start();
        true
    }
}

/// Runs the daemon of `s` (started if none runs, started again after each
/// simulated reboot or crash, at most `S::MAX_RESTARTS` times) until `done`
/// holds, asking every 50 ms; false when `timeout` passes first. The
/// daemon is left running either way.
pub fn run_until<S: Supervised>(
    s: &mut S,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut restarts = 0;
    while Instant::now() < deadline {
        if s.parts().2.is_none() {
            s.start();
        }
        if done() {
            return true;
        }
        if s.tend() {
            restarts += 1;
            assert!(
                restarts <= S::MAX_RESTARTS,
                "the daemon keeps stopping:\n{}",
                s.log_tail()
            );
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
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
