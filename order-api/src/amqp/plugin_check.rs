//! The remote plugin check: asks a host to check an order with the vendor's plugin before it
//! is accepted (the replies come on the results exchange to a queue of this session's own),
//! so a size, region or image the vendor does not have is a `422` at once instead of a
//! failed order a moment later.
//!
//! Under load the checks go in rounds: those that come while a round awaits its answers go
//! together in the next, one message per vendor ([`ValidateBatch`]) and one reply with their
//! verdicts, instead of two messages per order (BENCHMARKS.md, *Checks in rounds*).
//!
//! The check is an improvement, never a gate on the broker: when it cannot be made (the
//! broker is down, no host of the vendor answers validations, or none answers within the
//! time-out) the order is accepted unchecked, as before, and the plugin's create refuses a
//! bad one later. Orders are still accepted while RabbitMQ is down.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection};
use provisioner_contract::{
    Envelope, ServerSpec, Topology, ValidateAnswer, ValidateBatch, ValidateCheck, ValidateReply,
    ValidateRequest, decode, encode,
};
use tokio::sync::{Notify, RwLock, mpsc, oneshot};
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

/// How long a round of checks holds the next one back at most, waiting for its answers
/// (see [`gather_checks`]): about a host's answer time when it is not busy.
const ROUND_HOLD: Duration = Duration::from_millis(2);

/// A check awaiting its verdict.
struct Waiter {
    verdict: oneshot::Sender<Verdict>,
    /// The round it went out in, when checks go in rounds.
    round: Option<Arc<Round>>,
}

/// The checks still awaited, by their id (a lone check's message's correlation id, or its
/// id within a batch).
type Waiting = Arc<Mutex<HashMap<Uuid, Waiter>>>;

/// One round of checks sent together: how many are unanswered, and the signal that none is.
struct Round {
    unanswered: AtomicUsize,
    answered: Notify,
}

impl Round {
    fn new(checks: usize) -> Self {
        Self {
            unanswered: AtomicUsize::new(checks),
            answered: Notify::new(),
        }
    }

    /// One of its checks got its verdict (or was given up).
    fn settled_one(&self) {
        if self.unanswered.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.answered.notify_one();
        }
    }
}

/// Gives check `id` its verdict, if it is still awaited.
fn settle(waiting: &Waiting, id: Uuid, verdict: Verdict) {
    let waiter = waiting.lock().ok().and_then(|mut map| map.remove(&id));
    if let Some(waiter) = waiter {
        let _ = waiter.verdict.send(verdict);
        if let Some(round) = waiter.round {
            round.settled_one();
        }
    }
}

/// A check handed to the gathering task.
struct PendingCheck {
    id: Uuid,
    vendor: String,
    spec: ServerSpec,
    timeout: Duration,
}

/// What sends checks: the session's validation channel and where the answers come.
struct Sender {
    channel: Channel,
    exchange: String,
    /// The routing key of this session's replies queue: the `reply_to` of its checks.
    reply_to: String,
    waiting: Waiting,
}

/// A broker session's validation channel.
pub struct Validator {
    sender: Arc<Sender>,
    /// Where checks go to be sent in rounds; `None` sends each alone, at once.
    rounds: Option<mpsc::UnboundedSender<PendingCheck>>,
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
    ///
    /// `batch_max` > 1 sends the checks in rounds ([`gather_checks`]), up to that many of a
    /// vendor in one message; 1 sends each check alone as it comes, as order-api did before
    /// batches (for hosts that do not know them yet).
    pub async fn open(
        connection: &Connection,
        topology: &Topology,
        batch_max: usize,
    ) -> anyhow::Result<Self> {
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
                let decoded: Result<(Envelope, ValidateAnswer), _> =
                    decode(&delivery.properties, &delivery.data);
                match decoded {
                    Ok((envelope, ValidateAnswer::One(reply))) => {
                        if let Some(id) = envelope.correlation_id {
                            settle(&routes, id, verdict(reply));
                        }
                    }
                    Ok((_, ValidateAnswer::Batch(batch))) => {
                        for answer in batch.verdicts {
                            settle(&routes, answer.id, verdict(answer.reply));
                        }
                    }
                    Err(error) => tracing::warn!("undecodable validation reply: {error}"),
                }
            }
        });
        let sender = Arc::new(Sender {
            channel,
            exchange: topology.requests_exchange(),
            reply_to: Topology::reply_key(instance),
            waiting,
        });
        let rounds = (batch_max > 1).then(|| {
            let (rounds, pending) = mpsc::unbounded_channel();
            tokio::spawn(gather_checks(sender.clone(), pending, batch_max));
            rounds
        });
        Ok(Self { sender, rounds })
    }

    async fn check(&self, vendor: &str, spec: &ServerSpec, timeout: Duration) -> Verdict {
        let id = Uuid::new_v4();
        let (sender, mut verdict) = oneshot::channel();
        if let Ok(mut waiting) = self.sender.waiting.lock() {
            waiting.insert(
                id,
                Waiter {
                    verdict: sender,
                    round: None,
                },
            );
        }
        // Removes the entry however the check ends, also when the request is dropped (its
        // client went away) before a reply came.
        let _forget = Forget {
            waiting: &self.sender.waiting,
            id,
        };
        let answered = async {
            match &self.rounds {
                Some(rounds) => {
                    let pending = PendingCheck {
                        id,
                        vendor: vendor.to_string(),
                        spec: spec.clone(),
                        timeout,
                    };
                    if rounds.send(pending).is_err() {
                        return Verdict::Unchecked("the validation channel closed".into());
                    }
                }
                None => {
                    // The reply may come before the publish's confirm (which only tells an
                    // unroutable check early): whichever comes first decides, a reply at
                    // once.
                    let checks = vec![ValidateCheck {
                        id,
                        spec: spec.clone(),
                    }];
                    tokio::select! {
                        answer = &mut verdict => return answer_of(answer),
                        () = self.sender.send(vendor, checks, timeout) => {}
                    }
                }
            }
            answer_of(verdict.await)
        };
        tokio::time::timeout(timeout, answered)
            .await
            .unwrap_or_else(|_| Verdict::Unchecked(format!("no host answered within {timeout:?}")))
    }
}

