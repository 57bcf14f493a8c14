//! Waiting out a vendor's passing errors as the host does: a call answered `rate-limited`
//! waits the delay the vendor asked for (at least a short backoff), one answered
//! `transient`, over its call budget, or refused for want of a free instance waits a
//! growing backoff, and is made again, until it gives another answer or the time limit
//! would pass (then its last error is the answer). Without it, a vendor that limits requests
//! fails checks the host would pass, and leaves the servers a run made. Each wait gets up to
//! half again at random, as the host's retries do: calls made at once
//! (`idempotency.siblings`) that a vendor limits together would otherwise come back together,
//! and be limited together, until the time limit.

use std::future::Future;
use std::time::Duration;

use provisioner_host::runtime::CallError;
use provisioner_host::wit_convert::{fault, retry_after};
// Tokio's clock, so tests can run it paused.
use tokio::time::Instant;

/// The first wait after a passing error without a delay; it grows by half up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between attempts when the vendor named no delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the host would try `error` again (it is a passing one).
pub fn is_passing(error: &CallError) -> bool {
    fault(error).retryable
}

/// Makes `call` until it answers something other than a passing error, or until waiting
/// for another attempt would go past `deadline`; the last answer.
pub async fn until<T, F, Fut>(deadline: Instant, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match call().await {
            Ok(answer) => return Ok(answer),
            Err(error) if !is_passing(&error) => return Err(error),
            Err(error) => error,
        };
        let wait = retry_after(&error).map_or(backoff, |asked| asked.max(FIRST_BACKOFF));
        let wait = wait.mul_f64(1.0 + rand::random::<f64>() / 2.0);
        let Some(resume) = Instant::now().checked_add(wait) else {
            return Err(error);
        };
        if resume > deadline {
            return Err(error);
        }
        tokio::time::sleep(wait).await;
        backoff = backoff.mul_f32(1.5).min(MAX_BACKOFF);
    }
}

/// [`until`] with `budget` from now.
pub async fn within<T, F, Fut>(budget: Duration, call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    until(Instant::now() + budget, call).await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use provisioner_host::bindings::types::ProviderError;

    use super::*;

    fn rate_limited(ms: u64) -> CallError {
        CallError::Provider(ProviderError::RateLimited(Some(ms)))
    }

    /// A rate-limited answer is waited out for the delay asked, then the call is made again.
    #[tokio::test(start_paused = true)]
    async fn waits_the_asked_delay_and_calls_again() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let answer = within(Duration::from_secs(10), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(rate_limited(1_000))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(answer.ok(), Some(3));
        assert!(started.elapsed() >= Duration::from_secs(2));
    }

    /// A lasting error's answer is the error, once another wait would pass the limit.
    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_limit_with_the_last_error() {
        let calls = Cell::new(0);
        let answer: Result<(), _> = within(Duration::from_secs(3), || {
            calls.set(calls.get() + 1);
            async { Err(CallError::Provider(ProviderError::Transient("503".into()))) }
        })
        .await;
        assert!(matches!(
            answer,
            Err(CallError::Provider(ProviderError::Transient(_)))
        ));
        assert!((3..=8).contains(&calls.get()), "{} calls", calls.get());
    }

    /// A final error (here `unauthorized`) and a delay beyond the limit end at once.
    #[tokio::test(start_paused = true)]
    async fn final_errors_and_endless_delays_are_answered_at_once() {
        let calls = Cell::new(0);
        let _: Result<(), _> = within(Duration::from_secs(60), || {
            calls.set(calls.get() + 1);
            async {
                Err(CallError::Provider(ProviderError::Unauthorized(
                    "no".into(),
                )))
            }
        })
        .await;
        assert_eq!(calls.get(), 1);
        let answer: Result<(), _> = within(Duration::from_secs(60), || {
            calls.set(calls.get() + 1);
            async { Err(rate_limited(u64::MAX)) }
        })
        .await;
        assert!(matches!(
            answer,
            Err(CallError::Provider(ProviderError::RateLimited(_)))
        ));
        assert_eq!(calls.get(), 2);
    }
}
