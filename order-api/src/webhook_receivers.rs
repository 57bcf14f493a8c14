//! Which receivers a webhook may call and how the log names one: a URL is checked when the
//! order is made and at every call ([`check_url`]), a host name resolved to public addresses
//! only at connect time ([`ReceiverResolver`]), and a receiver is named by its origin only
//! ([`origin`]). Imports nothing of this crate, so the HTTP API, the store (which names the
//! receiver in the order's log) and the deliverer all use it without a cycle.

use std::net::{IpAddr, SocketAddr};

use provisioner_contract::netaddr::is_public;

/// Longest accepted webhook URL.
const MAX_URL: usize = 2048;
/// Why a URL with an IP address that is not public is refused.
const NOT_PUBLIC: &str = "must point to a public address (not a private, loopback, link-local or other special-purpose one)";

/// Whether a webhook URL is acceptable: `http` or `https`, a host, no user or password, at
/// most 2,048 characters, and (unless `allow_private`) not an IP address that is not public
/// (private, loopback, link-local or any other special-purpose block). A host name is
/// checked, resolved, at every call.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("is not a URL ({error})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal
        && !allow_private
        && !is_public(ip)
    {
        return Err(NOT_PUBLIC.into());
    }
    Ok(())
}

/// A receiver URL's origin, `scheme://host:port`: all the log says of a receiver, since a
/// URL's path and query may carry a token.
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", parsed.scheme()),
            _ => format!("{}://(no host)", parsed.scheme()),
        },
        Err(_) => "(not a URL)".into(),
    }
}

/// Resolves receivers' names to public addresses only (unless private ones are allowed), at
/// connect time: a name that resolves to a private address, also one that changed after the
/// order was made, is refused.
pub(super) struct ReceiverResolver {
    /// Whether private, loopback and link-local addresses are allowed too.
    pub(super) allow_private: bool,
}

impl reqwest::dns::Resolve for ReceiverResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| allow_private || is_public(address.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} has no public address (private, loopback, link-local and other \
                     special-purpose receivers are refused)"
                )
                .into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URLs: http(s) with a host, no credentials, and no private address unless allowed.
    #[test]
    fn checks_receiver_urls() {
        for good in ["https://example.com/hook", "http://203.0.114.9:8080/x"] {
            assert!(check_url(good, false).is_ok(), "{good}");
        }
        for bad in [
            "ftp://example.com/x",
            "http://",
            "https://user:pw@example.com/x",
            "http://127.0.0.1:9000/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:192.168.0.1]/x",
            "http://100.64.0.1/x",
            "http://198.18.0.1/x",
            "http://[::ffff:0:127.0.0.1]/x",
            "http://[64:ff9b::a00:1]/x",
            "http://[2002:7f00:1::]/x",
            "http://[fec0::1]/x",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9000/x", true).is_ok());
        assert!(check_url("https://user:pw@example.com/x", true).is_err());
    }

    /// The log's name of a receiver: scheme, host and port, never the path or query.
    #[test]
    fn origins_leave_out_path_and_query() {
        assert_eq!(
            origin("https://hooks.example.com/in?token=secret"),
            "https://hooks.example.com:443"
        );
        assert_eq!(origin("http://[::1]:8080/a/b"), "http://[::1]:8080");
        assert_eq!(origin("not a url"), "(not a URL)");
    }
}
