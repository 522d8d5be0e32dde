//! `mender-rs artifact write|sign` (cargo feature `writer`, on by default):
//! the mender-artifact compatible writer. Device builds may leave it out.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::artifact::chunking::{ChunkParams, DEFAULT_AVERAGE};
use crate::artifact::compression::Compression;
use crate::artifact::header::{DependValue, Depends, Provides};
use crate::artifact::manifest::to_hex;
use crate::artifact::signature::SigningKey;
use crate::artifact::writer::{self, ArtifactSpec};
use crate::artifact::{ArtifactError, signer};

use super::EXIT_OK;

#[derive(Subcommand, Debug)]
pub enum WriteCommand {
    /// An artifact with a full root file system image.
    RootfsImage(RootfsArgs),
    /// An artifact for an Update Module.
    ModuleImage(ModuleArgs),
    /// A bootstrap artifact: an empty payload that only gives a freshly
    /// flashed device its name and provides (installed from
    /// `<data dir>/bootstrap.mender` on first start; docs/standalone.md).
    BootstrapArtifact(BootstrapArgs),
}

/// The options `write rootfs-image` and `write module-image` share.
#[derive(Args, Debug)]
struct CommonWriteArgs {
    #[command(flatten)]
    id: IdentityArgs,
    /// Artifact state script (repeatable).
    #[arg(short = 's', long = "script")]
    scripts: Vec<PathBuf>,
    /// Do not add the default clears_artifact_provides.
    #[arg(long)]
    no_default_clears_provides: bool,
    /// Do not add the software version provide.
    #[arg(long)]
    no_default_software_version: bool,
    /// Key for the software version: <filesystem>.NAME.version.
    #[arg(long)]
    software_name: Option<String>,
    /// Value of the software version (default: the artifact name).
    #[arg(long)]
    software_version: Option<String>,
    /// Prefix of the software version key (default: rootfs-image).
    #[arg(long)]
    software_filesystem: Option<String>,
    #[arg(skip)]
    order: OptionOrder,
}

#[derive(Args, Debug)]
pub struct RootfsArgs {
    #[command(flatten)]
    common: CommonWriteArgs,
    /// The root file system image.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Do not add the rootfs-image.checksum provide.
    #[arg(long)]
    no_checksum_provide: bool,
    /// Name the checksum provide rootfs_image_checksum (old clients).
    #[arg(long)]
    legacy_rootfs_image_checksum: bool,
    /// Write the image in independently compressed content-defined chunks,
    /// with a signed chunk index, for adaptive (delta) installs; gzip or
    /// zstd only. Every Mender client still installs it in full
    /// (docs/artifacts.md).
    #[arg(long)]
    chunked: bool,
    /// Average chunk size with --chunked: a power of two from 8K to 1M
    /// (default 32K; docs/measured.md).
    #[arg(long, value_parser = parse_chunk_size, requires = "chunked")]
    chunk_size: Option<u32>,
}

#[derive(Args, Debug)]
pub struct ModuleArgs {
    #[command(flatten)]
    common: CommonWriteArgs,
    /// Payload type: the name of the Update Module on the device.
    #[arg(short = 'T', long = "type")]
    payload_type: String,
    /// Payload file (repeatable; none is fine).
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// JSON file with the payload's meta-data.
    #[arg(short = 'm', long = "meta-data")]
    meta_data: Option<PathBuf>,
}

