//! `POST /v1/orders/{id}/cancel`: an order on its way (pending, queued, provisioning) is
//! cancelled and the server its create made, if any, is deleted; even a create that runs
//! after the cancel leaves no server behind. Settled orders answer 409.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions, event_messages};
use serde_json::json;

#[tokio::test]
async fn cancelling_a_provisioning_order_deletes_its_server() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(30),
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_server("cancel-me").await?;
    let provisioning = stack
        .wait_for_status(&id, "provisioning", Duration::from_secs(30))
        .await?;
    assert_eq!(stack.live_servers_of(&id).await?.len(), 1, "{provisioning}");

    let (status, answer) = stack.cancel_order(&id).await?;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["status"] == "cancelling" || answer["status"] == "cancelled",
        "{answer}"
    );
    let cancelled = stack
        .wait_for_status(&id, "cancelled", Duration::from_secs(30))
        .await?;
    let messages = event_messages(&cancelled);
    assert!(
        messages.iter().any(|m| m == "cancellation requested"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("cancelled; server") && m.ends_with("deleted")),
        "{messages:?}"
    );
    assert!(stack.live_servers_of(&id).await?.is_empty());

    // Again: the order as it is; an unknown order: 404.
    let (status, again) = stack.cancel_order(&id).await?;
    assert_eq!((status, again["status"].clone()), (202, json!("cancelled")));
    let (status, answer) = stack
        .cancel_order(&uuid::Uuid::now_v7().to_string())
        .await?;
    assert_eq!(status, 404, "{answer}");
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_settled_order_cannot_be_cancelled() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let id = stack.order_server("done").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    let (status, answer) = stack.cancel_order(&id).await?;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["type"], "/problems/conflict");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("DELETE"),
        "{answer}"
    );
    assert_eq!(stack.order(&id).await?["status"], "active");
    assert_eq!(stack.live_servers_of(&id).await?.len(), 1);
    stack.cleanup().await;
    Ok(())
}

/// The create waits in a delay queue (the vendor said 429, retry after 3 s) when the cancel
/// comes: the host finds no server and the order is cancelled. Then the create runs and
/// makes a server; its news reaches a cancelled order, which has that server deleted.
#[tokio::test]
async fn a_create_that_runs_after_the_cancel_leaves_no_server() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    stack
        .inject_fault(json!({"vendor": "hetzner", "kind": "rate_limit",
                             "retry_after_secs": 3, "method": "POST", "count": 1}))
        .await?;
    let id = stack.order_server("late-create").await?;
    // The create failed once and waits for its retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let order = stack.order(&id).await?;
        if event_messages(&order)
            .iter()
            .any(|m| m.contains("retrying in"))
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no retry: {order}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = stack.cancel_order(&id).await?;
    assert_eq!(status, 202, "{answer}");
    let cancelled = stack
        .wait_for_status(&id, "cancelled", Duration::from_secs(20))
        .await?;
    assert!(
        event_messages(&cancelled)
            .iter()
            .any(|m| m == "cancelled; the vendor had made no server"),
        "{cancelled}"
    );
    // The retried create makes its server, and order-api has it deleted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let order = stack.order(&id).await?;
        let messages = event_messages(&order);
        if messages
            .iter()
            .any(|m| m.contains("the vendor made after the cancel"))
        {
            assert_eq!(order["status"], "cancelled");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the late server was not noticed: {order}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.wait_until_no_server(&id).await?;
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 1, "{stats}");
    stack.cleanup().await;
    Ok(())
}
