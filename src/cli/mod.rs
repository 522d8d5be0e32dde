//! The command line: parsing and dispatch. Each command family lives in its
//! own file; this one holds the global options.

mod artifact;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Log level: trace, debug, info, warning, error.
    #[arg(
        short = 'l',
        long = "log-level",
        global = true,
        default_value = "warning"
    )]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write, read, validate and sign Mender Artifacts.
    Artifact(artifact::ArtifactArgs),
}

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> i32 {
    // Keep the raw matches: some mender-artifact options depend on their order.
    let parsed = Cli::command()
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
    let Some(level) = crate::logging::parse_level(&cli.log_level) else {
        eprintln!("mender-rs: error: unknown log level '{}'", cli.log_level);
        return EXIT_ERROR;
    };
    crate::logging::init_stderr(level);
    let result = match cli.command {
        Command::Artifact(args) => artifact::run(args, &matches),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mender-rs: error: {e:#}");
            EXIT_ERROR
        }
    }
}
