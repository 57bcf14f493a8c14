//! The `faults` suite: faults armed at the simulator or the fault proxy, and what the plugin
//! makes of them. A look-up meets a rate limit, a 500, a 503, a 401, an answer slower than
//! its call budget; a create whose answer is lost is retried and must adopt the server it
//! made; a create refused for capacity must say `no-capacity`, and its retry make one server
//! once capacity is back. A fault check's own call is made once, since its error is what is
//! judged.

use std::time::{Duration, Instant};

use provisioner_host::bindings::types::{ProviderError, Server, ServerRequest};
use provisioner_host::runtime::CallError;
use vendor_sim::control_client::FaultsClient;
use vendor_sim::proxy::{ProxyFaultKind, ProxyFaultRule};

use super::{
    Check, NO_SHAPE, Recorder, Verdict, arm_alone, delete_all_of_run, servers_at_vendor,
    with_causes, with_fault,
};
use crate::kit::Kit;
use crate::options::Suite;
use crate::patience::is_passing;
use crate::proxy::ProxyControl;
use crate::shown::{shown, shown_error};
use crate::traffic;

const RATE_LIMITED: Check = Check {
    suite: Suite::Faults,
    name: "rate-limited",
    description: "429 with rate-limit headers -> rate-limited with the delay",
};
const SERVER_ERROR_500: Check = Check {
    suite: Suite::Faults,
    name: "server-error-500",
    description: "500 -> transient",
};
const SERVER_ERROR_503: Check = Check {
    suite: Suite::Faults,
    name: "server-error-503",
    description: "503 -> transient",
};
const UNAUTHORIZED: Check = Check {
    suite: Suite::Faults,
    name: "unauthorized",
    description: "401 -> unauthorized",
};
const TIMEOUT: Check = Check {
    suite: Suite::Faults,
    name: "timeout",
    description: "a response slower than the call budget -> the host's timeout, not a hang",
};
const LOST_RESPONSE: Check = Check {
    suite: Suite::Faults,
    name: "lost-response",
    description: "create made the server but its answer was lost -> a retry adopts it, no \
                  duplicate",
};
const NO_CAPACITY: Check = Check {
    suite: Suite::Faults,
    name: "no-capacity",
    description: "a create refused for capacity -> no-capacity (WIT 0.4), and once capacity \
                  is back the retry makes one server",
};

/// The suite's checks, in the order they run.
const CHECKS: [Check; 7] = [
    RATE_LIMITED,
    SERVER_ERROR_500,
    SERVER_ERROR_503,
    UNAUTHORIZED,
    TIMEOUT,
    LOST_RESPONSE,
    NO_CAPACITY,
];

/// The suite's checks that make servers (they need the run's shape).
const MAKING_SERVERS: [Check; 2] = [LOST_RESPONSE, NO_CAPACITY];

/// Fault injection at the simulator or the fault proxy. Whether it made a server.
pub(super) async fn faults(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    let Some(fault_api) = fault_api_in_reach(kit, r).await else {
        return false;
    };
    r.check(RATE_LIMITED, rate_limited(kit, &fault_api)).await;
    for (check, status) in [(SERVER_ERROR_500, 500), (SERVER_ERROR_503, 503)] {
        r.check(check, server_error(kit, &fault_api, status)).await;
    }
    r.check(UNAUTHORIZED, unauthorized(kit, &fault_api)).await;
    r.check(TIMEOUT, timeout(kit, &fault_api)).await;
    if kit.shape.is_none() {
        r.skip_all(&MAKING_SERVERS, NO_SHAPE);
        return false;
    }
    r.check(LOST_RESPONSE, lost_response(kit, &fault_api)).await;
    match no_capacity_unarmable(kit) {
        Some(why) => r.skip(NO_CAPACITY, &why),
        None => {
            r.check(NO_CAPACITY, no_capacity(kit, &fault_api)).await;
        }
    }
    delete_all_of_run(kit).await;
    true
}

/// Where this run arms faults, once it answers; `None`, with every check skipped saying
/// why, in a run that has none (live, no proxy) or whose simulator does not answer.
async fn fault_api_in_reach(kit: &Kit, r: &mut Recorder<'_>) -> Option<FaultsClient> {
    let Some(fault_api) = kit.faults().cloned() else {
        r.skip_all(
            &CHECKS,
            "faults are injected only with --vendor-sim or --fault-proxy",
        );
        return None;
    };
    if let Some(simulator) = kit.sim()
        && let Err(error) = simulator.check().await
    {
        r.skip_all(&CHECKS, &format!("{error:#}"));
        return None;
    }
    Some(fault_api)
}

