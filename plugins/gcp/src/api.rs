//! Compute Engine v1's JSON as the plugin reads it (instances, zone operations, the
//! aggregated list), the state mapping, and the error mapping of Google's error shapes:
//! all pure, so they are unit-tested on the host.

use std::collections::BTreeMap;

use provider_sdk::adopt;
use provider_sdk::http::{
    ApiResponse, error_detail, precondition_or_status_error, redact_urls, retry_after_ms,
};
use provider_sdk::status::{self, Rules};
use provider_sdk::{IDEMPOTENCY_LABEL, LabelledServer, ProviderError, Server, ServerStatus};
use serde::Deserialize;

use crate::ids::VendorId;

/// GCE's instance statuses. `TERMINATED` is GCE's word for a stopped instance (it can be
/// started again); a deleting instance shows `STOPPING` until it is gone, which the plugin
/// reports as `deleting` when it asked for the delete itself (see `lib.rs`).
pub const STATUSES: Rules = &[
    (&["PROVISIONING"], ServerStatus::Provisioning),
    (&["STAGING"], ServerStatus::Provisioning),
    (&["REPAIRING"], ServerStatus::Provisioning),
    (&["RUNNING"], ServerStatus::Running),
    (&["STOPPING"], ServerStatus::Stopped),
    (&["SUSPENDING"], ServerStatus::Stopped),
    (&["SUSPENDED"], ServerStatus::Stopped),
    (&["TERMINATED"], ServerStatus::Stopped),
];

/// An instance, the fields the plugin reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Compute's numeric id (a decimal string).
    #[serde(default)]
    pub id: String,
    /// The name, unique in its zone.
    pub name: String,
    /// `PROVISIONING`, `STAGING`, `RUNNING`...
    #[serde(default)]
    pub status: String,
    /// The zone's URL (`.../zones/europe-west4-a`).
    #[serde(default)]
    pub zone: String,
    /// RFC 3339.
    #[serde(default)]
    pub creation_timestamp: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Network interfaces and their access configs.
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// Metadata items.
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

/// A network interface.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// External IPv4 (one-to-one NAT) configs.
    #[serde(default)]
    pub access_configs: Vec<AccessConfig>,
    /// External IPv6 configs.
    #[serde(default)]
    pub ipv6_access_configs: Vec<Ipv6AccessConfig>,
}

/// An external IPv4 address.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessConfig {
    /// The address, once assigned.
    #[serde(default, rename = "natIP")]
    pub nat_ip: Option<String>,
}

/// An external IPv6 range.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipv6AccessConfig {
    /// The address.
    #[serde(default)]
    pub external_ipv6: Option<String>,
}

/// Instance metadata.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    /// `key`/`value` items.
    #[serde(default)]
    pub items: Vec<MetadataItem>,
}

/// One metadata item.
#[derive(Debug, Clone, Deserialize)]
pub struct MetadataItem {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

impl Instance {
    /// The zone's name, the last part of its URL.
    pub fn zone_name(&self) -> &str {
        self.zone.rsplit('/').next().unwrap_or_default()
    }

    /// The vendor id, `<zone>/<name>`.
    pub fn vendor_id(&self) -> String {
        VendorId {
            zone: self.zone_name().to_string(),
            name: self.name.clone(),
        }
        .to_string()
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .as_ref()?
            .items
            .iter()
            .find(|item| item.key == key)
            .map(|item| item.value.as_str())
    }

    /// The idempotency key it carries: the metadata item (the key as it was), else the label.
    pub fn idempotency_key(&self) -> Option<String> {
        self.metadata(IDEMPOTENCY_LABEL)
            .map(str::to_string)
            .or_else(|| self.labels.get(IDEMPOTENCY_LABEL).cloned())
    }

    /// The server in the host's terms.
    pub fn to_server(&self) -> Server {
        let ipv4 = self
            .network_interfaces
            .iter()
            .flat_map(|nic| &nic.access_configs)
            .find_map(|config| config.nat_ip.clone().filter(|ip| !ip.is_empty()));
        let ipv6 = self
            .network_interfaces
            .iter()
            .flat_map(|nic| &nic.ipv6_access_configs)
            .find_map(|config| config.external_ipv6.clone().filter(|ip| !ip.is_empty()));
        Server {
            vendor_id: self.vendor_id(),
            name: self.name.clone(),
            status: status::map(&[&self.status], STATUSES),
            ipv4,
            ipv6,
        }
    }
}

/// A zone operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Its name (`operation-...`).
    pub name: String,
    /// `PENDING`, `RUNNING`, `DONE`.
    #[serde(default)]
    pub status: String,
    /// The error it ended with.
    #[serde(default)]
    pub error: Option<OperationErrors>,
    /// The HTTP status the error stands for.
    #[serde(default)]
    pub http_error_status_code: Option<u16>,
}

