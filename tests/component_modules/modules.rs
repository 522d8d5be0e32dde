//! Update Module runner against the modules Debian's `mender-client` ships
//! (`single-file`, `directory`, `script`) and small shell modules that
//! exercise the streaming protocol, files/ mode, failures and timeouts.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use mender_rs::artifact::header::{ArtifactHeader, DependValue, PayloadHeader, Provides};
use mender_rs::modules::{
    DownloadSession, ModuleConfig, ModuleError, RebootKind, UpdateModule, find_module,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const DEBIAN_MODULES: &str = "/usr/share/mender/modules/v3";

// ---------------------------------------------------------------- helpers

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct TestLogger;

impl log::Log for TestLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LOG.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

fn init_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&TestLogger).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

fn logged(containing: &str) -> Vec<String> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(containing))
        .cloned()
        .collect()
}

/// A temporary modules directory, work directory and output directory.
struct Env {
    dir: TempDir,
    cfg: ModuleConfig,
}

impl Env {
    fn new(timeout: Duration) -> Env {
        init_log();
        let dir = tempfile::tempdir().unwrap();
        let modules_dir = dir.path().join("modules");
        fs::create_dir(&modules_dir).unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        let cfg = ModuleConfig {
            modules_dir,
            work_dir: dir.path().join("data/modules/v3"),
            timeout,
        };
        Env { dir, cfg }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// A shell module `name` in the modules directory; `@OUT@` in `body`
    /// becomes the output directory.
    fn script(&self, name: &str, body: &str) -> UpdateModule {
        let path = self.cfg.modules_dir.join(name);
        let body = body.replace("@OUT@", &self.out().display().to_string());
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let found = find_module(&self.cfg.modules_dir, name).unwrap().unwrap();
        self.prepared(found, name)
    }

    /// One of the modules Debian ships; the test fails when it is missing.
    fn debian(&self, name: &str) -> UpdateModule {
        let found = find_module(Path::new(DEBIAN_MODULES), name)
            .unwrap()
            .unwrap_or_else(|| {
                panic!("{DEBIAN_MODULES}/{name} missing: install Debian's mender-client package")
            });
        self.prepared(found, name)
    }

    fn prepared(&self, path: PathBuf, payload_type: &str) -> UpdateModule {
        let m = UpdateModule::new(&self.cfg, path);
        m.prepare_tree(&header(payload_type), &current(), "test-device")
            .unwrap();
        m
    }
}

fn header(payload_type: &str) -> ArtifactHeader {
    ArtifactHeader {
        format_version: 3,
        name: "release-2".into(),
        group: Some("group-a".into()),
        compatible_devices: vec!["test-device".into()],
        provides: BTreeMap::from([
            ("artifact_name".into(), "release-2".into()),
            ("artifact_group".into(), "group-a".into()),
        ]),
        depends: BTreeMap::from([(
            "device_type".into(),
            DependValue::Any(vec!["test-device".into()]),
        )]),
        scripts: vec![],
        payloads: vec![PayloadHeader {
            payload_type: Some(payload_type.into()),
            provides: BTreeMap::from([("rootfs-image.x.version".into(), "2".into())]),
            depends: BTreeMap::new(),
            clears_provides: Some(vec!["rootfs-image.x.*".into()]),
            meta_data: Some(json!({"key": "value", "n": 3}).as_object().unwrap().clone()),
            v2_files: None,
            chunk_index: None,
        }],
    }
}

fn current() -> Provides {
    BTreeMap::from([
        ("artifact_name".into(), "release-1".into()),
        ("artifact_group".into(), "group-0".into()),
    ])
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + i / 251 + seed) % 256) as u8)
        .collect()
}

/// Feeds `files` to the session the way the artifact reader does.
fn feed(s: &mut DownloadSession, files: &[(&str, Vec<u8>)]) -> Result<(), ModuleError> {
    for (name, data) in files {
        s.begin_file(name, data.len() as u64)?;
        for chunk in data.chunks(100_000) {
            s.write(chunk)?;
        }
        s.end_file()?;
    }
    Ok(())
}

