//! A user's delete or cancel of an order for one server: the order moves, its request is
//! queued and what it had waiting in the outbox dropped, in one transaction (an order for
//! several servers winds down in [`super::fleets`]).

use anyhow::Context;
use chrono::Utc;
use uuid::Uuid;

use super::Store;
use super::fleets::insert_event;
use super::orders::OrderEvent;
use super::outbox_rows::{OutboxMessage, drop_unpublished, insert_outbox};
use crate::lifecycle::{self, Transition};

impl Store {
    /// Moves an order on its way to `cancelling` and queues its cancel request, dropping its
    /// unpublished create (in one transaction). `false` when the order was past cancelling
    /// (nothing changed).
    pub async fn request_cancel(
        &self,
        order_id: Uuid,
        outbox: &OutboxMessage,
    ) -> anyhow::Result<bool> {
        self.request_change(
            order_id,
            lifecycle::CANCEL_REQUESTED,
            "cancellation requested",
            outbox,
        )
        .await
    }

    /// A user's change (`step`), with `message` in the event log and `outbox` queued, in one
    /// transaction; whatever else the order had waiting in the outbox is dropped (a cancel's
    /// unpublished create never goes out; a create that the relay is publishing right now may
    /// still reach a host, and the cancel or the late server's delete covers it). `false`
    /// when the order was not in one of the step's sources (nothing changed). A delete is
    /// [`lifecycle::DELETE_REQUESTED`] with "deletion requested", a cancel
    /// [`lifecycle::CANCEL_REQUESTED`] with "cancellation requested" ([`Store::request_cancel`]).
    pub async fn request_change(
        &self,
        order_id: Uuid,
        step: Transition,
        message: &str,
        outbox: &OutboxMessage,
    ) -> anyhow::Result<bool> {
        let Some(mut tx) = self.begin_change(order_id, step).await? else {
            return Ok(false);
        };
        drop_unpublished(&mut tx, order_id).await?;
        let now = Utc::now();
        let event = OrderEvent {
            at: now,
            status: step.target,
            message: message.into(),
            attempt: None,
        };
        insert_event(&mut tx, order_id, &event).await?;
        insert_outbox(&mut tx, outbox, now).await?;
        tx.commit()
            .await
            .with_context(|| format!("committing the move to {}", step.target))?;
        self.events_committed([order_id]);
        Ok(true)
    }
}
