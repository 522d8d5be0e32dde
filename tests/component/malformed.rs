//! Robustness of the artifact reader against malformed input.
//!
//! Good artifacts are written at test time with `write_artifact` (every
//! compression, rootfs-image and module-image payloads, signed and unsigned,
//! with state scripts); bad ones are derived from them in memory: truncated,
//! with flipped bytes, with members reordered, duplicated, missing or added,
//! with wrong JSON, unsafe payload names, non-regular tar entries, broken
//! manifests and signatures, oversized members.
//!
//! Every bad input must be refused without a panic, with a non-empty one-line
//! message, with exactly one `abort` call on the handler, and without a
//! payload byte reaching the handler before the header was verified. Each
//! test gathers all violations and reports them together; set
//! `MALFORMED_VERBOSE=1` to print every message.

use std::fmt::Display;
use std::io::{Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use mender_rs::artifact::ArtifactError;
use mender_rs::artifact::compression::Compression;
use mender_rs::artifact::header::ArtifactHeader;
use mender_rs::artifact::reader::{
    ArtifactHandler, ReadOptions, ReadReport, SignaturePolicy, SignatureState, read_artifact,
};
use mender_rs::artifact::signature::{SigningKey, VerifyKey};
use mender_rs::artifact::writer::{ArtifactSpec, write_artifact};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------
// Keys (throw-away test keys made with `openssl genpkey`).

const EC_KEY_A: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcd2s3puoN0FqvsR9
vF5iIu+2tcxd79kDHjewgKFk3d2hRANCAAQ6tfrc2ZhPI01dwgFn5TA0t8sEtWT1
qVl5aKlxoZaEQuPipcTRShLtSm638GPQBX50R7XRTefXlllF6kGBZuw6
-----END PRIVATE KEY-----
";

const EC_KEY_B: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgu8aZt02WZSrF1CpN
FrCLPWI8L6LZl18CDtlJO5z4zJKhRANCAASZZh4R36Zh0WAJT0JF9OFXSnGx4AX2
1r08lq2goYr56utnIDVjhFGt+jCZN/WrnZ4VF0VOOCjFZB4rRlJ/yt8Z
-----END PRIVATE KEY-----
";

const RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCY/pUz184ZUWN+
R2lPV5ANztgxnvsi//ZObSlkgzp6WkDUxldXsIS2Bwk8hsp7qAXU47hP7PSytJAj
/EXPZfRHHLm+69oTgjXYF4RRQHSVezZ35IIbNT+pOOzJA5i9yk1mLx3m6XlklQrp
T5EOLVcPg238KsPFTJozP3Wz9+5wlepPDVDTztUK+TgmINXtuoxVqtrrAZC/tyTK
p0XZkFM+uaT5b2LcrLUakk/fc83fBjInSfsgq988udBWkgmuYaxxu9AUFYrjaKrt
WJpigvqGy1L4vkiLiCAGbmHe/5dXXQ1ScYaKWuOehEUOJ09TtFem04/hyjVPQnpy
wguK2JQDAgMBAAECggEABkVXdW+HM0LcJbhLMoUi32rQZU0Te0srtYOd6oPCdgwu
LUp2TAU5+05tUrDHqqsOMIkNuSDvCqzoXfRtVbBJ6ekQgY9s03ET2egxp5u3uGTI
Rib0k9iD5BP0O9Nmg4KMpGXFmP0npgRbe4kKWtI0h+tAKwTQHDPxyHkozuT+14um
4PCmIPZ7xEWFYkmJZ88Vj+x/5T2RQ2h7VEM8XpD0CH5+16Ohexwe68KTQfYL2g/B
m1oL5FrezBqxSxX+JCPBXUUgWF93iZao3sFn+usxEdEubDZ+1YypUic/IchJww9v
Rv1s3iU9bJvGG4TaJR/Z0lzZJxz5fdMxJ/bSsH6mYQKBgQDMaImMn8KehgFktEpK
ADvh3Z0AV5GMpE0Kq7sDSdS6qbW9K3/8EpP80VrXTU8s+YyiuqdlnenDWaloMx8w
PPgutcAdrPDKZK0zukIJj43vcrSCdLbiBv+LholHInjqEkdgLkaU0EySFwbTScEe
MgJAwcDfNOM2uTFnnhygZURFEQKBgQC/nAicWNBjntzeiXsCge2yBB97mo9mCqpm
EApCC/AH/EqMoDPMPAUy+FC0iniM1adpu0+vrjgxS1DZpSV2LtgRz9+jeBssUHkX
fvXTfEEThXl3nmDO6DqxUUa+HohcBTax4o1Y9eoRiffR7+E4eNvzf5a/n1aXssN/
5fla+O030wKBgGr2UPPrLbYyPUxrI2yxzqQUiXGCYUGNQFtTHdtMqSq8X8OLnb9U
IWhsTPLZG5NXSoZk0e/UwFxe8Mz741gkr2IR7WQZ+S6PnCqzTpceLZGdHmQdmw2P
x+1FC1TT7x3dTsg/ruN0VH0l24Z407tvQ8qLGNg0HqmmIvorvKMaGq1hAoGACCv0
Zg6XnJgK3WbJmzrFU2E/onreAMEVsVKfzV9K9lw5JbQzYVNx+VGDx59cMs1t3WGC
rYBlnxySLyYO6fJnfqL567PUnNg1wd3FSCa1c8quen6DrG9VCXjo5nTQ5fPG+GEs
HA4o1GSo8Agl982Xu9PGLxfxjniuQ8cgElQpcccCgYA8fSNFlXCYf6tDoBLHrctm
/OSw389yitf5krHamRUW0291XRfuDa12VqddyjL4YPgsmuWaMva0IutP924j/Rai
RiB43xzwKZ0rjsyOX/coS20sG0ZkdKvS76BegqtjkUBwiZeVh/eCkwjeJKSXkGo3
mwBttpz5zH5IHUV9y3kBog==
-----END PRIVATE KEY-----
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    EcA,
    EcB,
    Rsa,
}

impl Key {
    fn pem(self) -> &'static str {
        match self {
            Key::EcA => EC_KEY_A,
            Key::EcB => EC_KEY_B,
            Key::Rsa => RSA_KEY,
        }
    }

    fn signing(self) -> SigningKey {
        SigningKey::from_pem(self.pem().as_bytes()).expect("test key parses")
    }

    fn verify(self) -> VerifyKey {
        self.signing().verify_key()
    }

    fn sign(self, message: &[u8]) -> Vec<u8> {
        self.signing()
            .sign(message)
            .expect("signing works")
            .into_bytes()
    }
}

// ---------------------------------------------------------------------------
// Deterministic pseudo-random numbers (splitmix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &["mender ", "update ", "rootfs ", "device\n", "a=b ", "42 "];
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
    }
    out.truncate(len);
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// The good artifacts.

struct Good {
    label: &'static str,
    compression: Compression,
    signer: Option<Key>,
    name: String,
    scripts: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
    bytes: Vec<u8>,
}

impl Good {
    /// The keys a reader of this artifact is configured with.
    fn keys(&self) -> Vec<VerifyKey> {
        self.signer.map(|k| vec![k.verify()]).unwrap_or_default()
    }
}

struct GoodSpec {
    label: &'static str,
    payload_type: &'static str,
    compression: Compression,
    signer: Option<Key>,
    files: Vec<(&'static str, Vec<u8>)>,
    scripts: Vec<(&'static str, Vec<u8>)>,
    meta_data: Option<Value>,
}

fn good_specs() -> Vec<GoodSpec> {
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

fn write_good(dir: &Path, spec: GoodSpec) -> Good {
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

fn goods() -> &'static [Good] {
    static GOODS: OnceLock<Vec<Good>> = OnceLock::new();
    GOODS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        good_specs()
            .into_iter()
            .map(|spec| write_good(dir.path(), spec))
            .collect()
    })
}

fn good(label: &str) -> &'static Good {
    goods().iter().find(|g| g.label == label).unwrap()
}

// ---------------------------------------------------------------------------
// Tar, compression and artifact surgery.

const REGULAR: u8 = b'0';
const HARDLINK: u8 = b'1';
const SYMLINK: u8 = b'2';
const CHAR_DEVICE: u8 = b'3';
const BLOCK_DEVICE: u8 = b'4';
const DIRECTORY: u8 = b'5';
const FIFO: u8 = b'6';

/// One entry of a tar archive built byte by byte, so that names, types and
/// sizes can be anything.
#[derive(Clone, Debug)]
struct Entry {
    name: Vec<u8>,
    kind: u8,
    link: Vec<u8>,
    data: Vec<u8>,
    /// The size written in the header, when it should lie about `data`.
    declared_size: Option<u64>,
}

impl Entry {
    fn file(name: impl AsRef<[u8]>, data: impl Into<Vec<u8>>) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind: REGULAR,
            link: Vec::new(),
            data: data.into(),
            declared_size: None,
        }
    }

    fn special(name: impl AsRef<[u8]>, kind: u8, link: impl AsRef<[u8]>) -> Entry {
        Entry {
            name: name.as_ref().to_vec(),
            kind,
            link: link.as_ref().to_vec(),
            data: Vec::new(),
            declared_size: None,
        }
    }

    fn name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    fn with_data(mut self, data: impl Into<Vec<u8>>) -> Entry {
        self.data = data.into();
        self
    }

    fn with_kind(mut self, kind: u8) -> Entry {
        self.kind = kind;
        self
    }
}

/// A PAX extended header ('x') with `records`, applying to the next entry.
fn pax_entry(records: &[(&str, &str)]) -> Entry {
    let mut data = Vec::new();
    for (key, value) in records {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        loop {
            let record = format!("{len}{body}");
            if record.len() == len {
                data.extend_from_slice(record.as_bytes());
                break;
            }
            len = record.len();
        }
    }
    Entry::special("PaxHeaders/entry", b'x', "").with_data(data)
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    assert_eq!(digits.len(), field.len() - 1, "{value} does not fit");
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[digits.len()] = 0;
}

fn tar_header(entry: &Entry) -> [u8; 512] {
    assert!(entry.name.len() <= 100 && entry.link.len() <= 100);
    let mut h = [0u8; 512];
    h[..entry.name.len()].copy_from_slice(&entry.name);
    put_octal(
        &mut h[100..108],
        if entry.kind == DIRECTORY {
            0o755
        } else {
            0o644
        },
    );
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    let size = entry.declared_size.unwrap_or(entry.data.len() as u64);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], 1_700_000_000);
    h[156] = entry.kind;
    h[157..157 + entry.link.len()].copy_from_slice(&entry.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_octal(&mut h[329..337], 0);
    put_octal(&mut h[337..345], 0);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put_octal(&mut h[148..155], u64::from(sum));
    h
}

fn padding(len: usize) -> usize {
    (512 - len % 512) % 512
}

fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&tar_header(e));
        out.extend_from_slice(&e.data);
        out.resize(out.len() + padding(e.data.len()), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A member (or inner entry) of a tar archive as the `tar` crate sees it.
#[derive(Clone, Debug)]
struct Parsed {
    name: String,
    kind: u8,
    data: Vec<u8>,
    header_pos: usize,
    data_pos: usize,
}

fn parse_tar(bytes: &[u8]) -> Vec<Parsed> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let kind = entry.header().entry_type().as_byte();
        let header_pos = entry.raw_header_position() as usize;
        let data_pos = entry.raw_file_position() as usize;
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(Parsed {
            name,
            kind,
            data,
            header_pos,
            data_pos,
        });
    }
    out
}

fn outer(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<Entry> = members
        .iter()
        .map(|(n, d)| Entry::file(n, &d[..]))
        .collect();
    tar_bytes(&entries)
}

fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
    let mut encoder = compression.encoder(Vec::new()).unwrap();
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn decompress(compression: Compression, data: &[u8]) -> Vec<u8> {
    let mut decoder = compression.decoder("test", data).unwrap();
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).unwrap();
    out
}

/// A good artifact taken apart, to be edited and put back together.
#[derive(Clone)]
struct Parts {
    signer: Option<Key>,
    compression: Compression,
    version: Vec<u8>,
    manifest: Vec<u8>,
    sig: Option<Vec<u8>>,
    header_name: String,
    header: Vec<u8>,
    data_name: String,
    data: Vec<u8>,
    /// The payload files `reseal` lists in the manifest.
    files: Vec<(String, Vec<u8>)>,
}

impl Parts {
    fn of(good: &Good) -> Parts {
        let members = parse_tar(&good.bytes);
        let find = |name: &str| {
            members
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.data.clone())
        };
        let suffix = good.compression.suffix();
        let header_name = format!("header.tar{suffix}");
        let data_name = format!("data/0000.tar{suffix}");
        Parts {
            signer: good.signer,
            compression: good.compression,
            version: find("version").unwrap(),
            manifest: find("manifest").unwrap(),
            sig: find("manifest.sig"),
            header: find(&header_name).unwrap(),
            data: find(&data_name).unwrap(),
            header_name,
            data_name,
            files: good.files.clone(),
        }
    }

    fn list(&self) -> Vec<(String, Vec<u8>)> {
        let mut list = vec![
            ("version".to_string(), self.version.clone()),
            ("manifest".to_string(), self.manifest.clone()),
        ];
        if let Some(sig) = &self.sig {
            list.push(("manifest.sig".to_string(), sig.clone()));
        }
        list.push((self.header_name.clone(), self.header.clone()));
        list.push((self.data_name.clone(), self.data.clone()));
        list
    }

    fn bytes(&self) -> Vec<u8> {
        outer(&self.list())
    }

    /// The manifest `write_artifact` would write for the current members.
    fn manifest_text(&self) -> String {
        let mut text = String::new();
        for (name, data) in &self.files {
            text += &format!("{}  data/0000/{name}\n", hex(&sha256(data)));
        }
        text += &format!("{}  {}\n", hex(&sha256(&self.header)), self.header_name);
        text += &format!("{}  version\n", hex(&sha256(&self.version)));
        text
    }

    /// Recomputes the manifest from the current members and re-signs it, so
    /// that only the edit under test is wrong.
    fn reseal(&mut self) {
        self.manifest = self.manifest_text().into_bytes();
        self.resign();
    }

    /// Signs the current manifest again (when the artifact was signed).
    fn resign(&mut self) {
        if let Some(key) = self.signer {
            self.sig = Some(key.sign(&self.manifest));
        }
    }

    fn header_entries(&self) -> Vec<Entry> {
        let plain = decompress(self.compression, &self.header);
        parse_tar(&plain)
            .into_iter()
            .map(|p| Entry {
                name: p.name.into_bytes(),
                kind: p.kind,
                link: Vec::new(),
                data: p.data,
                declared_size: None,
            })
            .collect()
    }

    fn set_header(&mut self, entries: &[Entry]) {
        self.header = compress(self.compression, &tar_bytes(entries));
    }

    fn set_data(&mut self, entries: &[Entry]) {
        self.data = compress(self.compression, &tar_bytes(entries));
    }

    fn file_entries(&self) -> Vec<Entry> {
        self.files
            .iter()
            .map(|(n, d)| Entry::file(n, &d[..]))
            .collect()
    }

    /// Replaces the JSON document at `path` in the header and reseals.
    fn with_header_json(&self, path: &str, content: &[u8]) -> Vec<u8> {
        let mut parts = self.clone();
        let mut entries = parts.header_entries();
        let entry = entries
            .iter_mut()
            .find(|e| e.name == path.as_bytes())
            .unwrap_or_else(|| panic!("no {path} in the header"));
        entry.data = content.to_vec();
        parts.set_header(&entries);
        parts.reseal();
        parts.bytes()
    }

    fn header_json(&self, path: &str) -> Value {
        let entries = self.header_entries();
        let entry = entries.iter().find(|e| e.name == path.as_bytes()).unwrap();
        serde_json::from_slice(&entry.data).unwrap()
    }
}

// ---------------------------------------------------------------------------
// Running the reader.

/// Records every handler call and checks their order as they come.
#[derive(Default)]
struct Recorder {
    headers: usize,
    begins: usize,
    writes: usize,
    bytes: u64,
    ends: usize,
    aborts: usize,
    abort_message: Option<String>,
    files: Vec<(String, u64, Vec<u8>)>,
    in_file: bool,
    protocol: Vec<String>,
}

impl ArtifactHandler for Recorder {
    fn header(&mut self, _header: &ArtifactHeader) -> anyhow::Result<()> {
        if self.headers > 0 || self.begins > 0 {
            self.protocol.push("header() called late or twice".into());
        }
        self.headers += 1;
        Ok(())
    }

    fn begin_file(&mut self, name: &str, size: u64) -> anyhow::Result<()> {
        if self.in_file {
            self.protocol
                .push(format!("begin_file({name}) inside a file"));
        }
        self.in_file = true;
        self.begins += 1;
        self.files.push((name.to_string(), size, Vec::new()));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        if !self.in_file {
            self.protocol.push("write() outside a file".into());
        }
        self.writes += 1;
        self.bytes += data.len() as u64;
        if let Some(f) = self.files.last_mut() {
            f.2.extend_from_slice(data);
        }
        Ok(())
    }

    fn end_file(&mut self) -> anyhow::Result<()> {
        if !self.in_file {
            self.protocol.push("end_file() outside a file".into());
        }
        self.in_file = false;
        self.ends += 1;
        if let Some((name, size, data)) = self.files.last()
            && *size != data.len() as u64
        {
            self.protocol.push(format!(
                "end_file({name}) after {} of {size} bytes",
                data.len()
            ));
        }
        Ok(())
    }

    fn abort(&mut self, error: &ArtifactError) {
        self.aborts += 1;
        self.abort_message = Some(error.to_string());
    }
}

type Outcome = (Result<ReadReport, ArtifactError>, Recorder);

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Reads `bytes` with `keys` enforced; Err(panic message) if the reader
/// panicked.
fn run(bytes: &[u8], keys: &[VerifyKey]) -> Result<Outcome, String> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        let options = ReadOptions {
            verify_keys: keys,
            policy: SignaturePolicy::Enforce,
        };
        let mut recorder = Recorder::default();
        let result = read_artifact(bytes, &options, &mut recorder);
        (result, recorder)
    }))
    .map_err(|p| panic_message(&*p))
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn verbose() -> bool {
    std::env::var_os("MALFORMED_VERBOSE").is_some()
}

/// Runs bad inputs, gathering every violation of the reader's contract.
struct Checker {
    test: &'static str,
    ran: usize,
    known_multiline: usize,
    failures: Vec<String>,
}

impl Checker {
    fn new(test: &'static str) -> Checker {
        Checker {
            test,
            ran: 0,
            known_multiline: 0,
            failures: Vec::new(),
        }
    }

    /// `bytes` must be refused; the message must contain each of `expect`.
    /// Returns the message.
    fn reject(
        &mut self,
        label: impl Display,
        bytes: &[u8],
        keys: &[VerifyKey],
        expect: &[&str],
    ) -> Option<String> {
        self.check(label, bytes, keys, expect, true)
    }

    /// Like `reject`, but a multi-line message is only counted, not a
    /// failure: for garbage where a tar header should be, whose message is
    /// known to echo raw header bytes (see
    /// `hostile_bytes_keep_messages_on_one_line`).
    fn reject_known_multiline(
        &mut self,
        label: impl Display,
        bytes: &[u8],
        keys: &[VerifyKey],
        expect: &[&str],
    ) -> Option<String> {
        self.check(label, bytes, keys, expect, false)
    }

    fn check(
        &mut self,
        label: impl Display,
        bytes: &[u8],
        keys: &[VerifyKey],
        expect: &[&str],
        one_line: bool,
    ) -> Option<String> {
        self.ran += 1;
        let (result, rec) = match run(bytes, keys) {
            Ok(outcome) => outcome,
            Err(panic) => {
                self.failures.push(format!("{label}: PANIC: {panic}"));
                return None;
            }
        };
        let error = match result {
            Ok(report) => {
                self.failures.push(format!(
                    "{label}: accepted (artifact '{}', {} files, signature {})",
                    report.header.name,
                    report.files.len(),
                    report.signature.as_str()
                ));
                return None;
            }
            Err(e) => e,
        };
        let message = error.to_string();
        if verbose() {
            eprintln!("[{}] {label}: {message}", self.test);
        }
        let mut failures = Vec::new();
        let mut fail = |why: String| failures.push(format!("{label}: {why}"));
        if message.trim().is_empty() {
            fail(format!("empty message ({error:?})"));
        }
        if message.contains('\n') || message.contains('\r') {
            if one_line {
                fail(format!("message is not one line: {message:?}"));
            } else {
                self.known_multiline += 1;
            }
        }
        if rec.aborts != 1 {
            fail(format!("abort() called {} times ({message})", rec.aborts));
        } else if rec.abort_message.as_deref() != Some(message.as_str()) {
            fail(format!(
                "abort() saw {:?}, the caller got {message:?}",
                rec.abort_message
            ));
        }
        if rec.headers == 0 && (rec.begins > 0 || rec.writes > 0 || rec.bytes > 0) {
            fail(format!(
                "{} payload bytes in {} files reached the handler before the header ({message})",
                rec.bytes, rec.begins
            ));
        }
        for p in &rec.protocol {
            fail(format!("handler protocol: {p} ({message})"));
        }
        for want in expect {
            if !message.contains(want) {
                fail(format!("message {message:?} does not mention {want:?}"));
            }
        }
        self.failures.extend(failures);
        Some(message)
    }

