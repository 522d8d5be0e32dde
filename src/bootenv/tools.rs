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

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{BootEnv, BootEnvError, EnvVars, validate_changes};

/// The print tool when none is configured.
pub const DEFAULT_PRINT: &str = "fw_printenv";
/// The set tool when none is configured.
pub const DEFAULT_SET: &str = "fw_setenv";
/// How long a tool may run before it is killed.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a failing tool's standard error goes into the error.
const STDERR_KEPT: usize = 1024;
/// Most standard output kept from the print tool.
const MAX_OUTPUT: u64 = 64 << 20;

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

    /// The set command as configured.
    pub fn set_command(&self) -> &str {
        &self.set
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
        let mut child = Command::new(program)
            .args(words)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills all of it.
            .process_group(0)
            .spawn()
            .map_err(|e| BootEnvError::Io {
                path: label.clone(),
                op: "start".into(),
                cause: e,
            })?;
        let deadline = Instant::now() + self.timeout;

        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            // A thread, so a tool that does not read cannot block us.
            std::thread::spawn(move || {
                // A tool that exits without reading all is judged by its
                // exit status, not by the broken pipe.
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = collect(child.stdout.take().expect("piped"), MAX_OUTPUT);
        let stderr = collect(child.stderr.take().expect("piped"), STDERR_KEPT as u64);

        let timed_out = |child: &mut Child| {
            kill_group(child);
            fail(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no result after {:?}, killed", self.timeout),
            ))
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => return Err(timed_out(&mut child)),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    kill_group(&mut child);
                    return Err(fail(e));
                }
            }
        };
        // Output still held open by a process the tool left behind counts
        // against the same deadline.
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let (Ok(out), Ok(err)) = (
            stdout.recv_timeout(remaining()),
            stderr.recv_timeout(remaining()),
        ) else {
            return Err(timed_out(&mut child));
        };
        if !status.success() {
            return Err(fail(io::Error::other(failure(status, &err))));
        }
        let err = String::from_utf8_lossy(&err);
        if !err.trim().is_empty() {
            log::debug!("{label}: {}", one_line(&err));
        }
        Ok(out)
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

/// Reads `source` to its end on a thread, keeping the first `keep` bytes.
fn collect(mut source: impl Read + Send + 'static, keep: u64) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut source).take(keep).read_to_end(&mut kept);
        // Drain the rest so the tool is not blocked on a full pipe.
        let _ = io::copy(&mut source, &mut io::sink());
        let _ = tx.send(kept);
    });
    rx
}

/// SIGKILL to the tool's process group, then reaps the tool.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with the group id of the group we created; no
        // memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `exit status: 1: <first line of stderr>; <second line>`.
fn failure(status: ExitStatus, stderr: &[u8]) -> String {
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
        assert_eq!(env.set_command(), "fw_setenv");
        let env = ToolsEnv::new(" my-print -c x ", "my-set");
        assert_eq!(env.print_command(), "my-print -c x");
        assert_eq!(env.describe(), "tools my-print -c x / my-set");
    }

    #[test]
    fn failures_are_one_line() {
        use std::os::unix::process::ExitStatusExt;
        let status = ExitStatus::from_raw(3 << 8);
        assert_eq!(
            failure(status, b"Cannot read\n\n  at all \n"),
            "exit status: 3: Cannot read; at all"
        );
        assert_eq!(failure(status, b""), "exit status: 3 (no error output)");
    }
}
