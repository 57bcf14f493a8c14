//! The plugin's cache: short-lived values the host keeps for this plugin between calls
//! (WIT `provisioner:provider/cache`, since 0.3.0).
//!
//! What the host promises (see `wit/provider.wit`): the entries are this plugin's alone, on
//! this host; each lives at most its time to live (at most a day); a reload or a restart
//! empties the cache; the manifest's `[limits] cache_entries` and `cache_bytes` bound it,
//! and a [`set`] beyond them fails rather than evicting. So a plugin treats the cache as a
//! hint: a miss (or a failed `set`) means doing the work again, never failing the call.
//!
//! Values may be secrets (a session token): the host never logs them, and neither should
//! the plugin, nor put them in a `ProviderError`.

use std::time::Duration;

use crate::provisioner::provider::cache as wit;
use crate::{LogLevel, log};

pub use wit::CacheError;

/// The longest key the host takes, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The live value under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    wit::get(key)
}

/// Stores `value` under `key` for `ttl` (the host shortens a ttl beyond a day).
pub fn set(key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    wit::set(key, value, ttl_ms)
}

/// Forgets `key`.
pub fn delete(key: &str) {
    wit::delete(key)
}

/// Stores `value` as JSON under `key` for `ttl`, as the hint the cache is: a value that
/// does not encode is not stored, and a [`set`] the host refuses (a full cache) is logged at
/// `warn` as `<what> is not cached (cache-error <name>): <instead>`, where `instead` says
/// what every call does without it (`every call logs in`). Neither is an error.
pub fn keep_json<T: serde::Serialize>(
    key: &str,
    value: &T,
    ttl: Duration,
    what: &str,
    instead: &str,
) {
    let Ok(bytes) = serde_json::to_vec(value) else {
        return;
    };
    if let Err(error) = set(key, &bytes, ttl) {
        log(
            LogLevel::Warn,
            &format!(
                "{what} is not cached (cache-error {}): {instead}",
                error.name()
            ),
        );
    }
}

/// A JSON value under `key`; none when absent, expired or not a `T` (a plugin whose stored
/// shape changed reads a miss, not an error).
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
    get(key).and_then(|bytes| serde_json::from_slice(&bytes).ok())
}
