//! The calls of the Update Module protocol (v3): finding a module, the
//! state calls (`ArtifactInstall`, …, `Cleanup`) and the queries
//! (`NeedsArtifactReboot`, `SupportsRollback`, and 4.0's
//! `ProvidePayloadFileSizes`), each one invocation of the
//! module run to its end. The file tree and the streaming `Download` have
//! files of their own (`file_tree.rs`, `download.rs`).
//!
//! Every module invocation runs as `<module> <STATE> <TREE>` with the tree
//! as working directory, stdin from /dev/null and in a process group of its
//! own, so that a timeout can end the module and everything it started
//! ([`crate::process`], `docs/architecture.md`, "The process model"). Every
//! wait is bounded by the call's timeout; the output pipes are read whenever
//! we wait (also while streaming the payload), so a chatty module never
//! blocks on a full pipe. Output is logged once the call ended.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file_tree::remove_tree;
use crate::fsutil::sync_dir;
use crate::process::{Captured, Exit, Running, Spec};

/// At most this much of each output stream of a call is logged (or, for a
/// query's stdout, kept).
pub const OUTPUT_CAP: usize = 10 << 10;
/// Between SIGTERM and SIGKILL when a module times out (3.x uses 60 s); a
/// shorter timeout shortens it to the timeout.
pub const KILL_GRACE: Duration = Duration::from_secs(60);

/// The verbs of the protocol: the first argument of every invocation of a
/// module (`docs/update-modules.md`), in the order of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleCall {
    /// Asked before the download (protocol 4.0): `Yes` means the module
    /// wants `DownloadWithFileSizes` instead of `Download`.
    ProvidePayloadFileSizes,
    Download,
    /// `Download` with each `stream-next` line followed by the file's size.
    DownloadWithFileSizes,
    ArtifactInstall,
    NeedsArtifactReboot,
    SupportsRollback,
    ArtifactReboot,
    ArtifactVerifyReboot,
    ArtifactCommit,
    ArtifactRollback,
    ArtifactRollbackReboot,
    ArtifactVerifyRollbackReboot,
    ArtifactFailure,
    Cleanup,
}

impl ModuleCall {
    /// The verb as the module receives it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleCall::ProvidePayloadFileSizes => "ProvidePayloadFileSizes",
            ModuleCall::Download => "Download",
            ModuleCall::DownloadWithFileSizes => "DownloadWithFileSizes",
            ModuleCall::ArtifactInstall => "ArtifactInstall",
            ModuleCall::NeedsArtifactReboot => "NeedsArtifactReboot",
            ModuleCall::SupportsRollback => "SupportsRollback",
            ModuleCall::ArtifactReboot => "ArtifactReboot",
            ModuleCall::ArtifactVerifyReboot => "ArtifactVerifyReboot",
            ModuleCall::ArtifactCommit => "ArtifactCommit",
            ModuleCall::ArtifactRollback => "ArtifactRollback",
            ModuleCall::ArtifactRollbackReboot => "ArtifactRollbackReboot",
            ModuleCall::ArtifactVerifyRollbackReboot => "ArtifactVerifyRollbackReboot",
            ModuleCall::ArtifactFailure => "ArtifactFailure",
            ModuleCall::Cleanup => "Cleanup",
        }
    }
}

impl AsRef<str> for ModuleCall {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ModuleCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    pub(super) module: PathBuf,
    pub(super) work_dir: PathBuf,
    pub(super) timeout: Duration,
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

    pub(super) fn io_err(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(io::Error) -> ModuleError + '_ {
        let context = context.into();
        move |source| ModuleError::Io {
            module: self.module.clone(),
            context,
            source,
        }
    }

    /// A state call (`ArtifactInstall`, `ArtifactReboot`, …, `Cleanup`; a
    /// [`ModuleCall`], or any verb as text). A non-zero exit is an error;
    /// output is logged.
    pub fn call(&self, state: impl AsRef<str>) -> Result<(), ModuleError> {
        self.run(state.as_ref(), false).map(drop)
    }

    /// A query (`NeedsArtifactReboot`, `SupportsRollback`): the first line
    /// of stdout, trimmed. A further non-empty line is a protocol error.
    pub fn query(&self, query: impl AsRef<str>) -> Result<String, ModuleError> {
        let query = query.as_ref();
        let out = self.run(query, true)?;
        parse_answer(&out).map_err(|detail| ModuleError::Protocol {
            module: self.module.clone(),
            call: query.to_string(),
            detail,
        })
    }

