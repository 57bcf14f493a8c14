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

use crate::kit::{Kit, Vantage};
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
                        Ok(server) => crate::suites::status(server.status).to_string(),
                        Err(error) => {
                            format!("get-server answered {}", crate::suites::shown_error(error))
                        }
                    };
                    deleted_at.insert(vendor_id.clone(), Instant::now());
                    match kit.delete_until(&vendor_id, calls_until).await {
                        Err(CallError::Provider(ProviderError::NotFound(_))) => None,
                        Ok(()) => Some(format!("{before}; deleted, not gone yet")),
                        Err(error) => Some(format!(
                            "{before}; its delete answered {}",
                            crate::suites::shown_error(&error)
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
                    crate::suites::shown_error(&error)
                ));
            }
        }
        return;
    }
    if let Err(error) = kit.list_until(calls_until).await {
        notes.push(format!(
            "list-servers: {}",
            crate::suites::shown_error(&error)
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
            let at_sim = match sim.servers_of_run(|key| kit.is_ours(key)).await {
                Ok(servers) => servers,
                Err(error) => {
                    notes.push(format!("{error:#}"));
                    return found;
                }
            };
            let mut per_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for server in &at_sim {
                per_key
                    .entry(server.key.as_str())
                    .or_default()
                    .push(server.sim_id.as_str());
            }
            let reported_vms: Vec<(String, String)> = kit
                .seen()
                .into_iter()
                .filter_map(|(vendor_id, key)| {
                    Some((vendor_id.rsplit('/').next()?.to_string(), key))
                })
                .collect();
            match sim
                .azure_network_of_run(|key| kit.is_ours(key), &reported_vms)
                .await
            {
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
                            crate::suites::shown_error(&error)
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
