//! Device keys protected by a passphrase (`docs/managed-mode.md`, "The
//! device key"): the PEM forms OpenSSL writes and Mender 4.x/5.x read
//! through OpenSSL.
//!
//! - `ENCRYPTED PRIVATE KEY`: PKCS#8 with PBES2 (`openssl genpkey -aes256`,
//!   `openssl pkcs8 -topk8 -v2 aes256 [-scrypt]`): PBKDF2 with HMAC-SHA-1
//!   or SHA-2, or scrypt; AES-128/192/256-CBC.
//! - The legacy OpenSSL form (`Proc-Type: 4,ENCRYPTED` and `DEK-Info`
//!   headers in an `RSA PRIVATE KEY` or `EC PRIVATE KEY` block, what
//!   `openssl genrsa -aes256` wrote before OpenSSL 3): AES-128/192/256-CBC
//!   with the key derived by OpenSSL's `EVP_BytesToKey` (MD5, one round).
//!   No crate offers this derivation apart from full PEM stacks, so it is
//!   written here: a few lines over the `md-5`, `aes` and `cbc` crates.
//!
//! Every cost the file chooses is bounded before any work is done: the
//! PBKDF2 iteration count, the memory and work of scrypt. Decrypted key
//! material is zeroed when dropped.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::Decode as _;
use md5::Digest as _;
use pkcs8::pkcs5::pbes2;
use zeroize::Zeroizing;

use crate::artifact::signature::pem_encode;

use super::MAX_PASSPHRASE_LEN;

/// Largest PBKDF2 iteration count accepted. OpenSSL writes 2048 by default
/// and current advice for HMAC-SHA-256 is about 600,000; ten million takes
/// seconds on a desktop and is the limit beyond which the file is taken as
/// an attempt to stall the device.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Largest scrypt memory (128 · r · (N + p + 2) bytes): OpenSSL's own
/// default limit (32 MiB), which its `-scrypt` defaults (N = 16384, r = 8,
/// p = 1: 16 MiB) fit.
pub const MAX_SCRYPT_MEMORY: u64 = 32 << 20;

/// Largest scrypt work N · r · p: 32 times OpenSSL's default (2^17).
pub const MAX_SCRYPT_WORK: u64 = 1 << 22;

/// How a PEM file holds its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// No block is encrypted.
    Plain,
    /// An `ENCRYPTED PRIVATE KEY` (PKCS#8) block.
    Pkcs8,
    /// A block with `Proc-Type: 4,ENCRYPTED` headers.
    Legacy,
}

/// One PEM block as found in the text, headers kept.
struct Block<'t> {
    label: &'t str,
    /// `name: value` header lines (RFC 1421), trimmed.
    headers: Vec<(&'t str, &'t str)>,
    body: String,
}

impl Block<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn protection(&self) -> Protection {
        if self.label == "ENCRYPTED PRIVATE KEY" {
            Protection::Pkcs8
        } else if self
            .header("Proc-Type")
            .is_some_and(|v| v.contains("ENCRYPTED"))
        {
            Protection::Legacy
        } else {
            Protection::Plain
        }
    }
}

/// The blocks of PEM text, each with its headers. Lines outside blocks are
/// skipped; a block without its END line ends the scan (the key reader
/// reports it when it sees the same text).
fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut lines = text.lines();
    let mut found = Vec::new();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut block = Block {
            label,
            headers: Vec::new(),
            body: String::new(),
        };
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if line == end {
                closed = true;
                break;
            }
            // Base64 never holds a colon: such a line is a header.
            match line.split_once(':') {
                Some((name, value)) => block.headers.push((name.trim(), value.trim())),
                None => block.body.push_str(line),
            }
        }
        if !closed {
            break;
        }
        found.push(block);
    }
    found
}

/// How the key in `pem` is protected.
pub fn protection(pem: &[u8]) -> Protection {
    let text = String::from_utf8_lossy(pem);
    blocks(&text)
        .iter()
        .map(Block::protection)
        .find(|p| *p != Protection::Plain)
        .unwrap_or(Protection::Plain)
}

