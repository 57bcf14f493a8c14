//! `Idempotency-Key` on `POST /v1/orders`: a retry with the same key and body gets the
//! order the first request made (one order, one server), the same key with another body is
//! a 422 problem, concurrent retries make one order, and a malformed key is a 400.

use std::time::Duration;

use provisioner_tests::{Stack, StackOptions, fixture};
use serde_json::Value;

/// POSTs `body` with `key`; the status, the `Idempotent-Replayed` header and the answer.
async fn post_with_key(
    stack: &Stack,
    key: &str,
    body: &str,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let response = stack
        .api()
        .post_order_body(body.to_string(), Some(key))
        .await?;
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((status, replayed, response.json().await?))
}

/// The orders order-api has, all states.
async fn order_count(stack: &Stack) -> anyhow::Result<usize> {
    Ok(stack.list_all_orders("").await?.len())
}

#[tokio::test]
async fn a_retried_post_with_the_same_key_is_the_same_order() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let hetzner = fixture("hetzner");
    let body = hetzner.order_body("web-1");

    let (status, replayed, first) = post_with_key(&stack, "order-web-1", &body).await?;
    assert_eq!(status, 202, "{first}");
    assert_eq!(replayed, None);
    let id = first["id"].as_str().expect("an order id").to_string();

    // The same request again (a client that lost the answer): the same order, 200.
    let (status, replayed, again) = post_with_key(&stack, "order-web-1", &body).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again["id"], id.as_str());

    // The same fields in another order and spacing are the same request.
    let reordered = serde_json::json!({
        "name": "web-1", "image": hetzner.image, "size": hetzner.size,
        "region": hetzner.region, "vendor": hetzner.vendor,
    });
    let (status, _, again) = post_with_key(
        &stack,
        "order-web-1",
        &serde_json::to_string_pretty(&reordered)?,
    )
    .await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());

    // After it is active, a retry still answers the order, now active; one server was made.
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    let (status, _, again) = post_with_key(&stack, "order-web-1", &body).await?;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "active", "{again}");
    assert_eq!(order_count(&stack).await?, 1);
    let stats = stack.sim_stats_of("hetzner").await?;
    assert_eq!(stats["created_total"], 1, "{stats}");

    // Another key is another order.
    let (status, _, other) = post_with_key(&stack, "order-web-1-b", &body).await?;
    assert_eq!(status, 202);
    assert_ne!(other["id"], id.as_str());
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let hetzner = fixture("hetzner");
    let (status, _, _) = post_with_key(&stack, "k-1", &hetzner.order_body("web-1")).await?;
    assert_eq!(status, 202);

    let response = stack
        .api()
        .post_order_body(hetzner.order_body("web-2"), Some("k-1"))
        .await?;
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await?;
    assert_eq!(
        problem["type"], "/problems/idempotency-key-reused",
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("k-1")),
        "{problem}"
    );
    assert_eq!(
        order_count(&stack).await?,
        1,
        "the refused request made no order"
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn concurrent_retries_with_one_key_make_one_order() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let body = fixture("digitalocean").order_body("burst");
    let posts = (0..16).map(|_| post_with_key(&stack, "burst-key", &body));
    let answers = futures_util::future::try_join_all(posts).await?;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(_, _, order)| order["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one key gave several orders: {ids:?}");
    let created = answers
        .iter()
        .filter(|(status, _, _)| *status == 202)
        .count();
    assert_eq!(created, 1, "exactly one answer is the new order's 202");
    assert!(
        answers
            .iter()
            .all(|(status, _, _)| [200, 202].contains(status)),
        "{answers:?}"
    );
    assert_eq!(order_count(&stack).await?, 1);
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_malformed_key_is_a_400_and_makes_no_order() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let body = fixture("hetzner").order_body("web-1");
    for key in [String::new(), "has space".into(), "x".repeat(256)] {
        let (status, _, problem) = post_with_key(&stack, &key, &body).await?;
        assert_eq!(status, 400, "key {key:?}: {problem}");
        assert_eq!(problem["type"], "/problems/invalid-idempotency-key");
    }
    // The longest allowed key works.
    let (status, _, _) = post_with_key(&stack, &"k".repeat(255), &body).await?;
    assert_eq!(status, 202);
    assert_eq!(order_count(&stack).await?, 1);
    stack.cleanup().await;
    Ok(())
}
