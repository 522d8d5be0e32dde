//! Adaptive deployments (docs/artifacts.md, "Adaptive installs"): the daemon
//! installs a chunked artifact by fetching only the frames its running
//! partition lacks, with the server's byte count as the witness, and renews
//! a download link that expires part-way by asking `next` again.

use super::*;

/// A 3 MiB image, deterministic from `seed`.
fn image(seed: u64) -> Vec<u8> {
    image_like(2 << 20, 768 << 10, seed)
}

/// `a` with one block changed every `every` bytes.
fn changed(a: &[u8], every: usize) -> Vec<u8> {
    let mut b = a.to_vec();
    let mut at = every / 2;
    while at + 4096 <= b.len() {
        b[at..at + 4096].fill(0xa5);
        at += every;
    }
    b
}

fn chunked(m: &ManagedDevice, name: &str, img: &[u8]) -> Vec<u8> {
    let dir = m.dev.new_build_dir(name);
    let path = dir.join("rootfs.img");
    fs::write(&path, img).unwrap();
    let out = dir.join("artifact.mender");
    let (p, o) = (path.display().to_string(), out.display().to_string());
    m.dev.ok(&[
        "artifact",
        "--compression",
        "zstd",
        "write",
        "rootfs-image",
        "-t",
        DEVICE_TYPE,
        "-n",
        name,
        "-f",
        &p,
        "-o",
        &o,
        "--chunked",
    ]);
    fs::read(&out).unwrap()
}

fn running(m: &ManagedDevice, img: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&m.dev.part_a)
        .unwrap();
    f.write_all_at(img, 0).unwrap();
}

fn download_bytes(server: &MenderServer) -> u64 {
    server
        .requests_to(Endpoint::Download)
        .iter()
        .map(|r| r.bytes_sent)
        .sum()
}

#[test]
fn a_chunked_deployment_fetches_only_what_the_device_lacks() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let a = image(3);
    let b = changed(&a, 1 << 20);
    running(&m, &a);
    let artifact = chunked(&m, "release-adaptive", &b);
    let size = artifact.len() as u64;
    let dep = server.add_deployment_bytes(artifact, "release-adaptive", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 120);
    assert_eq!(
        server.statuses(&dev_id, &dep),
        [
            "downloading",
            "installing",
            "rebooting",
            "installing",
            "success"
        ],
        "{}",
        m.log_tail()
    );
    assert_eq!(
        m.dev.partition_sha256_prefix(3, Some(b.len())),
        sha256_hex(&b)
    );
    let sent = download_bytes(&server);
    assert!(
        sent * 5 < size,
        "the server sent {sent} of {size} bytes: {}",
        m.log_tail()
    );
    let log = fs::read_to_string(&m.log).unwrap_or_default();
    assert!(
        log.contains("adaptive install: fetched"),
        "{}",
        m.log_tail()
    );
    server.assert_no_violations();
}

#[test]
fn an_expired_link_is_renewed_from_the_server() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let a = image(5);
    // Many separate runs of changed chunks: many range requests.
    let b = changed(&a, 256 << 10);
    running(&m, &a);
    let artifact = chunked(&m, "release-renewed", &b);
    // Each link serves three requests, then answers 403.
    server.expire_links_after(Some(3));
    let dep = server.add_deployment_bytes(artifact, "release-renewed", &[DEVICE_TYPE]);
    let dev_id = m.run_to_final(&server, &dep, 120);
    assert_eq!(
        server.statuses(&dev_id, &dep).last().map(String::as_str),
        Some("success"),
        "{}",
        m.log_tail()
    );
    assert_eq!(
        m.dev.partition_sha256_prefix(3, Some(b.len())),
        sha256_hex(&b)
    );
    let downloads = server.requests_to(Endpoint::Download);
    assert!(
        downloads.iter().any(|r| r.status == 403),
        "no link expired: {downloads:#?}"
    );
    let log = fs::read_to_string(&m.log).unwrap_or_default();
    assert!(log.contains("new download link"), "{}", m.log_tail());
}
