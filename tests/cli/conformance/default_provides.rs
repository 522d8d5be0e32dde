//! Default provides and clears_provides, compared with `mender-artifact`.

use super::ours_to_reference::check_our_artifact;
use super::reference_to_ours::check_reference_artifact;
use super::*;

/// Writes the same input with the same options with both tools and returns
/// our `read --json` of each (reference's first), after checking that
/// `mender-artifact read` also sees both the same.
fn both_written(
    work: &Work,
    tag: &str,
    module_type: Option<&str>,
    extra: &[&str],
) -> (Value, Value) {
    let dir = work.path(tag);
    fs::create_dir_all(&dir).unwrap();
    let input = dir.join("payload.img");
    fs::write(&input, pseudo_random(tag, 4096)).unwrap();
    let mut args: Vec<OsString> = vec!["write".into()];
    match module_type {
        None => args.push("rootfs-image".into()),
        Some(t) => args.extend(["module-image".into(), "-T".into(), t.into()]),
    }
    args.extend([
        "-t".into(),
        "dev".into(),
        "-n".into(),
        "name-1".into(),
        "-f".into(),
        os(&input),
    ]);
    args.extend(extra.iter().map(OsString::from));
    let mut views = Vec::new();
    let mut texts = Vec::new();
    for tool in [Tool::Reference, Tool::Ours] {
        let out_path = dir.join(if tool == Tool::Ours {
            "ours.mender"
        } else {
            "reference.mender"
        });
        let mut a = args.clone();
        a.extend(["-o".into(), os(&out_path)]);
        let out = match tool {
            Tool::Ours => ours(&a),
            Tool::Reference => reference(&a),
        };
        assert_ok(&out, &format!("{tag}: write {a:?}"));
        let (json, ok) = our_read(&out_path, &[]);
        assert!(ok, "{tag}: {json}");
        views.push(json);
        texts.push(reference_read(&out_path, &None));
    }
    assert_eq!(
        texts[1], texts[0],
        "{tag}: mender-artifact read, ours (left) vs reference-written (right), options {extra:?}"
    );
    let ours_view = views.pop().unwrap();
    let reference_view = views.pop().unwrap();
    (reference_view, ours_view)
}

#[track_caller]
fn assert_same_defaults(work: &Work, tag: &str, module_type: Option<&str>, extra: &[&str]) {
    let (reference_view, ours_view) = both_written(work, tag, module_type, extra);
    assert_eq!(
        ours_view, reference_view,
        "{tag}: our read --json of ours (left) vs of mender-artifact's (right), options {extra:?}"
    );
}

const SOFTWARE_VARIANTS: &[&[&str]] = &[
    &[],
    &["--software-version", "1.2.3"],
    &["--software-name", "myapp"],
    &["--software-name", "myapp", "--software-version", "2.0"],
    &["--software-filesystem", "myfs"],
    &["--software-filesystem", "myfs", "--software-name", "myapp"],
    &["--software-filesystem", "rootfs-image"],
    &["--no-default-clears-provides"],
    &["--no-default-clears-provides", "--clears-provides", "a.*"],
    &["--software-name", "x", "--no-default-clears-provides"],
    &["--clears-provides", "foo", "--clears-provides", "foo"],
    &["--software-version", "9", "-p", "rootfs-image.version:ov"],
    &[
        "-p",
        "custom:1",
        "--software-filesystem",
        "fs2",
        "--software-version",
        "v2",
    ],
];

#[test]
fn default_provides_match_reference_for_rootfs_images() {
    let work = Work::new();
    let (reference_view, ours_view) = both_written(&work, "rootfs-defaults", None, &[]);
    assert_eq!(ours_view, reference_view);
    let payload = &ours_view["payloads"][0];
    let sha = payload["files"][0]["sha256"].clone();
    assert_eq!(
        payload["provides"],
        json!({"rootfs-image.checksum": sha, "rootfs-image.version": "name-1"})
    );
    assert_eq!(
        payload["clears_provides"],
        json!(["artifact_group", "rootfs_image_checksum", "rootfs-image.*"])
    );

    for (i, extra) in SOFTWARE_VARIANTS.iter().enumerate() {
        assert_same_defaults(&work, &format!("rootfs-{i}"), None, extra);
    }
    for (i, extra) in [
        &["--no-checksum-provide"][..],
        &["--no-checksum-provide", "--software-name", "n"],
        &["--no-default-clears-provides", "--no-checksum-provide"],
    ]
    .iter()
    .enumerate()
    {
        assert_same_defaults(&work, &format!("rootfs-only-{i}"), None, extra);
    }
}

