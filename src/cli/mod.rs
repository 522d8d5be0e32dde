//! The command line: parsing and dispatch. Each command family lives in its
//! own file; this one holds the global options.
//!
//! Invoked through a link named `mender` or `mender-update`, the binary takes
//! the same commands, so device scripts written for Mender keep working.

mod artifact;
#[cfg(feature = "writer")]
mod artifact_write;
mod bootenv;
mod control;
mod progress;
mod standalone;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigPaths};

/// Exit codes shared with the Mender client.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "mender-rs",
    version,
    about = "Over-the-air update client for embedded Linux, compatible with Mender"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Global options come before the command, as with the Mender client
/// (`mender-rs --data /data install x.mender`).
#[derive(clap::Args, Debug)]
pub struct GlobalArgs {
    /// Main configuration file.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Fallback configuration file (keys of the main file win).
    #[arg(short = 'b', long = "fallback-config")]
    pub fallback_config: Option<PathBuf>,
    /// Data directory (state, artifact scripts, logs).
    #[arg(short = 'd', long = "data")]
    pub data: Option<PathBuf>,
    /// Log level: trace, debug, info, warning, error.
    #[arg(short = 'l', long = "log-level")]
    pub log_level: Option<String>,
    /// Log to this file instead of standard error.
    #[arg(short = 'L', long = "log-file")]
    pub log_file: Option<PathBuf>,
    /// Do not log to syslog.
    #[arg(long = "no-syslog")]
    pub no_syslog: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Install an artifact from a file or an http(s) URL.
    Install {
        /// Artifact file or URL.
        artifact: String,
        /// Exit with 4 when the device must reboot to finish the update.
        #[arg(long)]
        reboot_exit_code: bool,
    },
    /// Commit the installed update.
    Commit,
    /// Roll back the installed, uncommitted update.
    Rollback,
    /// Print the name of the installed artifact.
    ShowArtifact,
    /// Print what the device provides, as sorted key=value lines.
    ShowProvides,
    /// Write, read, validate and sign Mender Artifacts.
    Artifact(artifact::ArtifactArgs),
    /// Print or set boot environment variables.
    #[command(subcommand)]
    Bootenv(bootenv::BootenvCommand),
    /// Run as a daemon managed by a Mender server.
    Daemon,
    /// Make the running daemon check for an update now.
    CheckUpdate,
    /// Make the running daemon send its inventory now.
    SendInventory,
    /// Set, show or clear update control maps (pause or fail a deployment
    /// before install, reboot or commit), as D-Bus's SetUpdateControlMap.
    #[command(subcommand)]
    Control(control::ControlCommand),
}

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "mender-rs".into());
    let name = match argv0.as_str() {
        "mender" => "mender",
        "mender-update" => "mender-update",
        _ => "mender-rs",
    };
    // Keep the raw matches: some mender-artifact options depend on their order.
    let parsed = Cli::command()
        .name(name)
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // Usage errors exit 1: exit 2 means "nothing to commit" to Mender scripts.
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            // One line on stderr; a log file gets the error too.
            let message = crate::artifact::escape_controls(&format!("{e:#}"));
            if crate::logging::logs_to_file() {
                log::error!("{message}");
            }
            eprintln!("mender-rs: error: {message}");
            EXIT_ERROR
        }
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<i32> {
    let global = cli.global;
    let level_name = global.log_level.clone().unwrap_or_else(|| "warning".into());
    let level = crate::logging::parse_level(&level_name)
        .with_context(|| format!("unknown log level '{level_name}'"))?;
    match &global.log_file {
        Some(path) => crate::logging::init_file(level, path)?,
        None => crate::logging::init_stderr(level),
    }
    if matches!(
        cli.command,
        Command::Install { .. } | Command::ShowArtifact | Command::ShowProvides | Command::Daemon
    ) {
        // As Mender 4.x: these commands first give a freshly flashed device
        // its name from `<data dir>/bootstrap.mender` (docs/standalone.md).
        crate::engine::bootstrap::maybe_install(&load_config(&global)?)?;
    }
    match cli.command {
        Command::Artifact(args) => artifact::run(args, matches),
        Command::Install {
            artifact,
            reboot_exit_code,
        } => standalone::install(&load_config(&global)?, &artifact, reboot_exit_code),
        Command::Commit => standalone::commit(&load_config(&global)?),
        Command::Rollback => standalone::rollback(&load_config(&global)?),
        Command::ShowArtifact => standalone::show_artifact(&load_config(&global)?),
        Command::ShowProvides => standalone::show_provides(&load_config(&global)?),
        Command::Bootenv(command) => bootenv::run(&load_config(&global)?, command),
        Command::Daemon => daemon(&global),
        Command::CheckUpdate => wake_daemon(&global, libc::SIGUSR1, "update check"),
        Command::SendInventory => wake_daemon(&global, libc::SIGUSR2, "inventory update"),
        Command::Control(command) => control::run(&load_config(&global)?, command),
    }
}

fn daemon(global: &GlobalArgs) -> Result<i32> {
    let config = load_config(global)?;
    // --log-level wins over DaemonLogLevel; the daemon's default is info.
    let level_name = global
        .log_level
        .clone()
        .or_else(|| config.daemon_log_level.clone())
        .unwrap_or_else(|| "info".into());
    let level = crate::logging::parse_level(&level_name)
        .with_context(|| format!("unknown log level '{level_name}' (DaemonLogLevel)"))?;
    crate::logging::set_level(level);
    if global.log_file.is_none()
        && !global.no_syslog
        && let Err(e) = crate::logging::use_syslog("mender-rs")
    {
        log::warn!("syslog is not available ({e}); logging to standard error");
    }
    crate::daemon::run(&config)?;
    Ok(EXIT_OK)
}

fn wake_daemon(global: &GlobalArgs, signal: libc::c_int, what: &str) -> Result<i32> {
    let data_dir = global
        .data
        .clone()
        .unwrap_or_else(|| ConfigPaths::default().data_dir);
    let pid = crate::daemon::signals::signal_daemon(&data_dir, signal)?;
    eprintln!("{what} requested from the daemon (pid {pid})");
    Ok(EXIT_OK)
}

fn load_config(global: &GlobalArgs) -> Result<Config> {
    let defaults = ConfigPaths::default();
    let data_dir = global.data.clone().unwrap_or(defaults.data_dir);
    let paths = ConfigPaths {
        main: global.config.clone().unwrap_or(defaults.main),
        main_explicit: global.config.is_some(),
        fallback: global
            .fallback_config
            .clone()
            .unwrap_or_else(|| data_dir.join("mender.conf")),
        fallback_explicit: global.fallback_config.is_some(),
        data_dir,
    };
    Ok(Config::load(&paths)?)
}
