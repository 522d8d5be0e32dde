//! `mender-rs bootenv print|set`: the boot environment the client uses, for
//! technicians and scripts, in the shape of `fw_printenv`/`fw_setenv`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::{EXIT_ERROR, EXIT_OK};
use crate::bootenv::{BootEnv, EnvVars};
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum BootenvCommand {
    /// Print variables as name=value lines (all when no NAME is given).
    Print { names: Vec<String> },
    /// Set variables in one write; a bare NAME= deletes NAME.
    Set {
        /// Replace the whole environment by these variables, even one never
        /// written or corrupt (like `fw_setenv -f`): for setting up devices.
        #[arg(long)]
        create: bool,
        #[arg(required = true)]
        assignments: Vec<String>,
    },
}

pub fn run(config: &Config, command: BootenvCommand) -> Result<i32> {
    if let BootenvCommand::Set {
        create: true,
        assignments,
    } = &command
    {
        let env = crate::bootenv::open(config)?;
        let mut vars = EnvVars::new();
        for (name, value) in parse_assignments(assignments)? {
            vars.insert(name.to_string(), value.unwrap_or_default().to_string());
        }
        env.create(&vars)
            .with_context(|| format!("writing {}", env.describe()))?;
        return Ok(EXIT_OK);
    }
    let env = crate::engine::open_boot_env(config)?;
    run_on(env.as_ref(), command)
}

fn parse_assignments(assignments: &[String]) -> Result<Vec<(&str, Option<&str>)>> {
    assignments
        .iter()
        .map(|a| match a.split_once('=') {
            Some((name, value)) => Ok((name, if value.is_empty() { None } else { Some(value) })),
            None => bail!("'{a}' is not NAME=VALUE (a bare NAME= deletes NAME)"),
        })
        .collect()
}

fn run_on(env: &dyn BootEnv, command: BootenvCommand) -> Result<i32> {
    match command {
        BootenvCommand::Print { names } => {
            let vars = env
                .read()
                .with_context(|| format!("reading {}", env.describe()))?;
            let mut out = std::io::stdout().lock();
            if names.is_empty() {
                for (k, v) in &vars {
                    writeln!(out, "{k}={v}")?;
                }
                return Ok(EXIT_OK);
            }
            let mut code = EXIT_OK;
            for name in &names {
                match vars.get(name) {
                    Some(v) => writeln!(out, "{name}={v}")?,
                    None => {
                        eprintln!("## Error: \"{name}\" not defined");
                        code = EXIT_ERROR;
                    }
                }
            }
            Ok(code)
        }
        BootenvCommand::Set { assignments, .. } => {
            let changes = parse_assignments(&assignments)?;
            env.write(&changes)
                .with_context(|| format!("writing {}", env.describe()))?;
            Ok(EXIT_OK)
        }
    }
}
