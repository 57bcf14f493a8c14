//! Answers the database gave lately, kept in memory for a short time so that a read asked on
//! every request (who a token speaks for, whether a vendor is served) is made about once per
//! time to live instead of once per request. Each instance keeps its own: a change made
//! elsewhere (a token revoked by the CLI, a vendor withdrawn through another order-api
//! instance) is seen within the time to live.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers by key, each trusted for at most `ttl` after it was read; at most `max` of them
/// (the map starts afresh beyond, so it never grows without bound).
#[derive(Debug, Clone)]
pub struct RecentAnswers<K, V> {
    answers: Arc<Mutex<HashMap<K, (V, Instant)>>>,
    ttl: Duration,
    max: usize,
}

impl<K: Eq + Hash, V: Clone> RecentAnswers<K, V> {
    /// An empty store of answers trusted for `ttl`, at most `max` at once.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            answers: Arc::default(),
            ttl,
            max,
        }
    }

    /// The answer for `key` if it was read less than `max_age` (and the time to live) ago.
    pub fn get<Q>(&self, key: &Q, max_age: Duration) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let answers = self.answers.lock().ok()?;
        let (value, read_at) = answers.get(key)?;
        (read_at.elapsed() < max_age.min(self.ttl)).then(|| value.clone())
    }

    /// Remembers `value` as the answer for `key`, read now.
    pub fn put(&self, key: K, value: V) {
        if let Ok(mut answers) = self.answers.lock() {
            if answers.len() >= self.max {
                answers.clear();
            }
            answers.insert(key, (value, Instant::now()));
        }
    }

    /// Forgets the answer for `key` (this instance changed what it was).
    pub fn forget<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Ok(mut answers) = self.answers.lock() {
            answers.remove(key);
        }
    }
}
