//! Process plumbing every program shares: logging set-up, the shutdown signal, and a
//! watch on the async runtime's responsiveness.
//!
//! `order-api`, `provisioner-host` and `vendor-sim` start the same way: [`init_logging`],
//! then [`shutdown_token`] for Ctrl-C and SIGTERM, then [`watch_stalls`]. None of it is
//! part of the message contract between the two services (`provisioner-contract`), so it
//! lives here, and the simulator needs no part of that contract.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The environment variable that picks the log format: `text` (the default) or `json`.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

/// Logs to stdout, filtered by `RUST_LOG` (default `info`): readable text (coloured only on
/// a terminal), or with `LOG_FORMAT=json` one JSON object per line with the event's fields,
/// its span's fields (the order id, the `traceparent`) and the spans it is in, for a log
/// collector. Fails on any other `LOG_FORMAT`.
pub fn init_logging() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let format = std::env::var(LOG_FORMAT).unwrap_or_default();
    match format.as_str() {
        "" | "text" => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        "json" => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        other => anyhow::bail!("{LOG_FORMAT} must be 'text' or 'json', not '{other}'"),
    }
    Ok(())
}

/// A token cancelled on the first Ctrl-C (SIGINT) or SIGTERM.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        signal().await;
        // Cancel before logging: if the log pipe is gone, logging can fail.
        trigger.cancel();
        tracing::info!("shutdown requested");
    });
    token
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// How often [`watch_stalls`] checks the runtime.
const STALL_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// A timer later than this means the runtime was stalled.
pub const STALL_THRESHOLD: Duration = Duration::from_secs(1);

/// Warns whenever the async runtime was too busy (or blocked) to fire a timer within
/// [`STALL_THRESHOLD`] of its deadline: when that happens, AMQP heartbeats, poll timers
/// and HTTP answers are late too. The warning reads `runtime stalled` with the lateness
/// in milliseconds (`late_ms`), so operators and the benchmarks can find it.
pub fn watch_stalls(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut expected = Instant::now() + STALL_PROBE_INTERVAL;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(expected.into()) => {}
            }
            let now = Instant::now();
            let late = now.saturating_duration_since(expected);
            if late >= STALL_THRESHOLD {
                tracing::warn!(
                    late_ms = late.as_millis() as u64,
                    "runtime stalled: timers fired {} ms late; AMQP heartbeats may be late too",
                    late.as_millis()
                );
            }
            expected = now + STALL_PROBE_INTERVAL;
        }
    });
}
