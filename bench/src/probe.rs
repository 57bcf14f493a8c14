//! What `/proc` says about a process: resident memory (now and peak), CPU time, threads.

/// A snapshot of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSample {
    /// Resident memory now, MiB.
    pub rss_mib: f64,
    /// Peak resident memory so far (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
    /// Threads now.
    pub threads: u64,
    /// User + system CPU seconds so far.
    pub cpu_secs: f64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `None` once the process is gone.
pub fn sample(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after_name: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    let ticks: f64 =
        after_name.get(11)?.parse::<f64>().ok()? + after_name.get(12)?.parse::<f64>().ok()?;
    Some(ProcessSample {
        rss_mib: field("VmRSS:")? / 1024.0,
        peak_rss_mib: field("VmHWM:")? / 1024.0,
        threads: field("Threads:")? as u64,
        // Linux reports CPU time in USER_HZ, which is 100 on every architecture it runs on.
        cpu_secs: ticks / 100.0,
    })
}

/// CPU seconds RabbitMQ (the Erlang VM `beam.smp` on this machine) has used so far, when
/// it runs here; the benchmarks share the machine with it.
pub fn broker_cpu_secs() -> Option<f64> {
    let processes = std::fs::read_dir("/proc").ok()?;
    processes
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == "beam.smp")
        })
        .filter_map(|pid| sample(pid).map(|s| s.cpu_secs))
        .reduce(|a, b| a + b)
}
