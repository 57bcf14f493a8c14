//! ARM's JSON as the plugin reads it (virtual machines with their instance view, public
//! IPs, list pages with `nextLink`, the generic resource list), the state mapping and the
//! error mapping of ARM's error shape: all pure, so they are unit-tested on the host.

use std::collections::BTreeMap;

use provider_sdk::adopt;
use provider_sdk::http::{
    ApiResponse, error_detail, precondition_or_status_error, redact_urls, retry_after_ms,
};
use provider_sdk::status::{self, ANY, Rules};
use provider_sdk::{IDEMPOTENCY_LABEL, LabelledServer, ProviderError, Server, ServerStatus};
use serde::Deserialize;

/// A VM's state: `properties.provisioningState` and the instance view's `PowerState/...`
/// (empty where the answer has no instance view, as in lists: a `Succeeded` VM has been
/// started, so it reads running).
pub const STATUSES: Rules = &[
    (&["Creating", ANY], ServerStatus::Provisioning),
    (&["Updating", "running"], ServerStatus::Running),
    (&["Updating", "stopped"], ServerStatus::Stopped),
    (&["Updating", "deallocated"], ServerStatus::Stopped),
    (&["Updating", ANY], ServerStatus::Provisioning),
    (&["Succeeded", "running"], ServerStatus::Running),
    (&["Succeeded", ""], ServerStatus::Running),
    (&["Succeeded", "starting"], ServerStatus::Provisioning),
    (&["Succeeded", "stopping"], ServerStatus::Stopped),
    (&["Succeeded", "stopped"], ServerStatus::Stopped),
    (&["Succeeded", "deallocating"], ServerStatus::Stopped),
    (&["Succeeded", "deallocated"], ServerStatus::Stopped),
    (&["Deleting", ANY], ServerStatus::Deleting),
    (&["Failed", ANY], ServerStatus::Error),
    (&["Canceled", ANY], ServerStatus::Error),
];

/// Failures saying Azure cannot place the VM here now: the location or zone has no capacity
/// for the size (or none that meets the request's constraints). No-capacity.
const CAPACITY_CODES: &[&str] = &[
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest",
    "SkuNotAvailable",
];

/// Failures of ARM's own that pass (another operation on the resource, ARM's retry hint):
/// transient.
const TRANSIENT_CODES: &[&str] = &["AnotherOperationInProgress", "RetryableError"];

