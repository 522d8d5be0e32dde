//! `mender-auth` (a link of that name to the binary), as Mender 4.x/5.x's:
//! `bootstrap [--forcebootstrap] [--passphrase-file FILE|-]` and `daemon`,
//! run against the test server, which verifies every auth request's
//! signature and records its body (the key, `tier`). Keys are checked
//! against `openssl`, which also makes the encrypted ones.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::device::{BIN, DEFAULT_TIMEOUT, SimDevice, describe, exit_code, run_bounded};
use crate::support::managed::{DaemonChild, DeviceSetup, daemon_command, log_tail};
use crate::support::mender_server::{MenderServer, device_id_of};

#[cfg(feature = "encrypted-keys")]
const PASS: &str = "open sesame";

/// A simulated device with an identity script and `mender-auth` beside it.
struct AuthDevice {
    dev: SimDevice,
    link: PathBuf,
}

impl AuthDevice {
    fn new(server: Option<&MenderServer>) -> AuthDevice {
        let dev = SimDevice::new();
        let url = server.map(MenderServer::url);
        DeviceSetup {
            server_url: url.as_deref(),
            mac: "52:54:00:aa:bb:01",
            inventory_script: None,
            reboot_marker: None,
            update_poll: 5,
            inventory_poll: None,
            retry_poll: 1,
        }
        .apply(&dev);
        // The default key type unless a test sets one.
        dev.remove_config("DeviceKeyType");
        let link = dev.path("mender-auth");
        std::os::unix::fs::symlink(BIN, &link).unwrap();
        AuthDevice { dev, link }
    }

    /// `mender-auth --config C --data D ARGS`, stdin from /dev/null.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.dev.command_as(&self.link);
        cmd.args(args);
        run_bounded(&mut cmd, DEFAULT_TIMEOUT)
    }

    /// As [`Self::run`], with `input` on standard input (through `sh`, as
    /// [`run_bounded`] gives the command /dev/null).
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("printf '%s' \"$1\" | { shift; exec \"$@\"; }")
            .arg("sh")
            .arg(input)
            .arg(&self.link)
            .arg("--config")
            .arg(&self.dev.config_file)
            .arg("--data")
            .arg(&self.dev.data)
            .args(args);
        run_bounded(&mut cmd, DEFAULT_TIMEOUT)
    }

    fn key_path(&self) -> PathBuf {
        self.dev.data.join("mender-agent.pem")
    }

    fn write_passphrase(&self, text: &str) -> PathBuf {
        let path = self.dev.path("passphrase");
        fs::write(&path, text).unwrap();
        path
    }
}

#[track_caller]
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(exit_code(out), code, "{what}: {}", describe(out));
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs openssl; panics with its stderr on failure.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The public key of the key file, as openssl reads it (with `pass` if
/// encrypted).
fn public_of(key: &Path, pass: Option<&str>) -> String {
    let mut args = vec!["pkey", "-in", key.to_str().unwrap(), "-pubout"];
    let passin = pass.map(|p| format!("pass:{p}"));
    if let Some(p) = &passin {
        args.extend(["-passin", p]);
    }
    openssl(&args)
}

/// An Ed25519 key encrypted by `openssl genpkey -aes256` at `path`.
#[cfg(feature = "encrypted-keys")]
fn encrypted_ed25519(path: &Path, pass: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let pass = format!("pass:{pass}");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-aes256",
        "-pass",
        &pass,
        "-out",
        path.to_str().unwrap(),
    ]);
}

/// The device the server knows by the key at `key`.
fn device_of(server: &MenderServer, key: &Path, pass: Option<&str>) -> String {
    let id = device_id_of(&public_of(key, pass)).expect("a public key the server parses");
    assert!(
        server.device(&id).is_some(),
        "the server does not know the key {} (devices: {:?})",
        key.display(),
        server.device_ids()
    );
    id
}

#[test]
fn bootstrap_creates_an_ed25519_key_and_authenticates_with_it() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    let out = d.run(&["bootstrap"]);
    assert_exit(&out, 0, "bootstrap");
    assert!(
        stderr(&out).contains("authenticated with"),
        "{}",
        describe(&out)
    );
    let key = d.key_path();
    let pem = fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let id = device_of(&server, &key, None);
    let info = server.device(&id).unwrap();
    assert_eq!(info.key_type, "Ed25519");
    assert_eq!(info.auth_requests, 1);
    assert_eq!(info.identity["mac"], Value::from("52:54:00:aa:bb:01"));
    // Again: the same key, the same device.
    assert_exit(&d.run(&["bootstrap"]), 0, "second bootstrap");
    assert_eq!(fs::read_to_string(&key).unwrap(), pem);
    assert_eq!(server.device_ids(), std::slice::from_ref(&id));
    assert_eq!(server.auth_requests(&id), 2);
    server.assert_no_violations();
}

