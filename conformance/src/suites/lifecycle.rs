//! The `lifecycle` suite: one server through its life, create -> listed (on every page) ->
//! running -> address -> delete -> gone, each step needing the one before; then `inputs`:
//! a request's SSH key, user data and labels reach the vendor.

use std::time::{Duration, Instant};

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::{
    LabelledServer, ProviderError, Server, ServerRequest, ServerStatus,
};
use provisioner_host::runtime::CallError;
use serde_json::json;
use vendor_sim::control::{SeedServer, ServerRecord};
use vendor_sim::proxy::{ProxyFaultKind, ProxyFaultRule};
use vendor_sim::state::Vendor;

use super::{Check, NO_SHAPE, Recorder, Verdict, listed_servers, with_causes, with_fault};
use crate::kit::{Kit, Simulator, Vantage};
use crate::options::Suite;
use crate::patience::is_passing;
use crate::proxy::ProxyControl;
use crate::shown::{shown, shown_error, status};
use crate::traffic;

const CREATE: Check = Check {
    suite: Suite::Lifecycle,
    name: "create",
    description: "create-server answers a server with a vendor id",
};
const LISTED: Check = Check {
    suite: Suite::Lifecycle,
    name: "listed",
    description: "list-servers lists it with its idempotency key",
};
const EVERY_PAGE: Check = Check {
    suite: Suite::Lifecycle,
    name: "every-page",
    description: "list-servers reads every page (simulator: 3 servers a page; fault proxy: 1 \
                  a page; or --paging-servers more servers than a page)",
};
const RUNNING: Check = Check {
    suite: Suite::Lifecycle,
    name: "running",
    description: "get-server reports it running within the boot timeout",
};
const ADDRESS: Check = Check {
    suite: Suite::Lifecycle,
    name: "address",
    description: "the running server has an IPv4 or IPv6 address",
};
const DELETE: Check = Check {
    suite: Suite::Lifecycle,
    name: "delete",
    description: "delete-server succeeds",
};
const GONE: Check = Check {
    suite: Suite::Lifecycle,
    name: "gone",
    description: "get-server then says not-found or deleted",
};
const INPUTS: Check = Check {
    suite: Suite::Lifecycle,
    name: "inputs",
    description: "the request's SSH public key, user data and labels reach the vendor \
                  (simulator or fault proxy)",
};

/// The steps of a server's life, in order.
const STEPS: [Check; 7] = [CREATE, LISTED, EVERY_PAGE, RUNNING, ADDRESS, DELETE, GONE];

/// Why `listed` and `every-page` are skipped for a plugin without `list-servers`.
const NO_LIST_SERVERS: &str = "the plugin implements WIT 0.1 (no list-servers)";

/// create -> running -> address -> delete -> gone. Whether it made a server.
pub(super) async fn lifecycle(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    if kit.shape.is_none() {
        r.skip_all(&STEPS, NO_SHAPE);
        return false;
    }
    let key = kit.new_key();
    let Some(server) = created(kit, r, &key).await else {
        r.skip_all(&STEPS[1..], "needs lifecycle.create");
        return true;
    };
    listed(kit, r, &key, &server).await;
    every_page(kit, r, &key).await;
    match running(kit, r, &server).await {
        None => r.skip(ADDRESS, "needs lifecycle.running"),
        Some(running) => {
            r.check(ADDRESS, address(&running)).await;
        }
    }
    if !r.check(DELETE, deleted(kit, &server)).await {
        r.skip(GONE, "needs lifecycle.delete");
        return true;
    }
    r.check(GONE, gone(kit, &server)).await;
    true
}

/// `lifecycle.create`: the server made for `key`, if the plugin answered one with a vendor
/// id.
async fn created(kit: &Kit, r: &mut Recorder<'_>, key: &str) -> Option<Server> {
    let mut created = None;
    r.check(CREATE, async {
        let result = kit.create(uuid::Uuid::new_v4(), &kit.request(key)).await;
        match result {
            Ok(server) if !server.vendor_id.is_empty() => {
                let detail = format!("server {} ({})", server.vendor_id, status(server.status));
                created = Some(server);
                Ok(detail)
            }
            other => Err(format!(
                "expected a server with a vendor id, got {}",
                shown(&other)
            )),
        }
    })
    .await;
    created
}

