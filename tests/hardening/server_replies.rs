//! Hardening: what a hostile or broken Mender server answers (issue #13
//! findings 2 and 3 and their siblings). The daemon runs against the fake
//! server of tests/support/mender_server/, whose `replace_next` /
//! `replace_always` swap any answer for a hostile one. Each case checks
//! that the daemon refuses with a log line saying why, installs nothing it
//! should not, and keeps working once the server behaves again.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::device::*;
use crate::support::managed::ManagedDevice;
use crate::support::mender_server::*;

/// Nothing was installed: the boot environment and the provides are
/// those of a fresh device and the inactive partition is untouched.
fn assert_untouched(d: &ManagedDevice, inactive_before: &str) {
    let env = d.dev.env();
    assert_eq!(env["mender_boot_part"], "2", "{}", d.log_tail());
    assert_eq!(env["upgrade_available"], "0", "{}", d.log_tail());
    assert_eq!(d.dev.partition_sha256(3), inactive_before);
    assert_ne!(d.dev.show_artifact(), "evil-9");
}

/// A rootfs-image artifact named `name` for the `device_types` given.
fn rootfs_artifact(dev: &SimDevice, name: &str, device_types: &[&str]) -> PathBuf {
    let dir = dev.new_build_dir(name);
    let payload = dir.join("rootfs.img");
    fs::write(&payload, random_bytes(256 << 10)).unwrap();
    let out_path = dir.join("artifact.mender");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["artifact", "write", "rootfs-image", "-n", name]);
    for t in device_types {
        cmd.args(["-t", t]);
    }
    cmd.arg("-f").arg(&payload).arg("-o").arg(&out_path);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe(&out));
    out_path
}

/// A device that is polled until its inventory reached the server.
fn inventory_arrived(dev: &ManagedDevice) -> impl Fn(&MenderServer) -> bool + use<> {
    let mac = dev.mac.clone();
    move |s: &MenderServer| {
        s.device_with_identity("mac", &mac)
            .and_then(|d| s.device(&d))
            .is_some_and(|d| d.inventory_submissions > 0)
    }
}

fn jwt_reply(body: impl Into<Vec<u8>>) -> HostileReply {
    HostileReply::bytes(200, "application/jwt", body)
}

fn json_reply(status: u16, body: &Value) -> HostileReply {
    HostileReply::bytes(status, "application/json", body.to_string())
}

// ---------------------------------------------------------------------------
// Finding 2: the artifact must be the one the deployment announced

#[test]
fn a_swapped_artifact_name_fails_before_any_payload_byte() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let evil = rootfs_artifact(&d.dev, "evil-9", &[DEVICE_TYPE]);
    let inactive = d.dev.partition_sha256(3);
    let dep = server.add_deployment(&evil, "adv-2", &[DEVICE_TYPE]);
    let id = d.run_to_status(&server, &dep, 90, "failure");
    let logs = server.logs(&id, &dep);
    assert!(
        logs.iter()
            .any(|l| l.message.contains("'evil-9'") && l.message.contains("'adv-2'")),
        "{logs:#?}"
    );
    assert_untouched(&d, &inactive);
    assert!(!d.log_text().contains("installing artifact 'evil-9'"));
    server.assert_no_violations();
}

#[test]
fn an_artifact_not_for_this_device_fails_naming_both_type_lists() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    // Announced for this device (and another), built for another type only.
    let other = rootfs_artifact(&d.dev, "adv-3", &["other-board"]);
    let inactive = d.dev.partition_sha256(3);
    let dep = server.add_deployment(&other, "adv-3", &[DEVICE_TYPE, "other-board"]);
    let id = d.run_to_status(&server, &dep, 90, "failure");
    let logs = server.logs(&id, &dep);
    assert!(
        logs.iter().any(|l| l.message.contains("[other-board]")
            && l.message.contains(&format!("[{DEVICE_TYPE}, other-board]"))),
        "{logs:#?}"
    );
    assert_untouched(&d, &inactive);
    server.assert_no_violations();
}

