//! The HTTP(S) client: ureq with rustls, trusting the system's CA bundle
//! (plus an extra certificate when configured), as a device should. Mozilla's
//! root list is not compiled in: the device's own trust store is the one its
//! owner maintains, and leaving it out keeps the binary small.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// Where distributions keep their CA bundle (Debian/Yocto first).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// Largest PEM certificate file read (`ServerCertificate`, the system CA
/// bundle, `HttpsClient.Certificate`): a distribution's bundle of some 150
/// roots is about 220 KiB; 4 MiB leaves room for large private bundles.
pub const MAX_CERTIFICATE_FILE: u64 = 4 << 20;
/// Largest `HttpsClient.Key` file read: a PEM RSA key of 16384 bits is
/// about 13 KiB.
pub const MAX_CLIENT_KEY_FILE: u64 = 64 << 10;

/// Reads every certificate of a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = crate::fsutil::read_bounded(path, MAX_CERTIFICATE_FILE, "a PEM certificate file")?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.with_context(|| format!("{}: malformed PEM", path.display()))? {
            PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    Ok(certs)
}

/// The system's trusted roots: `SSL_CERT_FILE` if set, else the first CA
/// bundle found.
fn system_roots() -> Result<Vec<Certificate<'static>>> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        return read_certificates(Path::new(&file));
    }
    for bundle in SYSTEM_CA_BUNDLES {
        let path = Path::new(bundle);
        if path.exists() {
            return read_certificates(path);
        }
    }
    Ok(Vec::new())
}

/// How to reach a server.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions<'a> {
    /// `ServerCertificate`: trusted besides the system roots.
    pub extra_ca: Option<&'a Path>,
    /// `SkipVerify`.
    pub skip_verify: bool,
    /// `HttpsClient`: certificate (chain) and key files for mutual TLS.
    pub client_cert: Option<(&'a Path, &'a Path)>,
    /// Return 4xx/5xx answers as responses instead of errors (API clients
    /// look at the status themselves).
    pub status_as_response: bool,
}

/// An agent trusting the system roots plus `extra_ca` (`ServerCertificate`).
/// `skip_verify` turns certificate checks off (`SkipVerify`): loudly.
pub fn agent(extra_ca: Option<&Path>, skip_verify: bool) -> Result<ureq::Agent> {
    agent_with(&HttpOptions {
        extra_ca,
        skip_verify,
        ..Default::default()
    })
}

pub fn agent_with(options: &HttpOptions) -> Result<ureq::Agent> {
    let mut roots = system_roots()?;
    if let Some(extra) = options.extra_ca {
        roots.extend(read_certificates(extra)?);
    }
    if roots.is_empty() && !options.skip_verify {
        log::warn!(
            "no trusted CA certificates found (set SSL_CERT_FILE or install ca-certificates): https will fail"
        );
    }
    if options.skip_verify {
        log::warn!(
            "TLS certificate verification is DISABLED (SkipVerify): anyone on the network can impersonate the server"
        );
    }
    let client_cert = match options.client_cert {
        None => None,
        Some((cert, key)) => Some(client_certificate(cert, key)?),
    };
    // 4.x's proxy rules, not ureq's (which reads ALL_PROXY and commas):
    // ureq's own reading of the environment is off, each request gets its
    // proxy from `crate::http_proxy`.
    let proxies = crate::http_proxy::ProxySettings::from_env()?;
    let tls = TlsConfig::builder()
        .unversioned_rustls_crypto_provider(Arc::new(crypto_provider()))
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .disable_verification(options.skip_verify)
        .client_cert(client_cert)
        .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(!options.status_as_response)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        // A stalled transfer fails (and a download resumes) instead of
        // hanging for ever.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("mender-rs/", env!("CARGO_PKG_VERSION")))
        .proxy(None);
    let config = if proxies.any() {
        config.middleware(
            move |request: ureq::http::Request<ureq::SendBody>,
                  next: ureq::middleware::MiddlewareNext| {
                // A redirect keeps the proxy decided for the first URL.
                let request = match proxies.proxy_for_uri(request.uri()) {
                    None => request,
                    Some(proxy) => {
                        use ureq::RequestExt;
                        match request.middleware_config() {
                            Some(config) => config.proxy(Some(proxy)).build(),
                            // Not reached: ureq runs middleware with its agent.
                            None => {
                                return Err(ureq::Error::ConnectProxyFailed(
                                    "no request configuration for the proxy".into(),
                                ));
                            }
                        }
                    }
                };
                next.handle(request)
            },
        )
    } else {
        config
    };
    let config = config.build();
    Ok(config.into())
}

/// rustls with ring, AES-GCM cipher suites only (TLS 1.3, and TLS 1.2 with
/// ECDHE): what every Mender server offers. Leaving ChaCha20-Poly1305 out
/// keeps its code (ring's and rustls's, some 55 KiB) out of the device's
/// flash.
///
/// Built field by field: `rustls::crypto::ring::default_provider()`, even
/// with its cipher suites replaced, would still link all of them. Key
/// exchange groups and signature algorithms are those of that provider (the
/// tests check it).
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as suite;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: rustls::crypto::ring::DEFAULT_KX_GROUPS.to_vec(),
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &RingKeys,
        key_provider: &RingKeys,
    }
}

