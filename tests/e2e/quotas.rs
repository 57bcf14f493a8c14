//! Per-tenant quotas and order rates through the real programs: an order over a quota is a
//! `422 quota-exceeded` naming the quota, its usage and its limit; many orders at once never
//! squeeze past a limit (on the suite's store, and on PostgreSQL through two order-apis); a
//! tenant over its rate gets `429 rate-limited` with `Retry-After` while others are served;
//! admins set quotas through the API and `order-api tenants`, tenants only read theirs.

use std::time::Duration;

use anyhow::Context;
use provisioner_tests::{
    ApiClient, OrderStore, Stack, StackOptions, TEST_TENANT, binary, fixture, metric_value,
    post_order_with, usage_of_orders,
};
use reqwest::Method;
use serde_json::{Value, json};

/// `PUT /v1/tenants/{tenant}/quotas` with the admin token; the status and the answer.
pub(crate) async fn put_quotas(
    stack: &Stack,
    tenant: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let path = format!("/v1/tenants/{tenant}/quotas");
    stack
        .admin_api()?
        .status_and_json(Method::PUT, &path, Some(&body))
        .await
}

/// `GET /v1/quotas` as the stack's tenant.
async fn own_quotas(stack: &Stack) -> anyhow::Result<Value> {
    stack.api().quotas().await
}

/// POSTs a valid order at `vendor` to `api` with `client`; the status and the answer.
async fn post_at(
    client: &reqwest::Client,
    api: &str,
    vendor: &str,
    name: &str,
) -> anyhow::Result<(u16, Value)> {
    let api = ApiClient::with_http(api, client.clone());
    post_order_with(&api, fixture(vendor).order_body(name), None).await
}

/// Runs `order-api tenants <arguments>` on the stack's database; its standard output.
async fn tenants_cli(stack: &Stack, arguments: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(binary("debug", "order-api"))
        .arg("tenants")
        .args(arguments)
        .env("DATABASE_URL", stack.database_url())
        .output()
        .await
        .context("running order-api tenants")?;
    anyhow::ensure!(
        output.status.success(),
        "order-api tenants {} failed: {}",
        arguments.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// An order over the live-server quota is refused at once, naming the quota, the usage and
/// the limit; usage shows in `GET /v1/quotas` and `/metrics`; once an order's server is
/// deleted the tenant may order again.
#[tokio::test]
async fn an_order_over_the_live_server_quota_is_refused_naming_it() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let (status, set) = put_quotas(
        &stack,
        TEST_TENANT,
        json!({"limits": {"max_live_servers": 2}}),
    )
    .await?;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["all_vendors"]["limits"]["max_live_servers"], 2);

    let first = stack.order_server("quota-1").await?;
    stack.order_server("quota-2").await?;
    let (status, _, content_type, problem) = stack
        .post_order(&fixture("hetzner").order_body("quota-3"))
        .await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["type"], "/problems/quota-exceeded");
    assert_eq!(problem["quota"], "max_live_servers");
    assert_eq!(problem["usage"], 2);
    assert_eq!(problem["limit"], 2);
    assert_eq!(problem["requested"], 1);
    assert!(problem.get("vendor").is_none(), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 2"),
        "{problem}"
    );

    let quotas = own_quotas(&stack).await?;
    assert_eq!(quotas["tenant"], TEST_TENANT);
    assert_eq!(
        quotas["all_vendors"]["usage"]["live_servers"], 2,
        "{quotas}"
    );
    assert_eq!(quotas["vendors"]["hetzner"]["usage"]["live_servers"], 2);
    let metrics = stack.metrics().await?;
    let tenant = format!("{{tenant=\"{TEST_TENANT}\"}}");
    assert_eq!(
        metric_value(
            &metrics,
            &format!("provisioner_tenant_live_servers{tenant}")
        ),
        Some(2.0)
    );
    let limit = format!(
        "provisioner_tenant_quota_limit{{tenant=\"{TEST_TENANT}\",vendor=\"*\",quota=\"max_live_servers\"}}"
    );
    assert_eq!(metric_value(&metrics, &limit), Some(2.0), "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "provisioner_orders_refused_total{reason=\"quota_exceeded\"}"
        ),
        Some(1.0)
    );

    // A deleted server no longer counts: the tenant may order again.
    stack
        .wait_for_status(&first, "active", Duration::from_secs(60))
        .await?;
    let (status, answer) = stack.delete_order(&first).await?;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_for_status(&first, "deleted", Duration::from_secs(60))
        .await?;
    stack.order_server("quota-3").await?;
    stack.cleanup().await;
    Ok(())
}

