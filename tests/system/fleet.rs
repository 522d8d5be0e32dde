//! Fleets of daemons against one test server (tests/support/mender_server/):
//! every device authenticates, sends its inventory, polls at its interval,
//! and installs one module-image deployment (no reboot), and the server sees
//! a bounded number of requests.
//!
//! * `fleet_small` (CI): 10 daemons, 1 s poll, about 15 s.
//! * `fleet_100` (`#[ignore]`, run by `scripts/bench-daemon fleet`):
//!   `FLEET_DEVICES` (100) daemons, `FLEET_POLL` (5) s poll, one deployment
//!   at half time, `FLEET_SECONDS` (120); prints what the server saw and the
//!   daemons' memory and threads.
//!
//! The daemon is `MENDER_RS_BIN` when set (the device build), else the
//! binary cargo built for the tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::device::*;
use crate::support::managed::{
    self, DaemonChild, DeviceSetup, ProcSample, clock_ticks, daemon_bin, daemon_command, env_u64,
    mib, sample, spread,
};
use crate::support::mender_server::*;
use serde_json::Value;

const MODULE: &str = "fleet-module";
/// Bound of every wait for the whole fleet to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The fleet

struct Member {
    dev: SimDevice,
    mac: String,
    log: PathBuf,
    child: Option<DaemonChild>,
}

impl Member {
    fn log_tail(&self) -> String {
        managed::log_tail(&self.log, 30)
    }
}

/// Simulated devices, each with its daemon; every daemon is killed on drop.
struct Fleet {
    members: Vec<Member>,
    bin: PathBuf,
}

impl Fleet {
    /// `n` devices polling every `poll` s (inventory every `inventory` s),
    /// not yet connected to a server.
    fn new(n: usize, poll: u64, inventory: u64) -> Fleet {
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let dev = SimDevice::new();
            let mac = format!("02:00:00:02:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff);
            // No reboot is expected: a reboot stops the daemon (and shows
            // up as a dead daemon).
            DeviceSetup {
                server_url: None,
                mac: &mac,
                inventory_script: Some((
                    "mender-inventory-fleet",
                    &format!("hostname=fleet-{i}\nfleet=yes"),
                )),
                reboot_marker: None,
                update_poll: poll,
                inventory_poll: Some(inventory),
                retry_poll: poll,
            }
            .apply(&dev);
            write_executable(
                &dev.modules.join(MODULE),
                "#!/bin/sh\ncase \"$1\" in\n  NeedsArtifactReboot) echo No ;;\n  SupportsRollback) echo No ;;\nesac\nexit 0\n",
            );
            let log = dev.path("daemon.log");
            members.push(Member {
                dev,
                mac,
                log,
                child: None,
            });
        }
        Fleet {
            members,
            bin: daemon_bin(),
        }
    }

    /// Points every device at `server` and starts its daemon.
    fn start(&mut self, server: &MenderServer) {
        for m in &mut self.members {
            m.dev.set_config("ServerURL", Value::from(server.url()));
            let mut cmd = daemon_command(&m.dev, &self.bin, "info", &m.log);
            cmd.stderr(fs::File::create(m.dev.path("daemon.stderr")).expect("daemon stderr file"));
            m.child = Some(DaemonChild::spawn(&mut cmd));
        }
    }