#[test]
fn default_provides_match_reference_for_module_images() {
    let work = Work::new();
    let (reference_view, ours_view) = both_written(&work, "module-defaults", Some("mymod"), &[]);
    assert_eq!(ours_view, reference_view);
    let payload = &ours_view["payloads"][0];
    assert_eq!(
        payload["provides"],
        json!({"rootfs-image.mymod.version": "name-1"})
    );
    assert_eq!(payload["clears_provides"], json!(["rootfs-image.mymod.*"]));

    for (i, extra) in SOFTWARE_VARIANTS.iter().enumerate() {
        assert_same_defaults(&work, &format!("module-{i}"), Some("mymod"), extra);
    }
    assert_same_defaults(
        &work,
        "module-p-after",
        Some("mymod"),
        &[
            "--software-version",
            "9",
            "-p",
            "rootfs-image.mymod.version:ov",
        ],
    );
}

// Divergences from mender-artifact 3.9 found by the comparison above; each is
// one precise case.

#[test]

fn no_default_software_version_drops_default_clears_provides() {
    let work = Work::new();
    assert_same_defaults(&work, "rootfs", None, &["--no-default-software-version"]);
    assert_same_defaults(
        &work,
        "module",
        Some("mymod"),
        &["--no-default-software-version"],
    );
    assert_same_defaults(
        &work,
        "rootfs-nocheck",
        None,
        &["--no-default-software-version", "--no-checksum-provide"],
    );
}

#[test]

fn explicit_software_version_survives_no_default_software_version() {
    let work = Work::new();
    for (i, module_type) in [None, Some("mymod")].into_iter().enumerate() {
        assert_same_defaults(
            &work,
            &format!("v-{i}"),
            module_type,
            &["--no-default-software-version", "--software-version", "9"],
        );
        assert_same_defaults(
            &work,
            &format!("nv-{i}"),
            module_type,
            &[
                "--no-default-software-version",
                "--software-name",
                "z",
                "--software-version",
                "9",
            ],
        );
    }
}

#[test]

fn later_software_option_overrides_provides() {
    let work = Work::new();
    assert_same_defaults(
        &work,
        "rootfs",
        None,
        &["-p", "rootfs-image.version:ov", "--software-version", "9"],
    );
    assert_same_defaults(
        &work,
        "module",
        Some("mymod"),
        &[
            "-p",
            "rootfs-image.mymod.version:ov",
            "--software-version",
            "9",
        ],
    );
}

#[test]

fn clears_provides_equal_to_default_is_not_duplicated() {
    let work = Work::new();
    assert_same_defaults(
        &work,
        "rootfs",
        None,
        &["--clears-provides", "rootfs-image.*"],
    );
    assert_same_defaults(
        &work,
        "module",
        Some("mymod"),
        &["--clears-provides", "rootfs-image.mymod.*"],
    );
}

#[test]

fn rootfs_checksum_provide_is_the_real_checksum() {
    let work = Work::new();
    assert_same_defaults(&work, "rootfs", None, &["-p", "rootfs-image.checksum:abc"]);
}

#[test]

fn nested_meta_data_is_accepted() {
    let work = Work::new();
    let keys = work.keys();
    let case = Case {
        meta: Some(json!({"a": {"b": [1, "x"], "c": {"d": "e"}}, "n": null, "t": true})),
        ..Case::module("nested-meta", "nested", vec![("f", 10)])
    };
    check_reference_artifact(&work, &keys, &case);
    check_our_artifact(&work, &keys, &case);
}
