//! AMQP names (*contract*, see DESIGN.md) and their declaration.
//!
//! Requests and results travel on two exchanges, so the broker can tell who may send what:
//! order-api writes `provisioner.requests` (creates, deletes, cancels, sweeps, orphan
//! deletes, validations) and reads what hosts write to `provisioner.results` (events,
//! results, announcements, inventories, validation replies); a host the other way round
//! (`scripts/rabbitmq-users.sh` gives each its own broker user with exactly that).
//!
//! Each program declares what it owns on every (re)connect (declarations are idempotent):
//! order-api the shared part ([`Topology::declare_order_api`]: the exchanges, the results,
//! dead-letter and retry queues), a host its vendors' request, validation and lock queues.
//! A host that starts first waits until the shared part exists
//! ([`Topology::missing_shared`]), so it needs no right to declare or delete it.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

/// The delays retries can wait, one delay queue each. A retry waits in the shortest queue
/// at least as long as the backoff (and the vendor's `Retry-After`) asks.
pub const RETRY_DELAYS_MS: &[u64] = &[
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
];

/// Deliveries a message on a request or results queue gets before the broker dead-letters
/// it (a message that keeps crashing its consumer, or keeps being handed back).
pub const DELIVERY_LIMIT: i32 = 20;

/// The header of a retry that picks its delay queue (the queue's name). Not `x-`-prefixed:
/// a headers exchange ignores such headers when matching.
pub const RETRY_QUEUE_HEADER: &str = "provisioner-retry-queue";

/// How many lock queues the create leases are spread over (`provision.lease.0000` to
/// `provision.lease.1023`). Orders of one shard share a queue, so two hosts creating two
/// orders of one shard at the same moment take turns; with 1,024 shards and creates of a
/// few milliseconds that is rare. Every host must use the same number.
pub const LEASE_SHARDS: u32 = 1024;

/// The AMQP reply code of a passive declare of something that does not exist.
const NOT_FOUND: u16 = 404;

/// The AMQP reply code of a declare whose arguments differ from the existing queue's.
const PRECONDITION_FAILED: u16 = 406;

/// How long a validation waits on its queue before it is dropped (milliseconds).
pub const VALIDATE_TTL_MS: i64 = 5_000;

/// A lock queue unused this long (no consumer, no declare) is deleted by the broker.
pub const LEASE_QUEUE_EXPIRES_MS: i64 = 10 * 60 * 1000;

/// Whether a 406 says only that an existing queue has another initial group size (not
/// that the size given is invalid).
fn is_group_size_inequivalence(message: &str) -> bool {
    message.contains("inequivalent arg 'x-quorum-initial-group-size'")
}

/// The arguments every lock queue has: classic, and empty for ever (nothing is published
/// to it; a lease is a consumer or the queue itself).
fn lock_queue_arguments() -> FieldTable {
    let mut arguments = classic_queue_arguments();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments
}

/// The arguments of a classic queue (`x-queue-type` `classic`), to add to.
fn classic_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    arguments
}

