//! Outbound HTTP grants: which origins a plugin may reach.
//!
//! A manifest's `allowed_hosts` entries are `scheme://host:port` patterns. Each part may be
//! a wildcard: `*` for the scheme or the port, `*.example.com` for any subdomain of
//! `example.com` (not `example.com` itself), `*` for any host. A pattern that allows any host
//! is refused unless the manifest sets `insecure = true`: it would let the plugin send its
//! credentials anywhere.
//!
//! A missing port is the scheme's default: 80 for `http`, 443 for `https`, and for a `*`
//! scheme whichever of the two the request uses. `*.domain` matches host names only, never
//! an IP literal (`*.0.1` does not match `127.0.0.1`); only `*` (any host, `insecure`) or
//! the literal itself grants an IP address.

use std::fmt;
use std::net::IpAddr;

/// One parsed `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Exact(u16),
    /// No port given with a `*` scheme: 80 for http, 443 for https.
    SchemeDefault,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix`.
    Subdomains(String),
    Any,
}

impl OriginPattern {
    /// Parses `scheme://host:port` (port optional: the scheme's default).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("expected scheme://host:port")?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "*" => None,
            s @ ("http" | "https") => Some(s.to_string()),
            other => return Err(format!("scheme '{other}' is not http, https or *")),
        };
        if rest.contains('/') {
            return Err("must not have a path; give only scheme://host:port".into());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
                let port = match port {
                    "*" => PortPattern::Any,
                    number => PortPattern::Exact(
                        number
                            .parse::<u16>()
                            .map_err(|_| format!("port '{number}' is not a number or *"))?,
                    ),
                };
                (host, port)
            }
            _ => match scheme.as_deref() {
                Some(scheme) => (rest, PortPattern::Exact(default_port(scheme))),
                None => (rest, PortPattern::SchemeDefault),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("host pattern '{host}' is not *.domain"));
            }
            HostPattern::Subdomains(suffix.to_string())
        } else if host.is_empty() || host.contains('*') {
            return Err(format!("host '{host}' is not a host name, *.domain or *"));
        } else {
            HostPattern::Exact(host)
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether the pattern lets the plugin reach any host.
    pub fn allows_any_host(&self) -> bool {
        self.host == HostPattern::Any
    }

    /// Whether a request to `scheme://host:port` matches.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let port_ok = match self.port {
            PortPattern::Exact(p) => p == port,
            PortPattern::SchemeDefault => port == default_port(scheme),
            PortPattern::Any => true,
        };
        let host_ok = match &self.host {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomains(suffix) => {
                ip_literal(host).is_none()
                    && host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
            }
            HostPattern::Any => true,
        };
        scheme_ok && port_ok && host_ok
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.as_deref().unwrap_or("*");
        let host = match &self.host {
            HostPattern::Exact(host) => host.clone(),
            HostPattern::Subdomains(suffix) => format!("*.{suffix}"),
            HostPattern::Any => "*".into(),
        };
        match self.port {
            PortPattern::Exact(port) => write!(f, "{scheme}://{host}:{port}"),
            PortPattern::SchemeDefault => write!(f, "{scheme}://{host}"),
            PortPattern::Any => write!(f, "{scheme}://{host}:*"),
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "http" { 80 } else { 443 }
}

/// The address a request's host names literally (`127.0.0.1`, `[::1]`), if it is one.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A request's origin, as the grant check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host.
    pub host: String,
    /// Port, the scheme's default filled in.
    pub port: u16,
}