/// A quota at one vendor holds there only; a quota on orders in flight counts orders that
/// are still on their way, not those that are done.
#[tokio::test]
async fn vendor_and_in_flight_quotas_hold_where_they_are_set() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(4),
        ..StackOptions::default()
    })
    .await?;
    let (status, set) = put_quotas(
        &stack,
        TEST_TENANT,
        json!({
            "limits": {"max_orders_in_flight": 1},
            "vendors": {"digitalocean": {"max_live_servers": 0}},
        }),
    )
    .await?;
    assert_eq!(status, 200, "{set}");
    let (status, problem) = post_at(&stack.http, &stack.api_url, "digitalocean", "do-1").await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["quota"], "max_live_servers");
    assert_eq!(problem["vendor"], "digitalocean");
    assert_eq!(problem["limit"], 0);

    let booting = stack.order_server("in-flight-1").await?;
    let (status, problem) = post_at(&stack.http, &stack.api_url, "hetzner", "in-flight-2").await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["quota"], "max_orders_in_flight");
    assert_eq!(problem["usage"], 1);
    // Once the first is active it is no longer in flight.
    stack
        .wait_for_status(&booting, "active", Duration::from_secs(60))
        .await?;
    stack.order_server("in-flight-2").await?;
    let quotas = own_quotas(&stack).await?;
    assert_eq!(
        quotas["all_vendors"]["usage"]["live_servers"], 2,
        "{quotas}"
    );
    assert_eq!(quotas["all_vendors"]["usage"]["orders_in_flight"], 1);
    assert_eq!(
        quotas["vendors"]["digitalocean"]["limits"]["max_live_servers"],
        0
    );
    stack.cleanup().await;
    Ok(())
}

/// Sends `orders` orders at once, spread over `apis`; how many were accepted and how many
/// refused over quota (anything else fails).
async fn order_at_once(
    stack: &Stack,
    apis: &[String],
    orders: usize,
) -> anyhow::Result<(usize, usize)> {
    let posts = (0..orders).map(|i| {
        let api = apis[i % apis.len()].clone();
        async move { post_at(&stack.http, &api, "hetzner", &format!("rush-{i}")).await }
    });
    let (mut accepted, mut refused) = (0, 0);
    for answer in futures_util::future::join_all(posts).await {
        let (status, body) = answer?;
        match status {
            202 => accepted += 1,
            422 if body["type"] == "/problems/quota-exceeded" => refused += 1,
            other => anyhow::bail!("an order answered {other}: {body}"),
        }
    }
    Ok((accepted, refused))
}

/// Many orders at once never squeeze past a limit: the usage is counted in the transaction
/// that inserts them (on the suite's store: SQLite, or PostgreSQL in its second pass).
#[tokio::test]
async fn many_orders_at_once_do_not_pass_a_quota() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    put_quotas(
        &stack,
        TEST_TENANT,
        json!({"limits": {"max_live_servers": 7}}),
    )
    .await?;
    let (accepted, refused) =
        order_at_once(&stack, std::slice::from_ref(&stack.api_url), 80).await?;
    assert_eq!((accepted, refused), (7, 73));
    let listed = stack.list_all_orders("").await?;
    assert_eq!(listed.len(), 7);
    stack.cleanup().await;
    Ok(())
}

/// Two order-apis on one PostgreSQL database share a tenant's quota: orders sent to both
/// at once never add up past it.
#[tokio::test]
async fn two_order_apis_on_postgres_share_one_quota() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        store: OrderStore::Postgres,
        ..StackOptions::default()
    })
    .await?;
    let second = stack.start_another_api().await?;
    let apis = [stack.api_url.clone(), second];
    for round in 0..3 {
        let limit = 5 + 10 * round;
        put_quotas(
            &stack,
            TEST_TENANT,
            json!({"limits": {"max_live_servers": limit}}),
        )
        .await?;
        let already = stack.list_all_orders("").await?.len();
        let (accepted, _) = order_at_once(&stack, &apis, 60).await?;
        assert_eq!(accepted + already, limit, "round {round}");
        let listed = stack.list_all_orders("").await?.len();
        assert_eq!(listed, limit, "round {round}: the database holds {listed}");
    }
    stack.cleanup().await;
    Ok(())
}

