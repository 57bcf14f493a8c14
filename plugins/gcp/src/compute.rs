//! An authenticated Compute Engine session for one plugin call: the service-account key,
//! the project, the access token (from the host's cache or a fresh exchange, see
//! [`crate::auth`]), and requests that exchange once more and retry once on a 401
//! (`provider_sdk::session_token`).

use provider_sdk::http::{ApiClient, HttpMethod as Method, percent_encode};
use provider_sdk::paging::{self, Page};
use provider_sdk::session_token::SessionToken;
use provider_sdk::{IDEMPOTENCY_LABEL, ProviderError, get_config, require_secret};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{self, AggregatedList, Instance, Operation};
use crate::auth::{self, KEY_SECRET, ServiceAccountKey};
use crate::ids::VendorId;

/// Compute Engine v1 at Google.
pub const DEFAULT_BASE_URL: &str = "https://compute.googleapis.com/compute/v1";
/// Instances asked for per aggregated-list page (Compute's most).
const MAX_RESULTS: u32 = 500;

/// One call's session. No `Debug`: it holds the key and the token.
pub struct Session {
    http: ApiClient,
    key: ServiceAccountKey,
    token: SessionToken,
    project: String,
}

impl Session {
    /// Reads the key and the configuration, and takes the cached token or exchanges one.
    pub async fn open() -> Result<Self, ProviderError> {
        let key = ServiceAccountKey::parse(&require_secret(KEY_SECRET)?)?;
        let project = get_config("project")
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| key.project_id.clone());
        if project.is_empty() {
            return Err(ProviderError::Unauthorized(
                "no project: the service-account key names no project_id and the manifest's \
                 [config] sets no 'project'"
                    .into(),
            ));
        }
        let base_url = get_config("base-url").unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let token = match auth::cached(&key) {
            Some(token) => token,
            None => auth::exchange(&key).await?,
        };
        Ok(Self {
            http: ApiClient::new(&base_url, api::error_reason)
                .with_error_mapper(api::compute_error),
            key,
            token: SessionToken::bearer(token.access_token),
            project,
        })
    }

    /// The path of `zone`'s collection `what` in the project.
    fn zone_path(&self, zone: &str, what: &str) -> String {
        format!(
            "/projects/{}/zones/{}/{what}",
            percent_encode(&self.project),
            percent_encode(zone)
        )
    }

    /// The path of the instance `id`.
    fn instance_path(&self, id: &VendorId) -> String {
        format!(
            "{}/{}",
            self.zone_path(&id.zone, "instances"),
            percent_encode(&id.name)
        )
    }

    /// A request with the session's token; a 401 forgets the cached token, exchanges once
    /// more and retries. Failures map by [`api::compute_error`].
    async fn request<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ProviderError> {
        self.token
            .call(&self.http, method, path, body, async || {
                auth::forget(&self.key);
                Ok(auth::exchange(&self.key).await?.access_token)
            })
            .await
    }

    /// Every instance of the project carrying the idempotency label (`value`: with that
    /// value), over every page of `instances.aggregatedList`.
    pub async fn labelled(&self, value: Option<&str>) -> Result<Vec<Instance>, ProviderError> {
        let filter = match value {
            Some(value) => format!("labels.{IDEMPOTENCY_LABEL} = \"{value}\""),
            None => format!("labels.{IDEMPOTENCY_LABEL}:*"),
        };
        let first = format!(
            "/projects/{}/aggregated/instances?filter={}&maxResults={MAX_RESULTS}",
            percent_encode(&self.project),
            percent_encode(&filter)
        );
        let instances = paging::read_all(async |token: Option<String>| {
            let path = match &token {
                Some(token) => format!("{first}&pageToken={}", percent_encode(token)),
                None => first.clone(),
            };
            let page: AggregatedList = self.request(Method::GET, &path, None::<&()>).await?;
            let (items, next) = page.into_page();
            Ok(Page { items, next })
        })
        .await?;
        // Compute matched the filter; the label itself decides.
        Ok(instances
            .into_iter()
            .filter(|i| match (value, i.labels.get(IDEMPOTENCY_LABEL)) {
                (Some(value), Some(label)) => label == value,
                (None, Some(_)) => true,
                (_, None) => false,
            })
            .collect())
    }

    /// `instances.get`.
    pub async fn instance(&self, id: &VendorId) -> Result<Instance, ProviderError> {
        let path = self.instance_path(id);
        self.request(Method::GET, &path, None::<&()>).await
    }

    /// `instances.insert` with `requestId`: the zone operation.
    pub async fn insert(
        &self,
        zone: &str,
        request_id: &str,
        body: &serde_json::Value,
    ) -> Result<Operation, ProviderError> {
        let path = format!(
            "{}?requestId={}",
            self.zone_path(zone, "instances"),
            percent_encode(request_id)
        );
        self.request(Method::POST, &path, Some(body)).await
    }

    /// `instances.delete`: the zone operation.
    pub async fn delete(&self, id: &VendorId) -> Result<Operation, ProviderError> {
        let path = self.instance_path(id);
        self.request(Method::DELETE, &path, None::<&()>).await
    }

    /// `zoneOperations.get`.
    pub async fn operation(&self, zone: &str, name: &str) -> Result<Operation, ProviderError> {
        let path = format!(
            "{}/{}",
            self.zone_path(zone, "operations"),
            percent_encode(name)
        );
        self.request(Method::GET, &path, None::<&()>).await
    }

    /// The `machineType` of an insert: `zones/<zone>/machineTypes/<type>`.
    pub fn machine_type(zone: &str, size: &str) -> String {
        format!("zones/{zone}/machineTypes/{size}")
    }
}
