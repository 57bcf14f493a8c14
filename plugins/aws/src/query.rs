//! The request side of EC2's Query API: an action's parameters and their encoding, filter
//! values, the vendor id `<region>/<instance-id>` and the `ClientToken` of a create.
//!
//! Reference: <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html>.

use std::fmt;

use sha2::{Digest, Sha256};

use provider_sdk::ProviderError;
use provider_sdk::http::percent_encode;

/// The EC2 API version every request names.
pub const API_VERSION: &str = "2016-11-15";

/// One EC2 Query API request: `Action`, `Version` and the action's parameters, in the
/// order added (the signature sorts them itself; EC2 does not care).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
    filters: usize,
}

impl Params {
    /// The parameters of `action` (`DescribeInstances`...) at [`API_VERSION`].
    pub fn new(action: &str) -> Self {
        Self {
            pairs: vec![
                ("Action".into(), action.into()),
                ("Version".into(), API_VERSION.into()),
            ],
            filters: 0,
        }
    }

    /// The action named.
    pub fn action(&self) -> &str {
        &self.pairs[0].1
    }

    /// Adds one parameter.
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.pairs.push((name.into(), value.into()));
        self
    }

    /// Adds the filter `Filter.<n>.Name = name` with `Filter.<n>.Value.<m>` for each value
    /// (EC2 ORs the values of one filter and ANDs the filters). Values are taken as they
    /// are: `*` and `?` are wildcards to EC2 ([`literal`] escapes them).
    pub fn filter(&mut self, name: &str, values: &[&str]) -> &mut Self {
        self.filters += 1;
        let n = self.filters;
        self.add(format!("Filter.{n}.Name"), name);
        for (m, value) in values.iter().enumerate() {
            self.add(format!("Filter.{n}.Value.{}", m + 1), *value);
        }
        self
    }

    /// `name=value&...`, each percent-encoded (RFC 3986: only `A-Z a-z 0-9 - _ . ~` stay),
    /// as a query string or an `application/x-www-form-urlencoded` body; SigV4's canonical
    /// form of each pair.
    pub fn encode(&self) -> String {
        self.pairs
            .iter()
            .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// `value` as a literal EC2 filter value: `*`, `?` and `\` escaped with `\`, so that a key
/// like `a*` matches only itself.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `ClientToken` of the create for an idempotency key: EC2 makes one instance per
/// token (a repeated `RunInstances` answers the instance made the first time), so the
/// order's retries cannot make a second server even when the look-up before them misses.
/// 64 lower-case hex digits (EC2 takes at most 64 ASCII characters): the SHA-256 of the
/// key, so any key, whatever its length or characters, gives a valid token, always the
/// same one.
pub fn client_token(idempotency_key: &str) -> String {
    Sha256::digest(format!("provisioner:{idempotency_key}").as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A server's vendor id: EC2 is regional and `get-server` / `delete-server` get only the
/// vendor id, so it names the region too: `<region>/<instance-id>`, e.g.
/// `us-east-1/i-0123456789abcdef0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorId {
    /// The AWS region, e.g. `us-east-1`.
    pub region: String,
    /// The EC2 instance id, e.g. `i-0123456789abcdef0`.
    pub instance_id: String,
}

impl VendorId {
    /// Parses `<region>/<instance-id>` strictly; `invalid-request` for anything else (the
    /// region becomes part of a host name: nothing but a region's syntax may get there).
    pub fn parse(text: &str) -> Result<Self, ProviderError> {
        match text.split_once('/') {
            Some((region, instance_id)) if is_region(region) && is_instance_id(instance_id) => {
                Ok(Self {
                    region: region.into(),
                    instance_id: instance_id.into(),
                })
            }
            _ => Err(ProviderError::InvalidRequest(format!(
                "'{}' is not an EC2 server id of this plugin: expected <region>/<instance-id>, \
                 e.g. us-east-1/i-0123456789abcdef0",
                provider_sdk::ssh::prefix(text, 80)
            ))),
        }
    }
}

impl fmt::Display for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.instance_id)
    }
}

/// An AWS region code: two letters, words, a number (`us-east-1`, `us-gov-west-1`,
/// `ap-southeast-4`), lower case.
pub fn is_region(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return false;
    };
    text.len() <= 32
        && first.len() == 2
        && first.chars().all(|c| c.is_ascii_lowercase())
        && !middle.is_empty()
        && middle
            .iter()
            .all(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase()))
        && (1..=2).contains(&last.len())
        && last.chars().all(|c| c.is_ascii_digit())
}

