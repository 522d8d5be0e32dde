//! The device key checked against OpenSSL: keys we write are readable by
//! `openssl`, keys `openssl` writes are readable by us, and signatures made
//! by either side verify on the other (the server verifies with Go's crypto,
//! which agrees with OpenSSL on these formats).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mender_rs::device_key::{DeviceKey, DeviceKeyError, DeviceKeyType};

const BODY: &[u8] = b"{\"id_data\":\"{\\\"mac\\\":\\\"52:54:00:12:34:56\\\"}\",\"tenant_token\":\"\",\"pubkey\":\"...\"}\n";

pub(super) fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("openssl not found; skipping");
    }
    ok
}

/// Runs openssl; panics with its stderr on failure.
pub(super) fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(super) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The public key in the form `openssl pkey -pubout` writes it.
fn openssl_public(key: &Path) -> String {
    openssl(&["pkey", "-in", s(key), "-pubout"])
}

/// Verifies `sig` over `body` with the public key PEM, using openssl.
fn openssl_verifies(
    dir: &Path,
    key_type: DeviceKeyType,
    public_pem: &str,
    body: &[u8],
    sig: &[u8],
) -> bool {
    let public = dir.join("verify-pub.pem");
    let data = dir.join("verify-body");
    let sigfile = dir.join("verify-sig");
    std::fs::write(&public, public_pem).unwrap();
    std::fs::write(&data, body).unwrap();
    std::fs::write(&sigfile, sig).unwrap();
    let args: Vec<&str> = match key_type {
        DeviceKeyType::Ed25519 => vec![
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            s(&public),
            "-rawin",
            "-in",
            s(&data),
            "-sigfile",
            s(&sigfile),
        ],
        _ => vec![
            "dgst",
            "-sha256",
            "-verify",
            s(&public),
            "-signature",
            s(&sigfile),
            s(&data),
        ],
    };
    Command::new("openssl")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Everything a key must satisfy, whoever made it.
pub(super) fn check_key_against_openssl(dir: &Path, path: &Path, key: &DeviceKey) {
    assert_eq!(
        key.public_key_pem(),
        openssl_public(path),
        "{}",
        key.describe()
    );
    let sig = key.sign(BODY).unwrap();
    assert!(
        openssl_verifies(dir, key.key_type(), &key.public_key_pem(), BODY, &sig),
        "openssl does not verify our {} signature",
        key.describe()
    );
    assert!(!openssl_verifies(
        dir,
        key.key_type(),
        &key.public_key_pem(),
        b"tampered",
        &sig
    ));
    use base64::Engine as _;
    let header = key.signature_header(BODY).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(header)
        .unwrap();
    assert!(openssl_verifies(
        dir,
        key.key_type(),
        &key.public_key_pem(),
        BODY,
        &decoded
    ));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn rsa_3072_generated_key_works_with_openssl() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet.
    let path = dir.path().join("data/mender-agent.pem");
    let start = Instant::now();
    let (key, generated) = DeviceKey::load_or_generate(&path, DeviceKeyType::Rsa3072).unwrap();
    let took = start.elapsed();
    eprintln!(
        "RSA 3072 key generation took {took:.2?} ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(generated);
    assert_eq!(key.describe(), "RSA 3072");
    assert_eq!(key.key_type(), DeviceKeyType::Rsa3072);
    assert_eq!(mode(&path), 0o600);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(
        pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
        "{pem:.40}"
    );
    let text = openssl(&["rsa", "-in", s(&path), "-noout", "-text"]);
    assert!(
        text.contains("Private-Key: (3072 bit"),
        "{}",
        &text[..80.min(text.len())]
    );
    openssl(&["pkey", "-in", s(&path), "-noout"]);
    check_key_against_openssl(dir.path(), &path, &key);
    assert_eq!(entries(path.parent().unwrap()), ["mender-agent.pem"]);

    // Loaded again, unchanged.
    let before = std::fs::read(&path).unwrap();
    let (again, generated) = DeviceKey::load_or_generate(&path, DeviceKeyType::Ed25519).unwrap();
    assert!(!generated);
    assert_eq!(again.public_key_pem(), key.public_key_pem());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn ed25519_and_ecdsa_generated_keys_work_with_openssl() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (key_type, name) in [
        (DeviceKeyType::Ed25519, "ED25519"),
        (DeviceKeyType::EcdsaP256, "id-ecPublicKey"),
    ] {
        let path = dir.path().join(format!("{key_type}.pem"));
        let (key, generated) = DeviceKey::load_or_generate(&path, key_type).unwrap();
        assert!(generated);
        assert_eq!(key.key_type(), key_type);
        assert_eq!(mode(&path), 0o600);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let text = openssl(&["pkey", "-in", s(&path), "-noout", "-text"]);
        if key_type == DeviceKeyType::EcdsaP256 {
            assert!(
                text.contains("P-256") || text.contains("prime256v1"),
                "{text}"
            );
        } else {
            assert!(text.contains(name), "{text}");
        }
        check_key_against_openssl(dir.path(), &path, &key);
        let loaded = DeviceKey::load(&path).unwrap();
        assert_eq!(loaded.public_key_pem(), key.public_key_pem());
    }
}

#[test]
fn keys_made_by_openssl_load_and_sign() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], DeviceKeyType, &str, &str)] = &[
        (
            "rsa-pkcs1.pem",
            &["genrsa", "-traditional", "2048"],
            DeviceKeyType::Rsa3072,
            "RSA 2048",
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        (
            "rsa-pkcs8.pem",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:3072",
            ],
            DeviceKeyType::Rsa3072,
            "RSA 3072",
            "-----BEGIN PRIVATE KEY-----",
        ),
        (
            "ec-pkcs8.pem",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
            DeviceKeyType::EcdsaP256,
            "ECDSA P-256",
            "-----BEGIN PRIVATE KEY-----",
        ),
        (
            "ec-sec1.pem",
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            DeviceKeyType::EcdsaP256,
            "ECDSA P-256",
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        (
            "ec-sec1-params.pem",
            &["ecparam", "-name", "prime256v1", "-genkey"],
            DeviceKeyType::EcdsaP256,
            "ECDSA P-256",
            "-----BEGIN EC PARAMETERS-----",
        ),
        (
            "ed25519.pem",
            &["genpkey", "-algorithm", "ed25519"],
            DeviceKeyType::Ed25519,
            "Ed25519",
            "-----BEGIN PRIVATE KEY-----",
        ),
    ];
    for (file, args, key_type, describe, first_line) in cases {
        let path = dir.path().join(file);
        // genrsa wants the size last: "-out" goes right after the command.
        let mut full: Vec<&str> = vec![args[0], "-out", s(&path)];
        full.extend(&args[1..]);
        openssl(&full);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with(first_line), "{file}: {pem:.40}");
        let before = std::fs::read(&path).unwrap();
        let (key, generated) = DeviceKey::load_or_generate(&path, DeviceKeyType::Ed25519)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!generated, "{file}");
        assert_eq!(key.key_type(), *key_type, "{file}");
        assert_eq!(key.describe(), *describe, "{file}");
        check_key_against_openssl(dir.path(), &path, &key);
        assert_eq!(std::fs::read(&path).unwrap(), before, "{file} was modified");
    }
}

