//! `bench`: the provisioner's benchmarks, run against the real programs, the real
//! RabbitMQ and the real plugin components (release builds). `BENCHMARKS.md` has the
//! commands, the machine and the figures; `scripts/bench.sh` builds everything first.
//!
//! Each benchmark prints a progress line on stderr while it runs and a summary at the
//! end: a table, or JSON with `--format json`.
//!
//! # Layout
//! - [`pipeline`]: orders per second from POST to `active` with a vendor that boots at
//!   once, beside a bare lapin loop of the same broker hops.
//! - [`accept`]: `POST /v1/orders` latency at fixed open-loop loads, beside a bare axum
//!   handler.
//! - [`lease_cost`]: what the create lease costs the host and the broker, beside the first
//!   lease design.
//! - [`in_flight`]: slow vendors in flight: how many creations one host holds at once,
//!   its memory, its throughput, and whether its heartbeats and timers stayed on time.
//! - [`plugin_overhead`]: what the host adds to one plugin call, beside bare wasmtime
//!   (in-process: this binary's own build is what is measured).
//! - [`create_call`]: one `create-server` of the Hetzner plugin and of the EC2 plugin
//!   (SigV4, XML) against canned vendor answers, side by side.
//! - [`recovery`]: seconds from the broker being back to both programs consuming again
//!   (stops this machine's RabbitMQ).
//! - [`failover`]: seconds from a cluster node's death to the programs on it consuming
//!   from another node (the three-node cluster of `scripts/rabbitmq-cluster.sh`).
//! - [`page_load`]: the web console's views, from navigation to drawn, in headless Chromium
//!   with 10,000 orders stored.
//! - [`load`]: the closed- and open-loop HTTP load the benchmarks put on order-api.
//! - [`stack_cpu`]: the CPU each process of the stack used in a phase (`pipeline`, `accept`).
//! - the summary, percentiles and `/proc` probes come from the crate's library (`provisioner_bench`).

mod accept;
mod create_call;
mod failover;
mod in_flight;
mod lease_cost;
mod load;
mod page_load;
mod pipeline;
mod plugin_overhead;
mod recovery;
mod stack_cpu;

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
    /// Orders per second from POST to active, beside a bare lapin loop.
    Pipeline(pipeline::Args),
    /// POST /v1/orders latency at fixed loads, beside a bare axum handler.
    Accept(accept::Args),
    /// Slow vendors: creations one host holds at once, its memory and throughput.
    InFlight(in_flight::Args),
    /// The host's cost per plugin call beside bare wasmtime.
    PluginOverhead(plugin_overhead::Args),
    /// One create call of the Hetzner plugin and of the EC2 plugin, side by side.
    CreateCall(create_call::Args),
    /// What the create lease costs the host and the broker.
    Lease(lease_cost::Args),
    /// Seconds from the broker back up to consuming again (stops the local RabbitMQ).
    Recovery(recovery::Args),
    /// Seconds from a cluster node's death to the programs on it consuming elsewhere.
    Failover(failover::Args),
    /// The web console's views, from navigation to drawn, with 10,000 orders stored.
    PageLoad(page_load::Args),
    /// The bare axum handler `accept` compares against (started by `accept` itself).
    #[command(hide = true)]
    BareAccept {
        /// The port on 127.0.0.1 to serve.
        #[arg(long)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let profile = cli.profile.profile();
    let summary = match cli.benchmark {
        Benchmark::Pipeline(args) => pipeline::run(args, profile).await?,
        Benchmark::Accept(args) => accept::run(args, profile).await?,
        Benchmark::BareAccept { port } => return accept::serve_bare(port).await,
        Benchmark::Lease(args) => lease_cost::run(args).await?,
        Benchmark::InFlight(args) => in_flight::run(args, profile).await?,
        Benchmark::PluginOverhead(args) => plugin_overhead::run(args).await?,
        Benchmark::CreateCall(args) => create_call::run(args).await?,
        Benchmark::Recovery(args) => recovery::run(args, profile).await?,
        Benchmark::Failover(args) => failover::run(args, profile).await?,
        Benchmark::PageLoad(args) => page_load::run(args, profile).await?,
    };
    match cli.format {
        Format::Table => print!("{}", summary.table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary.json())?),
    }
    Ok(())
}
