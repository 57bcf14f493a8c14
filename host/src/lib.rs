//! `provisioner-host`: consumes creation requests from RabbitMQ and drives per-vendor
//! provider plugins (WebAssembly components) until each server runs, publishing progress
//! and results back.
//!
//! # Layout
//! - [`config`]: command-line flags with environment fallbacks.
//! - [`manifest`]: plugin manifests (TOML): vendor, component, grants, limits.
//! - [`bindings`]: the host side of the `provisioner:provider` WIT worlds this host loads
//!   (0.5; 0.4 plugins without `catalogue`; 0.3 without `no-capacity`; 0.2 without the cache;
//!   0.1 without `list-servers` either).
//! - [`vendor_catalogue`]: a plugin's `catalogue` answer (WIT 0.5) cleaned for announcing.
//! - [`grants`]: outbound HTTP grant patterns (exact, `*.domain`, `*` scheme/port).
//! - [`outbound`]: the pooled HTTP/HTTPS client plugins' requests go through, with each
//!   plugin's TLS trust.
//! - [`cache`]: the per-plugin cache of short-lived values (WIT 0.3 `cache`), bounded,
//!   lost on reload.
//! - [`sandbox`]: per-call store state, host imports, the outbound grant check, the memory
//!   cap.
//! - [`runtime`]: the engine, plugin loading, one call = one fresh store.
//! - [`boot_times`]: how long a vendor's recent servers took to boot, kept with its plugin;
//!   the first poll of a booting server waits until one is likely up.
//! - [`plugin_output`]: what comes out of a plugin, contained where it enters the host:
//!   texts capped and escaped, identifiers and addresses checked, `log()` lines limited per
//!   plugin, published messages bounded.
//! - [`throttle`]: one vendor's request budget: a token bucket for its outgoing requests and
//!   the pause a 429 sets (capped).
//! - [`secrets`]: where plugin secrets come from: the secrets folder (one file per secret,
//!   re-read on change) or the environment; every secret a manifest names is required.
//! - [`plugin_folder`]: the plugins folder kept in step with the disk (drop-in, replace, remove),
//!   and the vendors whose plugin is there but cannot serve (a secret missing), with why.
//! - [`provision`]: one order's life at the vendor: create, poll with backoff, outcome.
//! - [`lease`]: one create at a time per order, across tasks and hosts.
//! - [`metrics`]: the host's Prometheus series (plugin calls) and their endpoint.
//! - [`retry`]: retries of failed creates through delay queues: backoff, jitter,
//!   `Retry-After`, the per-order budget.
//! - [`validations`]: answers order-api's validations with the plugin's `validate`.
//! - [`worker`]: the AMQP side: consumers per vendor (started and stopped as plugins come
//!   and go), publishing events and results, acking only after the result is confirmed;
//!   vendor announcements and withdrawals; reconnects; shutdown.

pub mod bindings;
pub mod boot_times;
pub mod cache;
pub mod config;
pub mod grants;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod outbound;
pub mod plugin_folder;
pub mod plugin_output;
pub mod provision;
pub mod retry;
pub mod runtime;
pub mod sandbox;
pub mod secrets;
pub mod throttle;
pub mod validations;
pub mod vendor_catalogue;
pub mod worker;
