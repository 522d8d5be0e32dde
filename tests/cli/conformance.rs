//! Conformance of `mender-rs artifact` with mender-artifact 3.9, in both
//! directions: artifacts written by `mender-artifact` must read the same with
//! `mender-rs artifact read --json`, and artifacts written by
//! `mender-rs artifact write` must pass `mender-artifact validate` and read the
//! same with `mender-artifact read`. zstd artifacts (which mender-artifact 3.9
//! cannot read) are taken apart with `tar`, `zstd` and `sha256sum` instead.
//!
//! Every input (payload files, state scripts, meta-data, keys) is generated at
//! test time. These tests fail (rather than skip) when `mender-artifact`,
//! `openssl`, `tar`, `zstd` or `sha256sum` are not installed.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OURS: &str = env!("CARGO_BIN_EXE_mender-rs");
const REFERENCE: &str = "mender-artifact";

// ---------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------

fn run<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` must be installed to run these tests: {e}"))
}

fn run_in<I, S>(dir: &Path, program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` must be installed to run these tests: {e}"))
}

/// `mender-rs artifact ARGS...`
fn ours<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<OsString> = vec!["artifact".into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
    run(OURS, all)
}

/// `mender-artifact ARGS...`
fn reference<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(REFERENCE, args)
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

#[track_caller]
fn assert_fails(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what} succeeded but should have failed: {}",
        describe(out)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn parse_json(out: &Output, what: &str) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {}", describe(out)))
}

fn os(p: &Path) -> OsString {
    p.as_os_str().to_os_string()
}

// ---------------------------------------------------------------------------
// Inputs: files, keys
// ---------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Deterministic, incompressible-looking bytes (xorshift64*).
fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in seed.bytes() {
        state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    state |= 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Keys made with `openssl`: RSA-3072 (PKCS#1 and PKCS#8) and EC P-256
/// (SEC1 and PKCS#8), plus one unrelated key of each kind.
struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn generate(dir: &Path) -> Keys {
        fs::create_dir_all(dir).expect("create key dir");
        let steps: &[&[&str]] = &[
            &["genrsa", "-traditional", "-out", "rsa.key", "3072"],
            &["rsa", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"],
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "rsa.key", "-out", "rsa8.key",
            ],
            &["genrsa", "-traditional", "-out", "rsa-other.key", "2048"],
            &[
                "rsa",
                "-in",
                "rsa-other.key",
                "-pubout",
                "-out",
                "rsa-other.pub",
            ],
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                "ec.key",
            ],
            &["ec", "-in", "ec.key", "-pubout", "-out", "ec.pub"],
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "ec.key", "-out", "ec8.key",
            ],
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                "ec-other.key",
            ],
            &[
                "ec",
                "-in",
                "ec-other.key",
                "-pubout",
                "-out",
                "ec-other.pub",
            ],
        ];
        for args in steps {
            let out = run_in(dir, "openssl", *args);
            assert_ok(&out, &format!("openssl {args:?}"));
        }
        let keys = Keys {
            dir: dir.to_path_buf(),
        };
        for (name, header) in [
            ("rsa.key", "-----BEGIN RSA PRIVATE KEY-----"),
            ("rsa8.key", "-----BEGIN PRIVATE KEY-----"),
            ("ec.key", "-----BEGIN EC PRIVATE KEY-----"),
            ("ec8.key", "-----BEGIN PRIVATE KEY-----"),
            ("rsa.pub", "-----BEGIN PUBLIC KEY-----"),
            ("ec.pub", "-----BEGIN PUBLIC KEY-----"),
        ] {
            let text = fs::read_to_string(keys.path(name)).expect("read key");
            assert!(
                text.starts_with(header),
                "{name} should start with {header}: {text}"
            );
        }
        keys
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signer {
    Unsigned,
    /// RSA-3072, PKCS#1 private key.
    Rsa,
    /// The same RSA key as PKCS#8.
    Rsa8,
    /// EC P-256, SEC1 private key.
    Ec,
    /// The same EC key as PKCS#8.
    Ec8,
}

impl Signer {
    fn private(self, keys: &Keys) -> Option<PathBuf> {
        match self {
            Signer::Unsigned => None,
            Signer::Rsa => Some(keys.path("rsa.key")),
            Signer::Rsa8 => Some(keys.path("rsa8.key")),
            Signer::Ec => Some(keys.path("ec.key")),
            Signer::Ec8 => Some(keys.path("ec8.key")),
        }
    }

    fn public(self, keys: &Keys) -> Option<PathBuf> {
        match self {
            Signer::Unsigned => None,
            Signer::Rsa | Signer::Rsa8 => Some(keys.path("rsa.pub")),
            Signer::Ec | Signer::Ec8 => Some(keys.path("ec.pub")),
        }
    }

    /// Public keys that must not verify the signature: another key of the
    /// same kind and a key of the other kind.
    fn wrong_publics(self, keys: &Keys) -> Vec<PathBuf> {
        match self {
            Signer::Unsigned => vec![],
            Signer::Rsa | Signer::Rsa8 => vec![keys.path("rsa-other.pub"), keys.path("ec.pub")],
            Signer::Ec | Signer::Ec8 => vec![keys.path("ec-other.pub"), keys.path("rsa.pub")],
        }
    }

    fn expected_state(self) -> Sig {
        if self == Signer::Unsigned {
            Sig::None
        } else {
            Sig::Verified
        }
    }
}

/// `-k PUB` if there is a key, nothing otherwise.
fn key_args(key: &Option<PathBuf>) -> Vec<OsString> {
    match key {
        Some(k) => vec!["-k".into(), os(k)],
        None => vec![],
    }
}

// ---------------------------------------------------------------------------
// The artifact a test asks for
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    label: &'static str,
    /// None: rootfs-image; Some(type): module-image -T type.
    module_type: Option<&'static str>,
    /// Payload files: name and size (a rootfs-image has exactly one).
    files: Vec<(&'static str, usize)>,
    compression: Option<&'static str>,
    /// Put `--compression` before `write` (only for our writer).
    compression_first: bool,
    signer: Signer,
    name: &'static str,
    devices: Vec<&'static str>,
    scripts: Vec<&'static str>,
    provides: Vec<(&'static str, &'static str)>,
    depends: Vec<(&'static str, &'static str)>,
    clears: Vec<&'static str>,
    group: Option<&'static str>,
    depends_groups: Vec<&'static str>,
    name_depends: Vec<&'static str>,
    meta: Option<Value>,
}

impl Case {
    fn rootfs(label: &'static str, size: usize) -> Case {
        Case {
            label,
            module_type: None,
            files: vec![("rootfs.ext4", size)],
            compression: None,
            compression_first: false,
            signer: Signer::Unsigned,
            name: "release-1",
            devices: vec!["raspberrypi4"],
            scripts: vec![],
            provides: vec![],
            depends: vec![],
            clears: vec![],
            group: None,
            depends_groups: vec![],
            name_depends: vec![],
            meta: None,
        }
    }

    fn module(label: &'static str, ty: &'static str, files: Vec<(&'static str, usize)>) -> Case {
        Case {
            module_type: Some(ty),
            files,
            name: "module-release-7",
            ..Case::rootfs(label, 0)
        }
    }

    fn is_zstd(&self) -> bool {
        self.compression == Some("zstd")
    }
}

/// The files a case was materialised into.
struct Inputs {
    files: Vec<PathBuf>,
    scripts: Vec<PathBuf>,
    meta: Option<PathBuf>,
}

/// A test's scratch directory.
struct Work {
    tmp: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            tmp: tempfile::tempdir().expect("create temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn keys(&self) -> Keys {
        Keys::generate(&self.path("keys"))
    }

