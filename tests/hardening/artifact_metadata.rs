//! Artifact metadata that tries to forge what the device reports or to
//! exhaust it: control characters and '=' in names, keys and values (which
//! `show-provides` would print as forged `key=value` lines), a store or
//! `artifact_info` edited by hand, oversized or special store, key and
//! header files, provides that grow the store without end, and tar
//! extension headers (PAX, GNU long names) that declare gigabytes.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::artifact_edit::{fix_manifest, gzip_tar, header_entries, member_mut, members, repacked};
use crate::refusal::{
    REFUSED_RSS_KIB, assert_install_refused_cheaply, assert_refused, install_measured, snapshot,
};
use crate::special_files::{HUGE, mkfifo, sparse};
use crate::support::device::*;

/// A rootfs artifact whose header entry `entry` (a JSON member) was changed
/// by `edit`, the manifest resealed (unsigned).
fn with_json_edit(
    dev: &SimDevice,
    label: &str,
    entry: &str,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    with_header_edit(dev, label, &[], |entries| {
        let data = &mut entries
            .iter_mut()
            .find(|(n, _)| n == entry)
            .unwrap_or_else(|| panic!("no header entry {entry}"))
            .1;
        let mut v: Value = serde_json::from_slice(data).expect("JSON");
        edit(&mut v);
        *data = serde_json::to_vec(&v).expect("JSON");
    })
}

fn with_header_edit(
    dev: &SimDevice,
    label: &str,
    extra: &[&str],
    edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
) -> PathBuf {
    let good = dev.write_rootfs_artifact(label, 4 << 10, &[], extra);
    let mut m = members(&good);
    let header = member_mut(&mut m, "header.tar.gz");
    let mut entries = header_entries(header);
    edit(&mut entries);
    *header = gzip_tar(&entries);
    fix_manifest(&mut m, "header.tar.gz");
    repacked(&good, &m)
}

#[track_caller]
fn refused(dev: &SimDevice, artifact: &Path, needles: &[&str]) {
    let b = snapshot(dev);
    let out = dev.run(&["install", artifact.to_str().expect("path")]);
    // One error line: the control characters are escaped.
    assert_refused(dev, &b, &out, needles);
}

fn set_type_provide(v: &mut Value, key: &str, value: &str) {
    v["artifact_provides"][key] = json!(value);
}

#[test]
fn provides_key_with_a_newline_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "key-nl", "headers/0000/type-info", |v| {
        set_type_provide(v, "x\nartifact_name", "evil")
    });
    refused(
        &dev,
        &bad,
        &["headers/0000/type-info", "artifact_provides key", "U+000A"],
    );
}

#[test]
fn provides_value_forging_a_line_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "value-nl", "headers/0000/type-info", |v| {
        set_type_provide(v, "rootfs-image.x", "1\nartifact_name=evil3")
    });
    refused(&dev, &bad, &["artifact_provides.rootfs-image.x", "U+000A"]);
}

#[test]
fn artifact_name_forging_a_line_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "name-nl", "header-info", |v| {
        v["artifact_provides"]["artifact_name"] = json!("ok\nrootfs-image.version=evil")
    });
    refused(
        &dev,
        &bad,
        &["header-info", "artifact_provides.artifact_name", "U+000A"],
    );
}

#[test]
fn provides_key_with_an_equals_sign_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "key-eq", "headers/0000/type-info", |v| {
        set_type_provide(v, "artifact_name=evil", "x")
    });
    refused(&dev, &bad, &["artifact_provides key", "contains '='"]);
}

#[test]
fn empty_provides_key_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "key-empty", "headers/0000/type-info", |v| {
        set_type_provide(v, "", "artifact_name=evil")
    });
    refused(&dev, &bad, &["artifact_provides key", "is empty"]);
}

#[test]
fn artifact_group_with_a_carriage_return_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "group-cr", "header-info", |v| {
        v["artifact_provides"]["artifact_group"] = json!("g\r")
    });
    refused(&dev, &bad, &["artifact_provides.artifact_group", "U+000D"]);
}

