//! Slow vendors in flight: one host, a simulator whose servers take `--boot-secs` to boot,
//! and `--orders` creations kept in flight (spread over the three vendors).
//!
//! The run has three phases:
//! 1. **ramp**: post `--orders` orders (with `--post-concurrency` requests at a time);
//! 2. **hold**: keep that many orders outstanding (a new order for every server that came
//!    up at the vendor) while the host holds them; after one boot time of warm-up, the
//!    orders that become `active` during `--hold-secs` give the throughput, beside the
//!    ideal `orders / boot time`, and their mean time from POST to `active`;
//! 3. **drain**: stop ordering and wait until every accepted order is `active`.
//!
//! Throughout, it samples how many servers boot at once at the vendor (the creations in
//! flight), the host's resident memory, CPU and threads. The host connects with a 5 s
//! AMQP heartbeat, so a runtime too busy to send heartbeats would lose its connection:
//! the summary counts the host's broker reconnects and its `runtime stalled` warnings
//! (timers more than a second late).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use provisioner_tests::{AMQP_URL, Stack, StackOptions, VENDORS};

use provisioner_bench::probe::{self, ProcessSample};
use provisioner_bench::report::{Progress, Summary, Target};

use crate::load::Orderer;

/// The in-flight benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Orders kept in flight.
    #[arg(long, default_value_t = 10_000)]
    orders: usize,
    /// Seconds a simulated server takes to boot.
    #[arg(long, default_value_t = 30)]
    boot_secs: u64,
    /// Seconds of steady state over which throughput is measured.
    #[arg(long, default_value_t = 60)]
    hold_secs: u64,
    /// POST requests in flight at once while ordering.
    #[arg(long, default_value_t = 64)]
    post_concurrency: usize,
}

/// The AMQP heartbeat the host runs with here (RabbitMQ's default is 60 s).
const HEARTBEAT_SECS: u64 = 5;

/// What the simulator says about all vendors together.
#[derive(Debug, Clone, Copy, Default)]
struct VendorTotals {
    booting: u64,
    live: u64,
    created: u64,
    duplicates: u64,
}

impl VendorTotals {
    /// Servers that finished booting.
    fn running(&self) -> u64 {
        self.live - self.booting
    }
}

async fn vendor_totals(stack: &Stack) -> anyhow::Result<VendorTotals> {
    let mut totals = VendorTotals::default();
    for fixture in VENDORS {
        let stats = stack.sim_stats_of(fixture.vendor).await?;
        let count = |key: &str| stats[key].as_u64().unwrap_or(0);
        totals.booting += count("booting");
        totals.live += count("live");
        totals.created += count("created_total");
        totals.duplicates += stats["duplicates"]
            .as_object()
            .map_or(0, |duplicates| duplicates.len() as u64);
    }
    Ok(totals)
}

/// When each `active` order was accepted and when it became active.
async fn active_orders(stack: &Stack) -> anyhow::Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let mut times = Vec::new();
    for order in stack.list_all_orders("status=active").await? {
        let at = |key: &str| -> anyhow::Result<DateTime<Utc>> {
            let text = order[key].as_str().context("an order without timestamps")?;
            Ok(text.parse()?)
        };
        times.push((at("created_at")?, at("updated_at")?));
    }
    Ok(times)
}

/// What the host's log says about its connection and its runtime.
struct HostHealth {
    reconnects: u64,
    stalls: u64,
    worst_stall_ms: u64,
}

