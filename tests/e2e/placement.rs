//! Fallback across vendors and regions (`placement`): every candidate is checked at accept;
//! a server that fails for good where the place cannot serve it (a region sold out:
//! `no_capacity`) moves to the next candidate after the clean-up at the first answered, and
//! nothing is left there; a refusal that says the request is wrong does not move it.

use std::time::Duration;

use anyhow::Context;
use provisioner_tests::{Stack, StackOptions, event_messages, fixture, metric_value};
use serde_json::{Value, json};
use vendor_sim::control::Capacity;
use vendor_sim::state::Vendor;

/// A candidate at `vendor` in `region`, with the vendor's fixture size and image.
fn candidate_in(vendor: &str, region: &str) -> Value {
    let fixture = fixture(vendor);
    json!({"vendor": vendor, "region": region, "size": fixture.size, "image": fixture.image})
}

/// A Hetzner candidate in `region`.
fn hetzner_in(region: &str) -> Value {
    candidate_in("hetzner", region)
}

/// A DigitalOcean candidate in its fixture region.
fn at_digitalocean() -> Value {
    candidate_in("digitalocean", fixture("digitalocean").region)
}

/// The fields `names` of the JSON object `value`, to compare at once.
fn fields_of<const N: usize>(value: &Value, names: [&str; N]) -> [Value; N] {
    names.map(|name| value[name].clone())
}

/// An order update from Hetzner about the order (or fleet member) `order_id`.
fn hetzner_update(
    order_id: uuid::Uuid,
    attempt: u32,
    kind: provisioner_contract::UpdateKind,
) -> provisioner_contract::OrderUpdate {
    provisioner_contract::OrderUpdate {
        order_id,
        vendor: "hetzner".into(),
        at: chrono::Utc::now(),
        attempt,
        kind,
    }
}

/// An order body for `count` servers named `name` over `placement`.
fn placed_body(name: &str, count: u32, placement: Value) -> String {
    json!({"name": name, "count": count, "placement": placement}).to_string()
}

/// The key the server with key `key` had at the first candidate (its candidate byte 0).
fn first_candidates_key(key: &str) -> String {
    let (head, tail) = key.split_at(key.len() - 4);
    format!("{head}00{}", &tail[2..])
}

/// The key the server with first-candidate key `key` has at candidate `candidate` (0 for the
/// first).
fn candidates_key(key: &str, candidate: u8) -> String {
    let (head, tail) = key.split_at(key.len() - 4);
    format!("{head}{candidate:02x}{}", &tail[2..])
}

/// Posts the order `body`, which must be accepted (202): its id and the answer.
async fn post_accepted(stack: &Stack, body: &str) -> anyhow::Result<(String, Value)> {
    let (status, _, _, accepted) = stack.post_order(body).await?;
    anyhow::ensure!(status == 202, "ordering answered {status}: {accepted}");
    let id = accepted["id"].as_str().context("no id")?.to_string();
    Ok((id, accepted))
}

/// Posts the order `body` (202) and waits up to `within` for it to be active: its id and the
/// order as it was then.
async fn order_until_active(
    stack: &Stack,
    body: &str,
    within: Duration,
) -> anyhow::Result<(String, Value)> {
    let (id, _) = post_accepted(stack, body).await?;
    let active = stack.wait_for_status(&id, "active", within).await?;
    Ok((id, active))
}

/// Hosts that give up on a vendor error after two quick attempts.
fn quick_to_give_up() -> StackOptions {
    StackOptions {
        host_env: vec![
            ("RETRY_BASE_MS".into(), "20".into()),
            ("RETRY_MAX_ATTEMPTS".into(), "2".into()),
        ],
        ..StackOptions::default()
    }
}

/// `POST /_sim/capacity`.
async fn set_capacity(stack: &Stack, region: &str, available: bool) -> anyhow::Result<()> {
    stack
        .sim()
        .set_capacity(&Capacity {
            vendor: Vendor::Hetzner,
            region: region.to_string(),
            available,
        })
        .await
}

