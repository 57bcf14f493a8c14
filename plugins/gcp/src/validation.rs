//! Offline checks of a request with the rules Compute Engine applies (no network I/O):
//! zone, machine type, image path, name, labels, SSH keys, user data.

use provider_sdk::catalogue::{Accepted, Known};
use provider_sdk::{ProviderError, ServerRequest, check_label_count, is_hostname, ssh};

use crate::ids::{self, is_label_key, is_label_value, is_zone};

/// The regions, sizes and images `validate` accepts offline, and the `catalogue` export's
/// lists: Compute Engine's zones, machine types and images are the project's: only the manifest's
/// `[config]` lists them.
pub const ACCEPTED: Accepted = Accepted {
    region: Known::region(&[]),
    size: Known::size(&[]),
    image: Known::image(&[]),
};

/// GCE's largest single metadata value (user data), in bytes.
pub const MAX_USER_DATA: usize = 256 * 1024;
/// GCE's most labels per resource.
const MAX_LABELS: usize = 64;

fn invalid(message: String) -> ProviderError {
    ProviderError::InvalidRequest(message)
}

/// A machine type name (`e2-small`, `n2-standard-2`, `custom-2-4096`).
fn is_machine_type(size: &str) -> bool {
    ids::is_rfc1035(size)
}

/// An image Compute takes as `sourceImage`: `projects/<p>/global/images/<name>`,
/// `projects/<p>/global/images/family/<family>`, `global/images/<name>` (the instance's
/// own project), or either as a full `https://` URL.
pub fn is_image(image: &str) -> bool {
    let path = image
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once("/projects/").map(|(_, p)| p))
        .map(|p| format!("projects/{p}"))
        .unwrap_or_else(|| image.to_string());
    let parts: Vec<&str> = path.split('/').collect();
    let name_ok = |name: &str| ids::is_rfc1035(name);
    let project_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':')
            })
    };
    match parts.as_slice() {
        ["projects", p, "global", "images", "family", f] => project_ok(p) && name_ok(f),
        ["projects", p, "global", "images", n] => project_ok(p) && name_ok(n),
        ["global", "images", "family", f] => name_ok(f),
        ["global", "images", n] => name_ok(n),
        _ => false,
    }
}

/// Refuses what Compute would refuse, naming the field; then the zone, machine type and
/// image against the manifest's catalogue (`provider_sdk::catalogue`).
pub fn check(request: &ServerRequest) -> Result<(), ProviderError> {
    if !is_hostname(&request.name) {
        return Err(invalid(format!(
            "name '{}' is not a hostname (letters, digits, inner hyphens, dots)",
            ssh::prefix(&request.name, 64)
        )));
    }
    ids::instance_name(&request.name, &request.idempotency_key)?;
    if !is_zone(&request.region) {
        return Err(invalid(format!(
            "region '{}' is not a Compute Engine zone (e.g. europe-west4-a)",
            ssh::prefix(&request.region, 64)
        )));
    }
    if !is_machine_type(&request.size) {
        return Err(invalid(format!(
            "size '{}' is not a machine type name (e.g. e2-small)",
            ssh::prefix(&request.size, 64)
        )));
    }
    if !is_image(&request.image) {
        return Err(invalid(format!(
            "image '{}' is not an image path (projects/<project>/global/images/<name> or \
             .../images/family/<family>)",
            ssh::prefix(&request.image, 120)
        )));
    }
    ssh::parse_all(&request.ssh_keys)?;
    if let Some(user_data) = &request.user_data
        && user_data.len() > MAX_USER_DATA
    {
        return Err(invalid(format!(
            "user data is {} bytes: Compute Engine takes at most {MAX_USER_DATA} in one \
             metadata value",
            user_data.len()
        )));
    }
    check_label_count(
        &request.labels,
        MAX_LABELS,
        &format!("Compute Engine takes {MAX_LABELS} per instance"),
    )?;
    for (key, value) in &request.labels {
        if !is_label_key(key) {
            return Err(invalid(format!(
                "label key '{}' is not a Compute Engine label key (a lowercase letter, then \
                 lowercase letters, digits, '_' and '-', at most 63)",
                ssh::prefix(key, 64)
            )));
        }
        if !is_label_value(value) {
            return Err(invalid(format!(
                "the value of label '{key}' is not a Compute Engine label value (lowercase \
                 letters, digits, '_' and '-', at most 63)"
            )));
        }
    }
    ACCEPTED.check(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Image paths Compute takes, and some it does not.
    #[test]
    fn images_are_compute_paths() {
        for good in [
            "projects/debian-cloud/global/images/family/debian-12",
            "projects/debian-cloud/global/images/debian-12-bookworm-v20241112",
            "global/images/my-image",
            "https://www.googleapis.com/compute/v1/projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
        ] {
            assert!(is_image(good), "{good}");
        }
        for bad in [
            "debian-12",
            "projects/debian-cloud/images/debian-12",
            "projects//global/images/x",
            "projects/p/global/images/Family/X",
            "",
        ] {
            assert!(!is_image(bad), "{bad}");
        }
    }
}
