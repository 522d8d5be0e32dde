//! Chunked rootfs-image artifacts (`artifact write rootfs-image --chunked`,
//! docs/artifacts.md): the frames decode to exactly the inner tar a
//! non-chunked artifact holds, every frame decodes alone to the chunk its
//! index entry describes, `mender-artifact` 3.9 validates and reads the
//! gzip one, the header tar has only the entries of a plain artifact, and a
//! damaged or oversized index is refused naming type-info's key and the
//! byte. Installs by the Mender client 3.4 and by mender-rs are in
//! `reference_client::chunked`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mender_rs::artifact::chunk_index::{self, ChunkIndex};
use sha2::{Digest, Sha256};

const OURS: &str = env!("CARGO_BIN_EXE_mender-rs");
const TIMEOUT: Duration = Duration::from_secs(60);

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs a program with a deadline; output goes through files so that a
/// full pipe cannot stall it.
fn run(program: &str, args: &[&str]) -> Ran {
    let out = tempfile::tempfile().expect("temp file");
    let err = tempfile::tempfile().expect("temp file");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |mut f: fs::File| {
        use std::io::Seek;
        let mut s = String::new();
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.read_to_string(&mut s).expect("read output");
        s
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: read(out),
        stderr: read(err),
    }
}

fn ok(program: &str, args: &[&str]) -> String {
    let ran = run(program, args);
    assert_eq!(
        ran.code, 0,
        "{program} {args:?}: {}{}",
        ran.stdout, ran.stderr
    );
    ran.stdout
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A 2 MiB image with what ext4 images have: incompressible runs, a
/// repeated region and zeros.
fn image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let bytes =
        crate::support::device::image_like(1 << 20, (768 << 10) + 1000, 0x9e37_79b9_7f4a_7c15);
    let path = dir.join("rootfs.ext4");
    fs::write(&path, &bytes).expect("write image");
    (path, bytes)
}

fn write(dir: &Path, img: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec![
        "artifact",
        "write",
        "rootfs-image",
        "-t",
        "dev",
        "-n",
        "release-2",
        "-f",
        p(img),
        "-o",
        p(&out),
    ];
    args.extend_from_slice(extra);
    ok(OURS, &args);
    out
}

/// The outer tar's members, in order.
fn members(artifact: &Path) -> Vec<(String, Vec<u8>)> {
    let file = fs::File::open(artifact).expect("open artifact");
    let mut archive = tar::Archive::new(file);
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).expect("read member");
            (name, bytes)
        })
        .collect()
}

fn member<'m>(members: &'m [(String, Vec<u8>)], prefix: &str) -> (&'m str, &'m [u8]) {
    members
        .iter()
        .find(|(n, _)| n.starts_with(prefix))
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .unwrap_or_else(|| panic!("no member {prefix}*"))
}

fn decode(compression: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match compression {
        "gzip" => flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("gunzip"),
        _ => zstd::stream::read::Decoder::new(bytes)
            .expect("zstd")
            .read_to_end(&mut out)
            .expect("unzstd"),
    };
    out
}

/// The header tar's entries, decoded.
fn header_entries(compression: &str, header: &[u8]) -> Vec<(String, Vec<u8>)> {
    let plain = decode(compression, header);
    let mut archive = tar::Archive::new(&plain[..]);
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).expect("read entry");
            (name, bytes)
        })
        .collect()
}

