//! `chaos`: proves that no order is lost and no server made twice while processes and the
//! broker fail. It runs the real stack (order-api, two hosts, vendor-sim answering some
//! requests with 429 and 503, this machine's RabbitMQ) and, while posting `--orders`
//! orders over the three vendors:
//! - SIGKILLs a random host at random moments (`--host-kills`, including while servers are
//!   being made and not yet acknowledged) and starts it again;
//! - SIGKILLs and restarts order-api (`--api-restarts`);
//! - stops and starts RabbitMQ's application (`--broker-restarts`, `rabbitmqctl`, so only
//!   on a machine whose broker you may stop).
//!
//! With `--cluster` it runs on the three-node cluster of `scripts/rabbitmq-cluster.sh`
//! (started if it is not running; order-api given the nodes from node 1, the hosts from node
//! 2) instead, and the broker faults are the cluster's:
//! - kill -9 of a node's Erlang VM (`--node-kills`), in turn the node order-api is on, the
//!   node the first host is on, and the node leading `provision.results`; it is started
//!   again `--node-down-secs` later and rejoins before the next fault;
//! - a rolling restart (`--rolling-restarts`): each node stopped and started in turn.
//!
//! The vendors' 429s and 503s are re-armed after every fault and disarmed when the schedule
//! ends: the drain measures recovery, and the few requests of a quiet system (a failed
//! order's clean-up) do not absorb a vendor's whole stock of armed faults.
//!
//! With `--placement-every N`, every Nth order gives a placement (Hetzner's hel1, sold out
//! for the run, then nbg1): its server fails for capacity at hel1, moves once the clean-up
//! there answered, and must end active at nbg1; nothing may be left at hel1 (an orphan,
//! counted with the rest). `--move-kills K` aims K host kills at moves: the moment the count of
//! moves (`provisioner_placement_moves`) goes up, every host is SIGKILLed and started again,
//! so the clean-up at hel1 or the create at nbg1 that the move set going dies in a host.
//!
//! Then it waits for quiet (every accepted order `active` or `failed`, and the clean-ups
//! done: no server at the vendor that no active order owns) and reports: accepted, active,
//! failed (by cause), lost (accepted but unknown to order-api), stuck (not finished by the
//! drain timeout), duplicate servers
//! at the vendor, orphans (servers no active order owns, counted at the simulator and by
//! the system's own orphan sweep through the plugins), the tenant's usage as its quota check
//! sees it against its orders counted (the tenant has a quota far above what it orders, so
//! every order is checked and none refused), the messages dead-lettered on the way (as
//! order-api recorded them), and the time to drain. It exits 1 unless lost, stuck,
//! duplicates, both orphan counts, the miscounted usage and the dead letters are all 0. `scripts/chaos.sh` builds and
//! runs it; docs/testing.md has a section on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use provisioner_api_client::ApiClient;
use provisioner_bench::report::{Progress, Summary, Target};
use provisioner_bench::{Build, CheckAt};
use provisioner_tests::cluster::{Cluster, NODES};
use provisioner_tests::{Stack, StackOptions, VENDORS};
use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};

