//! State scripts (spec §3): selection, the `version` file, execution with
//! timeout and retry-later, stderr capture, and storing an Artifact's
//! scripts.
//!
//! Root filesystem scripts (`Idle`, `Sync`, `Download`) live in
//! [`ScriptConfig::rootfs_dir`], the `Artifact*` ones in
//! [`ScriptConfig::artifact_dir`]. Each script runs without arguments, with
//! stdin and stdout on `/dev/null`, in its own process group, with `/` as its
//! working directory. Its stderr is logged line by line (at most 10 KiB per
//! execution).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::artifact::{ALL_SCRIPT_STATES, parse_script_name};
use crate::fsutil::{parent_dir, sync_dir};

/// Default `StateScriptTimeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `StateScriptRetryIntervalSeconds`.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(60);
/// Default `StateScriptRetryTimeoutSeconds`.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(1800);

/// The exit code meaning "retry later".
pub const EXIT_RETRY_LATER: i32 = 21;
/// How much of a script's stderr is logged per execution.
pub const STDERR_LOG_LIMIT: usize = 10 * 1024;
/// The `version` values the client supports.
pub const SUPPORTED_VERSIONS: &[u32] = &[2, 3];

/// Longest single wait of the supervision loop.
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long stderr is still read after the script has exited (a background
/// process of the script may keep it open).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long stderr is still read after the process group was killed.
const KILL_DRAIN_GRACE: Duration = Duration::from_millis(200);
/// Attempts to start a script that fails with ETXTBSY (another thread of
/// this process forked while the script file was open for writing).
const SPAWN_ATTEMPTS: u32 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptState {
    Idle,
    Sync,
    Download,
    ArtifactInstall,
    ArtifactReboot,
    ArtifactCommit,
    ArtifactRollback,
    ArtifactRollbackReboot,
    ArtifactFailure,
}

impl ScriptState {
    /// The state as spelled in script names.
    pub fn name(self) -> &'static str {
        match self {
            ScriptState::Idle => "Idle",
            ScriptState::Sync => "Sync",
            ScriptState::Download => "Download",
            ScriptState::ArtifactInstall => "ArtifactInstall",
            ScriptState::ArtifactReboot => "ArtifactReboot",
            ScriptState::ArtifactCommit => "ArtifactCommit",
            ScriptState::ArtifactRollback => "ArtifactRollback",
            ScriptState::ArtifactRollbackReboot => "ArtifactRollbackReboot",
            ScriptState::ArtifactFailure => "ArtifactFailure",
        }
    }

    /// Whether the scripts of this state live in the root filesystem
    /// directory (`Idle`, `Sync`, `Download`) rather than the Artifact one.
    pub fn is_rootfs(self) -> bool {
        matches!(
            self,
            ScriptState::Idle | ScriptState::Sync | ScriptState::Download
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptAction {
    Enter,
    Leave,
    Error,
}

impl ScriptAction {
    /// The action as spelled in script names.
    pub fn name(self) -> &'static str {
        match self {
            ScriptAction::Enter => "Enter",
            ScriptAction::Leave => "Leave",
            ScriptAction::Error => "Error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScriptConfig {
    /// Root filesystem scripts, `<ConfDir>/scripts`.
    pub rootfs_dir: PathBuf,
    /// Artifact scripts, `<DataStore>/scripts`.
    pub artifact_dir: PathBuf,
    /// Wall-clock limit of one execution.
    pub timeout: Duration,
    /// Sleep between attempts after exit code 21.
    pub retry_interval: Duration,
    /// Time budget for retrying one script, from its first attempt.
    pub retry_timeout: Duration,
}

impl ScriptConfig {
    /// The directories and timings the configuration gives.
    pub fn from_config(config: &crate::config::Config) -> ScriptConfig {
        ScriptConfig {
            rootfs_dir: config.rootfs_scripts_path.clone(),
            artifact_dir: config.artifact_scripts_path.clone(),
            timeout: config.state_script_timeout,
            retry_interval: config.state_script_retry_interval,
            retry_timeout: config.state_script_retry_timeout,
        }
    }
}

impl ScriptConfig {
    /// A configuration with the default timeouts.
    pub fn new(rootfs_dir: impl Into<PathBuf>, artifact_dir: impl Into<PathBuf>) -> Self {
        ScriptConfig {
            rootfs_dir: rootfs_dir.into(),
            artifact_dir: artifact_dir.into(),
            timeout: DEFAULT_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
        }
    }
}

/// A state script problem. Messages are one line and name the script (or
/// the directory for `version` problems).
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("state script {} failed with exit code {code}", script.display())]
    Failed { script: PathBuf, code: i32 },
    #[error("state script {} was killed by signal {signal}", script.display())]
    Killed { script: PathBuf, signal: i32 },
    #[error("state script {} timed out after {after:?} and was killed", script.display())]
    TimedOut { script: PathBuf, after: Duration },
    #[error(
        "state script {} still asked to be retried later (exit code 21) when its retry time ran out",
        script.display()
    )]
    RetryExpired { script: PathBuf },
    #[error("state script {} is not executable", script.display())]
    NotExecutable { script: PathBuf },
    #[error("state scripts in {}: {reason}", dir.display())]
    Version { dir: PathBuf, reason: String },
    #[error("state script {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ScriptError {
    /// The script concerned, if the error is about one script.
    pub fn script(&self) -> Option<&Path> {
        match self {
            ScriptError::Failed { script, .. }
            | ScriptError::Killed { script, .. }
            | ScriptError::TimedOut { script, .. }
            | ScriptError::RetryExpired { script }
            | ScriptError::NotExecutable { script } => Some(script),
            ScriptError::Io { path, .. } => Some(path),
            ScriptError::Version { .. } => None,
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        ScriptError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs state scripts; see the module documentation.
#[derive(Debug, Clone)]
pub struct ScriptRunner {
    config: ScriptConfig,
}

/// The result of one execution of a script.
enum Attempt {
    Success,
    RetryLater,
    Failure(ScriptError),
}

impl ScriptRunner {
    /// Zero durations in `config` stand for the defaults (as in the
    /// configuration file).
    pub fn new(mut config: ScriptConfig) -> Self {
        if config.timeout.is_zero() {
            config.timeout = DEFAULT_TIMEOUT;
        }
        if config.retry_interval.is_zero() {
            config.retry_interval = DEFAULT_RETRY_INTERVAL;
        }
        if config.retry_timeout.is_zero() {
            config.retry_timeout = DEFAULT_RETRY_TIMEOUT;
        }
        ScriptRunner { config }
    }

    pub fn config(&self) -> &ScriptConfig {
        &self.config
    }

    /// The directory holding the scripts of `state`.
    pub fn dir_for(&self, state: ScriptState) -> &Path {
        if state.is_rootfs() {
            &self.config.rootfs_dir
        } else {
            &self.config.artifact_dir
        }
    }

    /// Runs the scripts of (state, action) from the right directory (rootfs
    /// dir for Idle/Sync/Download, artifact dir otherwise), sorted by name
    /// byte-wise, one by one, no arguments, each in its own process group,
    /// cwd "/".
    ///
    /// `ignore_errors` = false: stop at the first failure and return it.
    /// true: run all, log failures with `log::error!`, return Ok.
    ///
    /// Returns the names of the scripts that ran (in order), for the
    /// caller's bookkeeping. With `ignore_errors`, scripts that ran and
    /// failed are included.
    pub fn run(
        &self,
        state: ScriptState,
        action: ScriptAction,
        ignore_errors: bool,
    ) -> Result<Vec<String>, ScriptError> {
        let dir = self.dir_for(state);
        let scripts = match select_scripts(dir, state, action, ignore_errors) {
            Ok(scripts) => scripts,
            Err(e) if ignore_errors => {
                log::error!("{e} (ignored)");
                return Ok(Vec::new());
            }
            Err(e) => {
                log::error!("{e}");
                return Err(e);
            }
        };
        if scripts.is_empty() {
            return Ok(Vec::new());
        }
        if let Err(e) = check_version(dir) {
            if ignore_errors {
                log::error!(
                    "{e}; not running the {} scripts (ignored)",
                    label(state, action)
                );
                return Ok(Vec::new());
            }
            log::error!("{e}");
            return Err(e);
        }
        let mut ran = Vec::with_capacity(scripts.len());
        for (name, path) in scripts {
            let result = self.run_script(&path, &name);
            ran.push(name);
            if let Err(e) = result {
                if ignore_errors {
                    log::error!("{e} (ignored)");
                } else {
                    log::error!("{e}");
                    return Err(e);
                }
            }
        }
        Ok(ran)
    }

    /// Runs every script of (state, action) even when some fail (the states
    /// whose failures do not change the flow, but are noted: ArtifactRollback
    /// scripts mark the device inconsistent). Returns the first failure.
    pub fn run_all(
        &self,
        state: ScriptState,
        action: ScriptAction,
    ) -> Result<Vec<String>, ScriptError> {
        let dir = self.dir_for(state);
        let scripts = select_scripts(dir, state, action, true)?;
        if scripts.is_empty() {
            return Ok(Vec::new());
        }
        check_version(dir)?;
        let mut ran = Vec::with_capacity(scripts.len());
        let mut first_error = None;
        for (name, path) in scripts {
            if let Err(e) = self.run_script(&path, &name) {
                log::error!("{e}");
                first_error.get_or_insert(e);
            }
            ran.push(name);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ran),
        }
    }

    /// The explicit rootfs-dir version check done at commit (§3.3
    /// CheckRootfsScriptsVersion): when the root filesystem scripts
    /// directory exists and is not empty, its `version` file must exist and
    /// hold a supported version.
    pub fn check_rootfs_version(&self) -> Result<(), ScriptError> {
        let dir = &self.config.rootfs_dir;
        let mut entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ScriptError::io(dir, e)),
        };
        match entries.next() {
            None => Ok(()),
            Some(Err(e)) => Err(ScriptError::io(dir, e)),
            Some(Ok(_)) => check_version(dir).map(|_| ()),
        }
    }

    /// Replaces the artifact scripts directory with `scripts` (name,
    /// content): removes the old dir, creates it 0755, writes each file
    /// (O_EXCL, 0755, fsync), writes `version` with `format_version`, fsyncs
    /// the dir. Names must be plain file names (no '/', not '.'/'..', not
    /// `version`); they are all checked before anything is removed.
    pub fn store_artifact_scripts(
        &self,
        scripts: &[(&str, &[u8])],
        format_version: u32,
    ) -> Result<(), ScriptError> {
        let dir = &self.config.artifact_dir;
        for (name, _) in scripts {
            if !plain_file_name(name) {
                return Err(ScriptError::io(
                    &dir.join(name),
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("invalid script file name {name:?}"),
                    ),
                ));
            }
        }
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ScriptError::io(dir, e)),
        }
        let parent = parent_dir(dir);
        fs::create_dir_all(&parent).map_err(|e| ScriptError::io(&parent, e))?;
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
            .map_err(|e| ScriptError::io(dir, e))?;
        for (name, content) in scripts {
            let path = dir.join(name);
            write_new_file(&path, content, 0o755).map_err(|e| ScriptError::io(&path, e))?;
        }
        let version = dir.join("version");
        write_new_file(&version, format_version.to_string().as_bytes(), 0o644)
            .map_err(|e| ScriptError::io(&version, e))?;
        sync_dir(dir).map_err(|e| ScriptError::io(dir, e))?;
        sync_dir(&parent).map_err(|e| ScriptError::io(&parent, e))?;
        log::debug!(
            "stored {} artifact state script(s) in {}",
            scripts.len(),
            dir.display()
        );
        Ok(())
    }

    /// Runs one script, repeating it while it exits with 21 and the retry
    /// time allows.
    fn run_script(&self, path: &Path, name: &str) -> Result<(), ScriptError> {
        let first_attempt = Instant::now();
        loop {
            match self.run_once(path, name) {
                Attempt::Success => {
                    log::info!("state script {} finished successfully", path.display());
                    return Ok(());
                }
                Attempt::Failure(e) => return Err(e),
                Attempt::RetryLater => {
                    let interval = self.config.retry_interval;
                    let next_start = first_attempt.elapsed() + interval;
                    if next_start > self.config.retry_timeout {
                        return Err(ScriptError::RetryExpired {
                            script: path.to_path_buf(),
                        });
                    }
                    log::info!(
                        "state script {} asked to be retried later (exit code 21); retrying in {interval:?}",
                        path.display()
                    );
                    std::thread::sleep(interval);
                }
            }
        }
    }

    /// One execution of a script under the timeout, logging its stderr.
    fn run_once(&self, path: &Path, name: &str) -> Attempt {
        log::info!("running state script {}", path.display());
        let mut child = match spawn(path) {
            Ok(child) => child,
            Err(e) => return Attempt::Failure(ScriptError::io(path, e)),
        };
        let mut capture = StderrCapture::new(name);
        let result = supervise(&mut child, self.config.timeout, &mut capture);
        capture.finish();
        match result {
            Ok(Supervised::Exited(status)) => match (status.code(), status.signal()) {
                (Some(0), _) => Attempt::Success,
                (Some(EXIT_RETRY_LATER), _) => Attempt::RetryLater,
                (Some(code), _) => Attempt::Failure(ScriptError::Failed {
                    script: path.to_path_buf(),
                    code,
                }),
                (None, signal) => Attempt::Failure(ScriptError::Killed {
                    script: path.to_path_buf(),
                    signal: signal.unwrap_or(0),
                }),
            },
            Ok(Supervised::TimedOut) => Attempt::Failure(ScriptError::TimedOut {
                script: path.to_path_buf(),
                after: self.config.timeout,
            }),
            Err(e) => Attempt::Failure(ScriptError::io(path, e)),
        }
    }
}

