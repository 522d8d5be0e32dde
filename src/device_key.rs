//! The device's own key pair: the identity the device proves to the server
//! when it authenticates (`docs/managed-mode.md`, "The server API"), kept in `<DataStore>/mender-agent.pem`.
//!
//! Formats read: PKCS#1 `RSA PRIVATE KEY` (what Mender 3.x writes), PKCS#8
//! `PRIVATE KEY` (RSA, EC P-256 or Ed25519, v1 or v2) and SEC1
//! `EC PRIVATE KEY` (optionally preceded by an `EC PARAMETERS` block); each
//! may be encrypted with a passphrase as OpenSSL does it ([`encrypted`]).
//! Formats written: RSA as PKCS#1 so the reference client can read the key
//! back, Ed25519 and EC P-256 as PKCS#8 v1 (what `openssl genpkey` writes).
//!
//! Signatures for the auth request: RSA PKCS#1 v1.5 over SHA-256, ECDSA
//! P-256 over SHA-256 as an ASN.1 DER `SEQUENCE { r, s }` (unlike artifact
//! signatures, which use raw `r || s`), Ed25519 over the message itself.
//!
//! The PEM reading is the artifact keys' ([`crate::artifact::signature`]);
//! this module builds ring's key pairs from what it reads.
//!
//! A key that exists is never replaced implicitly: the server knows the
//! device by it, so an unreadable or empty file is an error, and only
//! [`DeviceKey::generate_replacing`] overwrites one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::asn1::{AnyRef, BitStringRef, Null, ObjectIdentifier};
use der::{Decode, Encode};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};

use crate::artifact::signature::{
    OID_EC, OID_ED25519, OID_P256, OID_RSA, PemKey, SignatureError, Wanted, parse_pem_key,
    pem_encode,
};
use crate::fsutil;

#[cfg(feature = "encrypted-keys")]
pub mod encrypted;

/// Longest passphrase of an encrypted key: OpenSSL's own prompt and
/// callbacks hold at most 1024 bytes (`PEM_BUFSIZE`), so a longer one
/// cannot have been used to encrypt a key with its tools.
pub const MAX_PASSPHRASE_LEN: usize = 1024;

/// Smallest RSA modulus accepted for a device key (that of artifact keys).
pub const RSA_MIN_BITS: usize = crate::artifact::signature::RSA_MIN_BITS;
/// Size of generated RSA keys (what Mender 3.x generates).
pub const RSA_GENERATED_BITS: usize = 3072;
/// Mode of the key file.
pub const KEY_FILE_MODE: u32 = 0o600;

/// Largest device key file read: a PEM RSA key of 16384 bits is about
/// 13 KiB, the largest that could be of use; a larger file is not a key.
pub const MAX_KEY_FILE_LEN: u64 = 64 << 10;

/// Why the device key could not be loaded, created or used. Messages are
/// single lines and never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum DeviceKeyError {
    #[error("cannot read device key {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error(
        "device key {} is empty; refusing to replace it implicitly (the device identity would change); remove it or force regeneration",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error("device key {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write device key {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("cannot generate a {key_type} device key: {reason}")]
    Generate {
        key_type: DeviceKeyType,
        reason: String,
    },
    #[error("signing with the {key} device key failed")]
    Sign { key: String },
    #[error("unknown device key type \"{0}\"; expected rsa3072, ed25519 or ecdsa-p256")]
    UnknownType(String),
}

pub type Result<T> = std::result::Result<T, DeviceKeyError>;

/// The kind of key generated when none exists. Ed25519 by default, as
/// Mender 5.x generates (`docs/managed-mode.md`, "The device key").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceKeyType {
    Rsa3072,
    #[default]
    Ed25519,
    EcdsaP256,
}

impl FromStr for DeviceKeyType {
    type Err = DeviceKeyError;

    /// `rsa3072` (or `rsa`), `ed25519`, `ecdsa-p256` (or `ecdsa256`, `p256`); case-insensitive.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rsa3072" | "rsa" => Ok(Self::Rsa3072),
            "ed25519" => Ok(Self::Ed25519),
            "ecdsa-p256" | "ecdsa256" | "p256" => Ok(Self::EcdsaP256),
            _ => Err(DeviceKeyError::UnknownType(s.to_owned())),
        }
    }
}