    /// Writes the case's payload files, scripts and meta-data under
    /// `<label>/`.
    fn materialize(&self, case: &Case) -> Inputs {
        let base = self.path(case.label);
        let files_dir = base.join("files");
        let scripts_dir = base.join("scripts");
        fs::create_dir_all(&files_dir).unwrap();
        fs::create_dir_all(&scripts_dir).unwrap();
        let files = case
            .files
            .iter()
            .map(|(name, size)| {
                let p = files_dir.join(name);
                fs::write(&p, pseudo_random(&format!("{}/{name}", case.label), *size)).unwrap();
                p
            })
            .collect();
        let scripts = case
            .scripts
            .iter()
            .map(|name| {
                let p = scripts_dir.join(name);
                fs::write(&p, format!("#!/bin/sh\n# {name}\nexit 0\n")).unwrap();
                p
            })
            .collect();
        let meta = case.meta.as_ref().map(|m| {
            let p = base.join("meta-data.json");
            fs::write(&p, serde_json::to_vec_pretty(m).unwrap()).unwrap();
            p
        });
        Inputs {
            files,
            scripts,
            meta,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ours,
    Reference,
}

/// The `write ...` command line, the same for both tools (ours is prefixed
/// with `artifact` by [`ours`]).
fn write_args(case: &Case, inputs: &Inputs, keys: &Keys, out: &Path, tool: Tool) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let compression_first = tool == Tool::Ours && case.compression_first;
    if let (true, Some(c)) = (compression_first, case.compression) {
        a.extend(["--compression".into(), c.into()]);
    }
    a.push("write".into());
    match case.module_type {
        None => a.push("rootfs-image".into()),
        Some(t) => a.extend(["module-image".into(), "-T".into(), t.into()]),
    }
    for d in &case.devices {
        a.extend(["-t".into(), (*d).into()]);
    }
    a.extend(["-n".into(), case.name.into(), "-o".into(), os(out)]);
    for f in &inputs.files {
        a.extend(["-f".into(), os(f)]);
    }
    if let Some(k) = case.signer.private(keys) {
        a.extend(["-k".into(), os(&k)]);
    }
    for s in &inputs.scripts {
        a.extend(["-s".into(), os(s)]);
    }
    for (k, v) in &case.provides {
        a.extend(["-p".into(), format!("{k}:{v}").into()]);
    }
    for (k, v) in &case.depends {
        a.extend(["-d".into(), format!("{k}:{v}").into()]);
    }
    for c in &case.clears {
        a.extend(["--clears-provides".into(), (*c).into()]);
    }
    if let Some(g) = case.group {
        a.extend(["-g".into(), g.into()]);
    }
    for g in &case.depends_groups {
        a.extend(["-G".into(), (*g).into()]);
    }
    for n in &case.name_depends {
        a.extend(["-N".into(), (*n).into()]);
    }
    if let Some(m) = &inputs.meta {
        a.extend(["-m".into(), os(m)]);
    }
    if let (false, Some(c)) = (compression_first, case.compression) {
        a.extend(["--compression".into(), c.into()]);
    }
    a
}

// ---------------------------------------------------------------------------
// What an artifact says, as both tools report it
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sig {
    None,
    Verified,
    Unverified,
    Invalid,
}

impl Sig {
    fn from_ours(s: &str) -> Sig {
        match s {
            "none" => Sig::None,
            "verified" => Sig::Verified,
            "unverified" => Sig::Unverified,
            "invalid" => Sig::Invalid,
            other => panic!("unknown signature state from mender-rs: {other:?}"),
        }
    }

