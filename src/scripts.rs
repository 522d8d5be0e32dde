//! State scripts (`docs/state-scripts.md`): selection, the `version` file, execution with
//! timeout and retry-later, stderr capture, and storing an Artifact's
//! scripts.
//!
//! Root filesystem scripts (`Idle`, `Sync`, `Download`) live in
//! [`ScriptConfig::rootfs_dir`], the `Artifact*` ones in
//! [`ScriptConfig::artifact_dir`]. Each script runs without arguments, with
//! stdin and stdout on `/dev/null`, in its own process group, with `/` as its
//! working directory, under [`crate::process`]. Its stderr is logged line by
//! line once it ended (at most 10 KiB per execution).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fsutil::{parent_dir, read_bounded, sync_dir};
use crate::process::{Exit, Spec};
use crate::states::{is_plain_file_name, parse_script_name, state_label};

/// The states and actions scripts run at, defined in [`crate::states`].
pub use crate::states::{ScriptAction, ScriptState};

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

/// Most bytes read from a scripts directory's `version` file (it holds a
/// number).
pub const VERSION_FILE_CAP: u64 = 64;

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
                    state_label(state, action)
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

    /// The explicit rootfs-dir version check done at commit
    /// (`docs/state-scripts.md`, "The `version` file"): when the root filesystem scripts
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
    /// time allows. Error, ArtifactFailure and other scripts whose failures
    /// are ignored are retried alike.
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
                    // Mender 3.4's rule (`docs/state-scripts.md`): another
                    // attempt as long as the window has not passed when this
                    // one ends, even if the next starts after it.
                    let interval = self.config.retry_interval;
                    if first_attempt.elapsed() > self.config.retry_timeout {
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
        let record = match Spec::new(path, self.config.timeout)
            .stderr_cap(STDERR_LOG_LIMIT)
            .run()
        {
            Ok(record) => record,
            Err(e) => return Attempt::Failure(ScriptError::io(path, e)),
        };
        for line in record.stderr.lines() {
            log::info!("{name}: {line}");
        }
        if record.stderr.truncated {
            log::info!("{name}: ... (truncated to 10 KiB)");
        }
        if record.stderr.held_open {
            log::debug!(
                "a process left behind by the state script {name} keeps its stderr open; no longer reading it"
            );
        }
        let script = path.to_path_buf();
        match record.exit {
            Exit::Code(0) => Attempt::Success,
            Exit::Code(EXIT_RETRY_LATER) => Attempt::RetryLater,
            Exit::Code(code) => Attempt::Failure(ScriptError::Failed { script, code }),
            Exit::Signal(signal) => Attempt::Failure(ScriptError::Killed { script, signal }),
            Exit::TimedOut => Attempt::Failure(ScriptError::TimedOut {
                script,
                after: self.config.timeout,
            }),
        }
    }
}

/// Plain names for files in the scripts directory (never its `version`).
fn plain_file_name(name: &str) -> bool {
    is_plain_file_name(name) && name != "version"
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
        match parse_script_name(name) {
            None => log::debug!(
                "skipping {}: not a state script name",
                entry.path().display()
            ),
            Some(parsed) if parsed.state == state && parsed.action == action => {
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
    let text = match read_bounded(&path, VERSION_FILE_CAP, "a state script version file") {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => {
            return Err(error("the version file is missing".into()));
        }
        Err(e) => return Err(error(format!("cannot read the version file: {e}"))),
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
            assert!(ScriptState::ALL.contains(&state));
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
        let long = format!("3{}", " ".repeat(100));
        for (content, ok) in [
            ("3", Some(3)),
            (" 2\n", Some(2)),
            ("1000", None),
            ("0", None),
            ("three", None),
            ("", None),
            // Over the cap, even though it would parse.
            (long.as_str(), None),
        ] {
            fs::write(dir.path().join("version"), content).unwrap();
            assert_eq!(check_version(dir.path()).ok(), ok, "{content:?}");
        }
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
