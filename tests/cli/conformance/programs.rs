//! Running the two tools and the programs that take an artifact apart,
//! bounded.

use super::*;

pub(super) fn run<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` must be installed to run these tests: {e}"))
}

pub(super) fn run_in<I, S>(dir: &Path, program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` must be installed to run these tests: {e}"))
}

/// `mender-rs artifact ARGS...`
pub(super) fn ours<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<OsString> = vec!["artifact".into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
    run(OURS, all)
}

/// `mender-artifact ARGS...`
pub(super) fn reference<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(REFERENCE, args)
}

pub(super) fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
pub(super) fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

#[track_caller]
pub(super) fn assert_fails(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what} succeeded but should have failed: {}",
        describe(out)
    );
}

pub(super) fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

pub(super) fn parse_json(out: &Output, what: &str) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {}", describe(out)))
}

pub(super) fn os(p: &Path) -> OsString {
    p.as_os_str().to_os_string()
}