#[test]
fn chunked_artifacts_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (img, bytes) = image(dir.path());
    for compression in ["gzip", "zstd"] {
        let plain = write(
            dir.path(),
            &img,
            &format!("plain-{compression}.mender"),
            &["--compression", compression],
        );
        let chunked = write(
            dir.path(),
            &img,
            &format!("chunked-{compression}.mender"),
            &[
                "--compression",
                compression,
                "--chunked",
                "--chunk-size",
                "16K",
            ],
        );
        ok(OURS, &["artifact", "validate", p(&chunked)]);

        let ours = members(&chunked);
        let theirs = members(&plain);
        let (_, header) = member(&ours, "header.tar");
        let entries = header_entries(compression, header);
        // The header tar has the entries of a plain artifact, no more: the
        // index is a key of type-info, which every Mender parser accepts.
        let (_, plain_header) = member(&theirs, "header.tar");
        let names = |entries: &[(String, Vec<u8>)]| -> Vec<String> {
            entries.iter().map(|(n, _)| n.clone()).collect()
        };
        assert_eq!(
            names(&entries),
            names(&header_entries(compression, plain_header))
        );
        let (type_info, plain_type_info) = (
            type_info_of(&entries),
            type_info_of(&header_entries(compression, plain_header)),
        );
        let mut others = type_info.clone();
        others.remove(chunk_index::TYPE_INFO_KEY);
        assert_eq!(others, plain_type_info, "type-info's other keys as before");
        let raw_index = index_bytes(&type_info);
        let index = ChunkIndex::parse(&raw_index).expect("the index parses");
        let (data_name, data) = member(&ours, "data/0000.tar");
        let (_, plain_data) = member(&theirs, "data/0000.tar");

        // One stream for any decoder: the same inner tar as without chunks.
        assert_eq!(data.len() as u64, index.data_len(), "{data_name}");
        assert_eq!(
            decode(compression, data),
            decode(compression, plain_data),
            "{compression}: the frames decode to the non-chunked inner tar"
        );
        // Every frame alone: the tar header, each chunk, the end blocks.
        let header_frame = &data[..index.header_frame_len as usize];
        assert_eq!(decode(compression, header_frame).len(), 512);
        let mut at = 0usize;
        for (i, c) in index.chunks.iter().enumerate() {
            let start = c.frame_offset as usize;
            let frame = &data[start..start + c.frame_len as usize];
            let chunk = decode(compression, frame);
            assert_eq!(chunk.len(), c.len as usize, "chunk {i}");
            assert_eq!(chunk, bytes[at..at + chunk.len()], "chunk {i}");
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&chunk)), c.sha256);
            at += chunk.len();
        }
        assert_eq!(at, bytes.len());
        let trailer = &data[index.trailer_frame_offset as usize..];
        assert_eq!(trailer.len(), index.trailer_frame_len as usize);
        assert!(decode(compression, trailer).iter().all(|b| *b == 0));

        // `read --json` reports the chunking.
        let report = ok(OURS, &["artifact", "read", "--json", p(&chunked)]);
        let json: serde_json::Value = serde_json::from_str(&report).expect("json");
        let chunking = &json["payloads"][0]["chunking"];
        assert_eq!(chunking["chunk_count"], index.chunks.len() as u64);
        assert_eq!(chunking["index_size"], raw_index.len() as u64);
        assert_eq!(
            chunking["average_chunk_size"],
            bytes.len() as u64 / index.chunks.len() as u64
        );
        assert_eq!(chunking["compression"], compression);
        assert_eq!(chunking["chunker"]["avg"], 16 << 10);
        // A non-chunked artifact says so.
        let report = ok(OURS, &["artifact", "read", "--json", p(&plain)]);
        let json: serde_json::Value = serde_json::from_str(&report).expect("json");
        assert!(json["payloads"][0]["chunking"].is_null());
    }
}

#[test]
fn mender_artifact_validates_and_reads_the_gzip_chunked_artifact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (img, _) = image(dir.path());
    let chunked = write(dir.path(), &img, "c.mender", &["--chunked"]);
    ok("mender-artifact", &["validate", p(&chunked)]);
    let text = ok("mender-artifact", &["read", p(&chunked)]);
    assert!(
        text.contains("rootfs.ext4") && text.contains("rootfs-image"),
        "{text}"
    );
}

