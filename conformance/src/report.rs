//! Check results and their renderings: a table for people, JSON and JUnit XML for CI.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The plugin did what the check expects.
    Pass,
    /// It did not; the detail says what was expected and what came back.
    Fail,
    /// Not run; the detail says why.
    Skip,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The suite it belongs to.
    pub suite: &'static str,
    /// The check's name within the suite.
    pub check: &'static str,
    /// What it checks, in a sentence.
    pub description: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// What came back (pass), what was expected and what came back (fail), why not run
    /// (skip).
    pub detail: String,
    /// How long it took.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u128(duration.as_millis())
}

/// A server the run made that its clean-up could not see gone: at a real vendor, it is
/// still billed until someone deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    /// Its vendor id, when anything reported it (a server whose create answer was lost and
    /// that the plugin never found has none).
    pub vendor_id: Option<String>,
    /// The run's idempotency key it carries.
    pub key: String,
    /// What was last seen of it: its status, the delete's error, where it showed.
    pub detail: String,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.vendor_id {
            Some(id) => write!(f, "vendor id {id} (key {}): {}", self.key, self.detail),
            None => write!(f, "vendor id unknown (key {}): {}", self.key, self.detail),
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The component tested.
    pub plugin: String,
    /// The vendor its manifest names.
    pub vendor: String,
    /// The WIT version it implements, when it loaded.
    pub wit_version: Option<String>,
    /// What the run ran against (the simulator, the fault proxy and its upstream, live).
    pub target: String,
    /// The run's id: its servers carry the label `provisioner-conformance=<run id>` and
    /// keys `conformance-<run id>-<n>`.
    pub run_id: Option<String>,
    /// Every check, in the order run.
    pub checks: Vec<CheckResult>,
    /// The servers still at the vendor after the clean-up gave up: each one's vendor id.
    pub leftovers: Vec<Leftover>,
}

impl Report {
    /// Checks that ended so.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// Whether no check failed and the run left nothing at the vendor.
    pub fn passed(&self) -> bool {
        self.count(Outcome::Fail) == 0 && self.leftovers.is_empty()
    }

    /// The leftovers as lines for a person to act on (empty when there are none).
    pub fn leftover_notice(&self) -> String {
        if self.leftovers.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "LEFT AT THE VENDOR: {} server(s) of run {} the clean-up could not see gone; delete \
             them by hand (they carry the label {}={}):\n",
            self.leftovers.len(),
            self.run_id.as_deref().unwrap_or("?"),
            crate::kit::RUN_LABEL,
            self.run_id.as_deref().unwrap_or("?"),
        );
        for leftover in &self.leftovers {
            let _ = writeln!(out, "  {leftover}");
        }
        out
    }

    /// The check named `suite.check`, if it ran.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks
            .iter()
            .find(|c| format!("{}.{}", c.suite, c.check) == name)
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "provisioner-conformance: {} ({}, WIT {}) against {}",
            self.vendor,
            self.plugin,
            self.wit_version.as_deref().unwrap_or("?"),
            self.target
        );
        let width = self
            .checks
            .iter()
            .map(|c| c.suite.len() + c.check.len() + 1)
            .max()
            .unwrap_or(10);
        for check in &self.checks {
            let name = format!("{}.{}", check.suite, check.check);
            let _ = writeln!(
                out,
                "  {:<4}  {name:<width$}  {:>7}  {}",
                check.outcome.label(),
                format!("{} ms", check.duration.as_millis()),
                check.detail
            );
        }
        let _ = writeln!(
            out,
            "{} checks: {} passed, {} failed, {} skipped",
            self.checks.len(),
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip)
        );
        out.push_str(&self.leftover_notice());
        out
    }

    /// The report as JSON (with the counts).
    pub fn json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["passed"] = self.count(Outcome::Pass).into();
        value["failed"] = self.count(Outcome::Fail).into();
        value["skipped"] = self.count(Outcome::Skip).into();
        value
    }

    /// The report as JUnit XML: one test suite per conformance suite.
    pub fn junit(&self) -> anyhow::Result<String> {
        use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
        let mut report =
            quick_junit::Report::new(format!("provisioner-conformance {}", self.vendor));
        let mut suites: Vec<TestSuite> = Vec::new();
        for check in &self.checks {
            let status = match check.outcome {
                Outcome::Pass => TestCaseStatus::success(),
                Outcome::Fail => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(check.detail.clone());
                    status
                }
                Outcome::Skip => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(check.detail.clone());
                    status
                }
            };
            let mut case = TestCase::new(check.check, status);
            case.set_classname(format!("{}.{}", self.vendor, check.suite));
            case.set_time(check.duration);
            match suites.iter_mut().find(|s| s.name.as_str() == check.suite) {
                Some(suite) => {
                    suite.add_test_case(case);
                }
                None => {
                    let mut suite = TestSuite::new(check.suite);
                    suite.add_test_case(case);
                    suites.push(suite);
                }
            };
        }
        report.add_test_suites(suites);
        Ok(report.to_string()?)
    }
}
