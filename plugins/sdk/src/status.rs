//! A vendor's server status in the host's terms, from one vendor field or several.
//!
//! Some vendors say what a server is doing in one field (`status: "running"`), others in
//! several that only together mean "running" (Vultr: `status` `active`, `power_status`
//! `running` and `server_status` `ok`). A plugin writes its mapping as a table: each rule
//! lists one pattern per field (the value, or [`ANY`]) and the status it means; the first
//! rule whose every pattern matches wins. A combination no rule matches is logged and
//! reported as `provisioning` (the host keeps polling; the call budget ends it), as the
//! guide's judgment calls say.
//!
//! ```ignore
//! use provider_sdk::status::{self, ANY, Rules};
//! const STATUSES: Rules = &[
//!     (&["active", "running", "ok"], ServerStatus::Running),
//!     (&["active", "stopped", ANY], ServerStatus::Stopped),
//!     (&["pending", ANY, ANY], ServerStatus::Provisioning),
//!     (&["active", ANY, ANY], ServerStatus::Provisioning),
//! ];
//! let status = status::map(&[&vm.status, &vm.power_status, &vm.server_status], STATUSES);
//! ```

use crate::{LogLevel, ServerStatus, log};

/// A pattern matching any value of its field.
pub const ANY: &str = "*";

/// A mapping table: each rule's patterns, field by field (a rule with fewer patterns than
/// fields leaves the rest free), and the status they mean.
pub type Rules = &'static [(&'static [&'static str], ServerStatus)];

/// The status the first matching rule gives `fields`, if any matches.
pub fn lookup(fields: &[&str], rules: Rules) -> Option<ServerStatus> {
    rules.iter().find_map(|(patterns, status)| {
        let matches = patterns.len() <= fields.len()
            && patterns
                .iter()
                .zip(fields)
                .all(|(pattern, value)| *pattern == ANY || pattern == value);
        matches.then_some(*status)
    })
}

/// The status `fields` mean by `rules`; a combination no rule knows is logged and
/// reported as `provisioning`.
pub fn map(fields: &[&str], rules: Rules) -> ServerStatus {
    lookup(fields, rules).unwrap_or_else(|| {
        log(
            LogLevel::Warn,
            &format!("unknown server status {fields:?}, reported as provisioning"),
        );
        ServerStatus::Provisioning
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VULTR: Rules = &[
        (&["active", "running", "ok"], ServerStatus::Running),
        (&["active", "stopped", ANY], ServerStatus::Stopped),
        (&["pending"], ServerStatus::Provisioning),
        (&["active", ANY, ANY], ServerStatus::Provisioning),
    ];

    /// Several fields make one status; the first matching rule wins; `*` and missing
    /// patterns match anything.
    #[test]
    fn fields_together_make_the_status() {
        let of = |fields: &[&str]| lookup(fields, VULTR);
        assert_eq!(
            of(&["active", "running", "ok"]),
            Some(ServerStatus::Running)
        );
        assert_eq!(
            of(&["active", "running", "installingbooting"]),
            Some(ServerStatus::Provisioning)
        );
        assert_eq!(
            of(&["active", "stopped", "none"]),
            Some(ServerStatus::Stopped)
        );
        assert_eq!(
            of(&["pending", "stopped", "none"]),
            Some(ServerStatus::Provisioning)
        );
        assert_eq!(of(&["suspended", "stopped", "ok"]), None);
    }

    /// A rule with more patterns than the fields given never matches.
    #[test]
    fn a_rule_longer_than_the_fields_does_not_match() {
        assert_eq!(lookup(&["active"], VULTR), None);
        const ONE: Rules = &[(&["running"], ServerStatus::Running)];
        assert_eq!(lookup(&["running"], ONE), Some(ServerStatus::Running));
        assert_eq!(lookup(&["creating"], ONE), None);
    }
}
