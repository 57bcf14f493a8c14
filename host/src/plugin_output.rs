//! What comes out of a plugin, contained at the boundary: every string a plugin hands the
//! host (error messages, `log()` lines, its `info`, its servers' fields) is capped and
//! sanitised right after the call's answer is lifted into the host, before anything formats,
//! logs, stores or publishes it.
//!
//! Two kinds of string, two treatments:
//! - **Text for people** (error messages, log lines, the display name and version) is cut
//!   to a cap and its control characters are escaped visibly (`\n`, `\r`, `\u{1b}`, ...), so
//!   it can neither grow a fault, a message or a log line without bound nor forge a line of
//!   the host's log.
//! - **Values used again** (a server's vendor id, which later polls and deletes send back;
//!   its name and addresses, which orders record; a listed server's idempotency key) are
//!   never cut or altered: one that is oversized or malformed makes the whole answer a
//!   `plugin_bad_answer` ([`crate::runtime::CallError::BadAnswer`]).
//!
//! [`PluginOutput`] is the one trait every export's answer passes through in
//! [`crate::runtime`]. [`LogGate`] is the per-plugin volume limit of `log()` lines, and
//! [`bounded_body`] keeps every message the host publishes about an order within
//! [`MAX_UPDATE_BYTES`], whatever a bug upstream let through.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use provisioner_contract::{Fault, HostMessage, UpdateKind, encode};

use crate::bindings::types::{LabelledServer, PluginCatalogue, PluginInfo, ProviderError, Server};

/// Longest plugin text (an error message of any `provider-error` case) the host keeps, in
/// bytes after escaping. Enough for a vendor's error with its request id and a sentence of
/// context; small enough that a fault, the event log entry, the result message and the log
/// line that carry it stay a few KiB (order-api cuts a problem's `detail` to 1,024
/// characters anyway).
pub const MAX_PLUGIN_TEXT_BYTES: usize = 2 * 1024;

/// Longest plugin `log()` line, in bytes after escaping (the same reasoning as
/// [`MAX_PLUGIN_TEXT_BYTES`]: a log line is for a person to read).
pub const MAX_LOG_LINE_BYTES: usize = 2 * 1024;

/// Longest display name a plugin's `info` may give, in characters: a product name fits
/// ("DigitalOcean", "OpenStack (Keystone v3 + Nova)"); it is announced every 30 s and listed
/// by `GET /v1/vendors`.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// Longest plugin version `info` may give, in characters: a SemVer with pre-release and
/// build metadata fits.
pub const MAX_VERSION_CHARS: usize = 64;

/// Longest identifier a plugin may answer, in bytes: a server's vendor id and name, a
/// listed server's idempotency key. The longest real ids are far shorter (UUIDs, AWS
/// `i-` ids, OpenStack UUIDs); order-api allows 255 characters for names too.
pub const MAX_IDENTIFIER_BYTES: usize = 255;

/// Longest address a plugin may answer, in bytes: an IPv6 network with its prefix length
/// (`ffff:...:ffff/128`) is 43.
pub const MAX_ADDRESS_BYTES: usize = 64;

/// The most `log()` lines one plugin may write each second, over time. A plugin's own
/// lines are for incidents (a key filed, a fallback taken): a few per order. At this rate
/// and [`MAX_LOG_LINE_BYTES`] a plugin adds at most about 100 KiB a second to the host's log.
pub const LOG_LINES_PER_SECOND: u32 = 50;

/// The `log()` lines a plugin may write at once before [`LOG_LINES_PER_SECOND`] applies
/// (a burst of orders each logging a line).
pub const LOG_BURST: u32 = 100;

/// How often, at most, the host warns that it dropped a plugin's log lines (with their
/// count since the last warning).
pub const LOG_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The largest message the host publishes about an order (an event or a result) or an
/// orphan delete, in bytes. Every field in one is bounded well below it (identifiers 255
/// bytes, texts 2 KiB); RabbitMQ refuses messages above 16 MiB (4.x) or 128 MiB (3.x) by
/// ending the channel, so a message must never get near that.
pub const MAX_UPDATE_BYTES: usize = 64 * 1024;