    /// mender-artifact read's `Signature:` wording.
    fn from_reference(s: &str) -> Sig {
        if s == "no signature" {
            Sig::None
        } else if s == "signed and verified correctly" {
            Sig::Verified
        } else if s.starts_with("signed but no key for verification provided") {
            Sig::Unverified
        } else if s.starts_with("signed; verification using provided key failed") {
            Sig::Invalid
        } else {
            panic!("unknown signature wording from mender-artifact: {s:?}")
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Dep {
    One(String),
    Any(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FileInfo {
    name: String,
    size: u64,
    sha256: String,
}

#[derive(Clone, Debug, PartialEq)]
struct Payload {
    kind: String,
    provides: BTreeMap<String, String>,
    depends: BTreeMap<String, Dep>,
    /// An empty list counts as none.
    clears: Option<Vec<String>>,
    meta: Option<Value>,
    files: Vec<FileInfo>,
}

#[derive(Clone, Debug, PartialEq)]
struct Summary {
    name: String,
    signature: Sig,
    devices: Vec<String>,
    group: Option<String>,
    depends_names: Vec<String>,
    depends_groups: Vec<String>,
    scripts: Vec<String>,
    payloads: Vec<Payload>,
}

fn file_info(path: &Path) -> FileInfo {
    let bytes = fs::read(path).expect("read input file");
    FileInfo {
        name: path.file_name().unwrap().to_str().unwrap().to_string(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    }
}

/// What both tools must report for `case`, derived from the options and the
/// input files on disk (sizes and sha256 computed here).
fn expected(case: &Case, inputs: &Inputs, signature: Sig) -> Summary {
    let files: Vec<FileInfo> = inputs.files.iter().map(|p| file_info(p)).collect();
    let mut provides = BTreeMap::new();
    let mut clears: Vec<String> = case.clears.iter().map(|c| c.to_string()).collect();
    let kind = match case.module_type {
        None => {
            provides.insert("rootfs-image.checksum".to_string(), files[0].sha256.clone());
            provides.insert("rootfs-image.version".to_string(), case.name.to_string());
            clears.extend(
                ["artifact_group", "rootfs_image_checksum", "rootfs-image.*"].map(String::from),
            );
            "rootfs-image".to_string()
        }
        Some(t) => {
            provides.insert(format!("rootfs-image.{t}.version"), case.name.to_string());
            clears.push(format!("rootfs-image.{t}.*"));
            t.to_string()
        }
    };
    for (k, v) in &case.provides {
        provides.insert(k.to_string(), v.to_string());
    }
    // A repeated -d key accepts any of its values (our writer's reading).
    let mut depends: BTreeMap<String, Dep> = BTreeMap::new();
    for (k, v) in &case.depends {
        let merged = match depends.remove(*k) {
            None => Dep::One(v.to_string()),
            Some(Dep::One(old)) => Dep::Any(vec![old, v.to_string()]),
            Some(Dep::Any(mut l)) => {
                l.push(v.to_string());
                Dep::Any(l)
            }
        };
        depends.insert(k.to_string(), merged);
    }
    Summary {
        name: case.name.to_string(),
        signature,
        devices: case.devices.iter().map(|d| d.to_string()).collect(),
        group: case.group.map(String::from),
        depends_names: case.name_depends.iter().map(|d| d.to_string()).collect(),
        depends_groups: case.depends_groups.iter().map(|d| d.to_string()).collect(),
        scripts: case.scripts.iter().map(|d| d.to_string()).collect(),
        payloads: vec![Payload {
            kind,
            provides,
            depends,
            clears: if clears.is_empty() {
                None
            } else {
                Some(clears)
            },
            meta: case.meta.clone(),
            files,
        }],
    }
}

fn string_list(v: &Value, what: &str) -> Vec<String> {
    match v {
        Value::Null => vec![],
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .unwrap_or_else(|| panic!("{what}: not a string: {i}"))
                    .to_string()
            })
            .collect(),
        other => panic!("{what}: not a string or a list: {other}"),
    }
}

/// Reads `mender-rs artifact read --json` output into a [`Summary`], checking
/// on the way that its redundant fields agree with each other.
fn summary_from_ours(v: &Value) -> Summary {
    assert_eq!(v["format_version"], json!(3), "format_version in {v}");
    let name = v["name"].as_str().expect("name").to_string();
    let group = v["group"].as_str().map(String::from);
    let devices = string_list(&v["compatible_devices"], "compatible_devices");
    // header-info artifact_provides / artifact_depends mirror the fields above.
    assert_eq!(
        v["provides"]["artifact_name"],
        json!(name),
        "provides in {v}"
    );
    match &group {
        Some(g) => assert_eq!(v["provides"]["artifact_group"], json!(g), "{v}"),
        None => assert!(
            v["provides"]
                .get("artifact_group")
                .is_none_or(|g| g.is_null()),
            "no group but provides.artifact_group in {v}"
        ),
    }
    assert_eq!(
        string_list(&v["depends"]["device_type"], "depends.device_type"),
        devices,
        "depends.device_type in {v}"
    );
    let payloads = v["payloads"]
        .as_array()
        .expect("payloads")
        .iter()
        .map(|p| Payload {
            kind: p["type"].as_str().expect("payload type").to_string(),
            provides: p["provides"]
                .as_object()
                .expect("payload provides")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("provide value").to_string()))
                .collect(),
            depends: p["depends"]
                .as_object()
                .expect("payload depends")
                .iter()
                .map(|(k, v)| {
                    let d = match v {
                        Value::String(s) => Dep::One(s.clone()),
                        other => Dep::Any(string_list(other, k)),
                    };
                    (k.clone(), d)
                })
                .collect(),
            clears: Some(string_list(&p["clears_provides"], "clears_provides"))
                .filter(|l| !l.is_empty()),
            meta: Some(p["meta_data"].clone()).filter(|m| !m.is_null()),
            files: p["files"]
                .as_array()
                .expect("files")
                .iter()
                .map(|f| FileInfo {
                    name: f["name"].as_str().expect("file name").to_string(),
                    size: f["size"].as_u64().expect("file size"),
                    sha256: f["sha256"].as_str().expect("file sha256").to_string(),
                })
                .collect(),
        })
        .collect();
    Summary {
        name,
        signature: Sig::from_ours(v["signature"].as_str().expect("signature")),
        devices,
        group,
        depends_names: string_list(&v["depends"]["artifact_name"], "depends.artifact_name"),
        depends_groups: string_list(&v["depends"]["artifact_group"], "depends.artifact_group"),
        scripts: string_list(&v["scripts"], "scripts"),
        payloads,
    }
}

/// `[a, b]` -> ["a", "b"]; `[]` -> [].
fn comma_list(s: &str) -> Vec<String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a bracketed list: {s:?}"));
    inner
        .split(", ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Top,
    Scripts,
    Provides,
    Depends,
    Meta,
    Files,
    Other,
}

/// Parses the text summary `mender-artifact read` prints.
fn parse_reference(text: &str) -> Summary {
    let mut s = Summary {
        name: String::new(),
        signature: Sig::None,
        devices: vec![],
        group: None,
        depends_names: vec![],
        depends_groups: vec![],
        scripts: vec![],
        payloads: vec![],
    };
    let mut seen_name = false;
    let mut seen_signature = false;
    let mut in_updates = false;
    let mut section = Section::Top;
    let mut meta_text = String::new();

    fn current(s: &mut Summary) -> &mut Payload {
        s.payloads.last_mut().expect("payload line before `N:`")
    }
    fn finish_meta(s: &mut Summary, meta_text: &mut String) {
        let v: Value = serde_json::from_str(meta_text)
            .unwrap_or_else(|e| panic!("Metadata is not JSON ({e}): {meta_text}"));
        current(s).meta = Some(v);
        meta_text.clear();
    }

    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('\t') {
            match section {
                Section::Provides => {
                    let (k, v) = rest
                        .split_once(": ")
                        .unwrap_or_else(|| panic!("bad provides line {line:?}"));
                    current(&mut s).provides.insert(k.into(), v.into());
                }
                Section::Depends => {
                    let (k, v) = rest
                        .split_once(": ")
                        .unwrap_or_else(|| panic!("bad depends line {line:?}"));
                    let d = match v.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                        Some(inner) => {
                            Dep::Any(inner.split_whitespace().map(String::from).collect())
                        }
                        None => Dep::One(v.to_string()),
                    };
                    current(&mut s).depends.insert(k.into(), d);
                }
                Section::Meta => {
                    meta_text.push_str(rest);
                    meta_text.push('\n');
                }
                _ => panic!("unexpected indented line {line:?} in\n{text}"),
            }
            continue;
        }
        if section == Section::Meta {
            finish_meta(&mut s, &mut meta_text);
            section = Section::Other;
        }
        let t = line.trim();
        if t.is_empty() {
            if section == Section::Scripts {
                section = Section::Other;
            }
            continue;
        }
        if !in_updates {
            if section == Section::Scripts {
                s.scripts.push(t.to_string());
            } else if let Some(v) = t.strip_prefix("Name:") {
                s.name = v.trim().to_string();
                seen_name = true;
            } else if let Some(v) = t.strip_prefix("Signature:") {
                s.signature = Sig::from_reference(v.trim());
                seen_signature = true;
            } else if let Some(v) = t.strip_prefix("Compatible devices:") {
                let v = v.trim();
                let inner = v
                    .strip_prefix("'[")
                    .and_then(|v| v.strip_suffix("]'"))
                    .unwrap_or_else(|| panic!("bad devices line {line:?}"));
                s.devices = inner.split_whitespace().map(String::from).collect();
            } else if let Some(v) = t.strip_prefix("Provides group:") {
                s.group = Some(v.trim().to_string()).filter(|g| !g.is_empty());
            } else if let Some(v) = t.strip_prefix("Depends on one of artifact(s):") {
                s.depends_names = comma_list(v);
            } else if let Some(v) = t.strip_prefix("Depends on one of group(s):") {
                s.depends_groups = comma_list(v);
            } else if t == "State scripts:" {
                section = Section::Scripts;
            } else if t == "Updates:" {
                in_updates = true;
                section = Section::Other;
            } else if t == "Mender artifact:"
                || t.starts_with("Format:")
                || t.starts_with("Version:")
            {
            } else {
                panic!("unexpected line {line:?} in\n{text}");
            }
            continue;
        }
        if let Some(n) = t.strip_suffix(':').and_then(|n| n.parse::<usize>().ok()) {
            assert_eq!(n, s.payloads.len(), "payload numbering in\n{text}");
            s.payloads.push(Payload {
                kind: String::new(),
                provides: BTreeMap::new(),
                depends: BTreeMap::new(),
                clears: None,
                meta: None,
                files: vec![],
            });
            section = Section::Other;
        } else if section == Section::Files {
            let p = current(&mut s);
            if let Some(v) = t.strip_prefix("name:") {
                p.files.push(FileInfo {
                    name: v.trim().to_string(),
                    size: u64::MAX,
                    sha256: String::new(),
                });
            } else if let Some(v) = t.strip_prefix("size:") {
                p.files.last_mut().expect("size before name").size = v.trim().parse().unwrap();
            } else if let Some(v) = t.strip_prefix("checksum:") {
                p.files.last_mut().expect("checksum before name").sha256 = v.trim().to_string();
            } else if t.starts_with("modified:") {
            } else {
                panic!("unexpected file line {line:?} in\n{text}");
            }
        } else if let Some(v) = t.strip_prefix("Type:") {
            current(&mut s).kind = v.trim().to_string();
        } else if let Some(v) = t.strip_prefix("Provides:") {
            section = if v.trim() == "Nothing" {
                Section::Other
            } else {
                Section::Provides
            };
        } else if let Some(v) = t.strip_prefix("Depends:") {
            section = if v.trim() == "Nothing" {
                Section::Other
            } else {
                Section::Depends
            };
        } else if let Some(v) = t.strip_prefix("Clears Provides:") {
            let list: Vec<String> = serde_json::from_str(v.trim())
                .unwrap_or_else(|e| panic!("bad clears line {line:?}: {e}"));
            current(&mut s).clears = Some(list).filter(|l| !l.is_empty());
            section = Section::Other;
        } else if let Some(v) = t.strip_prefix("Metadata:") {
            section = if v.trim() == "Nothing" {
                Section::Other
            } else {
                assert!(v.trim().is_empty(), "bad metadata line {line:?}");
                Section::Meta
            };
        } else if let Some(v) = t.strip_prefix("Files:") {
            assert!(
                matches!(v.trim(), "" | "None"),
                "bad files line {line:?} in\n{text}"
            );
            section = Section::Files;
        } else {
            panic!("unexpected line {line:?} in\n{text}");
        }
    }
    if section == Section::Meta {
        finish_meta(&mut s, &mut meta_text);
    }
    assert!(seen_name && seen_signature, "no summary in\n{text}");
    s
}

fn scripts_sorted(s: &Summary) -> Summary {
    let mut s = s.clone();
    s.scripts.sort();
    s
}

/// `mender-artifact read ART [-k KEY]`, parsed. It exits 0 even for a bad
/// signature.
fn reference_read(art: &Path, key: &Option<PathBuf>) -> Summary {
    let mut args = vec![OsString::from("read"), os(art)];
    args.extend(key_args(key));
    let out = reference(&args);
    assert_ok(&out, &format!("mender-artifact {args:?}"));
    parse_reference(&stdout(&out))
}

/// `mender-rs artifact read --json ART [-k KEY]...`: the output and whether it
/// succeeded.
fn our_read(art: &Path, keys: &[PathBuf]) -> (Value, bool) {
    let mut args = vec![OsString::from("read"), "--json".into(), os(art)];
    for k in keys {
        args.extend(["-k".into(), os(k)]);
    }
    let out = ours(&args);
    let v = parse_json(&out, &format!("mender-rs artifact {args:?}"));
    (v, out.status.success())
}

fn our_validate(art: &Path, keys: &[PathBuf]) -> Output {
    let mut args = vec![OsString::from("validate"), os(art)];
    for k in keys {
        args.extend(["-k".into(), os(k)]);
    }
    ours(&args)
}

fn reference_validate(art: &Path, key: &Option<PathBuf>) -> Output {
    let mut args = vec![OsString::from("validate"), os(art)];
    args.extend(key_args(key));
    reference(&args)
}

// ---------------------------------------------------------------------------
// 1. Reference -> ours
// ---------------------------------------------------------------------------

/// mender-artifact writes `case`; our `read --json` must agree with
/// `mender-artifact read` and with the options, and our signature checks must
/// accept the right key only.
fn check_reference_artifact(work: &Work, keys: &Keys, case: &Case) {
    let label = case.label;
    let inputs = work.materialize(case);
    let art = work.path(&format!("{label}.reference.mender"));
    let args = write_args(case, &inputs, keys, &art, Tool::Reference);
    assert_ok(
        &reference(&args),
        &format!("{label}: mender-artifact {args:?}"),
    );

    let public = case.signer.public(keys);
    let want = expected(case, &inputs, case.signer.expected_state());
    let theirs = reference_read(&art, &public);
    // mender-artifact stores state scripts in no particular order.
    assert_eq!(
        scripts_sorted(&theirs),
        scripts_sorted(&want),
        "{label}: mender-artifact read vs the options"
    );

    let (json, ok) = our_read(&art, public.as_slice());
    assert!(ok, "{label}: our read --json failed: {json}");
    assert_eq!(
        summary_from_ours(&json),
        theirs,
        "{label}: our read --json vs mender-artifact read"
    );
    assert_ok(
        &our_validate(&art, public.as_slice()),
        &format!("{label}: our validate with the right key"),
    );
    assert_ok(
        &our_validate(&art, &[]),
        &format!("{label}: our validate without keys"),
    );

    match &public {
        Some(public) => {
            // No key: signed but unchecked, and not an error for read.
            let (json, ok) = our_read(&art, &[]);
            assert!(ok, "{label}: our read without keys failed: {json}");
            assert_eq!(json["signature"], "unverified", "{label}");
            assert_eq!(reference_read(&art, &None).signature, Sig::Unverified);

            for wrong in case.signer.wrong_publics(keys) {
                let what = format!("{label} with wrong key {}", wrong.display());
                assert_fails(
                    &our_validate(&art, std::slice::from_ref(&wrong)),
                    &format!("{what}: our validate"),
                );
                assert_fails(
                    &reference_validate(&art, &Some(wrong.clone())),
                    &format!("{what}: mender-artifact validate"),
                );
                let (json, ok) = our_read(&art, std::slice::from_ref(&wrong));
                assert!(!ok, "{what}: our read -k succeeded: {json}");
                assert_eq!(json["signature"], "invalid", "{what}: {json}");
                let theirs_wrong = reference_read(&art, &Some(wrong.clone()));
                assert_eq!(theirs_wrong.signature, Sig::Invalid, "{what}");
                assert_eq!(
                    summary_from_ours(&json),
                    theirs_wrong,
                    "{what}: our read vs mender-artifact read"
                );
                // Keys are tried in order: a right one after a wrong one.
                let both = [wrong.clone(), public.clone()];
                assert_ok(
                    &our_validate(&art, &both),
                    &format!("{what}, then the right key"),
                );
                let (json, ok) = our_read(&art, &both);
                assert!(ok, "{what}, then the right key: {json}");
                assert_eq!(json["signature"], "verified", "{what}, then the right key");
            }
        }
        None => {
            for k in [keys.path("rsa.pub"), keys.path("ec.pub")] {
                let what = format!("{label} (unsigned) with key {}", k.display());
                assert_fails(
                    &our_validate(&art, std::slice::from_ref(&k)),
                    &format!("{what}: our validate"),
                );
                assert_fails(
                    &reference_validate(&art, &Some(k.clone())),
                    &format!("{what}: mender-artifact validate"),
                );
                let (json, ok) = our_read(&art, std::slice::from_ref(&k));
                assert!(!ok, "{what}: our read -k succeeded: {json}");
                assert_eq!(json["signature"], "none", "{what}: {json}");
            }
        }
    }
}

fn flat_meta() -> Value {
    json!({"text": "hello", "number": 42, "fraction": 1.5, "list": ["a", "b", 3]})
}

#[test]
fn reference_rootfs_images_read_the_same() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case::rootfs("plain", 64 << 10),
        Case {
            compression: Some("gzip"),
            signer: Signer::Rsa,
            devices: vec!["beaglebone", "qemux86-64"],
            scripts: vec![
                "ArtifactInstall_Enter_01",
                "ArtifactCommit_Leave_50_x",
                "ArtifactFailure_Error_99",
            ],
            provides: vec![("custom.key", "custom-value"), ("other", "x:y")],
            depends: vec![("board.rev", "3"), ("bootloader", "u-boot")],
            clears: vec!["custom.*", "old_thing"],
            group: Some("production"),
            depends_groups: vec!["staging", "beta"],
            name_depends: vec!["release-0", "release-0.9"],
            ..Case::rootfs("gzip-rsa-everything", 300 << 10)
        },
        Case {
            compression: Some("lzma"),
            signer: Signer::Ec,
            scripts: vec!["ArtifactReboot_Leave_10"],
            group: Some("fleet-a"),
            name_depends: vec!["release-0"],
            ..Case::rootfs("lzma-ec", 200 << 10)
        },
    ];
    for case in &cases {
        check_reference_artifact(&work, &keys, case);
    }
}

