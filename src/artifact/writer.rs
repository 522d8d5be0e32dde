//! The artifact writer: format version 3, as mender-artifact 3.9 writes it,
//! plus zstd.
//!
//! Payload files are read twice: once to hash them (the manifest, which the
//! signature covers, comes before the data), once to compress them straight
//! into the output. The data member's tar header is written last, by seeking
//! back, so the compressed payload never needs a temporary copy. The output
//! appears under its final name only when complete.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::chunk_index::{self, ChunkIndex};
use super::chunked_writer::{self, FramedFile};
use super::chunking::ChunkParams;
use super::compression::Compression;
use super::header::{DependValue, Depends, Provides};
use super::manifest::{self, Digest};
use super::signature::SigningKey;
use super::{ArtifactError, check_text, valid_payload_file_name};
use crate::fsutil;
use crate::states::{ScriptState, parse_script_name};

/// The `version` member exactly as mender-artifact writes it.
pub const VERSION_V3: &[u8] = br#"{"format":"mender","version":3}"#;

const BLOCK: u64 = 512;

/// Everything that goes into one artifact.
#[derive(Debug, Clone, Default)]
pub struct ArtifactSpec {
    pub name: String,
    pub device_types: Vec<String>,
    pub provides_group: Option<String>,
    pub depends_artifact_names: Vec<String>,
    pub depends_groups: Vec<String>,
    /// None writes an empty (bootstrap) payload.
    pub payload_type: Option<String>,
    pub files: Vec<PathBuf>,
    pub type_provides: Provides,
    pub type_depends: Depends,
    pub clears_provides: Option<Vec<String>>,
    pub meta_data: Option<Map<String, Value>>,
    pub scripts: Vec<PathBuf>,
    pub compression: Option<Compression>,
    /// Write the data member in frames with a chunk index in the header
    /// (rootfs-image only; src/artifact/chunked_writer.rs).
    pub chunking: Option<ChunkParams>,
    /// Modification time written into tar headers (reproducible builds set
    /// it from SOURCE_DATE_EPOCH).
    pub mtime: u64,
}

struct PayloadFile {
    path: PathBuf,
    name: String,
    size: u64,
    sha256: Digest,
}

/// Writes the artifact described by `spec` to `output`, signed with `key`
/// when given. On error nothing is left at `output`.
pub fn write_artifact(
    spec: &ArtifactSpec,
    key: Option<&SigningKey>,
    output: &Path,
) -> Result<(), ArtifactError> {
    let compression = spec.compression.unwrap_or(Compression::Gzip);
    validate_spec(spec)?;
    if spec.chunking.is_some() {
        chunked_writer::check_compression(compression)?;
    }
    let files = hash_files(&spec.files)?;
    let frames = match spec.chunking {
        Some(params) => Some(write_frames(spec, compression, params, &files, output)?),
        None => None,
    };
    let header = build_header(spec, compression, frames.as_ref().map(|(_, index)| index))?;
    let header_name = format!("header.tar{}", compression.suffix());
    let header_digest: Digest = Sha256::digest(&header).into();
    let version_digest: Digest = Sha256::digest(VERSION_V3).into();

    let data_paths: Vec<String> = files
        .iter()
        .map(|f| format!("data/0000/{}", f.name))
        .collect();
    let mut lines: Vec<(&str, &Digest)> = data_paths
        .iter()
        .map(String::as_str)
        .zip(files.iter().map(|f| &f.sha256))
        .collect();
    lines.push((&header_name, &header_digest));
    lines.push(("version", &version_digest));
    let manifest = manifest::format_manifest(lines);
    let signature = match key {
        Some(k) => Some(
            k.sign(manifest.as_bytes())
                .map_err(|e| ArtifactError::Signature(e.to_string()))?,
        ),
        None => None,
    };

    let out_err = |e: io::Error| ArtifactError::io(format!("writing {}", output.display()), e);
    let tmp = fsutil::temp_beside(output, 0o666).map_err(out_err)?;
    {
        let mut out = OuterTar::new(tmp.as_file(), spec.mtime);
        out.append_bytes("version", VERSION_V3).map_err(out_err)?;
        out.append_bytes("manifest", manifest.as_bytes())
            .map_err(out_err)?;
        if let Some(sig) = &signature {
            out.append_bytes("manifest.sig", sig.as_bytes())
                .map_err(out_err)?;
        }
        out.append_bytes(&header_name, &header).map_err(out_err)?;
        match frames {
            Some((mut frames, index)) => {
                let name = format!("data/0000.tar{}", compression.suffix());
                frames.seek(SeekFrom::Start(0)).map_err(out_err)?;
                out.append_reader(&name, index.data_len(), &mut frames)
                    .map_err(out_err)?;
            }
            None if spec.payload_type.is_some() => {
                write_data_member(&mut out, compression, &files, spec.mtime)?;
            }
            None => {}
        }
        out.finish().map_err(out_err)?;
    }
    fsutil::persist(tmp, output).map_err(out_err)
}