#[tokio::test]
async fn twenty_servers_move_to_the_second_region_when_the_first_is_sold_out() -> anyhow::Result<()>
{
    let stack = Stack::start(quick_to_give_up()).await?;
    set_capacity(&stack, "fsn1", false).await?;
    let body = placed_body("fleet", 20, json!([hetzner_in("fsn1"), hetzner_in("nbg1")]));
    let (id, accepted) = post_accepted(&stack, &body).await?;
    assert_eq!(accepted["vendor"], "hetzner", "{accepted}");
    assert_eq!(
        accepted["region"], "fsn1",
        "the first candidate: {accepted}"
    );
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(180))
        .await?;
    let servers = active["servers"].as_array().context("no servers")?;
    assert_eq!(servers.len(), 20, "{active}");
    for server in servers {
        assert_eq!(
            fields_of(server, ["status", "candidate", "region"]),
            [json!("active"), json!(2), json!("nbg1")],
            "{server}"
        );
        let key = server["key"].as_str().context("no key")?;
        assert_eq!(stack.live_servers_of(key).await?.len(), 1, "{key}");
        // Nothing at the first candidate under the key the server had there.
        let first = first_candidates_key(key);
        assert_ne!(first, key);
        assert!(stack.live_servers_of(&first).await?.is_empty(), "{first}");
    }
    assert_eq!(stack.sim_stats().await?["created_total"], 20);
    // The log tells each move and the clean-up it waited for.
    let messages = event_messages(&active);
    let moves = messages
        .iter()
        .filter(|m| m.contains("moving to hetzner nbg1"))
        .count();
    assert_eq!(moves, 20, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("the previous candidate's clean-up answered")),
        "{messages:?}"
    );
    let metrics = stack.metrics().await?;
    assert_eq!(
        metric_value(
            &metrics,
            "provisioner_placement_moves{reason=\"no_capacity\"}"
        ),
        Some(20.0),
        "{metrics}"
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_refusal_that_says_the_request_is_wrong_does_not_move() -> anyhow::Result<()> {
    let stack = Stack::start(quick_to_give_up()).await?;
    stack
        .inject_fault(
            json!({"vendor": "hetzner", "kind": "unauthorized", "method": "POST", "count": 1}),
        )
        .await?;
    let body = placed_body("stay", 1, json!([hetzner_in("fsn1"), hetzner_in("nbg1")]));
    let (id, _) = post_accepted(&stack, &body).await?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "unauthorized", "{failed}");
    let servers = failed["servers"].as_array().context("no servers")?;
    assert_eq!(servers.len(), 1, "{failed}");
    assert_eq!(servers[0]["candidate"], 1, "{failed}");
    assert_eq!(
        servers[0]["name"], "stay",
        "one server keeps the order's name"
    );
    assert_eq!(stack.sim_stats().await?["created_total"], 0);
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn every_candidate_is_checked_before_the_order_is_accepted() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let nowhere = candidate_in("digitalocean", "mars1");
    let (status, _, _, refused) = stack
        .post_order(&placed_body("x", 1, json!([hetzner_in("fsn1"), nowhere])))
        .await?;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["type"], "/problems/refused-by-vendor", "{refused}");
    assert_eq!(refused["vendor"], "digitalocean", "{refused}");
    let detail = refused["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("placement[1]") && detail.contains("mars1"),
        "{refused}"
    );

    let unknown = json!({"vendor": "nimbus", "region": "a", "size": "b", "image": "c"});
    let (status, _, _, answer) = stack
        .post_order(&placed_body("x", 1, json!([hetzner_in("fsn1"), unknown])))
        .await?;
    assert_eq!(
        (status, answer["type"].clone()),
        (422, json!("/problems/unknown-vendor")),
        "{answer}"
    );

    let mut both: Value = serde_json::from_str(&fixture("hetzner").order_body("x"))?;
    both["placement"] = json!([hetzner_in("nbg1")]);
    for body in [
        both.to_string(),
        placed_body("x", 1, json!([])),
        placed_body(
            "x",
            1,
            json!([{"vendor": "hetzner", "region": "", "size": "cx22", "image": "i"}]),
        ),
    ] {
        let (status, _, _, answer) = stack.post_order(&body).await?;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["type"], "/problems/validation-failed", "{answer}");
    }
    let (status, _, _, answer) = stack
        .post_order(&json!({"name": "x", "vendor": "hetzner"}).to_string())
        .await?;
    assert_eq!(
        (status, answer["type"].clone()),
        (422, json!("/problems/invalid-body")),
        "{answer}"
    );
    assert!(stack.list_all_orders("").await?.is_empty());
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_server_no_host_takes_moves_on_and_nothing_is_left_when_the_host_returns()
-> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        api_env: vec![
            ("PLACEMENT_NO_HOST_SECS".into(), "2".into()),
            ("WATCHDOG_INTERVAL_SECS".into(), "1".into()),
            ("VALIDATE_TIMEOUT_MS".into(), "200".into()),
        ],
        host_env: vec![("ANNOUNCE_INTERVAL_SECS".into(), "1".into())],
        ..StackOptions::default()
    })
    .await?;
    // The host dies without a word: its vendors stay known, their announcements stop.
    stack.kill_host().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let body = placed_body("away", 1, json!([hetzner_in("fsn1"), at_digitalocean()]));
    let (id, accepted) = post_accepted(&stack, &body).await?;
    let first_key = accepted["servers"][0]["key"]
        .as_str()
        .context("no key")?
        .to_string();
    let moved = stack
        .wait_for_event(&id, "no host has served hetzner", Duration::from_secs(30))
        .await?;
    assert_eq!(moved["servers"][0]["candidate"], 2, "{moved}");
    assert_eq!(moved["servers"][0]["vendor"], "digitalocean", "{moved}");

    // The host comes back: the create waiting at Hetzner runs before its cancel, and what it
    // made there is deleted; the server is made at DigitalOcean.
    stack.start_host()?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    assert_eq!(active["servers"][0]["vendor"], "digitalocean", "{active}");
    stack.wait_until_no_server(&first_key).await?;
    let metrics = stack.metrics().await?;
    assert_eq!(
        metric_value(&metrics, "provisioner_placement_moves{reason=\"no_host\"}"),
        Some(1.0),
        "{metrics}"
    );
    stack.cleanup().await;
    Ok(())
}

