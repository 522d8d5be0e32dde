//! Faults, HTTP details, concurrency, shutdown.

use super::*;

#[test]
fn injected_failures_and_delays() {
    let server = MenderServer::start();
    let k = keys();
    server.fail_next(Endpoint::Auth, 503, 2);
    assert_eq!(authenticate(&server, &k.ec, "m").status, 503);
    assert_eq!(authenticate(&server, &k.ec, "m").status, 503);
    let tok = token(&server, &k.ec, "m");
    server.fail_always(Endpoint::NextV1Post, Some(500));
    assert_eq!(next_v1(&server, &tok, "a").status, 500);
    assert_eq!(next_v1(&server, &tok, "a").status, 500);
    server.fail_always(Endpoint::NextV1Post, None);
    assert_eq!(next_v1(&server, &tok, "a").status, 204);

    server.set_delay(Some(Endpoint::NextV1Post), Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(next_v1(&server, &tok, "a").status, 204);
    assert!(t.elapsed() >= Duration::from_millis(300));
    server.clear_faults();
    let t = Instant::now();
    assert_eq!(next_v1(&server, &tok, "a").status, 204);
    assert!(t.elapsed() < Duration::from_millis(300));

    let log = server.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200, 500, 500, 204, 204, 204]);
    assert_eq!(log[3].device.as_deref(), Some(k.ec.id().as_str()));
    assert_eq!(log[3].endpoint, Endpoint::NextV1Post);
    assert_eq!(server.requests_to(Endpoint::Auth).len(), 3);
    assert_eq!(server.requests_per_endpoint()[&Endpoint::NextV1Post], 5);
    server.assert_no_violations();
}