/// Compresses the one payload file of a chunked artifact into frames in a
/// temporary file beside `output`; returns the file and the chunk index.
fn write_frames(
    spec: &ArtifactSpec,
    compression: Compression,
    params: ChunkParams,
    files: &[PayloadFile],
    output: &Path,
) -> Result<(File, ChunkIndex), ArtifactError> {
    let [file] = files else {
        return Err(ArtifactError::format(
            "a chunked artifact has exactly one payload file",
        ));
    };
    if spec.payload_type.as_deref() != Some("rootfs-image") {
        return Err(ArtifactError::format(
            "only rootfs-image artifacts can be chunked",
        ));
    }
    chunked_writer::check_compression(compression)?;
    let err = |e: io::Error| ArtifactError::io(format!("writing {}", output.display()), e);
    let tar_header = tar_header(&file.name, file.size, 0o644, spec.mtime).map_err(err)?;
    let mut block = [0u8; 512];
    block.copy_from_slice(tar_header.as_bytes());
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let frames = tempfile::tempfile_in(dir).map_err(err)?;
    let framed = FramedFile {
        path: &file.path,
        tar_header: &block,
        size: file.size,
        sha256: &file.sha256,
    };
    let params = chunked_writer::align_for(&file.path, params)?;
    let index = chunked_writer::write_frames(compression, params, &framed, &frames)?;
    Ok((frames, index))
}

fn validate_spec(spec: &ArtifactSpec) -> Result<(), ArtifactError> {
    let bad = |m: String| Err(ArtifactError::format(m));
    if spec.name.is_empty() {
        return bad("the artifact name is empty".into());
    }
    if spec.device_types.is_empty() || spec.device_types.iter().any(String::is_empty) {
        return bad("at least one non-empty device type is required".into());
    }
    match &spec.payload_type {
        Some(t) if t.is_empty() || t.contains('/') || t == "." || t == ".." => {
            return bad(format!(
                "payload type '{t}' is not a valid Update Module name"
            ));
        }
        None if !spec.files.is_empty() || spec.meta_data.is_some() => {
            return bad("an empty payload takes no files and no meta-data".into());
        }
        _ => {}
    }
    let mut names = Vec::new();
    for f in &spec.files {
        let name = file_name(f)?;
        if !valid_payload_file_name(&name) {
            return bad(format!(
                "{}: payload file names may only use [A-Za-z0-9_.,-]",
                f.display()
            ));
        }
        if names.contains(&name) {
            return bad(format!(
                "{}: a payload file named '{name}' is already included",
                f.display()
            ));
        }
        names.push(name);
    }
    let mut scripts = Vec::new();
    for s in &spec.scripts {
        let name = file_name(s)?;
        if parse_script_name(&name)
            .filter(|s| !s.state.is_rootfs())
            .is_none()
        {
            return bad(format!(
                "{}: state script names must be <State>_<Enter|Leave|Error>_NN[_text] with an Artifact* state ({})",
                s.display(),
                ScriptState::artifact_state_names()
            ));
        }
        if scripts.contains(&name) {
            return bad(format!(
                "{}: a script named '{name}' is already included",
                s.display()
            ));
        }
        scripts.push(name);
    }
    for (k, _) in spec.type_provides.iter() {
        if k == "artifact_name" || k == "artifact_group" {
            return bad(format!(
                "provides key '{k}' is reserved: use the artifact name and group options"
            ));
        }
    }
    for (k, _) in spec.type_depends.iter() {
        if k == "artifact_name" || k == "artifact_group" || k == "device_type" {
            return bad(format!(
                "depends key '{k}' is reserved: use the dedicated options"
            ));
        }
    }
    check_spec_text(spec)
}