/// An operation's errors.
#[derive(Debug, Clone, Deserialize)]
pub struct OperationErrors {
    /// Each with a code (`ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED`...).
    #[serde(default)]
    pub errors: Vec<OperationError>,
}

/// One operation error.
#[derive(Debug, Clone, Deserialize)]
pub struct OperationError {
    /// The code.
    #[serde(default)]
    pub code: String,
    /// The message.
    #[serde(default)]
    pub message: String,
}

impl Operation {
    /// Done.
    pub fn is_done(&self) -> bool {
        self.status == "DONE"
    }

    /// The error it ended with, as the host's error, if any; its message names the error
    /// that decided (a capacity error among others), else the first.
    pub fn failure(&self) -> Option<ProviderError> {
        let errors = &self.error.as_ref()?.errors;
        let shown = errors
            .iter()
            .find(|e| is_capacity(&e.code))
            .or(errors.first())?;
        let detail = redact_urls(&format!(
            "the operation {} failed: {}: {}",
            self.name, shown.code, shown.message
        ));
        let any = |wanted: &dyn Fn(&str) -> bool| errors.iter().any(|e| wanted(&e.code));
        Some(if any(&is_capacity) {
            ProviderError::NoCapacity(detail)
        } else if any(&|code| code == "RESOURCE_NOT_READY") {
            ProviderError::Transient(detail)
        } else if any(&|code| code.contains("QUOTA_EXCEEDED")) {
            ProviderError::QuotaExceeded(detail)
        } else {
            match self.http_error_status_code {
                Some(401 | 403) => ProviderError::Unauthorized(detail),
                Some(404) => ProviderError::InvalidRequest(detail),
                Some(429) => ProviderError::RateLimited(None),
                Some(400..=499) => ProviderError::InvalidRequest(detail),
                Some(500..=599) | None => ProviderError::Transient(detail),
                Some(_) => ProviderError::Internal(detail),
            }
        })
    }
}

/// `code` says the zone has no capacity for the request now: Compute Engine's resource
/// availability errors, `ZONE_RESOURCE_POOL_EXHAUSTED` and
/// `ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS` (and `RESOURCE_POOL_EXHAUSTED`, as managed
/// instance groups say it). Not `RESOURCE_EXHAUSTED`: that is Google's status of a rate
/// limit or a quota.
pub fn is_capacity(code: &str) -> bool {
    code.contains("RESOURCE_POOL_EXHAUSTED")
}

/// One page of `instances.aggregatedList`: `items` keyed by scope (`zones/<zone>`), each
/// with `instances` or a `NO_RESULTS_ON_PAGE` warning.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedList {
    /// The scopes of this page.
    #[serde(default)]
    pub items: BTreeMap<String, ScopedInstances>,
    /// The next page's token, absent (or empty) on the last page.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The instances of one scope.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScopedInstances {
    /// Absent when the scope has none on this page.
    #[serde(default)]
    pub instances: Vec<Instance>,
}

impl AggregatedList {
    /// The instances of every scope, and the next page's token.
    pub fn into_page(self) -> (Vec<Instance>, Option<String>) {
        let instances = self
            .items
            .into_values()
            .flat_map(|scope| scope.instances)
            .collect();
        (
            instances,
            self.next_page_token.filter(|token| !token.is_empty()),
        )
    }
}

/// The instances among `instances` carrying the idempotency label, as listed servers.
pub fn labelled(instances: Vec<Instance>) -> Vec<LabelledServer> {
    adopt::labelled(
        instances,
        |instance| instance.idempotency_key(),
        |instance| instance.to_server(),
    )
}

/// Google's error body, `{"error": {"code", "message", "status", "errors": [{"reason"}]}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