fn load_error(path: &Path) -> String {
    let err = DeviceKey::load(path).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(s(path)),
        "error does not name the file: {text}"
    );
    text
}

#[test]
fn unusable_keys_are_refused_with_clear_errors() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let small = d.join("rsa1024.pem");
    openssl(&["genrsa", "-traditional", "-out", s(&small), "1024"]);
    assert!(load_error(&small).contains("1024 bits"));

    let p384 = d.join("p384.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        s(&p384),
    ]);
    assert!(load_error(&p384).contains("curve"));

    let encrypted = d.join("encrypted.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-aes-128-cbc",
        "-pass",
        "pass:x",
        "-out",
        s(&encrypted),
    ]);
    assert!(load_error(&encrypted).contains("encrypted"));

    let public = d.join("public.pem");
    let (key, _) = DeviceKey::load_or_generate(&d.join("k.pem"), DeviceKeyType::Ed25519).unwrap();
    std::fs::write(&public, key.public_key_pem()).unwrap();
    assert!(load_error(&public).contains("public key"));

    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, b"\x00\x01 not a key").unwrap();
    load_error(&garbage);

    let truncated = d.join("truncated.pem");
    let full = std::fs::read_to_string(d.join("k.pem")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    assert!(load_error(&truncated).contains("truncated"));
}