/// The largest vendor announcement the host publishes, in bytes. An announcement carries the
/// plugin's catalogue (WIT 0.5), bounded where it is made ([`crate::vendor_catalogue`]: three
/// lists of at most 1,000 entries of at most 128 bytes, about 800 KB as JSON at worst), so it
/// may pass [`MAX_UPDATE_BYTES`]; one beyond even this is sent without its catalogue.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 1024 * 1024;

/// Room kept at the end of a cut text for the mark that says how much was cut.
const CUT_MARK_RESERVE: usize = 40;

/// Whether `c` must be escaped before the host shows it: control characters (C0, DEL,
/// C1: newlines, carriage returns, ANSI escapes), Unicode line and paragraph separators, and
/// the bidirectional-text controls that reorder what a terminal shows.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Appends `c` to `out`, escaped visibly when it [`needs_escape`].
fn push_visible(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// `text` as the host may show it: control characters escaped visibly, and at most
/// `max_bytes` bytes (a cap under 40 bytes leaves room for the mark only); a cut text ends
/// with `… [N more bytes]` (N of the plugin's bytes). Reads no more of `text` than the cap
/// needs, however long it is.
pub fn contained_text(text: &str, max_bytes: usize) -> String {
    let keep = max_bytes.saturating_sub(CUT_MARK_RESERVE);
    let mut out = String::with_capacity(text.len().min(max_bytes));
    // Where the text is cut if it does not fit whole: (bytes of `out`, index in `text`).
    let mut cut_at: Option<(usize, usize)> = None;
    for (index, c) in text.char_indices() {
        let before = out.len();
        push_visible(&mut out, c);
        if cut_at.is_none() && out.len() > keep {
            cut_at = Some((before, index));
        }
        if out.len() > max_bytes {
            let (kept, at) = cut_at.unwrap_or((0, 0));
            out.truncate(kept);
            let _ = write!(out, "… [{} more bytes]", text.len() - at);
            return out;
        }
    }
    out
}

/// `text` as a short name for people: escaped like [`contained_text`], at most `max_chars`
/// characters, a cut one ending with `…`.
pub fn contained_name(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    // Where the name is cut if it does not fit whole: room for the `…` after it.
    let mut cut_at: Option<usize> = None;
    for c in text.chars() {
        let before = out.len();
        push_visible(&mut out, c);
        chars += out[before..].chars().count();
        if cut_at.is_none() && chars > max_chars.saturating_sub(1) {
            cut_at = Some(before);
        }
        if chars > max_chars {
            out.truncate(cut_at.unwrap_or(0));
            out.push('…');
            return out;
        }
    }
    out
}

/// A wasmtime error (a trap, a failed instantiation) as the host may show it: its chain,
/// contained like plugin text, since its backtrace names the plugin's own functions.
pub fn contained_error(error: &wasmtime::Error) -> String {
    contained_text(&format!("{error:#}"), MAX_PLUGIN_TEXT_BYTES)
}

/// A provider error shown for people: its WIT case and its (already contained) text, e.g.
/// `transient(the vendor answered 503)` or `rate-limited(Some(1000))`. Never `Debug`.
pub fn describe(error: &ProviderError) -> impl fmt::Display + '_ {
    Described(error)
}

struct Described<'a>(&'a ProviderError);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ProviderError::InvalidRequest(m) => write!(f, "invalid-request({m})"),
            ProviderError::Unauthorized(m) => write!(f, "unauthorized({m})"),
            ProviderError::NotFound(m) => write!(f, "not-found({m})"),
            ProviderError::QuotaExceeded(m) => write!(f, "quota-exceeded({m})"),
            ProviderError::RateLimited(ms) => write!(f, "rate-limited({ms:?})"),
            ProviderError::Transient(m) => write!(f, "transient({m})"),
            ProviderError::NoCapacity(m) => write!(f, "no-capacity({m})"),
            ProviderError::Internal(m) => write!(f, "internal({m})"),
        }
    }
}