/// Binds `queue` to `exchange` under `routing_key` (no binding arguments).
async fn bind_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares `queue` exclusive to this connection and auto-deleted (gone with the
/// connection or its last consumer), with `arguments`: the private queue a program reads
/// its replies from, or a benchmark or test captures messages on.
pub async fn declare_exclusive_queue(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

/// The AMQP names, all derived from one optional prefix.
///
/// Production uses the empty prefix, giving the contract names (`provisioner`,
/// `provision.requests.<vendor>`, ...). Tests give each run its own prefix so that parallel
/// runs on one broker never see each other's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    /// `x-quorum-initial-group-size` of the quorum queues this topology creates (`None`:
    /// RabbitMQ's own default).
    quorum_group_size: Option<u16>,
}

impl Topology {
    /// Names with `prefix` in front of every exchange and queue (routing keys are unchanged).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            quorum_group_size: None,
        }
    }

    /// The same names; the quorum queues it creates get `size` replicas (on a cluster of
    /// fewer nodes, one on each).
    pub fn with_quorum_group_size(mut self, size: u16) -> Self {
        self.quorum_group_size = Some(size);
        self
    }

    /// The replicas a quorum queue this topology creates gets (`None`: RabbitMQ's default).
    pub fn quorum_group_size(&self) -> Option<u16> {
        self.quorum_group_size
    }

    /// The prefix in use (empty in production).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic exchange order-api sends requests to (`request.<vendor>`,
    /// `validate.<vendor>`); the hosts' request and validation queues are bound to it.
    pub fn requests_exchange(&self) -> String {
        format!("{}provisioner.requests", self.prefix)
    }

    /// The topic exchange hosts send to: events, results, announcements, inventories
    /// (`event.*`, `result.*`, `announce.*`, bound to [`Topology::results_queue`]) and
    /// validation replies (`reply.<id>`, bound to the asker's [`Topology::replies_queue`]).
    pub fn results_exchange(&self) -> String {
        format!("{}provisioner.results", self.prefix)
    }

    /// The exchange a message with `routing_key` goes to: requests and validations to
    /// [`Topology::requests_exchange`], everything else to [`Topology::results_exchange`].
    pub fn exchange_for_key(&self, routing_key: &str) -> String {
        if routing_key.starts_with("request.") || routing_key.starts_with("validate.") {
            self.requests_exchange()
        } else {
            self.results_exchange()
        }
    }

    /// The exchange that dead-lettered messages go to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}provisioner.dlx", self.prefix)
    }

    /// The queue holding dead-lettered messages for an operator to inspect.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}provision.dead", self.prefix)
    }

    /// The queue of creation requests for one vendor.
    pub fn request_queue(&self, vendor: &str) -> String {
        format!("{}provision.requests.{vendor}", self.prefix)
    }

    /// The queue order-api consumes: order events, results and vendor announcements.
    pub fn results_queue(&self) -> String {
        format!("{}provision.results", self.prefix)
    }

    /// The queue one order-api instance (`instance`) takes its validation replies from:
    /// exclusive to its connection, gone with it.
    pub fn replies_queue(&self, instance: uuid::Uuid) -> String {
        format!("{}provision.replies.{}", self.prefix, instance.simple())
    }

    /// Routing key of the validation replies for order-api instance `instance` (the
    /// `reply_to` of its validations).
    pub fn reply_key(instance: uuid::Uuid) -> String {
        format!("reply.{}", instance.simple())
    }

    /// Routing key of a creation request for `vendor`.
    pub fn request_key(vendor: &str) -> String {
        format!("request.{vendor}")
    }

    /// Routing key of a progress event for an order at `vendor`.
    pub fn event_key(vendor: &str) -> String {
        format!("event.{vendor}")
    }

    /// Routing key of a final result for an order at `vendor`.
    pub fn result_key(vendor: &str) -> String {
        format!("result.{vendor}")
    }

    /// Routing key of a host's announcement that it serves `vendor`.
    pub fn announce_key(vendor: &str) -> String {
        format!("announce.{vendor}")
    }

    /// Every queue name this topology may have created for `vendors`, for clean-up tools.
    /// The lease queues are not listed: each expires by itself
    /// [`LEASE_QUEUE_EXPIRES_MS`] after its last use.
    pub fn queues(&self, vendors: &[&str]) -> Vec<String> {
        let mut queues = vec![self.results_queue(), self.dead_letter_queue()];
        queues.extend(vendors.iter().map(|vendor| self.request_queue(vendor)));
        queues.extend(RETRY_DELAYS_MS.iter().map(|&ms| self.retry_queue(ms)));
        queues
    }

    /// Every exchange name of this topology, for clean-up tools.
    pub fn exchanges(&self) -> Vec<String> {
        vec![
            self.requests_exchange(),
            self.results_exchange(),
            self.dead_letter_exchange(),
            self.retry_exchange(),
        ]
    }

    /// Declares the part of the topology order-api owns and hosts rely on: both exchanges,
    /// the dead-letter exchange and queue, the retry exchange and delay queues (they
    /// dead-letter into the requests exchange, which only a writer of requests may
    /// declare), and last the results queue with its bindings, so a host that finds the
    /// results queue ([`Topology::missing_shared`]) finds everything else too.
    pub async fn declare_order_api(&self, connection: &Connection) -> Result<(), lapin::Error> {
        let mut channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [self.requests_exchange(), self.results_exchange()] {
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let dead = self.dead_letter_queue();
        self.declare_quorum_queue(connection, &mut channel, &dead, false)
            .await?;
        bind_queue(&channel, &dead, &self.dead_letter_exchange(), "#").await?;
        self.declare_retry(connection, &mut channel).await?;
        let results = self.results_queue();
        self.declare_quorum_queue(connection, &mut channel, &results, true)
            .await?;
        for key in ["event.*", "result.*", "announce.*"] {
            bind_queue(&channel, &results, &self.results_exchange(), key).await?;
        }
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }

    /// The first part of [`Topology::declare_order_api`] that does not exist (yet), by
    /// passive declares, which need no permission; `None` when all of it is in place. A
    /// host waits for this to be `None` before it declares and consumes anything.
    pub async fn missing_shared(
        &self,
        connection: &lapin::Connection,
    ) -> Result<Option<String>, lapin::Error> {
        let passive_exchange = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let exchanges = [
            (self.requests_exchange(), ExchangeKind::Topic),
            (self.results_exchange(), ExchangeKind::Topic),
            (self.dead_letter_exchange(), ExchangeKind::Fanout),
            (self.retry_exchange(), ExchangeKind::Headers),
        ];
        // A refused passive declare closes its channel: one channel per name.
        for (exchange, kind) in exchanges {
            let channel = connection.create_channel().await?;
            let found = channel
                .exchange_declare(
                    exchange.as_str().into(),
                    kind,
                    passive_exchange,
                    FieldTable::default(),
                )
                .await;
            if let Some(missing) = Self::passive_outcome(&channel, exchange, found).await? {
                return Ok(Some(missing));
            }
        }
        let channel = connection.create_channel().await?;
        let found = channel
            .queue_declare(
                self.results_queue().as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(drop);
        Self::passive_outcome(&channel, self.results_queue(), found).await
    }

    /// `Some(name)` when a passive declare found nothing (`404`); other errors are errors.
    async fn passive_outcome(
        channel: &Channel,
        name: String,
        found: Result<(), lapin::Error>,
    ) -> Result<Option<String>, lapin::Error> {
        match found {
            Ok(()) => {
                let _ = channel.close(200, "checked".into()).await;
                Ok(None)
            }
            Err(error) if crate::reply::reply_code(&error) == Some(NOT_FOUND) => Ok(Some(name)),
            Err(error) => Err(error),
        }
    }

    /// Declares order-api instance `instance`'s [`Topology::replies_queue`] (exclusive,
    /// auto-deleted, classic) and binds it to its [`Topology::reply_key`] on the results
    /// exchange; the queue's name.
    pub async fn declare_replies_queue(
        &self,
        channel: &Channel,
        instance: uuid::Uuid,
    ) -> Result<String, lapin::Error> {
        let queue = self.replies_queue(instance);
        declare_exclusive_queue(channel, &queue, classic_queue_arguments()).await?;
        bind_queue(
            channel,
            &queue,
            &self.results_exchange(),
            &Self::reply_key(instance),
        )
        .await?;
        Ok(queue)
    }

    /// The lock queue that holds an order's create lease (see the host's `lease`): one of
    /// [`LEASE_SHARDS`], picked by the order id's low bits, so every host maps an order to
    /// the same queue. The lease is an exclusive consumer on it, never a message.
    pub fn lease_queue(&self, order_id: uuid::Uuid) -> String {
        let shard = order_id.as_u128() % u128::from(LEASE_SHARDS);
        format!("{}provision.lease.{shard:04}", self.prefix)
    }

    /// The fallback lock of an order whose [`Topology::lease_queue`] is on a node that is
    /// down (see the host's `lease`): an exclusive queue of that order alone.
    pub fn lease_fallback_queue(&self, order_id: uuid::Uuid) -> String {
        format!("{}provision.lease.order.{order_id}", self.prefix)
    }

    /// Declares an order's [`Topology::lease_fallback_queue`]: classic, exclusive to this
    /// connection (another connection's declare is refused with `RESOURCE_LOCKED` while it
    /// exists), empty for ever, deleted with the connection or by the holder.
    pub async fn declare_lease_fallback_queue(
        &self,
        channel: &Channel,
        queue: &str,
    ) -> Result<(), lapin::Error> {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                lock_queue_arguments(),
            )
            .await?;
        Ok(())
    }

    /// Declares a lock queue of [`Topology::lease_queue`]: durable, empty for ever
    /// (`x-max-length` 0, and nothing is published to it), and gone by itself
    /// [`LEASE_QUEUE_EXPIRES_MS`] after its last consumer, so a deployment keeps only the
    /// shards in use. Every host declares it with these exact arguments.
    pub async fn declare_lease_queue(
        &self,
        channel: &Channel,
        queue: &str,
    ) -> Result<(), lapin::Error> {
        let mut arguments = lock_queue_arguments();
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(LEASE_QUEUE_EXPIRES_MS),
        );
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await?;
        Ok(())
    }

    /// The headers exchange retries are published to: their [`RETRY_QUEUE_HEADER`] picks
    /// the delay queue.
    pub fn retry_exchange(&self) -> String {
        format!("{}provisioner.retry", self.prefix)
    }

    /// The delay queue holding retries for `delay_ms` (one of [`RETRY_DELAYS_MS`]). Named
    /// for where it leads (`provisioner.requests`): the delay queues of earlier versions,
    /// `provision.retry.<ms>ms`, dead-letter to the old single exchange, and RabbitMQ refuses
    /// to re-declare a queue with another dead-letter exchange, so a broker that has them
    /// would refuse order-api's declarations for ever.
    pub fn retry_queue(&self, delay_ms: u64) -> String {
        format!("{}provision.retry.requests.{delay_ms}ms", self.prefix)
    }

    /// Declares the retry exchange and one delay queue per [`RETRY_DELAYS_MS`]: each holds
    /// a message for its delay (`x-message-ttl`), then dead-letters it, at least once, to
    /// the requests exchange under its original routing key (`request.<vendor>`), back onto
    /// the vendor's queue. Part of [`Topology::declare_order_api`]: declaring a queue that
    /// dead-letters into an exchange takes the right to write to that exchange.
    async fn declare_retry(
        &self,
        connection: &Connection,
        channel: &mut Channel,
    ) -> Result<(), lapin::Error> {
        channel
            .exchange_declare(
                self.retry_exchange().into(),
                ExchangeKind::Headers,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        for &delay_ms in RETRY_DELAYS_MS {
            let queue = self.retry_queue(delay_ms);
            let mut arguments = FieldTable::default();
            let text = |value: &str| AMQPValue::LongString(value.into());
            arguments.insert("x-queue-type".into(), text("quorum"));
            arguments.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(delay_ms as i64),
            );
            arguments.insert(
                "x-dead-letter-exchange".into(),
                text(&self.requests_exchange()),
            );
            arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            arguments.insert("x-overflow".into(), text("reject-publish"));
            self.declare_quorum(connection, channel, &queue, arguments)
                .await?;
            let mut binding = FieldTable::default();
            binding.insert("x-match".into(), text("all"));
            binding.insert(RETRY_QUEUE_HEADER.into(), text(&queue));
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.retry_exchange().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    binding,
                )
                .await?;
        }
        Ok(())
    }

    /// The queue a vendor's hosts answer validations from (`validate.<vendor>`).
    pub fn validate_queue(&self, vendor: &str) -> String {
        format!("{}provision.validate.{vendor}", self.prefix)
    }

    /// Routing key of a validation for `vendor`.
    pub fn validate_key(vendor: &str) -> String {
        format!("validate.{vendor}")
    }

    /// Declares a vendor's validation queue and binds it to `validate.<vendor>`: classic,
    /// not durable, deleted with its last consumer (so with no host serving validations a
    /// validation is unroutable and returned at once, instead of waiting for its time-out),
    /// and a validation nobody took within [`VALIDATE_TTL_MS`] is dropped (its asker gave
    /// up by then). Every host declares it with these exact arguments.
    pub async fn declare_validate_queue(
        &self,
        channel: &Channel,
        vendor: &str,
    ) -> Result<(), lapin::Error> {
        let queue = self.validate_queue(vendor);
        let mut arguments = classic_queue_arguments();
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(VALIDATE_TTL_MS),
        );
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await?;
        bind_queue(
            channel,
            &queue,
            &self.requests_exchange(),
            &Self::validate_key(vendor),
        )
        .await?;
        Ok(())
    }

    /// Declares the request queue of one vendor and binds it to `request.<vendor>`.
    pub async fn declare_vendor(
        &self,
        connection: &Connection,
        vendor: &str,
    ) -> Result<(), lapin::Error> {
        let mut channel = connection.create_channel().await?;
        let queue = self.request_queue(vendor);
        self.declare_quorum_queue(connection, &mut channel, &queue, true)
            .await?;
        bind_queue(
            &channel,
            &queue,
            &self.requests_exchange(),
            &Self::request_key(vendor),
        )
        .await?;
        let _ = channel.close(200, "queue declared".into()).await;
        Ok(())
    }

    /// A durable quorum queue; `dead_letter` routes rejected messages to the DLX.
    async fn declare_quorum_queue(
        &self,
        connection: &Connection,
        channel: &mut Channel,
        name: &str,
        dead_letter: bool,
    ) -> Result<(), lapin::Error> {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        if dead_letter {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.dead_letter_exchange().into()),
            );
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(DELIVERY_LIMIT),
            );
        }
        self.declare_quorum(connection, channel, name, arguments)
            .await
    }

    /// Declares durable quorum queue `name` with `arguments` and this topology's
    /// [`Topology::quorum_group_size`]. A queue that exists with another initial group size
    /// (or none: declared by an earlier version) is kept as it is, since the size applies
    /// only at creation (`rabbitmq-queues grow` and `shrink` change a queue's members); the
    /// refusal closed `channel`, which is replaced. Any other difference is an error.
    async fn declare_quorum(
        &self,
        connection: &Connection,
        channel: &mut Channel,
        name: &str,
        mut arguments: FieldTable,
    ) -> Result<(), lapin::Error> {
        if let Some(size) = self.quorum_group_size {
            arguments.insert(
                "x-quorum-initial-group-size".into(),
                AMQPValue::LongInt(i32::from(size)),
            );
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel.queue_declare(name.into(), durable, arguments).await;
        match declared {
            Ok(_) => Ok(()),
            Err(error)
                if crate::reply::reply_code(&error) == Some(PRECONDITION_FAILED)
                    && is_group_size_inequivalence(&error.to_string()) =>
            {
                tracing::info!(
                    queue = name,
                    "the queue exists with another initial group size; kept as it is"
                );
                *channel = connection.create_channel().await?;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the inequivalence RabbitMQ reports for an existing queue is taken as "keep it";
    /// an invalid size is an error.
    #[test]
    fn only_an_inequivalent_group_size_keeps_the_queue() {
        assert!(is_group_size_inequivalence(
            "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue 'q' \
             in vhost '/': received the value '3' of type 'signedint' but current is none"
        ));
        assert!(!is_group_size_inequivalence(
            "PRECONDITION_FAILED - invalid arg 'x-quorum-initial-group-size' for queue 'q'"
        ));
        assert!(!is_group_size_inequivalence(
            "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q'"
        ));
    }

    /// The production names are exactly the contract names of DESIGN.md.
    #[test]
    fn default_names_match_the_contract() {
        let topology = Topology::default();
        assert_eq!(topology.requests_exchange(), "provisioner.requests");
        assert_eq!(topology.results_exchange(), "provisioner.results");
        assert_eq!(topology.retry_exchange(), "provisioner.retry");
        assert_eq!(topology.dead_letter_exchange(), "provisioner.dlx");
        assert_eq!(topology.dead_letter_queue(), "provision.dead");
        assert_eq!(
            topology.request_queue("hetzner"),
            "provision.requests.hetzner"
        );
        assert_eq!(topology.results_queue(), "provision.results");
        assert_eq!(Topology::request_key("hetzner"), "request.hetzner");
        assert_eq!(Topology::result_key("hetzner"), "result.hetzner");
    }

    /// A prefix isolates every exchange and queue but leaves routing keys alone.
    #[test]
    fn prefix_applies_to_exchanges_and_queues() {
        let topology = Topology::with_prefix("t1.");
        assert_eq!(topology.requests_exchange(), "t1.provisioner.requests");
        assert_eq!(topology.results_exchange(), "t1.provisioner.results");
        assert_eq!(
            topology.request_queue("hetzner"),
            "t1.provision.requests.hetzner"
        );
        assert_eq!(Topology::event_key("hetzner"), "event.hetzner");
    }

    /// Requests and validations go to the requests exchange, everything hosts say to the
    /// results exchange: the split the broker users' write permissions rest on.
    #[test]
    fn each_routing_key_has_its_exchange() {
        let topology = Topology::with_prefix("t1.");
        for key in [
            Topology::request_key("hetzner"),
            Topology::validate_key("hetzner"),
        ] {
            assert_eq!(topology.exchange_for_key(&key), "t1.provisioner.requests");
        }
        let instance = uuid::Uuid::nil();
        for key in [
            Topology::event_key("hetzner"),
            Topology::result_key("hetzner"),
            Topology::announce_key("hetzner"),
            Topology::reply_key(instance),
        ] {
            assert_eq!(topology.exchange_for_key(&key), "t1.provisioner.results");
        }
        assert_eq!(
            topology.replies_queue(instance),
            "t1.provision.replies.00000000000000000000000000000000"
        );
    }
}
