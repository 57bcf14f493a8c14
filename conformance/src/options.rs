//! What a conformance run is given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the plugin's vendor is.
#[derive(Debug, Clone)]
pub enum Target {
    /// The vendor simulator at `url`, serving the plugin's API as `vendor` (one of the
    /// simulator's vendors). Fault checks run.
    Simulator {
        /// The simulator's base URL (its `/_sim` control API is there).
        url: String,
        /// Which of the simulator's vendors the plugin talks to.
        vendor: String,
    },
    /// The real vendor: fault checks are skipped (faults cannot be injected), and servers
    /// are really made (and deleted).
    Live,
}

/// A named group of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Suite {
    /// The world, `info`, `validate` (refusals, no network I/O).
    Contract,
    /// The plugin reaches only its granted hosts.
    Sandbox,
    /// Vendor faults map to the right errors (simulator only).
    Faults,
    /// create -> running -> address -> delete -> gone.
    Lifecycle,
    /// One server per idempotency key; `find-server` adopts it.
    Idempotency,
}

impl Suite {
    /// Every suite, in the order they run.
    pub const ALL: [Suite; 5] = [
        Suite::Contract,
        Suite::Sandbox,
        Suite::Faults,
        Suite::Lifecycle,
        Suite::Idempotency,
    ];

    /// The suite's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Contract => "contract",
            Suite::Sandbox => "sandbox",
            Suite::Faults => "faults",
            Suite::Lifecycle => "lifecycle",
            Suite::Idempotency => "idempotency",
        }
    }
}

/// One run's inputs.
#[derive(Debug, Clone)]
pub struct KitOptions {
    /// The plugin component under test.
    pub component: PathBuf,
    /// Its manifest (grants, limits, config, secrets); its `component` is replaced by
    /// [`KitOptions::component`].
    pub manifest: PathBuf,
    /// Simulator or live vendor.
    pub target: Target,
    /// Region, size and image of the servers the run makes; `None`: the first value of the
    /// manifest's `regions` / `sizes` / `images` config.
    pub region: Option<String>,
    /// See `region`.
    pub size: Option<String>,
    /// See `region`.
    pub image: Option<String>,
    /// The suites to run (the leftover sweep always runs when servers may have been made).
    pub suites: Vec<Suite>,
    /// How long a server may take to run, and to be gone after its delete.
    pub boot_timeout: Duration,
    /// Secret values by environment variable name, instead of this process's environment
    /// (tests); `None`: the environment, as the host reads it.
    pub secrets: Option<BTreeMap<String, String>>,
}
