//! Which HTTP proxy a request goes through, from `http_proxy`,
//! `https_proxy` and `no_proxy` (or their upper-case forms), with the rules
//! of the Mender client 4.x/5.x (`docs/configuration.md`, "Proxies"):
//!
//! * `http_proxy` serves `http://` URLs, `https_proxy` serves `https://`
//!   URLs; `ALL_PROXY` is not read. An empty variable counts as unset; the
//!   lower-case and upper-case forms of one variable set at once is an
//!   error, and so is `HTTP_PROXY` in a CGI environment (`REQUEST_METHOD`
//!   set: the "httpoxy" attack).
//! * A proxy is an `http://` or `https://` URL, with optional
//!   `user:password@` (sent as `Proxy-Authorization: Basic`) and port
//!   (default 80 or 443), and no path beyond `/`.
//! * `no_proxy` is a space-separated list (a comma anywhere is an error, as
//!   in 4.x); an entry matches a host equal to it, and an entry starting
//!   with `.` matches every host ending with it (`.` alone: every host).
//!   No ports, no `*`. Host names compare without regard to ASCII case.
//!
//! The decision is here, in one place, for the server API, artifact
//! downloads and the add-on forwarder. ureq would read the environment
//! itself with other rules (`ALL_PROXY`, commas): `crate::http` turns that
//! off and asks [`ProxySettings::proxy_for_uri`] for every request.

use std::fmt;

use ureq::Proxy;
use ureq::http::Uri;

/// A proxy setting that cannot be used; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProxyError(String);

/// The proxies of the environment, checked.
#[derive(Clone, Default)]
pub struct ProxySettings {
    http: Option<Proxy>,
    https: Option<Proxy>,
    /// `no_proxy` entries, lower-case.
    no_proxy: Vec<String>,
}

impl fmt::Debug for ProxySettings {
    // The proxy URLs may hold a password: only say which are set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("http", &self.http.is_some())
            .field("https", &self.https.is_some())
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// The largest proxy variable accepted: a URL or a list of host names.
const MAX_VARIABLE_LEN: usize = 64 << 10;

impl ProxySettings {
    /// Reads and checks the process environment.
    pub fn from_env() -> Result<ProxySettings, ProxyError> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads and checks the variables `lookup` returns (tests pass their own).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ProxySettings, ProxyError> {
        if lookup("REQUEST_METHOD").is_some() && lookup("HTTP_PROXY").is_some() {
            return Err(ProxyError(
                "HTTP_PROXY is set in a CGI environment (REQUEST_METHOD is set), which is insecure; use http_proxy".into(),
            ));
        }
        let http = variable(&lookup, "http_proxy", "HTTP_PROXY")?
            .map(|(name, url)| parse_proxy(name, &url))
            .transpose()?;
        let https = variable(&lookup, "https_proxy", "HTTPS_PROXY")?
            .map(|(name, url)| parse_proxy(name, &url))
            .transpose()?;
        let no_proxy = match variable(&lookup, "no_proxy", "NO_PROXY")? {
            None => Vec::new(),
            Some((name, list)) => {
                if list.contains(',') {
                    return Err(ProxyError(format!(
                        "{name}: unsupported syntax: use space-separated values instead of comma-separated (as the Mender client 4.x/5.x)"
                    )));
                }
                list.split_ascii_whitespace()
                    .map(|entry| entry.to_ascii_lowercase())
                    .collect()
            }
        };
        Ok(ProxySettings {
            http,
            https,
            no_proxy,
        })
    }

