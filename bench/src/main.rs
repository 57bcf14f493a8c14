//! `bench`: the provisioner's benchmarks, run against the real programs, the real
//! RabbitMQ and the real plugin components (release builds). `BENCHMARKS.md` has the
//! commands, the machine and the figures; `scripts/bench.sh` builds everything first.
//!
//! Each benchmark prints a progress line on stderr while it runs and a summary at the
//! end: a table, or JSON with `--format json`.
//!
//! # Layout
//! - [`in_flight`]: slow vendors in flight: how many creations one host holds at once,
//!   its memory, its throughput, and whether its heartbeats and timers stayed on time.
//! - [`plugin_overhead`]: what the host adds to one plugin call, beside bare wasmtime
//!   (in-process: this binary's own build is what is measured).
//! - [`recovery`]: seconds from the broker being back to both programs consuming again
//!   (stops this machine's RabbitMQ).
//! - the summary and `/proc` probes come from the crate's library (`provisioner_bench`).

mod in_flight;
mod plugin_overhead;
mod recovery;

use clap::{Parser, Subcommand, ValueEnum};
use provisioner_bench::Build;

/// Benchmarks of the provisioner (see BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(name = "bench", version, about)]
struct Cli {
    /// How the summary is printed.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    /// Which build of the programs runs (`release` for figures, `debug` for smoke runs
    /// next to the tests).
    #[arg(long, value_enum, default_value_t = Build::Release, global = true)]
    profile: Build,
    #[command(subcommand)]
    benchmark: Benchmark,
}

/// The summary's format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// A readable table.
    Table,
    /// One JSON object.
    Json,
}

#[derive(Debug, Subcommand)]
enum Benchmark {
    /// Slow vendors: creations one host holds at once, its memory and throughput.
    InFlight(in_flight::Args),
    /// The host's cost per plugin call beside bare wasmtime.
    PluginOverhead(plugin_overhead::Args),
    /// Seconds from the broker back up to consuming again (stops the local RabbitMQ).
    Recovery(recovery::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let profile = cli.profile.profile();
    let summary = match cli.benchmark {
        Benchmark::InFlight(args) => in_flight::run(args, profile).await?,
        Benchmark::PluginOverhead(args) => plugin_overhead::run(args).await?,
        Benchmark::Recovery(args) => recovery::run(args, profile).await?,
    };
    match cli.format {
        Format::Table => print!("{}", summary.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary.json())?),
    }
    Ok(())
}