/// A tenant over its rate is answered `429 rate-limited` with `Retry-After` before its
/// order is read; another tenant is served meanwhile; an admin's rate for the tenant takes
/// effect at once on the instance that set it, and `order-api tenants set-rate` within the
/// instance's refresh.
#[tokio::test]
async fn a_tenant_over_its_rate_waits_and_others_are_served() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        api_env: vec![
            // One token in 50 s: the bucket does not refill while the test runs.
            ("TENANT_ORDER_RATE".into(), "0.02".into()),
            ("TENANT_ORDER_BURST".into(), "3".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    for i in 0..3 {
        stack.order_server(&format!("burst-{i}")).await?;
    }
    let response = stack
        .api()
        .post_order_body(fixture("hetzner").order_body("burst-3"), None)
        .await?;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .context("no Retry-After")?
        .to_str()?
        .parse()?;
    assert!(
        (1..=50).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let problem: Value = response.json().await?;
    assert_eq!(problem["type"], "/problems/rate-limited");
    assert_eq!(problem["retry_after"], retry_after);

    let globex = stack.client_of_tenant("globex").await?;
    let (status, answer) = post_at(&globex, &stack.api_url, "hetzner", "globex-1").await?;
    assert_eq!(status, 202, "another tenant is not held: {answer}");

    let (status, set) = put_quotas(
        &stack,
        TEST_TENANT,
        json!({"rate": {"per_second": 50.0, "burst": 10}}),
    )
    .await?;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["rate_source"], "tenant");
    for i in 0..10 {
        stack.order_server(&format!("raised-{i}")).await?;
    }

    // globex is at its burst of 3 after two more; the CLI raises its rate, and the instance
    // reads it within its refresh (5 s).
    for i in 2..4 {
        post_at(&globex, &stack.api_url, "hetzner", &format!("globex-{i}")).await?;
    }
    let (status, _) = post_at(&globex, &stack.api_url, "hetzner", "globex-held").await?;
    assert_eq!(status, 429);
    tenants_cli(&stack, &["set-rate", "globex", "--per-second", "100"]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut admitted = 0;
    while admitted < 20 {
        let (status, answer) = post_at(
            &globex,
            &stack.api_url,
            "hetzner",
            &format!("globex-n{admitted}"),
        )
        .await?;
        match status {
            202 => admitted += 1,
            429 if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => anyhow::bail!("globex's order answered {other}: {answer}"),
        }
    }
    let metrics = stack.metrics().await?;
    let refused = metric_value(
        &metrics,
        "provisioner_orders_refused_total{reason=\"rate_limited\"}",
    );
    assert!(refused >= Some(2.0), "{refused:?}");
    stack.cleanup().await;
    Ok(())
}

/// Quotas are an admin's: the CLI sets and lists them, a tenant reads its own and can set
/// none, and figures out of range are refused.
#[tokio::test]
async fn admins_set_quotas_and_tenants_only_read_theirs() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    tenants_cli(
        &stack,
        &[
            "set-quota",
            TEST_TENANT,
            "--live-servers",
            "40",
            "--orders-in-flight",
            "9",
        ],
    )
    .await?;
    tenants_cli(
        &stack,
        &[
            "set-quota",
            TEST_TENANT,
            "--vendor",
            "hetzner",
            "--live-servers",
            "30",
        ],
    )
    .await?;
    let quotas = own_quotas(&stack).await?;
    assert_eq!(
        quotas["all_vendors"]["limits"]["max_live_servers"], 40,
        "{quotas}"
    );
    assert_eq!(quotas["all_vendors"]["limits"]["max_orders_in_flight"], 9);
    assert_eq!(
        quotas["vendors"]["hetzner"]["limits"]["max_live_servers"],
        30
    );
    assert_eq!(quotas["rate_source"], "default");
    let listing = tenants_cli(&stack, &["list"]).await?;
    assert!(
        listing
            .lines()
            .any(|l| l.contains(TEST_TENANT) && l.contains("hetzner") && l.contains("30")),
        "{listing}"
    );
    let shown: Value = serde_json::from_str(&tenants_cli(&stack, &["show", TEST_TENANT]).await?)?;
    assert_eq!(shown["all_vendors"]["limits"]["max_live_servers"], 40);

    // A tenant cannot set or read another's quotas; an admin has no /v1/quotas of its own.
    let tenant_put = stack
        .api()
        .send_raw(
            Method::PUT,
            &format!("/v1/tenants/{TEST_TENANT}/quotas"),
            Some(&json!({"limits": {"max_live_servers": 1000}})),
        )
        .await?;
    assert_eq!(tenant_put.status(), 403);
    let tenant_get = stack
        .api()
        .send_raw(Method::GET, "/v1/tenants/globex/quotas", None)
        .await?;
    assert_eq!(tenant_get.status(), 403);
    let admin = stack.admin_api()?;
    let admin_own = admin.send_raw(Method::GET, "/v1/quotas", None).await?;
    assert_eq!(admin_own.status(), 403);
    let admin_get = admin
        .get(&format!("/v1/tenants/{TEST_TENANT}/quotas"))
        .await?;
    assert_eq!(
        admin_get["vendors"]["hetzner"]["limits"]["max_live_servers"],
        30
    );

    for bad in [
        json!({"rate": {"per_second": 0, "burst": 1}}),
        json!({"limits": {"max_live_servers": -1}}),
        json!({"limits": {"most_servers": 3}}),
    ] {
        let (status, problem) = put_quotas(&stack, TEST_TENANT, bad.clone()).await?;
        assert_eq!(status, 422, "{bad} answered {problem}");
    }
    let (status, _) = put_quotas(&stack, "Not A Tenant", json!({})).await?;
    assert_eq!(status, 400);
    // A PUT replaces everything: an empty set removes every quota.
    let (status, cleared) = put_quotas(&stack, TEST_TENANT, json!({})).await?;
    assert_eq!(status, 200);
    assert_eq!(cleared["all_vendors"]["limits"], json!({}), "{cleared}");
    let listing = tenants_cli(&stack, &["list"]).await?;
    assert_eq!(
        listing.lines().count(),
        1,
        "only the heading is left: {listing}"
    );
    stack.cleanup().await;
    Ok(())
}

/// A rate is held to its documented range as written, not as it rounds: `per_second`
/// written a hair above 1,000,000 or below 0.001 is refused, though as a binary float it is
/// the bound itself (schemathesis found `1000000.0000000001` answered 200); the bounds
/// themselves, however written, are taken.
#[tokio::test]
async fn a_rate_written_beyond_its_range_is_refused_though_it_rounds_into_it() -> anyhow::Result<()>
{
    let stack = Stack::start(StackOptions::default()).await?;
    let admin = stack.admin_api()?;
    let path = format!("/v1/tenants/{TEST_TENANT}/quotas");
    let put_text = |per_second: &'static str| {
        let request = admin
            .request(Method::PUT, &path)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"rate": {{"burst": 1, "per_second": {per_second}}}}}"#
            ));
        async move {
            let response = request.send().await.context("PUT quotas")?;
            let status = response.status().as_u16();
            let answer: Value = response.json().await.context("the answer to PUT quotas")?;
            anyhow::Ok((status, answer))
        }
    };
    for beyond in [
        "1000000.0000000001",
        "1.0000000000000000001e6",
        "0.00099999999999999999",
        "9.9999999999999999999e-4",
    ] {
        let (status, problem) = put_text(beyond).await?;
        assert_eq!(status, 422, "per_second {beyond} answered {problem}");
        assert_eq!(problem["type"], "/problems/validation-failed", "{problem}");
        assert_eq!(problem["errors"][0]["field"], "rate", "{problem}");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("per_second must be 0.001 to 1000000")),
            "the problem names the field and its range: {problem}"
        );
    }
    // Not JSON a parser can hold (a number beyond any float) stays `400 invalid-json`.
    let (status, problem) = put_text("1e400").await?;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "/problems/invalid-json", "{problem}");
    for (within, reads_back) in [
        ("1000000", 1_000_000.0),
        ("1e6", 1_000_000.0),
        ("1000000.000", 1_000_000.0),
        ("0.001", 0.001),
        ("1.0e-3", 0.001),
        ("2.5", 2.5),
    ] {
        let (status, set) = put_text(within).await?;
        assert_eq!(status, 200, "per_second {within} answered {set}");
        assert_eq!(set["rate"]["per_second"], reads_back, "{set}");
    }
    stack.cleanup().await;
    Ok(())
}

