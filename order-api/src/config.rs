//! `order-api` configuration: flags with environment fallbacks (`--help` lists them).

use clap::Parser;
use provisioner_contract::amqp::AmqpArgs;

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
}
