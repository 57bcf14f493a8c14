//! vendor-sim as the tests use it: [`Stack`]'s calls to its simulator's control API (faults,
//! stats, live servers) through `vendor_sim::control_client`, the same calls for a simulator
//! or fault proxy at a bare URL, and a simulator served in the test's own process.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use vendor_sim::control::SeedServer;
use vendor_sim::control_client::{FaultsClient, SimClient};
use vendor_sim::proxy::{FaultProfile, ProxyConfig, ProxyFaultRule, ProxyHandle, spawn_proxy};
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

    /// Arms Hetzner's `503` at the simulator for its next `count` requests of `method`: the
    /// vendor down.
    pub async fn hetzner_down_for(&self, method: &str, count: u32) -> anyhow::Result<()> {
        self.inject_fault(
            json!({"vendor": "hetzner", "kind": "server_error", "status": 503,
            "method": method, "count": count}),
        )
        .await
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

    /// Loses the simulator's answer to the next `method` request at `vendor` whose path holds
    /// `path` (after it did the work), places an order with `order` and waits until it is
    /// `active`; checks the lost answer fired and that the order has one server at the
    /// simulator, not two. Answers the order's id.
    pub async fn order_through_a_lost_answer(
        &self,
        vendor: &str,
        method: &str,
        path: &str,
        order: impl AsyncFnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        arm_fault_at(
            &self.sim_url,
            json!({
                "vendor": vendor, "kind": "lost_response", "method": method, "path": path,
                "count": 1
            }),
        )
        .await?;
        let id = order().await?;
        self.wait_for_status(&id, "active", Duration::from_secs(90))
            .await?;
        let armed = armed_faults_at(&self.sim_url).await?;
        anyhow::ensure!(armed.is_empty(), "the lost answer never fired: {armed:?}");
        let servers = sim_servers_at(&self.sim_url, vendor).await?;
        let made = servers
            .iter()
            .filter(|server| server["idempotency_key"] == id.as_str())
            .count();
        anyhow::ensure!(
            made == 1,
            "{made} servers for order {id}: {servers:#?}\n{}",
            self.host_log()
        );
        Ok(id)
    }

    /// Has a vendor's own fault endpoint (`/_sim/<vendor>/faults`) refuse the next create for
    /// quota, places an order with `order` and waits until it fails; checks it failed
    /// `quota_exceeded`, not retryable. Answers the failed order.
    pub async fn order_refused_for_quota(
        &self,
        fault: QuotaFault,
        order: impl AsyncFnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<Value> {
        match fault {
            QuotaFault::Azure => {
                self.sim()
                    .arm_azure_fault(vendor_sim::azure::ComputeFault::QuotaExceeded, 1)
                    .await?
            }
            QuotaFault::Gcp => {
                self.sim()
                    .arm_gcp_fault(vendor_sim::gcp::ComputeFault::QuotaExceeded, 1)
                    .await?
            }
        }
        let id = order().await?;
        let failed = self
            .wait_for_status(&id, "failed", Duration::from_secs(60))
            .await?;
        anyhow::ensure!(
            failed["fault"]["code"] == "quota_exceeded" && failed["fault"]["retryable"] == false,
            "order {id} did not fail for quota, for good: {failed:#}"
        );
        Ok(failed)
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

/// Arms `rule` at the `/_sim/faults` API at `base_url` (a simulator's or a fault proxy's),
/// e.g. `{"vendor": "gcp", "kind": "lost_response", "method": "POST", "count": 1}`.
pub async fn arm_fault_at(base_url: &str, rule: Value) -> anyhow::Result<()> {
    let parsed: ProxyFaultRule =
        serde_json::from_value(rule.clone()).with_context(|| format!("{rule} is no fault rule"))?;
    FaultsClient::new(base_url).arm(&parsed).await
}

/// The faults still armed at the `/_sim/faults` API at `base_url`, as JSON.
pub async fn armed_faults_at(base_url: &str) -> anyhow::Result<Vec<Value>> {
    let armed = FaultsClient::new(base_url).armed().await?;
    Ok(armed.iter().map(|rule| json!(rule)).collect())
}

/// The live servers of `vendor` at the simulator at `sim_url` (`GET /_sim/servers`), as JSON.
pub async fn sim_servers_at(sim_url: &str, vendor: &str) -> anyhow::Result<Vec<Value>> {
    let vendor = Vendor::parse(vendor).with_context(|| format!("no simulated vendor {vendor}"))?;
    let servers = SimClient::new(sim_url).servers_of(vendor).await?;
    Ok(servers.into_iter().map(|server| json!(server)).collect())
}

/// The one live `vendor` server at the simulator at `sim_url` carrying the idempotency key
/// `key`; an error when none or several do.
pub async fn sim_server_with_key(sim_url: &str, vendor: &str, key: &str) -> anyhow::Result<Value> {
    let servers = sim_servers_at(sim_url, vendor).await?;
    let mine: Vec<&Value> = servers
        .iter()
        .filter(|server| server["idempotency_key"] == key)
        .collect();
    anyhow::ensure!(
        mine.len() == 1,
        "{} {vendor} servers carry the key {key}: {servers:#?}",
        mine.len()
    );
    Ok(mine[0].clone())
}

/// A fault proxy in front of `upstream` (a URL) with `profile`.
pub async fn fault_proxy(upstream: &str, profile: FaultProfile) -> anyhow::Result<ProxyHandle> {
    spawn_proxy(ProxyConfig {
        upstream: url::Url::parse(upstream).with_context(|| format!("the upstream {upstream}"))?,
        profile,
        upstream_ca_pem: None,
    })
    .await
}

/// The fault profile shipped with `vendor`'s plugin (`plugins/<vendor>/faults.toml`).
pub fn shipped_fault_profile(vendor: &str) -> anyhow::Result<FaultProfile> {
    let path = crate::processes::workspace_root()
        .join("plugins")
        .join(vendor)
        .join("faults.toml");
    FaultProfile::load(&path)
}

/// The user data of [`carried_fields`].
pub const CARRIED_USER_DATA: &str = "#cloud-config\nruncmd:\n  - echo hello\n";

/// An order's optional fields its server must carry at the vendor: the label `team=e2e`,
/// the SSH key `ssh_key` and [`CARRIED_USER_DATA`].
pub fn carried_fields(ssh_key: &str) -> Value {
    json!({"labels": {"team": "e2e"}, "ssh_keys": [ssh_key], "user_data": CARRIED_USER_DATA})
}

/// Checks the simulator's `server` carries the fields of [`carried_fields`] with `ssh_key`.
pub fn assert_carries_fields(server: &Value, ssh_key: &str) {
    assert_eq!(server["labels"]["team"], "e2e", "{server:#}");
    assert_eq!(server["ssh_keys"], json!([ssh_key]), "{server:#}");
    assert_eq!(server["user_data"], CARRIED_USER_DATA, "{server:#}");
}

/// Makes a `vendor` server named `name` at the simulator at `sim_url` the way another tool
/// would (`POST /_sim/servers`), carrying `key` as its idempotency key if given.
pub async fn seed_server_at(
    sim_url: &str,
    vendor: &str,
    name: &str,
    key: Option<&str>,
) -> anyhow::Result<()> {
    let vendor = Vendor::parse(vendor).with_context(|| format!("no simulated vendor {vendor}"))?;
    SimClient::new(sim_url)
        .seed_server(&SeedServer {
            vendor,
            name: name.to_string(),
            idempotency_key: key.map(str::to_string),
        })
        .await
        .with_context(|| format!("seeding a {} server", vendor.name()))?;
    Ok(())
}

/// The vendors whose simulation has a quota fault of its own
/// ([`Stack::order_refused_for_quota`]).
#[derive(Debug, Clone, Copy)]
pub enum QuotaFault {
    /// Azure's `OperationNotAllowed` for cores quota.
    Azure,
    /// Compute Engine's `quotaExceeded`.
    Gcp,
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
