//! `GET /v1/orders/{id}/events`: an order's progress as Server-Sent Events.
//!
//! The stream sends the order's event log, then each new event as it is recorded, and ends
//! with an `end` event once the order has settled (`active`, `failed`, `deleted` or
//! `cancelled`: nothing is in progress). Each event's SSE `id` (and its data's `seq`) is its
//! number in the order's own log, 1, 2, 3 ...; a client that reconnects with `Last-Event-ID`
//! gets only what came after.
//!
//! What a stream costs, and its bounds:
//! - A stream reads the database when its order has news ([`crate::store::EventFeed`]: told
//!   after each commit on this instance, and through PostgreSQL's `LISTEN/NOTIFY` of any
//!   instance's writes), and once every [`READ_ANYWAY`] in case news was missed. An idle
//!   stream costs no reads.
//! - A caller (a tenant, or the admin) has at most `--event-streams-per-tenant` streams open
//!   on an instance, and the instance at most `--event-streams-max` in all ([`StreamSettings`]);
//!   one more answers `429 too-many-streams`. A stream gives its place back when it closes.
//! - A stream's token is checked again every [`TOKEN_RECHECK`], trusting the token cache a
//!   re-check less than plain requests do: a stream ends within 5 s of its token's revoke,
//!   as other requests start to answer 401 within 5 s.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::http::AppState;
use crate::http::orders::OrderView;
use crate::http::problem::{ApiError, Problem, excerpt};
use crate::metrics::Metrics;
use crate::store::{Order, OrderEvent, OrderNews, Store};

/// How long a stream waits for news before it reads the database anyway (a notification
/// lost on the way costs a delay, never an event).
pub const READ_ANYWAY: Duration = Duration::from_secs(30);
/// How often an open stream checks that its token is still valid.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(1);
/// The longest `Last-Event-ID` (digits; any such number fits an `i64`).
const MAX_EVENT_ID_DIGITS: usize = 18;

/// How many event streams may be open.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamSettings {
    /// Most `/events` streams one tenant (or the admin) may have open on this instance; one
    /// more answers 429.
    #[arg(long, env = "EVENT_STREAMS_PER_TENANT", default_value_t = 64)]
    pub event_streams_per_tenant: usize,
    /// Most `/events` streams open on this instance in all; one more answers 429. Must be
    /// below `--max-connections`, so that streams never take every connection (other
    /// requests, `/readyz` and the 429 itself need some).
    #[arg(long, env = "EVENT_STREAMS_MAX", default_value_t = 512)]
    pub event_streams_max: usize,
}

/// The open streams, counted per caller and in all.
pub struct StreamSlots {
    settings: StreamSettings,
    metrics: Arc<Metrics>,
    open: Mutex<OpenStreams>,
}

#[derive(Default)]
struct OpenStreams {
    total: usize,
    /// By tenant (`None`: the admin).
    by_caller: HashMap<Option<String>, usize>,
}

/// A place taken by an open stream; dropping it gives it back.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    caller: Option<String>,
}

impl StreamSlots {
    /// No stream open yet.
    pub fn new(settings: StreamSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            metrics,
            open: Mutex::default(),
        })
    }

    /// A place for one more stream of `caller`, or `429 too-many-streams`.
    pub(super) fn take(self: &Arc<Self>, caller: &Caller) -> Result<StreamSlot, ApiError> {
        let key = caller.tenant().map(str::to_string);
        let mut open = self
            .open
            .lock()
            .map_err(|_| anyhow::anyhow!("the stream count was poisoned"))?;
        let of_caller = open.by_caller.get(&key).copied().unwrap_or(0);
        if of_caller >= self.settings.event_streams_per_tenant {
            return Err(ApiError::TooManyStreams(format!(
                "this tenant has {of_caller} event streams open, as many as it may \
                 (--event-streams-per-tenant); close one first"
            )));
        }
        if open.total >= self.settings.event_streams_max {
            return Err(ApiError::TooManyStreams(
                "this instance has as many event streams open as it may (--event-streams-max); \
                 try again later"
                    .into(),
            ));
        }
        open.total += 1;
        *open.by_caller.entry(key.clone()).or_default() += 1;
        self.metrics.event_streams_changed(1);
        Ok(StreamSlot {
            slots: self.clone(),
            caller: key,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(count) = open.by_caller.get_mut(&self.caller) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.by_caller.remove(&self.caller);
                }
            }
        }
        self.slots.metrics.event_streams_changed(-1);
    }
}

