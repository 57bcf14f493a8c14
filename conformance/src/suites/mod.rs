//! The checks, suite by suite, and the clean-up that ends a run.
//!
//! Checks run one after another; a check that needs an earlier one's result (the server
//! `lifecycle.create` made) is skipped, saying so, when that one failed. Every server a run
//! makes carries an idempotency key `conformance-<run id>-<n>`; the last check deletes
//! every server of the run until each is seen gone ([`crate::cleanup`]) and fails, naming
//! each leftover's vendor id, if anything is left.
//!
//! Vendor calls that are not themselves under test (the create before a check, the
//! deletes, the lists) wait out `rate-limited` and `transient` answers as the host does
//! ([`crate::patience`]); a fault check's own call is made once, since its error is what
//! is judged. Where a check needs the vendor's side (how many servers a key made, what a
//! server got, small pages), it reads the simulator's records, or the fault proxy's record
//! of the requests that reached the vendor; a run that sees neither (live, no proxy) skips
//! it, saying so.
//!
//! Each suite has its own file, its checks as a sequence of named steps: [`contract`]
//! (with `contract.world`, the load every run begins with), [`sandbox`], [`faults`],
//! [`lifecycle`] (with `lifecycle.inputs`), [`idempotency`]. This file runs them and holds
//! what they share: the [`Recorder`] their checks report to, how calls read in details, a
//! fault armed around a call, the vendor's own count of a key's servers, and the deletes
//! and clean-up (`lifecycle.no-leftovers`) that end a run.

mod contract;
mod faults;
mod idempotency;
mod lifecycle;
mod sandbox;

use std::future::Future;
use std::time::{Duration, Instant};

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::LabelledServer;
use provisioner_host::runtime::CallError;
use vendor_sim::control_client::FaultsClient;
use vendor_sim::proxy::ProxyFaultRule;

use crate::kit::{Kit, Vantage};
use crate::options::{KitOptions, Suite, Target};
use crate::report::{CheckResult, Leftover, Outcome, Report};
use crate::shown::shown_error;
use crate::traffic;

/// A check's verdict: `Ok(detail)` passes, `Err(detail)` fails.
type Verdict = Result<String, String>;

/// A check as reports name it.
#[derive(Debug, Clone, Copy)]
struct Check {
    /// The suite it belongs to.
    suite: Suite,
    /// Its name within the suite.
    name: &'static str,
    /// What it checks.
    description: &'static str,
}

/// Records checks as they run and reports progress.
struct Recorder<'a> {
    checks: Vec<CheckResult>,
    progress: &'a mut dyn FnMut(&str),
}

impl Recorder<'_> {
    /// Runs `check`, judged by `run`, and records its verdict; whether it passed.
    async fn check(&mut self, check: Check, run: impl Future<Output = Verdict>) -> bool {
        (self.progress)(&format!(
            "{}.{}: {}",
            check.suite.name(),
            check.name,
            check.description
        ));
        let started = Instant::now();
        let verdict = run.await;
        let passed = verdict.is_ok();
        let (outcome, detail) = match verdict {
            Ok(detail) => (Outcome::Pass, detail),
            Err(detail) => (Outcome::Fail, detail),
        };
        self.checks.push(CheckResult {
            suite: check.suite.name(),
            check: check.name,
            description: check.description,
            outcome,
            detail,
            duration: started.elapsed(),
        });
        passed
    }

    /// Records `check` as skipped, saying why.
    fn skip(&mut self, check: Check, why: &str) {
        self.checks.push(CheckResult {
            suite: check.suite.name(),
            check: check.name,
            description: check.description,
            outcome: Outcome::Skip,
            detail: why.to_string(),
            duration: Duration::ZERO,
        });
    }

    /// Records each of `checks` as skipped, in order, for the same reason.
    fn skip_all(&mut self, checks: &[Check], why: &str) {
        for &check in checks {
            self.skip(check, why);
        }
    }
}

/// Runs the suites of `options`; `progress` hears the name of each check as it starts.
pub async fn run(options: KitOptions, progress: &mut dyn FnMut(&str)) -> Report {
    let mut target = target_description(&options.target);
    let profile = match &options.target {
        Target::FaultProxy { profile, .. } => profile.display().to_string(),
        _ => String::new(),
    };
    let plugin_name = options.component.display().to_string();
    let vendor = provisioner_host::manifest::Manifest::load(&options.manifest)
        .map(|m| m.vendor)
        .unwrap_or_else(|_| "?".into());
    let suites = options.suites.clone();
    let mut recorder = Recorder {
        checks: Vec::new(),
        progress,
    };
    let Some(kit) = contract::world(options, &mut recorder).await else {
        return Report {
            plugin: plugin_name,
            vendor,
            wit_version: None,
            target,
            run_id: None,
            checks: recorder.checks,
            leftovers: Vec::new(),
        };
    };
    if let Some(proxy) = kit.proxy() {
        target = format!(
            "the fault proxy at {} (profile {profile}, vendor {}) in front of {}",
            proxy.url(),
            proxy.profile_vendor,
            proxy.upstream
        );
    }
    let mut made_servers = false;
    for suite in Suite::ALL.into_iter().filter(|s| suites.contains(s)) {
        match suite {
            Suite::Contract => contract::contract(&kit, &mut recorder).await,
            Suite::Sandbox => sandbox::sandbox(&kit, &mut recorder).await,
            Suite::Faults => made_servers |= faults::faults(&kit, &mut recorder).await,
            Suite::Lifecycle => {
                made_servers |= lifecycle::lifecycle(&kit, &mut recorder).await;
                made_servers |= lifecycle::inputs(&kit, &mut recorder).await;
            }
            Suite::Idempotency => {
                made_servers |= idempotency::idempotency(&kit, &mut recorder).await;
            }
        }
    }
    let leftovers = if made_servers {
        clean_up(&kit, &mut recorder).await
    } else {
        Vec::new()
    };
    Report {
        plugin: plugin_name,
        vendor,
        wit_version: Some(kit.plugin.wit_version().to_string()),
        target,
        run_id: Some(kit.run_id.clone()),
        checks: recorder.checks,
        leftovers,
    }
}

