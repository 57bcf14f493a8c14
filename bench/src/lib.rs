//! What the `bench` and `chaos` programs share: their summary table (or JSON) with the
//! progress line, and what `/proc` says about a process.
//!
//! # Layout
//! - [`report`]: the summary (table or JSON) and the progress line.
//! - [`probe`]: a process's memory, CPU and threads; RabbitMQ's CPU.
//! - [`stats`]: percentiles of measured durations.
//! - [`Build`]: which build of the programs a run starts.
//! - [`CheckAt`]: where order-api checks new orders with the vendor's plugin.

pub mod probe;
pub mod report;
pub mod stats;

/// Which build of the programs a run starts (`--profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Build {
    /// `target/release`: for figures.
    Release,
    /// `target/debug`: for smoke runs next to the tests.
    Debug,
}

impl Build {
    /// The cargo profile folder under `target/`.
    pub fn profile(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Debug => "debug",
        }
    }
}

/// Where a run's order-api checks new orders with the vendor's plugin (`--check-at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckAt {
    /// order-api itself, with the stack's plugins loaded for `validate` alone
    /// (`VALIDATE_PLUGINS_DIR`), as `docker-compose.yml` and `scripts/dev.sh` run it.
    OrderApi,
    /// A host, asked over RabbitMQ (order-api without `VALIDATE_PLUGINS_DIR`).
    Host,
}

impl CheckAt {
    /// Whether order-api runs the plugins itself (`StackOptions::api_checks_with_plugins`).
    pub fn at_order_api(self) -> bool {
        self == Self::OrderApi
    }
}
