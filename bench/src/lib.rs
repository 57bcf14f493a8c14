//! What the `bench` and `chaos` programs share: their summary table (or JSON) with the
//! progress line, and what `/proc` says about a process.
//!
//! # Layout
//! - [`report`]: the summary (table or JSON) and the progress line.
//! - [`probe`]: a process's memory, CPU and threads; RabbitMQ's CPU.

pub mod probe;
pub mod report;
