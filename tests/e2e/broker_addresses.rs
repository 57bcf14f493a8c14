//! Several broker addresses in `AMQP_URL` (the nodes of one cluster, comma-separated):
//! both programs connect to the first that answers and name it in their logs; an entry
//! that is not an AMQP URL stops either program at start, naming the entry.

use std::time::Duration;

use provisioner_tests::{AMQP_URL, Stack, StackOptions, binary};
use reqwest::Method;

/// Nothing listens on port 1 of this machine: a node that is down.
const DOWN_NODE: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

#[tokio::test]
async fn both_programs_connect_to_the_first_address_that_answers() -> anyhow::Result<()> {
    let list = format!("{DOWN_NODE}, {AMQP_URL}");
    let host_metrics = format!("127.0.0.1:{}", provisioner_tests::free_port());
    let stack = Stack::start(StackOptions {
        amqp_url: Some(list),
        host_env: vec![("METRICS_ADDR".into(), host_metrics.clone())],
        ..StackOptions::default()
    })
    .await?;
    let (status, _, _, order) = stack
        .post_order(r#"{"vendor":"hetzner","region":"fsn1","size":"cx22","image":"ubuntu-24.04","name":"listed"}"#)
        .await?;
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().expect("an id").to_string();
    stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    // Each program says where it is, the password hidden: address 2 of 2.
    both_went_past_the_node_that_is_down(&stack);
    // `/readyz` and both programs' metrics say it too.
    let (_, ready) = stack
        .api()
        .status_and_json(Method::GET, "/readyz", None)
        .await?;
    assert_eq!(
        ready["broker_node"],
        serde_json::json!({"address": "amqp://guest:***@127.0.0.1:5672/%2f", "position": 2, "of": 2}),
        "{ready}"
    );
    let series = r#"provisioner_broker_connected{address="amqp://guest:***@127.0.0.1:5672/%2f"}"#;
    let api_metrics = stack.metrics().await?;
    assert_eq!(
        provisioner_tests::metric_value(&api_metrics, series),
        Some(1.0),
        "{api_metrics}"
    );
    let host_metrics = reqwest::get(format!("http://{host_metrics}/metrics"))
        .await?
        .text()
        .await?;
    assert_eq!(
        provisioner_tests::metric_value(&host_metrics, series),
        Some(1.0),
        "{host_metrics}"
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_entry_that_is_not_an_amqp_url_stops_either_program_at_start() -> anyhow::Result<()> {
    let list = format!("{AMQP_URL},http://guest:secret@127.0.0.1:5672");
    let dir = provisioner_tests::target_dir().join("test-runs");
    std::fs::create_dir_all(&dir)?;
    let database = format!(
        "sqlite://{}?mode=rwc",
        dir.join(format!("addresses-{}.db", uuid::Uuid::new_v4().simple()))
            .display()
    );
    for program in ["order-api", "provisioner-host"] {
        let output = tokio::process::Command::new(binary("debug", program))
            .env("AMQP_URL", &list)
            .env("DATABASE_URL", &database)
            .env("PLUGINS_DIR", std::env::temp_dir())
            .output()
            .await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{program}: {stderr}");
        assert!(
            stderr.contains("AMQP_URL") && stderr.contains("entry 2"),
            "{program} should name the bad entry: {stderr}"
        );
        assert!(
            !stderr.contains("secret"),
            "{program} showed a password: {stderr}"
        );
    }
    Ok(())
}

/// `AMQP_NODES` lists a cluster's nodes as `host:port` and reuses `AMQP_URL`'s credentials
/// and virtual host for each: both programs go past the node that is down to the next.
#[tokio::test]
async fn amqp_nodes_reuse_one_url_for_every_node() -> anyhow::Result<()> {
    let env = vec![(
        "AMQP_NODES".to_string(),
        "127.0.0.1:1,127.0.0.1:5672".to_string(),
    )];
    let stack = Stack::start(StackOptions {
        host_env: env.clone(),
        api_env: env,
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_at("hetzner", "by-nodes").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    both_went_past_the_node_that_is_down(&stack);
    stack.cleanup().await;
    Ok(())
}

/// Both programs' logs say they connected to this machine's broker, the second of two
/// addresses (the first is down), with the password hidden.
fn both_went_past_the_node_that_is_down(stack: &Stack) {
    for (program, log) in [
        ("order-api", stack.api_log()),
        ("the host", stack.host_log()),
    ] {
        assert!(
            log.lines()
                .any(|line| line.contains("connected to RabbitMQ at")
                    && line.contains("guest:***@127.0.0.1:5672")
                    && line.contains("address 2 of 2")),
            "{program}'s log names no node it is on:\n{log}"
        );
        assert!(
            !log.contains("guest:guest@"),
            "a password in {program}'s log"
        );
    }
}
