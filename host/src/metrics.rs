//! The host's Prometheus series, served at `GET /metrics` on `--metrics-addr` when set.
//!
//! - `provisioner_plugin_call_seconds{vendor,call,outcome}`: every plugin call's duration
//!   (instantiation, the call, the vendor's HTTP answers), by export (`create-server`,
//!   `get-server`, ...) and outcome: `ok`, `error` (the plugin answered one of its error
//!   cases, e.g. the vendor refused), `bad_answer` (an identifier or address in the
//!   answer was oversized or malformed), `timeout`, `memory_limit`, `capability_denied`,
//!   `host_busy`, `trap`.
//! - `provisioner_plugin_log_lines_dropped_total{vendor}`: plugin `log()` lines dropped
//!   over the plugin's volume limit ([`crate::plugin_output::LogGate`]).
//! - `provisioner_broker_connected{address}`: 1 for the broker address (`AMQP_URL` entry,
//!   password hidden) the AMQP session is on; no series between sessions.
//! - `provisioner_log_lines_dropped_total`: the host's own log lines dropped because the
//!   reader of stdout fell behind (`provisioner_process::init_logging`).
//! - `provisioner_create_leases_total{path}`: creates by how they went about the order's
//!   create lease ([`crate::worker`]'s `first_copy`): `skipped` (the order's first copy on
//!   its first delivery), `taken`, `taken_after_wait` (a copy that waited for a lease-free
//!   first copy to have ended).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    vendor: String,
    call: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VendorLabel {
    vendor: String,
}

/// Plugin log lines dropped, by vendor: process-wide, since a plugin's `log()` runs inside
/// its call's store, which knows its grants but not the runtime's series. Every
/// [`HostMetrics`] registers this one family.
static DROPPED_LOG_LINES: LazyLock<Family<VendorLabel, Counter>> = LazyLock::new(Family::default);

/// Counts one of `vendor`'s plugin log lines dropped over its volume limit.
pub fn count_dropped_log_line(vendor: &str) {
    DROPPED_LOG_LINES
        .get_or_create(&VendorLabel {
            vendor: vendor.to_string(),
        })
        .inc();
}

/// The host's series; cheap to share.
pub struct HostMetrics {
    registry: Registry,
    plugin_calls: Family<CallLabel, Histogram>,
    broker_connected: Family<AddressLabel, Gauge>,
    create_leases: Family<LeasePathLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeasePathLabel {
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabel {
    address: String,
}

impl std::fmt::Debug for HostMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMetrics").finish_non_exhaustive()
    }
}

impl Default for HostMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("provisioner");
        registry.register_collector(Box::new(provisioner_process::LogLinesDropped));
        // 100 us to about 50 s.
        let plugin_calls = Family::<CallLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.5, 15))) as fn() -> Histogram,
        );
        registry.register(
            "plugin_call_seconds",
            "Plugin calls by vendor, export and outcome: instantiation, the call and its vendor requests",
            plugin_calls.clone(),
        );
        registry.register(
            "plugin_log_lines_dropped",
            "Plugin log lines dropped over the plugin's volume limit, by vendor",
            DROPPED_LOG_LINES.clone(),
        );
        let broker_connected = Family::<AddressLabel, Gauge>::default();
        registry.register(
            "broker_connected",
            "1 for the broker address (password hidden) the AMQP session is on",
            broker_connected.clone(),
        );
        let create_leases = Family::<LeasePathLabel, Counter>::default();
        registry.register(
            "create_leases",
            "Creates by how they went about the order's create lease: skipped, taken, taken_after_wait",
            create_leases.clone(),
        );
        Self {
            registry,
            plugin_calls,
            broker_connected,
            create_leases,
        }
    }
}

impl HostMetrics {
    /// Records one plugin call.
    pub fn plugin_call(&self, vendor: &str, call: &str, outcome: &str, took: Duration) {
        self.plugin_calls
            .get_or_create(&CallLabel {
                vendor: vendor.to_string(),
                call: call.to_string(),
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one create by how it went about the order's create lease (`skipped`,
    /// `taken`, `taken_after_wait`).
    pub fn create_lease(&self, path: &'static str) {
        self.create_leases
            .get_or_create(&LeasePathLabel { path })
            .inc();
    }

    /// The AMQP session is on `address` (an `AMQP_URL` entry, password hidden) now, or,
    /// with `None`, on no broker.
    pub fn broker_connected(&self, address: Option<&str>) {
        self.broker_connected.clear();
        if let Some(address) = address {
            self.broker_connected
                .get_or_create(&AddressLabel {
                    address: address.to_string(),
                })
                .set(1);
        }
    }

    /// Every series as OpenMetrics text.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .context("encoding the metrics")?;
        Ok(text)
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<HostMetrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(async move || match metrics.render() {
            Ok(text) => (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
                .into_response(),
            Err(error) => {
                tracing::error!("rendering metrics: {error:#}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving the metrics endpoint")
}
