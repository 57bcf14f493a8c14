//! Offline checks of a request, with the rules EC2 applies (no network I/O), and the
//! regions the plugin serves.

use provider_sdk::catalogue::{Accepted, Known};
use provider_sdk::{IDEMPOTENCY_LABEL, ProviderError, ServerRequest, cloud_init, is_hostname, ssh};

use crate::query::{is_ami_id, is_region};

/// The regions, sizes and images `validate` accepts offline, and the `catalogue` export's
/// lists: the configured ones, else [`DEFAULT_REGIONS`]; sizes and images only
/// when configured.
pub const ACCEPTED: Accepted = Accepted {
    region: Known::region(DEFAULT_REGIONS),
    size: Known::size(&[]),
    image: Known::image(&[]),
};

/// The AWS commercial regions every account has enabled (those that need no opt-in):
/// what `validate` accepts and what `find-server` / `list-servers` scan when the manifest
/// lists no `regions`. Opt-in regions (af-south-1, ap-east-1, eu-south-1, me-central-1...)
/// answer `AuthFailure` to an account that has not enabled them, so they are served only
/// when the manifest lists them; one list for both keeps every server the plugin may make
/// in a region it scans.
pub const DEFAULT_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
];

/// EC2's largest user data, in bytes before base64.
pub const MAX_USER_DATA: usize = 16 * 1024;

/// EC2's most tags per resource.
const MAX_TAGS: usize = 50;

/// Tags the plugin writes itself: `Name` and the idempotency key.
const OWN_TAGS: usize = 2;

/// EC2's longest tag key and value, in characters.
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// The longest instance type name accepted (EC2's longest today are about 20).
const MAX_SIZE: usize = 64;

/// The regions served, the ones `validate` accepts ([`ACCEPTED`]): the manifest's
/// `[config] regions`, else [`DEFAULT_REGIONS`]; `internal` when a configured one is not a
/// region code (it becomes part of a host name).
pub fn regions() -> Result<Vec<String>, ProviderError> {
    // Never none: the built-in list is not empty.
    let accepted = ACCEPTED.region.accepted().unwrap_or_default();
    match accepted.iter().find(|region| !is_region(region)) {
        Some(bad) => Err(ProviderError::Internal(format!(
            "the manifest's [config] regions lists '{bad}', which is not an AWS region code \
             (e.g. us-east-1)"
        ))),
        None => {
            // A region listed twice is asked once (else every look-up lists its servers twice).
            let mut regions = accepted;
            let mut seen = std::collections::BTreeSet::new();
            regions.retain(|region| seen.insert(region.clone()));
            Ok(regions)
        }
    }
}

/// Refuses what EC2 would refuse, naming the field: [`check_shape`], then the region, size
/// and image against the manifest's catalogue (`provider_sdk::catalogue`; regions default
/// to [`DEFAULT_REGIONS`]).
pub fn check(request: &ServerRequest) -> Result<(), ProviderError> {
    check_shape(request)?;
    ACCEPTED.check(request)
}

/// Every check that needs no configuration: the fields' syntax, the user data with the
/// keys, the labels.
fn check_shape(request: &ServerRequest) -> Result<(), ProviderError> {
    let invalid = |message: String| Err(ProviderError::InvalidRequest(message));
    if !is_hostname(&request.name) {
        return invalid(format!(
            "name '{}' is not a valid hostname (letters, digits, hyphens; 1-63 per label)",
            ssh::prefix(&request.name, 64)
        ));
    }
    if !is_region(&request.region) {
        return invalid(format!(
            "region '{}' is not an AWS region code (e.g. us-east-1)",
            ssh::prefix(&request.region, 64)
        ));
    }
    if !is_instance_type(&request.size) {
        return invalid(format!(
            "size '{}' is not an EC2 instance type (family.size, e.g. t3.micro)",
            ssh::prefix(&request.size, 64)
        ));
    }
    if !is_ami_id(&request.image) && !is_image_name(&request.image) {
        return invalid(format!(
            "image '{}' is neither an AMI id (ami-...) nor an AMI name (3-128 letters, digits, \
             spaces and ()[]./-'@_, with * and ? as wildcards)",
            ssh::prefix(&request.image, 64)
        ));
    }
    if !is_tag_value(&request.idempotency_key) || request.idempotency_key.is_empty() {
        return invalid(format!(
            "idempotency key '{}' cannot be an EC2 tag value (1-{MAX_TAG_VALUE} characters, \
             no control characters)",
            ssh::prefix(&request.idempotency_key, 64)
        ));
    }
    user_data(request)?;
    check_labels(&request.labels)
}

