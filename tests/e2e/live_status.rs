//! `GET /v1/orders/{id}/events`: the order's event log, then live events, as Server-Sent
//! Events, ending with an `end` event once the order settled; `Last-Event-ID` resumes.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use provisioner_tests::{SseEvent, Stack, StackOptions, sse_events};
use reqwest::Method;

/// Opens the order's event stream (from after `last_event_id`) and reads it to its end.
async fn read_stream(
    stack: &Stack,
    id: &str,
    last_event_id: Option<&str>,
) -> anyhow::Result<Vec<SseEvent>> {
    // The response as it is (its status, content type and bytes), not `ApiClient::follow`.
    let mut request = stack
        .api()
        .request(Method::GET, &format!("/v1/orders/{id}/events"));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk?));
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("the stream did not end; so far:\n{text}"))??;
    sse_events(&text)
}

#[tokio::test]
async fn the_event_stream_follows_an_order_to_active_and_resumes() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_millis(1500),
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_server("streamed-1").await?;
    // Opened at once: most of the events come live.
    let events = read_stream(&stack, &id, None).await?;

    let (end, log) = events.split_last().context("an empty stream")?;
    assert_eq!(end.name, "end", "{events:?}");
    assert_eq!(end.data["status"], "active", "{end:?}");
    assert!(end.data["server"]["ipv4"].is_string(), "{end:?}");
    assert!(log.iter().all(|e| e.name == "order-event"), "{events:?}");
    let statuses: Vec<&str> = log
        .iter()
        .map(|e| e.data["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses.first(), Some(&"pending"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"active"), "{statuses:?}");
    for expected in ["queued", "provisioning"] {
        assert!(statuses.contains(&expected), "{statuses:?}");
    }
    let numbers: Vec<i64> = log
        .iter()
        .map(|e| e.id.as_deref().and_then(|i| i.parse().ok()).unwrap_or(-1))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    // The stream's events are the order's log.
    let order = stack.order(&id).await?;
    assert_eq!(order["events"].as_array().map(Vec::len), Some(log.len()));

    // Reconnecting after the second event sends only what came after it.
    let second = log[1].id.clone().context("an event id")?;
    let resumed = read_stream(&stack, &id, Some(&second)).await?;
    assert_eq!(resumed.len(), log.len() - 2 + 1, "{resumed:?}");
    assert_eq!(resumed[0].id, log[2].id);
    assert_eq!(resumed.last().map(|e| e.name.as_str()), Some("end"));
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_unknown_orders_stream_is_a_404_problem() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let response = stack
        .api()
        .send_raw(
            Method::GET,
            "/v1/orders/0190c9a4-7b3e-7000-8000-000000000000/events",
            None,
        )
        .await?;
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    stack.cleanup().await;
    Ok(())
}
