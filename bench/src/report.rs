//! The summary of a benchmark run (a table or JSON) and the progress line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// What a figure should be.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// At least this much.
    AtLeast(f64),
    /// At most this much.
    AtMost(f64),
}

impl Target {
    fn met_by(self, value: f64) -> bool {
        match self {
            Self::AtLeast(bound) => value >= bound,
            Self::AtMost(bound) => value <= bound,
        }
    }

    fn describe(self) -> String {
        match self {
            Self::AtLeast(bound) => format!(">= {}", number(bound)),
            Self::AtMost(bound) => format!("<= {}", number(bound)),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    key: String,
    label: String,
    value: f64,
    unit: &'static str,
    target: Option<Target>,
}

/// A benchmark's results: the figures and the settings they were measured with.
#[derive(Debug)]
pub struct Summary {
    benchmark: &'static str,
    settings: Map<String, Value>,
    rows: Vec<Row>,
}

impl Summary {
    /// An empty summary of `benchmark`.
    pub fn new(benchmark: &'static str) -> Self {
        Self {
            benchmark,
            settings: Map::new(),
            rows: Vec::new(),
        }
    }

    /// Records a setting the figures depend on.
    pub fn setting(&mut self, key: &str, value: impl Into<Value>) {
        self.settings.insert(key.into(), value.into());
    }

    /// Records a figure; `key` names it in JSON, `label` in the table.
    pub fn figure(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Option<Target>,
    ) {
        self.rows.push(Row {
            key: key.into(),
            label: label.into(),
            value,
            unit,
            target,
        });
    }

    /// The summary as a table.
    pub fn table(&self) -> String {
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let mut out = format!("\n{} ({})\n", self.benchmark, settings.join(", "));
        let width = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(0);
        for row in &self.rows {
            let value = format!("{} {}", number(row.value), row.unit);
            let verdict = match row.target {
                Some(target) if target.met_by(row.value) => {
                    format!("target {}: met", target.describe())
                }
                Some(target) => format!("target {}: MISSED", target.describe()),
                None => String::new(),
            };
            out.push_str(&format!(
                "  {:<width$}  {:>16}  {verdict}\n",
                row.label,
                value.trim_end()
            ));
        }
        out
    }

    /// The summary as JSON: settings, then every figure with its unit and target.
    pub fn json(&self) -> Value {
        let figures: Map<String, Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut figure = json!({ "value": row.value, "unit": row.unit });
                if let Some(target) = row.target {
                    figure["target"] = target.describe().into();
                    figure["met"] = target.met_by(row.value).into();
                }
                (row.key.clone(), figure)
            })
            .collect();
        json!({
            "benchmark": self.benchmark,
            "settings": self.settings,
            "figures": figures,
        })
    }
}

/// A number without noise: integers as integers, others with three significant decimals.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The progress line: redrawn in place on a terminal, one line every few seconds in a log.
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    last: Option<Instant>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A progress line on stderr.
    pub fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Shows `line`.
    pub fn update(&mut self, line: &str) {
        let mut stderr = std::io::stderr();
        if self.terminal {
            let _ = write!(stderr, "\r{line}\x1b[K");
            let _ = stderr.flush();
            return;
        }
        if self
            .last
            .is_none_or(|last| last.elapsed() >= Duration::from_secs(5))
        {
            let _ = writeln!(stderr, "{line}");
            self.last = Some(Instant::now());
        }
    }

    /// Ends the line (on a terminal) before other output.
    pub fn finish(&mut self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
