//! `order-api`: the HTTP order API. Records orders, publishes creation requests through an
//! outbox, applies the results the hosts send back, serves order status.
//!
//! # Layout
//! - [`config`]: command-line flags with environment fallbacks.
//! - [`auth`]: API tokens and tenants; who a request speaks for ([`auth::Caller`]; plain
//!   values and functions: the store keeps the tokens, [`http::caller`] reads a request's).
//! - [`tokens`]: `order-api tokens create|list|revoke`.
//! - [`tenants`]: `order-api tenants set-quota|set-rate|show|list`.
//! - [`rates`]: the per-tenant token buckets of `POST /v1/orders` (quotas are in
//!   `store::quotas`, checked where new orders are committed).
//! - [`lifecycle`]: the order state machine (allowed transitions).
//! - [`store`]: the orders database (SQLite or PostgreSQL, `store::db`): orders, events,
//!   outbox, vendors, orphans, tokens, webhooks; compare-and-set; orders for several
//!   servers (`store::fleets`: one member order per server, summed up into the order). One
//!   file per concern (`orders`, `new_orders`, `transitions`, `host_updates`,
//!   `user_changes`, `stalled`, `outbox`, `fleet_ids`, `outbox_rows`, `webhook_queue`, ...), in
//!   layers that import only downward, mapped in the store's own doc.
//! - [`http`]: the axum router ([`http::app`]), handlers, problem+json errors, health, and
//!   the extractors of who calls ([`http::caller`]).
//! - [`metrics`]: the Prometheus series `/metrics` serves.
//! - [`amqp`]: everything that talks to RabbitMQ, in one broker session at a time:
//!   - [`amqp::session`]: the supervisor that (re)connects and runs the rest;
//!   - [`amqp::relay`]: the outbox relay (publish with confirms, retry what was refused);
//!   - [`amqp::results`]: the consumer of `provision.results` (updates, vendor
//!     announcements, inventories, orphan outcomes);
//!   - [`amqp::orphan_sweep`]: asks hosts to list the servers carrying our key and sends
//!     the deletes of those no order owns (`--orphan-action delete`);
//!   - [`amqp::plugin_check`]: asks a host to check an order with the vendor's plugin before
//!     it is accepted (replies on a queue of the session's own), accepting it unchecked
//!     when no host can answer;
//!   - [`amqp::dead_letter_recorder`]: records what reaches `provision.dead`, with why, for
//!     `GET /v1/dead-letters`.
//! - [`local_plugins`]: the vendors' plugins this process runs for their `validate` alone
//!   (`--validate-plugins-dir`, the host's plugin runtime without secrets or network), so a
//!   check needs no round trip to a host when the plugin here is the hosts' version.
//! - [`watchdog`]: re-sends the request of an order stuck without news (a lost request or
//!   result); the host's idempotent create or delete settles it.
//! - [`webhooks`]: calls an order's webhook URL when it settles (signed, retried); the
//!   signing scheme and secrets ([`webhook_signing`]) and which receivers may be called
//!   ([`webhook_receivers`]) are modules of their own that import nothing of this crate,
//!   so the store and the deliverer both use them.
//! - [`serve`]: the whole service on an already-bound listener until shutdown.
//!
//! Dependencies go one way: [`lifecycle`] and [`auth`] (plain values) under [`store`]; the
//! store under everything that works with orders ([`amqp`], [`webhooks`], [`watchdog`],
//! [`rates`]); [`http`] on top. The store imports nothing of `http`, `amqp` or the webhook
//! deliverer.

pub mod amqp;
pub mod auth;
pub mod config;
pub mod http;
pub mod lifecycle;
pub mod local_plugins;
pub mod metrics;
pub mod rates;
pub mod store;
pub mod tenants;
pub mod tokens;
pub mod watchdog;
pub mod webhook_receivers;
pub mod webhook_signing;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::amqp::{orphan_sweep, plugin_check, session};
use crate::config::ApiConfig;
use crate::store::Store;

