//! The web console (`/ui`) in a real browser: headless Chromium from Debian's packages,
//! driven through its WebDriver (`chromedriver`) with fantoccini, against the real programs.
//! Each test saves screenshots under `target/test-runs/console-screenshots/`, and checks
//! every view it visits with axe-core (no serious or critical violation).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use provisioner_tests::{Stack, StackOptions, free_port, target_dir};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Where Debian's `chromium-driver` and `chromium` put their programs.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium under its WebDriver; `close` ends both.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session through it.
    async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        for program in [CHROMEDRIVER, CHROMIUM] {
            if !std::path::Path::new(program).exists() {
                bail!(
                    "{program} is missing: install Debian's chromium and chromium-driver \
                     (scripts/setup.sh does: apt-get install chromium chromium-driver)"
                );
            }
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // chromedriver is not listening yet.
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => bail!("no Chromium session through chromedriver: {error}"),
            }
        };
        let shots = target_dir().join("test-runs").join("console-screenshots");
        std::fs::create_dir_all(&shots)?;
        Ok(Self {
            client,
            driver,
            shots,
        })
    }

    /// Saves a screenshot as `<name>.png`.
    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        std::fs::write(self.shots.join(format!("{name}.png")), png)?;
        Ok(())
    }

    /// Waits up to `within` for an element `css` whose text contains `text`; its text.
    async fn wait_for_text(
        &self,
        css: &str,
        text: &str,
        within: Duration,
    ) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Ok(found) = self.client.find(Locator::Css(css)).await {
                last = found.text().await.unwrap_or_default();
                if last.contains(text) {
                    return Ok(last);
                }
            }
            if std::time::Instant::now() > deadline {
                let page = self.client.source().await.unwrap_or_default();
                bail!("no {css} with {text:?} within {within:?} (last: {last:?}); page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `locator` finds once it is there, again if the view re-rendered it between
    /// finding and clicking (a stale element).
    async fn click(&self, locator: Locator<'_>) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let error = match self.client.find(locator).await {
                Ok(element) => match element.click().await {
                    Ok(()) => return Ok(()),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            if std::time::Instant::now() > deadline {
                bail!("could not click {locator:?}: {error}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the console's `view` (`#/orders`, ...; empty: the console's page) at `api_url`.
    async fn open(&self, api_url: &str, view: &str) -> anyhow::Result<()> {
        self.client.goto(&format!("{api_url}/ui{view}")).await?;
        Ok(())
    }

    /// Signs in with `token` on the console at `api_url`.
    async fn sign_in(&self, api_url: &str, token: &str) -> anyhow::Result<()> {
        self.open(api_url, "").await?;
        let field = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#token"))
            .await?;
        field.send_keys(token).await?;
        self.click(Locator::Css("form.signin button[type=submit]"))
            .await?;
        self.wait_for_text("#who", "Signed in", Duration::from_secs(10))
            .await?;
        Ok(())
    }

    /// The text of the page's main region.
    async fn main_text(&self) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css("main")).await?.text().await?)
    }

    /// Runs axe-core in the page; fails on any serious or critical violation.
    async fn check_accessibility(&self, view: &str) -> anyhow::Result<()> {
        let axe = std::fs::read_to_string(axe_script()).with_context(|| {
            format!(
                "reading {} (scripts/setup.sh fetches axe-core from the npm registry)",
                axe_script().display()
            )
        })?;
        self.client.execute(&axe, vec![]).await?;
        let report = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {resultTypes: ['violations']})\
                    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, \
                        help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))\
                    .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));",
                vec![],
            )
            .await?;
        let serious: Vec<&Value> = report
            .as_array()
            .context("axe answered no list")?
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        anyhow::ensure!(
            serious.is_empty(),
            "{view}: serious or critical accessibility violations: {serious:#?}"
        );
        Ok(())
    }

    async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

/// axe-core's script, as scripts/setup.sh fetched it.
fn axe_script() -> PathBuf {
    target_dir().join("axe-core").join("axe.min.js")
}