#[derive(Debug, Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// Reads a Google error body into `reason: message`.
pub fn error_reason(body: &str) -> Option<String> {
    let body: ErrorBody = serde_json::from_str(body).ok()?;
    let error = body.error;
    let reason = error
        .errors
        .first()
        .map(|item| item.reason.clone())
        .filter(|reason| !reason.is_empty())
        .unwrap_or(error.status);
    Some(format!("{reason}: {}", error.message))
}

/// The [`ProviderError`] for Compute's non-2xx answer to `method path`: Google's reasons
/// first (`rateLimitExceeded` / `userRateLimitExceeded` -> rate-limited, also under 403;
/// `quotaExceeded` / `QUOTA_EXCEEDED` -> quota-exceeded; `ZONE_RESOURCE_POOL_EXHAUSTED`,
/// `..._WITH_DETAILS` -> no-capacity), then the status: 429 -> rate-limited (with
/// `Retry-After`), 401/403 -> unauthorized, 404 -> not-found, 400/409/412 ->
/// invalid-request, 5xx -> transient. The message is [`error_detail`]'s (`path` may be a
/// URL: only its path is named).
pub fn compute_error(method: &str, path: &str, response: &ApiResponse) -> ProviderError {
    let parsed: Option<GoogleError> = serde_json::from_str::<ErrorBody>(&response.body)
        .ok()
        .map(|body| body.error);
    let reasons: Vec<&str> = parsed
        .iter()
        .flat_map(|error| {
            error
                .errors
                .iter()
                .map(|item| item.reason.as_str())
                .chain([error.status.as_str()])
        })
        .collect();
    let has = |wanted: &[&str]| reasons.iter().any(|reason| wanted.contains(reason));
    let detail = error_detail(method, path, response, error_reason);
    let text_has = |needle: &str| response.body.contains(needle);
    if response.status == 429 || has(&["rateLimitExceeded", "userRateLimitExceeded"]) {
        ProviderError::RateLimited(retry_after_ms(&response.headers))
    } else if has(&["quotaExceeded", "QUOTA_EXCEEDED"]) || text_has("QUOTA_EXCEEDED") {
        ProviderError::QuotaExceeded(detail)
    } else if text_has("RESOURCE_POOL_EXHAUSTED") {
        ProviderError::NoCapacity(detail)
    } else {
        precondition_or_status_error(response, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn google(code: u16, reason: &str, status: &str, message: &str) -> serde_json::Value {
        json!({"error": {"code": code, "message": message, "status": status,
            "errors": [{"message": message, "domain": "global", "reason": reason}]}})
    }

    /// Google's reasons decide before the status; then the status maps as the issue says.
    #[test]
    fn errors_map_by_reason_then_status() {
        let cases = [
            (
                google(429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "slow"),
                429,
                "rate-limited",
            ),
            (
                google(403, "rateLimitExceeded", "PERMISSION_DENIED", "slow"),
                403,
                "rate-limited",
            ),
            (
                google(
                    403,
                    "quotaExceeded",
                    "PERMISSION_DENIED",
                    "Quota 'CPUS' exceeded.",
                ),
                403,
                "quota-exceeded",
            ),
            (
                json!({"error": {"code": 403, "message": "x", "status": "QUOTA_EXCEEDED"}}),
                403,
                "quota-exceeded",
            ),
            (
                google(
                    503,
                    "backendError",
                    "UNAVAILABLE",
                    "ZONE_RESOURCE_POOL_EXHAUSTED",
                ),
                503,
                "no-capacity",
            ),
            (
                google(503, "backendError", "UNAVAILABLE", "try later"),
                503,
                "transient",
            ),
            (
                google(401, "authError", "UNAUTHENTICATED", "bad token"),
                401,
                "unauthorized",
            ),
            (
                google(403, "forbidden", "PERMISSION_DENIED", "no"),
                403,
                "unauthorized",
            ),
            (
                google(404, "notFound", "NOT_FOUND", "gone"),
                404,
                "not-found",
            ),
            (
                google(400, "invalid", "INVALID_ARGUMENT", "bad"),
                400,
                "invalid-request",
            ),
            (
                google(409, "alreadyExists", "ALREADY_EXISTS", "taken"),
                409,
                "invalid-request",
            ),
            (
                google(500, "backendError", "INTERNAL", "oops"),
                500,
                "transient",
            ),
            (json!("<html>bad gateway</html>"), 502, "transient"),
        ];
        for (body, status, expected) in cases {
            let error = compute_error("GET", "/x", &ApiResponse::new(status, body.clone()));
            assert_eq!(error.case_name(), expected, "{status} {body} -> {error:?}");
        }
        let rate_limited = google(429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "x");
        let limited = ApiResponse::new(429, rate_limited).with_header("retry-after", "3");
        assert!(matches!(
            compute_error("GET", "/x", &limited),
            ProviderError::RateLimited(Some(3000))
        ));
    }

    /// Messages carry Google's reason and message with URLs cut to paths.
    #[test]
    fn error_messages_name_the_reason_without_hosts() {
        let body = google(
            404,
            "notFound",
            "NOT_FOUND",
            "The resource 'https://www.googleapis.com/compute/v1/projects/p/zones/z/instances/i' was not found",
        );
        let ProviderError::NotFound(message) =
            compute_error("GET", "/projects/p", &ApiResponse::new(404, body))
        else {
            panic!()
        };
        assert!(message.contains("notFound"), "{message}");
        assert!(!message.contains("googleapis.com"), "{message}");
    }

    /// Every GCE status maps as the issue says; an unknown one is provisioning.
    #[test]
    fn statuses_map_to_the_hosts_terms() {
        for (gce, expected) in [
            ("PROVISIONING", ServerStatus::Provisioning),
            ("STAGING", ServerStatus::Provisioning),
            ("RUNNING", ServerStatus::Running),
            ("STOPPING", ServerStatus::Stopped),
            ("SUSPENDING", ServerStatus::Stopped),
            ("SUSPENDED", ServerStatus::Stopped),
            ("TERMINATED", ServerStatus::Stopped),
        ] {
            assert_eq!(status::lookup(&[gce], STATUSES), Some(expected), "{gce}");
        }
        assert_eq!(status::lookup(&["NEW_STATE"], STATUSES), None);
    }

    /// A done operation's error: pool exhaustion no-capacity, a resource not ready transient,
    /// quota quota-exceeded, others by their HTTP status; a clean one none.
    #[test]
    fn operation_errors_map() {
        let op = |code: &str, http: Option<u16>| Operation {
            name: "operation-1".into(),
            status: "DONE".into(),
            error: Some(OperationErrors {
                errors: vec![OperationError {
                    code: code.into(),
                    message: "m".into(),
                }],
            }),
            http_error_status_code: http,
        };
        assert!(matches!(
            op("ZONE_RESOURCE_POOL_EXHAUSTED", Some(503)).failure(),
            Some(ProviderError::NoCapacity(m)) if m.contains("ZONE_RESOURCE_POOL_EXHAUSTED")
        ));
        assert!(matches!(
            op("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", Some(503)).failure(),
            Some(ProviderError::NoCapacity(_))
        ));
        assert!(matches!(
            op("RESOURCE_NOT_READY", Some(400)).failure(),
            Some(ProviderError::Transient(_))
        ));
        assert!(matches!(
            op("QUOTA_EXCEEDED", Some(403)).failure(),
            Some(ProviderError::QuotaExceeded(_))
        ));
        assert!(matches!(
            op("RESOURCE_NOT_FOUND", Some(404)).failure(),
            Some(ProviderError::InvalidRequest(_))
        ));
        let clean = Operation {
            error: None,
            ..op("", None)
        };
        assert!(clean.failure().is_none());
        assert!(clean.is_done());
    }

    /// Compute Engine's resource availability errors are no-capacity whether they come as the
    /// insert's HTTP answer or in its failed operation (any of the operation's errors, any
    /// status), with the code and Google's message and no host; a rate limit or quota
    /// (`RESOURCE_EXHAUSTED`) is not one.
    #[test]
    fn pool_exhaustion_is_no_capacity() {
        for code in [
            "ZONE_RESOURCE_POOL_EXHAUSTED",
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
            "RESOURCE_POOL_EXHAUSTED",
        ] {
            assert!(is_capacity(code), "{code}");
            let operation = Operation {
                name: "operation-1".into(),
                status: "DONE".into(),
                error: Some(OperationErrors {
                    errors: vec![
                        OperationError {
                            code: "RESOURCE_OPERATION_FAILED".into(),
                            message: "the insert failed".into(),
                        },
                        OperationError {
                            code: code.into(),
                            message: "The zone 'https://www.googleapis.com/compute/v1/projects/p/zones/z' does not have enough resources available to fulfill the request.".into(),
                        },
                    ],
                }),
                http_error_status_code: Some(400),
            };
            let Some(ProviderError::NoCapacity(message)) = operation.failure() else {
                panic!("{code}: {:?}", operation.failure())
            };
            assert!(message.contains(code), "{message}");
            assert!(!message.contains("googleapis.com"), "{message}");
            assert!(
                message.contains("/compute/v1/projects/p/zones/z"),
                "{message}"
            );
            for status in [400, 403, 503] {
                let body = google(status, "resourceExhausted", code, "no room");
                let error = compute_error(
                    "POST",
                    "/projects/p/zones/z/instances",
                    &ApiResponse::new(status, body),
                );
                let ProviderError::NoCapacity(message) = error else {
                    panic!("{code} {status}: {error:?}")
                };
                assert!(
                    message.starts_with("POST /projects/p/zones/z/instances -> "),
                    "{message}"
                );
            }
        }
        assert!(!is_capacity("RESOURCE_EXHAUSTED"));
        assert!(matches!(
            compute_error(
                "POST",
                "/x",
                &ApiResponse::new(
                    429,
                    google(429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "slow")
                ),
            ),
            ProviderError::RateLimited(_)
        ));
    }

    /// An aggregated page yields every scope's instances (warnings skipped) and the next
    /// token; the last page has none; instances carry their key, address and status.
    #[test]
    fn aggregated_pages_parse() {
        let instance = |name: &str, zone: &str, key: &str, ip: Option<&str>| {
            let mut config = json!({"type": "ONE_TO_ONE_NAT"});
            if let Some(ip) = ip {
                config["natIP"] = json!(ip);
            }
            json!({"id": "1", "name": name, "status": "RUNNING",
                "zone": format!("https://www.googleapis.com/compute/v1/projects/p/zones/{zone}"),
                "creationTimestamp": "2026-01-01T00:00:00.000-07:00",
                "labels": {IDEMPOTENCY_LABEL: key},
                "networkInterfaces": [{"accessConfigs": [config]}]})
        };
        let first: AggregatedList = serde_json::from_value(json!({
            "items": {
                "zones/us-central1-a": {"instances": [
                    instance("a-1", "us-central1-a", "k1", Some("203.0.113.5")),
                    json!({"name": "other", "zone": "zones/us-central1-a", "status": "RUNNING"}),
                ]},
                "zones/us-east1-b": {"warning": {"code": "NO_RESULTS_ON_PAGE"}},
                "zones/europe-west1-b": {"instances": [instance("b-1", "europe-west1-b", "k2", None)]},
            },
            "nextPageToken": "abc",
        }))
        .unwrap();
        let (instances, next) = first.into_page();
        assert_eq!(next.as_deref(), Some("abc"));
        assert_eq!(instances.len(), 3);
        let listed = labelled(instances);
        assert_eq!(listed.len(), 2, "the unlabelled instance is not listed");
        let a = listed.iter().find(|l| l.idempotency_key == "k1").unwrap();
        assert_eq!(a.server.vendor_id, "us-central1-a/a-1");
        assert_eq!(a.server.ipv4.as_deref(), Some("203.0.113.5"));
        assert_eq!(a.server.status, ServerStatus::Running);
        let b = listed.iter().find(|l| l.idempotency_key == "k2").unwrap();
        assert_eq!(b.server.ipv4, None);

        let last: AggregatedList =
            serde_json::from_value(json!({"items": {}, "nextPageToken": ""})).unwrap();
        assert_eq!(last.into_page().1, None);
        let bare: AggregatedList = serde_json::from_value(json!({})).unwrap();
        let (none, next) = bare.into_page();
        assert!(none.is_empty() && next.is_none());
    }

    /// The key in the metadata (the key as it was) wins over a digested label.
    #[test]
    fn the_metadata_key_wins_over_the_label() {
        let instance: Instance = serde_json::from_value(json!({
            "name": "x", "labels": {IDEMPOTENCY_LABEL: "sha256-abc"},
            "metadata": {"items": [{"key": IDEMPOTENCY_LABEL, "value": "Order/1"}]},
        }))
        .unwrap();
        assert_eq!(instance.idempotency_key().as_deref(), Some("Order/1"));
    }
}
