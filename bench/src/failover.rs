//! Failover: seconds from a cluster node's death (kill -9 of its Erlang VM) to the programs
//! that were on it consuming again from another node, and to an order placed at that moment
//! going `active`.
//!
//! One stack (order-api, a host with the three plugins, the simulator) on the three-node
//! cluster of `scripts/rabbitmq-cluster.sh` (started if it is not running), both programs
//! given every node in `AMQP_URL`. Each of `--kills` cycles kills the node order-api is on
//! (odd cycles) or the node the host is on (even cycles), as their logs say. The clock
//! starts at the kill and stops, for each program on that node, when its log says it
//! connected to another node and its queues have a consumer again (order-api's
//! `provision.results`, the host's `provision.requests.<vendor>`, read with passive
//! declares through a node that is up); and when an order posted at the kill (tried again
//! until order-api takes it) is `active`. The node is then started again and rejoins
//! before the next cycle.
//!
//! Target (issue 19): every program consuming again within 5 s of its node's death, in
//! the worst of at least five kills.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use provisioner_tests::cluster::{Cluster, NODES};
use provisioner_tests::{Stack, StackOptions, VENDORS};

use crate::recovery::consuming_again_at;
use provisioner_bench::report::{Progress, Summary, Target};

/// The failover benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Node kills measured (alternately the node of order-api and of the host; at least
    /// two, so each program's is).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(2..))]
    kills: u64,
}

/// Per program, seconds from the kill to consuming again; per kill, to an order `active`.
#[derive(Default)]
struct Figures {
    api: Vec<f64>,
    host: Vec<f64>,
    order: Vec<f64>,
}

/// Runs the kills and summarises.
pub async fn run(args: Args, profile: &'static str) -> anyhow::Result<Summary> {
    let cluster = Cluster::hold().await?;
    let mut progress = Progress::new();
    let stack = Stack::start(StackOptions {
        profile,
        boot_delay: Duration::from_millis(100),
        poll: Duration::from_millis(100),
        amqp_url: Some(Cluster::urls_from(1)),
        ..StackOptions::default()
    })
    .await?;
    let result = kills(&cluster, &stack, &args, &mut progress).await;
    progress.finish();
    if result.is_err() {
        eprintln!("{}", stack.logs());
    }
    stack.cleanup().await;
    let figures = result?;
    let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let mut summary = Summary::new("failover");
    summary.setting("kills", args.kills);
    summary.setting("api_failovers", figures.api.len() as u64);
    summary.setting("host_failovers", figures.host.len() as u64);
    summary.figure(
        "api_mean_secs",
        "order-api consuming again after its node died, mean",
        mean(&figures.api),
        "s",
        None,
    );
    summary.figure(
        "api_max_secs",
        "order-api consuming again after its node died, worst",
        max(&figures.api),
        "s",
        Some(Target::AtMost(5.0)),
    );
    summary.figure(
        "host_mean_secs",
        "host consuming again after its node died, mean",
        mean(&figures.host),
        "s",
        None,
    );
    summary.figure(
        "host_max_secs",
        "host consuming again after its node died, worst",
        max(&figures.host),
        "s",
        Some(Target::AtMost(5.0)),
    );
    summary.figure(
        "order_mean_secs",
        "an order posted at the kill active, mean",
        mean(&figures.order),
        "s",
        None,
    );
    summary.figure(
        "order_max_secs",
        "an order posted at the kill active, worst",
        max(&figures.order),
        "s",
        None,
    );
    Ok(summary)
}

/// How many times `log` says its program connected to RabbitMQ.
fn connections(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("connected to RabbitMQ at"))
        .count()
}

async fn kills(
    cluster: &Cluster,
    stack: &Stack,
    args: &Args,
    progress: &mut Progress,
) -> anyhow::Result<Figures> {
    let results = vec![stack.topology.results_queue()];
    let requests: Vec<String> = VENDORS
        .iter()
        .map(|fixture| stack.topology.request_queue(fixture.vendor))
        .collect();
    let mut figures = Figures::default();
    for cycle in 1..=args.kills {
        let api_node = Cluster::node_in_log(&stack.api_log()).context("order-api's node")?;
        let host_node = Cluster::node_in_log(&stack.host_log()).context("the host's node")?;
        let victim = if cycle % 2 == 1 { api_node } else { host_node };
        let survivor = NODES
            .into_iter()
            .find(|&node| node != victim)
            .context("a node to watch from")?;
        let (api_before, host_before) = (
            connections(&stack.api_log()),
            connections(&stack.host_log()),
        );
        progress.update(&format!(
            "kill {cycle} of {}: node {victim} (order-api on {api_node}, host on {host_node})",
            args.kills
        ));
        cluster.kill(victim).await?;
        let killed = Instant::now();
        let watch = async |log: fn(&Stack) -> String, before: usize, queues: &[String]| {
            consuming_elsewhere(stack, log, before, queues, survivor, killed).await
        };
        let order = async {
            let id = post_until_taken(stack, &format!("failover-{cycle}"), killed).await?;
            stack
                .wait_for_status(&id, "active", Duration::from_secs(60))
                .await?;
            anyhow::Ok(killed.elapsed().as_secs_f64())
        };
        let (api_secs, host_secs, order_secs) = tokio::try_join!(
            async {
                match api_node == victim {
                    true => watch(Stack::api_log, api_before, &results).await.map(Some),
                    false => Ok(None),
                }
            },
            async {
                match host_node == victim {
                    true => watch(Stack::host_log, host_before, &requests)
                        .await
                        .map(Some),
                    false => Ok(None),
                }
            },
            order,
        )?;
        figures.api.extend(api_secs);
        figures.host.extend(host_secs);
        figures.order.push(order_secs);
        progress.update(&format!(
            "kill {cycle} of {}: node {victim} starting again",
            args.kills
        ));
        cluster.revive(victim).await?;
        // The revived node back in every quorum queue's membership before the next kill.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(figures)
}

/// Waits (up to a minute) until the program whose log `log` reads has connected again
/// (more connections than `before`) and every queue of `queues` has a consumer, as node
/// `survivor` sees them; seconds since `since`.
async fn consuming_elsewhere(
    stack: &Stack,
    log: fn(&Stack) -> String,
    before: usize,
    queues: &[String],
    survivor: usize,
    since: Instant,
) -> anyhow::Result<f64> {
    consuming_again_at(&Cluster::url(survivor), queues, since, || {
        connections(&log(stack)) > before
    })
    .await
}

/// Posts an order until order-api takes it (202); its id.
async fn post_until_taken(stack: &Stack, name: &str, since: Instant) -> anyhow::Result<String> {
    let body = provisioner_tests::fixture("hetzner").order_body(name);
    loop {
        match stack.post_order(&body).await {
            Ok((202, _, _, order)) => {
                return order["id"]
                    .as_str()
                    .map(str::to_string)
                    .context("the answer has no id");
            }
            Ok(_) | Err(_) if since.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok((status, _, _, answer)) => bail!("order-api still answers {status}: {answer}"),
            Err(error) => return Err(error),
        }
    }
}
