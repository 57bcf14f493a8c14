//! What a conformance run is given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the plugin's vendor is, and how much of the vendor's side the kit can see.
#[derive(Debug, Clone)]
pub enum Target {
    /// The vendor simulator at `url`, serving the plugin's API as `vendor` (one of the
    /// simulator's vendors). Fault checks run; what reached the vendor is read from the
    /// simulator's own records.
    Simulator {
        /// The simulator's base URL (its `/_sim` control API is there).
        url: String,
        /// Which of the simulator's vendors the plugin talks to.
        vendor: String,
    },
    /// Any vendor, through the fault-injecting proxy (`vendor-sim`'s proxy mode) the kit
    /// starts in process in front of the plugin's own upstream (the live vendor or a fake of
    /// it): the plugin is pointed at the proxy for the run, fault checks run with the faults
    /// rendered from the author's profile, and what reached the vendor is read from the
    /// proxy's record of the requests it forwarded.
    FaultProxy {
        /// The vendor's fault profile (`faults.toml`: how its 429, 5xx and 401 look, how
        /// its lists are paged).
        profile: PathBuf,
        /// The manifest `[config]` key holding the vendor API's base URL (`base-url`,
        /// OpenStack's `auth-url`): its origin is the proxy's upstream.
        base_url_key: String,
    },
    /// The real vendor, seen only through the plugin: fault checks and the checks that
    /// need the vendor's side are skipped (saying why), and servers are really made (and
    /// deleted).
    Live,
}

/// A named group of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Suite {
    /// The world, `info`, `validate` (refusals, no network I/O).
    Contract,
    /// The plugin reaches only its granted hosts.
    Sandbox,
    /// Vendor faults map to the right errors (simulator or fault proxy).
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

/// How long the kit waits out a call's passing errors (`rate-limited`, `transient`, the
/// call budget) by default, as the host would before failing an order.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(60);

/// One run's inputs.
#[derive(Debug, Clone)]
pub struct KitOptions {
    /// The plugin component under test.
    pub component: PathBuf,
    /// Its manifest (grants, limits, config, secrets); its `component` is replaced by
    /// [`KitOptions::component`].
    pub manifest: PathBuf,
    /// Simulator, fault proxy or live vendor.
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
    /// How long a server may take to run, and how long the closing clean-up may take to
    /// see every server of the run gone.
    pub boot_timeout: Duration,
    /// How long one vendor call's passing errors (`rate-limited` with its delay,
    /// `transient`, a call over its budget) are waited out and the call made again, as the
    /// host does, before its error counts.
    pub retry_budget: Duration,
    /// How many servers `lifecycle.every-page` may make besides the run's others to see
    /// `list-servers` read past the vendor's first page (more than a page of the vendor's
    /// own: they cost money at a real vendor); `None`: it makes them only where the pages
    /// can be made small (the simulator, or a fault profile with `[paging]`).
    pub paging_servers: Option<usize>,
    /// Secret values by environment variable name, instead of this process's environment
    /// (tests); `None`: the environment, as the host reads it.
    pub secrets: Option<BTreeMap<String, String>>,
    /// The run's id, in every idempotency key (`conformance-<id>-<n>`) and run label it
    /// uses ([`parse_run_id`]'s form); `None`: a random one. A CI job that names its run
    /// can find and delete what a broken run left by the label; two runs at one vendor
    /// must not share an id.
    pub run_id: Option<String>,
}

/// The longest run id.
pub const MAX_RUN_ID: usize = 16;

/// A run id as given: 1 to [`MAX_RUN_ID`] lowercase letters and digits (it goes into
/// names, labels and tags, where vendors allow little else).
pub fn parse_run_id(id: &str) -> Result<String, String> {
    if !id.is_empty()
        && id.len() <= MAX_RUN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(id.to_string())
    } else {
        Err(format!(
            "a run id is 1 to {MAX_RUN_ID} lowercase letters and digits, got {id:?}"
        ))
    }
}

impl KitOptions {
    /// Every suite against `target`, with the manifest's catalogue, a 300 s boot timeout,
    /// the default retry budget and the environment's secrets.
    pub fn new(component: PathBuf, manifest: PathBuf, target: Target) -> Self {
        Self {
            component,
            manifest,
            target,
            region: None,
            size: None,
            image: None,
            suites: Suite::ALL.to_vec(),
            boot_timeout: Duration::from_secs(300),
            retry_budget: DEFAULT_RETRY_BUDGET,
            paging_servers: None,
            secrets: None,
            run_id: None,
        }
    }
}
