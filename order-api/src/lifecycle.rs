//! The order state machine: which status may follow which, and what an update from the
//! host does to an order.
//!
//! ```text
//! pending -> queued -> provisioning -> active
//!    \          \            \-------> failed
//!     \          \--> (provisioning | active | failed)
//!      \--> (provisioning | active | failed)
//! ```
//! A host's event can overtake the relay marking the order `queued` (the host is fast), so
//! `provisioning`, `active` and `failed` are reachable from every earlier status. Nothing
//! leaves `active` or `failed`. A transition that is not allowed is ignored, which makes a
//! redelivered or stale message harmless: it finds the order already past it.

use std::fmt;
use std::str::FromStr;

use provisioner_contract::UpdateKind;
use serde::{Deserialize, Serialize};

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Recorded; its creation request waits in the outbox.
    Pending,
    /// The creation request is on the vendor's queue (broker confirmed).
    Queued,
    /// The vendor accepted the create; the server is booting.
    Provisioning,
    /// The server runs.
    Active,
    /// The order cannot be completed; see its fault.
    Failed,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Queued,
        OrderStatus::Provisioning,
        OrderStatus::Active,
        OrderStatus::Failed,
    ];

    /// The name used in JSON, the database and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Queued => "queued",
            OrderStatus::Provisioning => "provisioning",
            OrderStatus::Active => "active",
            OrderStatus::Failed => "failed",
        }
    }

    /// Whether the order is finished.
    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Active | OrderStatus::Failed)
    }

    /// The statuses from which `self` may be entered.
    pub fn allowed_sources(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            Pending => &[],
            Queued => &[Pending],
            Provisioning => &[Pending, Queued],
            Active | Failed => &[Pending, Queued, Provisioning],
        }
    }

    /// Whether an order in `self` may move to `next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        next.allowed_sources().contains(&self)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status '{text}' (one of: {})", names.join(", "))
            })
    }
}

/// The status an update from the host moves an order to.
pub fn target_status(update: &UpdateKind) -> OrderStatus {
    match update {
        UpdateKind::Provisioning { .. } => OrderStatus::Provisioning,
        UpdateKind::Active { .. } => OrderStatus::Active,
        UpdateKind::Failed { .. } => OrderStatus::Failed,
    }
}

/// A line for the order's event log describing an update.
pub fn describe(update: &UpdateKind) -> String {
    match update {
        UpdateKind::Provisioning { server } => format!(
            "vendor accepted the server (vendor id {}); waiting for it to run",
            server.vendor_id
        ),
        UpdateKind::Active { server } => format!(
            "server {} is running{}",
            server.vendor_id,
            server
                .ipv4
                .as_ref()
                .map(|ip| format!(" at {ip}"))
                .unwrap_or_default()
        ),
        UpdateKind::Failed { fault, .. } => format!("failed ({}): {}", fault.code, fault.message),
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    /// The happy path is allowed step by step.
    #[test]
    fn allows_the_happy_path() {
        assert!(Pending.can_become(Queued));
        assert!(Queued.can_become(Provisioning));
        assert!(Provisioning.can_become(Active));
    }

    /// A host event may overtake the relay's `queued`.
    #[test]
    fn allows_host_events_to_overtake_the_relay() {
        assert!(Pending.can_become(Provisioning));
        assert!(Pending.can_become(Active));
        assert!(Queued.can_become(Failed));
    }

    /// Terminal orders never change, and nothing moves backwards.
    #[test]
    fn refuses_illegal_transitions() {
        for next in OrderStatus::ALL {
            assert!(!Active.can_become(next), "active -> {next}");
            assert!(!Failed.can_become(next), "failed -> {next}");
        }
        assert!(!Provisioning.can_become(Queued));
        assert!(!Queued.can_become(Pending));
        assert!(!Provisioning.can_become(Pending));
    }

    /// The same update twice is a no-op the second time: a duplicate is ignored.
    #[test]
    fn duplicates_are_ignored() {
        assert!(!Provisioning.can_become(Provisioning));
        assert!(!Active.can_become(Active));
        assert!(!Queued.can_become(Queued));
    }

    /// Status names round-trip and unknown ones are refused with the list of valid ones.
    #[test]
    fn parses_status_names() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        let error = "done".parse::<OrderStatus>().unwrap_err();
        assert!(error.contains("pending"), "{error}");
    }
}
