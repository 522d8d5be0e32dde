//! The real Mender 3.4 daemon (`/usr/bin/mender daemon`) runs a rootfs
//! deployment from the test server up to its reboot on the simulated
//! device of [`super`]; our daemon starts on the same data directory after
//! the (simulated) reboot and finishes it (`docs/takeover.md`, "A
//! deployment in flight"). Both run in the sandbox of [`super`], where
//! also `/usr/share/mender/identity` (3.4's fixed identity script folder)
//! is the device's, and `reboot` in `PATH` ends the daemon as a reboot
//! would.

use std::process::Child;
use std::time::Instant;

use super::*;
use crate::support::mender_server::{Endpoint, MenderServer};

const DAEMON_SANDBOX: &str = r#"set -e
mount --bind "$1" /etc/mender
mount --bind "$2" /usr/share/mender/identity
shift 2
root=$(stat -c %Hd:%Ld /)
for node in /dev/*; do
  if [ -b "$node" ] && [ ! -L "$node" ] && [ "$(stat -c %Hr:%Lr "$node")" = "$root" ]; then
    mount --bind /dev/null "$node"
  fi
done
exec "$@"
"#;

const MAC: &str = "02:34:00:00:00:01";

/// Prepares the device for daemons: identity script, server settings, a
/// `reboot` program that records the reboot and kills its caller.
fn daemon_setup(dev: &Device, server: &MenderServer) -> (PathBuf, PathBuf, PathBuf) {
    let identity = dev.dir.join("identity");
    fs::create_dir_all(&identity).expect("mkdir");
    write_executable(
        &identity.join("mender-device-identity"),
        &format!("#!/bin/sh\necho mac={MAC}\n"),
    );
    let bin = dev.dir.join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let marker = dev.dir.join("rebooted");
    let reboot = bin.join("reboot");
    write_executable(
        &reboot,
        &format!(
            "#!/bin/sh\necho reboot >> '{}'\nkill -KILL $PPID\nsleep 5\n",
            s(&marker)
        ),
    );
    let mut conf: serde_json::Value =
        serde_json::from_slice(&fs::read(&dev.config).expect("read")).expect("json");
    conf["ServerURL"] = server.url().into();
    conf["UpdatePollIntervalSeconds"] = 1.into();
    conf["InventoryPollIntervalSeconds"] = 60.into();
    conf["RetryPollIntervalSeconds"] = 1.into();
    conf["RebootCommand"] = s(&reboot).into();
    fs::write(&dev.config, conf.to_string()).expect("write");
    (identity, bin, marker)
}

/// `program` as a daemon in the sandbox, its output in `log`.
fn spawn_daemon(dev: &Device, identity: &Path, bin: &Path, program: &str, log: &Path) -> Child {
    spawn_daemon_with(dev, identity, bin, program, log, &[])
}

/// [`spawn_daemon`] with more environment variables.
fn spawn_daemon_with(
    dev: &Device,
    identity: &Path,
    bin: &Path,
    program: &str,
    log: &Path,
    env: &[(&str, &str)],
) -> Child {
    let out = fs::File::create(log).expect("log");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        DAEMON_SANDBOX,
    ])
    .arg("sandbox")
    .arg(&dev.etc)
    .arg(identity)
    .arg(program)
    .arg("--config")
    .arg(&dev.config)
    .arg("--data")
    .arg(&dev.data)
    .arg("--no-syslog");
    if program == BIN {
        cmd.args(["--log-level", "debug"]);
    }
    cmd.arg("daemon")
        .env(
            "PATH",
            format!("{}:{}", s(bin), std::env::var("PATH").unwrap_or_default()),
        )
        .envs(env.iter().copied())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .current_dir(&dev.dir)
        .process_group(0);
    cmd.spawn().expect("spawn the daemon")
}

/// The `Name` of the deployment record in the Mender store, if any (none
/// without a store: nothing was handed back while the device had no
/// artifact name of its own, only `artifact_info`'s).
fn mender_state(data: &Path) -> Option<String> {
    use mender_rs::mender_store::{MenderStore, store_path};
    if !store_path(data).exists() {
        return None;
    }
    let contents = MenderStore::open_read_only(&store_path(data))
        .expect("open the Mender store")
        .read()
        .expect("read the Mender store");
    contents.managed.map(|m| m.name)
}

fn stop(child: &mut Child) {
    // SAFETY: kill(2) on the process group this test started.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

fn wait_for(what: &str, log: &Path, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {seconds} s:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mender_3_4_daemon_reboots_into_the_update_and_our_daemon_finishes_it() {
    let rig = rig();
    let server = MenderServer::start();
    let dev = Device::new(rig.root.path(), "daemon", &rig.part_a, &rig.part_b);
    let (identity, bin, marker) = daemon_setup(&dev, &server);
    let dep = server.add_deployment(&rig.artifact, "release-2", &[DEVICE_TYPE]);

    let log34 = dev.dir.join("mender-3.4.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, REFERENCE, &log34);
    wait_for("3.4's reboot", &log34, 180, || marker.exists());
    stop(&mut child);
    fs::remove_file(&marker).expect("rm");
    let device = server
        .device_with_identity("mac", MAC)
        .expect("3.4 authenticated");
    // 3.4 reports `downloading` once per download state.
    let mut first_half = server.statuses(&device, &dep);
    first_half.dedup();
    assert_eq!(
        first_half,
        ["downloading", "installing", "rebooting"],
        "{}",
        fs::read_to_string(&log34).unwrap_or_default()
    );
    let reported = server.statuses(&device, &dep).len();
    assert_eq!(
        mender_state(&dev.data).as_deref(),
        Some("reboot"),
        "3.4 saved its state before the reboot"
    );
    assert!(dev.image_on_b(&rig.payload));
    dev.reboot_into_update();
    let before = server.requests().len();

    let ours = dev.dir.join("mender-rs.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, BIN, &ours);
    wait_for("our final status", &ours, 120, || {
        server.deployment_status(&device, &dep).as_deref() == Some("success")
    });
    stop(&mut child);
    assert_eq!(
        server.statuses(&device, &dep)[reported..],
        ["installing", "success"],
        "{}",
        fs::read_to_string(&ours).unwrap_or_default()
    );
    let mut after = Vec::new();
    for r in server.requests().into_iter().skip(before) {
        let last = r.endpoint == Endpoint::Status;
        after.push(r.endpoint);
        if last && server.deployment_status(&device, &dep).as_deref() == Some("success") {
            let finals = after.iter().filter(|e| **e == Endpoint::Status).count();
            if finals == 2 {
                break;
            }
        }
    }
    assert!(
        !after.iter().any(|e| matches!(
            e,
            Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
        )),
        "deployments/next before the final status: {after:?}"
    );
    // The same accepted device: 3.4's key was taken over.
    assert_eq!(server.device_ids().len(), 1);
    assert_eq!(
        dev.scripts(),
        vec!["ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"]
    );
    let env = dev.env();
    assert_eq!(env["upgrade_available"], "0");
    assert_eq!(env["mender_boot_part"], number_of(&rig.part_b));
    assert_eq!(dev.ok(BIN, &["show-artifact"]).trim(), "release-2");
    assert!(dev.data.join("mender-store.taken-over").exists());
    // Hand back: 3.4 reads the new software and finds nothing in flight.
    assert_eq!(dev.ok(REFERENCE, &["show-artifact"]).trim(), "release-2");
    server.assert_no_violations();
}

/// A copy of the rig's artifact whose `ArtifactCommit_Enter` fails (it
/// logs its name first, as the other scripts do).
fn artifact_with_failing_commit(rig: &Rig) -> PathBuf {
    let dir = rig.root.path().join("build-failing");
    fs::create_dir_all(&dir).expect("mkdir");
    let log = rig.root.path().join("scripts.log");
    let image = dir.join("rootfs.img");
    fs::write(&image, &rig.payload).expect("write");
    let out = dir.join("release-2.mender");
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
        let path = dir.join(name);
        let fail = if name == "ArtifactCommit_Enter_01" {
            "exit 1\n"
        } else {
            ""
        };
        write_executable(
            &path,
            &format!("#!/bin/sh\necho {name} >> '{}'\n{fail}", s(&log)),
        );
        args.push("-s".into());
        args.push(s(&path).into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("mender-artifact", &refs);
    out
}

/// The same with an `ArtifactCommit_Enter` that fails: our daemon rolls
/// back, reports `failure` and only then reboots into the old partition,
/// whose Mender 3.4 daemon finds the old software, nothing in flight, and
/// is not sent the deployment again.
#[test]
fn mender_3_4_daemon_reboots_and_a_failing_commit_ends_in_failure_without_a_redeploy() {
    let rig = rig();
    let server = MenderServer::start();
    let dev = Device::new(rig.root.path(), "daemon-fail", &rig.part_a, &rig.part_b);
    let (identity, bin, marker) = daemon_setup(&dev, &server);
    let artifact = artifact_with_failing_commit(&rig);
    let dep = server.add_deployment(&artifact, "release-2", &[DEVICE_TYPE]);

    let log34 = dev.dir.join("mender-3.4.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, REFERENCE, &log34);
    wait_for("3.4's reboot", &log34, 180, || marker.exists());
    stop(&mut child);
    fs::remove_file(&marker).expect("rm");
    let device = server
        .device_with_identity("mac", MAC)
        .expect("3.4 authenticated");
    let reported = server.statuses(&device, &dep).len();
    dev.reboot_into_update();

    let ours = dev.dir.join("mender-rs.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, BIN, &ours);
    wait_for("our reboot back", &ours, 120, || marker.exists());
    stop(&mut child);
    fs::remove_file(&marker).expect("rm");
    assert_eq!(
        server.statuses(&device, &dep)[reported..],
        ["failure"],
        "{}",
        fs::read_to_string(&ours).unwrap_or_default()
    );
    assert!(!server.logs(&device, &dep).is_empty(), "no deployment log");
    assert_eq!(
        dev.scripts(),
        vec![
            "ArtifactCommit_Enter_01",
            "ArtifactRollback_Enter_01",
            "ArtifactRollback_Leave_01"
        ]
    );
    let env = dev.env();
    assert_eq!(env["upgrade_available"], "0");
    assert_eq!(env["mender_boot_part"], number_of(&rig.part_a));
    assert_eq!(mender_state(&dev.data), None);

    // The old partition runs Mender 3.4 again: it asks for deployments and
    // is sent nothing.
    let downloads = server.downloads().len();
    let nexts = || {
        server
            .requests()
            .iter()
            .filter(|r| {
                matches!(
                    r.endpoint,
                    Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
                ) && r.status != 404
            })
            .count()
    };
    let asked = nexts();
    let log_back = dev.dir.join("mender-3.4-back.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, REFERENCE, &log_back);
    wait_for("3.4 asking twice", &log_back, 60, || nexts() >= asked + 2);
    stop(&mut child);
    assert_eq!(
        server.downloads().len(),
        downloads,
        "the deployment was sent again"
    );
    assert_eq!(
        server.statuses(&device, &dep)[reported..],
        ["failure"],
        "{}",
        fs::read_to_string(&log_back).unwrap_or_default()
    );
    assert_eq!(dev.ok(REFERENCE, &["show-artifact"]).trim(), "release-1");
    server.assert_no_violations();
}

/// Hand back: our daemon installs up to its reboot, and the Mender 3.4
/// daemon of the new image finishes the deployment from the record our
/// daemon wrote.
#[test]
fn our_daemon_reboots_into_the_update_and_the_mender_3_4_daemon_finishes_it() {
    let rig = rig();
    let server = MenderServer::start();
    let dev = Device::new(rig.root.path(), "daemon-back", &rig.part_a, &rig.part_b);
    let (identity, bin, marker) = daemon_setup(&dev, &server);
    let dep = server.add_deployment(&rig.artifact, "release-2", &[DEVICE_TYPE]);

    let ours = dev.dir.join("mender-rs.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, BIN, &ours);
    wait_for("our reboot", &ours, 120, || marker.exists());
    stop(&mut child);
    fs::remove_file(&marker).expect("rm");
    let device = server
        .device_with_identity("mac", MAC)
        .expect("we authenticated");
    assert_eq!(
        server.statuses(&device, &dep),
        ["downloading", "installing", "rebooting"]
    );
    assert!(dev.image_on_b(&rig.payload));
    assert_eq!(mender_state(&dev.data).as_deref(), Some("reboot"));
    dev.reboot_into_update();
    let before = server.requests().len();

    let log34 = dev.dir.join("mender-3.4.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, REFERENCE, &log34);
    wait_for("3.4's final status", &log34, 120, || {
        server.deployment_status(&device, &dep).as_deref() == Some("success")
    });
    stop(&mut child);
    let statuses = server.statuses(&device, &dep);
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("success"),
        "{statuses:?}"
    );
    assert!(
        !server.requests().iter().skip(before).any(|r| {
            matches!(
                r.endpoint,
                Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
            ) && r.status == 200
        }),
        "the deployment was sent again"
    );
    assert_eq!(server.device_ids().len(), 1, "the same device");
    assert_eq!(
        dev.scripts(),
        vec!["ArtifactCommit_Enter_01", "ArtifactCommit_Leave_01"]
    );
    let env = dev.env();
    assert_eq!(env["upgrade_available"], "0");
    assert_eq!(env["mender_boot_part"], number_of(&rig.part_b));
    assert_eq!(dev.ok(REFERENCE, &["show-artifact"]).trim(), "release-2");
    assert_eq!(mender_state(&dev.data), None);

    // Back to mender-rs (`docs/takeover.md`, "Going back and forth"): our
    // store still holds the deployment as it was at the reboot; 3.4 wrote
    // its store since, so our daemon takes the device over again: it
    // names release-2 and does not finish the deployment a second time.
    let statuses = server.statuses(&device, &dep).len();
    let nexts = || {
        server
            .requests()
            .iter()
            .filter(|r| {
                matches!(
                    r.endpoint,
                    Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
                )
            })
            .count()
    };
    let asked = nexts();
    let again = dev.dir.join("mender-rs-again.log");
    let mut child = spawn_daemon(&dev, &identity, &bin, BIN, &again);
    wait_for("our daemon asking for deployments", &again, 60, || {
        nexts() > asked
    });
    stop(&mut child);
    let log = fs::read_to_string(&again).unwrap_or_default();
    assert!(log.contains("taking the device over again"), "{log}");
    assert_eq!(server.statuses(&device, &dep).len(), statuses, "{log}");
    assert!(!marker.exists(), "our daemon rebooted: {log}");
    assert_eq!(dev.ok(BIN, &["show-artifact"]).trim(), "release-2");
    let ours: serde_json::Value = serde_json::from_slice(
        &fs::read(dev.data.join("mender-rs-store.json")).expect("our store"),
    )
    .expect("json");
    assert!(ours["update"].is_null(), "{ours}");
    let replaced: serde_json::Value = serde_json::from_slice(
        &fs::read(dev.data.join("mender-rs-store.replaced.json")).expect("our old store"),
    )
    .expect("json");
    assert_eq!(replaced["update"]["deployment_id"], dep.as_str());
    assert_eq!(dev.ok(REFERENCE, &["show-artifact"]).trim(), "release-2");
    server.assert_no_violations();
}

/// Power lost at each step of the failure path of a taken-over
/// deployment, before its failure was reported: the bootloader (which
/// rolls back an update it booted once, `bootcount=1`, that was not
/// committed) boots the old partition, whose Mender 3.4 daemon finds the
/// `after-rollback-reboot` record (written at the take-over and again
/// before our rollback switches the boot environment back) and reports
/// the failure itself; the deployment is not sent again, no script runs
/// twice and the commit's `Leave` never. After our report (the record
/// removed), 3.4 has nothing to report.
#[test]
fn power_lost_at_each_step_of_our_failure_path_mender_3_4_reports_the_failure() {
    let rig = rig();
    let artifact = artifact_with_failing_commit(&rig);
    // Steps 1-3 take over (1: our store written, Mender's record still in
    // place; `mender-store:1`: the hand back, with the record, built
    // beside it; 2: the hand back in its place), 4 enters ArtifactCommit,
    // 5 ArtifactRollback,
    // `mender-store:2` writes the record again, `rollback:1` is the switch
    // back, 6 records the reboot that waits for the report, 7-9 are
    // ArtifactFailure, Cleanup and the final status to send;
    // `mender-store:3` removes the record after our report.
    let cuts = [
        "step:1",
        "mender-store:1",
        "step:2",
        "step:4",
        "step:5",
        "mender-store:2",
        "rollback:1",
        "step:6",
        "step:7",
        "step:9",
        "mender-store:3",
    ];
    for cut in cuts {
        let server = MenderServer::start();
        let name = format!("daemon-cut-{}", cut.replace(':', "-"));
        let dev = Device::new(rig.root.path(), &name, &rig.part_a, &rig.part_b);
        let (identity, bin, marker) = daemon_setup(&dev, &server);
        let dep = server.add_deployment(&artifact, "release-2", &[DEVICE_TYPE]);

        let log34 = dev.dir.join("mender-3.4.log");
        let mut child = spawn_daemon(&dev, &identity, &bin, REFERENCE, &log34);
        wait_for("3.4's reboot", &log34, 180, || marker.exists());
        stop(&mut child);
        fs::remove_file(&marker).expect("rm");
        let device = server
            .device_with_identity("mac", MAC)
            .expect("3.4 authenticated");
        let reported = server.statuses(&device, &dep).len();
        let downloads = server.downloads().len();
        dev.reboot_into_update();

        let ours = dev.dir.join("mender-rs.log");
        let mut child = spawn_daemon_with(
            &dev,
            &identity,
            &bin,
            BIN,
            &ours,
            &[("MENDER_RS_CRASH_AT", cut)],
        );
        wait_for("our crash", &ours, 120, || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        stop(&mut child);
        let log = fs::read_to_string(&ours).unwrap_or_default();
        let (kind, k) = cut.split_once(':').expect("kind:k");
        assert!(
            log.contains(&format!("crash injection: aborting at {kind} {k}")),
            "{cut}: {log}"
        );
        let by_us = server.statuses(&device, &dep)[reported..].to_vec();
        // The power cut: the bootloader's rule for an update booted once.
        let env = dev.env();
        if env["upgrade_available"] == "1" {
            assert_eq!(env["bootcount"], "1", "{cut}");
            let a = number_of(&rig.part_a);
            dev.set_env(&format!(
                "mender_boot_part={a}\nmender_boot_part_hex={a}\nupgrade_available=0\n"
            ));
        }
        assert_eq!(dev.env()["mender_boot_part"], number_of(&rig.part_a));
        let record = mender_state(&dev.data);
        if by_us.is_empty() {
            // Before the hand back took its place, Mender's own store.
            let want = if ["step:1", "mender-store:1"].contains(&cut) {
                "reboot"
            } else {
                "after-rollback-reboot"
            };
            assert_eq!(record.as_deref(), Some(want), "{cut}");
        } else {
            assert_eq!(by_us, ["failure"], "{cut}");
            assert_eq!(record, None, "{cut}");
        }

        let back = dev.dir.join("mender-3.4-back.log");
        let nexts = || {
            server
                .requests()
                .iter()
                .filter(|r| {
                    matches!(
                        r.endpoint,
                        Endpoint::NextV1Get | Endpoint::NextV1Post | Endpoint::NextV2
                    )
                })
                .count()
        };
        let asked = nexts();
        // Until 3.4 reported and asked for more (its store is not read
        // while it runs: its liblmdb's lock file is of another version).
        // From its own `reboot` record 3.4 rolls back and reboots once
        // more before it reports: the device boots again (no update
        // pending: the same partition).
        for boot in 1..=3 {
            let mut child = spawn_daemon(&dev, &identity, &bin, REFERENCE, &back);
            wait_for("3.4 at rest or rebooting", &back, 120, || {
                marker.exists()
                    || (server.deployment_status(&device, &dep).as_deref() == Some("failure")
                        && nexts() > asked)
            });
            stop(&mut child);
            if !marker.exists() {
                break;
            }
            fs::remove_file(&marker).expect("rm");
            assert!(boot < 3, "{cut}: 3.4 keeps rebooting");
        }
        assert_eq!(mender_state(&dev.data), None, "{cut}: 3.4 finished it");
        let log_back = fs::read_to_string(&back).unwrap_or_default();
        // One final status. 3.4 reports `rebooting` on the way of its own
        // rollback (from its `reboot` record), none from ours.
        let statuses = server.statuses(&device, &dep)[reported..].to_vec();
        let finals: Vec<&String> = statuses
            .iter()
            .filter(|s| *s == "success" || *s == "failure")
            .collect();
        assert_eq!(finals, ["failure"], "{cut}: {log_back}");
        assert_eq!(statuses.last().map(String::as_str), Some("failure"));
        if !["step:1", "mender-store:1"].contains(&cut) {
            assert_eq!(statuses, ["failure"], "{cut}: {log_back}");
        }
        assert_eq!(
            server.downloads().len(),
            downloads,
            "{cut}: the deployment was sent again"
        );
        let scripts = dev.scripts();
        let mut once = scripts.clone();
        once.sort();
        once.dedup();
        assert_eq!(
            once.len(),
            scripts.len(),
            "{cut}: a script ran twice: {scripts:?}"
        );
        // Ours: the failing commit script (unless cut before it), then the
        // rollback's; 3.4's failure path from our record has none of the
        // artifact's, its rollback from its own record the rollback's.
        if ["step:1", "mender-store:1"].contains(&cut) {
            assert_eq!(
                scripts,
                ["ArtifactRollback_Enter_01", "ArtifactRollback_Leave_01"],
                "{cut}"
            );
        } else {
            assert!(
                scripts.is_empty() || scripts[0] == "ArtifactCommit_Enter_01",
                "{cut}: {scripts:?}"
            );
        }
        assert!(
            !scripts.iter().any(|s| s == "ArtifactCommit_Leave_01"),
            "{cut}: {scripts:?}"
        );
        assert_eq!(dev.ok(REFERENCE, &["show-artifact"]).trim(), "release-1");
        assert_eq!(dev.env()["upgrade_available"], "0");
        server.assert_no_violations();
    }
}