/// Where a run's vendor is, as its report names it before the plugin is loaded.
fn target_description(target: &Target) -> String {
    match target {
        Target::Simulator { url, vendor } => format!("the simulator at {url} (as {vendor})"),
        Target::FaultProxy {
            profile,
            base_url_key,
        } => format!(
            "the fault proxy (profile {}) in front of the manifest's {base_url_key}",
            profile.display()
        ),
        Target::Live => "the live vendor".to_string(),
    }
}

/// A failure of the kit's own calls (the fault API, the simulator's control API) with its
/// causes, for details.
fn with_causes(error: anyhow::Error) -> String {
    format!("{error:#}")
}

/// Why a check that makes servers is skipped when the run has no shape to make them with.
const NO_SHAPE: &str = "no region, size and image to make servers with: give --region, --size \
                        and --image, or list `regions`, `sizes` and `images` in the manifest's \
                        [config]";

/// Clears every armed fault and arms `rule` alone.
async fn arm_alone(fault_api: &FaultsClient, rule: ProxyFaultRule) -> Result<(), String> {
    fault_api.clear().await.map_err(with_causes)?;
    fault_api.arm(&rule).await.map_err(with_causes)
}

/// `call`'s answer with `rule` armed alone for the whole call (a plugin that resends must
/// still meet the fault), every fault cleared after.
async fn with_fault<T>(
    fault_api: &FaultsClient,
    rule: ProxyFaultRule,
    call: impl Future<Output = T>,
) -> Result<T, String> {
    arm_alone(fault_api, rule).await?;
    let answer = call.await;
    fault_api.clear().await.map_err(with_causes)?;
    Ok(answer)
}

/// The servers of a `list-servers` answer, or why there are none to judge.
fn listed_servers(
    listed: Result<Option<Vec<LabelledServer>>, CallError>,
) -> Result<Vec<LabelledServer>, String> {
    match listed {
        Ok(Some(servers)) => Ok(servers),
        Ok(None) => Err("the plugin has no list-servers".into()),
        Err(error) => Err(format!("list-servers failed: {}", shown_error(&error))),
    }
}

/// How many servers carrying `key` the vendor has, by its own side, and how that was
/// counted: the simulator's live servers, or the successful create requests the proxy
/// forwarded; `None` for a blind run.
async fn servers_at_vendor(kit: &Kit, key: &str) -> Result<Option<(usize, &'static str)>, String> {
    Ok(match &kit.vantage {
        Vantage::Simulator(sim) => Some((
            sim.servers_with_key(key).await.map_err(with_causes)?.len(),
            "by the simulator's count",
        )),
        Vantage::Proxy(proxy) => Some((
            traffic::servers_made(&proxy.requests(), key),
            "by the create requests that reached the vendor through the proxy",
        )),
        Vantage::Blind => None,
    })
}

/// Deletes every server of the run the plugin reported and the kit has not deleted yet
/// (not a check: the clean-up at the end judges).
async fn delete_all_of_run(kit: &Kit) {
    if kit.plugin.wit_version() != WitVersion::V0_1 {
        let _ = kit.list().await;
    }
    for (vendor_id, _) in kit.seen() {
        if !kit.was_deleted(&vendor_id) {
            let _ = kit.delete(&vendor_id).await;
        }
    }
}

/// `lifecycle.no-leftovers`, which ends every run that made servers.
const NO_LEFTOVERS: Check = Check {
    suite: Suite::Lifecycle,
    name: "no-leftovers",
    description: "after the run, every server it made is deleted and seen gone (deletes \
                  retried until the boot timeout); none is left at the vendor",
};

/// CheckDestroy: every server of the run deleted and seen gone; the leftovers otherwise.
async fn clean_up(kit: &Kit, r: &mut Recorder<'_>) -> Vec<Leftover> {
    let mut leftovers = Vec::new();
    let judged_by = match kit.vantage {
        Vantage::Simulator(ref sim) if sim.vendor == "azure" => {
            "the plugin's get-server and the simulator's VMs, public IPs, NICs and disks"
        }
        Vantage::Simulator(_) => "the plugin's get-server and the simulator's servers",
        Vantage::Proxy(_) => {
            "the plugin's get-server and the create requests that reached the vendor"
        }
        Vantage::Blind => "the plugin's get-server and list-servers",
    };
    r.check(NO_LEFTOVERS, async {
        let sweep = crate::cleanup::sweep(kit).await;
        leftovers = sweep.leftovers.clone();
        let notes = if sweep.notes.is_empty() {
            String::new()
        } else {
            format!(" (on the way: {})", sweep.notes.join("; "))
        };
        if sweep.leftovers.is_empty() {
            Ok(format!(
                "{} keys used, {} server(s) seen gone, nothing left (judged by {judged_by})",
                kit.keys().len(),
                sweep.gone.len()
            ))
        } else {
            Err(format!(
                "expected nothing left, found {}: {} (judged by {judged_by}; delete them by \
                 hand: the label {}={} marks them){notes}",
                sweep.leftovers.len(),
                sweep
                    .leftovers
                    .iter()
                    .map(Leftover::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
                crate::kit::RUN_LABEL,
                kit.run_id
            ))
        }
    })
    .await;
    leftovers
}
