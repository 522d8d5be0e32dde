//! Mender Artifact signatures.
//!
//! `manifest.sig` holds the base64 (standard alphabet, padded) of a signature
//! over the exact bytes of the `manifest` member, always with SHA-256:
//! RSASSA-PKCS1-v1_5 for RSA keys (2048 to 8192 bits) and ECDSA for P-256
//! keys. Like mender-artifact we write ECDSA signatures as the raw 64-byte
//! `r || s`; when verifying we also accept ASN.1 DER, which other tools emit.
//!
//! The PEM key reader at the end of this file ([`parse_pem_key`]) is also
//! the one of the device key (`crate::device_key`), which adds Ed25519.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::asn1::{ObjectIdentifier, UintRef};
use der::{Decode, Encode, Reader};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
    VerificationAlgorithm,
};

pub(crate) const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The limits of ring's RSA_PKCS1_2048_8192 algorithms.
pub(crate) const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
pub(crate) const P256_SCALAR_LEN: usize = 32;
const P256_POINT_LEN: usize = 65;

const PRIVATE_LABELS: &str = "RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY";
const ALL_LABELS: &str =
    "PUBLIC KEY, RSA PUBLIC KEY, RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY";

/// Why a key could not be used or a signature did not verify. Messages are
/// single lines and never include key material.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot read key file {}: {error}", path.display())]
    ReadKey {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("key file {}: {error}", path.display())]
    KeyFile {
        path: PathBuf,
        error: Box<SignatureError>,
    },
    #[error("no PEM key found (expected a \"-----BEGIN ... KEY-----\" block)")]
    NoPem,
    #[error("malformed PEM block \"{label}\": {reason}")]
    BadPem { label: String, reason: String },
    #[error("more than one key in the PEM data; put each key in its own file")]
    MultipleKeys,
    #[error("PEM block \"{label}\" is not a supported key; expected {expected}")]
    UnexpectedLabel {
        label: String,
        expected: &'static str,
    },
    #[error(
        "encrypted private keys are not supported; decrypt the key first (openssl pkey -in KEY -out PLAIN)"
    )]
    EncryptedKey,
    #[error("malformed {what}: {reason}")]
    MalformedKey { what: &'static str, reason: String },
    #[error("RSA key is {bits} bits; at least {RSA_MIN_BITS} bits are required")]
    RsaKeyTooSmall { bits: usize },
    #[error("RSA key is {bits} bits; at most {RSA_MAX_BITS} bits are supported")]
    RsaKeyTooLarge { bits: usize },
    #[error("unsupported elliptic curve {curve}; only P-256 (prime256v1) is supported")]
    UnsupportedCurve { curve: String },
    #[error("unsupported key type {algorithm}; only RSA and ECDSA P-256 keys are supported")]
    UnsupportedAlgorithm { algorithm: String },
    #[error("unusable EC key: {reason}")]
    UnusableEcKey { reason: &'static str },
    #[error("{what} key rejected as inconsistent or invalid: {reason}")]
    KeyRejected { what: String, reason: String },
    #[error("this is a public key; signing needs a private key ({PRIVATE_LABELS})")]
    NotPrivateKey,
    #[error("signature (manifest.sig) is not valid base64: {reason}")]
    BadBase64 { reason: String },
    #[error("signature is not in a valid form for the {key} key: {reason}")]
    BadSignatureFormat { key: String, reason: String },
    #[error("signature does not verify with the {key} key")]
    Mismatch { key: String },
    #[error("signature does not verify with any of the {} configured keys ({})", keys.len(), keys.join(", "))]
    NoKeyVerified { keys: Vec<String> },
    #[error("no signature verification keys are configured")]
    NoKeys,
    #[error("signing with the {key} key failed")]
    SigningFailed { key: String },
}

type Result<T> = std::result::Result<T, SignatureError>;

/// A public key that can verify artifact signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey(Public);

#[derive(Clone, PartialEq, Eq)]
enum Public {
    /// PKCS#1 `RSAPublicKey` DER, the form ring verifies with.
    Rsa { der: Vec<u8>, bits: usize },
    /// Uncompressed SEC1 point (0x04 || x || y).
    P256 { point: Vec<u8> },
}

impl VerifyKey {
    /// PEM forms accepted: "PUBLIC KEY" (SPKI with RSA or EC P-256), "RSA PUBLIC KEY" (PKCS#1),
    /// and, for convenience, private keys ("RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY") whose public half is used.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyKey> {
        Ok(match parse_pem_key(pem, Wanted::AnyKey)? {
            PemKey::Public(key) => key,
            PemKey::RsaPrivate { public, .. } => public,
            PemKey::EcPrivate { point, .. } => VerifyKey(Public::P256 { point }),
            PemKey::Ed25519Private { .. } => return Err(unsupported_algorithm(OID_ED25519)),
        })
    }

    /// Reads the file; errors name the path.
    pub fn load(path: &Path) -> Result<VerifyKey> {
        Self::from_pem(&read_key_file(path)?).map_err(|e| in_file(path, e))
    }

    /// Human description such as "RSA 3072-bit" or "ECDSA P-256".
    pub fn describe(&self) -> String {
        match &self.0 {
            Public::Rsa { bits, .. } => format!("RSA {bits}-bit"),
            Public::P256 { .. } => "ECDSA P-256".to_owned(),
        }
    }

    /// `signature` is the raw content of manifest.sig (base64 text). Ok(()) only if it verifies.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        self.verify_raw(message, &decode_signature(signature)?)
    }

    fn verify_raw(&self, message: &[u8], sig: &[u8]) -> Result<()> {
        let check = |alg: &'static dyn VerificationAlgorithm, key: &[u8]| {
            UnparsedPublicKey::new(alg, key)
                .verify(message, sig)
                .is_ok()
        };
        let bad_format = |reason: String| SignatureError::BadSignatureFormat {
            key: self.describe(),
            reason,
        };
        let verified = match &self.0 {
            Public::Rsa { der, bits } => {
                let expected = bits.div_ceil(8);
                if sig.len() != expected {
                    return Err(bad_format(format!(
                        "it is {} bytes, expected {expected}",
                        sig.len()
                    )));
                }
                check(&RSA_PKCS1_2048_8192_SHA256, der)
            }
            Public::P256 { point } => {
                let raw = sig.len() == 2 * P256_SCALAR_LEN;
                let asn1 = is_der_signature(sig);
                if !raw && !asn1 {
                    return Err(bad_format(format!(
                        "it is {} bytes, neither a 64-byte r||s nor a DER SEQUENCE of two INTEGERs",
                        sig.len()
                    )));
                }
                // A 64-byte blob could in principle also be valid DER; try both readings.
                (raw && check(&ECDSA_P256_SHA256_FIXED, point))
                    || (asn1 && check(&ECDSA_P256_SHA256_ASN1, point))
            }
        };
        if verified {
            Ok(())
        } else {
            Err(SignatureError::Mismatch {
                key: self.describe(),
            })
        }
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VerifyKey").field(&self.describe()).finish()
    }
}

