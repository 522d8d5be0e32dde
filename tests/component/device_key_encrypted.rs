//! Device keys encrypted with a passphrase, as `openssl` writes them: PKCS#8
//! `ENCRYPTED PRIVATE KEY` (PBES2 with PBKDF2 or scrypt, AES-CBC) and the
//! legacy `Proc-Type: 4,ENCRYPTED` PEM. Each decrypted key must be the
//! key openssl reads from the same file (the same public key, signatures
//! openssl verifies); wrong or missing passphrases, unsupported ciphers
//! and costly parameters are refused with errors naming the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mender_rs::device_key::{DeviceKey, DeviceKeyError, DeviceKeyType};

use super::device_key::{check_key_against_openssl, have_openssl, openssl, s};

const PASS: &str = "correct horse battery staple";

/// A plain key of `kind` made by openssl in `dir`.
fn plain_key(dir: &Path, kind: &str) -> PathBuf {
    let path = dir.join(format!("{kind}.pem"));
    let args: &[&str] = match kind {
        "ed25519" => &["genpkey", "-algorithm", "ed25519"],
        "rsa" => &[
            "genpkey",
            "-algorithm",
            "rsa",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        "ec" => &[
            "genpkey",
            "-algorithm",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        other => panic!("no key kind {other}"),
    };
    let mut args = args.to_vec();
    args.extend(["-out", s(&path)]);
    openssl(&args);
    path
}

/// `plain` encrypted into `name` by `openssl <args> -in plain -out name -passout pass:PASS`.
fn encrypt(dir: &Path, plain: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let passout = format!("pass:{PASS}");
    let mut all = args.to_vec();
    all.extend(["-in", s(plain), "-out", s(&out), "-passout", &passout]);
    openssl(&all);
    out
}

fn load_error(path: &Path, passphrase: Option<&str>) -> String {
    match DeviceKey::load_with_passphrase(path, passphrase.map(str::as_bytes)) {
        Ok(key) => panic!("{} loaded as {key:?}", path.display()),
        Err(e) => {
            assert!(
                matches!(e, DeviceKeyError::Invalid { .. }),
                "{}: {e}",
                path.display()
            );
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "the error names the file: {message}"
            );
            message
        }
    }
}

#[test]
fn pkcs8_pbes2_keys_from_openssl_decrypt_to_the_same_key() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, &[&str])] = &[
        // `openssl genpkey -aes256` writes this: PBKDF2-HMAC-SHA256, AES-256-CBC.
        ("ed25519", &["pkcs8", "-topk8", "-v2", "aes256"]),
        ("rsa", &["pkcs8", "-topk8", "-v2", "aes256"]),
        ("ec", &["pkcs8", "-topk8", "-v2", "aes256"]),
        (
            "ed25519",
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes128",
                "-v2prf",
                "hmacWithSHA512",
            ],
        ),
        // The PRF of OpenSSL before 1.1.
        (
            "rsa",
            &["pkcs8", "-topk8", "-v2", "aes256", "-v2prf", "hmacWithSHA1"],
        ),
        (
            "ec",
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes256",
                "-v2prf",
                "hmacWithSHA384",
            ],
        ),
        (
            "ec",
            &["pkcs8", "-topk8", "-v2", "aes192", "-iter", "100000"],
        ),
        // scrypt with openssl's defaults (N=16384, r=8, p=1: 16 MiB).
        ("ed25519", &["pkcs8", "-topk8", "-scrypt"]),
        ("rsa", &["pkcs8", "-topk8", "-scrypt"]),
    ];
    for (i, (kind, args)) in cases.iter().enumerate() {
        let plain = plain_key(d, kind);
        let encrypted = encrypt(d, &plain, &format!("enc-{i}.pem"), args);
        let text = std::fs::read_to_string(&encrypted).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let key = DeviceKey::load_with_passphrase(&encrypted, Some(PASS.as_bytes()))
            .unwrap_or_else(|e| panic!("{kind} {args:?}: {e}"));
        check_key_against_openssl(d, &plain, &key);
    }
}

#[test]
fn genpkey_aes256_key_decrypts() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("genpkey.pem");
    let pass = format!("pass:{PASS}");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-aes256",
        "-pass",
        &pass,
        "-out",
        s(&path),
    ]);
    let key = DeviceKey::load_with_passphrase(&path, Some(PASS.as_bytes())).unwrap();
    assert_eq!(key.key_type(), DeviceKeyType::Ed25519);
    let public = openssl(&["pkey", "-in", s(&path), "-passin", &pass, "-pubout"]);
    assert_eq!(key.public_key_pem(), public);
}

