//! Ours -> reference: what `mender-rs artifact write` writes, `mender-
//! artifact` validates and reads the same.

use super::*;

/// We write `case`; mender-artifact must validate it (with the key) and read
/// back what the options asked for; so must our own reader. zstd artifacts
/// are checked with tar/zstd/sha256sum instead of mender-artifact.
pub(super) fn check_our_artifact(work: &Work, keys: &Keys, case: &Case) {
    let label = case.label;
    let inputs = work.materialize(case);
    let art = work.path(&format!("{label}.ours.mender"));
    let args = write_args(case, &inputs, keys, &art, Tool::Ours);
    assert_ok(
        &ours(&args),
        &format!("{label}: mender-rs artifact {args:?}"),
    );

    let public = case.signer.public(keys);
    let want = expected(case, &inputs, case.signer.expected_state());
    let (json, ok) = our_read(&art, public.as_slice());
    assert!(ok, "{label}: our read --json failed: {json}");
    assert_eq!(
        summary_from_ours(&json),
        want,
        "{label}: our read vs the options"
    );

    if case.is_zstd() {
        check_zstd_members(work, case, &inputs, &art, &json);
        return;
    }
    assert_ok(
        &reference_validate(&art, &public),
        &format!("{label}: mender-artifact validate"),
    );
    assert_eq!(
        reference_read(&art, &public),
        want,
        "{label}: mender-artifact read vs the options"
    );
    if public.is_some() {
        for wrong in case.signer.wrong_publics(keys) {
            assert_fails(
                &reference_validate(&art, &Some(wrong.clone())),
                &format!("{label}: mender-artifact validate -k {}", wrong.display()),
            );
        }
        assert_eq!(reference_read(&art, &None).signature, Sig::Unverified);
    }
}

