//! Update Modules, protocol v3 (spec §2): finding a module, building its
//! file tree, the `Download` streaming session and the state and query
//! calls.
//!
//! Every module invocation runs as `<module> <STATE> <TREE>` with the tree
//! as working directory, stdin from /dev/null and in a process group of its
//! own, so that a timeout can end the module and everything it started
//! ([`crate::process`]). Every wait is bounded by the call's timeout; the
//! output pipes are read whenever we wait (also while streaming the
//! payload), so a chatty module never blocks on a full pipe. Output is
//! logged once the call ended.

use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::artifact::header::{ArtifactHeader, Provides};
use crate::artifact::valid_payload_file_name;
use crate::fsutil::{sync_dir, write_atomic};
use crate::process::{Captured, Exit, Running, Spec};

/// At most this much of each output stream of a call is logged (or, for a
/// query's stdout, kept).
pub const OUTPUT_CAP: usize = 10 << 10;
/// Between SIGTERM and SIGKILL when a module times out (3.x uses 60 s); a
/// shorter timeout shortens it to the timeout.
pub const KILL_GRACE: Duration = Duration::from_secs(60);
/// Longest sleep between two polls of a module's state.
const POLL_MAX: Duration = Duration::from_millis(20);

/// One-line errors naming the module and the call.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("invalid payload type '{0}': not usable as an Update Module name")]
    InvalidType(String),
    #[error("module {}: not a regular executable file", .0.display())]
    NotExecutable(PathBuf),
    #[error("module {}: resolves outside the modules directory {}", .path.display(), .dir.display())]
    OutsideDir { path: PathBuf, dir: PathBuf },
    #[error("module {}: {call}: cannot start: {source}", .module.display())]
    Spawn {
        module: PathBuf,
        call: String,
        source: io::Error,
    },
    #[error("module {}: {call} exited with code {code}", .module.display())]
    Exit {
        module: PathBuf,
        call: String,
        code: i32,
    },
    #[error("module {}: {call} was killed by signal {signal}", .module.display())]
    Signal {
        module: PathBuf,
        call: String,
        signal: i32,
    },
    #[error("module {}: {call} timed out after {timeout:?}", .module.display())]
    Timeout {
        module: PathBuf,
        call: String,
        timeout: Duration,
    },
    #[error("module {}: {call}: {detail}", .module.display())]
    Protocol {
        module: PathBuf,
        call: String,
        detail: String,
    },
    #[error("module {}: {context}: {source}", .module.display())]
    Io {
        module: PathBuf,
        context: String,
        source: io::Error,
    },
}

/// Where modules and their file trees live, and how long a call may take.
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    /// `<DataDir>/modules/v3`, e.g. `/usr/share/mender/modules/v3`.
    pub modules_dir: PathBuf,
    /// `ModulesWorkPath`, e.g. `/var/lib/mender/modules/v3`.
    pub work_dir: PathBuf,
    /// `ModuleTimeoutSeconds`: for each call, and for a whole `Download`.
    pub timeout: Duration,
}

/// The answer to `NeedsArtifactReboot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RebootKind {
    No,
    Yes,
    Automatic,
}

/// Path of the module for `payload_type`: a regular executable file directly
/// in `modules_dir` (no '/' in the type, must resolve inside the dir).
/// `Ok(None)` when there is none; an entry that exists but is not a regular
/// executable file, or that resolves elsewhere, is an error.
pub fn find_module(modules_dir: &Path, payload_type: &str) -> Result<Option<PathBuf>, ModuleError> {
    if payload_type.is_empty()
        || payload_type == "."
        || payload_type == ".."
        || payload_type.contains(['/', '\0'])
    {
        return Err(ModuleError::InvalidType(payload_type.to_string()));
    }
    let path = modules_dir.join(payload_type);
    let io_err = |context: &str, source| ModuleError::Io {
        module: path.clone(),
        context: context.to_string(),
        source,
    };
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if fs::symlink_metadata(&path).is_ok() {
                log::warn!("module {}: dangling symlink, ignored", path.display());
            }
            return Ok(None);
        }
        Err(e) => return Err(io_err("lookup", e)),
    };
    let real = fs::canonicalize(&path).map_err(|e| io_err("resolving the path", e))?;
    let real_dir =
        fs::canonicalize(modules_dir).map_err(|e| io_err("resolving the directory", e))?;
    if real == real_dir || !real.starts_with(&real_dir) {
        return Err(ModuleError::OutsideDir {
            path,
            dir: modules_dir.to_path_buf(),
        });
    }
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(ModuleError::NotExecutable(path));
    }
    Ok(Some(path))
}

