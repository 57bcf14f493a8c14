//! Failed creates with passing faults are retried through the delay queues, with backoff,
//! honouring the vendor's `Retry-After`, until the per-order budget is spent.

use std::time::Duration;

use anyhow::Context;

use provisioner_tests::{Stack, StackOptions, event_messages};
use serde_json::{Value, json};

/// The event messages of an order that say it will be retried.
fn retry_events(order: &Value) -> Vec<String> {
    event_messages(order)
        .into_iter()
        .filter(|m| m.contains("retrying in"))
        .collect()
}

fn fast_retries(base_ms: u64, max_attempts: u32) -> StackOptions {
    StackOptions {
        host_env: vec![
            ("RETRY_BASE_MS".into(), base_ms.to_string()),
            ("RETRY_MAX_ATTEMPTS".into(), max_attempts.to_string()),
        ],
        ..StackOptions::default()
    }
}

/// Orders a Hetzner server whose first create makes it but loses the answer, and waits for
/// that attempt's retry event: the server is at the vendor, the order has not heard of it.
async fn order_whose_create_answer_is_lost(stack: &Stack, name: &str) -> anyhow::Result<String> {
    stack
        .inject_fault(json!({"vendor": "hetzner", "kind": "lost_response",
                             "method": "POST", "count": 1}))
        .await?;
    let id = stack.order_server(name).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while retry_events(&stack.order(&id).await?).is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the first attempt was not retried\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(id)
}

/// Two 503s on the create: the order is retried twice and runs, with one server. With a
/// 1 ms backoff both retries pass the same (shortest) delay queue, which the broker would
/// take for a dead-letter cycle, and drop, if a retry carried the earlier trip's `x-death`.
#[tokio::test]
async fn a_create_retried_after_vendor_errors_succeeds() -> anyhow::Result<()> {
    let stack = Stack::start(fast_retries(1, 5)).await?;
    stack.hetzner_down_for("POST", 2).await?;
    let id = stack.order_server("retried-1").await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let retries = retry_events(&active);
    assert_eq!(retries.len(), 2, "{active}");
    assert!(retries[0].contains("vendor_unavailable"), "{retries:?}");
    assert!(
        retries.iter().all(|r| r.contains("retrying in 250 ms")),
        "{retries:?}"
    );
    let last = active["events"].as_array().and_then(|e| e.last()).cloned();
    assert_eq!(
        last.map(|e| e["attempt"].clone()),
        Some(json!(3)),
        "{active}"
    );
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 1);
    assert_eq!(stats["duplicates"], json!({}));
    stack.cleanup().await;
    Ok(())
}

/// A vendor that keeps answering 429: the retries wait at least its `Retry-After`, and after
/// the budget's attempts the order fails with the last fault and the count.
#[tokio::test]
async fn an_exhausted_retry_budget_fails_the_order_with_the_attempts() -> anyhow::Result<()> {
    let stack = Stack::start(fast_retries(250, 3)).await?;
    stack
        .inject_fault(json!({"vendor": "digitalocean", "kind": "rate_limit",
                             "retry_after_secs": 1, "method": "POST", "count": 100}))
        .await?;
    let id = stack.order_at("digitalocean", "limited-1").await?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "rate_limited", "{failed}");
    let message = failed["fault"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("gave up after 3 attempts"), "{failed}");
    let retries = retry_events(&failed);
    assert_eq!(retries.len(), 2, "{failed}");
    for retry in &retries {
        // "... RateLimited(Some(<ms the vendor asked>)) ...; retrying in <ms> ms"
        let number_after = |marker: &str, end: char| -> f64 {
            retry
                .split(marker)
                .nth(1)
                .and_then(|rest| rest.split(end).next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {marker} in {retry}"))
        };
        let asked_ms = number_after("Some(", ')');
        let waits_ms = number_after("retrying in", 'm');
        assert!(waits_ms >= asked_ms, "Retry-After not honoured: {retry}");
    }
    assert_eq!(
        stack.sim_stats_of("digitalocean").await?["created_total"],
        0
    );
    stack.cleanup().await;
    Ok(())
}

/// An order whose create made a server, and whose redelivered create (its host killed) then
/// spends its retry budget on vendor errors, fails; the server its first create made is
/// deleted rather than left to the orphan sweep (a chaos run found one left behind).
#[tokio::test]
async fn a_failed_order_leaves_no_server_behind() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(3_600),
        ..fast_retries(50, 3)
    })
    .await?;
    let id = stack.order_server("left-behind").await?;
    stack
        .wait_for_status(&id, "provisioning", Duration::from_secs(60))
        .await?;
    anyhow::ensure!(stack.live_servers_of(&id).await?.len() == 1);
    stack.kill_host().await;
    // Only the lookups fail: the redelivered create's search for the server it made, not
    // the delete that follows the failure (a delete that fails is left to the orphan sweep).
    stack.hetzner_down_for("GET", 1000).await?;
    stack.start_host()?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "vendor_unavailable", "{failed}");
    stack.clear_faults().await?;
    stack.wait_until_no_server(&id).await?;
    let order = stack.order(&id).await?;
    assert_eq!(order["status"], "failed", "it stays failed: {order}");
    let events = provisioner_tests::event_messages(&order);
    assert!(
        events.iter().any(|e| e.contains("deleting the server")),
        "{events:?}"
    );
    stack.cleanup().await;
    Ok(())
}