/// Runs the API on `listener`, with the broker supervisor beside it, until `shutdown`.
pub async fn serve(
    config: ApiConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.event_streams.event_streams_max < config.http_limits.max_connections,
        "--event-streams-max ({}) must be below --max-connections ({}): streams that take every \
         connection leave none for other requests, /readyz or the 429 that refuses one more",
        config.event_streams.event_streams_max,
        config.http_limits.max_connections
    );
    let amqp_addresses = config.amqp.addresses().map_err(anyhow::Error::msg)?;
    let order_rates = rates::OrderRates::new(config.default_order_rate()?);
    let store = Store::connect(&config.database.database_url).await?;
    tracing::info!(backend = ?store.backend(), "orders database open and migrated");
    let rates_reader = tokio::spawn(rates::keep_fresh(
        order_rates.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let usage_folder = tokio::spawn(store::keep_folded(store.clone(), shutdown.clone()));
    let relay_wakeup = Arc::new(Notify::new());
    let broker_up = Arc::new(AtomicBool::new(false));
    let sweep_now = Arc::new(Notify::new());
    let metrics = metrics::Metrics::new();
    let webhook_wakeup = Arc::new(Notify::new());
    let validator = plugin_check::ValidatorSlot::default();
    let local_plugins = match &config.validate_plugins_dir {
        Some(dir) => Some(local_plugins::LocalPlugins::open(
            dir.clone(),
            shutdown.clone(),
        )?),
        None => None,
    };
    let supervisor = tokio::spawn(session::run(
        session::BrokerSettings {
            amqp_url: amqp_addresses,
            topology: config.amqp.topology(),
            up: broker_up.clone(),
            relay_wakeup: relay_wakeup.clone(),
            sweep: orphan_sweep::SweepSettings::new(
                (config.orphan_sweep_interval_secs > 0)
                    .then(|| std::time::Duration::from_secs(config.orphan_sweep_interval_secs)),
                sweep_now.clone(),
            ),
            orphan_action: config.orphan_action,
            metrics: metrics.clone(),
            webhook_wakeup: webhook_wakeup.clone(),
            validator: validator.clone(),
        },
        store.clone(),
        shutdown.clone(),
    ));
    let watchdog = tokio::spawn(watchdog::run(
        store.clone(),
        relay_wakeup.clone(),
        watchdog::WatchdogSettings {
            after: std::time::Duration::from_secs(config.watchdog_after_secs.max(1)),
            every: std::time::Duration::from_secs(config.watchdog_interval_secs.max(1)),
            no_host: (config.placement_no_host_secs > 0)
                .then(|| std::time::Duration::from_secs(config.placement_no_host_secs)),
        },
        shutdown.clone(),
    ));
    let deliverer = tokio::spawn(webhooks::run(
        store.clone(),
        webhooks::WebhookSettings {
            retry_base: std::time::Duration::from_millis(config.webhook_retry_base_ms.max(1)),
            max_attempts: config.webhook_max_attempts.max(1),
            timeout: std::time::Duration::from_secs(config.webhook_timeout_secs.max(1)),
            allow_private: config.webhook_allow_private_addresses,
            max_concurrent: config.webhook_max_concurrent.max(1),
            max_per_tenant: config.webhook_max_concurrent_per_tenant.max(1),
        },
        metrics.clone(),
        webhook_wakeup.clone(),
        shutdown.clone(),
    ));
    let state = http::AppState {
        event_streams: http::events::StreamSlots::new(
            config.event_streams.clone(),
            metrics.clone(),
        ),
        webhook_allow_private: config.webhook_allow_private_addresses,
        validator,
        local_plugins,
        validate_timeout: (config.validate_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(config.validate_timeout_ms)),
        store,
        order_rates,
        relay_wakeup,
        broker_up,
        sweep_now,
        metrics,
    };
    http::server::serve(
        listener,
        http::app(state),
        &config.http_limits,
        shutdown.clone(),
    )
    .await
    .context("serving HTTP")?;
    shutdown.cancel();
    supervisor.await.context("joining the broker supervisor")?;
    watchdog.await.context("joining the watchdog")?;
    deliverer.await.context("joining the webhook deliverer")?;
    rates_reader.await.context("joining the rates reader")?;
    usage_folder.await.context("joining the usage folder")?;
    Ok(())
}