#[test]
fn reference_module_images_read_the_same() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case {
            compression: Some("gzip"),
            signer: Signer::Ec,
            provides: vec![("app.flavour", "blue")],
            depends: vec![("app.version", "1.0")],
            meta: Some(flat_meta()),
            ..Case::module(
                "one-file-gzip-ec",
                "single-file",
                vec![("app.bin", 100 << 10)],
            )
        },
        Case {
            signer: Signer::Rsa,
            scripts: vec!["ArtifactInstall_Leave_00", "ArtifactRollback_Enter_05_undo"],
            depends_groups: vec!["lab"],
            ..Case::module(
                "three-files-none-rsa",
                "directory",
                vec![("a.txt", 1000), ("b.bin", 50 << 10), ("c.dat", 3)],
            )
        },
        Case {
            compression: Some("lzma"),
            meta: Some(json!({"dest_dir": "/opt/app", "modes": ["0644"]})),
            clears: vec!["data-partition.*"],
            ..Case::module("empty-file-lzma", "file", vec![("empty.cfg", 0)])
        },
    ];
    for case in &cases {
        check_reference_artifact(&work, &keys, case);
    }
}

#[test]
fn reference_module_images_more_combinations_read_the_same() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case {
            signer: Signer::Ec,
            group: Some("g1"),
            depends_groups: vec!["g0", "g-1"],
            name_depends: vec!["a", "b", "c"],
            clears: vec!["x.*"],
            scripts: vec!["ArtifactCommit_Enter_10"],
            ..Case::module("no-files-ec", "script", vec![])
        },
        Case {
            compression: Some("lzma"),
            signer: Signer::Rsa,
            devices: vec!["dev-a", "dev-b", "dev-c"],
            scripts: vec![
                "ArtifactInstall_Enter_01",
                "ArtifactCommit_Leave_50_x",
                "ArtifactRollbackReboot_Error_02",
            ],
            provides: vec![("data.version", "42")],
            depends: vec![("rootfs-image.version", "release-1")],
            clears: vec!["data.*"],
            group: Some("grp"),
            depends_groups: vec!["grp-old"],
            name_depends: vec!["module-release-6"],
            meta: Some(flat_meta()),
            ..Case::module(
                "three-files-lzma-rsa-everything",
                "data-update",
                vec![("first.img", 120 << 10), ("zero.img", 0), ("third.img", 7)],
            )
        },
        Case {
            compression: Some("gzip"),
            ..Case::module("empty-and-data-gzip", "multi", vec![("z", 0), ("y", 9000)])
        },
    ];
    for case in &cases {
        check_reference_artifact(&work, &keys, case);
    }
}