/// Chaos test of the whole stack (see the module docs and docs/testing.md).
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Args {
    /// Orders to post, spread over the three vendors.
    #[arg(long, default_value_t = 2_000)]
    orders: usize,
    /// Orders posted per second.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Times a host is SIGKILLed (at random moments while orders are posted).
    #[arg(long, default_value_t = 12)]
    host_kills: usize,
    /// Times order-api is SIGKILLed and restarted.
    #[arg(long, default_value_t = 2)]
    api_restarts: usize,
    /// Times RabbitMQ's application is stopped and started (default 1; not with
    /// `--cluster`).
    #[arg(long)]
    broker_restarts: Option<usize>,
    /// Run on the three-node cluster of `scripts/rabbitmq-cluster.sh`.
    #[arg(long)]
    cluster: bool,
    /// Times a cluster node is killed (kill -9) and started again (`--cluster`).
    #[arg(long, default_value_t = 0, requires = "cluster")]
    node_kills: usize,
    /// Seconds a killed node stays down.
    #[arg(long, default_value_t = 3, requires = "cluster")]
    node_down_secs: u64,
    /// Rolling restarts of the whole cluster, one node after another (`--cluster`).
    #[arg(long, default_value_t = 0, requires = "cluster")]
    rolling_restarts: usize,
    /// Where order-api checks new orders with the vendor's plugin: `order-api` itself (its
    /// `VALIDATE_PLUGINS_DIR`, as deployed) or a `host` over RabbitMQ.
    #[arg(long, value_enum, default_value_t = CheckAt::OrderApi)]
    check_at: CheckAt,
    /// Seconds a simulated server takes to boot.
    #[arg(long, default_value_t = 2)]
    boot_secs: u64,
    /// Seconds to wait for quiet after the last fault before counting stuck orders.
    #[arg(long, default_value_t = 300)]
    drain_timeout_secs: u64,
    /// Which build runs (`release`, or `debug` next to the tests).
    #[arg(long, value_enum, default_value_t = Build::Release)]
    profile: Build,
    /// Every Nth order is an order with a placement: Hetzner's hel1, sold out for the whole
    /// run (`POST /_sim/capacity`), then nbg1; each must move and end at nbg1 with nothing
    /// left at hel1 while hosts die mid-move. 0: none.
    #[arg(long, default_value_t = 0)]
    placement_every: usize,
    /// Times every host is SIGKILLed the moment a move is seen (`--placement-every`), on top
    /// of `--host-kills`.
    #[arg(long, default_value_t = 0)]
    move_kills: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// One thing the chaos schedule does.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillHost,
    RestartApi,
    RestartBroker,
    KillNode,
    RollingRestart,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = args.profile.profile();
    anyhow::ensure!(
        !(args.cluster && args.broker_restarts.is_some_and(|n| n > 0)),
        "--broker-restarts stops this machine's broker; on --cluster use --node-kills and --rolling-restarts"
    );
    anyhow::ensure!(
        args.move_kills == 0 || args.placement_every > 0,
        "--move-kills aims at moves: give --placement-every too"
    );
    let cluster = match args.cluster {
        true => Some(Cluster::hold().await?),
        false => None,
    };
    let mut api_env = vec![
        ("WATCHDOG_AFTER_SECS".into(), "60".into()),
        ("WATCHDOG_INTERVAL_SECS".into(), "5".into()),
        // One sweep, after the drain (below).
        ("ORPHAN_SWEEP_INTERVAL_SECS".into(), "0".into()),
    ];
    if args.cluster {
        api_env.push(("AMQP_URL".into(), Cluster::urls_from(1)));
    }
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(args.boot_secs),
        poll: Duration::from_millis(250),
        poll_max: Some(Duration::from_secs(1)),
        hosts: 2,
        exclusive_broker: args.broker_restarts() > 0,
        amqp_url: args.cluster.then(|| Cluster::urls_from(2)),
        profile,
        host_env: vec![
            ("RETRY_BASE_MS".into(), "250".into()),
            ("RETRY_MAX_ATTEMPTS".into(), "10".into()),
            ("RETRY_MAX_TOTAL_SECS".into(), "300".into()),
        ],
        api_env,
        api_checks_with_plugins: args.check_at.at_order_api(),
        ..StackOptions::default()
    })
    .await?;
    let outcome = run(&mut stack, cluster.as_ref(), &args).await;
    match outcome {
        Ok((summary, passed)) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary.json())?);
            } else {
                print!("{}", summary.table());
            }
            if passed {
                stack.cleanup().await;
                Ok(())
            } else {
                anyhow::bail!("chaos run FAILED: something was lost, stuck, doubled or orphaned")
            }
        }
        Err(error) => Err(error),
    }
}

impl Args {
    /// Broker restarts asked for: 1 by default, none on a cluster.
    fn broker_restarts(&self) -> usize {
        self.broker_restarts
            .unwrap_or(if self.cluster { 0 } else { 1 })
    }
}