fn label(state: ScriptState, action: ScriptAction) -> String {
    format!("{}_{}", state.name(), action.name())
}

/// Plain names for files in the scripts directory.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name != "version"
        && !name.contains('/')
        && !name.contains('\0')
}

/// The scripts of (state, action) in `dir` that are to run, sorted by name.
/// Files without any execute bit are an error, or skipped with an error log
/// when `ignore_errors`.
fn select_scripts(
    dir: &Path,
    state: ScriptState,
    action: ScriptAction,
    ignore_errors: bool,
) -> Result<Vec<(String, PathBuf)>, ScriptError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ScriptError::io(dir, e)),
    };
    // Absolute, so that the path stays valid with the script's cwd "/".
    let dir = std::path::absolute(dir).map_err(|e| ScriptError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ScriptError::io(&dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            log::debug!(
                "skipping {}: not a state script name",
                entry.path().display()
            );
            continue;
        };
        if name == "version" {
            continue;
        }
        match parse_script_name(name, ALL_SCRIPT_STATES) {
            None => log::debug!(
                "skipping {}: not a state script name",
                entry.path().display()
            ),
            Some(parsed) if parsed.state == state.name() && parsed.action == action.name() => {
                names.push(name.to_owned())
            }
            Some(_) => {}
        }
    }
    names.sort();
    let mut scripts = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let problem = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => None,
            Ok(_) => Some(ScriptError::NotExecutable {
                script: path.clone(),
            }),
            Err(e) => Some(ScriptError::io(&path, e)),
        };
        match problem {
            None => scripts.push((name, path)),
            Some(e) if ignore_errors => log::error!("{e}; skipping it (ignored)"),
            Some(e) => return Err(e),
        }
    }
    Ok(scripts)
}

