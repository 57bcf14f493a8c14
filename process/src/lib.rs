//! Process plumbing every program shares: logging set-up, the shutdown signal, and a
//! watch on the async runtime's responsiveness.
//!
//! `order-api`, `provisioner-host` and `vendor-sim` start the same way: [`init_logging`]
//! (kept until `main` returns), then [`shutdown_token`] for Ctrl-C and SIGTERM, then
//! [`watch_stalls`]. None of it is part of the message contract between the two services
//! (`provisioner-contract`), so it lives here, and the simulator needs no part of that
//! contract.
//!
//! # Layout
//! - [`init_logging`]: the log subscriber, writing through [`log_writer`].
//! - [`log_writer`]: the buffer the lines go into, and the thread that writes it to stdout.
//! - [`LogLinesDropped`]: the writer's dropped lines as a Prometheus series.
//! - [`shutdown_token`], [`signal`]: Ctrl-C and SIGTERM.
//! - [`watch_stalls`]: the runtime stall warning.

pub mod log_writer;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::log_writer::{LogWriter, LogWriterGuard};

/// The environment variable that picks the log format: `text` (the default) or `json`.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

/// The program's log writer, once [`init_logging`] has run (for its count of dropped lines).
static LOG_WRITER: OnceLock<LogWriter> = OnceLock::new();

/// Logs to stdout, filtered by `RUST_LOG` (default `info`): readable text (coloured only on
/// a terminal), or with `LOG_FORMAT=json` one JSON object per line with the event's fields,
/// its span's fields (the order id, the `traceparent`) and the spans it is in, for a log
/// collector. Fails on any other `LOG_FORMAT`.
///
/// The lines are written by a thread of their own ([`log_writer`]), never by the code that
/// logs: a reader of stdout that stalls would otherwise stop every thread that logs, and the
/// program with them. Up to [`log_writer::BUFFER_LIMIT_BYTES`] wait for the reader; beyond,
/// lines are dropped and counted ([`log_lines_dropped`], `provisioner_log_lines_dropped_total`
/// on `/metrics`). Keep the answered guard until `main` returns: dropping it writes out the
/// lines still held (waiting a second at most).
pub fn init_logging() -> anyhow::Result<LogWriterGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let format = std::env::var(LOG_FORMAT).unwrap_or_default();
    if !matches!(format.as_str(), "" | "text" | "json") {
        anyhow::bail!("{LOG_FORMAT} must be 'text' or 'json', not '{format}'");
    }
    let (writer, guard) = LogWriter::spawn(
        std::io::stdout(),
        log_writer::BUFFER_LIMIT_BYTES,
        log_writer::FLUSH_EVERY,
    )
    .context("starting the log writer's thread")?;
    let _ = LOG_WRITER.set(writer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format.as_str() {
        "json" => subscriber
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        _ => subscriber
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
    Ok(guard)
}

/// Log lines dropped so far because stdout's reader fell behind ([`init_logging`]).
pub fn log_lines_dropped() -> u64 {
    LOG_WRITER.get().map_or(0, LogWriter::dropped_lines)
}

/// `provisioner_log_lines_dropped_total` (with the registry's prefix): the program's log
/// lines dropped because stdout's reader fell behind ([`init_logging`]). Register it with
/// [`prometheus_client::registry::Registry::register_collector`]; read at each scrape.
#[derive(Debug, Default)]
pub struct LogLinesDropped;

impl Collector for LogLinesDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(log_lines_dropped());
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the reader of stdout fell behind",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
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
