//! A headless Chromium driven through WebDriver (Debian's `chromium` and `chromium-driver`,
//! with [fantoccini]): the console's browser tests and its page-load benchmark share it.
//! With `BROWSER_NET_LOG=<file>`, Chromium writes its record of every request there (a
//! NetLog, for a load that went wrong).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::processes::{free_port, target_dir};
use crate::waiting::wait_until;

/// Where Debian's `chromium-driver` and `chromium` put their programs.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium under its WebDriver; `close` ends both.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session through it.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
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
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},{height}"),
        ];
        // Chromium's own record of every request, for a load that went wrong.
        if let Some(path) = std::env::var_os("BROWSER_NET_LOG") {
            args.push(format!("--log-net-log={}", path.to_string_lossy()));
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_until(
            Duration::from_secs(20),
            Duration::from_millis(200),
            async || {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                Ok(
                    match ClientBuilder::new(connector)
                        .capabilities(capabilities.clone())
                        .connect(&url)
                        .await
                    {
                        Ok(client) => ControlFlow::Break(client),
                        // chromedriver is not listening yet.
                        Err(error) => ControlFlow::Continue(error),
                    },
                )
            },
            async |error| anyhow!("no Chromium session through chromedriver: {error}"),
        )
        .await?;
        let shots = target_dir().join("test-runs").join("console-screenshots");
        std::fs::create_dir_all(&shots)?;
        Ok(Self {
            client,
            driver,
            shots,
        })
    }

    /// Saves a screenshot as `<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        std::fs::write(self.shots.join(format!("{name}.png")), png)?;
        Ok(())
    }

    /// Waits up to `within` for an element `css` whose text contains `text`; its text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        text: &str,
        within: Duration,
    ) -> anyhow::Result<String> {
        let mut last = String::new();
        wait_until(
            within,
            Duration::from_millis(100),
            async || {
                if let Ok(found) = self.client.find(Locator::Css(css)).await {
                    last = found.text().await.unwrap_or_default();
                    if last.contains(text) {
                        return Ok(ControlFlow::Break(last.clone()));
                    }
                }
                Ok(ControlFlow::Continue(last.clone()))
            },
            async |last| {
                let page = self.client.source().await.unwrap_or_default();
                anyhow!("no {css} with {text:?} within {within:?} (last: {last:?}); page:\n{page}")
            },
        )
        .await
    }

    /// Clicks the element `locator` finds once it is there, again if the view re-rendered it between
    /// finding and clicking (a stale element).
    pub async fn click(&self, locator: Locator<'_>) -> anyhow::Result<()> {
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(100),
            async || {
                let error = match self.client.find(locator).await {
                    Ok(element) => match element.click().await {
                        Ok(()) => return Ok(ControlFlow::Break(())),
                        Err(error) => error,
                    },
                    Err(error) => error,
                };
                Ok(ControlFlow::Continue(error))
            },
            async |error| anyhow!("could not click {locator:?}: {error}"),
        )
        .await
    }

    /// Opens the console's `view` (`#/orders`, ...; empty: the console's page) at `api_url`.
    pub async fn open(&self, api_url: &str, view: &str) -> anyhow::Result<()> {
        self.client.goto(&format!("{api_url}/ui{view}")).await?;
        Ok(())
    }

    /// Signs in with `token` on the console at `api_url`.
    pub async fn sign_in(&self, api_url: &str, token: &str) -> anyhow::Result<()> {
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
    pub async fn main_text(&self) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css("main")).await?.text().await?)
    }

    /// Runs axe-core in the page; fails on any serious or critical violation.
    pub async fn check_accessibility(&self, view: &str) -> anyhow::Result<()> {
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

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

/// axe-core's script, as scripts/setup.sh fetched it.
pub fn axe_script() -> PathBuf {
    target_dir().join("axe-core").join("axe.min.js")
}
