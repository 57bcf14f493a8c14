//! AMQP plumbing both programs share: the broker addresses (`AMQP_URL`, one URL or a
//! cluster's nodes), connecting with backoff and publishing with confirms.
//!
//! Every publish is `mandatory` and waits for the broker's confirm, so a message is either
//! on a queue's disk or the caller gets an error and keeps it (outbox row, unacked
//! delivery). Nothing is fire-and-forget.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};

use crate::envelope::Envelope;
use crate::topology::Topology;

/// The broker flags both programs take.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL, or several separated by commas (the nodes of one cluster): the first
    /// that answers is used, and after a lost connection the next in turn.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = AddressesParser,
        hide_env_values = true
    )]
    pub amqp_url: BrokerAddresses,
    /// Prefix for every exchange and queue name (lets test runs share a broker).
    #[arg(long, env = "AMQP_NAME_PREFIX", default_value = "")]
    pub amqp_name_prefix: String,
    /// Replicas of each quorum queue this program creates (`x-quorum-initial-group-size`):
    /// on a cluster of fewer nodes, one on each. Applies only when a queue is created.
    #[arg(
        long,
        env = "AMQP_QUORUM_GROUP_SIZE",
        default_value_t = 3,
        value_parser = clap::value_parser!(u16).range(1..=9)
    )]
    pub amqp_quorum_group_size: u16,
    /// The nodes of one cluster as `host:port`, comma-separated: `AMQP_URL` (then one URL)
    /// is used for each, with its host and port replaced, so the credentials and virtual
    /// host are written once. An alternative to listing whole URLs in `AMQP_URL`.
    #[arg(long, env = "AMQP_NODES", value_delimiter = ',')]
    pub amqp_nodes: Vec<String>,
}

impl AmqpArgs {
    /// The broker addresses to use: `AMQP_URL`'s, or `AMQP_URL` once per node of
    /// `AMQP_NODES` when that is given.
    pub fn addresses(&self) -> Result<BrokerAddresses, String> {
        let nodes: Vec<&str> = self
            .amqp_nodes
            .iter()
            .map(|node| node.trim())
            .filter(|node| !node.is_empty())
            .collect();
        if nodes.is_empty() {
            return Ok(self.amqp_url.clone());
        }
        if self.amqp_url.len() != 1 {
            return Err(
                "AMQP_NODES needs AMQP_URL to be one URL (its host and port are replaced by each node's)"
                    .into(),
            );
        }
        let template = self.amqp_url.url(0);
        let urls: Result<Vec<String>, String> = nodes
            .iter()
            .map(|node| with_authority(template, node))
            .collect();
        BrokerAddresses::parse(&urls?.join(","))
    }

    /// The AMQP names and queue sizes these flags select.
    pub fn topology(&self) -> Topology {
        Topology::with_prefix(&self.amqp_name_prefix)
            .with_quorum_group_size(self.amqp_quorum_group_size)
    }
}

/// Parses `AMQP_URL` for clap with [`BrokerAddresses::parse`], and, unlike a plain value
/// parser, does not echo a refused value (it holds passwords) in the error.
#[derive(Debug, Clone, Copy)]
struct AddressesParser;

impl clap::builder::TypedValueParser for AddressesParser {
    type Value = BrokerAddresses;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let refused = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{message}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refused("AMQP_URL is not UTF-8".into()))?;
        BrokerAddresses::parse(text).map_err(refused)
    }
}

/// The brokers a program may connect to (`AMQP_URL`): one URL, or the nodes of one cluster
/// as URLs separated by commas, each with its own credentials and virtual host. Tried in
/// order; see [`connect_with_backoff`].
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddresses {
    urls: Vec<String>,
}

impl std::fmt::Debug for BrokerAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.urls.iter().map(|url| redact(url)))
            .finish()
    }
}