/// Retries of one order (one `Idempotency-Key`) over a quota at one vendor, sent at once,
/// are each refused as the first was, never a 500; once the quota allows it, the retry makes
/// the order, and the next retry is its replay.
#[tokio::test]
async fn retries_of_an_order_over_quota_are_refused_alike_then_made_once() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let (status, set) = put_quotas(
        &stack,
        TEST_TENANT,
        json!({"vendors": {"hetzner": {"max_live_servers": 0}}}),
    )
    .await?;
    assert_eq!(status, 200, "{set}");
    let body = fixture("hetzner").order_body("retried");
    let api = stack.api();
    let post = || post_order_with(&api, body.clone(), Some("retried-order"));
    let answers = futures_util::future::join_all((0..20).map(|_| post())).await;
    for answer in answers {
        let (status, problem) = answer?;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["type"], "/problems/quota-exceeded");
        assert_eq!(problem["vendor"], "hetzner");
    }
    put_quotas(
        &stack,
        TEST_TENANT,
        json!({"vendors": {"hetzner": {"max_live_servers": 1}}}),
    )
    .await?;
    let (status, made) = post().await?;
    assert_eq!(status, 202, "{made}");
    let (status, replayed) = post().await?;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["id"], made["id"]);
    assert_eq!(stack.list_all_orders("").await?.len(), 1);
    stack.cleanup().await;
    Ok(())
}

