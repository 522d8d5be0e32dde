//! Compressed members that ask for too much memory: xz dictionaries and
//! zstd windows beyond the decoder's limits (64 MiB, what mender-artifact's
//! own `--compression lzma` needs), a header that inflates past its cap, and
//! the same tricks on a genuine signed artifact (the signature covers the
//! payload checksums, not the compression). Each is refused quickly, with
//! low memory, exit 1 and nothing written.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::artifact_edit::{fix_manifest, member_mut, members, repacked};
use crate::refusal::{assert_install_refused_cheaply, install_measured, snapshot};
use crate::support::device::*;

fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for i in 0..9 {
        let b = bytes[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    value
}

/// Sets the LZMA2 dictionary byte of every block header of the xz stream(s)
/// in `xz` (the block header CRC32 recomputed); the data decodes the same
/// with any dictionary at least as large as the one it was made with.
/// `dict` 36 = 1 GiB, 28 = 64 MiB, 29 = 96 MiB.
pub(crate) fn set_xz_dict(xz: &mut [u8], dict: u8) {
    assert_eq!(&xz[..6], b"\xfd7zXZ\0");
    let mut at = 12;
    let mut patched = 0;
    // Walk the blocks of the first stream: header, then data whose size the
    // header may not give, so decode the index-free way: a single-threaded
    // stream has one block; MT streams give the compressed size.
    loop {
        let size = (usize::from(xz[at]) + 1) * 4;
        if xz[at] == 0 {
            break; // the index
        }
        let flags = xz[at + 1];
        let mut p = at + 2;
        let compressed = (flags & 0x40 != 0).then(|| read_varint(xz, &mut p));
        if flags & 0x80 != 0 {
            read_varint(xz, &mut p);
        }
        assert_eq!(flags & 0x03, 0, "one filter expected");
        assert_eq!(read_varint(xz, &mut p), 0x21, "LZMA2 expected");
        assert_eq!(read_varint(xz, &mut p), 1);
        xz[p] = dict;
        let mut crc = flate2::Crc::new();
        crc.update(&xz[at..at + size - 4]);
        xz[at + size - 4..at + size].copy_from_slice(&crc.sum().to_le_bytes());
        patched += 1;
        match compressed {
            // Block data, padding to 4 bytes, the check (CRC64 or CRC32).
            Some(c) => {
                let check = match xz[7] & 0x0f {
                    0x01 => 4,
                    0x04 => 8,
                    0x0a => 32,
                    _ => 0,
                };
                at += size + (c as usize).div_ceil(4) * 4 + check;
            }
            None => break,
        }
    }
    assert!(patched > 0);
}

/// A single-threaded xz stream of `data` (dictionary 256 KiB), patched to
/// declare dictionary byte `dict`.
pub(crate) fn xz_with_dict(data: &[u8], dict: u8) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
    e.write_all(data).expect("xz");
    let mut xz = e.finish().expect("xz");
    set_xz_dict(&mut xz, dict);
    xz
}

/// A zstd frame of `data` (1 MiB window, no content size) whose window
/// descriptor is set to 2^`window_log`.
pub(crate) fn zstd_with_window(data: &[u8], window_log: u8) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    e.window_log(20).expect("window");
    e.include_checksum(true).expect("checksum");
    e.write_all(data).expect("zstd");
    let mut z = e.finish().expect("zstd");
    assert_eq!(&z[..4], b"\x28\xb5\x2f\xfd");
    assert_eq!(z[4] & 0x20, 0, "not single-segment");
    assert_eq!(z[4] & 0x03, 0, "no dictionary id");
    z[5] = (window_log - 10) << 3;
    z
}

fn decompress(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new_multi_decoder(bytes)
            .read_to_end(&mut out)
            .expect("xz");
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(bytes)
            .expect("zstd")
            .read_to_end(&mut out)
            .expect("zstd");
    } else {
        panic!("{name}");
    }
    out
}

/// An artifact of `compression` whose member `which` (`data/` or `header`)
/// is recompressed by `recompress`; the manifest is fixed for the header.
fn recompressed(
    dev: &SimDevice,
    compression: &str,
    which: &str,
    extra: &[&str],
    recompress: impl Fn(&[u8]) -> Vec<u8>,
) -> PathBuf {
    let mut args = vec!["--compression", compression];
    args.extend_from_slice(extra);
    let good = dev.write_rootfs_artifact(&format!("{compression}-{which}"), 64 << 10, &[], &args);
    let mut m = members(&good);
    let name = m
        .iter()
        .find(|(n, _)| n.starts_with(which))
        .expect("member")
        .0
        .clone();
    let plain = decompress(
        &name,
        &m.iter().find(|(n, _)| *n == name).expect("member").1,
    );
    *member_mut(&mut m, &name) = recompress(&plain);
    if which == "header" {
        fix_manifest(&mut m, &name);
    }
    repacked(&good, &m)
}

