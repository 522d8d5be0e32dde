//! Identity and inventory scripts run for real (sh scripts in a temporary
//! directory), and the scripts shipped in `support/` run on this machine.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mender_rs::identity::{
    AttributeValue, IdentityError, collect_inventory, device_identity, identity_json,
    parse_attributes, run_attribute_script,
};

const TIMEOUT: Duration = Duration::from_secs(20);

fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn single(s: &str) -> AttributeValue {
    AttributeValue::Single(s.to_owned())
}

fn list(v: &[&str]) -> AttributeValue {
    AttributeValue::List(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn identity_from_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let id = script(
        dir.path(),
        "mender-device-identity",
        "echo mac=52:54:00:12:34:56\necho\necho 'serial=AB=12'\necho cpu=1 >&2",
        0o755,
    );
    let attrs = device_identity(&id).unwrap();
    assert_eq!(attrs["mac"], single("52:54:00:12:34:56"));
    assert_eq!(attrs["serial"], single("AB=12"));
    assert_eq!(attrs.len(), 2);
    assert_eq!(
        identity_json(&attrs),
        r#"{"mac":"52:54:00:12:34:56","serial":"AB=12"}"#
    );
}

#[test]
fn identity_lists_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let id = script(
        dir.path(),
        "id",
        "echo mac=aa\necho b=1\necho mac=bb\necho 'q=say \"hi\"'",
        0o755,
    );
    let attrs = device_identity(&id).unwrap();
    assert_eq!(attrs["mac"], list(&["aa", "bb"]));
    assert_eq!(
        identity_json(&attrs),
        r#"{"b":"1","mac":["aa","bb"],"q":"say \"hi\""}"#
    );
    // The JSON is what goes into id_data: it must parse back to the same.
    let back: serde_json::Value = serde_json::from_str(&identity_json(&attrs)).unwrap();
    assert_eq!(back["mac"][1], "bb");
}

#[test]
fn identity_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let empty = script(d, "empty", "echo; echo", 0o755);
    let err = device_identity(&empty).unwrap_err();
    assert!(matches!(err, IdentityError::NoIdentity { .. }), "{err}");

    let bad = script(d, "bad", "echo mac=1\necho oops", 0o755);
    let err = device_identity(&bad).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains(bad.to_str().unwrap()),
        "{err}"
    );

    let failing = script(d, "failing", "echo mac=1\nexit 3", 0o755);
    let err = device_identity(&failing).unwrap_err().to_string();
    assert!(
        err.contains("exit code 3") && err.contains("failing"),
        "{err}"
    );

    let missing = d.join("missing");
    let err = device_identity(&missing).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");

    let not_exec = script(d, "not-exec", "echo mac=1", 0o644);
    assert!(device_identity(&not_exec).is_err());

    let killed = script(d, "killed", "echo mac=1\nkill -9 $$", 0o755);
    let err = device_identity(&killed).unwrap_err().to_string();
    assert!(err.contains("signal 9"), "{err}");
}

#[test]
fn timeout_kills_the_script_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("survived");
    let slow = script(
        dir.path(),
        "slow",
        &format!(
            "echo mac=1\n(sleep 3; touch '{}') &\nsleep 30",
            marker.display()
        ),
        0o755,
    );
    let start = Instant::now();
    let err = run_attribute_script(&slow, Duration::from_millis(300)).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, IdentityError::TimedOut { .. }), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The background child was in the same process group: killed too.
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        !marker.exists(),
        "a child of the script survived the timeout"
    );
}

#[test]
fn background_process_holding_stdout_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "bg", "echo mac=1\nsleep 20 &\nexit 0", 0o755);
    let start = Instant::now();
    let result = run_attribute_script(&s, TIMEOUT);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(
        matches!(result, Err(IdentityError::OutputHeldOpen { .. })),
        "{result:?}"
    );
}

#[test]
fn output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    // About 2 MiB of valid lines.
    let s = script(
        dir.path(),
        "big",
        "i=0; line=k=$(printf '%01000d' 0); while [ $i -lt 2100 ]; do echo \"$line\"; i=$((i+1)); done",
        0o755,
    );
    let err = run_attribute_script(&s, TIMEOUT).unwrap_err();
    assert!(matches!(err, IdentityError::TooMuchOutput { .. }), "{err}");
}

#[test]
fn inventory_merges_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    script(d, "mender-inventory-b", "echo net=b1\necho shared=2", 0o755);
    script(
        d,
        "mender-inventory-a",
        "echo net=a1\necho net=a2\necho shared=1",
        0o755,
    );
    script(d, "mender-inventory-c-fails", "echo lost=1\nexit 1", 0o755);
    script(
        d,
        "mender-inventory-d-garbage",
        "echo lost=2\necho garbage",
        0o755,
    );
    script(d, "mender-inventory-e-not-executable", "echo lost=3", 0o644);
    script(d, "other-prefix", "echo lost=4", 0o755);
    std::fs::create_dir(d.join("mender-inventory-dir")).unwrap();
    script(d, "mender-inventory-f", "echo last=1", 0o700);

    let attrs = collect_inventory(d, TIMEOUT);
    assert_eq!(attrs["net"], list(&["a1", "a2", "b1"]));
    assert_eq!(attrs["shared"], list(&["1", "2"]));
    assert_eq!(attrs["last"], single("1"));
    assert!(!attrs.contains_key("lost"), "{attrs:?}");
    assert_eq!(attrs.len(), 3);
    // Inventory values serialise as strings or arrays of strings.
    let json = serde_json::to_string(&attrs).unwrap();
    assert_eq!(
        json,
        r#"{"last":"1","net":["a1","a2","b1"],"shared":["1","2"]}"#
    );
}

