//! Offline catalogues for `validate`: which regions, sizes and images a plugin accepts
//! without asking the vendor (`validate` does no network I/O), and the `catalogue` export
//! (WIT 0.5) that tells the host the same lists, so the console's order form offers them.
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
//! `validate` and `catalogue` must read the same lists: [`accepted_any`] is the list
//! [`check_known_any`] checks against (one code path), and [`Accepted`] names a plugin's
//! three fields once for both exports:
//!
//! ```ignore
//! use provider_sdk::catalogue::{Accepted, Known};
//! const ACCEPTED: Accepted = Accepted {
//!     region: Known::region(&["fsn1", "nbg1"]),
//!     size: Known::size(&[]),
//!     image: Known::image(&[]),
//! };
//! // in validate: the three fields ([`Accepted::check`]), or one at a time among the
//! // plugin's own checks of each (`ACCEPTED.region.check(&request.region)?`):
//! ACCEPTED.check(&request)?;
//! // the catalogue export:
//! fn catalogue() -> PluginCatalogue { ACCEPTED.catalogue() }
//! ```

use crate::{PluginCatalogue, ProviderError, ServerRequest, get_config};

/// The config key listing the regions `validate` accepts.
pub const REGIONS: &str = "regions";
/// The config key listing the sizes (server types, flavors) `validate` accepts.
pub const SIZES: &str = "sizes";
/// The config key listing the images `validate` accepts.
pub const IMAGES: &str = "images";

/// At most this many accepted values are spelled out in a refusal.
const SHOWN: usize = 20;

/// One field's offline list: the request field it checks, the `[config]` keys that list
/// its values (the documented one first, then older aliases) and the plugin's built-in
/// values (empty: none).
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The field as a refusal names it: `"region"`, `"size"`, `"image"`.
    pub field: &'static str,
    /// The `[config]` keys read, the first that is set wins.
    pub config_keys: &'static [&'static str],
    /// The values accepted when no key is set; empty: any value.
    pub builtin: &'static [&'static str],
}

impl Known {
    /// The region, listed under [`REGIONS`], else `builtin`.
    pub const fn region(builtin: &'static [&'static str]) -> Self {
        Self {
            field: "region",
            config_keys: &[REGIONS],
            builtin,
        }
    }

    /// The size, listed under [`SIZES`], else `builtin`.
    pub const fn size(builtin: &'static [&'static str]) -> Self {
        Self {
            field: "size",
            config_keys: &[SIZES],
            builtin,
        }
    }

    /// The image, listed under [`IMAGES`], else `builtin`.
    pub const fn image(builtin: &'static [&'static str]) -> Self {
        Self {
            field: "image",
            config_keys: &[IMAGES],
            builtin,
        }
    }

    /// The same field read from other `[config]` keys (the documented one first, then
    /// older names kept as aliases).
    pub const fn with_config_keys(self, config_keys: &'static [&'static str]) -> Self {
        Self {
            config_keys,
            ..self
        }
    }

    /// [`check_known_any`] of `value` against this field's list.
    pub fn check(&self, value: &str) -> Result<(), ProviderError> {
        check_known_any(self.field, value, self.config_keys, self.builtin)
    }

    /// Refuses a `value` that is not a vendor slug ([`crate::is_slug`]) as `<field> '<value>'
    /// is not <what>` (`what`: `a droplet size slug`), then [`Known::check`]s it: the syntax
    /// first, then the list.
    pub fn check_slug(&self, value: &str, what: &str) -> Result<(), ProviderError> {
        if !crate::is_slug(value) {
            return Err(ProviderError::InvalidRequest(format!(
                "{} '{value}' is not {what}",
                self.field
            )));
        }
        self.check(value)
    }

    /// [`accepted_any`]: the list [`Known::check`] checks against; `None` when any value
    /// passes.
    pub fn accepted(&self) -> Option<Vec<String>> {
        accepted_any(self.config_keys, self.builtin)
    }
}

