//! CPU seconds of each process of a running stack (order-api, the host, the simulator,
//! RabbitMQ and the load generator itself): a reading, or what a phase took between two.

use anyhow::Context;
use provisioner_bench::probe;
use provisioner_tests::Stack;

/// CPU seconds of every process: used so far (a reading), or in a phase (between two).
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    pub api: f64,
    pub host: f64,
    pub sim: f64,
    pub broker: f64,
    pub bench: f64,
}

impl CpuReading {
    /// What each of `stack`'s processes has used so far.
    pub fn now(stack: &Stack) -> anyhow::Result<Self> {
        let cpu = |pid: Option<u32>, what: &str| -> anyhow::Result<f64> {
            let pid = pid.with_context(|| format!("{what} is not running"))?;
            Ok(probe::sample(pid)
                .with_context(|| format!("{what} exited"))?
                .cpu_secs)
        };
        Ok(Self {
            api: cpu(stack.api_pid(), "order-api")?,
            host: cpu(stack.host_pid(), "the host")?,
            sim: cpu(stack.sim_pid(), "the simulator")?,
            broker: probe::broker_cpu_secs().unwrap_or(0.0),
            bench: probe::sample(std::process::id()).map_or(0.0, |s| s.cpu_secs),
        })
    }

    /// What each process used between `before` and this reading.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            api: self.api - before.api,
            host: self.host - before.host,
            sim: self.sim - before.sim,
            broker: self.broker - before.broker,
            bench: self.bench - before.bench,
        }
    }
}
