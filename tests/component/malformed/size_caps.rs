//! Size caps.

use super::*;

#[test]
fn oversized_headers_are_refused() {
    let mut checker = Checker::new("oversized_headers_are_refused");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.ext4");
    std::fs::write(&rootfs, noise(21, 1000)).unwrap();
    let script = dir.path().join("ArtifactInstall_Enter_01_big");
    let line = b"echo 'a state script far larger than any real one'\n";
    let big: Vec<u8> = line.iter().copied().cycle().take(20 << 20).collect();
    std::fs::write(&script, &big).unwrap();
    // Our writer refuses to make such an artifact...
    let spec = ArtifactSpec {
        name: "big-script".into(),
        device_types: vec!["qemux86-64".into()],
        payload_type: Some("rootfs-image".into()),
        files: vec![rootfs.clone()],
        scripts: vec![script.clone()],
        compression: Some(Compression::Gzip),
        ..Default::default()
    };
    let out = dir.path().join("big.mender");
    let err = write_artifact(&spec, None, &out).unwrap_err().to_string();
    assert!(err.contains("header"), "{err}");
    assert!(!out.exists());
    // ... so build them by hand from good ones, with a consistent manifest.
    for label in ["rootfs-gzip", "rootfs-none-ec", "module-zstd"] {
        let good = good(label);
        let mut parts = Parts::of(good);
        let mut entries = parts.header_entries();
        entries.insert(
            1,
            Entry::file("scripts/ArtifactInstall_Enter_01_big", big.clone()),
        );
        parts.set_header(&entries);
        parts.reseal();
        let header = parts.header_name.clone();
        checker.reject(
            format!("20 MiB script, {label}"),
            &parts.bytes(),
            &good.keys(),
            &[&header],
        );
    }
    checker.finish();
}
