//! Taking an artifact apart and putting it back with a member changed:
//! what the artifact families (`artifact_metadata`, `compression`) build
//! their hostile artifacts with. An unsigned artifact whose header was
//! changed gets its manifest fixed, so that only the change is wrong.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::support::device::*;

/// Outer members of an artifact, in order.
pub(crate) fn members(artifact: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(artifact).expect("artifact");
    let mut archive = tar::Archive::new(file);
    let mut out = Vec::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = String::from_utf8(entry.path_bytes().into_owned()).expect("name");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("member");
        out.push((name, bytes));
    }
    out
}

/// Writes `members` as an artifact tar at `out`.
pub(crate) fn repack(members: &[(String, Vec<u8>)], out: &Path) {
    let mut builder = tar::Builder::new(std::fs::File::create(out).expect("create"));
    for (name, bytes) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        builder
            .append_data(&mut h, name, &bytes[..])
            .expect("append");
    }
    builder
        .into_inner()
        .expect("finish")
        .flush()
        .expect("flush");
}

pub(crate) fn member_mut<'a>(
    members: &'a mut [(String, Vec<u8>)],
    prefix: &str,
) -> &'a mut Vec<u8> {
    &mut members
        .iter_mut()
        .find(|(n, _)| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no member {prefix}*"))
        .1
}

/// Puts the sha256 of member `name` into the manifest (an unsigned artifact
/// whose header was changed stays consistent).
pub(crate) fn fix_manifest(members: &mut [(String, Vec<u8>)], name: &str) {
    let digest = sha256_hex(&members.iter().find(|(n, _)| n == name).expect("member").1);
    let manifest = member_mut(members, "manifest");
    let text = String::from_utf8(manifest.clone()).expect("manifest");
    let fixed: String = text
        .lines()
        .map(|l| match l.split_once("  ") {
            Some((_, path)) if path == name => format!("{digest}  {path}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    *manifest = fixed.into_bytes();
}

/// Writes `members` as `bad.mender` beside the artifact `good` they came
/// from; returns its path.
pub(crate) fn repacked(good: &Path, members: &[(String, Vec<u8>)]) -> PathBuf {
    let out = SimDevice::artifact_dir(good).join("bad.mender");
    repack(members, &out);
    out
}

/// Entries of a gzip header tar, in order.
pub(crate) fn header_entries(gz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut out = Vec::new();
    for e in archive.entries().expect("header tar") {
        let mut e = e.expect("entry");
        let name = String::from_utf8(e.path_bytes().into_owned()).expect("name");
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry");
        out.push((name, data));
    }
    out
}

/// `entries` as a gzip-compressed tar.
pub(crate) fn gzip_tar(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gzip")
}