/// `lifecycle.listed`: `list-servers` shows `server` with its key.
async fn listed(kit: &Kit, r: &mut Recorder<'_>, key: &str, server: &Server) {
    if kit.plugin.wit_version() == WitVersion::V0_1 {
        r.skip(LISTED, NO_LIST_SERVERS);
        return;
    }
    r.check(LISTED, async {
        let servers = listed_servers(kit.list().await)?;
        match servers.iter().find(|s| s.idempotency_key == key) {
            Some(found) if found.server.vendor_id == server.vendor_id => {
                Ok(format!("listed among {} servers", servers.len()))
            }
            Some(found) => Err(format!(
                "listed key {key} with server {}, expected {}",
                found.server.vendor_id, server.vendor_id
            )),
            None => Err(format!(
                "expected server {} with key {key} among the {} listed",
                server.vendor_id,
                servers.len()
            )),
        }
    })
    .await;
}

/// `lifecycle.every-page`: `list-servers` lists every server of the run when they span
/// several pages. The simulator makes ten servers beside the run's and serves pages of
/// three; the fault proxy makes the plugin's list requests ask for pages of one, with one
/// more server made by the plugin (or `--paging-servers` of them); elsewhere only
/// `--paging-servers` servers (more than the vendor's page) can show it.
async fn every_page(kit: &Kit, r: &mut Recorder<'_>, lifecycle_key: &str) {
    if kit.plugin.wit_version() == WitVersion::V0_1 {
        r.skip(EVERY_PAGE, NO_LIST_SERVERS);
        return;
    }
    let small_pages = kit.proxy().is_some_and(|proxy| proxy.has_paging);
    let extra = match (&kit.vantage, kit.options.paging_servers) {
        (Vantage::Simulator(_), _) => 0,
        (_, Some(n)) if n > 0 => n,
        (Vantage::Proxy(_), _) if small_pages => 1,
        (Vantage::Proxy(_), _) => {
            r.skip(
                EVERY_PAGE,
                "the fault profile has no [paging] page_size_param to make pages small, and \
                 --paging-servers was not given (allow it to make more servers than the \
                 vendor's page)",
            );
            return;
        }
        (Vantage::Blind, _) => {
            r.skip(
                EVERY_PAGE,
                "pages are made small only with --vendor-sim or --fault-proxy (a profile \
                 with [paging]); or allow --paging-servers N (more than the vendor's page) \
                 to make that many servers",
            );
            return;
        }
    };
    r.check(EVERY_PAGE, async {
        match kit.sim() {
            Some(sim) => every_page_at_simulator(kit, sim).await,
            None => {
                let proxy = kit.proxy().filter(|_| small_pages);
                every_page_of_plugins_servers(kit, proxy, lifecycle_key, extra).await
            }
        }
    })
    .await;
}

/// `lifecycle.every-page` at the simulator: ten servers made beside the run's, pages of
/// three.
async fn every_page_at_simulator(kit: &Kit, sim: &Simulator) -> Verdict {
    const SEEDED: usize = 10;
    let vendor = Vendor::parse(&sim.vendor)
        .ok_or_else(|| format!("the simulator has no vendor '{}'", sim.vendor))?;
    let mut keys = Vec::new();
    for _ in 0..SEEDED {
        let key = kit.new_key();
        let seed = SeedServer {
            vendor,
            name: key.clone(),
            idempotency_key: Some(key.clone()),
        };
        sim.control.seed_server(&seed).await.map_err(with_causes)?;
        keys.push(key);
    }
    sim.control.cap_pages(Some(3)).await.map_err(with_causes)?;
    let listed = kit.list().await;
    sim.control.cap_pages(None).await.map_err(with_causes)?;
    let servers = listed_servers(listed)?;
    // The seeded servers go again (the clean-up at the end judges).
    delete_listed(kit, &servers, &keys).await;
    let missing = unlisted(&keys, &servers);
    if missing.is_empty() {
        Ok(format!(
            "all {SEEDED} servers made beside it listed over pages of 3 ({} in all)",
            servers.len()
        ))
    } else {
        Err(format!(
            "expected all {SEEDED} servers with the run's keys over pages of 3, {} missing \
             (e.g. {}): list-servers must follow the vendor's next page until the end",
            missing.len(),
            missing[0]
        ))
    }
}

