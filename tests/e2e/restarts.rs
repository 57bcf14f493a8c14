//! Either program dies at a bad moment; nothing is lost and no server is made twice.

use std::time::Duration;

use provisioner_tests::{Stack, StackOptions};

/// The host is SIGKILLed after Hetzner made the server but before the result was
/// published; after a restart the order ends `active` and Hetzner holds exactly one server
/// for it (the plugin adopted it by its idempotency label).
#[tokio::test]
async fn host_killed_after_create_adopts_the_server_instead_of_making_another() -> anyhow::Result<()>
{
    crate::vendors::redelivered_create_adopts("hetzner").await
}

/// order-api is SIGKILLed right after accepting orders (some still in its outbox, others
/// at the host) and restarted on the same database: every order still ends `active`.
#[tokio::test]
async fn order_api_killed_mid_flight_loses_no_order() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_millis(1500),
        ..StackOptions::default()
    })
    .await?;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(stack.order_server(&format!("inflight-{i}")).await?);
    }
    stack.kill_api().await;
    // Results keep arriving on the queue while order-api is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start_api()?;
    stack.wait_ready().await?;
    for id in &ids {
        stack
            .wait_for_status(id, "active", Duration::from_secs(60))
            .await?;
    }
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 20);
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    stack.cleanup().await;
    Ok(())
}

/// The same creation request delivered twice more (same message id, e.g. a publisher's
/// retry after a lost confirm): one server, and the order's history does not change.
#[tokio::test]
async fn a_duplicate_request_has_one_effect() -> anyhow::Result<()> {
    use lapin::options::BasicPublishOptions;
    use provisioner_contract::{Envelope, HostRequest, ProvisionRequest, ServerSpec, encode};

    let stack = Stack::start(StackOptions::default()).await?;
    let id = stack.order_server("duplicated").await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let spec: ServerSpec = serde_json::from_value(serde_json::json!({
        "name": active["name"], "region": active["region"], "size": active["size"],
        "image": active["image"],
    }))?;
    let request = HostRequest::Create(ProvisionRequest {
        order_id: id.parse()?,
        vendor: "hetzner".into(),
        spec,
        ordered_at: None,
    });
    let envelope = Envelope::for_order(id.parse()?, None);
    let connection = provisioner_tests::require_rabbitmq().await;
    let channel = connection.create_channel().await?;
    for _ in 0..2 {
        channel
            .basic_publish(
                stack.topology.requests_exchange().as_str().into(),
                "request.hetzner".into(),
                BasicPublishOptions::default(),
                &encode(&request),
                envelope.properties(),
            )
            .await?
            .await?;
    }
    // Both copies are handled (the host logs each) and change nothing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stack.host_log().matches("server running").count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the copies were not handled\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = stack.order(&id).await?;
    assert_eq!(after["status"], "active");
    assert_eq!(after["events"], active["events"], "the history changed");
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 1);
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}
