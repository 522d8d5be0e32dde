//! Device public keys: parsing, ids and signature checks.

use super::*;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use spki::der::Decode as _;
use spki::der::asn1::ObjectIdentifier;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "ECDSA P-256",
            KeyKind::EcP384 => "ECDSA P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }
}

pub(super) struct DeviceKey {
    pub(super) kind: KeyKind,
    /// The SubjectPublicKeyInfo DER.
    pub(super) spki: Vec<u8>,
    /// The subjectPublicKey bits: PKCS#1 RSAPublicKey, SEC1 point, or the
    /// 32-byte Ed25519 key (the forms ring verifies with).
    pub(super) key: Vec<u8>,
}

impl DeviceKey {
    pub(super) fn device_id(&self) -> String {
        hex(&Sha256::digest(&self.spki)[..8])
    }

    /// RSA PKCS#1 v1.5 and ECDSA (ASN.1 DER signature) over SHA-256 of the
    /// body, Ed25519 over the body (deviceauth/devices_v1.yaml).
    pub(super) fn verify(&self, body: &[u8], sig: &[u8]) -> bool {
        use ring::signature::{
            ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA256_ASN1, ED25519, RSA_PKCS1_2048_8192_SHA256,
            UnparsedPublicKey, VerificationAlgorithm,
        };
        let alg: &'static dyn VerificationAlgorithm = match self.kind {
            KeyKind::Rsa => &RSA_PKCS1_2048_8192_SHA256,
            KeyKind::EcP256 => &ECDSA_P256_SHA256_ASN1,
            KeyKind::EcP384 => &ECDSA_P384_SHA256_ASN1,
            KeyKind::Ed25519 => &ED25519,
        };
        UnparsedPublicKey::new(alg, &self.key)
            .verify(body, sig)
            .is_ok()
    }
}

pub(super) const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(super) const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(super) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(super) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(super) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

pub(super) fn parse_public_key(pem: &str) -> Result<DeviceKey, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem
        .find(BEGIN)
        .ok_or("no \"-----BEGIN PUBLIC KEY-----\" block")?
        + BEGIN.len();
    let stop = pem[start..]
        .find(END)
        .ok_or("no \"-----END PUBLIC KEY-----\" line")?
        + start;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&der)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("subjectPublicKey has unused bits")?
        .to_vec();
    let oid = spki.algorithm.oid;
    let kind = if oid == OID_RSA {
        KeyKind::Rsa
    } else if oid == OID_EC {
        match spki.algorithm.parameters_oid() {
            Ok(c) if c == OID_P256 => KeyKind::EcP256,
            Ok(c) if c == OID_P384 => KeyKind::EcP384,
            Ok(c) => return Err(format!("unsupported EC curve {c}")),
            Err(e) => return Err(format!("EC key without a named curve: {e}")),
        }
    } else if oid == OID_ED25519 {
        if key.len() != 32 {
            return Err("Ed25519 key is not 32 bytes".into());
        }
        KeyKind::Ed25519
    } else {
        return Err(format!("unsupported key algorithm {oid}"));
    };
    Ok(DeviceKey {
        kind,
        spki: der,
        key,
    })
}