/// A candidate at a vendor where the tenant may have no more live servers is passed over, as
/// a sold-out region would be, and the log says so: the tenant's quota holds after a move as
/// it does at accept (which asks the first candidate's vendor only). The move is told to the
/// order's webhook (`order.moved`) with where from, where to and why.
#[tokio::test]
async fn a_move_passes_over_a_candidate_over_the_tenants_quota_and_calls_the_webhook()
-> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        api_env: vec![
            // The receiver is this test, on 127.0.0.1.
            ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES".into(), "true".into()),
        ],
        ..quick_to_give_up()
    })
    .await?;
    let (status, set) = crate::quotas::put_quotas(
        &stack,
        provisioner_tests::TEST_TENANT,
        json!({"vendors": {"digitalocean": {"max_live_servers": 0}}}),
    )
    .await?;
    assert_eq!(status, 200, "{set}");
    set_capacity(&stack, "fsn1", false).await?;
    let (url, calls) = crate::webhooks::start_receiver(0).await?;
    let over_quota = at_digitalocean();
    let mut body: Value = serde_json::from_str(&placed_body(
        "passed",
        1,
        json!([hetzner_in("fsn1"), over_quota, hetzner_in("nbg1")]),
    ))?;
    body["webhook_url"] = json!(url);
    let (id, active) =
        order_until_active(&stack, &body.to_string(), Duration::from_secs(90)).await?;
    let server = &active["servers"][0];
    assert_eq!(
        fields_of(server, ["candidate", "vendor", "region"]),
        [json!(3), json!("hetzner"), json!("nbg1")],
        "{active}"
    );
    let messages = event_messages(&active);
    assert!(
        messages
            .iter()
            .any(|m| m.contains("candidate 2 (digitalocean")
                && m.contains("passed over")
                && m.contains("may have at most 0")),
        "{messages:?}"
    );
    assert_eq!(
        stack.sim_stats_of("digitalocean").await?["created_total"],
        0
    );

    // The webhook told of the move (and of the order settling, after it).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let moved = loop {
        let bodies: Vec<Value> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter_map(|call| serde_json::from_str(&call.body).ok())
            .collect();
        if let Some(moved) = bodies.iter().find(|b| b["type"] == "order.moved") {
            break moved.clone();
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no order.moved call: {bodies:?}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(moved["data"]["id"], id.as_str(), "{moved}");
    assert_eq!(
        (
            moved["moved"]["reason"].clone(),
            moved["moved"]["number"].clone(),
            moved["moved"]["from"]["candidate"].clone(),
            moved["moved"]["from"]["region"].clone(),
            moved["moved"]["to"]["candidate"].clone(),
            moved["moved"]["to"]["region"].clone(),
        ),
        (
            json!("no_capacity"),
            json!(1),
            json!(1),
            json!("fsn1"),
            json!(3),
            json!("nbg1")
        ),
        "{moved}"
    );
    stack.cleanup().await;
    Ok(())
}