/// Why an identifier a plugin answered cannot be taken; `None` when it can. `what` names it
/// ("a vendor id"); the value itself is quoted only in part (it may be huge or hostile).
fn identifier_problem(what: &str, value: &str, may_be_empty: bool) -> Option<String> {
    if value.is_empty() && !may_be_empty {
        return Some(format!("an empty {what}"));
    }
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Some(format!(
            "a {what} of {} bytes (at most {MAX_IDENTIFIER_BYTES})",
            value.len()
        ));
    }
    if value.chars().any(needs_escape) {
        return Some(format!(
            "a {what} with control characters ({})",
            contained_text(value, 64)
        ));
    }
    None
}

/// Why an address a plugin answered is not one; `None` when it is. IPv4 is a plain
/// address; IPv6 may also be a network (`addr/len`, as Hetzner gives it).
fn address_problem(family: u8, value: &str) -> Option<String> {
    let is_address = value.len() <= MAX_ADDRESS_BYTES
        && match family {
            4 => value.parse::<Ipv4Addr>().is_ok(),
            _ => match value.split_once('/') {
                None => value.parse::<Ipv6Addr>().is_ok(),
                Some((address, length)) => {
                    address.parse::<Ipv6Addr>().is_ok()
                        && length.len() <= 3
                        && length.parse::<u8>().is_ok_and(|length| length <= 128)
                }
            },
        };
    (!is_address).then(|| {
        format!(
            "an IPv{family} address that is not one ({})",
            contained_text(value, MAX_ADDRESS_BYTES)
        )
    })
}

/// Why the host cannot take a server a plugin answered; `None` when it can. Nothing is
/// cut: these values are stored, shown and sent back to the plugin.
pub fn server_problem(server: &Server) -> Option<String> {
    identifier_problem("vendor id", &server.vendor_id, false)
        .or_else(|| identifier_problem("server name", &server.name, true))
        .or_else(|| server.ipv4.as_deref().and_then(|ip| address_problem(4, ip)))
        .or_else(|| server.ipv6.as_deref().and_then(|ip| address_problem(6, ip)))
}

/// An export's answer as it enters the host: every text capped and escaped, every
/// identifier checked.
pub trait PluginOutput: Sized {
    /// The answer the host may use; why not (for a `plugin_bad_answer`) when an identifier
    /// or address in it is oversized or malformed.
    fn contained(self) -> Result<Self, String>;
}

impl PluginOutput for () {
    fn contained(self) -> Result<Self, String> {
        Ok(())
    }
}

impl PluginOutput for PluginInfo {
    fn contained(self) -> Result<Self, String> {
        // The vendor is compared with the manifest's at load, never shown cut.
        if let Some(problem) = identifier_problem("vendor", &self.vendor, false) {
            return Err(problem);
        }
        Ok(PluginInfo {
            vendor: self.vendor,
            display_name: contained_name(&self.display_name, MAX_DISPLAY_NAME_CHARS),
            version: contained_name(&self.version, MAX_VERSION_CHARS),
        })
    }
}

/// Taken whole here: [`crate::vendor_catalogue::clean`] cleans it next (it reports what it
/// dropped, which the host logs with the vendor), before anything shows or publishes it.
impl PluginOutput for PluginCatalogue {
    fn contained(self) -> Result<Self, String> {
        Ok(self)
    }
}

impl PluginOutput for Server {
    fn contained(self) -> Result<Self, String> {
        match server_problem(&self) {
            Some(problem) => Err(problem),
            None => Ok(self),
        }
    }
}

impl PluginOutput for LabelledServer {
    fn contained(self) -> Result<Self, String> {
        if let Some(problem) = identifier_problem("idempotency key", &self.idempotency_key, false) {
            return Err(format!("a listed server with {problem}"));
        }
        Ok(LabelledServer {
            idempotency_key: self.idempotency_key,
            server: self.server.contained()?,
        })
    }
}

impl<T: PluginOutput> PluginOutput for Option<T> {
    fn contained(self) -> Result<Self, String> {
        self.map(T::contained).transpose()
    }
}

impl<T: PluginOutput> PluginOutput for Vec<T> {
    fn contained(self) -> Result<Self, String> {
        self.into_iter().map(T::contained).collect()
    }
}

