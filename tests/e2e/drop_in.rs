//! Drop-in plugins: copying a component and its manifest into the host's folder makes the
//! vendor available without restarting anything; removing it stops new orders.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions, test_plugin_component};

async fn wait_for_vendors(stack: &Stack, present: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.vendors().await?.contains(&"dropin".to_string()) != present {
        assert!(
            Instant::now() < deadline,
            "dropin never became present={present}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A new vendor appears, its orders succeed; removed, it disappears and new orders for it
/// are refused (the other vendors are untouched throughout).
#[tokio::test]
async fn a_dropped_in_plugin_serves_orders_and_its_removal_stops_them() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let manifest = format!(
        "vendor = \"dropin\"\ncomponent = {:?}\n[config]\nvendor-id = \"dropin\"\nbehaviour = \"none\"\n",
        test_plugin_component("hostile").display().to_string()
    );
    let path = stack.plugins_dir().join("dropin.toml");
    std::fs::write(&path, manifest)?;
    wait_for_vendors(&stack, true).await?;

    let body = r#"{"vendor":"dropin","region":"r","size":"s","image":"i","name":"dropped-1"}"#;
    let (status, _, _, order) = stack.post_order(body).await?;
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().unwrap_or_default().to_string();
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    assert_eq!(active["server"]["ipv4"], "192.0.2.1");

    std::fs::remove_file(&path)?;
    wait_for_vendors(&stack, false).await?;
    let (status, _, _, problem) = stack.post_order(body).await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "/problems/unknown-vendor");

    // The shipped vendors were served all along.
    let id = stack.order_server("still-here").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    stack.cleanup_serving(&["dropin"]).await;
    Ok(())
}
