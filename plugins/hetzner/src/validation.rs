//! Offline checks of a request, with the rules Hetzner applies (no network I/O).

use provider_sdk::catalogue::{Accepted, Known, REGIONS};
use provider_sdk::{
    IDEMPOTENCY_LABEL, ProviderError, ServerRequest, check_user_data_len, is_hostname, ssh,
    unique_name,
};

/// Hetzner's longest server name.
pub const MAX_NAME: usize = 63;

/// Hetzner's largest user data, in bytes.
const MAX_USER_DATA: usize = 32 * 1024;

/// Hetzner's public locations; the manifest's `regions` config (or its older name
/// `locations`) overrides the list.
const LOCATIONS: &[&str] = &["fsn1", "nbg1", "hel1", "ash", "hil", "sin"];

/// The config keys listing the locations, the documented one first.
const REGION_KEYS: &[&str] = &[REGIONS, "locations"];

/// The regions, sizes and images `validate` accepts offline, and the `catalogue` export's
/// lists: the configured ones, else [`LOCATIONS`]; sizes and images only when configured.
pub const ACCEPTED: Accepted = Accepted {
    region: Known::region(LOCATIONS).with_config_keys(REGION_KEYS),
    size: Known::size(&[]),
    image: Known::image(&[]),
};

/// Refuses what Hetzner would refuse, naming the field.
pub fn check(request: &ServerRequest) -> Result<(), ProviderError> {
    let invalid = |message: String| Err(ProviderError::InvalidRequest(message));
    if !is_hostname(&request.name) {
        return invalid(format!(
            "name '{}' is not a valid hostname (letters, digits, hyphens; 1-63 per label)",
            request.name
        ));
    }
    // The name the server gets at Hetzner must fit too (see `provider_sdk::unique_name`).
    unique_name(&request.name, &request.idempotency_key, MAX_NAME)?;
    ACCEPTED.check_slugs(
        request,
        "a Hetzner server type name",
        "a Hetzner image name",
    )?;
    if !is_label_value(&request.idempotency_key) {
        return invalid(format!(
            "idempotency key '{}' cannot be a Hetzner label value",
            request.idempotency_key
        ));
    }
    ssh::parse_all(&request.ssh_keys)?;
    check_user_data_len(request.user_data.as_deref(), MAX_USER_DATA, "Hetzner")?;
    for (key, value) in &request.labels {
        if key == IDEMPOTENCY_LABEL {
            return invalid(format!("label '{key}' is reserved for the provisioner"));
        }
        if !is_label_key(key) || !is_label_value(value) {
            return invalid(format!(
                "label '{key}={value}' is not a valid Hetzner label"
            ));
        }
    }
    Ok(())
}

/// Label values: at most 63 characters, alphanumerics with `-_.` inside; may be empty.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
}

/// Label keys: an optional DNS-subdomain prefix and `/`, then a name like a value.
fn is_label_key(key: &str) -> bool {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 || !is_hostname(prefix) {
                return false;
            }
            name
        }
        None => key,
    };
    !name.is_empty() && is_label_value(name)
}