    /// Indexes of the members whose daemon has exited.
    fn dead(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(c) = m.child.as_mut()
                && !c.running()
            {
                out.push(i);
            }
        }
        out
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| c.pid()))
            .collect()
    }

    /// The server's id of each member (None: never authenticated).
    fn device_ids(&self, server: &MenderServer) -> Vec<Option<String>> {
        self.members
            .iter()
            .map(|m| server.device_with_identity("mac", &m.mac))
            .collect()
    }

    /// SIGTERM to all, SIGKILL (process groups) to what is left after
    /// [`STOP_WAIT`].
    fn stop(&mut self) {
        for c in self.members.iter().filter_map(|m| m.child.as_ref()) {
            c.terminate();
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline
            && self
                .members
                .iter_mut()
                .filter_map(|m| m.child.as_mut())
                .any(|c| c.running())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropping the children kills what is left.
        for m in &mut self.members {
            m.child = None;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small module-image artifact for [`MODULE`].
fn fleet_artifact(dev: &SimDevice) -> PathBuf {
    let dir = dev.new_build_dir("fleet-payload");
    let payload = dir.join("payload.bin");
    fs::write(&payload, random_bytes(64 << 10)).unwrap();
    dev.write_module_artifact("fleet-2", MODULE, &[&payload], &[], &[])
}

// ---------------------------------------------------------------------------
// Figures

fn kib_spread(v: Vec<u64>) -> String {
    let (a, b, c) = spread(v);
    format!("{:.2}/{:.2}/{:.2} MiB", mib(a), mib(b), mib(c))
}

/// Next-poll requests per device in the request log.
fn polls_per_device(server: &MenderServer) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in server.requests() {
        if matches!(
            r.endpoint,
            Endpoint::NextV1Post | Endpoint::NextV1Get | Endpoint::NextV2
        ) && let Some(d) = r.device
        {
            *out.entry(d).or_insert(0) += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn fleet_small() {
    const N: usize = 10;
    const POLL: u64 = 1;
    let mut fleet = Fleet::new(N, POLL, 5);
    let artifact = fleet_artifact(&fleet.members[0].dev);
    let server = MenderServer::start();
    fleet.start(&server);
    let t0 = Instant::now();
    // Everyone is known and has sent its inventory.
    let all_in = server.wait_until(Duration::from_secs(15), |s| {
        fleet.device_ids(s).iter().all(|id| {
            id.as_ref()
                .and_then(|id| s.device(id))
                .is_some_and(|d| d.inventory_submissions >= 1)
        })
    });
    assert!(
        all_in,
        "not every device authenticated and sent its inventory:\n{}",
        fleet.members[0].log_tail()
    );
    let dep = server.add_deployment(&artifact, "fleet-2", &[DEVICE_TYPE]);
    let all_done = server.wait_until(Duration::from_secs(20), |s| {
        s.deployment_summary(&dep).get("success") == Some(&N)
    });
    assert!(
        all_done,
        "deployment {:?}:\n{}",
        server.deployment_summary(&dep),
        fleet.members[0].log_tail()
    );
    // Keep polling until 15 s in all, to measure the idle rate too.
    let end = t0 + Duration::from_secs(15);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    let dead = fleet.dead();
    assert!(
        dead.is_empty(),
        "daemons stopped: {dead:?}\n{}",
        fleet.members[dead[0]].log_tail()
    );
    let elapsed = t0.elapsed().as_secs_f64();
    let ids = fleet.device_ids(&server);
    let ids: Vec<String> = ids.into_iter().map(|i| i.unwrap()).collect();
    fleet.stop();

    assert_eq!(server.device_ids().len(), N, "one server device per daemon");
    assert_eq!(
        server.deployment_summary(&dep),
        BTreeMap::from([("success".to_string(), N)])
    );
    for id in &ids {
        // The commit step reports `installing` again, as after a reboot.
        let statuses = server.statuses(id, &dep);
        assert!(
            statuses.first().map(String::as_str) == Some("downloading")
                && statuses.last().map(String::as_str) == Some("success")
                && statuses[1..statuses.len() - 1]
                    .iter()
                    .all(|s| s == "installing"),
            "device {id}: {statuses:?}"
        );
        assert_eq!(
            server.inventory_value(id, "fleet"),
            Some(Value::from("yes"))
        );
    }
    // Bounded rates: about one poll per interval, never a busy loop.
    let expected = elapsed / POLL as f64;
    let per_device = server.requests_per_device();
    let polls = polls_per_device(&server);
    for id in &ids {
        let p = polls.get(id).copied().unwrap_or(0) as f64;
        assert!(
            p >= expected / 4.0 && p <= expected * 1.5 + 3.0,
            "device {id}: {p} polls in {elapsed:.1} s at a {POLL} s interval"
        );
        let per_minute = per_device[id] as f64 * 60.0 / elapsed;
        assert!(
            (15.0..=180.0).contains(&per_minute),
            "device {id}: {per_minute:.0} requests per minute"
        );
    }
    let total = server.request_count() as f64;
    assert!(
        total <= N as f64 * (expected * 2.0 + 20.0),
        "{total} requests from {N} devices in {elapsed:.1} s"
    );
    server.assert_no_violations();
}

#[test]
#[ignore = "100 daemons for 2 minutes; run by scripts/bench-daemon fleet"]
fn fleet_100() {
    let n = env_u64("FLEET_DEVICES", 100) as usize;
    let poll = env_u64("FLEET_POLL", 5);
    let seconds = env_u64("FLEET_SECONDS", 120);
    let inventory = env_u64("FLEET_INVENTORY", 60);
    let setup = Instant::now();
    let mut fleet = Fleet::new(n, poll, inventory);
    let artifact = fleet_artifact(&fleet.members[0].dev);
    let setup = setup.elapsed();
    let server = MenderServer::start();
    fleet.start(&server);
    let t0 = Instant::now();
    let pids = fleet.pids();
    let start_samples: Vec<ProcSample> = pids.iter().filter_map(|&p| sample(p)).collect();
    let half = t0 + Duration::from_secs(seconds / 2);
    let end = t0 + Duration::from_secs(seconds);
    let mut dep: Option<(String, Instant)> = None;
    let mut all_success_after: Option<Duration> = None;
    let mut known_after: Option<Duration> = None;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250));
        if known_after.is_none()
            && server
                .devices()
                .iter()
                .filter(|d| d.inventory_submissions >= 1)
                .count()
                >= n
        {
            known_after = Some(t0.elapsed());
        }
        if dep.is_none() && Instant::now() >= half {
            let id = server.add_deployment(&artifact, "fleet-2", &[DEVICE_TYPE]);
            dep = Some((id, Instant::now()));
        }
        if let Some((id, at)) = &dep
            && all_success_after.is_none()
            && server.deployment_summary(id).get("success") == Some(&n)
        {
            all_success_after = Some(at.elapsed());
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let end_samples: Vec<ProcSample> = pids.iter().filter_map(|&p| sample(p)).collect();
    let dead = fleet.dead();
    let ids = fleet.device_ids(&server);
    let polls = polls_per_device(&server);
    fleet.stop();

    let (dep, _) = dep.expect("the deployment was created");
    let per_device: Vec<u64> = server.requests_per_device().values().copied().collect();
    let (rmin, rmed, rmax) = spread(per_device.clone());
    let poll_counts: Vec<u64> = ids
        .iter()
        .map(|i| i.as_ref().and_then(|i| polls.get(i)).copied().unwrap_or(0))
        .collect();
    let (pmin, pmed, pmax) = spread(poll_counts);
    let total = server.request_count();
    println!();
    println!(
        "== fleet: {n} daemons ({}), UpdatePollIntervalSeconds {poll}, InventoryPollIntervalSeconds {inventory}, {elapsed:.0} s; one module-image deployment at {} s",
        fleet.bin.display(),
        seconds / 2
    );
    println!(
        "   set-up of {n} simulated devices {:.1} s (not counted); all authenticated with inventory after {}",
        setup.as_secs_f64(),
        known_after.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    println!(
        "   devices seen by the server: {} (daemons alive at the end: {} of {n})",
        server.device_ids().len(),
        n - dead.len()
    );
    println!(
        "   total requests: {total} ({:.1}/s; {:.2} per device per minute)",
        total as f64 / elapsed,
        total as f64 / n as f64 * 60.0 / elapsed
    );
    println!(
        "   requests per device min/median/max: {rmin}/{rmed}/{rmax}; next polls per device min/median/max: {pmin}/{pmed}/{pmax} (one per {poll} s would be {:.0})",
        elapsed / poll as f64
    );
    let auths: Vec<u64> = server.devices().iter().map(|d| d.auth_requests).collect();
    let (amin, amed, amax) = spread(auths);
    let first_auths: Vec<String> = ids
        .first()
        .cloned()
        .flatten()
        .map(|id| {
            server
                .requests_to(Endpoint::Auth)
                .iter()
                .filter(|r| r.device.as_deref() == Some(id.as_str()))
                .map(|r| format!("{:.1} s ({})", r.elapsed.as_secs_f64(), r.status))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "   auth requests per device min/median/max: {amin}/{amed}/{amax} (the first device's at {})",
        first_auths.join(", ")
    );
    let minutes: Vec<String> = server
        .requests_per_minute()
        .iter()
        .enumerate()
        .map(|(i, r)| format!("minute {}: {r}", i + 1))
        .collect();
    println!(
        "   requests per minute since the server started: {}",
        minutes.join(", ")
    );
    let endpoints: Vec<String> = server
        .requests_per_endpoint()
        .iter()
        .map(|(e, r)| format!("{e:?} {r}"))
        .collect();
    println!("   requests per endpoint: {}", endpoints.join(", "));
    println!(
        "   deployment: {:?}; all {n} successful {} after it was created; artifact downloads {}",
        server.deployment_summary(&dep),
        all_success_after.map_or("not".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        server.downloads().len()
    );
    println!(
        "   daemons at the end ({} sampled): VmRSS min/median/max {}, VmHWM min/median/max {}, sum of VmRSS {:.1} MiB",
        end_samples.len(),
        kib_spread(end_samples.iter().map(|s| s.rss_kib).collect()),
        kib_spread(end_samples.iter().map(|s| s.hwm_kib).collect()),
        end_samples.iter().map(|s| s.rss_kib).sum::<u64>() as f64 / 1024.0
    );
    let (tmin, tmed, tmax) = spread(end_samples.iter().map(|s| s.threads).collect());
    let ticks = clock_ticks();
    let cpu: u64 = end_samples.iter().map(|s| s.cpu_ticks).sum::<u64>()
        - start_samples.iter().map(|s| s.cpu_ticks).sum::<u64>();
    println!(
        "   threads min/median/max {tmin}/{tmed}/{tmax}; CPU of all daemons {:.2} s ({:.2} % of one core)",
        cpu as f64 / ticks,
        100.0 * cpu as f64 / ticks / elapsed
    );
    if let Some(&i) = dead.first() {
        println!(
            "   a stopped daemon's log ({}):\n{}",
            fleet.members[i].dev.root.display(),
            fleet.members[i].log_tail()
        );
    }
    let violations = server.violations();
    println!("   API violations: {}", violations.len());
    server.assert_no_violations();
    assert!(dead.is_empty(), "{} daemons stopped", dead.len());
}
