//! `sandbox.cache-isolated`: the plugin's cache (WIT 0.3) is its own. The plugin is loaded
//! twice, as two plugins on one host (A and B); A looks a new key up twice and B once.
//! What the check judges: B's cache is empty while A's holds what A stored, and, when A's
//! second look-up needs fewer vendor requests than its first (it read its cache, e.g. a
//! token), B's first needs as many as A's first (it could not read A's entries). Each
//! look-up waits out `rate-limited` and `transient` answers as the host does; a refused
//! attempt's requests count for B (it may have fetched a token in it) and not for A.

use provisioner_host::runtime::Plugin;

use crate::kit::Kit;

/// What the two loads did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Vendor requests of A's first look-up (its cache empty), in the attempt that
    /// answered.
    pub a_cold: u64,
    /// Entries in A's cache after it.
    pub a_entries: usize,
    /// Entries in B's cache then (B has made no call).
    pub b_entries_before: usize,
    /// Vendor requests of A's second look-up, in the attempt that answered.
    pub a_warm: u64,
    /// Vendor requests of B's first look-up, in all its attempts.
    pub b_first: u64,
}

/// Runs the check against the kit's plugin.
pub async fn cache_isolated(kit: &Kit) -> Result<String, String> {
    if !kit.plugin.wit_version().has_cache() {
        return Ok(format!(
            "the plugin implements {}, which has no cache",
            kit.plugin.wit_version()
        ));
    }
    let load = async |which: &str| {
        kit.variant(|_| {})
            .await
            .map_err(|error| format!("loading the plugin as {which} failed: {error:#}"))
    };
    let a = load("A").await?;
    let b = load("B").await?;
    // A's look-ups are counted by the attempt that answered (an earlier attempt refused by
    // a rate limit may have stored a token already); B's by all its attempts, so a token B
    // fetched in a refused attempt still counts as fetched.
    let a_cold = look_up(kit, &a, "A").await?.answered;
    let a_entries = a.cache_entries();
    let b_entries_before = b.cache_entries();
    let a_warm = look_up(kit, &a, "A").await?.answered;
    let b_first = look_up(kit, &b, "B").await?.total;
    judge(Observed {
        a_cold,
        a_entries,
        b_entries_before,
        a_warm,
        b_first,
    })
}

/// Vendor requests of one look-up, made patiently (rate-limited and transient answers
/// waited out, as the host does).
struct Requests {
    /// In all its attempts.
    total: u64,
    /// In the attempt that answered.
    answered: u64,
}

/// `find-server` of a new key (it must answer none), patiently; the vendor requests it
/// made.
async fn look_up(kit: &Kit, plugin: &Plugin, which: &str) -> Result<Requests, String> {
    let key = kit.new_key();
    let first = plugin.outbound_requests();
    let attempt = std::cell::Cell::new(first);
    let result = crate::patience::until(kit.call_deadline(), || {
        attempt.set(plugin.outbound_requests());
        plugin.find_server(&key)
    })
    .await;
    let now = plugin.outbound_requests();
    match result {
        Ok(None) => Ok(Requests {
            total: now - first,
            answered: now - attempt.get(),
        }),
        other => Err(format!(
            "expected {which}'s find-server of a new key to answer none, got {}",
            crate::shown::shown(&other)
        )),
    }
}

/// The verdict on what the two loads did.
pub fn judge(seen: Observed) -> Result<String, String> {
    let Observed {
        a_cold,
        a_entries,
        b_entries_before,
        a_warm,
        b_first,
    } = seen;
    if b_entries_before > 0 {
        return Err(format!(
            "B's cache held {b_entries_before} entries before B made any call, while A's held \
             {a_entries}: the host let one plugin's entries into another's cache"
        ));
    }
    if a_entries == 0 {
        return Ok(format!(
            "find-server stored nothing in the cache (A's look-ups made {a_cold} and {a_warm} \
             vendor requests, B's {b_first}): B's cache was empty beside A's"
        ));
    }
    if a_warm >= a_cold {
        return Ok(format!(
            "A stored {a_entries} entries, B's cache stayed empty; A's second find-server made \
             as many vendor requests as its first ({a_cold}, then {a_warm}), so B's calls \
             could not show more"
        ));
    }
    if b_first < a_cold {
        return Err(format!(
            "B's first find-server made {b_first} vendor request(s), fewer than A's first \
             ({a_cold}) and as A's second ({a_warm}), which read A's cache: B read what A \
             stored"
        ));
    }
    Ok(format!(
        "A's first find-server made {a_cold} vendor request(s) and stored {a_entries} \
         entries, its second {a_warm} (it read them); B's cache was empty and its first \
         made {b_first}: it could not read A's entries"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(a_entries: usize, b_entries_before: usize, a_warm: u64, b_first: u64) -> Observed {
        Observed {
            a_cold: 2,
            a_entries,
            b_entries_before,
            a_warm,
            b_first,
        }
    }

    /// A token plugin on a host that isolates: A logs in once, B logs in for itself.
    #[test]
    fn isolated_caches_pass() {
        let verdict = judge(seen(1, 0, 1, 2)).expect("isolated");
        assert!(verdict.contains("could not read A's entries"), "{verdict}");
    }

    /// B reading A's token (B's first look-up as cheap as A's second) fails.
    #[test]
    fn a_read_of_another_plugins_entry_fails() {
        let verdict = judge(seen(1, 0, 1, 1)).expect_err("B read A's token");
        assert!(verdict.contains("B read what A stored"), "{verdict}");
    }

    /// Entries in B's cache before B made any call fail.
    #[test]
    fn entries_in_the_other_cache_fail() {
        let verdict = judge(seen(1, 1, 1, 2)).expect_err("shared cache");
        assert!(
            verdict.contains("entries before B made any call"),
            "{verdict}"
        );
    }

    /// A plugin that caches nothing, or gains nothing by it, passes saying so.
    #[test]
    fn a_plugin_without_cache_use_passes_saying_so() {
        assert!(judge(seen(0, 0, 2, 2)).unwrap().contains("stored nothing"));
        assert!(
            judge(seen(1, 0, 2, 2))
                .unwrap()
                .contains("could not show more")
        );
    }
}
