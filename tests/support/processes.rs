//! The programs the tests run: where the workspace's builds are, free ports for them, a
//! child process with its log file, and running a command to its end.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo target folder: `CARGO_TARGET_DIR`, or the workspace's `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `path`, a build the tests need; fails saying it `is missing: <how_to_build>` when it is
/// not there.
pub(crate) fn built(path: PathBuf, how_to_build: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: {how_to_build}",
        path.display()
    );
    path
}

/// A built binary of the workspace in `profile` (`debug` or `release`); fails with what to
/// run when it is missing. `TEST_BINARY_<NAME>` (e.g. `TEST_BINARY_ORDER_API`) runs another
/// build instead, such as an earlier commit's, to see a test fail before its fix.
pub fn binary(profile: &str, name: &str) -> PathBuf {
    let variable = format!(
        "TEST_BINARY_{}",
        name.to_ascii_uppercase().replace('-', "_")
    );
    if let Some(path) = std::env::var_os(&variable) {
        return PathBuf::from(path);
    }
    let flag = if profile == "release" {
        " --release"
    } else {
        ""
    };
    built(
        target_dir().join(profile).join(name),
        &format!(
            "build the binaries first with `cargo build{flag} --workspace --bins` \
             (scripts/test.sh and scripts/bench.sh do all the set-up)"
        ),
    )
}

/// A free TCP port on the loopback interface, never one this process handed out before.
///
/// The port is free when asked for and bound later by a child program, so the kernel may
/// offer it again in between: to a second ask of the same stack or of a test running beside
/// it. Remembering every port handed out keeps two children of one test run off one port.
pub fn free_port() -> u16 {
    static HANDED_OUT: LazyLock<std::sync::Mutex<std::collections::HashSet<u16>>> =
        LazyLock::new(Default::default);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("cannot find a free port: {error}"));
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// The log filter the programs run with (their `RUST_LOG`): `TEST_RUST_LOG` when set (e.g.
/// `debug` to see more of a failing test, `warn` for a benchmark measuring what the logs
/// cost), else `info,lapin=warn`: the programs' own default with lapin's chatter left out.
fn programs_log_filter() -> String {
    std::env::var("TEST_RUST_LOG")
        .ok()
        .filter(|filter| !filter.trim().is_empty())
        .unwrap_or_else(|| "info,lapin=warn".to_string())
}

/// One child process, its log going to a file (or, for a test of a stuck log reader, to a
/// pipe nobody reads).
pub struct Service {
    name: &'static str,
    pub(crate) child: Child,
    /// The log file; `None` for output to an unread pipe.
    log: Option<PathBuf>,
}

impl Service {
    pub(crate) fn spawn(
        name: &'static str,
        binary: &Path,
        env: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let stderr = file.try_clone()?;
        Self::start(name, binary, env, file.into(), stderr.into(), Some(log))
    }

    /// [`Service::spawn`] with stdout and stderr going to pipes this process holds open
    /// and never reads: once a pipe's buffer is full (64 KiB on Linux), every write to it
    /// waits, as with a log collector that is stuck.
    pub(crate) fn spawn_with_unread_output(
        name: &'static str,
        binary: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        Self::start(name, binary, env, Stdio::piped(), Stdio::piped(), None)
    }

    /// Starts `binary` with only `env` (and the tests' log filter) in its environment, its
    /// output to `stdout` and `stderr`, killed when dropped.
    fn start(
        name: &'static str,
        binary: &Path,
        env: &[(&str, String)],
        stdout: Stdio,
        stderr: Stdio,
        log: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let child = Command::new(binary)
            .env_clear()
            .env("RUST_LOG", programs_log_filter())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { name, child, log })
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        match &self.log {
            Some(log) => log_tail(self.name, log),
            None => format!(
                "--- {} (its output goes to a pipe nobody reads) ---",
                self.name
            ),
        }
    }
}

/// The last 30 lines of the log file `log` of the program `name`, under a heading naming
/// both, for failure messages.
pub(crate) fn log_tail(name: &str, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(30);
    format!(
        "--- {name} ({}) ---\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}

/// Runs `command` to its end and answers what it printed on standard output. When it
/// cannot start, the error is `starting`; when it fails, the error names it `shown_as`
/// (the program and its arguments) with everything it printed.
pub(crate) async fn output_of_success(
    command: &mut Command,
    shown_as: &str,
    starting: &str,
) -> anyhow::Result<String> {
    let output = command
        .output()
        .await
        .with_context(|| starting.to_string())?;
    if !output.status.success() {
        bail!(
            "{shown_as} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::free_port;

    /// The stacks of one test run ask for their ports at the same time and bind them later:
    /// two asks must never get one port (a CI run once gave order-api the simulator's port).
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            let port = free_port();
            assert!(seen.insert(port), "port {port} was handed out twice");
        }
    }
}
