//! `provisioner-conformance`: tells a plugin author whether a provider plugin is fit to drop
//! into a host. It loads the `.wasm` exactly as the host does (the same runtime, grants and
//! limits, from the plugin's manifest) and runs named suites of checks against the vendor
//! simulator, any vendor through the fault-injecting proxy it starts in front of the
//! vendor's API, or the live vendor; each check says pass, fail (what was expected, what came
//! back) or skip (why). A run that made servers ends deleting them until each is seen gone,
//! and names every one it could not.
//!
//! # Layout
//! - [`options`]: what a run is given: plugin, manifest, target (simulator, fault proxy or
//!   live), the request to make servers with, suites, time limits.
//! - [`report`]: check results, leftovers and their renderings: the terminal table, JSON,
//!   JUnit XML.
//! - [`shown`]: a plugin's answer as a check's details show it (results, errors and
//!   statuses as their WIT cases).
//! - [`proxy`]: the fault proxy a `--fault-proxy` run starts, and the manifest pointed at it.
//! - [`traffic`]: what reached the vendor, read from the proxy's record of requests: the
//!   servers a key's creates made, user data, SSH keys and labels in the requests.
//! - [`patience`]: vendor calls made again after `rate-limited` and `transient`, as the
//!   host does.
//! - [`kit`]: loading the plugin (as manifested, or with a narrowed grant or budget), the
//!   patient vendor calls, what the run made, and the simulator of a `--vendor-sim` run
//!   (reached through `vendor_sim::control_client`).
//! - [`isolation`]: `sandbox.cache-isolated`, two loads of the plugin and the verdict on
//!   what each could read of the other's cache.
//! - [`catalogue`]: `contract.catalogue`, the plugin's `catalogue` answer held against its
//!   own `validate`.
//! - [`suites`]: running the checks, and what the suites share (recording checks, showing
//!   calls in details, faults armed around a call, the vendor's count of a key's servers,
//!   the deletes and clean-up check that end a run); one file per suite below it:
//!   `suites/contract.rs` (with `contract.world`, the load every run begins with),
//!   `suites/sandbox.rs`, `suites/faults.rs`, `suites/lifecycle.rs` (with `inputs`),
//!   `suites/idempotency.rs`.
//! - [`cleanup`]: the clean-up that ends every run that made servers, and its leftovers.

pub mod catalogue;
pub mod cleanup;
pub mod isolation;
pub mod kit;
pub mod options;
pub mod patience;
pub mod proxy;
pub mod report;
pub mod shown;
pub mod suites;
pub mod traffic;

pub use options::{KitOptions, Suite, Target};
pub use report::{CheckResult, Leftover, Outcome, Report};
pub use suites::run;
