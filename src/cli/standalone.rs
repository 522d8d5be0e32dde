//! Standalone commands: `install`, `commit`, `rollback`, `show-artifact`,
//! `show-provides`, as the Mender client has them.

use std::fs::File;
use std::io::{BufReader, Write};

use anyhow::{Context, Result};

use super::progress::ProgressReader;
use super::{EXIT_ERROR, EXIT_OK};
use crate::artifact::adaptive::{ArtifactSource, RangeSource as _};
use crate::config::Config;
use crate::engine::{Engine, Outcome, StopPoint};
use crate::server::{DownloadOptions, ResumableDownload};
use crate::store::Store;

/// Exit code of `commit`/`rollback` with nothing in progress (Mender's).
pub const EXIT_NOTHING_TO_DO: i32 = 2;
/// Exit code of `install --reboot-exit-code` when a reboot is needed.
pub const EXIT_REBOOT_NEEDED: i32 = 4;

pub fn install(
    config: &Config,
    source: &str,
    reboot_exit_code: bool,
    stop_before: &[StopPoint],
) -> Result<i32> {
    let input = open_source(config, source)?;
    let mut engine = Engine::open(config)?;
    engine.set_stop_before(stop_before);
    let outcome = engine.install(input)?;
    Ok(report(&engine, outcome, reboot_exit_code, "install"))
}

/// `resume` (Mender 5.x): goes on with an update stopped by
/// `--stop-before`, finishes an interrupted one, or commits an installed
/// one.
pub fn resume(config: &Config, reboot_exit_code: bool, stop_before: &[StopPoint]) -> Result<i32> {
    let mut engine = Engine::open(config)?;
    engine.set_stop_before(stop_before);
    let outcome = engine.resume_update()?;
    Ok(report(&engine, outcome, reboot_exit_code, "resume"))
}

pub fn commit(config: &Config, stop_before: &[StopPoint]) -> Result<i32> {
    let mut engine = Engine::open(config)?;
    engine.set_stop_before(stop_before);
    let outcome = engine.commit()?;
    Ok(report(&engine, outcome, false, "commit"))
}

pub fn rollback(config: &Config, stop_before: &[StopPoint]) -> Result<i32> {
    let mut engine = Engine::open(config)?;
    engine.set_stop_before(stop_before);
    let outcome = engine.rollback()?;
    Ok(report(&engine, outcome, false, "roll back"))
}

/// Says how a command ended; returns its exit code (Mender's: 0, 1, 2 for
/// nothing in progress, 4 for a reboot with `--reboot-exit-code`).
fn report(engine: &Engine, outcome: Outcome, reboot_exit_code: bool, verb: &str) -> i32 {
    let name = engine
        .provides()
        .get("artifact_name")
        .cloned()
        .unwrap_or_default();
    let reboot_code = |reboot: bool| {
        if reboot && reboot_exit_code {
            EXIT_REBOOT_NEEDED
        } else {
            EXIT_OK
        }
    };
    match outcome {
        Outcome::Installed { reboot: true } => {
            eprintln!(
                "Installed. Reboot the device, then run 'commit' to keep the update or 'rollback' to undo it."
            );
            reboot_code(true)
        }
        Outcome::Installed { reboot: false } => {
            eprintln!("Installed. Run 'commit' to keep the update or 'rollback' to undo it.");
            EXIT_OK
        }
        Outcome::Committed { reboot } => {
            if verb == "install" {
                eprintln!("Installed and committed: {name}");
            } else {
                eprintln!("Committed: {name}");
            }
            if reboot {
                eprintln!("Reboot the device for the update to take effect.");
            }
            reboot_code(reboot)
        }
        Outcome::Stopped(point) => {
            eprintln!("Stopped before {point}. Run 'resume' to go on.");
            EXIT_OK
        }
        Outcome::RolledBack if verb == "install" => EXIT_ERROR,
        Outcome::RolledBack => {
            eprintln!("Rolled back. Reboot the device if it runs the update.");
            EXIT_OK
        }
        Outcome::NothingToDo => {
            eprintln!("Nothing to {verb}.");
            EXIT_NOTHING_TO_DO
        }
    }
}

pub fn show_artifact(config: &Config) -> Result<i32> {
    let store = Store::read_only(&config.data_dir)?;
    let provides = store.effective_provides(&config.artifact_info_file);
    let name = provides
        .get("artifact_name")
        .map(String::as_str)
        .unwrap_or(crate::store::UNKNOWN_ARTIFACT);
    check_printable("artifact_name", name, false)?;
    println!("{name}");
    Ok(EXIT_OK)
}

pub fn show_provides(config: &Config) -> Result<i32> {
    let store = Store::read_only(&config.data_dir)?;
    // Everything is checked before the first line goes out: scripts that
    // parse this output get all of it or an error, never a forged line.
    for (k, v) in store.provides() {
        check_printable(k, k, true)?;
        check_printable(k, v, false)?;
    }
    let mut out = std::io::stdout().lock();
    for (k, v) in store.provides() {
        writeln!(out, "{k}={v}")?;
    }
    Ok(EXIT_OK)
}

/// Refuses a stored key or value that would print as more than one
/// `key=value` line (the reader refuses such artifacts; an older version
/// or a hand edit may still have stored one).
fn check_printable(key: &str, text: &str, is_key: bool) -> Result<()> {
    match crate::artifact::text_problem(text, is_key) {
        None => Ok(()),
        Some(why) => anyhow::bail!(
            "stored provide {}'{}' {why}: refusing to print it",
            if is_key { "key " } else { "" },
            if is_key { text } else { key }.escape_debug()
        ),
    }
}

/// A local file, or an http(s) URL streamed straight into the installer,
/// resumed when the connection breaks, and installed adaptively when the
/// artifact is chunked and the server answers ranges.
fn open_source(config: &Config, source: &str) -> Result<ArtifactSource> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let agent = crate::http::agent(config.server_certificate.as_deref(), config.skip_verify)?;
        let download = ResumableDownload::start_once(
            agent,
            source,
            DownloadOptions {
                max_attempts: config.retry_download_count,
                max_interval: config.retry_poll_interval,
                min_progress: crate::server::download::MIN_PROGRESS,
                progress_window: crate::server::download::PROGRESS_WINDOW,
            },
        )?;
        let total = Some(download.total()).filter(|t| *t != u64::MAX);
        let mut source = ArtifactSource::ranged(download);
        source.stream = Box::new(ProgressReader::new(
            BufReader::with_capacity(256 << 10, source.stream),
            total,
        ));
        return Ok(source);
    }
    let file = File::open(source).with_context(|| format!("opening {source}"))?;
    let total = file.metadata().ok().map(|m| m.len());
    // No bigger than the reader's payload chunks: those then come straight
    // from the file, not through this buffer (one copy less per byte).
    Ok(ArtifactSource::stream(Box::new(ProgressReader::new(
        BufReader::with_capacity(64 << 10, file),
        total,
    ))))
}
