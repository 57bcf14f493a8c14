//! The `sandbox` suite: the plugin lives within what the host grants it. With no outbound
//! host granted its calls fail as `capability_denied`; loaded twice, each load has its own
//! cache ([`crate::isolation`]); with no room in its cache it still works.

use provisioner_host::runtime::CallError;

use super::{Check, Recorder, Verdict};
use crate::kit::Kit;
use crate::options::Suite;
use crate::shown::shown;

const NARROWED_GRANT: Check = Check {
    suite: Suite::Sandbox,
    name: "narrowed-grant",
    description: "with no outbound host granted, a call fails as capability_denied, not a crash",
};
const CACHE_ISOLATED: Check = Check {
    suite: Suite::Sandbox,
    name: "cache-isolated",
    description: "loaded twice on one host, as two plugins, each load has its own cache: what \
                  one stored, the other cannot read",
};
const CACHE_BOUNDED: Check = Check {
    suite: Suite::Sandbox,
    name: "cache-bounded",
    description: "with its cache bounded to nothing (every set fails with full), the plugin \
                  still works: the cache is a hint, never a requirement",
};

/// The `sandbox` suite: `narrowed-grant`, `cache-isolated`, `cache-bounded`.
pub(super) async fn sandbox(kit: &Kit, r: &mut Recorder<'_>) {
    r.check(NARROWED_GRANT, narrowed_grant(kit)).await;
    r.check(CACHE_ISOLATED, crate::isolation::cache_isolated(kit))
        .await;
    r.check(CACHE_BOUNDED, cache_bounded(kit)).await;
}

/// `sandbox.narrowed-grant`: loaded with no outbound host granted, a look-up fails as
/// `capability_denied`.
async fn narrowed_grant(kit: &Kit) -> Verdict {
    let narrowed = kit
        .variant(|manifest| manifest.allowed_hosts.clear())
        .await
        .map_err(|error| format!("loading with no grant failed: {error:#}"))?;
    let result = narrowed.find_server(&kit.new_key()).await;
    match &result {
        Err(CallError::CapabilityDenied { origin, .. }) => {
            Ok(format!("refused {origin}; the plugin reported the failure"))
        }
        Ok(_) if narrowed.outbound_requests() == 0 => Err(
            "find-server answered without any request to the vendor: it cannot have looked \
             anything up"
                .into(),
        ),
        _ => Err(format!(
            "expected the refused request to surface as an error (capability_denied), got {}",
            shown(&result)
        )),
    }
}

/// `sandbox.cache-bounded`: loaded with `cache_entries = 0`, a look-up of a new key still
/// answers none.
async fn cache_bounded(kit: &Kit) -> Verdict {
    if !kit.plugin.wit_version().has_cache() {
        return Ok(format!(
            "the plugin implements {}, which has no cache",
            kit.plugin.wit_version()
        ));
    }
    let bounded = kit
        .variant(|manifest| {
            manifest.limits.cache_entries = 0;
            manifest.limits.cache_bytes = 0;
        })
        .await
        .map_err(|error| format!("loading with cache_entries = 0 failed: {error:#}"))?;
    let key = kit.new_key();
    let result = crate::patience::until(kit.call_deadline(), || bounded.find_server(&key)).await;
    match &result {
        Ok(None) => Ok("find-server answered none for a new key with no room in its cache".into()),
        _ => Err(format!(
            "expected find-server of a new key to answer none with cache_entries = 0 (a full \
             cache means doing the work again, not failing), got {}",
            shown(&result)
        )),
    }
}