/// Tries keys in order; Ok(index of the first key that verifies); Err describing that none verified (and bad base64 distinctly).
pub fn verify_with_any(keys: &[VerifyKey], message: &[u8], signature: &[u8]) -> Result<usize> {
    if keys.is_empty() {
        return Err(SignatureError::NoKeys);
    }
    let sig = decode_signature(signature)?;
    keys.iter()
        .position(|key| key.verify_raw(message, &sig).is_ok())
        .ok_or_else(|| SignatureError::NoKeyVerified {
            keys: keys.iter().map(VerifyKey::describe).collect(),
        })
}

/// A private key that signs artifacts.
pub struct SigningKey {
    pair: KeyPair,
    public: VerifyKey,
}

enum KeyPair {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
}

impl SigningKey {
    /// RSA in PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"); EC P-256 in SEC1 ("EC PRIVATE KEY", possibly preceded by an "EC PARAMETERS" block as `openssl ecparam -genkey` writes without -noout) or PKCS#8.
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey> {
        let (pair, public) = match parse_pem_key(pem, Wanted::AnyKey)? {
            PemKey::Public(_) => return Err(SignatureError::NotPrivateKey),
            PemKey::Ed25519Private { .. } => return Err(unsupported_algorithm(OID_ED25519)),
            PemKey::RsaPrivate { pkcs1, public, .. } => {
                let pair = RsaKeyPair::from_der(&pkcs1).map_err(|e| rejected(&public, e))?;
                (KeyPair::Rsa(pair), public)
            }
            PemKey::EcPrivate { scalar, point } => {
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &scalar,
                    &point,
                    &SystemRandom::new(),
                );
                let public = VerifyKey(Public::P256 { point });
                (
                    KeyPair::P256(pair.map_err(|e| rejected(&public, e))?),
                    public,
                )
            }
        };
        Ok(SigningKey { pair, public })
    }

    /// Reads the file; errors name the path.
    pub fn load(path: &Path) -> Result<SigningKey> {
        Self::from_pem(&read_key_file(path)?).map_err(|e| in_file(path, e))
    }

    /// Returns the manifest.sig content: base64 (standard, padded), no trailing newline. EC: raw r||s 64 bytes.
    pub fn sign(&self, message: &[u8]) -> Result<String> {
        let rng = SystemRandom::new();
        let failed = || SignatureError::SigningFailed {
            key: self.describe(),
        };
        let sig = match &self.pair {
            KeyPair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| failed())?;
                sig
            }
            KeyPair::P256(pair) => pair
                .sign(&rng, message)
                .map_err(|_| failed())?
                .as_ref()
                .to_vec(),
        };
        Ok(BASE64.encode(sig))
    }

    /// The public half, e.g. to check a signature right after writing it.
    pub fn verify_key(&self) -> VerifyKey {
        self.public.clone()
    }

    /// Same as the public key's description, e.g. "RSA 3072-bit".
    pub fn describe(&self) -> String {
        self.public.describe()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SigningKey").field(&self.describe()).finish()
    }
}

