//! `provisioner-conformance <plugin.wasm> --manifest <file> (--vendor-sim <url> |
//! --fault-proxy <profile> | --live)`: runs the conformance suites against a plugin and
//! prints a table (or JSON), optionally JUnit XML; exits 1 when a check failed or a server
//! the run made is left at the vendor (every such server's vendor id is printed), 2 on bad
//! arguments.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use provisioner_conformance::{KitOptions, Suite, Target};

/// Tells a plugin author whether a provider plugin is fit to drop into a host.
#[derive(Debug, Parser)]
#[command(name = "provisioner-conformance", version, about)]
struct Args {
    /// The plugin component (.wasm).
    plugin: PathBuf,
    /// The plugin's manifest (its `component` is replaced by PLUGIN).
    #[arg(long)]
    manifest: PathBuf,
    /// Run against the vendor simulator at this URL (fault checks run).
    #[arg(
        long,
        conflicts_with_all = ["live", "fault_proxy"],
        required_unless_present_any = ["live", "fault_proxy"]
    )]
    vendor_sim: Option<String>,
    /// Which of the simulator's vendors the plugin talks to (default: the manifest's).
    #[arg(long, requires = "vendor_sim")]
    sim_vendor: Option<String>,
    /// Run any vendor through a fault-injecting proxy started in front of the manifest's
    /// base URL (the live vendor or a fake of it), with faults shaped by this fault profile
    /// (the vendor's faults.toml): fault checks run, and what reached the vendor is read
    /// from the proxy's record. Servers are really made (and deleted) at the upstream.
    #[arg(long, value_name = "PROFILE")]
    fault_proxy: Option<PathBuf>,
    /// The manifest [config] key holding the vendor API's base URL, which the proxy goes in
    /// front of (OpenStack: auth-url).
    #[arg(long, default_value = "base-url", requires = "fault_proxy")]
    base_url_key: String,
    /// Run against the real vendor, seen only through the plugin: servers are made and
    /// deleted (costs money); no faults, and the checks that need the vendor's side skip.
    #[arg(long)]
    live: bool,
    /// Region of the servers made (default: the first of the manifest's `regions`).
    #[arg(long)]
    region: Option<String>,
    /// Size of the servers made (default: the first of the manifest's `sizes`).
    #[arg(long)]
    size: Option<String>,
    /// Image of the servers made (default: the first of the manifest's `images`).
    #[arg(long)]
    image: Option<String>,
    /// Suites to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    suite: Vec<Suite>,
    /// Seconds a server may take to run, and the closing clean-up to see every server of the
    /// run gone.
    #[arg(long, default_value_t = 300)]
    boot_timeout_secs: u64,
    /// Seconds one vendor call's `rate-limited` and `transient` answers are waited out and
    /// the call made again (as the host does) before its error counts.
    #[arg(long, default_value_t = 60)]
    retry_secs: u64,
    /// Allow `lifecycle.every-page` to make this many more servers (more than the vendor's
    /// page) to see `list-servers` read past the first page; needed where pages cannot be
    /// made small (live, or a fault profile without [paging]).
    #[arg(long, value_name = "N")]
    paging_servers: Option<usize>,
    /// The run's id, in its idempotency keys and its servers' run label (1 to 16
    /// lowercase letters and digits; default: a random one). Unique per run at a vendor.
    #[arg(long, value_parser = provisioner_conformance::options::parse_run_id)]
    run_id: Option<String>,
    /// Output on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The plugin's own log lines and the runtime's warnings, quietly: the table is the
    // output.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let manifest_vendor = provisioner_host::manifest::Manifest::load(&args.manifest)
        .map(|m| m.vendor)
        .unwrap_or_default();
    let target = match (args.vendor_sim, args.fault_proxy) {
        (Some(url), _) => Target::Simulator {
            url,
            vendor: args.sim_vendor.unwrap_or(manifest_vendor),
        },
        (None, Some(profile)) => Target::FaultProxy {
            profile,
            base_url_key: args.base_url_key,
        },
        (None, None) => Target::Live,
    };
    let options = KitOptions {
        region: args.region,
        size: args.size,
        image: args.image,
        suites: if args.suite.is_empty() {
            Suite::ALL.to_vec()
        } else {
            args.suite
        },
        boot_timeout: Duration::from_secs(args.boot_timeout_secs),
        retry_budget: Duration::from_secs(args.retry_secs),
        paging_servers: args.paging_servers,
        run_id: args.run_id,
        ..KitOptions::new(args.plugin, args.manifest, target)
    };
    let terminal = std::io::stderr().is_terminal();
    let mut step = 0;
    let mut progress = |name: &str| {
        step += 1;
        let mut err = std::io::stderr();
        if terminal {
            let _ = write!(err, "\r\x1b[2K[{step:>2}] {name}");
        } else {
            let _ = writeln!(err, "[{step:>2}] {name}");
        }
        let _ = err.flush();
    };
    let report = provisioner_conformance::run(options, &mut progress).await;
    if terminal {
        eprint!("\r\x1b[2K");
    }
    match args.format {
        Format::Table => print!("{}", report.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.json())?),
    }
    // The leftovers cost money at a real vendor: say so where a person looks, whatever the
    // format.
    if !report.leftovers.is_empty() {
        eprint!("{}", report.leftover_notice());
    }
    if let Some(path) = args.junit {
        std::fs::write(&path, report.junit()?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    std::process::exit(if report.passed() { 0 } else { 1 });
}
