//! The three-node RabbitMQ cluster of `scripts/rabbitmq-cluster.sh`, for tests and the
//! chaos run's cluster mode: started on first use (the script is idempotent), held by one
//! user at a time in this process (its users kill its nodes), and left with every node
//! running when the holder lets go, even after a failed test.

use std::sync::{Arc, LazyLock};

use anyhow::{Context, bail};
use tokio::process::Command;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::processes::{output_of_success, workspace_root};

/// The cluster's nodes, numbered as the script numbers them.
pub const NODES: [usize; 3] = [1, 2, 3];

/// One user of the cluster at a time in this process.
static CLUSTER: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));

/// The cluster, held: nodes it killed are started again when it is dropped.
pub struct Cluster {
    _held: OwnedMutexGuard<()>,
}

impl Cluster {
    /// Waits for the cluster to be free, starts whatever of it is not running (about 45 s
    /// the first time) and holds it.
    pub async fn hold() -> anyhow::Result<Self> {
        let held = CLUSTER.clone().lock_owned().await;
        script(&["start"]).await.context(
            "starting the three-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh start; \
             it needs rabbitmq-server installed, as scripts/setup.sh does)",
        )?;
        Ok(Self { _held: held })
    }

    /// Node `node`'s AMQP URL.
    pub fn url(node: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5672 + node)
    }

    /// Every node's URL, comma-separated starting with `first` (an `AMQP_URL`).
    pub fn urls_from(first: usize) -> String {
        let count = NODES.len();
        (0..count)
            .map(|step| Self::url((first - 1 + step) % count + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose AMQP port is `port`, if it is one of the cluster's.
    pub fn node_of_port(port: u16) -> Option<usize> {
        let node = usize::from(port).checked_sub(5672)?;
        NODES.contains(&node).then_some(node)
    }

    /// The node a program's log says it connected to last ("connected to RabbitMQ at
    /// amqp://guest:***@127.0.0.1:5674/…").
    pub fn node_in_log(log: &str) -> Option<usize> {
        let line = log
            .lines()
            .rev()
            .find(|line| line.contains("connected to RabbitMQ at"))?;
        let after = line.split("@127.0.0.1:").nth(1)?;
        let port: String = after.chars().take_while(char::is_ascii_digit).collect();
        Self::node_of_port(port.parse().ok()?)
    }

    /// kill -9 of node `node`'s Erlang VM.
    pub async fn kill(&self, node: usize) -> anyhow::Result<()> {
        script(&["kill", &node.to_string()]).await
    }

    /// Starts node `node` again and waits until it serves (it rejoins the cluster).
    pub async fn revive(&self, node: usize) -> anyhow::Result<()> {
        script(&["revive", &node.to_string()]).await
    }

    /// Stops node `node` gently and starts it again (one step of a rolling restart).
    pub async fn restart(&self, node: usize) -> anyhow::Result<()> {
        script(&["restart", &node.to_string()]).await
    }

    /// The node leading quorum queue `queue`.
    pub async fn leader(&self, queue: &str) -> anyhow::Result<usize> {
        let output = script_output(&["leader", queue]).await?;
        output
            .trim()
            .parse()
            .with_context(|| format!("the script named no node leading {queue}: {output}"))
    }
}

impl Cluster {
    /// How many members (replicas) quorum queue `queue` has, and the value of its
    /// `x-quorum-initial-group-size` argument (if declared with one), as node 1 (or the
    /// first running node) sees it.
    pub async fn members(&self, queue: &str) -> anyhow::Result<(usize, Option<i64>)> {
        for node in NODES {
            let Ok(output) = script_output(&[
                "ctl",
                &node.to_string(),
                "-q",
                "list_queues",
                "name",
                "members",
                "arguments",
                "--formatter",
                "json",
            ])
            .await
            else {
                continue;
            };
            let queues: serde_json::Value = serde_json::from_str(&output)
                .with_context(|| format!("rabbitmqctl list_queues said: {output}"))?;
            let found = queues
                .as_array()
                .into_iter()
                .flatten()
                .find(|entry| entry["name"] == queue)
                .with_context(|| format!("no queue {queue} on the cluster"))?;
            // Arguments as [name, type, value] triples.
            let group_size = found["arguments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|argument| argument[0] == "x-quorum-initial-group-size")
                .and_then(|argument| argument[2].as_i64());
            let members = found["members"].as_array().map_or(0, Vec::len);
            return Ok((members, group_size));
        }
        bail!("no node of the cluster answered rabbitmqctl")
    }
}

impl Drop for Cluster {
    /// Every node running again for the next user, however the holder ended.
    fn drop(&mut self) {
        let _ = std::process::Command::new(workspace_root().join("scripts/rabbitmq-cluster.sh"))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status();
    }
}

async fn script(arguments: &[&str]) -> anyhow::Result<()> {
    script_output(arguments).await.map(drop)
}

async fn script_output(arguments: &[&str]) -> anyhow::Result<String> {
    let path = workspace_root().join("scripts/rabbitmq-cluster.sh");
    output_of_success(
        Command::new(&path).args(arguments),
        &format!("scripts/rabbitmq-cluster.sh {}", arguments.join(" ")),
        &format!("running {}", path.display()),
    )
    .await
}