/// `pem` with each encrypted block replaced by its decryption, as PEM the
/// key reader takes (`PRIVATE KEY`, or the legacy block's own label);
/// other blocks are kept as they are. The error is a reason without the
/// file name; a wrong passphrase says so.
pub fn decrypt_pem(pem: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    if passphrase.len() > MAX_PASSPHRASE_LEN {
        return Err(format!(
            "the passphrase is longer than {MAX_PASSPHRASE_LEN} bytes"
        ));
    }
    let text = String::from_utf8_lossy(pem);
    let mut out = Zeroizing::new(String::new());
    for block in blocks(&text) {
        let der = Zeroizing::new(
            BASE64
                .decode(block.body.as_bytes())
                .map_err(|e| format!("PEM block \"{}\": invalid base64: {e}", block.label))?,
        );
        match block.protection() {
            Protection::Plain => out.push_str(&pem_encode(block.label, &der)),
            Protection::Pkcs8 => {
                let plain = decrypt_pkcs8(&der, passphrase)?;
                out.push_str(&Zeroizing::new(pem_encode("PRIVATE KEY", &plain)));
            }
            Protection::Legacy => {
                let plain = decrypt_legacy(&block, &der, passphrase)?;
                out.push_str(&Zeroizing::new(pem_encode(block.label, &plain)));
            }
        }
    }
    Ok(Zeroizing::new(std::mem::take(&mut *out).into_bytes()))
}

const WRONG_PASSPHRASE: &str = "cannot decrypt the key: wrong passphrase (or a damaged file)";

/// PKCS#8 `EncryptedPrivateKeyInfo` with PBES2: the parameters parsed by
/// the `pkcs5` crate, the key derived with ring's PBKDF2 (already linked for
/// signatures) or the `scrypt` crate, decrypted with the `aes` and `cbc`
/// crates. (`pkcs5`'s own decryption would link a second SHA-512 and
/// PBKDF2: `Cargo.toml`.)
fn decrypt_pkcs8(der: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let unsupported = |oid| {
        format!(
            "the key is encrypted with an unsupported algorithm ({oid}); {SUPPORTED} (re-encrypt it with `openssl pkcs8 -topk8 -v2 aes256`)"
        )
    };
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(der).map_err(|e| {
        match (scheme_oid(der), e.kind()) {
            // PBES1 or PKCS#12 schemes, which the parser does not know.
            (Some(scheme), _) if scheme != pbes2::PBES2_OID => unsupported(scheme),
            (_, der::ErrorKind::OidUnknown { oid }) => unsupported(oid),
            _ => format!("malformed encrypted PKCS#8 key: {e}"),
        }
    })?;
    let Some(params) = info.encryption_algorithm.pbes2() else {
        return Err(unsupported(info.encryption_algorithm.oid()));
    };
    let (cipher, iv) = match params.encryption {
        pbes2::EncryptionScheme::Aes128Cbc { iv } => (Cipher::Aes128, iv),
        pbes2::EncryptionScheme::Aes192Cbc { iv } => (Cipher::Aes192, iv),
        pbes2::EncryptionScheme::Aes256Cbc { iv } => (Cipher::Aes256, iv),
        other => {
            return Err(format!(
                "the key is encrypted with an unsupported cipher ({}); {SUPPORTED}",
                other.oid()
            ));
        }
    };
    let key_len = cipher.key_len();
    if params
        .kdf
        .key_length()
        .is_some_and(|l| usize::from(l) != key_len)
    {
        return Err("the key's derived-key length does not fit its cipher".to_owned());
    }
    let key = derive_key(&params.kdf, passphrase, key_len)?;
    let plain = cipher.decrypt_cbc(&key, iv, info.encrypted_data)?;
    // A wrong passphrase passes the padding check about once in 256 tries:
    // then what comes out is not a PKCS#8 structure.
    if pkcs8::PrivateKeyInfo::from_der(&plain).is_err() {
        return Err(WRONG_PASSPHRASE.to_owned());
    }
    Ok(plain)
}