#[test]
fn bootstrap_of_a_device_not_yet_accepted_succeeds_as_in_mender() {
    let server = MenderServer::start();
    server.set_default_auth(crate::support::mender_server::AuthStatus::Pending);
    let d = AuthDevice::new(Some(&server));
    let out = d.run(&["bootstrap"]);
    // Mender 4.x/5.x report the refusal and exit 0: the device is now
    // known to the server, waiting to be accepted.
    assert_exit(&out, 0, "bootstrap of a pending device");
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        describe(&out)
    );
    let id = device_of(&server, &d.key_path(), None);
    assert_eq!(server.auth_requests(&id), 1);
    server.assert_no_violations();
}

#[test]
fn forcebootstrap_replaces_the_key_with_one_of_the_configured_type() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    assert_exit(&d.run(&["bootstrap"]), 0, "bootstrap");
    let first = fs::read_to_string(d.key_path()).unwrap();
    let first_id = device_of(&server, &d.key_path(), None);

    assert_exit(
        &d.run(&["bootstrap", "--forcebootstrap"]),
        0,
        "bootstrap --forcebootstrap",
    );
    let second = fs::read_to_string(d.key_path()).unwrap();
    assert_ne!(first, second);
    let second_id = device_of(&server, &d.key_path(), None);
    assert_ne!(first_id, second_id);
    assert_eq!(server.device(&second_id).unwrap().key_type, "Ed25519");

    // DeviceKeyType still selects RSA 3072 (as Mender 3.x/4.x generate).
    d.dev.set_config("DeviceKeyType", Value::from("rsa3072"));
    assert_exit(&d.run(&["bootstrap", "-F"]), 0, "bootstrap -F with rsa3072");
    let third = fs::read_to_string(d.key_path()).unwrap();
    assert!(
        third.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "{third}"
    );
    let third_id = device_of(&server, &d.key_path(), None);
    assert_eq!(server.device(&third_id).unwrap().key_type, "RSA");
    assert_eq!(server.device_ids().len(), 3);
    server.assert_no_violations();
}

#[test]
fn a_key_named_in_the_configuration_is_never_regenerated() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    let key = d.dev.path("etc/device.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]);
    let before = fs::read(&key).unwrap();
    d.dev.set_config(
        "Security",
        serde_json::json!({"AuthPrivateKey": key.to_str().unwrap()}),
    );
    let out = d.run(&["bootstrap", "--forcebootstrap"]);
    assert_exit(&out, 1, "bootstrap -F with Security.AuthPrivateKey");
    let message = stderr(&out);
    assert!(
        message.contains(key.to_str().unwrap()) && message.contains("never replaced"),
        "{message}"
    );
    assert_eq!(fs::read(&key).unwrap(), before);
    assert!(server.device_ids().is_empty());
    assert!(!d.key_path().exists());
    // Without -F the configured key is the device's.
    assert_exit(
        &d.run(&["bootstrap"]),
        0,
        "bootstrap with Security.AuthPrivateKey",
    );
    device_of(&server, &key, None);
    assert!(!d.key_path().exists());
    server.assert_no_violations();
}

#[test]
#[cfg(feature = "encrypted-keys")]
fn an_encrypted_key_is_used_with_its_passphrase_from_a_file_or_stdin() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    let key = d.key_path();
    encrypted_ed25519(&key, PASS);
    let before = fs::read(&key).unwrap();

    let file = d.write_passphrase(&format!("{PASS}\nsecond line is not read\n"));
    let out = d.run(&["bootstrap", "--passphrase-file", file.to_str().unwrap()]);
    assert_exit(&out, 0, "bootstrap --passphrase-file");
    let id = device_of(&server, &key, Some(PASS));
    assert_eq!(server.auth_requests(&id), 1);

    // Without a line end.
    let file = d.write_passphrase(PASS);
    let out = d.run(&["bootstrap", "--passphrase-file", file.to_str().unwrap()]);
    assert_exit(&out, 0, "passphrase without a newline");
    assert_eq!(server.auth_requests(&id), 2);

    // `-`: standard input.
    let out = d.run_with_stdin(
        &["bootstrap", "--passphrase-file", "-"],
        &format!("{PASS}\n"),
    );
    assert_exit(&out, 0, "bootstrap --passphrase-file -");
    assert_eq!(server.auth_requests(&id), 3);

    assert_eq!(
        fs::read(&key).unwrap(),
        before,
        "the key file is left as it was"
    );
    assert_eq!(server.device_ids(), [id]);
    server.assert_no_violations();
}