/// One Update Module and its file tree.
#[derive(Debug, Clone)]
pub struct UpdateModule {
    module: PathBuf,
    work_dir: PathBuf,
    timeout: Duration,
}

impl UpdateModule {
    pub fn new(config: &ModuleConfig, module: PathBuf) -> Self {
        UpdateModule {
            module,
            work_dir: config.work_dir.clone(),
            timeout: config.timeout,
        }
    }

    /// The module executable.
    pub fn path(&self) -> &Path {
        &self.module
    }

    /// The file tree path: `<work_dir>/payloads/0000/tree`.
    pub fn tree(&self) -> PathBuf {
        self.work_dir.join("payloads").join("0000").join("tree")
    }

    fn io_err(&self, context: impl Into<String>) -> impl FnOnce(io::Error) -> ModuleError + '_ {
        let context = context.into();
        move |source| ModuleError::Io {
            module: self.module.clone(),
            context,
            source,
        }
    }

    /// (Re)creates the file tree of §2.2, removing an old one first. JSON is
    /// re-serialised from the parsed header; directories are 0700, files
    /// 0600, and everything is fsynced.
    pub fn prepare_tree(
        &self,
        header: &ArtifactHeader,
        current: &Provides,
        device_type: &str,
    ) -> Result<(), ModuleError> {
        let tree = self.tree();
        remove_tree(&tree).map_err(self.io_err(format!("removing {}", tree.display())))?;
        let header_dir = tree.join("header");
        for dir in [&header_dir, &tree.join("tmp")] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(self.io_err(format!("creating {}", dir.display())))?;
        }

        let payload = header.payload();
        let payload_type = payload.and_then(|p| p.payload_type.clone());
        let header_info = json!({
            "payloads": header
                .payloads
                .iter()
                .map(|p| json!({ "type": p.payload_type }))
                .collect::<Vec<_>>(),
            "artifact_provides": header.provides,
            "artifact_depends": header.depends,
        });
        let type_info = json!({
            "type": payload_type,
            "artifact_provides": payload.map(|p| &p.provides),
            "artifact_depends": payload.map(|p| &p.depends),
            "clears_artifact_provides": payload.and_then(|p| p.clears_provides.as_ref()),
        });
        let meta_data = payload
            .and_then(|p| p.meta_data.clone())
            .map(Value::Object)
            .unwrap_or_else(|| json!({}));
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");

        let current_value = |key: &str| current.get(key).cloned().unwrap_or_default();
        let files: [(PathBuf, Vec<u8>); 10] = [
            (tree.join("version"), b"3".to_vec()),
            (
                tree.join("current_artifact_name"),
                current_value("artifact_name").into_bytes(),
            ),
            (
                tree.join("current_artifact_group"),
                current_value("artifact_group").into_bytes(),
            ),
            (
                tree.join("current_device_type"),
                device_type.as_bytes().to_vec(),
            ),
            (
                header_dir.join("artifact_group"),
                header.group.clone().unwrap_or_default().into_bytes(),
            ),
            (
                header_dir.join("artifact_name"),
                header.name.clone().into_bytes(),
            ),
            (
                header_dir.join("payload_type"),
                payload_type.unwrap_or_default().into_bytes(),
            ),
            (header_dir.join("header-info"), pretty(&header_info)),
            (header_dir.join("type-info"), pretty(&type_info)),
            (header_dir.join("meta-data"), pretty(&meta_data)),
        ];
        for (path, bytes) in &files {
            write_atomic(path, bytes, 0o600)
                .map_err(self.io_err(format!("writing {}", path.display())))?;
        }
        // Directory entries, from the innermost up to the work directory.
        let mut dirs = vec![header_dir, tree.join("tmp")];
        let mut dir = Some(tree.as_path());
        while let Some(d) = dir {
            dirs.push(d.to_path_buf());
            if d == self.work_dir {
                break;
            }
            dir = d.parent();
        }
        for d in &dirs {
            sync_dir(d).map_err(self.io_err(format!("syncing {}", d.display())))?;
        }
        Ok(())
    }

    /// Starts `<module> Download <tree>` and returns the session that
    /// receives the payload files (§2.4). The tree must have been prepared.
    pub fn start_download(&self) -> Result<DownloadSession, ModuleError> {
        let tree = self.tree();
        self.check_tree(&tree, "Download")?;
        let stream_next = tree.join("stream-next");
        let streams = tree.join("streams");
        remove_path(&stream_next).map_err(self.io_err("removing an old stream-next"))?;
        remove_tree(&streams).map_err(self.io_err("removing an old streams/"))?;
        remove_tree(&tree.join("files")).map_err(self.io_err("removing an old files/"))?;
        make_fifo(&stream_next).map_err(self.io_err("creating the FIFO stream-next"))?;
        DirBuilder::new()
            .mode(0o700)
            .create(&streams)
            .map_err(self.io_err("creating streams/"))?;
        let proc = match Proc::spawn(&self.module, "Download", &tree, self.timeout, false) {
            Ok(proc) => proc,
            Err(e) => {
                let _ = remove_path(&stream_next);
                let _ = remove_tree(&streams);
                return Err(e);
            }
        };
        Ok(DownloadSession {
            proc,
            tree,
            mode: Mode::Waiting,
            current: None,
            done: false,
        })
    }

    /// A state call (`ArtifactInstall`, `ArtifactReboot`, …, `Cleanup`). A
    /// non-zero exit is an error; output is logged.
    pub fn call(&self, state: &str) -> Result<(), ModuleError> {
        self.run(state, false).map(drop)
    }

    /// A query (`NeedsArtifactReboot`, `SupportsRollback`): the first line
    /// of stdout, trimmed. A further non-empty line is a protocol error.
    pub fn query(&self, query: &str) -> Result<String, ModuleError> {
        let out = self.run(query, true)?;
        parse_answer(&out).map_err(|detail| ModuleError::Protocol {
            module: self.module.clone(),
            call: query.to_string(),
            detail,
        })
    }

    /// `NeedsArtifactReboot`: `Yes`, `No` (or nothing) or `Automatic`.
    pub fn needs_reboot(&self) -> Result<RebootKind, ModuleError> {
        const Q: &str = "NeedsArtifactReboot";
        match self.query(Q)?.as_str() {
            "" | "No" => Ok(RebootKind::No),
            "Yes" => Ok(RebootKind::Yes),
            "Automatic" => Ok(RebootKind::Automatic),
            other => Err(self.bad_answer(Q, other)),
        }
    }

    /// `SupportsRollback`: `Yes`, or `No` (or nothing).
    pub fn supports_rollback(&self) -> Result<bool, ModuleError> {
        const Q: &str = "SupportsRollback";
        match self.query(Q)?.as_str() {
            "" | "No" => Ok(false),
            "Yes" => Ok(true),
            other => Err(self.bad_answer(Q, other)),
        }
    }

    /// Calls `Cleanup` (when the tree exists) and removes the tree. A
    /// failure of `Cleanup` is returned after the tree is removed.
    pub fn cleanup(&self) -> Result<(), ModuleError> {
        let tree = self.tree();
        let called = if tree.is_dir() {
            self.call("Cleanup")
        } else {
            Ok(())
        };
        let removed = remove_tree(&tree)
            .and_then(|()| match tree.parent() {
                Some(parent) if parent.is_dir() => sync_dir(parent),
                _ => Ok(()),
            })
            .map_err(self.io_err(format!("removing {}", tree.display())));
        called.and(removed)
    }

    fn bad_answer(&self, query: &str, answer: &str) -> ModuleError {
        ModuleError::Protocol {
            module: self.module.clone(),
            call: query.to_string(),
            detail: format!("unexpected answer '{}'", answer.escape_debug()),
        }
    }

    fn check_tree(&self, tree: &Path, call: &str) -> Result<(), ModuleError> {
        if tree.is_dir() {
            Ok(())
        } else {
            Err(ModuleError::Protocol {
                module: self.module.clone(),
                call: call.to_string(),
                detail: format!("the file tree {} does not exist", tree.display()),
            })
        }
    }

    /// Runs one call to completion; returns the captured stdout when
    /// `capture` (otherwise stdout is logged).
    fn run(&self, call: &str, capture: bool) -> Result<Vec<u8>, ModuleError> {
        let tree = self.tree();
        self.check_tree(&tree, call)?;
        Proc::spawn(&self.module, call, &tree, self.timeout, capture)?.wait()
    }
}