/// Takes a zstd artifact apart with the system tools.
fn check_zstd_members(work: &Work, case: &Case, inputs: &Inputs, art: &Path, ours_json: &Value) {
    let label = case.label;
    let base = work.path(&format!("{label}.unpacked"));
    let (outer, header) = (base.join("outer"), base.join("header"));
    // Payload files go where the manifest names them: data/0000/NAME.
    let data = outer.join("data").join("0000");
    for d in [&outer, &data, &header] {
        fs::create_dir_all(d).unwrap();
    }

    let listing = run("tar", [OsString::from("-tf"), os(art)]);
    assert_ok(&listing, &format!("{label}: tar -tf"));
    let mut want_members = vec!["version", "manifest"];
    if case.signer != Signer::Unsigned {
        want_members.push("manifest.sig");
    }
    want_members.extend(["header.tar.zst", "data/0000.tar.zst"]);
    assert_eq!(
        stdout(&listing).lines().collect::<Vec<_>>(),
        want_members,
        "{label}: members of the outer tar"
    );
    assert_ok(
        &run(
            "tar",
            [OsString::from("-xf"), os(art), "-C".into(), os(&outer)],
        ),
        &format!("{label}: tar -xf"),
    );
    let version: Value = serde_json::from_slice(&fs::read(outer.join("version")).unwrap()).unwrap();
    assert_eq!(
        version,
        json!({"format": "mender", "version": 3}),
        "{label}"
    );

    // Payload files: extracted by tar's zstd support, hashed by sha256sum.
    assert_ok(
        &run(
            "tar",
            [
                OsString::from("--zstd"),
                "-xf".into(),
                os(&outer.join("data/0000.tar.zst")),
                "-C".into(),
                os(&data),
            ],
        ),
        &format!("{label}: tar --zstd -xf data/0000.tar.zst"),
    );
    let mut want_names: Vec<String> = case.files.iter().map(|(n, _)| n.to_string()).collect();
    want_names.sort();
    assert_eq!(list_dir(&data), want_names, "{label}: payload files");
    for input in &inputs.files {
        let name = input.file_name().unwrap();
        let out = run("sha256sum", [os(&data.join(name))]);
        assert_ok(&out, "sha256sum");
        let got = stdout(&out).split_whitespace().next().unwrap().to_string();
        assert_eq!(got, file_info(input).sha256, "{label}: {name:?} checksum");
    }

    // The manifest lists version, header and every payload file, and its
    // checksums hold, as sha256sum sees them.
    let manifest = fs::read_to_string(outer.join("manifest")).unwrap();
    let mut listed: Vec<String> = manifest
        .lines()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .expect("manifest line")
                .to_string()
        })
        .collect();
    listed.sort();
    let mut want_listed: Vec<String> = case
        .files
        .iter()
        .map(|(n, _)| format!("data/0000/{n}"))
        .chain(["header.tar.zst".to_string(), "version".to_string()])
        .collect();
    want_listed.sort();
    assert_eq!(listed, want_listed, "{label}: manifest entries");
    let check = run_in(&outer, "sha256sum", ["--strict", "-c", "manifest"]);
    assert_ok(&check, &format!("{label}: sha256sum -c manifest"));

    // Header: decompressed by the zstd command, unpacked by tar.
    let header_tar = base.join("header.tar");
    assert_ok(
        &run(
            "zstd",
            [
                OsString::from("-q"),
                "-d".into(),
                os(&outer.join("header.tar.zst")),
                "-o".into(),
                os(&header_tar),
            ],
        ),
        &format!("{label}: zstd -d header.tar.zst"),
    );
    assert_ok(
        &run(
            "tar",
            [
                OsString::from("-xf"),
                os(&header_tar),
                "-C".into(),
                os(&header),
            ],
        ),
        &format!("{label}: tar -xf header.tar"),
    );
    let header_info: Value =
        serde_json::from_slice(&fs::read(header.join("header-info")).unwrap()).unwrap();
    let ty = case.module_type.unwrap_or("rootfs-image");
    assert_eq!(
        header_info["payloads"],
        json!([{"type": ty}]),
        "{label}: {header_info}"
    );
    assert_eq!(
        header_info["artifact_provides"], ours_json["provides"],
        "{label}: header-info provides"
    );
    assert_eq!(
        header_info["artifact_depends"], ours_json["depends"],
        "{label}: header-info depends"
    );
    assert_eq!(
        header_info["artifact_provides"]["artifact_name"],
        json!(case.name)
    );
    assert_eq!(
        header_info["artifact_provides"]
            .get("artifact_group")
            .and_then(Value::as_str),
        case.group,
        "{label}: header-info artifact_group"
    );
    assert_eq!(
        string_list(
            &header_info["artifact_depends"]["device_type"],
            "device_type"
        ),
        case.devices,
        "{label}"
    );
    assert_eq!(
        string_list(
            &header_info["artifact_depends"]["artifact_name"],
            "artifact_name"
        ),
        case.name_depends,
        "{label}"
    );
    assert_eq!(
        string_list(
            &header_info["artifact_depends"]["artifact_group"],
            "artifact_group"
        ),
        case.depends_groups,
        "{label}"
    );

    let type_info: Value =
        serde_json::from_slice(&fs::read(header.join("headers/0000/type-info")).unwrap()).unwrap();
    let payload = &ours_json["payloads"][0];
    assert_eq!(
        type_info["artifact_provides"], payload["provides"],
        "{label}: type-info"
    );
    assert_eq!(
        type_info
            .get("clears_artifact_provides")
            .cloned()
            .unwrap_or(Value::Null),
        payload["clears_provides"],
        "{label}: type-info"
    );
    if case.module_type.is_some() {
        assert_eq!(type_info["type"], json!(ty), "{label}: type-info type");
    }

    let mut want_scripts: Vec<String> = case.scripts.iter().map(|s| s.to_string()).collect();
    want_scripts.sort();
    let scripts_dir = header.join("scripts");
    let got_scripts = if scripts_dir.exists() {
        list_dir(&scripts_dir)
    } else {
        vec![]
    };
    assert_eq!(got_scripts, want_scripts, "{label}: scripts in the header");
    for (path, name) in inputs.scripts.iter().zip(&case.scripts) {
        assert_eq!(
            fs::read(scripts_dir.join(name)).unwrap(),
            fs::read(path).unwrap(),
            "{label}: script {name}"
        );
    }
    if let Some(meta) = &case.meta {
        let got: Value =
            serde_json::from_slice(&fs::read(header.join("headers/0000/meta-data")).unwrap())
                .unwrap();
        assert_eq!(&got, meta, "{label}: meta-data");
    }
}