/// The encryption scheme named by an `EncryptedPrivateKeyInfo`
/// (`SEQUENCE { AlgorithmIdentifier, OCTET STRING }`), read without its
/// parameters, for errors about schemes the full parser does not know.
fn scheme_oid(der: &[u8]) -> Option<der::asn1::ObjectIdentifier> {
    use der::Reader as _;
    let mut reader = der::SliceReader::new(der).ok()?;
    reader
        .sequence(|r| {
            let algorithm: spki::AlgorithmIdentifierRef<'_> = r.decode()?;
            let _data: der::asn1::OctetStringRef<'_> = r.decode()?;
            Ok(algorithm.oid)
        })
        .ok()
}

/// What the errors about unsupported algorithms list.
const SUPPORTED: &str =
    "supported: PBKDF2 (HMAC-SHA-1/256/384/512) or scrypt, with AES-128/192/256-CBC";

/// The PBES2 key: PBKDF2 or scrypt, within the limits above.
fn derive_key(
    kdf: &pbes2::Kdf<'_>,
    passphrase: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut key = Zeroizing::new(vec![0u8; len]);
    match kdf {
        pbes2::Kdf::Pbkdf2(p) => {
            let prf = match p.prf {
                pbes2::Pbkdf2Prf::HmacWithSha1 => ring::pbkdf2::PBKDF2_HMAC_SHA1,
                pbes2::Pbkdf2Prf::HmacWithSha256 => ring::pbkdf2::PBKDF2_HMAC_SHA256,
                pbes2::Pbkdf2Prf::HmacWithSha384 => ring::pbkdf2::PBKDF2_HMAC_SHA384,
                pbes2::Pbkdf2Prf::HmacWithSha512 => ring::pbkdf2::PBKDF2_HMAC_SHA512,
                other => {
                    return Err(format!(
                        "the key's PBKDF2 uses an unsupported PRF ({}); {SUPPORTED}",
                        other.oid()
                    ));
                }
            };
            let iterations = std::num::NonZeroU32::new(p.iteration_count)
                .ok_or("the key's PBKDF2 iteration count is 0")?;
            if p.iteration_count > MAX_PBKDF2_ITERATIONS {
                return Err(format!(
                    "the key's PBKDF2 iteration count {} is above the limit of {MAX_PBKDF2_ITERATIONS}",
                    p.iteration_count
                ));
            }
            ring::pbkdf2::derive(prf, iterations, p.salt, passphrase, &mut key);
        }
        pbes2::Kdf::Scrypt(p) => {
            let (n, r, pl) = (p.cost_parameter, p.block_size, p.parallelization);
            let too_costly = || {
                format!(
                    "the key's scrypt parameters (N={n}, r={r}, p={pl}) need more than {} MiB or more work than N·r·p = {MAX_SCRYPT_WORK}",
                    MAX_SCRYPT_MEMORY >> 20
                )
            };
            let (r64, p64) = (u64::from(r), u64::from(pl));
            let memory = n
                .checked_add(p64 + 2)
                .and_then(|blocks| blocks.checked_mul(128 * r64));
            let work = n.checked_mul(r64).and_then(|nr| nr.checked_mul(p64));
            match (memory, work) {
                (Some(m), Some(w)) if m <= MAX_SCRYPT_MEMORY && w <= MAX_SCRYPT_WORK => {}
                _ => return Err(too_costly()),
            }
            if !n.is_power_of_two() || n < 2 {
                return Err(format!("the key's scrypt N={n} is not a power of two"));
            }
            let params = scrypt::Params::new(n.trailing_zeros() as u8, r.into(), pl.into(), len)
                .map_err(|e| format!("the key's scrypt parameters are invalid: {e}"))?;
            scrypt::scrypt(passphrase, p.salt, &params, &mut key)
                .map_err(|e| format!("scrypt: {e}"))?;
        }
        other => {
            return Err(format!(
                "the key uses an unsupported key derivation ({}); {SUPPORTED}",
                other.oid()
            ));
        }
    }
    Ok(key)
}