/// The first line of a query's answer, trimmed; further lines must be empty.
fn parse_answer(out: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(out);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").trim().to_string();
    if let Some(extra) = lines.map(str::trim).find(|l| !l.is_empty()) {
        return Err(format!(
            "unexpected extra output line '{}' after '{}'",
            extra.escape_debug(),
            first.escape_debug()
        ));
    }
    Ok(first)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The module has not opened `stream-next` yet.
    Waiting,
    /// The module reads `stream-next` and `streams/*`.
    Streaming,
    /// The module exited 0 without streaming: files go to `files/`.
    Files,
}

struct CurrentFile {
    name: String,
    file: File,
    size: u64,
    written: u64,
}

/// A running `Download`: receives the payload files as the artifact reader
/// streams them (`begin_file`, `write`…, `end_file`), then `finish` or
/// `abort`. Dropping an unfinished session aborts it.
pub struct DownloadSession {
    proc: Proc,
    tree: PathBuf,
    mode: Mode,
    current: Option<CurrentFile>,
    done: bool,
}

impl DownloadSession {
    /// True once the module turned out not to stream (files go to `files/`).
    pub fn files_mode(&self) -> bool {
        self.mode == Mode::Files
    }

    pub fn begin_file(&mut self, name: &str, size: u64) -> Result<(), ModuleError> {
        if let Some(cur) = &self.current {
            return Err(self.protocol(format!(
                "payload file {name} begun while {} is still open",
                cur.name
            )));
        }
        if !valid_payload_file_name(name) {
            return Err(self.protocol(format!(
                "invalid payload file name '{}'",
                name.escape_debug()
            )));
        }
        log::debug!(
            "module {}: Download: payload file {name} ({size} bytes)",
            self.proc.module.display()
        );
        if self.mode != Mode::Files {
            let fifo = self.tree.join("streams").join(name);
            make_fifo(&fifo).map_err(self.io_err(format!("creating the FIFO streams/{name}")))?;
            match self.connect("stream-next")? {
                Some(mut next) => {
                    self.mode = Mode::Streaming;
                    let line = format!("streams/{name}\n");
                    self.write_fifo(&mut next, line.as_bytes(), "stream-next")?;
                }
                None => self.switch_to_files()?,
            }
        }
        let file = if self.mode == Mode::Files {
            let path = self.tree.join("files").join(name);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(self.io_err(format!("creating files/{name}")))?
        } else {
            // Streaming by now, so `connect` never reports files/ mode.
            match self.connect(&format!("streams/{name}"))? {
                Some(f) => f,
                None => return Err(self.ended_early(Exit::Code(0))),
            }
        };
        self.current = Some(CurrentFile {
            name: name.to_string(),
            file,
            size,
            written: 0,
        });
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ModuleError> {
        let Some(mut cur) = self.current.take() else {
            return Err(self.protocol("payload bytes outside of a payload file".into()));
        };
        let result = if self.mode == Mode::Files {
            cur.file
                .write_all(data)
                .map_err(self.io_err(format!("writing files/{}", cur.name)))
        } else {
            let what = format!("streams/{}", cur.name);
            self.write_fifo(&mut cur.file, data, &what)
        };
        cur.written += data.len() as u64;
        self.current = Some(cur);
        result
    }

    pub fn end_file(&mut self) -> Result<(), ModuleError> {
        let Some(cur) = self.current.take() else {
            return Err(self.protocol("end of a payload file never begun".into()));
        };
        if cur.written != cur.size {
            log::warn!(
                "module {}: payload file {} has {} bytes, its header said {}",
                self.proc.module.display(),
                cur.name,
                cur.written,
                cur.size
            );
        }
        if self.mode == Mode::Files {
            cur.file
                .sync_all()
                .map_err(self.io_err(format!("syncing files/{}", cur.name)))?;
        }
        // Closing the stream is the module's end of file.
        drop(cur);
        Ok(())
    }

    /// After the last file: sends the end-of-streams marker (or, in files/
    /// mode, fsyncs files/), waits for the module's exit within the timeout
    /// and checks its status.
    pub fn finish(mut self) -> Result<(), ModuleError> {
        if let Some(cur) = &self.current {
            return Err(self.protocol(format!(
                "download finished while {} is still open",
                cur.name
            )));
        }
        if self.mode != Mode::Files {
            match self.connect("stream-next")? {
                // Opened and closed without a byte: end of streams.
                Some(next) => {
                    self.mode = Mode::Streaming;
                    drop(next);
                }
                None => self.switch_to_files()?,
            }
        }
        if self.mode == Mode::Files {
            let files = self.tree.join("files");
            sync_dir(&files).map_err(self.io_err("syncing files/"))?;
            sync_dir(&self.tree).map_err(self.io_err("syncing the file tree"))?;
        }
        self.proc.wait()?;
        if self.mode == Mode::Streaming {
            remove_path(&self.tree.join("stream-next"))
                .map_err(self.io_err("removing stream-next"))?;
            remove_tree(&self.tree.join("streams")).map_err(self.io_err("removing streams/"))?;
        }
        self.done = true;
        Ok(())
    }

    /// On error: kills the module's process group and removes the stream
    /// FIFOs and any partial `files/`.
    pub fn abort(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.proc.terminate();
        self.current = None;
        for (path, dir) in [("stream-next", false), ("streams", true), ("files", true)] {
            let path = self.tree.join(path);
            let r = if dir {
                remove_tree(&path)
            } else {
                remove_path(&path)
            };
            if let Err(e) = r {
                log::warn!("removing {}: {e}", path.display());
            }
        }
    }

    fn protocol(&self, detail: String) -> ModuleError {
        ModuleError::Protocol {
            module: self.proc.module.clone(),
            call: "Download".into(),
            detail,
        }
    }

    fn io_err(&self, context: impl Into<String>) -> impl FnOnce(io::Error) -> ModuleError + '_ {
        let context = format!("Download: {}", context.into());
        move |source| ModuleError::Io {
            module: self.proc.module.clone(),
            context,
            source,
        }
    }