/// Certificate and handshake signatures the server may use: ECDSA (P-256,
/// P-384), Ed25519, RSA-PSS and RSA PKCS#1 v1.5 (2048 to 8192 bits).
static SIGNATURE_ALGORITHMS: rustls::crypto::WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as S;
    use webpki::ring as alg;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        // Our preference order, as sent to the server. TLS 1.2 does not tie
        // ECDSA schemes to a curve: both curves are tried.
        mapping: &[
            (
                S::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                S::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (S::ED25519, &[alg::ED25519]),
            (
                S::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
            (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
            (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// Random numbers and client keys (`HttpsClient.Key`) for rustls, from ring.
#[derive(Debug)]
struct RingKeys;

impl rustls::crypto::SecureRandom for RingKeys {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

impl rustls::crypto::KeyProvider for RingKeys {
    fn load_private_key(
        &self,
        key_der: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        rustls::crypto::ring::sign::any_supported_type(&key_der)
    }
}

/// The client certificate chain and key of `HttpsClient`.
fn client_certificate(cert: &Path, key: &Path) -> Result<ClientCert> {
    let certs = read_certificates(cert)?;
    if certs.is_empty() {
        bail!(
            "{}: no certificate found (HttpsClient.Certificate)",
            cert.display()
        );
    }
    let pem = crate::fsutil::read_bounded(key, MAX_CLIENT_KEY_FILE, "a TLS client key file")?;
    let key = PrivateKey::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a usable private key: {e}", key.display()))?;
    Ok(ClientCert::new_with_certs(&certs, key))
}

/// The rustls client configuration of `options` (the agent's roots,
/// cipher suites, client certificate and `SkipVerify`), for the
/// connections ureq does not make: the add-on forwarder
/// (`crate::daemon::forwarder`) relays WebSocket upgrades, which ureq
/// cannot.
#[cfg(feature = "dbus")]
pub fn tls_client_config(options: &HttpOptions) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let der = |c: &Certificate<'_>| CertificateDer::from(c.der().to_vec());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if options.skip_verify {
        log::warn!(
            "TLS certificate verification is DISABLED (SkipVerify) for the add-on forwarder too"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertificateCheck))
    } else {
        let mut roots = system_roots()?;
        if let Some(extra) = options.extra_ca {
            roots.extend(read_certificates(extra)?);
        }
        let mut store = rustls::RootCertStore::empty();
        let (_, ignored) = store.add_parsable_certificates(roots.iter().map(der));
        if ignored > 0 {
            log::warn!("{ignored} trusted CA certificate(s) could not be used (malformed)");
        }
        builder.with_root_certificates(store)
    };
    let Some((cert, key)) = options.client_cert else {
        return Ok(builder.with_no_client_auth());
    };
    let client = client_certificate(cert, key)?;
    // ureq keeps the key's PEM kind to itself: the DER says it as well.
    let key_der = PrivateKeyDer::try_from(client.private_key().der().to_vec())
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    builder
        .with_client_auth_cert(client.certs().iter().map(der).collect(), key_der)
        .with_context(|| {
            format!(
                "{} and {}: not a usable client certificate and key",
                cert.display(),
                key.display()
            )
        })
}

/// `SkipVerify` for [`tls_client_config`]: any certificate is accepted,
/// and so is any handshake signature, as the agent's own (ureq's) TLS does
/// with verification off: checking the signature of a key nobody vouches
/// for would only refuse the self-signed legacy certificates `SkipVerify`
/// exists for.
#[cfg(feature = "dbus")]
#[derive(Debug)]
struct NoCertificateCheck;

#[cfg(feature = "dbus")]
impl rustls::client::danger::ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        SIGNATURE_ALGORITHMS.supported_schemes()
    }
}

/// GET `url`, failing on any status other than 200.
pub fn get(agent: &ureq::Agent, url: &str) -> Result<ureq::http::Response<ureq::Body>> {
    let response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    if response.status() != 200 {
        bail!("GET {url}: HTTP {}", response.status());
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crypto_provider_is_rings_default_without_chacha20() {
        let ours = crypto_provider();
        let ring = rustls::crypto::ring::default_provider();
        let names = |suites: &[rustls::SupportedCipherSuite]| -> Vec<String> {
            suites.iter().map(|s| format!("{:?}", s.suite())).collect()
        };
        let mut expected = names(&ring.cipher_suites);
        expected.retain(|name| !name.contains("CHACHA20"));
        assert_eq!(names(&ours.cipher_suites), expected);
        assert!(
            names(&ours.cipher_suites)
                .iter()
                .all(|name| name.contains("_GCM_")),
            "{:?}",
            names(&ours.cipher_suites)
        );
        let groups = |p: &rustls::crypto::CryptoProvider| -> Vec<String> {
            p.kx_groups
                .iter()
                .map(|g| format!("{:?}", g.name()))
                .collect()
        };
        assert_eq!(groups(&ours), groups(&ring));
        // The same signature algorithms, in the same order.
        assert_eq!(
            format!("{:?}", ours.signature_verification_algorithms.all),
            format!("{:?}", ring.signature_verification_algorithms.all)
        );
        assert_eq!(
            format!("{:?}", ours.signature_verification_algorithms.mapping),
            format!("{:?}", ring.signature_verification_algorithms.mapping)
        );
        let mut random = [0u8; 32];
        ours.secure_random.fill(&mut random).unwrap();
        assert_ne!(random, [0u8; 32]);
        assert!(ours.fips() == ring.fips());
    }

    #[test]
    fn client_keys_load_through_the_crypto_provider() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let key = crypto_provider()
            .key_provider
            .load_private_key(der.into())
            .unwrap();
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
    }
}
