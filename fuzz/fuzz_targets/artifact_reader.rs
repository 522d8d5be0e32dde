//! Feeds arbitrary bytes to the streaming artifact reader, three ways: with
//! no verification key, with one fixed P-256 key (signatures enforced), and
//! with that key but the `Report` policy (a bad signature does not stop the
//! read). A panic anywhere is a crash; so is a broken handler protocol: a
//! payload byte before the header, `write` outside a file, `abort` not
//! called exactly once on error (or called on success), or an error whose
//! message is empty.
//!
//! Set `FUZZ_STRICT_MESSAGES=1` to also treat a multi-line error message as
//! a crash.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mender_rs::artifact::ArtifactError;
use mender_rs::artifact::header::ArtifactHeader;
use mender_rs::artifact::reader::{
    ArtifactHandler, ReadOptions, SignaturePolicy, SignatureState, read_artifact,
};
use mender_rs::artifact::signature::VerifyKey;

/// The public half of the P-256 key `fuzz/seed-key.pem`, which signs the
/// signed seeds, so that the fuzzer starts from artifacts this key verifies.
const FUZZ_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAES6JdwItN/9osSIUwH/eoQ3WKKzjF
bnoK3tcjW6ZJbYxkqam73xKWkkKd0hjzHnpTeHwsDWj830ohQs6auMcU+g==
-----END PUBLIC KEY-----
";

static KEYS: LazyLock<Vec<VerifyKey>> = LazyLock::new(|| {
    vec![VerifyKey::from_pem(FUZZ_PUBLIC_KEY.as_bytes()).expect("the embedded key parses")]
});

static STRICT_MESSAGES: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("FUZZ_STRICT_MESSAGES").is_some_and(|v| v != "0"));

/// Checks the order of the handler calls as they happen.
#[derive(Default)]
struct Checker {
    headers: usize,
    in_file: bool,
    files_ended: usize,
    aborts: usize,
}

impl ArtifactHandler for Checker {
    fn header(&mut self, _header: &ArtifactHeader) -> anyhow::Result<()> {
        assert_eq!(self.headers, 0, "header() called twice");
        self.headers += 1;
        Ok(())
    }

    fn begin_file(&mut self, name: &str, _size: u64) -> anyhow::Result<()> {
        assert_eq!(self.headers, 1, "begin_file({name:?}) before header()");
        assert!(!self.in_file, "begin_file({name:?}) inside another file");
        assert!(
            !name.is_empty() && !name.contains('/') && name != "." && name != "..",
            "begin_file with an unsafe name {name:?}"
        );
        self.in_file = true;
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        assert!(self.in_file, "write of {} bytes outside a file", data.len());
        Ok(())
    }

    fn end_file(&mut self) -> anyhow::Result<()> {
        assert!(self.in_file, "end_file() outside a file");
        self.in_file = false;
        self.files_ended += 1;
        Ok(())
    }

    fn abort(&mut self, _error: &ArtifactError) {
        self.aborts += 1;
    }
}

fn read_once(data: &[u8], keys: &[VerifyKey], policy: SignaturePolicy) {
    let options = ReadOptions {
        verify_keys: keys,
        policy,
    };
    let mut checker = Checker::default();
    match read_artifact(data, &options, &mut checker) {
        Ok(report) => {
            assert_eq!(checker.aborts, 0, "abort() called on success");
            assert_eq!(checker.headers, 1, "success without header()");
            assert!(!checker.in_file, "success with a file left open");
            assert_eq!(
                report.files.len(),
                checker.files_ended,
                "report and end_file() disagree"
            );
            if policy == SignaturePolicy::Enforce && !keys.is_empty() {
                assert_eq!(
                    report.signature,
                    SignatureState::Verified,
                    "accepted without a verified signature although a key is enforced"
                );
            }
        }
        Err(e) => {
            assert_eq!(checker.aborts, 1, "abort() not called exactly once: {e}");
            let message = e.to_string();
            assert!(!message.is_empty(), "empty error message: {e:?}");
            if *STRICT_MESSAGES {
                assert!(!message.contains('\n'), "multi-line message: {message:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    read_once(data, &[], SignaturePolicy::Enforce);
    read_once(data, &KEYS, SignaturePolicy::Enforce);
    read_once(data, &KEYS, SignaturePolicy::Report);
});