#[test]
fn the_announced_artifact_still_installs() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let good = rootfs_artifact(&d.dev, "adv-4", &["other-board", DEVICE_TYPE]);
    let dep = server.add_deployment(&good, "adv-4", &[DEVICE_TYPE]);
    d.run_to_status(&server, &dep, 120, "success");
    assert_eq!(d.dev.show_artifact(), "adv-4");
    server.assert_no_violations();
}

// ---------------------------------------------------------------------------
// Finding 3: the authentication reply

#[test]
fn a_ten_gib_auth_reply_is_refused_and_the_daemon_recovers() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let huge = HostileReply::new(
        200,
        HostileBody::Filler {
            byte: b'A',
            len: 10 << 30,
        },
    )
    .header("Content-Type", "application/jwt");
    server.replace_next(Endpoint::Auth, huge, 1);
    let ok = d.run_until(&server, Duration::from_secs(60), inventory_arrived(&d));
    let text = d.log_text();
    assert!(ok, "never recovered:\n{}", d.log_tail());
    assert!(
        text.contains("the token is longer than"),
        "no reason logged:\n{}",
        d.log_tail()
    );
    assert!(!text.contains("AAAAAAAAAAAAAAAA"), "the body was logged");
    assert!(!text.contains("output too small"));
    // The body was not read: at most the cap plus what sockets buffer.
    let sent: u64 = server
        .requests_to(Endpoint::Auth)
        .iter()
        .map(|r| r.bytes_sent)
        .sum();
    assert!(sent < 64 << 20, "{sent} bytes of the auth reply went out");
}

#[test]
fn auth_replies_that_are_not_tokens_are_refused() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("two parts", b"aGVhZGVy.cGF5bG9hZA".to_vec()),
        ("control character", b"aGVh\x01ZGVy.cGF5.c2ln".to_vec()),
        ("header injection", b"aGVh.cGF5.c2ln\r\nX-Evil: 1".to_vec()),
        ("non-ASCII", "aGVh.cGF5.c2lné".as_bytes().to_vec()),
        ("empty part", b"aGVh..c2ln".to_vec()),
        ("17 KiB", {
            let mut t = vec![b'a'; 17 << 10];
            t[100] = b'.';
            t[200] = b'.';
            t
        }),
    ];
    for (_, body) in &bad {
        server.replace_next(Endpoint::Auth, jwt_reply(body.clone()), 1);
    }
    let ok = d.run_until(&server, Duration::from_secs(90), inventory_arrived(&d));
    assert!(ok, "never recovered:\n{}", d.log_tail());
    let text = d.log_text();
    let refusals = text.matches("not a usable token").count();
    assert!(
        refusals >= bad.len(),
        "{refusals} refusals:\n{}",
        d.log_tail()
    );
    assert!(!text.contains("X-Evil"), "the body was logged");
}

// ---------------------------------------------------------------------------
// deployments/next

/// A `next` instruction for the artifact of `dep` (its real download
/// link, taken from a genuine answer) with `edit` applied.
fn edited_next(server: &MenderServer, dev: &ManagedDevice, edit: impl Fn(&mut Value)) -> Value {
    let _ = (server, dev);
    let mut v = json!({
        "id": "0d5a2c3e-0000-4000-8000-000000000001",
        "artifact": {
            "artifact_name": "adv-5",
            "source": {"uri": format!("{}/nowhere", server.url()), "expire": "2099-01-01T00:00:00Z"},
            "device_types_compatible": [DEVICE_TYPE],
        }
    });
    edit(&mut v);
    v
}