#[test]
fn our_rootfs_images_pass_reference() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case::rootfs("plain", 64 << 10),
        Case {
            compression: Some("gzip"),
            signer: Signer::Rsa,
            devices: vec!["beaglebone", "qemux86-64"],
            scripts: vec![
                "ArtifactInstall_Enter_01",
                "ArtifactCommit_Leave_50_x",
                "ArtifactFailure_Error_99",
            ],
            provides: vec![("custom.key", "custom-value"), ("other", "x:y")],
            depends: vec![("board.rev", "3"), ("bootloader", "u-boot")],
            clears: vec!["custom.*", "old_thing"],
            group: Some("production"),
            depends_groups: vec!["staging", "beta"],
            name_depends: vec!["release-0", "release-0.9"],
            ..Case::rootfs("gzip-rsa-everything", 300 << 10)
        },
        Case {
            compression: Some("lzma"),
            compression_first: true,
            signer: Signer::Ec,
            scripts: vec!["ArtifactReboot_Leave_10"],
            group: Some("fleet-a"),
            name_depends: vec!["release-0"],
            ..Case::rootfs("lzma-ec", 200 << 10)
        },
        Case {
            compression: Some("xz"),
            signer: Signer::Rsa8,
            ..Case::rootfs("xz-rsa-pkcs8", 100 << 10)
        },
        Case {
            compression: Some("gzip"),
            compression_first: true,
            signer: Signer::Ec8,
            depends_groups: vec!["only-group"],
            ..Case::rootfs("gzip-ec-pkcs8", 30 << 10)
        },
        Case {
            compression: Some("none"),
            signer: Signer::Ec,
            ..Case::rootfs("none-ec", 10 << 10)
        },
    ];
    for case in &cases {
        check_our_artifact(&work, &keys, case);
    }
}

#[test]
fn our_module_images_pass_reference() {
    let work = Work::new();
    let keys = work.keys();
    let mut cases = module_cases();
    cases.extend([
        Case {
            signer: Signer::Ec8,
            group: Some("g1"),
            depends_groups: vec!["g0", "g-1"],
            name_depends: vec!["a", "b", "c"],
            clears: vec!["x.*"],
            scripts: vec!["ArtifactCommit_Enter_10"],
            ..Case::module("no-files-ec-pkcs8", "script", vec![])
        },
        Case {
            compression: Some("lzma"),
            signer: Signer::Rsa8,
            devices: vec!["dev-a", "dev-b", "dev-c"],
            scripts: vec![
                "ArtifactInstall_Enter_01",
                "ArtifactCommit_Leave_50_x",
                "ArtifactRollbackReboot_Error_02",
            ],
            provides: vec![("data.version", "42")],
            depends: vec![("rootfs-image.version", "release-1")],
            clears: vec!["data.*"],
            group: Some("grp"),
            depends_groups: vec!["grp-old"],
            name_depends: vec!["module-release-6"],
            meta: Some(flat_meta()),
            ..Case::module(
                "three-files-lzma-rsa-pkcs8-everything",
                "data-update",
                vec![("first.img", 120 << 10), ("zero.img", 0), ("third.img", 7)],
            )
        },
        // A repeated -d key: we write a list (any of the values), which
        // mender-artifact reads back as such.
        Case {
            compression: Some("gzip"),
            depends: vec![("hw.rev", "1"), ("hw.rev", "2"), ("fw", "x")],
            ..Case::module("repeated-depends", "multi", vec![("z", 0), ("y", 9000)])
        },
    ]);
    for case in &cases {
        check_our_artifact(&work, &keys, case);
    }
}

#[test]
fn our_zstd_artifacts_unpack_with_system_tools() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case {
            compression: Some("zstd"),
            ..Case::rootfs("zstd-rootfs", 300 << 10)
        },
        Case {
            compression: Some("zstd"),
            compression_first: true,
            signer: Signer::Rsa8,
            scripts: vec!["ArtifactInstall_Enter_01", "ArtifactCommit_Leave_50_x"],
            provides: vec![("p.one", "1")],
            depends: vec![("d.one", "1")],
            clears: vec!["p.*"],
            group: Some("zgroup"),
            depends_groups: vec!["zg1", "zg2"],
            name_depends: vec!["older"],
            meta: Some(flat_meta()),
            ..Case::module(
                "zstd-three-files-rsa-pkcs8",
                "zfiles",
                vec![("one", 40 << 10), ("two", 0), ("three", 5000)],
            )
        },
        Case {
            compression: Some("zstd"),
            signer: Signer::Ec,
            ..Case::module("zstd-no-files-ec", "znone", vec![])
        },
        Case {
            compression: Some("zstd"),
            signer: Signer::Rsa,
            scripts: vec!["ArtifactFailure_Enter_33"],
            group: Some("g"),
            ..Case::rootfs("zstd-rootfs-rsa", 20 << 10)
        },
    ];
    for case in &cases {
        check_our_artifact(&work, &keys, case);
    }
}