#[test]
fn legacy_openssl_encrypted_pem_decrypts() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, &[&str])] = &[
        ("rsa", &["rsa", "-traditional", "-aes256"]),
        ("rsa", &["rsa", "-traditional", "-aes128"]),
        ("ec", &["ec", "-aes192"]),
        ("ec", &["ec", "-aes256"]),
    ];
    for (i, (kind, args)) in cases.iter().enumerate() {
        let plain = plain_key(d, kind);
        let encrypted = encrypt(d, &plain, &format!("legacy-{i}.pem"), args);
        let text = std::fs::read_to_string(&encrypted).unwrap();
        assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{text}");
        let key = DeviceKey::load_with_passphrase(&encrypted, Some(PASS.as_bytes()))
            .unwrap_or_else(|e| panic!("{kind} {args:?}: {e}"));
        check_key_against_openssl(d, &plain, &key);
    }
}

#[test]
fn wrong_or_missing_passphrase_is_an_error_naming_the_file() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = plain_key(d, "ed25519");
    let rsa = plain_key(d, "rsa");
    let files = [
        encrypt(
            d,
            &plain,
            "pbkdf2.pem",
            &["pkcs8", "-topk8", "-v2", "aes256"],
        ),
        encrypt(d, &plain, "scrypt.pem", &["pkcs8", "-topk8", "-scrypt"]),
        encrypt(d, &rsa, "legacy.pem", &["rsa", "-traditional", "-aes256"]),
    ];
    for file in &files {
        let before = std::fs::read(file).unwrap();
        for wrong in ["", "correct horse battery stapl", "x"] {
            let message = load_error(file, Some(wrong));
            assert!(message.contains("wrong passphrase"), "{message}");
        }
        let message = load_error(file, None);
        assert!(
            message.contains("encrypted with a passphrase")
                && message.contains("--passphrase-file"),
            "{message}"
        );
        // load_or_generate never replaces a key it cannot decrypt.
        let err = DeviceKey::load_or_generate_with_passphrase(
            file,
            DeviceKeyType::Ed25519,
            Some(b"wrong"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        assert_eq!(std::fs::read(file).unwrap(), before);
    }
    // The right passphrase through load_or_generate: the key there, kept.
    let before = std::fs::read(&files[0]).unwrap();
    let (key, generated) = DeviceKey::load_or_generate_with_passphrase(
        &files[0],
        DeviceKeyType::Rsa3072,
        Some(PASS.as_bytes()),
    )
    .unwrap();
    assert!(!generated);
    check_key_against_openssl(d, &plain, &key);
    assert_eq!(std::fs::read(&files[0]).unwrap(), before);
}

#[test]
fn a_passphrase_for_a_plain_key_is_not_needed_and_ignored() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = plain_key(dir.path(), "ec");
    let key = DeviceKey::load_with_passphrase(&plain, Some(b"anything")).unwrap();
    check_key_against_openssl(dir.path(), &plain, &key);
}

#[test]
fn unsupported_encryption_is_named() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rsa = plain_key(d, "rsa");
    let des3 = encrypt(d, &rsa, "des3.pem", &["rsa", "-traditional", "-des3"]);
    let message = load_error(&des3, Some(PASS));
    assert!(
        message.contains("DES-EDE3-CBC") && message.contains("not supported"),
        "{message}"
    );
    let ed = plain_key(d, "ed25519");
    let sha224 = encrypt(
        d,
        &ed,
        "sha224.pem",
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes256",
            "-v2prf",
            "hmacWithSHA224",
        ],
    );
    let message = load_error(&sha224, Some(PASS));
    assert!(message.contains("unsupported PRF"), "{message}");
    let camellia = encrypt(
        d,
        &ed,
        "camellia.pem",
        &["pkcs8", "-topk8", "-v2", "camellia256"],
    );
    let message = load_error(&camellia, Some(PASS));
    assert!(
        message.contains("unsupported algorithm") && message.contains("AES-128/192/256-CBC"),
        "{message}"
    );
    // A PKCS#12 scheme (openssl's -v1; its PBES1 ones need the legacy
    // provider).
    let pkcs12 = encrypt(
        d,
        &ed,
        "pkcs12.pem",
        &["pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES"],
    );
    let message = load_error(&pkcs12, Some(PASS));
    assert!(
        message.contains("unsupported algorithm") && message.contains("1.2.840.113549.1.12.1.3"),
        "{message}"
    );
}