/// A whole Download: start, feed, finish; aborts on error.
fn download(m: &UpdateModule, files: &[(&str, Vec<u8>)]) -> Result<(), ModuleError> {
    let mut s = m.start_download()?;
    match feed(&mut s, files) {
        Ok(()) => s.finish(),
        Err(e) => {
            s.abort();
            Err(e)
        }
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn mode(p: impl AsRef<Path>) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// True once `pid` is gone (or a zombie nobody reaps), waiting up to 3 s.
fn dead(pid: &str) -> bool {
    let stat = format!("/proc/{}/stat", pid.trim());
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        match fs::read_to_string(&stat) {
            Err(_) => return true,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true;
            }
            Ok(_) if Instant::now() >= until => return false,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits up to 3 s for the file a module writes from the background.
fn wait_file(p: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Ok(s) = fs::read_to_string(p)
            && s.ends_with('\n')
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never written", p.display());
}

fn tar(src: &Path, dest: &Path) -> Vec<u8> {
    let st = Command::new("tar")
        .arg("-cf")
        .arg(dest)
        .arg("-C")
        .arg(src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    fs::read(dest).unwrap()
}

const SECS_20: Duration = Duration::from_secs(20);

// -------------------------------------------------- Debian's real modules

#[test]
fn debian_single_file_install_commit() {
    let env = Env::new(SECS_20);
    let m = env.debian("single-file");
    let dest = env.out().join("etc/app");
    let files = [
        ("dest_dir", dest.display().to_string().into_bytes()),
        ("filename", b"app.conf".to_vec()),
        ("permissions", b"640".to_vec()),
        ("app.conf", b"setting = new\n".to_vec()),
    ];
    download(&m, &files).unwrap();
    // single-file does not stream: the client stored the files.
    let tree = m.tree();
    assert_eq!(read(tree.join("files/app.conf")), "setting = new\n");
    assert_eq!(read(tree.join("files/filename")), "app.conf");
    assert!(!tree.join("stream-next").exists());
    assert!(!tree.join("streams").exists());

    m.call("ArtifactInstall").unwrap();
    assert_eq!(read(dest.join("app.conf")), "setting = new\n");
    assert_eq!(mode(dest.join("app.conf")), 0o640);
    assert_eq!(m.needs_reboot().unwrap(), RebootKind::No);
    assert!(m.supports_rollback().unwrap());
    m.call("ArtifactCommit").unwrap();
    m.cleanup().unwrap();
    assert!(!tree.exists());
    assert_eq!(read(dest.join("app.conf")), "setting = new\n");
}

#[test]
fn debian_single_file_rollback() {
    let env = Env::new(SECS_20);
    let m = env.debian("single-file");
    let dest = env.out().join("opt");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("tool.sh"), "old\n").unwrap();
    let files = [
        ("dest_dir", dest.display().to_string().into_bytes()),
        ("filename", b"tool.sh".to_vec()),
        ("tool.sh", b"new\n".to_vec()),
    ];
    download(&m, &files).unwrap();
    m.call("ArtifactInstall").unwrap();
    assert_eq!(read(dest.join("tool.sh")), "new\n");
    assert!(m.supports_rollback().unwrap());
    m.call("ArtifactRollback").unwrap();
    assert_eq!(read(dest.join("tool.sh")), "old\n");
    m.call("ArtifactFailure").unwrap();
    m.cleanup().unwrap();
    assert!(!m.tree().exists());
}

#[test]
fn debian_directory_install_and_rollback() {
    let env = Env::new(SECS_20);
    let dest = env.out().join("www");
    fs::create_dir_all(dest.join("sub")).unwrap();
    fs::write(dest.join("index.html"), "old index").unwrap();
    fs::write(dest.join("sub/old.txt"), "old file").unwrap();
    let src = env.out().join("src");
    fs::create_dir_all(src.join("assets")).unwrap();
    fs::write(src.join("index.html"), "new index").unwrap();
    fs::write(src.join("assets/app.js"), "js").unwrap();
    let update = tar(&src, &env.out().join("update.tar"));
    let files = [
        ("update.tar", update),
        ("dest_dir", dest.display().to_string().into_bytes()),
    ];

    // Install and commit.
    let m = env.debian("directory");
    download(&m, &files).unwrap();
    m.call("ArtifactInstall").unwrap();
    assert_eq!(read(dest.join("index.html")), "new index");
    assert_eq!(read(dest.join("assets/app.js")), "js");
    assert!(!dest.join("sub").exists());
    assert_eq!(m.needs_reboot().unwrap(), RebootKind::No);
    assert!(m.supports_rollback().unwrap());
    m.call("ArtifactCommit").unwrap();
    m.cleanup().unwrap();
    assert_eq!(read(dest.join("index.html")), "new index");

    // Put the old content back, install again and roll back.
    fs::remove_dir_all(&dest).unwrap();
    fs::create_dir_all(dest.join("sub")).unwrap();
    fs::write(dest.join("index.html"), "old index").unwrap();
    fs::write(dest.join("sub/old.txt"), "old file").unwrap();
    let m = env.debian("directory");
    download(&m, &files).unwrap();
    m.call("ArtifactInstall").unwrap();
    assert_eq!(read(dest.join("index.html")), "new index");
    m.call("ArtifactRollback").unwrap();
    assert_eq!(read(dest.join("index.html")), "old index");
    assert_eq!(read(dest.join("sub/old.txt")), "old file");
    assert!(!dest.join("assets").exists());
    m.call("ArtifactFailure").unwrap();
    m.cleanup().unwrap();
}

#[test]
fn debian_script_runs_the_payload() {
    let env = Env::new(SECS_20);
    let m = env.debian("script");
    let marker = env.out().join("marker");
    let script = format!(
        "#!/bin/sh\necho \"ran in $(pwd) with $#\" > '{}'\n",
        marker.display()
    );
    download(&m, &[("run.sh", script.into_bytes())]).unwrap();
    assert!(!marker.exists(), "nothing runs during Download");
    m.call("ArtifactInstall").unwrap();
    assert_eq!(
        read(&marker),
        format!("ran in {} with 0\n", m.tree().display())
    );
    // script prints nothing for queries: no reboot, no rollback.
    assert_eq!(m.needs_reboot().unwrap(), RebootKind::No);
    assert!(!m.supports_rollback().unwrap());
    m.call("ArtifactCommit").unwrap();
    m.cleanup().unwrap();
    assert!(!m.tree().exists());
}

// ------------------------------------------------------ the file tree

#[test]
fn file_tree_contents_and_modes() {
    let env = Env::new(SECS_20);
    let m = env.script("my-type", "exit 0");
    let tree = m.tree();
    assert_eq!(tree, env.cfg.work_dir.join("payloads/0000/tree"));
    assert_eq!(read(tree.join("version")), "3");
    assert_eq!(read(tree.join("current_artifact_name")), "release-1");
    assert_eq!(read(tree.join("current_artifact_group")), "group-0");
    assert_eq!(read(tree.join("current_device_type")), "test-device");
    assert_eq!(read(tree.join("header/artifact_name")), "release-2");
    assert_eq!(read(tree.join("header/artifact_group")), "group-a");
    assert_eq!(read(tree.join("header/payload_type")), "my-type");
    let json = |f: &str| -> Value { serde_json::from_str(&read(tree.join(f))).unwrap() };
    assert_eq!(
        json("header/header-info"),
        json!({
            "payloads": [{"type": "my-type"}],
            "artifact_provides": {"artifact_name": "release-2", "artifact_group": "group-a"},
            "artifact_depends": {"device_type": ["test-device"]},
        })
    );
    assert_eq!(
        json("header/type-info"),
        json!({
            "type": "my-type",
            "artifact_provides": {"rootfs-image.x.version": "2"},
            "artifact_depends": {},
            "clears_artifact_provides": ["rootfs-image.x.*"],
        })
    );
    assert_eq!(json("header/meta-data"), json!({"key": "value", "n": 3}));
    assert!(tree.join("tmp").is_dir());
    for d in ["", "header", "tmp"] {
        assert_eq!(mode(tree.join(d)), 0o700, "{d}");
    }
    for f in [
        "version",
        "current_artifact_name",
        "current_artifact_group",
        "current_device_type",
        "header/artifact_group",
        "header/artifact_name",
        "header/payload_type",
        "header/header-info",
        "header/type-info",
        "header/meta-data",
    ] {
        assert_eq!(mode(tree.join(f)), 0o600, "{f}");
    }
    let names: Vec<_> = fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");

    // Re-preparing removes what an earlier run left behind; no current
    // group and no meta-data give empty values.
    fs::write(tree.join("tmp/leftover"), "x").unwrap();
    fs::create_dir(tree.join("files")).unwrap();
    let mut h = header("my-type");
    h.group = None;
    h.payloads[0].meta_data = None;
    h.payloads[0].clears_provides = None;
    let cur = BTreeMap::from([("artifact_name".to_string(), "r1".to_string())]);
    m.prepare_tree(&h, &cur, "dev").unwrap();
    assert!(!tree.join("tmp/leftover").exists());
    assert!(!tree.join("files").exists());
    assert_eq!(read(tree.join("current_artifact_group")), "");
    assert_eq!(read(tree.join("header/artifact_group")), "");
    assert_eq!(json("header/meta-data"), json!({}));
    assert_eq!(
        json("header/type-info")["clears_artifact_provides"],
        Value::Null
    );
}

#[test]
fn cleanup_removes_the_tree_even_when_cleanup_fails() {
    let env = Env::new(SECS_20);
    let m = env.script(
        "failing-cleanup",
        "[ \"$1\" = Cleanup ] && { echo cleanup-called >> @OUT@/calls; exit 5; }\nexit 0",
    );
    let e = m.cleanup().unwrap_err();
    assert!(e.to_string().ends_with("Cleanup exited with code 5"), "{e}");
    assert!(!m.tree().exists());
    assert_eq!(read(env.out().join("calls")), "cleanup-called\n");
    // No tree: Cleanup is not called again.
    m.cleanup().unwrap();
    assert_eq!(read(env.out().join("calls")), "cleanup-called\n");
    // Nor is any other call possible.
    let e = m.call("ArtifactInstall").unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

// ------------------------------------------------ streaming and files/

const STREAMING: &str = r#"
case "$1" in
Download)
    echo "$# $1 $2 $(pwd)" > @OUT@/args
    [ -p stream-next ] && echo fifo > @OUT@/stream-next-type
    n=0
    while true; do
        f=$(cat stream-next)
        [ -z "$f" ] && break
        n=$((n+1))
        echo "$f" >> @OUT@/order
        cat "$f" > @OUT@/$n
    done
    echo "end after $n" > @OUT@/end
    ;;
esac
exit 0
"#;

#[test]
fn streaming_module_gets_bytes_in_order() {
    let env = Env::new(SECS_20);
    let m = env.script("streamer", STREAMING);
    let files = [
        ("big.bin", pattern(1_500_000, 1)),
        ("empty", Vec::new()),
        ("small.txt", b"hello\n".to_vec()),
    ];
    let mut s = m.start_download().unwrap();
    feed(&mut s, &files).unwrap();
    assert!(!s.files_mode());
    s.finish().unwrap();

    let out = env.out();
    let tree = m.tree();
    assert_eq!(
        read(out.join("args")),
        format!("2 Download {} {}\n", tree.display(), tree.display())
    );
    assert_eq!(read(out.join("stream-next-type")), "fifo\n");
    assert_eq!(
        read(out.join("order")),
        "streams/big.bin\nstreams/empty\nstreams/small.txt\n"
    );
    for (i, (_, data)) in files.iter().enumerate() {
        assert_eq!(&fs::read(out.join((i + 1).to_string())).unwrap(), data);
    }
    assert_eq!(read(out.join("end")), "end after 3\n");
    // The streaming artefacts are gone, and nothing was stored.
    assert!(!tree.join("stream-next").exists());
    assert!(!tree.join("streams").exists());
    assert!(!tree.join("files").exists());
    m.cleanup().unwrap();
}

#[test]
fn streaming_module_zero_files() {
    let env = Env::new(SECS_20);
    let m = env.script("streamer", STREAMING);
    download(&m, &[]).unwrap();
    assert_eq!(read(env.out().join("end")), "end after 0\n");
    assert!(!env.out().join("order").exists());
    assert!(!m.tree().join("files").exists());
}

#[test]
fn module_that_exits_at_once_gets_files() {
    let env = Env::new(SECS_20);
    let m = env.script("store", "exit 0");
    let files = [
        ("a.bin", pattern(300_000, 2)),
        ("b", b"bee".to_vec()),
        ("c", Vec::new()),
    ];
    let mut s = m.start_download().unwrap();
    feed(&mut s, &files).unwrap();
    assert!(s.files_mode());
    s.finish().unwrap();
    let tree = m.tree();
    for (name, data) in &files {
        let p = tree.join("files").join(name);
        assert_eq!(&fs::read(&p).unwrap(), data);
        assert_eq!(mode(&p), 0o600);
    }
    assert_eq!(mode(tree.join("files")), 0o700);
    assert!(!tree.join("stream-next").exists());
    assert!(!tree.join("streams").exists());
    m.cleanup().unwrap();
    assert!(!tree.exists());
}

#[test]
fn module_that_exits_at_once_zero_files() {
    let env = Env::new(SECS_20);
    let m = env.script("store", "exit 0");
    download(&m, &[]).unwrap();
    let files = m.tree().join("files");
    assert!(files.is_dir());
    assert_eq!(fs::read_dir(&files).unwrap().count(), 0);
    assert!(!m.tree().join("stream-next").exists());
}

#[test]
fn duplicate_file_in_files_mode_is_an_error() {
    let env = Env::new(SECS_20);
    let m = env.script("store", "exit 0");
    let e = download(&m, &[("a", b"1".to_vec()), ("a", b"2".to_vec())]).unwrap_err();
    assert!(e.to_string().contains("files/a"), "{e}");
    // abort removed the partial files/.
    assert!(!m.tree().join("files").exists());
}

#[test]
fn download_exit_code_is_an_error() {
    let env = Env::new(SECS_20);
    let m = env.script("fails", "echo failing-download-output >&2\nexit 1");
    let e = download(&m, &[("a", b"data".to_vec())]).unwrap_err();
    let path = env.cfg.modules_dir.join("fails");
    assert_eq!(
        e.to_string(),
        format!("module {}: Download exited with code 1", path.display())
    );
    assert!(matches!(e, ModuleError::Exit { code: 1, .. }));
    assert!(!m.tree().join("files").exists());
    assert!(!m.tree().join("stream-next").exists());
    // The same with no payload file: finish reports it.
    let m = env.script("fails", "exit 1");
    let e = download(&m, &[]).unwrap_err();
    assert!(matches!(e, ModuleError::Exit { code: 1, .. }), "{e}");
    assert!(!logged("Update Module output (stderr): failing-download-output").is_empty());
}

#[test]
fn module_dying_mid_stream_is_an_error_without_hanging() {
    let env = Env::new(SECS_20);
    let m = env.script(
        "dies",
        "f=$(cat stream-next)\nhead -c 100 \"$f\" > /dev/null\nexit 3",
    );
    let started = Instant::now();
    let e = download(&m, &[("big", pattern(4 << 20, 3))]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(!matches!(e, ModuleError::Timeout { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("terminated in the middle of the download")
            || msg.contains("stopped reading streams/big"),
        "{msg}"
    );
    assert!(!m.tree().join("streams").exists());
    assert!(!m.tree().join("stream-next").exists());
}

#[test]
fn module_exiting_between_streams_is_an_error() {
    let env = Env::new(SECS_20);
    // Reads one whole stream, then exits 0 before the end marker.
    let m = env.script(
        "one-only",
        "f=$(cat stream-next)\ncat \"$f\" > /dev/null\nexit 0",
    );
    let started = Instant::now();
    let e = download(&m, &[("a", pattern(1000, 4)), ("b", pattern(10, 5))]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.to_string()
            .ends_with("Download: terminated in the middle of the download"),
        "{e}"
    );
    // Same when the only file was read and the module does not wait for
    // the end marker.
    let m = env.script(
        "one-only",
        "f=$(cat stream-next)\ncat \"$f\" > /dev/null\nexit 0",
    );
    let e = download(&m, &[("a", pattern(1000, 4))]).unwrap_err();
    assert!(e.to_string().contains("terminated in the middle"), "{e}");
}

#[test]
fn module_leaving_a_stalled_reader_behind_is_an_error() {
    let env = Env::new(SECS_20);
    // The stream is held open by a background process that never reads.
    let m = env.script(
        "stall",
        "f=$(cat stream-next)\nsleep 30 < \"$f\" &\necho $! > @OUT@/pid\nexit 0",
    );
    let started = Instant::now();
    let e = download(&m, &[("big", pattern(2 << 20, 6))]).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(e.to_string().contains("terminated in the middle"), "{e}");
    let pid = wait_file(&env.out().join("pid"));
    assert!(dead(&pid), "background reader {pid} survived abort");
}

#[test]
fn abort_mid_stream_kills_the_module() {
    let env = Env::new(SECS_20);
    let m = env.script(
        "slow",
        "echo $$ > @OUT@/pid\nf=$(cat stream-next)\ncat \"$f\" > /dev/null\nsleep 30",
    );
    let mut s = m.start_download().unwrap();
    s.begin_file("a", 1000).unwrap();
    s.write(&pattern(500, 7)).unwrap();
    let started = Instant::now();
    s.abort();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(dead(&wait_file(&env.out().join("pid"))));
    let tree = m.tree();
    assert!(!tree.join("streams").exists());
    assert!(!tree.join("stream-next").exists());
    assert!(
        tree.join("header").is_dir(),
        "the tree itself stays for Cleanup"
    );
}

#[test]
fn hanging_download_times_out_and_is_killed_with_its_children() {
    let env = Env::new(Duration::from_secs(2));
    let m = env.script("hangs", "sleep 60 &\necho $! > @OUT@/pid\nwait");
    let started = Instant::now();
    let e = download(&m, &[("a", b"x".to_vec())]).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, ModuleError::Timeout { .. }), "{e}");
    assert!(
        e.to_string().ends_with("Download timed out after 2s"),
        "{e}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(dead(&wait_file(&env.out().join("pid"))));
}

#[test]
fn hanging_call_ignoring_sigterm_is_killed() {
    let env = Env::new(Duration::from_secs(1));
    let m = env.script(
        "stubborn",
        "[ \"$1\" = ArtifactInstall ] || exit 0\ntrap '' TERM\nsleep 60 &\necho $! > @OUT@/pid\nwait\nwait\nsleep 60",
    );
    let started = Instant::now();
    let e = m.call("ArtifactInstall").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, ModuleError::Timeout { .. }), "{e}");
    // 1 s timeout, then 1 s grace before SIGKILL.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(dead(&wait_file(&env.out().join("pid"))));
}

// ------------------------------------------------ calls and queries

#[test]
fn state_call_exit_status_signal_and_output() {
    let env = Env::new(SECS_20);
    let m = env.script(
        "calls",
        r#"echo "$#:$1:$(pwd)" >> @OUT@/calls
case "$1" in
ArtifactInstall) echo "install-stdout-7f3"; echo "install-stderr-7f3" >&2 ;;
ArtifactCommit) exit 1 ;;
ArtifactRollback) kill -9 $$ ;;
ArtifactFailure) yes bigout-line-7f3 | head -c 1048576; yes bigerr-line-7f3 | head -c 1048576 >&2 ;;
esac
exit 0"#,
    );
    let path = env.cfg.modules_dir.join("calls");
    m.call("ArtifactInstall").unwrap();
    assert_eq!(
        logged("install-stdout-7f3"),
        ["Update Module output (stdout): install-stdout-7f3"]
    );
    assert_eq!(
        logged("install-stderr-7f3"),
        ["Update Module output (stderr): install-stderr-7f3"]
    );

    let e = m.call("ArtifactCommit").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "module {}: ArtifactCommit exited with code 1",
            path.display()
        )
    );
    let e = m.call("ArtifactRollback").unwrap_err();
    assert!(matches!(e, ModuleError::Signal { signal: 9, .. }), "{e}");

    // A module printing megabytes does not block; the log is capped.
    let started = Instant::now();
    m.call("ArtifactFailure").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    for tag in ["bigout-line-7f3", "bigerr-line-7f3"] {
        let lines = logged(tag);
        // Module output bytes, without the log prefix.
        let bytes: usize = lines.iter().map(|l| l.len() - 31 + 1).sum();
        assert!(
            !lines.is_empty() && bytes <= 10 << 10,
            "{tag}: {bytes} bytes logged"
        );
    }
    assert!(logged("[further output discarded]").len() >= 2);

    let tree = m.tree().display().to_string();
    assert_eq!(
        read(env.out().join("calls")),
        format!(
            "2:ArtifactInstall:{tree}\n2:ArtifactCommit:{tree}\n2:ArtifactRollback:{tree}\n2:ArtifactFailure:{tree}\n"
        )
    );
}

