//! The per-plugin cache behind the WIT `cache` interface (`provisioner:provider@0.3`).
//!
//! One [`PluginCache`] belongs to one loaded [`crate::runtime::Plugin`] (it lives in its
//! [`crate::sandbox::Grants`]), and every call of that plugin reaches the same one. A reload
//! builds a new plugin and with it an empty cache; nothing is written to disk, so a restart
//! loses it too. Another plugin has its own cache and no way to name this one.
//!
//! Bounds: at most [`CacheLimits::entries`] entries and [`CacheLimits::bytes`] bytes of keys
//! and values (the manifest's `[limits] cache_entries`, `cache_bytes`); keys of
//! 1..=[`MAX_KEY_BYTES`] bytes; a time to live of at most [`MAX_TTL`]. A `set` beyond the
//! bounds drops expired entries first and then fails with `full`: the cache never evicts a
//! live entry behind the plugin's back, so what a plugin stored stays until it expires.
//!
//! Values are treated as secrets: held as [`SecretSlice`] (zeroed when dropped), never
//! logged, and [`PluginCache`]'s `Debug` shows counts only.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretSlice};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The longest time to live; a longer one is shortened to it.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How much one plugin's cache may hold. The default is a manifest's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Entries at once.
    pub entries: usize,
    /// Bytes of keys and values together.
    pub bytes: usize,
}

/// Why a value was not stored (the WIT `cache-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The key is empty or longer than [`MAX_KEY_BYTES`].
    #[error("the cache key is empty or longer than {MAX_KEY_BYTES} bytes")]
    InvalidKey,
    /// The entry alone is more than the cache's byte bound.
    #[error("the entry is larger than the plugin's whole cache")]
    TooLarge,
    /// The cache is at its entry or byte bound, expired entries dropped.
    #[error("the plugin's cache is full")]
    Full,
}

struct Entry {
    value: SecretSlice<u8>,
    expires: Instant,
}

impl Entry {
    fn size(&self, key: &str) -> usize {
        key.len() + self.value.expose_secret().len()
    }
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.map.remove(key) {
            self.bytes -= entry.size(key);
        }
    }

    /// Whether `key` with an entry of `size` bytes fits beside the others (replacing what
    /// the key holds now).
    fn fits(&self, key: &str, size: usize, limits: CacheLimits) -> bool {
        let held = self.map.get(key).map(|entry| entry.size(key));
        let count = self.map.len() + usize::from(held.is_none());
        count <= limits.entries && self.bytes - held.unwrap_or(0) + size <= limits.bytes
    }

    fn drop_expired(&mut self, now: Instant) {
        let mut freed = 0;
        self.map.retain(|key, entry| {
            let live = entry.expires > now;
            if !live {
                freed += entry.size(key);
            }
            live
        });
        self.bytes -= freed;
    }
}

/// One plugin's cache, shared by all its calls.
pub struct PluginCache {
    limits: CacheLimits,
    entries: Mutex<Entries>,
}

impl fmt::Debug for PluginCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.lock();
        f.debug_struct("PluginCache")
            .field("limits", &self.limits)
            .field("entries", &entries.map.len())
            .field("bytes", &entries.bytes)
            .finish()
    }
}

impl PluginCache {
    /// An empty cache with these bounds.
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves the map consistent (every update is one
        // statement or recomputed), so a poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.get_at(key, Instant::now())
    }

    /// Stores `value` under `key` for `ttl` (at most [`MAX_TTL`]).
    pub fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError> {
        self.set_at(key, value, ttl, Instant::now())
    }

    /// Forgets `key`.
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Entries held now, expired ones included until a `set` or `get` drops them.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_at(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        let mut entries = self.lock();
        let expired = match entries.map.get(key) {
            None => return None,
            Some(entry) if entry.expires > now => {
                return Some(entry.value.expose_secret().to_vec());
            }
            Some(_) => true,
        };
        if expired {
            entries.remove(key);
        }
        None
    }