/// The options every `write` command takes: what the artifact is, what it
/// needs and provides, where it goes and its key.
#[derive(Args, Debug)]
struct IdentityArgs {
    /// Device type the artifact is compatible with (repeatable).
    #[arg(short = 't', long = "device-type", required = true)]
    device_types: Vec<String>,
    /// Name of the artifact.
    #[arg(short = 'n', long = "artifact-name")]
    artifact_name: String,
    /// Output file.
    #[arg(short = 'o', long = "output-path", default_value = "artifact.mender")]
    output: PathBuf,
    /// Private key (RSA or EC P-256, PEM) to sign the artifact with.
    #[arg(short = 'k', long = "key")]
    key: Option<PathBuf>,
    /// KEY:VALUE added to the payload's provides (repeatable).
    #[arg(short = 'p', long = "provides", value_parser = parse_key_value)]
    provides: Vec<(String, String)>,
    /// KEY:VALUE added to the payload's depends (repeatable; a repeated KEY
    /// accepts any of its values).
    #[arg(short = 'd', long = "depends", value_parser = parse_key_value)]
    depends: Vec<(String, String)>,
    /// Group the artifact provides.
    #[arg(short = 'g', long = "provides-group")]
    provides_group: Option<String>,
    /// Group(s) the device must be in (repeatable).
    #[arg(short = 'G', long = "depends-groups")]
    depends_groups: Vec<String>,
    /// Artifact name(s) the device must have installed (repeatable).
    #[arg(short = 'N', long = "artifact-name-depends")]
    artifact_name_depends: Vec<String>,
    /// Wildcard of provides the installation clears (repeatable).
    #[arg(long = "clears-provides")]
    clears_provides: Vec<String>,
    /// Artifact format version; only 3 is written.
    #[arg(short = 'v', long = "version", default_value_t = 3)]
    format_version: u32,
    /// Accepted for compatibility; no progress bar is drawn.
    #[arg(long, hide = true)]
    no_progress: bool,
}

/// mender-artifact's `write bootstrap-artifact` options: no payload file,
/// no scripts and no default software version or clears (the device does
/// not check a bootstrap artifact's signature).
#[derive(Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    id: IdentityArgs,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The artifact to sign.
    file: PathBuf,
    /// Private key (RSA or EC P-256, PEM).
    #[arg(short = 'k', long = "key")]
    key: PathBuf,
    /// Output file (default: replace the input).
    #[arg(short = 'o', long = "output-path")]
    output: Option<PathBuf>,
    /// Replace an existing signature.
    #[arg(short = 'f', long)]
    force: bool,
}

/// `artifact write rootfs-image|module-image`.
pub fn write(
    command: WriteCommand,
    compression: Option<Compression>,
    matches: &clap::ArgMatches,
) -> Result<i32> {
    let write_matches = matches
        .subcommand_matches("artifact")
        .and_then(|m| m.subcommand_matches("write"))
        .and_then(|m| m.subcommand())
        .map(|(_, m)| m);
    match command {
        WriteCommand::RootfsImage(mut a) => {
            a.common.order = OptionOrder::from_matches(write_matches);
            write_rootfs(a, compression)
        }
        WriteCommand::ModuleImage(mut a) => {
            a.common.order = OptionOrder::from_matches(write_matches);
            write_module(a, compression)
        }
        WriteCommand::BootstrapArtifact(a) => write_bootstrap(a, compression),
    }
}

pub fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::from_cli_name(s)
        .ok_or_else(|| format!("unknown compression '{s}' (none, gzip, lzma, xz, zstd)"))
}

fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let (digits, unit) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 1u32 << 10),
        None => match s.strip_suffix(['M', 'm']) {
            Some(d) => (d, 1 << 20),
            None => (s, 1),
        },
    };
    let n: u32 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (bytes, or with K or M)"))?;
    let size = n
        .checked_mul(unit)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    ChunkParams::for_average(size)?;
    Ok(size)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY:VALUE")),
    }
}