    /// The error for a module that ended before the end-of-streams marker.
    fn ended_early(&self, ended: Exit) -> ModuleError {
        match ended {
            Exit::Code(0) => self.protocol("terminated in the middle of the download".into()),
            Exit::Code(code) => self.protocol(format!(
                "terminated in the middle of the download (exit code {code})"
            )),
            Exit::Signal(sig) => self.protocol(format!(
                "terminated in the middle of the download (signal {sig})"
            )),
            Exit::TimedOut => self.proc.timeout_error(),
        }
    }

    fn timeout(&mut self) -> ModuleError {
        self.proc.terminate();
        self.proc.timeout_error()
    }

    /// Opens the FIFO `rel` (relative to the tree) for writing once the
    /// module opened it for reading. `None`: the module exited 0 without
    /// ever opening `stream-next` (files/ mode).
    fn connect(&mut self, rel: &str) -> Result<Option<File>, ModuleError> {
        let path = self.tree.join(rel);
        let mut nap = Duration::from_millis(1);
        loop {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => return Ok(Some(f)),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(format!("opening {rel}"))(e)),
            }
            if let Some(ended) = self
                .proc
                .run
                .peek()
                .map_err(self.io_err("waiting for the module"))?
            {
                return match (self.mode, ended) {
                    (Mode::Waiting, Exit::Code(0)) => Ok(None),
                    (Mode::Waiting, ended) => Err(self.proc.status_error(ended)),
                    (_, ended) => Err(self.ended_early(ended)),
                };
            }
            let left = self.proc.run.time_left();
            if left.is_zero() {
                return Err(self.timeout());
            }
            // Sleeps, but reads the module's output meanwhile.
            self.proc
                .run
                .pump_for(nap.min(left))
                .map_err(self.io_err("waiting for the module"))?;
            nap = (nap * 2).min(POLL_MAX);
        }
    }

    /// Writes all of `data` to a FIFO opened non-blocking, waiting for room
    /// with poll(2), at most until the session's deadline.
    fn write_fifo(&mut self, fifo: &mut File, data: &[u8], what: &str) -> Result<(), ModuleError> {
        let mut off = 0;
        while off < data.len() {
            match fifo.write(&data[off..]) {
                Ok(n) if n > 0 => {
                    off += n;
                    continue;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    // Give a dying module a moment to be seen dead.
                    let ended = self
                        .proc
                        .run
                        .wait_exit(Duration::from_millis(100))
                        .ok()
                        .flatten();
                    return Err(match ended {
                        Some(ended) => self.ended_early(ended),
                        None => self
                            .protocol(format!("the module stopped reading {what} before its end")),
                    });
                }
                Err(e) => return Err(self.io_err(format!("writing {what}"))(e)),
            }
            let left = self.proc.run.time_left();
            if left.is_zero() {
                return Err(self.timeout());
            }
            // Waits for room in the FIFO while reading the module's output
            // (a module blocked on a full stdout would never read on).
            let ready = self
                .proc
                .run
                .wait_fd(
                    fifo.as_raw_fd(),
                    libc::POLLOUT,
                    left.min(Duration::from_millis(100)),
                )
                .map_err(self.io_err(format!("waiting to write {what}")))?;
            if !ready
                && let Some(ended) = self
                    .proc
                    .run
                    .peek()
                    .map_err(self.io_err("waiting for the module"))?
            {
                return Err(self.ended_early(ended));
            }
        }
        Ok(())
    }

    fn switch_to_files(&mut self) -> Result<(), ModuleError> {
        log::debug!(
            "module {}: Download exited without streaming; storing payload files in files/",
            self.proc.module.display()
        );
        remove_path(&self.tree.join("stream-next")).map_err(self.io_err("removing stream-next"))?;
        remove_tree(&self.tree.join("streams")).map_err(self.io_err("removing streams/"))?;
        let files = self.tree.join("files");
        remove_tree(&files).map_err(self.io_err("removing an old files/"))?;
        DirBuilder::new()
            .mode(0o700)
            .create(&files)
            .map_err(self.io_err("creating files/"))?;
        self.mode = Mode::Files;
        Ok(())
    }
}

