//! Update Module protocol 4.0: `ProvidePayloadFileSizes` and
//! `DownloadWithFileSizes` (`docs/update-modules.md`), through the
//! installer the engine uses. A module written for Mender 4.x refuses plain
//! `Download` (as 4.x's own `rootfs-image` does) and reads
//! `streams/<name> <size>` lines; a module written for 3.x (no answer to
//! the query) still gets `Download` and plain lines.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use mender_rs::artifact::header::{ArtifactHeader, PayloadHeader, Provides};
use mender_rs::installer::module::ModuleInstaller;
use mender_rs::installer::{DeviceContext, Installer};
use mender_rs::modules::{ModuleConfig, find_module};

struct Env {
    dir: tempfile::TempDir,
    cfg: ModuleConfig,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let modules_dir = dir.path().join("modules");
        fs::create_dir(&modules_dir).unwrap();
        let cfg = ModuleConfig {
            modules_dir,
            work_dir: dir.path().join("data/modules/v3"),
            timeout: Duration::from_secs(20),
        };
        Env { dir, cfg }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn logged(&self) -> Vec<String> {
        fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Installs the shell module `name` (`@LOG@` in `body` is the log file)
    /// and returns an installer for it.
    fn installer(&self, name: &str, body: &str) -> ModuleInstaller {
        let path = self.cfg.modules_dir.join(name);
        let body = body.replace("@LOG@", &self.log().display().to_string());
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let found = find_module(&self.cfg.modules_dir, name).unwrap().unwrap();
        ModuleInstaller::new(&self.cfg, name, found)
    }
}

fn header(payload_type: &str) -> ArtifactHeader {
    ArtifactHeader {
        format_version: 3,
        name: "release-2".into(),
        compatible_devices: vec!["test-device".into()],
        payloads: vec![PayloadHeader {
            payload_type: Some(payload_type.into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Header, then every file as the artifact reader hands them over, then
/// the end of the download.
fn download(inst: &mut ModuleInstaller, payload_type: &str, files: &[(&str, Vec<u8>)]) {
    let provides: Provides = BTreeMap::from([("artifact_name".into(), "release-1".into())]);
    inst.prepare(
        &header(payload_type),
        &DeviceContext {
            device_type: "test-device",
            provides: &provides,
        },
    )
    .unwrap();
    for (name, data) in files {
        inst.begin_file(name, data.len() as u64).unwrap();
        for chunk in data.chunks(4096) {
            inst.write(chunk).unwrap();
        }
        inst.end_file().unwrap();
    }
    inst.finish_download().unwrap();
}

/// Logs every call and each `stream-next` line it reads; refuses plain
/// `Download` when it answers Yes to the query (`@SIZES@`).
const MODULE: &str = r#"echo "call $1" >> '@LOG@'
case "$1" in
  ProvidePayloadFileSizes) @SIZES@ ;;
  Download)
    [ -n "@REFUSE@" ] && { echo "This module supports DownloadWithFileSizes only" >&2; exit 1; }
    while :; do
      line=$(cat stream-next)
      [ -z "$line" ] && break
      echo "line $line" >> '@LOG@'
      cat "$line" > /dev/null
    done ;;
  DownloadWithFileSizes)
    while :; do
      line=$(cat stream-next)
      [ -z "$line" ] && break
      echo "line $line" >> '@LOG@'
      file=${line%% *}
      size=${line#* }
      got=$(wc -c < "$file")
      [ "$got" -eq "$size" ] || { echo "size $size announced, $got read" >&2; exit 1; }
      echo "read $file $got" >> '@LOG@'
    done ;;
esac
exit 0"#;

#[test]
fn a_module_for_4x_gets_download_with_file_sizes() {
    let env = Env::new();
    let body = MODULE
        .replace("@SIZES@", "echo Yes")
        .replace("@REFUSE@", "yes");
    let mut inst = env.installer("needs-sizes", &body);
    let files = [("image.bin", vec![5u8; 70_000]), ("empty", Vec::new())];
    download(&mut inst, "needs-sizes", &files);
    assert_eq!(
        env.logged(),
        [
            "call ProvidePayloadFileSizes",
            "call DownloadWithFileSizes",
            "line streams/image.bin 70000",
            "read streams/image.bin 70000",
            "line streams/empty 0",
            "read streams/empty 0",
        ]
    );
}

#[test]
fn a_module_for_3x_still_gets_plain_download() {
    let env = Env::new();
    // A 3.x module prints nothing for a verb it does not know.
    let body = MODULE.replace("@SIZES@", ":").replace("@REFUSE@", "");
    let mut inst = env.installer("plain", &body);
    download(&mut inst, "plain", &[("a.txt", b"hello".to_vec())]);
    assert_eq!(
        env.logged(),
        [
            "call ProvidePayloadFileSizes",
            "call Download",
            "line streams/a.txt"
        ]
    );
}

#[test]
fn an_answer_other_than_yes_or_no_is_refused() {
    let env = Env::new();
    let body = MODULE
        .replace("@SIZES@", "echo Maybe")
        .replace("@REFUSE@", "");
    let mut inst = env.installer("odd", &body);
    let provides: Provides = BTreeMap::new();
    let err = inst
        .prepare(
            &header("odd"),
            &DeviceContext {
                device_type: "test-device",
                provides: &provides,
            },
        )
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("ProvidePayloadFileSizes") && text.contains("Maybe"),
        "{text}"
    );
    // Nothing was downloaded.
    assert_eq!(env.logged(), ["call ProvidePayloadFileSizes"]);
}