/// Applies the options both writers share, with mender-artifact 3.9's
/// defaults for the software version provide and clears_artifact_provides.
fn common_spec(
    c: &CommonWriteArgs,
    payload_type: &str,
    rootfs: bool,
    compression: Option<Compression>,
) -> Result<ArtifactSpec> {
    let base = base_spec(&c.id, compression)?;
    let filesystem = c
        .software_filesystem
        .clone()
        .unwrap_or_else(|| "rootfs-image".into());
    // rootfs-image.version / rootfs-image.NAME.version / FS.TYPE.version ...
    let prefix = match (&c.software_name, rootfs) {
        (Some(name), _) => format!("{filesystem}.{name}"),
        (None, true) => filesystem.clone(),
        (None, false) => format!("{filesystem}.{payload_type}"),
    };
    // As in mender-artifact: --no-default-software-version turns off both the
    // version provide and the default clears, but an explicit
    // --software-version still writes the provide.
    let mut type_provides: Provides = BTreeMap::new();
    if !c.no_default_software_version {
        let version = c
            .software_version
            .clone()
            .unwrap_or_else(|| c.id.artifact_name.clone());
        type_provides.insert(format!("{prefix}.version"), version);
    } else if let Some(version) = &c.software_version {
        // mender-artifact leaves the payload type out of the key here.
        let key = match &c.software_name {
            Some(name) => format!("{filesystem}.{name}.version"),
            None => format!("{filesystem}.version"),
        };
        type_provides.insert(key, version.clone());
    }
    // The user's patterns as given, then each default one not already there.
    let mut clears = base.clears_provides.clone().unwrap_or_default();
    if !c.no_default_clears_provides && !c.no_default_software_version {
        let defaults = if rootfs && c.software_name.is_none() && filesystem == "rootfs-image" {
            ["artifact_group", "rootfs_image_checksum", "rootfs-image.*"]
                .map(String::from)
                .to_vec()
        } else {
            vec![format!("{prefix}.*")]
        };
        for d in defaults {
            if !clears.contains(&d) {
                clears.push(d);
            }
        }
    }
    Ok(ArtifactSpec {
        payload_type: Some(payload_type.to_string()),
        type_provides,
        clears_provides: if clears.is_empty() {
            None
        } else {
            Some(clears)
        },
        scripts: c.scripts.clone(),
        ..base
    })
}

/// The part of the spec every `write` command takes from [`IdentityArgs`].
fn base_spec(id: &IdentityArgs, compression: Option<Compression>) -> Result<ArtifactSpec> {
    if id.format_version != 3 {
        bail!(
            "only artifact format version 3 can be written (asked for {})",
            id.format_version
        );
    }
    Ok(ArtifactSpec {
        name: id.artifact_name.clone(),
        device_types: id.device_types.clone(),
        provides_group: id.provides_group.clone(),
        depends_artifact_names: id.artifact_name_depends.clone(),
        depends_groups: id.depends_groups.clone(),
        type_depends: merge_depends(&id.depends),
        clears_provides: if id.clears_provides.is_empty() {
            None
        } else {
            Some(id.clears_provides.clone())
        },
        compression,
        mtime: source_date_epoch(),
        ..Default::default()
    })
}

/// User -p values win over the default software version, but not over an
/// explicit --software-version (mender-artifact applies that later).
fn add_user_provides(spec: &mut ArtifactSpec, c: &CommonWriteArgs) {
    for (i, (k, v)) in c.id.provides.iter().enumerate() {
        let version_wins = c.software_version.is_some()
            && k.ends_with(".version")
            && spec.type_provides.contains_key(k)
            && c.order.software_version_after(i);
        if !version_wins {
            spec.type_provides.insert(k.clone(), v.clone());
        }
    }
}

/// Where options stood on the command line: mender-artifact lets a
/// `--software-version` given after `-p KEY:V` win for that key, and the
/// `-p` win when it comes later.
#[derive(Debug, Default, Clone)]
struct OptionOrder {
    provides: Vec<usize>,
    software_version: Option<usize>,
}

impl OptionOrder {
    fn from_matches(m: Option<&clap::ArgMatches>) -> Self {
        let Some(m) = m else { return Self::default() };
        OptionOrder {
            provides: m
                .indices_of("provides")
                .map(|i| i.collect())
                .unwrap_or_default(),
            software_version: m.index_of("software_version"),
        }
    }