#[test]
fn chunked_needs_gzip_or_zstd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (img, _) = image(dir.path());
    for compression in ["xz", "none"] {
        let out = dir.path().join(format!("{compression}.mender"));
        let ran = run(
            OURS,
            &[
                "artifact",
                "write",
                "rootfs-image",
                "--compression",
                compression,
                "-t",
                "dev",
                "-n",
                "r",
                "-f",
                p(&img),
                "-o",
                p(&out),
                "--chunked",
            ],
        );
        assert_ne!(ran.code, 0);
        assert!(
            ran.stderr.contains("gzip") && ran.stderr.contains("zstd"),
            "{}",
            ran.stderr
        );
        assert!(!out.exists(), "nothing is left at {}", out.display());
    }
    let ran = run(
        OURS,
        &[
            "artifact",
            "write",
            "rootfs-image",
            "-t",
            "dev",
            "-n",
            "r",
            "-f",
            p(&img),
            "--chunked",
            "--chunk-size",
            "48K",
        ],
    );
    assert_ne!(ran.code, 0);
    assert!(ran.stderr.contains("power of two"), "{}", ran.stderr);
}

/// `headers/0000/type-info` of decoded header entries, as a JSON object.
fn type_info_of(entries: &[(String, Vec<u8>)]) -> serde_json::Map<String, serde_json::Value> {
    let (_, bytes) = entries
        .iter()
        .find(|(n, _)| n == "headers/0000/type-info")
        .expect("headers/0000/type-info");
    match serde_json::from_slice(bytes).expect("type-info is JSON") {
        serde_json::Value::Object(map) => map,
        other => panic!("type-info is not an object: {other}"),
    }
}

/// The decoded chunk index of a type-info object.
fn index_bytes(type_info: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    let text = type_info[chunk_index::TYPE_INFO_KEY]
        .as_str()
        .expect("the index is a string");
    BASE64.decode(text).expect("the index is base64")
}

/// Rewrites `artifact` with its chunk index replaced by `edit(index)`, and
/// the manifest updated so that only the index is wrong.
fn with_index(artifact: &Path, out: &Path, edit: impl Fn(&mut Vec<u8>)) {
    with_header(artifact, out, |entries| {
        for (name, bytes) in entries.iter_mut() {
            if name == "headers/0000/type-info" {
                let mut type_info = type_info_of(&[(name.clone(), bytes.clone())]);
                let mut index = index_bytes(&type_info);
                edit(&mut index);
                type_info.insert(
                    chunk_index::TYPE_INFO_KEY.into(),
                    BASE64.encode(index).into(),
                );
                *bytes = serde_json::Value::Object(type_info)
                    .to_string()
                    .into_bytes();
            }
        }
    });
}

/// Rewrites `artifact` with its header tar's entries replaced by
/// `edit(entries)`, and the manifest updated to match.
fn with_header(artifact: &Path, out: &Path, edit: impl Fn(&mut Vec<(String, Vec<u8>)>)) {
    let mut outer = members(artifact);
    let header_at = outer
        .iter()
        .position(|(n, _)| n == "header.tar.gz")
        .expect("header.tar.gz");
    let mut entries = header_entries("gzip", &outer[header_at].1);
    edit(&mut entries);
    let mut inner = tar::Builder::new(Vec::new());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(&name).expect("path");
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        inner.append(&h, &bytes[..]).expect("append");
    }
    let inner = inner.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&inner).expect("gzip");
    let header = gz.finish().expect("gzip");
    let old = hex(&Sha256::digest(&outer[header_at].1));
    let new = hex(&Sha256::digest(&header));
    outer[header_at].1 = header;
    let manifest = outer
        .iter_mut()
        .find(|(n, _)| n == "manifest")
        .expect("manifest");
    let text = String::from_utf8(manifest.1.clone()).expect("manifest text");
    assert!(text.contains(&old));
    manifest.1 = text.replace(&old, &new).into_bytes();
    let mut tar = tar::Builder::new(fs::File::create(out).expect("create"));
    for (name, bytes) in &outer {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &bytes[..]).expect("append");
    }
    tar.finish().expect("finish");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn refused(artifact: &Path, want: &str) {
    for command in ["validate", "read"] {
        let ran = run(OURS, &["artifact", command, p(artifact)]);
        assert_ne!(ran.code, 0, "{command} accepted it");
        assert!(
            ran.stderr.contains(want),
            "{command}: wanted '{want}' in: {}",
            ran.stderr
        );
    }
}

