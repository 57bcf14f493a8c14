//! One vendor's budget on this host, shared by every call and every outgoing request of
//! its plugin: a token bucket (the manifest's `limits.requests_per_second`, when set) that
//! each outgoing HTTP request waits on, and a pause that a rate-limited answer (429) sets
//! for the time the vendor asked. The pause holds new calls and the requests of calls
//! already running. A 429 from one vendor slows that vendor only; other vendors have their
//! own throttle.
//!
//! The bucket counts requests, not calls: one call may send many (a listing that pages,
//! a plugin that loops), and a vendor limits requests.
//!
//! A pause is capped at [`MAX_PAUSE`]: a plugin asking for more (a `rate-limited(u64::MAX)`,
//! a misread reset header) is paused that long, with a warning. Ten minutes is as long as
//! the host's own retry budget (`--retry-max-total-secs`, 600 by default) lets an order
//! wait, so a longer pause could only fail every waiting order of the vendor; a vendor that
//! still refuses after it answers another 429 and sets another pause (one request per ten
//! minutes).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a 429 without a delay pauses the vendor.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause a rate-limited answer sets (see the module docs).
pub const MAX_PAUSE: Duration = Duration::from_secs(600);

/// A vendor's throttle (see the module docs).
#[derive(Debug)]
pub struct VendorThrottle {
    /// Requests per second, and the burst (one second's worth); `None` means no bucket.
    rate: Option<f64>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
}

/// What a rate-limited answer made of the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// How long the vendor is paused from now on.
    pub honoured: Duration,
    /// Whether the plugin asked for more than [`MAX_PAUSE`].
    pub capped: bool,
}

impl VendorThrottle {
    /// A throttle allowing `rate` requests per second (bursts of up to one second's worth);
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

    /// Waits until a request to the vendor may go out (no pause, a token in the bucket),
    /// and takes its token.
    pub async fn acquire(&self) {
        while let Some(wait) = self.try_acquire(true) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until no pause holds the vendor (a call starts then; its requests wait for
    /// their tokens).
    pub async fn wait_out_pause(&self) {
        while let Some(wait) = self.try_acquire(false) {
            tokio::time::sleep(wait).await;
        }
    }

    /// `None` when admitted (and the token taken, with `token`); else how long to wait
    /// before asking again.
    fn try_acquire(&self, token: bool) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(until) = state.paused_until {
            if until > now {
                return Some(until - now);
            }
            state.paused_until = None;
        }
        let rate = match self.rate {
            Some(rate) if token => rate,
            _ => return None,
        };
        let burst = rate.max(1.0);
        let earned = (now - state.refilled).as_secs_f64() * rate;
        state.tokens = (state.tokens + earned).min(burst);
        state.refilled = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return None;
        }
        Some(Duration::from_secs_f64((1.0 - state.tokens) / rate))
    }

    /// How long from now the pause a rate-limited answer set still holds (zero when none).
    pub fn paused_for(&self) -> Duration {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.paused_until.map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        })
    }

    /// After a rate-limited answer: no call starts and no request goes out until
    /// `retry_after` (or a second, at most [`MAX_PAUSE`]) has passed. A longer pause already
    /// set stays.
    pub fn pause(&self, retry_after: Option<Duration>) -> Pause {
        let asked = retry_after.unwrap_or(DEFAULT_PAUSE);
        let honoured = asked.min(MAX_PAUSE);
        let until = Instant::now() + honoured;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
        Pause {
            honoured,
            capped: asked > MAX_PAUSE,
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
        assert_eq!(throttle.paused_for(), Duration::from_secs(3));
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

    /// A pause asked for `u64::MAX` milliseconds lasts [`MAX_PAUSE`], and says it was cut.
    #[tokio::test(start_paused = true)]
    async fn a_pause_is_capped() {
        let throttle = VendorThrottle::new(None);
        let pause = throttle.pause(Some(Duration::from_millis(u64::MAX)));
        assert_eq!(
            pause,
            Pause {
                honoured: MAX_PAUSE,
                capped: true
            }
        );
        assert_eq!(throttle.paused_for(), MAX_PAUSE);
        let started = Instant::now();
        throttle.acquire().await;
        assert_eq!(started.elapsed(), MAX_PAUSE);
        assert!(!throttle.pause(Some(Duration::from_secs(5))).capped);
    }

    /// A call waits out a pause but takes no token: the bucket is for its requests.
    #[tokio::test(start_paused = true)]
    async fn calls_wait_out_pauses_but_take_no_token() {
        let throttle = VendorThrottle::new(Some(1.0));
        for _ in 0..10 {
            throttle.wait_out_pause().await;
        }
        let started = Instant::now();
        throttle.acquire().await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the token is still there"
        );
        throttle.pause(Some(Duration::from_secs(2)));
        throttle.wait_out_pause().await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
