//! Bounded log text: anyone who can write under the etcd prefix chooses keys and values, so
//! text taken from them is cut before it reaches a log line or a long-lived set, and the
//! warnings their writes cause are budgeted, so their number does not grow with the writes.
//! And an error with its sources as the one line a command prints.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Characters kept from the start of a long text; the end is kept too (half as many), since
/// what follows a peer's value in a message ("… is not vxlan") says what was wrong. Enough
/// that weft's own messages, which quote a key or a short value, are never cut.
pub const HEAD_CHARS: usize = 256;
const TAIL_CHARS: usize = HEAD_CHARS / 2;

/// A text as it goes into a log: whole when short, else its head, `…(N bytes)…` and its tail.
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a>(&'a str);

/// Wraps `text` (peer-provided, or a message quoting it) for logging, at most about
/// [`HEAD_CHARS`] + 48 characters whatever its length.
pub fn clip(text: &str) -> Clipped<'_> {
    Clipped(text)
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let chars = text.chars().count();
        if chars <= HEAD_CHARS + TAIL_CHARS + 16 {
            return f.write_str(text);
        }
        let head: String = text.chars().take(HEAD_CHARS).collect();
        let tail: String = text.chars().skip(chars - TAIL_CHARS).collect();
        write!(f, "{head}…({} bytes)…{tail}", text.len())
    }
}

/// A fixed-size stand-in for a text in a warn-once set: remembering a peer's megabyte value
/// would let it grow our memory by writing values we only warn about.
pub fn fingerprint(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Individual warnings of one kind logged per [`WARNING_WINDOW`]; more go to debug level.
pub const WARNINGS_PER_WINDOW: u32 = 8;
/// The window over which [`WARNINGS_PER_WINDOW`] applies, and after which the warnings held
/// back in it are summarised in one line.
pub const WARNING_WINDOW: Duration = Duration::from_secs(60);

/// A budget for one kind of warning a peer's writes can cause: the first
/// [`WARNINGS_PER_WINDOW`] in a window are logged at warn level, the rest at debug level, and
/// once the window ends one summary warning counts them. A single bad lease still gets its
/// own warning at once; a writer flipping values or writing thousands of keys gets at most
/// [`WARNINGS_PER_WINDOW`] + 1 lines a minute.
#[derive(Debug)]
pub struct LogBudget {
    /// What the summary counts, in the plural ("peer leases skipped").
    what: &'static str,
    /// What the summary tells the operator to do to see them all.
    hint: &'static str,
    /// When the current window started; `None` while no warning is counted.
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget whose summary reads "`N` more `what` in the last 60 s; `hint`".
    pub const fn new(what: &'static str, hint: &'static str) -> Self {
        LogBudget { what, hint, window_start: None, logged: 0, suppressed: 0 }
    }

    /// Counts one warning at `now`; whether it may be logged at warn level (else at debug).
    /// Ends a window that is over first, with its summary.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.flush(now);
        self.window_start.get_or_insert(now);
        if self.logged < WARNINGS_PER_WINDOW {
            self.logged += 1;
            return true;
        }
        self.suppressed += 1;
        false
    }

    /// When the current window ends, if a summary will be due then; a caller with nothing else
    /// to wake it waits until then and calls [`flush`](Self::flush).
    pub fn summary_at(&self) -> Option<Instant> {
        self.window_start.filter(|_| self.suppressed > 0).map(|start| start + WARNING_WINDOW)
    }

    /// Ends the current window if it is over at `now`, logging how many warnings it held
    /// back, if any.
    pub fn flush(&mut self, now: Instant) {
        let Some(start) = self.window_start else { return };
        if now < start + WARNING_WINDOW {
            return;
        }
        if self.suppressed > 0 {
            let (suppressed, window_s) = (self.suppressed, WARNING_WINDOW.as_secs());
            tracing::warn!(suppressed, window_s, "{suppressed} more {} in the last {window_s} s; {}", self.what, self.hint);
        }
        *self = Self::new(self.what, self.hint);
    }
}

