//! `mender-rs control set|show|clear` run as a separate process, as a shell
//! script or a test harness uses it: the round trip, refusals that leave the
//! maps as they were, the file across "reboots" (another boot id, the
//! daemon's start), and concurrent writers losing nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mender_rs::config::{Config, ConfigPaths};
use mender_rs::control_map::{Action, BootTime, ControlMapSet, MAPS_FILE, StateKey};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mender-rs");
const A: &str = "01234567-89ab-cdef-0123-456789abcdef";
const B: &str = "11111111-2222-3333-4444-555555555555";
const C: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// A device: a data directory and a configuration file.
struct Device {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
}

impl Device {
    fn new() -> Device {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        Device {
            _dir: dir,
            root,
            data,
        }
    }

    /// Writes a configuration file and returns its path.
    fn conf(&self, name: &str, body: Value) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        path
    }

    fn command(&self, conf: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(conf)
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, conf: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Output {
        let mut cmd = self.command(conf, args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            // The command stops reading after 64 KiB: a broken pipe is expected.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            });
        }
        wait(child)
    }

    fn set_text(&self, conf: &Path, text: &str) -> Output {
        self.run(
            conf,
            &["control", "set", "-"],
            Some(text.as_bytes().to_vec()),
        )
    }

    /// `control set` that must succeed; returns the refresh timeout.
    fn set_ok(&self, conf: &Path, map: Value) -> i64 {
        let out = self.set_text(conf, &map.to_string());
        assert!(out.status.success(), "set {map}: {}", text(&out.stderr));
        text(&out.stdout).trim().parse().unwrap()
    }

    fn show(&self, conf: &Path) -> Vec<Value> {
        let out = self.run(conf, &["control", "show"], None);
        assert!(out.status.success(), "show: {}", text(&out.stderr));
        match serde_json::from_slice(&out.stdout).unwrap() {
            Value::Array(list) => list,
            other => panic!("show printed {other}"),
        }
    }

    fn file(&self) -> PathBuf {
        self.data.join(MAPS_FILE)
    }

    fn config(&self, conf: &Path) -> Config {
        Config::load(&ConfigPaths {
            main: conf.to_path_buf(),
            main_explicit: true,
            fallback: self.root.join("no-fallback.conf"),
            fallback_explicit: false,
            data_dir: self.data.clone(),
        })
        .unwrap()
    }
}

