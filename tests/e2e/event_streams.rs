//! `/events` streams within bounds: a tenant (and the instance) has a bounded number of open
//! streams (`429` beyond); idle streams do not read the database (a stream wakes when its
//! order has news, on PostgreSQL also news written by another instance); a stream ends soon
//! after its token is revoked; an order's events are numbered 1, 2, 3 ... of its own; the
//! stream of a caller's orders (`/v1/events`) tells its orders' changes and no one else's.

use std::time::{Duration, Instant};

use anyhow::Context;
use provisioner_tests::{
    ApiClient, OrderStore, Stack, StackOptions, TEST_TENANT, client_with_token, metric_value,
    sse_events,
};
use reqwest::Method;
use serde_json::Value;

/// Long enough that an order stays `provisioning` (its stream open) for the whole test.
const SLOW_BOOT: Duration = Duration::from_secs(120);

/// An open stream: what it sent first, and the rest to read.
struct Open {
    first: String,
    response: reqwest::Response,
}

/// Opens the stream of order `id` through `api`: the status, the problem of an error, the
/// stream of a `200`. Its first chunk (the order's log so far) has been read, so the stream
/// is open at the server when this returns. (The response as it is, not
/// `ApiClient::follow`: these tests read the stream's bytes, status and content type.)
async fn open_stream(api: &ApiClient, id: &str) -> anyhow::Result<(u16, Value, Option<Open>)> {
    let mut response = api
        .send_raw(Method::GET, &format!("/v1/orders/{id}/events"), None)
        .await?;
    let status = response.status().as_u16();
    if status != 200 {
        let content_type = response.headers()["content-type"].to_str()?.to_string();
        let problem: Value = response.json().await?;
        assert_eq!(content_type, "application/problem+json", "{problem}");
        return Ok((status, problem, None));
    }
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .context("the stream sent nothing")??
        .context("the stream ended at once")?;
    let first = String::from_utf8_lossy(&first).to_string();
    Ok((status, Value::Null, Some(Open { first, response })))
}