/// The reader refuses control characters in every name, key and value and
/// '=' in keys: never write what it would refuse.
fn check_spec_text(spec: &ArtifactSpec) -> Result<(), ArtifactError> {
    const W: &str = "artifact";
    check_text(W, "name", &spec.name, false)?;
    for d in &spec.device_types {
        check_text(W, "device type", d, false)?;
    }
    if let Some(g) = &spec.provides_group {
        check_text(W, "provides group", g, false)?;
    }
    for n in spec
        .depends_artifact_names
        .iter()
        .chain(&spec.depends_groups)
    {
        check_text(W, "depends", n, false)?;
    }
    if let Some(t) = &spec.payload_type {
        check_text(W, "payload type", t, false)?;
    }
    for (k, v) in &spec.type_provides {
        check_text(W, "provides key", k, true)?;
        check_text(W, &format!("provides {k}"), v, false)?;
    }
    for (k, v) in &spec.type_depends {
        check_text(W, "depends key", k, true)?;
        let values = match v {
            DependValue::One(one) => std::slice::from_ref(one),
            DependValue::Any(list) => &list[..],
        };
        for one in values {
            check_text(W, &format!("depends {k}"), one, false)?;
        }
    }
    for c in spec.clears_provides.iter().flatten() {
        check_text(W, "clears_provides", c, false)?;
    }
    Ok(())
}

fn file_name(path: &Path) -> Result<String, ArtifactError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| ArtifactError::format(format!("{}: not a usable file name", path.display())))
}

fn hash_files(paths: &[PathBuf]) -> Result<Vec<PayloadFile>, ArtifactError> {
    let mut buf = vec![0u8; 1 << 20];
    paths
        .iter()
        .map(|path| {
            let err = |e: io::Error| ArtifactError::io(format!("reading {}", path.display()), e);
            let mut file = File::open(path).map_err(err)?;
            if !file.metadata().map_err(err)?.is_file() {
                return Err(ArtifactError::format(format!(
                    "{}: not a regular file",
                    path.display()
                )));
            }
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Ok(PayloadFile {
                path: path.clone(),
                name: file_name(path)?,
                size,
                sha256: hasher.finalize().into(),
            })
        })
        .collect()
}

/// Builds and compresses `header.tar*`.
fn build_header(
    spec: &ArtifactSpec,
    compression: Compression,
    chunks: Option<&ChunkIndex>,
) -> Result<Vec<u8>, ArtifactError> {
    let mut provides = Map::new();
    provides.insert("artifact_name".into(), json!(spec.name));
    if let Some(g) = &spec.provides_group {
        provides.insert("artifact_group".into(), json!(g));
    }
    let mut depends = Map::new();
    depends.insert("device_type".into(), json!(spec.device_types));
    if !spec.depends_artifact_names.is_empty() {
        depends.insert("artifact_name".into(), json!(spec.depends_artifact_names));
    }
    if !spec.depends_groups.is_empty() {
        depends.insert("artifact_group".into(), json!(spec.depends_groups));
    }
    let header_info = json!({
        "payloads": [{"type": spec.payload_type}],
        "artifact_provides": provides,
        "artifact_depends": depends,
    });
    let mut type_info = Map::new();
    type_info.insert("type".into(), json!(spec.payload_type));
    if !spec.type_provides.is_empty() {
        type_info.insert("artifact_provides".into(), json!(spec.type_provides));
    }
    if !spec.type_depends.is_empty() {
        let d: Map<String, Value> = spec
            .type_depends
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    DependValue::One(s) => json!(s),
                    DependValue::Any(l) => json!(l),
                };
                (k.clone(), v)
            })
            .collect();
        type_info.insert("artifact_depends".into(), Value::Object(d));
    }
    if let Some(c) = &spec.clears_provides {
        type_info.insert("clears_artifact_provides".into(), json!(c));
    }
    if let Some(index) = chunks {
        type_info.insert(
            chunk_index::TYPE_INFO_KEY.into(),
            json!(index.encode_base64()),
        );
    }

    let err = |e: io::Error| ArtifactError::io("building the header", e);
    let encoder = compression.encoder(Vec::new()).map_err(err)?;
    let mut tar = tar::Builder::new(encoder);
    let mut plain_size: u64 = 0;
    let mut add = |name: &str, mode: u32, bytes: &[u8]| -> io::Result<()> {
        plain_size += 512 + (bytes.len() as u64).div_ceil(512) * 512;
        let header = tar_header(name, bytes.len() as u64, mode, spec.mtime)?;
        tar.append(&header, bytes)
    };
    add("header-info", 0o644, header_info.to_string().as_bytes()).map_err(err)?;
    for script in &spec.scripts {
        // The whole header must stay under the reader's cap anyway.
        let content = fsutil::read_bounded(
            script,
            super::reader::MAX_HEADER_SIZE,
            "a state script in the artifact header",
        )
        .map_err(|e| ArtifactError::format(e.to_string()))?;
        add(&format!("scripts/{}", file_name(script)?), 0o755, &content).map_err(err)?;
    }
    add(
        "headers/0000/type-info",
        0o644,
        Value::Object(type_info).to_string().as_bytes(),
    )
    .map_err(err)?;
    if spec.payload_type.is_some() {
        let meta = spec
            .meta_data
            .as_ref()
            .map(|m| Value::Object(m.clone()).to_string())
            .unwrap_or_default();
        add("headers/0000/meta-data", 0o644, meta.as_bytes()).map_err(err)?;
    }
    let encoder = tar.into_inner().map_err(err)?;
    let compressed = encoder.finish().map_err(err)?;
    if plain_size > super::reader::MAX_HEADER_SIZE {
        return Err(ArtifactError::format(format!(
            "the header (metadata and state scripts) would be {plain_size} bytes; readers refuse more than {}",
            super::reader::MAX_HEADER_SIZE
        )));
    }
    Ok(compressed)
}

