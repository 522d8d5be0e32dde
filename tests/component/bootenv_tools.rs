//! The tools backend driving Debian's libubootenv `fw_printenv` and
//! `fw_setenv` (package libubootenv-tool) on a test environment file,
//! checked against the native U-Boot backend on the same file. These tests
//! fail, not skip, when the tools are missing.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mender_rs::bootenv::{BootEnv, BootEnvError, EnvVars, ToolsEnv, UBootEnv};

fn vars(pairs: &[(&str, &str)]) -> EnvVars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn defaults() -> Vec<(&'static str, &'static str)> {
    vec![
        ("bootcmd", "run mender_setup; run bootit"),
        ("bootcount", "0"),
        ("bootdelay", "2"),
        ("mender_boot_part", "2"),
        ("mender_boot_part_hex", "2"),
        ("upgrade_available", "0"),
    ]
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    /// An environment file (two redundant copies when `redundant`) seeded
    /// with `fw_setenv -f` from [`defaults`].
    fn new(redundant: bool) -> Fixture {
        let fx = Fixture {
            tmp: tempfile::tempdir().unwrap(),
        };
        let mut config = format!("{} 0x0 0x4000\n", fx.path("env1.img").display());
        fs::write(fx.path("env1.img"), vec![0u8; 0x4000]).unwrap();
        if redundant {
            config += &format!("{} 0x0 0x4000\n", fx.path("env2.img").display());
            fs::write(fx.path("env2.img"), vec![0u8; 0x4000]).unwrap();
        }
        fs::write(fx.config(), config).unwrap();
        let lines: String = defaults()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        fs::write(fx.path("defaults.txt"), lines).unwrap();
        let out = Command::new("fw_setenv")
            .arg("-c")
            .arg(fx.config())
            .arg("-f")
            .arg(fx.path("defaults.txt"))
            .args(["-s", "/dev/null"])
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "fw_setenv not found: these tests need libubootenv's tools \
                 (apt-get install libubootenv-tool)"
            ),
            Err(e) => panic!("cannot run fw_setenv: {e}"),
        };
        assert!(
            out.status.success(),
            "fw_setenv -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fx
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("fw_env.config")
    }

    /// An executable shell script.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Wrappers adding `-c <config>` to fw_printenv and fw_setenv.
    fn wrapped(&self) -> ToolsEnv {
        let config = self.config();
        let print = self.script(
            "wrap-print",
            &format!("exec fw_printenv -c '{}' \"$@\"", config.display()),
        );
        let set = self.script(
            "wrap-set",
            &format!("exec fw_setenv -c '{}' \"$@\"", config.display()),
        );
        ToolsEnv::new(path_str(&print), path_str(&set))
    }

    /// The commands with the arguments in the configured string.
    fn with_arguments(&self) -> ToolsEnv {
        let c = self.config();
        ToolsEnv::new(
            &format!("fw_printenv -c {}", c.display()),
            &format!("fw_setenv -c {}", c.display()),
        )
    }

    fn native(&self) -> UBootEnv {
        UBootEnv::from_config_file(&self.config()).unwrap()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn tools_are_installed() {
    for tool in ["fw_printenv", "fw_setenv"] {
        match Command::new(tool).arg("-h").output() {
            Ok(_) => {}
            Err(e) => panic!("{tool}: {e} (apt-get install libubootenv-tool)"),
        }
    }
}

/// Tools and native backend on the same file, both ways, single and
/// redundant.
#[test]
fn round_trip_with_the_native_backend() {
    for redundant in [false, true] {
        let fx = Fixture::new(redundant);
        for tools in [fx.wrapped(), fx.with_arguments()] {
            let native = fx.native();
            assert_eq!(tools.read().unwrap(), native.read().unwrap());

            // The install batch through the tools, read natively.
            tools
                .write(&[
                    ("mender_boot_part", Some("3")),
                    ("mender_boot_part_hex", Some("3")),
                    ("upgrade_available", Some("1")),
                    ("bootcount", Some("0")),
                    ("spaced", Some(" a b=c ")),
                    ("bootdelay", None),
                ])
                .unwrap();
            let mut expected = vars(&defaults());
            expected.remove("bootdelay");
            for (k, v) in [
                ("mender_boot_part", "3"),
                ("mender_boot_part_hex", "3"),
                ("upgrade_available", "1"),
                ("spaced", " a b=c "),
            ] {
                expected.insert(k.into(), v.into());
            }
            assert_eq!(native.read().unwrap(), expected);
            assert_eq!(tools.read().unwrap(), expected);

            // Natively written, read through the tools; a multi-line
            // value comes back whole.
            native
                .write(&[
                    ("upgrade_available", Some("0")),
                    ("script", Some("echo 1\necho 2")),
                ])
                .unwrap();
            expected.insert("upgrade_available".into(), "0".into());
            expected.insert("script".into(), "echo 1\necho 2".into());
            assert_eq!(tools.read().unwrap(), expected);

            // Deletes: None and "" alike; later changes win.
            tools
                .write(&[
                    ("script", Some("")),
                    ("spaced", None),
                    ("x", Some("1")),
                    ("x", None),
                    ("y", None),
                    ("y", Some("2")),
                ])
                .unwrap();
            for k in ["script", "spaced"] {
                expected.remove(k);
            }
            expected.insert("y".into(), "2".into());
            assert_eq!(native.read().unwrap(), expected);
            // Back to the start for the next pair of tools.
            native.create(&vars(&defaults())).unwrap();
        }
    }
}

/// A batch that changes nothing does not run the set tool.
#[test]
fn unchanged_write_does_not_run_the_set_tool() {
    let fx = Fixture::new(false);
    let marker = fx.path("ran");
    let set = fx.script("set", &format!("touch '{}'; exit 1", marker.display()));
    let print = fx.wrapped().print_command().to_string();
    let tools = ToolsEnv::new(&print, path_str(&set));
    tools
        .write(&[
            ("bootcount", Some("0")),
            ("absent", None),
            ("absent", Some("")),
        ])
        .unwrap();
    tools.write(&[]).unwrap();
    assert!(!marker.exists());
    assert!(tools.write(&[("bootcount", Some("1"))]).is_err());
    assert!(marker.exists());
}

/// The set tool gets `-s -` and one `name=value` line per change.
#[test]
fn set_tool_gets_one_script_on_stdin() {
    let fx = Fixture::new(false);
    let log = fx.path("log");
    let set = fx.script(
        "set",
        &format!(
            "echo \"args: $*\" >> '{l}'; cat >> '{l}'; echo end >> '{l}'",
            l = log.display()
        ),
    );
    let print = fx.wrapped().print_command().to_string();
    let tools = ToolsEnv::new(&print, &format!("{} --extra", set.display()));
    tools
        .write(&[
            ("mender_boot_part", Some("3")),
            ("upgrade_available", Some("1")),
            ("bootcount", Some("")),
            ("mender_boot_part", Some("2")),
        ])
        .unwrap();
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "args: --extra -s -\nupgrade_available=1\nbootcount=\nend\n"
    );
}

