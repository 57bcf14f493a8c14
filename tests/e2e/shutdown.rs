//! SIGTERM: the host stops taking work, lets in-flight creations finish within its grace
//! period, hands the rest back to RabbitMQ, and exits 0; another host finishes what was
//! handed back, adopting the servers already made.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions, message_count, require_rabbitmq};

async fn order_and_wait_provisioning(stack: &Stack, count: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(stack.order_server(&format!("drain-{i}")).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        while stack.order(id).await?["status"] != "provisioning" {
            assert!(
                Instant::now() < deadline,
                "{id} not provisioning\n{}",
                stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(ids)
}

/// Creations that finish within the grace period finish before the host exits 0, and their
/// requests are acked before it goes (none is handed back for redelivery).
#[tokio::test]
async fn sigterm_lets_in_flight_creations_finish() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(2),
        host_env: vec![("SHUTDOWN_GRACE_SECS".into(), "20".into())],
        ..StackOptions::default()
    })
    .await?;
    let ids = order_and_wait_provisioning(&stack, 5).await?;
    let code = stack.terminate_host(Duration::from_secs(30)).await?;
    assert_eq!(code, Some(0), "{}", stack.logs());
    // Finished by the host that was told to stop: no other host ran.
    for id in &ids {
        stack
            .wait_for_status(id, "active", Duration::from_secs(10))
            .await?;
    }
    assert_eq!(stack.sim_stats().await?["created_total"], 5);
    let channel = require_rabbitmq().await.create_channel().await?;
    let queue = stack.topology.request_queue("hetzner");
    let handed_back = message_count(&channel, &queue).await?;
    assert_eq!(handed_back, 0, "{queue}: requests left unacked by the host");
    stack.cleanup().await;
    Ok(())
}

/// Creations still booting when the grace period ends go back to the queue; the host
/// exits 0 and a new host adopts their servers.
#[tokio::test]
async fn sigterm_hands_back_what_does_not_finish_in_time() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(8),
        host_env: vec![("SHUTDOWN_GRACE_SECS".into(), "1".into())],
        ..StackOptions::default()
    })
    .await?;
    let ids = order_and_wait_provisioning(&stack, 3).await?;
    let code = stack.terminate_host(Duration::from_secs(15)).await?;
    assert_eq!(code, Some(0), "{}", stack.logs());
    for id in &ids {
        assert_eq!(stack.order(id).await?["status"], "provisioning");
    }
    stack.start_host()?;
    for id in &ids {
        let active = stack
            .wait_for_status(id, "active", Duration::from_secs(60))
            .await?;
        let last_attempt = active["events"]
            .as_array()
            .and_then(|events| events.last())
            .map(|event| event["attempt"].clone());
        assert_eq!(last_attempt, Some(serde_json::json!(2)), "{active}");
    }
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 3, "adopted, not made again");
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    stack.cleanup().await;
    Ok(())
}