    fn software_version_after(&self, provides_index: usize) -> bool {
        match (self.software_version, self.provides.get(provides_index)) {
            (Some(sv), Some(p)) => sv > *p,
            _ => true,
        }
    }
}

fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn load_signing_key(path: &Option<PathBuf>) -> Result<Option<SigningKey>> {
    path.as_deref()
        .map(|p| SigningKey::load(p).map_err(anyhow::Error::from))
        .transpose()
}

fn write_rootfs(a: RootfsArgs, compression: Option<Compression>) -> Result<i32> {
    let mut spec = common_spec(&a.common, "rootfs-image", true, compression)?;
    spec.files = vec![a.file.clone()];
    if a.chunked {
        let average = a.chunk_size.unwrap_or(DEFAULT_AVERAGE);
        spec.chunking = Some(ChunkParams::for_average(average).map_err(anyhow::Error::msg)?);
    }
    add_user_provides(&mut spec, &a.common);
    // The checksum provide is always the payload's real one.
    if !a.no_checksum_provide {
        let digest = sha256_file(&a.file)?;
        let key = if a.legacy_rootfs_image_checksum {
            "rootfs_image_checksum"
        } else {
            "rootfs-image.checksum"
        };
        spec.type_provides.insert(key.into(), to_hex(&digest));
    }
    let key = load_signing_key(&a.common.id.key)?;
    writer::write_artifact(&spec, key.as_ref(), &a.common.id.output)?;
    Ok(EXIT_OK)
}

fn write_module(a: ModuleArgs, compression: Option<Compression>) -> Result<i32> {
    let mut spec = common_spec(&a.common, &a.payload_type, false, compression)?;
    spec.files = a.files.clone();
    if let Some(path) = &a.meta_data {
        let text = crate::fsutil::read_bounded(
            path,
            crate::artifact::reader::MAX_HEADER_SIZE,
            "a meta-data file",
        )?;
        let parsed = crate::artifact::header::parse_meta_data(&path.display().to_string(), &text)?;
        spec.meta_data = parsed;
    }
    add_user_provides(&mut spec, &a.common);
    let key = load_signing_key(&a.common.id.key)?;
    writer::write_artifact(&spec, key.as_ref(), &a.common.id.output)?;
    Ok(EXIT_OK)
}

/// `-d KEY:VALUE` options; a repeated KEY accepts any of its values.
fn merge_depends(depends: &[(String, String)]) -> Depends {
    let mut type_depends: Depends = BTreeMap::new();
    for (k, v) in depends {
        let entry = type_depends.remove(k);
        let merged = match entry {
            None => DependValue::One(v.clone()),
            Some(DependValue::One(old)) => DependValue::Any(vec![old, v.clone()]),
            Some(DependValue::Any(mut l)) => {
                l.push(v.clone());
                DependValue::Any(l)
            }
        };
        type_depends.insert(k.clone(), merged);
    }
    type_depends
}

fn write_bootstrap(a: BootstrapArgs, compression: Option<Compression>) -> Result<i32> {
    let spec = ArtifactSpec {
        payload_type: None,
        type_provides: a.id.provides.iter().cloned().collect(),
        ..base_spec(&a.id, compression)?
    };
    let key = load_signing_key(&a.id.key)?;
    writer::write_artifact(&spec, key.as_ref(), &a.id.output)?;
    Ok(EXIT_OK)
}

fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().into())
}

pub fn sign(a: SignArgs) -> Result<i32> {
    let key = SigningKey::load(&a.key)?;
    let output = a.output.clone().unwrap_or_else(|| a.file.clone());
    signer::sign_artifact(&a.file, &key, &output, a.force)
        .map_err(|e: ArtifactError| anyhow::Error::from(e).context(a.file.display().to_string()))?;
    Ok(EXIT_OK)
}
