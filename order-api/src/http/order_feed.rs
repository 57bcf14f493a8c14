//! `GET /v1/events`: every change to the caller's orders as Server-Sent Events (a tenant's
//! own orders; every tenant's for the admin), so a list of orders stays current without
//! reading the list again.
//!
//! The stream starts with a `ready` event: list the orders (`GET /v1/orders`) after it, and
//! apply each `order` event (data: the order as it is now, without its event log) to the list
//! by id; an order not in the list is new. A `resync` event says news may have been missed
//! (the stream fell behind, or the database's notifications were interrupted): list the
//! orders again. The stream sends no history, and an order may come twice for one change.
//!
//! What it costs: news comes from the store's feed ([`crate::store::AllNews`]); a stream
//! gathers the order ids with news for [`GATHER`] and reads those orders in one query, so a
//! busy instance costs each stream at most a few reads a second, and an idle one none. Streams
//! count against the same limits as the orders' own event streams
//! ([`super::events::StreamSettings`]), and end within seconds of their token's revoke.
//!
//! On PostgreSQL with several instances, an order made on another instance shows with its
//! next change (an order's first event sends no notification).

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use uuid::Uuid;

use super::events::{StreamSlot, bearer_token, token_check_interval, token_holds};
use crate::auth::Caller;
use crate::http::AppState;
use crate::http::orders::OrderView;
use crate::http::problem::{ApiError, Problem};
use crate::metrics::Metrics;
use crate::store::{AllNews, News, Store};
use std::sync::Arc;

/// How long a stream gathers news before it reads the orders named.
pub const GATHER: Duration = Duration::from_millis(250);
/// Most orders read in one query.
const READ_CHUNK: usize = 200;

/// One Server-Sent Event of `GET /v1/events`, for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FeedEvent {
    /// `ready` (subscribed: list the orders now), `order` (an order changed or was made) or
    /// `resync` (news may have been missed: list the orders again).
    #[schema(example = "order")]
    pub event: String,
    /// JSON: for `order`, the order as it is now, without its event log; `{}` otherwise.
    pub data: String,
}

/// Where a stream is.
struct Feed {
    store: Store,
    metrics: Arc<Metrics>,
    /// Whose orders the caller sees (`None`: the admin, every tenant's).
    tenant: Option<String>,
    token: String,
    news: AllNews,
    ready: VecDeque<Event>,
    token_check: tokio::time::Interval,
    _slot: StreamSlot,
}

/// What ended a wait.
enum Wake {
    News(News),
    CheckToken,
}

impl Feed {
    /// Adds `news` to what is gathered; whether news was missed.
    fn gather(news: News, ids: &mut BTreeSet<Uuid>) -> bool {
        match news {
            News::Order(id) => {
                // A server of an order for several changes its order.
                let id = crate::store::fleets::fleet_of(id).map_or(id, |(fleet, _)| fleet);
                ids.insert(id);
                false
            }
            News::Missed => true,
        }
    }

    /// Reads the orders of `ids` the caller sees and queues them.
    async fn read(&mut self, ids: BTreeSet<Uuid>) {
        let ids: Vec<Uuid> = ids.into_iter().collect();
        for chunk in ids.chunks(READ_CHUNK) {
            self.metrics.event_stream_read();
            match self
                .store
                .orders_with_ids(chunk, self.tenant.as_deref())
                .await
            {
                Ok(orders) => {
                    for order in orders {
                        let view = OrderView::without_events(order);
                        let data = serde_json::to_string(&view).unwrap_or_default();
                        self.ready
                            .push_back(Event::default().event("order").data(data));
                    }
                }
                Err(error) => {
                    // What was not read is news missed: the client lists again.
                    tracing::warn!("reading orders with news for a stream: {error:#}");
                    self.ready.push_back(resync());
                    return;
                }
            }
        }
    }

    /// The next SSE event: waits for news, gathers more for [`GATHER`], reads the orders.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some((Ok(event), self));
            }
            let first = loop {
                let wake = tokio::select! {
                    news = self.news.next() => Wake::News(news),
                    _ = self.token_check.tick() => Wake::CheckToken,
                };
                match wake {
                    Wake::News(news) => break news,
                    Wake::CheckToken if token_holds(&self.store, &self.token).await => {}
                    Wake::CheckToken => {
                        tracing::info!("an orders event stream's token was revoked; ending it");
                        return None;
                    }
                }
            };
            let mut ids = BTreeSet::new();
            let mut missed = Self::gather(first, &mut ids);
            tokio::time::sleep(GATHER).await;
            while let Some(news) = self.news.try_next() {
                missed |= Self::gather(news, &mut ids);
            }
            if missed {
                self.ready.push_back(resync());
            } else {
                self.read(ids).await;
            }
        }
    }
}

fn resync() -> Event {
    Event::default().event("resync").data("{}")
}

/// `GET /v1/events`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "orders",
    responses(
        (status = 200, description = "Server-Sent Events: `ready` first (list the orders now), then `order` (data: an order of the caller's that changed or was made, as it is now, without its event log) and `resync` (news may have been missed: list the orders again). No history is sent; an order may come twice for one change. The stream ends within seconds of its token's revoke.", content_type = "text/event-stream", body = FeedEvent),
        (status = 429, description = "The tenant, or the instance, has as many event streams open as it may", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn order_feed(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let token = bearer_token(&headers)?;
    let slot = state.event_streams.take(&caller)?;
    let mut feed = Feed {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        tenant: caller.tenant().map(str::to_string),
        token,
        // Subscribed before `ready`: whatever changes after the client's list is heard.
        news: state.store.all_news(),
        ready: VecDeque::new(),
        token_check: token_check_interval(),
        _slot: slot,
    };
    feed.ready
        .push_back(Event::default().event("ready").data("{}"));
    let stream = futures_util::stream::unfold(feed, Feed::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