#[test]
fn keep_alive_chunked_connection_close_and_malformed_requests() {
    let server = MenderServer::start();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = r#"{"artifact_name":"a","device_type":"t"}"#;
    // Two pipelined requests on one connection, the second chunked.
    let (a, b) = body.split_at(10);
    write!(
        s,
        "POST {NEXT_V1} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
         POST {NEXT_V1} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        body.len(),
        a.len(),
        b.len()
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap(); // EOF: Connection: close honoured
    assert_eq!(all.matches("HTTP/1.1 204 No Content").count(), 2, "{all}");
    assert!(all.contains("Connection: close"));

    // Malformed request: 400, recorded, server still fine.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"BROKEN\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"PUT /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 400"), "{all}");
    assert_eq!(server.violations().len(), 2);
    assert_eq!(next_v1(&server, &tok, "a").status, 204);

    // ureq reuses its pooled connection: many requests, few connections.
    let agent = agent();
    for _ in 0..20 {
        let r = agent
            .post(format!("{}{NEXT_V1}", server.url()))
            .header("Authorization", &format!("Bearer {tok}"))
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    assert_eq!(server.requests_per_device()[&k.ec.id()], 24);
    assert_eq!(
        server.requests_per_minute().iter().sum::<u64>(),
        server.request_count()
    );
}

#[test]
fn many_concurrent_clients() {
    let server = MenderServer::start();
    let k = keys();
    let tokens: Vec<(String, String)> = k.fleet[..4]
        .iter()
        .enumerate()
        .map(|(i, key)| (key.id(), token(&server, key, &format!("f{i}"))))
        .collect();
    let dep = server.add_deployment_bytes(artifact(4096), "r9", &["qemux86-64"]);
    std::thread::scope(|scope| {
        for t in 0..100 {
            let (server, tokens) = (&server, &tokens);
            scope.spawn(move || {
                let agent = agent();
                let (_, tok) = &tokens[t % tokens.len()];
                for _ in 0..5 {
                    let r = agent
                        .post(format!("{}{NEXT_V1}", server.url()))
                        .header("Authorization", &format!("Bearer {tok}"))
                        .header("Content-Type", "application/json")
                        .send(r#"{"artifact_name":"r1","device_type":"qemux86-64"}"#)
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });
    assert_eq!(server.request_count(), 4 + 500);
    for (id, _) in &tokens {
        assert_eq!(server.requests_per_device()[id], 1 + 125);
    }
    assert_eq!(server.deployment_summary(&dep).get("pending"), Some(&4));
    server.assert_no_violations();
}

#[test]
fn drop_is_prompt_with_open_connections() {
    let server = MenderServer::start();
    let url = server.url();
    let k = keys();
    let tok = token(&server, &k.ec, "m");
    let (_dep, link) = deployment_link(&server, &k.ec, artifact(10_000_000));
    // An idle keep-alive connection, and a download the client does not read.
    let _idle = TcpStream::connect(server.addr()).unwrap();
    let mut stalled = TcpStream::connect(server.addr()).unwrap();
    write!(stalled, "GET {link} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    server.set_delay(None, Duration::from_secs(30));
    let slow = std::thread::spawn(move || {
        let _ = agent()
            .post(format!("{url}{NEXT_V1}"))
            .header("Authorization", &format!("Bearer {tok}"))
            .send("{}");
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    drop(server);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    slow.join().unwrap();
}

#[test]
fn time_helpers() {
    use std::time::UNIX_EPOCH;
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
        "2024-02-29T12:34:56Z"
    );
    for ok in [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05.5+01:00",
        "2016-03-11T13:03:17.063493443Z",
    ] {
        assert!(is_rfc3339(ok), "{ok}");
    }
    for bad in [
        "2024-01-02",
        "2024-13-02T03:04:05Z",
        "2024-01-02T03:04:05",
        "2024-01-02T03:04:05+0100",
        "2024-01-02T03:04:05.Z",
        "x",
    ] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
}

/// Sends `GET path` on a raw socket and reads at most `limit` bytes of the
/// answer (head and body), until the server closes.
fn raw_get_capped(server: &MenderServer, path: &str, limit: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = (&mut s).take(limit as u64).read_to_end(&mut out);
    out
}

#[test]
fn hostile_replies_replace_answers_after_normal_handling() {
    let server = MenderServer::start();
    let key = &keys().ed;
    // A 10 GiB auth answer: the device is still registered.
    let huge = HostileReply::new(
        200,
        HostileBody::Filler {
            byte: b'A',
            len: 10 << 30,
        },
    );
    server.replace_next(Endpoint::Auth, huge, 1);
    let body = auth_body(key, "aa:bb", Some(""));
    let url = format!(
        "{}/api/devices/v1/authentication/auth_requests",
        server.url()
    );
    let mut res = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-MEN-Signature", &key.sign(&body))
        .send(&body[..])
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-length").unwrap(),
        &(10u64 << 30).to_string()
    );
    let mut first = Vec::new();
    res.body_mut()
        .as_reader()
        .take(1 << 20)
        .read_to_end(&mut first)
        .unwrap();
    assert!(first.iter().all(|&b| b == b'A') && first.len() == 1 << 20);
    drop(res);
    assert_eq!(server.device_ids().len(), 1);
    // The next answer is the normal one again.
    assert_eq!(authenticate(&server, key, "aa:bb").status, 200);

    // A Content-Length lie and an end of connection; then a trickle.
    let lie = HostileReply::new(200, HostileBody::Bytes(b"short".to_vec()))
        .header("Content-Length", "1000");
    server.replace_next(Endpoint::Other, lie, 1);
    let text = String::from_utf8(raw_get_capped(&server, "/nowhere", 4096)).unwrap();
    assert!(text.contains("Content-Length: 1000\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nshort"), "{text}");
    let trickle = HostileReply::new(
        200,
        HostileBody::Trickle {
            bytes: b"abc".to_vec(),
            interval: Duration::from_millis(200),
        },
    );
    server.replace_always(Endpoint::Other, Some(trickle));
    let started = Instant::now();
    let text = String::from_utf8(raw_get_capped(&server, "/nowhere", 4096)).unwrap();
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.replace_always(Endpoint::Other, None);
    assert!(
        String::from_utf8(raw_get_capped(&server, "/nowhere", 4096))
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );
}
