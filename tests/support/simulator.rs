//! vendor-sim as the tests use it: [`Stack`]'s calls to its simulator's control API (faults,
//! stats, live servers) through `vendor_sim::control_client`, and a simulator served in the
//! test's own process.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use vendor_sim::control_client::SimClient;
use vendor_sim::state::{FaultRule, Vendor};

use crate::fixtures::fixture;
use crate::stack::Stack;
use crate::waiting::wait_until;

impl Stack {
    /// The stack's simulator's control API, called with [`Stack::http`].
    pub fn sim(&self) -> SimClient {
        SimClient::with_client(&self.sim_url, self.http.clone())
    }

    /// Disarms every fault armed at the simulator (`DELETE /_sim/faults`).
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.sim().faults().clear().await
    }

    /// Arms a simulator fault (`POST /_sim/faults`), e.g.
    /// `{"vendor": "hetzner", "kind": "unauthorized", "count": 5}`.
    pub async fn inject_fault(&self, rule: Value) -> anyhow::Result<()> {
        let parsed: FaultRule = serde_json::from_value(rule.clone())
            .with_context(|| format!("{rule} is no simulator fault rule"))?;
        self.sim().faults().arm(&parsed.into()).await
    }

    /// The simulator's `GET /_sim/stats` for Hetzner.
    pub async fn sim_stats(&self) -> anyhow::Result<Value> {
        self.sim_stats_of("hetzner").await
    }

    /// The simulator's `GET /_sim/stats` for `vendor` as JSON (`null` for a vendor it does
    /// not serve).
    pub async fn sim_stats_of(&self, vendor: &str) -> anyhow::Result<Value> {
        let mut stats = self.sim().stats().await?;
        Ok(Vendor::parse(vendor)
            .and_then(|vendor| stats.vendors.remove(&vendor))
            .map_or(Value::Null, |stats| json!(stats)))
    }

    /// The simulator's `GET /_sim/servers` as JSON: every live server with its idempotency
    /// key.
    pub async fn sim_servers(&self) -> anyhow::Result<Vec<Value>> {
        let servers = self.sim().servers().await?;
        Ok(servers.into_iter().map(|server| json!(server)).collect())
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