/// Reads and checks the `version` file of `dir`.
fn check_version(dir: &Path) -> Result<u32, ScriptError> {
    let path = dir.join("version");
    let error = |reason: String| ScriptError::Version {
        dir: dir.to_path_buf(),
        reason,
    };
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(error("the version file is missing".into()));
        }
        Err(e) => return Err(error(format!("cannot read {}: {e}", path.display()))),
    };
    let text = String::from_utf8_lossy(&text);
    let trimmed = text.trim();
    let version: u32 = trimmed.parse().map_err(|_| {
        let shown: String = trimmed.chars().take(40).collect();
        error(format!("invalid content {shown:?} in {}", path.display()))
    })?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(error(format!(
            "unsupported state script version {version} (supported: 2, 3)"
        )));
    }
    Ok(version)
}

/// Creates `path` exclusively with `mode`, writes `content` and fsyncs it.
fn write_new_file(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(content)?;
    // The umask may have removed bits.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()
}

/// Starts a script: no arguments, stdin and stdout on /dev/null, stderr
/// piped, cwd "/", its own process group.
fn spawn(path: &Path) -> io::Result<Child> {
    let mut attempt = 1;
    loop {
        let result = Command::new(path)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        match result {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < SPAWN_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

enum Supervised {
    Exited(ExitStatus),
    TimedOut,
}

/// Waits for `child` while draining its stderr into `capture`; on timeout
/// kills its whole process group. Never blocks longer than [`POLL_MAX`] at a
/// time; after the script is gone, stderr is read only for a short grace
/// period, so a background process holding it open cannot hang the caller.
fn supervise(
    child: &mut Child,
    timeout: Duration,
    capture: &mut StderrCapture,
) -> io::Result<Supervised> {
    let start = Instant::now();
    let deadline = start.checked_add(timeout);
    let mut stderr = child.stderr.take();
    let mut exited: Option<ExitStatus> = None;
    let mut timed_out = false;
    let mut drain_until = start;
    let mut idle_sleep = Duration::from_millis(1);
    let mut buf = [0u8; 8192];
    loop {
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    drain_until = Instant::now() + DRAIN_GRACE;
                }
                Ok(None) => {}
                Err(e) => {
                    kill_group(child);
                    let _ = child.wait();
                    return Err(e);
                }
            }
        }
        let now = Instant::now();
        if exited.is_some() {
            if stderr.is_none() || now >= drain_until {
                break;
            }
        } else if deadline.is_some_and(|d| now >= d) {
            kill_group(child);
            exited = Some(child.wait()?);
            timed_out = true;
            drain_until = Instant::now() + KILL_DRAIN_GRACE;
            continue;
        }
        let limit = if exited.is_some() {
            Some(drain_until)
        } else {
            deadline
        };
        let wait = limit
            .map(|l| l.saturating_duration_since(now))
            .unwrap_or(POLL_MAX)
            .min(POLL_MAX);
        match stderr.as_mut() {
            Some(pipe) => {
                if read_some(pipe, wait, &mut buf, capture) {
                    // End of file or a read error: stop reading.
                    stderr = None;
                }
            }
            None => {
                std::thread::sleep(wait.min(idle_sleep));
                idle_sleep = (idle_sleep * 2).min(POLL_MAX);
            }
        }
    }
    if let (Some(_), Some(status)) = (stderr.as_ref(), exited)
        && !timed_out
    {
        log::debug!(
            "a process left behind by the state script (exit status {status}) keeps its stderr open; no longer reading it"
        );
    }
    drop(stderr);
    Ok(match (timed_out, exited) {
        (false, Some(status)) => Supervised::Exited(status),
        _ => Supervised::TimedOut,
    })
}