impl Drop for DownloadSession {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A running module invocation. Dropping one that has not ended kills its
/// process group.
struct Proc {
    module: PathBuf,
    call: String,
    capture_stdout: bool,
    run: Running,
}

impl Proc {
    fn spawn(
        module: &Path,
        call: &str,
        tree: &Path,
        timeout: Duration,
        capture_stdout: bool,
    ) -> Result<Proc, ModuleError> {
        log::debug!("running {} {call} {}", module.display(), tree.display());
        let run = Spec::new(module, timeout)
            .arg(call)
            .arg(tree)
            .cwd(tree)
            .stdout_cap(OUTPUT_CAP)
            .stderr_cap(OUTPUT_CAP)
            .grace(KILL_GRACE)
            .spawn()
            .map_err(|source| ModuleError::Spawn {
                module: module.to_path_buf(),
                call: call.to_string(),
                source,
            })?;
        Ok(Proc {
            module: module.to_path_buf(),
            call: call.to_string(),
            capture_stdout,
            run,
        })
    }

    /// Waits for the end within the deadline (past it, terminates the
    /// group) and logs the output; the captured stdout on exit code 0.
    fn wait(&mut self) -> Result<Vec<u8>, ModuleError> {
        let record = self.run.finish().map_err(|source| ModuleError::Io {
            module: self.module.clone(),
            context: format!("{}: waiting for the module", self.call),
            source,
        })?;
        let stdout = self.log_output(record.stdout, record.stderr);
        match record.exit {
            Exit::Code(0) => Ok(stdout),
            Exit::TimedOut => Err(self.timeout_error()),
            other => Err(self.status_error(other)),
        }
    }

