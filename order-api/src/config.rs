//! `order-api` configuration: flags with environment fallbacks (`--help` lists them).

use clap::Parser;

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
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix for every exchange and queue name (lets test runs share a broker).
    #[arg(long, env = "AMQP_NAME_PREFIX", default_value = "")]
    pub amqp_name_prefix: String,
}
