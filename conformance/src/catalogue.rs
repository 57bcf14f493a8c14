//! `contract.catalogue`: the plugin's `catalogue` answer (WIT 0.5) held against its own
//! `validate`, since order-api offers the lists in the console's order form and a tenant
//! who picks from them must not be refused.
//!
//! The check asks `catalogue` once and counts the plugin's outbound requests around the call
//! (none allowed: the host asks at load, offline). The answer must need no cleaning by the
//! host (no empty, oversized, control-character or repeated entries, at most 1,000 a list).
//! Then, from the run's valid request, it sends `validate` one request per position of the
//! longest list: request `i` takes entry `i` of every listed field (wrapping round shorter
//! lists), so every listed value is tried at least once in as few calls as possible, and
//! each must pass. Last, for each listed field, a value the list does not have must be
//! refused with `invalid-request`.

use provisioner_host::bindings::types::{ProviderError, ServerRequest};
use provisioner_host::runtime::CallError;

use crate::kit::Kit;
use crate::shown::shown;

/// One field of a request the catalogue lists values for.
struct Field {
    /// The field's name, as the catalogue and `validate` name it.
    name: &'static str,
    /// The listed values; `None`: any value.
    listed: Option<Vec<String>>,
    /// Sets the field in a request.
    set: fn(&mut ServerRequest, String),
}

/// The verdict of `contract.catalogue` (see the module's documentation); the run's shape
/// ([`Kit::request`]) makes the otherwise valid request.
pub async fn agrees_with_validate(kit: &Kit) -> Result<String, String> {
    let version = kit.plugin.wit_version();
    if !version.has_catalogue() {
        return Ok(format!(
            "the plugin implements {version}, which has no catalogue (its vendor is announced \
             with none; rebuild against 0.5 so the order form offers its choices)"
        ));
    }
    let before = kit.plugin.outbound_requests();
    let answer = kit.plugin.catalogue().await;
    let made = kit.plugin.outbound_requests() - before;
    if made > 0 {
        return Err(format!(
            "expected no outbound request, got {made} in the catalogue call: catalogue must \
             answer offline (the host asks when it loads the plugin), from built-in lists and \
             the manifest's [config]"
        ));
    }
    let cleaned = match answer {
        Ok(Some(cleaned)) => cleaned,
        Ok(None) => return Err("the plugin's version has catalogue, but no answer came".into()),
        Err(error) => return Err(format!("the catalogue call failed: {error}")),
    };
    if !cleaned.changes.is_empty() {
        return Err(format!(
            "the host had to clean the answer before announcing it: {}",
            cleaned.changes.join("; ")
        ));
    }
    let catalogue = cleaned.catalogue;
    let fields = [
        Field {
            name: "region",
            listed: catalogue.regions,
            set: |request, value| request.region = value,
        },
        Field {
            name: "size",
            listed: catalogue.sizes,
            set: |request, value| request.size = value,
        },
        Field {
            name: "image",
            listed: catalogue.images,
            set: |request, value| request.image = value,
        },
    ];
    if let Some(empty) = fields
        .iter()
        .find(|field| field.listed.as_ref().is_some_and(Vec::is_empty))
    {
        return Err(format!(
            "the catalogue lists no {} at all: answer none for a field whose values you do \
             not list (an empty list would mean validate refuses every request)",
            empty.name
        ));
    }
    let key = kit.new_key();
    let base = kit.request(&key);
    let rounds = fields
        .iter()
        .filter_map(|field| field.listed.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut refused = Vec::new();
    for round in 0..rounds {
        let mut request = base.clone();
        for field in &fields {
            if let Some(listed) = &field.listed {
                (field.set)(&mut request, listed[round % listed.len()].clone());
            }
        }
        let result = kit.plugin.validate(&request).await;
        if result.is_err() {
            refused.push(format!(
                "region {:?}, size {:?}, image {:?}: {}",
                request.region,
                request.size,
                request.image,
                shown(&result)
            ));
        }
    }
    if !refused.is_empty() {
        let more = refused.len().saturating_sub(5);
        refused.truncate(5);
        return Err(format!(
            "validate refused values the catalogue lists (the order form offers them): {}{}",
            refused.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ));
    }
    let mut unlisted_accepted = Vec::new();
    let mut checked = Vec::new();
    for field in &fields {
        let Some(listed) = &field.listed else {
            continue;
        };
        let mut value = format!("conformance-unlisted-{}", field.name);
        while listed.contains(&value) {
            value.push('x');
        }
        let mut request = base.clone();
        (field.set)(&mut request, value.clone());
        let result = kit.plugin.validate(&request).await;
        match &result {
            Err(CallError::Provider(ProviderError::InvalidRequest(_))) => checked.push(field.name),
            _ => unlisted_accepted.push(format!(
                "{} {value:?}: expected invalid-request, got {}",
                field.name,
                shown(&result)
            )),
        }
    }
    if !unlisted_accepted.is_empty() {
        return Err(format!(
            "a value the catalogue does not list was not refused (a listed field is the whole \
             of what validate accepts; answer none for a field validate does not check \
             against a list): {}",
            unlisted_accepted.join("; ")
        ));
    }
    let counts: Vec<String> = fields
        .iter()
        .map(|field| match &field.listed {
            Some(listed) => format!("{} {}s", listed.len(), field.name),
            None => format!("any {}", field.name),
        })
        .collect();
    Ok(format!(
        "lists {}; {rounds} validate calls passed every listed value{}",
        counts.join(", "),
        if checked.is_empty() {
            String::new()
        } else {
            format!("; an unlisted {} was refused", checked.join(", "))
        }
    ))
}
