//! How long a vendor's recent servers took to boot, kept with its loaded plugin
//! ([`crate::runtime::Plugin::boot_times`]) and read by the polls of a booting server: the
//! first poll waits until a server is likely up.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// How long a vendor's recent servers took to boot, as seen by the polls.
///
/// Each observation is a lower bound: the time from the create to the last poll that
/// still saw the server booting. The first poll of the next server waits the 10th
/// percentile of those, so it rarely comes after the server is up; if the vendor gets
/// faster, first polls find servers already running, their observations are near zero,
/// and the estimate comes down with them.
#[derive(Debug, Default)]
pub struct BootTimes {
    recent: Mutex<VecDeque<Duration>>,
}

impl BootTimes {
    /// Observations kept.
    const KEEP: usize = 64;
    /// Observations needed before the estimate is used.
    const ENOUGH: usize = 8;

    /// Records that a server was still booting `booting_for` after its create.
    pub fn record(&self, booting_for: Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == Self::KEEP {
            recent.pop_front();
        }
        recent.push_back(booting_for);
    }

    /// How long to wait before the first poll; `None` until enough servers were seen.
    pub fn first_wait(&self) -> Option<Duration> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() < Self::ENOUGH {
            return None;
        }
        let mut sorted: Vec<Duration> = recent.iter().copied().collect();
        sorted.sort_unstable();
        Some(sorted[sorted.len() / 10])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn boot_times_need_enough_observations() {
        let times = BootTimes::default();
        for _ in 0..BootTimes::ENOUGH - 1 {
            times.record(secs(30));
        }
        assert_eq!(times.first_wait(), None);
        times.record(secs(30));
        assert_eq!(times.first_wait(), Some(secs(30)));
    }

    #[test]
    fn the_first_wait_is_a_low_percentile_of_recent_boots() {
        let times = BootTimes::default();
        for n in 1..=20 {
            times.record(secs(n));
        }
        // The 10th percentile of 1..=20 s.
        assert_eq!(times.first_wait(), Some(secs(3)));
    }

    #[test]
    fn a_faster_vendor_brings_the_estimate_down() {
        let times = BootTimes::default();
        for _ in 0..BootTimes::KEEP {
            times.record(secs(60));
        }
        // First polls now find servers already running: observations near zero.
        for _ in 0..BootTimes::KEEP / 10 + 1 {
            times.record(Duration::ZERO);
        }
        assert_eq!(times.first_wait(), Some(Duration::ZERO));
    }
}