/// The largest key file read: a PEM RSA key of 8192 bits is under 7 KiB.
pub const MAX_KEY_FILE_SIZE: u64 = 64 << 10;

fn read_key_file(path: &Path) -> Result<Vec<u8>> {
    use crate::fsutil::ReadError;
    let read_key = |error| SignatureError::ReadKey {
        path: path.to_owned(),
        error,
    };
    let invalid = |msg: String| read_key(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
    crate::fsutil::read_bounded(path, MAX_KEY_FILE_SIZE, "a key file").map_err(|e| match e {
        ReadError::Io { source, .. } => read_key(source),
        ReadError::NotRegular { kind, .. } => invalid(format!("it is {kind}, not a regular file")),
        ReadError::TooLarge {
            size, cap, what, ..
        } => invalid(format!(
            "{size} bytes, more than the {cap} allowed for {what}"
        )),
    })
}

fn in_file(path: &Path, error: SignatureError) -> SignatureError {
    SignatureError::KeyFile {
        path: path.to_owned(),
        error: Box::new(error),
    }
}

fn rejected(public: &VerifyKey, e: ring::error::KeyRejected) -> SignatureError {
    SignatureError::KeyRejected {
        what: public.describe(),
        reason: e.to_string(),
    }
}

/// Decodes manifest.sig. Whitespace is dropped anywhere: Go's decoder (used by
/// mender-artifact and the Mender client) skips line breaks, so wrapped files exist.
fn decode_signature(text: &[u8]) -> Result<Vec<u8>> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(SignatureError::BadBase64 {
            reason: "it is empty".to_owned(),
        });
    }
    BASE64
        .decode(&compact)
        .map_err(|e| SignatureError::BadBase64 {
            reason: e.to_string(),
        })
}

/// Whether `sig` is exactly a DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn is_der_signature(sig: &[u8]) -> bool {
    let parse = || -> der::Result<()> {
        let mut reader = der::SliceReader::new(sig)?;
        reader.sequence(|seq| {
            UintRef::decode(seq)?;
            UintRef::decode(seq)?;
            Ok(())
        })?;
        reader.finish(())
    };
    parse().is_ok()
}

// ---------------------------------------------------------------------------
// PEM and DER key parsing (artifact keys and the device key)

pub(crate) struct PemBlock {
    pub(crate) label: String,
    pub(crate) der: Vec<u8>,
}