    /// Ends the module's process group (SIGTERM, [`KILL_GRACE`], SIGKILL)
    /// and logs what it printed.
    fn terminate(&mut self) {
        if matches!(self.run.peek(), Ok(None)) {
            log::warn!(
                "module {}: {}: terminating its process group",
                self.module.display(),
                self.call
            );
        }
        self.run.terminate();
        let (stdout, stderr) = self.run.take_output();
        self.log_output(stdout, stderr);
    }

    /// Logs stderr, and stdout unless it is captured (then returns it).
    fn log_output(&self, stdout: Captured, stderr: Captured) -> Vec<u8> {
        let log = |label: &str, captured: &Captured| {
            for line in captured.lines() {
                log::info!("Update Module output ({label}): {line}");
            }
            if captured.truncated {
                log::info!("Update Module output ({label}): [further output discarded]");
            }
        };
        if !self.capture_stdout {
            log("stdout", &stdout);
        }
        log("stderr", &stderr);
        if self.capture_stdout {
            stdout.data
        } else {
            Vec::new()
        }
    }

    fn status_error(&self, exit: Exit) -> ModuleError {
        match exit {
            Exit::Code(code) => ModuleError::Exit {
                module: self.module.clone(),
                call: self.call.clone(),
                code,
            },
            Exit::Signal(signal) => ModuleError::Signal {
                module: self.module.clone(),
                call: self.call.clone(),
                signal,
            },
            Exit::TimedOut => self.timeout_error(),
        }
    }