// ---------------------------------------------------------------------------
// 2. Ours -> reference
// ---------------------------------------------------------------------------

/// We write `case`; mender-artifact must validate it (with the key) and read
/// back what the options asked for; so must our own reader. zstd artifacts
/// are checked with tar/zstd/sha256sum instead of mender-artifact.
fn check_our_artifact(work: &Work, keys: &Keys, case: &Case) {
    let label = case.label;
    let inputs = work.materialize(case);
    let art = work.path(&format!("{label}.ours.mender"));
    let args = write_args(case, &inputs, keys, &art, Tool::Ours);
    assert_ok(
        &ours(&args),
        &format!("{label}: mender-rs artifact {args:?}"),
    );

    let public = case.signer.public(keys);
    let want = expected(case, &inputs, case.signer.expected_state());
    let (json, ok) = our_read(&art, public.as_slice());
    assert!(ok, "{label}: our read --json failed: {json}");
    assert_eq!(
        summary_from_ours(&json),
        want,
        "{label}: our read vs the options"
    );

    if case.is_zstd() {
        check_zstd_members(work, case, &inputs, &art, &json);
        return;
    }
    assert_ok(
        &reference_validate(&art, &public),
        &format!("{label}: mender-artifact validate"),
    );
    assert_eq!(
        reference_read(&art, &public),
        want,
        "{label}: mender-artifact read vs the options"
    );
    if public.is_some() {
        for wrong in case.signer.wrong_publics(keys) {
            assert_fails(
                &reference_validate(&art, &Some(wrong.clone())),
                &format!("{label}: mender-artifact validate -k {}", wrong.display()),
            );
        }
        assert_eq!(reference_read(&art, &None).signature, Sig::Unverified);
    }
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Takes a zstd artifact apart with the system tools.
fn check_zstd_members(work: &Work, case: &Case, inputs: &Inputs, art: &Path, ours_json: &Value) {
    let label = case.label;
    let base = work.path(&format!("{label}.unpacked"));
    let (outer, header) = (base.join("outer"), base.join("header"));
    // Payload files go where the manifest names them: data/0000/NAME.
    let data = outer.join("data").join("0000");
    for d in [&outer, &data, &header] {
        fs::create_dir_all(d).unwrap();
    }

    let listing = run("tar", [OsString::from("-tf"), os(art)]);
    assert_ok(&listing, &format!("{label}: tar -tf"));
    let mut want_members = vec!["version", "manifest"];
    if case.signer != Signer::Unsigned {
        want_members.push("manifest.sig");
    }
    want_members.extend(["header.tar.zst", "data/0000.tar.zst"]);
    assert_eq!(
        stdout(&listing).lines().collect::<Vec<_>>(),
        want_members,
        "{label}: members of the outer tar"
    );
    assert_ok(
        &run(
            "tar",
            [OsString::from("-xf"), os(art), "-C".into(), os(&outer)],
        ),
        &format!("{label}: tar -xf"),
    );
    let version: Value = serde_json::from_slice(&fs::read(outer.join("version")).unwrap()).unwrap();
    assert_eq!(
        version,
        json!({"format": "mender", "version": 3}),
        "{label}"
    );

    // Payload files: extracted by tar's zstd support, hashed by sha256sum.
    assert_ok(
        &run(
            "tar",
            [
                OsString::from("--zstd"),
                "-xf".into(),
                os(&outer.join("data/0000.tar.zst")),
                "-C".into(),
                os(&data),
            ],
        ),
        &format!("{label}: tar --zstd -xf data/0000.tar.zst"),
    );
    let mut want_names: Vec<String> = case.files.iter().map(|(n, _)| n.to_string()).collect();
    want_names.sort();
    assert_eq!(list_dir(&data), want_names, "{label}: payload files");
    for input in &inputs.files {
        let name = input.file_name().unwrap();
        let out = run("sha256sum", [os(&data.join(name))]);
        assert_ok(&out, "sha256sum");
        let got = stdout(&out).split_whitespace().next().unwrap().to_string();
        assert_eq!(got, file_info(input).sha256, "{label}: {name:?} checksum");
    }

    // The manifest lists version, header and every payload file, and its
    // checksums hold, as sha256sum sees them.
    let manifest = fs::read_to_string(outer.join("manifest")).unwrap();
    let mut listed: Vec<String> = manifest
        .lines()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .expect("manifest line")
                .to_string()
        })
        .collect();
    listed.sort();
    let mut want_listed: Vec<String> = case
        .files
        .iter()
        .map(|(n, _)| format!("data/0000/{n}"))
        .chain(["header.tar.zst".to_string(), "version".to_string()])
        .collect();
    want_listed.sort();
    assert_eq!(listed, want_listed, "{label}: manifest entries");
    let check = run_in(&outer, "sha256sum", ["--strict", "-c", "manifest"]);
    assert_ok(&check, &format!("{label}: sha256sum -c manifest"));

    // Header: decompressed by the zstd command, unpacked by tar.
    let header_tar = base.join("header.tar");
    assert_ok(
        &run(
            "zstd",
            [
                OsString::from("-q"),
                "-d".into(),
                os(&outer.join("header.tar.zst")),
                "-o".into(),
                os(&header_tar),
            ],
        ),
        &format!("{label}: zstd -d header.tar.zst"),
    );
    assert_ok(
        &run(
            "tar",
            [
                OsString::from("-xf"),
                os(&header_tar),
                "-C".into(),
                os(&header),
            ],
        ),
        &format!("{label}: tar -xf header.tar"),
    );
    let header_info: Value =
        serde_json::from_slice(&fs::read(header.join("header-info")).unwrap()).unwrap();
    let ty = case.module_type.unwrap_or("rootfs-image");
    assert_eq!(
        header_info["payloads"],
        json!([{"type": ty}]),
        "{label}: {header_info}"
    );
    assert_eq!(
        header_info["artifact_provides"], ours_json["provides"],
        "{label}: header-info provides"
    );
    assert_eq!(
        header_info["artifact_depends"], ours_json["depends"],
        "{label}: header-info depends"
    );
    assert_eq!(
        header_info["artifact_provides"]["artifact_name"],
        json!(case.name)
    );
    assert_eq!(
        header_info["artifact_provides"]
            .get("artifact_group")
            .and_then(Value::as_str),
        case.group,
        "{label}: header-info artifact_group"
    );
    assert_eq!(
        string_list(
            &header_info["artifact_depends"]["device_type"],
            "device_type"
        ),
        case.devices,
        "{label}"
    );
    assert_eq!(
        string_list(
            &header_info["artifact_depends"]["artifact_name"],
            "artifact_name"
        ),
        case.name_depends,
        "{label}"
    );
    assert_eq!(
        string_list(
            &header_info["artifact_depends"]["artifact_group"],
            "artifact_group"
        ),
        case.depends_groups,
        "{label}"
    );

    let type_info: Value =
        serde_json::from_slice(&fs::read(header.join("headers/0000/type-info")).unwrap()).unwrap();
    let payload = &ours_json["payloads"][0];
    assert_eq!(
        type_info["artifact_provides"], payload["provides"],
        "{label}: type-info"
    );
    assert_eq!(
        type_info
            .get("clears_artifact_provides")
            .cloned()
            .unwrap_or(Value::Null),
        payload["clears_provides"],
        "{label}: type-info"
    );
    if case.module_type.is_some() {
        assert_eq!(type_info["type"], json!(ty), "{label}: type-info type");
    }

    let mut want_scripts: Vec<String> = case.scripts.iter().map(|s| s.to_string()).collect();
    want_scripts.sort();
    let scripts_dir = header.join("scripts");
    let got_scripts = if scripts_dir.exists() {
        list_dir(&scripts_dir)
    } else {
        vec![]
    };
    assert_eq!(got_scripts, want_scripts, "{label}: scripts in the header");
    for (path, name) in inputs.scripts.iter().zip(&case.scripts) {
        assert_eq!(
            fs::read(scripts_dir.join(name)).unwrap(),
            fs::read(path).unwrap(),
            "{label}: script {name}"
        );
    }
    if let Some(meta) = &case.meta {
        let got: Value =
            serde_json::from_slice(&fs::read(header.join("headers/0000/meta-data")).unwrap())
                .unwrap();
        assert_eq!(&got, meta, "{label}: meta-data");
    }
}

