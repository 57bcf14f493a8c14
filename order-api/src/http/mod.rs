//! The HTTP API (axum). [`app`] builds the router from the shared state, apart from any
//! socket, so tests and `main` serve the same thing; [`server`] serves it within bounds;
//! [`caller`] reads who a request speaks for from its token.

pub mod caller;
pub mod console;
pub mod dead_letters;
pub mod events;
pub mod health;
pub mod me;
pub mod openapi;
pub mod order_feed;
pub mod orders;
pub mod orphans;
pub mod problem;
pub mod quotas;
pub mod server;
pub mod vendors;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::Notify;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::amqp::plugin_check::ValidatorSlot;
use crate::local_plugins::LocalPlugins;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The orders database.
    pub store: Store,
    /// The per-tenant rate of `POST /v1/orders`.
    pub order_rates: Arc<crate::rates::OrderRates>,
    /// Wakes the outbox relay after a new order is committed.
    pub relay_wakeup: Arc<Notify>,
    /// Whether the broker session is up (for `/readyz`).
    pub broker_up: Arc<AtomicBool>,
    /// Wakes the orphan sweeper.
    pub sweep_now: Arc<Notify>,
    /// The series `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// Checks orders with the vendor's plugin (through a host) before they are accepted.
    pub validator: ValidatorSlot,
    /// The vendors' plugins this process runs for their `validate` (`--validate-plugins-dir`):
    /// a check one of them can make does not go to a host.
    pub local_plugins: Option<LocalPlugins>,
    /// How long a check may take; `None`: orders are not checked before they are accepted.
    pub validate_timeout: Option<std::time::Duration>,
    /// Whether webhook URLs may point to private, loopback or link-local addresses.
    pub webhook_allow_private: bool,
    /// The open `/events` streams, within their bounds.
    pub event_streams: Arc<events::StreamSlots>,
}

/// The order API's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/orders",
            get(orders::list_orders).post(orders::create_order),
        )
        .route(
            "/v1/orders/{id}",
            get(orders::get_order).delete(orders::delete_order),
        )
        .route("/v1/orders/{id}/events", get(events::order_events))
        .route("/v1/events", get(order_feed::order_feed))
        .route("/v1/orders/{id}/cancel", post(orders::cancel_order))
        .route("/v1/vendors", get(vendors::list_vendors))
        .route(
            "/v1/vendors/{vendor}/catalogue",
            get(vendors::vendor_catalogue),
        )
        .route("/v1/me", get(me::me))
        .route("/v1/quotas", get(quotas::get_quotas))
        .route(
            "/v1/tenants/{tenant}/quotas",
            get(quotas::get_tenant_quotas).put(quotas::put_tenant_quotas),
        )
        .route("/v1/webhooks/secret", get(orders::webhook_secret))
        .route("/v1/orphans", get(orphans::list_orphans))
        .route("/v1/dead-letters", get(dead_letters::list_dead_letters))
        .route(
            "/v1/dead-letters/{id}",
            get(dead_letters::get_dead_letter).delete(dead_letters::dismiss_dead_letter),
        )
        .route("/v1/orphans/sweep", post(orphans::sweep_now))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(console::router())
        .merge(openapi::docs())
        .fallback(problem::no_such_route)
        // 5xx answers are logged where they arise (with detail); `/readyz` answering 503
        // while not ready is not an error worth a log line.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        .with_state(state)
}