#[test]
fn deployment_ids_that_cannot_name_a_file_are_refused() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let inactive = d.dev.partition_sha256(3);
    for id in ["../../etc/evil", "a\nb", "x/y", &"i".repeat(200)] {
        let reply = json_reply(200, &edited_next(&server, &d, |v| v["id"] = json!(id)));
        server.replace_next(Endpoint::NextV1Post, reply, 1);
    }
    let done = |s: &MenderServer| s.requests_to(Endpoint::NextV1Post).len() >= 6;
    assert!(
        d.run_until(&server, Duration::from_secs(60), done),
        "{}",
        d.log_tail()
    );
    let text = d.log_text();
    assert!(
        text.matches("deployment id").count() >= 4,
        "no refusal logged:\n{}",
        d.log_tail()
    );
    assert!(!text.contains("installing artifact"), "{}", d.log_tail());
    assert!(server.downloads().is_empty());
    assert_untouched(&d, &inactive);
    for entry in fs::read_dir(d.dev.path("data"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.contains("evil") && !name.contains('\n'), "{name:?}");
    }
}

#[test]
fn a_next_answer_larger_than_a_mib_is_refused() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let mut body = br#"{"id":"d1","pad":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 2 << 20));
    body.extend(br#""}"#);
    let reply = HostileReply::bytes(200, "application/json", body);
    server.replace_next(Endpoint::NextV1Post, reply, 1);
    let done = |s: &MenderServer| s.requests_to(Endpoint::NextV1Post).len() >= 3;
    assert!(
        d.run_until(&server, Duration::from_secs(60), done),
        "{}",
        d.log_tail()
    );
    assert!(
        d.log_text().contains("larger than 1048576 bytes"),
        "{}",
        d.log_tail()
    );
    assert!(server.downloads().is_empty());
}

#[test]
fn a_next_answer_with_wrong_field_types_is_refused() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let inactive = d.dev.partition_sha256(3);
    for edit in [
        json!({"id": 7, "artifact": {}}),
        json!({"id": "d1", "artifact": {"artifact_name": 5, "source": {"uri": "u"}, "device_types_compatible": [DEVICE_TYPE]}}),
        json!({"id": "d1", "artifact": {"artifact_name": "a", "source": {"uri": "u"}, "device_types_compatible": "all"}}),
        json!([1, 2, 3]),
    ] {
        server.replace_next(Endpoint::NextV1Post, json_reply(200, &edit), 1);
    }
    let done = |s: &MenderServer| s.requests_to(Endpoint::NextV1Post).len() >= 6;
    assert!(
        d.run_until(&server, Duration::from_secs(60), done),
        "{}",
        d.log_tail()
    );
    assert!(
        d.log_text().matches("not valid JSON").count() >= 4,
        "{}",
        d.log_tail()
    );
    assert!(server.downloads().is_empty());
    assert_untouched(&d, &inactive);
}

#[test]
fn an_invalid_control_map_in_next_fails_the_deployment_unstarted() {
    let server = MenderServer::start();
    server.enable_next_v2(true);
    let mut d = ManagedDevice::new(&server);
    let good = rootfs_artifact(&d.dev, "adv-6", &[DEVICE_TYPE]);
    let inactive = d.dev.partition_sha256(3);
    let dep = server.add_deployment(&good, "adv-6", &[DEVICE_TYPE]);
    let next = edited_next(&server, &d, |v| {
        v["id"] = json!(dep);
        v["artifact"]["artifact_name"] = json!("adv-6");
        v["update_control_map"] = json!({
            "id": dep, "priority": 0, "states": {}, "junk": "x".repeat(100 << 10)
        });
    });
    server.replace_next(Endpoint::NextV2, json_reply(200, &next), 1);
    d.run_to_status(&server, &dep, 60, "failure");
    assert!(
        d.log_text().contains("invalid update control map"),
        "{}",
        d.log_tail()
    );
    assert!(server.downloads().is_empty());
    assert_untouched(&d, &inactive);
}

/// A deployment of a good artifact whose download link answers `reply`.
fn hostile_download(
    reply: impl Fn(&[u8]) -> HostileReply,
) -> (MenderServer, ManagedDevice, String, String) {
    let server = MenderServer::start();
    let d = ManagedDevice::new(&server);
    let good = rootfs_artifact(&d.dev, "adv-7", &[DEVICE_TYPE]);
    let inactive = d.dev.partition_sha256(3);
    let bytes = fs::read(&good).unwrap();
    server.replace_always(Endpoint::Download, Some(reply(&bytes)));
    let dep = server.add_deployment(&good, "adv-7", &[DEVICE_TYPE]);
    (server, d, dep, inactive)
}