/// Waits for a child, at most a minute.
fn wait(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mender-rs control did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn pause_at(id: &str, priority: i64, state: &str) -> Value {
    json!({"id": id, "priority": priority, "states": {state: {"action": "pause"}}})
}

/// (id, priority) of the maps `show` printed.
fn keys(list: &[Value]) -> Vec<(String, i64)> {
    list.iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn set_show_clear_round_trip() {
    let dev = Device::new();
    let conf = dev.conf("mender.conf", json!({}));
    assert_eq!(dev.show(&conf), Vec::<Value>::new(), "no file yet");
    // Default expiration: twice the 1800 s poll interval; the answer is half.
    assert_eq!(
        dev.set_ok(&conf, pause_at(A, 0, "ArtifactInstall_Enter")),
        1800
    );
    let conf = dev.conf(
        "mender.conf",
        json!({"UpdateControlMapExpirationTimeSeconds": 120}),
    );
    // Same id, another priority: a second map; field names in any case.
    let out = dev.set_text(
        &conf,
        &format!(
            r#"{{"ID":"{A}","Priority":-3,"States":{{"ArtifactCommit_Enter":{{"Action":"fail"}}}}}}"#
        ),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "60\n");
    // From a file.
    let file = dev.root.join("map.json");
    std::fs::write(
        &file,
        json!({"id": B, "priority": 10, "states": {
            "ArtifactReboot_Enter": {"action": "continue", "on_action_executed": "pause"},
            "ArtifactInstall_Enter": {"action": "force_continue"}}})
        .to_string(),
    )
    .unwrap();
    let out = dev.run(&conf, &["control", "set", file.to_str().unwrap()], None);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "60\n".into())
    );

    let shown = dev.show(&conf);
    assert_eq!(
        keys(&shown),
        [(B.into(), 10), (A.into(), 0), (A.into(), -3)],
        "highest priority first"
    );
    assert_eq!(
        shown[0]["states"],
        json!({
            "ArtifactInstall_Enter": {"action": "force_continue", "on_map_expire": "force_continue", "on_action_executed": "force_continue"},
            "ArtifactReboot_Enter": {"action": "continue", "on_map_expire": "continue", "on_action_executed": "pause"}
        })
    );
    assert_eq!(
        shown[1]["states"]["ArtifactInstall_Enter"],
        json!({"action": "pause", "on_map_expire": "fail", "on_action_executed": "pause"})
    );
    assert_eq!(shown[1]["source"], "device");
    let left = shown[1]["expires_in_seconds"].as_u64().unwrap();
    assert!(left > 3500 && left <= 3600, "{left}");
    assert!(shown[0]["expires_in_seconds"].as_u64().unwrap() <= 120);

    // A map that says nothing removes its (id, priority), as over D-Bus.
    let out = dev.set_text(
        &conf,
        &json!({"id": A, "priority": 0, "states": {"ArtifactInstall_Enter": {"action": "continue"}}})
            .to_string(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("removed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(keys(&dev.show(&conf)), [(B.into(), 10), (A.into(), -3)]);

    // clear: one priority, then every priority of an id.
    let out = dev.run(&conf, &["control", "clear", B, "--priority", "9"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("no update control map with id"));
    assert_eq!(dev.show(&conf).len(), 2);
    let out = dev.run(&conf, &["control", "clear", B, "--priority", "10"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    dev.set_ok(&conf, pause_at(A, 7, "ArtifactReboot_Enter"));
    let out = dev.run(&conf, &["control", "clear", A], None);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(0), String::new())
    );
    assert_eq!(dev.show(&conf), Vec::<Value>::new());
    // Bad arguments to clear.
    for (args, want) in [
        (
            vec!["control", "clear", "nope"],
            "mender-rs: error: id: must be a UUID (8-4-4-4-12 hex digits), found \"nope\"\n",
        ),
        (
            vec!["control", "clear", A, "--priority", "-11"],
            "mender-rs: error: priority: -11 is out of range [-10, 10]\n",
        ),
    ] {
        let out = dev.run(&conf, &args, None);
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (Some(1), want.into())
        );
    }
}

#[test]
fn bad_maps_are_refused_and_change_nothing() {
    let dev = Device::new();
    let conf = dev.conf("mender.conf", json!({}));
    dev.set_ok(&conf, pause_at(A, 0, "ArtifactInstall_Enter"));
    let before = std::fs::read(dev.file()).unwrap();
    let shown = dev.show(&conf);

    let with_states = |states: Value| json!({"id": B, "states": states}).to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            with_states(json!({"ArtifactDownload_Enter": {"action": "pause"}})),
            "states.ArtifactDownload_Enter: unknown state (expected ArtifactInstall_Enter, ArtifactReboot_Enter or ArtifactCommit_Enter)",
        ),
        (
            with_states(json!({"ArtifactReboot_Enter": {"action": "stop"}})),
            "states.ArtifactReboot_Enter.action: unknown action \"stop\" (expected continue, force_continue, pause or fail)",
        ),
        (
            with_states(json!({"ArtifactCommit_Enter": {"on_map_expire": "pause"}})),
            "states.ArtifactCommit_Enter.on_map_expire: \"pause\" is not allowed here (expected continue, force_continue or fail)",
        ),
        (
            with_states(json!({"ArtifactCommit_Enter": {"action": 1}})),
            "states.ArtifactCommit_Enter.action: expected a string, found 1",
        ),
        (
            with_states(json!({"ArtifactCommit_Enter": "pause"})),
            "states.ArtifactCommit_Enter: expected an object, found \"pause\"",
        ),
        (
            with_states(json!({"ArtifactCommit_Enter": {"action": "pause", "extra": true}})),
            "states.ArtifactCommit_Enter.extra: unknown field (expected action, on_map_expire or on_action_executed)",
        ),
        (with_states(json!(["pause"])), "states: expected an object, found [\"pause\"]"),
        (
            json!({"id": B, "priority": "1"}).to_string(),
            "priority: expected an integer, found \"1\"",
        ),
        (
            json!({"id": B, "priority": 11, "states": {"ArtifactCommit_Enter": {"action": "pause"}}}).to_string(),
            "priority: 11 is out of range [-10, 10]",
        ),
        (json!({"id": 7}).to_string(), "id: expected a string, found 7"),
        (
            json!({"id": "not-a-uuid", "states": {}}).to_string(),
            "id: must be a UUID (8-4-4-4-12 hex digits), found \"not-a-uuid\"",
        ),
        (
            json!({"id": B, "owner": "me"}).to_string(),
            "owner: unknown field (expected id, priority or states)",
        ),
        ("null".into(), "update control map: expected a JSON object, found null"),
        (
            "{\"id\":".into(),
            "update control map: invalid JSON: EOF while parsing a value at line 1 column 6",
        ),
    ];
    for (input, want) in &cases {
        let out = dev.set_text(&conf, input);
        assert_eq!(out.status.code(), Some(1), "{input}");
        assert_eq!(
            text(&out.stderr),
            format!("mender-rs: error: standard input: {want}\n"),
            "{input}"
        );
        assert!(out.stdout.is_empty(), "{input}");
        assert_eq!(std::fs::read(dev.file()).unwrap(), before, "{input}");
    }

    // 1 MiB, on standard input and in a file: refused after 64 KiB read.
    let mut huge = format!(r#"{{"id":"{B}","states":{{}},"pad":""#).into_bytes();
    huge.resize(1 << 20, b' ');
    let started = Instant::now();
    let out = dev.run(&conf, &["control", "set", "-"], Some(huge.clone()));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "mender-rs: error: standard input: update control map: too large (more than 65536 bytes)\n"
    );
    let file = dev.root.join("huge.json");
    std::fs::write(&file, &huge).unwrap();
    let out = dev.run(&conf, &["control", "set", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "mender-rs: error: {}: update control map: too large (more than 65536 bytes)\n",
            file.display()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // A missing file.
    let out = dev.run(&conf, &["control", "set", "/nonexistent/map.json"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("mender-rs: error: /nonexistent/map.json: "));

    assert_eq!(std::fs::read(dev.file()).unwrap(), before);
    // Only the seconds left may have moved on.
    let strip = |mut list: Vec<Value>| {
        for m in &mut list {
            m.as_object_mut().unwrap().remove("expires_in_seconds");
        }
        list
    };
    assert_eq!(strip(dev.show(&conf)), strip(shown));
}

#[test]
fn maps_survive_a_reboot_with_the_boot_expiry() {
    let dev = Device::new();
    let long = dev.conf(
        "long.conf",
        json!({"UpdateControlMapExpirationTimeSeconds": 3600,
               "UpdateControlMapBootExpirationTimeSeconds": 2}),
    );
    let short = dev.conf(
        "short.conf",
        json!({"UpdateControlMapExpirationTimeSeconds": 1,
               "UpdateControlMapBootExpirationTimeSeconds": 2}),
    );
    dev.set_ok(&long, pause_at(A, 0, "ArtifactInstall_Enter"));
    assert_eq!(
        dev.set_ok(&short, pause_at(B, 0, "ArtifactCommit_Enter")),
        0
    );
    std::thread::sleep(Duration::from_millis(1100));
    // B expired; the next write records it as expired.
    dev.set_ok(&long, pause_at(C, 1, "ArtifactReboot_Enter"));
    assert_eq!(keys(&dev.show(&long)), [(C.into(), 1), (A.into(), 0)]);

    // "Reboot": the file now comes from an earlier boot.
    let mut doc: Value = serde_json::from_slice(&std::fs::read(dev.file()).unwrap()).unwrap();
    let this_boot = doc["boot_id"].clone();
    doc["boot_id"] = "an-earlier-boot".into();
    std::fs::write(dev.file(), doc.to_string()).unwrap();

    // The maps are back, each alive for the boot expiration (2 s), not for
    // the rest of its hour; the expired one stays expired.
    let shown = dev.show(&long);
    assert_eq!(keys(&shown), [(C.into(), 1), (A.into(), 0)]);
    for m in &shown {
        assert!(m["expires_in_seconds"].as_u64().unwrap() <= 2, "{m}");
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(dev.file()).unwrap()).unwrap();
    assert_eq!(doc["boot_id"], this_boot, "the boot rule is applied once");
    let stored: Vec<(&str, bool)> = doc["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["expired"].as_bool().unwrap()))
        .collect();
    assert!(stored.contains(&(B, true)), "{stored:?}");

    // Not refreshed within the boot expiration: they expire (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dev.show(&long).is_empty() {
        assert!(Instant::now() < deadline, "maps still shown after 15 s");
        std::thread::sleep(Duration::from_millis(200));
    }

    // An application sets its map again after the reboot: it survives.
    dev.set_ok(&long, pause_at(A, 0, "ArtifactInstall_Enter"));
    // The daemon's start (another process than the CLI that set the map):
    // the boot expiration applies there too, and an expired pause fails.
    let config = dev.config(&long);
    let now = BootTime::now();
    let maps = ControlMapSet::load_at(&config, now).unwrap();
    let a = maps.maps().iter().find(|m| m.map.id == A).unwrap();
    assert_eq!(a.expires, now.after(Duration::from_secs(2)));
    let state = StateKey::ArtifactInstallEnter;
    assert_eq!(maps.decision(state, now).action, Action::Pause);
    let later = now.after(Duration::from_secs(2));
    assert_eq!(maps.decision(state, later).action, Action::Fail);
    // ... which the CLI sees too (the daemon wrote the new lifetime back).
    let left = dev.show(&long)[0]["expires_in_seconds"].as_u64().unwrap();
    assert!(left <= 2, "{left}");
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dev = Device::new();
    let conf = dev.conf("mender.conf", json!({}));
    let id = |round: usize, i: usize| format!("00000000-0000-0000-{round:04x}-{i:012x}");
    const ROUNDS: usize = 3;
    const WRITERS: usize = 8;
    for round in 0..ROUNDS {
        let mut children = Vec::new();
        for i in 0..WRITERS {
            let map = json!({"id": id(round, i), "priority": (i % 3) as i64 - 1,
                             "states": {"ArtifactInstall_Enter": {"action": "pause"}}});
            let mut cmd = dev.command(&conf, &["control", "set", "-"]);
            let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
            // Small: fits in the pipe; dropping the pipe ends the input.
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(map.to_string().as_bytes()).unwrap();
            drop(pipe);
            children.push(child);
        }
        // Meanwhile clear half of the previous round's maps.
        if round > 0 {
            for i in (0..WRITERS).step_by(2) {
                let args = ["control", "clear", &id(round - 1, i)];
                children.push(dev.command(&conf, &args).spawn().unwrap());
            }
        }
        for child in children {
            let out = wait(child);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    }
    let mut want: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..WRITERS {
            if round + 1 == ROUNDS || i % 2 == 1 {
                want.push(id(round, i));
            }
        }
    }
    let mut got: Vec<String> = keys(&dev.show(&conf))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