/// An openssl-made PKCS#8 key with its key-derivation parameters changed
/// by `change` (the ciphertext stays: the refusal must come first).
fn with_kdf(
    dir: &Path,
    name: &str,
    args: &[&str],
    change: impl FnOnce(&mut pkcs8::pkcs5::pbes2::Kdf<'_>),
) -> PathBuf {
    use pkcs8::der::{Decode as _, Encode as _};
    let plain = plain_key(dir, "ed25519");
    let encrypted = encrypt(dir, &plain, &format!("{name}.src.pem"), args);
    let text = std::fs::read_to_string(&encrypted).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = b64.decode(body).unwrap();
    let mut info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der).unwrap();
    let pkcs8::pkcs5::EncryptionScheme::Pbes2(params) = &mut info.encryption_algorithm else {
        panic!("openssl wrote PBES1")
    };
    change(&mut params.kdf);
    let changed = info.to_der().unwrap();
    let encoded = b64.encode(changed);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{}\n-----END ENCRYPTED PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn costly_key_derivation_is_refused_before_any_work() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    use pkcs8::pkcs5::pbes2::Kdf;
    let iterations = with_kdf(d, "iter", &["pkcs8", "-topk8", "-v2", "aes256"], |kdf| {
        let Kdf::Pbkdf2(p) = kdf else { panic!() };
        p.iteration_count = u32::MAX;
    });
    let memory = with_kdf(d, "scrypt-n", &["pkcs8", "-topk8", "-scrypt"], |kdf| {
        let Kdf::Scrypt(p) = kdf else { panic!() };
        p.cost_parameter = 1 << 20; // 1 GiB with r = 8
    });
    let work = with_kdf(d, "scrypt-p", &["pkcs8", "-topk8", "-scrypt"], |kdf| {
        let Kdf::Scrypt(p) = kdf else { panic!() };
        p.parallelization = 1000; // 16 MiB each, a thousand times
    });
    for (path, words) in [
        (&iterations, "PBKDF2 iteration count"),
        (&memory, "scrypt parameters"),
        (&work, "scrypt parameters"),
    ] {
        let started = Instant::now();
        let message = load_error(path, Some(PASS));
        assert!(message.contains(words), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refused only after {:?}",
            started.elapsed()
        );
    }
    // The same files with their own parameters still decrypt (the change
    // above is what is refused).
    let fine = with_kdf(d, "fine", &["pkcs8", "-topk8", "-scrypt"], |_| {});
    DeviceKey::load_with_passphrase(&fine, Some(PASS.as_bytes())).unwrap();
}

#[test]
fn damaged_encrypted_keys_are_errors_not_panics() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = plain_key(d, "rsa");
    let pkcs8 = std::fs::read_to_string(encrypt(
        d,
        &plain,
        "p8.pem",
        &["pkcs8", "-topk8", "-v2", "aes256"],
    ))
    .unwrap();
    let legacy = std::fs::read_to_string(encrypt(
        d,
        &plain,
        "legacy.pem",
        &["rsa", "-traditional", "-aes256"],
    ))
    .unwrap();
    let mut cases: Vec<String> = Vec::new();
    for text in [&pkcs8, &legacy] {
        let lines: Vec<&str> = text.lines().collect();
        // Every line but the blank one after the legacy headers dropped in
        // turn, and the body cut short.
        for skip in 1..lines.len() - 1 {
            if lines[skip].trim().is_empty() {
                continue;
            }
            let mut l = lines.clone();
            l.remove(skip);
            cases.push(l.join("\n"));
        }
        cases.push(format!(
            "{}\n{}\n",
            lines[..3].join("\n"),
            lines[lines.len() - 1]
        ));
    }
    cases.push(legacy.replace("DEK-Info: AES-256-CBC,", "DEK-Info: AES-256-CBC,zz"));
    cases.push(legacy.replace("DEK-Info: AES-256-CBC,", "DEK-Info: AES-256-CBC"));
    cases.push(legacy.replace("DEK-Info", "X-Info"));
    for (i, case) in cases.iter().enumerate() {
        let path = d.join(format!("damaged-{i}.pem"));
        std::fs::write(&path, case).unwrap();
        if let Ok(key) = DeviceKey::load_with_passphrase(&path, Some(PASS.as_bytes())) {
            panic!("case {i} loaded as {key:?}:\n{case}");
        }
    }
}

#[test]
fn the_default_generated_key_is_ed25519() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mender-agent.pem");
    let (key, generated) = DeviceKey::load_or_generate(&path, DeviceKeyType::default()).unwrap();
    assert!(generated);
    assert_eq!(key.key_type(), DeviceKeyType::Ed25519);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
}