/// A tenant signs in, orders a server through the form (a refused region shown, then one
/// order however often the button is pressed), follows it to `active` on its page without a
/// reload, sees its orders (not another tenant's), and cancels another with the confirmation; another tenant's order
/// cannot be reached by its address; the operator signs in and sees every tenant's orders.
/// The token never shows in order-api's log.
#[tokio::test]
async fn a_tenant_follows_its_orders_and_cannot_reach_another_tenants() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(3),
        ..StackOptions::default()
    })
    .await?;
    let own = provisioner_tests::client_with_token(&stack.token)?;
    let other = stack.client_of_tenant("beta").await?;
    let theirs = stack.order_as(&other, "their-server").await?;
    let browser = Browser::start(1280, 900).await?;
    let result = async {
        browser.open(&stack.api_url, "").await?;
        browser
            .client
            .wait()
            .for_element(Locator::Css("#token"))
            .await?;
        browser.check_accessibility("sign-in").await?;
        browser.screenshot("sign-in").await?;
        browser.sign_in(&stack.api_url, &stack.token).await?;

        // The form: a region the plugin refuses is a 422 shown in the page; corrected, the
        // order is placed (one order however often the button is pressed) and its page
        // follows it to active, without a reload.
        browser.click(Locator::Css("a[href='#/new']")).await?;
        let hetzner = provisioner_tests::fixture("hetzner");
        for (id, value) in [
            ("#name", "followed"),
            ("#region", "mars1"),
            ("#size", hetzner.size),
            ("#image", hetzner.image),
        ] {
            browser
                .client
                .wait()
                .for_element(Locator::Css(id))
                .await?
                .send_keys(value)
                .await?;
        }
        browser
            .client
            .find(Locator::Css("#vendor"))
            .await?
            .select_by_value("hetzner")
            .await?;
        browser.check_accessibility("order form").await?;
        browser
            .click(Locator::Css("form.order-form button[type=submit]"))
            .await?;
        browser
            .wait_for_text("[role=alert]", "mars1", Duration::from_secs(10))
            .await?;
        browser.screenshot("order-form-refused").await?;
        let region = browser.client.find(Locator::Css("#region")).await?;
        region.clear().await?;
        region.send_keys(hetzner.region).await?;
        browser
            .client
            .execute(
                "const b = document.querySelector('form.order-form button[type=submit]'); \
                 b.click(); b.click(); document.querySelector('form.order-form').requestSubmit();",
                vec![],
            )
            .await?;
        browser
            .wait_for_text("h1", "followed", Duration::from_secs(10))
            .await?;
        browser
            .client
            .execute("window.notReloaded = true;", vec![])
            .await?;
        browser
            .wait_for_text("#order-status", "active", Duration::from_secs(60))
            .await?;
        browser
            .wait_for_text("#order-addresses", "203.0.113.", Duration::from_secs(10))
            .await?;
        let kept = browser
            .client
            .execute("return window.notReloaded === true;", vec![])
            .await?;
        assert_eq!(kept, json!(true), "the page was reloaded");
        browser
            .wait_for_text("ol.timeline", "is running", Duration::from_secs(5))
            .await?;
        browser.check_accessibility("order").await?;
        browser.screenshot("order-active").await?;

        // Cancel, with the confirmation.
        let cancelled = stack.order_as(&own, "cancelled").await?;
        browser
            .open(&stack.api_url, &format!("#/orders/{cancelled}"))
            .await?;
        browser
            .click(Locator::XPath("//button[contains(., 'Cancel the order')]"))
            .await?;
        let question = browser.client.get_alert_text().await?;
        assert!(question.contains("Cancel order cancelled?"), "{question}");
        browser.client.accept_alert().await?;
        browser
            .wait_for_text("#order-status", "cancel", Duration::from_secs(30))
            .await?;

        // The list: the tenant's own orders, not the other tenant's.
        browser.open(&stack.api_url, "#/orders").await?;
        let table = browser
            .wait_for_text("table", "followed", Duration::from_secs(10))
            .await?;
        let named_followed = stack
            .list_all_orders("")
            .await?
            .iter()
            .filter(|order| order["name"] == "followed")
            .count();
        assert_eq!(named_followed, 1, "the form made {named_followed} orders");
        assert!(table.contains("cancelled"), "{table}");
        assert!(!table.contains("their-server"), "{table}");
        browser.check_accessibility("orders").await?;
        browser.screenshot("orders").await?;

        // Another tenant's order by its address: the API says there is none.
        browser
            .open(&stack.api_url, &format!("#/orders/{theirs}"))
            .await?;
        browser
            .wait_for_text("[role=alert]", "", Duration::from_secs(10))
            .await?;
        let page = browser.main_text().await?;
        assert!(!page.contains("their-server"), "{page}");

        // The operator sees every tenant's orders.
        browser.click(Locator::Css("#sign-out")).await?;
        browser.sign_in(&stack.api_url, &stack.admin_token).await?;
        browser
            .wait_for_text("#who", "operator", Duration::from_secs(5))
            .await?;
        browser
            .wait_for_text("table", "their-server", Duration::from_secs(10))
            .await?;
        browser.screenshot("operator-orders").await?;

        // On a phone-sized screen the orders still read, without the optional columns.
        browser.client.set_window_size(390, 844).await?;
        browser
            .wait_for_text("table", "their-server", Duration::from_secs(10))
            .await?;
        browser.check_accessibility("orders on a phone").await?;
        browser.screenshot("orders-phone").await?;
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    let log = stack.api_log();
    let tokens = [stack.token.clone(), stack.admin_token.clone()];
    stack.cleanup().await;
    result?;
    for token in tokens {
        assert!(!log.contains(&token), "a token shows in order-api's log");
    }
    Ok(())
}

