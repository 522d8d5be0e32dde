//! Inputs generated at test time: payload files, state scripts, meta-data,
//! keys.

use super::*;

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Deterministic, incompressible-looking bytes (xorshift64*).
pub(super) fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in seed.bytes() {
        state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    state |= 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Keys made with `openssl`: RSA-3072 (PKCS#1 and PKCS#8) and EC P-256
/// (SEC1 and PKCS#8), plus one unrelated key of each kind.
pub(super) struct Keys {
    pub(super) dir: PathBuf,
}

impl Keys {
    pub(super) fn generate(dir: &Path) -> Keys {
        fs::create_dir_all(dir).expect("create key dir");
        let steps: &[&[&str]] = &[
            &["genrsa", "-traditional", "-out", "rsa.key", "3072"],
            &["rsa", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"],
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "rsa.key", "-out", "rsa8.key",
            ],
            &["genrsa", "-traditional", "-out", "rsa-other.key", "2048"],
            &[
                "rsa",
                "-in",
                "rsa-other.key",
                "-pubout",
                "-out",
                "rsa-other.pub",
            ],
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                "ec.key",
            ],
            &["ec", "-in", "ec.key", "-pubout", "-out", "ec.pub"],
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "ec.key", "-out", "ec8.key",
            ],
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-noout",
                "-out",
                "ec-other.key",
            ],
            &[
                "ec",
                "-in",
                "ec-other.key",
                "-pubout",
                "-out",
                "ec-other.pub",
            ],
        ];
        for args in steps {
            let out = run_in(dir, "openssl", *args);
            assert_ok(&out, &format!("openssl {args:?}"));
        }
        let keys = Keys {
            dir: dir.to_path_buf(),
        };
        for (name, header) in [
            ("rsa.key", "-----BEGIN RSA PRIVATE KEY-----"),
            ("rsa8.key", "-----BEGIN PRIVATE KEY-----"),
            ("ec.key", "-----BEGIN EC PRIVATE KEY-----"),
            ("ec8.key", "-----BEGIN PRIVATE KEY-----"),
            ("rsa.pub", "-----BEGIN PUBLIC KEY-----"),
            ("ec.pub", "-----BEGIN PUBLIC KEY-----"),
        ] {
            let text = fs::read_to_string(keys.path(name)).expect("read key");
            assert!(
                text.starts_with(header),
                "{name} should start with {header}: {text}"
            );
        }
        keys
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Signer {
    Unsigned,
    /// RSA-3072, PKCS#1 private key.
    Rsa,
    /// The same RSA key as PKCS#8.
    Rsa8,
    /// EC P-256, SEC1 private key.
    Ec,
    /// The same EC key as PKCS#8.
    Ec8,
}

impl Signer {
    pub(super) fn private(self, keys: &Keys) -> Option<PathBuf> {
        match self {
            Signer::Unsigned => None,
            Signer::Rsa => Some(keys.path("rsa.key")),
            Signer::Rsa8 => Some(keys.path("rsa8.key")),
            Signer::Ec => Some(keys.path("ec.key")),
            Signer::Ec8 => Some(keys.path("ec8.key")),
        }
    }

    pub(super) fn public(self, keys: &Keys) -> Option<PathBuf> {
        match self {
            Signer::Unsigned => None,
            Signer::Rsa | Signer::Rsa8 => Some(keys.path("rsa.pub")),
            Signer::Ec | Signer::Ec8 => Some(keys.path("ec.pub")),
        }
    }

    /// Public keys that must not verify the signature: another key of the
    /// same kind and a key of the other kind.
    pub(super) fn wrong_publics(self, keys: &Keys) -> Vec<PathBuf> {
        match self {
            Signer::Unsigned => vec![],
            Signer::Rsa | Signer::Rsa8 => vec![keys.path("rsa-other.pub"), keys.path("ec.pub")],
            Signer::Ec | Signer::Ec8 => vec![keys.path("ec-other.pub"), keys.path("rsa.pub")],
        }
    }

    pub(super) fn expected_state(self) -> Sig {
        if self == Signer::Unsigned {
            Sig::None
        } else {
            Sig::Verified
        }
    }
}

/// `-k PUB` if there is a key, nothing otherwise.
pub(super) fn key_args(key: &Option<PathBuf>) -> Vec<OsString> {
    match key {
        Some(k) => vec!["-k".into(), os(k)],
        None => vec![],
    }
}

pub(super) fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