/// `lifecycle.every-page` over servers the plugin makes: the lifecycle one and `extra`
/// more, listed over pages of one when `proxy` (a fault proxy whose profile has
/// `[paging]`) is given, else over the vendor's own pages.
async fn every_page_of_plugins_servers(
    kit: &Kit,
    proxy: Option<&ProxyControl>,
    lifecycle_key: &str,
    extra: usize,
) -> Verdict {
    let mut keys = vec![lifecycle_key.to_string()];
    keys.extend(make_servers_to_list(kit, extra).await?);
    let since = proxy.map_or(0, ProxyControl::last_seq);
    let listed = match proxy {
        Some(proxy) => {
            with_fault(
                proxy.faults(),
                ProxyFaultRule::new(ProxyFaultKind::SmallPages { page_size: 1 }, 1),
                kit.list(),
            )
            .await?
        }
        None => kit.list().await,
    };
    let servers = listed_servers(listed)?;
    delete_listed(kit, &servers, &keys[1..]).await;
    let pages = match proxy {
        Some(proxy) => small_pages_applied(proxy, since)?,
        None => "the vendor's own pages".to_string(),
    };
    let missing = unlisted(&keys, &servers);
    if missing.is_empty() {
        Ok(format!(
            "all {} servers of the run listed over {pages} ({} in all)",
            keys.len(),
            servers.len()
        ))
    } else {
        Err(format!(
            "expected all {} servers with the run's keys over {pages}, {} missing (e.g. {}): \
             list-servers must follow the vendor's next page until the end",
            keys.len(),
            missing.len(),
            missing[0]
        ))
    }
}

/// Makes `extra` servers for a listing to show; their keys.
async fn make_servers_to_list(kit: &Kit, extra: usize) -> Result<Vec<String>, String> {
    let mut keys = Vec::with_capacity(extra);
    for n in 1..=extra {
        let key = kit.new_key();
        kit.create(uuid::Uuid::new_v4(), &kit.request(&key))
            .await
            .map_err(|error| {
                format!(
                    "making server {n} of {extra} to list failed: {}",
                    shown_error(&error)
                )
            })?;
        keys.push(key);
    }
    Ok(keys)
}

/// How the listing since request `since` at the proxy was paged, unless the small pages
/// never applied.
fn small_pages_applied(proxy: &ProxyControl, since: u64) -> Result<String, String> {
    let requests = proxy.requests_after(since);
    let paged = requests
        .iter()
        .filter(|r| r.fault.as_deref() == Some("small_pages"))
        .count();
    if paged == 0 {
        let sent: Vec<String> = requests
            .iter()
            .map(|r| {
                format!(
                    "{} {}?{}",
                    r.method,
                    r.path,
                    r.query.as_deref().unwrap_or("")
                )
            })
            .collect();
        return Err(format!(
            "the small pages never applied: no list request matched the fault profile's \
             [paging] (page_size_param, list_paths); the listing sent {}",
            sent.join(", ")
        ));
    }
    Ok(format!("pages of 1 ({paged} list requests)"))
}

/// Deletes the listed servers carrying one of `keys` (not a check: the clean-up at the end
/// judges).
async fn delete_listed(kit: &Kit, servers: &[LabelledServer], keys: &[String]) {
    for listed in servers.iter().filter(|s| keys.contains(&s.idempotency_key)) {
        let _ = kit.delete(&listed.server.vendor_id).await;
    }
}