impl PluginOutput for ProviderError {
    /// Every case's text is cut and escaped; an error is never refused for its text.
    fn contained(self) -> Result<Self, String> {
        let text = |message: String| contained_text(&message, MAX_PLUGIN_TEXT_BYTES);
        Ok(match self {
            ProviderError::InvalidRequest(m) => ProviderError::InvalidRequest(text(m)),
            ProviderError::Unauthorized(m) => ProviderError::Unauthorized(text(m)),
            ProviderError::NotFound(m) => ProviderError::NotFound(text(m)),
            ProviderError::QuotaExceeded(m) => ProviderError::QuotaExceeded(text(m)),
            ProviderError::RateLimited(ms) => ProviderError::RateLimited(ms),
            ProviderError::Transient(m) => ProviderError::Transient(text(m)),
            ProviderError::NoCapacity(m) => ProviderError::NoCapacity(text(m)),
            ProviderError::Internal(m) => ProviderError::Internal(text(m)),
        })
    }
}

impl<T: PluginOutput> PluginOutput for Result<T, ProviderError> {
    fn contained(self) -> Result<Self, String> {
        match self {
            Ok(answer) => answer.contained().map(Ok),
            Err(error) => error.contained().map(Err),
        }
    }
}

/// The volume limit of one plugin's `log()` lines: a token bucket of [`LOG_BURST`] lines
/// refilled at [`LOG_LINES_PER_SECOND`], with the count of lines it dropped since the last
/// summary.
#[derive(Debug)]
pub struct LogGate {
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    tokens: f64,
    refilled_at: Instant,
    dropped: u64,
    summary_due: bool,
}

/// What to do with one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    /// Write it.
    Write,
    /// Drop it; a summary of the drops is already due.
    Drop,
    /// Drop it, the first since the last summary: one is due after [`LOG_REPORT_INTERVAL`].
    DropAndSummarize,
}

impl LogGate {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(GateState {
                tokens: f64::from(LOG_BURST),
                refilled_at: now,
                dropped: 0,
                summary_due: false,
            }),
        }
    }

    /// Takes a line at `now`: written if the bucket has a token, else dropped and counted.
    pub fn admit(&self, now: Instant) -> LogVerdict {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(state.refilled_at);
        state.tokens = (state.tokens + elapsed.as_secs_f64() * f64::from(LOG_LINES_PER_SECOND))
            .min(f64::from(LOG_BURST));
        state.refilled_at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            return LogVerdict::Write;
        }
        state.dropped += 1;
        if std::mem::replace(&mut state.summary_due, true) {
            LogVerdict::Drop
        } else {
            LogVerdict::DropAndSummarize
        }
    }

    /// The lines dropped since the last summary, for the summary now due.
    pub fn take_dropped(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.summary_due = false;
        std::mem::take(&mut state.dropped)
    }
}

/// Each vendor's log gate, for the life of the process: a replaced or reloaded plugin of a
/// vendor shares its predecessor's bucket (the gate lives beside the calls' stores, which
/// come and go with each call).
static LOG_GATES: LazyLock<Mutex<HashMap<String, Arc<LogGate>>>> = LazyLock::new(Mutex::default);

/// The log gate of `vendor`'s plugin.
pub fn log_gate(vendor: &str) -> Arc<LogGate> {
    let mut gates = LOG_GATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(gate) = gates.get(vendor) {
        return gate.clone();
    }
    let gate = Arc::new(LogGate::new(Instant::now()));
    gates.insert(vendor.to_string(), gate.clone());
    gate
}