#[test]
#[cfg(feature = "encrypted-keys")]
fn an_encrypted_key_named_in_the_configuration_is_decrypted() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    // The legacy OpenSSL form (Proc-Type/DEK-Info), an EC P-256 key.
    let plain = d.dev.path("etc/plain.key");
    let key = d.dev.path("etc/device.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        plain.to_str().unwrap(),
    ]);
    let passout = format!("pass:{PASS}");
    openssl(&[
        "ec",
        "-aes256",
        "-in",
        plain.to_str().unwrap(),
        "-out",
        key.to_str().unwrap(),
        "-passout",
        &passout,
    ]);
    assert!(
        fs::read_to_string(&key)
            .unwrap()
            .contains("Proc-Type: 4,ENCRYPTED")
    );
    d.dev.set_config(
        "Security",
        serde_json::json!({"AuthPrivateKey": key.to_str().unwrap()}),
    );
    let file = d.write_passphrase(&format!("{PASS}\n"));
    let out = d.run(&["bootstrap", "--passphrase-file", file.to_str().unwrap()]);
    assert_exit(
        &out,
        0,
        "bootstrap with an encrypted Security.AuthPrivateKey",
    );
    let id = device_of(&server, &plain, None);
    assert_eq!(server.device(&id).unwrap().key_type, "ECDSA P-256");
    assert!(!d.key_path().exists(), "no key of its own was created");
    server.assert_no_violations();
}

#[test]
#[cfg(feature = "encrypted-keys")]
fn a_wrong_or_missing_passphrase_fails_naming_the_key() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    let key = d.key_path();
    encrypted_ed25519(&key, PASS);
    let before = fs::read(&key).unwrap();
    let key_name = key.to_str().unwrap();

    let wrong = d.write_passphrase("open sesame!\n");
    let out = d.run(&["bootstrap", "--passphrase-file", wrong.to_str().unwrap()]);
    assert_exit(&out, 1, "wrong passphrase");
    let message = stderr(&out);
    assert!(
        message.contains(key_name) && message.contains("wrong passphrase"),
        "{message}"
    );
    let out = d.run_with_stdin(&["bootstrap", "--passphrase-file", "-"], "nope\n");
    assert_exit(&out, 1, "wrong passphrase on stdin");
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        describe(&out)
    );

    let out = d.run(&["bootstrap"]);
    assert_exit(&out, 1, "no passphrase");
    let message = stderr(&out);
    assert!(
        message.contains(key_name) && message.contains("--passphrase-file"),
        "{message}"
    );
    // Not even --forcebootstrap is needed to get past a forgotten
    // passphrase, but the key stays until it is asked for.
    let missing = d.dev.path("no-such-passphrase");
    let out = d.run(&["bootstrap", "--passphrase-file", missing.to_str().unwrap()]);
    assert_exit(&out, 1, "missing passphrase file");
    assert!(
        stderr(&out).contains(missing.to_str().unwrap()),
        "{}",
        describe(&out)
    );

    let long = d.write_passphrase(&"x".repeat(2000));
    let out = d.run(&["bootstrap", "--passphrase-file", long.to_str().unwrap()]);
    assert_exit(&out, 1, "overlong passphrase");
    assert!(
        stderr(&out).contains("longer than 1024 bytes"),
        "{}",
        describe(&out)
    );
    let out = d.run_with_stdin(&["bootstrap", "--passphrase-file", "-"], &"y".repeat(5000));
    assert_exit(&out, 1, "overlong passphrase on stdin");
    assert!(
        stderr(&out).contains("longer than 1024 bytes"),
        "{}",
        describe(&out)
    );

    assert_eq!(fs::read(&key).unwrap(), before, "the key is never replaced");
    assert!(server.device_ids().is_empty(), "no auth request was sent");
    server.assert_no_violations();
}

#[test]
fn device_tier_is_sent_as_tier_only_when_set() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    assert_exit(&d.run(&["bootstrap"]), 0, "bootstrap without DeviceTier");
    let id = device_of(&server, &d.key_path(), None);
    assert_eq!(server.device(&id).unwrap().tier, None);
    for tier in ["standard", "system", "micro"] {
        d.dev.set_config("DeviceTier", Value::from(tier));
        assert_exit(&d.run(&["bootstrap"]), 0, tier);
        assert_eq!(server.device(&id).unwrap().tier.as_deref(), Some(tier));
    }
    server.assert_no_violations();
}

#[test]
fn an_invalid_device_tier_stops_bootstrap_and_the_daemon() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    for tier in ["gold", "Standard", " micro"] {
        d.dev.set_config("DeviceTier", Value::from(tier));
        for args in [&["bootstrap"][..], &["daemon"][..]] {
            let out = d.run(args);
            assert_exit(&out, 1, &format!("{args:?} with DeviceTier {tier:?}"));
            let message = stderr(&out);
            assert!(
                message.contains("DeviceTier") && message.contains(tier),
                "{message}"
            );
        }
    }
    // The plain daemon command refuses it too.
    let mut cmd = d.dev.command();
    cmd.arg("daemon");
    let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
    assert_exit(&out, 1, "mender-rs daemon with an invalid DeviceTier");
    assert!(stderr(&out).contains("DeviceTier"), "{}", describe(&out));
    assert!(server.device_ids().is_empty());
}

