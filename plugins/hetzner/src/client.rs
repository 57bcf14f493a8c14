//! HTTP to the Hetzner API over wasi:http, and the mapping of its failures to WIT errors.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use wstd::http::{Body, Client, Method, Request, Response, StatusCode};

use crate::IDEMPOTENCY_LABEL;
use crate::api::{CreateServerRequest, ErrorEnvelope, ServerEnvelope, ServerList};
use crate::provisioner::provider::host::{LogLevel, get_config, get_secret, log};
use crate::provisioner::provider::types::{ProviderError, Server, ServerRequest};

const DEFAULT_BASE_URL: &str = "https://api.hetzner.cloud/v1";

/// A Hetzner API client configured from the host (base URL, token).
pub struct HetznerClient {
    base_url: String,
    token: String,
    http: Client,
}

impl HetznerClient {
    /// Reads `base-url` from the config and `token` from the secrets.
    pub fn from_host_config() -> Result<Self, ProviderError> {
        let base_url = get_config("base-url").unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let token = get_secret("token").ok_or_else(|| {
            ProviderError::Unauthorized(
                "no Hetzner API token: the manifest's [secrets] must name `token`".into(),
            )
        })?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            http: Client::new(),
        })
    }

    /// The server carrying `key` as its idempotency label, if any.
    pub async fn find_by_key(&self, key: &str) -> Result<Option<Server>, ProviderError> {
        let selector = format!("{IDEMPOTENCY_LABEL}=={key}");
        let path = format!("/servers?label_selector={}", percent_encode(&selector));
        let list: ServerList = self.call(Method::GET, &path, None).await?;
        Ok(list.servers.into_iter().next().map(Server::from))
    }

    /// `POST /servers` with the idempotency key as a label.
    pub async fn create(&self, request: &ServerRequest) -> Result<Server, ProviderError> {
        let mut labels: BTreeMap<&str, &str> = request
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        labels.insert(IDEMPOTENCY_LABEL, &request.idempotency_key);
        let body = CreateServerRequest {
            name: &request.name,
            server_type: &request.size,
            image: &request.image,
            location: &request.region,
            labels,
            ssh_keys: &request.ssh_keys,
            user_data: request.user_data.as_deref(),
            start_after_create: true,
        };
        let body = serde_json::to_string(&body)
            .map_err(|e| ProviderError::Internal(format!("encoding the create request: {e}")))?;
        let created: ServerEnvelope = self.call(Method::POST, "/servers", Some(body)).await?;
        log(
            LogLevel::Info,
            &format!("created server {}", created.server.id),
        );
        Ok(created.server.into())
    }

    /// `GET /servers/{id}`.
    pub async fn get(&self, vendor_id: &str) -> Result<Server, ProviderError> {
        let id = numeric_id(vendor_id)?;
        let found: ServerEnvelope = self
            .call(Method::GET, &format!("/servers/{id}"), None)
            .await?;
        Ok(found.server.into())
    }

    /// `DELETE /servers/{id}`.
    pub async fn delete(&self, vendor_id: &str) -> Result<(), ProviderError> {
        let id = numeric_id(vendor_id)?;
        let _: serde_json::Value = self
            .call(Method::DELETE, &format!("/servers/{id}"), None)
            .await?;
        Ok(())
    }

    /// One API call: builds the request, sends it, maps failures, parses the JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        let request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("provisioner-hetzner-plugin/", env!("CARGO_PKG_VERSION")),
            );
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body)),
            None => request.body(Body::empty()),
        }
        .map_err(|e| ProviderError::Internal(format!("building {method} {url}: {e}")))?;
        let mut response = self
            .http
            .send(request)
            .await
            .map_err(|e| network_error(&method, &url, &e))?;
        let status = response.status();
        let text = response
            .body_mut()
            .str_contents()
            .await
            .map_err(|e| {
                ProviderError::Transient(format!("reading the answer to {method} {url}: {e}"))
            })?
            .to_string();
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                ProviderError::Internal(format!(
                    "Hetzner answered {method} {url} with JSON this plugin cannot read: {e}"
                ))
            });
        }
        Err(http_error(status, &response, &text, &method, &url))
    }
}

/// A failure to get any answer: the host refused the request or the network failed.
fn network_error(method: &Method, url: &str, error: &wstd::http::Error) -> ProviderError {
    let detail = format!("{error:#}");
    if detail.contains("HttpRequestDenied") {
        ProviderError::Internal(format!(
            "the host denied {method} {url}: the manifest does not grant this host"
        ))
    } else {
        ProviderError::Transient(format!("{method} {url} failed: {detail}"))
    }
}

/// Maps Hetzner's error answers to WIT errors.
fn http_error(
    status: StatusCode,
    response: &Response<Body>,
    text: &str,
    method: &Method,
    url: &str,
) -> ProviderError {
    let reason = serde_json::from_str::<ErrorEnvelope>(text)
        .map(|e| format!("{}: {}", e.error.code, e.error.message))
        .unwrap_or_else(|_| text.chars().take(200).collect());
    let detail = format!("{method} {url} -> {status}: {reason}");
    match status.as_u16() {
        401 | 403 => ProviderError::Unauthorized(detail),
        404 => ProviderError::NotFound(detail),
        429 => ProviderError::RateLimited(retry_after_ms(response)),
        400 | 409 | 422 => {
            if reason.starts_with("resource_limit_exceeded") {
                ProviderError::QuotaExceeded(detail)
            } else {
                ProviderError::InvalidRequest(detail)
            }
        }
        500..=599 => ProviderError::Transient(detail),
        _ => ProviderError::Internal(detail),
    }
}

/// Milliseconds until `RateLimit-Reset` (a Unix timestamp in seconds).
fn retry_after_ms(response: &Response<Body>) -> Option<u64> {
    let reset: u64 = response
        .headers()
        .get("ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some((reset * 1000).saturating_sub(now_ms))
}

fn numeric_id(vendor_id: &str) -> Result<u64, ProviderError> {
    vendor_id.parse().map_err(|_| {
        ProviderError::InvalidRequest(format!("'{vendor_id}' is not a Hetzner server id"))
    })
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