#[test]
fn device_type_with_a_newline_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "devtype-nl", "header-info", |v| {
        v["artifact_depends"]["device_type"] = json!([DEVICE_TYPE, "x\ny"])
    });
    refused(&dev, &bad, &["artifact_depends.device_type[1]", "U+000A"]);
}

#[test]
fn depends_key_with_a_control_character_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "depkey", "headers/0000/type-info", |v| {
        v["artifact_depends"] = json!({"a\u{1}b": "x"})
    });
    refused(&dev, &bad, &["artifact_depends key", "U+0001"]);
}

#[test]
fn depends_value_with_an_escape_sequence_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "depval", "headers/0000/type-info", |v| {
        v["artifact_depends"] = json!({"k": ["ok", "\u{1b}[2J"]})
    });
    refused(&dev, &bad, &["artifact_depends.k[1]", "U+001B"]);
}

#[test]
fn clears_provides_entry_with_a_newline_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "clears", "headers/0000/type-info", |v| {
        v["clears_artifact_provides"] = json!(["rootfs-image.*", "a\nb"])
    });
    refused(&dev, &bad, &["clears_artifact_provides[1]", "U+000A"]);
}

#[test]
fn payload_type_with_a_newline_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "type-nl", "header-info", |v| {
        v["payloads"][0]["type"] = json!("rootfs-image\nx")
    });
    refused(&dev, &bad, &["header-info", "payloads[0].type"]);
}

#[test]
fn meta_data_key_with_a_control_character_is_refused() {
    let dev = SimDevice::new();
    let bad = with_header_edit(&dev, "meta", &[], |entries| {
        entries.retain(|(n, _)| n != "headers/0000/meta-data");
        entries.push((
            "headers/0000/meta-data".into(),
            serde_json::to_vec(&json!({"ok": {"a\u{7f}": 1}})).expect("JSON"),
        ));
    });
    refused(
        &dev,
        &bad,
        &["headers/0000/meta-data", "meta-data key", "U+007F"],
    );
}

#[test]
fn c1_control_character_in_a_value_is_refused() {
    // U+0085 (NEL) is a line break for some parsers; all of C1 is refused.
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "c1", "headers/0000/type-info", |v| {
        set_type_provide(v, "rootfs-image.x", "1\u{85}artifact_name=evil")
    });
    refused(&dev, &bad, &["artifact_provides.rootfs-image.x", "U+0085"]);
}

#[test]
fn script_name_with_a_newline_is_refused() {
    let dev = SimDevice::new();
    let bad = with_header_edit(&dev, "script-nl", &[], |entries| {
        entries.insert(
            1,
            (
                "scripts/ArtifactInstall_Enter_01_a\nb".into(),
                b"#!/bin/sh\nexit 0\n".to_vec(),
            ),
        );
    });
    refused(&dev, &bad, &["header.tar.gz", "state script name"]);
}

/// `mender-rs artifact write rootfs-image -t DEVICE_TYPE ARGS` of a small
/// payload must exit 1 naming `needle`, and write no artifact.
#[track_caller]
fn writer_refused(dev: &SimDevice, args: &[&OsStr], needle: &str) {
    let dir = dev.new_build_dir("writer");
    let payload = dir.join("rootfs.img");
    std::fs::write(&payload, b"data").expect("payload");
    let out_file = dir.join("out.mender");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["artifact", "write", "rootfs-image", "-t", DEVICE_TYPE])
        .args(args)
        .arg("-f")
        .arg(&payload)
        .arg("-o")
        .arg(&out_file);
    let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
    assert_eq!(exit_code(&out), 1, "{args:?}: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "{args:?}: {}",
        describe(&out)
    );
    assert!(!out_file.exists());
}