/// Streams the payload files, compressed, into `data/0000.tar*`.
fn write_data_member(
    out: &mut OuterTar<'_>,
    compression: Compression,
    files: &[PayloadFile],
    mtime: u64,
) -> Result<(), ArtifactError> {
    let name = format!("data/0000.tar{}", compression.suffix());
    let out_err = |e: io::Error| ArtifactError::io(format!("writing {name}"), e);
    let start = out.begin_deferred().map_err(out_err)?;
    {
        let sink = CountingWriter::new(BufWriter::with_capacity(1 << 20, out.file()));
        let encoder = compression.encoder(sink).map_err(out_err)?;
        let mut tar = tar::Builder::new(encoder);
        for f in files {
            let err = |e: io::Error| ArtifactError::io(format!("reading {}", f.path.display()), e);
            let file = File::open(&f.path).map_err(err)?;
            let mut reader = HashingReader::new(file.take(f.size));
            let header = tar_header(&f.name, f.size, 0o644, mtime).map_err(out_err)?;
            tar.append(&header, &mut reader).map_err(err)?;
            if reader.count != f.size || reader.finish() != f.sha256 {
                return Err(ArtifactError::format(format!(
                    "{}: the file changed while the artifact was being written",
                    f.path.display()
                )));
            }
        }
        let encoder = tar.into_inner().map_err(out_err)?;
        let sink = encoder.finish().map_err(out_err)?;
        let count = sink.count;
        sink.inner
            .into_inner()
            .map_err(|e| out_err(e.into_error()))?;
        out.finish_deferred(start, &name, count).map_err(out_err)?;
    }
    Ok(())
}

fn tar_header(name: &str, size: u64, mode: u32, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// The outer (uncompressed) tar, written by hand on a seekable file so one
/// member's header can be filled in after its data.
pub(crate) struct OuterTar<'f> {
    file: &'f File,
    mtime: u64,
}

impl<'f> OuterTar<'f> {
    pub(crate) fn new(file: &'f File, mtime: u64) -> Self {
        OuterTar { file, mtime }
    }

    fn file(&self) -> &'f File {
        self.file
    }

    pub(crate) fn append_bytes(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.append_reader(name, bytes.len() as u64, &mut &bytes[..])
    }

    /// Appends a member of `size` bytes read from `reader`.
    pub(crate) fn append_reader(
        &mut self,
        name: &str,
        size: u64,
        reader: &mut dyn Read,
    ) -> io::Result<()> {
        let header = tar_header(name, size, 0o644, self.mtime)?;
        let mut w = BufWriter::with_capacity(1 << 20, self.file);
        w.write_all(header.as_bytes())?;
        let copied = io::copy(&mut reader.take(size), &mut w)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: short read"),
            ));
        }
        w.write_all(&[0u8; BLOCK as usize][..padding(size)])?;
        w.flush()
    }

    /// Reserves a header block; returns its offset.
    fn begin_deferred(&mut self) -> io::Result<u64> {
        let mut f = self.file;
        let start = f.stream_position()?;
        f.write_all(&[0u8; BLOCK as usize])?;
        Ok(start)
    }

    /// Pads the member's data and writes its header at `start`.
    fn finish_deferred(&mut self, start: u64, name: &str, size: u64) -> io::Result<()> {
        let mut f = self.file;
        f.write_all(&[0u8; BLOCK as usize][..padding(size)])?;
        let end = f.stream_position()?;
        let header = tar_header(name, size, 0o644, self.mtime)?;
        f.seek(SeekFrom::Start(start))?;
        f.write_all(header.as_bytes())?;
        f.seek(SeekFrom::Start(end))?;
        Ok(())
    }

    /// Writes the two zero blocks that end a tar archive.
    pub(crate) fn finish(self) -> io::Result<()> {
        let mut f = self.file;
        f.write_all(&[0u8; 2 * BLOCK as usize])?;
        f.flush()
    }
}

fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn finish(self) -> Digest {
        self.hasher.finalize().into()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
