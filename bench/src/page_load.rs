//! Console page loads: how long each view of the web console (`/ui`) takes from navigation
//! to its first content drawn, in headless Chromium, with `--orders` orders (10,000 by
//! default) in the database.
//!
//! The stack is order-api (SQLite), a host and the simulator, whose servers boot at once. The
//! run first orders `--orders` servers through the API as one tenant (a few at a time) and
//! waits until every one is `active`, so the pages read a settled database and nothing else
//! runs meanwhile. Then, signed in once (the token stays in the tab's session storage), it
//! loads each view `--samples` times as a fresh document: `about:blank` first, then the view's
//! address. A sample is the page's own clock (`performance.now()`, from the start of the
//! navigation) when the console marks the view drawn: `main` stops being `aria-busy`, which
//! the console clears once a view has drawn what it first reads (the orders table's first
//! page, the order's facts and timeline, the form with the vendor's catalogue, the charts ...).
//! That covers the HTML, the script and style, `GET /v1/me` and the view's own API calls.
//!
//! Views as the tenant: its orders (the first page of its `--orders`), one order, the order
//! form, the vendors. As the operator: every tenant's orders, the orphans, the dead letters and
//! the dashboard of `/metrics`.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use provisioner_bench::report::{Progress, Summary, Target};
use provisioner_bench::stats::percentile;
use provisioner_tests::browser::Browser;
use provisioner_tests::{Stack, StackOptions, fixture, metric_value};
use reqwest::Method;

/// The page-load benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Orders in the database (all of one tenant) before pages are loaded.
    #[arg(long, default_value_t = 10_000)]
    orders: usize,
    /// Loads of each view.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Orders sent at once while filling the database.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// The target: each view drawn within this many milliseconds (p95).
const TARGET_MS: f64 = 300.0;

/// Waits for the console to mark the view drawn; answers the page's clock then.
const DRAWN: &str = "const done = arguments[arguments.length - 1];\
    const drawn = () => {\
      const main = document.getElementById('main');\
      if (main && main.getAttribute('aria-busy') === 'false') { done(performance.now()); return true; }\
      return false;\
    };\
    if (!drawn()) {\
      const watch = new MutationObserver(() => { if (drawn()) watch.disconnect(); });\
      watch.observe(document.documentElement, { attributes: true, childList: true, subtree: true });\
    }";

/// Runs the benchmark.
pub async fn run(args: Args, profile: &'static str) -> anyhow::Result<Summary> {
    let mut progress = Progress::new();
    let stack = Stack::start(StackOptions {
        profile,
        boot_delay: Duration::ZERO,
        // The orders are filled in quickly, without the plugin's check of each: the pages
        // read them, whatever made them.
        api_env: vec![("VALIDATE_TIMEOUT_MS".into(), "0".into())],
        ..StackOptions::default()
    })
    .await?;
    let outcome = measure(&stack, &args, profile, &mut progress).await;
    progress.finish();
    stack.cleanup().await;
    outcome
}