#[test]
fn xz_data_member_declaring_a_1_gib_dictionary_is_refused_cheaply() {
    let dev = SimDevice::new();
    let bad = recompressed(&dev, "xz", "data/", &[], |d| xz_with_dict(d, 36));
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["data/0000.tar.xz", "66 MiB"]);
}

#[test]
fn zstd_data_member_declaring_a_2_gib_window_is_refused_cheaply() {
    let dev = SimDevice::new();
    let bad = recompressed(&dev, "zstd", "data/", &[], |d| zstd_with_window(d, 31));
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["data/0000.tar.zst", "64 MiB"]);
}

#[test]
fn signed_artifact_with_its_data_recompressed_to_a_huge_dictionary_is_refused() {
    let dev = SimDevice::new();
    let keys = dev.new_build_dir("keys");
    let (private, public) = ec_key_pair(&keys, "key");
    dev.set_config("ArtifactVerifyKey", json!(public.to_str().expect("path")));
    let key = private.to_str().expect("path");
    let xz = recompressed(&dev, "xz", "data/", &["-k", key], |d| xz_with_dict(d, 36));
    let zst = recompressed(&dev, "zstd", "data/", &["-k", key], |d| {
        zstd_with_window(d, 31)
    });
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &xz, &["data/0000.tar.xz", "66 MiB"]);
    assert_install_refused_cheaply(&dev, &b, &zst, &["data/0000.tar.zst", "64 MiB"]);
    // The same artifacts with a dictionary the limit allows install: the
    // signature does hold.
    let ok = recompressed(&dev, "xz", "data/", &["-k", key], |d| xz_with_dict(d, 20));
    let out = dev.run(&["install", ok.to_str().expect("path")]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
}

#[test]
fn xz_header_member_declaring_a_1_gib_dictionary_is_refused_cheaply() {
    let dev = SimDevice::new();
    let bad = recompressed(&dev, "xz", "header", &[], |d| xz_with_dict(d, 36));
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["header.tar.xz", "66 MiB"]);
}

#[test]
fn zstd_header_member_declaring_a_huge_window_is_refused_cheaply() {
    let dev = SimDevice::new();
    let bad = recompressed(&dev, "zstd", "header", &[], |d| zstd_with_window(d, 30));
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["header.tar.zst", "64 MiB"]);
}

#[test]
fn xz_dictionary_of_64_mib_as_mender_artifact_writes_is_accepted_96_mib_refused() {
    let dev = SimDevice::new();
    // mender-artifact 3.9 `--compression lzma` declares a 64 MiB
    // dictionary (byte 28).
    let ok = recompressed(&dev, "xz", "data/", &[], |d| xz_with_dict(d, 28));
    let over = recompressed(&dev, "xz", "data/", &[], |d| xz_with_dict(d, 29));
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &over, &["data/0000.tar.xz", "66 MiB"]);
    let (out, _, _) = install_measured(&dev, &ok);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
}

#[test]
fn zstd_window_of_64_mib_is_accepted_128_mib_refused() {
    let dev = SimDevice::new();
    let ok = recompressed(&dev, "zstd", "data/", &[], |d| zstd_with_window(d, 26));
    let over = recompressed(&dev, "zstd", "data/", &[], |d| zstd_with_window(d, 27));
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &over, &["data/0000.tar.zst", "64 MiB"]);
    let out = dev.run(&["install", ok.to_str().expect("path")]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
}

#[test]
fn second_concatenated_xz_stream_with_a_huge_dictionary_is_refused() {
    let dev = SimDevice::new();
    // Two streams: the tar's first 10 KiB normally, the rest declaring
    // 1 GiB. The limit holds for every stream, not just the first.
    let bad = recompressed(&dev, "xz", "data/", &[], |d| {
        let mut a = xz_with_dict(&d[..10 << 10], 18);
        a.extend(xz_with_dict(&d[10 << 10..], 36));
        a
    });
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["data/0000.tar.xz", "66 MiB"]);
}

#[test]
fn second_zstd_frame_with_a_huge_window_is_refused() {
    let dev = SimDevice::new();
    let bad = recompressed(&dev, "zstd", "data/", &[], |d| {
        let mut a = zstd_with_window(&d[..10 << 10], 20);
        a.extend(zstd_with_window(&d[10 << 10..], 31));
        a
    });
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["data/0000.tar.zst", "64 MiB"]);
}

#[test]
fn gzip_header_inflating_past_its_cap_is_refused_cheaply() {
    let dev = SimDevice::new();
    let good = dev.write_rootfs_artifact("gz-header", 4 << 10, &[], &[]);
    let mut m = members(&good);
    // 17 MiB of zeros, ~17 KiB compressed.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 17 << 20]).expect("gzip");
    *member_mut(&mut m, "header.tar.gz") = e.finish().expect("gzip");
    fix_manifest(&mut m, "header.tar.gz");
    let bad = repacked(&good, &m);
    let b = snapshot(&dev);
    assert_install_refused_cheaply(&dev, &b, &bad, &["header.tar.gz", "16 MiB"]);
}