impl BrokerAddresses {
    /// Parses `AMQP_URL`: comma-separated `amqp://` or `amqps://` URLs (spaces around them
    /// ignored; a comma inside a user name or password is percent-encoded, `%2C`). An entry
    /// that is not one is an error naming it (1-based), its password hidden.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut urls = Vec::new();
        for (index, entry) in list.split(',').map(str::trim).enumerate() {
            let shown = redact(entry);
            if entry.is_empty() {
                return Err(format!(
                    "AMQP_URL entry {} is empty (URLs are separated by single commas)",
                    index + 1
                ));
            }
            if !(entry.starts_with("amqp://") || entry.starts_with("amqps://")) {
                return Err(format!(
                    "AMQP_URL entry {} ({shown}) is not an amqp:// or amqps:// URL",
                    index + 1
                ));
            }
            entry.parse::<lapin::uri::AMQPUri>().map_err(|error| {
                format!(
                    "AMQP_URL entry {} ({shown}) is not an AMQP URL: {error}",
                    index + 1
                )
            })?;
            urls.push(entry.to_string());
        }
        Ok(Self { urls })
    }

    /// How many there are (at least one).
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Never: a list holds at least one URL.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The URL at `index` (wrapping around).
    pub fn url(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }

    /// The URL at `index` without its password, and its place in the list, for logs:
    /// `amqp://guest:***@node2:5672/%2f (address 2 of 3)`.
    pub fn describe(&self, index: usize) -> String {
        let index = index % self.urls.len();
        format!(
            "{} (address {} of {})",
            redact(&self.urls[index]),
            index + 1,
            self.urls.len()
        )
    }
}

/// The broker address a program's session is on, by its place in `AMQP_URL`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectedNode {
    /// The URL, its password hidden.
    pub address: String,
    /// Its place in the list (from 1).
    pub position: usize,
    /// How many addresses the list has.
    pub of: usize,
}

impl BrokerAddresses {
    /// The node at `index`, as [`ConnectedNode`] shows it.
    pub fn node(&self, index: usize) -> ConnectedNode {
        let index = index % self.urls.len();
        ConnectedNode {
            address: redact(&self.urls[index]),
            position: index + 1,
            of: self.urls.len(),
        }
    }
}

/// Where a program's broker session is now (`None` between sessions), shared by the
/// session loop, which sets it, with `/readyz` and metrics, which show it.
#[derive(Debug, Clone, Default)]
pub struct BrokerNode(std::sync::Arc<std::sync::Mutex<Option<ConnectedNode>>>);

impl BrokerNode {
    /// The session is on `node` now, or on none.
    pub fn set(&self, node: Option<ConnectedNode>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = node;
    }

    /// The node the session is on, if one is.
    pub fn get(&self) -> Option<ConnectedNode> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The first wait after a round in which no address answered; it doubles up to
/// [`MAX_RECONNECT_DELAY`].
pub const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between rounds. Short, so a program consumes again within about a
/// second of a broker serving, however long it was down; a try at a broker that is down
/// costs it a refused TCP connection, and the jitter keeps many programs from trying in
/// step.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How long one address may take to accept a connection (a node whose machine is gone
/// may not even refuse it).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The wait after `failed_rounds` rounds in which no address answered: doubling from
/// [`FIRST_RECONNECT_DELAY`] to at most [`MAX_RECONNECT_DELAY`], times `jitter` (expected
/// in 0.8..1.2).
pub fn reconnect_delay(failed_rounds: u32, jitter: f64) -> Duration {
    let doubled =
        FIRST_RECONNECT_DELAY.saturating_mul(1u32 << failed_rounds.saturating_sub(1).min(16));
    doubled
        .min(MAX_RECONNECT_DELAY)
        .mul_f64(jitter.clamp(0.5, 1.5))
}

/// Opens a connection to one of `addresses`, starting at `start` (the one after the address
/// of a connection just lost, so a dead node is tried last) and going round the list;
/// after a round in which none answered it waits [`reconnect_delay`] and goes round again,
/// until one answers or `give_up` resolves. Answers the connection and its address's
/// index. Each failure is logged with `name` so an operator sees who waits, and the
/// address connected to is logged.
pub async fn connect_with_backoff(
    addresses: &BrokerAddresses,
    start: usize,
    name: &str,
    give_up: impl Future<Output = ()>,
) -> Option<(Connection, usize)> {
    let mut give_up = std::pin::pin!(give_up);
    let mut failed_rounds = 0u32;
    loop {
        for step in 0..addresses.len() {
            let index = (start + step) % addresses.len();
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Connection::connect(addresses.url(index), properties),
            );
            let outcome = tokio::select! {
                outcome = attempt => outcome,
                _ = &mut give_up => return None,
            };
            match outcome {
                Ok(Ok(connection)) => {
                    tracing::info!(
                        "{name} connected to RabbitMQ at {}",
                        addresses.describe(index)
                    );
                    return Some((connection, index));
                }
                Ok(Err(error)) => tracing::warn!(
                    %error,
                    "{name} cannot connect to RabbitMQ at {}",
                    addresses.describe(index)
                ),
                Err(_) => tracing::warn!(
                    "{name} cannot connect to RabbitMQ at {}: no answer within {CONNECT_TIMEOUT:?}",
                    addresses.describe(index)
                ),
            }
        }
        failed_rounds = failed_rounds.saturating_add(1);
        let delay = reconnect_delay(failed_rounds, rand::random_range(0.8..1.2));
        tracing::debug!(retry_in = ?delay, "{name}: no broker answered; trying again");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut give_up => return None,
        }
    }
}

