//! Device keys and request signatures, made with the `openssl` command.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Rsa,
    Ec,
    Ed25519,
}

pub(super) struct Key {
    pub(super) kind: Kind,
    pub(super) private: PathBuf,
    pub(super) pem: String,
}

pub(super) struct Keys {
    pub(super) _dir: tempfile::TempDir,
    pub(super) rsa: Key,
    pub(super) ec: Key,
    pub(super) ed: Key,
    /// More EC keys for multi-device tests.
    pub(super) fleet: Vec<Key>,
}

pub(super) fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub(super) fn make_key(dir: &Path, name: &str, kind: Kind) -> Key {
    let private = dir.join(format!("{name}.pem"));
    let p = private.to_str().unwrap();
    match kind {
        Kind::Rsa => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
            p,
        ]),
        Kind::Ec => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]),
        Kind::Ed25519 => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
    };
    let pem = String::from_utf8(openssl(&["pkey", "-in", p, "-pubout"])).unwrap();
    Key { kind, private, pem }
}

pub(super) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Keys {
            rsa: make_key(d, "rsa", Kind::Rsa),
            ec: make_key(d, "ec", Kind::Ec),
            ed: make_key(d, "ed", Kind::Ed25519),
            fleet: (0..6)
                .map(|i| make_key(d, &format!("fleet{i}"), Kind::Ec))
                .collect(),
            _dir: dir,
        }
    })
}

impl Key {
    /// base64 of the signature of `body`: `openssl dgst -sha256 -sign` for
    /// RSA (PKCS#1 v1.5) and ECDSA (DER), `openssl pkeyutl -rawin` for Ed25519.
    pub(super) fn sign(&self, body: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("body");
        let output = dir.path().join("sig");
        std::fs::write(&input, body).unwrap();
        let (k, i, o) = (
            self.private.to_str().unwrap(),
            input.to_str().unwrap(),
            output.to_str().unwrap(),
        );
        match self.kind {
            Kind::Rsa | Kind::Ec => openssl(&["dgst", "-sha256", "-sign", k, "-out", o, i]),
            Kind::Ed25519 => openssl(&[
                "pkeyutl", "-sign", "-rawin", "-inkey", k, "-in", i, "-out", o,
            ]),
        };
        STANDARD.encode(std::fs::read(&output).unwrap())
    }

    pub(super) fn id(&self) -> String {
        device_id_of(&self.pem).expect("device id of an openssl key")
    }
}
