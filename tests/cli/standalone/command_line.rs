//! The command line: http(s) sources, `mender`/`mender-update` links,
//! `--version`, `--log-file`, the deployment log.

use super::*;

/// Serves one HTTP/1.1 request on 127.0.0.1 (ephemeral port): `body` with
/// 200 for path `/x.mender`, 404 for any other path. Returns the base URL
/// and the thread (which yields the request line). Gives up after 30 s.
fn serve_once(body: Vec<u8>) -> (String, JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return None,
            }
        };
        stream.set_nonblocking(false).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&request).into_owned();
        let line = text.lines().next().unwrap_or_default().to_string();
        let found = line.starts_with("GET /x.mender ");
        let (status, body) = if found {
            ("200 OK", body)
        } else {
            ("404 Not Found", b"not found\n".to_vec())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
        let _ = stream.flush();
        Some(line)
    });
    (url, handle)
}

#[test]
fn install_from_http_url() {
    let dev = device_with_rootfs_scripts(None);
    let art = artifact_with_scripts(&dev, "release-2", None);
    let (url, server) = serve_once(fs::read(&art).unwrap());
    let install = install_scripts();
    step(
        &dev,
        &["install", "--reboot-exit-code", &format!("{url}/x.mender")],
        4,
        &install,
    );
    assert_eq!(
        server.join().unwrap().as_deref(),
        Some("GET /x.mender HTTP/1.1")
    );
    assert_env(&dev, 3, 1);
    assert_partition_holds(&dev, 3, &art);
    assert_eq!(dev.reboot(), Boot::TryUpdate(3));
    step(
        &dev,
        &["commit"],
        0,
        &concat(&[a("ArtifactCommit", "Enter"), a("ArtifactCommit", "Leave")]),
    );
    assert_provides(&dev, &rootfs_provides("release-2", &art));
}

#[test]
fn install_from_http_404_is_refused() {
    let dev = SimDevice::new();
    let (url, server) = serve_once(Vec::new());
    let before = snapshot(&dev);
    let missing = format!("{url}/missing.mender");
    let out = dev.run(&["install", &missing]);
    assert_refused(&dev, &before, &out, &["404"]);
    assert_eq!(before.inactive, Some(dev.partition_sha256(3)));
    assert!(
        server.join().unwrap().is_some(),
        "the server saw no request"
    );
}

#[test]
fn links_named_mender_and_mender_update_take_the_same_commands() {
    let dev = SimDevice::new();
    for (i, name) in ["mender", "mender-update"].iter().enumerate() {
        let link = dev.path(name);
        std::os::unix::fs::symlink(BIN, &link).unwrap();
        let run = |args: &[&str]| {
            let mut cmd = dev.command_as(&link);
            cmd.args(args);
            run_bounded(&mut cmd, DEFAULT_TIMEOUT)
        };
        let previous = if i == 0 { "unknown" } else { "via-mender" };
        let out = run(&["show-artifact"]);
        assert_exit(&out, 0, &format!("{name} show-artifact"));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), previous);

        let artifact_name = format!("via-{name}");
        let art = dev.write_rootfs_artifact(&artifact_name, PAYLOAD, &[], &[]);
        let out = run(&["install", "--reboot-exit-code", p(&art)]);
        assert_exit(&out, 4, &format!("{name} install"));
        dev.reboot();
        let out = run(&["commit"]);
        assert_exit(&out, 0, &format!("{name} commit"));
        let out = run(&["show-artifact"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), artifact_name);
        let out = run(&["commit"]);
        assert_exit(&out, 2, &format!("{name} commit with nothing pending"));
    }
}

#[test]
fn version_flag_prints_a_version() {
    let mut cmd = Command::new(BIN);
    cmd.arg("--version");
    let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
    assert_exit(&out, 0, "--version");
    let text = String::from_utf8_lossy(&out.stdout);
    let has_version = text.split_whitespace().any(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() >= 2 && parts[..2].iter().all(|p| p.parse::<u32>().is_ok())
    });
    assert!(has_version, "no version number in {text:?}");
}

#[test]
fn log_file_receives_the_logs() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact("release-2", PAYLOAD, &[], &[]);
    let log = dev.path("client.log");
    let out = dev.run(&[
        "--log-level",
        "info",
        "--log-file",
        p(&log),
        "install",
        p(&art),
    ]);
    assert_exit(&out, 0, "install with --log-file");
    let text = fs::read_to_string(&log).expect("the log file");
    assert!(
        text.contains("release-2") && text.contains(p(&dev.part_b)),
        "the install is not logged in the log file:\n{text}"
    );
    let err = stderr(&out);
    assert!(
        !err.contains(p(&dev.part_b)),
        "log records went to stderr too:\n{err}"
    );
}

#[test]
fn deployment_log_holds_json_lines_with_script_stderr() {
    let dev = SimDevice::new();
    let art = dev.write_rootfs_artifact(
        "release-2",
        PAYLOAD,
        &[("ArtifactInstall_Enter_01", 1)],
        &[],
    );
    let out = dev.run(&["install", p(&art)]);
    assert_exit(&out, 1, "failing install");
    let path = dev.data.join("deployments.0001.standalone.log");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["level", "message", "timestamp"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        messages.push(v["message"].as_str().unwrap().to_string());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("script ArtifactInstall_Enter_01 ran")),
        "the failing script's stderr is not in the deployment log:\n{text}"
    );
}