/// A create made the server at the first candidate without hearing so (its answer lost) and
/// failed for good there (the vendor unavailable through the host's two attempts): the
/// clean-up before the move finds the server running and keeps it; the order is active at the
/// first candidate, the move is called off, and nothing is made at the second.
#[tokio::test]
async fn a_server_found_running_where_it_failed_is_adopted_and_the_move_called_off()
-> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_millis(10),
        ..quick_to_give_up()
    })
    .await?;
    // Attempt 1: the key's look-up meets the vendor down. Attempt 2: the look-up finds
    // nothing, the create is carried out and its answer lost. Both attempts failed.
    stack.hetzner_down_for("GET", 1).await?;
    stack
        .inject_fault(
            json!({"vendor": "hetzner", "kind": "lost_response", "method": "POST", "count": 1}),
        )
        .await?;
    let body = placed_body("kept", 1, json!([hetzner_in("fsn1"), hetzner_in("nbg1")]));
    let (id, active) = order_until_active(&stack, &body, Duration::from_secs(60)).await?;
    let server = &active["servers"][0];
    assert_eq!(
        fields_of(server, ["status", "candidate", "region"]),
        [json!("active"), json!(1), json!("fsn1")],
        "the server stays where it was made: {active}"
    );
    let key = server["key"].as_str().context("no key")?;
    let live = stack.live_servers_of(key).await?;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        server["server"]["vendor_id"].as_str(),
        Some(live[0]["id"].to_string().as_str()),
        "the order records the server it adopted: {active} {live:?}"
    );
    let messages = event_messages(&active);
    assert!(
        messages
            .iter()
            .any(|m| m.contains("adopted server") && m.contains("move is called off")),
        "{messages:?}"
    );
    // The move was called off: its create never went out, now or later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.sim_stats().await?["created_total"], 1);
    assert!(
        stack
            .live_servers_of(&candidates_key(key, 1))
            .await?
            .is_empty(),
        "nothing at the second candidate"
    );
    let settled = stack.order(&id).await?;
    assert_eq!(settled["status"], "active", "{settled}");

    // The adopted server is the order's: deleting the order deletes it.
    let (status, deleting) = stack.delete_order(&id).await?;
    assert_eq!(status, 202, "{deleting}");
    stack
        .wait_for_status(&id, "deleted", Duration::from_secs(60))
        .await?;
    assert!(stack.live_servers_of(key).await?.is_empty());
    stack.cleanup().await;
    Ok(())
}

/// A server that moved to another vendor is cancelled or deleted at that vendor: deleting an
/// order whose server moved from Hetzner to DigitalOcean deletes the droplet.
#[tokio::test]
async fn deleting_an_order_whose_server_moved_to_another_vendor_deletes_it_there()
-> anyhow::Result<()> {
    let stack = Stack::start(quick_to_give_up()).await?;
    set_capacity(&stack, "fsn1", false).await?;
    let body = placed_body("away", 1, json!([hetzner_in("fsn1"), at_digitalocean()]));
    let (id, active) = order_until_active(&stack, &body, Duration::from_secs(90)).await?;
    let server = &active["servers"][0];
    assert_eq!(server["vendor"], "digitalocean", "{active}");
    let key = server["key"].as_str().context("no key")?;
    assert_eq!(stack.live_servers_of(key).await?.len(), 1);

    let (status, deleting) = stack.delete_order(&id).await?;
    assert_eq!(status, 202, "{deleting}");
    let deleted = stack
        .wait_for_status(&id, "deleted", Duration::from_secs(60))
        .await?;
    let live = stack.live_servers_of(key).await?;
    assert!(
        live.is_empty(),
        "the droplet is still there: {live:?}\n{deleted}"
    );
    stack.cleanup().await;
    Ok(())
}

