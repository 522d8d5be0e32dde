//! The streaming artifact reader: one forward pass over any `Read`, no seeks,
//! no temporary copies, bounded memory.
//!
//! Order of checks: `version` → `manifest` → signature (when keys are
//! configured) → `header.tar*` against its manifest checksum → the handler's
//! [`ArtifactHandler::header`] → payload files, each hashed while it streams
//! to the handler → every manifest entry seen exactly once.

use std::collections::BTreeSet;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::adaptive::{AdaptivePayload, LocalSource, SharedRanges};
use super::chunk_index;
use super::compression::Compression;
use super::hashing::BackgroundHasher;
use super::header::{self, ArtifactHeader, PayloadHeader, Script};
use super::manifest::{self, Digest, MAX_MANIFEST_SIZE, Manifest};
use super::signature::{self, VerifyKey};
use super::tar_guard::TarGuard;
use super::{ArtifactError, valid_payload_file_name};
use crate::states::is_plain_file_name;

const MAX_VERSION_SIZE: u64 = 4 << 10;
const MAX_SIGNATURE_SIZE: u64 = 64 << 10;
/// Headers hold JSON and state scripts: a few KiB in practice.
pub const MAX_HEADER_SIZE: u64 = 16 << 20;
/// `header-info`, `type-info` and `files` hold names, provides and
/// depends: a few hundred bytes in practice. Their cap also bounds what a
/// commit can add to the store.
pub const MAX_HEADER_JSON_SIZE: u64 = 1 << 20;
/// Every script becomes a file on the device; real artifacts carry a few.
/// (Distinct `<State>_<Action>_NN` names without a suffix number 1800.)
pub const MAX_SCRIPTS: usize = 1000;
/// Payload bytes are handed to the handler in chunks of this size (three of
/// them in flight with the hashing thread). Hashing is the slowest stage of
/// an uncompressed install; 128 KiB chunks halve its hand-overs against
/// 64 KiB (0.37 s instead of 0.41 s for 512 MiB on the benchmark VM).
const CHUNK: usize = 128 << 10;

/// Receives what the reader finds, in order. Every method but `abort` may
/// refuse by returning an error, which stops the read.
pub trait ArtifactHandler {
    /// The header, verified against the manifest (and the signature when
    /// keys are configured). Called before any payload byte is read.
    fn header(&mut self, _header: &ArtifactHeader) -> anyhow::Result<()> {
        Ok(())
    }
    /// A payload file starts; `size` is its length from the tar header.
    fn begin_file(&mut self, _name: &str, _size: u64) -> anyhow::Result<()> {
        Ok(())
    }
    /// The next bytes of the current file.
    fn write(&mut self, _data: &[u8]) -> anyhow::Result<()> {
        Ok(())
    }
    /// The current file is complete and matched its manifest checksum.
    fn end_file(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// The read failed; whatever the handler began must be undone.
    fn abort(&mut self, _error: &ArtifactError) {}
    /// Where earlier images lie on the device, for an adaptive install of a
    /// chunked artifact (asked after `header`). None: always a full install.
    fn local_sources(&mut self) -> Vec<LocalSource> {
        Vec::new()
    }
}

/// A handler that only validates.
pub struct Discard;
impl ArtifactHandler for Discard {}

/// What to do about signatures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SignaturePolicy {
    /// With keys: a missing or bad signature is an error (install, validate).
    Enforce,
    /// Record the signature state and go on reading (`artifact read`).
    Report,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SignatureState {
    /// No `manifest.sig`.
    None,
    /// Signed, and a configured key verified it.
    Verified,
    /// Signed, but no key was configured to check it.
    Unverified,
    /// Signed, and none of the configured keys verified it.
    Invalid,
}

impl SignatureState {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureState::None => "none",
            SignatureState::Verified => "verified",
            SignatureState::Unverified => "unverified",
            SignatureState::Invalid => "invalid",
        }
    }
}

pub struct ReadOptions<'a> {
    pub verify_keys: &'a [VerifyKey],
    pub policy: SignaturePolicy,
    /// The same artifact by byte ranges (an HTTP download whose server
    /// answers `Range`): chunked artifacts then install adaptively.
    pub ranges: Option<SharedRanges>,
}

