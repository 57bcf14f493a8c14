//! Waiting on the vendor: a booting server polled until it runs, fails, or the budget is
//! spent; a deleted one polled until the vendor no longer has it.
//!
//! Between polls no plugin instance exists: a waiting order costs a timer and a small state,
//! not a live instance.
//!
//! Polls are scheduled by what the vendor has shown: [`BootTimes`] remembers how long its
//! recent servers took, and the first poll waits until a server is likely up; after that
//! the usual backoff (from `initial_delay`, growing by half up to `max_delay`) finds the
//! moment it runs. Thousands of slow creations then cost a few calls each instead of a
//! poll every few seconds, and the gap between "running" and "active" stays short.
//!
//! [`BootTimes`]: crate::boot_times::BootTimes

use std::time::Duration;

use provisioner_contract::{Fault, ProvisionRequest, ServerInfo, ServerStatus, UpdateKind};
use tokio::time::Instant;
use uuid::Uuid;

use crate::bindings::types::{ProviderError, ServerStatus as WitStatus};
use crate::runtime::{CallError, Plugin};
use crate::wit_convert::{fault, retry_after, server_info};

/// How the host polls a booting server.
#[derive(Debug, Clone)]
pub struct PollPolicy {
    /// Wait before the first poll.
    pub initial_delay: Duration,
    /// The longest wait between polls (the delay grows by half each poll up to this).
    pub max_delay: Duration,
    /// How long a server may take to run, from the create, before the order fails.
    pub budget: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
            budget: Duration::from_secs(15 * 60),
        }
    }
}
/// Polls until the server runs (`Active`), fails (`Failed`), or the budget runs out.
///
/// Passing failures of a poll (rate limits, 5xx, timeouts) are not the order's failure:
/// the next poll tries again, until the budget ends. But `no-capacity` ends the wait at
/// once (`Failed` with `no_capacity`, which the worker retries like a create refused for
/// capacity): the vendor gave up placing the server (a Compute insert's operation ended
/// `ZONE_RESOURCE_POOL_EXHAUSTED`), and polling on cannot change that.
pub(super) async fn wait_until_running(
    plugin: &Plugin,
    request: &ProvisionRequest,
    mut server: ServerInfo,
    policy: &PollPolicy,
) -> UpdateKind {
    let started = Instant::now();
    let deadline = started + policy.budget;
    let boot_times = plugin.boot_times();
    let mut schedule = PollSchedule::new(policy, boot_times.first_wait());
    let mut last_error: Option<CallError> = None;
    // When a poll last saw the server booting.
    let mut last_seen_booting = started;
    loop {
        if server.status == ServerStatus::Running {
            boot_times.record(last_seen_booting - started);
            return UpdateKind::Active { server };
        }
        if let Some(fault) = not_booting(&server) {
            return UpdateKind::Failed {
                fault,
                server: Some(server),
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return UpdateKind::Failed {
                fault: not_running_in_time(&server, policy.budget, last_error.as_ref()),
                server: Some(server),
            };
        }
        let asked = last_error.as_ref().and_then(retry_after);
        tokio::time::sleep(schedule.next_wait(deadline - now, asked)).await;
        let polled_at = Instant::now();
        match poll(plugin, request.order_id, &server.vendor_id).await {
            Poll::Seen(current) => {
                if current.status != ServerStatus::Running {
                    last_seen_booting = polled_at;
                }
                server = current;
                last_error = None;
            }
            Poll::Passing(error) => {
                tracing::warn!(order_id = %request.order_id, "poll failed, will retry: {error}");
                last_error = Some(error);
            }
            Poll::Ends(fault) => {
                return UpdateKind::Failed {
                    fault,
                    server: Some(server),
                };
            }
        }
    }
}

/// When the polls of one booting server come: the first when this vendor's servers are
/// likely up (`likely_up`, at least `initial_delay`), then the usual backoff from
/// `initial_delay` growing by half up to `max_delay`.
struct PollSchedule<'a> {
    policy: &'a PollPolicy,
    likely_up: Option<Duration>,
    delay: Duration,
}

