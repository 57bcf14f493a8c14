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

use std::future::Future;
use std::time::{Duration, Instant};

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::{ProviderError, Server, ServerStatus};
use provisioner_host::runtime::CallError;
use serde_json::json;

use crate::kit::{Kit, Vantage};
use crate::options::{KitOptions, Suite, Target};
use crate::patience::is_passing;
use crate::proxy::ProxyControl;
use crate::report::{CheckResult, Leftover, Outcome, Report};
use crate::sim::FaultApi;
use crate::traffic;

/// Sets one field of a request (the refusal checks).
type SetField = fn(&mut provisioner_host::bindings::types::ServerRequest, &str);

/// A check's verdict: `Ok(detail)` passes, `Err(detail)` fails.
type Verdict = Result<String, String>;

/// Records checks as they run and reports progress.
struct Recorder<'a> {
    checks: Vec<CheckResult>,
    progress: &'a mut dyn FnMut(&str),
}

impl Recorder<'_> {
    async fn check(
        &mut self,
        suite: Suite,
        check: &'static str,
        description: &'static str,
        run: impl Future<Output = Verdict>,
    ) -> bool {
        (self.progress)(&format!("{}.{check}: {description}", suite.name()));
        let started = Instant::now();
        let verdict = run.await;
        let passed = verdict.is_ok();
        let (outcome, detail) = match verdict {
            Ok(detail) => (Outcome::Pass, detail),
            Err(detail) => (Outcome::Fail, detail),
        };
        self.checks.push(CheckResult {
            suite: suite.name(),
            check,
            description,
            outcome,
            detail,
            duration: started.elapsed(),
        });
        passed
    }

    fn skip(&mut self, suite: Suite, check: &'static str, description: &'static str, why: &str) {
        self.checks.push(CheckResult {
            suite: suite.name(),
            check,
            description,
            outcome: Outcome::Skip,
            detail: why.to_string(),
            duration: Duration::ZERO,
        });
    }
}

