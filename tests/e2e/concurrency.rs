//! Many slow creations at once: the host holds them all in flight (prefetch = the
//! manifest's `max_in_flight`, polling on timers), not one after another.
//!
//! CI runs a small N (`IN_FLIGHT_ORDERS`, default 300) with a 15 s boot, far longer than
//! placing the orders takes even on a loaded machine; the 10,000-at-once figure with a 30 s
//! boot belongs to the benchmark. No timing is asserted: the test checks that the orders were
//! in flight together and reports the host's resident memory.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions};

fn resident_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// N orders against a vendor whose servers take 15 s to boot are all booting at the same
/// time at some point, and all end `active`, each with one server.
#[tokio::test]
async fn slow_creations_are_held_in_flight_together() -> anyhow::Result<()> {
    let orders: usize = std::env::var("IN_FLIGHT_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(15),
        poll: Duration::from_millis(2000),
        ..StackOptions::default()
    })
    .await?;
    let mut ids = Vec::with_capacity(orders);
    for batch in (0..orders).collect::<Vec<_>>().chunks(50) {
        let posts = batch.iter().map(|i| {
            let name = format!("load-{i}");
            let stack = &stack;
            async move { stack.order_server(&name).await }
        });
        ids.extend(futures_util::future::try_join_all(posts).await?);
    }
    // Sample while the servers boot: how many boot at once, and the host's memory.
    let mut most_booting = 0u64;
    let mut peak_rss = 0f64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stats = stack.sim_stats().await?;
        most_booting = most_booting.max(stats["booting"].as_u64().unwrap_or(0));
        if let Some(rss) = stack.host_pid().and_then(resident_mib) {
            peak_rss = peak_rss.max(rss);
        }
        if stats["created_total"] == orders as u64 && stats["booting"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the servers were not all made and booted in time\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        stack
            .wait_for_status(id, "active", Duration::from_secs(60))
            .await?;
    }
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], orders as u64);
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    eprintln!(
        "in flight together: {most_booting} of {orders} booting at once; host peak RSS {peak_rss:.1} MiB"
    );
    assert!(
        most_booting as f64 >= orders as f64 * 0.9,
        "only {most_booting} of {orders} were in flight together"
    );
    stack.cleanup().await;
    Ok(())
}
