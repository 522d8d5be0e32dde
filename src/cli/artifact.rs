//! `mender-rs artifact ...`: the mender-artifact compatible commands.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::artifact::compression::Compression;
use crate::artifact::header::{ArtifactHeader, DependValue, Depends, Provides};
use crate::artifact::manifest::to_hex;
use crate::artifact::reader::{
    self, Discard, ReadOptions, ReadReport, SignaturePolicy, SignatureState,
};
use crate::artifact::signature::{SigningKey, VerifyKey};
use crate::artifact::writer::{self, ArtifactSpec};
use crate::artifact::{ArtifactError, signer};

use super::{EXIT_ERROR, EXIT_OK};

#[derive(Args, Debug)]
pub struct ArtifactArgs {
    /// Compression of new artifacts: none, gzip, lzma (= xz), xz, zstd.
    #[arg(long, global = true, value_parser = parse_compression)]
    compression: Option<Compression>,

    #[command(subcommand)]
    command: ArtifactCommand,
}

#[derive(Subcommand, Debug)]
enum ArtifactCommand {
    /// Write a new artifact.
    #[command(subcommand)]
    Write(Box<WriteCommand>),
    /// Print an artifact's metadata (checks every checksum on the way).
    Read(ReadArgs),
    /// Check an artifact completely; exit 0 only if it is sound.
    Validate(ValidateArgs),
    /// Sign an existing artifact.
    Sign(SignArgs),
}

#[derive(Subcommand, Debug)]
enum WriteCommand {
    /// An artifact with a full root file system image.
    RootfsImage(RootfsArgs),
    /// An artifact for an Update Module.
    ModuleImage(ModuleArgs),
}

/// The options `write rootfs-image` and `write module-image` share.
#[derive(Args, Debug)]
struct CommonWriteArgs {
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
    /// Artifact state script (repeatable).
    #[arg(short = 's', long = "script")]
    scripts: Vec<PathBuf>,
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
    /// Artifact format version; only 3 is written.
    #[arg(short = 'v', long = "version", default_value_t = 3)]
    format_version: u32,
    /// Accepted for compatibility; no progress bar is drawn.
    #[arg(long, hide = true)]
    no_progress: bool,
    #[arg(skip)]
    order: OptionOrder,
}

#[derive(Args, Debug)]
struct RootfsArgs {
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
}

#[derive(Args, Debug)]
struct ModuleArgs {
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

#[derive(Args, Debug)]
struct SignArgs {
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

pub fn run(args: ArtifactArgs, matches: &clap::ArgMatches) -> Result<i32> {
    let write_matches = matches
        .subcommand_matches("artifact")
        .and_then(|m| m.subcommand_matches("write"))
        .and_then(|m| m.subcommand())
        .map(|(_, m)| m);
    match args.command {
        ArtifactCommand::Write(w) => match *w {
            WriteCommand::RootfsImage(mut a) => {
                a.common.order = OptionOrder::from_matches(write_matches);
                write_rootfs(a, args.compression)
            }
            WriteCommand::ModuleImage(mut a) => {
                a.common.order = OptionOrder::from_matches(write_matches);
                write_module(a, args.compression)
            }
        },
        ArtifactCommand::Read(a) => read(a),
        ArtifactCommand::Validate(a) => validate(a),
        ArtifactCommand::Sign(a) => sign(a),
    }
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    Compression::from_cli_name(s)
        .ok_or_else(|| format!("unknown compression '{s}' (none, gzip, lzma, xz, zstd)"))
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
    if c.format_version != 3 {
        bail!(
            "only artifact format version 3 can be written (asked for {})",
            c.format_version
        );
    }
    let mut type_depends: Depends = BTreeMap::new();
    for (k, v) in &c.depends {
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
            .unwrap_or_else(|| c.artifact_name.clone());
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
    let mut clears = c.clears_provides.clone();
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
        name: c.artifact_name.clone(),
        device_types: c.device_types.clone(),
        provides_group: c.provides_group.clone(),
        depends_artifact_names: c.artifact_name_depends.clone(),
        depends_groups: c.depends_groups.clone(),
        payload_type: Some(payload_type.to_string()),
        type_provides,
        type_depends,
        clears_provides: if clears.is_empty() {
            None
        } else {
            Some(clears)
        },
        scripts: c.scripts.clone(),
        compression,
        mtime: source_date_epoch(),
        ..Default::default()
    })
}

/// User -p values win over the default software version, but not over an
/// explicit --software-version (mender-artifact applies that later).
fn add_user_provides(spec: &mut ArtifactSpec, c: &CommonWriteArgs) {
    for (i, (k, v)) in c.provides.iter().enumerate() {
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
    let key = load_signing_key(&a.common.key)?;
    writer::write_artifact(&spec, key.as_ref(), &a.common.output)?;
    Ok(EXIT_OK)
}

fn write_module(a: ModuleArgs, compression: Option<Compression>) -> Result<i32> {
    let mut spec = common_spec(&a.common, &a.payload_type, false, compression)?;
    spec.files = a.files.clone();
    if let Some(path) = &a.meta_data {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed = crate::artifact::header::parse_meta_data(&path.display().to_string(), &text)?;
        spec.meta_data = parsed;
    }
    add_user_provides(&mut spec, &a.common);
    let key = load_signing_key(&a.common.key)?;
    writer::write_artifact(&spec, key.as_ref(), &a.common.output)?;
    Ok(EXIT_OK)
}

fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize().into())
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

fn sign(a: SignArgs) -> Result<i32> {
    let key = SigningKey::load(&a.key)?;
    let output = a.output.clone().unwrap_or_else(|| a.file.clone());
    signer::sign_artifact(&a.file, &key, &output, a.force)
        .map_err(|e: ArtifactError| anyhow::Error::from(e).context(a.file.display().to_string()))?;
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
    }
    s
}
