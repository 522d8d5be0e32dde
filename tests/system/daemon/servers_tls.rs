//! Servers fail-over and TLS.

use super::*;

#[test]
fn servers_fail_over_to_the_next_one() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    // A port nothing listens on (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    m.dev.remove_config("ServerURL");
    m.dev.set_config(
        "Servers",
        serde_json::json!([{"ServerURL": dead_url}, {"ServerURL": server.url()}]),
    );
    let dep = m.deploy_rootfs(&server, "release-fo", 1 << 20);
    m.run_to_status(&server, &dep, 60, "success");
    server.assert_no_violations();
}

/// Runs `openssl` with `args` in `dir`, panicking on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// all signed by that CA.
fn make_pki(dir: &std::path::Path) {
    fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// `socat` terminating TLS (requiring a client certificate signed by the
/// CA when `mutual`) in front of the test server; killed on drop.
struct TlsFront {
    child: Child,
    url: String,
}

impl TlsFront {
    fn start(dir: &std::path::Path, backend: &str, mutual: bool) -> TlsFront {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let backend = backend.trim_start_matches("http://");
        let verify = if mutual {
            format!("verify=1,cafile={}", dir.join("ca.pem").display())
        } else {
            "verify=0".to_string()
        };
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        let child = Command::new("socat")
            .args([listen, format!("TCP:{backend}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/install-deps installs it)");
        // Wait until it listens (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsFront {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tls_with_server_certificate_and_client_certificate() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let pki = m.dev.path("pki");
    make_pki(&pki);
    let front = TlsFront::start(&pki, &server.url(), true);
    let p = |name: &str| Value::from(pki.join(name).display().to_string());
    m.dev
        .set_config("ServerURL", Value::from(front.url.clone()));
    m.dev.set_config("ServerCertificate", p("ca.pem"));
    m.dev.set_config(
        "HttpsClient",
        serde_json::json!({"Certificate": p("client.pem"), "Key": p("client.key")}),
    );
    let dep = m.deploy_rootfs(&server, "release-tls", 1 << 20);
    m.run_to_status(&server, &dep, 60, "success");
    server.assert_no_violations();
}

#[test]
fn tls_refuses_an_untrusted_server_unless_skip_verify() {
    let server = MenderServer::start();
    let mut m = managed(&server);
    let pki = m.dev.path("pki");
    make_pki(&pki);
    let front = TlsFront::start(&pki, &server.url(), false);
    m.dev
        .set_config("ServerURL", Value::from(front.url.clone()));
    // No ServerCertificate: the test CA is not trusted.
    m.start();
    std::thread::sleep(Duration::from_secs(4));
    m.stop();
    assert!(
        server.device_ids().is_empty(),
        "authenticated over untrusted TLS"
    );
    let log = m.log_text();
    assert!(
        log.to_lowercase().contains("certificate"),
        "no certificate error logged:\n{}",
        m.log_tail()
    );
    // SkipVerify: it works, with a loud warning.
    m.dev.set_config("SkipVerify", Value::from(true));
    m.start();
    assert!(
        server.wait_until(Duration::from_secs(20), |s| !s.device_ids().is_empty()),
        "{}",
        m.log_tail()
    );
    m.stop();
    let log = m.log_text();
    assert!(log.contains("verification is DISABLED"), "{}", m.log_tail());
}
