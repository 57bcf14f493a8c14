//! `order-api` configuration: flags with environment fallbacks (`--help` lists them).

use clap::Parser;
use provisioner_contract::amqp::AmqpArgs;

use crate::store::OrphanAction;

/// The order API: records orders, publishes creation requests, serves their status.
#[derive(Debug, Clone, Parser)]
#[command(name = "order-api", version, about)]
pub struct ApiConfig {
    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,
    /// The orders database (SQLite URL; the file is created if missing).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://orders.db")]
    pub database_url: String,
    /// The broker.
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Seconds without news after which the watchdog sends a queued, provisioning or
    /// deleting order's request again. Keep it above the host's
    /// `--provision-timeout-secs` (900): a host polling a slow server sends no news.
    #[arg(long, env = "WATCHDOG_AFTER_SECS", default_value_t = 1_200)]
    pub watchdog_after_secs: u64,
    /// Seconds between the watchdog's sweeps.
    #[arg(long, env = "WATCHDOG_INTERVAL_SECS", default_value_t = 30)]
    pub watchdog_interval_secs: u64,
    /// Seconds between orphan sweeps (each vendor lists the servers carrying our key; those
    /// no order owns are orphans). 0: sweep only on `POST /v1/orphans/sweep`.
    #[arg(long, env = "ORPHAN_SWEEP_INTERVAL_SECS", default_value_t = 3_600)]
    pub orphan_sweep_interval_secs: u64,
    /// What happens to orphans: `report` records them (`GET /v1/orphans`, a warning in the
    /// log); `delete` also has a host delete them.
    #[arg(long, env = "ORPHAN_ACTION", value_enum, default_value_t = OrphanAction::Report)]
    pub orphan_action: OrphanAction,
}