/// A `find-server` of a new key with `rule` armed for the whole call (a plugin that
/// resends must still meet the fault).
async fn find_under_fault(
    kit: &Kit,
    fault_api: &FaultsClient,
    rule: ProxyFaultRule,
) -> Result<Result<Option<Server>, CallError>, String> {
    let key = kit.new_key();
    with_fault(fault_api, rule, kit.plugin.find_server(&key)).await
}

/// A look-up under `rule` must answer the provider error `matches` accepts (`expected`
/// names it).
async fn answers_error(
    kit: &Kit,
    fault_api: &FaultsClient,
    rule: ProxyFaultRule,
    expected: &str,
    matches: fn(&ProviderError) -> bool,
) -> Verdict {
    let result = find_under_fault(kit, fault_api, rule).await?;
    match &result {
        Err(CallError::Provider(error)) if matches(error) => {
            Ok(format!("answered {}", shown(&result)))
        }
        _ => Err(format!("expected {expected}, got {}", shown(&result))),
    }
}

/// `faults.rate-limited`: a 429 saying "after 2 s" is rate-limited with about that delay
/// (or without one, from a vendor whose rate limit never says when).
async fn rate_limited(kit: &Kit, fault_api: &FaultsClient) -> Verdict {
    let result = find_under_fault(
        kit,
        fault_api,
        ProxyFaultRule::new(
            ProxyFaultKind::RateLimit {
                retry_after_secs: 2,
            },
            100,
        ),
    )
    .await?;
    let says_no_delay = kit.proxy().is_some_and(|proxy| !proxy.rate_limit_says_when);
    match &result {
        Err(CallError::Provider(ProviderError::RateLimited(Some(ms))))
            if (1_000..=3_000).contains(ms) =>
        {
            Ok(format!(
                "rate-limited, retry after {ms} ms (the vendor said 2 s)"
            ))
        }
        // A vendor whose rate limit says nothing of when (EC2's RequestLimitExceeded):
        // rate-limited without a delay is the honest answer; the host backs off.
        Err(CallError::Provider(ProviderError::RateLimited(None))) if says_no_delay => Ok(
            "rate-limited without a delay (the vendor's rate-limit answer gives none; the host \
             backs off)"
                .into(),
        ),
        _ if says_no_delay => Err(format!(
            "expected rate-limited (the vendor's rate-limit answer gives no delay), got {}",
            shown(&result)
        )),
        _ => Err(format!(
            "expected rate-limited with about 2000 ms (from the vendor's rate-limit headers), \
             got {}",
            shown(&result)
        )),
    }
}

/// `faults.server-error-500` and `-503`: a 5xx is transient.
async fn server_error(kit: &Kit, fault_api: &FaultsClient, status: u16) -> Verdict {
    answers_error(
        kit,
        fault_api,
        ProxyFaultRule::new(ProxyFaultKind::ServerError { status }, 100),
        "transient",
        |e| matches!(e, ProviderError::Transient(_)),
    )
    .await
}

/// `faults.unauthorized`: a 401 is unauthorized.
async fn unauthorized(kit: &Kit, fault_api: &FaultsClient) -> Verdict {
    answers_error(
        kit,
        fault_api,
        ProxyFaultRule::new(ProxyFaultKind::Unauthorized, 100),
        "unauthorized",
        |e| matches!(e, ProviderError::Unauthorized(_)),
    )
    .await
}

/// `faults.timeout`: loaded with a 2 s call budget, a look-up whose answer takes 10 s ends
/// as the host's timeout soon after the budget.
async fn timeout(kit: &Kit, fault_api: &FaultsClient) -> Verdict {
    const BUDGET_MS: u64 = 2_000;
    let short = kit
        .variant(|manifest| manifest.limits.call_timeout_ms = BUDGET_MS)
        .await
        .map_err(|error| format!("loading with a {BUDGET_MS} ms budget failed: {error:#}"))?;
    let key = kit.new_key();
    let (result, took) = with_fault(
        fault_api,
        ProxyFaultRule::new(ProxyFaultKind::Slow { delay_ms: 10_000 }, 100),
        async {
            let started = Instant::now();
            let result = short.find_server(&key).await;
            (result, started.elapsed())
        },
    )
    .await?;
    match &result {
        Err(CallError::Timeout { .. }) if took < Duration::from_millis(BUDGET_MS + 3_000) => {
            Ok(format!(
                "ended after {} ms as plugin_timeout (budget {BUDGET_MS} ms)",
                took.as_millis()
            ))
        }
        _ => Err(format!(
            "expected the host's timeout within about {BUDGET_MS} ms, got {} after {} ms",
            shown(&result),
            took.as_millis()
        )),
    }
}

