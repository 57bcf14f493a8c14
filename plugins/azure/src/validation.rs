//! Offline checks of a request with the rules ARM applies (no network I/O): location, VM
//! size, image reference, name, tags, SSH keys, user data.

use provider_sdk::catalogue::{Accepted, Known};
use provider_sdk::{ProviderError, ServerRequest, check_label_count, is_hostname, ssh};
use serde_json::{Value, json};

use crate::names;

/// The regions, sizes and images `validate` accepts offline, and the `catalogue` export's
/// lists: Azure's locations, VM sizes and images are the subscription's: only the manifest's
/// `[config]` lists them.
pub const ACCEPTED: Accepted = Accepted {
    region: Known::region(&[]),
    size: Known::size(&[]),
    image: Known::image(&[]),
};

/// The most `customData` takes, decoded, in bytes.
pub const MAX_USER_DATA: usize = 65_535;
/// ARM's most tags per resource.
const MAX_TAGS: usize = 50;
/// ARM's longest tag name and value.
const MAX_TAG_NAME: usize = 512;
const MAX_TAG_VALUE: usize = 256;

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest(message)
}

/// An Azure location name (`westeurope`, `eastus2`).
pub fn is_location(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 40
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A VM size name (`Standard_B1s`, `Standard_D2s_v5`).
pub fn is_vm_size(size: &str) -> bool {
    size.len() <= 64
        && size.contains('_')
        && size
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && size.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// The `storageProfile.imageReference` of an image: a platform image URN
/// `publisher:offer:sku:version`, or an image resource id (`/subscriptions/...`, a custom
/// or gallery image); `None` when it is neither.
pub fn image_reference(image: &str) -> Option<Value> {
    if image.starts_with('/') {
        let lower = image.to_ascii_lowercase();
        return (lower.starts_with("/subscriptions/") && lower.contains("/providers/"))
            .then(|| json!({"id": image}));
    }
    let parts: Vec<&str> = image.split(':').collect();
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 128
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match parts.as_slice() {
        [publisher, offer, sku, version] if parts.iter().all(|p| part_ok(p)) => Some(json!({
            "publisher": publisher, "offer": offer, "sku": sku, "version": version,
        })),
        _ => None,
    }
}

/// A tag name ARM takes.
pub fn is_tag_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TAG_NAME
        && !name
            .chars()
            .any(|c| matches!(c, '<' | '>' | '%' | '&' | '\\' | '?' | '/') || c.is_control())
}

/// Refuses what ARM would refuse, naming the field; then the location, size and image
/// against the manifest's catalogue.
pub fn check(request: &ServerRequest) -> Result<(), ProviderError> {
    if !is_hostname(&request.name) {
        return Err(invalid(format!(
            "name '{}' is not a hostname (letters, digits, inner hyphens, dots)",
            ssh::prefix(&request.name, 64)
        )));
    }
    names::vm_name(&request.name, &request.idempotency_key)?;
    if request.idempotency_key.len() > MAX_TAG_VALUE {
        return Err(invalid(format!(
            "the idempotency key is {} bytes: an Azure tag value holds at most {MAX_TAG_VALUE}",
            request.idempotency_key.len()
        )));
    }
    if !is_location(&request.region) {
        return Err(invalid(format!(
            "region '{}' is not an Azure location (e.g. westeurope)",
            ssh::prefix(&request.region, 64)
        )));
    }
    if !is_vm_size(&request.size) {
        return Err(invalid(format!(
            "size '{}' is not an Azure VM size (e.g. Standard_B1s)",
            ssh::prefix(&request.size, 64)
        )));
    }
    if image_reference(&request.image).is_none() {
        return Err(invalid(format!(
            "image '{}' is not an image URN (publisher:offer:sku:version) or an image resource id",
            ssh::prefix(&request.image, 120)
        )));
    }
    ssh::parse_all(&request.ssh_keys)?;
    if let Some(user_data) = &request.user_data
        && user_data.len() > MAX_USER_DATA
    {
        return Err(invalid(format!(
            "user data is {} bytes: an Azure VM's customData takes at most {MAX_USER_DATA}",
            user_data.len()
        )));
    }
    check_label_count(
        &request.labels,
        MAX_TAGS,
        &format!("Azure takes {MAX_TAGS} tags per resource"),
    )?;
    for (key, value) in &request.labels {
        if !is_tag_name(key) {
            return Err(invalid(format!(
                "label key '{}' is not an Azure tag name (at most {MAX_TAG_NAME} characters, \
                 none of < > % & \\ ? /)",
                ssh::prefix(key, 64)
            )));
        }
        if value.len() > MAX_TAG_VALUE {
            return Err(invalid(format!(
                "the value of label '{key}' is longer than Azure's {MAX_TAG_VALUE} characters"
            )));
        }
    }
    ACCEPTED.check(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_urns_or_resource_ids() {
        assert_eq!(
            image_reference("Canonical:ubuntu-24_04-lts:server:latest").unwrap(),
            json!({"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"})
        );
        let id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/golden";
        assert_eq!(image_reference(id).unwrap(), json!({"id": id}));
        for bad in [
            "ubuntu",
            "Canonical:ubuntu:server",
            "a:b:c:d:e",
            "a::c:d",
            "/images/x",
            "a b:c:d:e",
        ] {
            assert!(image_reference(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn locations_sizes_and_tags_follow_azure() {
        assert!(is_location("westeurope") && is_location("eastus2"));
        assert!(!is_location("West Europe") && !is_location("") && !is_location("eu-west-1"));
        assert!(is_vm_size("Standard_B1s") && is_vm_size("Standard_D2s_v5"));
        assert!(!is_vm_size("small") && !is_vm_size("Standard B1s") && !is_vm_size(""));
        assert!(is_tag_name("team") && is_tag_name("cost center"));
        assert!(!is_tag_name("a/b") && !is_tag_name("50%") && !is_tag_name(""));
    }
}
