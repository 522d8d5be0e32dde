//! The D-Bus API (feature `dbus`) against a private `dbus-daemon` with a
//! system-bus-like configuration (the policy files of `support/dbus`
//! included) and the test server: "Start update" with maps set over D-Bus
//! with `busctl`, bad maps refused with the field named and the maps in
//! force untouched, the JWT over D-Bus and `FetchJwtToken` with its
//! signal. Every process is killed at the end; every wait is bounded.
#![cfg(feature = "dbus")]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::device::*;
use crate::support::managed::ManagedDevice;
use crate::support::mender_server::*;
use dbus::channel::Channel;
use dbus::message::{Message, MessageType};
use serde_json::{Value, json};

const MAP_ID: &str = "0b5c56a2-7e43-4a1e-9d3f-2c9a1f6e8d10";

/// A private bus: `dbus-daemon` on a socket in a temporary directory.
pub(super) struct Bus {
    dir: tempfile::TempDir,
    child: Child,
    pub(super) address: String,
}

impl Bus {
    pub(super) fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("system_bus_socket");
        let support = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/dbus");
        // A non-root test run gets root's rights for its own user.
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let same_as_root = if user == "root" {
            String::new()
        } else {
            format!(
                r#"<policy user="{user}"><allow own="io.mender.UpdateManager"/><allow own="io.mender.AuthenticationManager"/><allow send_destination="io.mender.UpdateManager"/><allow send_destination="io.mender.AuthenticationManager"/><allow receive_sender="io.mender.UpdateManager"/><allow receive_sender="io.mender.AuthenticationManager"/></policy>"#
            )
        };
        // The rules of a system bus: method calls and names denied unless
        // a policy file allows them.
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{support}/io.mender.UpdateManager.conf</include>
  <include>{support}/io.mender.AuthenticationManager.conf</include>
  {same_as_root}
</busconfig>
"#,
            socket = socket.display(),
            support = support.display(),
        );
        let config_file = dir.path().join("system.conf");
        fs::write(&config_file, config).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_file.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.path().join("dbus-daemon.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("starting dbus-daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        Bus {
            dir,
            child,
            address,
        }
    }

    /// `busctl --address=... ARGS`, bounded.
    fn busctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("busctl");
        cmd.arg(format!("--address={}", self.address)).args(args);
        run_bounded(&mut cmd, Duration::from_secs(20))
    }

    fn busctl_ok(&self, args: &[&str]) -> String {
        let out = self.busctl(args);
        assert!(out.status.success(), "busctl {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn set_map(&self, map: &str) -> std::process::Output {
        self.busctl(&[
            "call",
            "io.mender.UpdateManager",
            "/io/mender/UpdateManager",
            "io.mender.Update1",
            "SetUpdateControlMap",
            "s",
            map,
        ])
    }

    /// A connection of the test's own (for what busctl cannot pass: a
    /// 1 MiB argument, a bounded wait for a signal).
    fn connect(&self) -> Channel {
        let mut c = Channel::open_private(&self.address).unwrap();
        c.register().unwrap();
        c
    }

    /// Waits until the daemon owns both names.
    pub(super) fn wait_for_names(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let out = self.busctl(&["list", "--acquired", "--no-legend"]);
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("io.mender.UpdateManager")
                && text.contains("io.mender.AuthenticationManager")
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device run by the daemon on the private bus: 8 MiB partitions, maps
/// that live 120 s.
pub(super) fn managed_on(server: &MenderServer, bus: &Bus) -> ManagedDevice {
    let d = ManagedDevice::options(server)
        .partition_size(8 << 20)
        .inventory_poll(60)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .build();
    d.dev
        .set_config("UpdateControlMapExpirationTimeSeconds", Value::from(120));
    d
}

/// [`managed_on`], its daemon started and owning both names on the bus.
fn running_on(server: &MenderServer, bus: &Bus) -> ManagedDevice {
    let mut d = managed_on(server, bus);
    d.start();
    assert!(
        bus.wait_for_names(Duration::from_secs(20)),
        "{}",
        d.log_tail()
    );
    d
}

/// `mender-rs control show` on the device without the seconds left (they
/// tick).
fn maps(d: &ManagedDevice) -> Value {
    let mut v: Value = serde_json::from_str(&d.dev.ok(&["control", "show"])).unwrap();
    for m in v.as_array_mut().unwrap() {
        m.as_object_mut().unwrap().remove("expires_in_seconds");
    }
    v
}

/// Sets `map` with `SetUpdateControlMap` over D-Bus, which must succeed;
/// returns busctl's answer and the maps in force then ([`maps`]).
fn set_map_ok(bus: &Bus, d: &ManagedDevice, map: &Value) -> (String, Value) {
    let out = bus.set_map(&map.to_string());
    assert!(out.status.success(), "{}", describe(&out));
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (answer, maps(d))
}

fn statuses_of(server: &MenderServer, dep: &str) -> Vec<String> {
    server
        .device_ids()
        .iter()
        .map(|d| server.statuses(d, dep))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

#[test]
fn start_update_set_over_dbus_pauses_then_continues() {
    let server = MenderServer::start();
    let bus = Bus::start();
    let mut d = running_on(&server, &bus);
    let intro = bus.busctl_ok(&[
        "introspect",
        "io.mender.UpdateManager",
        "/io/mender/UpdateManager",
    ]);
    assert!(intro.contains("SetUpdateControlMap"), "{intro}");
    let pause = json!({"id": MAP_ID, "priority": 1,
        "states": {"ArtifactInstall_Enter": {"action": "pause"}}});
    let (answer, maps) = set_map_ok(&bus, &d, &pause);
    // Half the 120 s lifetime, as `mender-rs control set` prints it.
    assert_eq!(answer, "i 60");
    assert_eq!(maps[0]["id"], MAP_ID);

    let dep = d.deploy_rootfs(&server, "release-dbus", 1 << 20);
    let paused = server.wait_until(Duration::from_secs(30), |s| {
        statuses_of(s, &dep)
            .iter()
            .any(|x| x == "pause_before_installing")
    });
    assert!(paused, "{}", d.log_tail());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.dev.env()["upgrade_available"], "0");
    assert_eq!(
        statuses_of(&server, &dep),
        ["downloading", "pause_before_installing"]
    );

    // "Start update": the application's map says continue, which removes
    // it (no state left after the defaults); the paused daemon is woken.
    let started = Instant::now();
    let go = json!({"id": MAP_ID, "priority": 1,
        "states": {"ArtifactInstall_Enter": {"action": "continue"}}});
    let (_, maps) = set_map_ok(&bus, &d, &go);
    assert_eq!(maps, json!([]));
    let installing = server.wait_until(Duration::from_secs(10), |s| {
        statuses_of(s, &dep).iter().any(|x| x == "installing")
    });
    assert!(installing, "{}", d.log_tail());
    // Woken, not found by the 60 s re-check of a pause.
    assert!(started.elapsed() < Duration::from_secs(10));
    let done = d.run_until(&server, Duration::from_secs(60), |server| {
        server
            .device_ids()
            .iter()
            .any(|id| server.deployment_status(id, &dep).as_deref() == Some("success"))
    });
    assert!(done, "{}", d.log_tail());
    let mut statuses = statuses_of(&server, &dep);
    statuses.dedup();
    assert_eq!(
        statuses,
        [
            "downloading",
            "pause_before_installing",
            "installing",
            "rebooting",
            "installing",
            "success"
        ]
    );
    assert_eq!(d.dev.show_artifact(), "release-dbus");
    d.stop();
    server.assert_no_violations();
}

#[test]
fn bad_maps_are_refused_over_dbus_and_change_nothing() {
    let server = MenderServer::start();
    let bus = Bus::start();
    let mut d = running_on(&server, &bus);
    let good = json!({"id": MAP_ID, "priority": 2,
        "states": {"ArtifactReboot_Enter": {"action": "pause"}}});
    let (_, before) = set_map_ok(&bus, &d, &good);
    assert_eq!(before.as_array().unwrap().len(), 1, "{before}");

    let cases = [
        (
            json!({"id": MAP_ID, "states": {"ArtifactDownload_Enter": {"action": "pause"}}}),
            "ArtifactDownload_Enter",
        ),
        (
            json!({"id": MAP_ID, "states": {"ArtifactInstall_Enter": {"action": "stop"}}}),
            "states.ArtifactInstall_Enter.action",
        ),
        (
            json!({"id": MAP_ID, "priority": "high", "states": {}}),
            "priority",
        ),
        (
            json!({"id": 7, "states": {"ArtifactInstall_Enter": {"action": "pause"}}}),
            "id",
        ),
        (
            json!({"id": MAP_ID, "states": {"ArtifactInstall_Enter": "pause"}}),
            "states.ArtifactInstall_Enter",
        ),
    ];
    for (map, field) in cases {
        let out = bus.set_map(&map.to_string());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{map} was accepted");
        assert!(err.contains(field), "{map}: {err}");
        assert_eq!(maps(&d), before, "{map} changed the maps");
    }
    let out = bus.set_map("{not json");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid JSON"),
        "{}",
        describe(&out)
    );

    // 1 MiB: more than a command line takes, so through a connection of
    // our own; the error name is Mender's.
    let channel = bus.connect();
    let huge = format!(
        r#"{{"id":"{MAP_ID}","states":{{}},"pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let call = Message::new_method_call(
        "io.mender.UpdateManager",
        "/io/mender/UpdateManager",
        "io.mender.Update1",
        "SetUpdateControlMap",
    )
    .unwrap()
    .append1(huge);
    let err = channel
        .send_with_reply_and_block(call, Duration::from_secs(20))
        .unwrap_err();
    assert_eq!(err.name(), Some("io.mender.Failed"));
    assert!(err.message().unwrap_or("").contains("too large"), "{err:?}");
    // Wrong argument type.
    let out = bus.busctl(&[
        "call",
        "io.mender.UpdateManager",
        "/io/mender/UpdateManager",
        "io.mender.Update1",
        "SetUpdateControlMap",
        "i",
        "5",
    ]);
    assert!(!out.status.success());
    assert_eq!(maps(&d), before);
    // The CLI refuses the same way.
    let file = d.dev.path("bad.json");
    fs::write(&file, cases_first_bad()).unwrap();
    let out = d.dev.run(&["control", "set", &file.display().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("states.ArtifactInstall_Enter.action"));
    assert_eq!(maps(&d), before);
    d.stop();
}

fn cases_first_bad() -> String {
    json!({"id": MAP_ID, "states": {"ArtifactInstall_Enter": {"action": "stop"}}}).to_string()
}

/// `busctl` prints `ss "TOKEN" "URL"`.
fn parse_ss(text: &str) -> (String, String) {
    let parts: Vec<&str> = text.trim().split('"').collect();
    assert!(
        parts.len() >= 4 && parts[0].trim() == "ss",
        "unexpected answer {text:?}"
    );
    (parts[1].to_string(), parts[3].to_string())
}

/// Waits (bounded) for the next `JwtTokenStateChange` on `channel`.
fn next_token_signal(channel: &Channel, timeout: Duration) -> Option<(String, String)> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let msg = channel
            .blocking_pop_message(Duration::from_millis(200))
            .unwrap();
        if let Some(m) = msg
            && m.msg_type() == MessageType::Signal
            && m.member().as_deref() == Some("JwtTokenStateChange")
        {
            let (t, u) = m.read2::<&str, &str>().unwrap();
            return Some((t.to_string(), u.to_string()));
        }
    }
    None
}

