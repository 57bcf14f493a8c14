//! Hetzner Cloud provider plugin: a WebAssembly component (wasm32-wasip2) implementing the
//! `provisioner:provider` world against the Hetzner Cloud API.
//!
//! The order's idempotency key travels to Hetzner as the label
//! `provisioner-idempotency-key`, so `create-server` first looks for a server carrying it
//! (`GET /servers?label_selector=...`) and adopts it instead of making a second one.
//!
//! Configuration (manifest `[config]`): `base-url` (default `https://api.hetzner.cloud/v1`),
//! optional `locations` (comma-separated location codes `validate` accepts). Secret
//! (manifest `[secrets]`): `token`, the API token.
//!
//! # Layout
//! - [`api`]: Hetzner's JSON shapes and the mapping of Hetzner statuses to the WIT status.
//! - [`client`]: HTTP over wasi:http, bearer auth, mapping of HTTP failures to WIT errors.
//! - [`validation`]: offline checks of a request.
//! - this file: the exported `provider` interface.

mod api;
mod client;
mod validation;

wit_bindgen::generate!({
    world: "provider-plugin",
    path: "../../wit",
});

use exports::provisioner::provider::provider::Guest;
use provisioner::provider::host::{LogLevel, log};
use provisioner::provider::types::{PluginInfo, ProviderError, Server, ServerRequest};

use client::HetznerClient;

/// The label carrying the idempotency key at Hetzner.
pub const IDEMPOTENCY_LABEL: &str = "provisioner-idempotency-key";

struct HetznerPlugin;

impl Guest for HetznerPlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: "hetzner".into(),
            display_name: "Hetzner Cloud".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn validate(request: ServerRequest) -> Result<(), ProviderError> {
        validation::check(&request)
    }

    fn create_server(request: ServerRequest) -> Result<Server, ProviderError> {
        validation::check(&request)?;
        wstd::runtime::block_on(async {
            let client = HetznerClient::from_host_config()?;
            if let Some(existing) = client.find_by_key(&request.idempotency_key).await? {
                log(
                    LogLevel::Info,
                    &format!(
                        "adopting server {} made earlier for this key",
                        existing.vendor_id
                    ),
                );
                return Ok(existing);
            }
            client.create(&request).await
        })
    }

    fn find_server(idempotency_key: String) -> Result<Option<Server>, ProviderError> {
        wstd::runtime::block_on(async {
            HetznerClient::from_host_config()?
                .find_by_key(&idempotency_key)
                .await
        })
    }

    fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
        wstd::runtime::block_on(async { HetznerClient::from_host_config()?.get(&vendor_id).await })
    }

    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        wstd::runtime::block_on(async {
            HetznerClient::from_host_config()?.delete(&vendor_id).await
        })
    }
}

export!(HetznerPlugin);
