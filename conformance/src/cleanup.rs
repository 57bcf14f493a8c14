//! The clean-up that ends every run that made servers (Terraform's CheckDestroy, made
//! patient): every server of the run that anything reported is deleted, and deleted again,
//! until it is seen gone or the run's boot timeout passes; what is still there then is a
//! leftover, with its vendor id, for a person to delete (at a real vendor it is billed).
//!
//! What counts as the run's servers: every server the plugin answered for one of the run's
//! keys (create, find, list), what `list-servers` lists now, and the vendor's own side
//! where the run sees it: the simulator's servers carrying a run key (at its Azure, also the
//! public IPs, NICs and OS disks of the run's VMs), or, through the fault
//! proxy, every successful create request for a run key (a server made whose vendor id the
//! plugin never reported is a leftover with an unknown id). Every vendor call waits out
//! `rate-limited` and `transient` answers as the host does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::{ProviderError, ServerStatus};
use provisioner_host::runtime::CallError;
use tokio::time::Instant;

use vendor_sim::conventions::IDEMPOTENCY_LABEL;

use crate::kit::{Kit, Simulator, Vantage};
use crate::report::Leftover;
use crate::traffic;

/// How long a delete that the vendor answered stays trusted while the server reports
/// `deleting`, before another delete is sent.
const DELETE_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// The pause between rounds.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// What the clean-up ended with.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Servers seen gone (vendor ids).
    pub gone: BTreeSet<String>,
    /// What is still there.
    pub leftovers: Vec<Leftover>,
    /// Calls that failed on the way (the last round's).
    pub notes: Vec<String>,
}

/// Deletes the run's servers until each is seen gone or `kit.options.boot_timeout` passes.
pub async fn sweep(kit: &Kit) -> Sweep {
    let deadline = Instant::now() + kit.options.boot_timeout;
    let mut sweep = Sweep::default();
    let mut deleted_at: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let calls_until = kit.call_deadline().min(deadline);
        sweep.notes.clear();
        discover(kit, calls_until, &mut sweep.notes).await;
        let mut left = Vec::new();
        for (vendor_id, key) in kit.seen() {
            if sweep.gone.contains(&vendor_id) {
                continue;
            }
            let detail = match kit.get_until(&vendor_id, calls_until).await {
                Err(CallError::Provider(ProviderError::NotFound(_))) => None,
                Ok(server) if server.status == ServerStatus::Deleted => None,
                Ok(server)
                    if server.status == ServerStatus::Deleting
                        && deleted_at
                            .get(&vendor_id)
                            .is_some_and(|at| at.elapsed() < DELETE_AGAIN_AFTER) =>
                {
                    Some("deleting".to_string())
                }
                seen => {
                    let before = match &seen {
                        Ok(server) => crate::shown::status(server.status).to_string(),
                        Err(error) => {
                            format!("get-server answered {}", crate::shown::shown_error(error))
                        }
                    };
                    deleted_at.insert(vendor_id.clone(), Instant::now());
                    match kit.delete_until(&vendor_id, calls_until).await {
                        Err(CallError::Provider(ProviderError::NotFound(_))) => None,
                        Ok(()) => Some(format!("{before}; deleted, not gone yet")),
                        Err(error) => Some(format!(
                            "{before}; its delete answered {}",
                            crate::shown::shown_error(&error)
                        )),
                    }
                }
            };
            match detail {
                None => {
                    sweep.gone.insert(vendor_id);
                }
                Some(detail) => left.push(Leftover {
                    vendor_id: Some(vendor_id),
                    key,
                    detail,
                }),
            }
        }
        left.extend(unreported(kit, &left, calls_until, &mut sweep.notes).await);
        if left.is_empty() || Instant::now() >= deadline {
            sweep.leftovers = left;
            return sweep;
        }
        tokio::time::sleep(ROUND_PAUSE.min(deadline - Instant::now())).await;
    }
}

/// Asks the plugin for the run's servers (remembered by the kit as it answers):
/// `list-servers`, or `find-server` per key for a 0.1 plugin.
async fn discover(kit: &Kit, calls_until: Instant, notes: &mut Vec<String>) {
    if kit.plugin.wit_version() == WitVersion::V0_1 {
        for key in kit.keys() {
            if let Err(error) = kit.find_until(&key, calls_until).await {
                notes.push(format!(
                    "find-server {key}: {}",
                    crate::shown::shown_error(&error)
                ));
            }
        }
        return;
    }
    if let Err(error) = kit.list_until(calls_until).await {
        notes.push(format!(
            "list-servers: {}",
            crate::shown::shown_error(&error)
        ));
    }
}