    /// `NeedsArtifactReboot`: `Yes`, `No` (or nothing) or `Automatic`.
    pub fn needs_reboot(&self) -> Result<RebootKind, ModuleError> {
        const Q: ModuleCall = ModuleCall::NeedsArtifactReboot;
        match self.query(Q)?.as_str() {
            "" | "No" => Ok(RebootKind::No),
            "Yes" => Ok(RebootKind::Yes),
            "Automatic" => Ok(RebootKind::Automatic),
            other => Err(self.bad_answer(Q.as_str(), other)),
        }
    }

    /// `SupportsRollback`: `Yes`, or `No` (or nothing).
    pub fn supports_rollback(&self) -> Result<bool, ModuleError> {
        const Q: ModuleCall = ModuleCall::SupportsRollback;
        match self.query(Q)?.as_str() {
            "" | "No" => Ok(false),
            "Yes" => Ok(true),
            other => Err(self.bad_answer(Q.as_str(), other)),
        }
    }

    /// `ProvidePayloadFileSizes` (Update Module protocol 4.0, asked before
    /// the download as Mender 4.x does): `Yes`, or `No` (or nothing). A
    /// module written for 3.x prints nothing for a verb it does not know.
    pub fn provide_payload_file_sizes(&self) -> Result<bool, ModuleError> {
        const Q: ModuleCall = ModuleCall::ProvidePayloadFileSizes;
        match self.query(Q)?.as_str() {
            "" | "No" => Ok(false),
            "Yes" => Ok(true),
            other => Err(self.bad_answer(Q.as_str(), other)),
        }
    }

    /// Calls `Cleanup` (when the tree exists) and removes the tree. A
    /// failure of `Cleanup` is returned after the tree is removed.
    pub fn cleanup(&self) -> Result<(), ModuleError> {
        let tree = self.tree();
        let called = if tree.is_dir() {
            self.call(ModuleCall::Cleanup)
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

    pub(super) fn check_tree(&self, tree: &Path, call: &str) -> Result<(), ModuleError> {
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

/// A running module invocation. Dropping one that has not ended kills its
/// process group.
pub(super) struct Proc {
    pub(super) module: PathBuf,
    call: String,
    capture_stdout: bool,
    pub(super) run: Running,
}

impl Proc {
    pub(super) fn spawn(
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
    pub(super) fn wait(&mut self) -> Result<Vec<u8>, ModuleError> {
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
    pub(super) fn terminate(&mut self) {
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

    pub(super) fn status_error(&self, exit: Exit) -> ModuleError {
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

    pub(super) fn timeout_error(&self) -> ModuleError {
        ModuleError::Timeout {
            module: self.module.clone(),
            call: self.call.clone(),
            timeout: self.run.timeout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::states::ScriptState;

    #[test]
    fn verbs_are_spelled_as_the_protocol_says() {
        let state_calls = [
            (ModuleCall::ArtifactInstall, ScriptState::ArtifactInstall),
            (ModuleCall::ArtifactReboot, ScriptState::ArtifactReboot),
            (ModuleCall::ArtifactCommit, ScriptState::ArtifactCommit),
            (ModuleCall::ArtifactRollback, ScriptState::ArtifactRollback),
            (
                ModuleCall::ArtifactRollbackReboot,
                ScriptState::ArtifactRollbackReboot,
            ),
            (ModuleCall::ArtifactFailure, ScriptState::ArtifactFailure),
            (ModuleCall::Download, ScriptState::Download),
        ];
        for (call, state) in state_calls {
            assert_eq!(call.as_str(), state.name());
        }
        assert_eq!(
            ModuleCall::NeedsArtifactReboot.to_string(),
            "NeedsArtifactReboot"
        );
        assert_eq!(
            ModuleCall::ProvidePayloadFileSizes.to_string(),
            "ProvidePayloadFileSizes"
        );
        assert_eq!(
            ModuleCall::DownloadWithFileSizes.to_string(),
            "DownloadWithFileSizes"
        );
        assert_eq!(ModuleCall::SupportsRollback.as_ref(), "SupportsRollback");
        assert_eq!(
            ModuleCall::ArtifactVerifyReboot.as_str(),
            "ArtifactVerifyReboot"
        );
        assert_eq!(
            ModuleCall::ArtifactVerifyRollbackReboot.as_str(),
            "ArtifactVerifyRollbackReboot"
        );
        assert_eq!(ModuleCall::Cleanup.as_str(), "Cleanup");
    }

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
}