    /// Whether any proxy is set.
    pub fn any(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// Whether `no_proxy` exempts `host`.
    pub fn bypasses(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.no_proxy.iter().any(|entry| {
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            if entry == "." {
                true
            } else if entry.starts_with('.') {
                host.ends_with(entry)
            } else {
                host == entry
            }
        })
    }

    /// The proxy for a request to `uri`, if any.
    pub fn proxy_for_uri(&self, uri: &Uri) -> Option<Proxy> {
        let proxy = match uri.scheme_str() {
            Some("http") => self.http.as_ref(),
            Some("https") => self.https.as_ref(),
            _ => None,
        }?;
        match uri.host() {
            Some(host) if !self.bypasses(host) => Some(proxy.clone()),
            _ => None,
        }
    }
}

/// The proxy for a request to `url`, with the environment as it is now
/// (for callers that make their own connections, such as the add-on
/// forwarder).
pub fn proxy_for(url: &str) -> anyhow::Result<Option<Proxy>> {
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{url:?}: not a valid URL: {e}"))?;
    Ok(ProxySettings::from_env()?.proxy_for_uri(&uri))
}

/// The value of `lower` or `upper` and the name it came from; empty counts
/// as unset; both set is an error.
fn variable(
    lookup: &impl Fn(&str) -> Option<String>,
    lower: &'static str,
    upper: &'static str,
) -> Result<Option<(&'static str, String)>, ProxyError> {
    let get = |name: &'static str| lookup(name).filter(|v| !v.is_empty()).map(|v| (name, v));
    let found = match (get(lower), get(upper)) {
        (Some(_), Some(_)) => {
            return Err(ProxyError(format!(
                "{lower} and {upper} are both set; set only one of them"
            )));
        }
        (found, None) | (None, found) => found,
    };
    if let Some((name, value)) = &found
        && value.len() > MAX_VARIABLE_LEN
    {
        return Err(ProxyError(format!(
            "{name}: {} bytes, more than the {MAX_VARIABLE_LEN} accepted",
            value.len()
        )));
    }
    Ok(found)
}

/// A proxy URL as 4.x accepts it (see the module comment).
fn parse_proxy(name: &str, url: &str) -> Result<Proxy, ProxyError> {
    // Messages never show the URL itself: it may hold a password.
    let bad = |why: &str| ProxyError(format!("{name}: not a usable proxy URL: {why}"));
    let uri: Uri = url.parse().map_err(|_| bad("malformed URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(bad("the scheme must be http:// or https://")),
        None => return Err(bad("no scheme (write http://host:port)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    // `Uri` keeps a port it cannot read as absent: check it here.
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some((_, port)) = host_port.rsplit_once(':')
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(bad("malformed port"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a proxy URL has no path"));
    }
    Proxy::new(url).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<ProxySettings, ProxyError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxySettings::from_lookup(|name| map.get(name).cloned())
    }

    fn proxy_of(s: &ProxySettings, url: &str) -> Option<(String, u16)> {
        s.proxy_for_uri(&url.parse().unwrap())
            .map(|p| (p.host().to_string(), p.port()))
    }

    #[test]
    fn each_scheme_has_its_own_proxy() {
        let s = settings(&[
            ("http_proxy", "http://plain.proxy:3128"),
            ("HTTPS_PROXY", "http://user:pa%40ss@tls.proxy"),
        ])
        .unwrap();
        assert_eq!(
            proxy_of(&s, "http://server/api"),
            Some(("plain.proxy".into(), 3128))
        );
        assert_eq!(
            proxy_of(&s, "https://server/api"),
            Some(("tls.proxy".into(), 80))
        );
        let p = s.proxy_for_uri(&"https://x/".parse().unwrap()).unwrap();
        assert_eq!(p.username(), Some("user"));
        assert_eq!(p.password(), Some("pa@ss"));
        assert_eq!(
            proxy_of(
                &settings(&[("https_proxy", "https://p")]).unwrap(),
                "https://s"
            ),
            Some(("p".into(), 443))
        );
        // Only https_proxy: http URLs go direct, and the other way round.
        let only_https = settings(&[("https_proxy", "http://p:1")]).unwrap();
        assert_eq!(proxy_of(&only_https, "http://server/"), None);
        assert!(
            settings(&[])
                .unwrap()
                .proxy_for_uri(&"https://s/".parse().unwrap())
                .is_none()
        );
        // ALL_PROXY is not read (4.x does not).
        assert!(!settings(&[("ALL_PROXY", "http://p:1")]).unwrap().any());
    }

    #[test]
    fn no_proxy_follows_mender_4() {
        let s = settings(&[
            ("https_proxy", "http://p:1"),
            ("no_proxy", "127.0.0.1 exact.host  .suffix.tech ::1"),
        ])
        .unwrap();
        for direct in [
            "https://127.0.0.1:8443/",
            "https://exact.host/",
            "https://EXACT.Host/",
            "https://a.suffix.tech/",
            "https://a.b.suffix.tech/",
            "https://[::1]:443/",
        ] {
            let host = direct.parse::<Uri>().unwrap().host().unwrap().to_string();
            assert_eq!(proxy_of(&s, direct), None, "{direct} ({host})");
        }
        for proxied in [
            "https://sub.exact.host/",
            "https://suffix.tech/",
            "https://notsuffix.tech/",
            "https://127.0.0.2/",
        ] {
            assert!(proxy_of(&s, proxied).is_some(), "{proxied}");
        }
        // "." alone: every host.
        let all = settings(&[("https_proxy", "http://p:1"), ("NO_PROXY", ".")]).unwrap();
        assert_eq!(proxy_of(&all, "https://anything/"), None);
        // Ports and "*" are not understood: they match nothing.
        let odd = settings(&[("https_proxy", "http://p:1"), ("no_proxy", "s:443 *")]).unwrap();
        assert!(proxy_of(&odd, "https://s:443/").is_some());
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let e = settings(&[("no_proxy", "a.example,b.example")]).unwrap_err();
        assert!(
            e.to_string().contains("no_proxy") && e.to_string().contains("space-separated"),
            "{e}"
        );
        let e = settings(&[("NO_PROXY", "a b,c")]).unwrap_err();
        assert!(e.to_string().starts_with("NO_PROXY"), "{e}");
        let e =
            settings(&[("http_proxy", "http://a:1"), ("HTTP_PROXY", "http://b:1")]).unwrap_err();
        assert!(e.to_string().contains("both set"), "{e}");
        // Empty counts as unset.
        assert!(settings(&[("http_proxy", ""), ("HTTP_PROXY", "http://b:1")]).is_ok());
        let e = settings(&[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "http://b:1")]).unwrap_err();
        assert!(e.to_string().contains("CGI"), "{e}");
        for (url, why) in [
            ("proxy:3128", "scheme"),
            ("socks5://proxy:1080", "scheme"),
            ("http://proxy:3128/path", "path"),
            ("http://user:secret@proxy:3128/x", "path"),
            ("http://proxy:99999", "malformed port"),
        ] {
            let e = match settings(&[("https_proxy", url)]) {
                Ok(_) => panic!("{url} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.starts_with("https_proxy: ") && e.contains(why),
                "{url}: {e}"
            );
            assert!(!e.contains("secret"), "{e}");
        }
        assert!(settings(&[("https_proxy", "http://proxy:3128/")]).is_ok());
        let long = format!("http://{}", "a".repeat(MAX_VARIABLE_LEN));
        assert!(settings(&[("http_proxy", &long)]).is_err());
        assert!(
            !format!(
                "{:?}",
                settings(&[("http_proxy", "http://u:secret@p:1")]).unwrap()
            )
            .contains("secret")
        );
    }
}
