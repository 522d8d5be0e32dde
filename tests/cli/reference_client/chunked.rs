//! Chunked rootfs-image artifacts (docs/artifacts.md) install as plain full
//! updates: the Mender client 3.4 installs the gzip-framed one, mender-rs
//! installs the gzip- and zstd-framed ones, on the simulated device of this
//! rig. The artifact is written by `mender-rs artifact write --chunked`
//! from the rig's payload, with small chunks so that the 3 MiB payload
//! spans many frames.

use super::*;

const NO_FAILURES: Scenario = Scenario {
    id: "chunked-install",
    title: "install a chunked artifact",
    failing: &[],
    steps: &[],
};

fn write_chunked(rig: &Rig, compression: &str) -> PathBuf {
    let build = rig.dir.path().join("build");
    let out = build.join(format!("chunked-{compression}.mender"));
    tool(
        OURS,
        &[
            "artifact",
            "write",
            "rootfs-image",
            "--compression",
            compression,
            "-t",
            DEVICE_TYPE,
            "-n",
            "release-2",
            "-f",
            s(&build.join("rootfs.img")),
            "-o",
            s(&out),
            "--chunked",
            "--chunk-size",
            "16K",
        ],
    );
    let report = tool(OURS, &["artifact", "read", "--json", s(&out)]);
    let json: serde_json::Value = serde_json::from_str(&report).expect("read --json");
    let count = json["payloads"][0]["chunking"]["chunk_count"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        count > 20,
        "a 3 MiB payload in 16 KiB chunks has more than 20 frames: {report}"
    );
    out
}

/// Installs `artifact` with `client` on a fresh device and checks that the
/// inactive partition (B) then holds the payload and the boot environment
/// switched to it.
fn installs(rig: &Rig, client: Client, artifact: &Path) {
    let device = Device::new(rig, &NO_FAILURES, client);
    let ran = device.client(&["install", s(artifact)]);
    assert_eq!(
        ran.code,
        0,
        "{client:?} install of {}: {}{}",
        artifact.display(),
        ran.stdout,
        ran.stderr
    );
    assert_eq!(device.image_on(), "B", "{client:?}: the payload is on B");
    let env = device.env();
    assert_eq!(
        env.get("mender_boot_part"),
        Some(&number_of(&rig.part_b)),
        "{client:?}: boots B next"
    );
    assert_eq!(env.get("upgrade_available").map(String::as_str), Some("1"));
}

#[test]
fn mender_34_and_mender_rs_install_chunked_artifacts_in_full() {
    let rig = Rig::new();
    let gzip = write_chunked(&rig, "gzip");
    // mender-artifact 3.9 reads no zstd, so only the gzip one is checked.
    tool("mender-artifact", &["validate", s(&gzip)]);
    installs(&rig, Client::Reference, &gzip);
    installs(&rig, Client::Ours, &gzip);
    let zstd = write_chunked(&rig, "zstd");
    installs(&rig, Client::Ours, &zstd);
}
