//! Figures for issue #5, printed by `scripts/bench-daemon` (all `#[ignore]`).
//! A benchmark, not a test: Cargo.toml declares it with `bench = false`, so
//! neither `cargo test --all-targets` nor `cargo bench` builds it; the script
//! runs it with `cargo test --release --bench bench_daemon`.
//!
//! * `idle_daemon`: one daemon with a 5-second update poll and the default
//!   inventory interval, no deployment, for `IDLE_SECONDS` (600): RSS, peak
//!   RSS, threads, CPU seconds and CPU % over the period, requests made.
//! * `install_throughput`: a rootfs-image artifact of `BENCH_MB` (256) MiB,
//!   deployed through the test server: the time from the `downloading`
//!   status to the `installing` status (download and write into the
//!   partition file, fsync included), next to `curl -s -o` of the same
//!   download link into the same folder.
//!
//! The daemon is `MENDER_RS_BIN` when set (the device build,
//! `--no-default-features`), else the binary cargo built for the tests; the
//! artifacts are written by the latter (it has the artifact writer).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)] // the benchmark uses part of the shared helpers
mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::device::*;
use crate::support::managed::{
    self, DaemonChild, DeviceSetup, clock_ticks, daemon_bin, daemon_command, env_u64, median, mib,
    sample,
};
use crate::support::mender_server::*;

// ---------------------------------------------------------------------------
// A lean launcher: one simulated device and its daemon

struct Daemon {
    dev: SimDevice,
    mac: String,
    log: PathBuf,
    child: Option<DaemonChild>,
}

impl Daemon {
    /// A device for `server` with a unique MAC `n`, polling every
    /// `poll` seconds; `inventory` None keeps the default interval.
    fn new(
        server: &MenderServer,
        n: u32,
        partition_size: u64,
        poll: u64,
        inventory: Option<u64>,
    ) -> Daemon {
        let dev = SimDevice::with_partition_size(partition_size);
        let mac = format!("02:00:00:01:{:02x}:{:02x}", (n >> 8) & 0xff, n & 0xff);
        // A reboot stops the daemon (nothing restarts it here).
        DeviceSetup {
            server_url: Some(&server.url()),
            mac: &mac,
            inventory_script: Some(("mender-inventory-bench", "hostname=bench")),
            reboot_marker: None,
            update_poll: poll,
            inventory_poll: inventory,
            retry_poll: poll.max(1),
        }
        .apply(&dev);
        let log = dev.path("daemon.log");
        Daemon {
            dev,
            mac,
            log,
            child: None,
        }
    }