    fn set_at(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), CacheError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(CacheError::InvalidKey);
        }
        let size = key.len() + value.len();
        if size > self.limits.bytes {
            return Err(CacheError::TooLarge);
        }
        let mut entries = self.lock();
        if !entries.fits(key, size, self.limits) {
            entries.drop_expired(now);
            if !entries.fits(key, size, self.limits) {
                return Err(CacheError::Full);
            }
        }
        entries.remove(key);
        entries.bytes += size;
        entries.map.insert(
            key.to_string(),
            Entry {
                value: SecretSlice::from(value),
                expires: now + ttl.min(MAX_TTL),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: usize, bytes: usize) -> PluginCache {
        PluginCache::new(CacheLimits { entries, bytes })
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// A value comes back until its time to live ends, then is gone.
    #[test]
    fn values_live_until_their_ttl_ends() {
        let cache = cache(4, 1024);
        let now = Instant::now();
        cache.set_at("token", b"abc".to_vec(), MINUTE, now).unwrap();
        assert_eq!(cache.get_at("token", now).as_deref(), Some(&b"abc"[..]));
        assert_eq!(cache.get_at("token", now + MINUTE), None);
        assert!(cache.is_empty(), "an expired entry read is dropped");
    }

    /// A time to live beyond a day is shortened to a day.
    #[test]
    fn ttl_is_capped_at_a_day() {
        let cache = cache(4, 1024);
        let now = Instant::now();
        cache
            .set_at(
                "k",
                b"v".to_vec(),
                Duration::from_secs(u32::MAX as u64),
                now,
            )
            .unwrap();
        assert!(cache.get_at("k", now + MAX_TTL - MINUTE).is_some());
        assert_eq!(cache.get_at("k", now + MAX_TTL), None);
    }

    /// A set beyond the entry bound fails with `full`; replacing a key does not count
    /// twice; deleting makes room; expired entries are dropped to make room.
    #[test]
    fn entry_bound_fails_then_frees() {
        let cache = cache(2, 1024);
        let now = Instant::now();
        cache.set_at("a", b"1".to_vec(), MINUTE, now).unwrap();
        cache
            .set_at("b", b"2".to_vec(), Duration::from_secs(1), now)
            .unwrap();
        assert_eq!(
            cache.set_at("c", b"3".to_vec(), MINUTE, now),
            Err(CacheError::Full)
        );
        cache.set_at("a", b"11".to_vec(), MINUTE, now).unwrap();
        assert_eq!(cache.get_at("a", now).as_deref(), Some(&b"11"[..]));
        let later = now + Duration::from_secs(2);
        cache.set_at("c", b"3".to_vec(), MINUTE, later).unwrap();
        assert_eq!(cache.get_at("b", later), None);
        cache.delete("c");
        cache.set_at("d", b"4".to_vec(), MINUTE, later).unwrap();
    }

    /// Keys and values count against the byte bound; one entry larger than the whole
    /// cache is `too-large`, one that does not fit beside the others `full`.
    #[test]
    fn byte_bound_counts_keys_and_values() {
        let cache = cache(10, 10);
        let now = Instant::now();
        assert_eq!(
            cache.set_at("k", vec![0; 10], MINUTE, now),
            Err(CacheError::TooLarge)
        );
        cache.set_at("k", vec![0; 5], MINUTE, now).unwrap();
        assert_eq!(
            cache.set_at("j", vec![0; 4], MINUTE, now),
            Err(CacheError::Full)
        );
        cache.set_at("k", vec![0; 9], MINUTE, now).unwrap();
        cache.delete("k");
        cache.set_at("j", vec![0; 9], MINUTE, now).unwrap();
    }

    /// Empty and over-long keys are refused.
    #[test]
    fn refuses_bad_keys() {
        let cache = cache(10, 10_000);
        assert_eq!(cache.set("", vec![], MINUTE), Err(CacheError::InvalidKey));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            cache.set(&long, vec![], MINUTE),
            Err(CacheError::InvalidKey)
        );
        cache
            .set(&"k".repeat(MAX_KEY_BYTES), vec![], MINUTE)
            .unwrap();
    }

    /// Printing the cache shows counts, never a value.
    #[test]
    fn debug_never_shows_a_value() {
        let cache = cache(4, 1024);
        cache.set("token", b"hunter2".to_vec(), MINUTE).unwrap();
        let printed = format!("{cache:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("entries: 1"), "{printed}");
    }
}
