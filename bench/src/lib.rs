//! What the `bench` and `chaos` programs share: their summary table (or JSON) with the
//! progress line, and what `/proc` says about a process.
//!
//! # Layout
//! - [`report`]: the summary (table or JSON) and the progress line.
//! - [`probe`]: a process's memory, CPU and threads; RabbitMQ's CPU.
//! - [`stats`]: percentiles of measured durations.
//! - [`Build`]: which build of the programs a run starts.

pub mod probe;
pub mod report;
pub mod stats;

/// Which build of the programs a run starts (`--profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Build {
    /// `target/release`: for figures.
    Release,
    /// `target/debug`: for smoke runs next to the tests.
    Debug,
}

impl Build {
    /// The cargo profile folder under `target/`.
    pub fn profile(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Debug => "debug",
        }
    }
}