impl<'a> PollSchedule<'a> {
    fn new(policy: &'a PollPolicy, likely_up: Option<Duration>) -> Self {
        Self {
            policy,
            likely_up,
            delay: policy.initial_delay,
        }
    }

    /// The wait before the next poll: never past the deadline (`left` away), and at least
    /// the wait a rate-limited poll was told to keep (`asked`), within the deadline.
    fn next_wait(&mut self, left: Duration, asked: Option<Duration>) -> Duration {
        let planned = match self.likely_up.take() {
            // The long first wait; the backoff after it starts from `initial_delay`.
            Some(likely) => likely.max(self.policy.initial_delay),
            None => {
                let planned = self.delay;
                self.delay = self.delay.mul_f32(1.5).min(self.policy.max_delay);
                planned
            }
        };
        let mut wait = planned.min(left);
        if let Some(asked) = asked {
            wait = wait.max(asked).min(left);
        }
        wait
    }
}

/// Why a server the vendor reports in error, deleted or being deleted will not run; `None`
/// while it may still (provisioning, stopped, running).
fn not_booting(server: &ServerInfo) -> Option<Fault> {
    match server.status {
        ServerStatus::Error | ServerStatus::Deleted | ServerStatus::Deleting => Some(Fault {
            code: "vendor_error".into(),
            message: format!(
                "the vendor reports server {} as {:?} instead of running",
                server.vendor_id, server.status
            ),
            retryable: true,
        }),
        ServerStatus::Provisioning | ServerStatus::Stopped | ServerStatus::Running => None,
    }
}

/// The fault of a server not running within the poll budget, with the last poll's error.
fn not_running_in_time(
    server: &ServerInfo,
    budget: Duration,
    last_error: Option<&CallError>,
) -> Fault {
    let detail = last_error
        .map(|e| format!("; last poll error: {e}"))
        .unwrap_or_default();
    Fault {
        code: "provision_timeout".into(),
        message: format!(
            "server {} was not running within {budget:?}{detail}",
            server.vendor_id
        ),
        retryable: true,
    }
}

/// What one poll of a booting server found.
enum Poll {
    /// The server as the vendor has it now.
    Seen(ServerInfo),
    /// A passing failure: the next poll tries again.
    Passing(CallError),
    /// The wait ends: the order fails with this fault.
    Ends(Fault),
}

/// Polls the server once.
async fn poll(plugin: &Plugin, order_id: Uuid, vendor_id: &str) -> Poll {
    match plugin.get_server(Some(order_id), vendor_id).await {
        Ok(current) => match server_info(current) {
            Ok(current) => Poll::Seen(current),
            Err(fault) => Poll::Ends(fault),
        },
        Err(error) if poll_may_retry(&error) => Poll::Passing(error),
        Err(error) => Poll::Ends(fault(&error)),
    }
}