/// The `keys` no listed server carries.
fn unlisted<'a>(keys: &'a [String], servers: &[LabelledServer]) -> Vec<&'a String> {
    keys.iter()
        .filter(|key| !servers.iter().any(|s| &s.idempotency_key == *key))
        .collect()
}

/// `lifecycle.running`: `get-server` reports `server` running within the boot timeout;
/// the running server, if it did.
async fn running(kit: &Kit, r: &mut Recorder<'_>, server: &Server) -> Option<Server> {
    let timeout = kit.options.boot_timeout;
    let mut running = None;
    r.check(RUNNING, async {
        let (last, done) = poll_until(kit, &server.vendor_id, timeout, is_settled).await;
        match last {
            Ok(s) if s.status == ServerStatus::Running => {
                running = Some(s);
                Ok("running".into())
            }
            Ok(s) if done => Err(format!(
                "expected running, the vendor reports {}",
                status(s.status)
            )),
            Ok(s) => Err(format!(
                "expected running within {} s, still {}",
                timeout.as_secs(),
                status(s.status)
            )),
            Err(error) => Err(format!("get-server failed: {}", shown_error(&error))),
        }
    })
    .await;
    running
}

/// `lifecycle.address`: the running server has an address.
async fn address(running: &Server) -> Verdict {
    match (&running.ipv4, &running.ipv6) {
        (None, None) => Err("expected an IPv4 or IPv6 address, got none".into()),
        (v4, v6) => Ok(format!("ipv4 {v4:?}, ipv6 {v6:?}")),
    }
}

/// `lifecycle.delete`: `delete-server` succeeds.
async fn deleted(kit: &Kit, server: &Server) -> Verdict {
    match kit.delete(&server.vendor_id).await {
        Ok(()) => Ok("deleted".to_string()),
        // As the host takes it (a resent delete finds the server gone); `gone` checks it is.
        Err(CallError::Provider(ProviderError::NotFound(detail))) => Ok(format!(
            "not-found (taken as deleted, as the host does): {detail}"
        )),
        Err(error) => Err(format!("expected Ok, got {}", shown_error(&error))),
    }
}

/// `lifecycle.gone`: `get-server` says not-found or deleted within the boot timeout.
async fn gone(kit: &Kit, server: &Server) -> Verdict {
    let timeout = kit.options.boot_timeout;
    let (last, done) = poll_until(kit, &server.vendor_id, timeout, is_gone).await;
    if done {
        Ok(match last {
            Ok(s) => status(s.status).to_string(),
            Err(_) => "not-found".into(),
        })
    } else {
        Err(format!(
            "expected not-found or deleted within {} s of the delete, got {}",
            timeout.as_secs(),
            shown(&last)
        ))
    }
}