#[test]
fn existing_empty_or_unreadable_key_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, b"").unwrap();
    let err = DeviceKey::load_or_generate(&empty, DeviceKeyType::Ed25519).unwrap_err();
    assert!(matches!(err, DeviceKeyError::Empty { .. }), "{err}");
    assert!(err.to_string().contains(s(&empty)));
    assert_eq!(std::fs::read(&empty).unwrap(), b"");

    // A directory where the key should be: unreadable as a file.
    let not_file = dir.path().join("dir.pem");
    std::fs::create_dir(&not_file).unwrap();
    let err = DeviceKey::load_or_generate(&not_file, DeviceKeyType::Ed25519).unwrap_err();
    assert!(err.to_string().contains(s(&not_file)), "{err}");
    assert!(not_file.is_dir());

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, b"junk").unwrap();
    assert!(DeviceKey::load_or_generate(&garbage, DeviceKeyType::Ed25519).is_err());
    assert_eq!(std::fs::read(&garbage).unwrap(), b"junk");
}

#[test]
fn generate_replacing_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mender-agent.pem");
    std::fs::write(&path, b"junk").unwrap();
    let key = DeviceKey::generate_replacing(&path, DeviceKeyType::EcdsaP256).unwrap();
    assert_eq!(mode(&path), 0o600);
    let loaded = DeviceKey::load(&path).unwrap();
    assert_eq!(loaded.public_key_pem(), key.public_key_pem());
    let other = DeviceKey::generate_replacing(&path, DeviceKeyType::Ed25519).unwrap();
    assert_ne!(other.public_key_pem(), key.public_key_pem());
    assert_eq!(
        DeviceKey::load(&path).unwrap().key_type(),
        DeviceKeyType::Ed25519
    );
    assert_eq!(entries(dir.path()), ["mender-agent.pem"]);
}

const CHILD_ENV: &str = "MENDER_RS_TEST_KEYGEN_CHILD";

/// Not a test by itself: the body of the child process that
/// `generation_is_crash_safe` kills at arbitrary moments.
#[test]
fn keygen_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let Some((key_type, path)) = spec.split_once(':') else {
        return;
    };
    let key_type: DeviceKeyType = key_type.parse().unwrap();
    DeviceKey::load_or_generate(Path::new(path), key_type).unwrap();
}

/// Kills generating processes at various moments: afterwards there is either
/// no key or a complete, loadable one; a later run finishes the job and
/// leaves no temporary files; an existing key is never touched.
#[test]
fn generation_is_crash_safe() {
    let exe = std::env::current_exe().unwrap();
    // The child runs `keygen_child` alone; its name in the test binary
    // carries the module path below the tier root (`device_key::…`).
    let child_test = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::keygen_child"),
        None => "keygen_child".to_string(),
    };
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut outcomes = [0usize; 2];
    for (round, key_type) in [
        DeviceKeyType::Ed25519,
        DeviceKeyType::EcdsaP256,
        DeviceKeyType::Rsa3072,
    ]
    .into_iter()
    .cycle()
    .take(24)
    .enumerate()
    {
        if Instant::now() > deadline {
            break;
        }
        let path: PathBuf = dir.path().join(format!("round{round}/mender-agent.pem"));
        let mut child = Command::new(&exe)
            .args(["--exact", &child_test, "--test-threads=1", "--quiet"])
            .env(CHILD_ENV, format!("{key_type}:{}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over start-up, generation and writing.
        std::thread::sleep(Duration::from_millis((round as u64 * 7) % 60));
        let _ = child.kill();
        let _ = child.wait();
        if path.exists() {
            outcomes[1] += 1;
            DeviceKey::load(&path).unwrap_or_else(|e| panic!("round {round}: partial key: {e}"));
            let before = std::fs::read(&path).unwrap();
            let (_, generated) = DeviceKey::load_or_generate(&path, key_type).unwrap();
            assert!(!generated);
            assert_eq!(std::fs::read(&path).unwrap(), before);
        } else {
            outcomes[0] += 1;
            if key_type != DeviceKeyType::Rsa3072 {
                // (RSA generation is too slow in debug builds to redo 8 times.)
                let (_, generated) = DeviceKey::load_or_generate(&path, key_type).unwrap();
                assert!(generated);
            }
        }
        if let Some(parent) = path.parent().filter(|p| p.exists()) {
            let names = entries(parent);
            let leftovers: Vec<_> = names.iter().filter(|n| n.ends_with(".tmp")).collect();
            if path.exists() {
                assert!(leftovers.is_empty(), "round {round}: {names:?}");
            }
        }
    }
    eprintln!(
        "killed before the key existed: {}, after: {}",
        outcomes[0], outcomes[1]
    );
}
