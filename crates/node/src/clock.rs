//! Time as the node sees it: milliseconds since the Unix epoch (UTC) and ISO dates, and the
//! [`Clock`] a node reads them from — the system clock in production, a [`ManualClock`] that
//! tests set and step (forwards and back), so that no test races the wall clock.

use crate::NodeError;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use time::{Date, OffsetDateTime};

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The system clock's time now.
pub fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Where a node reads the time. Decisions take their time from here; only waiting (how
/// long a worker sleeps) uses the runtime's timer.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that stands still until it is set or advanced: for tests (and for the demo's
/// rehearsal of what a clock step does).
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `ms`.
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self {
            ms: AtomicI64::new(ms),
        })
    }

    /// Sets the time (also backwards, as a clock step by NTP does).
    pub fn set(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time by `ms` (negative: back).
    pub fn advance(&self, ms: i64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// Parses `YYYY-MM-DD`; `field` names it in the error.
pub fn parse_date(field: &str, value: &str) -> Result<Date, NodeError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(value.trim(), &format)
        .map_err(|_| NodeError::invalid(field, "must be a date in the form YYYY-MM-DD"))
}

/// The UTC calendar date of a timestamp.
pub fn date_of_ms(ms: i64) -> Result<Date, NodeError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| t.date())
        .map_err(|_| NodeError::invalid("timestamp", "is out of range"))
}

/// Milliseconds at the start (00:00 UTC) of `date`.
pub fn start_of_day_ms(date: Date) -> i64 {
    let t = date.midnight().assume_utc();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats a timestamp as RFC 3339 (UTC), for people.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_moved() {
        let c = ManualClock::at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(500);
        assert_eq!(c.now_ms(), 1_500);
        c.advance(-2_000);
        assert_eq!(c.now_ms(), -500);
        c.set(7);
        assert_eq!(c.now_ms(), 7);
    }

    #[test]
    fn dates_round_trip() {
        let d = parse_date("d", "2004-02-29").unwrap();
        assert_eq!(date_of_ms(start_of_day_ms(d)).unwrap(), d);
        assert!(parse_date("d", "2003-02-29").is_err());
        assert!(parse_date("d", "01.03.2004").is_err());
    }
}