#[test]
fn inventory_missing_dir_and_slow_script() {
    let dir = tempfile::tempdir().unwrap();
    assert!(collect_inventory(&dir.path().join("absent"), TIMEOUT).is_empty());
    script(
        dir.path(),
        "mender-inventory-slow",
        "echo a=1; sleep 30",
        0o755,
    );
    script(dir.path(), "mender-inventory-z", "echo z=1", 0o755);
    let start = Instant::now();
    let attrs = collect_inventory(dir.path(), Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(attrs.len(), 1);
    assert_eq!(attrs["z"], single("1"));
}

#[test]
fn parse_rules() {
    let attrs = parse_attributes("a=1\r\n\n   \nb= x \n").unwrap();
    assert_eq!(attrs["a"], single("1"));
    assert_eq!(attrs["b"], single(" x "));
    let err = parse_attributes("a=1\nb\n").unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
}

fn support() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support")
}

#[test]
fn shipped_identity_script() {
    let id = support().join("mender-device-identity");
    let has_ethernet = std::fs::read_dir("/sys/class/net").is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| std::fs::read_to_string(e.path().join("type")).is_ok_and(|t| t.trim() == "1"))
    });
    match device_identity(&id) {
        Ok(attrs) => {
            assert_eq!(attrs.len(), 1, "{attrs:?}");
            let AttributeValue::Single(mac) = &attrs["mac"] else {
                panic!("{attrs:?}")
            };
            let parts: Vec<&str> = mac.split(':').collect();
            assert_eq!(parts.len(), 6, "{mac}");
            assert!(
                parts
                    .iter()
                    .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
            );
            // Stable: the same answer twice.
            assert_eq!(device_identity(&id).unwrap(), attrs);
        }
        Err(e) => assert!(
            !has_ethernet,
            "no identity although there are Ethernet interfaces: {e}"
        ),
    }
}

#[test]
fn shipped_identity_script_prefers_hardware_and_lowest_index() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path();
    let iface = |name: &str, kind: &str, index: &str, mac: &str, hw: bool| {
        let d = net.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
        std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        if hw {
            std::fs::create_dir(d.join("device")).unwrap();
        }
    };
    iface("lo", "772", "1", "00:00:00:00:00:00", false);
    iface("virt0", "1", "2", "0a:00:00:00:00:02", false);
    iface("eth1", "1", "12", "0a:00:00:00:00:12", true);
    iface("eth0", "1", "9", "0a:00:00:00:00:09", true);
    iface("br0", "1", "3", "0a:00:00:00:00:03", false);
    std::fs::create_dir(net.join("br0/bridge")).unwrap();
    let run = || {
        std::process::Command::new(support().join("mender-device-identity"))
            .env("MENDER_SYSFS_NET", net)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mac=0a:00:00:00:00:09\n"
    );
    // Without hardware interfaces the lowest-index virtual one is used.
    std::fs::remove_dir_all(net.join("eth0")).unwrap();
    std::fs::remove_dir_all(net.join("eth1")).unwrap();
    let out = run();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mac=0a:00:00:00:00:02\n"
    );
    // Nothing usable: exit 1 and a message.
    std::fs::remove_dir_all(net.join("virt0")).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty());
}

#[test]
fn shipped_inventory_scripts() {
    let inventory = support().join("inventory");
    let modules = tempfile::tempdir().unwrap();
    script(modules.path(), "rootfs-image", "exit 0", 0o755);
    script(modules.path(), "single-file", "exit 0", 0o755);
    script(modules.path(), "README", "", 0o644);
    // The update-modules script reads this from its environment.
    // SAFETY: no other test of this binary (tests/component) writes the
    // environment, and the others read it only through std, which takes
    // the same lock as this write.
    unsafe { std::env::set_var("MENDER_MODULES_DIR", modules.path()) };

    for entry in std::fs::read_dir(&inventory).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", path.display());
        run_attribute_script(&path, TIMEOUT).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    let attrs = collect_inventory(&inventory, TIMEOUT);
    eprintln!("{}", serde_json::to_string_pretty(&attrs).unwrap());
    let one = |k: &str| match attrs.get(k) {
        Some(AttributeValue::Single(v)) => v.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert!(!one("hostname").is_empty());
    assert!(one("kernel").starts_with("Linux "));
    assert!(one("mem_total_kB").parse::<u64>().unwrap() > 0);
    assert!(!one("os").is_empty());
    assert!(!one("rootfs_type").is_empty());
    if std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("model name")) {
        assert!(!one("cpu_model").is_empty());
    }
    assert_eq!(
        attrs["update_modules"],
        list(&["rootfs-image", "single-file"])
    );
    // Every network attribute names an interface; addresses carry a prefix.
    for (key, value) in &attrs {
        if let Some(rest) = key.strip_prefix("ipv4_").or(key.strip_prefix("ipv6_")) {
            assert!(!rest.is_empty() && rest != "lo", "{key}");
            for v in value.values() {
                assert!(v.contains('/'), "{key}={v}");
            }
        }
    }
    assert!(!attrs.contains_key("mac_lo"));
}

#[test]
fn script_closing_its_output_early_is_still_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "closes",
        "echo mac=1\nexec >&- 2>&-\nsleep 1\nexit 0",
        0o755,
    );
    let start = Instant::now();
    let attrs = run_attribute_script(&s, TIMEOUT).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(attrs["mac"], single("1"));
}