/// Whether one of `vendor`'s `log()` lines may be written now. A dropped line is counted
/// (`provisioner_plugin_log_lines_dropped_total`); the first drop after a summary schedules
/// the next one, a warning with the count [`LOG_REPORT_INTERVAL`] later, so a flood costs
/// one warning per interval however long it lasts.
pub fn admit_log_line(vendor: &str) -> bool {
    let gate = log_gate(vendor);
    let verdict = gate.admit(Instant::now());
    if verdict == LogVerdict::Write {
        return true;
    }
    crate::metrics::count_dropped_log_line(vendor);
    if verdict == LogVerdict::DropAndSummarize {
        let vendor = vendor.to_string();
        let summarize = move || {
            let dropped = gate.take_dropped();
            tracing::warn!(
                plugin = %vendor,
                dropped,
                "plugin log lines dropped: {dropped} over its limit of {LOG_LINES_PER_SECOND} \
                 a second (bursts of {LOG_BURST})"
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(LOG_REPORT_INTERVAL).await;
                    summarize();
                });
            }
            // Plugin calls run on a runtime; without one there is no later, so say it now.
            Err(_) => summarize(),
        }
    }
    false
}

/// A message the host publishes, encoded, within its bound.
#[derive(Debug)]
pub struct BoundedBody {
    /// The encoded message.
    pub body: Vec<u8>,
    /// The size of the message as it was, when it was over [`MAX_UPDATE_BYTES`] and its
    /// plugin-made part was replaced with a `plugin_bad_answer` fault.
    pub replaced: Option<usize>,
    /// The message encoded instead of the one given, when it was [`BoundedBody::replaced`].
    pub replacement: Option<HostMessage>,
}