/// `url` with its `host[:port]` replaced by `node`, its user, password, virtual host and
/// query kept.
fn with_authority(url: &str, node: &str) -> Result<String, String> {
    if node.contains(['/', '@', '?', '#', ',']) {
        return Err(format!(
            "AMQP_NODES entry {node:?} is not host or host:port"
        ));
    }
    let scheme_end = url
        .find("://")
        .ok_or_else(|| "AMQP_URL has no scheme".to_string())?
        + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host_start = rest[..authority_end].rfind('@').map_or(0, |at| at + 1);
    Ok(format!(
        "{}{}{node}{}",
        &url[..scheme_end],
        &rest[..host_start],
        &rest[authority_end..]
    ))
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Why a publish did not land on a queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed.
    #[error("AMQP error while publishing: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message (nack).
    #[error("the broker nacked the message")]
    Nacked,
    /// No queue is bound for the routing key (the `mandatory` flag sent it back).
    #[error("no queue is bound for routing key {routing_key} ({reply_text})")]
    Unroutable {
        /// The routing key that found no queue.
        routing_key: String,
        /// The broker's reason.
        reply_text: String,
    },
}

/// Messages ready in `queue`, by a passive declare (fails if the queue does not exist).
pub async fn ready_messages(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let state = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..lapin::options::QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok(state.message_count())
}

/// A channel in confirm mode that publishes to one exchange: order-api's to the requests
/// exchange, a host's to the results exchange (see [`Topology`]).
///
/// A nack makes the next publish open a new channel first: a channel that published while
/// a quorum queue it routes to had no leader (its node just died) is nacked by RabbitMQ
/// (3.10) for as long as it lives, even once a new leader is elected, while a new channel
/// finds the new leader. The old channel is closed once its pending confirms had time to
/// arrive ([`RETIRED_CHANNEL_GRACE`]).
#[derive(Clone)]
pub struct Publisher {
    shared: std::sync::Arc<PublisherShared>,
}

struct PublisherShared {
    connection: std::sync::Arc<Connection>,
    exchange: String,
    channel: std::sync::Mutex<Channel>,
    /// Set by a nack: the next send opens a new channel first.
    renew: std::sync::atomic::AtomicBool,
}

/// How many times [`Publisher::publish`] sends a nacked message again.
pub const NACK_RETRIES: u32 = 5;

/// The wait before the `nacks`-th new try of a nacked message: 100 ms doubling (100 ms to
/// 1.6 s; 3.1 s in all).
fn nack_retry_delay(nacks: u32) -> Duration {
    Duration::from_millis(100) * (1u32 << nacks.saturating_sub(1).min(4))
}

/// How long a channel a [`Publisher`] replaced stays open for its pending confirms.
pub const RETIRED_CHANNEL_GRACE: Duration = Duration::from_secs(30);