/// `faults.lost-response`: the create's answer is lost after the vendor made the server;
/// the host's retry must adopt that server, leaving one at the vendor.
async fn lost_response(kit: &Kit, fault_api: &FaultsClient) -> Verdict {
    let AimedCreate {
        method,
        path,
        request,
        order,
    } = aim_at_create(kit, fault_api, ProxyFaultKind::LostResponse, 1).await?;
    // Armed for one request: the fault has fired once none is armed.
    let unfired = async || -> Result<bool, String> {
        Ok(!fault_api.armed().await.map_err(with_causes)?.is_empty())
    };
    // The create whose answer is lost; one after the fault fired is the answer.
    let first = create_until_fired(kit, order, &request, &unfired, |_| false).await?;
    let never_fired = unfired().await?;
    fault_api.clear().await.map_err(with_causes)?;
    if never_fired {
        return Err(format!(
            "the lost answer never fired: the create sent no {method} to a path containing \
             {path} (first create: {})",
            shown(&first)
        ));
    }
    let (second, made) = retry_create(kit, order, &request).await?;
    let first_retryable = matches!(
        &first,
        Ok(_) | Err(CallError::Provider(ProviderError::Transient(_)))
    );
    match (&first, &second) {
        _ if made != 1 => Err(format!(
            "expected one server for the key after the retry, the vendor has {made} (first \
             create: {}, retry: {}): create must look its key up before making a server",
            shown(&first),
            shown(&second)
        )),
        _ if !first_retryable => Err(format!(
            "expected the lost answer to be transient (so the host retries), got {}",
            shown(&first)
        )),
        (_, Err(_)) => Err(format!(
            "expected the retry to adopt the server, got {}",
            shown(&second)
        )),
        (Ok(a), Ok(b)) if a.vendor_id != b.vendor_id => Err(format!(
            "the retry answered server {} but the first create answered {}",
            b.vendor_id, a.vendor_id
        )),
        (_, Ok(server)) => Ok(format!(
            "first create: {}; the retry adopted server {}; one server at the vendor",
            match &first {
                Ok(_) => "recovered by itself".to_string(),
                Err(_) => shown(&first),
            },
            server.vendor_id
        )),
    }
}

/// Why `faults.no-capacity` cannot be checked here, if it cannot.
fn no_capacity_unarmable(kit: &Kit) -> Option<String> {
    let version = kit.plugin.wit_version();
    if !version.has_no_capacity() {
        return Some(format!(
            "the plugin is built against WIT {version}, which has no no-capacity error (0.4 has)"
        ));
    }
    if let Some(simulator) = kit.sim()
        && matches!(simulator.vendor.as_str(), "digitalocean" | "openstack")
    {
        return Some(format!(
            "the vendor ({}) has no capacity refusal of its own to read: DigitalOcean's is a \
             422 like any invalid size, Nova's a server in ERROR",
            simulator.vendor
        ));
    }
    if kit.proxy().is_some_and(|proxy| !proxy.has_no_capacity) {
        return Some(
            "the fault profile has no [no_capacity] answer (the vendor's capacity refusal): \
             add one to check it"
                .into(),
        );
    }
    None
}

/// `faults.no-capacity`: the create meets the vendor's capacity refusal and must say
/// no-capacity; with capacity back, the host's retry makes exactly one server.
async fn no_capacity(kit: &Kit, fault_api: &FaultsClient) -> Verdict {
    // Armed for many requests: a plugin that sends the create again must still meet it.
    let AimedCreate {
        method,
        path,
        request,
        order,
    } = aim_at_create(kit, fault_api, ProxyFaultKind::NoCapacity, 100).await?;
    // The fault has fired once the listing of what is armed has changed.
    let armed = fault_api.armed().await.map_err(with_causes)?;
    let unfired = async || -> Result<bool, String> {
        Ok(fault_api.armed().await.map_err(with_causes)? == armed)
    };
    // The first answer after the refusal fired is the plugin's reading of it.
    let refused = create_until_fired(kit, order, &request, &unfired, |error| {
        matches!(error, CallError::Provider(ProviderError::NoCapacity(_)))
    })
    .await?;
    let never_fired = unfired().await?;
    fault_api.clear().await.map_err(with_causes)?;
    if never_fired {
        return Err(format!(
            "the refusal never fired: the create sent no {method} to a path containing {path} \
             (it answered {})",
            shown(&refused)
        ));
    }
    let Err(CallError::Provider(ProviderError::NoCapacity(message))) = &refused else {
        return Err(format!(
            "expected no-capacity (the vendor cannot place the server there now: the host \
             retries it and a placement moves on), got {}",
            shown(&refused)
        ));
    };
    // Capacity is back.
    let (retried, made) = retry_create(kit, order, &request).await?;
    match &retried {
        Ok(server) if made == 1 => Ok(format!(
            "no-capacity ({message}); the retry made server {}, one at the vendor",
            server.vendor_id
        )),
        _ => Err(format!(
            "no-capacity was right, but with capacity back the retry answered {} and the \
             vendor has {made} servers for the key (expected one)",
            shown(&retried)
        )),
    }
}

