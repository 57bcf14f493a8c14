//! What the plugin derives from an order, all pure: the `requestId` of `instances.insert`,
//! the instance name, the idempotency label's value, and the vendor id (`<zone>/<name>`).

use provider_sdk::ProviderError;
use sha2::{Digest, Sha256};

/// GCE's longest label value and instance name.
pub const MAX_LABEL: usize = 63;
/// The prefix of a label value that is a digest of the key (see [`label_value`]).
pub const DIGEST_PREFIX: &str = "sha256-";

/// The `requestId` of the insert for an idempotency key: a UUID made from SHA-256 of
/// `provisioner:gcp:<key>` with the version nibble set to 8 ("custom", RFC 9562) and the
/// RFC 4122 variant bits, so the same key always sends the same id and Compute answers a
/// repeated insert with the operation of the first. Never the nil UUID (Compute refuses
/// it): the variant bits alone make that impossible.
pub fn request_id(key: &str) -> String {
    let digest = Sha256::digest(format!("provisioner:gcp:{key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A label value GCE takes: lowercase letters, digits, `_`, `-`, at most 63 characters.
pub fn is_label_value(value: &str) -> bool {
    value.len() <= MAX_LABEL
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A label key GCE takes: a lowercase letter first, then as for values, not empty.
pub fn is_label_key(key: &str) -> bool {
    key.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && is_label_value(key)
}

/// The value of the `provisioner-idempotency-key` label for `key`: the key itself when GCE
/// takes it as a label value (order ids, UUIDs, always do), else `sha256-` and the first 56
/// hex digits of SHA-256 of the key (63 characters). The key itself also goes into the
/// instance's metadata under the same name, so `list-servers` reports it either way.
pub fn label_value(key: &str) -> String {
    if is_label_value(key) {
        return key.to_string();
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{DIGEST_PREFIX}{}", &hex[..MAX_LABEL - DIGEST_PREFIX.len()])
}

/// The instance name of an order: its name made RFC 1035 (lowercase; anything but letters,
/// digits and `-` becomes `-`; a leading non-letter gets `vm-` in front), then made unique
/// per key by `provider_sdk::unique_name` (`<name>-<10 hex digits of the key>`, at most 63
/// characters): two orders with one name never clash in a zone, and one key always gives
/// the same name.
pub fn instance_name(name: &str, key: &str) -> Result<String, ProviderError> {
    let mut base: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let base = base.trim_matches('-');
    let base = match base.chars().next() {
        Some(c) if c.is_ascii_lowercase() => base.to_string(),
        _ => format!("vm-{base}").trim_end_matches('-').to_string(),
    };
    provider_sdk::unique_name(&base, key, MAX_LABEL)
}

/// `name` is an RFC 1035 label as GCE wants names: a lowercase letter, then lowercase
/// letters, digits and `-`, not ending in `-`, at most 63.
pub fn is_rfc1035(name: &str) -> bool {
    name.len() <= MAX_LABEL
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A zone name (`europe-west4-a`): lowercase letters, digits and inner hyphens, with at least
/// two hyphens.
pub fn is_zone(zone: &str) -> bool {
    is_rfc1035(zone) && zone.matches('-').count() >= 2
}

/// A vendor id: `<zone>/<instance name>`, since every Compute call names the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorId {
    /// The zone.
    pub zone: String,
    /// The instance name.
    pub name: String,
}

impl VendorId {
    /// Parses `<zone>/<name>` strictly; anything else is `invalid-request`.
    pub fn parse(text: &str) -> Result<Self, ProviderError> {
        match text.split_once('/') {
            Some((zone, name)) if is_zone(zone) && is_rfc1035(name) => Ok(Self {
                zone: zone.into(),
                name: name.into(),
            }),
            _ => Err(ProviderError::InvalidRequest(format!(
                "'{}' is not a Compute Engine vendor id (<zone>/<instance name>)",
                provider_sdk::ssh::prefix(text, 80)
            ))),
        }
    }
}

impl std::fmt::Display for VendorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.zone, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requestId is a stable, valid, non-nil UUID per key, different across keys.
    #[test]
    fn request_ids_are_stable_uuids_per_key() {
        let a = request_id("order-a");
        assert_eq!(a, request_id("order-a"));
        assert_ne!(a, request_id("order-b"));
        assert_eq!(a.len(), 36);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        assert_eq!(&parts[2][..1], "8", "version nibble: {a}");
        assert!(
            matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
            "variant: {a}"
        );
        assert_ne!(a, "00000000-0000-0000-0000-000000000000");
        assert!(!request_id("").starts_with("00000000-0000"));
    }

    /// A key GCE takes as a label value is used as it is; anything else becomes a digest
    /// that GCE takes, the same for the same key.
    #[test]
    fn label_values_fit_gce_rules() {
        let order = "0b8e2c1a-6f1e-4c55-9a0e-2f7d6c1b9e11";
        assert_eq!(label_value(order), order);
        for key in ["Order-1", "a.b", &"k".repeat(64), "ключ", ""] {
            let value = label_value(key);
            if key.is_empty() {
                assert_eq!(value, "");
                continue;
            }
            assert!(is_label_value(&value), "{key} -> {value}");
            assert!(value.starts_with(DIGEST_PREFIX), "{value}");
            assert_eq!(value.len(), 63);
            assert_eq!(value, label_value(key));
        }
        assert_ne!(label_value("Order-1"), label_value("Order-2"));
    }

    /// Names become RFC 1035, unique per key, at most 63 characters.
    #[test]
    fn instance_names_are_rfc1035_and_follow_the_key() {
        let a = instance_name("web", "k1").unwrap();
        assert!(a.starts_with("web-") && a.len() == 14, "{a}");
        assert_eq!(a, instance_name("web", "k1").unwrap());
        assert_ne!(a, instance_name("web", "k2").unwrap());
        for name in [
            "Web.Example.COM",
            "1st server",
            "--x--",
            &"a".repeat(100),
            "ü",
            "db_1",
        ] {
            let made = instance_name(name, "key").unwrap();
            assert!(is_rfc1035(&made), "{name} -> {made}");
        }
        assert!(
            instance_name("Web.Example.COM", "k")
                .unwrap()
                .starts_with("web-example-com-")
        );
        assert!(instance_name("1st", "k").unwrap().starts_with("vm-1st-"));
    }

    /// Vendor ids parse strictly and print back.
    #[test]
    fn vendor_ids_name_zone_and_instance() {
        let id = VendorId::parse("europe-west4-a/web-0123456789").unwrap();
        assert_eq!(id.zone, "europe-west4-a");
        assert_eq!(id.name, "web-0123456789");
        assert_eq!(id.to_string(), "europe-west4-a/web-0123456789");
        for bad in [
            "",
            "web",
            "zone/web",
            "europe-west4-a/",
            "europe-west4-a/Web",
            "a/b/c",
        ] {
            assert!(
                matches!(VendorId::parse(bad), Err(ProviderError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }
}
