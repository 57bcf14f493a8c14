//! What every simulated vendor reads from a request the same way: the bearer token, RFC 1123
//! server names, and the label under which provider plugins carry the idempotency key.

/// The label (tag, metadata key) under which provider plugins carry the idempotency key.
/// The simulator uses it to count servers per key and report duplicates.
pub const IDEMPOTENCY_LABEL: &str = "provisioner-idempotency-key";

/// The token of an `Authorization: Bearer <token>` header (Hetzner, DigitalOcean, Example
/// Cloud).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value
        .strip_prefix("Bearer ")
        .map(|token| token.trim().to_string())
}

/// An RFC 1123 hostname, as the vendors require for server names.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are hostnames, as the vendors require.
    #[test]
    fn hostnames_are_checked() {
        assert!(valid_hostname("web-1"));
        assert!(!valid_hostname("-web"));
        assert!(!valid_hostname("web_1"));
        assert!(!valid_hostname(""));
    }
}
