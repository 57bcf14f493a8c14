//! AMQP names (*contract*, see DESIGN.md) and their declaration.
//!
//! Both programs declare the whole topology they use on every (re)connect: declarations are
//! idempotent, and whichever side starts first must find its queues in place.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

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

/// How long a validation waits on its queue before it is dropped (milliseconds).
pub const VALIDATE_TTL_MS: i64 = 5_000;

/// A lock queue unused this long (no consumer, no declare) is deleted by the broker.
pub const LEASE_QUEUE_EXPIRES_MS: i64 = 10 * 60 * 1000;

/// The AMQP names, all derived from one optional prefix.
///
/// Production uses the empty prefix, giving the contract names (`provisioner`,
/// `provision.requests.<vendor>`, ...). Tests give each run its own prefix so that parallel
/// runs on one broker never see each other's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names with `prefix` in front of every exchange and queue (routing keys are unchanged).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix in use (empty in production).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic exchange all requests, events and results go through.
    pub fn exchange(&self) -> String {
        format!("{}provisioner", self.prefix)
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
            self.exchange(),
            self.dead_letter_exchange(),
            self.retry_exchange(),
        ]
    }

    /// Declares what both programs need: the exchanges, the dead-letter queue and the
    /// results queue with its bindings.
    pub async fn declare_common(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let dead = self.dead_letter_queue();
        self.declare_quorum_queue(channel, &dead, false).await?;
        channel
            .queue_bind(
                dead.as_str().into(),
                self.dead_letter_exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let results = self.results_queue();
        self.declare_quorum_queue(channel, &results, true).await?;
        for key in ["event.*", "result.*", "announce.*"] {
            channel
                .queue_bind(
                    results.as_str().into(),
                    self.exchange().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// The lock queue that holds an order's create lease (see the host's `lease`): one of
    /// [`LEASE_SHARDS`], picked by the order id's low bits, so every host maps an order to
    /// the same queue. The lease is an exclusive consumer on it, never a message.
    pub fn lease_queue(&self, order_id: uuid::Uuid) -> String {
        let shard = order_id.as_u128() % u128::from(LEASE_SHARDS);
        format!("{}provision.lease.{shard:04}", self.prefix)
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
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
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

    /// The delay queue holding retries for `delay_ms` (one of [`RETRY_DELAYS_MS`]).
    pub fn retry_queue(&self, delay_ms: u64) -> String {
        format!("{}provision.retry.{delay_ms}ms", self.prefix)
    }

    /// Declares the retry exchange and one delay queue per [`RETRY_DELAYS_MS`]: each holds
    /// a message for its delay (`x-message-ttl`), then dead-letters it, at least once, to
    /// the main exchange under its original routing key (`request.<vendor>`), back onto
    /// the vendor's queue.
    pub async fn declare_retry(&self, channel: &Channel) -> Result<(), lapin::Error> {
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
            arguments.insert("x-dead-letter-exchange".into(), text(&self.exchange()));
            arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
            arguments.insert("x-overflow".into(), text("reject-publish"));
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    arguments,
                )
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
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
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
        channel
            .queue_bind(
                queue.as_str().into(),
                self.exchange().into(),
                Self::validate_key(vendor).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Declares the request queue of one vendor and binds it to `request.<vendor>`.
    pub async fn declare_vendor(
        &self,
        channel: &Channel,
        vendor: &str,
    ) -> Result<(), lapin::Error> {
        let queue = self.request_queue(vendor);
        self.declare_quorum_queue(channel, &queue, true).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                self.exchange().into(),
                Self::request_key(vendor).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// A durable quorum queue; `dead_letter` routes rejected messages to the DLX.
    async fn declare_quorum_queue(
        &self,
        channel: &Channel,
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
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The production names are exactly the contract names of DESIGN.md.
    #[test]
    fn default_names_match_the_contract() {
        let topology = Topology::default();
        assert_eq!(topology.exchange(), "provisioner");
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
        assert_eq!(topology.exchange(), "t1.provisioner");
        assert_eq!(
            topology.request_queue("hetzner"),
            "t1.provision.requests.hetzner"
        );
        assert_eq!(Topology::event_key("hetzner"), "event.hetzner");
    }
}
