//! The command line: reader errors as `mender-rs` reports them.

use super::*;

/// Bad artifacts for the command line: (what, bytes, validate with the
/// EcA key, text the error line must contain).
fn cli_cases() -> Vec<(&'static str, Vec<u8>, bool, &'static str)> {
    let rootfs = good("rootfs-gzip");
    let signed = good("rootfs-none-ec");
    let mut cases = Vec::new();
    let end = content_end(&rootfs.bytes);
    cases.push(("truncated", rootfs.bytes[..end / 2].to_vec(), false, ""));
    let mut flipped = rootfs.bytes.clone();
    let data = parse_tar(&rootfs.bytes).pop().unwrap();
    flipped[data.data_pos + data.data.len() / 2] ^= 0xff;
    cases.push(("flipped", flipped, false, "data/0000"));
    let parts = Parts::of(rootfs);
    let mut l = parts.list();
    l.insert(2, ("manifest-augment".into(), parts.manifest.clone()));
    cases.push(("augmented", outer(&l), false, "augmented"));
    let mut p = parts.clone();
    p.version = br#"{"format":"mender","version":1}"#.to_vec();
    p.reseal();
    cases.push(("version 1", p.bytes(), false, "version 1"));
    cases.push((
        "unsigned with a key",
        rootfs.bytes.clone(),
        true,
        "manifest.sig",
    ));
    let mut p = Parts::of(signed);
    p.sig = Parts::of(good("module-gzip-ec")).sig;
    cases.push(("signature swapped", p.bytes(), true, "manifest.sig"));
    cases.push(("empty file", Vec::new(), false, ""));
    cases
}

/// Runs `mender-rs artifact validate FILE [-k KEY]`; returns the output and
/// the file's path.
fn cli_validate(
    dir: &Path,
    what: &str,
    bytes: &[u8],
    with_key: bool,
) -> (std::process::Output, String) {
    let key_file = dir.join("key.pem");
    std::fs::write(&key_file, Key::EcA.pem()).unwrap();
    let path = dir.join(format!("{}.mender", what.replace(' ', "-")));
    std::fs::write(&path, bytes).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mender-rs"));
    cmd.args(["artifact", "validate"]).arg(&path);
    if with_key {
        cmd.arg("-k").arg(&key_file);
    }
    (cmd.output().unwrap(), path.display().to_string())
}

#[test]
fn cli_validate_fails_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cli_cases();
    for (what, bytes, with_key, expect) in &cases {
        let (out, path) = cli_validate(dir.path(), what, bytes, *with_key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("mender-rs: error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "{what}: not one 'mender-rs: error:' line: {stderr:?}"
        );
        assert_eq!(
            stderr.lines().last(),
            Some(errors[0]),
            "{what}: the error line is not the last: {stderr:?}"
        );
        assert!(
            errors[0].contains(&path),
            "{what}: the message does not name the file: {stderr:?}"
        );
        assert!(
            errors[0].contains(expect),
            "{what}: {stderr:?} lacks {expect:?}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr:?}");
        assert!(out.stdout.is_empty(), "{what}: stdout: {:?}", out.stdout);
    }

    // And the good ones pass.
    for (label, with_key) in [("rootfs-gzip", false), ("rootfs-none-ec", true)] {
        let (out, _) = cli_validate(dir.path(), label, &good(label).bytes, with_key);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "cli_validate_fails_with_one_error_line: {} malformed inputs refused",
        cases.len()
    );
}

#[test]

fn cli_validate_stderr_is_only_the_error_line() {
    let dir = tempfile::tempdir().unwrap();
    for (what, bytes, with_key, _) in cli_cases() {
        let (out, _) = cli_validate(dir.path(), what, &bytes, with_key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: stderr is not one line: {stderr:?}");
        assert!(
            lines[0].starts_with("mender-rs: error: "),
            "{what}: {stderr:?}"
        );
    }
}
