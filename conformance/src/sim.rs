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

    /// How many faults are still armed (at the proxy: rules, each with its count left).
    pub async fn armed(&self) -> anyhow::Result<usize> {
        Ok(self.listing().await?.as_array().map_or(0, Vec::len))
    }

    /// The armed faults as the simulator or proxy lists them: a change means one fired.
    pub async fn listing(&self) -> anyhow::Result<Value> {
        let mut answer: Value = self
            .http
            .get(format!("{}/_sim/faults", self.url))
            .send()
            .await
            .context("listing the armed faults")?
            .error_for_status()
            .context("listing the armed faults")?
            .json()
            .await?;
        Ok(answer["faults"].take())
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

    /// The vendor it acts as.
    pub fn vendor(&self) -> &str {
        &self.vendor
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

    /// The resources besides VMs that the run left at the simulator's ARM (`azure` only;
    /// empty for the other vendors, whose servers are all there is): public IPs and NICs
    /// tagged with a run key, and the OS disks of the run's VMs, which Azure names
    /// `<vm>_OsDisk_…` and does not tag. `reported_vms` are the names and keys of the VMs
    /// the plugin reported (the VMs still there are found by their tags).
    pub async fn azure_network_of_run(
        &self,
        is_ours: impl Fn(&str) -> bool,
        reported_vms: &[(String, String)],
    ) -> anyhow::Result<Vec<ArmResource>> {
        if self.vendor != "azure" {
            return Ok(Vec::new());
        }
        let census: Value = self
            .http
            .get(format!("{}/_sim/azure/resources", self.url))
            .send()
            .await
            .context("listing the simulator's ARM resources")?
            .error_for_status()
            .context("listing the simulator's ARM resources")?
            .json()
            .await?;
        let resources: Vec<ArmResource> = census["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some(ArmResource {
                    id: r["id"].as_str()?.to_string(),
                    kind: r["type"].as_str()?.to_string(),
                    name: r["name"].as_str()?.to_string(),
                    key: r["tags"][IDEMPOTENCY_TAG].as_str().map(str::to_string),
                })
            })
            .collect();
        Ok(network_of_run(resources, is_ours, reported_vms))
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

/// The tag carrying a resource's idempotency key.
const IDEMPOTENCY_TAG: &str = "provisioner-idempotency-key";
/// ARM's VM type.
const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
/// ARM's managed disk type.
const DISK_TYPE: &str = "Microsoft.Compute/disks";

/// One resource at the simulator's ARM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmResource {
    /// Its resource id.
    pub id: String,
    /// Its type (`Microsoft.Network/publicIPAddresses`).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The idempotency key its tags carry.
    pub key: Option<String>,
}

/// Of `resources`, those of the run that are not VMs: tagged with a run key, or a disk
/// named for one of the run's VMs (`reported_vms`, names and keys, and every VM tagged
/// with a run key). The key of a disk is its VM's.
fn network_of_run(
    resources: Vec<ArmResource>,
    is_ours: impl Fn(&str) -> bool,
    reported_vms: &[(String, String)],
) -> Vec<ArmResource> {
    let ours = |r: &ArmResource| r.key.as_deref().is_some_and(&is_ours);
    let mut vms: Vec<(String, Option<String>)> = reported_vms
        .iter()
        .map(|(name, key)| (name.to_lowercase(), Some(key.clone())))
        .collect();
    vms.extend(
        resources
            .iter()
            .filter(|r| r.kind == VM_TYPE && ours(r))
            .map(|r| (r.name.to_lowercase(), r.key.clone())),
    );
    resources
        .into_iter()
        .filter(|r| r.kind != VM_TYPE)
        .filter_map(|mut r| {
            if ours(&r) {
                return Some(r);
            }
            if r.kind != DISK_TYPE {
                return None;
            }
            let name = r.name.to_lowercase();
            let (_, key) = vms
                .iter()
                .find(|(vm, _)| name.starts_with(&format!("{vm}_osdisk_")))?;
            if r.key.is_none() {
                r.key.clone_from(key);
            }
            Some(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(kind: &str, name: &str, key: Option<&str>) -> ArmResource {
        ArmResource {
            id: format!("/subscriptions/s/resourceGroups/g/providers/{kind}/{name}"),
            kind: kind.into(),
            name: name.into(),
            key: key.map(str::to_string),
        }
    }

    /// A run's IPs and NICs by their tags, its VMs' disks by their names (VMs reported by
    /// the plugin or still tagged); another run's, untagged strangers and VMs themselves
    /// are not counted.
    #[test]
    fn the_run_s_network_is_found_by_tag_and_disk_name() {
        let is_ours = |key: &str| key.starts_with("conformance-run1-");
        let resources = vec![
            resource(VM_TYPE, "vm-a", Some("conformance-run1-1")),
            resource(
                "Microsoft.Network/publicIPAddresses",
                "vm-a-ip",
                Some("conformance-run1-1"),
            ),
            resource(
                "Microsoft.Network/networkInterfaces",
                "vm-a-nic",
                Some("conformance-run1-1"),
            ),
            resource(DISK_TYPE, "VM-A_OsDisk_1_abc", None),
            // The VM is gone; the plugin reported it; its disk was left.
            resource(DISK_TYPE, "vm-b_OsDisk_1_def", None),
            // Another run's.
            resource(
                "Microsoft.Network/publicIPAddresses",
                "vm-c-ip",
                Some("conformance-run2-1"),
            ),
            resource(DISK_TYPE, "vm-c_OsDisk_1_ghi", None),
            resource("Microsoft.Network/virtualNetworks", "vnet", None),
        ];
        let reported = [("vm-b".to_string(), "conformance-run1-2".to_string())];
        let found = network_of_run(resources, is_ours, &reported);
        let names: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|r| (r.name.as_str(), r.key.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("vm-a-ip", Some("conformance-run1-1")),
                ("vm-a-nic", Some("conformance-run1-1")),
                ("VM-A_OsDisk_1_abc", Some("conformance-run1-1")),
                ("vm-b_OsDisk_1_def", Some("conformance-run1-2")),
            ]
        );
    }
}
