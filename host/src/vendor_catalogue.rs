//! A plugin's `catalogue` answer (WIT 0.5) made fit to announce: the regions, sizes and
//! images its `validate` accepts, which order-api offers in the console's order form.
//!
//! The host asks once per load ([`crate::runtime::Plugin::catalogue_cached`]) and keeps the
//! answer in the contract's shape ([`VendorCatalogue`]), cleaned here: each list keeps at
//! most [`VendorCatalogue::MAX_ENTRIES`] entries, loses entries that are empty, longer than
//! [`VendorCatalogue::MAX_ENTRY_BYTES`] or hold control characters, and loses repeats (the
//! first stays, in the plugin's order). What was changed is reported, so the host can log
//! it with the vendor and the conformance kit can show it to the plugin's author.

use provisioner_contract::messages::VendorCatalogue;

use crate::bindings::types::PluginCatalogue;
use crate::plugin_output::contained_text;

/// A catalogue as the host keeps it, and what cleaning it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// The catalogue to announce.
    pub catalogue: VendorCatalogue,
    /// One sentence per list the host changed ("regions: 2 entries dropped, ..."), for a
    /// warning; empty when the answer was taken as it was.
    pub changes: Vec<String>,
}

/// Cleans a plugin's `catalogue` answer (see the module's documentation).
pub fn clean(answer: PluginCatalogue) -> Cleaned {
    let PluginCatalogue {
        regions,
        sizes,
        images,
    } = answer;
    let mut changes = Vec::new();
    let mut list = |field: &str, entries: Option<Vec<String>>| {
        entries.map(|entries| {
            let (kept, change) = clean_list(entries);
            if let Some(change) = change {
                changes.push(format!("{field}: {change}"));
            }
            kept
        })
    };
    let catalogue = VendorCatalogue {
        regions: list("regions", regions),
        sizes: list("sizes", sizes),
        images: list("images", images),
    };
    Cleaned { catalogue, changes }
}

/// One list: entries that may be shown and sent back as they are, each once, at most
/// [`VendorCatalogue::MAX_ENTRIES`]; with a description of what was dropped, if anything.
fn clean_list(entries: Vec<String>) -> (Vec<String>, Option<String>) {
    let given = entries.len();
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    let (mut empty, mut long, mut control, mut repeated) = (0, 0, 0, 0);
    let mut first_bad = None;
    for entry in entries {
        let problem = if entry.is_empty() {
            Some(&mut empty)
        } else if entry.len() > VendorCatalogue::MAX_ENTRY_BYTES {
            Some(&mut long)
        } else if entry.chars().any(char::is_control) {
            Some(&mut control)
        } else {
            None
        };
        if let Some(count) = problem {
            *count += 1;
            if first_bad.is_none() && !entry.is_empty() {
                first_bad = Some(entry);
            }
            continue;
        }
        if kept.len() >= VendorCatalogue::MAX_ENTRIES {
            // Counted below from what is left; repeats among them are not told apart.
            continue;
        }
        if seen.insert(entry.clone()) {
            kept.push(entry);
        } else {
            repeated += 1;
        }
    }
    let over = given - empty - long - control - repeated - kept.len();
    let reasons = [
        (empty, "empty".to_string()),
        (
            long,
            format!("longer than {} bytes", VendorCatalogue::MAX_ENTRY_BYTES),
        ),
        (control, "with control characters".to_string()),
        (repeated, "repeated".to_string()),
        (
            over,
            format!("beyond the first {}", VendorCatalogue::MAX_ENTRIES),
        ),
    ];
    let parts: Vec<String> = reasons
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, reason)| format!("{count} {reason}"))
        .collect();
    if parts.is_empty() {
        return (kept, None);
    }
    let mut change = format!(
        "{} of {given} entries dropped ({})",
        given - kept.len(),
        parts.join(", ")
    );
    if let Some(bad) = first_bad {
        change.push_str(&format!(
            "; the first dropped: '{}'",
            contained_text(&bad, 64)
        ));
    }
    (kept, Some(change))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|entry| entry.to_string()).collect()
    }

    /// A well-formed answer is kept as it is, `none` included.
    #[test]
    fn a_clean_answer_is_kept_as_it_is() {
        let cleaned = clean(PluginCatalogue {
            regions: Some(strings(&["fsn1", "nbg1"])),
            sizes: None,
            images: Some(Vec::new()),
        });
        assert_eq!(
            cleaned.catalogue,
            VendorCatalogue {
                regions: Some(strings(&["fsn1", "nbg1"])),
                sizes: None,
                images: Some(Vec::new()),
            }
        );
        assert!(cleaned.changes.is_empty(), "{:?}", cleaned.changes);
    }

    /// Empty, oversized and control-character entries go, repeats go (the first stays, in
    /// order), and the change names the list, the counts and the first bad entry escaped.
    #[test]
    fn bad_entries_and_repeats_are_dropped_in_order() {
        let long = "x".repeat(VendorCatalogue::MAX_ENTRY_BYTES + 1);
        let fits = "y".repeat(VendorCatalogue::MAX_ENTRY_BYTES);
        let cleaned = clean(PluginCatalogue {
            regions: Some(vec![
                "nbg1".into(),
                "".into(),
                "evil\nFORGED".into(),
                "fsn1".into(),
                "nbg1".into(),
                long,
                fits.clone(),
            ]),
            sizes: None,
            images: None,
        });
        assert_eq!(
            cleaned.catalogue.regions,
            Some(vec!["nbg1".into(), "fsn1".into(), fits])
        );
        assert_eq!(cleaned.changes.len(), 1, "{:?}", cleaned.changes);
        let change = &cleaned.changes[0];
        assert!(
            change.starts_with("regions: 4 of 7 entries dropped (1 empty, 1 longer than 128 bytes, 1 with control characters, 1 repeated)"),
            "{change}"
        );
        assert!(change.contains("'evil\\nFORGED'"), "{change}");
        assert!(!change.contains('\n'));
    }

    /// A list longer than the cap keeps its first entries.
    #[test]
    fn a_long_list_is_cut_to_the_cap() {
        let many: Vec<String> = (0..VendorCatalogue::MAX_ENTRIES + 5)
            .map(|i| format!("image-{i}"))
            .collect();
        let cleaned = clean(PluginCatalogue {
            regions: None,
            sizes: None,
            images: Some(many.clone()),
        });
        let images = cleaned.catalogue.images.unwrap();
        assert_eq!(images.len(), VendorCatalogue::MAX_ENTRIES);
        assert_eq!(images[..], many[..VendorCatalogue::MAX_ENTRIES]);
        assert_eq!(
            cleaned.changes,
            ["images: 5 of 1005 entries dropped (5 beyond the first 1000)"]
        );
    }
}
