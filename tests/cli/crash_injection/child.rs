//! Child processes: run to their end, bounded in time, without core dumps.

use super::*;

/// How a child process ended, with its output.
pub(super) struct Run {
    pub(super) what: String,
    pub(super) code: Option<i32>,
    pub(super) signal: Option<i32>,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Run {
    pub(super) fn aborted_by_injection(&self) -> bool {
        self.signal == Some(libc::SIGABRT) && self.stderr.contains("crash injection: aborting at")
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "`{}` ended with code {:?} signal {:?}; stderr:\n{}",
            self.what,
            self.code,
            self.signal,
            self.stderr.trim_end()
        )
    }

    pub(super) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }
}

/// Core dumps of the aborted children would only slow the test down.
pub(super) fn no_core_dumps() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid, initialised struct; only
        // the soft limit is lowered.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) == 0 {
                limit.rlim_cur = 0;
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
            }
        }
    });
}

pub(super) fn reader_thread(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` to its end, killing it (and failing) after [`CHILD_TIMEOUT`].
pub(super) fn run_child(mut cmd: Command, what: String) -> Run {
    no_core_dumps();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A binary copied a moment ago may still be open for writing in a
    // child another thread forked meanwhile (ETXTBSY): try again.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("starting `{what}`: {e}"),
        }
    };
    let pid = child.id() as libc::pid_t;
    let out = reader_thread(child.stdout.take().unwrap());
    let err = reader_thread(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for `{what}`: {e}")),
        Err(_) => {
            // The child is not reaped yet (its waiter has not returned), so
            // the pid is still ours.
            let _ = mender_rs::sys::kill(pid, libc::SIGKILL);
            panic!("`{what}` did not finish within {CHILD_TIMEOUT:?}");
        }
    };
    // A grandchild holding a pipe open must not hang the test either.
    let text = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        String::from_utf8_lossy(&rx.recv_timeout(left).unwrap_or_default()).into_owned()
    };
    let stdout = text(out);
    let stderr = text(err);
    Run {
        what,
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    }
}

/// `mender-rs artifact write rootfs-image` (build time, not on the device).
pub(super) fn write_artifact(
    bin: &Path,
    name: &str,
    payload: &Path,
    scripts: &[PathBuf],
    out: &Path,
) {
    let mut cmd = Command::new(bin);
    cmd.env_remove(CRASH_VAR)
        .args(["artifact", "--compression", "none", "write", "rootfs-image"])
        .args(["-t", DEVICE_TYPE, "-n", name, "-f"])
        .arg(payload)
        .arg("-o")
        .arg(out);
    for s in scripts {
        cmd.arg("-s").arg(s);
    }
    run_child(cmd, format!("artifact write {name}")).expect_code(0);
}