#[test]
fn writer_refuses_what_the_reader_refuses() {
    let dev = SimDevice::new();
    for (flag, value, needle) in [
        ("-p", "a=b:1", "provides key"),
        ("-p", "k:1\nartifact_name=x", "provides k"),
        ("-n", "ok\nx=y", "name"),
        ("-g", "g\u{1b}", "provides group"),
    ] {
        let mut args = if flag == "-n" {
            vec![]
        } else {
            vec!["-n", "r"]
        };
        args.extend([flag, value]);
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        writer_refused(&dev, &args, needle);
    }
}

// -- the store and show-* --------------------------------------------------

fn store_path(dev: &SimDevice) -> PathBuf {
    dev.data.join("mender-rs-store.json")
}

fn write_store(dev: &SimDevice, provides: Value) {
    std::fs::create_dir_all(&dev.data).expect("data dir");
    let store = json!({"schema": 1, "provides": provides});
    std::fs::write(store_path(dev), serde_json::to_vec(&store).expect("JSON")).expect("store");
}

/// The `artifact_info` file beside mender.conf (the name a device without
/// a store shows).
fn artifact_info_path(dev: &SimDevice) -> PathBuf {
    dev.config_file
        .parent()
        .expect("conf dir")
        .join("artifact_info")
}

#[track_caller]
fn show_refused(dev: &SimDevice, command: &str, needles: &[&str]) {
    let out = dev.run(&[command]);
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    assert!(out.stdout.is_empty(), "printed: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?}: {}", describe(&out));
    }
}

#[test]
fn show_provides_refuses_a_stored_key_forging_a_line() {
    let dev = SimDevice::new();
    write_store(
        &dev,
        json!({"artifact_name": "r1", "x\nartifact_name": "evil"}),
    );
    show_refused(
        &dev,
        "show-provides",
        &["stored provide key", "x\\nartifact_name", "U+000A"],
    );
}

#[test]
fn show_provides_refuses_a_stored_value_forging_a_line() {
    let dev = SimDevice::new();
    write_store(
        &dev,
        json!({"artifact_name": "r1", "rootfs-image.version": "1\nartifact_name=evil"}),
    );
    show_refused(&dev, "show-provides", &["rootfs-image.version", "U+000A"]);
}

#[test]
fn show_provides_refuses_a_stored_key_with_an_equals_sign() {
    let dev = SimDevice::new();
    write_store(
        &dev,
        json!({"artifact_name": "r1", "artifact_name=evil": "x"}),
    );
    show_refused(
        &dev,
        "show-provides",
        &["artifact_name=evil", "contains '='"],
    );
}

#[test]
fn show_artifact_refuses_a_stored_name_forging_a_line() {
    let dev = SimDevice::new();
    write_store(
        &dev,
        json!({"artifact_name": "ok\nrootfs-image.version=evil"}),
    );
    show_refused(&dev, "show-artifact", &["artifact_name", "U+000A"]);
}

#[test]
fn show_artifact_refuses_an_artifact_info_name_with_an_escape_sequence() {
    let dev = SimDevice::new();
    let info = artifact_info_path(&dev);
    std::fs::write(&info, "artifact_name=a\u{1b}[31mb\n").expect("artifact_info");
    show_refused(&dev, "show-artifact", &["artifact_name", "U+001B"]);
}

#[test]
fn artifact_info_that_is_a_fifo_or_huge_does_not_hang_or_fill_memory() {
    let dev = SimDevice::new();
    let info = artifact_info_path(&dev);
    mkfifo(&info);
    let out = dev.run_with(&["show-artifact"], &[], Duration::from_secs(20));
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unknown");
    std::fs::remove_file(&info).expect("rm");
    sparse(&info, HUGE);
    let out = dev.run_with(&["show-artifact"], &[], Duration::from_secs(20));
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unknown");
}

