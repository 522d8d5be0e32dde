//! `mender-rs artifact ...`: the mender-artifact compatible commands.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::artifact::chunk_index::ChunkIndex;
#[cfg(feature = "writer")]
use crate::artifact::compression::Compression;
use crate::artifact::header::{ArtifactHeader, DependValue, Depends};
use crate::artifact::manifest::to_hex;
use crate::artifact::reader::{
    self, Discard, ReadOptions, ReadReport, SignaturePolicy, SignatureState,
};
use crate::artifact::signature::VerifyKey;

#[cfg(feature = "writer")]
use super::artifact_write::{self, SignArgs, WriteCommand};
use super::{EXIT_ERROR, EXIT_OK};

#[derive(Args, Debug)]
pub struct ArtifactArgs {
    /// Compression of new artifacts: none, gzip, lzma (= xz), xz, zstd.
    #[cfg(feature = "writer")]
    #[arg(long, global = true, value_parser = artifact_write::parse_compression)]
    compression: Option<Compression>,

    #[command(subcommand)]
    command: ArtifactCommand,
}

#[derive(Subcommand, Debug)]
enum ArtifactCommand {
    /// Write a new artifact.
    #[cfg(feature = "writer")]
    #[command(subcommand)]
    Write(Box<WriteCommand>),
    /// Print an artifact's metadata (checks every checksum on the way).
    Read(ReadArgs),
    /// Check an artifact completely; exit 0 only if it is sound.
    Validate(ValidateArgs),
    /// Sign an existing artifact.
    #[cfg(feature = "writer")]
    Sign(SignArgs),
}

#[derive(Args, Debug)]
struct ReadArgs {
    /// The artifact file ('-' for standard input).
    file: PathBuf,
    /// Public key to verify the signature with (repeatable: tried in order).
    #[arg(short = 'k', long = "key")]
    keys: Vec<PathBuf>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ValidateArgs {
    /// The artifact file ('-' for standard input).
    file: PathBuf,
    /// Public key the signature must verify with (repeatable).
    #[arg(short = 'k', long = "key")]
    keys: Vec<PathBuf>,
}

#[cfg_attr(not(feature = "writer"), allow(unused_variables))]
pub fn run(args: ArtifactArgs, matches: &clap::ArgMatches) -> Result<i32> {
    match args.command {
        #[cfg(feature = "writer")]
        ArtifactCommand::Write(w) => artifact_write::write(*w, args.compression, matches),
        ArtifactCommand::Read(a) => read(a),
        ArtifactCommand::Validate(a) => validate(a),
        #[cfg(feature = "writer")]
        ArtifactCommand::Sign(a) => artifact_write::sign(a),
    }
}

fn load_verify_keys(paths: &[PathBuf]) -> Result<Vec<VerifyKey>> {
    paths
        .iter()
        .map(|p| VerifyKey::load(p).map_err(anyhow::Error::from))
        .collect()
}

fn open_input(path: &Path) -> Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(256 << 10, file)))
}

fn read(a: ReadArgs) -> Result<i32> {
    let keys = load_verify_keys(&a.keys)?;
    let options = ReadOptions {
        verify_keys: &keys,
        policy: SignaturePolicy::Report,
        ranges: None,
    };
    let report = reader::read_artifact(open_input(&a.file)?, &options, &mut Discard)
        .map_err(|e| anyhow::Error::from(e).context(a.file.display().to_string()))?;
    let mut out = io::stdout().lock();
    if a.json {
        writeln!(out, "{}", report_json(&report))?;
    } else {
        write!(out, "{}", report_text(&report))?;
    }
    let signature_ok = keys.is_empty() || report.signature == SignatureState::Verified;
    if !signature_ok {
        eprintln!(
            "mender-rs: error: {}: signature {}",
            a.file.display(),
            match report.signature {
                SignatureState::None => "missing, but keys were given",
                _ => "does not verify with the given keys",
            }
        );
    }
    Ok(if signature_ok { EXIT_OK } else { EXIT_ERROR })
}

fn validate(a: ValidateArgs) -> Result<i32> {
    let keys = load_verify_keys(&a.keys)?;
    let options = ReadOptions {
        verify_keys: &keys,
        policy: SignaturePolicy::Enforce,
        ranges: None,
    };
    let report = reader::read_artifact(open_input(&a.file)?, &options, &mut Discard)
        .map_err(|e| anyhow::Error::from(e).context(a.file.display().to_string()))?;
    let signature = match report.signature {
        SignatureState::Verified => "signature verified",
        SignatureState::Unverified => "signed, signature not checked (no key given)",
        _ => "unsigned",
    };
    eprintln!(
        "{}: valid artifact '{}' ({signature})",
        a.file.display(),
        report.header.name
    );
    Ok(EXIT_OK)
}

fn depends_json(d: &Depends) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

