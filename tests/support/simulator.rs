//! vendor-sim as the tests use it: [`Stack`]'s calls to its simulator's control API (faults,
//! stats, live servers), and a simulator served in the test's own process.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::api_client::json_answer;
use crate::fixtures::fixture;
use crate::stack::Stack;
use crate::waiting::wait_until;

impl Stack {
    /// Disarms every fault armed at the simulator (`DELETE /_sim/faults`).
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}/_sim/faults", self.sim_url))
            .send()
            .await
            .context("DELETE /_sim/faults")?;
        if !response.status().is_success() {
            bail!("disarming the faults answered {}", response.status());
        }
        Ok(())
    }

    /// Arms a simulator fault (`POST /_sim/faults`), e.g.
    /// `{"vendor": "hetzner", "kind": "unauthorized", "count": 5}`.
    pub async fn inject_fault(&self, rule: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/_sim/faults", self.sim_url))
            .json(&rule)
            .send()
            .await
            .context("POST /_sim/faults")?;
        if response.status() != 201 {
            bail!("arming {rule} answered {}", response.status());
        }
        Ok(())
    }

    /// The simulator's `GET /_sim/stats` for Hetzner.
    pub async fn sim_stats(&self) -> anyhow::Result<Value> {
        self.sim_stats_of("hetzner").await
    }

    /// The simulator's `GET /_sim/stats` for `vendor`.
    pub async fn sim_stats_of(&self, vendor: &str) -> anyhow::Result<Value> {
        let request = self.http.get(format!("{}/_sim/stats", self.sim_url));
        let stats = json_answer(request, "GET /_sim/stats").await?;
        Ok(stats["vendors"][vendor].clone())
    }

    /// The simulator's `GET /_sim/servers`: every live server with its idempotency key.
    pub async fn sim_servers(&self) -> anyhow::Result<Vec<Value>> {
        let request = self.http.get(format!("{}/_sim/servers", self.sim_url));
        let answer = json_answer(request, "GET /_sim/servers").await?;
        Ok(answer["servers"].as_array().cloned().unwrap_or_default())
    }

    /// The live simulator servers carrying `order_id` as their idempotency key.
    pub async fn live_servers_of(&self, order_id: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .sim_servers()
            .await?
            .into_iter()
            .filter(|server| server.to_string().contains(order_id))
            .collect())
    }

    /// Waits up to 30 s until the simulator has no live server carrying `order_id`.
    pub async fn wait_until_no_server(&self, order_id: &str) -> anyhow::Result<()> {
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || {
                let live = self.live_servers_of(order_id).await?;
                Ok(if live.is_empty() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(live)
                })
            },
            async |live| {
                anyhow::anyhow!(
                    "order {order_id} still has servers at the vendor: {live:?}\n{}",
                    self.logs()
                )
            },
        )
        .await
    }
}

/// A vendor simulator served by this test's runtime (until the test ends), with the
/// fixtures' credentials and `boot_delay`; its base URL.
pub async fn simulator_in_process(boot_delay: Duration) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = Arc::new(vendor_sim::SimState::new(vendor_sim::SimConfig {
        boot_delay,
        hetzner_token: fixture("hetzner").secret.1.into(),
        digitalocean_token: fixture("digitalocean").secret.1.into(),
        openstack_password: fixture("openstack").secret.1.into(),
        ..vendor_sim::SimConfig::default()
    }));
    tokio::spawn(vendor_sim::serve(listener, state, std::future::pending()));
    Ok(url)
}