#[test]
fn bootstrap_without_a_server_only_creates_the_key() {
    let d = AuthDevice::new(None);
    let out = d.run(&["bootstrap"]);
    assert_exit(&out, 0, "bootstrap without ServerURL");
    let pem = fs::read_to_string(d.key_path()).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    // The daemon needs a server, as Mender's does.
    let out = d.run(&["daemon"]);
    assert_exit(&out, 1, "daemon without ServerURL");
    assert!(
        stderr(&out).contains("no server configured"),
        "{}",
        describe(&out)
    );
}

#[test]
fn usage_errors_and_help() {
    let d = AuthDevice::new(None);
    assert_exit(&d.run(&["--help"]), 0, "--help");
    let out = d.run(&["bootstrap", "--help"]);
    assert_exit(&out, 0, "bootstrap --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--forcebootstrap") && help.contains("--passphrase-file"),
        "{help}"
    );
    assert_exit(&d.run(&["no-such-command"]), 1, "unknown command");
    assert_exit(&d.run(&["bootstrap", "--no-such-flag"]), 1, "unknown flag");
    assert_exit(
        &d.run(&["install", "x.mender"]),
        1,
        "mender-update's commands are not mender-auth's",
    );
}

#[test]
#[cfg(feature = "encrypted-keys")]
fn mender_auth_daemon_runs_the_daemon_with_the_decrypted_key() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    let key = d.key_path();
    encrypted_ed25519(&key, PASS);
    let passphrase = d.write_passphrase(&format!("{PASS}\n"));
    d.dev.set_config("DeviceTier", Value::from("micro"));

    // `mender-rs daemon` cannot use the key: it has no passphrase.
    let log = d.dev.path("daemon.log");
    let mut plain = daemon_command(&d.dev, Path::new(BIN), "info", &log);
    let out = run_bounded(&mut plain, DEFAULT_TIMEOUT);
    assert_exit(&out, 1, "mender-rs daemon with an encrypted key");
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("--passphrase-file"), "{text}");

    let log = d.dev.path("auth-daemon.log");
    let mut cmd = daemon_command(&d.dev, &d.link, "info", &log);
    cmd.arg("--passphrase-file").arg(&passphrase);
    let daemon = DaemonChild::spawn(&mut cmd);
    let id = device_id_of(&public_of(&key, Some(PASS))).unwrap();
    let served = server.wait_until(Duration::from_secs(60), |s| {
        s.inventory_value(&id, "device_type").is_some()
    });
    daemon.stop(Duration::from_secs(10));
    assert!(
        served,
        "no inventory from the device:\n{}",
        log_tail(&log, 30)
    );
    let info = server.device(&id).unwrap();
    assert_eq!(info.key_type, "Ed25519");
    assert_eq!(info.tier.as_deref(), Some("micro"));
    assert_eq!(server.device_ids(), [id]);
    server.assert_no_violations();
}

#[test]
fn the_https_client_key_signs_only_when_there_is_no_mender_agent_pem() {
    let server = MenderServer::start();
    let d = AuthDevice::new(Some(&server));
    let client_key = d.dev.path("etc/client.key");
    let client_cert = d.dev.path("etc/client.crt");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        client_key.to_str().unwrap(),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-key",
        client_key.to_str().unwrap(),
        "-subj",
        "/CN=device",
        "-days",
        "1",
        "-out",
        client_cert.to_str().unwrap(),
    ]);
    d.dev.set_config(
        "HttpsClient",
        serde_json::json!({
            "Certificate": client_cert.to_str().unwrap(),
            "Key": client_key.to_str().unwrap(),
        }),
    );
    // As Mender 3.x: no mender-agent.pem, so the HttpsClient key signs (and
    // none is created).
    assert_exit(&d.run(&["bootstrap"]), 0, "bootstrap with HttpsClient");
    device_of(&server, &client_key, None);
    assert!(!d.key_path().exists());
    // As Mender 4.x/5.x: mender-agent.pem is the device's key even with
    // HttpsClient set. Through 3.x's own command, `mender bootstrap`.
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        d.key_path().to_str().unwrap(),
    ]);
    let mender = d.dev.path("mender");
    std::os::unix::fs::symlink(BIN, &mender).unwrap();
    let mut cmd = d.dev.command_as(&mender);
    cmd.arg("bootstrap");
    let out = run_bounded(&mut cmd, DEFAULT_TIMEOUT);
    assert_exit(&out, 0, "mender bootstrap with mender-agent.pem");
    device_of(&server, &d.key_path(), None);
    assert_eq!(server.device_ids().len(), 2);
    server.assert_no_violations();
}