/// The usage a tenant is shown (and checked against) follows its orders through every
/// status: made, active, failed, cancelled, deleted, at two vendors. It is kept as changes
/// are made, not counted from the orders, so this compares it with the orders themselves,
/// at rest and while orders are on their way.
#[tokio::test]
async fn usage_follows_orders_through_every_status() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(2),
        ..StackOptions::default()
    })
    .await?;
    put_quotas(
        &stack,
        TEST_TENANT,
        json!({"limits": {"max_live_servers": 1000}}),
    )
    .await?;
    let shown = |quotas: &Value| {
        let usage = &quotas["all_vendors"]["usage"];
        (
            usage["live_servers"].as_u64().unwrap_or(u64::MAX),
            usage["orders_in_flight"].as_u64().unwrap_or(u64::MAX),
        )
    };
    let mut kept = Vec::new();
    for i in 0..4 {
        kept.push(stack.order_server(&format!("kept-{i}")).await?);
    }
    let elsewhere = stack.order_at("digitalocean", "elsewhere").await?;
    let to_delete = stack.order_server("to-delete").await?;
    let to_cancel = stack.order_server("to-cancel").await?;
    let (status, answer) = stack.cancel_order(&to_cancel).await?;
    assert_eq!(status, 202, "{answer}");
    // While orders are on their way (nothing new is ordered or deleted meanwhile, so what is
    // live or in flight can only fall between the two listings).
    let before = usage_of_orders(&stack.list_all_orders("").await?);
    let on_the_way = shown(&own_quotas(&stack).await?);
    let after = usage_of_orders(&stack.list_all_orders("").await?);
    let between = |shown: (u64, u64), before: (u64, u64), after: (u64, u64)| {
        after.0 <= shown.0 && shown.0 <= before.0 && after.1 <= shown.1 && shown.1 <= before.1
    };
    assert!(
        between(on_the_way, before, after),
        "usage shown {on_the_way:?}, listed {before:?} then {after:?}"
    );

    stack
        .inject_fault(json!({"vendor": "openstack", "kind": "unauthorized", "count": 100}))
        .await?;
    let refused = stack.order_at("openstack", "refused").await?;
    stack
        .wait_for_status(&refused, "failed", Duration::from_secs(60))
        .await?;
    stack
        .wait_for_status(&to_cancel, "cancelled", Duration::from_secs(60))
        .await?;
    for id in kept.iter().chain([&elsewhere, &to_delete]) {
        stack
            .wait_for_status(id, "active", Duration::from_secs(60))
            .await?;
    }
    let (status, answer) = stack.delete_order(&to_delete).await?;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_for_status(&to_delete, "deleted", Duration::from_secs(60))
        .await?;

    let at_rest = own_quotas(&stack).await?;
    let listed = stack.list_all_orders("").await?;
    assert_eq!(usage_of_orders(&listed), (5, 0));
    assert_eq!(shown(&at_rest), (5, 0), "{at_rest}");
    assert_eq!(
        at_rest["vendors"]["digitalocean"]["usage"]["live_servers"], 1,
        "{at_rest}"
    );
    assert!(at_rest["vendors"].get("openstack").is_none(), "{at_rest}");
    // The check folds the changes it reads; what it then shows is unchanged, and one more
    // order counts once.
    // It may reach `active` meanwhile: in flight is bracketed by two listings.
    stack.order_server("one-more").await?;
    let before = usage_of_orders(&stack.list_all_orders("").await?);
    let one_more = shown(&own_quotas(&stack).await?);
    let after = usage_of_orders(&stack.list_all_orders("").await?);
    assert_eq!(one_more.0, 6, "{one_more:?}");
    assert!(
        between(one_more, before, after),
        "usage shown {one_more:?}, listed {before:?} then {after:?}"
    );
    let metrics = stack.metrics().await?;
    assert_eq!(
        metric_value(
            &metrics,
            &format!("provisioner_tenant_live_servers{{tenant=\"{TEST_TENANT}\"}}")
        ),
        Some(6.0)
    );
    stack.cleanup().await;
    Ok(())
}

