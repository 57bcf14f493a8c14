//! The checks, suite by suite, and the leftover sweep that ends a run.
//!
//! Checks run one after another; a check that needs an earlier one's result (the server
//! `lifecycle.create` made) is skipped, saying so, when that one failed. Every server a run
//! makes carries an idempotency key `conformance-<run id>-<n>`; the last check lists what
//! is left at the vendor with those keys (Terraform's CheckDestroy) and fails if anything
//! is.

use std::future::Future;
use std::time::{Duration, Instant};

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::{ProviderError, Server, ServerStatus};
use provisioner_host::runtime::{CallError, Plugin};
use serde_json::json;

use crate::kit::Kit;
use crate::options::{KitOptions, Suite, Target};
use crate::report::{CheckResult, Outcome, Report};

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
    let target = match &options.target {
        Target::Simulator { url, vendor } => format!("the simulator at {url} (as {vendor})"),
        Target::Live => "the live vendor".to_string(),
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
                            WitVersion::V0_2 => String::new(),
                            WitVersion::V0_1 => "; 0.1 has no list-servers: its vendor cannot \
                                                 be swept for orphans (rebuild against 0.2)"
                                .to_string(),
                        };
                        loaded = Some(kit);
                        Ok(format!("implements provisioner:provider {version}{note}"))
                    }
                    Err(error) => Err(format!("the host would refuse it: {error:#}")),
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
            checks: recorder.checks,
        };
    };
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
    if made_servers {
        leftovers(&kit, &mut recorder).await;
    }
    Report {
        plugin: plugin_name,
        vendor,
        wit_version: Some(kit.plugin.wit_version().to_string()),
        target,
        checks: recorder.checks,
    }
}

/// How a call ended, for details.
fn shown<T: std::fmt::Debug>(result: &Result<T, CallError>) -> String {
    match result {
        Ok(value) => format!("Ok({value:?})"),
        Err(CallError::Provider(error)) => provider_case(error),
        Err(error) => format!("host fault: {error}"),
    }
}

/// A status as its WIT case.
fn status(status: ServerStatus) -> &'static str {
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
}

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
}