#[test]
fn our_rootfs_images_pass_reference() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case::rootfs("plain", 64 << 10),
        Case {
            compression: Some("gzip"),
            signer: Signer::Rsa,
            devices: vec!["beaglebone", "qemux86-64"],
            scripts: vec![
                "ArtifactInstall_Enter_01",
                "ArtifactCommit_Leave_50_x",
                "ArtifactFailure_Error_99",
            ],
            provides: vec![("custom.key", "custom-value"), ("other", "x:y")],
            depends: vec![("board.rev", "3"), ("bootloader", "u-boot")],
            clears: vec!["custom.*", "old_thing"],
            group: Some("production"),
            depends_groups: vec!["staging", "beta"],
            name_depends: vec!["release-0", "release-0.9"],
            ..Case::rootfs("gzip-rsa-everything", 300 << 10)
        },
        Case {
            compression: Some("lzma"),
            compression_first: true,
            signer: Signer::Ec,
            scripts: vec!["ArtifactReboot_Leave_10"],
            group: Some("fleet-a"),
            name_depends: vec!["release-0"],
            ..Case::rootfs("lzma-ec", 200 << 10)
        },
        Case {
            compression: Some("xz"),
            signer: Signer::Rsa8,
            ..Case::rootfs("xz-rsa-pkcs8", 100 << 10)
        },
        Case {
            compression: Some("gzip"),
            compression_first: true,
            signer: Signer::Ec8,
            depends_groups: vec!["only-group"],
            ..Case::rootfs("gzip-ec-pkcs8", 30 << 10)
        },
        Case {
            compression: Some("none"),
            signer: Signer::Ec,
            ..Case::rootfs("none-ec", 10 << 10)
        },
    ];
    for case in &cases {
        check_our_artifact(&work, &keys, case);
    }
}

#[test]
fn our_module_images_pass_reference() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case {
            compression: Some("gzip"),
            signer: Signer::Ec,
            provides: vec![("app.flavour", "blue")],
            depends: vec![("app.version", "1.0")],
            meta: Some(flat_meta()),
            ..Case::module(
                "one-file-gzip-ec",
                "single-file",
                vec![("app.bin", 100 << 10)],
            )
        },
        Case {
            signer: Signer::Rsa,
            scripts: vec!["ArtifactInstall_Leave_00", "ArtifactRollback_Enter_05_undo"],
            depends_groups: vec!["lab"],
            ..Case::module(
                "three-files-none-rsa",
                "directory",
                vec![("a.txt", 1000), ("b.bin", 50 << 10), ("c.dat", 3)],
            )
        },
        Case {
            compression: Some("lzma"),
            meta: Some(json!({"dest_dir": "/opt/app", "modes": ["0644"]})),
            clears: vec!["data-partition.*"],
            ..Case::module("empty-file-lzma", "file", vec![("empty.cfg", 0)])
        },
        Case {
            signer: Signer::Ec8,
            group: Some("g1"),
            depends_groups: vec!["g0", "g-1"],
            name_depends: vec!["a", "b", "c"],
            clears: vec!["x.*"],
            scripts: vec!["ArtifactCommit_Enter_10"],
            ..Case::module("no-files-ec-pkcs8", "script", vec![])
        },
        Case {
            compression: Some("lzma"),
            signer: Signer::Rsa8,
            devices: vec!["dev-a", "dev-b", "dev-c"],
            scripts: vec![
                "ArtifactInstall_Enter_01",
                "ArtifactCommit_Leave_50_x",
                "ArtifactRollbackReboot_Error_02",
            ],
            provides: vec![("data.version", "42")],
            depends: vec![("rootfs-image.version", "release-1")],
            clears: vec!["data.*"],
            group: Some("grp"),
            depends_groups: vec!["grp-old"],
            name_depends: vec!["module-release-6"],
            meta: Some(flat_meta()),
            ..Case::module(
                "three-files-lzma-rsa-pkcs8-everything",
                "data-update",
                vec![("first.img", 120 << 10), ("zero.img", 0), ("third.img", 7)],
            )
        },
        // A repeated -d key: we write a list (any of the values), which
        // mender-artifact reads back as such.
        Case {
            compression: Some("gzip"),
            depends: vec![("hw.rev", "1"), ("hw.rev", "2"), ("fw", "x")],
            ..Case::module("repeated-depends", "multi", vec![("z", 0), ("y", 9000)])
        },
    ];
    for case in &cases {
        check_our_artifact(&work, &keys, case);
    }
}

#[test]
fn our_zstd_artifacts_unpack_with_system_tools() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case {
            compression: Some("zstd"),
            ..Case::rootfs("zstd-rootfs", 300 << 10)
        },
        Case {
            compression: Some("zstd"),
            compression_first: true,
            signer: Signer::Rsa8,
            scripts: vec!["ArtifactInstall_Enter_01", "ArtifactCommit_Leave_50_x"],
            provides: vec![("p.one", "1")],
            depends: vec![("d.one", "1")],
            clears: vec!["p.*"],
            group: Some("zgroup"),
            depends_groups: vec!["zg1", "zg2"],
            name_depends: vec!["older"],
            meta: Some(flat_meta()),
            ..Case::module(
                "zstd-three-files-rsa-pkcs8",
                "zfiles",
                vec![("one", 40 << 10), ("two", 0), ("three", 5000)],
            )
        },
        Case {
            compression: Some("zstd"),
            signer: Signer::Ec,
            ..Case::module("zstd-no-files-ec", "znone", vec![])
        },
        Case {
            compression: Some("zstd"),
            signer: Signer::Rsa,
            scripts: vec!["ArtifactFailure_Enter_33"],
            group: Some("g"),
            ..Case::rootfs("zstd-rootfs-rsa", 20 << 10)
        },
    ];
    for case in &cases {
        check_our_artifact(&work, &keys, case);
    }
}