/// The user data the server gets, as text (EC2 wants it base64-encoded): the order's own,
/// with its SSH keys added for cloud-init; `invalid-request` when they cannot be carried
/// or the whole is over EC2's 16 KiB.
pub fn user_data(request: &ServerRequest) -> Result<Option<String>, ProviderError> {
    let keys = ssh::parse_all(&request.ssh_keys)?;
    let text = cloud_init::with_ssh_keys(request.user_data.as_deref(), &keys)
        .map_err(ProviderError::InvalidRequest)?;
    if let Some(text) = &text
        && text.len() > MAX_USER_DATA
    {
        let with_keys = if keys.is_empty() {
            ""
        } else {
            " with the ssh_keys"
        };
        return Err(ProviderError::InvalidRequest(format!(
            "user_data{with_keys} is {} bytes; EC2 takes at most {MAX_USER_DATA}",
            text.len()
        )));
    }
    Ok(text)
}

/// The order's labels as EC2 tags: at most 48 (EC2's 50 less `Name` and the key), keys of
/// 1-128 characters not starting with `aws:` (AWS's own), values of at most 256, no
/// control characters (EC2 takes any other character), no key twice, and neither `Name`
/// nor the idempotency key's tag (the plugin writes those).
fn check_labels(labels: &[(String, String)]) -> Result<(), ProviderError> {
    let invalid = |message: String| Err(ProviderError::InvalidRequest(message));
    if labels.len() > MAX_TAGS - OWN_TAGS {
        return invalid(format!(
            "{} labels; EC2 takes at most {} besides the plugin's own tags",
            labels.len(),
            MAX_TAGS - OWN_TAGS
        ));
    }
    for (index, (key, value)) in labels.iter().enumerate() {
        let shown = || ssh::prefix(key, 64);
        if key == "Name" || key == IDEMPOTENCY_LABEL {
            return invalid(format!(
                "label '{key}' is reserved: the plugin writes that tag"
            ));
        }
        if key.is_empty() || key.chars().count() > MAX_TAG_KEY || key.chars().any(char::is_control)
        {
            return invalid(format!(
                "label key '{}' is not an EC2 tag key (1-{MAX_TAG_KEY} characters, no control \
                 characters)",
                shown()
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return invalid(format!(
                "label key '{}' starts with aws:, which AWS keeps for itself",
                shown()
            ));
        }
        if !is_tag_value(value) {
            return invalid(format!(
                "label '{}' has a value EC2 cannot carry (at most {MAX_TAG_VALUE} characters, \
                 no control characters)",
                shown()
            ));
        }
        if labels[..index].iter().any(|(earlier, _)| earlier == key) {
            return invalid(format!("label '{}' is given twice", shown()));
        }
    }
    Ok(())
}

/// A tag value: at most 256 characters, none a control character (may be empty).
fn is_tag_value(value: &str) -> bool {
    value.chars().count() <= MAX_TAG_VALUE && !value.chars().any(char::is_control)
}

/// An instance type's shape: `<family>.<size>`, lower-case letters, digits and hyphens,
/// the family starting with a letter (`t3.micro`, `m7i-flex.large`, `u-6tb1.metal`,
/// `c6in.metal-48xl`).
pub fn is_instance_type(text: &str) -> bool {
    let part = |part: &str| {
        !part.is_empty()
            && !part.starts_with('-')
            && !part.ends_with('-')
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    text.len() <= MAX_SIZE
        && text.split_once('.').is_some_and(|(family, size)| {
            part(family) && part(size) && family.starts_with(|c: char| c.is_ascii_lowercase())
        })
}

/// An AMI name (or a name pattern): 3-128 characters of letters, digits, spaces and
/// `( ) [ ] . / - ' @ _`, as EC2 allows in names, plus the wildcards `*` and `?`.
pub fn is_image_name(text: &str) -> bool {
    (3..=128).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ()[]./-'@_*?".contains(c))
        && text.trim() == text
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW a@b";

    fn request() -> ServerRequest {
        ServerRequest {
            idempotency_key: "6f1c0e4a-3b7d-4c59-8e21-9a0d5f7b2c14".into(),
            name: "web-1".into(),
            region: "us-east-1".into(),
            size: "t3.micro".into(),
            image: "ami-0abcdef1234567890".into(),
            ssh_keys: vec![KEY.into()],
            user_data: Some("#cloud-config\npackages: [nginx]\n".into()),
            labels: vec![("team".into(), "web".into())],
        }
    }

    fn refused(request: &ServerRequest) -> String {
        match check_shape(request) {
            Err(ProviderError::InvalidRequest(message)) => message,
            other => panic!("expected invalid-request, got {other:?}"),
        }
    }

    /// A request EC2 takes passes; the user data gets the keys in a second MIME part.
    #[test]
    fn accepts_a_valid_request() {
        check_shape(&request()).unwrap();
        let text = user_data(&request()).unwrap().unwrap();
        assert!(
            text.contains("#cloud-config\npackages: [nginx]\n"),
            "{text}"
        );
        assert!(text.contains(KEY), "{text}");
        let mut named = request();
        named.image = "al2023-ami-2023.*-kernel-6.1-x86_64".into();
        check_shape(&named).unwrap();
    }

    /// Instance types are family.size; anything else is refused.
    #[test]
    fn instance_types_have_their_shape() {
        for good in [
            "t3.micro",
            "m7i-flex.large",
            "u-6tb1.metal",
            "c6in.metal-48xl",
            "mac2-m2pro.metal",
            "x2iedn.32xlarge",
        ] {
            assert!(is_instance_type(good), "{good}");
        }
        for bad in [
            "t3",
            "T3.micro",
            ".micro",
            "t3.",
            "3t.micro",
            "t3.micro.x",
            "t3 micro",
            "-t3.micro",
        ] {
            assert!(!is_instance_type(bad), "{bad}");
        }
    }

    /// Fields EC2 would refuse are refused, each naming itself.
    #[test]
    fn refuses_what_ec2_would() {
        type Change = fn(&mut ServerRequest);
        let cases: [(Change, &str); 11] = [
            (|r| r.name = "bad_name".into(), "name 'bad_name'"),
            (|r| r.region = "US-EAST-1".into(), "region 'US-EAST-1'"),
            (
                |r| r.region = "evil.example".into(),
                "region 'evil.example'",
            ),
            (|r| r.size = "huge".into(), "size 'huge'"),
            (|r| r.image = "ubuntu;24.04".into(), "image 'ubuntu;24.04'"),
            (|r| r.idempotency_key = String::new(), "idempotency key"),
            (|r| r.idempotency_key = "k".repeat(257), "idempotency key"),
            (|r| r.ssh_keys = vec!["not a key".into()], "ssh_keys[0]"),
            // Keys cannot ride in user data cloud-init would not read.
            (|r| r.user_data = Some("plain text".into()), "cloud-init"),
            // 16 KiB in all, the keys' part included.
            (
                |r| r.user_data = Some(format!("#!/bin/sh\n{}", "x".repeat(MAX_USER_DATA - 20))),
                "user_data with the ssh_keys is",
            ),
            (
                |r| r.labels = vec![("Name".into(), "x".into())],
                "label 'Name'",
            ),
        ];
        for (change, named) in cases {
            let mut request = request();
            change(&mut request);
            let message = refused(&request);
            assert!(message.contains(named), "{message} (expected {named})");
        }
    }

    /// The built-in regions are region codes (they become host names).
    #[test]
    fn the_default_regions_are_region_codes() {
        assert!(DEFAULT_REGIONS.iter().all(|region| is_region(region)));
    }

    /// User data up to 16 KiB passes as it is.
    #[test]
    fn user_data_fits_in_16_kib() {
        let mut request = request();
        request.ssh_keys.clear();
        let data = format!("#!/bin/sh\n{}", "x".repeat(MAX_USER_DATA - 10));
        request.user_data = Some(data.clone());
        assert_eq!(user_data(&request).unwrap(), Some(data));
        request.user_data = Some(format!("{}x", request.user_data.unwrap()));
        assert!(user_data(&request).is_err());
    }

    /// Labels as EC2 tags: reserved keys, aws: prefixes, lengths, duplicates and counts.
    #[test]
    fn labels_must_be_ec2_tags() {
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(check_labels(&labels(&[("team", ""), ("cost center", "R&D: 42/@+=")])).is_ok());
        for bad in [
            labels(&[("Name", "x")]),
            labels(&[(IDEMPOTENCY_LABEL, "x")]),
            labels(&[("AWS:cloudformation", "x")]),
            labels(&[("", "x")]),
            labels(&[(&"k".repeat(129), "x")]),
            labels(&[("k", &"v".repeat(257))]),
            labels(&[("k", "line\nbreak")]),
            labels(&[("k", "1"), ("k", "2")]),
        ] {
            assert!(
                matches!(check_labels(&bad), Err(ProviderError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
        let many: Vec<(String, String)> =
            (0..49).map(|n| (format!("k{n}"), String::new())).collect();
        assert!(check_labels(&many).is_err());
        assert!(check_labels(&many[..48]).is_ok());
    }

    /// Image names: EC2's characters and wildcards, 3-128 long.
    #[test]
    fn image_names_have_ec2s_characters() {
        assert!(is_image_name(
            "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-20170721"
        ));
        assert!(is_image_name("Deep Learning AMI (Amazon Linux) [v3]"));
        assert!(is_image_name("al2023-ami-*-x86_64"));
        assert!(!is_image_name("ab"));
        assert!(!is_image_name(&"a".repeat(129)));
        assert!(!is_image_name("name;rm"));
        assert!(!is_image_name(" padded"));
    }
}