/// `<prefix>-` and 8 or 17 lower-case hex digits: EC2's resource id shape.
fn is_resource_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            matches!(hex.len(), 8 | 17)
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

/// An instance id: `i-` and 8 or 17 hex digits.
pub fn is_instance_id(text: &str) -> bool {
    is_resource_id(text, "i")
}

/// An AMI id: `ami-` and 8 or 17 hex digits.
pub fn is_ami_id(text: &str) -> bool {
    is_resource_id(text, "ami")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Action and Version come first, filters count up, values are percent-encoded
    /// (base64's `+`, `/` and `=` included, so a form decoder gets them back).
    #[test]
    fn parameters_encode_as_a_form() {
        let mut params = Params::new("DescribeInstances");
        params
            .filter("tag:provisioner-idempotency-key", &["order 1"])
            .filter("instance-state-name", &["pending", "running"])
            .add("UserData", "I2Nsb3VkLWNvbmZpZw+/=");
        assert_eq!(params.action(), "DescribeInstances");
        assert_eq!(
            params.encode(),
            "Action=DescribeInstances&Version=2016-11-15\
             &Filter.1.Name=tag%3Aprovisioner-idempotency-key&Filter.1.Value.1=order%201\
             &Filter.2.Name=instance-state-name&Filter.2.Value.1=pending\
             &Filter.2.Value.2=running&UserData=I2Nsb3VkLWNvbmZpZw%2B%2F%3D"
        );
    }

    /// Wildcards and the escape character itself are escaped; other text stays.
    #[test]
    fn literal_filter_values_escape_wildcards() {
        assert_eq!(literal("order-1"), "order-1");
        assert_eq!(literal(r"a*b?c\d"), r"a\*b\?c\\d");
    }

    /// One key, one token, always the same: 64 hex digits, whatever the key.
    #[test]
    fn client_tokens_follow_the_key() {
        let token = client_token("8d0f2a4e-0c4b-4c2e-9a57-1f3c5b7d9e11");
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(token, client_token("8d0f2a4e-0c4b-4c2e-9a57-1f3c5b7d9e11"));
        assert_ne!(token, client_token("8d0f2a4e-0c4b-4c2e-9a57-1f3c5b7d9e12"));
        assert_eq!(client_token(&"ü".repeat(300)).len(), 64);
        // SHA-256("provisioner:k"), computed apart (`printf provisioner:k | sha256sum`).
        assert_eq!(
            client_token("k"),
            "795890bc07191afa069b4f98c43c1f013c4930ea1d31b17b53b9a9f7792727af"
        );
    }

    /// `<region>/<instance-id>` round-trips; anything else is invalid-request.
    #[test]
    fn vendor_ids_carry_the_region() {
        let id = VendorId::parse("us-east-1/i-0123456789abcdef0").unwrap();
        assert_eq!(id.region, "us-east-1");
        assert_eq!(id.instance_id, "i-0123456789abcdef0");
        assert_eq!(id.to_string(), "us-east-1/i-0123456789abcdef0");
        assert!(VendorId::parse("us-gov-west-1/i-1a2b3c4d").is_ok());
        for bad in [
            "i-0123456789abcdef0",
            "us-east-1/",
            "/i-0123456789abcdef0",
            "us-east-1/i-0123456789ABCDEF0",
            "us-east-1/i-0123456789abcdef",
            "us-east-1/i-0123456789abcdef0/x",
            "evil.example#/i-0123456789abcdef0",
            "us-east-1.evil/i-0123456789abcdef0",
            "US-EAST-1/i-0123456789abcdef0",
            "us-east/i-0123456789abcdef0",
            "42",
        ] {
            assert!(
                matches!(VendorId::parse(bad), Err(ProviderError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }

    /// AMI ids are `ami-` and 8 or 17 hex digits; names are not ids.
    #[test]
    fn ami_ids_have_their_shape() {
        assert!(is_ami_id("ami-0abcdef1234567890"));
        assert!(is_ami_id("ami-1e749f67"));
        assert!(!is_ami_id("ami-ekswin"));
        assert!(!is_ami_id("al2023-ami-2023.6.20241212.0-kernel-6.1-x86_64"));
        assert!(!is_ami_id("ami-1e749f6"));
        assert!(!is_instance_id("ami-1e749f67"));
    }
}