    fn start(&mut self, bin: &Path) {
        let mut cmd = daemon_command(&self.dev, bin, "info", &self.log);
        cmd.stderr(fs::File::create(self.dev.path("daemon.stderr")).expect("daemon stderr file"));
        self.child = Some(DaemonChild::spawn(&mut cmd));
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").pid()
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.running())
    }

    fn device_id(&self, server: &MenderServer) -> Option<String> {
        server.device_with_identity("mac", &self.mac)
    }

    /// SIGTERM, then SIGKILL of the process group after 5 s.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            child.stop(Duration::from_secs(5));
        }
    }

    fn log_tail(&self) -> String {
        managed::log_tail(&self.log, 40)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Idle daemon

#[test]
#[ignore = "10 minutes; run by scripts/bench-daemon"]
fn idle_daemon() {
    let seconds = env_u64("IDLE_SECONDS", 600);
    let poll = env_u64("IDLE_POLL", 5);
    let bin = daemon_bin();
    let server = MenderServer::start();
    let mut d = Daemon::new(&server, 1, DEFAULT_PARTITION_SIZE, poll, None);
    d.start(&bin);
    let pid = d.pid();
    // Settled: authenticated, inventory sent, polling.
    let settled = server.wait_until(Duration::from_secs(60), |s| {
        d.device_id(s)
            .and_then(|id| s.device(&id))
            .is_some_and(|i| i.inventory_submissions >= 1 && !i.provides.is_empty())
    });
    assert!(settled, "the daemon did not settle:\n{}", d.log_tail());
    let dev_id = d.device_id(&server).unwrap();
    let s0 = sample(pid).expect("daemon process");
    let r0 = server.device(&dev_id).unwrap().requests;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(seconds);
    let mut max_rss = s0.rss_kib;
    let mut min_rss = s0.rss_kib;
    let mut max_threads = s0.threads;
    while Instant::now() < end {
        std::thread::sleep((end - Instant::now()).min(Duration::from_secs(5)));
        assert!(d.alive(), "the daemon stopped:\n{}", d.log_tail());
        let s = sample(pid).expect("daemon process");
        max_rss = max_rss.max(s.rss_kib);
        min_rss = min_rss.min(s.rss_kib);
        max_threads = max_threads.max(s.threads);
    }
    let s1 = sample(pid).expect("daemon process");
    let elapsed = t0.elapsed().as_secs_f64();
    let info = server.device(&dev_id).unwrap();
    let requests = info.requests - r0;
    let cpu = (s1.cpu_ticks - s0.cpu_ticks) as f64 / clock_ticks();
    let child_cpu = (s1.child_ticks - s0.child_ticks) as f64 / clock_ticks();
    d.stop();
    println!();
    println!("== idle daemon: {} (pid {pid})", bin.display());
    println!(
        "   UpdatePollIntervalSeconds {poll}, InventoryPollIntervalSeconds default, no deployment; measured over {elapsed:.0} s after settling"
    );
    println!(
        "   VmRSS at start {:.2} MiB, at end {:.2} MiB (RssAnon {:.2} MiB, RssFile {:.2} MiB); min/max sampled every 5 s {:.2}/{:.2} MiB",
        mib(s0.rss_kib),
        mib(s1.rss_kib),
        mib(s1.rss_anon_kib),
        mib(s1.rss_file_kib),
        mib(min_rss),
        mib(max_rss)
    );
    println!(
        "   VmHWM (peak RSS since start, authentication and inventory included) {:.2} MiB",
        mib(s1.hwm_kib)
    );
    println!(
        "   threads at end {}, max sampled {max_threads}",
        s1.threads
    );
    println!(
        "   CPU (utime+stime) {cpu:.2} s over {elapsed:.0} s = {:.3} % of one core; children (scripts) {child_cpu:.2} s",
        100.0 * cpu / elapsed
    );
    println!(
        "   requests {requests} ({:.1}/min; expected about {:.1}/min from the poll interval); total since start {}",
        requests as f64 * 60.0 / elapsed,
        60.0 / poll as f64,
        info.requests
    );
    server.assert_no_violations();
}

// ---------------------------------------------------------------------------
// Install throughput over loopback HTTP

/// `n` bytes that compress about 2:1: each 4 KiB block is 2 KiB of
/// xorshift output then 2 KiB of a repeated text line.
fn payload(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let text = b"mender-rs rootfs block: lorem ipsum dolor sit amet 0123456789\n";
    while out.len() < n {
        for _ in 0..256 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        for i in 0..2048 {
            out.push(text[i % text.len()]);
        }
    }
    out.truncate(n);
    out
}

/// One daemon deployment on a fresh device: seconds from `downloading`
/// to `installing`, the daemon's CPU seconds and peak RSS, and the link.
fn daemon_install(
    server: &MenderServer,
    bin: &Path,
    dep: &str,
    n: u32,
    part_size: u64,
) -> (f64, f64, u64, String, PathBuf, Daemon) {
    // Nothing dirty from earlier runs.
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    let mut d = Daemon::new(server, n, part_size, 1, None);
    d.start(bin);
    let pid = d.pid();
    let s0 = sample(pid).expect("daemon process");
    let mut last = s0;
    let done = server.wait_until(Duration::from_secs(900), |s| {
        // A zombie (the reboot command ends the daemon) has no VmRSS.
        if let Some(x) = sample(pid)
            && x.rss_kib > 0
        {
            last = x;
        }
        d.device_id(s).is_some_and(|id| {
            s.statuses(&id, dep)
                .iter()
                .any(|st| st == "installing" || st == "failure")
        })
    });
    assert!(done, "no installing status:\n{}", d.log_tail());
    let id = d.device_id(server).unwrap();
    let reports = server.status_reports(&id, dep);
    let at = |name: &str| {
        reports
            .iter()
            .find(|r| r.status == name)
            .map(|r| r.elapsed)
            .unwrap_or_else(|| panic!("no {name} report: {reports:?}\n{}", d.log_tail()))
    };
    let secs = (at("installing") - at("downloading")).as_secs_f64();
    let cpu = last.cpu_ticks.saturating_sub(s0.cpu_ticks) as f64 / clock_ticks();
    let hwm = last.hwm_kib;
    let link = server
        .requests_to(Endpoint::Download)
        .into_iter()
        .rev()
        .find(|r| r.device.as_deref() == Some(id.as_str()))
        .map(|r| format!("{}{}", server.url(), r.path))
        .expect("a download request");
    let folder = d.dev.part_b.parent().unwrap().to_path_buf();
    d.stop();
    (secs, cpu, hwm, link, folder, d)
}

/// `curl -s -o <folder>/curl.out <link>`: (seconds, seconds with fsync).
fn curl_download(link: &str, folder: &Path, size: u64) -> (f64, f64) {
    let out = folder.join("curl.out");
    let _ = fs::remove_file(&out);
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    let t = Instant::now();
    let mut child = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&out)
        .arg(link)
        .stdin(Stdio::null())
        .spawn()
        .expect("curl");
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("curl did not finish in 600 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let plain = t.elapsed().as_secs_f64();
    assert!(status.success(), "curl failed: {status}");
    fs::File::open(&out).unwrap().sync_all().unwrap();
    let synced = t.elapsed().as_secs_f64();
    assert_eq!(fs::metadata(&out).unwrap().len(), size, "curl's file size");
    let _ = fs::remove_file(&out);
    (plain, synced)
}

#[test]
#[ignore = "writes and moves several hundred MiB; run by scripts/bench-daemon"]
fn install_throughput() {
    let mb = env_u64("BENCH_MB", 256);
    let runs = env_u64("BENCH_RUNS", 5).max(1);
    let compressions = std::env::var("BENCH_COMPRESSIONS").unwrap_or_else(|_| "none zstd".into());
    let bin = daemon_bin();
    let writer = PathBuf::from(env!("CARGO_BIN_EXE_mender-rs"));
    let work = tempfile::Builder::new()
        .prefix("mender-rs-bench.")
        .tempdir()
        .unwrap();
    let payload_file = work.path().join("rootfs.img");
    fs::File::create(&payload_file)
        .unwrap()
        .write_all(&payload((mb as usize) << 20))
        .unwrap();
    let part_size = (mb + 16) << 20;
    println!();
    println!(
        "== install throughput: {mb} MiB rootfs payload (about 2:1 compressible), median of {runs}; daemon {}",
        bin.display()
    );
    println!(
        "   daemon: downloading -> installing status (HTTP download + write into the partition file + fsync); curl: curl -s -o <partition folder>/curl.out <the same download link>"
    );
    let mut n = 100;
    for c in compressions.split_whitespace() {
        let artifact = work.path().join(format!("{c}.mender"));
        let out = run_bounded(
            Command::new(&writer)
                .args(["artifact", "--compression", c, "write", "rootfs-image"])
                .args(["-t", DEVICE_TYPE, "-n", &format!("bench-{c}"), "-f"])
                .arg(&payload_file)
                .arg("-o")
                .arg(&artifact),
            Duration::from_secs(600),
        );
        assert!(out.status.success(), "{}", describe(&out));
        let size = fs::metadata(&artifact).unwrap().len();
        let server = MenderServer::start();
        let dep = server.add_deployment(&artifact, &format!("bench-{c}"), &[DEVICE_TYPE]);
        let (mut dt, mut cpus, mut hwms, mut ct, mut cst) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut r1, mut r2) = (vec![], vec![]);
        for _ in 0..runs {
            n += 1;
            let (secs, cpu, hwm, link, folder, d) =
                daemon_install(&server, &bin, &dep, n, part_size);
            let (curl, curl_sync) = curl_download(&link, &folder, size);
            drop(d);
            println!(
                "   run: daemon {secs:.2} s ({:.1} MiB/s of payload, CPU {cpu:.2} s, VmHWM {:.2} MiB); curl {curl:.2} s, curl+fsync {curl_sync:.2} s; ratios {:.2}, {:.2}",
                mb as f64 / secs,
                mib(hwm),
                curl / secs,
                curl_sync / secs
            );
            r1.push(curl / secs);
            r2.push(curl_sync / secs);
            dt.push(secs);
            cpus.push(cpu);
            hwms.push(hwm as f64);
            ct.push(curl);
            cst.push(curl_sync);
        }
        server.assert_no_violations();
        let (d, c1, c2) = (median(&mut dt), median(&mut ct), median(&mut cst));
        let art_mib = size as f64 / 1048576.0;
        println!(
            "   {c:<5} artifact {art_mib:.1} MiB | daemon {:.1} MiB/s of artifact ({:.1} MiB/s of payload), CPU {:.2} s, VmHWM {:.2} MiB | curl -o {:.1} MiB/s | curl -o + fsync {:.1} MiB/s | ratio of the medians daemon/curl {:.2}, daemon/(curl+fsync) {:.2}; median of the per-run ratios {:.2}, {:.2}",
            art_mib / d,
            mb as f64 / d,
            median(&mut cpus),
            median(&mut hwms) / 1024.0,
            art_mib / c1,
            art_mib / c2,
            c1 / d,
            c2 / d,
            median(&mut r1),
            median(&mut r2)
        );
        let _ = fs::remove_file(&artifact);
    }
}
