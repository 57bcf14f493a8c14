//! `GET /v1/orders/{id}/events`: an order's progress as Server-Sent Events.
//!
//! The stream sends the order's event log, then each new event as it is recorded, and ends
//! with an `end` event once the order has settled (`active`, `failed`, `deleted` or
//! `cancelled`: nothing is in progress). Each event's SSE `id` is its number in the log; a client that
//! reconnects with `Last-Event-ID` gets only what came after. New events are found by
//! reading the database (every [`POLL`]), so an update applied by any order-api instance
//! sharing the database reaches every stream.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use uuid::Uuid;

use crate::auth::Caller;
use crate::http::AppState;
use crate::http::orders::OrderView;
use crate::http::problem::{ApiError, Problem};
use crate::store::{Order, OrderEvent, Store};

/// How often a stream looks for new events.
const POLL: Duration = Duration::from_millis(250);

/// Where a stream is.
struct Follow {
    store: Store,
    order_id: Uuid,
    /// The number of the last event sent.
    last: i64,
    ready: VecDeque<Event>,
    ended: bool,
}

impl Follow {
    /// Queues `events` (read after `last`) and, once `order` settled, the `end` event.
    fn take(&mut self, order: Order, events: Vec<(i64, OrderEvent)>) {
        for (number, event) in events {
            self.last = number;
            let data = serde_json::to_string(&event).unwrap_or_default();
            self.ready.push_back(
                Event::default()
                    .id(number.to_string())
                    .event("order-event")
                    .data(data),
            );
        }
        if order.status.is_settled() {
            let view = OrderView::without_events(order);
            let data = serde_json::to_string(&view).unwrap_or_default();
            self.ready
                .push_back(Event::default().event("end").data(data));
            self.ended = true;
        }
    }

    /// The next SSE event: waits for new events, and ends after the `end` event.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            if self.ended {
                return None;
            }
            match self.store.events_since(self.order_id, self.last).await {
                Ok(Some((order, events))) => self.take(order, events),
                Ok(None) => {
                    self.ended = true;
                }
                Err(error) => {
                    // The next poll may succeed (a busy or restarting database); the client
                    // keeps its stream meanwhile.
                    tracing::warn!(order_id = %self.order_id, "reading events for a stream: {error:#}");
                }
            }
            if self.ready.is_empty() && !self.ended {
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// One Server-Sent Event of the stream, for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OrderStreamEvent {
    /// `order-event` (an event of the order's log) or `end` (the order settled).
    #[schema(example = "order-event")]
    pub event: String,
    /// The event's number (`order-event` only): send it back as `Last-Event-ID`.
    pub id: Option<String>,
    /// JSON: the log event (`{at, status, message, attempt?}`) or, for `end`, the order.
    pub data: String,
}

/// `GET /v1/orders/{id}/events`.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}/events",
    tag = "orders",
    params(
        ("id" = String, Path, description = "The order id"),
        ("Last-Event-ID" = Option<String>, Header,
         description = "The id of the last event received: only later events are sent"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `order-event` (data: an event of the order's log; id: its number), then `end` (data: the order) once it settled", content_type = "text/event-stream", body = OrderStreamEvent),
        (status = 400, description = "A malformed Last-Event-ID", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such order (or another tenant's)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn order_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no order with id '{id}'"));
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let last = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .filter(|number| *number >= 0)
            .ok_or_else(|| {
                ApiError::InvalidQuery(
                    "Last-Event-ID must be the id of an event this stream sent".into(),
                )
            })?,
    };
    // The first read answers 404 for an unknown order and is the stream's first batch.
    let (order, events) = state
        .store
        .events_since(order_id, last)
        .await?
        .filter(|(order, _)| caller.may_see(&order.tenant))
        .ok_or_else(not_found)?;
    let mut follow = Follow {
        store: state.store.clone(),
        order_id,
        last,
        ready: VecDeque::new(),
        ended: false,
    };
    follow.take(order, events);
    let stream = futures_util::stream::unfold(follow, Follow::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