impl fmt::Display for DeviceKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa3072 => "rsa3072",
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
        })
    }
}

/// The device's private key.
pub struct DeviceKey {
    pair: Pair,
    /// DER SubjectPublicKeyInfo of the public half.
    spki: Vec<u8>,
}

enum Pair {
    Rsa { pair: RsaKeyPair, bits: usize },
    EcdsaP256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl DeviceKey {
    /// Loads an existing key file. Errors name the file and the problem.
    pub fn load(path: &Path) -> Result<DeviceKey> {
        Self::load_with_passphrase(path, None)
    }

    /// Loads an existing key file that may be encrypted with `passphrase`
    /// (`mender-auth --passphrase-file`). The passphrase is not needed,
    /// and not used, for a key that is not encrypted (as with OpenSSL).
    pub fn load_with_passphrase(path: &Path, passphrase: Option<&[u8]>) -> Result<DeviceKey> {
        let pem = zeroize::Zeroizing::new(read_key_file(path)?);
        if pem.is_empty() {
            return Err(DeviceKeyError::Empty {
                path: path.to_owned(),
            });
        }
        let invalid = |reason| DeviceKeyError::Invalid {
            path: path.to_owned(),
            reason,
        };
        #[cfg(feature = "encrypted-keys")]
        if encrypted::protection(&pem) != encrypted::Protection::Plain {
            let Some(passphrase) = passphrase else {
                return Err(invalid(NEEDS_PASSPHRASE.to_owned()));
            };
            let plain = encrypted::decrypt_pem(&pem, passphrase).map_err(invalid)?;
            return Self::from_pem(&plain).map_err(invalid);
        }
        // Without the feature the reader refuses an encrypted key (reason()).
        #[cfg(not(feature = "encrypted-keys"))]
        let _ = passphrase;
        Self::from_pem(&pem).map_err(invalid)
    }

    /// Loads the key at `path`, or generates one of `key_type` if there is
    /// no file there (then `true`). The new key is written crash-safely with
    /// mode 0600 and never over an existing file: if another process created
    /// the key meanwhile, that key is loaded instead. The parent directory
    /// is created if missing.
    pub fn load_or_generate(path: &Path, key_type: DeviceKeyType) -> Result<(DeviceKey, bool)> {
        Self::load_or_generate_with_passphrase(path, key_type, None)
    }

    /// [`Self::load_or_generate`] for a key that may be encrypted with
    /// `passphrase`; a generated key is written unencrypted, as Mender
    /// 4.x/5.x write theirs.
    pub fn load_or_generate_with_passphrase(
        path: &Path,
        key_type: DeviceKeyType,
        passphrase: Option<&[u8]>,
    ) -> Result<(DeviceKey, bool)> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                let key = Self::load_with_passphrase(path, passphrase)?;
                remove_stale_temps(path);
                return Ok((key, false));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(DeviceKeyError::Read {
                    path: path.to_owned(),
                    error,
                });
            }
        }
        let (key, pem) = Self::generate(key_type)?;
        let write_err = |error| DeviceKeyError::Write {
            path: path.to_owned(),
            error,
        };
        create_parent(path).map_err(write_err)?;
        match write_new(path, pem.as_bytes()) {
            Ok(()) => {
                remove_stale_temps(path);
                Ok((key, true))
            }
            // Another process created the key meanwhile: that one counts.
            Err(_) if path.exists() => {
                Self::load_with_passphrase(path, passphrase).map(|key| (key, false))
            }
            Err(e) => Err(write_err(e)),
        }
    }

    /// Generates a new key and writes it over whatever is at `path`
    /// (crash-safely: the old key stays until the new one is complete).
    /// For an explicit, user-requested regeneration only.
    pub fn generate_replacing(path: &Path, key_type: DeviceKeyType) -> Result<DeviceKey> {
        let (key, pem) = Self::generate(key_type)?;
        let write_err = |error| DeviceKeyError::Write {
            path: path.to_owned(),
            error,
        };
        create_parent(path).map_err(write_err)?;
        fsutil::write_atomic(path, pem.as_bytes(), KEY_FILE_MODE).map_err(write_err)?;
        remove_stale_temps(path);
        Ok(key)
    }

    /// A new key and its PEM file content.
    fn generate(key_type: DeviceKeyType) -> Result<(DeviceKey, String)> {
        let failed = |reason: String| DeviceKeyError::Generate { key_type, reason };
        let rng = SystemRandom::new();
        let pem = match key_type {
            DeviceKeyType::Rsa3072 => {
                use rsa::pkcs1::EncodeRsaPrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_GENERATED_BITS)
                    .map_err(|e| failed(e.to_string()))?;
                let der = key.to_pkcs1_der().map_err(|e| failed(e.to_string()))?;
                pem_encode("RSA PRIVATE KEY", der.as_bytes())
            }
            DeviceKeyType::Ed25519 => {
                let v2 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| failed(e.to_string()))?;
                // ring writes PKCS#8 v2 (with the public key); write v1 as
                // `openssl genpkey` does, which every reader understands.
                let mut info = pkcs8::PrivateKeyInfo::from_der(v2.as_ref())
                    .map_err(|e| failed(e.to_string()))?;
                info.public_key = None;
                let v1 = info.to_der().map_err(|e| failed(e.to_string()))?;
                pem_encode("PRIVATE KEY", &v1)
            }
            DeviceKeyType::EcdsaP256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map_err(|e| failed(e.to_string()))?;
                pem_encode("PRIVATE KEY", doc.as_ref())
            }
        };
        // Read back what will be stored, so the key in use is the key on disk.
        let key = Self::from_pem(pem.as_bytes()).map_err(failed)?;
        Ok((key, pem))
    }

    /// Parses PEM text; the error is a reason without the file name.
    fn from_pem(pem: &[u8]) -> std::result::Result<DeviceKey, String> {
        let pair = match parse_pem_key(pem, Wanted::PrivateKey).map_err(reason)? {
            PemKey::RsaPrivate { pkcs1, bits, .. } => Pair::Rsa {
                pair: RsaKeyPair::from_der(&pkcs1)
                    .map_err(|e| format!("RSA {bits} key rejected: {e}"))?,
                bits,
            },
            PemKey::EcPrivate { scalar, point } => Pair::EcdsaP256(
                EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_ASN1_SIGNING,
                    &scalar,
                    &point,
                    &SystemRandom::new(),
                )
                .map_err(|e| format!("ECDSA P-256 key rejected: {e}"))?,
            ),
            PemKey::Ed25519Private { pkcs8 } => Pair::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
                    .map_err(|e| format!("Ed25519 key rejected: {e}"))?,
            ),
            // Not asked for (Wanted::PrivateKey).
            PemKey::Public(_) => return Err(reason(SignatureError::NotPrivateKey)),
        };
        let spki = spki_der(&pair)?;
        Ok(DeviceKey { pair, spki })
    }

    /// The public key as PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`,
    /// 64-character lines, trailing newline): the auth request's `pubkey`.
    pub fn public_key_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.spki)
    }

    /// Signs `body` as the server expects for `X-MEN-Signature`
    /// (`docs/managed-mode.md`, "The server API").
    pub fn sign(&self, body: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        let failed = || DeviceKeyError::Sign {
            key: self.describe(),
        };
        match &self.pair {
            Pair::Rsa { pair, .. } => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, body, &mut sig)
                    .map_err(|_| failed())?;
                Ok(sig)
            }
            Pair::EcdsaP256(pair) => pair
                .sign(&rng, body)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed()),
            Pair::Ed25519(pair) => Ok(pair.sign(body).as_ref().to_vec()),
        }
    }

    /// The value of the `X-MEN-Signature` header: standard base64 of [`Self::sign`].
    pub fn signature_header(&self, body: &[u8]) -> Result<String> {
        self.sign(body).map(|sig| BASE64.encode(sig))
    }

    /// The kind of key. An RSA key loaded from a file may be of another size
    /// than 3072 bits; it is still reported as [`DeviceKeyType::Rsa3072`]
    /// (see [`Self::describe`] for the size).
    pub fn key_type(&self) -> DeviceKeyType {
        match self.pair {
            Pair::Rsa { .. } => DeviceKeyType::Rsa3072,
            Pair::EcdsaP256(_) => DeviceKeyType::EcdsaP256,
            Pair::Ed25519(_) => DeviceKeyType::Ed25519,
        }
    }

    /// Short description: "RSA 3072", "ECDSA P-256" or "Ed25519".
    pub fn describe(&self) -> String {
        match &self.pair {
            Pair::Rsa { bits, .. } => format!("RSA {bits}"),
            Pair::EcdsaP256(_) => "ECDSA P-256".to_owned(),
            Pair::Ed25519(_) => "Ed25519".to_owned(),
        }
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DeviceKey").field(&self.describe()).finish()
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    fsutil::read_bounded(path, MAX_KEY_FILE_LEN, "a device key file").map_err(|e| match e {
        fsutil::ReadError::Io { source, .. } => DeviceKeyError::Read {
            path: path.to_owned(),
            error: source,
        },
        other => DeviceKeyError::Invalid {
            path: path.to_owned(),
            reason: other.reason(),
        },
    })
}

