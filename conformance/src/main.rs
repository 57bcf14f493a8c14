//! `provisioner-conformance <plugin.wasm> --manifest <file> (--vendor-sim <url> | --live)`:
//! runs the conformance suites against a plugin and prints a table (or JSON), optionally
//! JUnit XML; exits 1 when a check failed, 2 on bad arguments.

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
    #[arg(long, conflicts_with = "live", required_unless_present = "live")]
    vendor_sim: Option<String>,
    /// Which of the simulator's vendors the plugin talks to (default: the manifest's).
    #[arg(long, requires = "vendor_sim")]
    sim_vendor: Option<String>,
    /// Run against the real vendor: servers are made and deleted (costs money); no faults.
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
    /// Seconds a server may take to run, and to be gone after its delete.
    #[arg(long, default_value_t = 300)]
    boot_timeout_secs: u64,
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
    let target = match args.vendor_sim {
        Some(url) => Target::Simulator {
            url,
            vendor: args.sim_vendor.unwrap_or(manifest_vendor),
        },
        None => Target::Live,
    };
    let options = KitOptions {
        component: args.plugin,
        manifest: args.manifest,
        target,
        region: args.region,
        size: args.size,
        image: args.image,
        suites: if args.suite.is_empty() {
            Suite::ALL.to_vec()
        } else {
            args.suite
        },
        boot_timeout: Duration::from_secs(args.boot_timeout_secs),
        secrets: None,
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
    if let Some(path) = args.junit {
        std::fs::write(&path, report.junit()?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    std::process::exit(if report.passed() { 0 } else { 1 });
}
