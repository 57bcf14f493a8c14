//! `provisioner-conformance`: tells a plugin author whether a provider plugin is fit to drop
//! into a host. It loads the `.wasm` exactly as the host does (the same runtime, grants and
//! limits, from the plugin's manifest) and runs named suites of checks against the vendor
//! simulator or the live vendor; each check says pass, fail (what was expected, what came
//! back) or skip (why).
//!
//! # Layout
//! - [`options`]: what a run is given: plugin, manifest, target (simulator or live), the
//!   request to make servers with, suites.
//! - [`report`]: check results and their renderings: the terminal table, JSON, JUnit XML.
//! - [`sim`]: the simulator's control API (inject faults, count servers by key).
//! - [`kit`]: loading the plugin (as manifested, or with a narrowed grant or budget) and
//!   the helpers checks share.
//! - [`suites`]: the checks: `contract`, `sandbox`, `faults`, `lifecycle`, `idempotency`,
//!   and the leftover sweep that ends every run.

pub mod kit;
pub mod options;
pub mod report;
pub mod sim;
pub mod suites;

pub use options::{KitOptions, Suite, Target};
pub use report::{CheckResult, Outcome, Report};
pub use suites::run;