impl Default for ReadOptions<'_> {
    fn default() -> Self {
        ReadOptions {
            verify_keys: &[],
            policy: SignaturePolicy::Enforce,
            ranges: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileReport {
    pub name: String,
    pub size: u64,
    pub sha256: Digest,
}

#[derive(Debug, Clone)]
pub struct ReadReport {
    pub header: ArtifactHeader,
    pub signature: SignatureState,
    pub files: Vec<FileReport>,
}

/// Reads a whole artifact, streaming payload files to `handler`. On any error
/// the handler's `abort` is called before the error is returned.
pub fn read_artifact<R: Read>(
    input: R,
    options: &ReadOptions,
    handler: &mut dyn ArtifactHandler,
) -> Result<ReadReport, ArtifactError> {
    match Reader::new(options).run(input, handler) {
        Ok(report) => Ok(report),
        Err(e) => {
            handler.abort(&e);
            Err(e)
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy, Debug)]
enum Stage {
    Version,
    Manifest,
    Signature,
    Header,
    Data,
    Done,
}

struct Reader<'o> {
    options: &'o ReadOptions<'o>,
    stage: Stage,
    /// Size of the current outer member, from its tar header.
    member_size: u64,
    /// Offset of the current outer member's content in the artifact.
    member_position: u64,
    /// The payload came by ranges: the rest of the stream is not read.
    adaptive_done: bool,
    format_version: u32,
    version_digest: Option<Digest>,
    manifest: Option<Manifest>,
    manifest_bytes: Vec<u8>,
    /// Manifest paths matched by a member or payload file.
    seen: BTreeSet<String>,
    signature: SignatureState,
    header: Option<ArtifactHeader>,
    files: Vec<FileReport>,
}

impl<'o> Reader<'o> {
    fn new(options: &'o ReadOptions<'o>) -> Self {
        Reader {
            options,
            stage: Stage::Version,
            member_size: 0,
            member_position: 0,
            adaptive_done: false,
            format_version: 0,
            version_digest: None,
            manifest: None,
            manifest_bytes: Vec::new(),
            seen: BTreeSet::new(),
            signature: SignatureState::None,
            header: None,
            files: Vec::new(),
        }
    }

    fn run<R: Read>(
        mut self,
        input: R,
        handler: &mut dyn ArtifactHandler,
    ) -> Result<ReadReport, ArtifactError> {
        let mut archive = tar::Archive::new(TarGuard::new(input));
        let entries = archive
            .entries()
            .map_err(|e| ArtifactError::io("reading artifact", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| outer_tar_error(self.stage, e))?;
            let name = member_name(&entry)?;
            if !matches!(
                entry.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                return Err(ArtifactError::format(format!(
                    "{name}: not a regular file in the artifact tar"
                )));
            }
            // Entry::size honours PAX size records (Go's archive/tar writes
            // them for members of 8 GiB and more).
            let size = entry.size();
            self.member_position = entry.raw_file_position();
            self.member(&name, size, &mut entry, handler)?;
            if self.adaptive_done {
                // Nothing may follow data/0000 but the end of the archive,
                // which is not fetched: every manifest entry was seen.
                break;
            }
        }
        self.finish()
    }

    /// Dispatches one outer member by name and stage.
    fn member(
        &mut self,
        name: &str,
        size: u64,
        entry: &mut impl Read,
        handler: &mut dyn ArtifactHandler,
    ) -> Result<(), ArtifactError> {
        if name == "manifest-augment" || name.starts_with("header-augment") {
            return Err(ArtifactError::format(format!(
                "{name}: augmented artifacts are not supported"
            )));
        }
        self.member_size = size;
        match (self.stage, name) {
            (Stage::Version, "version") => self.version(entry),
            (Stage::Version, other) => Err(ArtifactError::format(format!(
                "first member must be 'version', found '{other}'"
            ))),
            (Stage::Manifest, "manifest") => self.manifest(entry),
            (Stage::Manifest, other) => Err(ArtifactError::format(format!(
                "member 'manifest' must follow 'version', found '{other}'"
            ))),
            (Stage::Signature, "manifest.sig") => self.signature(entry),
            (Stage::Signature | Stage::Header, _)
                if Compression::from_member_name(name, "header").is_some() =>
            {
                self.check_signature_presence()?;
                if let Some(ranges) = &self.options.ranges {
                    // The data member's content follows the header and the
                    // data member's own 512-byte tar header: a download
                    // reads that far and no further until the reader knows
                    // whether the payload can come adaptively.
                    let end = self.member_position + size.div_ceil(512) * 512 + 512;
                    ranges.borrow_mut().stream_until(end);
                }
                self.header(name, entry, handler)
            }
            (Stage::Data, _) if name.starts_with("data/") => self.data(name, entry, handler),
            (Stage::Done, _) if name.starts_with("data/") => Err(ArtifactError::format(format!(
                "{name}: only one payload (data/0000) is supported"
            ))),
            (stage, other) => Err(ArtifactError::format(format!(
                "unexpected member '{other}' {}",
                match stage {
                    Stage::Signature | Stage::Header => "where header.tar* was expected",
                    Stage::Data => "after the header (only data/0000.tar* may follow)",
                    _ => "after the payload",
                }
            ))),
        }
    }

    fn version(&mut self, entry: &mut impl Read) -> Result<(), ArtifactError> {
        let bytes = read_small(entry, "version", self.member_size, MAX_VERSION_SIZE)?;
        self.format_version = header::parse_version(&bytes)?;
        self.version_digest = Some(Sha256::digest(&bytes).into());
        self.stage = Stage::Manifest;
        Ok(())
    }

    fn manifest(&mut self, entry: &mut impl Read) -> Result<(), ArtifactError> {
        let bytes = read_small(entry, "manifest", self.member_size, MAX_MANIFEST_SIZE)?;
        let manifest = Manifest::parse(&bytes)?;
        let digest = self.version_digest.unwrap_or_default();
        self.check_digest(&manifest, "version", &digest)?;
        self.manifest = Some(manifest);
        self.manifest_bytes = bytes;
        self.stage = Stage::Signature;
        Ok(())
    }

    fn signature(&mut self, entry: &mut impl Read) -> Result<(), ArtifactError> {
        let sig = read_small(entry, "manifest.sig", self.member_size, MAX_SIGNATURE_SIZE)?;
        let keys = self.options.verify_keys;
        self.signature = if keys.is_empty() {
            log::warn!(
                "artifact is signed but no verification key is configured; signature not checked"
            );
            SignatureState::Unverified
        } else {
            match signature::verify_with_any(keys, &self.manifest_bytes, &sig) {
                Ok(_) => SignatureState::Verified,
                Err(e) if self.options.policy == SignaturePolicy::Enforce => {
                    return Err(ArtifactError::Signature(format!("manifest.sig: {e}")));
                }
                Err(e) => {
                    log::warn!("manifest.sig: {e}");
                    SignatureState::Invalid
                }
            }
        };
        self.stage = Stage::Header;
        Ok(())
    }

    /// Called when the header arrives: with keys configured an unsigned
    /// artifact stops here, before anything from the header is used.
    fn check_signature_presence(&mut self) -> Result<(), ArtifactError> {
        if self.stage == Stage::Signature
            && !self.options.verify_keys.is_empty()
            && self.options.policy == SignaturePolicy::Enforce
        {
            return Err(ArtifactError::Signature(
                "expecting a signed artifact (verification keys are configured), but it has no manifest.sig".into(),
            ));
        }
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        entry: &mut impl Read,
        handler: &mut dyn ArtifactHandler,
    ) -> Result<(), ArtifactError> {
        let compression = Compression::from_member_name(name, "header")
            .ok_or_else(|| ArtifactError::format(format!("{name}: unknown header compression")))?;
        let stored = read_small(entry, name, self.member_size, MAX_HEADER_SIZE)?;
        let digest: Digest = Sha256::digest(&stored).into();
        let manifest = self.manifest.take().unwrap_or_default();
        // The C++ client looks the header up whatever its suffix; do the same.
        let key = [
            "header.tar",
            "header.tar.gz",
            "header.tar.xz",
            "header.tar.zst",
        ]
        .into_iter()
        .find(|k| *k == name)
        .filter(|k| manifest.get(k).is_some())
        .or_else(|| {
            [
                "header.tar",
                "header.tar.gz",
                "header.tar.xz",
                "header.tar.zst",
            ]
            .into_iter()
            .find(|k| manifest.get(k).is_some())
        })
        .unwrap_or(name);
        let checked = self.check_digest(&manifest, key, &digest);
        self.manifest = Some(manifest);
        checked?;

        let mut header = parse_header_tar(name, compression, &stored, self.format_version)?;
        header.format_version = self.format_version;
        if let Some(ranges) = &self.options.ranges
            && header.payload().is_none_or(|p| p.chunk_index.is_none())
        {
            ranges.borrow_mut().stream_rest();
        }
        handler.header(&header).map_err(ArtifactError::Consumer)?;
        self.header = Some(header);
        self.stage = Stage::Data;
        Ok(())
    }

    fn data(
        &mut self,
        name: &str,
        entry: &mut impl Read,
        handler: &mut dyn ArtifactHandler,
    ) -> Result<(), ArtifactError> {
        let compression = Compression::from_member_name(name, "data/0000").ok_or_else(|| {
            if name.starts_with("data/0") && name.contains(".tar") {
                ArtifactError::format(format!("{name}: only one payload (data/0000) is supported"))
            } else {
                ArtifactError::format(format!("unexpected member '{name}'"))
            }
        })?;
        let header = self.header.take().unwrap_or_default();
        if let Some(index) = header.payload().and_then(|p| p.chunk_index.as_ref()) {
            let checked = check_chunked_member(name, compression, self.member_size, index);
            if let Err(e) = checked {
                self.header = Some(header);
                return Err(e);
            }
        }
        let adaptive = match (
            header.payload().and_then(|p| p.chunk_index.as_ref()),
            self.options.ranges.clone(),
        ) {
            (Some(index), Some(ranges)) if ranges.borrow().ranges_supported() => {
                let sources = handler.local_sources();
                if sources.is_empty() {
                    ranges.borrow_mut().stream_rest();
                    None
                } else {
                    Some(AdaptivePayload::new(
                        name,
                        compression,
                        index,
                        self.member_position,
                        ranges,
                        &sources,
                    ))
                }
            }
            (_, Some(ranges)) => {
                ranges.borrow_mut().stream_rest();
                None
            }
            _ => None,
        };
        let result = match adaptive {
            Some(mut payload) => {
                let result = self.payload_files(name, &mut payload, header.payload(), handler);
                self.adaptive_done = true;
                result
            }
            // Frames of a chunked artifact decode on all cores.
            None => super::frame_decoder::payload_decoder(
                name,
                compression,
                header.payload().and_then(|p| p.chunk_index.as_ref()),
                Box::new(entry),
            )
            .and_then(|mut decoded| {
                self.payload_files(name, &mut decoded, header.payload(), handler)
            }),
        };
        self.header = Some(header);
        result?;
        self.stage = Stage::Done;
        Ok(())
    }

    /// Reads the payload files from the decoded inner tar of the data
    /// member (decompressed, or assembled by the adaptive path).
    fn payload_files(
        &mut self,
        member: &str,
        decoded: &mut dyn Read,
        payload: Option<&PayloadHeader>,
        handler: &mut dyn ArtifactHandler,
    ) -> Result<(), ArtifactError> {
        let mut inner = tar::Archive::new(TarGuard::new(decoded));
        let mut names = BTreeSet::new();
        let files = inner
            .entries()
            .map_err(|e| ArtifactError::io(format!("{member}: reading"), e))?;
        for file in files {
            let mut file = file.map_err(|e| inner_read_error(member, e))?;
            let name = String::from_utf8(file.path_bytes().into_owned()).map_err(|_| {
                ArtifactError::format(format!("{member}: a payload file name is not valid UTF-8"))
            })?;
            if file.header().entry_type() != tar::EntryType::Regular {
                return Err(ArtifactError::format(format!(
                    "{member}: '{name}' is not a regular file (links, devices and directories are refused)"
                )));
            }
            if !valid_payload_file_name(&name) {
                return Err(ArtifactError::format(format!(
                    "{member}: payload file name '{}' must be flat and use only [A-Za-z0-9_.,-]",
                    name.escape_debug()
                )));
            }
            if !names.insert(name.clone()) {
                return Err(ArtifactError::format(format!(
                    "{member}: payload file '{name}' appears twice"
                )));
            }
            if payload.is_none_or(|p| p.payload_type.is_none()) {
                return Err(ArtifactError::format(format!(
                    "{member}: an empty payload (type null) must not contain files, found '{name}'"
                )));
            }
            let path = format!("data/0000/{name}");
            let expected = *self
                .manifest
                .as_ref()
                .and_then(|m| m.get(&path))
                .ok_or_else(|| {
                    ArtifactError::Checksum(format!("{path}: not listed in the manifest"))
                })?;
            let size = file.size();
            if let Some(index) = payload.and_then(|p| p.chunk_index.as_ref())
                && index.payload_size != size
            {
                return Err(ArtifactError::format(format!(
                    "{path}: {size} bytes, but {} says {}",
                    chunk_index::LOCATION,
                    index.payload_size
                )));
            }

            handler
                .begin_file(&name, size)
                .map_err(ArtifactError::Consumer)?;
            // Hashing runs on its own thread, overlapping with the reads,
            // decompression and writes done here.
            let mut hasher = BackgroundHasher::new(CHUNK);
            let mut got: u64 = 0;
            loop {
                let mut buf = hasher.buffer();
                let n = match file.read(&mut buf) {
                    Ok(0) => {
                        hasher.recycle(buf);
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        hasher.recycle(buf);
                        continue;
                    }
                    Err(e) => return Err(inner_read_error(&format!("{member}: {name}"), e)),
                };
                handler.write(&buf[..n]).map_err(ArtifactError::Consumer)?;
                hasher.submit(buf, n);
                got += n as u64;
            }
            if got != size {
                return Err(ArtifactError::format(format!(
                    "{path}: truncated: {got} of {size} bytes"
                )));
            }
            let digest = hasher
                .finish()
                .ok_or_else(|| ArtifactError::format(format!("{path}: hashing failed")))?;
            if digest != expected {
                return Err(ArtifactError::Checksum(format!(
                    "{path}: sha256 is {}, the manifest says {}",
                    manifest::to_hex(&digest),
                    manifest::to_hex(&expected)
                )));
            }
            self.seen.insert(path);
            handler.end_file().map_err(ArtifactError::Consumer)?;
            self.files.push(FileReport {
                name,
                size,
                sha256: digest,
            });
        }
        // Read the decompressed stream to its end so that the compression
        // trailer (CRC, frame checksum) is checked too.
        let mut rest = inner.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| inner_read_error(member, e))?;

        if let Some(v2_files) = payload.and_then(|p| p.v2_files.as_ref()) {
            let announced: BTreeSet<String> = v2_files.iter().cloned().collect();
            if announced != names {
                return Err(ArtifactError::format(format!(
                    "{member}: files {:?} differ from those headers/0000/files announces {:?}",
                    names, announced
                )));
            }
        }
        Ok(())
    }

    fn check_digest(
        &mut self,
        manifest: &Manifest,
        path: &str,
        actual: &Digest,
    ) -> Result<(), ArtifactError> {
        let expected = manifest.get(path).ok_or_else(|| {
            ArtifactError::Checksum(format!("{path}: not listed in the manifest"))
        })?;
        if expected != actual {
            return Err(ArtifactError::Checksum(format!(
                "{path}: sha256 is {}, the manifest says {}",
                manifest::to_hex(actual),
                manifest::to_hex(expected)
            )));
        }
        self.seen.insert(path.to_string());
        Ok(())
    }

    fn finish(mut self) -> Result<ReadReport, ArtifactError> {
        let header = match self.stage {
            Stage::Version => {
                return Err(ArtifactError::format("empty input: no 'version' member"));
            }
            Stage::Manifest => {
                return Err(ArtifactError::format(
                    "truncated: no 'manifest' after 'version'",
                ));
            }
            Stage::Signature | Stage::Header => {
                return Err(ArtifactError::format("truncated: no header.tar* member"));
            }
            Stage::Data | Stage::Done => self.header.take().unwrap_or_default(),
        };
        let empty_payload = header.payload().is_none_or(|p| p.payload_type.is_none());
        if self.stage == Stage::Data && !empty_payload {
            return Err(ArtifactError::format(
                "truncated: no data/0000.tar* member after the header",
            ));
        }
        if let Some(manifest) = &self.manifest {
            let missing: Vec<&String> = manifest
                .iter()
                .map(|(p, _)| p)
                .filter(|p| !self.seen.contains(*p))
                .collect();
            if !missing.is_empty() {
                let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                return Err(ArtifactError::Checksum(format!(
                    "listed in the manifest but not in the artifact: {}",
                    list.join(", ")
                )));
            }
        }
        if self.signature == SignatureState::None && !self.options.verify_keys.is_empty() {
            // Only reachable with SignaturePolicy::Report.
            log::warn!("artifact is not signed");
        }
        Ok(ReadReport {
            header,
            signature: self.signature,
            files: self.files,
        })
    }
}

/// Unpacks and parses the (already checksummed) header tar.
fn parse_header_tar(
    member: &str,
    compression: Compression,
    stored: &[u8],
    format_version: u32,
) -> Result<ArtifactHeader, ArtifactError> {
    // Read as it decompresses, not into a copy: with a chunk index the
    // header is megabytes, and each copy of it is device RAM.
    let mut plain = Capped {
        inner: compression.decoder(member, stored)?,
        left: MAX_HEADER_SIZE,
    };
    let v3 = format_version >= 3;
    let mut header = ArtifactHeader::default();
    let mut have_info = false;
    let mut have_type_info = false;
    let mut have_meta = false;
    let mut have_files = false;
    let mut script_names = BTreeSet::new();
    let mut archive = tar::Archive::new(TarGuard::new(&mut plain));
    let entries = archive.entries().map_err(|e| inner_read_error(member, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| inner_read_error(member, e))?;
        let path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| {
            ArtifactError::format(format!("{member}: an entry name is not valid UTF-8"))
        })?;
        let path = path.strip_prefix("./").unwrap_or(&path).to_string();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory
            && matches!(
                path.trim_end_matches('/'),
                "scripts" | "headers" | "headers/0000"
            )
        {
            continue;
        }
        if kind != tar::EntryType::Regular {
            return Err(ArtifactError::format(format!(
                "{member}: '{path}' is not a regular file"
            )));
        }
        let at = format!("{member}: {path}");
        let cap = match path.as_str() {
            "header-info" | "headers/0000/files" => MAX_HEADER_JSON_SIZE,
            // Larger: it may hold a chunk index (chunk_index.rs).
            "headers/0000/type-info" => chunk_index::MAX_TYPE_INFO_SIZE,
            _ => MAX_HEADER_SIZE,
        };
        let size = entry.size();
        let bytes = read_small(&mut entry, &at, size, cap)?;
        if !have_info && path != "header-info" {
            return Err(ArtifactError::format(format!(
                "{member}: first entry must be 'header-info', found '{path}'"
            )));
        }
        let duplicate = |seen: bool| {
            if seen {
                Err(ArtifactError::format(format!(
                    "{member}: '{path}' appears twice"
                )))
            } else {
                Ok(())
            }
        };
        match path.as_str() {
            "header-info" => {
                duplicate(have_info)?;
                if v3 {
                    header::parse_header_info_v3(&bytes, &mut header)?;
                } else {
                    header::parse_header_info_v2(&bytes, &mut header)?;
                }
                have_info = true;
            }
            "headers/0000/type-info" => {
                duplicate(have_type_info)?;
                let payload = payload_mut(&mut header, member)?;
                header::parse_type_info("headers/0000/type-info", &bytes, v3, payload)?;
                have_type_info = true;
            }
            "headers/0000/meta-data" => {
                duplicate(have_meta)?;
                let meta = header::parse_meta_data("headers/0000/meta-data", &bytes)?;
                let payload = payload_mut(&mut header, member)?;
                if meta.is_some() && payload.payload_type.is_none() {
                    return Err(ArtifactError::format(
                        "headers/0000/meta-data: not allowed for an empty payload (type null)",
                    ));
                }
                payload.meta_data = meta;
                have_meta = true;
            }
            "headers/0000/files" if !v3 => {
                duplicate(have_files)?;
                let files = header::parse_v2_files("headers/0000/files", &bytes)?;
                payload_mut(&mut header, member)?.v2_files = Some(files);
                have_files = true;
            }
            p if p.starts_with("scripts/") => {
                let script = &p["scripts/".len()..];
                if !is_plain_file_name(script)
                    || script.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(ArtifactError::format(format!(
                        "{member}: state script name '{}' is not a plain file name",
                        script.escape_debug()
                    )));
                }
                if !script_names.insert(script.to_string()) {
                    return Err(ArtifactError::format(format!(
                        "{member}: '{p}' appears twice"
                    )));
                }
                if script_names.len() > MAX_SCRIPTS {
                    return Err(ArtifactError::format(format!(
                        "{member}: more than {MAX_SCRIPTS} state scripts"
                    )));
                }
                header.scripts.push(Script {
                    name: script.to_string(),
                    content: bytes,
                });
            }
            p if p.starts_with("headers/") && !p.starts_with("headers/0000/") => {
                return Err(ArtifactError::format(format!(
                    "{member}: '{p}': only one payload (headers/0000) is supported"
                )));
            }
            p => {
                return Err(ArtifactError::format(format!(
                    "{member}: unknown entry '{p}'"
                )));
            }
        }
    }
    drop(archive);
    // The rest of the stream: its end (gzip CRC, zstd checksum) is checked.
    io::copy(&mut plain, &mut io::sink()).map_err(|e| inner_read_error(member, e))?;
    if !have_info {
        return Err(ArtifactError::format(format!("{member}: no header-info")));
    }
    if !have_type_info && v3 {
        return Err(ArtifactError::format(format!(
            "{member}: no headers/0000/type-info"
        )));
    }
    header::check_conflicts(&header)?;
    Ok(header)
}

