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

/// Reads every certificate of a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
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
    let tls = TlsConfig::builder()
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
        .build();
    Ok(config.into())
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
    let pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let key = PrivateKey::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a usable private key: {e}", key.display()))?;
    Ok(ClientCert::new_with_certs(&certs, key))
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