/// A failing tool: an error naming the command, its exit status and
/// what it said.
#[test]
fn failing_tool_is_a_clear_error() {
    // fw_printenv on an environment with a bad CRC.
    let fx = Fixture::new(false);
    let tools = fx.with_arguments();
    let mut bytes = fs::read(fx.path("env1.img")).unwrap();
    bytes[10] ^= 0xff;
    fs::write(fx.path("env1.img"), &bytes).unwrap();
    let err = tools.read().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BootEnvError::Io { .. }), "{msg}");
    assert!(msg.starts_with("fw_printenv -c "), "{msg}");
    assert!(msg.contains("cannot read the environment"), "{msg}");
    assert!(msg.contains("exit status: "), "{msg}");
    assert!(msg.contains("Cannot read environment"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    // A set tool failing with a lot to say: its first KiB.
    let fx = Fixture::new(false);
    let chatty = fx.script(
        "set",
        "echo 'first line' >&2; head -c 5000 /dev/zero | tr '\\0' e >&2; exit 3",
    );
    let print = fx.wrapped().print_command().to_string();
    let tools = ToolsEnv::new(&print, path_str(&chatty));
    let msg = tools
        .write(&[("bootcount", Some("1"))])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cannot write the environment: exit status: 3: first line; eee"),
        "{msg}"
    );
    assert!(msg.len() < 1024 + 200, "{} bytes", msg.len());
    assert!(msg.contains("-s -"), "{msg}");

    // A tool that is not there.
    let tools = ToolsEnv::new("/nonexistent/printenv -x", "fw_setenv");
    let msg = tools.read().unwrap_err().to_string();
    assert!(
        msg.starts_with("/nonexistent/printenv -x: cannot start: "),
        "{msg}"
    );

    // Killed by a signal.
    let killed = fx.script("killed", "kill -9 $$");
    let msg = ToolsEnv::new(path_str(&killed), "x")
        .read()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("signal: 9"), "{msg}");
}