/// A plugin's three offline lists, named once for `validate` (each field's
/// [`Known::check`]) and the `catalogue` export ([`Accepted::catalogue`]).
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// The request's `region`.
    pub region: Known,
    /// The request's `size`.
    pub size: Known,
    /// The request's `image`.
    pub image: Known,
}

impl Accepted {
    /// `request`'s region, size and image, each by its field's [`Known::check`], in that
    /// order (the first refusal is the answer).
    pub fn check(&self, request: &ServerRequest) -> Result<(), ProviderError> {
        self.region.check(&request.region)?;
        self.size.check(&request.size)?;
        self.image.check(&request.image)
    }

    /// [`Accepted::check`] where the vendor's sizes and images are slugs: the region by its
    /// list, then the size and the image by [`Known::check_slug`], `size_is` and `image_is`
    /// saying what each must be (`a droplet size slug`).
    pub fn check_slugs(
        &self,
        request: &ServerRequest,
        size_is: &str,
        image_is: &str,
    ) -> Result<(), ProviderError> {
        self.region.check(&request.region)?;
        self.size.check_slug(&request.size, size_is)?;
        self.image.check_slug(&request.image, image_is)
    }

    /// The `catalogue` export's answer: each field's list as [`Known::accepted`] reads it
    /// now (the manifest's `[config]` first).
    pub fn catalogue(&self) -> PluginCatalogue {
        PluginCatalogue {
            regions: self.region.accepted(),
            sizes: self.size.accepted(),
            images: self.image.accepted(),
        }
    }
}

/// Where the values a field accepts come from, and the values.
enum Source<'a> {
    /// The manifest's `[config] <key>` lists them.
    Configured(&'a str, Vec<String>),
    /// The plugin's built-in list (not empty).
    Builtin,
}

/// The list `check_known_any` checks against: the first of `config_keys` that is set, else a
/// non-empty `builtin`; `None` when any value passes.
fn source<'a>(config_keys: &[&'a str], builtin: &[&str]) -> Option<Source<'a>> {
    match config_keys
        .iter()
        .find_map(|key| configured(key).map(|list| (*key, list)))
    {
        Some((key, list)) => Some(Source::Configured(key, list)),
        None if builtin.is_empty() => None,
        None => Some(Source::Builtin),
    }
}

/// The values [`check_known`] accepts for a field listed under `config_key`: the configured
/// list, else `builtin` if it is not empty; `None` when any value passes.
pub fn accepted(config_key: &str, builtin: &[&str]) -> Option<Vec<String>> {
    accepted_any(&[config_key], builtin)
}

/// The values [`check_known_any`] accepts: the list under the first of `config_keys` that is
/// set, else `builtin` if it is not empty; `None` when any value passes (the plugin's syntax
/// checks still apply, and the vendor decides). What the `catalogue` export answers.
pub fn accepted_any(config_keys: &[&str], builtin: &[&str]) -> Option<Vec<String>> {
    source(config_keys, builtin).map(|source| match source {
        Source::Configured(_, list) => list,
        Source::Builtin => builtin.iter().map(|value| value.to_string()).collect(),
    })
}

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
    match source(config_keys, builtin) {
        Some(Source::Configured(key, list)) => {
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            check_in(
                field,
                value,
                &list,
                &format!("the manifest's [config] {key} lists"),
                "",
            )
        }
        None => Ok(()),
        Some(Source::Builtin) => check_in(
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

    /// A value that is not a slug is refused by its syntax, before any list is read.
    #[test]
    fn slugs_are_checked_before_the_list() {
        let Err(ProviderError::InvalidRequest(message)) =
            Known::size(&[]).check_slug("Big Box", "a droplet size slug")
        else {
            panic!("not invalid-request");
        };
        assert_eq!(message, "size 'Big Box' is not a droplet size slug");
    }
}