/// A virtual machine, the fields the plugin reads.
#[derive(Debug, Clone, Deserialize)]
pub struct VirtualMachine {
    /// The resource id.
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: VmProperties,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmProperties {
    #[serde(default)]
    pub provisioning_state: String,
    #[serde(default)]
    pub time_created: String,
    #[serde(default)]
    pub instance_view: Option<InstanceView>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InstanceView {
    #[serde(default)]
    pub statuses: Vec<InstanceStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: Option<String>,
}

impl VirtualMachine {
    /// The instance view's power state (`running`, `starting`...), empty without one.
    pub fn power_state(&self) -> &str {
        self.statuses()
            .find_map(|s| s.code.strip_prefix("PowerState/"))
            .unwrap_or_default()
    }

    fn statuses(&self) -> impl Iterator<Item = &InstanceStatus> {
        self.properties
            .instance_view
            .iter()
            .flat_map(|view| view.statuses.iter())
    }

    /// The server's status.
    pub fn status(&self) -> ServerStatus {
        status::map(
            &[&self.properties.provisioning_state, self.power_state()],
            STATUSES,
        )
    }

    /// A failed provisioning worth retrying, naming the code and message: a failed
    /// allocation (`ProvisioningState/failed/AllocationFailed`, the other
    /// [`CAPACITY_CODES`]) is `no-capacity`, ARM's own passing failures `transient`.
    pub fn retryable_failure(&self) -> Option<ProviderError> {
        if self.properties.provisioning_state != "Failed" {
            return None;
        }
        self.statuses().find_map(|s| {
            let code = s.code.strip_prefix("ProvisioningState/failed/")?;
            let case: fn(String) -> ProviderError = if CAPACITY_CODES.contains(&code) {
                ProviderError::NoCapacity
            } else if TRANSIENT_CODES.contains(&code) {
                ProviderError::Transient
            } else {
                return None;
            };
            Some(case(redact_urls(&format!(
                "the VM {} failed to provision: {code}: {}",
                self.name,
                s.message.as_deref().unwrap_or_default()
            ))))
        })
    }

    /// The idempotency key it carries.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.tags.get(IDEMPOTENCY_LABEL).map(String::as_str)
    }

    /// The server in the host's terms, with `ipv4` its public IP's address.
    pub fn to_server(&self, vendor_id: String, ipv4: Option<String>) -> Server {
        Server {
            vendor_id,
            name: self.name.clone(),
            status: self.status(),
            ipv4,
            ipv6: None,
        }
    }
}

/// A public IP address.
#[derive(Debug, Clone, Deserialize)]
pub struct PublicIp {
    pub name: String,
    #[serde(default)]
    pub properties: PublicIpProperties,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicIpProperties {
    /// Assigned once it is allocated.
    #[serde(default)]
    pub ip_address: Option<String>,
}

impl PublicIp {
    pub fn address(&self) -> Option<String> {
        self.properties.ip_address.clone().filter(|a| !a.is_empty())
    }
}

/// One page of an ARM list: `value` and, unless last, `nextLink` (a full URL).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}

impl<T> ListPage<T> {
    /// The items and the next page's URL (none on the last page).
    pub fn into_page(self) -> (Vec<T>, Option<String>) {
        (self.value, self.next_link.filter(|link| !link.is_empty()))
    }
}

/// An entry of the generic resource list (`/resources`): a tag filter answers them
/// without their tags.
#[derive(Debug, Clone, Deserialize)]
pub struct GenericResource {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// The VMs among `vms` carrying the key, as listed servers (`vendor_id` names each,
/// `address` gives its public IP's address).
pub fn labelled(
    vms: Vec<VirtualMachine>,
    vendor_id: impl Fn(&VirtualMachine) -> String,
    address: impl Fn(&VirtualMachine) -> Option<String>,
) -> Vec<LabelledServer> {
    adopt::labelled(
        vms,
        |vm| vm.idempotency_key().map(str::to_string),
        |vm| vm.to_server(vendor_id(&vm), address(&vm)),
    )
}

/// ARM's error body, `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ArmError,
}

#[derive(Debug, Deserialize)]
struct ArmError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ArmError>,
}

/// Reads an ARM error body into `code: message`.
pub fn error_reason(body: &str) -> Option<String> {
    let body: ErrorBody = serde_json::from_str(body).ok()?;
    Some(format!("{}: {}", body.error.code, body.error.message))
}

/// The [`ProviderError`] for ARM's non-2xx answer to `method path`: 429 -> rate-limited
/// (with `Retry-After`); `QuotaExceeded`, or `OperationNotAllowed` about cores or quota ->
/// quota-exceeded; capacity (`SkuNotAvailable`, `AllocationFailed`...) -> no-capacity; ARM's
/// own conflicts (`AnotherOperationInProgress`, `RetryableError`) -> transient; then 401/403
/// -> unauthorized, 404 -> not-found, other 400/409/412 -> invalid-request, 5xx -> transient.
/// The message is [`error_detail`]'s (`path` may be a URL: only its path is named).
pub fn arm_error(method: &str, path: &str, response: &ApiResponse) -> ProviderError {
    let parsed = serde_json::from_str::<ErrorBody>(&response.body)
        .ok()
        .map(|b| b.error);
    let codes: Vec<&str> = parsed
        .iter()
        .flat_map(|e| {
            std::iter::once(e.code.as_str()).chain(e.details.iter().map(|d| d.code.as_str()))
        })
        .collect();
    let message = parsed
        .as_ref()
        .map(|e| e.message.to_ascii_lowercase())
        .unwrap_or_default();
    let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(c));
    let detail = error_detail(method, path, response, error_reason);
    if response.status == 429 {
        ProviderError::RateLimited(retry_after_ms(&response.headers))
    } else if has(&["QuotaExceeded"])
        || (has(&["OperationNotAllowed"])
            && (message.contains("quota") || message.contains("cores")))
    {
        ProviderError::QuotaExceeded(detail)
    } else if response.status == 401 || response.status == 403 {
        ProviderError::Unauthorized(detail)
    } else if has(CAPACITY_CODES) {
        ProviderError::NoCapacity(detail)
    } else if has(TRANSIENT_CODES) {
        ProviderError::Transient(detail)
    } else {
        precondition_or_status_error(response, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arm(code: &str, message: &str) -> serde_json::Value {
        json!({"error": {"code": code, "message": message}})
    }

    /// ARM's codes decide before the status; then the status maps as the issue says.
    #[test]
    fn errors_map_by_code_then_status() {
        let cases = [
            (429, arm("TooManyRequests", "slow down"), "rate-limited"),
            (
                409,
                arm(
                    "OperationNotAllowed",
                    "Operation could not be completed as it results in exceeding approved standardBSFamily Cores quota.",
                ),
                "quota-exceeded",
            ),
            (409, arm("QuotaExceeded", "no"), "quota-exceeded"),
            (
                409,
                arm("OperationNotAllowed", "The disk is attached to a VM."),
                "invalid-request",
            ),
            (
                409,
                arm("SkuNotAvailable", "The requested size is not available"),
                "no-capacity",
            ),
            (200, arm("AllocationFailed", "no capacity"), "no-capacity"),
            (409, arm("AnotherOperationInProgress", "busy"), "transient"),
            (409, arm("RetryableError", "try again"), "transient"),
            (
                401,
                arm("InvalidAuthenticationToken", "bad token"),
                "unauthorized",
            ),
            (403, arm("AuthorizationFailed", "no role"), "unauthorized"),
            (404, arm("ResourceNotFound", "gone"), "not-found"),
            (400, arm("InvalidParameter", "bad"), "invalid-request"),
            (
                409,
                arm("PropertyChangeNotAllowed", "no"),
                "invalid-request",
            ),
            (500, arm("InternalServerError", "oops"), "transient"),
            (503, json!("<html>unavailable</html>"), "transient"),
        ];
        for (status, body, expected) in cases {
            let error = arm_error("PUT", "/x", &ApiResponse::new(status, body.clone()));
            assert_eq!(error.case_name(), expected, "{status} {body} -> {error:?}");
        }
        let limited =
            ApiResponse::new(429, arm("TooManyRequests", "x")).with_header("retry-after", "7");
        assert!(matches!(
            arm_error("GET", "/x", &limited),
            ProviderError::RateLimited(Some(7000))
        ));
    }

    /// Every capacity code is no-capacity, at the top of the error or among its details
    /// (a deployment's), whatever the status but 401/403 and 429; ARM's own passing codes
    /// stay transient; the message names the code, no host.
    #[test]
    fn capacity_codes_are_no_capacity_and_conflicts_transient() {
        for code in CAPACITY_CODES {
            for status in [200, 400, 409, 500] {
                let error = arm_error(
                    "PUT",
                    "/vm",
                    &ApiResponse::new(status, arm(code, "no room")),
                );
                assert_eq!(error.case_name(), "no-capacity", "{code} {status}");
            }
            let nested = json!({"error": {"code": "DeploymentFailed",
                "message": "see https://aka.ms/arm-deployment-operations",
                "details": [{"code": code, "message": "no room"}]}});
            let error = arm_error("PUT", "/vm", &ApiResponse::new(409, nested));
            let ProviderError::NoCapacity(message) = &error else {
                panic!("{code}: {error:?}")
            };
            assert!(!message.contains("aka.ms"), "{message}");
            assert_eq!(
                arm_error("PUT", "/vm", &ApiResponse::new(403, arm(code, "x"))).case_name(),
                "unauthorized"
            );
            assert_eq!(
                arm_error("PUT", "/vm", &ApiResponse::new(429, arm(code, "x"))).case_name(),
                "rate-limited"
            );
        }
        for code in TRANSIENT_CODES {
            let error = arm_error("PUT", "/vm", &ApiResponse::new(409, arm(code, "busy")));
            assert_eq!(error.case_name(), "transient", "{code}");
        }
        let quota = arm(
            "OperationNotAllowed",
            "Operation could not be completed as it results in exceeding approved Total Regional Cores quota.",
        );
        assert_eq!(
            arm_error("PUT", "/vm", &ApiResponse::new(409, quota)).case_name(),
            "quota-exceeded"
        );
    }

    /// Messages name ARM's code and message, URLs cut to paths.
    #[test]
    fn error_messages_name_the_code_without_hosts() {
        let body = arm(
            "ResourceNotFound",
            "The Resource at https://management.azure.com/subscriptions/s/x was not found.",
        );
        let error = arm_error("GET", "/subscriptions/s/x", &ApiResponse::new(404, body));
        let ProviderError::NotFound(message) = error else {
            panic!("{error:?}")
        };
        assert!(message.contains("ResourceNotFound"), "{message}");
        assert!(!message.contains("management.azure.com"), "{message}");
    }

    fn vm(state: &str, power: Option<&str>) -> VirtualMachine {
        let mut properties = json!({"provisioningState": state});
        if let Some(power) = power {
            properties["instanceView"] = json!({"statuses": [
                {"code": format!("ProvisioningState/{}", state.to_lowercase())},
                {"code": format!("PowerState/{power}")},
            ]});
        }
        serde_json::from_value(json!({"name": "vm", "properties": properties})).unwrap()
    }

    /// provisioningState and the power state map to the host's terms.
    #[test]
    fn states_map_to_the_hosts_terms() {
        for (state, power, expected) in [
            ("Creating", Some("starting"), ServerStatus::Provisioning),
            ("Creating", None, ServerStatus::Provisioning),
            ("Succeeded", Some("starting"), ServerStatus::Provisioning),
            ("Succeeded", Some("running"), ServerStatus::Running),
            ("Succeeded", None, ServerStatus::Running),
            ("Succeeded", Some("deallocated"), ServerStatus::Stopped),
            ("Succeeded", Some("stopped"), ServerStatus::Stopped),
            ("Updating", Some("running"), ServerStatus::Running),
            ("Updating", None, ServerStatus::Provisioning),
            ("Deleting", Some("deallocating"), ServerStatus::Deleting),
            ("Failed", Some("deallocated"), ServerStatus::Error),
        ] {
            assert_eq!(vm(state, power).status(), expected, "{state} {power:?}");
        }
        assert_eq!(
            status::lookup(&["Migrating", "running"], STATUSES),
            None,
            "an unknown state is no rule's"
        );
    }

    /// A VM that failed with AllocationFailed (or another capacity code) is no-capacity, one
    /// that failed with ARM's passing errors transient; another failure is no retryable
    /// failure (its state reads error).
    #[test]
    fn allocation_failures_are_no_capacity() {
        let failed = |code: &str| -> VirtualMachine {
            serde_json::from_value(json!({"name": "vm", "properties": {
                "provisioningState": "Failed",
                "instanceView": {"statuses": [
                    {"code": format!("ProvisioningState/failed/{code}"), "message": "no room"},
                    {"code": "PowerState/deallocated"}]}}}))
            .unwrap()
        };
        for code in CAPACITY_CODES {
            assert!(
                matches!(
                    failed(code).retryable_failure(),
                    Some(ProviderError::NoCapacity(m)) if m.contains(code) && m.contains("no room")
                ),
                "{code}"
            );
        }
        assert!(matches!(
            failed("RetryableError").retryable_failure(),
            Some(ProviderError::Transient(m)) if m.contains("RetryableError")
        ));
        assert!(
            failed("OSProvisioningTimedOut")
                .retryable_failure()
                .is_none()
        );
        assert!(
            vm("Succeeded", Some("running"))
                .retryable_failure()
                .is_none()
        );
    }

    /// Pages yield their items and the next link; the last page has none; listed servers
    /// are the VMs carrying the key tag.
    #[test]
    fn pages_parse_and_listed_servers_carry_their_key() {
        let page: ListPage<VirtualMachine> = serde_json::from_value(json!({
            "value": [
                {"id": "/s/vm-a", "name": "vm-a", "tags": {IDEMPOTENCY_LABEL: "k1", "team": "x"},
                 "properties": {"provisioningState": "Succeeded", "timeCreated": "2026-01-01T00:00:00Z"}},
                {"id": "/s/other", "name": "other", "properties": {"provisioningState": "Succeeded"}},
                {"id": "/s/vm-b", "name": "vm-b", "tags": {IDEMPOTENCY_LABEL: "k2"},
                 "properties": {"provisioningState": "Creating"}},
            ],
            "nextLink": "https://management.azure.com/subscriptions/s/x?api-version=1&$skiptoken=3",
        }))
        .unwrap();
        let (vms, next) = page.into_page();
        assert_eq!(vms.len(), 3);
        assert!(next.unwrap().ends_with("$skiptoken=3"));
        let listed = labelled(
            vms,
            |vm| vm.id.clone(),
            |vm| (vm.name == "vm-a").then(|| "203.0.113.7".to_string()),
        );
        assert_eq!(listed.len(), 2, "the untagged VM is not listed");
        assert_eq!(listed[0].idempotency_key, "k1");
        assert_eq!(listed[0].server.vendor_id, "/s/vm-a");
        assert_eq!(listed[0].server.status, ServerStatus::Running);
        assert_eq!(listed[0].server.ipv4.as_deref(), Some("203.0.113.7"));
        assert_eq!(listed[1].server.status, ServerStatus::Provisioning);
        assert_eq!(listed[1].server.ipv4, None);

        let last: ListPage<VirtualMachine> =
            serde_json::from_value(json!({"value": [], "nextLink": ""})).unwrap();
        assert_eq!(last.into_page().1, None);
        let bare: ListPage<GenericResource> = serde_json::from_value(json!({})).unwrap();
        let (none, next) = bare.into_page();
        assert!(none.is_empty() && next.is_none());
    }

    #[test]
    fn public_ips_read_their_address() {
        let ip: PublicIp = serde_json::from_value(
            json!({"name": "x-ip", "properties": {"ipAddress": "198.51.100.4"}}),
        )
        .unwrap();
        assert_eq!(ip.address().as_deref(), Some("198.51.100.4"));
        let pending: PublicIp =
            serde_json::from_value(json!({"name": "x-ip", "properties": {}})).unwrap();
        assert_eq!(pending.address(), None);
    }
}