/// A store on a fresh SQLite database holding an order for one server with a placement
/// (Hetzner fsn1, then nbg1) whose second attempt at fsn1 failed for capacity (after the
/// vendor accepted server `recorded`, when given): it may have made a server, so its move
/// waits for the clean-up there. The store, the order's id, the failed server's and the moved
/// server's keys, and the database's folder.
async fn a_move_waiting_for_its_clean_up(
    recorded: Option<provisioner_contract::ServerInfo>,
) -> anyhow::Result<(
    order_api::store::Store,
    uuid::Uuid,
    uuid::Uuid,
    uuid::Uuid,
    std::path::PathBuf,
)> {
    use order_api::store::{Candidate, Order, OutboxMessage, Store, fleets};
    use provisioner_contract::{Fault, UpdateKind};

    let dir = provisioner_tests::target_dir()
        .join("test-runs")
        .join(format!("moves-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let store = Store::connect(&format!("sqlite://{}/orders.db", dir.display())).await?;
    let candidate = |region: &str| Candidate {
        vendor: "hetzner".into(),
        region: region.into(),
        size: "cx22".into(),
        image: "ubuntu-24.04".into(),
    };
    // An order as postgres.rs makes them (Hetzner, fsn1), with a placement.
    let (base, _) = crate::postgres::new_order();
    let fleet = Order {
        id: fleets::new_fleet_id(),
        placement: Some(vec![candidate("fsn1"), candidate("nbg1")]),
        ..base
    };
    let first = Order {
        id: fleets::member_id(fleet.id, 1, 0),
        placement: None,
        ..fleet.clone()
    };
    let create = OutboxMessage {
        message_id: uuid::Uuid::new_v4(),
        order_id: first.id,
        routing_key: "request.hetzner".into(),
        body: b"{}".to_vec(),
        traceparent: None,
        attempts: 0,
        lease_free: false,
    };
    store
        .insert_order(
            &fleet,
            std::slice::from_ref(&first),
            std::slice::from_ref(&create),
            None,
        )
        .await?;
    store.mark_published(&[create]).await?;
    if let Some(server) = recorded {
        store
            .apply_update(&hetzner_update(
                first.id,
                1,
                UpdateKind::Provisioning { server },
            ))
            .await?;
    }
    store
        .apply_update(&hetzner_update(
            first.id,
            2,
            UpdateKind::Failed {
                fault: Fault {
                    code: "no_capacity".into(),
                    message: "sold out".into(),
                    retryable: true,
                },
                server: None,
            },
        ))
        .await?;
    let moved = fleets::member_id(fleet.id, 1, 1);
    Ok((store, fleet.id, first.id, moved, dir))
}

/// A running server with the vendor id `4711`, as a vendor reports it.
fn running_server_4711() -> provisioner_contract::ServerInfo {
    provisioner_contract::ServerInfo {
        vendor_id: "4711".into(),
        name: "web".into(),
        status: provisioner_contract::ServerStatus::Running,
        ipv4: None,
        ipv6: None,
    }
}

/// The creates of `member` among outbox messages `due`.
fn creates_of(member: uuid::Uuid, due: &[order_api::store::OutboxMessage]) -> usize {
    due.iter()
        .filter(|m| m.order_id == member && String::from_utf8_lossy(&m.body).contains("\"create\""))
        .count()
}

/// A move waits for the clean-up at the failed candidate; when that answer never comes (lost,
/// or a host stuck), the watchdog's pass sends the next candidate's create after its time
/// without news, once. Through the store on a real SQLite database: a lost answer cannot be
/// arranged through the processes without racing them.
#[tokio::test]
async fn a_move_whose_clean_up_does_not_answer_goes_on_after_the_watchdogs_time()
-> anyhow::Result<()> {
    use order_api::lifecycle::OrderStatus;
    use provisioner_contract::UpdateKind;

    let (store, fleet, first, moved, dir) = a_move_waiting_for_its_clean_up(None).await?;
    let due = store.due_outbox(100).await?;
    assert!(
        due.iter().any(|m| m.order_id == first
            && String::from_utf8_lossy(&m.body).contains("\"adopt_running\":true")),
        "the clean-up is queued, keeping a running server: {due:?}"
    );
    assert_eq!(
        creates_of(moved, &due),
        0,
        "the move waits for the clean-up"
    );
    let servers = store.fleet_servers(fleet).await?;
    assert_eq!(
        (servers[0].candidate, servers[0].status),
        (2, OrderStatus::Pending)
    );

    // Not yet: the clean-up has had no time. Then the watchdog's time passes.
    assert_eq!(
        store
            .release_waiting_moves(Duration::from_secs(600))
            .await?,
        0
    );
    assert_eq!(store.release_waiting_moves(Duration::ZERO).await?, 1);
    assert_eq!(creates_of(moved, &store.due_outbox(100).await?), 1);
    let (order, _) = store.order(fleet).await?.context("no order")?;
    let events = store.order(moved).await?.context("no moved server")?.1;
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("has not answered for 0 s")),
        "{events:?} ({order:?})"
    );
    // Once only, and the late answer sends nothing more.
    assert_eq!(store.release_waiting_moves(Duration::ZERO).await?, 0);
    store
        .apply_update(&hetzner_update(
            first,
            1,
            UpdateKind::Cancelled { server: None },
        ))
        .await?;
    assert_eq!(creates_of(moved, &store.due_outbox(100).await?), 1);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A server of the failed candidate that turns up other than through the clean-up (a late
/// create's news) while the move waits is deleted and the move goes on; the clean-up's answer
/// that it kept that server then adopts nothing: it is deleted again, never both adopted and
/// deleted. Through the store: the two answers' order cannot be arranged through the
/// processes without racing them.
#[tokio::test]
async fn a_server_that_turns_up_late_is_deleted_and_never_adopted() -> anyhow::Result<()> {
    use order_api::lifecycle::OrderStatus;
    use provisioner_contract::UpdateKind;

    let (store, fleet, first, moved, dir) = a_move_waiting_for_its_clean_up(None).await?;
    let server = running_server_4711();
    let update = |kind| hetzner_update(first, 1, kind);
    let deletes_of_first = |due: &[order_api::store::OutboxMessage]| {
        due.iter()
            .filter(|m| {
                m.order_id == first && String::from_utf8_lossy(&m.body).contains("\"delete\"")
            })
            .count()
    };
    store
        .apply_update(&update(UpdateKind::Active {
            server: server.clone(),
        }))
        .await?;
    let due = store.due_outbox(100).await?;
    assert_eq!(
        deletes_of_first(&due),
        1,
        "the late server is deleted: {due:?}"
    );
    assert_eq!(creates_of(moved, &due), 1, "and the move goes on: {due:?}");

    store
        .apply_update(&update(UpdateKind::Adopted { server }))
        .await?;
    let due = store.due_outbox(100).await?;
    assert_eq!(deletes_of_first(&due), 2, "not adopted: deleted: {due:?}");
    let servers = store.fleet_servers(fleet).await?;
    assert_eq!(
        (servers[0].candidate, servers[0].status),
        (2, OrderStatus::Pending),
        "the server is on its way at the second candidate"
    );
    let (_, events) = store.order(first).await?.context("no failed server")?;
    assert!(
        !events.iter().any(|e| e.message.contains("adopted")),
        "{events:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The clean-up a move waited for keeps the failed server's recorded server, running, but the
/// move went on meanwhile (the watchdog's time passed): that server is deleted, not adopted
/// and not left running under a failed order.
#[tokio::test]
async fn a_server_kept_for_a_move_that_went_on_is_deleted() -> anyhow::Result<()> {
    use provisioner_contract::{ServerInfo, ServerStatus, UpdateKind};

    let server = running_server_4711();
    let (store, _, first, moved, dir) = a_move_waiting_for_its_clean_up(Some(ServerInfo {
        status: ServerStatus::Provisioning,
        ..server.clone()
    }))
    .await?;
    assert_eq!(store.release_waiting_moves(Duration::ZERO).await?, 1);
    assert_eq!(creates_of(moved, &store.due_outbox(100).await?), 1);
    store
        .apply_update(&hetzner_update(first, 1, UpdateKind::Adopted { server }))
        .await?;
    let deletes = store
        .due_outbox(100)
        .await?
        .iter()
        .filter(|m| {
            m.order_id == first
                && String::from_utf8_lossy(&m.body).contains("\"delete\"")
                && String::from_utf8_lossy(&m.body).contains("4711")
        })
        .count();
    assert_eq!(deletes, 1, "the kept server is deleted");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