/// Runs the suites of `options`; `progress` hears the name of each check as it starts.
pub async fn run(options: KitOptions, progress: &mut dyn FnMut(&str)) -> Report {
    let mut target = match &options.target {
        Target::Simulator { url, vendor } => format!("the simulator at {url} (as {vendor})"),
        Target::FaultProxy {
            profile,
            base_url_key,
        } => format!(
            "the fault proxy (profile {}) in front of the manifest's {base_url_key}",
            profile.display()
        ),
        Target::Live => "the live vendor".to_string(),
    };
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
    let mut loaded = None;
    recorder
        .check(
            Suite::Contract,
            "world",
            "the component implements provisioner:provider at a version the host loads",
            async {
                match Kit::load(options).await {
                    Ok(kit) => {
                        let version = kit.plugin.wit_version();
                        let note = match version {
                            WitVersion::V0_5 => String::new(),
                            WitVersion::V0_4 => "; 0.4 has no catalogue: the console's order \
                                                 form cannot offer its regions, sizes and \
                                                 images (rebuild against 0.5)"
                                .to_string(),
                            WitVersion::V0_3 => "; 0.3 has no no-capacity error: the plugin \
                                                 reports a capacity shortage as transient, \
                                                 which no order moves on from (rebuild \
                                                 against 0.4)"
                                .to_string(),
                            WitVersion::V0_2 => "; 0.2 has no cache: the plugin fetches what \
                                                 it would keep between calls every time \
                                                 (rebuild against 0.4)"
                                .to_string(),
                            WitVersion::V0_1 => "; 0.1 has no list-servers: its vendor cannot \
                                                 be swept for orphans (rebuild against 0.4)"
                                .to_string(),
                        };
                        loaded = Some(kit);
                        Ok(format!("implements provisioner:provider {version}{note}"))
                    }
                    Err(error) => Err(error.to_string()),
                }
            },
        )
        .await;
    let Some(kit) = loaded else {
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
            Suite::Contract => contract(&kit, &mut recorder).await,
            Suite::Sandbox => sandbox(&kit, &mut recorder).await,
            Suite::Faults => made_servers |= faults(&kit, &mut recorder).await,
            Suite::Lifecycle => {
                made_servers |= lifecycle(&kit, &mut recorder).await;
                made_servers |= inputs(&kit, &mut recorder).await;
            }
            Suite::Idempotency => made_servers |= idempotency(&kit, &mut recorder).await,
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

/// How a call ended, for details.
pub(crate) fn shown<T: std::fmt::Debug>(result: &Result<T, CallError>) -> String {
    match result {
        Ok(value) => format!("Ok({value:?})"),
        Err(error) => shown_error(error),
    }
}

/// A failed call, for details.
pub(crate) fn shown_error(error: &CallError) -> String {
    match error {
        CallError::Provider(error) => provider_case(error),
        error => format!("host fault: {error}"),
    }
}

/// A status as its WIT case.
pub(crate) fn status(status: ServerStatus) -> &'static str {
    match status {
        ServerStatus::Provisioning => "provisioning",
        ServerStatus::Running => "running",
        ServerStatus::Stopped => "stopped",
        ServerStatus::Deleting => "deleting",
        ServerStatus::Deleted => "deleted",
        ServerStatus::Error => "error",
    }
}

/// A provider error as its WIT case.
fn provider_case(error: &ProviderError) -> String {
    match error {
        ProviderError::InvalidRequest(m) => format!("invalid-request({m})"),
        ProviderError::Unauthorized(m) => format!("unauthorized({m})"),
        ProviderError::NotFound(m) => format!("not-found({m})"),
        ProviderError::QuotaExceeded(m) => format!("quota-exceeded({m})"),
        ProviderError::RateLimited(ms) => format!("rate-limited({ms:?})"),
        ProviderError::Transient(m) => format!("transient({m})"),
        ProviderError::Internal(m) => format!("internal({m})"),
        ProviderError::NoCapacity(m) => format!("no-capacity({m})"),
    }
}

const NO_SHAPE: &str = "no region, size and image to make servers with: give --region, --size \
                        and --image, or list `regions`, `sizes` and `images` in the manifest's \
                        [config]";

async fn contract(kit: &Kit, r: &mut Recorder<'_>) {
    let suite = Suite::Contract;
    let info = kit.plugin.info_cached().clone();
    r.check(
        suite,
        "info",
        "info names the manifest's vendor, a display name and a version",
        async {
            if info.display_name.trim().is_empty() || info.version.trim().is_empty() {
                return Err(format!(
                    "expected a display name and a version, got display name {:?}, version {:?}",
                    info.display_name, info.version
                ));
            }
            Ok(format!(
                "vendor {}, \"{}\", version {}",
                info.vendor, info.display_name, info.version
            ))
        },
    )
    .await;
    let before = kit.plugin.outbound_requests();
    let Some(shape) = kit.shape.clone() else {
        for (check, description) in [
            ("validate-accepts", "validate accepts a valid request"),
            (
                "validate-refusals",
                "validate refuses an empty name and unknown region, size, image",
            ),
            ("validate-offline", "validate makes no network request"),
            ("catalogue", CATALOGUE_CHECK),
        ] {
            r.skip(suite, check, description, NO_SHAPE);
        }
        return;
    };
    let key = kit.new_key();
    r.check(
        suite,
        "validate-accepts",
        "validate accepts a valid request",
        async {
            let result = kit.plugin.validate(&kit.request(&key)).await;
            match result {
                Ok(()) => Ok(format!(
                    "accepted {} / {} / {}",
                    shape.region, shape.size, shape.image
                )),
                Err(_) => Err(format!(
                    "expected Ok for region {}, size {}, image {}; got {}",
                    shape.region,
                    shape.size,
                    shape.image,
                    shown(&result)
                )),
            }
        },
    )
    .await;
    r.check(
        suite,
        "validate-refusals",
        "validate refuses an empty name and unknown region, size, image with invalid-request",
        async {
            let mut refused = Vec::new();
            let mut wrong = Vec::new();
            let cases: [(&str, &str, SetField); 4] = [
                ("name", "", |r, v| r.name = v.into()),
                ("region", "conformance-unknown-region", |r, v| {
                    r.region = v.into()
                }),
                ("size", "conformance-unknown-size", |r, v| r.size = v.into()),
                ("image", "conformance-unknown-image", |r, v| {
                    r.image = v.into()
                }),
            ];
            for (field, value, set) in cases {
                let mut request = kit.request(&key);
                set(&mut request, value);
                let result = kit.plugin.validate(&request).await;
                match &result {
                    Err(CallError::Provider(ProviderError::InvalidRequest(_))) => {
                        refused.push(field)
                    }
                    _ => wrong.push(format!(
                        "{field} {value:?}: expected invalid-request, got {}{}",
                        shown(&result),
                        if field == "name" {
                            ""
                        } else {
                            " (a plugin that cannot know its vendor's catalogue offline can \
                             read it from [config], e.g. `regions`, `sizes`, `images`)"
                        }
                    )),
                }
            }
            if wrong.is_empty() {
                Ok(format!("refused {}", refused.join(", ")))
            } else {
                Err(wrong.join("; "))
            }
        },
    )
    .await;
    r.check(
        suite,
        "validate-offline",
        "validate makes no network request",
        async {
            let made = kit.plugin.outbound_requests() - before;
            if made == 0 {
                Ok("no outbound request in 5 validate calls".into())
            } else {
                Err(format!(
                    "expected no outbound request, got {made} in 5 validate calls: validate \
                     must check offline (the API calls it before accepting an order)"
                ))
            }
        },
    )
    .await;
    r.check(
        suite,
        "catalogue",
        CATALOGUE_CHECK,
        crate::catalogue::agrees_with_validate(kit),
    )
    .await;
}

const CATALOGUE_CHECK: &str = "catalogue (WIT 0.5) answers without network I/O, every \
                               value it lists passes validate in an otherwise valid request, \
                               and a value a listed field does not list is refused with \
                               invalid-request";

async fn sandbox(kit: &Kit, r: &mut Recorder<'_>) {
    r.check(
        Suite::Sandbox,
        "narrowed-grant",
        "with no outbound host granted, a call fails as capability_denied, not a crash",
        async {
            let narrowed = kit
                .variant(|manifest| manifest.allowed_hosts.clear())
                .await
                .map_err(|error| format!("loading with no grant failed: {error:#}"))?;
            let result = narrowed.find_server(&kit.new_key()).await;
            match &result {
                Err(CallError::CapabilityDenied { origin, .. }) => {
                    Ok(format!("refused {origin}; the plugin reported the failure"))
                }
                Ok(_) if narrowed.outbound_requests() == 0 => Err(
                    "find-server answered without any request to the vendor: it cannot \
                     have looked anything up"
                        .into(),
                ),
                _ => Err(format!(
                    "expected the refused request to surface as an error (capability_denied), \
                     got {}",
                    shown(&result)
                )),
            }
        },
    )
    .await;
    r.check(
        Suite::Sandbox,
        "cache-isolated",
        "loaded twice on one host, as two plugins, each load has its own cache: what one \
         stored, the other cannot read",
        crate::isolation::cache_isolated(kit),
    )
    .await;
    r.check(
        Suite::Sandbox,
        "cache-bounded",
        "with its cache bounded to nothing (every set fails with full), the plugin still \
         works: the cache is a hint, never a requirement",
        async {
            if !kit.plugin.wit_version().has_cache() {
                return Ok(format!(
                    "the plugin implements {}, which has no cache",
                    kit.plugin.wit_version()
                ));
            }
            let bounded = kit
                .variant(|manifest| {
                    manifest.limits.cache_entries = 0;
                    manifest.limits.cache_bytes = 0;
                })
                .await
                .map_err(|error| format!("loading with cache_entries = 0 failed: {error:#}"))?;
            let key = kit.new_key();
            let result =
                crate::patience::until(kit.call_deadline(), || bounded.find_server(&key)).await;
            match &result {
                Ok(None) => {
                    Ok("find-server answered none for a new key with no room in its cache".into())
                }
                _ => Err(format!(
                    "expected find-server of a new key to answer none with cache_entries = 0 \
                     (a full cache means doing the work again, not failing), got {}",
                    shown(&result)
                )),
            }
        },
    )
    .await;
}

/// Fault injection at the simulator or the fault proxy. Whether it made a server.
async fn faults(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    let suite = Suite::Faults;
    let checks = [
        (
            "rate-limited",
            "429 with rate-limit headers -> rate-limited with the delay",
        ),
        ("server-error-500", "500 -> transient"),
        ("server-error-503", "503 -> transient"),
        ("unauthorized", "401 -> unauthorized"),
        (
            "timeout",
            "a response slower than the call budget -> the host's timeout, not a hang",
        ),
        (
            "lost-response",
            "create made the server but its answer was lost -> a retry adopts it, no duplicate",
        ),
        (
            "no-capacity",
            "a create refused for capacity -> no-capacity (WIT 0.4), and once capacity is back the retry makes one server",
        ),
    ];
    let Some(fault_api) = kit.faults().cloned() else {
        for (check, description) in checks {
            r.skip(
                suite,
                check,
                description,
                "faults are injected only with --vendor-sim or --fault-proxy",
            );
        }
        return false;
    };
    if let Some(simulator) = kit.sim()
        && let Err(error) = simulator.check().await
    {
        for (check, description) in checks {
            r.skip(suite, check, description, &format!("{error:#}"));
        }
        return false;
    }
    let expect = |expected: &'static str, matches: fn(&ProviderError) -> bool| {
        move |result: Result<Option<Server>, CallError>| match &result {
            Err(CallError::Provider(error)) if matches(error) => {
                Ok(format!("answered {}", shown(&result)))
            }
            _ => Err(format!("expected {expected}, got {}", shown(&result))),
        }
    };
    // Each fault stays armed for the whole call (a plugin that resends must still see it).
    let injected =
        async |rule: serde_json::Value| -> Result<Result<Option<Server>, CallError>, String> {
            fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
            fault_api.arm(rule).await.map_err(|e| format!("{e:#}"))?;
            let result = kit.plugin.find_server(&kit.new_key()).await;
            fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
            Ok(result)
        };
    let (check, description) = checks[0];
    r.check(suite, check, description, async {
        let result = injected(json!({"kind": "rate_limit", "retry_after_secs": 2, "count": 100})).await?;
        match &result {
            Err(CallError::Provider(ProviderError::RateLimited(Some(ms)))) if (1_000..=3_000).contains(ms) => {
                Ok(format!("rate-limited, retry after {ms} ms (the vendor said 2 s)"))
            }
            // A vendor whose rate limit says nothing of when (EC2's RequestLimitExceeded):
            // rate-limited without a delay is the honest answer; the host backs off.
            Err(CallError::Provider(ProviderError::RateLimited(None)))
                if kit.proxy().is_some_and(|proxy| !proxy.rate_limit_says_when) =>
            {
                Ok("rate-limited without a delay (the vendor's rate-limit answer gives none; the host backs off)".into())
            }
            _ if kit.proxy().is_some_and(|proxy| !proxy.rate_limit_says_when) => Err(format!(
                "expected rate-limited (the vendor's rate-limit answer gives no delay), got {}",
                shown(&result)
            )),
            _ => Err(format!(
                "expected rate-limited with about 2000 ms (from the vendor's rate-limit headers), got {}",
                shown(&result)
            )),
        }
    })
    .await;
    for (index, status) in [(1, 500), (2, 503)] {
        let (check, description) = checks[index];
        r.check(suite, check, description, async {
            let result =
                injected(json!({"kind": "server_error", "status": status, "count": 100})).await?;
            expect("transient", |e| matches!(e, ProviderError::Transient(_)))(result)
        })
        .await;
    }
    let (check, description) = checks[3];
    r.check(suite, check, description, async {
        let result = injected(json!({"kind": "unauthorized", "count": 100})).await?;
        expect("unauthorized", |e| {
            matches!(e, ProviderError::Unauthorized(_))
        })(result)
    })
    .await;
    let (check, description) = checks[4];
    r.check(suite, check, description, async {
        const BUDGET_MS: u64 = 2_000;
        let short = kit
            .variant(|manifest| manifest.limits.call_timeout_ms = BUDGET_MS)
            .await
            .map_err(|error| format!("loading with a {BUDGET_MS} ms budget failed: {error:#}"))?;
        fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
        fault_api
            .arm(json!({"kind": "slow", "delay_ms": 10_000, "count": 100}))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let started = Instant::now();
        let result = short.find_server(&kit.new_key()).await;
        let took = started.elapsed();
        fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
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
    })
    .await;
    let (check, description) = checks[5];
    let Some(_) = kit.shape else {
        for (check, description) in &checks[5..] {
            r.skip(suite, check, description, NO_SHAPE);
        }
        return false;
    };
    r.check(suite, check, description, async {
        let (method, path) = create_request(kit).await?;
        let key = kit.new_key();
        let request = kit.request(&key);
        let order = uuid::Uuid::new_v4();
        fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
        fault_api
            .arm(json!({
                "kind": "lost_response",
                "method": method,
                "path": path,
                "count": 1
            }))
            .await
            .map_err(|e| format!("{e:#}"))?;
        // The create whose answer is lost; a passing error before the fault fired (a
        // rate-limited look-up) is waited out as the host would, one after it is the answer.
        let deadline = kit.call_deadline();
        let first = loop {
            let attempt = kit.plugin.create_server(order, &request).await;
            let waiting = match &attempt {
                Err(error) if is_passing(error) && tokio::time::Instant::now() < deadline => {
                    fault_api.armed().await.map_err(|e| format!("{e:#}"))? > 0
                }
                _ => false,
            };
            if !waiting {
                break attempt;
            }
            let asked = attempt
                .as_ref()
                .err()
                .and_then(provisioner_host::provision::retry_after)
                .unwrap_or(Duration::from_millis(500));
            tokio::time::sleep(asked).await;
        };
        if let Ok(server) = &first {
            kit.saw(&server.vendor_id, &key);
        }
        let unfired = fault_api.armed().await.map_err(|e| format!("{e:#}"))?;
        fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
        if unfired > 0 {
            return Err(format!(
                "the lost answer never fired: the create sent no {method} to a path \
                 containing {path} (first create: {})",
                shown(&first)
            ));
        }
        // The host's retry, waiting out any passing error as the host does.
        let second = kit.create(order, &request).await;
        let made = servers_at_vendor(kit, &key)
            .await?
            .map_or(0, |(count, _)| count);
        let first_retryable = matches!(
            &first,
            Ok(_) | Err(CallError::Provider(ProviderError::Transient(_)))
        );
        match (&first, &second) {
            _ if made != 1 => Err(format!(
                "expected one server for the key after the retry, the vendor has {made} \
                 (first create: {}, retry: {}): create must look its key up before making a server",
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
    })
    .await;
    let (check, description) = checks[6];
    match no_capacity_unarmable(kit) {
        Some(why) => r.skip(suite, check, description, &why),
        None => {
            r.check(suite, check, description, no_capacity(kit, &fault_api))
                .await;
        }
    }
    delete_all_of_run(kit).await;
    true
}

/// The method and a part of the path of the vendor's create request, for a fault aimed at
/// it: the simulator's, or learnt through the proxy.
async fn create_request(kit: &Kit) -> Result<(String, String), String> {
    match (kit.sim(), kit.proxy()) {
        (Some(simulator), _) => Ok((
            simulator.create_method().to_string(),
            simulator.create_path().to_string(),
        )),
        (None, Some(proxy)) => learn_create_request(kit, proxy).await,
        (None, None) => Err("no fault API to aim a fault at the create with".into()),
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
        && matches!(simulator.vendor(), "digitalocean" | "openstack")
    {
        return Some(format!(
            "the vendor ({}) has no capacity refusal of its own to read: DigitalOcean's is a \
             422 like any invalid size, Nova's a server in ERROR",
            simulator.vendor()
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
async fn no_capacity(kit: &Kit, fault_api: &FaultApi) -> Result<String, String> {
    let (method, path) = create_request(kit).await?;
    let key = kit.new_key();
    let request = kit.request(&key);
    let order = uuid::Uuid::new_v4();
    fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
    // Armed for many requests: a plugin that sends the create again must still meet it.
    fault_api
        .arm(json!({"kind": "no_capacity", "method": method, "path": path, "count": 100}))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let armed = fault_api.listing().await.map_err(|e| format!("{e:#}"))?;
    let unfired = async || -> Result<bool, String> {
        Ok(fault_api.listing().await.map_err(|e| format!("{e:#}"))? == armed)
    };
    // A passing error before the refusal fired (a rate-limited look-up) is waited out as the
    // host would; the first answer after it is the plugin's reading of the refusal.
    let deadline = kit.call_deadline();
    let refused = loop {
        let attempt = kit.plugin.create_server(order, &request).await;
        let waiting = match &attempt {
            Err(CallError::Provider(ProviderError::NoCapacity(_))) => false,
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
            .and_then(provisioner_host::provision::retry_after)
            .unwrap_or(Duration::from_millis(500));
        tokio::time::sleep(asked).await;
    };
    if let Ok(server) = &refused {
        kit.saw(&server.vendor_id, &key);
    }
    let never_fired = unfired().await?;
    fault_api.clear().await.map_err(|e| format!("{e:#}"))?;
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
    // Capacity is back: the host's retry, waiting out any passing error as the host does.
    let retried = kit.create(order, &request).await;
    let made = servers_at_vendor(kit, &key)
        .await?
        .map_or(0, |(count, _)| count);
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

/// How many servers carrying `key` the vendor has, by its own side, and how that was
/// counted: the simulator's live servers, or the successful create requests the proxy
/// forwarded; `None` for a blind run.
async fn servers_at_vendor(kit: &Kit, key: &str) -> Result<Option<(usize, &'static str)>, String> {
    Ok(match &kit.vantage {
        Vantage::Simulator(sim) => Some((
            sim.servers_with_key(key)
                .await
                .map_err(|e| format!("{e:#}"))?,
            "by the simulator's count",
        )),
        Vantage::Proxy(proxy) => Some((
            traffic::servers_made(&proxy.requests(), key),
            "by the create requests that reached the vendor through the proxy",
        )),
        Vantage::Blind => None,
    })
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
            .and_then(provisioner_host::provision::retry_after)
            .unwrap_or_default();
        tokio::time::sleep(delay.max(asked).min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// create -> running -> address -> delete -> gone. Whether it made a server.
async fn lifecycle(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    let suite = Suite::Lifecycle;
    let steps = [
        ("create", "create-server answers a server with a vendor id"),
        ("listed", "list-servers lists it with its idempotency key"),
        (
            "every-page",
            "list-servers reads every page (simulator: 3 servers a page; fault proxy: 1 a \
             page; or --paging-servers more servers than a page)",
        ),
        (
            "running",
            "get-server reports it running within the boot timeout",
        ),
        ("address", "the running server has an IPv4 or IPv6 address"),
        ("delete", "delete-server succeeds"),
        ("gone", "get-server then says not-found or deleted"),
    ];
    if kit.shape.is_none() {
        for (check, description) in steps {
            r.skip(suite, check, description, NO_SHAPE);
        }
        return false;
    }
    let key = kit.new_key();
    let mut created = None;
    let (check, description) = steps[0];
    r.check(suite, check, description, async {
        let result = kit.create(uuid::Uuid::new_v4(), &kit.request(&key)).await;
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
    let Some(server) = created else {
        for (check, description) in &steps[1..] {
            r.skip(suite, check, description, "needs lifecycle.create");
        }
        return true;
    };
    let (check, description) = steps[1];
    if kit.plugin.wit_version() == WitVersion::V0_1 {
        r.skip(
            suite,
            check,
            description,
            "the plugin implements WIT 0.1 (no list-servers)",
        );
    } else {
        r.check(suite, check, description, async {
            match kit.list().await {
                Ok(Some(servers)) => match servers.iter().find(|s| s.idempotency_key == key) {
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
                },
                Ok(None) => Err("the plugin has no list-servers".into()),
                Err(error) => Err(format!("list-servers failed: {}", shown_error(&error))),
            }
        })
        .await;
    }
    let (check, description) = steps[2];
    every_page(kit, r, check, description, &key).await;
    let timeout = kit.options.boot_timeout;
    let mut running = None;
    let (check, description) = steps[3];
    r.check(suite, check, description, async {
        let (last, done) = poll_until(kit, &server.vendor_id, timeout, |result| {
            matches!(result, Ok(s) if matches!(s.status, ServerStatus::Running | ServerStatus::Error))
                || matches!(result, Err(e) if !is_passing(e))
        })
        .await;
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
    let (check, description) = steps[4];
    match &running {
        None => r.skip(suite, check, description, "needs lifecycle.running"),
        Some(s) => {
            r.check(suite, check, description, async {
                match (&s.ipv4, &s.ipv6) {
                    (None, None) => Err("expected an IPv4 or IPv6 address, got none".into()),
                    (v4, v6) => Ok(format!("ipv4 {v4:?}, ipv6 {v6:?}")),
                }
            })
            .await;
        }
    }
    let (check, description) = steps[5];
    let deleted = r
        .check(suite, check, description, async {
            match kit.delete(&server.vendor_id).await {
                Ok(()) => Ok("deleted".to_string()),
                // As the host takes it (a resent delete finds the server gone); `gone`
                // checks it is.
                Err(CallError::Provider(ProviderError::NotFound(detail))) => Ok(format!(
                    "not-found (taken as deleted, as the host does): {detail}"
                )),
                Err(error) => Err(format!("expected Ok, got {}", shown_error(&error))),
            }
        })
        .await;
    let (check, description) = steps[6];
    if !deleted {
        r.skip(suite, check, description, "needs lifecycle.delete");
        return true;
    }
    r.check(suite, check, description, async {
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
    })
    .await;
    true
}

/// `lifecycle.every-page`: `list-servers` lists every server of the run when they span
/// several pages. The simulator makes ten servers beside the run's and serves pages of
/// three; the fault proxy makes the plugin's list requests ask for pages of one, with one
/// more server made by the plugin (or `--paging-servers` of them); elsewhere only
/// `--paging-servers` servers (more than the vendor's page) can show it.
async fn every_page(
    kit: &Kit,
    r: &mut Recorder<'_>,
    check: &'static str,
    description: &'static str,
    lifecycle_key: &str,
) {
    let suite = Suite::Lifecycle;
    if kit.plugin.wit_version() == WitVersion::V0_1 {
        r.skip(
            suite,
            check,
            description,
            "the plugin implements WIT 0.1 (no list-servers)",
        );
        return;
    }
    let small_pages = kit.proxy().is_some_and(|proxy| proxy.has_paging);
    let extra = match (&kit.vantage, kit.options.paging_servers) {
        (Vantage::Simulator(_), _) => 0,
        (_, Some(n)) if n > 0 => n,
        (Vantage::Proxy(_), _) if small_pages => 1,
        (Vantage::Proxy(_), _) => {
            r.skip(
                suite,
                check,
                description,
                "the fault profile has no [paging] page_size_param to make pages small, and \
                 --paging-servers was not given (allow it to make more servers than the \
                 vendor's page)",
            );
            return;
        }
        (Vantage::Blind, _) => {
            r.skip(
                suite,
                check,
                description,
                "pages are made small only with --vendor-sim or --fault-proxy (a profile \
                 with [paging]); or allow --paging-servers N (more than the vendor's page) \
                 to make that many servers",
            );
            return;
        }
    };
    r.check(suite, check, description, async {
        if let Some(sim) = kit.sim() {
            return every_page_at_simulator(kit, sim).await;
        }
        // The run's servers the listing must show: the lifecycle one and `extra` more.
        let mut keys = vec![lifecycle_key.to_string()];
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
        let proxy = kit.proxy().filter(|_| small_pages);
        let since = proxy.map_or(0, ProxyControl::last_seq);
        if let Some(proxy) = proxy {
            proxy.faults().clear().await.map_err(|e| format!("{e:#}"))?;
            proxy
                .faults()
                .arm(json!({"kind": "small_pages", "page_size": 1}))
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        let listed = kit.list().await;
        if let Some(proxy) = proxy {
            proxy.faults().clear().await.map_err(|e| format!("{e:#}"))?;
        }
        let servers = match listed {
            Ok(Some(servers)) => servers,
            Ok(None) => return Err("the plugin has no list-servers".into()),
            Err(error) => {
                return Err(format!("list-servers failed: {}", shown_error(&error)));
            }
        };
        for made in servers
            .iter()
            .filter(|s| keys[1..].contains(&s.idempotency_key))
        {
            let _ = kit.delete(&made.server.vendor_id).await;
        }
        let pages = match proxy {
            Some(proxy) => {
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
                        "the small pages never applied: no list request matched the fault \
                         profile's [paging] (page_size_param, list_paths); the listing sent {}",
                        sent.join(", ")
                    ));
                }
                format!("pages of 1 ({paged} list requests)")
            }
            None => "the vendor's own pages".to_string(),
        };
        let missing: Vec<&String> = keys
            .iter()
            .filter(|key| !servers.iter().any(|s| &s.idempotency_key == *key))
            .collect();
        if missing.is_empty() {
            Ok(format!(
                "all {} servers of the run listed over {pages} ({} in all)",
                keys.len(),
                servers.len()
            ))
        } else {
            Err(format!(
                "expected all {} servers with the run's keys over {pages}, {} missing (e.g. \
                 {}): list-servers must follow the vendor's next page until the end",
                keys.len(),
                missing.len(),
                missing[0]
            ))
        }
    })
    .await;
}

/// `lifecycle.every-page` at the simulator: ten servers made beside the run's, pages of
/// three.
async fn every_page_at_simulator(kit: &Kit, sim: &crate::sim::SimControl) -> Verdict {
    const SEEDED: usize = 10;
    let mut keys = Vec::new();
    for _ in 0..SEEDED {
        let key = kit.new_key();
        sim.seed(&key).await.map_err(|e| format!("{e:#}"))?;
        keys.push(key);
    }
    sim.cap_pages(Some(3)).await.map_err(|e| format!("{e:#}"))?;
    let listed = kit.list().await;
    sim.cap_pages(None).await.map_err(|e| format!("{e:#}"))?;
    let servers = match listed {
        Ok(Some(servers)) => servers,
        Ok(None) => return Err("the plugin has no list-servers".into()),
        Err(error) => {
            return Err(format!("list-servers failed: {}", shown_error(&error)));
        }
    };
    // The seeded servers go again (the clean-up at the end judges).
    for seeded in servers.iter().filter(|s| keys.contains(&s.idempotency_key)) {
        let _ = kit.delete(&seeded.server.vendor_id).await;
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !servers.iter().any(|s| &s.idempotency_key == *key))
        .collect();
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

fn is_gone(result: &Result<Server, CallError>) -> bool {
    matches!(result, Err(CallError::Provider(ProviderError::NotFound(_))))
        || matches!(result, Ok(s) if s.status == ServerStatus::Deleted)
}

/// A request's SSH key, user data and labels reach the vendor (the simulator shows what
/// each server got; the proxy, what each request carried). Whether it made a server.
async fn inputs(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    let suite = Suite::Lifecycle;
    let (check, description) = (
        "inputs",
        "the request's SSH public key, user data and labels reach the vendor (simulator or \
         fault proxy)",
    );
    if kit.shape.is_none() {
        r.skip(suite, check, description, NO_SHAPE);
        return false;
    }
    if matches!(kit.vantage, Vantage::Blind) {
        r.skip(
            suite,
            check,
            description,
            "what reached the vendor is seen only with --vendor-sim or --fault-proxy",
        );
        return false;
    }
    let key = kit.new_key();
    let request = kit.request_with_inputs(&key);
    r.check(suite, check, description, async {
        let since = kit.proxy().map_or(0, ProxyControl::last_seq);
        let created = kit.create(uuid::Uuid::new_v4(), &request).await;
        let missing = match &kit.vantage {
            Vantage::Simulator(sim) => {
                let record = sim
                    .server_with_key(&key)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                match record {
                    Some(record) => missing_at_simulator(kit, &record),
                    None => Err(format!(
                        "expected a server with key {key} at the vendor, create answered {}",
                        shown(&created)
                    )),
                }
            }
            Vantage::Proxy(proxy) => match &created {
                Ok(_) => {
                    let key_forms = traffic::KeyForms::of(crate::kit::TEST_SSH_KEY)
                        .map_err(|e| format!("{e:#}"))?;
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
                "expected every input to reach the vendor, missing: {}: a plugin may refuse \
                 a field it cannot carry (invalid-request), never drop it",
                missing.join("; ")
            ))
        }
    })
    .await;
    true
}

/// What of the inputs the simulator's record of a server lacks.
fn missing_at_simulator(kit: &Kit, record: &serde_json::Value) -> Result<Vec<String>, String> {
    let mut missing = Vec::new();
    let keys = record["ssh_keys"].as_array().cloned().unwrap_or_default();
    if !keys.iter().any(|k| k == crate::kit::TEST_SSH_KEY) {
        missing.push(format!(
            "the SSH public key (the server got keys {keys:?}; a vendor with a key store \
             wants the key filed there first, by fingerprint, and its id passed; one \
             without gets it through cloud-init user data)"
        ));
    }
    let user_data = kit.user_data();
    if !record["user_data"]
        .as_str()
        .is_some_and(|got| got.contains(&user_data))
    {
        missing.push(format!(
            "the user data (the server got {})",
            record["user_data"]
        ));
    }
    if record["labels"][crate::kit::RUN_LABEL] != kit.run_id.as_str() {
        missing.push(format!(
            "the label {}={} (the server got labels {})",
            crate::kit::RUN_LABEL,
            kit.run_id,
            record["labels"]
        ));
    }
    Ok(missing)
}

/// Same key twice -> one server; find-server adopts it. Whether it made a server.
async fn idempotency(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    let suite = Suite::Idempotency;
    let checks = [
        (
            "same-key",
            "create twice with the same key -> the same server, one at the vendor",
        ),
        ("find-adopts", "find-server with the key finds that server"),
        (
            "same-name",
            "two keys, one name -> two servers (one tenant's name never blocks another's); \
             the first key still finds the first",
        ),
        (
            "siblings",
            "an order for several servers: three keys that differ only in their last \
             characters, created at once as <name>-1..3 -> three servers, each found by its own \
             key",
        ),
    ];
    if kit.shape.is_none() {
        for (check, description) in checks {
            r.skip(suite, check, description, NO_SHAPE);
        }
        return false;
    }
    let key = kit.new_key();
    let request = kit.request(&key);
    let mut made = None;
    let (check, description) = checks[0];
    r.check(suite, check, description, async {
        let order = uuid::Uuid::new_v4();
        let first = kit.create(order, &request).await;
        let second = kit.create(order, &request).await;
        let (a, b) = match (&first, &second) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                return Err(format!(
                    "expected two answers with one server, got {} then {}",
                    shown(&first),
                    shown(&second)
                ));
            }
        };
        made = Some(a.clone());
        if a.vendor_id != b.vendor_id {
            return Err(format!(
                "the second create made server {} beside {}: create must look its key up first",
                b.vendor_id, a.vendor_id
            ));
        }
        match servers_at_vendor(kit, &key).await? {
            Some((1, how)) => Ok(format!(
                "both answered server {}, the only one with the key ({how})",
                a.vendor_id
            )),
            Some((n, how)) => Err(format!(
                "expected one server with key {key} at the vendor, found {n} ({how}): create \
                 must look its key up first"
            )),
            None => match kit.list().await {
                Ok(Some(servers)) => {
                    match servers.iter().filter(|s| s.idempotency_key == key).count() {
                        1 => Ok(format!(
                            "both answered server {}, the only one the plugin lists with the \
                             key (counted by the plugin itself: the vendor's own count needs \
                             --vendor-sim or --fault-proxy)",
                            a.vendor_id
                        )),
                        n => Err(format!(
                            "expected one server with key {key}, the plugin lists {n}"
                        )),
                    }
                }
                _ => Ok(format!(
                    "both answered server {} (the servers at the vendor were not counted: the \
                     plugin cannot list them, and the vendor's side needs --vendor-sim or \
                     --fault-proxy)",
                    a.vendor_id
                )),
            },
        }
    })
    .await;
    let (check, description) = checks[1];
    match &made {
        None => r.skip(suite, check, description, "needs idempotency.same-key"),
        Some(server) => {
            r.check(suite, check, description, async {
                let result = kit.find(&key).await;
                match &result {
                    Ok(Some(found)) if found.vendor_id == server.vendor_id => {
                        Ok(format!("found server {}", found.vendor_id))
                    }
                    _ => Err(format!(
                        "expected server {} for key {key}, got {}",
                        server.vendor_id,
                        shown(&result)
                    )),
                }
            })
            .await;
        }
    }
    let (check, description) = checks[2];
    match &made {
        None => r.skip(suite, check, description, "needs idempotency.same-key"),
        Some(first) => {
            r.check(suite, check, description, async {
                // Another key with the name the first server was asked for.
                let other = kit.new_key();
                let mut second_request = kit.request(&other);
                second_request.name = request.name.clone();
                let second = kit.create(uuid::Uuid::new_v4(), &second_request).await;
                let second = match second {
                    Ok(server) => server,
                    Err(error) => {
                        return Err(format!(
                            "expected a second server for another key with the name {:?}, got \
                             {}: all tenants share one vendor account, so a plugin whose vendor \
                             requires unique names must make the vendor-side name unique per \
                             key (provider_sdk::unique_name)",
                            request.name,
                            shown_error(&error)
                        ));
                    }
                };
                if second.vendor_id == first.vendor_id {
                    return Err(format!(
                        "another key adopted server {} of the first key: look up by the key, \
                         not by the name",
                        first.vendor_id
                    ));
                }
                let again = kit.create(uuid::Uuid::new_v4(), &request).await;
                match &again {
                    Ok(server) if server.vendor_id == first.vendor_id => Ok(format!(
                        "servers {} ({}) and {} ({}); the first key found {} again",
                        first.vendor_id,
                        first.name,
                        second.vendor_id,
                        second.name,
                        server.vendor_id
                    )),
                    _ => Err(format!(
                        "expected the first key to find server {} again, got {}",
                        first.vendor_id,
                        shown(&again)
                    )),
                }
            })
            .await;
        }
    }
    let (check, description) = checks[3];
    r.check(suite, check, description, siblings(kit)).await;
    delete_all_of_run(kit).await;
    true
}

/// `idempotency.siblings`: the servers of an order for several (`count`) get keys that
/// share all but their last characters and names `<name>-<n>`, and are created at once.
async fn siblings(kit: &Kit) -> Verdict {
    const SIBLINGS: usize = 3;
    let keys: Vec<String> = (0..SIBLINGS).map(|_| kit.new_key()).collect();
    let base = kit.request(&keys[0]).name;
    let requests: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            let mut request = kit.request(key);
            request.name = format!("{base}-{}", index + 1);
            request
        })
        .collect();
    let created = futures_util::future::join_all(
        requests
            .iter()
            .map(|request| kit.create(uuid::Uuid::new_v4(), request)),
    )
    .await;
    let mut servers = Vec::with_capacity(SIBLINGS);
    for (request, result) in requests.iter().zip(&created) {
        match result {
            Ok(server) => servers.push(server),
            Err(error) => {
                return Err(format!(
                    "expected a server for key {} ({}), got {}",
                    request.idempotency_key,
                    request.name,
                    shown_error(error)
                ));
            }
        }
    }
    let mut ids: Vec<&str> = servers.iter().map(|s| s.vendor_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != SIBLINGS {
        let answered: Vec<String> = requests
            .iter()
            .zip(&servers)
            .map(|(request, server)| format!("{} -> {}", request.idempotency_key, server.vendor_id))
            .collect();
        return Err(format!(
            "expected {SIBLINGS} servers, one per key, got {}: keys that differ only at their \
             end were taken for one (compare the whole key, never a prefix)",
            answered.join(", ")
        ));
    }
    for (request, server) in requests.iter().zip(&servers) {
        let key = &request.idempotency_key;
        let found = kit.find(key).await;
        match &found {
            Ok(Some(found)) if found.vendor_id == server.vendor_id => {}
            // Created at once, each sibling may have got a server of its own and still be
            // looked up as another: the same flaw, seen from the other side.
            Ok(Some(other)) if servers.iter().any(|s| s.vendor_id == other.vendor_id) => {
                return Err(format!(
                    "expected find-server {key} to find server {}, got {}, another key's: keys \
                     that differ only at their end were taken for one (compare the whole key, \
                     never a prefix)",
                    server.vendor_id, other.vendor_id
                ));
            }
            _ => {
                return Err(format!(
                    "expected find-server {key} to find server {}, got {}",
                    server.vendor_id,
                    shown(&found)
                ));
            }
        }
    }
    let made: Vec<String> = servers
        .iter()
        .map(|server| format!("{} ({})", server.vendor_id, server.name))
        .collect();
    Ok(format!(
        "servers {}, each found by its own key",
        made.join(", ")
    ))
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

/// CheckDestroy: every server of the run deleted and seen gone; the leftovers otherwise.
async fn clean_up(kit: &Kit, r: &mut Recorder<'_>) -> Vec<Leftover> {
    let mut leftovers = Vec::new();
    let judged_by = match kit.vantage {
        Vantage::Simulator(ref sim) if sim.vendor() == "azure" => {
            "the plugin's get-server and the simulator's VMs, public IPs, NICs and disks"
        }
        Vantage::Simulator(_) => "the plugin's get-server and the simulator's servers",
        Vantage::Proxy(_) => {
            "the plugin's get-server and the create requests that reached the vendor"
        }
        Vantage::Blind => "the plugin's get-server and list-servers",
    };
    r.check(
        Suite::Lifecycle,
        "no-leftovers",
        "after the run, every server it made is deleted and seen gone (deletes retried until \
         the boot timeout); none is left at the vendor",
        async {
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
        },
    )
    .await;
    leftovers
}
