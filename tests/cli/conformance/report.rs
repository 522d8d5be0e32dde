//! What an artifact says, as both tools report it, in one comparable form.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sig {
    None,
    Verified,
    Unverified,
    Invalid,
}

impl Sig {
    pub(super) fn from_ours(s: &str) -> Sig {
        match s {
            "none" => Sig::None,
            "verified" => Sig::Verified,
            "unverified" => Sig::Unverified,
            "invalid" => Sig::Invalid,
            other => panic!("unknown signature state from mender-rs: {other:?}"),
        }
    }

    /// mender-artifact read's `Signature:` wording.
    pub(super) fn from_reference(s: &str) -> Sig {
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
pub(super) enum Dep {
    One(String),
    Any(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileInfo {
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Payload {
    pub(super) kind: String,
    pub(super) provides: BTreeMap<String, String>,
    pub(super) depends: BTreeMap<String, Dep>,
    /// An empty list counts as none.
    pub(super) clears: Option<Vec<String>>,
    pub(super) meta: Option<Value>,
    pub(super) files: Vec<FileInfo>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Summary {
    pub(super) name: String,
    pub(super) signature: Sig,
    pub(super) devices: Vec<String>,
    pub(super) group: Option<String>,
    pub(super) depends_names: Vec<String>,
    pub(super) depends_groups: Vec<String>,
    pub(super) scripts: Vec<String>,
    pub(super) payloads: Vec<Payload>,
}

pub(super) fn file_info(path: &Path) -> FileInfo {
    let bytes = fs::read(path).expect("read input file");
    FileInfo {
        name: path.file_name().unwrap().to_str().unwrap().to_string(),
        size: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
    }
}

/// What both tools must report for `case`, derived from the options and the
/// input files on disk (sizes and sha256 computed here).
pub(super) fn expected(case: &Case, inputs: &Inputs, signature: Sig) -> Summary {
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

pub(super) fn string_list(v: &Value, what: &str) -> Vec<String> {
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
pub(super) fn summary_from_ours(v: &Value) -> Summary {
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
pub(super) fn comma_list(s: &str) -> Vec<String> {
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
pub(super) enum Section {
    Top,
    Scripts,
    Provides,
    Depends,
    Meta,
    Files,
    Other,
}

/// Parses the text summary `mender-artifact read` prints.
pub(super) fn parse_reference(text: &str) -> Summary {
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

pub(super) fn scripts_sorted(s: &Summary) -> Summary {
    let mut s = s.clone();
    s.scripts.sort();
    s
}

/// `mender-artifact read ART [-k KEY]`, parsed. It exits 0 even for a bad
/// signature.
pub(super) fn reference_read(art: &Path, key: &Option<PathBuf>) -> Summary {
    let mut args = vec![OsString::from("read"), os(art)];
    args.extend(key_args(key));
    let out = reference(&args);
    assert_ok(&out, &format!("mender-artifact {args:?}"));
    parse_reference(&stdout(&out))
}

/// `mender-rs artifact read --json ART [-k KEY]...`: the output and whether it
/// succeeded.
pub(super) fn our_read(art: &Path, keys: &[PathBuf]) -> (Value, bool) {
    let mut args = vec![OsString::from("read"), "--json".into(), os(art)];
    for k in keys {
        args.extend(["-k".into(), os(k)]);
    }
    let out = ours(&args);
    let v = parse_json(&out, &format!("mender-rs artifact {args:?}"));
    (v, out.status.success())
}

pub(super) fn our_validate(art: &Path, keys: &[PathBuf]) -> Output {
    let mut args = vec![OsString::from("validate"), os(art)];
    for k in keys {
        args.extend(["-k".into(), os(k)]);
    }
    ours(&args)
}

pub(super) fn reference_validate(art: &Path, key: &Option<PathBuf>) -> Output {
    let mut args = vec![OsString::from("validate"), os(art)];
    args.extend(key_args(key));
    reference(&args)
}
