//! One vendor's call budget on this host, shared by every call to that vendor: a token
//! bucket (the manifest's `limits.requests_per_second`, when set) and a pause that a
//! rate-limited answer (429) sets for the time the vendor asked. A 429 from one vendor
//! slows that vendor's calls only; other vendors have their own throttle.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a 429 without a delay pauses the vendor.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// A vendor's throttle (see the module docs).
#[derive(Debug)]
pub struct VendorThrottle {
    /// Calls per second, and the burst (one second's worth); `None` means no bucket.
    rate: Option<f64>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
}

impl VendorThrottle {
    /// A throttle allowing `rate` calls per second (bursts of up to one second's worth);
    /// `None` for no bucket (429 pauses still apply).
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            rate: rate.filter(|r| *r > 0.0),
            state: Mutex::new(State {
                tokens: rate.unwrap_or(0.0).max(1.0),
                refilled: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// Waits until a call to the vendor may start, and takes its token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        state.paused_until = None;
                        match self.rate {
                            None => return,
                            Some(rate) => {
                                let burst = rate.max(1.0);
                                let earned = (now - state.refilled).as_secs_f64() * rate;
                                state.tokens = (state.tokens + earned).min(burst);
                                state.refilled = now;
                                if state.tokens >= 1.0 {
                                    state.tokens -= 1.0;
                                    return;
                                }
                                Duration::from_secs_f64((1.0 - state.tokens) / rate)
                            }
                        }
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// After a rate-limited answer: no call starts until `retry_after` (or a second) has
    /// passed. A longer pause already set stays.
    pub fn pause(&self, retry_after: Option<Duration>) {
        let until = Instant::now() + retry_after.unwrap_or(DEFAULT_PAUSE);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn without_a_rate_calls_pass_at_once() {
        let throttle = VendorThrottle::new(None);
        let started = Instant::now();
        for _ in 0..100 {
            throttle.acquire().await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_spaces_calls_after_the_burst() {
        let throttle = VendorThrottle::new(Some(10.0));
        let started = Instant::now();
        for _ in 0..30 {
            throttle.acquire().await;
        }
        // 10 at once, then 20 more at 10 per second.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took <= Duration::from_millis(2100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_call_until_it_ends() {
        let throttle = VendorThrottle::new(None);
        throttle.pause(Some(Duration::from_secs(3)));
        throttle.pause(Some(Duration::from_secs(1)));
        let started = Instant::now();
        throttle.acquire().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "the longer pause stays"
        );
        throttle.acquire().await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