/// Whether a failed poll is tried again: a passing failure, but not `no-capacity` (the
/// vendor gave up placing the server).
fn poll_may_retry(error: &CallError) -> bool {
    fault(error).retryable && !matches!(error, CallError::Provider(ProviderError::NoCapacity(_)))
}
/// Deletes a server and polls until the vendor says it is gone (an order's, or an orphan's
/// when `order_id` is none). Answers the server with status `deleted`, or why it is still
/// there.
pub(super) async fn delete_and_wait(
    plugin: &Plugin,
    order_id: Option<Uuid>,
    server: &ServerInfo,
    policy: &PollPolicy,
) -> Result<ServerInfo, Fault> {
    let vendor_id = &server.vendor_id;
    let gone = || ServerInfo {
        status: ServerStatus::Deleted,
        ..server.clone()
    };
    match plugin.delete_server(order_id, vendor_id).await {
        Ok(()) | Err(CallError::Provider(ProviderError::NotFound(_))) => {}
        Err(error) => return Err(fault(&error)),
    }
    let deadline = Instant::now() + policy.budget;
    let mut delay = policy.initial_delay;
    loop {
        match plugin.get_server(order_id, vendor_id).await {
            Err(CallError::Provider(ProviderError::NotFound(_))) => return Ok(gone()),
            Ok(server) if matches!(server.status, WitStatus::Deleted) => return Ok(gone()),
            Ok(_) => {}
            Err(error) if fault(&error).retryable => {
                tracing::warn!(?order_id, %vendor_id, "poll after delete failed, will retry: {error}");
            }
            Err(error) => return Err(fault(&error)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Fault {
                code: "delete_timeout".into(),
                message: format!(
                    "server {vendor_id} was still there {:?} after the delete",
                    policy.budget
                ),
                retryable: true,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay.mul_f32(1.5)).min(policy.max_delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> PollPolicy {
        PollPolicy {
            initial_delay: ms(500),
            max_delay: ms(1_000),
            budget: Duration::from_secs(60),
        }
    }

    fn server(status: ServerStatus) -> ServerInfo {
        ServerInfo {
            vendor_id: "srv-1".into(),
            name: "web-1".into(),
            status,
            ipv4: None,
            ipv6: None,
        }
    }

    #[test]
    fn without_boot_times_polls_back_off_from_the_initial_delay() {
        let policy = policy();
        let mut schedule = PollSchedule::new(&policy, None);
        let waits: Vec<Duration> = (0..4)
            .map(|_| schedule.next_wait(Duration::from_secs(60), None))
            .collect();
        assert_eq!(waits, [ms(500), ms(750), ms(1_000), ms(1_000)]);
    }

    #[test]
    fn the_first_poll_waits_until_the_server_is_likely_up_then_backs_off() {
        let policy = policy();
        let mut schedule = PollSchedule::new(&policy, Some(Duration::from_secs(30)));
        let left = Duration::from_secs(60);
        assert_eq!(schedule.next_wait(left, None), Duration::from_secs(30));
        assert_eq!(schedule.next_wait(left, None), ms(500));
        // A likely-up time shorter than the initial delay waits the initial delay.
        let mut schedule = PollSchedule::new(&policy, Some(ms(10)));
        assert_eq!(schedule.next_wait(left, None), ms(500));
    }

    #[test]
    fn a_poll_waits_what_the_vendor_asked_but_never_past_the_deadline() {
        let policy = policy();
        let mut schedule = PollSchedule::new(&policy, None);
        assert_eq!(schedule.next_wait(ms(60_000), Some(ms(2_000))), ms(2_000));
        assert_eq!(schedule.next_wait(ms(300), Some(ms(2_000))), ms(300));
        assert_eq!(schedule.next_wait(ms(100), None), ms(100));
    }

    #[test]
    fn a_server_in_error_or_going_will_not_run() {
        for status in [
            ServerStatus::Error,
            ServerStatus::Deleted,
            ServerStatus::Deleting,
        ] {
            let fault = not_booting(&server(status)).expect("will not run");
            assert_eq!(fault.code, "vendor_error");
            assert!(fault.retryable);
            assert!(fault.message.contains("srv-1"), "{}", fault.message);
        }
        for status in [
            ServerStatus::Provisioning,
            ServerStatus::Stopped,
            ServerStatus::Running,
        ] {
            assert_eq!(not_booting(&server(status)), None);
        }
    }

    #[test]
    fn a_server_late_to_run_times_out_with_the_last_poll_error() {
        let error = CallError::Timeout {
            call: "get-server",
            after: Duration::from_secs(10),
        };
        let fault = not_running_in_time(
            &server(ServerStatus::Provisioning),
            Duration::from_secs(900),
            Some(&error),
        );
        assert_eq!(fault.code, "provision_timeout");
        assert!(fault.retryable);
        assert_eq!(
            fault.message,
            "server srv-1 was not running within 900s; last poll error: the plugin call \
             get-server did not finish within 10s"
        );
    }

    #[test]
    fn a_poll_is_retried_after_a_passing_failure_but_not_after_no_capacity() {
        let timeout = CallError::Timeout {
            call: "get-server",
            after: Duration::from_secs(10),
        };
        assert!(poll_may_retry(&timeout));
        let no_capacity = CallError::Provider(ProviderError::NoCapacity("zone full".into()));
        assert!(!poll_may_retry(&no_capacity));
        let unauthorized = CallError::Provider(ProviderError::Unauthorized("bad token".into()));
        assert!(!poll_may_retry(&unauthorized));
    }
}
