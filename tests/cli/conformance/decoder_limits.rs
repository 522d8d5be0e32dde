//! Decoder memory limits against what the tools write.

use super::*;

/// mender-artifact 3.9's `--compression lzma` (no level option) declares a
/// 64 MiB dictionary, whose decoder needs 67174456 bytes: the xz memory
/// limit (`compression::XZ_MEMLIMIT`) must admit it, and does.
#[test]
fn reference_lzma_dictionary_fits_the_xz_memory_limit() {
    let work = Work::new();
    let payload = work.path("rootfs.img");
    fs::write(&payload, pseudo_random("lzma-dict", 64 << 10)).expect("payload");
    let art = work.path("lzma.mender");
    assert_ok(
        &reference([
            os(Path::new("write")),
            "rootfs-image".into(),
            "-t".into(),
            "dev".into(),
            "-n".into(),
            "lzma-1".into(),
            "-f".into(),
            os(&payload),
            "-o".into(),
            os(&art),
            "--compression".into(),
            "lzma".into(),
        ]),
        "mender-artifact write --compression lzma",
    );
    let dir = work.path("x");
    fs::create_dir_all(&dir).expect("dir");
    assert_ok(
        &run_in(&dir, "tar", [OsString::from("xf"), os(&art)]),
        "tar xf",
    );
    let list = run(
        "xz",
        ["--robot", "--list", "-vv"]
            .map(OsString::from)
            .into_iter()
            .chain([os(&dir.join("data/0000.tar.xz"))]),
    );
    assert_ok(&list, "xz --list");
    let text = stdout(&list);
    let block = text
        .lines()
        .find(|l| l.starts_with("block\t"))
        .unwrap_or_else(|| panic!("no block line: {text}"));
    assert!(block.ends_with("--lzma2=dict=64MiB"), "{block}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("summary\t"))
        .unwrap_or_else(|| panic!("no summary line: {text}"));
    let needed: u64 = summary
        .split('\t')
        .nth(1)
        .expect("memory")
        .parse()
        .expect("number");
    assert!(
        needed <= mender_rs::artifact::compression::XZ_MEMLIMIT,
        "{needed}"
    );
    assert_ok(&our_validate(&art, &[]), "mender-rs artifact validate");
}