/// A channel in confirm mode on `connection`.
pub async fn confirming_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes `body` on `channel` to `exchange` under `routing_key`, `mandatory` (an
/// unroutable message comes back instead of being dropped), as every program publishes; the
/// confirm to wait for (the channel being in confirm mode, [`confirming_channel`]).
pub async fn publish_mandatory(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, lapin::Error> {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await
}

impl Publisher {
    /// Opens a channel on `connection` that publishes to `exchange`, in confirm mode.
    pub async fn open(
        connection: &std::sync::Arc<Connection>,
        exchange: impl Into<String>,
    ) -> Result<Self, lapin::Error> {
        let channel = confirming_channel(connection).await?;
        Ok(Self {
            shared: std::sync::Arc::new(PublisherShared {
                connection: connection.clone(),
                exchange: exchange.into(),
                channel: std::sync::Mutex::new(channel),
                renew: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The channel to publish on: a new one after a nack (see [`Publisher`]).
    async fn channel(&self) -> Result<Channel, lapin::Error> {
        use std::sync::atomic::Ordering;
        if self.shared.renew.swap(false, Ordering::AcqRel) {
            let fresh = match confirming_channel(&self.shared.connection).await {
                Ok(fresh) => fresh,
                Err(error) => {
                    self.shared.renew.store(true, Ordering::Release);
                    return Err(error);
                }
            };
            let retired = {
                let mut current = self
                    .shared
                    .channel
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                std::mem::replace(&mut *current, fresh)
            };
            tracing::info!(
                exchange = %self.shared.exchange,
                "a publish was nacked: publishing on a new channel"
            );
            tokio::spawn(async move {
                tokio::time::sleep(RETIRED_CHANNEL_GRACE).await;
                let _ = retired.close(200, "replaced after a nack".into()).await;
            });
        }
        Ok(self
            .shared
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    /// Sends a message without waiting for its confirm; pass the result to
    /// [`Publisher::confirmed`]. Lets a caller have many publishes in flight at once.
    pub async fn send(
        &self,
        routing_key: &str,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<PublisherConfirm, lapin::Error> {
        self.send_with(routing_key, envelope.properties(), body)
            .await
    }

    /// [`Publisher::send`] with properties of the caller's (an envelope's, with headers
    /// added).
    pub async fn send_with(
        &self,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<PublisherConfirm, lapin::Error> {
        let channel = self.channel().await?;
        publish_mandatory(
            &channel,
            &self.shared.exchange,
            routing_key,
            body,
            properties,
        )
        .await
    }

    /// Waits for the broker's verdict on a message sent with [`Publisher::send`].
    pub async fn confirmed(
        &self,
        confirm: PublisherConfirm,
        routing_key: &str,
    ) -> Result<(), PublishError> {
        match confirm.await? {
            Confirmation::Ack(None) => Ok(()),
            // Only a channel without confirm mode answers this; `open` always enables it.
            Confirmation::NotRequested => Err(PublishError::Nacked),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(PublishError::Unroutable {
                    routing_key: routing_key.to_string(),
                    reply_text: returned.reply_text.to_string(),
                })
            }
            Confirmation::Nack(None) => {
                self.shared
                    .renew
                    .store(true, std::sync::atomic::Ordering::Release);
                Err(PublishError::Nacked)
            }
        }
    }

    /// Closes the channel (after its pending confirms).
    pub async fn close(&self) -> Result<(), lapin::Error> {
        let channel = self
            .shared
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        channel.close(200, "closing".into()).await
    }

    /// Publishes one message and waits until the broker has it on a queue. A nacked
    /// message is sent again, on a new channel, up to [`NACK_RETRIES`] times (a queue whose
    /// leader just died has a new one within about a second); the copies are harmless, as
    /// every consumer applies a message once.
    pub async fn publish(
        &self,
        routing_key: &str,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<(), PublishError> {
        self.publish_to(
            &self.shared.exchange,
            routing_key,
            envelope.properties(),
            body,
        )
        .await
    }

    /// Publishes one message to `exchange` with the given properties (mandatory, confirmed,
    /// a nack tried again as [`Publisher::publish`] says): for messages that are not new
    /// envelopes, such as a request sent on to a retry queue with its headers.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let mut nacks = 0;
        loop {
            let channel = self.channel().await?;
            let confirm =
                publish_mandatory(&channel, exchange, routing_key, body, properties.clone())
                    .await?;
            match self.confirmed(confirm, routing_key).await {
                Err(PublishError::Nacked) if nacks < NACK_RETRIES => {
                    nacks += 1;
                    tokio::time::sleep(nack_retry_delay(nacks)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Moves a poison delivery (undecodable, wrong schema, wrong queue) to the dead-letter
    /// exchange with `reason` in the [`DEAD_REASON_HEADER`] and the queue it came from in
    /// [`DEAD_QUEUE_HEADER`]: a confirmed copy first, then the original is acked, so it
    /// never loops. If the copy cannot be published, the delivery is rejected instead (the
    /// queue's own dead-letter exchange takes it, without our headers).
    pub async fn dead_letter(
        &self,
        topology: &Topology,
        queue: &str,
        delivery: &lapin::message::Delivery,
        reason: &str,
    ) -> Result<(), lapin::Error> {
        use lapin::options::{BasicAckOptions, BasicRejectOptions};
        use lapin::types::{AMQPValue, FieldTable};

        let mut headers: FieldTable = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            DEAD_REASON_HEADER.into(),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            DEAD_QUEUE_HEADER.into(),
            AMQPValue::LongString(queue.into()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let copied = self
            .publish_to(
                &topology.dead_letter_exchange(),
                delivery.routing_key.as_str(),
                properties,
                &delivery.data,
            )
            .await;
        match copied {
            Ok(()) => delivery.ack(BasicAckOptions::default()).await.map(drop),
            Err(error) => {
                tracing::error!(%error, "cannot publish to the dead-letter exchange; rejecting instead");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .map(drop)
            }
        }
    }
}

/// Header of a dead-lettered message: why it was refused.
pub const DEAD_REASON_HEADER: &str = "provisioner-dead-reason";
/// Header of a dead-lettered message: the queue it was refused on.
pub const DEAD_QUEUE_HEADER: &str = "provisioner-dead-queue";

#[cfg(test)]
mod tests {
    use super::*;

    /// A nacked message is sent again after 100 ms, doubling, about 3 s in all.
    #[test]
    fn nacked_messages_are_retried_for_about_three_seconds() {
        let waits: Vec<u128> = (1..=NACK_RETRIES)
            .map(|n| nack_retry_delay(n).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600]);
    }

    /// Passwords never reach the logs.
    #[test]
    fn amqp_nodes_reuse_the_url_with_each_node() {
        let url = "amqp://user:p%2Cw@rabbitmq:5672/%2f?heartbeat=10";
        assert_eq!(
            with_authority(url, "rabbitmq-2:5673").unwrap(),
            "amqp://user:p%2Cw@rabbitmq-2:5673/%2f?heartbeat=10"
        );
        assert_eq!(
            with_authority("amqp://rabbitmq", "node-3").unwrap(),
            "amqp://node-3"
        );
        assert!(with_authority(url, "evil@host").is_err());
        let args = AmqpArgs {
            amqp_url: BrokerAddresses::parse(url).unwrap(),
            amqp_name_prefix: String::new(),
            amqp_quorum_group_size: 3,
            amqp_nodes: vec!["a:1".into(), " b:2".into()],
        };
        let addresses = args.addresses().unwrap();
        assert_eq!(addresses.len(), 2);
        assert_eq!(addresses.url(1), "amqp://user:p%2Cw@b:2/%2f?heartbeat=10");
        let two = AmqpArgs {
            amqp_url: BrokerAddresses::parse("amqp://a,amqp://b").unwrap(),
            ..args
        };
        assert!(two.addresses().is_err());
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }

    /// One URL or several, spaces around them ignored; each described with its place and
    /// without its password.
    #[test]
    fn a_list_of_urls_is_parsed_in_order() {
        let one = BrokerAddresses::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(one.len(), 1);
        let three = BrokerAddresses::parse(
            "amqp://a:pw1@node1:5673/%2f, amqps://b:pw2@node2:5674/prod ,amqp://node3:5675",
        )
        .unwrap();
        assert_eq!(three.len(), 3);
        assert_eq!(three.url(1), "amqps://b:pw2@node2:5674/prod");
        assert_eq!(three.url(4), three.url(1), "indexes wrap around");
        assert_eq!(
            three.describe(1),
            "amqps://b:***@node2:5674/prod (address 2 of 3)"
        );
        let shown = format!("{three:?}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }

    /// A bad entry is refused naming its place, its password hidden.
    #[test]
    fn a_bad_entry_is_named() {
        let refused = |list: &str| BrokerAddresses::parse(list).unwrap_err();
        let error = refused("amqp://127.0.0.1,http://u:secret@host:5672");
        assert!(
            error.contains("entry 2") && error.contains("u:***@host"),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
        assert!(refused("amqp://127.0.0.1,,amqp://x").contains("entry 2 is empty"));
        assert!(refused("").contains("entry 1 is empty"));
        assert!(refused("amqp://host:notaport").contains("entry 1"));
    }

    /// The wait between rounds doubles from 200 ms and stops at a second, however long the
    /// outage (it grew to 10 s before, so a program noticed a broker back up to 10 s late).
    #[test]
    fn the_wait_between_rounds_stays_short() {
        assert_eq!(reconnect_delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(reconnect_delay(2, 1.0), Duration::from_millis(400));
        assert_eq!(reconnect_delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(reconnect_delay(4, 1.0), MAX_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(u32::MAX, 1.0), MAX_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(100, 1.2), Duration::from_millis(1200));
        assert_eq!(reconnect_delay(100, 0.8), Duration::from_millis(800));
    }
}