/// A create whose answer was lost (the vendor made the server, the host never heard), whose
/// later attempts then spend the retry budget on vendor errors, fails with nothing left at
/// the vendor: the order never recorded the server, so with the move to `failed` order-api
/// has the host look the order's key up and delete what it finds (a chaos run found one left
/// behind this way).
#[tokio::test]
async fn an_order_failing_after_a_lost_create_answer_leaves_no_server_behind() -> anyhow::Result<()>
{
    // Retries seconds apart: time to arm the lookup faults after the first attempt.
    let stack = Stack::start(fast_retries(2_000, 3)).await?;
    let id = order_whose_create_answer_is_lost(&stack, "lost-answer").await?;
    anyhow::ensure!(
        stack.live_servers_of(&id).await?.len() == 1,
        "the lost create made no server"
    );
    // The two later attempts each look the key up first (and would adopt the server): both
    // lookups fail, so the budget is spent without the order ever hearing of the server.
    stack.hetzner_down_for("GET", 2).await?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "vendor_unavailable", "{failed}");
    assert_eq!(retry_events(&failed).len(), 2, "{failed}");
    stack
        .wait_until_no_server(&id)
        .await
        .with_context(|| format!("the failed order: {failed}"))?;
    let order = stack.order(&id).await?;
    assert_eq!(order["status"], "failed", "it stays failed: {order}");
    let events = event_messages(&order);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("looking for a server an attempt may have made")),
        "the log says the server is looked for: {events:?}"
    );
    let deleted = stack
        .wait_for_event(&id, "deleted server", Duration::from_secs(30))
        .await?;
    assert_eq!(deleted["status"], "failed", "it stays failed: {deleted}");
    assert_eq!(stack.sim_stats().await?["created_total"], 1);
    stack.cleanup().await;
    Ok(())
}

/// The clean-up after a failure outlasts the create's retry budget, and retries its delete:
/// the cluster chaos run left a failed order's server behind when the vendor's 429s outlived
/// the key lookup's retries (it had the create's budget), and a delete refused once was never
/// tried again (a failed order has no watchdog to send it again).
#[tokio::test]
async fn a_failed_orders_clean_up_outlasts_the_creates_retry_budget() -> anyhow::Result<()> {
    let stack = Stack::start(fast_retries(1_000, 2)).await?;
    let id = order_whose_create_answer_is_lost(&stack, "lost-then-throttled").await?;
    // The second (last) attempt's lookup fails, and so do the clean-up's first three: more
    // than the create's two attempts. Then the clean-up's first delete is refused.
    stack.hetzner_down_for("GET", 4).await?;
    stack.hetzner_down_for("DELETE", 1).await?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "vendor_unavailable", "{failed}");
    let deleted = stack
        .wait_for_event(&id, "deleted server", Duration::from_secs(90))
        .await
        .with_context(|| format!("the failed order: {failed}"))?;
    assert_eq!(deleted["status"], "failed", "it stays failed: {deleted}");
    stack.wait_until_no_server(&id).await?;
    assert_eq!(stack.sim_stats().await?["created_total"], 1);
    stack.cleanup().await;
    Ok(())
}

/// A vendor out of capacity (the simulator's `no_capacity`: Hetzner's `resource_unavailable`)
/// reaches the order as its own fault, `no_capacity` (WIT 0.4), not as a vendor outage, and is
/// retried: the capacity came back, so the order runs with one server.
#[tokio::test]
async fn a_vendor_out_of_capacity_is_retried_as_no_capacity() -> anyhow::Result<()> {
    let stack = Stack::start(fast_retries(1, 5)).await?;
    stack
        .inject_fault(json!({"vendor": "hetzner", "kind": "no_capacity",
                             "method": "POST", "count": 1}))
        .await?;
    let id = stack.order_server("sold-out").await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let retries = retry_events(&active);
    assert_eq!(retries.len(), 1, "{active}");
    assert!(
        retries[0].contains("(no_capacity)") && retries[0].contains("resource_unavailable"),
        "{retries:?}"
    );
    assert_eq!(stack.sim_stats().await?["created_total"], 1);
    stack.cleanup().await;
    Ok(())
}