async fn run(
    stack: &mut Stack,
    cluster: Option<&Cluster>,
    args: &Args,
) -> anyhow::Result<(Summary, bool)> {
    let started = Instant::now();
    let progress = Progress::new();
    let posting = Duration::from_secs_f64(args.orders as f64 / args.rate.max(0.1));
    let mut rng = rand::rng();
    let schedule = fault_schedule(args, posting, &mut rng);
    prepare_vendors(stack, args).await?;
    let poster = tokio::spawn(post_orders(
        stack.api(),
        args.orders,
        args.rate,
        args.placement_every,
    ));
    let mut chaos = Chaos {
        stack,
        cluster,
        args,
        started,
        progress,
        done: BTreeMap::new(),
        move_killer: MoveKiller::new(args.move_kills),
    };
    for (when, fault) in schedule {
        chaos.wait_until(when).await?;
        chaos.inflict(fault, &mut rng).await?;
        arm_vendor_faults(chaos.stack).await.ok();
    }
    let (accepted, unsure) = poster.await.context("the poster panicked")?;
    let chaos_over = Instant::now();
    chaos.stack.clear_faults().await?;
    chaos.drain(&accepted, chaos_over).await?;
    let drain_secs = chaos_over.elapsed().as_secs_f64();
    let orders = all_orders(chaos.stack, true).await?;
    chaos.progress.finish();

    let findings = Findings::of(chaos.stack, args, &accepted, &orders, &chaos.done).await?;
    let passed = findings.passed();
    let summary = summary(
        args,
        cluster,
        &chaos.done,
        (accepted.len(), unsure, drain_secs),
        &findings,
        passed,
    );
    if !passed {
        eprintln!("logs of the failed run:\n{}", chaos.stack.logs());
    }
    Ok((summary, passed))
}

/// The schedule: every fault asked for, at a random moment while orders are posted (over
/// `posting`), in time order.
fn fault_schedule(
    args: &Args,
    posting: Duration,
    rng: &mut rand::rngs::ThreadRng,
) -> Vec<(Duration, Fault)> {
    let mut schedule: Vec<(Duration, Fault)> = Vec::new();
    let at = |rng: &mut rand::rngs::ThreadRng| posting.mul_f64(rng.random_range(0.05..0.95));
    schedule.extend((0..args.host_kills).map(|_| (at(rng), Fault::KillHost)));
    schedule.extend((0..args.api_restarts).map(|_| (at(rng), Fault::RestartApi)));
    schedule.extend((0..args.broker_restarts()).map(|_| (at(rng), Fault::RestartBroker)));
    schedule.extend((0..args.node_kills).map(|_| (at(rng), Fault::KillNode)));
    schedule.extend((0..args.rolling_restarts).map(|_| (at(rng), Fault::RollingRestart)));
    schedule.sort_by_key(|(at, _)| *at);
    schedule
}

/// Before the first order: the vendors' faults armed, the tenant's quota set far above
/// what it orders, and (with `--placement-every`) Hetzner's hel1 sold out.
async fn prepare_vendors(stack: &Stack, args: &Args) -> anyhow::Result<()> {
    arm_vendor_faults(stack).await?;
    // A quota no order reaches: every order is checked against it (the tenant's lock, its
    // usage folded and read) while processes die, and its usage must end equal to its orders.
    set_quota_above(stack, args.orders as u64 * 10).await?;
    if args.placement_every > 0 {
        stack
            .http
            .post(format!("{}/_sim/capacity", stack.sim_url))
            .json(&json!({"vendor": "hetzner", "region": "hel1", "available": false}))
            .send()
            .await?
            .error_for_status()
            .context("selling out Hetzner's hel1")?;
    }
    Ok(())
}

/// A chaos run under way: the stack it breaks, the faults done so far (by kind) and the
/// killer aimed at moves.
struct Chaos<'a> {
    stack: &'a mut Stack,
    cluster: Option<&'a Cluster>,
    args: &'a Args,
    started: Instant,
    progress: Progress,
    done: BTreeMap<&'static str, u64>,
    move_killer: MoveKiller,
}