/// Polls `get-server` until `done` says so or `within` passes; the last answer. A
/// rate-limited answer's delay is kept before the next poll.
async fn poll_until(
    kit: &Kit,
    vendor_id: &str,
    within: Duration,
    done: impl Fn(&Result<Server, CallError>) -> bool,
) -> (Result<Server, CallError>, bool) {
    let deadline = Instant::now() + within;
    let mut delay = Duration::from_millis(250);
    loop {
        let result = kit.plugin.get_server(None, vendor_id).await;
        if done(&result) {
            return (result, true);
        }
        let now = Instant::now();
        if now >= deadline {
            return (result, false);
        }
        let asked = result
            .as_ref()
            .err()
            .and_then(provisioner_host::wit_convert::retry_after)
            .unwrap_or_default();
        tokio::time::sleep(delay.max(asked).min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Whether a `get-server` answer ends the wait for a server to run: it runs, or it is in
/// error, or the call failed for good.
fn is_settled(result: &Result<Server, CallError>) -> bool {
    matches!(result, Ok(s) if matches!(s.status, ServerStatus::Running | ServerStatus::Error))
        || matches!(result, Err(e) if !is_passing(e))
}

/// Whether a `get-server` answer says the server is gone: not-found, or deleted.
fn is_gone(result: &Result<Server, CallError>) -> bool {
    matches!(result, Err(CallError::Provider(ProviderError::NotFound(_))))
        || matches!(result, Ok(s) if s.status == ServerStatus::Deleted)
}

/// A request's SSH key, user data and labels reach the vendor (the simulator shows what
/// each server got; the proxy, what each request carried). Whether it made a server.
pub(super) async fn inputs(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    if kit.shape.is_none() {
        r.skip(INPUTS, NO_SHAPE);
        return false;
    }
    if matches!(kit.vantage, Vantage::Blind) {
        r.skip(
            INPUTS,
            "what reached the vendor is seen only with --vendor-sim or --fault-proxy",
        );
        return false;
    }
    let key = kit.new_key();
    let request = kit.request_with_inputs(&key);
    r.check(INPUTS, inputs_reach_vendor(kit, &request)).await;
    true
}

/// `lifecycle.inputs`: a server made from `request` (the run's key, SSH key, user data and
/// label), then deleted; nothing of its inputs missing at the vendor, by the simulator's
/// record of the server or the requests the proxy forwarded.
async fn inputs_reach_vendor(kit: &Kit, request: &ServerRequest) -> Verdict {
    let key = &request.idempotency_key;
    let since = kit.proxy().map_or(0, ProxyControl::last_seq);
    let created = kit.create(uuid::Uuid::new_v4(), request).await;
    let missing = match &kit.vantage {
        Vantage::Simulator(sim) => match sim
            .servers_with_key(key)
            .await
            .map_err(with_causes)?
            .first()
        {
            Some(record) => missing_at_simulator(kit, record),
            None => Err(format!(
                "expected a server with key {key} at the vendor, create answered {}",
                shown(&created)
            )),
        },
        Vantage::Proxy(proxy) => match &created {
            Ok(_) => {
                let key_forms =
                    traffic::KeyForms::of(crate::kit::TEST_SSH_KEY).map_err(with_causes)?;
                Ok(traffic::missing_inputs(
                    &proxy.requests_after(since),
                    &kit.user_data(),
                    &key_forms,
                    (crate::kit::RUN_LABEL, &kit.run_id),
                ))
            }
            Err(_) => Err(format!(
                "expected a server for a request with an SSH key, user data and a label, \
                 create answered {}",
                shown(&created)
            )),
        },
        Vantage::Blind => Ok(Vec::new()),
    };
    if let Ok(server) = &created {
        let _ = kit.delete(&server.vendor_id).await;
    }
    let missing = missing?;
    if missing.is_empty() {
        Ok(match kit.vantage {
            Vantage::Proxy(_) => {
                "the requests to the vendor carried the key, the user data and the label".into()
            }
            _ => "the server got the key, the user data and the labels".into(),
        })
    } else {
        Err(format!(
            "expected every input to reach the vendor, missing: {}: a plugin may refuse a \
             field it cannot carry (invalid-request), never drop it",
            missing.join("; ")
        ))
    }
}

/// What of the inputs the simulator's record of a server lacks.
fn missing_at_simulator(kit: &Kit, record: &ServerRecord) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    let keys = &record.ssh_keys;
    if !keys.iter().any(|k| k == crate::kit::TEST_SSH_KEY) {
        missing.push(format!(
            "the SSH public key (the server got keys {keys:?}; a vendor with a key store \
             wants the key filed there first, by fingerprint, and its id passed; one \
             without gets it through cloud-init user data)"
        ));
    }
    let user_data = kit.user_data();
    if !record
        .user_data
        .as_deref()
        .is_some_and(|got| got.contains(&user_data))
    {
        missing.push(format!(
            "the user data (the server got {})",
            json!(record.user_data)
        ));
    }
    if record.labels.get(crate::kit::RUN_LABEL) != Some(&kit.run_id) {
        missing.push(format!(
            "the label {}={} (the server got labels {})",
            crate::kit::RUN_LABEL,
            kit.run_id,
            json!(record.labels)
        ));
    }
    Ok(missing)
}
