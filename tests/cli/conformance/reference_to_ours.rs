//! Reference -> ours: what `mender-artifact` writes, `mender-rs artifact
//! read` reads the same.

use super::*;

/// mender-artifact writes `case`; our `read --json` must agree with
/// `mender-artifact read` and with the options, and our signature checks must
/// accept the right key only.
pub(super) fn check_reference_artifact(work: &Work, keys: &Keys, case: &Case) {
    let label = case.label;
    let inputs = work.materialize(case);
    let art = work.path(&format!("{label}.reference.mender"));
    let args = write_args(case, &inputs, keys, &art, Tool::Reference);
    assert_ok(
        &reference(&args),
        &format!("{label}: mender-artifact {args:?}"),
    );

    let public = case.signer.public(keys);
    let want = expected(case, &inputs, case.signer.expected_state());
    let theirs = reference_read(&art, &public);
    // mender-artifact stores state scripts in no particular order.
    assert_eq!(
        scripts_sorted(&theirs),
        scripts_sorted(&want),
        "{label}: mender-artifact read vs the options"
    );

    let (json, ok) = our_read(&art, public.as_slice());
    assert!(ok, "{label}: our read --json failed: {json}");
    assert_eq!(
        summary_from_ours(&json),
        theirs,
        "{label}: our read --json vs mender-artifact read"
    );
    assert_ok(
        &our_validate(&art, public.as_slice()),
        &format!("{label}: our validate with the right key"),
    );
    assert_ok(
        &our_validate(&art, &[]),
        &format!("{label}: our validate without keys"),
    );

    match &public {
        Some(public) => {
            // No key: signed but unchecked, and not an error for read.
            let (json, ok) = our_read(&art, &[]);
            assert!(ok, "{label}: our read without keys failed: {json}");
            assert_eq!(json["signature"], "unverified", "{label}");
            assert_eq!(reference_read(&art, &None).signature, Sig::Unverified);

            for wrong in case.signer.wrong_publics(keys) {
                let what = format!("{label} with wrong key {}", wrong.display());
                assert_fails(
                    &our_validate(&art, std::slice::from_ref(&wrong)),
                    &format!("{what}: our validate"),
                );
                assert_fails(
                    &reference_validate(&art, &Some(wrong.clone())),
                    &format!("{what}: mender-artifact validate"),
                );
                let (json, ok) = our_read(&art, std::slice::from_ref(&wrong));
                assert!(!ok, "{what}: our read -k succeeded: {json}");
                assert_eq!(json["signature"], "invalid", "{what}: {json}");
                let theirs_wrong = reference_read(&art, &Some(wrong.clone()));
                assert_eq!(theirs_wrong.signature, Sig::Invalid, "{what}");
                assert_eq!(
                    summary_from_ours(&json),
                    theirs_wrong,
                    "{what}: our read vs mender-artifact read"
                );
                // Keys are tried in order: a right one after a wrong one.
                let both = [wrong.clone(), public.clone()];
                assert_ok(
                    &our_validate(&art, &both),
                    &format!("{what}, then the right key"),
                );
                let (json, ok) = our_read(&art, &both);
                assert!(ok, "{what}, then the right key: {json}");
                assert_eq!(json["signature"], "verified", "{what}, then the right key");
            }
        }
        None => {
            for k in [keys.path("rsa.pub"), keys.path("ec.pub")] {
                let what = format!("{label} (unsigned) with key {}", k.display());
                assert_fails(
                    &our_validate(&art, std::slice::from_ref(&k)),
                    &format!("{what}: our validate"),
                );
                assert_fails(
                    &reference_validate(&art, &Some(k.clone())),
                    &format!("{what}: mender-artifact validate"),
                );
                let (json, ok) = our_read(&art, std::slice::from_ref(&k));
                assert!(!ok, "{what}: our read -k succeeded: {json}");
                assert_eq!(json["signature"], "none", "{what}: {json}");
            }
        }
    }
}

#[test]
fn reference_rootfs_images_read_the_same() {
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
            signer: Signer::Ec,
            scripts: vec!["ArtifactReboot_Leave_10"],
            group: Some("fleet-a"),
            name_depends: vec!["release-0"],
            ..Case::rootfs("lzma-ec", 200 << 10)
        },
    ];
    for case in &cases {
        check_reference_artifact(&work, &keys, case);
    }
}

#[test]
fn reference_module_images_read_the_same() {
    let work = Work::new();
    let keys = work.keys();
    let cases = module_cases();
    for case in &cases {
        check_reference_artifact(&work, &keys, case);
    }
}

#[test]
fn reference_module_images_more_combinations_read_the_same() {
    let work = Work::new();
    let keys = work.keys();
    let cases = [
        Case {
            signer: Signer::Ec,
            group: Some("g1"),
            depends_groups: vec!["g0", "g-1"],
            name_depends: vec!["a", "b", "c"],
            clears: vec!["x.*"],
            scripts: vec!["ArtifactCommit_Enter_10"],
            ..Case::module("no-files-ec", "script", vec![])
        },
        Case {
            compression: Some("lzma"),
            signer: Signer::Rsa,
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
                "three-files-lzma-rsa-everything",
                "data-update",
                vec![("first.img", 120 << 10), ("zero.img", 0), ("third.img", 7)],
            )
        },
        Case {
            compression: Some("gzip"),
            ..Case::module("empty-and-data-gzip", "multi", vec![("z", 0), ("y", 9000)])
        },
    ];
    for case in &cases {
        check_reference_artifact(&work, &keys, case);
    }
}