/// The AES-CBC ciphers of both forms.
#[derive(Clone, Copy)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128 => 16,
            Cipher::Aes192 => 24,
            Cipher::Aes256 => 32,
        }
    }

    /// CBC with PKCS#7 padding; bad padding is a wrong passphrase.
    fn decrypt_cbc(
        self,
        key: &[u8],
        iv: &[u8; 16],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        fn run<C>(key: &[u8], iv: &[u8; 16], buffer: &mut [u8]) -> Option<usize>
        where
            C: aes::cipher::BlockDecrypt + aes::cipher::BlockCipher + aes::cipher::KeyInit,
        {
            let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
            decryptor
                .decrypt_padded_mut::<Pkcs7>(buffer)
                .ok()
                .map(|plain| plain.len())
        }
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let len = match self {
            Cipher::Aes128 => run::<aes::Aes128>(key, iv, &mut buffer),
            Cipher::Aes192 => run::<aes::Aes192>(key, iv, &mut buffer),
            Cipher::Aes256 => run::<aes::Aes256>(key, iv, &mut buffer),
        }
        .ok_or(WRONG_PASSPHRASE)?;
        buffer.truncate(len);
        Ok(buffer)
    }
}

/// The legacy OpenSSL form: `DEK-Info: <cipher>,<hex IV>`; the key is
/// `EVP_BytesToKey(MD5, salt = first 8 bytes of the IV, 1 round)`.
fn decrypt_legacy(
    block: &Block<'_>,
    der: &[u8],
    passphrase: &[u8],
) -> Result<Zeroizing<Vec<u8>>, String> {
    let dek = block
        .header("DEK-Info")
        .ok_or("the key is marked encrypted (Proc-Type) but has no DEK-Info header")?;
    let (cipher, iv_hex) = dek
        .split_once(',')
        .ok_or_else(|| format!("malformed DEK-Info header {dek:?}"))?;
    let cipher = match cipher.trim() {
        "AES-128-CBC" => Cipher::Aes128,
        "AES-192-CBC" => Cipher::Aes192,
        "AES-256-CBC" => Cipher::Aes256,
        other => {
            return Err(format!(
                "the key is encrypted with {other:?}, which is not supported; supported: AES-128-CBC, AES-192-CBC, AES-256-CBC (re-encrypt with `openssl pkey -aes256`)"
            ));
        }
    };
    let iv = hex_iv(iv_hex.trim()).ok_or_else(|| format!("malformed DEK-Info IV {iv_hex:?}"))?;
    let key = bytes_to_key(passphrase, &iv[..8], cipher.key_len());
    let buffer = cipher.decrypt_cbc(&key, &iv, der)?;
    // As for PKCS#8: garbage that passed the padding check is not DER.
    if der::asn1::AnyRef::from_der(&buffer).is_err() {
        return Err(WRONG_PASSPHRASE.to_owned());
    }
    Ok(buffer)
}

/// 16 bytes from 32 hexadecimal digits.
fn hex_iv(hex: &str) -> Option<[u8; 16]> {
    let digits = hex.as_bytes();
    if digits.len() != 32 {
        return None;
    }
    let mut iv = [0u8; 16];
    for (byte, pair) in iv.iter_mut().zip(digits.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(iv)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one round:
/// D1 = MD5(pass || salt), Di = MD5(Di-1 || pass || salt), key = D1 || D2 ...
fn bytes_to_key(passphrase: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut key = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut previous: Option<md5::digest::Output<md5::Md5>> = None;
    while key.len() < len {
        let mut hasher = md5::Md5::new();
        if let Some(d) = &previous {
            hasher.update(d);
        }
        hasher.update(passphrase);
        hasher.update(salt);
        let digest = hasher.finalize();
        key.extend_from_slice(&digest);
        previous = Some(digest);
    }
    key.truncate(len);
    key
}