    fn timeout_error(&self) -> ModuleError {
        ModuleError::Timeout {
            module: self.module.clone(),
            call: self.call.clone(),
            timeout: self.run.timeout(),
        }
    }
}

fn make_fifo(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // mkfifo's mode is filtered by the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// Removes a directory tree; a missing one is fine.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes a file or FIFO; a missing one is fine.
fn remove_path(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer(b"Yes\n").unwrap(), "Yes");
        assert_eq!(parse_answer(b"  No \r\n\n \n").unwrap(), "No");
        assert_eq!(parse_answer(b"").unwrap(), "");
        assert_eq!(parse_answer(b"\n").unwrap(), "");
        assert!(parse_answer(b"Yes\nNo\n").unwrap_err().contains("'No'"));
        assert!(parse_answer(b"\nYes").is_err());
    }

    #[test]
    fn invalid_types() {
        let dir = tempfile::tempdir().unwrap();
        for t in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(
                matches!(find_module(dir.path(), t), Err(ModuleError::InvalidType(_))),
                "{t:?}"
            );
        }
        assert!(find_module(dir.path(), "none").unwrap().is_none());
        assert!(
            find_module(&dir.path().join("missing"), "none")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn fifo_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        make_fifo(&p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // No reader: a non-blocking open for writing fails with ENXIO.
        let e = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO));
        remove_path(&p).unwrap();
        remove_path(&p).unwrap();
        remove_tree(&dir.path().join("nope")).unwrap();
    }
}
