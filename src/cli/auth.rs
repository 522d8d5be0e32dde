//! `mender-auth` (the binary run through a link of that name): the
//! authentication command line of Mender 4.x/5.x, `bootstrap` and `daemon`
//! with `--forcebootstrap` and `--passphrase-file` (`docs/managed-mode.md`,
//! "The device key" and "mender-auth").
//!
//! mender-rs authenticates and updates in one process, so `mender-auth
//! daemon` runs that one daemon; what it adds to `mender-update daemon` is
//! the passphrase of an encrypted device key and `--forcebootstrap`, as
//! Mender's `mender-authd` service takes them.

use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use super::{EXIT_ERROR, EXIT_OK, GlobalArgs};
use crate::config::Config;
use crate::device_key::DeviceKey;
use crate::device_key::MAX_PASSPHRASE_LEN;

#[derive(Parser, Debug)]
#[command(
    name = "mender-auth",
    version,
    disable_version_flag = true,
    about = "Authentication with the Mender server: device key and bootstrap (mender-rs)"
)]
struct AuthCli {
    #[command(flatten)]
    global: GlobalArgs,

    /// None only with `--version` (checked in `main`).
    #[command(subcommand)]
    command: Option<AuthCommand>,
}

#[derive(Subcommand, Debug)]
enum AuthCommand {
    /// Create the device key if there is none (a new one with
    /// --forcebootstrap), then authenticate with the server once.
    Bootstrap(KeyArgs),
    /// Run the daemon (authentication and updates: mender-rs is one
    /// process), with the device key's passphrase.
    Daemon(KeyArgs),
}

#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    /// Generate a new device key, replacing the one there is.
    #[arg(short = 'F', long = "forcebootstrap")]
    force_bootstrap: bool,
    /// File whose first line is the passphrase of an encrypted device key
    /// ("-": standard input).
    #[arg(long = "passphrase-file", value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// Parses the arguments of `mender-auth`, runs the command and returns the
/// exit code.
pub fn main() -> i32 {
    let cli = match AuthCli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Usage errors exit 1, as with Mender.
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    if cli.global.version || cli.command.is_none() {
        return super::version_or_usage_of("mender-auth", cli.global.version);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let message = crate::artifact::escape_controls(&format!("{e:#}"));
            if crate::logging::logs_to_file() {
                log::error!("{message}");
            }
            eprintln!("mender-auth: error: {message}");
            EXIT_ERROR
        }
    }
}

fn run(cli: AuthCli) -> Result<i32> {
    let global = cli.global;
    let level_name = global.log_level.clone().unwrap_or_else(|| "warning".into());
    let level = crate::logging::parse_level(&level_name)
        .with_context(|| format!("unknown log level '{level_name}'"))?;
    match &global.log_file {
        Some(path) => crate::logging::init_file(level, path)?,
        None => crate::logging::init_stderr(level),
    }
    let Some(command) = cli.command else {
        bail!("a command is required");
    };
    match command {
        AuthCommand::Bootstrap(args) => bootstrap(&global, args),
        AuthCommand::Daemon(args) => {
            super::start_on_device(&super::load_config(&global)?, true)?;
            // Read before the daemon starts: standard input is the caller's.
            let passphrase = read_passphrase(args.passphrase_file.as_deref())?;
            super::daemon_with_key(&global, |config| {
                bootstrap_key(
                    config,
                    args.force_bootstrap,
                    passphrase.as_ref().map(|p| p.as_slice()),
                )
            })
        }
    }
}

/// `bootstrap` (also Mender 3.x's `mender bootstrap [-F]`): the device key,
/// then one authentication.
pub(super) fn bootstrap(global: &GlobalArgs, args: KeyArgs) -> Result<i32> {
    let config = super::load_config(global)?;
    let passphrase = read_passphrase(args.passphrase_file.as_deref())?;
    let key = bootstrap_key(
        &config,
        args.force_bootstrap,
        passphrase.as_ref().map(|p| p.as_slice()),
    )?;
    authenticate_once(&config, key)?;
    Ok(EXIT_OK)
}

/// The device key for `bootstrap` and `daemon`: loaded (decrypted with
/// `passphrase` if it is encrypted), created if the default one is missing,
/// or newly generated with `force`. Unlike Mender 4.x/5.x, a key that
/// exists but cannot be read (a wrong passphrase, a damaged file) is an
/// error, never replaced: the server knows the device by it.
fn bootstrap_key(config: &Config, force: bool, passphrase: Option<&[u8]>) -> Result<DeviceKey> {
    let (path, default_path) = crate::daemon::key_path(config);
    if force {
        if !default_path {
            bail!(
                "cannot generate a new device key: {} is set in the configuration (Security.AuthPrivateKey, or HttpsClient.Key), and a key given there is never replaced",
                path.display()
            );
        }
        let key = DeviceKey::generate_replacing(&path, config.device_key_type)?;
        log::info!(
            "generated a new device key {} ({})",
            path.display(),
            key.describe()
        );
        return Ok(key);
    }
    if !default_path {
        return Ok(DeviceKey::load_with_passphrase(&path, passphrase)?);
    }
    let (key, generated) =
        DeviceKey::load_or_generate_with_passphrase(&path, config.device_key_type, passphrase)?;
    if generated {
        log::info!(
            "generated the device key {} ({})",
            path.display(),
            key.describe()
        );
    }
    Ok(key)
}

/// `bootstrap`'s authentication, as Mender 4.x/5.x do it: none without a
/// server; otherwise one request, whose outcome (a device not yet accepted
/// is the common one) is reported but does not fail the command.
fn authenticate_once(config: &Config, key: DeviceKey) -> Result<()> {
    if config.servers.is_empty() {
        log::info!("no server configured (ServerURL); not authenticating");
        return Ok(());
    }
    let mut client = crate::daemon::server_client(config, key)?;
    match client.authenticate() {
        Ok(()) => {
            let server = client.token().map(|(_, server)| server).unwrap_or("");
            log::info!("authenticated with {server}");
            eprintln!("mender-auth: authenticated with {server}");
        }
        Err(e) => log::error!("authentication failed: {e}"),
    }
    Ok(())
}

/// The passphrase: the first line of `source` without its line end, as
/// Mender 4.x/5.x read it; `-` is standard input. At most
/// [`MAX_PASSPHRASE_LEN`] bytes are taken, and only one line is read from
/// standard input (the caller may hold it open).
fn read_passphrase(source: Option<&Path>) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(source) = source else {
        return Ok(None);
    };
    let limit = MAX_PASSPHRASE_LEN as u64 + 1;
    let mut line = Zeroizing::new(Vec::new());
    let what = if source == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_until(b'\n', &mut line)
            .context("reading the passphrase from standard input")?;
        "standard input".to_owned()
    } else {
        // A file larger than this is not a passphrase file.
        const MAX_FILE_LEN: u64 = 64 << 10;
        let bytes = Zeroizing::new(
            crate::fsutil::read_bounded(source, MAX_FILE_LEN, "a passphrase file")
                .with_context(|| format!("passphrase file {}", source.display()))?,
        );
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        line.extend_from_slice(&bytes[..end]);
        source.display().to_string()
    };
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.len() > MAX_PASSPHRASE_LEN {
        bail!("passphrase from {what}: the first line is longer than {MAX_PASSPHRASE_LEN} bytes");
    }
    Ok(Some(line))
}