async fn measure(
    stack: &Stack,
    args: &Args,
    profile: &'static str,
    progress: &mut Progress,
) -> anyhow::Result<Summary> {
    let hetzner = fixture("hetzner");
    let posted = futures_util::stream::iter(0..args.orders)
        .map(|n| {
            let body = hetzner.order_body(&format!("page-load-{n}"));
            async move {
                let response = stack.api().post_order_body(body, None).await?;
                anyhow::ensure!(
                    response.status() == 202,
                    "an order was answered {}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency);
    tokio::pin!(posted);
    let mut sent = 0;
    while let Some(outcome) = posted.next().await {
        outcome?;
        sent += 1;
        if sent % 500 == 0 {
            progress.update(&format!("ordered {sent} of {}", args.orders));
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let text = stack.metrics().await?;
        let active = metric_value(&text, "provisioner_orders{status=\"active\"}").unwrap_or(0.0);
        progress.update(&format!("{active} of {} orders active", args.orders));
        if active as usize >= args.orders {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "only {active} of {} orders went active in 10 minutes",
                args.orders
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let one_order = stack.api().list_orders("limit=1").await?["orders"][0]["id"]
        .as_str()
        .context("no order listed")?
        .to_string();

    let browser = Browser::start(1280, 900).await?;
    let mut summary = Summary::new("page-load");
    summary.setting("orders", args.orders);
    summary.setting("samples", args.samples);
    summary.setting("profile", profile);
    let outcome = async {
        let tenant_views = [
            ("orders", "#/orders".to_string()),
            ("order", format!("#/orders/{one_order}")),
            ("new", "#/new".to_string()),
            ("vendors", "#/vendors".to_string()),
        ];
        let operator_views = [
            ("operator_orders", "#/orders".to_string()),
            ("orphans", "#/orphans".to_string()),
            ("dead_letters", "#/dead-letters".to_string()),
            ("dashboard", "#/dashboard".to_string()),
        ];
        for (token, views) in [
            (&stack.token, &tenant_views),
            (&stack.admin_token, &operator_views),
        ] {
            browser.sign_in(&stack.api_url, token).await?;
            for (name, view) in views.iter() {
                let mut samples = Vec::with_capacity(args.samples);
                for sample in 0..args.samples {
                    progress.update(&format!("{name}: load {} of {}", sample + 1, args.samples));
                    match load(&browser, &stack.api_url, view).await {
                        Ok(sample) => samples.push(sample),
                        Err(error) => {
                            let probe = probe_api(stack, token).await;
                            return Err(error.context(probe));
                        }
                    }
                }
                samples.sort_unstable();
                let p50 = percentile(&samples, 0.50).as_secs_f64() * 1e3;
                let p95 = percentile(&samples, 0.95).as_secs_f64() * 1e3;
                let max = samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3;
                summary.figure(
                    format!("{name}_p50_ms"),
                    format!("{name} p50"),
                    p50,
                    "ms",
                    None,
                );
                summary.figure(
                    format!("{name}_p95_ms"),
                    format!("{name} p95"),
                    p95,
                    "ms",
                    Some(Target::AtMost(TARGET_MS)),
                );
                summary.figure(
                    format!("{name}_max_ms"),
                    format!("{name} max"),
                    max,
                    "ms",
                    None,
                );
            }
            browser
                .client
                .execute("sessionStorage.clear();", vec![])
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    outcome?;
    Ok(summary)
}

/// One load of `view` as a fresh document: the page's clock when the view was drawn.
async fn load(browser: &Browser, api_url: &str, view: &str) -> anyhow::Result<Duration> {
    browser.client.goto("about:blank").await?;
    browser.open(api_url, view).await?;
    let drawn = match browser.client.execute_async(DRAWN, vec![]).await {
        Ok(drawn) => drawn,
        Err(error) => {
            let page = browser.client.source().await.unwrap_or_default();
            let fetched = browser
                .client
                .execute(
                    "return performance.getEntriesByType('resource')\
                        .map(e => `${e.name} ${Math.round(e.startTime)}+${Math.round(e.duration)} ms`);",
                    vec![],
                )
                .await
                .unwrap_or_default();
            bail!(
                "waiting for {view} to be drawn: {error}; requests finished: {fetched}; the page:\n{page}"
            );
        }
    };
    let millis = drawn
        .as_f64()
        .with_context(|| format!("the page answered {drawn} for {view}"))?;
    Ok(Duration::from_secs_f64(millis / 1e3))
}

/// What the API answers right now to the requests the orders view makes, for a failed load.
async fn probe_api(stack: &Stack, token: &str) -> String {
    let started = std::time::Instant::now();
    let api = stack.api();
    let list = api
        .request(Method::GET, "/v1/orders?limit=50")
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16());
    let list_ms = started.elapsed().as_millis();
    let started = std::time::Instant::now();
    let stream = async {
        let mut response = api
            .request(Method::GET, "/v1/events")
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status().as_u16();
        let first = tokio::time::timeout(Duration::from_secs(5), response.chunk()).await;
        anyhow::Ok(format!("{status}, first chunk {first:?}"))
    }
    .await;
    format!(
        "probe: GET /v1/orders {list:?} in {list_ms} ms; GET /v1/events {stream:?} in {} ms",
        started.elapsed().as_millis()
    )
}