/// A create a fault is armed for, not yet made.
struct AimedCreate {
    /// The method of the vendor's create request.
    method: String,
    /// A part of the path of the vendor's create request.
    path: String,
    /// The request, for a new key of the run's.
    request: ServerRequest,
    /// The order it is made for.
    order: uuid::Uuid,
}

/// Arms a fault of `kind` alone for the next `count` of the vendor's create requests
/// ([`create_request`]); the create it is aimed at, for a new key.
async fn aim_at_create(
    kit: &Kit,
    fault_api: &FaultsClient,
    kind: ProxyFaultKind,
    count: u32,
) -> Result<AimedCreate, String> {
    let (method, path) = create_request(kit).await?;
    let key = kit.new_key();
    let request = kit.request(&key);
    let order = uuid::Uuid::new_v4();
    arm_alone(
        fault_api,
        ProxyFaultRule::new(kind, count).only(&method, &path),
    )
    .await?;
    Ok(AimedCreate {
        method,
        path,
        request,
        order,
    })
}

/// The create a fault is armed for ([`aim_at_create`]): a passing error before the fault
/// fired (a rate-limited look-up) is waited out as the host would, while `unfired` says it
/// has not fired and the call's deadline is ahead, unless `is_reading` takes it for the
/// plugin's reading of the fault; any other answer is the create's. A server it answers is
/// remembered.
async fn create_until_fired(
    kit: &Kit,
    order: uuid::Uuid,
    request: &ServerRequest,
    unfired: impl AsyncFn() -> Result<bool, String>,
    is_reading: fn(&CallError) -> bool,
) -> Result<Result<Server, CallError>, String> {
    let deadline = kit.call_deadline();
    let answer = loop {
        let attempt = kit.plugin.create_server(order, request).await;
        let waiting = match &attempt {
            Err(error) if is_reading(error) => false,
            Err(error) if is_passing(error) && tokio::time::Instant::now() < deadline => {
                unfired().await?
            }
            _ => false,
        };
        if !waiting {
            break attempt;
        }
        let asked = attempt
            .as_ref()
            .err()
            .and_then(provisioner_host::wit_convert::retry_after)
            .unwrap_or(Duration::from_millis(500));
        tokio::time::sleep(asked).await;
    };
    if let Ok(server) = &answer {
        kit.saw(&server.vendor_id, &request.idempotency_key);
    }
    Ok(answer)
}

/// The host's retry of a create, waiting out any passing error as the host does, and how
/// many servers the vendor then has for its key (0 in a blind run).
async fn retry_create(
    kit: &Kit,
    order: uuid::Uuid,
    request: &ServerRequest,
) -> Result<(Result<Server, CallError>, usize), String> {
    let retried = kit.create(order, request).await;
    let made = servers_at_vendor(kit, &request.idempotency_key)
        .await?
        .map_or(0, |(count, _)| count);
    Ok((retried, made))
}

/// The method and a part of the path of the vendor's create request, for a fault aimed at
/// it: the simulator's, or learnt through the proxy.
async fn create_request(kit: &Kit) -> Result<(String, String), String> {
    match (kit.sim(), kit.proxy()) {
        (Some(simulator), _) => {
            let (method, path) = simulator.create_request();
            Ok((method.to_string(), path.to_string()))
        }
        (None, Some(proxy)) => learn_create_request(kit, proxy).await,
        (None, None) => Err("no fault API to aim a fault at the create with".into()),
    }
}

/// Which request makes a server at this vendor (method and path at the proxy), from the
/// proxy's record: an earlier create of the run's, or a probe create's (then deleted).
async fn learn_create_request(kit: &Kit, proxy: &ProxyControl) -> Result<(String, String), String> {
    if let Some(found) = traffic::create_request(&proxy.requests(), &kit.keys()) {
        return Ok(found);
    }
    let key = kit.new_key();
    let probe = kit.create(uuid::Uuid::new_v4(), &kit.request(&key)).await;
    let found = traffic::create_request(&proxy.requests(), std::slice::from_ref(&key));
    if let Ok(server) = &probe {
        let _ = kit.delete(&server.vendor_id).await;
    }
    match (probe, found) {
        (_, Some(found)) => Ok(found),
        (Ok(server), None) => Err(format!(
            "a probe create answered server {}, but no request carrying its key {key} was \
             answered 2xx by the vendor through the proxy: the create must carry the key to \
             the vendor (a label, tag or metadata) and go to the base URL the proxy stands for",
            server.vendor_id
        )),
        (Err(error), None) => Err(format!(
            "a probe create (to learn which request makes a server) failed: {}",
            shown_error(&error)
        )),
    }
}
