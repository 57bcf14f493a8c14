//! Drop-in plugins: copying a component and its manifest into the host's folder makes the
//! vendor available without restarting anything; removing it stops new orders. And how
//! soon order-api sees a vendor come and go.

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

/// Whether a vendor is served is asked on every order: the answer "served" is remembered for
/// a moment ([`order_api::store::VENDOR_CACHE_TTL`]) instead of read from the database each
/// time. A withdrawal through the same store forgets it at once; one made elsewhere (another
/// order-api instance took the host's message) is seen within the time to live; a vendor
/// not served is always read again, so a newly announced one is known at once. Through the
/// store, on the suite's store.
#[tokio::test]
async fn a_served_vendor_is_remembered_for_a_moment_and_forgotten_on_withdrawal()
-> anyhow::Result<()> {
    use order_api::store::{Store, VENDOR_CACHE_TTL};
    use provisioner_contract::{VendorAnnouncement, VendorWithdrawal};

    let database = provisioner_tests::EarlierDatabase::migrated_below(i64::MAX).await?;
    let store = Store::connect(&database.url).await?;
    let announcement = |vendor: &str| VendorAnnouncement {
        vendor: vendor.into(),
        display_name: vendor.into(),
        plugin_version: "1".into(),
        host_id: "host-1".into(),
        at: chrono::Utc::now(),
        catalogue: None,
    };
    let withdrawn_elsewhere = |vendor: &'static str| {
        sqlx::query("DELETE FROM vendor_hosts WHERE vendor = $1")
            .bind(vendor)
            .execute(&database.pool)
    };

    // Not served: read every time, so an announcement is seen at once.
    assert!(!store.vendor_known("alpha").await?);
    store.upsert_vendor(&announcement("alpha")).await?;
    assert!(store.vendor_known("alpha").await?);

    // Served: remembered, so a withdrawal another instance recorded is not seen at once...
    withdrawn_elsewhere("alpha").await?;
    assert!(
        store.vendor_known("alpha").await?,
        "a served vendor was read again at once, not remembered"
    );
    // ...but within the time to live.
    tokio::time::sleep(VENDOR_CACHE_TTL + Duration::from_millis(50)).await;
    assert!(!store.vendor_known("alpha").await?);

    // A withdrawal through this store is seen at once.
    store.upsert_vendor(&announcement("beta")).await?;
    assert!(store.vendor_known("beta").await?);
    store
        .withdraw_vendor(&VendorWithdrawal {
            vendor: "beta".into(),
            host_id: "host-1".into(),
            at: chrono::Utc::now(),
            unavailable: None,
        })
        .await?;
    assert!(!store.vendor_known("beta").await?);
    database.remove().await
}