fn create_parent(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(fsutil::parent_dir(path))
}

/// Writes a new file crash-safely without ever replacing an existing one
/// (`AlreadyExists` then).
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut tmp = fsutil::temp_beside(path, KEY_FILE_MODE)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    fsutil::sync_dir(&fsutil::parent_dir(path))
}

/// Removes temporary files an interrupted generation left beside `path`
/// (they would hold a private key nobody uses). Best effort.
fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name() else { return };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(fsutil::parent_dir(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && file_name.starts_with(&prefix) && file_name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => log::info!(
                    "removed {} left over by an interrupted key generation",
                    entry.path().display()
                ),
                Err(e) => log::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// What an encrypted key without a passphrase is told.
#[cfg(feature = "encrypted-keys")]
const NEEDS_PASSPHRASE: &str = "the key is encrypted with a passphrase; give it with `mender-auth bootstrap --passphrase-file FILE` (or `mender-auth daemon --passphrase-file FILE`; `-` reads it from standard input)";

/// The reader's error as said of a device key: the same words, except
/// where they would describe artifact keys.
fn reason(e: SignatureError) -> String {
    match e {
        SignatureError::NoPem => "no PEM private key found (expected \"-----BEGIN RSA PRIVATE KEY-----\", \"-----BEGIN PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\")".to_owned(),
        SignatureError::MultipleKeys => {
            "more than one PEM block; the file must hold exactly one key".to_owned()
        }
        SignatureError::NotPrivateKey => {
            "this is a public key; the device key must be a private key".to_owned()
        }
        SignatureError::UnsupportedAlgorithm { algorithm } => format!(
            "unsupported key algorithm {algorithm}; device keys must be RSA, ECDSA P-256 or Ed25519"
        ),
        #[cfg(feature = "encrypted-keys")]
        SignatureError::EncryptedKey => NEEDS_PASSPHRASE.to_owned(),
        #[cfg(not(feature = "encrypted-keys"))]
        SignatureError::EncryptedKey => "the key is encrypted with a passphrase, and this build of mender-rs reads no encrypted keys (it was built without the feature `encrypted-keys`); decrypt the key (openssl pkey -in KEY -out PLAIN) or use a build with the feature".to_owned(),
        other => other.to_string(),
    }
}

/// DER SubjectPublicKeyInfo: rsaEncryption with NULL parameters, id-ecPublicKey
/// with the named curve, id-Ed25519 without parameters (RFC 3279, 5480, 8410).
fn spki_der(pair: &Pair) -> std::result::Result<Vec<u8>, String> {
    let (oid, params, key): (ObjectIdentifier, Option<AnyRef<'_>>, &[u8]) = match pair {
        Pair::Rsa { pair, .. } => (OID_RSA, Some(AnyRef::from(Null)), pair.public().as_ref()),
        Pair::EcdsaP256(pair) => (
            OID_EC,
            Some(AnyRef::from(&OID_P256)),
            pair.public_key().as_ref(),
        ),
        Pair::Ed25519(pair) => (OID_ED25519, None, pair.public_key().as_ref()),
    };
    let spki = spki::SubjectPublicKeyInfo {
        algorithm: spki::AlgorithmIdentifier {
            oid,
            parameters: params,
        },
        subject_public_key: BitStringRef::from_bytes(key)
            .map_err(|e| format!("cannot encode the public key: {e}"))?,
    };
    spki.to_der()
        .map_err(|e| format!("cannot encode the public key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::signature::pem_blocks;
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
        VerificationAlgorithm,
    };

    /// Verifies with ring, from the SPKI we publish (so the SPKI is checked too).
    fn verify(key: &DeviceKey, msg: &[u8], sig: &[u8]) -> bool {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(&key.spki).unwrap();
        let raw = spki.subject_public_key.as_bytes().unwrap();
        let alg: &dyn VerificationAlgorithm = match key.key_type() {
            DeviceKeyType::Rsa3072 => &RSA_PKCS1_2048_8192_SHA256,
            DeviceKeyType::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            DeviceKeyType::Ed25519 => &ED25519,
        };
        UnparsedPublicKey::new(alg, raw).verify(msg, sig).is_ok()
    }

    #[test]
    fn key_type_names() {
        for (s, t) in [
            ("rsa3072", DeviceKeyType::Rsa3072),
            ("RSA", DeviceKeyType::Rsa3072),
            ("ed25519", DeviceKeyType::Ed25519),
            ("ecdsa-p256", DeviceKeyType::EcdsaP256),
            ("ecdsa256", DeviceKeyType::EcdsaP256),
            ("p256", DeviceKeyType::EcdsaP256),
        ] {
            assert_eq!(s.parse::<DeviceKeyType>().unwrap(), t);
            assert_eq!(t.to_string().parse::<DeviceKeyType>().unwrap(), t);
        }
        assert!("dsa".parse::<DeviceKeyType>().is_err());
        assert_eq!(DeviceKeyType::default(), DeviceKeyType::Ed25519);
    }

    #[test]
    fn generated_keys_round_trip_and_sign() {
        // RSA generation is slow in debug builds; the integration tests cover it.
        for t in [DeviceKeyType::Ed25519, DeviceKeyType::EcdsaP256] {
            let (key, pem) = DeviceKey::generate(t).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let again = DeviceKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(again.spki, key.spki);
            assert_eq!(again.key_type(), t);
            let body = b"{\"id_data\":\"{}\"}\n";
            let sig = key.sign(body).unwrap();
            assert!(verify(&again, body, &sig));
            assert!(!verify(&again, b"other", &sig));
            let header = key.signature_header(body).unwrap();
            assert!(verify(&again, body, &BASE64.decode(header).unwrap()));
        }
    }

    #[test]
    fn ed25519_written_as_pkcs8_v1() {
        let (_, pem) = DeviceKey::generate(DeviceKeyType::Ed25519).unwrap();
        let block = pem_blocks(pem.as_bytes()).unwrap().remove(0);
        let info = pkcs8::PrivateKeyInfo::from_der(&block.der).unwrap();
        assert!(info.public_key.is_none());
        assert_eq!(info.algorithm.oid, OID_ED25519);
    }

    #[test]
    fn public_pem_shape() {
        let (key, _) = DeviceKey::generate(DeviceKeyType::EcdsaP256).unwrap();
        let pem = key.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(key.describe(), "ECDSA P-256");
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"garbage",
            b"\xff\xfe",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
            b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n",
            b"-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        ];
        for case in cases {
            assert!(DeviceKey::from_pem(case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn two_keys_refused() {
        let (_, a) = DeviceKey::generate(DeviceKeyType::Ed25519).unwrap();
        let (_, b) = DeviceKey::generate(DeviceKeyType::EcdsaP256).unwrap();
        let err = DeviceKey::from_pem(format!("{a}{b}").as_bytes()).unwrap_err();
        assert!(err.contains("more than one"), "{err}");
    }

    #[test]
    fn public_keys_and_other_algorithms_are_named() {
        let (key, _) = DeviceKey::generate(DeviceKeyType::Ed25519).unwrap();
        let err = DeviceKey::from_pem(key.public_key_pem().as_bytes()).unwrap_err();
        assert!(err.contains("public key"), "{err}");
        let (key, _) = DeviceKey::generate(DeviceKeyType::EcdsaP256).unwrap();
        let err = DeviceKey::from_pem(key.public_key_pem().as_bytes()).unwrap_err();
        assert!(err.contains("public key"), "{err}");
        // PKCS#8 with an X25519 key (RFC 8410 example).
        let x25519 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let err = DeviceKey::from_pem(x25519.as_bytes()).unwrap_err();
        assert!(err.contains("X25519") && err.contains("Ed25519"), "{err}");
        let err = DeviceKey::from_pem(b"no key here").unwrap_err();
        assert!(err.contains("no PEM private key"), "{err}");
    }
}