#[test]
fn our_sign_command_produces_signatures_reference_accepts() {
    let work = Work::new();
    let keys = work.keys();

    // An unsigned artifact of ours, signed into a new file.
    let case = Case {
        compression: Some("gzip"),
        scripts: vec!["ArtifactInstall_Enter_01"],
        ..Case::module("to-sign", "signme", vec![("a", 3000), ("b", 0)])
    };
    let inputs = work.materialize(&case);
    let unsigned = work.path("unsigned.mender");
    assert_ok(
        &ours(write_args(&case, &inputs, &keys, &unsigned, Tool::Ours)),
        "write unsigned",
    );
    let signed = work.path("signed-rsa.mender");
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&unsigned),
            "-k".into(),
            os(&keys.path("rsa.key")),
            "-o".into(),
            os(&signed),
        ]),
        "sign -o",
    );
    let rsa_pub = Some(keys.path("rsa.pub"));
    let ec_pub = Some(keys.path("ec.pub"));
    assert_ok(
        &reference_validate(&signed, &rsa_pub),
        "mender-artifact validate of our signed copy",
    );
    assert_eq!(
        reference_read(&signed, &rsa_pub),
        expected(&case, &inputs, Sig::Verified)
    );
    let (json, _) = our_read(&unsigned, &[]);
    assert_eq!(
        json["signature"], "none",
        "sign -o must leave the input alone"
    );
    assert_fails(
        &reference_validate(&unsigned, &rsa_pub),
        "the input is still unsigned",
    );

    // Re-signing needs -f; without it nothing is written.
    let resigned = work.path("resigned-ec.mender");
    let resign = |force: bool| {
        let mut args = vec![
            OsString::from("sign"),
            os(&signed),
            "-k".into(),
            os(&keys.path("ec.key")),
            "-o".into(),
            os(&resigned),
        ];
        if force {
            args.push("-f".into());
        }
        ours(args)
    };
    assert_fails(&resign(false), "sign of a signed artifact without -f");
    assert!(!resigned.exists(), "a refused sign must not write output");
    assert_ok(&resign(true), "sign -f");
    assert_ok(
        &reference_validate(&resigned, &ec_pub),
        "validate re-signed",
    );
    assert_fails(
        &reference_validate(&resigned, &rsa_pub),
        "the old key no longer verifies",
    );

    // A mender-artifact artifact signed in place, with a PKCS#8 EC key.
    let case = Case {
        compression: Some("lzma"),
        group: Some("signed-later"),
        ..Case::rootfs("reference-to-sign", 50 << 10)
    };
    let inputs = work.materialize(&case);
    let art = work.path("reference-unsigned.mender");
    assert_ok(
        &reference(write_args(&case, &inputs, &keys, &art, Tool::Reference)),
        "mender-artifact write",
    );
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&art),
            "-k".into(),
            os(&keys.path("ec8.key")),
        ]),
        "sign in place",
    );
    assert_ok(
        &reference_validate(&art, &ec_pub),
        "mender-artifact validate after in-place sign",
    );
    assert_eq!(
        reference_read(&art, &ec_pub),
        expected(&case, &inputs, Sig::Verified)
    );

    // A mender-artifact signed artifact, re-signed by us with another kind of key.
    let case = Case {
        signer: Signer::Rsa,
        ..Case::module("reference-signed", "resign", vec![("f", 100)])
    };
    let inputs = work.materialize(&case);
    let art = work.path("reference-signed.mender");
    assert_ok(
        &reference(write_args(&case, &inputs, &keys, &art, Tool::Reference)),
        "mender-artifact write -k",
    );
    let out = work.path("reference-resigned.mender");
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&art),
            "-k".into(),
            os(&keys.path("ec.key")),
            "-o".into(),
            os(&out),
            "-f".into(),
        ]),
        "sign -f of a reference-signed artifact",
    );
    assert_ok(
        &reference_validate(&out, &ec_pub),
        "validate with the new key",
    );
    assert_eq!(
        reference_read(&out, &ec_pub),
        expected(&case, &inputs, Sig::Verified)
    );

    // zstd: signed by us, verified by us.
    let case = Case {
        compression: Some("zstd"),
        ..Case::module("zstd-to-sign", "z", vec![("f", 2000)])
    };
    let inputs = work.materialize(&case);
    let art = work.path("zstd-unsigned.mender");
    assert_ok(
        &ours(write_args(&case, &inputs, &keys, &art, Tool::Ours)),
        "write zstd",
    );
    assert_ok(
        &ours([
            OsString::from("sign"),
            os(&art),
            "-k".into(),
            os(&keys.path("rsa8.key")),
        ]),
        "sign zstd",
    );
    let (json, ok) = our_read(&art, rsa_pub.as_slice());
    assert!(ok, "{json}");
    assert_eq!(
        summary_from_ours(&json),
        expected(&case, &inputs, Sig::Verified)
    );
    assert_ok(&our_validate(&art, rsa_pub.as_slice()), "validate zstd");
    assert_fails(
        &our_validate(&art, ec_pub.as_slice()),
        "validate zstd, wrong key",
    );
}