/// Encodes a message about an order (or an orphan delete, an announcement) so that it
/// never exceeds [`MAX_UPDATE_BYTES`]: an oversized one becomes the failure of the same
/// step (`plugin_bad_answer`, without the server; always a final update, so a result),
/// which the broker always takes. Vendor inventories are bounded by their own, larger
/// limit where they are made; announcements by [`MAX_ANNOUNCEMENT_BYTES`] (beyond it,
/// without their catalogue).
pub fn bounded_body(message: &HostMessage) -> BoundedBody {
    let body = encode(message);
    let limit = match message {
        HostMessage::VendorAnnounced(_) => MAX_ANNOUNCEMENT_BYTES,
        _ => MAX_UPDATE_BYTES,
    };
    if body.len() <= limit || matches!(message, HostMessage::Inventory(_)) {
        return BoundedBody {
            body,
            replaced: None,
            replacement: None,
        };
    }
    let size = body.len();
    let fault = Fault {
        code: "plugin_bad_answer".into(),
        message: format!(
            "the host could not publish this update: it was {size} bytes, more than one \
             message may carry ({MAX_UPDATE_BYTES})"
        ),
        retryable: false,
    };
    let smaller = match message.clone() {
        HostMessage::OrderUpdate(mut update) => {
            update.kind = match update.kind {
                UpdateKind::Deleted { .. } | UpdateKind::DeleteFailed { .. } => {
                    UpdateKind::DeleteFailed { fault }
                }
                UpdateKind::Cancelled { .. }
                | UpdateKind::CancelFailed { .. }
                | UpdateKind::Adopted { .. } => UpdateKind::CancelFailed {
                    fault,
                    server: None,
                },
                UpdateKind::Provisioning { .. }
                | UpdateKind::Active { .. }
                | UpdateKind::Failed { .. }
                | UpdateKind::Retrying { .. } => UpdateKind::Failed {
                    fault,
                    server: None,
                },
            };
            HostMessage::OrderUpdate(update)
        }
        HostMessage::OrphanDeleted(mut deleted) => {
            deleted.vendor_id = contained_text(&deleted.vendor_id, MAX_IDENTIFIER_BYTES);
            deleted.fault = Some(fault);
            HostMessage::OrphanDeleted(deleted)
        }
        HostMessage::VendorAnnounced(mut announced) => {
            announced.display_name =
                contained_name(&announced.display_name, MAX_DISPLAY_NAME_CHARS);
            announced.plugin_version = contained_name(&announced.plugin_version, MAX_VERSION_CHARS);
            announced.catalogue = None;
            HostMessage::VendorAnnounced(announced)
        }
        other => other,
    };
    BoundedBody {
        body: encode(&smaller),
        replaced: Some(size),
        replacement: Some(smaller),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::types::ServerStatus;

    fn server(vendor_id: &str, ipv4: Option<&str>, ipv6: Option<&str>) -> Server {
        Server {
            vendor_id: vendor_id.into(),
            name: "web-1".into(),
            status: ServerStatus::Running,
            ipv4: ipv4.map(str::to_string),
            ipv6: ipv6.map(str::to_string),
        }
    }

    /// Short, plain text passes unchanged.
    #[test]
    fn short_plain_text_is_kept_as_it_is() {
        let text = "the vendor answered 503 (request 7f3a) — später nochmal";
        assert_eq!(contained_text(text, MAX_PLUGIN_TEXT_BYTES), text);
    }

    /// Control characters come out escaped, so a newline cannot start a line of the host's
    /// log, and an ANSI escape cannot move the cursor.
    #[test]
    fn control_characters_are_escaped_visibly() {
        let shown = contained_text(
            "a\nb\rc\td\u{1b}[2Ke\u{0}f\u{7f}g\u{85}h\u{2028}i\u{202e}j",
            MAX_PLUGIN_TEXT_BYTES,
        );
        assert_eq!(
            shown,
            "a\\nb\\rc\\td\\u{1b}[2Ke\\u{0}f\\u{7f}g\\u{85}h\\u{2028}i\\u{202e}j"
        );
        assert!(!shown.chars().any(needs_escape));
    }

    /// A 34 MB text is cut to the cap (escapes counted), saying how much was cut.
    #[test]
    fn a_huge_text_is_cut_to_the_cap() {
        let huge = "e\u{1}\u{1}\n".repeat(34_600_000 / 4);
        let shown = contained_text(&huge, MAX_PLUGIN_TEXT_BYTES);
        assert!(shown.len() <= MAX_PLUGIN_TEXT_BYTES, "{}", shown.len());
        assert!(shown.len() >= MAX_PLUGIN_TEXT_BYTES - CUT_MARK_RESERVE - 16);
        assert!(shown.starts_with("e\\u{1}\\u{1}\\n"), "{shown}");
        assert!(shown.ends_with(" more bytes]"), "{shown}");
        assert!(!shown.chars().any(needs_escape));
    }

    /// The cut never splits a character or an escape, for any cap.
    #[test]
    fn cuts_fall_between_characters() {
        let text = "añ€😀\n".repeat(50);
        for cap in 0..200 {
            let shown = contained_text(&text, cap);
            assert!(
                shown.len() <= cap.max(CUT_MARK_RESERVE),
                "cap {cap}: {shown}"
            );
            if shown.len() < text.len() {
                let kept = shown.split("… [").next().unwrap_or_default();
                assert!(!kept.ends_with('\\'), "cap {cap}: {shown}");
            }
        }
        // Exactly at the cap: kept whole.
        assert_eq!(contained_text("abcd", 4), "abcd");
    }

    /// Names are cut by characters, ending with an ellipsis.
    #[test]
    fn names_are_cut_by_characters() {
        let name = contained_name(&"N".repeat(2_000_000), MAX_DISPLAY_NAME_CHARS);
        assert_eq!(name.chars().count(), MAX_DISPLAY_NAME_CHARS);
        assert!(name.ends_with('…'));
        assert_eq!(
            contained_name("DigitalOcean", MAX_DISPLAY_NAME_CHARS),
            "DigitalOcean"
        );
        let exact = "é".repeat(MAX_VERSION_CHARS);
        assert_eq!(contained_name(&exact, MAX_VERSION_CHARS), exact);
        assert_eq!(contained_name("v1\n", 10), "v1\\n");
    }

    /// Provider errors: every case's text is contained; `describe` shows the WIT case and
    /// the text, never `Debug` escapes.
    #[test]
    fn provider_errors_are_contained_and_described() {
        let error = ProviderError::Transient(format!("down\n{}", "x".repeat(10_000)))
            .contained()
            .expect("errors are never refused");
        let shown = describe(&error).to_string();
        assert!(shown.starts_with("transient(down\\nxxx"), "{shown}");
        assert!(shown.len() <= MAX_PLUGIN_TEXT_BYTES + 16, "{}", shown.len());
        assert_eq!(
            describe(&ProviderError::RateLimited(Some(1000))).to_string(),
            "rate-limited(Some(1000))"
        );
    }

    /// Servers: identifiers and addresses are checked, never cut.
    #[test]
    fn server_fields_are_checked_not_cut() {
        assert_eq!(server_problem(&server("42", Some("192.0.2.1"), None)), None);
        assert_eq!(
            server_problem(&server("42", None, Some("2001:db8::/64"))),
            None
        );
        assert_eq!(
            server_problem(&server("42", None, Some("2001:db8::1"))),
            None
        );
        for bad in [
            server("", None, None),
            server(&"7".repeat(256), None, None),
            server("42\nFORGED", None, None),
            server("42\u{202e}", None, None),
            server("42", Some("192.0.2.300"), None),
            server("42", Some("192.0.2.1/32"), None),
            server("42", Some("2001:db8::1"), None),
            server("42", None, Some("192.0.2.1")),
            server("42", None, Some("2001:db8::/129")),
            server("42", None, Some("2001:db8::/0064")),
            server(
                "42",
                None,
                Some(&format!("2001:db8::{}", "1".repeat(10_000))),
            ),
        ] {
            let problem = server_problem(&bad).unwrap_or_else(|| panic!("took {bad:?}"));
            assert!(problem.len() <= 200, "{problem}");
            assert!(!problem.chars().any(needs_escape), "{problem}");
        }
        let mut long_name = server("42", None, None);
        long_name.name = "n".repeat(MAX_IDENTIFIER_BYTES + 1);
        assert!(server_problem(&long_name).is_some());
    }

    /// `info`: the display name and version are cut; a malformed vendor is refused.
    #[test]
    fn info_is_capped() {
        let info = PluginInfo {
            vendor: "acme".into(),
            display_name: "N".repeat(2_000_000),
            version: "1.0.0\n".repeat(100),
        }
        .contained()
        .expect("taken");
        assert_eq!(info.display_name.chars().count(), MAX_DISPLAY_NAME_CHARS);
        assert!(info.version.chars().count() <= MAX_VERSION_CHARS);
        assert!(!info.version.contains('\n'));
        let forged = PluginInfo {
            vendor: "acme\nFORGED".into(),
            display_name: String::new(),
            version: String::new(),
        };
        assert!(forged.contained().is_err());
    }

    /// A listing with one malformed idempotency key is refused whole.
    #[test]
    fn a_listing_with_a_bad_key_is_refused() {
        let listed = vec![
            LabelledServer {
                idempotency_key: "0195f7f2-0000-7000-8000-000000000001".into(),
                server: server("1", None, None),
            },
            LabelledServer {
                idempotency_key: "k".repeat(300),
                server: server("2", None, None),
            },
        ];
        let refused = listed.contained().expect_err("refused");
        assert!(
            refused.contains("idempotency key of 300 bytes"),
            "{refused}"
        );
    }

    /// The log gate lets a burst through, then the rate.
    #[test]
    fn the_log_gate_admits_a_burst_then_the_rate() {
        let start = Instant::now();
        let gate = LogGate::new(start);
        let written = (0..1_000)
            .filter(|_| gate.admit(start) == LogVerdict::Write)
            .count();
        assert_eq!(written, LOG_BURST as usize);
        // One second later: the rate's worth more.
        let later = start + Duration::from_secs(1);
        let written = (0..1_000)
            .filter(|_| gate.admit(later) == LogVerdict::Write)
            .count();
        assert_eq!(written, LOG_LINES_PER_SECOND as usize);
    }

    /// Only the first drop after a summary asks for the next one, which counts every drop
    /// since.
    #[test]
    fn one_summary_counts_every_drop_until_it() {
        let start = Instant::now();
        let gate = LogGate::new(start);
        for _ in 0..LOG_BURST {
            assert_eq!(gate.admit(start), LogVerdict::Write);
        }
        assert_eq!(gate.admit(start), LogVerdict::DropAndSummarize);
        for _ in 0..499 {
            assert_eq!(gate.admit(start), LogVerdict::Drop);
        }
        assert_eq!(gate.take_dropped(), 500);
        assert_eq!(gate.admit(start), LogVerdict::DropAndSummarize);
        assert_eq!(gate.take_dropped(), 1);
    }

    /// Every dropped line is counted in the metric, and it is served.
    #[tokio::test]
    async fn dropped_lines_are_counted_in_the_metric() {
        let vendor = format!("flood-{}", uuid::Uuid::new_v4().simple());
        let written = (0..LOG_BURST + 7)
            .filter(|_| admit_log_line(&vendor))
            .count();
        assert!(written <= LOG_BURST as usize + 1, "{written}");
        let text = crate::metrics::HostMetrics::default()
            .render()
            .expect("rendered");
        let series = format!("provisioner_plugin_log_lines_dropped_total{{vendor=\"{vendor}\"}}");
        let line = text
            .lines()
            .find(|line| line.starts_with(&series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        let counted: u64 = line[series.len()..].trim().parse().expect("a number");
        assert_eq!(counted as usize, LOG_BURST as usize + 7 - written);
    }

    /// An update too large for one message becomes the same step's `plugin_bad_answer`
    /// failure, within the bound; one that fits is encoded as it is.
    #[test]
    fn an_oversized_update_becomes_a_small_failure() {
        use provisioner_contract::{OrderUpdate, ServerInfo, ServerStatus};

        let update = |kind| {
            HostMessage::OrderUpdate(OrderUpdate {
                order_id: uuid::Uuid::nil(),
                vendor: "acme".into(),
                at: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
                attempt: 1,
                kind,
            })
        };
        let huge_fault = Fault {
            code: "plugin_error".into(),
            message: "x".repeat(MAX_UPDATE_BYTES),
            retryable: false,
        };
        let fits = bounded_body(&update(UpdateKind::Active {
            server: ServerInfo {
                vendor_id: "1".into(),
                name: "web".into(),
                status: ServerStatus::Running,
                ipv4: None,
                ipv6: None,
            },
        }));
        assert_eq!(fits.replaced, None);

        for (kind, status) in [
            (
                UpdateKind::Failed {
                    fault: huge_fault.clone(),
                    server: None,
                },
                "failed",
            ),
            (
                UpdateKind::DeleteFailed {
                    fault: huge_fault.clone(),
                },
                "delete_failed",
            ),
            (
                UpdateKind::CancelFailed {
                    fault: huge_fault.clone(),
                    server: None,
                },
                "cancel_failed",
            ),
        ] {
            let bounded = bounded_body(&update(kind));
            assert!(bounded.replaced.is_some_and(|size| size > MAX_UPDATE_BYTES));
            assert!(bounded.body.len() <= MAX_UPDATE_BYTES);
            let message: serde_json::Value = serde_json::from_slice(&bounded.body).expect("json");
            assert_eq!(message["status"], status, "{message}");
            assert_eq!(message["fault"]["code"], "plugin_bad_answer", "{message}");
        }
    }

    /// An announcement with the largest catalogue a host keeps (three full lists of the
    /// longest entries, each needing JSON escapes) is published whole.
    #[test]
    fn the_largest_catalogue_is_announced_whole() {
        use provisioner_contract::messages::{VendorAnnouncement, VendorCatalogue};
        let list = || {
            Some(
                (0..VendorCatalogue::MAX_ENTRIES)
                    .map(|i| {
                        format!(
                            "{i:04}{}",
                            "\"".repeat(VendorCatalogue::MAX_ENTRY_BYTES - 4)
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let catalogue = VendorCatalogue {
            regions: list(),
            sizes: list(),
            images: list(),
        };
        let message = HostMessage::VendorAnnounced(VendorAnnouncement {
            vendor: "acme".into(),
            display_name: "Acme".into(),
            plugin_version: "1.0.0".into(),
            host_id: "host-1".into(),
            at: chrono::Utc::now(),
            catalogue: Some(catalogue.clone()),
        });
        let bounded = bounded_body(&message);
        assert!(bounded.replaced.is_none());
        assert!(bounded.body.len() > MAX_UPDATE_BYTES);
        let HostMessage::VendorAnnounced(published) =
            serde_json::from_slice::<HostMessage>(&bounded.body).expect("json")
        else {
            panic!("not an announcement");
        };
        assert_eq!(published.catalogue, Some(catalogue));
    }
}
