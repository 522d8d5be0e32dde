//! Boot environments we do not handle natively (U-Boot environments in MTD
//! or UBI flash, other bootloaders), through external tools with the
//! interface of libubootenv's `fw_printenv`/`fw_setenv` (which
//! grub-mender-grubenv's tools emulate too).
//!
//! * Read: the print tool (`BootUtilitiesGetNextActivePart`, default
//!   `fw_printenv`) without arguments prints every variable as a
//!   `name=value` line. A line without `=` continues the value of the line
//!   before it (a value holding a newline is printed as it is).
//! * Write: the set tool (`BootUtilitiesSetActivePart`, default
//!   `fw_setenv`) is run once as `<set> -s -` with one `name=value` line
//!   per change on its standard input; `name=` deletes.
//!
//! A configured command may carry arguments (`fw_setenv -c /etc/my.config`):
//! it is split on white space, without shell quoting. A tool that exits
//! with a non-zero status is an error holding the start of its standard
//! error; one that has not finished after [`TOOL_TIMEOUT`] is killed, with
//! every process of its process group.

use std::io;
use std::time::Duration;

use super::{BootEnv, BootEnvError, EnvVars, validate_changes};
use crate::process::{Exit, Input, Spec};

/// The print tool when none is configured.
pub const DEFAULT_PRINT: &str = "fw_printenv";
/// The set tool when none is configured.
pub const DEFAULT_SET: &str = "fw_setenv";
/// How long a tool may run before it is killed.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a failing tool's standard error goes into the error.
pub const STDERR_KEPT: usize = 1024;
/// Most standard output of the print tool: a U-Boot environment is at most
/// a few hundred KiB; more is refused rather than held in memory.
pub const MAX_OUTPUT: usize = 4 << 20;

/// The environment as external tools read and write it.
#[derive(Debug, Clone)]
pub struct ToolsEnv {
    print: String,
    set: String,
    timeout: Duration,
}

impl ToolsEnv {
    /// Runs `print` and `set` (commands with optional arguments; an empty
    /// one means the default).
    pub fn new(print: &str, set: &str) -> ToolsEnv {
        let or_default = |command: &str, default: &str| {
            if command.trim().is_empty() {
                default.to_string()
            } else {
                command.trim().to_string()
            }
        };
        ToolsEnv {
            print: or_default(print, DEFAULT_PRINT),
            set: or_default(set, DEFAULT_SET),
            timeout: TOOL_TIMEOUT,
        }
    }

    /// The tools of `BootUtilitiesGetNextActivePart` and
    /// `BootUtilitiesSetActivePart`, or the defaults.
    pub fn from_config(config: &crate::config::Config) -> ToolsEnv {
        ToolsEnv::new(
            config
                .boot_utilities_get_next_active_part
                .as_deref()
                .unwrap_or(DEFAULT_PRINT),
            config
                .boot_utilities_set_active_part
                .as_deref()
                .unwrap_or(DEFAULT_SET),
        )
    }

    /// Kills the tools after `timeout` instead of [`TOOL_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> ToolsEnv {
        self.timeout = timeout;
        self
    }

    /// The print command as configured.
    pub fn print_command(&self) -> &str {
        &self.print
    }

    /// Runs `command` with `args` appended, feeding it `input`; its
    /// standard output if it exits with status 0.
    fn run(
        &self,
        command: &str,
        args: &[&str],
        input: Option<Vec<u8>>,
        op: &str,
    ) -> Result<Vec<u8>, BootEnvError> {
        let mut words = command.split_whitespace();
        let program = words.next().unwrap_or(command);
        let label = std::iter::once(command)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let fail = |cause: io::Error| BootEnvError::Io {
            path: label.clone(),
            op: op.to_string(),
            cause,
        };
        let mut spec = Spec::new(program, self.timeout)
            .args(words)
            .args(args)
            .stdout_cap(MAX_OUTPUT)
            .stderr_cap(STDERR_KEPT);
        if let Some(input) = input {
            spec = spec.stdin(Input::Bytes(input));
        }
        let record = spec.run().map_err(|e| BootEnvError::Io {
            path: label.clone(),
            op: "start".into(),
            cause: e,
        })?;
        match record.exit {
            Exit::Code(0) => {}
            Exit::TimedOut => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no result after {:?}, killed", self.timeout),
                )));
            }
            other => return Err(fail(io::Error::other(failure(other, &record.stderr.data)))),
        }
        // A listing cut short must not be taken for the environment.
        if record.stdout.truncated {
            return Err(fail(io::Error::other(format!(
                "more than {MAX_OUTPUT} bytes of output"
            ))));
        }
        if record.stdout.held_open {
            return Err(fail(io::Error::other(
                "a process it left behind keeps its output open; output incomplete",
            )));
        }
        let err = String::from_utf8_lossy(&record.stderr.data);
        if !err.trim().is_empty() {
            log::debug!("{label}: {}", one_line(&err));
        }
        Ok(record.stdout.data)
    }
}