#[test]
fn the_jwt_over_dbus_and_fetch_with_its_signal() {
    let server = MenderServer::start();
    let bus = Bus::start();
    // Subscribed before the daemon starts: the first authentication is
    // announced too.
    let watcher = bus.connect();
    let add_match = Message::new_method_call(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "AddMatch",
    )
    .unwrap()
    .append1(
        "type='signal',interface='io.mender.Authentication1',member='JwtTokenStateChange',path='/io/mender/AuthenticationManager'",
    );
    watcher
        .send_with_reply_and_block(add_match, Duration::from_secs(5))
        .unwrap();
    let mut d = managed_on(&server, &bus);
    d.start();
    let first = next_token_signal(&watcher, Duration::from_secs(30));
    let (token, url) = first.unwrap_or_else(|| panic!("no signal:\n{}", d.log_tail()));
    assert!(!token.is_empty());
    // The add-on forwarder's URL, as Mender's, not the server's.
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let get = || {
        parse_ss(&bus.busctl_ok(&[
            "call",
            "io.mender.AuthenticationManager",
            "/io/mender/AuthenticationManager",
            "io.mender.Authentication1",
            "GetJwtToken",
        ]))
    };
    let (got, got_url) = get();
    assert_eq!(got_url, url);
    // The forwarder's thread starts with the first add-on connection.
    let pid = d.pid();
    let threads = || {
        let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|t| fs::read_to_string(t.unwrap().path().join("comm")).unwrap_or_default())
            .map(|n| n.trim().to_string())
            .collect();
        names.sort();
        names
    };
    assert!(
        !threads().contains(&"forwarder".to_string()),
        "{:?}",
        threads()
    );
    // The token is the one the server issued: the server takes it, through
    // the forwarder.
    let device = server.device_ids()[0].clone();
    let next = || {
        ureq::get(format!(
            "{got_url}/api/devices/v1/deployments/device/deployments/next?artifact_name=x&device_type={DEVICE_TYPE}"
        ))
        .header("Authorization", &format!("Bearer {got}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(next(), 204);
    // One thread for all connections: four more held open change nothing.
    let before = threads();
    assert_eq!(
        before.iter().filter(|n| *n == "forwarder").count(),
        1,
        "{before:?}"
    );
    let held: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(&got_url["http://".len()..]).unwrap())
        .collect();
    assert_eq!(next(), 204);
    assert_eq!(threads(), before);
    drop(held);

    // FetchJwtToken: the daemon authenticates again and announces it.
    let auths = server.auth_requests(&device);
    let out = bus.busctl_ok(&[
        "call",
        "io.mender.AuthenticationManager",
        "/io/mender/AuthenticationManager",
        "io.mender.Authentication1",
        "FetchJwtToken",
    ]);
    assert_eq!(out.trim(), "b true");
    let signal = next_token_signal(&watcher, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no signal after FetchJwtToken:\n{}", d.log_tail()));
    assert!(server.auth_requests(&device) > auths, "{}", d.log_tail());
    assert!(!signal.0.is_empty());
    assert_eq!(signal.1, url);
    assert_eq!(get(), signal);

    // A device the server stops accepting: the fetch fails, the signal
    // says so with empty strings, and so does GetJwtToken.
    server.reject_device(&device);
    bus.busctl_ok(&[
        "call",
        "io.mender.AuthenticationManager",
        "/io/mender/AuthenticationManager",
        "io.mender.Authentication1",
        "FetchJwtToken",
    ]);
    let signal = next_token_signal(&watcher, Duration::from_secs(20));
    assert_eq!(signal, Some((String::new(), String::new())));
    assert_eq!(get(), (String::new(), String::new()));
    d.stop();
}

#[test]
fn the_policy_files_let_only_root_call() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to call as another user");
        return;
    }
    let server = MenderServer::start();
    let bus = Bus::start();
    // The socket's directory, open to the unprivileged caller.
    let dir = bus.dir.path();
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut d = running_on(&server, &bus);
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
            .arg(format!("--address={}", bus.address))
            .args(args);
        run_bounded(&mut cmd, Duration::from_secs(20))
    };
    let map = json!({"id": MAP_ID, "states": {"ArtifactInstall_Enter": {"action": "pause"}}});
    let map = map.to_string();
    for args in [
        &[
            "call",
            "io.mender.UpdateManager",
            "/io/mender/UpdateManager",
            "io.mender.Update1",
            "SetUpdateControlMap",
            "s",
            &map,
        ][..],
        &[
            "call",
            "io.mender.AuthenticationManager",
            "/io/mender/AuthenticationManager",
            "io.mender.Authentication1",
            "GetJwtToken",
        ][..],
    ] {
        let out = as_nobody(args);
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("access denied") || err.contains("rejected"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    assert_eq!(maps(&d), json!([]));
    // Root may.
    assert!(bus.set_map(&map).status.success());
    d.stop();
}