#[test]
fn huge_sparse_store_is_refused_without_reading_it() {
    let dev = SimDevice::new();
    std::fs::create_dir_all(&dev.data).expect("data dir");
    sparse(&store_path(&dev), HUGE);
    let start = Instant::now();
    show_refused(
        &dev,
        "show-provides",
        &["mender-rs-store.json", "16777216 allowed for the store"],
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn store_that_is_a_fifo_is_refused_without_blocking() {
    let dev = SimDevice::new();
    std::fs::create_dir_all(&dev.data).expect("data dir");
    mkfifo(&store_path(&dev));
    let out = dev.run_with(&["show-provides"], &[], Duration::from_secs(20));
    assert_eq!(exit_code(&out), 1, "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a FIFO"),
        "{}",
        describe(&out)
    );
}

#[track_caller]
fn assert_stderr_names(out: &std::process::Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "stderr does not name {n:?}: {err}");
    }
}

#[test]
fn verify_key_that_is_huge_or_a_fifo_is_refused() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("key-size", 4 << 10, &[], &[]);
    let keys = dev.new_build_dir("keys");
    let huge = keys.join("huge.pem");
    sparse(&huge, HUGE);
    dev.set_config("ArtifactVerifyKey", json!(huge.to_str().expect("path")));
    let b = snapshot(&dev);
    let (out, rss, _) = install_measured(&dev, &art);
    // `commit` (in assert_refused) needs a loadable key configuration.
    dev.remove_config("ArtifactVerifyKey");
    // The error line says no key could be loaded; the line before it
    // names the key and why.
    assert_refused(&dev, &b, &out, &["ArtifactVerifyKey"]);
    assert_stderr_names(&out, &["huge.pem", "65536 allowed for a key file"]);
    assert!(rss < REFUSED_RSS_KIB, "peak RSS {rss} KiB");
    let fifo = keys.join("fifo.pem");
    mkfifo(&fifo);
    dev.set_config("ArtifactVerifyKey", json!(fifo.to_str().expect("path")));
    let out = dev.run_with(
        &["install", art.to_str().expect("path")],
        &[],
        Duration::from_secs(20),
    );
    // `commit` (in assert_refused) needs a loadable key configuration.
    dev.remove_config("ArtifactVerifyKey");
    assert_refused(&dev, &b, &out, &["ArtifactVerifyKey"]);
    assert_stderr_names(&out, &["fifo.pem", "a FIFO"]);
}

#[test]
fn signing_key_that_is_huge_is_refused() {
    let dev = SimDevice::new();
    let keys = dev.new_build_dir("keys");
    let huge = keys.join("huge.pem");
    sparse(&huge, HUGE);
    let args = ["-n", "r", "-k"].map(OsStr::new);
    writer_refused(
        &dev,
        &[args[0], args[1], args[2], huge.as_os_str()],
        "65536 allowed",
    );
}

#[test]
fn header_info_over_its_cap_is_refused() {
    let dev = SimDevice::new();
    let bad = with_json_edit(&dev, "big-info", "header-info", |v| {
        v["artifact_provides"]["pad"] = json!("x".repeat(2 << 20))
    });
    refused(&dev, &bad, &["header-info", "1048576"]);
}

#[test]
fn provides_growing_past_their_cap_are_refused() {
    let dev = SimDevice::new();
    // A device that already holds 0.9 MiB of provides (kept across
    // artifacts that do not clear them) ...
    write_store(
        &dev,
        json!({"artifact_name": "r1", "other.blob": "x".repeat(900 << 10)}),
    );
    // A first command hands the installed software back to Mender's store
    // (docs/takeover.md), as any start of a named device does; the refusal
    // below must change nothing after that.
    dev.ok(&["show-artifact"]);
    // ... and an artifact adding 0.2 MiB more without clearing them.
    let bad = with_json_edit(&dev, "grow", "headers/0000/type-info", |v| {
        set_type_provide(v, "rootfs-image.blob", &"y".repeat(200 << 10));
        v["clears_artifact_provides"] = json!(["rootfs-image.*"]);
    });
    refused(&dev, &bad, &["provides would take", "1048576 allowed"]);
}

