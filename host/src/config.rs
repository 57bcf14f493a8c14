//! `provisioner-host` configuration: flags with environment fallbacks (`--help` lists them).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use provisioner_contract::amqp::AmqpArgs;

use crate::outbound::DEFAULT_OPEN_REQUESTS_PER_HOST;
use crate::runtime::RuntimeLimits;
use crate::worker::{PollPolicy, RetryPolicy};

/// Consumes creation requests from RabbitMQ and drives the vendors' provider plugins.
#[derive(Debug, Clone, Parser)]
#[command(name = "provisioner-host", version, about)]
pub struct HostConfig {
    /// The broker.
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Folder with plugin manifests (`*.toml`) and their components (`*.wasm`).
    #[arg(long, env = "PLUGINS_DIR", default_value = "plugins.d")]
    pub plugins_dir: PathBuf,
    /// Folder of plugin secrets: one file per secret, named after the variable the
    /// manifest gives (`PLUGIN_SECRET_<VENDOR>_<NAME>`), holding the value (a trailing
    /// newline is dropped), as Docker and Kubernetes mount secrets (symlinks are followed).
    /// A file wins over the environment variable of the same name; writing, rotating or
    /// removing one reloads its plugin at the next rescan. Unset: secrets come from the
    /// environment only.
    #[arg(long, env = "PLUGIN_SECRETS_DIR")]
    pub plugin_secrets_dir: Option<PathBuf>,
    /// Milliseconds between rescans of the plugins folder (drop-in plugins).
    #[arg(long, env = "PLUGINS_RESCAN_MS", default_value_t = 2_000)]
    pub plugins_rescan_ms: u64,
    /// Milliseconds before the first poll of a booting server.
    #[arg(long, env = "POLL_INITIAL_MS", default_value_t = 500)]
    pub poll_initial_ms: u64,
    /// Longest wait between polls, in milliseconds.
    #[arg(long, env = "POLL_MAX_MS", default_value_t = 5_000)]
    pub poll_max_ms: u64,
    /// Seconds a server may take to run before its order fails. Keep it below RabbitMQ's
    /// consumer timeout (30 minutes by default): the request stays unacked until then.
    #[arg(long, env = "PROVISION_TIMEOUT_SECS", default_value_t = 900)]
    pub provision_timeout_secs: u64,
    /// Attempts a create gets in all (the first included) when it fails with a passing
    /// fault (rate limited, vendor unavailable, timeout).
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = 5)]
    pub retry_max_attempts: u32,
    /// Seconds from an order's first attempt after which no retry starts.
    #[arg(long, env = "RETRY_MAX_TOTAL_SECS", default_value_t = 600)]
    pub retry_max_total_secs: u64,
    /// The first retry's delay in milliseconds; each later one doubles (with jitter).
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 1_000)]
    pub retry_base_ms: u64,
    /// Attempts a cancel gets in all (its key lookup and delete: a user's cancel, or the
    /// clean-up after a failed order) when they fail with a passing fault. A clean-up must
    /// finish, so its budget is its own and longer than a create's; the delays double from
    /// `RETRY_BASE_MS` up to the longest delay queue (256 s).
    #[arg(long, env = "CLEANUP_RETRY_MAX_ATTEMPTS", default_value_t = 12)]
    pub cleanup_retry_max_attempts: u32,
    /// Seconds from a cancel's first attempt after which no retry starts; what is left
    /// then is the orphan sweep's.
    #[arg(long, env = "CLEANUP_RETRY_MAX_TOTAL_SECS", default_value_t = 3_600)]
    pub cleanup_retry_max_total_secs: u64,
    /// Seconds between announcements of the vendors this host serves.
    #[arg(long, env = "ANNOUNCE_INTERVAL_SECS", default_value_t = 30)]
    pub announce_interval_secs: u64,
    /// Seconds in-flight creations get to finish on shutdown before they are handed back
    /// to RabbitMQ (another host adopts them).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Milliseconds by which the hosts' clocks may disagree at most. An order's first
    /// create runs without the create lease, cut off at a moment in its request; any other
    /// copy of it starts only this long after that moment (docs/architecture.md, *One
    /// create at a time per order*).
    #[arg(long, env = "CLOCK_SKEW_ALLOWANCE_MS", default_value_t = 2_000)]
    pub clock_skew_allowance_ms: u64,
    /// The most order results one message to order-api carries: results that are ready
    /// together (while the previous message waits for the broker's confirm) go out as one
    /// message. 1 sends every result alone, for order-apis older than such messages (set it
    /// while upgrading: hosts first with it, then the order-apis, then lift it).
    #[arg(long, env = "RESULT_BATCH_MAX", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub result_batch_max: u16,
    /// Plugin calls that may run at once (all plugins together): the slots of the
    /// instance pool. Orders waiting between polls hold none; a call beyond waits.
    #[arg(long, env = "PLUGIN_CONCURRENT_CALLS", default_value_t = 1_000)]
    pub plugin_concurrent_calls: u32,
    /// The most linear memory a manifest may give one call (`limits.memory_mib`).
    #[arg(long, env = "PLUGIN_MAX_MEMORY_MIB", default_value_t = 256)]
    pub plugin_max_memory_mib: u32,
    /// Outgoing HTTP requests all plugins together may have open at once (each may hold a
    /// connection, so a file descriptor: keep it well below `ulimit -n`); a request beyond
    /// waits for one to close. Also the most a manifest's `limits.max_open_requests` may
    /// ask for.
    #[arg(long, env = "PLUGIN_MAX_OPEN_REQUESTS", default_value_t = DEFAULT_OPEN_REQUESTS_PER_HOST)]
    pub plugin_max_open_requests: u32,
    /// Where to serve `GET /metrics` (Prometheus: plugin call durations by vendor, export
    /// and outcome), e.g. `127.0.0.1:9464`; not served when unset (hosts sharing a machine
    /// each need their own port).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// This host's name in announcements and the broker's connection list (default: the
    /// machine's host name; give each host on one machine its own).
    #[arg(long, env = "HOST_ID")]
    pub host_id: Option<String>,
}

impl HostConfig {
    /// The polling policy the flags describe.
    pub fn poll_policy(&self) -> PollPolicy {
        PollPolicy {
            initial_delay: Duration::from_millis(self.poll_initial_ms),
            max_delay: Duration::from_millis(self.poll_max_ms.max(self.poll_initial_ms)),
            budget: Duration::from_secs(self.provision_timeout_secs),
        }
    }

    /// The retry policy the flags describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry_max_attempts.max(1),
            max_total: Duration::from_secs(self.retry_max_total_secs),
            base_delay: Duration::from_millis(self.retry_base_ms),
        }
    }

    /// The retry policy of cancels (a user's, or the clean-up after a failed order).
    pub fn cleanup_retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.cleanup_retry_max_attempts.max(1),
            max_total: Duration::from_secs(self.cleanup_retry_max_total_secs),
            base_delay: Duration::from_millis(self.retry_base_ms),
        }
    }

    /// The plugin runtime's limits the flags describe.
    pub fn runtime_limits(&self) -> RuntimeLimits {
        RuntimeLimits {
            concurrent_calls: self.plugin_concurrent_calls,
            max_memory_mib: self.plugin_max_memory_mib,
            max_open_requests: self.plugin_max_open_requests,
        }
    }

    /// The host id, defaulting to the machine's host name: stable across restarts, so
    /// order-api's per-host vendor records do not pile up. Two hosts on one machine need
    /// their own `--host-id`.
    pub fn host_id(&self) -> String {
        if let Some(id) = &self.host_id {
            return id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("host-{}", std::process::id()))
    }
}