fn host_health(log: &str) -> HostHealth {
    let connects = log.matches("connected to RabbitMQ").count() as u64;
    let stall_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("runtime stalled"))
        .collect();
    let worst_stall_ms = stall_lines
        .iter()
        .filter_map(|line| {
            let after = line.split("late_ms=").nth(1)?;
            after
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    HostHealth {
        reconnects: connects.saturating_sub(1),
        stalls: stall_lines.len() as u64,
        worst_stall_ms,
    }
}

/// Runs the benchmark.
pub async fn run(args: Args, profile: &'static str) -> anyhow::Result<Summary> {
    let boot = Duration::from_secs(args.boot_secs);
    let max_in_flight = u16::try_from(args.orders.max(1)).unwrap_or(u16::MAX);
    let stack = Stack::start(StackOptions {
        boot_delay: boot,
        poll: Duration::from_millis(500),
        poll_max: Some(Duration::from_secs(5)),
        max_in_flight,
        profile,
        host_env: vec![(
            "AMQP_URL".into(),
            format!("{AMQP_URL}?heartbeat={HEARTBEAT_SECS}"),
        )],
        ..StackOptions::default()
    })
    .await?;
    let outcome = measure(&stack, &args, boot).await;
    if outcome.is_ok() {
        stack.cleanup().await;
    }
    outcome
}

/// What the ramp, the hold and the drain saw of the vendors and the host.
struct Observed {
    /// Most servers booting at the vendor at once.
    peak_booting: u64,
    /// Most host threads at once (ramp and hold).
    peak_threads: u64,
    /// The host's latest sample (its peak memory and CPU so far).
    host: ProcessSample,
    /// When the hold opened and closed.
    window: (DateTime<Utc>, DateTime<Utc>),
    /// Servers booting at the vendor at each sample during the hold.
    booting_in_window: Vec<u64>,
}

/// The processes whose CPU time the run reports.
struct Pids {
    host: u32,
    api: u32,
    sim: u32,
}

impl Pids {
    fn of(stack: &Stack) -> anyhow::Result<Self> {
        Ok(Self {
            host: stack.host_pid().context("the host is not running")?,
            api: stack.api_pid().context("order-api is not running")?,
            sim: stack.sim_pid().context("the simulator is not running")?,
        })
    }
}

/// A run in progress: its stack and settings, the host it samples, its clock and progress
/// line.
struct Run<'a> {
    stack: &'a Stack,
    args: &'a Args,
    boot: Duration,
    host_pid: u32,
    started: Instant,
    progress: Progress,
}

/// What the summary is made of.
struct Outcome {
    observed: Observed,
    accepted: u64,
    refused: usize,
    /// When each order active at the end was accepted and became active.
    active: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    health: HostHealth,
    api_cpu: f64,
    sim_cpu: f64,
    broker_cpu: Option<f64>,
}

async fn measure(stack: &Stack, args: &Args, boot: Duration) -> anyhow::Result<Summary> {
    let pids = Pids::of(stack)?;
    let broker_cpu_before = probe::broker_cpu_secs();
    let mut run = Run {
        stack,
        args,
        boot,
        host_pid: pids.host,
        progress: Progress::new(),
        started: Instant::now(),
    };
    let orderer = Orderer::start(stack, args.post_concurrency, args.orders);
    let mut observed = run.ramp_and_hold(&orderer).await?;
    let (accepted, refused) = orderer.stop().await;
    let accepted = accepted as u64;
    let active = run.drain(accepted, &mut observed).await?;
    run.progress.finish();
    one_server_per_order(stack, accepted).await?;
    let cpu_of = |pid| probe::sample(pid).map_or(0.0, |sample| sample.cpu_secs);
    let outcome = Outcome {
        observed,
        accepted,
        refused,
        active,
        health: host_health(&stack.host_log()),
        api_cpu: cpu_of(pids.api),
        sim_cpu: cpu_of(pids.sim),
        broker_cpu: probe::broker_cpu_secs()
            .zip(broker_cpu_before)
            .map(|(after, before)| after - before),
    };
    Ok(summary(args, boot, run.started, &outcome))
}

