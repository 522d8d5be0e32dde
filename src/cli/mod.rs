//! The command line: parsing and dispatch. Each command family lives in its
//! own file; this one holds the global options.
//!
//! Invoked through a link named `mender` or `mender-update`, the binary takes
//! the same commands, so device scripts written for Mender keep working:
//! the global options of 3.x and 4.x/5.x (`--data` and `--datastore`,
//! `-E`, `--skipverify`, `-v`), their environment (`environment.rs`,
//! `crate::http_proxy`) and 5.x's `resume` and `--stop-before`
//! (`docs/standalone.md`). Through a link named `mender-auth` it takes
//! Mender 4.x/5.x's authentication commands instead (`auth.rs`).

mod artifact;
#[cfg(feature = "writer")]
mod artifact_write;
mod auth;
mod bootenv;
mod control;
mod environment;
mod progress;
mod standalone;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigPaths};
use crate::engine::StopPoint;

/// Exit codes shared with the Mender client.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "mender-rs",
    version,
    disable_version_flag = true,
    about = "Over-the-air update client for embedded Linux, compatible with Mender"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// None only with `--version` (checked in `main`).
    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// Data directory (state, artifact scripts, logs); MENDER_DATASTORE_DIR
    /// when not given, else /var/lib/mender.
    #[arg(short = 'd', long = "data", visible_alias = "datastore")]
    pub data: Option<PathBuf>,
    /// A PEM certificate (or CA) to trust for the server, instead of
    /// ServerCertificate.
    #[arg(short = 'E', long = "trusted-certs", value_name = "FILE")]
    pub trusted_certs: Option<PathBuf>,
    /// Skip the verification of the server's TLS certificate (SkipVerify).
    #[arg(long = "skipverify")]
    pub skip_verify: bool,
    /// Print the version and exit (alone, as Mender 4.x/5.x).
    #[arg(short = 'v', long = "version", short_alias = 'V')]
    pub version: bool,
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
        #[command(flatten)]
        stop: StopArgs,
    },
    /// Go on with an update stopped by --stop-before (or interrupted);
    /// commit an installed one.
    Resume {
        /// Exit with 4 when the device must reboot to finish the update.
        #[arg(long)]
        reboot_exit_code: bool,
        #[command(flatten)]
        stop: StopArgs,
    },
    /// Commit the installed update. Exits with 2 when none is in progress.
    Commit {
        #[command(flatten)]
        stop: StopArgs,
    },
    /// Roll back the installed, uncommitted update. Exits with 2 when none
    /// is in progress.
    Rollback {
        #[command(flatten)]
        stop: StopArgs,
    },
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
    /// Create the device key if there is none (a new one with
    /// --forcebootstrap), then authenticate once (Mender 3.x's `mender
    /// bootstrap`; `mender-auth bootstrap` in 4.x/5.x).
    Bootstrap(auth::KeyArgs),
    /// Make the running daemon check for an update now.
    CheckUpdate,
    /// Make the running daemon send its inventory now.
    SendInventory,
    /// Set, show or clear update control maps (pause or fail a deployment
    /// before install, reboot or commit), as D-Bus's SetUpdateControlMap.
    #[command(subcommand)]
    Control(control::ControlCommand),
}

/// `--stop-before STATE` (Mender 5.x), repeatable.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Stop before entering STATE: ArtifactInstall_Enter,
    /// ArtifactCommit_Enter, ArtifactCommit_Leave, ArtifactRollback_Enter,
    /// ArtifactFailure_Enter or Cleanup; 'resume' goes on. A payload that
    /// can roll back always stops after ArtifactInstall.
    #[arg(long = "stop-before", value_name = "STATE", value_parser = parse_stop_point)]
    pub stop_before: Vec<StopPoint>,
}

