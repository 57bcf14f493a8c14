//! The broker goes away and comes back, then cuts every connection: order-api keeps accepting (the outbox holds the
//! requests) and says it is not ready; both programs reconnect, re-declare their topology
//! and carry on, and what was accepted during the outage is published and served.
//!
//! This test stops RabbitMQ's application on this machine (`rabbitmqctl stop_app`), so its
//! stack holds the broker alone: no other test's stack runs beside it.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions, rabbitmqctl};

async fn wait_until(
    stack: &Stack,
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > within {
            anyhow::bail!("{what} did not happen within {within:?}\n{}", stack.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(started.elapsed())
}

#[tokio::test]
async fn orders_ride_out_a_broker_restart() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        exclusive_broker: true,
        ..StackOptions::default()
    })
    .await?;
    let before = stack.order_server("before-outage").await?;
    stack
        .wait_for_status(&before, "active", Duration::from_secs(60))
        .await?;

    let outage = stack.stop_broker().await?;
    wait_until(
        &stack,
        "/readyz saying not ready",
        Duration::from_secs(15),
        async || !stack.ready().await,
    )
    .await?;
    // Accepted while the broker is down: recorded, waiting in the outbox.
    let during = stack.order_server("during-outage").await?;
    assert_eq!(stack.order(&during).await?["status"], "pending");

    outage.end().await?;
    let reconnected = wait_until(
        &stack,
        "/readyz ready again",
        Duration::from_secs(30),
        async || stack.ready().await,
    )
    .await?;
    eprintln!("order-api ready {reconnected:?} after the broker was back");
    assert!(
        reconnected <= Duration::from_secs(12),
        "order-api took {reconnected:?} to come back (10 s is the promise)"
    );
    // The host reconnected too: the order accepted during the outage gets its server.
    stack
        .wait_for_status(&during, "active", Duration::from_secs(60))
        .await?;
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 2);
    assert_eq!(stats["duplicates"], serde_json::json!({}));

    // A cut connection (the broker stays up): both reconnect and the next order runs.
    rabbitmqctl(&["close_all_connections", "cut by the outage test"]).await?;
    let after = stack.order_server("after-cut").await?;
    stack
        .wait_for_status(&after, "active", Duration::from_secs(60))
        .await?;
    assert_eq!(stack.sim_stats().await?["created_total"], 3);
    stack.cleanup().await;
    Ok(())
}