/// The stable JSON shape `artifact read --json` prints.
pub fn report_json(r: &ReadReport) -> Value {
    let h = &r.header;
    let payloads: Vec<Value> = h
        .payloads
        .iter()
        .map(|p| {
            json!({
                "type": p.payload_type,
                "provides": p.provides,
                "depends": depends_json(&p.depends),
                "clears_provides": p.clears_provides,
                "meta_data": p.meta_data,
                "files": r.files.iter().map(|f| json!({
                    "name": f.name, "size": f.size, "sha256": to_hex(&f.sha256),
                })).collect::<Vec<_>>(),
                "chunking": p.chunk_index.as_ref().map(chunking_json),
            })
        })
        .collect();
    json!({
        "format_version": h.format_version,
        "name": h.name,
        "group": h.group,
        "compatible_devices": h.compatible_devices,
        "provides": h.provides,
        "depends": depends_json(&h.depends),
        "signature": r.signature.as_str(),
        "scripts": h.scripts.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "payloads": payloads,
    })
}

/// What `read --json` says about a chunked artifact's index.
fn chunking_json(index: &ChunkIndex) -> Value {
    let count = index.chunks.len() as u64;
    json!({
        "compression": index.compression.name(),
        "chunk_count": count,
        "average_chunk_size": index.payload_size.checked_div(count).unwrap_or(0),
        "chunker": {
            "min": index.params.min,
            "avg": index.params.avg,
            "max": index.params.max,
            "align": index.params.align,
        },
        "index_size": index.encoded_len(),
        "data_size": index.data_len(),
    })
}

fn list_of(h: &ArtifactHeader, key: &str) -> String {
    match h.depends.get(key) {
        Some(DependValue::Any(l)) => l.join(", "),
        Some(DependValue::One(s)) => s.clone(),
        None => String::new(),
    }
}

/// The human summary, laid out like `mender-artifact read`.
fn report_text(r: &ReadReport) -> String {
    use std::fmt::Write as _;
    let h = &r.header;
    let mut s = String::new();
    let signature = match r.signature {
        SignatureState::None => "no signature",
        SignatureState::Verified => "signed and verified correctly",
        SignatureState::Unverified => "signed but no key for verification provided",
        SignatureState::Invalid => "signed; verification using the given key(s) FAILED",
    };
    let _ = writeln!(s, "Mender artifact:");
    let _ = writeln!(s, "  Name: {}", h.name);
    let _ = writeln!(s, "  Format: mender");
    let _ = writeln!(s, "  Version: {}", h.format_version);
    let _ = writeln!(s, "  Signature: {signature}");
    let _ = writeln!(
        s,
        "  Compatible devices: [{}]",
        h.compatible_devices.join(", ")
    );
    let _ = writeln!(s, "  Provides group: {}", h.group.as_deref().unwrap_or(""));
    let _ = writeln!(
        s,
        "  Depends on one of artifact(s): [{}]",
        list_of(h, "artifact_name")
    );
    let _ = writeln!(
        s,
        "  Depends on one of group(s): [{}]",
        list_of(h, "artifact_group")
    );
    let _ = writeln!(s, "  State scripts:");
    for script in &h.scripts {
        let _ = writeln!(s, "    {}", script.name);
    }
    let _ = writeln!(s, "\nUpdates:");
    for (i, p) in h.payloads.iter().enumerate() {
        let _ = writeln!(s, "  {i}:");
        let _ = writeln!(
            s,
            "    Type: {}",
            p.payload_type.as_deref().unwrap_or("null")
        );
        let _ = writeln!(
            s,
            "    Provides:{}",
            if p.provides.is_empty() {
                " Nothing"
            } else {
                ""
            }
        );
        for (k, v) in &p.provides {
            let _ = writeln!(s, "      {k}: {v}");
        }
        let _ = writeln!(
            s,
            "    Depends:{}",
            if p.depends.is_empty() { " Nothing" } else { "" }
        );
        for (k, v) in &p.depends {
            let v = match v {
                DependValue::One(x) => x.clone(),
                DependValue::Any(l) => format!("[{}]", l.join(", ")),
            };
            let _ = writeln!(s, "      {k}: {v}");
        }
        match &p.clears_provides {
            Some(c) => {
                let quoted: Vec<String> = c.iter().map(|x| format!("{x:?}")).collect();
                let _ = writeln!(s, "    Clears Provides: [{}]", quoted.join(", "));
            }
            None => {
                let _ = writeln!(s, "    Clears Provides: Nothing");
            }
        }
        match &p.meta_data {
            Some(m) => {
                let _ = writeln!(s, "    Metadata: {}", Value::Object(m.clone()));
            }
            None => {
                let _ = writeln!(s, "    Metadata: Nothing");
            }
        }
        let _ = writeln!(
            s,
            "    Files:{}",
            if r.files.is_empty() { " None" } else { "" }
        );
        for f in &r.files {
            let _ = writeln!(s, "      name:     {}", f.name);
            let _ = writeln!(s, "      size:     {}", f.size);
            let _ = writeln!(s, "      checksum: {}", to_hex(&f.sha256));
        }
        if let Some(index) = &p.chunk_index {
            let count = index.chunks.len() as u64;
            let _ = writeln!(
                s,
                "    Chunked: {count} chunks of {} bytes on average, {} byte index",
                index.payload_size.checked_div(count).unwrap_or(0),
                index.encoded_len()
            );
        }
    }
    s
}