#[test]
fn query_answers() {
    let env = Env::new(SECS_20);
    let answer = env.out().join("answer");
    let m = env.script(
        "asks",
        &format!(
            "case \"$1\" in NeedsArtifactReboot|SupportsRollback|Other) cat '{}'; exit $(cat '{}.code' 2>/dev/null || echo 0) ;; esac\nexit 0",
            answer.display(),
            answer.display()
        ),
    );
    let set = |s: &str| fs::write(&answer, s).unwrap();

    for (text, want) in [
        ("Yes\n", RebootKind::Yes),
        ("No\n", RebootKind::No),
        ("Automatic", RebootKind::Automatic),
        ("", RebootKind::No),
        ("\n", RebootKind::No),
        ("Yes\n\n  \n", RebootKind::Yes),
        ("  Automatic \r\n", RebootKind::Automatic),
    ] {
        set(text);
        assert_eq!(m.needs_reboot().unwrap(), want, "{text:?}");
    }
    for text in ["Maybe\n", "yes\n", "Yes\nNo\n", "\nYes\n"] {
        set(text);
        let e = m.needs_reboot().unwrap_err();
        assert!(matches!(e, ModuleError::Protocol { .. }), "{text:?}: {e}");
        assert!(e.to_string().contains("NeedsArtifactReboot"), "{e}");
    }
    set("Maybe\n");
    assert!(
        m.needs_reboot()
            .unwrap_err()
            .to_string()
            .ends_with("NeedsArtifactReboot: unexpected answer 'Maybe'")
    );

    for (text, want) in [("Yes\n", true), ("No", false), ("", false)] {
        set(text);
        assert_eq!(m.supports_rollback().unwrap(), want, "{text:?}");
    }
    for text in ["Automatic\n", "Yes\nYes\n"] {
        set(text);
        assert!(m.supports_rollback().is_err(), "{text:?}");
    }

    set("some answer  \n");
    assert_eq!(m.query("Other").unwrap(), "some answer");
    // Unknown queries: the module prints nothing and exits 0.
    assert_eq!(m.query("ProvidePayloadFileSizes").unwrap(), "");
    // A failing query is an error whatever it printed.
    fs::write(env.out().join("answer.code"), "2").unwrap();
    set("Yes\n");
    let e = m.needs_reboot().unwrap_err();
    assert!(matches!(e, ModuleError::Exit { code: 2, .. }), "{e}");
}