/// Servers the vendor's side shows for a run key beyond those the plugin reported and the
/// clean-up still counts (`left`).
async fn unreported(
    kit: &Kit,
    left: &[Leftover],
    calls_until: Instant,
    notes: &mut Vec<String>,
) -> Vec<Leftover> {
    let mut found = Vec::new();
    match &kit.vantage {
        Vantage::Simulator(sim) => {
            let at_sim = match sim.servers().await {
                Ok(servers) => servers,
                Err(error) => {
                    notes.push(format!("{error:#}"));
                    return found;
                }
            };
            // The simulator's own number for each (not always the vendor id a plugin sees:
            // OpenStack's are UUIDs, Example Cloud's `srv-<n>`), per run key.
            let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
            for server in &at_sim {
                if let Some(key) = server.idempotency_key.as_deref()
                    && kit.is_ours(key)
                {
                    per_key.entry(key).or_default().push(server.id);
                }
            }
            let reported_vms: Vec<(String, String)> = kit
                .seen()
                .into_iter()
                .filter_map(|(vendor_id, key)| {
                    Some((vendor_id.rsplit('/').next()?.to_string(), key))
                })
                .collect();
            match azure_network_of_run(sim, |key| kit.is_ours(key), &reported_vms).await {
                Ok(network) => found.extend(network.into_iter().map(|resource| Leftover {
                    key: resource.key.unwrap_or_default(),
                    detail: format!(
                        "a {} of the run ({}) is still at the simulator: deleting a VM deletes \
                         its NIC, public IP and OS disk only when each is marked \
                         deleteOption Delete, and the plugin deletes nothing else",
                        resource.kind, resource.name
                    ),
                    vendor_id: Some(resource.id),
                })),
                Err(error) => notes.push(format!("{error:#}")),
            }
            for (key, sim_ids) in per_key {
                let counted = left.iter().filter(|l| l.key == key).count();
                for sim_id in sim_ids.iter().skip(counted) {
                    found.push(Leftover {
                        vendor_id: None,
                        key: key.to_string(),
                        detail: format!(
                            "the simulator still has it (its server #{sim_id}); the plugin \
                             does not report it"
                        ),
                    });
                }
            }
        }
        Vantage::Proxy(proxy) => {
            let requests = proxy.requests();
            let seen = kit.seen();
            for key in kit.keys() {
                let made = traffic::servers_made(&requests, &key);
                let mut reported = seen.iter().filter(|(_, k)| *k == key).count();
                if made > reported {
                    // Perhaps the plugin finds it now.
                    if let Err(error) = kit.find_until(&key, calls_until).await {
                        notes.push(format!(
                            "find-server {key}: {}",
                            crate::shown::shown_error(&error)
                        ));
                    }
                    reported = kit.seen().iter().filter(|(_, k)| *k == key).count();
                }
                for _ in reported..made {
                    found.push(Leftover {
                        vendor_id: None,
                        key: key.clone(),
                        detail: format!(
                            "{made} successful create request(s) for this key reached the \
                             vendor, the plugin reported {reported} server(s): the vendor \
                             has one the plugin never named"
                        ),
                    });
                }
            }
        }
        Vantage::Blind => {}
    }
    found
}

/// ARM's VM type.
const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
/// ARM's managed disk type.
const DISK_TYPE: &str = "Microsoft.Compute/disks";

/// One resource at the simulator's ARM.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArmResource {
    /// Its resource id.
    id: String,
    /// Its type (`Microsoft.Network/publicIPAddresses`).
    kind: String,
    /// Its name.
    name: String,
    /// The idempotency key its tags carry.
    key: Option<String>,
}

/// The resources besides VMs that the run left at the simulator's ARM (`azure` only;
/// empty for the other vendors, whose servers are all there is): public IPs and NICs
/// tagged with a run key, and the OS disks of the run's VMs, which Azure names
/// `<vm>_OsDisk_…` and does not tag. `reported_vms` are the names and keys of the VMs
/// the plugin reported (the VMs still there are found by their tags).
async fn azure_network_of_run(
    sim: &Simulator,
    is_ours: impl Fn(&str) -> bool,
    reported_vms: &[(String, String)],
) -> anyhow::Result<Vec<ArmResource>> {
    if sim.vendor != "azure" {
        return Ok(Vec::new());
    }
    let resources = sim
        .control
        .azure_resources()
        .await?
        .into_iter()
        .map(|resource| ArmResource {
            key: resource
                .tags
                .get(IDEMPOTENCY_LABEL)
                .and_then(|key| key.as_str())
                .map(str::to_string),
            id: resource.id,
            kind: resource.kind,
            name: resource.name,
        })
        .collect();
    Ok(network_of_run(resources, is_ours, reported_vms))
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
