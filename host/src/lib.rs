//! `provisioner-host`: consumes creation requests from RabbitMQ and drives per-vendor
//! provider plugins (WebAssembly components) until each server runs, publishing progress
//! and results back.
//!
//! # Layout
//! - [`config`]: command-line flags with environment fallbacks.
//! - [`metrics`]: the host's Prometheus series (plugin calls, the broker address) and their
//!   endpoint.
//!
//! The plugin runtime (no messaging):
//! - [`manifest`]: plugin manifests (TOML): vendor, component, grants, limits.
//! - [`plugin_folder`]: the plugins folder kept in step with the disk (drop-in, replace,
//!   remove): the plugins in service, and the vendors whose plugin is there but cannot serve
//!   (a secret missing), with why.
//! - [`secrets`]: where plugin secrets come from: the secrets folder (one file per secret,
//!   re-read on change) or the environment; every secret a manifest names is required.
//! - [`runtime`]: the engine, plugin loading, one call = one fresh store.
//! - [`bindings`]: the host side of the `provisioner:provider` WIT worlds this host loads
//!   (0.5; 0.4 plugins without `catalogue`; 0.3 without `no-capacity`; 0.2 without the cache;
//!   0.1 without `list-servers` either).
//! - [`sandbox`]: per-call store state, host imports, the outbound grant check, the memory
//!   cap.
//! - [`grants`]: outbound HTTP grant patterns (exact, `*.domain`, `*` scheme/port).
//! - [`outbound`]: the pooled HTTP/HTTPS client plugins' requests go through, with each
//!   plugin's TLS trust.
//! - [`throttle`]: one vendor's request budget: a token bucket for its outgoing requests and
//!   the pause a 429 sets (capped).
//! - [`cache`]: the per-plugin cache of short-lived values (WIT 0.3 `cache`), bounded,
//!   lost on reload.
//! - [`plugin_output`]: what comes out of a plugin, contained where it enters the host:
//!   texts capped and escaped, identifiers and addresses checked, `log()` lines limited per
//!   plugin, published messages bounded.
//! - [`vendor_catalogue`]: a plugin's `catalogue` answer (WIT 0.5: the regions, sizes and
//!   images it accepts) cleaned for announcing.
//! - [`boot_times`]: how long a vendor's recent servers took to boot, kept with its plugin;
//!   the first poll of a booting server waits until one is likely up.
//! - [`wit_convert`]: between WIT and contract types: an order as a plugin's
//!   `server-request`, a plugin's server as `ServerInfo`, a failed call as the order's
//!   `Fault` and the wait it asked for, a `validate` as a check's `ValidateReply`.
//!
//! The AMQP side, [`worker`] (it uses the runtime; the runtime knows nothing of it):
//! - `worker/mod.rs`: the worker's settings; connect, and reconnect after a broker failure.
//! - `worker/session.rs`: one connection's life: consumers started and stopped as plugins
//!   come and go, one task per delivery, shutdown within a grace period.
//! - `worker/consumers.rs`: a vendor's request queue consumed with its in-flight budget as
//!   the prefetch, and its validate queue answered.
//! - `worker/announce.rs`: vendor announcements and withdrawals.
//! - `worker/delivery.rs`: one delivery decoded and handed on; a poison one dead-lettered.
//! - `worker/order.rs`: one order's life: request, create lease, the plugin's create (or
//!   delete, or cancel), progress and result published, then the ack.
//! - `worker/polling.rs`: waiting on the vendor: a booting server polled (first when it is
//!   likely up, then with backoff) until it runs, a deleted one until it is gone.
//! - `worker/result_batches.rs`: results ready together published as one message, each
//!   order's task told when the broker confirmed it.
//! - `worker/retry.rs`: what follows a failed attempt: retries through delay queues
//!   (backoff, jitter, `Retry-After`, the per-order budget) or the order's failure.
//! - [`worker::lease`]: one create at a time per order, across tasks and hosts.
//! - `worker/first_copy.rs`: which create skips the lease (an order's first copy, on its
//!   first delivery, cut off in time) and how long every other copy waits for it.
//! - `worker/sweep.rs`: the orphan sweep: a vendor's listing published as its inventory,
//!   orphan servers deleted.
//! - `worker/validate_replies.rs`: answers order-api's validate requests with the plugin's
//!   `validate`.

pub mod bindings;
pub mod boot_times;
pub mod cache;
pub mod config;
pub mod grants;
pub mod manifest;
pub mod metrics;
pub mod outbound;
pub mod plugin_folder;
pub mod plugin_output;
pub mod runtime;
pub mod sandbox;
pub mod secrets;
pub mod throttle;
pub mod vendor_catalogue;
pub mod wit_convert;
pub mod worker;