/// A tool that hangs is killed after the timeout, with the processes it
/// started.
#[test]
fn hanging_tool_is_killed() {
    let fx = Fixture::new(false);
    let pid_file = fx.path("child.pid");
    let hang = fx.script(
        "hang",
        &format!("sleep 60 & echo $! > '{}'; wait", pid_file.display()),
    );
    let tools =
        ToolsEnv::new(path_str(&hang), "fw_setenv").with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = tools.read().unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    let msg = err.to_string();
    assert!(msg.contains("killed"), "{msg}");
    match err {
        BootEnvError::Io { cause, .. } => assert_eq!(cause.kind(), ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
    let pid = fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim();
    // Gone, or a zombie waiting for a reaper.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => break,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('Z') =>
            {
                break;
            }
            Ok(stat) => assert!(Instant::now() < deadline, "sleep still runs: {stat}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `fw_setenv -s -` cannot carry is refused before anything runs.
#[test]
fn unsendable_changes_are_refused() {
    let fx = Fixture::new(false);
    let marker = fx.path("ran");
    let set = fx.script("set", &format!("touch '{}'", marker.display()));
    let print = fx.wrapped().print_command().to_string();
    let tools = ToolsEnv::new(&print, path_str(&set));
    let err = tools.write(&[("a", Some("1\n2"))]).unwrap_err();
    assert!(matches!(err, BootEnvError::Unsupported { .. }), "{err}");
    for bad in ["#a", "a b", "a=b", ""] {
        assert!(
            matches!(
                tools.write(&[(bad, Some("1"))]),
                Err(BootEnvError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        tools.write(&[("a", Some("x\0"))]),
        Err(BootEnvError::InvalidValue { .. })
    ));
    assert!(!marker.exists());
    // And there is no create.
    assert!(matches!(
        tools.create(&vars(&[("a", "1")])),
        Err(BootEnvError::Unsupported { .. })
    ));
}

/// `bootenv::open` with `BootEnvType = tools` runs the configured tools,
/// or fw_printenv/fw_setenv.
#[test]
fn open_by_configuration() {
    let fx = Fixture::new(false);
    let c = fx.config();
    let text = format!(
        "{{\"BootEnvType\": \"tools\", \
          \"BootUtilitiesGetNextActivePart\": \"fw_printenv -c {c}\", \
          \"BootUtilitiesSetActivePart\": \"fw_setenv -c {c}\"}}",
        c = c.display()
    );
    let config = mender_rs::config::Config::from_str("test", &text, false, fx.tmp.path()).unwrap();
    let env = mender_rs::bootenv::open(&config).unwrap();
    assert_eq!(env.read().unwrap(), vars(&defaults()));
    env.write(&[("upgrade_available", Some("1"))]).unwrap();
    assert_eq!(fx.native().read().unwrap()["upgrade_available"], "1");

    let config = mender_rs::config::Config::from_str(
        "test",
        "{\"BootEnvType\": \"tools\"}",
        false,
        fx.tmp.path(),
    )
    .unwrap();
    let env = mender_rs::bootenv::open(&config).unwrap();
    assert_eq!(env.describe(), "tools fw_printenv / fw_setenv");
}
