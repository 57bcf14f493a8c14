//! Broker users of their own (`scripts/rabbitmq-users.sh`): order-api's user may send
//! requests and read results but neither send results nor read requests, a host's user the
//! other way round, and a whole order runs with the two.
//!
//! Each test makes its own two users, with permissions scoped to its own name prefix, and
//! deletes them at the end.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use provisioner_contract::Topology;
use provisioner_contract::reply::reply_code;
use provisioner_tests::{
    Stack, StackOptions, delete_topology, fixture, hold_broker_shared, require_rabbitmq,
    target_dir, workspace_root,
};
use serde_json::{Value, json};

/// The broker's reply code for a refused operation.
const ACCESS_REFUSED: u16 = 403;

/// A test's order-api and host users, made by the script; deleted when dropped.
struct BrokerUsers {
    api_user: String,
    host_user: String,
    api_password: String,
    host_password: String,
    dir: PathBuf,
}

impl BrokerUsers {
    /// Runs `scripts/rabbitmq-users.sh` for `prefix`, with users named after `id` and
    /// passwords it generates.
    async fn create(prefix: &str, id: &str) -> anyhow::Result<Self> {
        let dir = target_dir().join("test-runs").join(format!("users-{id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut users = Self {
            api_user: format!("test-{id}-order-api"),
            host_user: format!("test-{id}-host"),
            api_password: String::new(),
            host_password: String::new(),
            dir,
        };
        let passwords = users.dir.join("passwords.env");
        let output =
            tokio::process::Command::new(workspace_root().join("scripts/rabbitmq-users.sh"))
                .env("AMQP_NAME_PREFIX", prefix)
                .env("ORDER_API_AMQP_USER", &users.api_user)
                .env("HOST_AMQP_USER", &users.host_user)
                .env("AMQP_PASSWORDS_FILE", &passwords)
                .env_remove("ORDER_API_AMQP_PASSWORD")
                .env_remove("HOST_AMQP_PASSWORD")
                .output()
                .await
                .context("running scripts/rabbitmq-users.sh")?;
        if !output.status.success() {
            bail!(
                "scripts/rabbitmq-users.sh failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = std::fs::read_to_string(&passwords)
            .with_context(|| format!("reading {}", passwords.display()))?;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("ORDER_API_AMQP_PASSWORD", value)) => users.api_password = value.into(),
                Some(("HOST_AMQP_PASSWORD", value)) => users.host_password = value.into(),
                _ => {}
            }
        }
        if users.api_password.is_empty() || users.host_password.is_empty() {
            bail!("the script wrote no passwords: {text}");
        }
        Ok(users)
    }

    fn api_url(&self) -> String {
        url(&self.api_user, &self.api_password)
    }

