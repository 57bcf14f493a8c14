//! The vendor simulator's control API, as the checks use it, and the `/_sim/faults` API the
//! simulator and the fault proxy share.

use anyhow::Context;
use serde_json::{Value, json};

/// The `/_sim/faults` API at a base URL (the simulator's, or the fault proxy's), arming
/// faults for one vendor.
#[derive(Debug, Clone)]
pub struct FaultApi {
    url: String,
    vendor: String,
    http: reqwest::Client,
}

impl FaultApi {
    /// The fault API at `url`, for `vendor`.
    pub fn new(url: &str, vendor: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            vendor: vendor.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Arms a fault for this vendor: `rule` is the simulator's fault JSON without `vendor`.
    pub async fn arm(&self, mut rule: Value) -> anyhow::Result<()> {
        rule["vendor"] = json!(self.vendor);
        self.http
            .post(format!("{}/_sim/faults", self.url))
            .json(&rule)
            .send()
            .await
            .context("arming a fault")?
            .error_for_status()
            .with_context(|| format!("arming the fault {rule}"))?;
        Ok(())
    }

    /// Clears every armed fault (the proxy's standing ones too).
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/_sim/faults", self.url))
            .send()
            .await
            .context("clearing the armed faults")?
            .error_for_status()
            .context("clearing the armed faults")?;
        Ok(())
    }

    /// How many faults are still armed.
    pub async fn armed(&self) -> anyhow::Result<usize> {
        let answer: Value = self
            .http
            .get(format!("{}/_sim/faults", self.url))
            .send()
            .await
            .context("listing the armed faults")?
            .error_for_status()
            .context("listing the armed faults")?
            .json()
            .await?;
        Ok(answer["faults"].as_array().map_or(0, Vec::len))
    }
}

/// A live server at the simulator carrying one of a run's keys.
#[derive(Debug, Clone)]
pub struct SimServer {
    /// The simulator's own number for it (not always the vendor id a plugin sees:
    /// OpenStack's are UUIDs, Example Cloud's `srv-<n>`).
    pub sim_id: String,
    /// Its idempotency key.
    pub key: String,
}

/// The simulator at a base URL, acting as one vendor.
#[derive(Debug, Clone)]
pub struct SimControl {
    url: String,
    vendor: String,
    http: reqwest::Client,
    faults: FaultApi,
}

impl SimControl {
    /// The simulator at `url`, for `vendor`'s API.
    pub fn new(url: &str, vendor: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            vendor: vendor.to_string(),
            http: reqwest::Client::new(),
            faults: FaultApi::new(url, vendor),
        }
    }

    /// Its fault API.
    pub fn faults(&self) -> &FaultApi {
        &self.faults
    }

    /// A part of the path of this vendor's create request at the simulator, so a fault can
    /// hit the create and not, say, OpenStack's Keystone login (also a POST).
    pub fn create_path(&self) -> &'static str {
        match self.vendor.as_str() {
            "digitalocean" => "/droplets",
            // Compute Engine's insert (`POST .../zones/{zone}/instances`); not its token
            // exchange (`POST /gcp/token`).
            "gcp" => "/instances",
            // ARM's `PUT .../virtualMachines/{name}`; not the public IP's or NIC's PUT.
            "azure" => "/virtualMachines/",
            _ => "/servers",
        }
    }

    /// The method of this vendor's create request at the simulator.
    pub fn create_method(&self) -> &'static str {
        match self.vendor.as_str() {
            // ARM creates with `PUT`, idempotent by name.
            "azure" => "PUT",
            _ => "POST",
        }
    }

    /// Whether the simulator answers and serves this vendor.
    pub async fn check(&self) -> anyhow::Result<()> {
        let stats: Value = self
            .http
            .get(format!("{}/_sim/stats", self.url))
            .send()
            .await
            .with_context(|| format!("reaching the simulator at {}", self.url))?
            .error_for_status()?
            .json()
            .await?;
        if stats["vendors"][&self.vendor].is_null() {
            anyhow::bail!(
                "the simulator at {} does not serve a vendor '{}' (give --sim-vendor)",
                self.url,
                self.vendor
            );
        }
        Ok(())
    }

    /// Makes a server carrying `key` outside the plugin (as another tool would).
    pub async fn seed(&self, key: &str) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sim/servers", self.url))
            .json(&json!({"vendor": self.vendor, "name": key, "idempotency_key": key}))
            .send()
            .await
            .context("making a server at the simulator")?
            .error_for_status()
            .context("making a server at the simulator")?;
        Ok(())
    }

    /// Caps every list answer at `max` servers (`None`: the vendors' own page sizes).
    pub async fn cap_pages(&self, max: Option<usize>) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sim/paging", self.url))
            .json(&json!({"max_per_page": max}))
            .send()
            .await
            .context("capping the simulator's pages")?
            .error_for_status()
            .context("capping the simulator's pages")?;
        Ok(())
    }

    /// The simulator's record of this vendor's live server carrying `key` (with the
    /// `ssh_keys`, `user_data` and `labels` it got), if any.
    pub async fn server_with_key(&self, key: &str) -> anyhow::Result<Option<Value>> {
        Ok(self.servers_carrying(key).await?.into_iter().next())
    }

    /// How many live servers of this vendor carry `key`, by the simulator's own count.
    pub async fn servers_with_key(&self, key: &str) -> anyhow::Result<usize> {
        Ok(self.servers_carrying(key).await?.len())
    }

    /// This vendor's live servers whose key `is_ours` says is one of the run's.
    pub async fn servers_of_run(
        &self,
        is_ours: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<SimServer>> {
        Ok(self
            .servers()
            .await?
            .into_iter()
            .filter_map(|server| {
                let key = server["idempotency_key"].as_str()?;
                is_ours(key).then(|| SimServer {
                    sim_id: match &server["id"] {
                        Value::String(id) => id.clone(),
                        other => other.to_string(),
                    },
                    key: key.to_string(),
                })
            })
            .collect())
    }

    /// The simulator's records of this vendor's live servers carrying `key`.
    async fn servers_carrying(&self, key: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .servers()
            .await?
            .into_iter()
            .filter(|server| server["idempotency_key"] == key)
            .collect())
    }

    /// The simulator's records of this vendor's live servers.
    async fn servers(&self) -> anyhow::Result<Vec<Value>> {
        let answer: Value = self
            .http
            .get(format!("{}/_sim/servers", self.url))
            .send()
            .await
            .context("listing the simulator's servers")?
            .error_for_status()
            .context("listing the simulator's servers")?
            .json()
            .await?;
        Ok(answer["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|server| server["vendor"] == self.vendor.as_str())
            .cloned()
            .collect())
    }
}