/// The operator sees the vendors with the hosts serving them; the orphan sweep (*Sweep now*
/// asks for a sweep, and the page shows each vendor's sweep and the orphan it found); and the
/// dashboard of /metrics with a retried attempt's fault. A tenant is offered neither operator
/// view, and the API refuses it the orphans by their address.
#[tokio::test]
async fn the_operator_sees_the_vendors_hosts_and_the_orphan_sweep() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        api_env: vec![("ORPHAN_SWEEP_INTERVAL_SECS".into(), "0".into())],
        ..StackOptions::default()
    })
    .await?;
    let orphan_key = uuid::Uuid::new_v4().to_string();
    let seeded = stack
        .http
        .post(format!("{}/_sim/servers", stack.sim_url))
        .json(&json!({"vendor": "hetzner", "name": "left-behind", "idempotency_key": orphan_key}))
        .send()
        .await?;
    anyhow::ensure!(seeded.status() == 201, "seeding: {}", seeded.status());
    // An order whose first create attempt meets the vendor down, for the dashboard.
    stack
        .inject_fault(
            json!({"vendor": "hetzner", "kind": "server_error", "status": 503,
            "method": "POST", "count": 1}),
        )
        .await?;
    let own = provisioner_tests::client_with_token(&stack.token)?;
    let retried = stack.order_as(&own, "retried").await?;
    stack
        .wait_for_status(&retried, "active", Duration::from_secs(60))
        .await?;
    let browser = Browser::start(1280, 900).await?;
    let result = async {
        browser.sign_in(&stack.api_url, &stack.admin_token).await?;
        browser.open(&stack.api_url, "#/vendors").await?;
        let vendors = browser
            .wait_for_text("table", "hetzner", Duration::from_secs(10))
            .await?;
        assert!(vendors.contains("digitalocean"), "{vendors}");
        browser.check_accessibility("vendors").await?;
        browser.screenshot("vendors").await?;

        browser.click(Locator::Css("#nav-orphans")).await?;
        browser
            .wait_for_text("main", "No sweep yet", Duration::from_secs(10))
            .await?;
        browser
            .click(Locator::XPath("//button[contains(., 'Sweep now')]"))
            .await?;
        browser
            .wait_for_text("main", &orphan_key, Duration::from_secs(30))
            .await?;
        browser
            .wait_for_text("main", "listed", Duration::from_secs(10))
            .await?;
        browser.check_accessibility("orphans").await?;
        browser.screenshot("orphans").await?;

        // The dashboard draws /metrics: the orders by status, accept latency, creations in
        // flight, and the retried attempt's fault.
        browser.click(Locator::Css("#nav-dashboard")).await?;
        let charts = browser
            .wait_for_text(".charts", "vendor_unavailable", Duration::from_secs(15))
            .await?;
        for expected in [
            "Orders by status",
            "active",
            "Accept latency",
            "p99",
            "Creations in flight",
        ] {
            assert!(charts.contains(expected), "no {expected:?} in:\n{charts}");
        }
        browser.check_accessibility("dashboard").await?;
        browser.screenshot("dashboard").await?;

        // A tenant: no operator view offered, and the API refuses it the orphans.
        browser.click(Locator::Css("#sign-out")).await?;
        browser.sign_in(&stack.api_url, &stack.token).await?;
        for view in ["nav-orphans", "nav-dashboard"] {
            let offered = browser
                .client
                .execute(
                    &format!("return !document.getElementById('{view}').hidden;"),
                    vec![],
                )
                .await?;
            assert_eq!(offered, json!(false), "a tenant is offered {view}");
        }
        browser.open(&stack.api_url, "#/orphans").await?;
        let refused = browser
            .wait_for_text("[role=alert]", "admin", Duration::from_secs(10))
            .await?;
        let page = browser.main_text().await?;
        assert!(!page.contains(&orphan_key), "{refused}\n{page}");
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    stack.cleanup().await;
    result
}
