//! Offline catalogues for `validate`: which regions, sizes and images a plugin accepts
//! without asking the vendor (`validate` does no network I/O).
//!
//! Every plugin reads the same manifest `[config]` keys, [`REGIONS`], [`SIZES`] and
//! [`IMAGES`], each a comma-separated list (`regions = "fsn1, nbg1"`). For each field:
//! - a configured list is authoritative: the value must be in it;
//! - else the plugin's built-in list, if it has one (a vendor's public regions);
//! - else any value passes this check (the plugin's syntax checks still apply, and the
//!   vendor decides at create time).
//!
//! A key set to an empty list counts as not set. Values compare exactly (vendors' codes are
//! case-sensitive: `RegionOne`). A refusal is `invalid-request` naming the field, the value
//! and what is accepted:
//!
//! ```text
//! region 'mars1' is not accepted: the manifest's [config] regions lists fsn1, nbg1
//! region 'mars1' is not accepted: the plugin's built-in list has fsn1, nbg1, hel1 (list
//!   others in the manifest's [config] regions)
//! ```
//!
//! ```ignore
//! use provider_sdk::catalogue::{self, IMAGES, REGIONS, SIZES};
//! catalogue::check_known("region", &request.region, REGIONS, &["fsn1", "nbg1"])?;
//! catalogue::check_known("size", &request.size, SIZES, &[])?;
//! catalogue::check_known("image", &request.image, IMAGES, &[])?;
//! ```

use crate::{ProviderError, get_config};

/// The config key listing the regions `validate` accepts.
pub const REGIONS: &str = "regions";
/// The config key listing the sizes (server types, flavors) `validate` accepts.
pub const SIZES: &str = "sizes";
/// The config key listing the images `validate` accepts.
pub const IMAGES: &str = "images";

/// At most this many accepted values are spelled out in a refusal.
const SHOWN: usize = 20;

/// Refuses `value` for `field` (`"region"`, `"size"`, `"image"`) unless the list in the
/// manifest's `[config] <config_key>` has it, or, with no list configured, `builtin` has it
/// (an empty `builtin`: any value passes).
pub fn check_known(
    field: &str,
    value: &str,
    config_key: &str,
    builtin: &[&str],
) -> Result<(), ProviderError> {
    check_known_any(field, value, &[config_key], builtin)
}

/// Like [`check_known`], reading the first of `config_keys` that is set: the documented key
/// first, then older names kept as aliases (Hetzner: `["regions", "locations"]`).
pub fn check_known_any(
    field: &str,
    value: &str,
    config_keys: &[&str],
    builtin: &[&str],
) -> Result<(), ProviderError> {
    let configured = config_keys
        .iter()
        .find_map(|key| configured(key).map(|list| (*key, list)));
    match &configured {
        Some((key, list)) => {
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            check_in(
                field,
                value,
                &list,
                &format!("the manifest's [config] {key} lists"),
                "",
            )
        }
        None if builtin.is_empty() => Ok(()),
        None => check_in(
            field,
            value,
            builtin,
            "the plugin's built-in list has",
            &match config_keys.first() {
                Some(key) => format!(" (list others in the manifest's [config] {key})"),
                None => String::new(),
            },
        ),
    }
}

/// The list under the manifest's `[config] <key>`: comma-separated, blanks trimmed, empty
/// items dropped; `None` when the key is not set or lists nothing.
pub fn configured(key: &str) -> Option<Vec<String>> {
    let list = parse_list(&get_config(key)?);
    (!list.is_empty()).then_some(list)
}

/// Splits a comma-separated list, trimming blanks and dropping empty items.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

/// `invalid-request` unless `accepted` has `value`: "<field> '<value>' is not accepted:
/// <source> <accepted values><hint>".
fn check_in(
    field: &str,
    value: &str,
    accepted: &[&str],
    source: &str,
    hint: &str,
) -> Result<(), ProviderError> {
    if accepted.contains(&value) {
        return Ok(());
    }
    let mut shown = accepted
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if accepted.len() > SHOWN {
        shown.push_str(&format!(" and {} more", accepted.len() - SHOWN));
    }
    Err(ProviderError::InvalidRequest(format!(
        "{field} '{value}' is not accepted: {source} {shown}{hint}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_comma_separated_and_trimmed() {
        assert_eq!(parse_list(" fsn1, nbg1 ,,hel1,"), ["fsn1", "nbg1", "hel1"]);
        assert!(parse_list(" , ").is_empty());
    }

    #[test]
    fn refusals_name_the_field_the_value_and_what_is_accepted() {
        assert!(check_in("size", "cx22", &["cx22"], "s", "").is_ok());
        let Err(ProviderError::InvalidRequest(message)) =
            check_in("size", "CX22", &["cx22", "cx32"], "the list has", " (hint)")
        else {
            panic!("not invalid-request");
        };
        assert_eq!(
            message,
            "size 'CX22' is not accepted: the list has cx22, cx32 (hint)"
        );
        let many: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let Err(ProviderError::InvalidRequest(message)) = check_in("region", "x", &many, "l", "")
        else {
            panic!("not invalid-request");
        };
        assert!(message.ends_with("r19 and 5 more"), "{message}");
    }
}
