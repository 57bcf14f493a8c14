//! Orders reach `active` with the simulator's server details.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions};
use reqwest::Method;

/// One order goes pending -> queued -> provisioning -> active and ends with the
/// simulator's vendor id and IPv4, with a timestamped event log; the 202 came at once.
#[tokio::test]
async fn an_order_becomes_a_running_server() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_millis(1500),
        ..StackOptions::default()
    })
    .await?;
    let started = Instant::now();
    let (status, location, content_type, order) = stack
        .post_order(r#"{"vendor":"hetzner","region":"fsn1","size":"cx22","image":"ubuntu-24.04","name":"web-1"}"#)
        .await?;
    let answered_in = started.elapsed();
    assert_eq!(status, 202, "{order}");
    assert_eq!(content_type, "application/json");
    let id = order["id"]
        .as_str()
        .expect("the order has an id")
        .to_string();
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/orders/{id}").as_str())
    );
    assert_eq!(
        order["status"], "pending",
        "202 comes before any vendor work"
    );
    assert!(order["server"].is_null());
    // Generous bound: the point is that the answer does not wait for the vendor (1.5 s).
    assert!(
        answered_in < Duration::from_millis(1000),
        "202 took {answered_in:?}"
    );

    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let server = &active["server"];
    assert_eq!(server["status"], "running");
    // Hetzner requires unique names: the server's name there is the order's with a suffix
    // (unique per order); the order keeps the name asked for.
    assert_eq!(active["name"], "web-1");
    let server_name = server["name"].as_str().unwrap_or_default();
    assert!(server_name.starts_with("web-1-"), "{active}");
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 1);
    let vendor_id = server["vendor_id"].as_str().expect("vendor id");
    assert!(
        vendor_id.parse::<u64>().is_ok(),
        "Hetzner ids are numbers: {vendor_id}"
    );
    let ipv4 = server["ipv4"].as_str().expect("ipv4");
    assert!(
        ipv4.starts_with("203.0."),
        "the simulator's address: {ipv4}"
    );

    let statuses = statuses(&active);
    assert_eq!(statuses, ["pending", "queued", "provisioning", "active"]);
    for event in active["events"].as_array().into_iter().flatten() {
        let at = event["at"].as_str().expect("every event has a timestamp");
        assert!(chrono_like(at), "timestamp {at}");
    }
    stack.cleanup().await;
    Ok(())
}

/// A server the vendor answers `running` at its create goes straight to `active`: the host
/// sends one result, not a `provisioning` progress event followed by `active` (a message per
/// order fewer for the broker, the host and order-api). The order's log says so.
#[tokio::test]
async fn a_server_running_at_its_create_is_one_result() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::ZERO,
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_server("instant-1").await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    assert_eq!(active["server"]["status"], "running", "{active}");
    let statuses = statuses(&active);
    // `queued` is left out when the host's result was applied before the relay heard the
    // broker's confirm (the relay then leaves the order where the host moved it).
    assert!(
        statuses == ["pending", "queued", "active"] || statuses == ["pending", "active"],
        "no provisioning step for a server that ran at once: {statuses:?}"
    );
    assert_eq!(stack.sim_stats().await?["created_total"], 1);
    stack.cleanup().await;
    Ok(())
}

/// The statuses of an order's event log, in order.
fn statuses(order: &serde_json::Value) -> Vec<&str> {
    order["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["status"].as_str().unwrap_or_default())
        .collect()
}

fn chrono_like(text: &str) -> bool {
    text.len() >= 20 && text.as_bytes()[4] == b'-' && text.contains('T')
}

/// Fifty orders posted at once all reach `active`, each with its own server, none twice.
#[tokio::test]
async fn fifty_orders_at_once_all_become_active() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let posts = (0..50).map(|i| {
        let stack = &stack;
        async move { stack.order_server(&format!("bulk-{i}")).await }
    });
    let ids: Vec<String> = futures_util::future::try_join_all(posts).await?;
    for id in &ids {
        stack
            .wait_for_status(id, "active", Duration::from_secs(120))
            .await?;
    }
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 50);
    assert_eq!(stats["live"], 50);
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    stack.cleanup().await;
    Ok(())
}

/// `GET /v1/orders` pages through every order newest first, each exactly once.
#[tokio::test]
async fn orders_list_newest_first_in_pages() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let mut posted = Vec::new();
    for i in 0..7 {
        posted.push(stack.order_server(&format!("page-{i}")).await?);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = "limit=3".to_string();
        if let Some(cursor) = &cursor {
            query.push_str(&format!("&cursor={cursor}"));
        }
        let page = stack.api().list_orders(&query).await?;
        pages += 1;
        for order in page["orders"].as_array().expect("orders") {
            seen.push(order["id"].as_str().expect("id").to_string());
            assert!(
                order.get("events").is_none(),
                "the list leaves out event logs"
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    posted.reverse();
    assert_eq!(seen, posted, "newest first, nothing missing or repeated");
    assert_eq!(pages, 3);
    let filtered = stack.api().list_orders("vendor=other").await?;
    assert_eq!(filtered["orders"], serde_json::json!([]));
    stack.cleanup().await;
    Ok(())
}

/// Paging while orders keep coming: every order that existed before the first page appears
/// exactly once, newest first; `created_after`/`created_before` pick a time window.
#[tokio::test]
async fn paging_is_stable_while_orders_are_added_and_filters_by_creation_time() -> anyhow::Result<()>
{
    let stack = Stack::start(StackOptions::default()).await?;
    let mut before = Vec::new();
    for i in 0..9 {
        before.push(stack.order_server(&format!("early-{i}")).await?);
    }
    let window_start = chrono::Utc::now();
    let mut in_window = Vec::new();
    for i in 0..3 {
        in_window.push(stack.order_server(&format!("window-{i}")).await?);
    }
    let window_end = chrono::Utc::now();
    before.extend(in_window.iter().cloned());

    // Page through (2 at a time) while another order is posted before every page.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        stack.order_server(&format!("late-{added}")).await?;
        added += 1;
        let mut query = "limit=2".to_string();
        if let Some(cursor) = &cursor {
            query.push_str(&format!("&cursor={cursor}"));
        }
        let page = stack.api().list_orders(&query).await?;
        for order in page["orders"].as_array().expect("orders") {
            seen.push(order["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an order came twice: {seen:?}");
    let listed_before: Vec<&String> = seen.iter().filter(|id| before.contains(id)).collect();
    let expected: Vec<&String> = before.iter().rev().collect();
    assert_eq!(
        listed_before, expected,
        "every earlier order once, newest first"
    );

    // The window holds exactly the three orders made in it.
    let rfc3339 =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let query = format!(
        "created_after={}&created_before={}",
        rfc3339(window_start),
        rfc3339(window_end)
    );
    let page = stack.api().list_orders(&query).await?;
    let ids: Vec<String> = page["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect();
    in_window.reverse();
    assert_eq!(ids, in_window, "{page}");

    // A malformed time is a 400 problem.
    let response = stack
        .api()
        .send_raw(Method::GET, "/v1/orders?created_after=yesterday", None)
        .await?;
    assert_eq!(response.status().as_u16(), 400);
    let problem: serde_json::Value = response.json().await?;
    assert_eq!(problem["type"], "/problems/invalid-query", "{problem}");
    stack.cleanup().await;
    Ok(())
}