#[test]
fn our_sign_command_produces_signatures_reference_accepts() {
    let work = Work::new();
    let keys = work.keys();

    // An unsigned artifact of ours, signed into a new file.
    let case = Case {
        compression: Some("gzip"),
        scripts: vec!["ArtifactInstall_Enter_01"],
        ..Case::module("to-sign", "signme", vec![("a", 3000), ("b", 0)])
    };
    let inputs = work.materialize(&case);
    let unsigned = work.path("unsigned.mender");
    assert_ok(
        &ours(write_args(&case, &inputs, &keys, &unsigned, Tool::Ours)),
        "write unsigned",
    );
    let signed = work.path("signed-rsa.mender");
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&unsigned),
            "-k".into(),
            os(&keys.path("rsa.key")),
            "-o".into(),
            os(&signed),
        ]),
        "sign -o",
    );
    let rsa_pub = Some(keys.path("rsa.pub"));
    let ec_pub = Some(keys.path("ec.pub"));
    assert_ok(
        &reference_validate(&signed, &rsa_pub),
        "mender-artifact validate of our signed copy",
    );
    assert_eq!(
        reference_read(&signed, &rsa_pub),
        expected(&case, &inputs, Sig::Verified)
    );
    let (json, _) = our_read(&unsigned, &[]);
    assert_eq!(
        json["signature"], "none",
        "sign -o must leave the input alone"
    );
    assert_fails(
        &reference_validate(&unsigned, &rsa_pub),
        "the input is still unsigned",
    );

    // Re-signing needs -f; without it nothing is written.
    let resigned = work.path("resigned-ec.mender");
    let resign = |force: bool| {
        let mut args = vec![
            OsString::from("sign"),
            os(&signed),
            "-k".into(),
            os(&keys.path("ec.key")),
            "-o".into(),
            os(&resigned),
        ];
        if force {
            args.push("-f".into());
        }
        ours(args)
    };
    assert_fails(&resign(false), "sign of a signed artifact without -f");
    assert!(!resigned.exists(), "a refused sign must not write output");
    assert_ok(&resign(true), "sign -f");
    assert_ok(
        &reference_validate(&resigned, &ec_pub),
        "validate re-signed",
    );
    assert_fails(
        &reference_validate(&resigned, &rsa_pub),
        "the old key no longer verifies",
    );

    // A mender-artifact artifact signed in place, with a PKCS#8 EC key.
    let case = Case {
        compression: Some("lzma"),
        group: Some("signed-later"),
        ..Case::rootfs("reference-to-sign", 50 << 10)
    };
    let inputs = work.materialize(&case);
    let art = work.path("reference-unsigned.mender");
    assert_ok(
        &reference(write_args(&case, &inputs, &keys, &art, Tool::Reference)),
        "mender-artifact write",
    );
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&art),
            "-k".into(),
            os(&keys.path("ec8.key")),
        ]),
        "sign in place",
    );
    assert_ok(
        &reference_validate(&art, &ec_pub),
        "mender-artifact validate after in-place sign",
    );
    assert_eq!(
        reference_read(&art, &ec_pub),
        expected(&case, &inputs, Sig::Verified)
    );

    // A mender-artifact signed artifact, re-signed by us with another kind of key.
    let case = Case {
        signer: Signer::Rsa,
        ..Case::module("reference-signed", "resign", vec![("f", 100)])
    };
    let inputs = work.materialize(&case);
    let art = work.path("reference-signed.mender");
    assert_ok(
        &reference(write_args(&case, &inputs, &keys, &art, Tool::Reference)),
        "mender-artifact write -k",
    );
    let out = work.path("reference-resigned.mender");
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&art),
            "-k".into(),
            os(&keys.path("ec.key")),
            "-o".into(),
            os(&out),
            "-f".into(),
        ]),
        "sign -f of a reference-signed artifact",
    );
    assert_ok(
        &reference_validate(&out, &ec_pub),
        "validate with the new key",
    );
    assert_eq!(
        reference_read(&out, &ec_pub),
        expected(&case, &inputs, Sig::Verified)
    );

    // zstd: signed by us, verified by us.
    let case = Case {
        compression: Some("zstd"),
        ..Case::module("zstd-to-sign", "z", vec![("f", 2000)])
    };
    let inputs = work.materialize(&case);
    let art = work.path("zstd-unsigned.mender");
    assert_ok(
        &ours(write_args(&case, &inputs, &keys, &art, Tool::Ours)),
        "write zstd",
    );
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&art),
            "-k".into(),
            os(&keys.path("rsa8.key")),
        ]),
        "sign zstd",
    );
    let (json, ok) = our_read(&art, rsa_pub.as_slice());
    assert!(ok, "{json}");
    assert_eq!(
        summary_from_ours(&json),
        expected(&case, &inputs, Sig::Verified)
    );
    assert_ok(&our_validate(&art, rsa_pub.as_slice()), "validate zstd");
    assert_fails(
        &our_validate(&art, ec_pub.as_slice()),
        "validate zstd, wrong key",
    );
}

// ---------------------------------------------------------------------------
// 2b. Default provides and clears_provides, compared with mender-artifact
// ---------------------------------------------------------------------------

/// Writes the same input with the same options with both tools and returns
/// our `read --json` of each (reference's first), after checking that
/// `mender-artifact read` also sees both the same.
fn both_written(
    work: &Work,
    tag: &str,
    module_type: Option<&str>,
    extra: &[&str],
) -> (Value, Value) {
    let dir = work.path(tag);
    fs::create_dir_all(&dir).unwrap();
    let input = dir.join("payload.img");
    fs::write(&input, pseudo_random(tag, 4096)).unwrap();
    let mut args: Vec<OsString> = vec!["write".into()];
    match module_type {
        None => args.push("rootfs-image".into()),
        Some(t) => args.extend(["module-image".into(), "-T".into(), t.into()]),
    }
    args.extend([
        "-t".into(),
        "dev".into(),
        "-n".into(),
        "name-1".into(),
        "-f".into(),
        os(&input),
    ]);
    args.extend(extra.iter().map(OsString::from));
    let mut views = Vec::new();
    let mut texts = Vec::new();
    for tool in [Tool::Reference, Tool::Ours] {
        let out_path = dir.join(if tool == Tool::Ours {
            "ours.mender"
        } else {
            "reference.mender"
        });
        let mut a = args.clone();
        a.extend(["-o".into(), os(&out_path)]);
        let out = match tool {
            Tool::Ours => ours(&a),
            Tool::Reference => reference(&a),
        };
        assert_ok(&out, &format!("{tag}: write {a:?}"));
        let (json, ok) = our_read(&out_path, &[]);
        assert!(ok, "{tag}: {json}");
        views.push(json);
        texts.push(reference_read(&out_path, &None));
    }
    assert_eq!(
        texts[1], texts[0],
        "{tag}: mender-artifact read, ours (left) vs reference-written (right), options {extra:?}"
    );
    let ours_view = views.pop().unwrap();
    let reference_view = views.pop().unwrap();
    (reference_view, ours_view)
}

#[track_caller]
fn assert_same_defaults(work: &Work, tag: &str, module_type: Option<&str>, extra: &[&str]) {
    let (reference_view, ours_view) = both_written(work, tag, module_type, extra);
    assert_eq!(
        ours_view, reference_view,
        "{tag}: our read --json of ours (left) vs of mender-artifact's (right), options {extra:?}"
    );
}

const SOFTWARE_VARIANTS: &[&[&str]] = &[
    &[],
    &["--software-version", "1.2.3"],
    &["--software-name", "myapp"],
    &["--software-name", "myapp", "--software-version", "2.0"],
    &["--software-filesystem", "myfs"],
    &["--software-filesystem", "myfs", "--software-name", "myapp"],
    &["--software-filesystem", "rootfs-image"],
    &["--no-default-clears-provides"],
    &["--no-default-clears-provides", "--clears-provides", "a.*"],
    &["--software-name", "x", "--no-default-clears-provides"],
    &["--clears-provides", "foo", "--clears-provides", "foo"],
    &["--software-version", "9", "-p", "rootfs-image.version:ov"],
    &[
        "-p",
        "custom:1",
        "--software-filesystem",
        "fs2",
        "--software-version",
        "v2",
    ],
];

#[test]
fn default_provides_match_reference_for_rootfs_images() {
    let work = Work::new();
    let (reference_view, ours_view) = both_written(&work, "rootfs-defaults", None, &[]);
    assert_eq!(ours_view, reference_view);
    let payload = &ours_view["payloads"][0];
    let sha = payload["files"][0]["sha256"].clone();
    assert_eq!(
        payload["provides"],
        json!({"rootfs-image.checksum": sha, "rootfs-image.version": "name-1"})
    );
    assert_eq!(
        payload["clears_provides"],
        json!(["artifact_group", "rootfs_image_checksum", "rootfs-image.*"])
    );

    for (i, extra) in SOFTWARE_VARIANTS.iter().enumerate() {
        assert_same_defaults(&work, &format!("rootfs-{i}"), None, extra);
    }
    for (i, extra) in [
        &["--no-checksum-provide"][..],
        &["--no-checksum-provide", "--software-name", "n"],
        &["--no-default-clears-provides", "--no-checksum-provide"],
    ]
    .iter()
    .enumerate()
    {
        assert_same_defaults(&work, &format!("rootfs-only-{i}"), None, extra);
    }
}

#[test]
fn default_provides_match_reference_for_module_images() {
    let work = Work::new();
    let (reference_view, ours_view) = both_written(&work, "module-defaults", Some("mymod"), &[]);
    assert_eq!(ours_view, reference_view);
    let payload = &ours_view["payloads"][0];
    assert_eq!(
        payload["provides"],
        json!({"rootfs-image.mymod.version": "name-1"})
    );
    assert_eq!(payload["clears_provides"], json!(["rootfs-image.mymod.*"]));

    for (i, extra) in SOFTWARE_VARIANTS.iter().enumerate() {
        assert_same_defaults(&work, &format!("module-{i}"), Some("mymod"), extra);
    }
    assert_same_defaults(
        &work,
        "module-p-after",
        Some("mymod"),
        &[
            "--software-version",
            "9",
            "-p",
            "rootfs-image.mymod.version:ov",
        ],
    );
}

// Divergences from mender-artifact 3.9 found by the comparison above; each is
// one precise case.

#[test]

fn no_default_software_version_drops_default_clears_provides() {
    let work = Work::new();
    assert_same_defaults(&work, "rootfs", None, &["--no-default-software-version"]);
    assert_same_defaults(
        &work,
        "module",
        Some("mymod"),
        &["--no-default-software-version"],
    );
    assert_same_defaults(
        &work,
        "rootfs-nocheck",
        None,
        &["--no-default-software-version", "--no-checksum-provide"],
    );
}