/// Fault injection at the simulator. Whether it made a server.
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
    ];
    let Some(sim) = kit.sim.clone() else {
        for (check, description) in checks {
            r.skip(
                suite,
                check,
                description,
                "faults are injected only with --vendor-sim",
            );
        }
        return false;
    };
    if let Err(error) = sim.check().await {
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
            sim.clear().await.map_err(|e| format!("{e:#}"))?;
            sim.arm(rule).await.map_err(|e| format!("{e:#}"))?;
            let result = kit.plugin.find_server(&kit.new_key()).await;
            sim.clear().await.map_err(|e| format!("{e:#}"))?;
            Ok(result)
        };
    let (check, description) = checks[0];
    r.check(suite, check, description, async {
        let result = injected(json!({"kind": "rate_limit", "retry_after_secs": 2, "count": 100})).await?;
        match &result {
            Err(CallError::Provider(ProviderError::RateLimited(Some(ms)))) if (1_000..=3_000).contains(ms) => {
                Ok(format!("rate-limited, retry after {ms} ms (the vendor said 2 s)"))
            }
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
        sim.clear().await.map_err(|e| format!("{e:#}"))?;
        sim.arm(json!({"kind": "slow", "delay_ms": 10_000, "count": 100}))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let started = Instant::now();
        let result = short.find_server(&kit.new_key()).await;
        let took = started.elapsed();
        sim.clear().await.map_err(|e| format!("{e:#}"))?;
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
        r.skip(suite, check, description, NO_SHAPE);
        return false;
    };
    r.check(suite, check, description, async {
        let key = kit.new_key();
        let request = kit.request(&key);
        let order = uuid::Uuid::new_v4();
        sim.clear().await.map_err(|e| format!("{e:#}"))?;
        sim.arm(json!({
            "kind": "lost_response",
            "method": "POST",
            "path": sim.create_path(),
            "count": 1
        }))
        .await
        .map_err(|e| format!("{e:#}"))?;
        let first = kit.plugin.create_server(order, &request).await;
        let unfired = sim.armed().await.map_err(|e| format!("{e:#}"))?;
        sim.clear().await.map_err(|e| format!("{e:#}"))?;
        if unfired > 0 {
            return Err(format!(
                "the simulator's lost answer never fired: the create sent no POST to a path \
                 containing {} (first create: {})",
                sim.create_path(),
                shown(&first)
            ));
        }
        let second = kit.plugin.create_server(order, &request).await;
        let made = sim
            .servers_with_key(&key)
            .await
            .map_err(|e| format!("{e:#}"))?;
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
    delete_all_of_run(kit).await;
    true
}

/// Polls `get-server` until `done` says so or `within` passes; the last answer.
async fn poll_until(
    plugin: &Plugin,
    vendor_id: &str,
    within: Duration,
    done: impl Fn(&Result<Server, CallError>) -> bool,
) -> (Result<Server, CallError>, bool) {
    let deadline = Instant::now() + within;
    let mut delay = Duration::from_millis(250);
    loop {
        let result = plugin.get_server(None, vendor_id).await;
        if done(&result) {
            return (result, true);
        }
        if Instant::now() >= deadline {
            return (result, false);
        }
        tokio::time::sleep(delay).await;
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
            "list-servers reads every page (simulator: 3 servers a page)",
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
        let result = kit
            .plugin
            .create_server(uuid::Uuid::new_v4(), &kit.request(&key))
            .await;
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
            match kit.plugin.list_servers().await {
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
                Err(error) => Err(format!("list-servers failed: {}", shown::<()>(&Err(error)))),
            }
        })
        .await;
    }
    let (check, description) = steps[2];
    match (&kit.sim, kit.plugin.wit_version()) {
        (_, WitVersion::V0_1) => r.skip(
            suite,
            check,
            description,
            "the plugin implements WIT 0.1 (no list-servers)",
        ),
        (None, _) => r.skip(
            suite,
            check,
            description,
            "paging is forced only with --vendor-sim",
        ),
        (Some(sim), _) => {
            r.check(suite, check, description, async {
                const SEEDED: usize = 10;
                let mut keys = Vec::new();
                for _ in 0..SEEDED {
                    let key = kit.new_key();
                    sim.seed(&key).await.map_err(|e| format!("{e:#}"))?;
                    keys.push(key);
                }
                sim.cap_pages(Some(3)).await.map_err(|e| format!("{e:#}"))?;
                let listed = kit.plugin.list_servers().await;
                sim.cap_pages(None).await.map_err(|e| format!("{e:#}"))?;
                let servers = match listed {
                    Ok(Some(servers)) => servers,
                    Ok(None) => return Err("the plugin has no list-servers".into()),
                    Err(error) => {
                        return Err(format!("list-servers failed: {}", shown::<()>(&Err(error))));
                    }
                };
                // The seeded servers go again (the leftover sweep at the end judges).
                for seeded in servers.iter().filter(|s| keys.contains(&s.idempotency_key)) {
                    let _ = kit
                        .plugin
                        .delete_server(None, &seeded.server.vendor_id)
                        .await;
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
                        "expected all {SEEDED} servers with the run's keys over pages of 3, \
                         {} missing (e.g. {}): list-servers must follow the vendor's next page \
                         until the end",
                        missing.len(),
                        missing[0]
                    ))
                }
            })
            .await;
        }
    }
    let timeout = kit.options.boot_timeout;
    let mut running = None;
    let (check, description) = steps[3];
    r.check(suite, check, description, async {
        let (last, done) = poll_until(&kit.plugin, &server.vendor_id, timeout, |result| {
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
            Err(error) => Err(format!("get-server failed: {}", shown::<()>(&Err(error)))),
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
            let result = kit.plugin.delete_server(None, &server.vendor_id).await;
            result
                .as_ref()
                .map(|()| "deleted".to_string())
                .map_err(|_| format!("expected Ok, got {}", shown(&result)))
        })
        .await;
    let (check, description) = steps[6];
    if !deleted {
        r.skip(suite, check, description, "needs lifecycle.delete");
        return true;
    }
    r.check(suite, check, description, async {
        let (last, done) = poll_until(&kit.plugin, &server.vendor_id, timeout, is_gone).await;
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

fn is_gone(result: &Result<Server, CallError>) -> bool {
    matches!(result, Err(CallError::Provider(ProviderError::NotFound(_))))
        || matches!(result, Ok(s) if s.status == ServerStatus::Deleted)
}

/// Errors worth polling through.
fn is_passing(error: &CallError) -> bool {
    matches!(
        error,
        CallError::Provider(ProviderError::RateLimited(_) | ProviderError::Transient(_))
            | CallError::Timeout { .. }
    )
}

/// A request's SSH key, user data and labels reach the vendor (the simulator shows what
/// each server got). Whether it made a server.
async fn inputs(kit: &Kit, r: &mut Recorder<'_>) -> bool {
    let suite = Suite::Lifecycle;
    let (check, description) = (
        "inputs",
        "the request's SSH public key, user data and labels reach the vendor (simulator)",
    );
    if kit.shape.is_none() {
        r.skip(suite, check, description, NO_SHAPE);
        return false;
    }
    let Some(sim) = kit.sim.clone() else {
        r.skip(
            suite,
            check,
            description,
            "what a server got is seen only with --vendor-sim",
        );
        return false;
    };
    let key = kit.new_key();
    let request = kit.request_with_inputs(&key);
    r.check(suite, check, description, async {
        let created = kit
            .plugin
            .create_server(uuid::Uuid::new_v4(), &request)
            .await;
        let record = sim
            .server_with_key(&key)
            .await
            .map_err(|e| format!("{e:#}"))?;
        if let Ok(server) = &created {
            let _ = kit.plugin.delete_server(None, &server.vendor_id).await;
        }
        let Some(record) = record else {
            return Err(format!(
                "expected a server with key {key} at the vendor, create answered {}",
                shown(&created)
            ));
        };
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
        if missing.is_empty() {
            Ok("the server got the key, the user data and the labels".into())
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
        let first = kit.plugin.create_server(order, &request).await;
        let second = kit.plugin.create_server(order, &request).await;
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
        let at_vendor = match &kit.sim {
            Some(sim) => Some(
                sim.servers_with_key(&key)
                    .await
                    .map_err(|e| format!("{e:#}"))?,
            ),
            None => match kit.plugin.list_servers().await {
                Ok(Some(servers)) => {
                    Some(servers.iter().filter(|s| s.idempotency_key == key).count())
                }
                _ => None,
            },
        };
        match at_vendor {
            Some(1) => Ok(format!(
                "both answered server {}, the only one with the key",
                a.vendor_id
            )),
            Some(n) => Err(format!(
                "expected one server with key {key} at the vendor, found {n}"
            )),
            None => Ok(format!(
                "both answered server {} (the servers at the vendor were not counted: the plugin \
                 cannot list them)",
                a.vendor_id
            )),
        }
    })
    .await;
    let (check, description) = checks[1];
    match &made {
        None => r.skip(suite, check, description, "needs idempotency.same-key"),
        Some(server) => {
            r.check(suite, check, description, async {
                let result = kit.plugin.find_server(&key).await;
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
                let second = kit
                    .plugin
                    .create_server(uuid::Uuid::new_v4(), &second_request)
                    .await;
                let second = match second {
                    Ok(server) => server,
                    Err(_) => {
                        return Err(format!(
                            "expected a second server for another key with the name {:?}, got \
                             {}: all tenants share one vendor account, so a plugin whose vendor \
                             requires unique names must make the vendor-side name unique per \
                             key (provider_sdk::unique_name)",
                            request.name,
                            shown(&second)
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
                let again = kit
                    .plugin
                    .create_server(uuid::Uuid::new_v4(), &request)
                    .await;
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
    delete_all_of_run(kit).await;
    true
}

/// The run's servers still at the vendor (not being deleted), as the plugin sees them:
/// by `list-servers`, or by `find-server` per key for a 0.1 plugin.
async fn run_servers(kit: &Kit) -> Result<Vec<(String, Server)>, String> {
    if kit.plugin.wit_version() == WitVersion::V0_1 {
        let mut found = Vec::new();
        for key in kit.keys() {
            match kit.plugin.find_server(&key).await {
                Ok(Some(server)) => found.push((key, server)),
                Ok(None) => {}
                Err(error) => {
                    return Err(format!("find-server {key}: {}", shown::<()>(&Err(error))));
                }
            }
        }
        return Ok(found);
    }
    match kit.plugin.list_servers().await {
        Ok(Some(servers)) => Ok(servers
            .into_iter()
            .filter(|s| kit.is_ours(&s.idempotency_key))
            .map(|s| (s.idempotency_key, s.server))
            .collect()),
        Ok(None) => Err("the plugin has no list-servers".into()),
        Err(error) => Err(format!("list-servers failed: {}", shown::<()>(&Err(error)))),
    }
}

/// Deletes whatever of this run is still at the vendor (not a check: the leftover sweep
/// judges).
async fn delete_all_of_run(kit: &Kit) {
    if let Ok(servers) = run_servers(kit).await {
        for (_, server) in servers {
            if !matches!(
                server.status,
                ServerStatus::Deleting | ServerStatus::Deleted
            ) {
                let _ = kit.plugin.delete_server(None, &server.vendor_id).await;
            }
        }
    }
}

/// CheckDestroy: nothing the run made is left at the vendor.
async fn leftovers(kit: &Kit, r: &mut Recorder<'_>) {
    r.check(
        Suite::Lifecycle,
        "no-leftovers",
        "after the run, no server with the run's keys is left at the vendor",
        async {
            // Deletes take a moment at some vendors: look until the boot timeout passes.
            let deadline = Instant::now() + kit.options.boot_timeout;
            loop {
                let mut left: Vec<String> = run_servers(kit)
                    .await?
                    .into_iter()
                    .filter(|(_, s)| {
                        !matches!(s.status, ServerStatus::Deleting | ServerStatus::Deleted)
                    })
                    .map(|(key, s)| format!("{} (key {key})", s.vendor_id))
                    .collect();
                if let Some(sim) = &kit.sim {
                    for key in kit.keys() {
                        let n = sim
                            .servers_with_key(&key)
                            .await
                            .map_err(|e| format!("{e:#}"))?;
                        if n > 0 && !left.iter().any(|l| l.ends_with(&format!("(key {key})"))) {
                            left.push(format!(
                                "{n} server(s) with key {key} the plugin does not list"
                            ));
                        }
                    }
                }
                if left.is_empty() {
                    return Ok(format!("{} keys used, nothing left", kit.keys().len()));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "expected nothing left, found: {} (delete them by hand: the label {}={} \
                         marks them)",
                        left.join(", "),
                        crate::kit::RUN_LABEL,
                        kit.run_id
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    )
    .await;
}
