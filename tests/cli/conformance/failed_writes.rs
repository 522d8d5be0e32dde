//! Failed writes leave nothing behind.

use super::*;

#[test]
fn failed_writes_leave_nothing() {
    let work = Work::new();
    let keys = work.keys();
    let inputs = work.path("inputs");
    fs::create_dir_all(&inputs).unwrap();
    let good = inputs.join("good.img");
    fs::write(&good, pseudo_random("good", 100 << 10)).unwrap();
    let missing = inputs.join("missing.img");
    let bad_script = inputs.join("Download_Enter_01");
    fs::write(&bad_script, "#!/bin/sh\nexit 0\n").unwrap();
    let good_script = inputs.join("ArtifactInstall_Enter_01");
    fs::write(&good_script, "#!/bin/sh\nexit 0\n").unwrap();
    let missing_key = inputs.join("missing.key");

    let attempts: Vec<(&str, Vec<OsString>)> = vec![
        (
            "rootfs-image, missing -f",
            vec!["rootfs-image".into(), "-f".into(), os(&missing)],
        ),
        (
            "rootfs-image, missing -f, signed, xz",
            vec![
                "rootfs-image".into(),
                "-f".into(),
                os(&missing),
                "-k".into(),
                os(&keys.path("rsa.key")),
                "--compression".into(),
                "xz".into(),
            ],
        ),
        (
            "module-image, second -f missing",
            vec![
                "module-image".into(),
                "-T".into(),
                "t".into(),
                "-f".into(),
                os(&good),
                "-f".into(),
                os(&missing),
            ],
        ),
        (
            "rootfs-image, Download_Enter_01 script",
            vec![
                "rootfs-image".into(),
                "-f".into(),
                os(&good),
                "-s".into(),
                os(&good_script),
                "-s".into(),
                os(&bad_script),
            ],
        ),
        (
            "module-image, Download_Enter_01 script, zstd, signed",
            vec![
                "module-image".into(),
                "-T".into(),
                "t".into(),
                "-f".into(),
                os(&good),
                "-s".into(),
                os(&bad_script),
                "-k".into(),
                os(&keys.path("ec.key")),
                "--compression".into(),
                "zstd".into(),
            ],
        ),
        (
            "module-image, missing script",
            vec![
                "module-image".into(),
                "-T".into(),
                "t".into(),
                "-s".into(),
                os(&inputs.join("ArtifactCommit_Leave_01")),
            ],
        ),
        (
            "rootfs-image, missing key",
            vec![
                "rootfs-image".into(),
                "-f".into(),
                os(&good),
                "-k".into(),
                os(&missing_key),
            ],
        ),
    ];
    for (i, (what, specific)) in attempts.into_iter().enumerate() {
        let out_dir = work.path(&format!("out-{i}"));
        fs::create_dir_all(&out_dir).unwrap();
        let output = out_dir.join("artifact.mender");
        let mut args: Vec<OsString> = vec!["write".into()];
        args.extend(specific);
        args.extend([
            "-t".into(),
            "dev".into(),
            "-n".into(),
            "n".into(),
            "-o".into(),
            os(&output),
        ]);
        let out = ours(&args);
        assert_fails(&out, &format!("{what}: mender-rs artifact {args:?}"));
        assert!(
            !out.stderr.is_empty(),
            "{what}: a failed write should say why"
        );
        assert_eq!(
            list_dir(&out_dir),
            Vec::<String>::new(),
            "{what}: the output directory must stay empty"
        );
    }
    // mender-artifact refuses the script name too.
    let out_dir = work.path("out-reference");
    fs::create_dir_all(&out_dir).unwrap();
    assert_fails(
        &reference([
            OsString::from("write"),
            "rootfs-image".into(),
            "-t".into(),
            "dev".into(),
            "-n".into(),
            "n".into(),
            "-f".into(),
            os(&good),
            "-s".into(),
            os(&bad_script),
            "-o".into(),
            os(&out_dir.join("artifact.mender")),
        ]),
        "mender-artifact write with Download_Enter_01",
    );
}