fn parse_stop_point(s: &str) -> Result<StopPoint, String> {
    s.parse()
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
    if argv0 == "mender-auth" {
        return auth::main();
    }
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
    if cli.global.version || cli.command.is_none() {
        return version_or_usage(name, &cli);
    }
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

/// `--version`, which 4.x/5.x accept only alone; or no command at all.
fn version_or_usage(name: &str, cli: &Cli) -> i32 {
    version_or_usage_of(name, cli.global.version)
}

/// [`version_or_usage`] for any of the program's names.
fn version_or_usage_of(name: &str, version: bool) -> i32 {
    if !version {
        eprintln!("{name}: a command is required (see '{name} --help')");
        return EXIT_ERROR;
    }
    if std::env::args_os().count() != 2 {
        eprintln!("{name}: --version can not be combined with other commands and arguments");
        return EXIT_ERROR;
    }
    println!("{name} {}", env!("CARGO_PKG_VERSION"));
    EXIT_OK
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<i32> {
    let global = cli.global;
    let Some(command) = cli.command else {
        anyhow::bail!("a command is required");
    };
    let level_name = global.log_level.clone().unwrap_or_else(|| "warning".into());
    let level = crate::logging::parse_level(&level_name)
        .with_context(|| format!("unknown log level '{level_name}'"))?;
    match &global.log_file {
        Some(path) => crate::logging::init_file(level, path)?,
        None => crate::logging::init_stderr(level),
    }
    if !matches!(
        command,
        Command::Artifact(_) | Command::CheckUpdate | Command::SendInventory
    ) {
        // As Mender 4.x, these commands first give a freshly flashed device
        // its name from `<data dir>/bootstrap.mender` (docs/standalone.md).
        let bootstrap = matches!(
            command,
            Command::Install { .. }
                | Command::ShowArtifact
                | Command::ShowProvides
                | Command::Daemon
        );
        start_on_device(&load_config(&global)?, bootstrap)?;
    }
    match command {
        Command::Artifact(args) => artifact::run(args, matches),
        Command::Install {
            artifact,
            reboot_exit_code,
            stop,
        } => standalone::install(
            &load_config(&global)?,
            &artifact,
            reboot_exit_code,
            &stop.stop_before,
        ),
        Command::Resume {
            reboot_exit_code,
            stop,
        } => standalone::resume(&load_config(&global)?, reboot_exit_code, &stop.stop_before),
        Command::Commit { stop } => standalone::commit(&load_config(&global)?, &stop.stop_before),
        Command::Rollback { stop } => {
            standalone::rollback(&load_config(&global)?, &stop.stop_before)
        }
        Command::ShowArtifact => standalone::show_artifact(&load_config(&global)?),
        Command::ShowProvides => standalone::show_provides(&load_config(&global)?),
        Command::Bootenv(command) => bootenv::run(&load_config(&global)?, command),
        Command::Daemon => daemon(&global),
        Command::Bootstrap(args) => auth::bootstrap(&global, args),
        Command::CheckUpdate => wake_daemon(&global, libc::SIGUSR1, "update check"),
        Command::SendInventory => wake_daemon(&global, libc::SIGUSR2, "inventory update"),
        Command::Control(command) => control::run(&load_config(&global)?, command),
    }
}

/// What every command on the device does first: take the device over from
/// the Mender client when its store is there and ours is not, with the hand
/// back of later changes (docs/takeover.md), then, if `bootstrap`, the
/// bootstrap artifact.
fn start_on_device(config: &Config, bootstrap: bool) -> Result<()> {
    #[cfg(feature = "mender-store")]
    {
        crate::store::on_provides_changed(crate::mender_store::takeover::hand_back);
        crate::engine::managed::set_hand_back(crate::engine::managed::HandBack {
            before_reboot: crate::mender_store::inflight::hand_back_before_reboot,
            after_rollback: crate::mender_store::inflight::hand_back_after_rollback,
            clear: crate::mender_store::inflight::clear_handed_back,
        });
        crate::mender_store::takeover::run(config)?;
    }
    if bootstrap {
        crate::engine::bootstrap::maybe_install(config)?;
    }
    Ok(())
}

fn daemon(global: &GlobalArgs) -> Result<i32> {
    daemon_with_key(global, crate::daemon::device_key)
}

/// The daemon with its device key from `load_key` (`mender-auth daemon`).
fn daemon_with_key(
    global: &GlobalArgs,
    load_key: impl FnOnce(&Config) -> Result<crate::device_key::DeviceKey>,
) -> Result<i32> {
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
    crate::daemon::run_with_key(&config, load_key)?;
    Ok(EXIT_OK)
}

fn wake_daemon(global: &GlobalArgs, signal: libc::c_int, what: &str) -> Result<i32> {
    let data_dir = global
        .data
        .clone()
        .unwrap_or_else(|| environment::Directories::from_env().datastore);
    let pid = crate::daemon::signals::signal_daemon(&data_dir, signal)?;
    eprintln!("{what} requested from the daemon (pid {pid})");
    Ok(EXIT_OK)
}

/// The configuration the global options, the environment
/// (`environment.rs`) and the files give. The proxy variables are checked
/// here too, so that a bad one fails every command, as in 4.x.
fn load_config(global: &GlobalArgs) -> Result<Config> {
    crate::http_proxy::ProxySettings::from_env()?;
    let dirs = environment::Directories::from_env();
    let data_dir = global
        .data
        .clone()
        .unwrap_or_else(|| dirs.datastore.clone());
    let paths = ConfigPaths {
        main: global.config.clone().unwrap_or_else(|| dirs.main_config()),
        main_explicit: global.config.is_some(),
        fallback: global
            .fallback_config
            .clone()
            .unwrap_or_else(|| data_dir.join("mender.conf")),
        fallback_explicit: global.fallback_config.is_some(),
        data_dir,
    };
    let mut config = Config::load(&paths)?;
    dirs.apply(&mut config);
    if let Some(certs) = &global.trusted_certs {
        config.server_certificate = Some(certs.clone());
    }
    if global.skip_verify {
        config.skip_verify = true;
    }
    Ok(config)
}