#[test]
fn a_damaged_or_oversized_index_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (img, _) = image(dir.path());
    let good = write(
        dir.path(),
        &img,
        "good.mender",
        &["--chunked", "--chunk-size", "16K"],
    );

    // The rebuild alone changes nothing the reader minds.
    let same = dir.path().join("same.mender");
    with_index(&good, &same, |_| {});
    ok(OURS, &["artifact", "validate", p(&same)]);

    let bad = dir.path().join("bad.mender");
    // The second chunk's frame offset.
    with_index(&good, &bad, |b| b[64 + 48] ^= 1);
    refused(
        &bad,
        "headers/0000/type-info: mender_rs_chunk_index: byte 112: chunk 1: frame offset",
    );
    with_index(&good, &bad, |b| b.truncate(b.len() - 1));
    refused(
        &bad,
        "headers/0000/type-info: mender_rs_chunk_index: byte 52:",
    );
    // Well-formed, but its frames end elsewhere than the data member.
    with_index(&good, &bad, |b| b[48] = b[48].wrapping_add(1));
    refused(&bad, "data/0000.tar.gz:");
    refused(
        &bad,
        "but the frames of headers/0000/type-info: mender_rs_chunk_index end at byte",
    );
    // Well-formed, but chunk 1's frame decodes to one byte less than its
    // record says (and chunk 2's to one more): the frame decoder of a full
    // install checks every frame's length, on one core as on many.
    with_index(&good, &bad, |b| {
        let len_at = |i: usize| 64 + 48 * i + 12;
        let len = |b: &[u8], i: usize| {
            u32::from_le_bytes(b[len_at(i)..len_at(i) + 4].try_into().expect("4 bytes"))
        };
        let (one, two) = (len(b, 1), len(b, 2));
        b[len_at(1)..len_at(1) + 4].copy_from_slice(&(one + 1).to_le_bytes());
        b[len_at(2)..len_at(2) + 4].copy_from_slice(&(two - 1).to_le_bytes());
    });
    refused(&bad, "data/0000.tar.gz: chunk 1 decodes to ");
    refused(&bad, "bytes, the index says ");
    // Over the size limit: refused before it is parsed.
    with_index(&good, &bad, |b| {
        b.resize(chunk_index::MAX_INDEX_SIZE as usize + 1, 0)
    });
    refused(
        &bad,
        "headers/0000/type-info: mender_rs_chunk_index: byte 0: 9437185 bytes is over the limit",
    );
    // Not base64, or not a string.
    let set_index = |value: serde_json::Value| {
        move |entries: &mut Vec<(String, Vec<u8>)>| {
            for (name, bytes) in entries.iter_mut() {
                if name == "headers/0000/type-info" {
                    let mut type_info = type_info_of(&[(name.clone(), bytes.clone())]);
                    type_info.insert(chunk_index::TYPE_INFO_KEY.into(), value.clone());
                    *bytes = serde_json::Value::Object(type_info)
                        .to_string()
                        .into_bytes();
                }
            }
        }
    };
    with_header(&good, &bad, set_index("TVJD*FVOS1M=".into()));
    refused(
        &bad,
        "headers/0000/type-info: mender_rs_chunk_index: not valid base64: Invalid symbol 42, offset 4",
    );
    with_header(&good, &bad, set_index(7.into()));
    refused(
        &bad,
        "headers/0000/type-info: mender_rs_chunk_index: expected a string",
    );
    // A type-info over its cap, refused before its JSON is parsed.
    with_header(&good, &bad, |entries| {
        for (name, bytes) in entries.iter_mut() {
            if name == "headers/0000/type-info" {
                bytes.resize(chunk_index::MAX_TYPE_INFO_SIZE as usize + 1, b' ');
            }
        }
    });
    refused(
        &bad,
        "headers/0000/type-info: 13631489 bytes is over the limit",
    );
    // The index's former place is an unknown entry like any other.
    with_header(&good, &bad, |entries| {
        let index = index_bytes(&type_info_of(entries));
        entries.push(("headers/0000/signatures/chunk-index".into(), index));
    });
    refused(&bad, "unknown entry 'headers/0000/signatures/chunk-index'");
}