/// An event of the order's log as a stream sends it: with its number.
#[derive(Serialize)]
struct NumberedEvent<'a> {
    seq: i64,
    #[serde(flatten)]
    event: &'a OrderEvent,
}

/// What woke a waiting stream.
enum Wake {
    /// News, or time to read anyway.
    Read,
    /// Time to check the token.
    CheckToken,
}

/// Where a stream is.
struct Follow {
    store: Store,
    metrics: Arc<Metrics>,
    order_id: Uuid,
    /// Whose orders the caller sees (`None`: the admin, every tenant's).
    tenant: Option<String>,
    /// The caller's token, checked again every [`TOKEN_RECHECK`].
    token: String,
    /// The number of the last event sent.
    last: i64,
    ready: VecDeque<Event>,
    ended: bool,
    news: OrderNews,
    token_check: tokio::time::Interval,
    _slot: StreamSlot,
}

impl Follow {
    /// Queues `events` (read after `last`) and, once `order` settled, the `end` event.
    fn take(&mut self, order: Order, events: Vec<(i64, OrderEvent)>) {
        for (seq, event) in events {
            self.last = seq;
            let data =
                serde_json::to_string(&NumberedEvent { seq, event: &event }).unwrap_or_default();
            self.ready.push_back(
                Event::default()
                    .id(seq.to_string())
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

    /// Reads the order's events after the last one sent.
    async fn read(&mut self) {
        self.news.mark_seen();
        self.metrics.event_stream_read();
        match self
            .store
            .stream_events(self.order_id, self.tenant.as_deref(), self.last)
            .await
        {
            Ok(Some((order, events))) => self.take(order, events),
            Ok(None) => self.ended = true,
            Err(error) => {
                // The next read may succeed (a busy or restarting database); the client
                // keeps its stream meanwhile.
                tracing::warn!(order_id = %self.order_id, "reading events for a stream: {error:#}");
            }
        }
    }

    /// Whether the stream's token still holds.
    async fn token_holds(&self) -> bool {
        token_holds(&self.store, &self.token).await
    }

    /// The next SSE event: waits for news, and ends after the `end` event or when the token
    /// no longer holds.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            if self.ended {
                return None;
            }
            let read_anyway = tokio::time::sleep(READ_ANYWAY);
            tokio::pin!(read_anyway);
            loop {
                let wake = tokio::select! {
                    () = self.news.changed() => Wake::Read,
                    () = &mut read_anyway => Wake::Read,
                    _ = self.token_check.tick() => Wake::CheckToken,
                };
                match wake {
                    Wake::Read => break,
                    Wake::CheckToken if self.token_holds().await => {}
                    Wake::CheckToken => {
                        tracing::info!(order_id = %self.order_id, "an event stream's token was revoked; ending it");
                        return None;
                    }
                }
            }
            self.read().await;
        }
    }
}

/// Whether a stream's `token` still holds (a database error counts as yes: the stream is not
/// cut for a passing fault).
pub(super) async fn token_holds(store: &Store, token: &str) -> bool {
    // The remembered answer is trusted a re-check less than plain requests trust it, so a
    // revoked token's stream ends within the cache's time, as its requests do.
    let max_age = crate::store::TOKEN_CACHE_TTL.saturating_sub(TOKEN_RECHECK);
    match store.caller_known_within(token, max_age).await {
        Ok(caller) => caller.is_some(),
        Err(error) => {
            tracing::warn!("checking a stream's token: {error:#}");
            true
        }
    }
}