impl Origin {
    /// The origin of a request URI, if it has a scheme and a host.
    pub fn of(uri: &http::Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or_else(|| default_port(&scheme));
        Some(Self { scheme, host, port })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Whether any of `patterns` grants `origin`.
pub fn is_granted(patterns: &[OriginPattern], origin: &Origin) -> bool {
    patterns
        .iter()
        .any(|p| p.matches(&origin.scheme, &origin.host, origin.port))
}

/// Whether one of `patterns` names `origin`'s host itself (not `*`): for an IP literal,
/// a grant of that very address.
pub fn is_granted_by_name(patterns: &[OriginPattern], origin: &Origin) -> bool {
    patterns.iter().any(|p| {
        matches!(p.host, HostPattern::Exact(_))
            && p.matches(&origin.scheme, &origin.host, origin.port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(uri: &str) -> Origin {
        Origin::of(&uri.parse().unwrap()).unwrap()
    }

    fn granted(patterns: &[&str], uri: &str) -> bool {
        let patterns: Vec<OriginPattern> = patterns
            .iter()
            .map(|p| OriginPattern::parse(p).unwrap())
            .collect();
        is_granted(&patterns, &origin(uri))
    }

    /// Exact grants allow only that scheme, host and port; default ports are filled in.
    #[test]
    fn exact_grants_allow_only_their_origin() {
        let grant = ["https://api.hetzner.cloud"];
        assert!(granted(&grant, "https://api.hetzner.cloud/v1/servers"));
        assert!(granted(&grant, "https://API.hetzner.cloud:443/v1"));
        assert!(!granted(&grant, "http://api.hetzner.cloud/v1"));
        assert!(!granted(&grant, "https://api.hetzner.cloud:8443/v1"));
        assert!(!granted(&grant, "https://evil.example/v1"));
    }

    /// Nothing is granted without a grant.
    #[test]
    fn no_grant_denies_everything() {
        assert!(!granted(&[], "https://api.hetzner.cloud/v1"));
    }

    /// `*.domain` covers subdomains but not the domain itself or look-alikes.
    #[test]
    fn subdomain_wildcards_cover_only_subdomains() {
        let grant = ["https://*.example.com:443"];
        assert!(granted(&grant, "https://nova.example.com/v2.1"));
        assert!(granted(&grant, "https://a.b.example.com/"));
        assert!(!granted(&grant, "https://example.com/"));
        assert!(!granted(&grant, "https://evilexample.com/"));
        assert!(!granted(&grant, "https://example.com.evil.net/"));
    }

    /// `*` for the scheme or the port widens only that part.
    #[test]
    fn scheme_and_port_wildcards() {
        assert!(granted(
            &["*://cloud.example:8774"],
            "http://cloud.example:8774/"
        ));
        assert!(granted(
            &["*://cloud.example:8774"],
            "https://cloud.example:8774/"
        ));
        assert!(granted(
            &["https://cloud.example:*"],
            "https://cloud.example:9292/"
        ));
        assert!(!granted(
            &["https://cloud.example:*"],
            "http://cloud.example:9292/"
        ));
    }

    /// Malformed entries are refused with a reason.
    #[test]
    fn refuses_malformed_patterns() {
        assert!(
            OriginPattern::parse("ftp://x:21")
                .unwrap_err()
                .contains("not http")
        );
        assert!(
            OriginPattern::parse("https://x/v1")
                .unwrap_err()
                .contains("path")
        );
        assert!(OriginPattern::parse("api.example.com").is_err());
        assert!(OriginPattern::parse("https://a*b.example.com").is_err());
        assert!(OriginPattern::parse("https://x:http").is_err());
        assert!(OriginPattern::parse("*://*:*").unwrap().allows_any_host());
    }

    /// A grant without a port allows the scheme's default port only, also when the scheme
    /// is `*` (80 for http, 443 for https), as docs/plugins.md says.
    #[test]
    fn a_missing_port_is_the_schemes_default() {
        let grant = ["*://127.0.0.1"];
        assert!(granted(&grant, "http://127.0.0.1/"));
        assert!(granted(&grant, "https://127.0.0.1/"));
        assert!(!granted(&grant, "http://127.0.0.1:5432/"));
        assert!(!granted(&grant, "https://127.0.0.1:80/"));
        assert!(!granted(&grant, "http://127.0.0.1:443/"));
        assert_eq!(
            OriginPattern::parse("*://127.0.0.1").unwrap().to_string(),
            "*://127.0.0.1"
        );
        let grant = ["http://cloud.example"];
        assert!(granted(&grant, "http://cloud.example/"));
        assert!(!granted(&grant, "http://cloud.example:8080/"));
    }

    /// `*.domain` matches names only: never an IPv4 or IPv6 literal that happens to end in
    /// the same characters.
    #[test]
    fn subdomain_wildcards_never_match_ip_literals() {
        assert!(!granted(&["http://*.0.1:9999"], "http://127.0.0.1:9999/"));
        assert!(!granted(&["http://*.1:80"], "http://10.0.0.1/"));
        assert!(!granted(&["http://*.1]:80"], "http://[::1]/"));
        assert!(granted(&["http://*.0.1:9999"], "http://a.0.1:9999/"));
    }
}