// ------------------------------------------------------ finding modules

#[test]
fn finding_modules() {
    let env = Env::new(SECS_20);
    let dir = &env.cfg.modules_dir;
    env.script("good", "exit 0");
    assert_eq!(find_module(dir, "good").unwrap(), Some(dir.join("good")));
    assert_eq!(find_module(dir, "missing").unwrap(), None);

    fs::write(dir.join("plain"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("plain"), fs::Permissions::from_mode(0o644)).unwrap();
    let e = find_module(dir, "plain").unwrap_err();
    assert!(matches!(e, ModuleError::NotExecutable(_)), "{e}");
    assert!(e.to_string().contains("plain"), "{e}");

    fs::create_dir(dir.join("adir")).unwrap();
    assert!(matches!(
        find_module(dir, "adir"),
        Err(ModuleError::NotExecutable(_))
    ));

    for bad in ["a/b", "../modules/good", "/bin/true", ".", "..", ""] {
        assert!(
            matches!(find_module(dir, bad), Err(ModuleError::InvalidType(_))),
            "{bad:?}"
        );
    }

    // A symlink must resolve inside the directory.
    std::os::unix::fs::symlink("/bin/true", dir.join("escape")).unwrap();
    assert!(matches!(
        find_module(dir, "escape"),
        Err(ModuleError::OutsideDir { .. })
    ));
    std::os::unix::fs::symlink("good", dir.join("alias")).unwrap();
    assert_eq!(find_module(dir, "alias").unwrap(), Some(dir.join("alias")));
    std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
    assert_eq!(find_module(dir, "dangling").unwrap(), None);

    // Debian's modules are found where the package puts them.
    for name in ["single-file", "directory", "script"] {
        let p = find_module(Path::new(DEBIAN_MODULES), name)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} missing: install mender-client"));
        assert!(fs::metadata(&p).unwrap().file_type().is_file());
        assert!(!fs::metadata(&p).unwrap().file_type().is_fifo());
    }
}

#[test]
fn non_executable_or_missing_module_cannot_start() {
    let env = Env::new(SECS_20);
    let plain = env.cfg.modules_dir.join("plain");
    fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    let m = env.prepared(plain.clone(), "plain");
    let e = m.call("ArtifactInstall").unwrap_err();
    assert!(matches!(e, ModuleError::Spawn { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "module {}: ArtifactInstall: cannot start",
            plain.display()
        )),
        "{e}"
    );
    let e = m.start_download().err().unwrap();
    assert!(matches!(e, ModuleError::Spawn { .. }), "{e}");

    let m = env.prepared(env.cfg.modules_dir.join("gone"), "gone");
    assert!(matches!(m.needs_reboot(), Err(ModuleError::Spawn { .. })));
}