#[test]
fn good_artifact_still_installs_and_shows_its_provides() {
    let dev = SimDevice::new();
    let good = with_json_edit(&dev, "good", "headers/0000/type-info", |v| {
        set_type_provide(v, "rootfs-image.note", "a=b, ünïcode and spaces")
    });
    let out = dev.run(&["install", good.to_str().expect("path")]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
}

// -- tar extension headers -------------------------------------------------

/// A tar header block of `kind` declaring `size` bytes.
fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).expect("name");
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn data_tar_with_a_256_mib_pax_header_is_refused_cheaply() {
    let dev = SimDevice::new();
    let good = dev.write_rootfs_artifact("pax-data", 4 << 10, &[], &["--compression", "zstd"]);
    let mut m = members(&good);
    let data = member_mut(&mut m, "data/0000.tar.zst");
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(&data[..])
        .expect("zstd")
        .read_to_end(&mut plain)
        .expect("zstd");
    // 256 MiB of PAX header (a few hundred KB compressed), then the tar.
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    e.write_all(&raw_header(
        "././@PaxHeader",
        tar::EntryType::XHeader,
        256 << 20,
    ))
    .expect("zstd");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).expect("zstd");
    }
    e.write_all(&plain).expect("zstd");
    *data = e.finish().expect("zstd");
    let bad = repacked(&good, &m);
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["data/0000.tar.zst", "65536 allowed"]);
}

#[test]
fn outer_tar_with_a_128_mib_gnu_long_name_is_refused_cheaply() {
    let dev = SimDevice::new();
    let good = dev.write_rootfs_artifact("longname", 4 << 10, &[], &[]);
    let bad = SimDevice::artifact_dir(&good).join("bad.mender");
    let mut f = File::create(&bad).expect("create");
    f.write_all(&raw_header(
        "././@LongLink",
        tar::EntryType::GNULongName,
        128 << 20,
    ))
    .expect("write");
    // The long name is a hole of 128 MiB (zeros, no disk), then the rest.
    f.seek(SeekFrom::Current(128 << 20)).expect("seek");
    f.write_all(&std::fs::read(&good).expect("good"))
        .expect("write");
    drop(f);
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["artifact tar", "65536 allowed"]);
}

#[test]
fn header_tar_with_an_oversized_pax_header_is_refused() {
    let dev = SimDevice::new();
    let good = dev.write_rootfs_artifact("pax-header", 4 << 10, &[], &[]);
    let mut m = members(&good);
    let header = member_mut(&mut m, "header.tar.gz");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&header[..])
        .read_to_end(&mut plain)
        .expect("gzip");
    let mut tar_bytes = raw_header("././@PaxHeader", tar::EntryType::XHeader, 1 << 20);
    tar_bytes.extend(vec![b'a'; 1 << 20]);
    tar_bytes.extend(plain);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&tar_bytes).expect("gzip");
    *header = e.finish().expect("gzip");
    fix_manifest(&mut m, "header.tar.gz");
    let bad = repacked(&good, &m);
    refused(&dev, &bad, &["header.tar.gz", "65536 allowed"]);
}

#[test]
fn more_scripts_than_the_cap_are_refused() {
    let dev = SimDevice::new();
    let bad = with_header_edit(&dev, "many-scripts", &[], |entries| {
        for i in 0..1001 {
            entries.insert(
                1,
                (
                    format!("scripts/ArtifactInstall_Enter_01_n{i}"),
                    b"#!/bin/sh\n".to_vec(),
                ),
            );
        }
    });
    refused(
        &dev,
        &bad,
        &["header.tar.gz", "more than 1000 state scripts"],
    );
    assert!(
        !dev.artifact_scripts.exists()
            || std::fs::read_dir(&dev.artifact_scripts)
                .expect("scripts dir")
                .count()
                == 0,
        "scripts were stored"
    );
}