/// Waits up to `wait` for `pipe` to be readable and reads once into
/// `capture`. Returns true when the pipe is finished (EOF or error).
fn read_some(
    pipe: &mut ChildStderr,
    wait: Duration,
    buf: &mut [u8],
    capture: &mut StderrCapture,
) -> bool {
    let millis = wait.as_micros().div_ceil(1000).clamp(1, 1000) as libc::c_int;
    let mut pfd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for an open descriptor owned by
    // `pipe`, and the count is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return e.kind() != io::ErrorKind::Interrupted;
    }
    if rc == 0 {
        return false;
    }
    // Readable, hung up or in error: a read does not block.
    match pipe.read(buf) {
        Ok(0) => true,
        Ok(n) => {
            capture.feed(&buf[..n]);
            false
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
        Err(_) => true,
    }
}

/// SIGKILLs the process group of `child` (its pid: it was started with
/// `process_group(0)`). The child is not reaped yet, so the id cannot have
/// been reused.
fn kill_group(child: &Child) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: plain system call; a negative pid addresses the group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Logs a script's stderr line by line, at most [`STDERR_LOG_LIMIT`] bytes,
/// holding at most that much in memory.
struct StderrCapture<'a> {
    name: &'a str,
    pending: Vec<u8>,
    logged: usize,
    truncated: bool,
}