/// Reads `stream` to its end (at most `limit`); the SSE events as `(event, id, data)`.
async fn read_to_end(
    stream: Open,
    limit: Duration,
) -> anyhow::Result<Vec<(String, Option<String>, Value)>> {
    let Open {
        first: mut text,
        mut response,
    } = stream;
    tokio::time::timeout(limit, async {
        while let Some(chunk) = response.chunk().await? {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("the stream did not end in {limit:?}; so far:\n{text}"))??;
    Ok(sse_events(&text)?
        .into_iter()
        .map(|event| (event.name, event.id, event.data))
        .collect())
}

/// `provisioner_event_stream_reads_total` now.
async fn stream_reads(stack: &Stack) -> anyhow::Result<f64> {
    let text = stack.metrics().await?;
    metric_value(&text, "provisioner_event_stream_reads_total")
        .with_context(|| format!("no provisioner_event_stream_reads_total in:\n{text}"))
}

#[tokio::test]
async fn streams_beyond_a_tenants_bound_or_the_instances_are_refused_with_429() -> anyhow::Result<()>
{
    let stack = Stack::start(StackOptions {
        boot_delay: SLOW_BOOT,
        api_env: vec![
            ("EVENT_STREAMS_PER_TENANT".into(), "3".into()),
            ("EVENT_STREAMS_MAX".into(), "5".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    let api = stack.api();
    let mine = stack.order_server("streamed-a-lot").await?;
    let globex = stack.client_of_tenant("globex").await?;
    let theirs = stack.order_as(&globex, "globex-streamed").await?;
    let globex_api = stack.api_with(&globex);

    let mut open = Vec::new();
    for _ in 0..3 {
        let (status, problem, response) = open_stream(&api, &mine).await?;
        assert_eq!(status, 200, "{problem}");
        open.push(response);
    }
    let (status, problem, _) = open_stream(&api, &mine).await?;
    assert_eq!(status, 429, "the tenant's 4th stream: {problem}");
    assert_eq!(problem["type"], "/problems/too-many-streams", "{problem}");
    // Another tenant has bounds of its own, up to the instance's 5 in all.
    for _ in 0..2 {
        let (status, problem, response) = open_stream(&globex_api, &theirs).await?;
        assert_eq!(status, 200, "{problem}");
        open.push(response);
    }
    let (status, problem, _) = open_stream(&globex_api, &theirs).await?;
    assert_eq!(status, 429, "the instance's 6th stream: {problem}");

    // A stream that closes gives its place back (noticed at the latest at the next
    // keep-alive the server writes).
    drop(open.remove(0));
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, problem, response) = open_stream(&api, &mine).await?;
        if status == 200 {
            open.push(response);
            break;
        }
        assert_eq!(status, 429, "{problem}");
        anyhow::ensure!(Instant::now() < deadline, "a closed stream kept its place");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(open);
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn idle_streams_do_not_read_the_database() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: SLOW_BOOT,
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_server("watched-quietly").await?;
    // The order sits in `provisioning` while the simulated server boots: no news.
    stack
        .wait_for_status(&id, "provisioning", Duration::from_secs(30))
        .await?;
    const STREAMS: usize = 8;
    let mut open = Vec::new();
    for _ in 0..STREAMS {
        let (status, problem, response) = open_stream(&stack.api(), &id).await?;
        assert_eq!(status, 200, "{problem}");
        open.push(response);
    }
    let before = stream_reads(&stack).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = stream_reads(&stack).await?;
    // Polling every 250 ms, that would be about 12 reads a stream; a stream that waits for
    // news reads at most once for a stray event.
    assert!(
        after - before <= STREAMS as f64,
        "{STREAMS} idle streams read the database {} times in 3 s",
        after - before
    );
    // News still reaches them: the cancel's events, then the end.
    let (status, cancelling) = stack.cancel_order(&id).await?;
    assert_eq!(status, 202, "{cancelling}");
    for response in open.into_iter().flatten() {
        let events = read_to_end(response, Duration::from_secs(20)).await?;
        let (name, _, end) = events.last().context("no events")?;
        assert_eq!(name, "end", "{events:?}");
        assert_eq!(end["status"], "cancelled", "{events:?}");
    }
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_stream_on_postgres_hears_what_another_instance_writes() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: SLOW_BOOT,
        store: OrderStore::Postgres,
        ..StackOptions::default()
    })
    .await?;
    let other_api = stack.start_another_api().await?;
    let id = stack.order_server("heard-across").await?;
    stack
        .wait_for_status(&id, "provisioning", Duration::from_secs(30))
        .await?;
    let (status, problem, response) = open_stream(&stack.api_at(&other_api), &id).await?;
    assert_eq!(status, 200, "{problem}");
    let response = response.context("a stream")?;
    // The cancel commits on the first instance; the stream on the second hears of it by
    // NOTIFY, well before its slow safety re-read.
    let (status, cancelling) = stack.cancel_order(&id).await?;
    assert_eq!(status, 202, "{cancelling}");
    let events = read_to_end(response, Duration::from_secs(15)).await?;
    let statuses: Vec<&str> = events
        .iter()
        .filter_map(|(_, _, data)| data["status"].as_str())
        .collect();
    assert!(statuses.contains(&"cancelling"), "{events:?}");
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("end"),
        "{events:?}"
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_soon_after_its_token_is_revoked() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: SLOW_BOOT,
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_server("watched-by-a-leaver").await?;
    let token = stack
        .create_token(&["--tenant", TEST_TENANT, "--label", "streamer"])
        .await?;
    let client = client_with_token(&token)?;
    let (status, problem, response) = open_stream(&stack.api_with(&client), &id).await?;
    assert_eq!(status, 200, "{problem}");
    let response = response.context("a stream")?;
    // The token has been used and is in the instance's 5 s cache.
    let revoke = tokio::process::Command::new(provisioner_tests::binary("debug", "order-api"))
        .args(["tokens", "revoke", &stack.token_id("streamer").await?])
        .env("DATABASE_URL", stack.database_url())
        .output()
        .await?;
    assert!(revoke.status.success(), "tokens revoke failed: {revoke:?}");
    let revoked = Instant::now();
    let events = read_to_end(response, Duration::from_secs(10))
        .await
        .context("a revoked token's stream went on")?;
    let took = revoked.elapsed();
    assert!(
        // The design ends it within 5 s of the token's last lookup (before the revoke); the
        // margin is for a loaded machine.
        took <= Duration::from_millis(6_500),
        "the stream ended {took:?} after the revoke"
    );
    assert!(
        events.iter().all(|(name, _, _)| name != "end"),
        "{events:?}"
    );
    // And once plain requests refuse the token too (within the same 5 s), it cannot be
    // opened again.
    tokio::time::sleep_until((revoked + Duration::from_millis(5_200)).into()).await;
    let (status, problem, _) = open_stream(&stack.api_with(&client), &id).await?;
    assert_eq!(status, 401, "{problem}");
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn each_orders_events_are_numbered_from_one() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let first = stack.order_server("numbered-1").await?;
    let second = stack.order_server("numbered-2").await?;
    for id in [&first, &second] {
        stack
            .wait_for_status(id, "active", Duration::from_secs(60))
            .await?;
    }
    for id in [&first, &second] {
        let (status, problem, response) = open_stream(&stack.api(), id).await?;
        assert_eq!(status, 200, "{problem}");
        let events = read_to_end(response.context("a stream")?, Duration::from_secs(10)).await?;
        let log: Vec<_> = events
            .iter()
            .filter(|(name, _, _)| name == "order-event")
            .collect();
        // accepted, provisioning, active, and queued between the first two unless the
        // host's first result was applied before the broker confirmed the publish (the
        // relay then leaves the order where the host moved it): at least three.
        assert!(log.len() >= 3, "{events:?}");
        for (number, (_, id, data)) in (1..).zip(&log) {
            assert_eq!(
                id.as_deref(),
                Some(number.to_string().as_str()),
                "{events:?}"
            );
            assert_eq!(data["seq"], number, "{data}");
        }
        // Resuming after event 2 sends 3 on.
        let resumed = stack
            .api()
            .request(Method::GET, &format!("/v1/orders/{id}/events"))
            .header("last-event-id", "2")
            .send()
            .await?;
        let resumed = Open {
            first: String::new(),
            response: resumed,
        };
        let resumed = read_to_end(resumed, Duration::from_secs(10)).await?;
        assert_eq!(resumed[0].1.as_deref(), Some("3"), "{resumed:?}");
        assert_eq!(resumed.len(), log.len() - 2 + 1, "{resumed:?}");
    }
    // What the API document says of Last-Event-ID is what it accepts.
    let document = stack.api().get("/openapi.json").await?;
    let parameters = document["paths"]["/v1/orders/{id}/events"]["get"]["parameters"]
        .as_array()
        .context("the stream's parameters")?;
    let last_event_id = parameters
        .iter()
        .find(|p| p["name"] == "Last-Event-ID")
        .context("no Last-Event-ID parameter")?;
    assert_eq!(
        last_event_id["schema"]["pattern"], "^[0-9]{1,18}$",
        "{last_event_id}"
    );
    for refused in ["null", "-1", " ", "1234567890123456789", "1.5"] {
        let response = stack
            .api()
            .request(Method::GET, &format!("/v1/orders/{first}/events"))
            .header("last-event-id", refused)
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 400, "Last-Event-ID {refused:?}");
    }
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn the_migration_numbers_existing_events_per_order() -> anyhow::Result<()> {
    // A database as the previous release left it: one event id sequence for all orders.
    let earlier = provisioner_tests::EarlierDatabase::migrated_below(8).await?;
    let pool = earlier.pool.clone();
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for order in [a, b] {
        sqlx::query(
            "INSERT INTO orders (id, tenant, status, vendor, region, size, image, name, \
             ssh_keys, labels, created_at, updated_at) VALUES \
             ($1, 'test', 'pending', 'hetzner', 'fsn1', 'cx22', 'ubuntu-24.04', 'old', '[]', \
             '{}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
        )
        .bind(order.to_string())
        .execute(&pool)
        .await?;
    }
    for (order, message) in [(a, "a1"), (b, "b1"), (a, "a2"), (a, "a3"), (b, "b2")] {
        sqlx::query(
            "INSERT INTO order_events (order_id, at, status, message) \
             VALUES ($1, '2026-01-01T00:00:00+00:00', 'pending', $2)",
        )
        .bind(order.to_string())
        .bind(message)
        .execute(&pool)
        .await?;
    }

    // The new release migrates: each order's events numbered from 1, in their old order.
    let store = order_api::store::Store::connect(&earlier.url).await?;
    let numbered = |found: Option<(_, Vec<(i64, order_api::store::OrderEvent)>)>| {
        found
            .map(|(_, events)| {
                events
                    .into_iter()
                    .map(|(seq, event)| (seq, event.message))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let a_events = numbered(store.stream_events(a, None, 0).await?);
    let b_events = numbered(store.stream_events(b, None, 0).await?);
    assert_eq!(
        a_events,
        [(1, "a1".into()), (2, "a2".into()), (3, "a3".into())]
    );
    assert_eq!(b_events, [(1, "b1".into()), (2, "b2".into())]);
    // A new event takes the next number of its own order.
    let cancel = order_api::store::OutboxMessage {
        message_id: uuid::Uuid::new_v4(),
        order_id: b,
        routing_key: "provision.hetzner".into(),
        body: b"{}".to_vec(),
        traceparent: None,
        attempts: 0,
        lease_free: false,
    };
    assert!(store.request_cancel(b, &cancel).await?);
    let after = numbered(store.stream_events(b, None, 2).await?);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, 3, "{after:?}");
    drop(store);
    earlier.remove().await?;
    Ok(())
}

/// The stream of the caller's orders (`GET /v1/events`) as it arrives.
struct OrderFeed {
    response: reqwest::Response,
    text: String,
}

impl OrderFeed {
    /// Opens `GET /v1/events` through `client` and reads up to its `ready` event.
    async fn open(api: &ApiClient) -> anyhow::Result<Self> {
        let response = api
            .send_raw(Method::GET, "/v1/events", None)
            .await?
            .error_for_status()?;
        let mut feed = Self {
            response,
            text: String::new(),
        };
        feed.read_until(Duration::from_secs(10), |events| {
            events.iter().any(|(name, _)| name == "ready")
        })
        .await?;
        Ok(feed)
    }

    /// Every event so far as `(event, data)`.
    fn events(&self) -> Vec<(String, Value)> {
        // Only whole events: those a blank line ended.
        let whole = self.text.rfind("\n\n").map_or("", |end| &self.text[..end]);
        whole
            .split("\n\n")
            .filter_map(|block| {
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                Some((name, serde_json::from_str(&data).ok()?))
            })
            .collect()
    }

    /// Reads until `done` holds of the events so far (at most `limit`).
    async fn read_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&[(String, Value)]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !done(&self.events()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .with_context(|| format!("waited {limit:?}; the stream sent:\n{}", self.text))??
                .with_context(|| format!("the stream ended; it sent:\n{}", self.text))?;
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
        Ok(())
    }

    /// Whether an `order` event named `id`.
    fn names(&self, id: &str) -> bool {
        self.events()
            .iter()
            .any(|(name, data)| name == "order" && data["id"] == id)
    }
}

/// `GET /v1/events` follows the caller's orders: a tenant's stream tells the changes of its
/// own orders (as they are after them, up to `active`), never another tenant's; the admin's
/// tells every tenant's.
#[tokio::test]
async fn the_orders_stream_tells_the_callers_orders_only() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let other = stack.client_of_tenant("beta").await?;
    let mut own_feed = OrderFeed::open(&stack.api()).await?;
    let mut other_feed = OrderFeed::open(&stack.api_with(&other)).await?;
    let mut admin_feed = OrderFeed::open(&stack.admin_api()?).await?;

    let own = stack.order_server("followed-by-feed").await?;
    let theirs = stack.order_as(&other, "theirs-by-feed").await?;
    let reached = |id: &str, status: &str| {
        let (id, status) = (id.to_string(), status.to_string());
        move |events: &[(String, Value)]| {
            events
                .iter()
                .any(|(name, data)| name == "order" && data["id"] == id && data["status"] == status)
        }
    };
    own_feed
        .read_until(Duration::from_secs(60), reached(&own, "active"))
        .await?;
    other_feed
        .read_until(Duration::from_secs(60), reached(&theirs, "active"))
        .await?;
    admin_feed
        .read_until(Duration::from_secs(60), |events| {
            reached(&own, "active")(events) && reached(&theirs, "active")(events)
        })
        .await?;
    // What came after each feed's own orders settled is read too: a leak may come late.
    for feed in [&mut own_feed, &mut other_feed] {
        let _ = feed.read_until(Duration::from_secs(2), |_| false).await;
    }
    let statuses: Vec<Value> = own_feed
        .events()
        .iter()
        .filter(|(name, data)| name == "order" && data["id"] == own)
        .map(|(_, data)| data["status"].clone())
        .collect();
    // Changes that come together are told as one (the order as it is after them), so the
    // count varies; the last is the order active.
    assert_eq!(
        statuses.last(),
        Some(&Value::from("active")),
        "{statuses:?}"
    );
    assert!(!own_feed.names(&theirs), "{}", own_feed.text);
    assert!(!other_feed.names(&own), "{}", other_feed.text);
    // An order comes without its event log.
    assert!(
        own_feed
            .events()
            .iter()
            .all(|(_, data)| data.get("events").is_none()),
        "{}",
        own_feed.text
    );
    stack.cleanup().await;
    Ok(())
}