/// PEM text: base64 in 64-character lines, trailing newline.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Splits PEM text into its blocks. Deliberately as lenient as Go's
/// encoding/pem (which the Mender client uses): any line width, CRLF, text
/// around the blocks, RFC 1421 headers skipped (an `ENCRYPTED` Proc-Type,
/// like an `ENCRYPTED PRIVATE KEY` block, is refused).
pub(crate) fn pem_blocks(pem: &[u8]) -> Result<Vec<PemBlock>> {
    let text = String::from_utf8_lossy(pem);
    let mut lines = text.lines();
    let mut blocks = Vec::new();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let bad = |reason: &str| SignatureError::BadPem {
            label: label.to_owned(),
            reason: reason.to_owned(),
        };
        let end = format!("-----END {label}-----");
        let (mut body, mut closed, mut encrypted) = (String::new(), false, false);
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            if line.starts_with("-----") {
                return Err(bad("unexpected boundary line inside the block"));
            }
            if let Some((name, value)) = line.split_once(':') {
                encrypted |= name.trim() == "Proc-Type" && value.contains("ENCRYPTED");
                continue;
            }
            body.push_str(line);
        }
        if !closed {
            return Err(bad(&format!("missing \"{end}\" line (truncated file?)")));
        }
        if encrypted || label == "ENCRYPTED PRIVATE KEY" {
            return Err(SignatureError::EncryptedKey);
        }
        let der = BASE64
            .decode(body.as_bytes())
            .map_err(|e| bad(&format!("invalid base64: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
    }
    Ok(blocks)
}

/// A key read by [`parse_pem_key`], checked as far as possible without
/// building ring's key pair (which each user does for its algorithms).
pub(crate) enum PemKey {
    Public(VerifyKey),
    /// RSA (PKCS#1, or PKCS#8 unwrapped) of [`RSA_MIN_BITS`] to 8192 bits.
    RsaPrivate {
        /// The PKCS#1 `RSAPrivateKey` DER.
        pkcs1: Vec<u8>,
        bits: usize,
        public: VerifyKey,
    },
    /// P-256: the scalar left-padded to full width, and the uncompressed
    /// public point.
    EcPrivate {
        scalar: [u8; P256_SCALAR_LEN],
        point: Vec<u8>,
    },
    /// Ed25519 in PKCS#8 (v1 or v2): the whole PKCS#8 DER, as ring reads it.
    Ed25519Private {
        pkcs8: Vec<u8>,
    },
}

/// Which keys [`parse_pem_key`] is after.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// Public keys ("PUBLIC KEY", "RSA PUBLIC KEY") and private keys.
    AnyKey,
    /// Private keys only: a public key is [`SignatureError::NotPrivateKey`]
    /// without being parsed.
    PrivateKey,
}

/// Reads the one key of PEM text: "PUBLIC KEY" (SPKI with RSA or EC
/// P-256), "RSA PUBLIC KEY" (PKCS#1), "RSA PRIVATE KEY" (PKCS#1), "EC
/// PRIVATE KEY" (SEC1, possibly with an "EC PARAMETERS" block) and
/// "PRIVATE KEY" (PKCS#8 with RSA, EC P-256 or Ed25519, v1 or v2).
/// Encrypted keys are refused. Errors never include key material.
pub(crate) fn parse_pem_key(pem: &[u8], wanted: Wanted) -> Result<PemKey> {
    let blocks = pem_blocks(pem)?;
    // `openssl ecparam -genkey` without -noout writes the curve in its own block first.
    let (params, keys): (Vec<_>, Vec<_>) =
        blocks.into_iter().partition(|b| b.label == "EC PARAMETERS");
    let block = match keys.as_slice() {
        [] => return Err(SignatureError::NoPem),
        [block] => block,
        _ => return Err(SignatureError::MultipleKeys),
    };
    let der = block.der.as_slice();
    match block.label.as_str() {
        "PUBLIC KEY" | "RSA PUBLIC KEY" if wanted == Wanted::PrivateKey => {
            Err(SignatureError::NotPrivateKey)
        }
        "PUBLIC KEY" => parse_spki(der).map(PemKey::Public),
        "RSA PUBLIC KEY" => {
            let key = pkcs1::RsaPublicKey::from_der(der)
                .map_err(|e| malformed("PKCS#1 RSA public key", e))?;
            rsa_public(key.modulus, key.public_exponent).map(PemKey::Public)
        }
        "RSA PRIVATE KEY" => parse_rsa_private(der),
        "EC PRIVATE KEY" => {
            let curve = match params.first() {
                Some(p) => Some(
                    sec1::EcParameters::from_der(&p.der)
                        .ok()
                        .and_then(|p| p.named_curve())
                        .ok_or(SignatureError::UnusableEcKey {
                            reason: "explicit curve parameters are not supported; use a named curve",
                        })?,
                ),
                None => None,
            };
            parse_ec_private(der, curve, None)
        }
        "PRIVATE KEY" => parse_pkcs8(der),
        other => Err(SignatureError::UnexpectedLabel {
            label: other.to_owned(),
            expected: match wanted {
                Wanted::AnyKey => ALL_LABELS,
                Wanted::PrivateKey => PRIVATE_LABELS,
            },
        }),
    }
}

