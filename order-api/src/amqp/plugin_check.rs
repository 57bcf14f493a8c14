//! The remote plugin check: asks a host to check an order with the vendor's plugin before it
//! is accepted (the replies come on the results exchange to a queue of this session's own),
//! so a size, region or image the vendor does not have is a `422` at once instead of a
//! failed order a moment later.
//!
//! The check is an improvement, never a gate on the broker: when it cannot be made (the
//! broker is down, no host of the vendor answers validations, or none answers within the
//! time-out) the order is accepted unchecked, as before, and the plugin's create refuses a
//! bad one later. Orders are still accepted while RabbitMQ is down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection};
use provisioner_contract::{
    Envelope, ServerSpec, Topology, ValidateReply, ValidateRequest, decode, encode,
};
use tokio::sync::{RwLock, oneshot};
use uuid::Uuid;

/// What became of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The plugin accepts the server.
    Valid,
    /// The plugin refuses it, saying why.
    Invalid(String),
    /// No verdict (why): the order is accepted unchecked.
    Unchecked(String),
}

/// The replies still awaited, by correlation id.
type Waiting = Arc<Mutex<HashMap<Uuid, oneshot::Sender<ValidateReply>>>>;

/// A broker session's validation channel.
pub struct Validator {
    channel: Channel,
    exchange: String,
    /// The routing key of this session's replies queue: the `reply_to` of its checks.
    reply_to: String,
    waiting: Waiting,
}

/// The validator of the current broker session, if one is up; shared with the handlers.
#[derive(Clone, Default)]
pub struct ValidatorSlot(Arc<RwLock<Option<Arc<Validator>>>>);

impl ValidatorSlot {
    /// Puts a session's validator in (or takes it out with `None`).
    pub async fn set(&self, validator: Option<Arc<Validator>>) {
        *self.0.write().await = validator;
    }

    /// Checks `spec` with `vendor`'s plugin, waiting at most `timeout` for a host.
    pub async fn check(&self, vendor: &str, spec: &ServerSpec, timeout: Duration) -> Verdict {
        let validator = self.0.read().await.clone();
        match validator {
            Some(validator) => validator.check(vendor, spec, timeout).await,
            None => Verdict::Unchecked("the broker is not connected".into()),
        }
    }
}

impl Validator {
    /// Opens the session's validation channel (confirm mode, so an unroutable check is
    /// known at once), declares the session's replies queue and starts taking replies.
    /// Not RabbitMQ's direct reply-to: a host would need the right to publish to the
    /// default exchange for it, and with that it could put anything on any queue.
    pub async fn open(connection: &Connection, topology: &Topology) -> anyhow::Result<Self> {
        let channel = connection
            .create_channel()
            .await
            .context("opening the validation channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("putting the validation channel in confirm mode")?;
        let instance = Uuid::new_v4();
        let queue = topology
            .declare_replies_queue(&channel, instance)
            .await
            .context("declaring the validation replies queue")?;
        let mut replies = channel
            .basic_consume(
                queue.as_str().into(),
                "order-api-validations".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("consuming validation replies")?;
        let waiting: Waiting = Arc::default();
        let routes = waiting.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                let decoded: Result<(Envelope, ValidateReply), _> =
                    decode(&delivery.properties, &delivery.data);
                match decoded {
                    Ok((envelope, reply)) => {
                        let waiter = envelope
                            .correlation_id
                            .and_then(|id| routes.lock().ok()?.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(reply);
                        }
                    }
                    Err(error) => tracing::warn!("undecodable validation reply: {error}"),
                }
            }
        });
        Ok(Self {
            channel,
            exchange: topology.requests_exchange(),
            reply_to: Topology::reply_key(instance),
            waiting,
        })
    }

    async fn check(&self, vendor: &str, spec: &ServerSpec, timeout: Duration) -> Verdict {
        let id = Uuid::new_v4();
        let (sender, reply) = oneshot::channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(id, sender);
        }
        // Removes the entry however the check ends, also when the request is dropped (its
        // client went away) before a reply came.
        let _forget = Forget {
            waiting: &self.waiting,
            id,
        };
        tokio::time::timeout(timeout, self.ask(id, vendor, spec, timeout, reply))
            .await
            .unwrap_or_else(|_| Verdict::Unchecked(format!("no host answered within {timeout:?}")))
    }

    async fn ask(
        &self,
        id: Uuid,
        vendor: &str,
        spec: &ServerSpec,
        timeout: Duration,
        reply: oneshot::Receiver<ValidateReply>,
    ) -> Verdict {
        let request = ValidateRequest {
            vendor: vendor.to_string(),
            spec: spec.clone(),
        };
        let envelope = Envelope {
            message_id: Uuid::new_v4(),
            correlation_id: Some(id),
            traceparent: None,
        };
        let properties = envelope
            .properties()
            .with_delivery_mode(1)
            .with_reply_to(ShortString::from(self.reply_to.as_str()))
            .with_expiration(ShortString::from(timeout.as_millis().to_string()));
        let routing_key = Topology::validate_key(vendor);
        let sent = async {
            self.channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &encode(&request),
                    properties,
                )
                .await?
                .await
        };
        // The reply may come before the publish's confirm (which only tells an unroutable
        // check early): whichever comes first decides, a reply at once.
        tokio::pin!(sent);
        let mut reply = reply;
        let confirmation = tokio::select! {
            answer = &mut reply => return verdict(answer),
            confirmation = &mut sent => confirmation,
        };
        match confirmation {
            Ok(Confirmation::Ack(None)) => {}
            Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => {
                return Verdict::Unchecked(format!(
                    "no host of '{vendor}' answers validations (hosts older than this order-api?)"
                ));
            }
            Ok(other) => return Verdict::Unchecked(format!("the broker said {other:?}")),
            Err(error) => return Verdict::Unchecked(format!("publishing failed: {error}")),
        }
        verdict(reply.await)
    }
}

/// What a host's reply (or the reply channel's closing) says of an order.
fn verdict(reply: Result<ValidateReply, oneshot::error::RecvError>) -> Verdict {
    match reply {
        Ok(reply) => reply.into(),
        Err(_) => Verdict::Unchecked("the validation channel closed".into()),
    }
}

impl From<ValidateReply> for Verdict {
    fn from(reply: ValidateReply) -> Self {
        match reply {
            ValidateReply::Valid => Verdict::Valid,
            ValidateReply::Invalid { message } => Verdict::Invalid(message),
            ValidateReply::Unchecked { reason } => Verdict::Unchecked(reason),
        }
    }
}

/// Takes a check's entry out of the waiting replies when dropped.
struct Forget<'a> {
    waiting: &'a Waiting,
    id: Uuid,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&self.id);
        }
    }
}
