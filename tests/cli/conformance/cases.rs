//! The artifact a test asks for, as options for either tool.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct Case {
    pub(super) label: &'static str,
    /// None: rootfs-image; Some(type): module-image -T type.
    pub(super) module_type: Option<&'static str>,
    /// Payload files: name and size (a rootfs-image has exactly one).
    pub(super) files: Vec<(&'static str, usize)>,
    pub(super) compression: Option<&'static str>,
    /// Put `--compression` before `write` (only for our writer).
    pub(super) compression_first: bool,
    pub(super) signer: Signer,
    pub(super) name: &'static str,
    pub(super) devices: Vec<&'static str>,
    pub(super) scripts: Vec<&'static str>,
    pub(super) provides: Vec<(&'static str, &'static str)>,
    pub(super) depends: Vec<(&'static str, &'static str)>,
    pub(super) clears: Vec<&'static str>,
    pub(super) group: Option<&'static str>,
    pub(super) depends_groups: Vec<&'static str>,
    pub(super) name_depends: Vec<&'static str>,
    pub(super) meta: Option<Value>,
}

impl Case {
    pub(super) fn rootfs(label: &'static str, size: usize) -> Case {
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

    pub(super) fn module(
        label: &'static str,
        ty: &'static str,
        files: Vec<(&'static str, usize)>,
    ) -> Case {
        Case {
            module_type: Some(ty),
            files,
            name: "module-release-7",
            ..Case::rootfs(label, 0)
        }
    }

    pub(super) fn is_zstd(&self) -> bool {
        self.compression == Some("zstd")
    }
}

/// The files a case was materialised into.
pub(super) struct Inputs {
    pub(super) files: Vec<PathBuf>,
    pub(super) scripts: Vec<PathBuf>,
    pub(super) meta: Option<PathBuf>,
}

/// A test's scratch directory.
pub(super) struct Work {
    pub(super) tmp: tempfile::TempDir,
}

impl Work {
    pub(super) fn new() -> Work {
        Work {
            tmp: tempfile::tempdir().expect("create temp dir"),
        }
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub(super) fn keys(&self) -> Keys {
        Keys::generate(&self.path("keys"))
    }

    /// Writes the case's payload files, scripts and meta-data under
    /// `<label>/`.
    pub(super) fn materialize(&self, case: &Case) -> Inputs {
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
pub(super) enum Tool {
    Ours,
    Reference,
}

/// The `write ...` command line, the same for both tools (ours is prefixed
/// with `artifact` by [`ours`]).
pub(super) fn write_args(
    case: &Case,
    inputs: &Inputs,
    keys: &Keys,
    out: &Path,
    tool: Tool,
) -> Vec<OsString> {
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

pub(super) fn flat_meta() -> Value {
    json!({"text": "hello", "number": 42, "fraction": 1.5, "list": ["a", "b", 3]})
}

/// The module-image cases both directions check.
pub(super) fn module_cases() -> Vec<Case> {
    vec![
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
    ]
}