/// A database from before usage was kept (migration 0011): the migration counts the orders
/// already there, per tenant and vendor, and from then on every change of an order (status,
/// vendor) moves its tenant's usage, folded or not.
#[tokio::test]
async fn the_migration_counts_existing_orders_and_changes_follow() -> anyhow::Result<()> {
    let earlier = provisioner_tests::EarlierDatabase::migrated_below(11).await?;
    let pool = earlier.pool.clone();
    let insert = |pool: &sqlx::AnyPool, tenant: &'static str, vendor: &'static str, status| {
        let pool = pool.clone();
        async move {
            let id = uuid::Uuid::now_v7().to_string();
            sqlx::query(
                "INSERT INTO orders (id, tenant, status, vendor, region, size, image, name, \
                 ssh_keys, labels, created_at, updated_at) VALUES \
                 ($1, $2, $3, $4, 'r', 's', 'i', 'old', '[]', \
                 '{}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
            )
            .bind(&id)
            .bind(tenant)
            .bind(status)
            .bind(vendor)
            .execute(&pool)
            .await
            .map(|_| id)
        }
    };
    for status in [
        "pending",
        "queued",
        "provisioning",
        "active",
        "active",
        "failed",
        "deleting",
        "deleted",
        "cancelling",
        "cancelled",
    ] {
        insert(&pool, "acme", "hetzner", status).await?;
    }
    insert(&pool, "acme", "digitalocean", "active").await?;
    insert(&pool, "other", "hetzner", "queued").await?;

    let store = order_api::store::Store::connect(&earlier.url).await?;
    let usage = |quotas: &order_api::store::TenantQuotas| {
        let all = quotas.all_vendors.usage;
        let by_vendor: Vec<(String, u64, u64)> = quotas
            .vendors
            .iter()
            .map(|(vendor, scoped)| {
                let used = scoped.usage;
                (vendor.clone(), used.live_servers, used.orders_in_flight)
            })
            .collect();
        ((all.live_servers, all.orders_in_flight), by_vendor)
    };
    let acme = store.tenant_quotas("acme", None).await?;
    assert_eq!(
        usage(&acme),
        (
            (8, 5),
            vec![("digitalocean".into(), 1, 0), ("hetzner".into(), 7, 5)]
        )
    );
    let other = store.tenant_quotas("other", None).await?;
    assert_eq!(usage(&other).0, (1, 1));

    // Changes after the migration: one order finishes, one is deleted, one moves vendor; a new
    // one arrives. The usage follows before and after the changes are folded.
    let change = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query(sql).execute(&pool).await }
    };
    change("UPDATE orders SET status = 'active' WHERE tenant = 'acme' AND status = 'provisioning'")
        .await?;
    change("UPDATE orders SET status = 'deleted' WHERE tenant = 'acme' AND status = 'deleting'")
        .await?;
    change("UPDATE orders SET vendor = 'vultr' WHERE tenant = 'acme' AND status = 'queued'")
        .await?;
    change("UPDATE orders SET labels = '{\"a\":\"b\"}' WHERE tenant = 'acme'").await?;
    insert(&pool, "acme", "hetzner", "pending").await?;
    let expected = (
        (8, 4),
        vec![
            ("digitalocean".into(), 1, 0),
            ("hetzner".into(), 6, 3),
            ("vultr".into(), 1, 1),
        ],
    );
    assert_eq!(usage(&store.tenant_quotas("acme", None).await?), expected);
    store.fold_usage_changes().await?;
    assert_eq!(usage(&store.tenant_quotas("acme", None).await?), expected);
    assert_eq!(
        store
            .usage_by_tenant()
            .await?
            .get("acme")
            .map(|u| (u.live_servers, u.orders_in_flight)),
        Some((8, 4))
    );
    drop(store);
    earlier.remove().await?;
    Ok(())
}