#[test]

fn explicit_software_version_survives_no_default_software_version() {
    let work = Work::new();
    for (i, module_type) in [None, Some("mymod")].into_iter().enumerate() {
        assert_same_defaults(
            &work,
            &format!("v-{i}"),
            module_type,
            &["--no-default-software-version", "--software-version", "9"],
        );
        assert_same_defaults(
            &work,
            &format!("nv-{i}"),
            module_type,
            &[
                "--no-default-software-version",
                "--software-name",
                "z",
                "--software-version",
                "9",
            ],
        );
    }
}

#[test]

fn later_software_option_overrides_provides() {
    let work = Work::new();
    assert_same_defaults(
        &work,
        "rootfs",
        None,
        &["-p", "rootfs-image.version:ov", "--software-version", "9"],
    );
    assert_same_defaults(
        &work,
        "module",
        Some("mymod"),
        &[
            "-p",
            "rootfs-image.mymod.version:ov",
            "--software-version",
            "9",
        ],
    );
}

#[test]

fn clears_provides_equal_to_default_is_not_duplicated() {
    let work = Work::new();
    assert_same_defaults(
        &work,
        "rootfs",
        None,
        &["--clears-provides", "rootfs-image.*"],
    );
    assert_same_defaults(
        &work,
        "module",
        Some("mymod"),
        &["--clears-provides", "rootfs-image.mymod.*"],
    );
}

#[test]

fn rootfs_checksum_provide_is_the_real_checksum() {
    let work = Work::new();
    assert_same_defaults(&work, "rootfs", None, &["-p", "rootfs-image.checksum:abc"]);
}

#[test]

fn nested_meta_data_is_accepted() {
    let work = Work::new();
    let keys = work.keys();
    let case = Case {
        meta: Some(json!({"a": {"b": [1, "x"], "c": {"d": "e"}}, "n": null, "t": true})),
        ..Case::module("nested-meta", "nested", vec![("f", 10)])
    };
    check_reference_artifact(&work, &keys, &case);
    check_our_artifact(&work, &keys, &case);
}

// ---------------------------------------------------------------------------
// 3. Failed writes leave nothing behind
// ---------------------------------------------------------------------------

#[test]
fn failed_writes_leave_nothing() {
    let work = Work::new();
    let keys = work.keys();
    let inputs = work.path("inputs");
    fs::create_dir_all(&inputs).unwrap();
    let good = inputs.join("good.img");
    fs::write(&good, pseudo_random("good", 100 << 10)).unwrap();
    let missing = inputs.join("missing.img");
    let bad_script = inputs.join("Download_Enter_01");
    fs::write(&bad_script, "#!/bin/sh\nexit 0\n").unwrap();
    let good_script = inputs.join("ArtifactInstall_Enter_01");
    fs::write(&good_script, "#!/bin/sh\nexit 0\n").unwrap();
    let missing_key = inputs.join("missing.key");

    let attempts: Vec<(&str, Vec<OsString>)> = vec![
        (
            "rootfs-image, missing -f",
            vec!["rootfs-image".into(), "-f".into(), os(&missing)],
        ),
        (
            "rootfs-image, missing -f, signed, xz",
            vec![
                "rootfs-image".into(),
                "-f".into(),
                os(&missing),
                "-k".into(),
                os(&keys.path("rsa.key")),
                "--compression".into(),
                "xz".into(),
            ],
        ),
        (
            "module-image, second -f missing",
            vec![
                "module-image".into(),
                "-T".into(),
                "t".into(),
                "-f".into(),
                os(&good),
                "-f".into(),
                os(&missing),
            ],
        ),
        (
            "rootfs-image, Download_Enter_01 script",
            vec![
                "rootfs-image".into(),
                "-f".into(),
                os(&good),
                "-s".into(),
                os(&good_script),
                "-s".into(),
                os(&bad_script),
            ],
        ),
        (
            "module-image, Download_Enter_01 script, zstd, signed",
            vec![
                "module-image".into(),
                "-T".into(),
                "t".into(),
                "-f".into(),
                os(&good),
                "-s".into(),
                os(&bad_script),
                "-k".into(),
                os(&keys.path("ec.key")),
                "--compression".into(),
                "zstd".into(),
            ],
        ),
        (
            "module-image, missing script",
            vec![
                "module-image".into(),
                "-T".into(),
                "t".into(),
                "-s".into(),
                os(&inputs.join("ArtifactCommit_Leave_01")),
            ],
        ),
        (
            "rootfs-image, missing key",
            vec![
                "rootfs-image".into(),
                "-f".into(),
                os(&good),
                "-k".into(),
                os(&missing_key),
            ],
        ),
    ];
    for (i, (what, specific)) in attempts.into_iter().enumerate() {
        let out_dir = work.path(&format!("out-{i}"));
        fs::create_dir_all(&out_dir).unwrap();
        let output = out_dir.join("artifact.mender");
        let mut args: Vec<OsString> = vec!["write".into()];
        args.extend(specific);
        args.extend([
            "-t".into(),
            "dev".into(),
            "-n".into(),
            "n".into(),
            "-o".into(),
            os(&output),
        ]);
        let out = ours(&args);
        assert_fails(&out, &format!("{what}: mender-rs artifact {args:?}"));
        assert!(
            !out.stderr.is_empty(),
            "{what}: a failed write should say why"
        );
        assert_eq!(
            list_dir(&out_dir),
            Vec::<String>::new(),
            "{what}: the output directory must stay empty"
        );
    }
    // mender-artifact refuses the script name too.
    let out_dir = work.path("out-reference");
    fs::create_dir_all(&out_dir).unwrap();
    assert_fails(
        &reference([
            OsString::from("write"),
            "rootfs-image".into(),
            "-t".into(),
            "dev".into(),
            "-n".into(),
            "n".into(),
            "-f".into(),
            os(&good),
            "-s".into(),
            os(&bad_script),
            "-o".into(),
            os(&out_dir.join("artifact.mender")),
        ]),
        "mender-artifact write with Download_Enter_01",
    );
}

// ---------------------------------------------------------------------------
// Decoder memory limits against what the tools write
// ---------------------------------------------------------------------------

/// mender-artifact 3.9's `--compression lzma` (no level option) declares a
/// 64 MiB dictionary, whose decoder needs 67174456 bytes: the xz memory
/// limit (`compression::XZ_MEMLIMIT`) must admit it, and does.
#[test]
fn reference_lzma_dictionary_fits_the_xz_memory_limit() {
    let work = Work::new();
    let payload = work.path("rootfs.img");
    fs::write(&payload, pseudo_random("lzma-dict", 64 << 10)).expect("payload");
    let art = work.path("lzma.mender");
    assert_ok(
        &reference([
            os(Path::new("write")),
            "rootfs-image".into(),
            "-t".into(),
            "dev".into(),
            "-n".into(),
            "lzma-1".into(),
            "-f".into(),
            os(&payload),
            "-o".into(),
            os(&art),
            "--compression".into(),
            "lzma".into(),
        ]),
        "mender-artifact write --compression lzma",
    );
    let dir = work.path("x");
    fs::create_dir_all(&dir).expect("dir");
    assert_ok(
        &run_in(&dir, "tar", [OsString::from("xf"), os(&art)]),
        "tar xf",
    );
    let list = run(
        "xz",
        ["--robot", "--list", "-vv"]
            .map(OsString::from)
            .into_iter()
            .chain([os(&dir.join("data/0000.tar.xz"))]),
    );
    assert_ok(&list, "xz --list");
    let text = stdout(&list);
    let block = text
        .lines()
        .find(|l| l.starts_with("block\t"))
        .unwrap_or_else(|| panic!("no block line: {text}"));
    assert!(block.ends_with("--lzma2=dict=64MiB"), "{block}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("summary\t"))
        .unwrap_or_else(|| panic!("no summary line: {text}"));
    let needed: u64 = summary
        .split('\t')
        .nth(1)
        .expect("memory")
        .parse()
        .expect("number");
    assert!(
        needed <= mender_rs::artifact::compression::XZ_MEMLIMIT,
        "{needed}"
    );
    assert_ok(&our_validate(&art, &[]), "mender-rs artifact validate");
}
