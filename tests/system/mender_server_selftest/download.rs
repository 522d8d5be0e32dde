//! Download.

use super::*;

#[test]
fn download_full_range_and_416() {
    let server = MenderServer::start();
    let data = artifact(300_000);
    let (dep, link) = deployment_link(&server, &keys().rsa, data.clone());
    let r = get(&server, &link, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").as_deref(), Some("300000"));
    assert_eq!(r.body, data);

    let r = get(&server, &link, &[("Range", "bytes=1000-")]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 1000-299999/300000")
    );
    assert_eq!(r.header("content-length").as_deref(), Some("299000"));
    assert_eq!(r.body, &data[1000..]);

    let r = get(&server, &link, &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 10-19/300000")
    );
    assert_eq!(r.body, &data[10..20]);

    let r = get(&server, &link, &[("Range", "bytes=300000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */300000"));

    // Range ignored on request of the test.
    server.ignore_range(true);
    let r = get(&server, &link, &[("Range", "bytes=1000-")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 300_000);
    server.assert_no_violations();

    let id = keys().rsa.id();
    let downloads = server.downloads();
    assert_eq!(downloads.len(), 5);
    assert_eq!(downloads[1].start, 1000);
    assert_eq!(downloads[1].bytes_sent, 299_000);
    assert!(
        downloads
            .iter()
            .all(|d| d.device.as_deref() == Some(id.as_str()) && d.deployment_id == dep)
    );
    assert_eq!(server.device(&id).unwrap().deployments[0].downloads, 5);

    // The JWT must not be sent to storage; a tampered link is refused.
    let r = get(&server, &link, &[("Authorization", "Bearer x")]);
    assert_eq!(r.status, 200);
    assert!(server.downloads().last().unwrap().authorization_sent);
    assert!(problems(&server)[0].contains("Authorization"));
    let tampered = link.replace("x-men-signature=", "x-men-signature=0");
    assert_eq!(get(&server, &tampered, &[]).status, 403);
    assert_eq!(server.violations().len(), 2);
}

/// Raw GET on a fresh connection: (head, body bytes until EOF).
fn raw_get(server: &MenderServer, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8(all[..split].to_vec()).unwrap(),
        all[split + 4..].to_vec(),
    )
}

#[test]
fn download_cut_after_n_bytes_and_resume() {
    let server = MenderServer::start();
    let data = artifact(200_000);
    let (_dep, link) = deployment_link(&server, &keys().ec, data.clone());

    server.cut_downloads_after(12_345, 1);
    let (head, body) = raw_get(&server, &link, "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 200000"), "{head}");
    assert_eq!(body, &data[..12_345]);
    // ureq sees the short body as an error.
    let mut res = agent()
        .get(format!("{}{link}", server.url()))
        .call()
        .unwrap();
    assert_eq!(
        res.body_mut().read_to_vec().unwrap(),
        data,
        "cut applies once"
    );

    // Absolute offsets, one per request: 0.. cut at 50000, resume cut at 120000, then complete.
    server.cut_downloads_at(&[50_000, 120_000]);
    let (_, b1) = raw_get(&server, &link, "");
    assert_eq!(b1.len(), 50_000);
    let (head, b2) = raw_get(&server, &link, "Range: bytes=50000-\r\n");
    assert!(
        head.contains("206 Partial Content")
            && head.contains("Content-Range: bytes 50000-199999/200000"),
        "{head}"
    );
    assert_eq!(b2.len(), 70_000);
    let (_, b3) = raw_get(
        &server,
        &link,
        "Range: bytes=120000-\r\nConnection: close\r\n",
    );
    let mut whole = b1;
    whole.extend(b2);
    whole.extend(b3);
    assert_eq!(whole, data);
    let d = server.downloads();
    assert_eq!(d.iter().filter(|d| d.cut).count(), 3);
    assert_eq!(d[3].bytes_sent, 70_000);

    server.cut_downloads_after(100, 1);
    let mut res = agent()
        .get(format!("{}{link}", server.url()))
        .call()
        .unwrap();
    assert!(res.body_mut().read_to_vec().is_err());
    server.assert_no_violations();
}

#[test]
fn throttled_download_takes_time() {
    let server = MenderServer::start();
    let (_dep, link) = deployment_link(&server, &keys().ed, artifact(20_000));
    server.throttle_downloads(Some(50_000));
    let t = Instant::now();
    let r = get(&server, &link, &[]);
    assert_eq!(r.body.len(), 20_000);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}