    fn host_url(&self) -> String {
        url(&self.host_user, &self.host_password)
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        for user in [&self.api_user, &self.host_user] {
            let deleted = std::process::Command::new("rabbitmqctl")
                .args(["--quiet", "delete_user", user.as_str()])
                .output();
            if !deleted.is_ok_and(|output| output.status.success()) {
                eprintln!("the test's broker user {user} stays");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url(user: &str, password: &str) -> String {
    format!("amqp://{user}:{password}@127.0.0.1:5672/%2f")
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connecting as a program's user")
}

/// Publishes one message (mandatory, confirmed) on a channel of its own: `None` when the
/// broker took it onto a queue, else the reply code the broker closed the channel with.
async fn publish(
    connection: &Connection,
    exchange: &str,
    key: &str,
) -> anyhow::Result<Option<u16>> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let sent = async {
        channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                b"{}",
                BasicProperties::default(),
            )
            .await?
            .await
    };
    match sent.await {
        Ok(Confirmation::Ack(None)) => {
            let _ = channel.close(200, "done".into()).await;
            Ok(None)
        }
        Ok(other) => bail!("publishing to {exchange:?} with {key}: {other:?}"),
        Err(error) => refusal(error),
    }
}

/// Starts consuming `queue` on a channel of its own: `None` when the broker let it, else
/// the reply code it closed the channel with.
async fn consume(connection: &Connection, queue: &str) -> anyhow::Result<Option<u16>> {
    let channel = connection.create_channel().await?;
    let consumed = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    match consumed {
        Ok(_) => {
            let _ = channel.close(200, "done".into()).await;
            Ok(None)
        }
        Err(error) => refusal(error),
    }
}

/// The broker's reply code of a channel error; any other error is the test's failure.
fn refusal(error: lapin::Error) -> anyhow::Result<Option<u16>> {
    match reply_code(&error) {
        Some(code) => Ok(Some(code)),
        None => Err(anyhow::Error::from(error).context("not a refusal by the broker")),
    }
}

/// The permissions the script gives: order-api's user cannot send results or announcements,
/// nor read creation requests; a host's user cannot send creation requests nor read results;
/// neither may reach a queue by name through the default exchange. Each may do its own part.
#[tokio::test]
async fn each_program_user_may_do_only_its_own_part() -> anyhow::Result<()> {
    let _broker = hold_broker_shared().await;
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let prefix = format!("test-{id}.");
    let topology = Topology::with_prefix(&prefix);
    let users = BrokerUsers::create(&prefix, &id).await?;
    // The topology as the programs leave it.
    let admin = require_rabbitmq().await;
    topology.declare_order_api(&admin).await?;
    topology.declare_vendor(&admin, "hetzner").await?;
    let api = connect(&users.api_url()).await?;
    let host = connect(&users.host_url()).await?;
    let (requests, results) = (topology.requests_exchange(), topology.results_exchange());
    let request_queue = topology.request_queue("hetzner");
    let results_queue = topology.results_queue();

    // Each program's own part.
    assert_eq!(publish(&api, &requests, "request.hetzner").await?, None);
    assert_eq!(publish(&host, &results, "result.hetzner").await?, None);
    assert_eq!(publish(&host, &results, "announce.hetzner").await?, None);
    assert_eq!(consume(&host, &request_queue).await?, None);
    assert_eq!(consume(&api, &results_queue).await?, None);

    // Nothing of the other's.
    let refused = [
        (
            "order-api sends a result",
            publish(&api, &results, "result.hetzner").await?,
        ),
        (
            "order-api announces a vendor",
            publish(&api, &results, "announce.hetzner").await?,
        ),
        (
            "order-api reads creation requests",
            consume(&api, &request_queue).await?,
        ),
        (
            "order-api writes the results queue by name",
            publish(&api, "", &results_queue).await?,
        ),
        (
            "a host sends a creation request",
            publish(&host, &requests, "request.hetzner").await?,
        ),
        (
            "a host reads the results",
            consume(&host, &results_queue).await?,
        ),
        (
            "a host writes a request queue by name",
            publish(&host, "", &request_queue).await?,
        ),
        (
            "a host writes the results queue by name",
            publish(&host, "", &results_queue).await?,
        ),
    ];
    for (what, outcome) in refused {
        assert_eq!(outcome, Some(ACCESS_REFUSED), "{what} was not refused");
    }

    let _ = api.close(200, "done".into()).await;
    let _ = host.close(200, "done".into()).await;
    let _ = admin.close(200, "done".into()).await;
    delete_topology(&topology, &["hetzner"]).await;
    drop(users);
    Ok(())
}

/// order-api and a host that each run as their own user declare what they own, validate
/// (a refused server is a 422), and take an order to `active`.
#[tokio::test]
async fn an_order_runs_with_the_programs_own_users() -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let prefix = format!("test-{id}.");
    // No test stops the broker while the users are made; the stack holds it after that (a
    // second hold from one task could wait on a stopper queued between the two).
    let users = {
        let _broker = hold_broker_shared().await;
        BrokerUsers::create(&prefix, &id).await?
    };
    let stack = Stack::start(StackOptions {
        amqp_prefix: Some(prefix),
        api_env: vec![("AMQP_URL".into(), users.api_url())],
        host_env: vec![("AMQP_URL".into(), users.host_url())],
        ..StackOptions::default()
    })
    .await?;

    let mut refused: Value = serde_json::from_str(&fixture("digitalocean").order_body("nowhere"))?;
    refused["region"] = json!("mars1");
    let (status, _, _, answer) = stack.post_order(&refused.to_string()).await?;
    assert_eq!(status, 422, "the validation reply came back: {answer}");

    let order = stack.order_server("web-1").await?;
    let active = stack
        .wait_for_status(&order, "active", Duration::from_secs(60))
        .await?;
    assert_eq!(active["server"]["status"], "running", "{active}");
    let logs = stack.logs();
    assert!(
        !logs.contains("ACCESS_REFUSED"),
        "a program was refused something it needs:\n{logs}"
    );
    stack.cleanup().await;
    drop(users);
    Ok(())
}

/// order-api upgraded on a broker that still has an earlier version's topology (one
/// `provisioner` exchange, delay queues `provision.retry.<ms>ms` dead-lettering to it) declares
/// its own without a clash and orders flow: RabbitMQ refuses to re-declare a queue with another
/// dead-letter exchange, so reusing the old delay queues' names would stop order-api for ever.
#[tokio::test]
async fn order_api_starts_on_a_broker_with_the_earlier_topology() -> anyhow::Result<()> {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::AMQPValue;

    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let prefix = format!("test-{id}.");
    let old_queue = format!("{prefix}provision.retry.250ms");
    let hold = hold_broker_shared().await;
    let broker = require_rabbitmq().await;
    let channel = broker.create_channel().await?;
    let mut arguments = FieldTable::default();
    let text = |value: &str| AMQPValue::LongString(value.into());
    arguments.insert("x-queue-type".into(), text("quorum"));
    arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(250));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        text(&format!("{prefix}provisioner")),
    );
    arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    arguments.insert("x-overflow".into(), text("reject-publish"));
    channel
        .queue_declare(
            old_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .context("declaring an earlier version's delay queue")?;
    drop(hold);

    let started = Stack::start(StackOptions {
        amqp_prefix: Some(prefix),
        ..StackOptions::default()
    })
    .await;
    let outcome = async {
        let stack = started?;
        let order = stack.order_server("upgraded").await?;
        let waited = stack
            .wait_for_status(&order, "active", Duration::from_secs(60))
            .await;
        stack.cleanup().await;
        waited.map(|_| ())
    }
    .await;
    let _broker = hold_broker_shared().await;
    let channel = require_rabbitmq().await.create_channel().await?;
    channel
        .queue_delete(old_queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    outcome
}
