//! `order-api` configuration: flags with environment fallbacks (`--help` lists them).

use clap::{Args, Parser, Subcommand};
use provisioner_contract::amqp::AmqpArgs;
use uuid::Uuid;

use crate::store::OrphanAction;

/// The order API: records orders, publishes creation requests, serves their status.
/// Without a subcommand it serves; `tokens` manages the API tokens.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "order-api",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ApiConfig,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// API tokens: every request needs one (a tenant's, or an admin's).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Tenants' quotas and order rates.
    #[command(subcommand)]
    Tenants(TenantsCommand),
}

/// `order-api tenants ...`: works on the orders database directly, beside a running API
/// (quotas hold from the next order; a running instance reads rates within 5 s).
#[derive(Debug, Clone, Subcommand)]
pub enum TenantsCommand {
    /// Sets a tenant's quota over all its vendors, or at one vendor with `--vendor`. A limit
    /// left out is removed; with neither limit the quota is removed.
    SetQuota {
        /// The tenant.
        tenant: String,
        /// The quota holds at this vendor only (default: all vendors together).
        #[arg(long)]
        vendor: Option<String>,
        /// Most servers that exist or are on their way.
        #[arg(long)]
        live_servers: Option<u64>,
        /// Most orders in progress.
        #[arg(long)]
        orders_in_flight: Option<u64>,
        /// The orders database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Sets a tenant's own rate of `POST /v1/orders` (per order-api instance), or with
    /// `--default` returns it to the instance's default.
    SetRate {
        /// The tenant.
        tenant: String,
        /// Requests per second, sustained.
        #[arg(long, required_unless_present = "default", conflicts_with = "default")]
        per_second: Option<f64>,
        /// Requests at once after a quiet spell (default: one second's worth, at least 1).
        #[arg(long, conflicts_with = "default")]
        burst: Option<u32>,
        /// Remove the tenant's own rate.
        #[arg(long)]
        default: bool,
        /// The orders database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Shows a tenant's quotas, rate and usage (JSON, as `GET /v1/quotas` answers it).
    Show {
        /// The tenant.
        tenant: String,
        /// The orders database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Lists every quota and tenant rate that is set.
    List {
        /// The orders database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// `order-api tokens ...`: works on the orders database directly, beside a running API.
#[derive(Debug, Clone, Subcommand)]
pub enum TokensCommand {
    /// Makes a token and prints it (the only time it is shown; the database keeps its
    /// SHA-256).
    Create {
        /// The tenant whose orders the token reaches (made on first use: a-z, 0-9, '-').
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        tenant: Option<String>,
        /// An admin token: every tenant's orders, and the operator endpoints.
        #[arg(long)]
        admin: bool,
        /// What the token is for (shown by `tokens list`).
        #[arg(long, default_value = "")]
        label: String,
        /// The orders database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Lists the tokens (ids, tenants, labels; never the tokens).
    List {
        /// The orders database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revokes a token at once.
    Revoke {
        /// The token's id (from `tokens list` or `tokens create`).
        token_id: Uuid,
        /// The orders database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Where the orders database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The orders database: `sqlite://<file>` (created if missing; one order-api at a time)
    /// or `postgres://<user>:<password>@<host>/<database>` (shared by any number).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://orders.db")]
    pub database_url: String,
}

/// How the API serves.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,
    /// Bounds on the HTTP connections.
    #[command(flatten)]
    pub http_limits: crate::http::server::HttpLimits,
    /// The orders database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Bounds on the `/events` streams.
    #[command(flatten)]
    pub event_streams: crate::http::events::StreamSettings,
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
    /// Seconds a server of an order with a `placement` may wait, not yet taken by any host,
    /// while no host of its vendor has announced itself, before it moves to the order's next
    /// candidate (checked on the watchdog's sweeps). Keep it well above the hosts'
    /// `--announce-interval-secs`. 0: never moves for want of a host.
    #[arg(long, env = "PLACEMENT_NO_HOST_SECS", default_value_t = 300)]
    pub placement_no_host_secs: u64,
    /// Seconds between orphan sweeps (each vendor lists the servers carrying our key; those
    /// no order owns are orphans). 0: sweep only on `POST /v1/orphans/sweep`.
    #[arg(long, env = "ORPHAN_SWEEP_INTERVAL_SECS", default_value_t = 3_600)]
    pub orphan_sweep_interval_secs: u64,
    /// Milliseconds a host has to check a new order with the vendor's plugin before it is
    /// accepted (a refusal is a 422 at once); without an answer in time the order is
    /// accepted unchecked. 0: orders are not checked before they are accepted.
    #[arg(long, env = "VALIDATE_TIMEOUT_MS", default_value_t = 2_000)]
    pub validate_timeout_ms: u64,
    /// A plugins folder (the hosts' manifests and components, or a copy) whose plugins
    /// order-api runs itself for their `validate` alone, without secrets or network: a
    /// vendor's check is then made here, with no round trip to a host, whenever the plugin
    /// here is the version the vendor's hosts announce (otherwise a host is asked, as
    /// without this folder). Rescanned every 2 s, like the hosts' folder. Unset: every
    /// check goes to a host. Needs `--validate-timeout-ms` above 0.
    #[arg(long, env = "VALIDATE_PLUGINS_DIR")]
    pub validate_plugins_dir: Option<std::path::PathBuf>,
    /// The wait before a failed webhook's second attempt (milliseconds); it doubles with every
    /// attempt after, up to an hour.
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 1_000)]
    pub webhook_retry_base_ms: u64,
    /// Attempts before a webhook delivery is given up (recorded in the order's event log).
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: u32,
    /// Let webhook URLs point to private, loopback and link-local addresses (a receiver on
    /// your own network). Off: tenants' webhooks reach only public addresses, checked when the
    /// order is made and again, after name resolution, at every call.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_ADDRESSES")]
    pub webhook_allow_private_addresses: bool,
    /// Seconds a webhook receiver has to answer.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// Webhook calls in progress at once (per order-api instance).
    #[arg(long, env = "WEBHOOK_MAX_CONCURRENT", default_value_t = 64)]
    pub webhook_max_concurrent: usize,
    /// Webhook calls in progress at once for one tenant (per instance): a tenant whose
    /// receiver is slow fills this share only, the other slots stay for other tenants.
    #[arg(long, env = "WEBHOOK_MAX_CONCURRENT_PER_TENANT", default_value_t = 8)]
    pub webhook_max_concurrent_per_tenant: usize,
    /// What happens to orphans: `report` records them (`GET /v1/orphans`, a warning in the
    /// log); `delete` also has a host delete them.
    #[arg(long, env = "ORPHAN_ACTION", value_enum, default_value_t = OrphanAction::Report)]
    pub orphan_action: OrphanAction,
    /// `POST /v1/orders` per second a tenant may send to this instance, sustained, unless an
    /// admin set the tenant's own rate; 0: no default limit.
    #[arg(long, env = "TENANT_ORDER_RATE", default_value_t = 20.0)]
    pub tenant_order_rate: f64,
    /// Requests a tenant may send at once after a quiet spell (the bucket's size) at the
    /// default rate.
    #[arg(long, env = "TENANT_ORDER_BURST", default_value_t = 100)]
    pub tenant_order_burst: u32,
}

impl ApiConfig {
    /// The default rate of `POST /v1/orders` per tenant (`None`: not limited).
    pub fn default_order_rate(&self) -> anyhow::Result<Option<crate::store::OrderRate>> {
        if self.tenant_order_rate == 0.0 {
            return Ok(None);
        }
        let rate = crate::store::OrderRate {
            per_second: self.tenant_order_rate,
            burst: self.tenant_order_burst,
        };
        rate.check()
            .map_err(|e| anyhow::anyhow!("--tenant-order-rate/--tenant-order-burst: {e}"))?;
        Ok(Some(rate))
    }
}
