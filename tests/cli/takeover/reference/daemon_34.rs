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
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .current_dir(&dev.dir)
        .process_group(0);
    cmd.spawn().expect("spawn the daemon")
}

/// The `Name` of the deployment record in the Mender store, if any.
fn mender_state(data: &Path) -> Option<String> {
    use mender_rs::mender_store::{MenderStore, store_path};
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

fn wait_for(what: &str, log: &Path, seconds: u64, done: impl Fn() -> bool) {
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