fn malformed(what: &'static str, e: impl fmt::Display) -> SignatureError {
    SignatureError::MalformedKey {
        what,
        reason: e.to_string(),
    }
}

fn parse_spki(der: &[u8]) -> Result<VerifyKey> {
    const WHAT: &str = "SubjectPublicKeyInfo (PUBLIC KEY)";
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| malformed(WHAT, e))?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed(WHAT, "the key BIT STRING has unused bits"))?;
    match spki.algorithm.oid {
        OID_RSA => {
            let rsa = pkcs1::RsaPublicKey::from_der(key)
                .map_err(|e| malformed("RSA public key in SubjectPublicKeyInfo", e))?;
            rsa_public(rsa.modulus, rsa.public_exponent)
        }
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|e| malformed("EC curve parameters", e))?;
            check_curve(curve)?;
            Ok(VerifyKey(Public::P256 {
                point: p256_point(key)?,
            }))
        }
        other => Err(unsupported_algorithm(other)),
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<PemKey> {
    let info =
        pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| malformed("PKCS#8 private key", e))?;
    match info.algorithm.oid {
        OID_RSA => parse_rsa_private(info.private_key),
        OID_EC => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|e| malformed("EC curve parameters", e))?;
            parse_ec_private(info.private_key, Some(curve), info.public_key)
        }
        OID_ED25519 => Ok(PemKey::Ed25519Private {
            pkcs8: der.to_vec(),
        }),
        other => Err(unsupported_algorithm(other)),
    }
}

fn parse_rsa_private(der: &[u8]) -> Result<PemKey> {
    let key =
        pkcs1::RsaPrivateKey::from_der(der).map_err(|e| malformed("PKCS#1 RSA private key", e))?;
    let public = rsa_public(key.modulus, key.public_exponent)?;
    Ok(PemKey::RsaPrivate {
        pkcs1: der.to_vec(),
        bits: rsa_bits(key.modulus),
        public,
    })
}

/// `curve` comes from the enclosing PKCS#8 or a separate "EC PARAMETERS" block;
/// `outer_public` from a PKCS#8 v2 wrapper.
fn parse_ec_private(
    der: &[u8],
    curve: Option<ObjectIdentifier>,
    outer_public: Option<&[u8]>,
) -> Result<PemKey> {
    let key = sec1::EcPrivateKey::from_der(der).map_err(|e| malformed("SEC1 EC private key", e))?;
    let inner_curve = match key.parameters {
        Some(params) => Some(params.named_curve().ok_or(SignatureError::UnusableEcKey {
            reason: "explicit curve parameters are not supported; use a named curve",
        })?),
        None => None,
    };
    let curve = match (curve, inner_curve) {
        (Some(a), Some(b)) if a != b => {
            return Err(SignatureError::UnusableEcKey {
                reason: "the key's curve contradicts its EC parameters",
            });
        }
        (a, b) => a.or(b).ok_or(SignatureError::UnusableEcKey {
            reason: "the private key does not name its curve",
        })?,
    };
    check_curve(curve)?;
    // ring needs the scalar at its full fixed width; some encoders drop leading zeros.
    let mut scalar = [0u8; P256_SCALAR_LEN];
    let offset = P256_SCALAR_LEN
        .checked_sub(key.private_key.len())
        .filter(|_| !key.private_key.is_empty())
        .ok_or(SignatureError::UnusableEcKey {
            reason: "the private scalar has the wrong length for P-256",
        })?;
    scalar[offset..].copy_from_slice(key.private_key);
    // ring cannot derive the public point from the scalar, so it must be stored.
    let point = key
        .public_key
        .or(outer_public)
        .ok_or(SignatureError::UnusableEcKey {
            reason: "the private key does not include its public key; re-export it with `openssl ec`",
        })?;
    Ok(PemKey::EcPrivate {
        scalar,
        point: p256_point(point)?,
    })
}

