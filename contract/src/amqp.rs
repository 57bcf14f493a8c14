//! AMQP plumbing both programs share: connecting with backoff and publishing with
//! confirms.
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
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix for every exchange and queue name (lets test runs share a broker).
    #[arg(long, env = "AMQP_NAME_PREFIX", default_value = "")]
    pub amqp_name_prefix: String,
}

impl AmqpArgs {
    /// The AMQP names these flags select.
    pub fn topology(&self) -> Topology {
        Topology::with_prefix(&self.amqp_name_prefix)
    }
}

/// Opens a connection, retrying with exponential backoff (capped at 10 s) until it works or
/// `give_up` resolves. Each failure is logged with `name` so an operator sees who waits.
pub async fn connect_with_backoff(
    url: &str,
    name: &str,
    give_up: impl Future<Output = ()>,
) -> Option<Connection> {
    let mut delay = Duration::from_millis(200);
    let mut give_up = std::pin::pin!(give_up);
    loop {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(url, properties).await {
            Ok(connection) => return Some(connection),
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "cannot connect to RabbitMQ at {}", redact(url));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut give_up => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
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

/// The AMQP reply code of a channel or connection error the broker sent (`403` access
/// refused, `404` not found, ...); `None` for other errors.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// A channel in confirm mode that publishes to one exchange: order-api's to the requests
/// exchange, a host's to the results exchange (see [`Topology`]).
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    exchange: String,
}

impl Publisher {
    /// Opens a channel on `connection` that publishes to `exchange`, in confirm mode.
    pub async fn open(
        connection: &Connection,
        exchange: impl Into<String>,
    ) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            exchange: exchange.into(),
        })
    }

    /// Sends a message without waiting for its confirm; pass the result to
    /// [`Publisher::confirmed`]. Lets a caller have many publishes in flight at once.
    pub async fn send(
        &self,
        routing_key: &str,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<PublisherConfirm, lapin::Error> {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                envelope.properties(),
            )
            .await
    }

    /// Waits for the broker's verdict on a message sent with [`Publisher::send`].
    pub async fn confirmed(
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
            Confirmation::Nack(None) => Err(PublishError::Nacked),
        }
    }

    /// Closes the channel (after its pending confirms).
    pub async fn close(&self) -> Result<(), lapin::Error> {
        self.channel.close(200, "closing".into()).await
    }

    /// Publishes one message and waits until the broker has it on a queue.
    pub async fn publish(
        &self,
        routing_key: &str,
        envelope: &Envelope,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let confirm = self.send(routing_key, envelope, body).await?;
        Self::confirmed(confirm, routing_key).await
    }

    /// Publishes one message to `exchange` with the given properties (mandatory, confirmed):
    /// for messages that are not new envelopes, such as a request sent on to a retry queue
    /// with its headers.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let confirm = self
            .channel
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
            .await?;
        Self::confirmed(confirm, routing_key).await
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

    /// Passwords never reach the logs.
    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