/// Logs a peer-caused event at `level` (`warn`, `error`, `info`) if `budget` ([`LogBudget`])
/// allows it now, else at debug level; then takes the fields and message `tracing::warn!`
/// takes: `log_within!(budget, warn, key = %key, "skipping ...")`.
#[macro_export]
macro_rules! log_within {
    ($budget:expr, $level:ident, $($event:tt)+) => {
        if $budget.allow(::std::time::Instant::now()) {
            ::tracing::$level!($($event)+)
        } else {
            ::tracing::debug!($($event)+)
        }
    };
}

/// `error` and its sources on one line, `outer: inner: innermost`, leaving out a source whose
/// text its parent's already holds: many of weft's errors quote their source's text in their
/// own.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut parent = line.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parent.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        parent = text;
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot reach etcd: {0}")]
        Quoting(#[source] Inner),
        #[error("cannot reach etcd")]
        Plain(#[source] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("etcd get config failed: dns error")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn an_error_line_names_each_source_once() {
        let inner = || Inner(std::io::Error::other("no such host"));
        assert_eq!(error_line(&Outer::Quoting(inner())), "cannot reach etcd: etcd get config failed: dns error: no such host");
        assert_eq!(error_line(&Outer::Plain(inner())), "cannot reach etcd: etcd get config failed: dns error: no such host");
        // Only the parent's text counts: a cause that happens to appear further up stays.
        let deep = Outer::Plain(Inner(std::io::Error::other("reach")));
        assert_eq!(error_line(&deep), "cannot reach etcd: etcd get config failed: dns error: reach");
    }

    #[test]
    fn short_text_is_logged_whole() {
        assert_eq!(clip("backend type \"udp\" is not vxlan").to_string(), "backend type \"udp\" is not vxlan");
    }

    #[test]
    fn long_text_keeps_its_head_its_tail_and_its_size() {
        let text = format!("backend type \"{}\" is not vxlan", "x".repeat(1_000_000));
        let logged = clip(&text).to_string();
        assert!(logged.len() < 500, "{logged}");
        assert!(logged.starts_with("backend type \"xxx"), "{logged}");
        assert!(logged.contains(&format!("…({} bytes)…", text.len())), "{logged}");
        assert!(logged.ends_with("xx\" is not vxlan"), "{logged}");
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let text = "é".repeat(500);
        let logged = clip(&text).to_string();
        assert!(logged.starts_with(&"é".repeat(HEAD_CHARS)));
        assert!(logged.contains("…(1000 bytes)…"));
    }

    #[test]
    fn fingerprints_tell_texts_apart() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }

    fn budget() -> LogBudget {
        LogBudget::new("peer leases skipped", "`weftd status` lists them")
    }

    #[test]
    fn a_few_warnings_are_each_logged_at_once_with_no_summary() {
        let (mut budget, start) = (budget(), Instant::now());
        assert!((0..WARNINGS_PER_WINDOW).all(|i| budget.allow(start + Duration::from_secs(u64::from(i)))));
        assert_eq!(budget.summary_at(), None, "nothing held back, nothing to summarise");
        budget.flush(start + WARNING_WINDOW);
        assert!(budget.allow(start + WARNING_WINDOW), "a new window has a new budget");
    }

    #[test]
    fn warnings_beyond_the_budget_are_held_back_and_counted_until_the_window_ends() {
        let (mut budget, start) = (budget(), Instant::now());
        let allowed = (0..1000).filter(|_| budget.allow(start)).count();
        assert_eq!(allowed, WARNINGS_PER_WINDOW as usize);
        assert_eq!(budget.suppressed, 1000 - u64::from(WARNINGS_PER_WINDOW));
        assert_eq!(budget.summary_at(), Some(start + WARNING_WINDOW), "the summary is due when the window ends");
        assert!(!budget.allow(start + WARNING_WINDOW - Duration::from_millis(1)), "still the same window");
        budget.flush(start + WARNING_WINDOW);
        assert_eq!((budget.suppressed, budget.summary_at()), (0, None), "summarised once, then forgotten");
        assert!(budget.allow(start + WARNING_WINDOW));
    }

    #[test]
    fn a_window_ends_by_itself_at_the_next_warning() {
        let (mut budget, start) = (budget(), Instant::now());
        (0..20).for_each(|_| _ = budget.allow(start));
        let later = start + 2 * WARNING_WINDOW;
        assert!(budget.allow(later), "the held-back count is summarised and a new window starts");
        assert_eq!((budget.logged, budget.suppressed, budget.window_start), (1, 0, Some(later)));
    }
}