    fn finish(self) {
        println!(
            "{}: {} malformed inputs refused ({} with a known multi-line message)",
            self.test, self.ran, self.known_multiline
        );
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(60).map(String::as_str).collect();
            panic!(
                "{}: {} of {} inputs violated the contract:\n  {}{}",
                self.test,
                self.failures.len(),
                self.ran,
                shown.join("\n  "),
                if self.failures.len() > shown.len() {
                    "\n  ..."
                } else {
                    ""
                }
            );
        }
    }
}

/// Reads a good input and returns the outcome; panics with context if the
/// reader panics or refuses it.
fn accept(label: &str, bytes: &[u8], keys: &[VerifyKey]) -> (ReadReport, Recorder) {
    let (result, rec) = run(bytes, keys).unwrap_or_else(|p| panic!("{label}: PANIC: {p}"));
    match result {
        Ok(report) => (report, rec),
        Err(e) => panic!("{label}: refused: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Positive control.

#[test]
fn good_artifacts_read_back() {
    for g in goods() {
        let keys = g.keys();
        let (report, rec) = accept(g.label, &g.bytes, &keys);
        assert_eq!(report.header.name, g.name, "{}", g.label);
        assert_eq!(
            report.signature,
            if g.signer.is_some() {
                SignatureState::Verified
            } else {
                SignatureState::None
            },
            "{}",
            g.label
        );
        let scripts: Vec<&str> = report
            .header
            .scripts
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let mut want_scripts: Vec<&str> = g.scripts.iter().map(String::as_str).collect();
        want_scripts.sort();
        let mut got_scripts = scripts.clone();
        got_scripts.sort();
        assert_eq!(got_scripts, want_scripts, "{}", g.label);
        assert_eq!(rec.headers, 1, "{}", g.label);
        assert_eq!(rec.aborts, 0, "{}", g.label);
        assert!(rec.protocol.is_empty(), "{}: {:?}", g.label, rec.protocol);
        assert_eq!(rec.begins, g.files.len(), "{}", g.label);
        assert_eq!(rec.ends, g.files.len(), "{}", g.label);
        let total: usize = g.files.iter().map(|(_, d)| d.len()).sum();
        assert_eq!(rec.bytes, total as u64, "{}", g.label);
        for ((name, data), (got_name, got_size, got_data)) in g.files.iter().zip(&rec.files) {
            assert_eq!(name, got_name, "{}", g.label);
            assert_eq!(*got_size, data.len() as u64, "{}: {name}", g.label);
            assert!(got_data == data, "{}: content of {name} differs", g.label);
        }
        assert_eq!(report.files.len(), g.files.len(), "{}", g.label);
        for (f, (name, data)) in report.files.iter().zip(&g.files) {
            assert_eq!(&f.name, name);
            assert_eq!(f.size, data.len() as u64);
            assert_eq!(f.sha256, sha256(data));
        }

        if g.signer.is_some() {
            let (report, _) = accept(g.label, &g.bytes, &[]);
            assert_eq!(report.signature, SignatureState::Unverified, "{}", g.label);
        }

        // The surgery helpers must produce artifacts the reader accepts, so
        // that each bad input below is wrong only where the test means it.
        let parts = Parts::of(g);
        assert_eq!(
            String::from_utf8(parts.manifest.clone()).unwrap(),
            parts.manifest_text(),
            "{}: manifest_text() differs from the writer's manifest",
            g.label
        );
        accept(&format!("{} re-tarred", g.label), &parts.bytes(), &keys);
        let mut rebuilt = parts.clone();
        let header = rebuilt.header_entries();
        rebuilt.set_header(&header);
        let data = rebuilt.file_entries();
        rebuilt.set_data(&data);
        rebuilt.reseal();
        let (report, rec) = accept(&format!("{} rebuilt", g.label), &rebuilt.bytes(), &keys);
        assert_eq!(report.header.name, g.name);
        assert_eq!(rec.ends, g.files.len());
    }
}

/// A handler that refuses at some point: the read stops with its error and
/// `abort` is still called exactly once.
#[test]
fn handler_refusals_abort_once() {
    struct Refuse {
        at: &'static str,
        aborts: usize,
    }
    impl ArtifactHandler for Refuse {
        fn header(&mut self, _h: &ArtifactHeader) -> anyhow::Result<()> {
            if self.at == "header" {
                anyhow::bail!("no thanks (header)");
            }
            Ok(())
        }
        fn begin_file(&mut self, _n: &str, _s: u64) -> anyhow::Result<()> {
            if self.at == "begin" {
                anyhow::bail!("no thanks (begin)");
            }
            Ok(())
        }
        fn write(&mut self, _d: &[u8]) -> anyhow::Result<()> {
            if self.at == "write" {
                anyhow::bail!("disk full\nsecond line");
            }
            Ok(())
        }
        fn end_file(&mut self) -> anyhow::Result<()> {
            if self.at == "end" {
                anyhow::bail!("no thanks (end)");
            }
            Ok(())
        }
        fn abort(&mut self, _e: &ArtifactError) {
            self.aborts += 1;
        }
    }
    let mut ran = 0;
    for g in goods() {
        let keys = g.keys();
        for at in ["header", "begin", "write", "end"] {
            if at == "write" && g.files.iter().all(|(_, d)| d.is_empty()) {
                continue;
            }
            let mut handler = Refuse { at, aborts: 0 };
            let options = ReadOptions {
                verify_keys: &keys,
                policy: SignaturePolicy::Enforce,
            };
            let result = read_artifact(&g.bytes[..], &options, &mut handler);
            let e = result
                .err()
                .unwrap_or_else(|| panic!("{}: {at}: accepted", g.label));
            assert!(
                matches!(e, ArtifactError::Consumer(_)),
                "{}: {at}: {e}",
                g.label
            );
            assert!(e.to_string().contains("no thanks") || at == "write");
            assert_eq!(handler.aborts, 1, "{}: {at}", g.label);
            ran += 1;
        }
    }
    println!("handler_refusals_abort_once: {ran} refusals");
}

// ---------------------------------------------------------------------------
// Truncation and flipped bytes.

/// End of the last member's (padded) data: cutting at or after it only
/// removes the end-of-archive blocks, which loses nothing that is checked;
/// the reader accepts that, like `tar` and the reference client.
fn content_end(bytes: &[u8]) -> usize {
    let last = parse_tar(bytes).pop().unwrap();
    last.data_pos + last.data.len() + padding(last.data.len())
}

#[test]
fn truncated_artifacts_are_refused() {
    let mut checker = Checker::new("truncated_artifacts_are_refused");
    let mut rng = Rng(0x5eed_0001);
    for g in goods() {
        let keys = g.keys();
        let end = content_end(&g.bytes);
        let mut offsets: Vec<usize> = (0..end).step_by(512).collect();
        offsets.extend((0..300).map(|_| rng.below(end)));
        offsets.extend([end - 1, 1, 511, 513]);
        offsets.sort_unstable();
        offsets.dedup();
        for cut in offsets {
            checker.reject(
                format!("{} cut at {cut} of {}", g.label, g.bytes.len()),
                &g.bytes[..cut],
                &keys,
                &[],
            );
        }
    }
    checker.finish();
}

/// Offsets inside a member's data whose change the reader must notice. For
/// a compressed payload the gzip header's MTIME/XFL/OS bytes are skipped (no
/// checksum covers them, and they do not change the payload); for an
/// uncompressed payload only the inner tar's headers, file contents and the
/// first end-of-archive block count (padding is not covered).
fn flip_positions(member: &Parsed, compression: Compression, is_data: bool) -> Vec<usize> {
    let len = member.data.len();
    let mut at: Vec<usize> = if !is_data {
        [0, 1, 63, 64, 65, 66, len / 4, len / 2, 3 * len / 4]
            .into_iter()
            .chain([len.saturating_sub(2), len.saturating_sub(1)])
            .collect()
    } else {
        match compression {
            Compression::None => {
                let inner = parse_tar(&member.data);
                let mut at = Vec::new();
                for e in &inner {
                    for off in [0, 99, 100, 124, 130, 148, 150, 156, 257, 263, 345, 511] {
                        at.push(e.header_pos + off);
                    }
                    if !e.data.is_empty() {
                        let n = e.data.len();
                        at.extend([e.data_pos, e.data_pos + n / 2, e.data_pos + n - 1]);
                    }
                }
                let last = inner.last().unwrap();
                at.push(last.data_pos + last.data.len() + padding(last.data.len()));
                at
            }
            Compression::Gzip => [0, 1, 2, 3, 10, 11, len / 3, len / 2, 2 * len / 3]
                .into_iter()
                .chain([len - 9, len - 8, len - 5, len - 1])
                .collect(),
            Compression::Xz | Compression::Zstd => {
                vec![
                    0,
                    1,
                    4,
                    5,
                    6,
                    10,
                    len / 3,
                    len / 2,
                    2 * len / 3,
                    len - 5,
                    len - 1,
                ]
            }
        }
    };
    at.retain(|&p| p < len);
    at.sort_unstable();
    at.dedup();
    at
}

#[test]
fn flipped_bytes_are_refused() {
    let mut checker = Checker::new("flipped_bytes_are_refused");
    for g in goods() {
        let members = parse_tar(&g.bytes);
        let mut key_sets = vec![(g.keys(), "")];
        if g.signer.is_some() {
            key_sets.push((Vec::new(), " (no key)"));
        }
        for m in &members {
            let is_data = m.name.starts_with("data/");
            let expect: &str = match m.name.as_str() {
                "version" => "version",
                "manifest" => "manifest",
                "manifest.sig" => "signature",
                n if n.starts_with("header.tar") => "header.tar",
                _ => "data/0000",
            };
            let mut cases: Vec<(usize, Option<&str>)> = Vec::new();
            for off in [
                0, 50, 100, 110, 124, 129, 135, 148, 153, 156, 257, 262, 300, 511,
            ] {
                cases.push((m.header_pos + off, None));
            }
            for off in flip_positions(m, g.compression, is_data) {
                cases.push((m.data_pos + off, Some(expect)));
            }
            for (keys, note) in &key_sets {
                // Without a key the signature is not checked, so a changed
                // manifest.sig is (rightly) not noticed.
                if keys.is_empty() && m.name == "manifest.sig" {
                    continue;
                }
                for &(pos, expect) in &cases {
                    let mut bytes = g.bytes.clone();
                    bytes[pos] ^= 0xff;
                    let expect: Vec<&str> = expect.into_iter().collect();
                    checker.reject(
                        format!(
                            "{}: {} byte {} flipped{note}",
                            g.label,
                            m.name,
                            pos as i64 - m.data_pos as i64
                        ),
                        &bytes,
                        keys,
                        &expect,
                    );
                }
            }
        }
    }
    checker.finish();
}

// ---------------------------------------------------------------------------
// The outer tar: order, duplicates, unknown and missing members.

#[test]
fn member_structure_errors_are_refused() {
    let mut checker = Checker::new("member_structure_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let list = parts.list();
        let n = list.len();
        let label = g.label;
        let suffix = g.compression.suffix();

        for i in 0..n - 1 {
            let mut l = list.clone();
            l.swap(i, i + 1);
            checker.reject(
                format!("{label}: {} and {} swapped", list[i].0, list[i + 1].0),
                &outer(&l),
                &keys,
                &[],
            );
        }
        let mut reversed = list.clone();
        reversed.reverse();
        checker.reject(format!("{label}: reversed"), &outer(&reversed), &keys, &[]);
        let mut rotated = list.clone();
        rotated.rotate_right(1);
        checker.reject(
            format!("{label}: data first"),
            &outer(&rotated),
            &keys,
            &["version"],
        );

        for i in 0..n {
            let mut l = list.clone();
            l.insert(i + 1, list[i].clone());
            checker.reject(
                format!("{label}: {} twice", list[i].0),
                &outer(&l),
                &keys,
                &[&list[i].0],
            );
        }

        for i in 0..=n {
            let mut l = list.clone();
            l.insert(i, ("unknown.bin".to_string(), b"hello".to_vec()));
            checker.reject(
                format!("{label}: unknown member at {i}"),
                &outer(&l),
                &keys,
                &["unknown.bin"],
            );
        }

        for i in 0..n {
            let mut l = list.clone();
            let (removed, _) = l.remove(i);
            let expect: &[&str] = match removed.as_str() {
                "version" => &["version"],
                "manifest" => &["manifest"],
                "manifest.sig" => &["manifest.sig"],
                n if n.starts_with("data/") => &["data/0000"],
                _ => &["header.tar"],
            };
            checker.reject(
                format!("{label}: {removed} missing"),
                &outer(&l),
                &keys,
                expect,
            );
        }

        let mut l = list.clone();
        l.push((format!("data/0001.tar{suffix}"), parts.data.clone()));
        checker.reject(
            format!("{label}: second payload"),
            &outer(&l),
            &keys,
            &["data/0001"],
        );
        let mut second = parts.clone();
        second.data_name = format!("data/0001.tar{suffix}");
        checker.reject(
            format!("{label}: payload named data/0001"),
            &second.bytes(),
            &keys,
            &["data/0001"],
        );

        // Augmented artifacts: manifest-augment after the signature, and
        // header-augment after the header.
        let after_sig = if parts.sig.is_some() { 3 } else { 2 };
        let mut l = list.clone();
        l.insert(
            after_sig,
            ("manifest-augment".into(), parts.manifest.clone()),
        );
        checker.reject(
            format!("{label}: manifest-augment"),
            &outer(&l),
            &keys,
            &["manifest-augment", "augmented"],
        );
        let mut l = list.clone();
        l.insert(
            after_sig + 1,
            (format!("header-augment.tar{suffix}"), parts.header.clone()),
        );
        checker.reject(
            format!("{label}: header-augment"),
            &outer(&l),
            &keys,
            &["header-augment", "augmented"],
        );
        let mut l = list.clone();
        l.insert(
            after_sig,
            ("manifest-augment".into(), parts.manifest.clone()),
        );
        l.insert(
            after_sig + 2,
            (format!("header-augment.tar{suffix}"), parts.header.clone()),
        );
        checker.reject(
            format!("{label}: both augments"),
            &outer(&l),
            &keys,
            &["augmented"],
        );

        // Wrong member names.
        for data_name in [
            "data/0000.tar.bz2".to_string(),
            "data/0000".to_string(),
            "data/0000.tgz".to_string(),
            "data/0000.tar.gz.sig".to_string(),
            "data/0000.tar.".to_string(),
            "./data/0000.tar".to_string() + suffix,
            "data/0000.TAR".to_string() + suffix,
        ] {
            let mut p = parts.clone();
            p.data_name = data_name.clone();
            checker.reject(
                format!("{label}: payload member named {data_name}"),
                &p.bytes(),
                &keys,
                &[&data_name],
            );
        }
        for header_name in ["header.tar.bz2", "header", "headers.tar", "./header.tar"] {
            let mut p = parts.clone();
            p.header_name = header_name.to_string();
            checker.reject(
                format!("{label}: header member named {header_name}"),
                &p.bytes(),
                &keys,
                &[header_name],
            );
        }
        // The same compressed bytes under another compression's name.
        for other in [
            Compression::None,
            Compression::Gzip,
            Compression::Xz,
            Compression::Zstd,
        ] {
            if other == g.compression {
                continue;
            }
            let mut p = parts.clone();
            p.data_name = format!("data/0000.tar{}", other.suffix());
            checker.reject(
                format!("{label}: payload renamed to {}", p.data_name),
                &p.bytes(),
                &keys,
                &[&p.data_name],
            );
            let mut p = parts.clone();
            p.header_name = format!("header.tar{}", other.suffix());
            checker.reject(
                format!("{label}: header renamed to {}", p.header_name),
                &p.bytes(),
                &keys,
                &[&p.header_name],
            );
        }

        // Non-regular members in the outer tar.
        let mut entries: Vec<Entry> = list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
        entries.insert(n - 1, Entry::special("data/", DIRECTORY, ""));
        checker.reject(
            format!("{label}: directory member data/"),
            &tar_bytes(&entries),
            &keys,
            &["data/", "regular"],
        );
        for (kind, what) in [(SYMLINK, "symlink"), (HARDLINK, "hardlink"), (FIFO, "fifo")] {
            let mut entries: Vec<Entry> =
                list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
            entries[0] = Entry::special("version", kind, "/etc/passwd");
            checker.reject(
                format!("{label}: version is a {what}"),
                &tar_bytes(&entries),
                &keys,
                &["version"],
            );
        }

        // Sizes in the outer tar headers that lie.
        for i in 0..n {
            let mut entries: Vec<Entry> =
                list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
            entries[i].declared_size = Some((8 << 30) - 1);
            let bytes = tar_bytes(&entries);
            checker.reject(
                format!("{label}: {} claims 8 GiB", list[i].0),
                &bytes,
                &keys,
                &[],
            );
            let mut entries: Vec<Entry> =
                list.iter().map(|(n, d)| Entry::file(n, &d[..])).collect();
            // The manifest's last newline is optional, and an uncompressed
            // payload tar ends in zero blocks: losing the last byte of
            // either loses nothing.
            let harmless = list[i].0 == "manifest"
                || (list[i].0.starts_with("data/") && g.compression == Compression::None);
            if entries[i].data.is_empty() || harmless {
                continue;
            }
            entries[i].declared_size = Some(entries[i].data.len() as u64 - 1);
            checker.reject(
                format!("{label}: {} one byte short", list[i].0),
                &tar_bytes(&entries),
                &keys,
                &[],
            );
        }
    }

    // Inputs that are hardly artifacts at all.
    let nothing: &[(&str, Vec<u8>)] = &[
        ("empty input", Vec::new()),
        ("one byte", vec![0]),
        ("end-of-archive only", vec![0; 1024]),
        ("a single zero block", vec![0; 512]),
        ("random bytes", noise(99, 4096)),
        ("text", b"this is not an artifact\n".to_vec()),
        (
            "gzip of an artifact",
            compress(Compression::Gzip, &goods()[0].bytes),
        ),
        (
            "version only",
            outer(&[("version".into(), Parts::of(&goods()[0]).version)]),
        ),
    ];
    for (label, bytes) in nothing {
        checker.reject(label, bytes, &[], &[]);
        checker.reject(
            format!("{label} (with key)"),
            bytes,
            &[Key::EcA.verify()],
            &[],
        );
    }
    checker.finish();
}

// ---------------------------------------------------------------------------
// version and manifest contents.

#[test]
fn version_and_manifest_errors_are_refused() {
    let mut checker = Checker::new("version_and_manifest_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;

        let versions: &[(&[u8], &[&str])] = &[
            (br#"{"format":"mender","version":1}"#, &["version 1"]),
            (br#"{"format":"mender","version":4}"#, &["version 4"]),
            (br#"{"format":"mender","version":0}"#, &["version 0"]),
            (br#"{"format":"mender","version":2}"#, &["updates"]),
            (br#"{"format":"mender","version":-3}"#, &["version"]),
            (br#"{"format":"mender","version":3.0}"#, &["version"]),
            (br#"{"format":"mender","version":3.5}"#, &["version"]),
            (br#"{"format":"mender","version":"3"}"#, &["version"]),
            (br#"{"format":"mender","version":null}"#, &["version"]),
            (
                br#"{"format":"mender","version":18446744073709551619}"#,
                &["version"],
            ),
            (br#"{"format":"mender"}"#, &["version"]),
            (
                br#"{"format":"Mender","version":3}"#,
                &["version", "Mender"],
            ),
            (br#"{"format":3,"version":3}"#, &["version", "format"]),
            (br#"{"version":3}"#, &["version", "format"]),
            (br#"{"format":"mender","version":3"#, &["version", "JSON"]),
            (br#"{"format":"mender","version":3}}"#, &["version", "JSON"]),
            (
                b"\xef\xbb\xbf{\"format\":\"mender\",\"version\":3}",
                &["version"],
            ),
            (b"[\"mender\",3]", &["version"]),
            (b"null", &["version"]),
            (b"3", &["version"]),
            (b"", &["version"]),
            (b"\xff\xfe", &["version"]),
        ];
        for (content, expect) in versions {
            let mut p = parts.clone();
            p.version = content.to_vec();
            p.reseal();
            checker.reject(
                format!("{label}: version {:?}", String::from_utf8_lossy(content)),
                &p.bytes(),
                &keys,
                expect,
            );
        }
        let mut p = parts.clone();
        p.version = br#"{"format":"mender","version":3}"#.to_vec();
        p.version.resize(5000, b' ');
        p.reseal();
        checker.reject(
            format!("{label}: version of 5000 bytes"),
            &p.bytes(),
            &keys,
            &["version"],
        );

        // Manifest edits; each is re-signed, so only the edit is wrong.
        let text = parts.manifest_text();
        let lines: Vec<&str> = text.lines().collect();
        let version_line = *lines.last().unwrap();
        let header_line = lines[lines.len() - 2];
        let mut edits: Vec<(String, String, Vec<String>)> = vec![
            (
                "uppercase hex".into(),
                text.replacen(&version_line[..64], &version_line[..64].to_uppercase(), 1),
                owned(&["manifest line", "hex"]),
            ),
            (
                "version listed twice".into(),
                format!("{text}{version_line}\n"),
                owned(&["manifest line", "twice", "version"]),
            ),
            (
                "header listed twice".into(),
                format!("{header_line}\n{text}"),
                owned(&["manifest line", "twice"]),
            ),
            (
                "version line missing".into(),
                text.replace(&format!("{version_line}\n"), ""),
                owned(&["version", "manifest"]),
            ),
            (
                "header line missing".into(),
                text.replace(&format!("{header_line}\n"), ""),
                owned(&[&parts.header_name, "manifest"]),
            ),
            (
                "CRLF line ends".into(),
                text.replace('\n', "\r\n"),
                owned(&["manifest line"]),
            ),
            (
                "one space".into(),
                text.replacen("  ", " ", 1),
                owned(&["manifest line"]),
            ),
            (
                "tab".into(),
                text.replacen("  ", "\t", 1),
                owned(&["manifest line"]),
            ),
            (
                "three spaces".into(),
                text.replace(
                    &format!("  {}", parts.header_name),
                    &format!("   {}", parts.header_name),
                ),
                owned(&["manifest line"]),
            ),
            (
                "blank line".into(),
                format!("{text}\n"),
                owned(&["manifest line"]),
            ),
            (
                "blank first line".into(),
                format!("\n{text}"),
                owned(&["manifest line 1"]),
            ),
            ("empty".into(), String::new(), owned(&["manifest"])),
            ("newline only".into(), "\n".into(), owned(&["manifest"])),
            (
                "no final newline, garbage line".into(),
                format!("{text}garbage"),
                owned(&["manifest line"]),
            ),
            (
                "63 hex digits".into(),
                text.replacen(&version_line[..64], &version_line[..63], 1),
                owned(&["manifest line"]),
            ),
            (
                "65 hex digits".into(),
                text.replacen(&version_line[..64], &format!("{}0", &version_line[..64]), 1),
                owned(&["manifest line"]),
            ),
            (
                "./version".into(),
                text.replace("  version\n", "  ./version\n"),
                owned(&["version"]),
            ),
            (
                "version path with a space".into(),
                text.replace("  version\n", "  ver sion\n"),
                owned(&["manifest line"]),
            ),
            (
                "NUL in a path".into(),
                text.replace("  version\n", "  version\0\n"),
                owned(&["manifest line"]),
            ),
            (
                "the payload member itself listed".into(),
                format!("{text}{}  {}\n", hex(&sha256(&parts.data)), parts.data_name),
                owned(&[&parts.data_name]),
            ),
            (
                "version checksum wrong".into(),
                text.replacen(&version_line[..64], &hex(&sha256(b"other")), 1),
                owned(&["version"]),
            ),
            (
                "header checksum wrong".into(),
                text.replacen(&header_line[..64], &hex(&sha256(b"other")), 1),
                owned(&[&parts.header_name]),
            ),
        ];
        let mut with_ghost = parts.clone();
        with_ghost.files.push(("ghost.bin".into(), b"boo".to_vec()));
        edits.push((
            "entry with no file".into(),
            with_ghost.manifest_text(),
            owned(&["ghost.bin", "manifest"]),
        ));
        for (name, data) in &parts.files {
            let line = format!("{}  data/0000/{name}\n", hex(&sha256(data)));
            edits.push((
                format!("{name} not listed"),
                text.replace(&line, ""),
                owned(&[name, "manifest"]),
            ));
            edits.push((
                format!("{name} checksum wrong"),
                text.replace(
                    &line,
                    &format!("{}  data/0000/{name}\n", hex(&sha256(b"x"))),
                ),
                owned(&[name]),
            ));
            edits.push((
                format!("{name} listed twice"),
                format!("{line}{text}"),
                owned(&["manifest line", "twice"]),
            ));
        }
        for (what, manifest, expect) in edits {
            let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
            let mut p = parts.clone();
            p.manifest = manifest.into_bytes();
            p.resign();
            checker.reject(
                format!("{label}: manifest {what}"),
                &p.bytes(),
                &keys,
                &expect,
            );
        }
        let mut p = parts.clone();
        p.manifest = b"\xff\xfe  version\n".to_vec();
        p.resign();
        checker.reject(
            format!("{label}: manifest not UTF-8"),
            &p.bytes(),
            &keys,
            &["manifest", "UTF-8"],
        );
        let mut p = parts.clone();
        p.manifest = text.repeat((4 << 20) / text.len() + 1).into_bytes();
        p.resign();
        checker.reject(
            format!("{label}: manifest over 4 MiB"),
            &p.bytes(),
            &keys,
            &["manifest"],
        );
    }
    checker.finish();
}

// ---------------------------------------------------------------------------
// The header: JSON documents and its tar.

/// Sets (or, with the value "<remove>", removes) the field at `path`.
fn set(mut v: Value, path: &[&str], new: Value) -> Value {
    let mut at = &mut v;
    for key in &path[..path.len() - 1] {
        at = match key.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*key],
        };
    }
    let last = path[path.len() - 1];
    match at {
        Value::Object(o) if new == json!("<remove>") => {
            o.remove(last);
        }
        Value::Object(o) => {
            o.insert(last.to_string(), new);
        }
        Value::Array(a) => a[last.parse::<usize>().unwrap()] = new,
        _ => panic!("cannot set {path:?}"),
    }
    v
}

#[test]
fn header_json_errors_are_refused() {
    let mut checker = Checker::new("header_json_errors_are_refused");
    let remove = || json!("<remove>");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let info = parts.header_json("header-info");
        let type_info = parts.header_json("headers/0000/type-info");
        let ptype = info["payloads"][0]["type"].clone();

        let mut docs: Vec<(&str, String, Vec<u8>, Vec<&str>)> = Vec::new();
        let mut doc = |path: &'static str, what: &str, bytes: Vec<u8>, expect: &[&'static str]| {
            docs.push((path, what.to_string(), bytes, expect.to_vec()));
        };
        let j = |v: Value| v.to_string().into_bytes();
        const HI: &str = "header-info";
        const TI: &str = "headers/0000/type-info";
        const MD: &str = "headers/0000/meta-data";

        // header-info
        for (what, bytes) in [
            ("truncated JSON", b"{\"payloads\":[".to_vec()),
            ("not JSON", b"payloads: rootfs".to_vec()),
            ("empty", Vec::new()),
            ("invalid UTF-8", b"{\"payloads\":\"\xff\"}".to_vec()),
            ("a list", b"[]".to_vec()),
            ("a string", b"\"header\"".to_vec()),
            ("null", b"null".to_vec()),
            ("empty object", b"{}".to_vec()),
            (
                "trailing garbage",
                [j(info.clone()), b"x".to_vec()].concat(),
            ),
        ] {
            doc(HI, what, bytes, &[HI]);
        }
        for (what, path, value) in [
            ("payloads missing", vec!["payloads"], remove()),
            (
                "payloads an object",
                vec!["payloads"],
                json!({"type": ptype}),
            ),
            ("payloads a string", vec!["payloads"], json!("rootfs-image")),
            ("payloads empty", vec!["payloads"], json!([])),
            (
                "two payloads",
                vec!["payloads"],
                json!([{"type": ptype}, {"type": ptype}]),
            ),
            (
                "payload a string",
                vec!["payloads", "0"],
                json!("rootfs-image"),
            ),
            (
                "payload type a number",
                vec!["payloads", "0", "type"],
                json!(5),
            ),
            (
                "payload type a list",
                vec!["payloads", "0", "type"],
                json!(["a"]),
            ),
            (
                "payload type empty",
                vec!["payloads", "0", "type"],
                json!(""),
            ),
            (
                "payload type missing",
                vec!["payloads", "0", "type"],
                remove(),
            ),
            (
                "payload type a path",
                vec!["payloads", "0", "type"],
                json!("../../bin/sh"),
            ),
            (
                "payload type with a space",
                vec!["payloads", "0", "type"],
                json!("a b"),
            ),
            (
                "artifact_provides missing",
                vec!["artifact_provides"],
                remove(),
            ),
            (
                "artifact_provides a list",
                vec!["artifact_provides"],
                json!(["x"]),
            ),
            (
                "artifact_name a number",
                vec!["artifact_provides", "artifact_name"],
                json!(5),
            ),
            (
                "artifact_name empty",
                vec!["artifact_provides", "artifact_name"],
                json!(""),
            ),
            (
                "artifact_name missing",
                vec!["artifact_provides", "artifact_name"],
                remove(),
            ),
            (
                "artifact_group a list",
                vec!["artifact_provides", "artifact_group"],
                json!([]),
            ),
            (
                "artifact_depends missing",
                vec!["artifact_depends"],
                remove(),
            ),
            (
                "artifact_depends a string",
                vec!["artifact_depends"],
                json!("x"),
            ),
            (
                "device_type missing",
                vec!["artifact_depends", "device_type"],
                remove(),
            ),
            (
                "device_type a number",
                vec!["artifact_depends", "device_type"],
                json!(5),
            ),
            (
                "device_type empty",
                vec!["artifact_depends", "device_type"],
                json!([]),
            ),
            (
                "device_type with a number",
                vec!["artifact_depends", "device_type"],
                json!(["a", 5]),
            ),
            (
                "device_type an object",
                vec!["artifact_depends", "device_type"],
                json!({"a": 1}),
            ),
            (
                "artifact_depends value an object",
                vec!["artifact_depends", "x"],
                json!({}),
            ),
            // Names, keys and values that would forge show-provides lines.
            (
                "artifact_name with a newline",
                vec!["artifact_provides", "artifact_name"],
                json!("ok\nrootfs-image.version=evil"),
            ),
            (
                "artifact_group with an escape",
                vec!["artifact_provides", "artifact_group"],
                json!("g\u{1b}[2J"),
            ),
            (
                "device_type with a newline",
                vec!["artifact_depends", "device_type"],
                json!(["a\nb"]),
            ),
            (
                "artifact_depends key with '='",
                vec!["artifact_depends", "a=b"],
                json!("x"),
            ),
        ] {
            doc(HI, what, j(set(info.clone(), &path, value)), &[HI]);
        }

        // type-info
        for (what, bytes) in [
            ("truncated JSON", b"{\"type\":".to_vec()),
            ("empty", Vec::new()),
            ("a list", b"[]".to_vec()),
            ("a number", b"7".to_vec()),
            ("invalid UTF-8", b"{\"type\":\"\xc3\x28\"}".to_vec()),
        ] {
            doc(TI, what, bytes, &[TI]);
        }
        for (what, path, value, expect) in [
            ("type a number", vec!["type"], json!(5), TI),
            ("type an object", vec!["type"], json!({}), TI),
            ("type differs", vec!["type"], json!("other-module"), TI),
            (
                "artifact_provides a list",
                vec!["artifact_provides"],
                json!(["a"]),
                TI,
            ),
            (
                "artifact_provides a string",
                vec!["artifact_provides"],
                json!("a"),
                TI,
            ),
            (
                "provides value a number",
                vec!["artifact_provides"],
                json!({"a": 5}),
                TI,
            ),
            (
                "provides value a list",
                vec!["artifact_provides"],
                json!({"a": ["b"]}),
                TI,
            ),
            (
                "artifact_depends a list",
                vec!["artifact_depends"],
                json!(["a"]),
                TI,
            ),
            (
                "depends value an object",
                vec!["artifact_depends"],
                json!({"a": {}}),
                TI,
            ),
            (
                "depends value a number",
                vec!["artifact_depends"],
                json!({"a": 1}),
                TI,
            ),
            (
                "depends value a list with a number",
                vec!["artifact_depends"],
                json!({"a": ["b", 1]}),
                TI,
            ),
            (
                "clears a string",
                vec!["clears_artifact_provides"],
                json!("rootfs-image.*"),
                TI,
            ),
            (
                "clears with a number",
                vec!["clears_artifact_provides"],
                json!(["a", 1]),
                TI,
            ),
            (
                "provides key with a newline",
                vec!["artifact_provides"],
                json!({"x\nartifact_name": "e"}),
                TI,
            ),
            (
                "provides value with a newline",
                vec!["artifact_provides"],
                json!({"a": "1\nartifact_name=evil3"}),
                TI,
            ),
            (
                "provides key with '='",
                vec!["artifact_provides"],
                json!({"a=b": "1"}),
                TI,
            ),
            (
                "provides value with a C1 control",
                vec!["artifact_provides"],
                json!({"a": "x\u{85}y"}),
                TI,
            ),
            (
                "depends key with DEL",
                vec!["artifact_depends"],
                json!({"a\u{7f}": "1"}),
                TI,
            ),
            (
                "clears with a newline",
                vec!["clears_artifact_provides"],
                json!(["a\nb"]),
                TI,
            ),
            (
                "provides artifact_name again",
                vec!["artifact_provides"],
                json!({"artifact_name": "other"}),
                "conflicts",
            ),
            (
                "depends device_type again",
                vec!["artifact_depends"],
                json!({"device_type": "other"}),
                "conflicts",
            ),
        ] {
            doc(TI, what, j(set(type_info.clone(), &path, value)), &[expect]);
        }

        // meta-data
        for (what, bytes) in [
            ("truncated JSON", b"{\"a\":".to_vec()),
            ("a list", b"[1]".to_vec()),
            ("a string", b"\"x\"".to_vec()),
            ("a number", b"1".to_vec()),
            ("null", b"null".to_vec()),
            ("nested list", br#"{"a":[[1]]}"#.to_vec()),
            ("list with object", br#"{"a":[{}]}"#.to_vec()),
            (
                "nested list in an object",
                br#"{"a":{"b":[["c"]]}}"#.to_vec(),
            ),
            (
                "list with object, deep",
                br#"{"a":{"b":{"c":[1,{"d":2}]}}}"#.to_vec(),
            ),
            ("invalid UTF-8", b"{\"a\":\"\xe2\x82\"}".to_vec()),
            ("trailing garbage", b"{\"a\":1} {".to_vec()),
        ] {
            doc(MD, what, bytes, &[MD]);
        }

        for (path, what, bytes, expect) in docs {
            checker.reject(
                format!("{label}: {path} {what}"),
                &parts.with_header_json(path, &bytes),
                &keys,
                &expect,
            );
        }
    }
    checker.finish();
}

#[test]
fn header_tar_errors_are_refused() {
    let mut checker = Checker::new("header_tar_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let base = parts.header_entries();
        let find = |name: &str| base.iter().find(|e| e.name == name.as_bytes()).unwrap();
        let info = find("header-info").clone();
        let type_info = find("headers/0000/type-info").clone();
        let meta = find("headers/0000/meta-data").clone();
        let script = base
            .iter()
            .find(|e| e.name.starts_with(b"scripts/"))
            .cloned()
            .unwrap_or_else(|| Entry::file("scripts/ArtifactInstall_Enter_01", "#!/bin/sh\n"));
        let with = |extra: Entry| {
            let mut e = base.clone();
            e.push(extra);
            e
        };
        let script_named = |name: &str| Entry::file(format!("scripts/{name}"), "#!/bin/sh\n");

        let cases: Vec<(&str, Vec<Entry>, Vec<&str>)> = vec![
            (
                "type-info first",
                vec![type_info.clone(), info.clone(), meta.clone()],
                vec!["header-info", "first"],
            ),
            (
                "script first",
                vec![script.clone(), info.clone(), type_info.clone()],
                vec!["header-info", "first"],
            ),
            (
                "header-info twice",
                with(info.clone()),
                vec!["header-info", "twice"],
            ),
            (
                "type-info twice",
                with(type_info.clone()),
                vec!["type-info", "twice"],
            ),
            (
                "meta-data twice",
                with(meta.clone()),
                vec!["meta-data", "twice"],
            ),
            (
                "script twice",
                {
                    let mut e = with(script.clone());
                    e.push(script.clone());
                    e
                },
                vec!["scripts/", "twice"],
            ),
            (
                "type-info missing",
                vec![info.clone(), meta.clone()],
                vec!["type-info"],
            ),
            (
                "header-info missing",
                vec![type_info.clone()],
                vec!["header-info"],
            ),
            ("empty header tar", vec![], vec!["header-info"]),
            (
                "unknown entry",
                with(Entry::file("foo", "bar")),
                vec!["foo"],
            ),
            (
                "second payload header",
                with(Entry::file("headers/0001/type-info", "{}")),
                vec!["headers/0001"],
            ),
            (
                "v2 files list in a v3 header",
                with(Entry::file("headers/0000/files", r#"{"files":[]}"#)),
                vec!["headers/0000/files"],
            ),
            (
                "unknown payload header entry",
                with(Entry::file("headers/0000/signatures", "x")),
                vec!["headers/0000/signatures"],
            ),
            (
                "script with a space",
                with(script_named("ArtifactInstall Enter_01")),
                vec!["state script name"],
            ),
            (
                "script with a tab",
                with(script_named("Artifact\tInstall")),
                vec!["state script name"],
            ),
            (
                "script with empty name",
                with(script_named("")),
                vec!["state script name"],
            ),
            (
                "script in a sub-directory",
                with(script_named("sub/ArtifactInstall_Enter_01")),
                vec!["state script name"],
            ),
            (
                "script named ..",
                with(script_named("..")),
                vec!["state script name"],
            ),
            (
                "script named .",
                with(script_named(".")),
                vec!["state script name"],
            ),
            (
                "script escaping",
                with(script_named("../../etc/profile")),
                vec!["state script name"],
            ),
            (
                "script is a symlink",
                with(Entry::special(
                    "scripts/ArtifactCommit_Enter_01",
                    SYMLINK,
                    "/bin/sh",
                )),
                vec!["scripts/ArtifactCommit_Enter_01", "regular"],
            ),
            (
                "script is a hardlink",
                with(Entry::special(
                    "scripts/ArtifactCommit_Enter_01",
                    HARDLINK,
                    "header-info",
                )),
                vec!["scripts/ArtifactCommit_Enter_01", "regular"],
            ),
            (
                "type-info is a directory",
                vec![
                    info.clone(),
                    Entry::special("headers/0000/type-info", DIRECTORY, ""),
                ],
                vec!["type-info"],
            ),
            (
                "header-info is a symlink",
                vec![
                    Entry::special("header-info", SYMLINK, "/etc/passwd"),
                    type_info.clone(),
                ],
                vec!["header-info"],
            ),
            (
                "a device in the header",
                with(Entry::special("headers/0000/dev", CHAR_DEVICE, "")),
                vec!["headers/0000/dev"],
            ),
            (
                "a directory other than scripts/headers",
                with(Entry::special("etc/", DIRECTORY, "")),
                vec!["etc"],
            ),
            (
                "header entry truncated",
                {
                    let mut e = base.clone();
                    e[0].declared_size = Some(e[0].data.len() as u64 + 600);
                    e
                },
                vec![],
            ),
        ];
        for (what, entries, expect) in cases {
            let mut p = parts.clone();
            p.set_header(&entries);
            p.reseal();
            checker.reject(
                format!("{label}: header {what}"),
                &p.bytes(),
                &keys,
                &expect,
            );
        }

        let mut raw = vec![
            ("not a tar", compress(g.compression, &text(11, 3000))),
            ("random bytes", noise(12, 3000)),
            ("empty member", Vec::new()),
        ];
        if g.compression != Compression::None {
            raw.push((
                "uncompressed tar",
                tar_bytes(&[info.clone(), type_info.clone(), meta.clone()]),
            ));
            let other = if g.compression == Compression::Gzip {
                Compression::Zstd
            } else {
                Compression::Gzip
            };
            raw.push((
                "compressed another way",
                compress(other, &decompress(g.compression, &parts.header)),
            ));
            let mut truncated = parts.header.clone();
            truncated.truncate(truncated.len() - 6);
            raw.push(("compressed stream truncated", truncated));
            raw.push((
                "compressed stream with trailing garbage",
                [parts.header.clone(), b"garbage".to_vec()].concat(),
            ));
        }
        for (what, stored) in raw {
            let mut p = parts.clone();
            p.header = stored;
            p.reseal();
            checker.reject_known_multiline(
                format!("{label}: header {what}"),
                &p.bytes(),
                &keys,
                &[&parts.header_name],
            );
        }
    }
    checker.finish();
}

// ---------------------------------------------------------------------------
// The payload tar.

#[test]
fn payload_tar_errors_are_refused() {
    let mut checker = Checker::new("payload_tar_errors_are_refused");
    for g in goods() {
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let base = parts.file_entries();
        let first = parts.files[0].0.clone();

        // Unsafe names, listed in the manifest where the manifest can list
        // them, so that the name check itself must refuse them.
        let names: &[(&[u8], &str)] = &[
            (b"caf\xe9.bin", "UTF-8"),
            (b"\xff", "UTF-8"),
            (b"a/b", "a/b"),
            (b"../escape", "../escape"),
            (b"../../../../etc/passwd", "etc/passwd"),
            (b"/etc/shadow", "/etc/shadow"),
            (b"./x", "./x"),
            (b"..", ".."),
            (b".", "'.'"),
            (b"a b", "a b"),
            (b"tab\there", "tab"),
            (b"back\\slash", "slash"),
            (b"colon:x", "colon"),
            (b"star*", "star"),
            (b"\xc3\xa4rger", "rger"),
            (b"", "payload file name"),
            (b"dir/", "dir/"),
        ];
        for (name, expect) in names {
            for position in ["first", "last"] {
                let mut p = parts.clone();
                let mut entries = base.clone();
                let entry = Entry::file(name, &b"evil"[..]);
                if position == "first" {
                    entries.insert(0, entry);
                } else {
                    entries.push(entry);
                }
                p.set_data(&entries);
                if let Ok(n) = std::str::from_utf8(name)
                    && !n.is_empty()
                    && !n.contains(char::is_whitespace)
                {
                    p.files.push((n.to_string(), b"evil".to_vec()));
                }
                p.reseal();
                checker.reject(
                    format!(
                        "{label}: payload name {:?} ({position})",
                        String::from_utf8_lossy(name)
                    ),
                    &p.bytes(),
                    &keys,
                    &[expect],
                );
            }
        }

        // Entries that are not regular files.
        let specials = [
            (Entry::special("link", SYMLINK, first.as_str()), "symlink"),
            (
                Entry::special("abs-link", SYMLINK, "/etc/passwd"),
                "symlink",
            ),
            (Entry::special("hard", HARDLINK, first.as_str()), "hardlink"),
            (Entry::special("subdir/", DIRECTORY, ""), "directory"),
            (Entry::special("subdir", DIRECTORY, ""), "directory"),
            (Entry::special("null", CHAR_DEVICE, ""), "char device"),
            (Entry::special("sda", BLOCK_DEVICE, ""), "block device"),
            (Entry::special("pipe", FIFO, ""), "fifo"),
            (Entry::special("contig", b'7', ""), "contiguous file"),
            (Entry::special("sparse", b'S', ""), "GNU sparse file"),
            (Entry::special("volume", b'V', ""), "volume label"),
            (Entry::special("weird", b'Z', ""), "unknown type"),
        ];
        for (entry, what) in specials {
            for position in ["first", "last"] {
                let mut p = parts.clone();
                let mut entries = base.clone();
                let name = entry.name();
                if position == "first" {
                    entries.insert(0, entry.clone());
                } else {
                    entries.push(entry.clone());
                }
                p.set_data(&entries);
                p.files
                    .push((name.trim_end_matches('/').to_string(), Vec::new()));
                p.reseal();
                checker.reject(
                    format!("{label}: {what} {name} in the payload ({position})"),
                    &p.bytes(),
                    &keys,
                    &[name.trim_end_matches('/')],
                );
            }
        }

        // Names from PAX and GNU extension headers count, not the ustar
        // name field.
        let ext_cases: Vec<(&str, Vec<Entry>, &str)> = vec![
            (
                "PAX path ../escape",
                vec![
                    pax_entry(&[("path", "../escape")]),
                    Entry::file("ok.bin", &b"evil"[..]),
                ],
                "../escape",
            ),
            (
                "GNU long name with a slash",
                vec![
                    Entry::special("././@LongLink", b'L', "").with_data(&b"sub/dir/file.bin\0"[..]),
                    Entry::file("ok.bin", &b"evil"[..]),
                ],
                "sub/dir/file.bin",
            ),
            (
                "PAX header describing no entry",
                vec![pax_entry(&[("path", "ok.bin")])],
                "data/0000",
            ),
            (
                "PAX global header",
                vec![pax_entry(&[("comment", "x")]).with_kind(b'g')],
                "data/0000",
            ),
        ];
        for (what, extra, expect) in ext_cases {
            for position in ["first", "last"] {
                let mut p = parts.clone();
                let mut entries = base.clone();
                if position == "first" {
                    entries.splice(0..0, extra.iter().cloned());
                } else {
                    entries.extend(extra.iter().cloned());
                }
                p.set_data(&entries);
                p.files.push(("ok.bin".into(), b"evil".to_vec()));
                p.reseal();
                checker.reject(
                    format!("{label}: {what} in the payload ({position})"),
                    &p.bytes(),
                    &keys,
                    &[expect],
                );
            }
        }

        // Manifest and payload disagree.
        let mut p = parts.clone();
        let mut entries = base.clone();
        entries.push(Entry::file("extra.bin", &b"not in the manifest"[..]));
        p.set_data(&entries);
        p.reseal();
        checker.reject(
            format!("{label}: payload file not in the manifest"),
            &p.bytes(),
            &keys,
            &["extra.bin", "manifest"],
        );

        let mut p = parts.clone();
        let mut entries = base.clone();
        entries.push(entries[0].clone());
        p.set_data(&entries);
        p.reseal();
        checker.reject(
            format!("{label}: payload file twice"),
            &p.bytes(),
            &keys,
            &[&first, "twice"],
        );

        let mut p = parts.clone();
        let mut entries = base.clone();
        entries[0].data.extend_from_slice(b"changed");
        p.set_data(&entries);
        p.reseal();
        checker.reject(
            format!("{label}: payload content changed"),
            &p.bytes(),
            &keys,
            &[&first],
        );

        let mut p = parts.clone();
        p.set_data(&base[1..]);
        p.reseal();
        checker.reject(
            format!("{label}: payload file missing"),
            &p.bytes(),
            &keys,
            &[&first, "manifest"],
        );

        let mut p = parts.clone();
        p.set_data(&[]);
        p.reseal();
        checker.reject(
            format!("{label}: empty payload tar"),
            &p.bytes(),
            &keys,
            &[&first],
        );

        for (what, delta) in [("longer", 700i64), ("shorter", -1)] {
            let mut p = parts.clone();
            let mut entries = base.clone();
            let e = entries.iter_mut().find(|e| !e.data.is_empty()).unwrap();
            e.declared_size = Some((e.data.len() as i64 + delta) as u64);
            p.set_data(&entries);
            p.reseal();
            checker.reject(
                format!("{label}: payload file size in its tar header {what}"),
                &p.bytes(),
                &keys,
                &[],
            );
        }

        let mut stored = vec![
            ("not a tar", compress(g.compression, &noise(13, 4000))),
            ("empty member", Vec::new()),
        ];
        if g.compression != Compression::None {
            stored.push(("random bytes", noise(14, 4000)));
            stored.push(("uncompressed tar", tar_bytes(&base)));
            let other = if g.compression == Compression::Xz {
                Compression::Zstd
            } else {
                Compression::Xz
            };
            stored.push(("compressed another way", compress(other, &tar_bytes(&base))));
            let mut truncated = parts.data.clone();
            truncated.truncate(truncated.len() - 3);
            stored.push(("compressed stream truncated", truncated));
            stored.push((
                "compressed stream with trailing garbage",
                [parts.data.clone(), b"garbage!".to_vec()].concat(),
            ));
        }
        for (what, data) in stored {
            let mut p = parts.clone();
            p.data = data;
            p.reseal();
            checker.reject_known_multiline(
                format!("{label}: payload {what}"),
                &p.bytes(),
                &keys,
                &["data/0000"],
            );
        }
    }
    checker.finish();
}

/// Go's archive/tar (and so mender-artifact) stores the size of a file of
/// 8 GiB or more in a PAX `size` record and writes 0 in the ustar size field.
/// The same layout with a small file must read fine.
#[test]

fn pax_size_records_are_honoured() {
    for g in goods() {
        let mut p = Parts::of(g);
        let mut entries = Vec::new();
        for (name, data) in &p.files {
            entries.push(pax_entry(&[("size", &data.len().to_string())]));
            let mut e = Entry::file(name, &data[..]);
            e.declared_size = Some(0);
            entries.push(e);
        }
        p.set_data(&entries);
        p.reseal();
        let (report, rec) = accept(g.label, &p.bytes(), &g.keys());
        assert_eq!(report.files.len(), g.files.len(), "{}", g.label);
        for ((name, data), (got_name, size, got)) in g.files.iter().zip(&rec.files) {
            assert_eq!(name, got_name);
            assert_eq!(
                *size,
                data.len() as u64,
                "{}: begin_file size of {name}",
                g.label
            );
            assert!(got == data, "{}: content of {name}", g.label);
        }
    }
}

// ---------------------------------------------------------------------------
// Signatures.

#[test]
fn signature_errors_are_refused() {
    let mut checker = Checker::new("signature_errors_are_refused");
    let signed: Vec<&Good> = goods().iter().filter(|g| g.signer.is_some()).collect();
    for g in &signed {
        let key = g.signer.unwrap();
        let keys = g.keys();
        let parts = Parts::of(g);
        let label = g.label;
        let good_sig = parts.sig.clone().unwrap();

        let bad_sigs: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
            (
                "not base64",
                b"!!!! not base64 !!!!".to_vec(),
                vec!["manifest.sig", "base64"],
            ),
            ("empty", Vec::new(), vec!["manifest.sig", "base64"]),
            ("blank", b" \n ".to_vec(), vec!["manifest.sig", "base64"]),
            (
                "bad padding",
                good_sig[..good_sig.len() - 1].to_vec(),
                vec!["manifest.sig"],
            ),
            (
                "url-safe alphabet",
                b"-_-_".repeat(good_sig.len() / 4),
                vec!["manifest.sig"],
            ),
            (
                "binary signature",
                base64_decode(&good_sig),
                vec!["manifest.sig"],
            ),
            (
                "zeros",
                b"A".repeat(good_sig.len() - 4)
                    .into_iter()
                    .chain(*b"AA==")
                    .collect(),
                vec!["manifest.sig"],
            ),
            (
                "doubled",
                [good_sig.clone(), good_sig.clone()].concat(),
                vec!["manifest.sig"],
            ),
            (
                "of the empty message",
                key.sign(b""),
                vec!["manifest.sig", "verify"],
            ),
            (
                "of the manifest plus a newline",
                key.sign(&[parts.manifest.clone(), b"\n".to_vec()].concat()),
                vec!["manifest.sig", "verify"],
            ),
            (
                "over 64 KiB",
                b"QUFB".repeat(17 << 10),
                vec!["manifest.sig"],
            ),
        ];
        for (what, sig, expect) in bad_sigs {
            let mut p = parts.clone();
            p.sig = Some(sig);
            checker.reject(
                format!("{label}: signature {what}"),
                &p.bytes(),
                &keys,
                &expect,
            );
        }

        for other in [Key::EcA, Key::EcB, Key::Rsa] {
            if other == key {
                continue;
            }
            let mut p = parts.clone();
            p.sig = Some(other.sign(&parts.manifest));
            checker.reject(
                format!("{label}: signed with {other:?}, {key:?} configured"),
                &p.bytes(),
                &keys,
                &["manifest.sig"],
            );
            checker.reject(
                format!("{label}: {other:?} configured instead of {key:?}"),
                &g.bytes,
                &[other.verify()],
                &["manifest.sig"],
            );
        }

        // Another artifact's valid signature (same key).
        for h in &signed {
            if h.label == g.label || h.signer != g.signer {
                continue;
            }
            let mut p = parts.clone();
            p.sig = Parts::of(h).sig;
            checker.reject(
                format!("{label}: signature of {} swapped in", h.label),
                &p.bytes(),
                &keys,
                &["manifest.sig", "verify"],
            );
            // And the other artifact's signed manifest with this payload.
            let mut p = parts.clone();
            let donor = Parts::of(h);
            p.manifest = donor.manifest;
            p.sig = donor.sig;
            checker.reject(
                format!("{label}: signed manifest of {} swapped in", h.label),
                &p.bytes(),
                &keys,
                &[],
            );
        }

        // Changed after signing.
        let mut p = parts.clone();
        p.manifest.extend_from_slice(
            b"0000000000000000000000000000000000000000000000000000000000000000  data/0000/x\n",
        );
        checker.reject(
            format!("{label}: manifest line added after signing"),
            &p.bytes(),
            &keys,
            &["manifest.sig"],
        );
        let mut p = parts.clone();
        p.files[0].1.push(b'!');
        let entries = p.file_entries();
        p.set_data(&entries);
        p.manifest = p.manifest_text().into_bytes();
        checker.reject(
            format!("{label}: payload and manifest changed after signing"),
            &p.bytes(),
            &keys,
            &["manifest.sig"],
        );

        // No signature, or in the wrong place.
        let mut p = parts.clone();
        p.sig = None;
        checker.reject(
            format!("{label}: signature removed"),
            &p.bytes(),
            &keys,
            &["manifest.sig"],
        );
        let mut l = parts.list();
        let sig = l.remove(2);
        l.insert(3, sig.clone());
        checker.reject(
            format!("{label}: signature after the header"),
            &outer(&l),
            &keys,
            &["manifest.sig"],
        );
        let mut l = parts.list();
        l.remove(2);
        l.insert(1, sig);
        checker.reject(
            format!("{label}: signature before the manifest"),
            &outer(&l),
            &keys,
            &["manifest"],
        );
    }

    for g in goods().iter().filter(|g| g.signer.is_none()) {
        for key in [Key::EcA, Key::Rsa] {
            checker.reject(
                format!("{}: unsigned, {key:?} configured", g.label),
                &g.bytes,
                &[key.verify()],
                &["manifest.sig"],
            );
        }
        checker.reject(
            format!("{}: unsigned, two keys configured", g.label),
            &g.bytes,
            &[Key::EcA.verify(), Key::EcB.verify()],
            &["manifest.sig"],
        );
    }
    checker.finish();
}

fn base64_decode(text: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

// ---------------------------------------------------------------------------
// Size caps.

#[test]
fn oversized_headers_are_refused() {
    let mut checker = Checker::new("oversized_headers_are_refused");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.ext4");
    std::fs::write(&rootfs, noise(21, 1000)).unwrap();
    let script = dir.path().join("ArtifactInstall_Enter_01_big");
    let line = b"echo 'a state script far larger than any real one'\n";
    let big: Vec<u8> = line.iter().copied().cycle().take(20 << 20).collect();
    std::fs::write(&script, &big).unwrap();
    // Our writer refuses to make such an artifact...
    let spec = ArtifactSpec {
        name: "big-script".into(),
        device_types: vec!["qemux86-64".into()],
        payload_type: Some("rootfs-image".into()),
        files: vec![rootfs.clone()],
        scripts: vec![script.clone()],
        compression: Some(Compression::Gzip),
        ..Default::default()
    };
    let out = dir.path().join("big.mender");
    let err = write_artifact(&spec, None, &out).unwrap_err().to_string();
    assert!(err.contains("header"), "{err}");
    assert!(!out.exists());
    // ... so build them by hand from good ones, with a consistent manifest.
    for label in ["rootfs-gzip", "rootfs-none-ec", "module-zstd"] {
        let good = good(label);
        let mut parts = Parts::of(good);
        let mut entries = parts.header_entries();
        entries.insert(
            1,
            Entry::file("scripts/ArtifactInstall_Enter_01_big", big.clone()),
        );
        parts.set_header(&entries);
        parts.reseal();
        let header = parts.header_name.clone();
        checker.reject(
            format!("20 MiB script, {label}"),
            &parts.bytes(),
            &good.keys(),
            &[&header],
        );
    }
    checker.finish();
}

// ---------------------------------------------------------------------------
// Control characters from the input must not break the one-line message.

/// Recomputes the checksum of a tar header block after an edit.
fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    put_octal(&mut h[148..155], u64::from(sum));
}

/// A tar whose first header has a size field that is not a number (and
/// holds a newline), with a valid header checksum.
fn tar_with_bad_size_field(entries: &[Entry]) -> Vec<u8> {
    let mut bytes = tar_bytes(entries);
    bytes[124..136].copy_from_slice(b"12\nrm -rf /\0");
    fix_checksum(&mut bytes[..512]);
    bytes
}

#[test]

fn hostile_bytes_keep_messages_on_one_line() {
    let mut checker = Checker::new("hostile_bytes_keep_messages_on_one_line");
    let g = good("rootfs-gzip");
    let parts = Parts::of(g);
    for evil in ["evil\nname", "evil\rname", "a\u{1b}[31mred"] {
        // An unknown outer member, at each stage.
        for at in [0, 1, 2, 3, 4] {
            let mut l = parts.list();
            l.insert(at, (evil.to_string(), b"x".to_vec()));
            checker.reject(
                format!("outer member {evil:?} at {at}"),
                &outer(&l),
                &[],
                &[],
            );
        }
        let mut l = parts.list();
        l.push((format!("data/{evil}"), b"x".to_vec()));
        checker.reject(
            format!("outer member data/{evil:?} last"),
            &outer(&l),
            &[],
            &[],
        );

        // An entry in the header tar.
        for (first, entry) in [
            (false, Entry::file(evil, "x")),
            (true, Entry::file(evil, "x")),
            (false, Entry::special(evil, SYMLINK, "x")),
        ] {
            let mut p = parts.clone();
            let mut entries = p.header_entries();
            if first {
                entries.insert(0, entry.clone());
            } else {
                entries.push(entry.clone());
            }
            p.set_header(&entries);
            p.reseal();
            checker.reject(
                format!(
                    "header entry {evil:?} type {} first {first}",
                    entry.kind as char
                ),
                &p.bytes(),
                &[],
                &[],
            );
        }

        // Entries in the payload tar.
        for entry in [Entry::file(evil, "x"), Entry::special(evil, SYMLINK, "x")] {
            let mut p = parts.clone();
            let mut entries = p.file_entries();
            entries.push(entry.clone());
            p.set_data(&entries);
            p.reseal();
            checker.reject(
                format!("payload entry {evil:?} type {}", entry.kind as char),
                &p.bytes(),
                &[],
                &[],
            );
        }
    }

    // Tar headers with garbage in numeric fields: the tar crate's error
    // quotes the field and the entry's path.
    let mut outer_bytes = tar_with_bad_size_field(&[Entry::file("version", &parts.version[..])]);
    outer_bytes.truncate(outer_bytes.len() - 1024);
    outer_bytes.extend_from_slice(&parts.bytes()[512 + 512..]);
    checker.reject("outer size field with a newline", &outer_bytes, &[], &[]);
    let mut p = parts.clone();
    p.header = compress(p.compression, &tar_with_bad_size_field(&p.header_entries()));
    p.reseal();
    checker.reject("header tar size field with a newline", &p.bytes(), &[], &[]);
    let mut p = parts.clone();
    p.data = compress(p.compression, &tar_with_bad_size_field(&p.file_entries()));
    p.reseal();
    checker.reject(
        "payload tar size field with a newline",
        &p.bytes(),
        &[],
        &[],
    );
    let mut p = parts.clone();
    p.header = compress(p.compression, &text(11, 3000));
    p.reseal();
    checker.reject("header tar of text lines", &p.bytes(), &[], &[]);
    let mut p = parts.clone();
    p.data = compress(p.compression, &noise(13, 4000));
    p.reseal();
    checker.reject("payload tar of random bytes", &p.bytes(), &[], &[]);
    checker.finish();
}

// ---------------------------------------------------------------------------
// The command line.

/// Bad artifacts for the command line: (what, bytes, validate with the
/// EcA key, text the error line must contain).
fn cli_cases() -> Vec<(&'static str, Vec<u8>, bool, &'static str)> {
    let rootfs = good("rootfs-gzip");
    let signed = good("rootfs-none-ec");
    let mut cases = Vec::new();
    let end = content_end(&rootfs.bytes);
    cases.push(("truncated", rootfs.bytes[..end / 2].to_vec(), false, ""));
    let mut flipped = rootfs.bytes.clone();
    let data = parse_tar(&rootfs.bytes).pop().unwrap();
    flipped[data.data_pos + data.data.len() / 2] ^= 0xff;
    cases.push(("flipped", flipped, false, "data/0000"));
    let parts = Parts::of(rootfs);
    let mut l = parts.list();
    l.insert(2, ("manifest-augment".into(), parts.manifest.clone()));
    cases.push(("augmented", outer(&l), false, "augmented"));
    let mut p = parts.clone();
    p.version = br#"{"format":"mender","version":1}"#.to_vec();
    p.reseal();
    cases.push(("version 1", p.bytes(), false, "version 1"));
    cases.push((
        "unsigned with a key",
        rootfs.bytes.clone(),
        true,
        "manifest.sig",
    ));
    let mut p = Parts::of(signed);
    p.sig = Parts::of(good("module-gzip-ec")).sig;
    cases.push(("signature swapped", p.bytes(), true, "manifest.sig"));
    cases.push(("empty file", Vec::new(), false, ""));
    cases
}

/// Runs `mender-rs artifact validate FILE [-k KEY]`; returns the output and
/// the file's path.
fn cli_validate(
    dir: &Path,
    what: &str,
    bytes: &[u8],
    with_key: bool,
) -> (std::process::Output, String) {
    let key_file = dir.join("key.pem");
    std::fs::write(&key_file, Key::EcA.pem()).unwrap();
    let path = dir.join(format!("{}.mender", what.replace(' ', "-")));
    std::fs::write(&path, bytes).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mender-rs"));
    cmd.args(["artifact", "validate"]).arg(&path);
    if with_key {
        cmd.arg("-k").arg(&key_file);
    }
    (cmd.output().unwrap(), path.display().to_string())
}

#[test]
fn cli_validate_fails_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cli_cases();
    for (what, bytes, with_key, expect) in &cases {
        let (out, path) = cli_validate(dir.path(), what, bytes, *with_key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("mender-rs: error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "{what}: not one 'mender-rs: error:' line: {stderr:?}"
        );
        assert_eq!(
            stderr.lines().last(),
            Some(errors[0]),
            "{what}: the error line is not the last: {stderr:?}"
        );
        assert!(
            errors[0].contains(&path),
            "{what}: the message does not name the file: {stderr:?}"
        );
        assert!(
            errors[0].contains(expect),
            "{what}: {stderr:?} lacks {expect:?}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr:?}");
        assert!(out.stdout.is_empty(), "{what}: stdout: {:?}", out.stdout);
    }

    // And the good ones pass.
    for (label, with_key) in [("rootfs-gzip", false), ("rootfs-none-ec", true)] {
        let (out, _) = cli_validate(dir.path(), label, &good(label).bytes, with_key);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "cli_validate_fails_with_one_error_line: {} malformed inputs refused",
        cases.len()
    );
}

#[test]

fn cli_validate_stderr_is_only_the_error_line() {
    let dir = tempfile::tempdir().unwrap();
    for (what, bytes, with_key, _) in cli_cases() {
        let (out, _) = cli_validate(dir.path(), what, &bytes, with_key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: stderr is not one line: {stderr:?}");
        assert!(
            lines[0].starts_with("mender-rs: error: "),
            "{what}: {stderr:?}"
        );
    }
}
