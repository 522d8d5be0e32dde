//! TLS in front of the test server: a private CA made with `openssl`
//! ([`TestPki`]) and `socat` terminating TLS on loopback, optionally
//! requiring a client certificate signed by that CA ([`TlsFront`]). The
//! server itself stays plain HTTP; WebSocket upgrades pass through unchanged
//! (socat relays bytes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::device::{describe, run_bounded};

/// A CA (`ca.pem`), a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) and a client certificate (`client.pem`, `client.key`),
/// all signed by that CA, in one directory.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    /// Makes the keys and certificates in `dir` (created if needed).
    pub fn make(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
            &["-days", "2", "-subj", "/CN=test CA"],
        );
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1"),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subject = format!("/CN={name}");
            openssl(
                dir,
                &[&["req"], &ec[..], &["-keyout", &key, "-out", &csr]].concat(),
                &["-subj", &subject],
            );
            let ext_file = format!("{name}.ext");
            std::fs::write(dir.join(&ext_file), format!("{ext}\n")).unwrap();
            openssl(
                dir,
                &[
                    "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
                ],
                &[
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext_file,
                ],
            );
        }
        TestPki {
            dir: dir.to_path_buf(),
        }
    }

    /// A file of the set, as a string for configuration files.
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Runs `openssl` with `args` then `more` in `dir`, panicking on failure.
fn openssl(dir: &Path, args: &[&str], more: &[&str]) {
    let out = run_bounded(
        Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .args(more),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl {args:?} {more:?}: {}",
        describe(&out)
    );
}

/// `socat` terminating TLS with the [`TestPki`] server certificate in front
/// of `backend` (`http://127.0.0.1:<port>`); killed on drop.
pub struct TlsFront {
    child: Child,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
}

impl TlsFront {
    /// `mutual`: clients must present a certificate signed by the CA.
    pub fn start(pki: &TestPki, backend: &str, mutual: bool) -> TlsFront {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let backend = backend.trim_start_matches("http://");
        let verify = if mutual {
            format!("verify=1,cafile={}", pki.file("ca.pem"))
        } else {
            "verify=0".to_string()
        };
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
            pki.file("server.pem"),
            pki.file("server.key")
        );
        let child = Command::new("socat")
            .args([listen, format!("TCP:{backend}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/install-deps installs it)");
        let mut front = TlsFront {
            child,
            url: format!("https://127.0.0.1:{port}"),
        };
        // Until it listens (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline || matches!(front.child.try_wait(), Ok(Some(_))) {
                panic!("socat did not start listening on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        front
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