impl Run<'_> {
    /// Ramp and hold: orders until `--orders` are posted, then keeps that many outstanding
    /// through a warm-up of one boot time and the hold; what it saw.
    async fn ramp_and_hold(&mut self, orderer: &Orderer) -> anyhow::Result<Observed> {
        let (stack, args) = (self.stack, self.args);
        let mut peak_booting = 0u64;
        let mut peak_threads = 0u64;
        let mut host = ProcessSample::default();
        let mut ramp_done: Option<Instant> = None;
        let mut window: Option<Instant> = None;
        let mut window_wall: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
        let mut booting_in_window: Vec<u64> = Vec::new();
        let mut opened_at: Option<DateTime<Utc>> = None;
        let warm_up = self.boot + Duration::from_secs(5);
        let hold = Duration::from_secs(args.hold_secs);
        while window_wall.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let totals = vendor_totals(stack).await?;
            host = probe::sample(self.host_pid).context("the host exited")?;
            peak_booting = peak_booting.max(totals.booting);
            peak_threads = peak_threads.max(host.threads);
            let posted = orderer.posted();
            if ramp_done.is_none() && posted >= args.orders {
                ramp_done = Some(Instant::now());
            }
            // Keep `orders` outstanding: one new order per server that came up.
            orderer.set_target(args.orders + totals.running() as usize);
            let phase = match (ramp_done, window) {
                (None, _) => "ramp",
                (Some(done), None) if done.elapsed() < warm_up => "warm-up",
                (Some(_), None) => {
                    window = Some(Instant::now());
                    opened_at = Some(Utc::now());
                    "hold"
                }
                (Some(_), Some(opened)) => {
                    booting_in_window.push(totals.booting);
                    if opened.elapsed() >= hold {
                        window_wall = opened_at.map(|from| (from, Utc::now()));
                    }
                    "hold"
                }
            };
            self.progress.update(&format!(
                "[{:>4}s] {phase}: posted {posted} · booting at the vendor {} (peak {peak_booting}) · running {} · host RSS {:.0} MiB, {} threads",
                self.started.elapsed().as_secs(),
                totals.booting,
                totals.running(),
                host.rss_mib,
                host.threads,
            ));
            if self.started.elapsed() > warm_up + hold + Duration::from_secs(600) {
                bail!(
                    "the benchmark did not reach its hold phase\n{}",
                    stack.logs()
                );
            }
        }
        Ok(Observed {
            peak_booting,
            peak_threads,
            host,
            window: window_wall.context("no hold window")?,
            booting_in_window,
        })
    }

    /// Drain: waits until every one of the `accepted` orders is active (still sampling
    /// the host and the vendors into `observed`); when each was accepted and became active.
    async fn drain(
        &mut self,
        accepted: u64,
        observed: &mut Observed,
    ) -> anyhow::Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
        let stack = self.stack;
        let drain_deadline = Instant::now() + self.boot + Duration::from_secs(180);
        loop {
            let totals = vendor_totals(stack).await?;
            if let Some(sample) = probe::sample(self.host_pid) {
                observed.host = sample;
            }
            observed.peak_booting = observed.peak_booting.max(totals.booting);
            self.progress.update(&format!(
                "[{:>4}s] drain: accepted {accepted} · made {} · booting {}",
                self.started.elapsed().as_secs(),
                totals.created,
                totals.booting
            ));
            if totals.created >= accepted && totals.booting == 0 {
                let active = active_orders(stack).await?;
                if active.len() as u64 >= accepted {
                    return Ok(active);
                }
            }
            if Instant::now() > drain_deadline {
                let active = active_orders(stack).await?.len();
                bail!(
                    "only {active} of {accepted} accepted orders became active\n{}",
                    stack.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }
}

/// Fails unless the vendors made exactly one server for each of the `accepted` orders.
async fn one_server_per_order(stack: &Stack, accepted: u64) -> anyhow::Result<()> {
    let totals = vendor_totals(stack).await?;
    if totals.duplicates > 0 || totals.created != accepted {
        bail!(
            "{} servers made for {accepted} orders ({} orders with more than one)",
            totals.created,
            totals.duplicates
        );
    }
    Ok(())
}

/// The orders that became active during the hold `window`: how many per second, and the
/// mean time each took from POST to active (seconds).
fn hold_throughput(
    active: &[(DateTime<Utc>, DateTime<Utc>)],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> (f64, f64) {
    let finished: Vec<f64> = active
        .iter()
        .filter(|(_, done)| *done >= from && *done < to)
        .map(|(accepted, done)| (*done - *accepted).num_milliseconds() as f64 / 1000.0)
        .collect();
    let window_secs = (to - from).num_milliseconds() as f64 / 1000.0;
    let throughput = finished.len() as f64 / window_secs;
    let mean_time = finished.iter().sum::<f64>() / finished.len().max(1) as f64;
    (throughput, mean_time)
}

/// The run's settings and figures.
fn summary(args: &Args, boot: Duration, started: Instant, outcome: &Outcome) -> Summary {
    let mut summary = Summary::new("in-flight");
    summary.setting("orders", args.orders as u64);
    summary.setting("boot_secs", args.boot_secs);
    summary.setting("hold_secs", args.hold_secs);
    summary.setting("heartbeat_secs", HEARTBEAT_SECS);
    in_flight_figures(&mut summary, args, &outcome.observed);
    throughput_figures(&mut summary, args, boot, outcome);
    cpu_figures(&mut summary, outcome);
    order_and_health_figures(&mut summary, started, outcome);
    summary
}

/// How many creations were in flight at once, and what the host used for it.
fn in_flight_figures(summary: &mut Summary, args: &Args, observed: &Observed) {
    let host = &observed.host;
    let booting_in_window = &observed.booting_in_window;
    let mean_booting =
        booting_in_window.iter().sum::<u64>() as f64 / booting_in_window.len().max(1) as f64;
    summary.figure(
        "peak_in_flight",
        "creations in flight at once (peak booting at the vendor)",
        observed.peak_booting as f64,
        "",
        Some(Target::AtLeast(args.orders as f64)),
    );
    summary.figure(
        "host_peak_rss_mib",
        "host peak resident memory",
        host.peak_rss_mib,
        "MiB",
        Some(Target::AtMost(1024.0)),
    );
    summary.figure(
        "host_peak_threads",
        "host peak threads",
        observed.peak_threads as f64,
        "",
        None,
    );
    summary.figure(
        "mean_booting_in_hold",
        "mean creations booting at the vendor during the hold",
        mean_booting.round(),
        "",
        None,
    );
}

/// Orders becoming active during the hold, beside the ideal, and how long each took.
fn throughput_figures(summary: &mut Summary, args: &Args, boot: Duration, outcome: &Outcome) {
    let (throughput, mean_time) = hold_throughput(&outcome.active, outcome.observed.window);
    let ideal = args.orders as f64 / boot.as_secs_f64();
    summary.figure(
        "throughput",
        "orders becoming active per second during the hold",
        throughput,
        "/s",
        None,
    );
    summary.figure(
        "ideal_throughput",
        "ideal: orders in flight / boot time",
        ideal,
        "/s",
        None,
    );
    summary.figure(
        "throughput_ratio",
        "throughput / ideal",
        throughput / ideal,
        "",
        Some(Target::AtLeast(0.9)),
    );
    summary.figure(
        "mean_order_secs",
        "mean time from POST to active (hold)",
        mean_time,
        "s",
        None,
    );
    summary.figure(
        "overhead_secs",
        "of which not booting (queues, calls, poll lag)",
        mean_time - boot.as_secs_f64(),
        "s",
        None,
    );
}

/// The CPU time each process spent over the whole run.
fn cpu_figures(summary: &mut Summary, outcome: &Outcome) {
    let &Outcome {
        ref observed,
        accepted,
        api_cpu,
        sim_cpu,
        broker_cpu,
        ..
    } = outcome;
    let host = &observed.host;
    summary.figure(
        "host_cpu_secs",
        "host CPU time, whole run",
        host.cpu_secs,
        "s",
        None,
    );
    summary.figure(
        "host_cpu_per_order_ms",
        "host CPU per order",
        host.cpu_secs * 1000.0 / accepted.max(1) as f64,
        "ms",
        None,
    );
    summary.figure(
        "api_cpu_secs",
        "order-api CPU time, whole run",
        api_cpu,
        "s",
        None,
    );
    summary.figure(
        "sim_cpu_secs",
        "vendor-sim CPU time, whole run",
        sim_cpu,
        "s",
        None,
    );
    if let Some(broker_cpu) = broker_cpu {
        summary.figure(
            "broker_cpu_secs",
            "RabbitMQ CPU time, whole run",
            broker_cpu,
            "s",
            None,
        );
    }
}

/// The orders' ends, the host's connection and runtime health, and the run time.
fn order_and_health_figures(summary: &mut Summary, started: Instant, outcome: &Outcome) {
    let &Outcome {
        accepted,
        refused,
        ref active,
        ref health,
        ..
    } = outcome;
    summary.figure("accepted", "orders accepted", accepted as f64, "", None);
    summary.figure(
        "active",
        "orders active at the end",
        active.len() as f64,
        "",
        None,
    );
    summary.figure(
        "refused",
        "orders refused or failed to post",
        refused as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    summary.figure(
        "reconnects",
        "host broker reconnects (missed heartbeats)",
        health.reconnects as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    summary.figure(
        "stalls",
        "host runtime stalls over 1 s",
        health.stalls as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    summary.figure(
        "worst_stall_ms",
        "host worst stall",
        health.worst_stall_ms as f64,
        "ms",
        None,
    );
    summary.figure(
        "elapsed_secs",
        "run time",
        started.elapsed().as_secs_f64(),
        "s",
        None,
    );
}