/// The bearer token of a request the `Caller` extractor accepted.
pub(super) fn bearer_token(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .map(|(_, token)| token.trim().to_string())
        .ok_or_else(|| ApiError::Unauthorized("no bearer token".into()))
}

/// How often an open stream checks its token: every [`TOKEN_RECHECK`], not catching up
/// missed ticks.
pub(super) fn token_check_interval() -> tokio::time::Interval {
    let mut every =
        tokio::time::interval_at(tokio::time::Instant::now() + TOKEN_RECHECK, TOKEN_RECHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every
}

/// One Server-Sent Event of the stream, for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OrderStreamEvent {
    /// `order-event` (an event of the order's log) or `end` (the order settled).
    #[schema(example = "order-event")]
    pub event: String,
    /// The event's number in the order's log, 1, 2, 3 ... (`order-event` only): send it
    /// back as `Last-Event-ID`.
    pub id: Option<String>,
    /// JSON: the log event (`{seq, at, status, message, attempt?}`, `seq` as in `id`) or, for
    /// `end`, the order.
    pub data: String,
}

/// `GET /v1/orders/{id}/events`.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}/events",
    tag = "orders",
    params(
        ("id" = String, Path, description = "The order id"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{1,18}$",
         description = "The id of the last event received (its number in the order's log): only later events are sent"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `order-event` (data: an event of the order's log; id: its number, 1, 2, 3 ...), then `end` (data: the order) once it settled. The stream also ends within seconds of its token's revoke.", content_type = "text/event-stream", body = OrderStreamEvent),
        (status = 400, description = "A malformed Last-Event-ID", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such order (or another tenant's)", content_type = "application/problem+json", body = Problem),
        (status = 429, description = "The tenant, or the instance, has as many event streams open as it may", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn order_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no order with id '{}'", excerpt(&id)));
    let order_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let last = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .filter(|text| {
                (1..=MAX_EVENT_ID_DIGITS).contains(&text.len())
                    && text.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::InvalidQuery(
                    "Last-Event-ID must be the id of an event this stream sent (digits)".into(),
                )
            })?,
    };
    let token = bearer_token(&headers)?;
    let slot = state.event_streams.take(&caller)?;
    // Subscribed before the first read: news committed from here on wakes the stream.
    let news = state.store.order_news(order_id);
    let tenant = caller.tenant().map(str::to_string);
    let mut follow = Follow {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        order_id,
        tenant,
        token,
        last,
        ready: VecDeque::new(),
        ended: false,
        news,
        token_check: token_check_interval(),
        _slot: slot,
    };
    // The first read answers 404 for an unknown order (or another tenant's) and is the
    // stream's first batch.
    follow.news.mark_seen();
    state.metrics.event_stream_read();
    // A server of an order for several is followed through that order.
    if crate::store::fleets::fleet_of(order_id).is_some() {
        return Err(not_found());
    }
    let (order, events) = state
        .store
        .stream_events(order_id, follow.tenant.as_deref(), last)
        .await?
        .ok_or_else(not_found)?;
    follow.take(order, events);
    let stream = futures_util::stream::unfold(follow, Follow::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    /// The document says what the handler takes of `Last-Event-ID`: digits (an absent header
    /// is allowed; a `null` is not a value of it).
    #[test]
    fn the_document_gives_last_event_ids_form() {
        let document = crate::http::openapi::document();
        let parameters = document["paths"]["/v1/orders/{id}/events"]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let last = parameters
            .iter()
            .find(|p| p["name"] == "Last-Event-ID")
            .expect("a Last-Event-ID parameter");
        assert_eq!(last["required"], false, "{last}");
        assert_eq!(last["schema"]["type"], "string", "{last}");
        assert_eq!(last["schema"]["pattern"], "^[0-9]{1,18}$", "{last}");
    }
}
