//! Waiting for something to come true: look again every so often until it holds or the
//! time is up, then fail with what the last look saw.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// Looks (through `look`) every `interval` until a look breaks with the awaited value, or
/// `within` has passed: then the error `timed_out` makes of what the last look saw (the
/// value it continued with). A look's error ends the wait with that error.
pub(crate) async fn wait_until<T, Seen>(
    within: Duration,
    interval: Duration,
    mut look: impl AsyncFnMut() -> anyhow::Result<ControlFlow<T, Seen>>,
    timed_out: impl AsyncFnOnce(Seen) -> anyhow::Error,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        let seen = match look().await? {
            ControlFlow::Break(value) => return Ok(value),
            ControlFlow::Continue(seen) => seen,
        };
        if Instant::now() > deadline {
            return Err(timed_out(seen).await);
        }
        tokio::time::sleep(interval).await;
    }
}

/// A look that sees nothing worth reporting: done when `done`.
pub(crate) fn done_when(done: bool) -> ControlFlow<(), ()> {
    if done {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}