impl Chaos<'_> {
    /// Waits until `when` after the start, watching for moves meanwhile.
    async fn wait_until(&mut self, when: Duration) -> anyhow::Result<()> {
        while let Some(wait) = when.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait.min(MoveKiller::EVERY)).await;
            self.move_killer.watch(self.stack, &mut self.done).await?;
        }
        Ok(())
    }

    /// Shows a step on the progress line, with the seconds since the start.
    fn show(&mut self, what: &str) {
        let line = format!("[{:>4}s] {what}", self.started.elapsed().as_secs());
        self.progress.update(&line);
    }

    /// Does one fault of the schedule, and counts it in `done`.
    async fn inflict(
        &mut self,
        fault: Fault,
        rng: &mut rand::rngs::ThreadRng,
    ) -> anyhow::Result<()> {
        self.show(&format!("{fault:?} (done so far: {:?})", self.done));
        let stack = &mut *self.stack;
        let kind = match fault {
            Fault::KillHost => {
                let index = rng.random_range(0..stack.host_count());
                stack.kill_host_at(index).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
                stack.start_host_at(index)?;
                "host_kills"
            }
            Fault::RestartApi => {
                stack.kill_api().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                stack.start_api()?;
                "api_restarts"
            }
            Fault::RestartBroker => {
                let outage = stack.stop_broker().await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                outage.end().await?;
                "broker_restarts"
            }
            Fault::KillNode => {
                let cluster = self.cluster.context("node kills need --cluster")?;
                let kills_so_far = self.done.get("node_kills").copied().unwrap_or(0);
                let node = node_to_kill(self.stack, cluster, kills_so_far).await?;
                self.show(&format!("killing node {node}"));
                cluster.kill(node).await?;
                tokio::time::sleep(Duration::from_secs(self.args.node_down_secs)).await;
                cluster.revive(node).await?;
                "node_kills"
            }
            Fault::RollingRestart => {
                let cluster = self.cluster.context("rolling restarts need --cluster")?;
                for node in NODES {
                    self.show(&format!("rolling restart: node {node}"));
                    cluster.restart(node).await?;
                }
                "rolling_restarts"
            }
        };
        *self.done.entry(kind).or_default() += 1;
        Ok(())
    }

    /// Waits for quiet: every `accepted` order finished (active or failed) and every
    /// clean-up done (a failed order's key lookup and delete run after it failed), or the
    /// drain timeout after `chaos_over`.
    async fn drain(
        &mut self,
        accepted: &HashSet<String>,
        chaos_over: Instant,
    ) -> anyhow::Result<()> {
        let drain_deadline = chaos_over + Duration::from_secs(self.args.drain_timeout_secs);
        loop {
            let orders = all_orders(self.stack, false).await.unwrap_or_default();
            let unfinished = accepted
                .iter()
                .filter(|id| {
                    orders
                        .get(*id)
                        .is_none_or(|o| o["status"] != "active" && o["status"] != "failed")
                })
                .count();
            let cleaning = match unfinished {
                0 => orphans(self.stack, &orders).await.unwrap_or(usize::MAX),
                _ => 0,
            };
            self.show(&format!(
                "drain: {unfinished} of {} accepted orders not finished, {cleaning} servers being cleaned up",
                accepted.len()
            ));
            if (unfinished == 0 && cleaning == 0) || Instant::now() > drain_deadline {
                return Ok(());
            }
            let next_look = Instant::now() + Duration::from_secs(2);
            while Instant::now() < next_look {
                tokio::time::sleep(MoveKiller::EVERY).await;
                self.move_killer.watch(self.stack, &mut self.done).await?;
            }
        }
    }
}

/// What the run left behind, as order-api, the simulator and the orphan sweep see it.
struct Findings {
    orders_recorded: usize,
    lost: usize,
    active: usize,
    failed: usize,
    stuck: usize,
    /// Failed orders by their fault's code.
    failures: BTreeMap<String, u64>,
    redelivered: usize,
    duplicates: usize,
    orphans: usize,
    miscounted: u64,
    moved: usize,
    misplaced: usize,
    swept_orphans: usize,
    /// The sweeps that did not list their vendor, and why.
    unswept: Vec<String>,
    swept_servers: u64,
    dead_letters: usize,
    extra_orders: usize,
    unseen: usize,
    move_kills_missed: usize,
}

