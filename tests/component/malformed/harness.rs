//! Running the reader on an input and gathering what it violated.

use super::*;

/// Records every handler call and checks their order as they come.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) headers: usize,
    pub(super) begins: usize,
    pub(super) writes: usize,
    pub(super) bytes: u64,
    pub(super) ends: usize,
    pub(super) aborts: usize,
    pub(super) abort_message: Option<String>,
    pub(super) files: Vec<(String, u64, Vec<u8>)>,
    pub(super) in_file: bool,
    pub(super) protocol: Vec<String>,
}

impl ArtifactHandler for Recorder {
    fn header(&mut self, _header: &ArtifactHeader) -> anyhow::Result<()> {
        if self.headers > 0 || self.begins > 0 {
            self.protocol.push("header() called late or twice".into());
        }
        self.headers += 1;
        Ok(())
    }

    fn begin_file(&mut self, name: &str, size: u64) -> anyhow::Result<()> {
        if self.in_file {
            self.protocol
                .push(format!("begin_file({name}) inside a file"));
        }
        self.in_file = true;
        self.begins += 1;
        self.files.push((name.to_string(), size, Vec::new()));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        if !self.in_file {
            self.protocol.push("write() outside a file".into());
        }
        self.writes += 1;
        self.bytes += data.len() as u64;
        if let Some(f) = self.files.last_mut() {
            f.2.extend_from_slice(data);
        }
        Ok(())
    }

    fn end_file(&mut self) -> anyhow::Result<()> {
        if !self.in_file {
            self.protocol.push("end_file() outside a file".into());
        }
        self.in_file = false;
        self.ends += 1;
        if let Some((name, size, data)) = self.files.last()
            && *size != data.len() as u64
        {
            self.protocol.push(format!(
                "end_file({name}) after {} of {size} bytes",
                data.len()
            ));
        }
        Ok(())
    }

    fn abort(&mut self, error: &ArtifactError) {
        self.aborts += 1;
        self.abort_message = Some(error.to_string());
    }
}

pub(super) type Outcome = (Result<ReadReport, ArtifactError>, Recorder);

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Reads `bytes` with `keys` enforced; Err(panic message) if the reader
/// panicked.
pub(super) fn run(bytes: &[u8], keys: &[VerifyKey]) -> Result<Outcome, String> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        let options = ReadOptions {
            verify_keys: keys,
            policy: SignaturePolicy::Enforce,
            ranges: None,
        };
        let mut recorder = Recorder::default();
        let result = read_artifact(bytes, &options, &mut recorder);
        (result, recorder)
    }))
    .map_err(|p| panic_message(&*p))
}

pub(super) fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(super) fn verbose() -> bool {
    std::env::var_os("MALFORMED_VERBOSE").is_some()
}

/// Runs bad inputs, gathering every violation of the reader's contract.
pub(super) struct Checker {
    pub(super) test: &'static str,
    pub(super) ran: usize,
    pub(super) known_multiline: usize,
    pub(super) failures: Vec<String>,
}

impl Checker {
    pub(super) fn new(test: &'static str) -> Checker {
        Checker {
            test,
            ran: 0,
            known_multiline: 0,
            failures: Vec::new(),
        }
    }

    /// `bytes` must be refused; the message must contain each of `expect`.
    /// Returns the message.
    pub(super) fn reject(
        &mut self,
        label: impl Display,
        bytes: &[u8],
        keys: &[VerifyKey],
        expect: &[&str],
    ) -> Option<String> {
        self.check(label, bytes, keys, expect, true)
    }

    /// Like `reject`, but a multi-line message is only counted, not a
    /// failure: for garbage where a tar header should be, whose message is
    /// known to echo raw header bytes (see
    /// `hostile_bytes_keep_messages_on_one_line`).
    pub(super) fn reject_known_multiline(
        &mut self,
        label: impl Display,
        bytes: &[u8],
        keys: &[VerifyKey],
        expect: &[&str],
    ) -> Option<String> {
        self.check(label, bytes, keys, expect, false)
    }

    pub(super) fn check(
        &mut self,
        label: impl Display,
        bytes: &[u8],
        keys: &[VerifyKey],
        expect: &[&str],
        one_line: bool,
    ) -> Option<String> {
        self.ran += 1;
        let (result, rec) = match run(bytes, keys) {
            Ok(outcome) => outcome,
            Err(panic) => {
                self.failures.push(format!("{label}: PANIC: {panic}"));
                return None;
            }
        };
        let error = match result {
            Ok(report) => {
                self.failures.push(format!(
                    "{label}: accepted (artifact '{}', {} files, signature {})",
                    report.header.name,
                    report.files.len(),
                    report.signature.as_str()
                ));
                return None;
            }
            Err(e) => e,
        };
        let message = error.to_string();
        if verbose() {
            eprintln!("[{}] {label}: {message}", self.test);
        }
        let mut failures = Vec::new();
        let mut fail = |why: String| failures.push(format!("{label}: {why}"));
        if message.trim().is_empty() {
            fail(format!("empty message ({error:?})"));
        }
        if message.contains('\n') || message.contains('\r') {
            if one_line {
                fail(format!("message is not one line: {message:?}"));
            } else {
                self.known_multiline += 1;
            }
        }
        if rec.aborts != 1 {
            fail(format!("abort() called {} times ({message})", rec.aborts));
        } else if rec.abort_message.as_deref() != Some(message.as_str()) {
            fail(format!(
                "abort() saw {:?}, the caller got {message:?}",
                rec.abort_message
            ));
        }
        if rec.headers == 0 && (rec.begins > 0 || rec.writes > 0 || rec.bytes > 0) {
            fail(format!(
                "{} payload bytes in {} files reached the handler before the header ({message})",
                rec.bytes, rec.begins
            ));
        }
        for p in &rec.protocol {
            fail(format!("handler protocol: {p} ({message})"));
        }
        for want in expect {
            if !message.contains(want) {
                fail(format!("message {message:?} does not mention {want:?}"));
            }
        }
        self.failures.extend(failures);
        Some(message)
    }

    pub(super) fn finish(self) {
        println!(
            "{}: {} malformed inputs refused ({} with a known multi-line message)",
            self.test, self.ran, self.known_multiline
        );
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(60).map(String::as_str).collect();
            panic!(
                "{}: {} of {} inputs violated the contract:\n  {}{}",
                self.test,
                self.failures.len(),
                self.ran,
                shown.join("\n  "),
                if self.failures.len() > shown.len() {
                    "\n  ..."
                } else {
                    ""
                }
            );
        }
    }
}

/// Reads a good input and returns the outcome; panics with context if the
/// reader panics or refuses it.
pub(super) fn accept(label: &str, bytes: &[u8], keys: &[VerifyKey]) -> (ReadReport, Recorder) {
    let (result, rec) = run(bytes, keys).unwrap_or_else(|p| panic!("{label}: PANIC: {p}"));
    match result {
        Ok(report) => (report, rec),
        Err(e) => panic!("{label}: refused: {e}"),
    }
}