impl<'a> StderrCapture<'a> {
    fn new(name: &'a str) -> Self {
        StderrCapture {
            name,
            pending: Vec::new(),
            logged: 0,
            truncated: false,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        let room = STDERR_LOG_LIMIT - self.logged - self.pending.len();
        let data = if data.len() > room {
            self.truncated = true;
            &data[..room]
        } else {
            data
        };
        if data.is_empty() {
            return;
        }
        let mut searched = self.pending.len();
        self.pending.extend_from_slice(data);
        while let Some(pos) = self.pending[searched..].iter().position(|&b| b == b'\n') {
            let end = searched + pos;
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.logged += line.len();
            self.emit(&line[..line.len() - 1]);
            searched = 0;
        }
    }

    fn finish(mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.logged += line.len();
            self.emit(&line);
        }
        if self.truncated {
            log::info!("{}: ... (truncated to 10 KiB)", self.name);
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            log::info!("{}: {}", self.name, String::from_utf8_lossy(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names() {
        assert_eq!(
            ScriptState::ArtifactRollbackReboot.name(),
            "ArtifactRollbackReboot"
        );
        assert!(ScriptState::Sync.is_rootfs());
        assert!(!ScriptState::ArtifactFailure.is_rootfs());
        for state in [
            ScriptState::Idle,
            ScriptState::Sync,
            ScriptState::Download,
            ScriptState::ArtifactInstall,
            ScriptState::ArtifactReboot,
            ScriptState::ArtifactCommit,
            ScriptState::ArtifactRollback,
            ScriptState::ArtifactRollbackReboot,
            ScriptState::ArtifactFailure,
        ] {
            assert!(ALL_SCRIPT_STATES.contains(&state.name()));
        }
        assert_eq!(ScriptAction::Error.name(), "Error");
    }

    #[test]
    fn plain_names() {
        assert!(plain_file_name("ArtifactInstall_Enter_01"));
        for bad in ["", ".", "..", "a/b", "version", "a\0b"] {
            assert!(!plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn version_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            check_version(dir.path()),
            Err(ScriptError::Version { .. })
        ));
        for (content, ok) in [
            ("3", Some(3)),
            (" 2\n", Some(2)),
            ("1000", None),
            ("0", None),
            ("three", None),
            ("", None),
        ] {
            fs::write(dir.path().join("version"), content).unwrap();
            assert_eq!(check_version(dir.path()).ok(), ok, "{content:?}");
        }
    }

    #[test]
    fn capture_is_bounded() {
        let mut capture = StderrCapture::new("x");
        let chunk = vec![b'a'; 4000];
        for _ in 0..10 {
            capture.feed(&chunk);
            assert!(capture.logged + capture.pending.len() <= STDERR_LOG_LIMIT);
        }
        assert!(capture.truncated);
        assert_eq!(capture.pending.len(), STDERR_LOG_LIMIT);
        capture.finish();

        let mut capture = StderrCapture::new("y");
        capture.feed(b"one\ntw");
        capture.feed(b"o\r\nthree");
        assert_eq!(capture.logged, 9);
        assert_eq!(capture.pending, b"three");
        assert!(!capture.truncated);
    }

    #[test]
    fn zero_durations_mean_defaults() {
        let mut config = ScriptConfig::new("/a", "/b");
        config.timeout = Duration::ZERO;
        config.retry_interval = Duration::ZERO;
        config.retry_timeout = Duration::ZERO;
        let runner = ScriptRunner::new(config);
        assert_eq!(runner.config().timeout, DEFAULT_TIMEOUT);
        assert_eq!(runner.config().retry_interval, DEFAULT_RETRY_INTERVAL);
        assert_eq!(runner.config().retry_timeout, DEFAULT_RETRY_TIMEOUT);
        assert_eq!(runner.dir_for(ScriptState::Download), Path::new("/a"));
        assert_eq!(runner.dir_for(ScriptState::ArtifactCommit), Path::new("/b"));
    }

    #[test]
    fn missing_dir_means_no_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let runner = ScriptRunner::new(ScriptConfig::new(
            dir.path().join("nope"),
            dir.path().join("nope2"),
        ));
        assert!(
            runner
                .run(ScriptState::Idle, ScriptAction::Enter, false)
                .unwrap()
                .is_empty()
        );
        assert!(
            runner
                .run(ScriptState::ArtifactInstall, ScriptAction::Leave, false)
                .unwrap()
                .is_empty()
        );
        runner.check_rootfs_version().unwrap();
    }

    #[test]
    fn store_rejects_bad_names_before_touching_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("scripts");
        fs::create_dir(&scripts).unwrap();
        fs::write(scripts.join("ArtifactInstall_Enter_01"), "old").unwrap();
        let runner = ScriptRunner::new(ScriptConfig::new(dir.path().join("r"), &scripts));
        let err = runner
            .store_artifact_scripts(&[("ok", b"x"), ("../evil", b"y")], 3)
            .unwrap_err();
        assert!(matches!(err, ScriptError::Io { .. }), "{err}");
        assert!(scripts.join("ArtifactInstall_Enter_01").exists());
    }
}