impl Findings {
    /// Looks at the `orders` order-api has at the end, against the `accepted` ones and the
    /// faults `done`.
    async fn of(
        stack: &Stack,
        args: &Args,
        accepted: &HashSet<String>,
        orders: &HashMap<String, Value>,
        done: &BTreeMap<&'static str, u64>,
    ) -> anyhow::Result<Self> {
        let lost = accepted
            .iter()
            .filter(|id| !orders.contains_key(*id))
            .count();
        let status = |wanted: &str| orders.values().filter(|o| o["status"] == wanted).count();
        let (active, failed) = (status("active"), status("failed"));
        let stuck = orders.len() - active - failed;
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        for order in orders.values().filter(|o| o["status"] == "failed") {
            let code = order["fault"]["code"].as_str().unwrap_or("?").to_string();
            *failures.entry(code).or_default() += 1;
        }
        let redelivered = orders
            .values()
            .filter(|o| {
                o["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["attempt"].as_u64().unwrap_or(0) >= 2)
            })
            .count();
        let duplicates = duplicate_keys(stack).await?;
        let orphans = orphans(stack, orders).await?;
        let miscounted = miscounted_usage(stack, orders).await?;
        let (moved, misplaced) = placed(orders);
        let (swept_orphans, unswept, swept_servers) = sweep(stack).await?;
        // No message was refused on the way: order-api records whatever reaches the
        // dead-letter queue (a delivery limit met under the kills, a message no program
        // could read).
        let metrics = stack.metrics().await?;
        let dead_letters =
            provisioner_tests::metric_value(&metrics, "provisioner_dead_letters_recorded")
                .context("no provisioner_dead_letters_recorded in order-api's /metrics")?
                as usize;
        Ok(Self {
            orders_recorded: orders.len(),
            lost,
            active,
            failed,
            stuck,
            failures,
            redelivered,
            duplicates,
            orphans,
            miscounted,
            moved,
            misplaced,
            swept_orphans,
            unswept,
            swept_servers,
            dead_letters,
            // Every post carries an Idempotency-Key, so a retried post is never a second
            // order.
            extra_orders: orders.len().saturating_sub(args.orders),
            // The sweep saw every active order's server (and nothing else, with no orphans).
            unseen: active.saturating_sub(swept_servers as usize),
            // Kills asked for and not made (too few moves to aim at) leave the case untested.
            move_kills_missed: args.move_kills
                - done.get("move_kills").copied().unwrap_or(0) as usize,
        })
    }

    /// Whether nothing was lost, stuck, doubled, orphaned, miscounted, misplaced or
    /// dead-lettered, and every sweep and aimed kill happened.
    fn passed(&self) -> bool {
        self.lost == 0
            && self.move_kills_missed == 0
            && self.stuck == 0
            && self.duplicates == 0
            && self.orphans == 0
            && self.swept_orphans == 0
            && self.unswept.is_empty()
            && self.unseen == 0
            && self.miscounted == 0
            && self.misplaced == 0
            && self.extra_orders == 0
            && self.dead_letters == 0
    }
}

/// The system's own view: the orphan sweep lists every vendor's servers through the
/// plugins and must find what the simulator shows (none); the vendors' faults are disarmed
/// by then, so it meets no 429 that would leave a vendor unlisted. The orphans it found,
/// the sweeps that did not list their vendor (which would make "no orphans" vacuous), and
/// the servers listed.
async fn sweep(stack: &Stack) -> anyhow::Result<(usize, Vec<String>, u64)> {
    let vendors: Vec<&str> = VENDORS.iter().map(|fixture| fixture.vendor).collect();
    let swept = stack
        .sweep_orphans_within(&vendors, Duration::from_secs(120))
        .await?;
    let swept_orphans = swept["orphans"].as_array().map_or(0, Vec::len);
    let unswept: Vec<String> = swept["sweeps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|sweep| sweep["outcome"] != "listed")
        .map(|sweep| {
            format!(
                "{}: {} ({})",
                sweep["vendor"], sweep["outcome"], sweep["detail"]
            )
        })
        .collect();
    let swept_servers: u64 = swept["sweeps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sweep| sweep["listed"].as_u64())
        .sum();
    Ok((swept_orphans, unswept, swept_servers))
}

/// The run's settings and figures: `accepted` and `unsure` posts, and the seconds from the
/// last fault to quiet, beside the `findings`.
fn summary(
    args: &Args,
    cluster: Option<&Cluster>,
    done: &BTreeMap<&'static str, u64>,
    (accepted, unsure, drain_secs): (usize, usize, f64),
    findings: &Findings,
    passed: bool,
) -> Summary {
    let mut summary = Summary::new("chaos");
    summary.setting("orders", args.orders as u64);
    summary.setting("rate", args.rate);
    summary.setting("hosts", 2);
    summary.setting(
        "broker",
        match cluster {
            Some(_) => "three-node cluster",
            None => "this machine's single node",
        },
    );
    summary.setting("boot_secs", args.boot_secs);
    summary.setting("faults_done", json!(done));
    summary.setting("failed_by_cause", json!(findings.failures));
    summary.setting("sweeps_not_listed", json!(findings.unswept));
    summary.setting("passed", passed);
    let none = None;
    let zero = Some(Target::AtMost(0.0));
    let mut counts: Vec<(&str, &str, usize, Option<Target>)> = vec![
        (
            "accepted",
            "orders accepted (202, or 200 for a retry)",
            accepted,
            none,
        ),
        (
            "unsure_posts",
            "posts whose answer was lost (order-api killed mid-request)",
            unsure,
            none,
        ),
        (
            "orders_recorded",
            "orders order-api has",
            findings.orders_recorded,
            none,
        ),
        (
            "extra_orders",
            "orders beyond those posted (retried posts made twice)",
            findings.extra_orders,
            zero,
        ),
        (
            "dead_letters",
            "messages dead-lettered",
            findings.dead_letters,
            zero,
        ),
        ("active", "active", findings.active, none),
        (
            "failed",
            "failed (causes in the settings line)",
            findings.failed,
            none,
        ),
        (
            "redelivered",
            "orders that needed a second attempt",
            findings.redelivered,
            none,
        ),
        ("lost", "lost (accepted, unknown)", findings.lost, zero),
        ("stuck", "stuck (not finished)", findings.stuck, zero),
        (
            "duplicates",
            "orders with more than one server",
            findings.duplicates,
            zero,
        ),
        (
            "orphans",
            "servers no active order owns",
            findings.orphans,
            zero,
        ),
        (
            "swept_servers",
            "servers the orphan sweep listed (plugins' list-servers)",
            findings.swept_servers as usize,
            none,
        ),
        (
            "unseen_by_sweep",
            "active orders whose server the sweep did not list",
            findings.unseen,
            zero,
        ),
        (
            "swept_orphans",
            "orphans the sweep found",
            findings.swept_orphans,
            zero,
        ),
        (
            "usage_miscounted",
            "live servers and orders in flight the quota check miscounts",
            findings.miscounted as usize,
            zero,
        ),
    ];
    if args.placement_every > 0 {
        counts.extend([
            (
                "moved",
                "orders with a placement served at their second candidate (the first sold out)",
                findings.moved,
                none,
            ),
            (
                "misplaced",
                "orders with a placement active anywhere else",
                findings.misplaced,
                zero,
            ),
            (
                "move_kills_missed",
                "host kills aimed at a move not made (no move seen to aim at)",
                findings.move_kills_missed,
                zero,
            ),
        ]);
    }
    for (key, label, count, target) in counts {
        summary.figure(key, label, count as f64, "", target);
    }
    summary.figure(
        "drain_secs",
        "seconds from the last fault to quiet",
        drain_secs,
        "s",
        None,
    );
    summary
}

/// Kills every host the moment a move of a server to its next placement candidate is seen
/// (`--move-kills`): the move's clean-up at the failed candidate, or the create at the next,
/// is then in a host that dies, with whatever it had not acknowledged.
struct MoveKiller {
    remaining: usize,
    moves_seen: f64,
}

impl MoveKiller {
    /// How often the moves are looked at.
    const EVERY: Duration = Duration::from_millis(250);

    fn new(kills: usize) -> Self {
        Self {
            remaining: kills,
            moves_seen: 0.0,
        }
    }

    /// Looks at the count of moves; if it went up, kills every host, waits a moment and
    /// starts them again (counted in `done` as `move_kills`).
    async fn watch(
        &mut self,
        stack: &mut Stack,
        done: &mut BTreeMap<&'static str, u64>,
    ) -> anyhow::Result<()> {
        if self.remaining == 0 {
            return Ok(());
        }
        // order-api may be down for a restart: look again later.
        let Ok(metrics) = stack.metrics().await else {
            return Ok(());
        };
        let moves: f64 = metrics
            .lines()
            .filter(|line| line.starts_with("provisioner_placement_moves{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if moves <= self.moves_seen {
            return Ok(());
        }
        self.moves_seen = moves;
        for index in 0..stack.host_count() {
            stack.kill_host_at(index).await;
        }
        let down = rand::rng().random_range(200..2_000);
        tokio::time::sleep(Duration::from_millis(down)).await;
        for index in 0..stack.host_count() {
            stack.start_host_at(index)?;
        }
        self.remaining -= 1;
        *done.entry("move_kills").or_default() += 1;
        Ok(())
    }
}

/// The node the `kills_so_far`-th node kill takes, in turn: the node order-api is on, the
/// node the first host is on, the node leading `provision.results` (as their logs and the
/// cluster say now).
async fn node_to_kill(
    stack: &Stack,
    cluster: &Cluster,
    kills_so_far: u64,
) -> anyhow::Result<usize> {
    match kills_so_far % 3 {
        0 => Cluster::node_in_log(&stack.api_log()).context("order-api's log names no node"),
        1 => Cluster::node_in_log(&stack.host_log()).context("the host's log names no node"),
        _ => cluster.leader(&stack.topology.results_queue()).await,
    }
}

/// Arms a few 429s and 503s at every vendor (creates and polls alike); they are used up
/// as requests meet them, so this runs again after each fault of the schedule.
async fn arm_vendor_faults(stack: &Stack) -> anyhow::Result<()> {
    for fixture in VENDORS {
        stack
            .inject_fault(json!({"vendor": fixture.vendor, "kind": "rate_limit",
                                 "retry_after_secs": 1, "count": 5}))
            .await?;
        stack
            .inject_fault(json!({"vendor": fixture.vendor, "kind": "server_error",
                                 "status": 503, "count": 5}))
            .await?;
    }
    Ok(())
}

/// Posts `count` orders at `rate` per second, each retried while order-api is down, with an
/// `Idempotency-Key` of its own, so a retry of a post whose answer was lost (order-api
/// killed after the commit) gets the same order. Returns the ids seen accepted, and how many
/// posts had no answer at all.
async fn post_orders(
    api: ApiClient,
    count: usize,
    rate: f64,
    placement_every: usize,
) -> (HashSet<String>, usize) {
    let started = Instant::now();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..count {
        let due = Duration::from_secs_f64(i as f64 / rate.max(0.1));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let api = api.clone();
        let body = match placement_every {
            every if every > 0 && i % every == every - 1 => placement_body(&format!("chaos-{i}")),
            _ => VENDORS[i % VENDORS.len()].order_body(&format!("chaos-{i}")),
        };
        let key = format!("chaos-{run}-{i}");
        posts.spawn(async move {
            let give_up = Instant::now() + Duration::from_secs(120);
            while Instant::now() < give_up {
                let answer = api
                    .request(Method::POST, "/v1/orders")
                    .header("content-type", "application/json")
                    .header("idempotency-key", &key)
                    .body(body.clone())
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match answer {
                    // 200: a retry answered with the order an earlier try made.
                    Ok(response) if [200, 202].contains(&response.status().as_u16()) => {
                        let order: Value = response.json().await.unwrap_or_default();
                        return order["id"].as_str().map(str::to_string);
                    }
                    // Down or restarting (connection refused, 503): try again shortly.
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
            None
        });
    }
    let mut accepted = HashSet::new();
    let mut unsure = 0;
    while let Some(done) = posts.join_next().await {
        match done {
            Ok(Some(id)) => {
                accepted.insert(id);
            }
            _ => unsure += 1,
        }
    }
    (accepted, unsure)
}

/// An order named `name` over Hetzner's hel1 (sold out), then nbg1.
fn placement_body(name: &str) -> String {
    let hetzner = provisioner_tests::fixture("hetzner");
    let candidate = |region: &str| json!({"vendor": "hetzner", "region": region, "size": hetzner.size, "image": hetzner.image});
    json!({"name": name, "placement": [candidate("hel1"), candidate("nbg1")]}).to_string()
}

/// Every order order-api has, by id; with its events when `with_events`.
async fn all_orders(stack: &Stack, with_events: bool) -> anyhow::Result<HashMap<String, Value>> {
    let mut orders = HashMap::new();
    for order in stack.list_all_orders("").await? {
        let Some(id) = order["id"].as_str().map(str::to_string) else {
            continue;
        };
        // The list omits events and servers; fetch the whole order when they are wanted
        // (an order with a placement: its server's key is not the order's id).
        let order = match with_events || order.get("placement").is_some() {
            true => stack.order(&id).await.unwrap_or(order),
            false => order,
        };
        orders.insert(id, order);
    }
    Ok(orders)
}

/// Gives the stack's tenant a live-server quota of `limit`.
async fn set_quota_above(stack: &Stack, limit: u64) -> anyhow::Result<()> {
    let quotas = json!({"limits": {"max_live_servers": limit}});
    ApiClient::new(&stack.api_url, Some(&stack.admin_token))?
        .set_tenant_quotas(provisioner_tests::TEST_TENANT, &quotas)
        .await
        .context("setting the tenant's quota")?;
    Ok(())
}

/// How far the usage the tenant is shown (`GET /v1/quotas`, what its quota check reads) is
/// from its `orders` counted: the difference in live servers plus in orders in flight.
async fn miscounted_usage(stack: &Stack, orders: &HashMap<String, Value>) -> anyhow::Result<u64> {
    let counted = provisioner_tests::usage_of_orders(orders.values());
    let quotas = stack.api().quotas().await.context("GET /v1/quotas")?;
    let usage = &quotas["all_vendors"]["usage"];
    let shown = (
        usage["live_servers"].as_u64().context("no live_servers")?,
        usage["orders_in_flight"]
            .as_u64()
            .context("no orders_in_flight")?,
    );
    if shown != counted {
        eprintln!("usage shown {shown:?}, counted from the orders {counted:?}");
    }
    Ok(shown.0.abs_diff(counted.0) + shown.1.abs_diff(counted.1))
}

/// Orders with more than one server at the vendor.
async fn duplicate_keys(stack: &Stack) -> anyhow::Result<usize> {
    let mut duplicates = 0;
    for fixture in VENDORS {
        let stats = stack.sim_stats_of(fixture.vendor).await?;
        duplicates += stats["duplicates"].as_object().map_or(0, |d| d.len());
    }
    Ok(duplicates)
}

/// Servers at the vendor that no active order owns (by idempotency key: an order's id, or
/// the key of one of an order's `servers`, which must be active itself).
async fn orphans(stack: &Stack, orders: &HashMap<String, Value>) -> anyhow::Result<usize> {
    let mut owned: HashSet<&str> = HashSet::new();
    for (id, order) in orders.iter().filter(|(_, o)| o["status"] == "active") {
        match order["servers"].as_array() {
            Some(servers) => owned.extend(
                servers
                    .iter()
                    .filter(|s| s["status"] == "active")
                    .filter_map(|s| s["key"].as_str()),
            ),
            None => {
                owned.insert(id);
            }
        }
    }
    let orphaned = stack
        .sim_servers()
        .await?
        .iter()
        .filter(|server| {
            server["idempotency_key"]
                .as_str()
                .is_none_or(|key| !owned.contains(key))
        })
        .count();
    Ok(orphaned)
}

/// Of the orders with a placement that are active: how many are served at their second
/// candidate (nbg1), and how many are not (hel1 was sold out all along).
fn placed(orders: &HashMap<String, Value>) -> (usize, usize) {
    let active = orders
        .values()
        .filter(|o| o.get("placement").is_some() && o["status"] == "active");
    let (mut moved, mut misplaced) = (0, 0);
    for order in active {
        match order["servers"][0]["candidate"] == 2 && order["servers"][0]["region"] == "nbg1" {
            true => moved += 1,
            false => misplaced += 1,
        }
    }
    (moved, misplaced)
}