fn assert_download_failed(
    server: &MenderServer,
    d: &mut ManagedDevice,
    dep: &str,
    inactive: &str,
    why: &str,
) {
    let id = d.run_to_status(server, dep, 90, "failure");
    let logs = server.logs(&id, dep);
    assert!(logs.iter().any(|l| l.message.contains(why)), "{logs:#?}");
    let env = d.dev.env();
    assert_eq!(env["mender_boot_part"], "2");
    assert_eq!(env["upgrade_available"], "0");
    let _ = inactive;
}

#[test]
fn a_download_redirect_loop_fails_cleanly() {
    let (server, mut d, dep, inactive) = hostile_download(|_| {
        HostileReply::new(302, HostileBody::Bytes(Vec::new()))
            .header("Location", "/download/loop/loop")
    });
    assert_download_failed(&server, &mut d, &dep, &inactive, "redirect");
}

#[test]
fn a_download_longer_than_its_body_fails_cleanly() {
    // Claims 10 GiB, sends 8 KiB and hangs up; each resume gets a 200,
    // whose first 8 KiB are skipped (never fed twice), then the same cut,
    // until the attempts run out.
    let (server, mut d, dep, inactive) = hostile_download(|bytes| {
        HostileReply::new(200, HostileBody::Bytes(bytes[..8192].to_vec()))
            .header("Content-Length", (10u64 << 30).to_string())
    });
    assert_download_failed(&server, &mut d, &dep, &inactive, "giving up");
}

#[test]
fn a_download_shorter_than_the_artifact_fails_cleanly() {
    let (server, mut d, dep, inactive) = hostile_download(|bytes| {
        HostileReply::new(200, HostileBody::Bytes(bytes.to_vec())).header("Content-Length", "5000")
    });
    assert_download_failed(&server, &mut d, &dep, &inactive, "download failed");
    assert_untouched(&d, &inactive);
}

#[test]
fn an_empty_download_fails_cleanly() {
    let (server, mut d, dep, inactive) =
        hostile_download(|_| HostileReply::new(200, HostileBody::Bytes(Vec::new())));
    assert_download_failed(
        &server,
        &mut d,
        &dep,
        &inactive,
        "smaller than any valid artifact",
    );
    assert_untouched(&d, &inactive);
}

#[test]
fn huge_status_and_inventory_replies_are_not_read() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let huge = || {
        HostileReply::new(
            200,
            HostileBody::Filler {
                byte: b'{',
                len: 10 << 30,
            },
        )
    };
    server.replace_always(Endpoint::Status, Some(huge()));
    server.replace_always(Endpoint::Inventory, Some(huge()));
    let good = rootfs_artifact(&d.dev, "adv-8", &[DEVICE_TYPE]);
    let dep = server.add_deployment(&good, "adv-8", &[DEVICE_TYPE]);
    d.run_to_status(&server, &dep, 120, "success");
    for endpoint in [Endpoint::Status, Endpoint::Inventory] {
        for r in server.requests_to(endpoint) {
            assert!(r.bytes_sent < 64 << 20, "{r:?}");
        }
    }
}

#[test]
fn a_retry_after_header_does_not_put_the_daemon_to_sleep() {
    let server = MenderServer::start();
    let mut d = ManagedDevice::new(&server);
    let busy = json_reply(503, &json!({"error": "busy"})).header("Retry-After", "999999");
    server.replace_next(Endpoint::NextV1Post, busy, 2);
    let done = |s: &MenderServer| s.requests_to(Endpoint::NextV1Post).len() >= 4;
    assert!(
        d.run_until(&server, Duration::from_secs(30), done),
        "{}",
        d.log_tail()
    );
}
