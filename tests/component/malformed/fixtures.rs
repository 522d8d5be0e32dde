//! The good artifacts every case starts from, written at test time with
//! `write_artifact`.

use super::*;

pub(super) struct Good {
    pub(super) label: &'static str,
    pub(super) compression: Compression,
    pub(super) signer: Option<Key>,
    pub(super) name: String,
    pub(super) scripts: Vec<String>,
    pub(super) files: Vec<(String, Vec<u8>)>,
    pub(super) bytes: Vec<u8>,
}

impl Good {
    /// The keys a reader of this artifact is configured with.
    pub(super) fn keys(&self) -> Vec<VerifyKey> {
        self.signer.map(|k| vec![k.verify()]).unwrap_or_default()
    }
}

pub(super) struct GoodSpec {
    pub(super) label: &'static str,
    pub(super) payload_type: &'static str,
    pub(super) compression: Compression,
    pub(super) signer: Option<Key>,
    pub(super) files: Vec<(&'static str, Vec<u8>)>,
    pub(super) scripts: Vec<(&'static str, Vec<u8>)>,
    pub(super) meta_data: Option<Value>,
}

pub(super) fn good_specs() -> Vec<GoodSpec> {
    vec![
        GoodSpec {
            label: "rootfs-gzip",
            payload_type: "rootfs-image",
            compression: Compression::Gzip,
            signer: None,
            files: vec![("rootfs.ext4", noise(1, 6000))],
            scripts: vec![(
                "ArtifactInstall_Enter_01_hello",
                b"#!/bin/sh\necho hello\n".to_vec(),
            )],
            meta_data: None,
        },
        GoodSpec {
            label: "rootfs-none-ec",
            payload_type: "rootfs-image",
            compression: Compression::None,
            signer: Some(Key::EcA),
            files: vec![("core-image.ext4", noise(2, 5000))],
            scripts: vec![],
            meta_data: None,
        },
        GoodSpec {
            label: "module-xz-rsa",
            payload_type: "single-file",
            compression: Compression::Xz,
            signer: Some(Key::Rsa),
            files: vec![
                ("a.txt", text(3, 700)),
                ("b.bin", noise(4, 1500)),
                ("c,d-e_f.dat", Vec::new()),
            ],
            scripts: vec![("ArtifactCommit_Leave_50", b"#!/bin/sh\nexit 0\n".to_vec())],
            meta_data: Some(json!({"dest_dir": "/opt/app", "count": 3, "list": ["a", 1]})),
        },
        GoodSpec {
            label: "module-zstd",
            payload_type: "script",
            compression: Compression::Zstd,
            signer: None,
            files: vec![
                ("x.sh", b"#!/bin/sh\necho payload\n".to_vec()),
                ("y.json", br#"{"k":"v"}"#.to_vec()),
                ("z.bin", noise(5, 2000)),
            ],
            scripts: vec![
                ("ArtifactInstall_Enter_01", b"#!/bin/sh\ntrue\n".to_vec()),
                (
                    "ArtifactReboot_Leave_10_log",
                    b"#!/bin/sh\nlogger x\n".to_vec(),
                ),
            ],
            meta_data: None,
        },
        GoodSpec {
            label: "module-gzip-ec",
            payload_type: "directory",
            compression: Compression::Gzip,
            signer: Some(Key::EcA),
            files: vec![("one", text(6, 100)), ("two", noise(7, 300))],
            scripts: vec![],
            meta_data: Some(json!({"dest_dir": "/data"})),
        },
    ]
}

pub(super) fn write_good(dir: &Path, spec: GoodSpec) -> Good {
    let sub = dir.join(spec.label);
    std::fs::create_dir_all(sub.join("files")).unwrap();
    std::fs::create_dir_all(sub.join("scripts")).unwrap();
    let mut files = Vec::new();
    for (name, data) in &spec.files {
        let path = sub.join("files").join(name);
        std::fs::write(&path, data).unwrap();
        files.push(path);
    }
    let mut scripts = Vec::new();
    for (name, data) in &spec.scripts {
        let path = sub.join("scripts").join(name);
        std::fs::write(&path, data).unwrap();
        scripts.push(path);
    }
    let name = format!("{}-1.0", spec.label);
    let artifact = ArtifactSpec {
        name: name.clone(),
        device_types: vec!["qemux86-64".into(), "raspberrypi4".into()],
        payload_type: Some(spec.payload_type.into()),
        files,
        scripts,
        compression: Some(spec.compression),
        meta_data: spec.meta_data.map(|v| v.as_object().unwrap().clone()),
        mtime: 1_700_000_000,
        ..Default::default()
    };
    let out = sub.join("artifact.mender");
    let key = spec.signer.map(Key::signing);
    write_artifact(&artifact, key.as_ref(), &out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", spec.label));
    Good {
        label: spec.label,
        compression: spec.compression,
        signer: spec.signer,
        name,
        scripts: spec.scripts.iter().map(|(n, _)| n.to_string()).collect(),
        files: spec
            .files
            .into_iter()
            .map(|(n, d)| (n.to_string(), d))
            .collect(),
        bytes: std::fs::read(&out).unwrap(),
    }
}

pub(super) fn goods() -> &'static [Good] {
    static GOODS: OnceLock<Vec<Good>> = OnceLock::new();
    GOODS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        good_specs()
            .into_iter()
            .map(|spec| write_good(dir.path(), spec))
            .collect()
    })
}

pub(super) fn good(label: &str) -> &'static Good {
    goods().iter().find(|g| g.label == label).unwrap()
}