/// A reader that fails once more than `left` bytes were asked of it: the
/// header's cap, named in the error.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "larger than {} MiB uncompressed",
                    MAX_HEADER_SIZE >> 20
                ))),
            };
        }
        let room = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A chunked artifact's data member must be framed as its index says: the
/// same compression, and exactly as long as the frames.
fn check_chunked_member(
    member: &str,
    compression: Compression,
    size: u64,
    index: &chunk_index::ChunkIndex,
) -> Result<(), ArtifactError> {
    if compression != index.compression {
        return Err(ArtifactError::format(format!(
            "{member}: {} compression, but {} says {}",
            compression.name(),
            chunk_index::LOCATION,
            index.compression.name()
        )));
    }
    if size != index.data_len() {
        return Err(ArtifactError::format(format!(
            "{member}: {size} bytes, but the frames of {} end at byte {}",
            chunk_index::LOCATION,
            index.data_len()
        )));
    }
    Ok(())
}

fn payload_mut<'h>(
    header: &'h mut ArtifactHeader,
    member: &str,
) -> Result<&'h mut PayloadHeader, ArtifactError> {
    header
        .payloads
        .first_mut()
        .ok_or_else(|| ArtifactError::format(format!("{member}: header-info lists no payload")))
}

fn member_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, ArtifactError> {
    String::from_utf8(entry.path_bytes().into_owned())
        .map_err(|_| ArtifactError::format("a member name of the artifact tar is not valid UTF-8"))
}

/// Reads a whole small member, refusing one over `cap` and one shorter than
/// its tar header says (a truncated input).
fn read_small(
    entry: &mut impl Read,
    name: &str,
    size: u64,
    cap: u64,
) -> Result<Vec<u8>, ArtifactError> {
    if size > cap {
        return Err(ArtifactError::format(format!(
            "{name}: {size} bytes is over the limit of {cap}"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ArtifactError::io(format!("{name}: reading"), e))?;
    if bytes.len() as u64 > cap {
        return Err(ArtifactError::format(format!(
            "{name}: larger than the limit of {cap} bytes"
        )));
    }
    if bytes.len() as u64 != size {
        return Err(ArtifactError::format(format!(
            "{name}: truncated: {} of {size} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn outer_tar_error(stage: Stage, e: io::Error) -> ArtifactError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ArtifactError::format(format!("truncated artifact tar ({stage:?} expected next)"))
    } else {
        ArtifactError::format(format!("artifact tar: {e}"))
    }
}

fn inner_read_error(what: &str, e: io::Error) -> ArtifactError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ArtifactError::format(format!("{what}: truncated")),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => {
            ArtifactError::format(format!("{what}: {e}"))
        }
        _ => ArtifactError::io(what.to_string(), e),
    }
}
