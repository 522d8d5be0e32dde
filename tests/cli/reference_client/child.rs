//! Child processes, always bounded.

use super::*;

pub(super) struct Ran {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// Runs `cmd` with no input; kills its process group if it outlives
/// `timeout` (and then fails the test).
pub(super) fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .process_group(0);
    let what = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let group = child.id() as libc::pid_t;
            // The process group this test created.
            let _ = mender_rs::sys::kill(-group, libc::SIGKILL);
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |f: &mut fs::File| {
        use std::io::Seek;
        let mut s = String::new();
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.read_to_string(&mut s).expect("read output");
        s
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// Runs a helper tool and fails the test unless it succeeds.
pub(super) fn tool(program: &str, args: &[&str]) -> String {
    let ran = run(Command::new(program).args(args), TOOL_TIMEOUT);
    assert!(
        ran.code == 0,
        "`{program} {}` failed (exit {}): {}{}",
        args.join(" "),
        ran.code,
        ran.stdout,
        ran.stderr
    );
    ran.stdout
}

pub(super) fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub(super) fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