impl BootEnv for ToolsEnv {
    fn read(&self) -> Result<EnvVars, BootEnvError> {
        let out = self.run(&self.print, &[], None, "read the environment")?;
        Ok(parse_listing(&String::from_utf8_lossy(&out)))
    }

    fn write(&self, changes: &[(&str, Option<&str>)]) -> Result<(), BootEnvError> {
        validate_changes(changes)?;
        for (name, value) in changes {
            if name.starts_with('#') {
                return Err(BootEnvError::InvalidName {
                    name: name.to_string(),
                    reason: "starts with '#' (a comment for fw_setenv -s)".into(),
                });
            }
            if value.is_some_and(|v| v.contains('\n')) {
                return Err(BootEnvError::Unsupported {
                    device: self.describe(),
                    reason: format!(
                        "the value of {name} holds a newline, which `{} -s -` cannot take",
                        self.set
                    ),
                });
            }
        }
        // The last change of a name wins; the order of first mention is kept.
        let mut wanted: Vec<(&str, &str)> = Vec::new();
        for (name, value) in changes {
            let value = value.unwrap_or("");
            match wanted.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => wanted.push((name, value)),
            }
        }
        let current = self.read()?;
        let script: String = wanted
            .iter()
            .filter(|(name, value)| match current.get(*name) {
                Some(old) => old != value,
                None => !value.is_empty(),
            })
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        if script.is_empty() {
            log::debug!("{}: no change, nothing written", self.describe());
            return Ok(());
        }
        self.run(
            &self.set,
            &["-s", "-"],
            Some(script.into_bytes()),
            "write the environment",
        )?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("tools {} / {}", self.print, self.set)
    }
}

/// The variables in `name=value` lines; a line without `=` continues the
/// value before it.
fn parse_listing(text: &str) -> EnvVars {
    let mut vars = EnvVars::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                vars.insert(name.to_string(), value.to_string());
                last = Some(name.to_string());
            }
            _ => match last.as_ref().and_then(|n| vars.get_mut(n)) {
                Some(value) => {
                    value.push('\n');
                    value.push_str(line);
                }
                None => log::debug!("ignoring tool output line {line:?}"),
            },
        }
    }
    vars
}

/// `exit status: 1: <first line of stderr>; <second line>`.
fn failure(status: Exit, stderr: &[u8]) -> String {
    let status = match status {
        Exit::Code(code) => format!("exit status: {code}"),
        Exit::Signal(signal) => format!("signal: {signal}"),
        Exit::TimedOut => "timed out".to_string(),
    };
    let text = String::from_utf8_lossy(stderr);
    let text = one_line(&text);
    if text.is_empty() {
        format!("{status} (no error output)")
    } else {
        format!("{status}: {text}")
    }
}

/// The non-empty lines of `text`, trimmed, joined with "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines() {
        let vars = parse_listing("a=1\nb=x=y\nc=\nm=l1\nl2\n\nz=9\n");
        let expected: EnvVars = [
            ("a", "1"),
            ("b", "x=y"),
            ("c", ""),
            ("m", "l1\nl2\n"),
            ("z", "9"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(vars, expected);
        assert!(parse_listing("noise\n=x\n").is_empty());
    }

    #[test]
    fn defaults_and_arguments() {
        let env = ToolsEnv::new("", "  ");
        assert_eq!(env.print_command(), "fw_printenv");
        assert_eq!(env.set, "fw_setenv");
        let env = ToolsEnv::new(" my-print -c x ", "my-set");
        assert_eq!(env.print_command(), "my-print -c x");
        assert_eq!(env.describe(), "tools my-print -c x / my-set");
    }

    #[test]
    fn failures_are_one_line() {
        let status = Exit::Code(3);
        assert_eq!(
            failure(status, b"Cannot read\n\n  at all \n"),
            "exit status: 3: Cannot read; at all"
        );
        assert_eq!(failure(status, b""), "exit status: 3 (no error output)");
        assert_eq!(failure(Exit::Signal(9), b""), "signal: 9 (no error output)");
    }
}