/// The checks' gathering task: sends the first check waiting and every other one already
/// there (up to `batch_max`), one message per vendor, then waits for that round's answers,
/// [`ROUND_HOLD`] at most, before the next. The checks that come meanwhile go together in
/// the next round: under load one message carries many checks (and one reply their
/// verdicts) instead of two messages per order; a check that comes alone goes at once.
async fn gather_checks(
    sender: Arc<Sender>,
    mut pending: mpsc::UnboundedReceiver<PendingCheck>,
    batch_max: usize,
) {
    while let Some(first) = pending.recv().await {
        let mut checks = vec![first];
        while checks.len() < batch_max {
            let Ok(next) = pending.try_recv() else {
                break;
            };
            checks.push(next);
        }
        let round = Arc::new(Round::new(checks.len()));
        if let Ok(mut waiting) = sender.waiting.lock() {
            for check in &checks {
                match waiting.get_mut(&check.id) {
                    Some(waiter) => waiter.round = Some(round.clone()),
                    // Given up already (its request went away).
                    None => round.settled_one(),
                }
            }
        }
        let mut by_vendor: BTreeMap<String, (Duration, Vec<ValidateCheck>)> = BTreeMap::new();
        for check in checks {
            let (timeout, vendor_checks) = by_vendor
                .entry(check.vendor)
                .or_insert((check.timeout, Vec::new()));
            *timeout = (*timeout).max(check.timeout);
            vendor_checks.push(ValidateCheck {
                id: check.id,
                spec: check.spec,
            });
        }
        for (vendor, (timeout, checks)) in by_vendor {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(&vendor, checks, timeout).await });
        }
        let _ = tokio::time::timeout(ROUND_HOLD, round.answered.notified()).await;
    }
}

impl Sender {
    /// Sends `checks` of `vendor` (one as a [`ValidateRequest`], several as a
    /// [`ValidateBatch`]), expiring on the queue after `timeout`; when the broker cannot
    /// route it or the publish fails, each check is answered unchecked, saying why.
    async fn send(&self, vendor: &str, checks: Vec<ValidateCheck>, timeout: Duration) {
        let ids: Vec<Uuid> = checks.iter().map(|check| check.id).collect();
        let (correlation_id, body) = match <[ValidateCheck; 1]>::try_from(checks) {
            Ok([check]) => (
                check.id,
                encode(&ValidateRequest {
                    vendor: vendor.to_string(),
                    spec: check.spec,
                }),
            ),
            Err(checks) => (
                Uuid::new_v4(),
                encode(&ValidateBatch {
                    vendor: vendor.to_string(),
                    checks,
                }),
            ),
        };
        let envelope = Envelope {
            message_id: Uuid::new_v4(),
            correlation_id: Some(correlation_id),
            traceparent: None,
        };
        let properties = envelope
            .properties()
            .with_delivery_mode(1)
            .with_reply_to(ShortString::from(self.reply_to.as_str()))
            .with_expiration(ShortString::from(timeout.as_millis().to_string()));
        let routing_key = Topology::validate_key(vendor);
        let confirmation = async {
            self.channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    properties,
                )
                .await?
                .await
        }
        .await;
        let failed = match confirmation {
            Ok(Confirmation::Ack(None)) => return,
            Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => format!(
                "no host of '{vendor}' answers validations (hosts older than this order-api?)"
            ),
            Ok(other) => format!("the broker said {other:?}"),
            Err(error) => format!("publishing failed: {error}"),
        };
        for id in ids {
            settle(&self.waiting, id, Verdict::Unchecked(failed.clone()));
        }
    }
}

/// What a host's reply says of an order.
fn verdict(reply: ValidateReply) -> Verdict {
    match reply {
        ValidateReply::Valid => Verdict::Valid,
        ValidateReply::Invalid { message } => Verdict::Invalid(message),
        ValidateReply::Unchecked { reason } => Verdict::Unchecked(reason),
    }
}

/// A check's verdict, or why there is none when its waiter went away unanswered.
fn answer_of(answer: Result<Verdict, oneshot::error::RecvError>) -> Verdict {
    answer.unwrap_or_else(|_| Verdict::Unchecked("the validation channel closed".into()))
}

/// Takes a check's entry out of the waiting ones when dropped (its round no longer waits for
/// it).
struct Forget<'a> {
    waiting: &'a Waiting,
    id: Uuid,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let waiter = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut map| map.remove(&self.id));
        if let Some(round) = waiter.and_then(|waiter| waiter.round) {
            round.settled_one();
        }
    }
}