/// The size of an RSA key: the bit length of its modulus.
fn rsa_bits(modulus: UintRef<'_>) -> usize {
    let n = modulus.as_bytes();
    match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

fn rsa_public(modulus: UintRef<'_>, exponent: UintRef<'_>) -> Result<VerifyKey> {
    let bits = rsa_bits(modulus);
    if bits < RSA_MIN_BITS {
        return Err(SignatureError::RsaKeyTooSmall { bits });
    }
    if bits > RSA_MAX_BITS {
        return Err(SignatureError::RsaKeyTooLarge { bits });
    }
    let der = pkcs1::RsaPublicKey {
        modulus,
        public_exponent: exponent,
    }
    .to_der()
    .map_err(|e| malformed("RSA public key", e))?;
    Ok(VerifyKey(Public::Rsa { der, bits }))
}

fn p256_point(point: &[u8]) -> Result<Vec<u8>> {
    match point {
        [0x04, ..] if point.len() == P256_POINT_LEN => Ok(point.to_vec()),
        [0x02 | 0x03, ..] => Err(SignatureError::UnusableEcKey {
            reason: "compressed EC points are not supported; convert with `openssl ec -conv_form uncompressed`",
        }),
        _ => Err(SignatureError::UnusableEcKey {
            reason: "the public point is not a valid uncompressed P-256 point",
        }),
    }
}

fn check_curve(curve: ObjectIdentifier) -> Result<()> {
    if curve == OID_P256 {
        Ok(())
    } else {
        Err(SignatureError::UnsupportedCurve {
            curve: oid_name(curve),
        })
    }
}

fn unsupported_algorithm(oid: ObjectIdentifier) -> SignatureError {
    SignatureError::UnsupportedAlgorithm {
        algorithm: oid_name(oid),
    }
}

/// Names for the OIDs users are likely to meet, for error messages.
fn oid_name(oid: ObjectIdentifier) -> String {
    const NAMES: &[(&str, &str)] = &[
        ("1.2.840.10045.3.1.1", "P-192"),
        ("1.3.132.0.33", "P-224"),
        ("1.3.132.0.34", "P-384"),
        ("1.3.132.0.35", "P-521"),
        ("1.3.132.0.10", "secp256k1"),
        ("1.3.101.110", "X25519"),
        ("1.3.101.111", "X448"),
        ("1.3.101.112", "Ed25519"),
        ("1.3.101.113", "Ed448"),
        ("1.2.840.10040.4.1", "DSA"),
        ("1.2.840.113549.1.1.10", "RSASSA-PSS"),
    ];
    let dotted = oid.to_string();
    match NAMES.iter().find(|(o, _)| *o == dotted) {
        Some((_, name)) => format!("{name} ({dotted})"),
        None => format!("OID {dotted}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_1024_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFQIV/KUvUncFJEuOwOruTwQ5+
zZaeuM+QxEkusrP4X8sVzMj0EOjy3EjpBSB+dMwqlEE/A+kCxPNlFXd0fh8vfmX3
qsh7FOqs1vlhjb9zfoqbP6/U2nSMTqATNqwFN/h2LT+CFHpWcjGTIvc7Ev5rqhTy
nFiCN+TSVuCBl3rpJwIDAQAB
-----END PUBLIC KEY-----
";
    const P384_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEf1oDikbpIx9nFJEo4O0Z2c91gYxTqhFp
DfA62w7L0+Wm4NDB/8UOG+bNb9GEjgxjAQZJ4I3N8JZHL1PostBYTAKq90sdkmJH
42/dhBGcmt+KC+XkJ9PbBh9/TzjtbXt6
-----END PUBLIC KEY-----
";
    const ED25519_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA8EPur5Sv+9RVs/ecMae8qmsItbkDPJnluSegQ8GH1RI=
-----END PUBLIC KEY-----
";
    const P256_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZOs8veF/QDq5kQbxsCwfHSyTUN9g
eGo3za0MwY39wcRUIs76u+/kwBIN21BL+9LRIOjET4NrgZ2O02n6olYxmQ==
-----END PUBLIC KEY-----
";

    fn pem(label: &str, der: &[u8]) -> String {
        // One long base64 line on purpose: the parser must not insist on 64 columns.
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            BASE64.encode(der)
        )
    }

    fn der_of(pem_text: &str) -> Vec<u8> {
        let blocks = pem_blocks(pem_text.as_bytes()).unwrap();
        blocks.into_iter().next().unwrap().der
    }

    /// A fresh P-256 key in PKCS#8, generated by ring so no private key is checked in.
    fn fresh_p256() -> SigningKey {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        SigningKey::from_pem(pem("PRIVATE KEY", doc.as_ref()).as_bytes()).unwrap()
    }

    #[test]
    fn garbage_is_not_pem() {
        for input in [
            &b""[..],
            b"hello world",
            b"\xff\xfe\x00junk",
            b"-----BEGIN-----",
        ] {
            assert!(matches!(
                VerifyKey::from_pem(input),
                Err(SignatureError::NoPem)
            ));
            assert!(matches!(
                SigningKey::from_pem(input),
                Err(SignatureError::NoPem)
            ));
        }
    }

    #[test]
    fn broken_pem_blocks() {
        let unterminated = "-----BEGIN PUBLIC KEY-----\nMFkw\n";
        assert!(matches!(
            VerifyKey::from_pem(unterminated.as_bytes()),
            Err(SignatureError::BadPem { .. })
        ));
        let bad_b64 = "-----BEGIN PUBLIC KEY-----\nM*kw!!\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            VerifyKey::from_pem(bad_b64.as_bytes()),
            Err(SignatureError::BadPem { .. })
        ));
        let two = format!("{P256_SPKI}{P256_SPKI}");
        assert!(matches!(
            VerifyKey::from_pem(two.as_bytes()),
            Err(SignatureError::MultipleKeys)
        ));
    }

    #[test]
    fn wrong_labels() {
        let cert = pem("CERTIFICATE", &der_of(P256_SPKI));
        let err = VerifyKey::from_pem(cert.as_bytes()).unwrap_err();
        assert!(matches!(err, SignatureError::UnexpectedLabel { .. }));
        assert!(err.to_string().contains("CERTIFICATE"));
        // A public key cannot sign.
        assert!(matches!(
            SigningKey::from_pem(P256_SPKI.as_bytes()),
            Err(SignatureError::NotPrivateKey)
        ));
        // An SPKI body under the PKCS#1 label is malformed, not misread.
        let relabelled = pem("RSA PUBLIC KEY", &der_of(P256_SPKI));
        assert!(matches!(
            VerifyKey::from_pem(relabelled.as_bytes()),
            Err(SignatureError::MalformedKey { .. })
        ));
        let encrypted = pem("ENCRYPTED PRIVATE KEY", b"\x30\x00");
        assert!(matches!(
            SigningKey::from_pem(encrypted.as_bytes()),
            Err(SignatureError::EncryptedKey)
        ));
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-128-CBC,00\n\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            SigningKey::from_pem(legacy.as_bytes()),
            Err(SignatureError::EncryptedKey)
        ));
    }

    #[test]
    fn truncated_der() {
        let der = der_of(P256_SPKI);
        for cut in [1, der.len() / 2, der.len() - 1] {
            let text = pem("PUBLIC KEY", &der[..cut]);
            assert!(
                matches!(
                    VerifyKey::from_pem(text.as_bytes()),
                    Err(SignatureError::MalformedKey { .. })
                ),
                "cut at {cut}"
            );
        }
        for label in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"] {
            let text = pem(label, &der[..10]);
            assert!(matches!(
                SigningKey::from_pem(text.as_bytes()),
                Err(SignatureError::MalformedKey { .. })
            ));
        }
    }

    #[test]
    fn small_rsa_refused() {
        let err = VerifyKey::from_pem(RSA_1024_SPKI.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SignatureError::RsaKeyTooSmall { bits: 1024 }),
            "{err}"
        );
        assert!(err.to_string().contains("1024"));
    }

    #[test]
    fn other_curves_and_algorithms_refused() {
        let err = VerifyKey::from_pem(P384_SPKI.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SignatureError::UnsupportedCurve { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("P-384"), "{err}");
        let err = VerifyKey::from_pem(ED25519_SPKI.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SignatureError::UnsupportedAlgorithm { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("Ed25519"), "{err}");
    }

    #[test]
    fn p256_public_key_parses() {
        let key = VerifyKey::from_pem(P256_SPKI.as_bytes()).unwrap();
        assert_eq!(key.describe(), "ECDSA P-256");
        // CRLF line endings and surrounding text are tolerated.
        let crlf = format!("comment\r\n{}trailer\r\n", P256_SPKI.replace('\n', "\r\n"));
        assert_eq!(VerifyKey::from_pem(crlf.as_bytes()).unwrap(), key);
    }

    #[test]
    fn bad_base64_signature() {
        let key = VerifyKey::from_pem(P256_SPKI.as_bytes()).unwrap();
        for sig in [&b"not base64!"[..], b"", b"  \n", b"QUJ", b"QUJDRA"] {
            assert!(
                matches!(key.verify(b"m", sig), Err(SignatureError::BadBase64 { .. })),
                "{sig:?}"
            );
            assert!(matches!(
                verify_with_any(std::slice::from_ref(&key), b"m", sig),
                Err(SignatureError::BadBase64 { .. })
            ));
        }
    }

    #[test]
    fn wrong_length_ec_signature() {
        let key = VerifyKey::from_pem(P256_SPKI.as_bytes()).unwrap();
        for len in [1, 32, 63, 65, 72] {
            let sig = BASE64.encode(vec![0x11; len]);
            let err = key.verify(b"m", sig.as_bytes()).unwrap_err();
            assert!(
                matches!(err, SignatureError::BadSignatureFormat { .. }),
                "len {len}: {err}"
            );
        }
        // Right length but wrong value: a plain mismatch.
        let sig = BASE64.encode([0x11; 64]);
        assert!(matches!(
            key.verify(b"m", sig.as_bytes()),
            Err(SignatureError::Mismatch { .. })
        ));
    }

    #[test]
    fn der_signature_detection() {
        assert!(is_der_signature(&[
            0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01
        ]));
        assert!(!is_der_signature(&[
            0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01
        ]));
        assert!(!is_der_signature(&[0x30, 0x03, 0x02, 0x01, 0x01]));
        assert!(!is_der_signature(&[
            0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00
        ]));
    }

    #[test]
    fn ec_round_trip_and_formats() {
        let signer = fresh_p256();
        assert_eq!(signer.describe(), "ECDSA P-256");
        let key = signer.verify_key();
        let sig = signer.sign(b"manifest").unwrap();
        assert!(!sig.ends_with('\n'));
        assert_eq!(BASE64.decode(&sig).unwrap().len(), 64);
        key.verify(b"manifest", sig.as_bytes()).unwrap();
        key.verify(b"manifest", format!("{sig}\n").as_bytes())
            .unwrap();
        assert!(matches!(
            key.verify(b"manifesT", sig.as_bytes()),
            Err(SignatureError::Mismatch { .. })
        ));
        let other = fresh_p256().verify_key();
        let keys = [other.clone(), key.clone()];
        assert_eq!(
            verify_with_any(&keys, b"manifest", sig.as_bytes()).unwrap(),
            1
        );
        let err = verify_with_any(&[other], b"manifest", sig.as_bytes()).unwrap_err();
        assert!(matches!(err, SignatureError::NoKeyVerified { .. }));
        assert!(err.to_string().contains("ECDSA P-256"), "{err}");
        assert!(matches!(
            verify_with_any(&[], b"manifest", sig.as_bytes()),
            Err(SignatureError::NoKeys)
        ));
    }

    #[test]
    fn errors_do_not_leak_keys() {
        let err = VerifyKey::load(Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");
        let text = pem("EC PRIVATE KEY", b"\x30\x03\x02\x01\x01");
        let err = SigningKey::from_pem(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("MAMCAQE"), "{err}");
        assert!(!format!("{:?}", fresh_p256()).contains("BEGIN"));
    }

    #[test]
    fn pem_encode_wraps_at_64() {
        let pem = pem_encode("X", &[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN X-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 136 - 128);
        assert_eq!(lines[4], "-----END X-----");
        assert_eq!(pem_blocks(pem.as_bytes()).unwrap()[0].der, vec![0u8; 100]);
    }
}
