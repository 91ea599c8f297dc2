//! Time as the node sees it: milliseconds since the Unix epoch (UTC) and ISO dates, and the
//! [`Clock`] a node reads them from — the system clock in production, a [`ManualClock`] that
//! tests set and step (forwards and back), so that no test races the wall clock.

use crate::NodeError;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use time::{Date, Month, OffsetDateTime};

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

/// The UTC calendar date of a timestamp. The rules about a person's age and date of birth
/// take the German date instead: [`german_date_of_ms`].
pub fn date_of_ms(ms: i64) -> Result<Date, NodeError> {
    utc_of_ms(ms).map(|t| t.date())
}

fn utc_of_ms(ms: i64) -> Result<OffsetDateTime, NodeError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| NodeError::invalid("timestamp", "is out of range"))
}

/// The calendar date in Germany (Europe/Berlin) of a timestamp: the date the agencies and
/// the person live by, which decides the U25 rule and whether a date of birth is plausible.
/// German time is CET (UTC+1), and CEST (UTC+2) from the last Sunday of March 01:00 UTC
/// to the last Sunday of October 01:00 UTC (the EU rule, in force since 1996; earlier
/// timestamps, which no node makes, get the same rule).
pub fn german_date_of_ms(ms: i64) -> Result<Date, NodeError> {
    let utc = utc_of_ms(ms)?;
    let offset = if german_summer_time(utc) {
        time::Duration::hours(2)
    } else {
        time::Duration::hours(1)
    };
    utc.checked_add(offset)
        .map(|t| t.date())
        .ok_or_else(|| NodeError::invalid("timestamp", "is out of range"))
}

/// The first millisecond of the German calendar day `date` (German midnight), in ms since
/// the Unix epoch: 23:00 UTC the day before in CET, 22:00 UTC in CEST. Midnight never falls
/// in a switch (those are at 02:00 and 03:00 German time), so it is unambiguous.
pub fn german_start_of_day_ms(date: Date) -> i64 {
    let utc_midnight = start_of_day_ms(date);
    let cest_midnight = utc_midnight - 2 * 60 * 60 * 1000;
    match utc_of_ms(cest_midnight) {
        Ok(t) if german_summer_time(t) => cest_midnight,
        _ => utc_midnight - 60 * 60 * 1000,
    }
}

/// Whether `utc` lies in German summer time (CEST).
pub fn german_summer_time(utc: OffsetDateTime) -> bool {
    // 01:00 UTC on the last Sunday of the month
    let switch = |month: Month| {
        let last = Date::from_calendar_date(utc.year(), month, 31).ok()?;
        let sunday = last.checked_sub(time::Duration::days(i64::from(
            last.weekday().number_days_from_sunday(),
        )))?;
        sunday.with_hms(1, 0, 0).ok().map(|t| t.assume_utc())
    };
    match (switch(Month::March), switch(Month::October)) {
        (Some(begins), Some(ends)) => begins <= utc && utc < ends,
        _ => false,
    }
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

    fn ms_of(rfc3339: &str) -> i64 {
        let t = OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
            .expect("test");
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    fn german(rfc3339: &str) -> String {
        german_date_of_ms(ms_of(rfc3339)).expect("test").to_string()
    }

    #[test]
    fn the_german_date_turns_at_german_midnight() {
        // CET: midnight is 23:00 UTC the day before
        assert_eq!(german("2026-01-14T22:59:59.999Z"), "2026-01-14");
        assert_eq!(german("2026-01-14T23:00:00Z"), "2026-01-15");
        // CEST: 22:00 UTC
        assert_eq!(german("2026-07-14T21:59:59.999Z"), "2026-07-14");
        assert_eq!(german("2026-07-14T22:00:00Z"), "2026-07-15");
        // 2026: summer time from Sunday 29 March 01:00 UTC to Sunday 25 October 01:00 UTC
        assert!(!german_summer_time(
            utc_of_ms(ms_of("2026-03-29T00:59:59.999Z")).expect("test")
        ));
        assert!(german_summer_time(
            utc_of_ms(ms_of("2026-03-29T01:00:00Z")).expect("test")
        ));
        assert!(german_summer_time(
            utc_of_ms(ms_of("2026-10-25T00:59:59.999Z")).expect("test")
        ));
        assert!(!german_summer_time(
            utc_of_ms(ms_of("2026-10-25T01:00:00Z")).expect("test")
        ));
        // the first midnight after each switch
        assert_eq!(german("2026-03-29T21:59:59.999Z"), "2026-03-29");
        assert_eq!(german("2026-03-29T22:00:00Z"), "2026-03-30");
        assert_eq!(german("2026-10-25T22:59:59.999Z"), "2026-10-25");
        assert_eq!(german("2026-10-25T23:00:00Z"), "2026-10-26");
        // the last midnight before each switch
        assert_eq!(german("2026-03-28T23:00:00Z"), "2026-03-29");
        assert_eq!(german("2026-10-24T22:00:00Z"), "2026-10-25");
        // the turn of the year
        assert_eq!(german("2026-12-31T23:00:00Z"), "2027-01-01");
        // out of range is an error, not a panic
        assert!(german_date_of_ms(i64::MAX).is_err());
        assert!(german_date_of_ms(i64::MIN).is_err());
    }

    /// The oracle: Europe/Berlin from the IANA time zone database as the system ships it
    /// (`/usr/share/zoneinfo/Europe/Berlin`, TZif version 2+, whose transitions run to 2037):
    /// the UTC offsets in force from each transition on.
    struct Zoneinfo {
        /// (transition time in Unix seconds, UTC offset in seconds from then on)
        transitions: Vec<(i64, i64)>,
    }

    impl Zoneinfo {
        fn berlin() -> Self {
            let path = "/usr/share/zoneinfo/Europe/Berlin";
            let b = std::fs::read(path).unwrap_or_else(|e| {
                panic!("{path}: {e} (the oracle of this test: install the tzdata package)")
            });
            let be32 = |at: usize| i32::from_be_bytes(b[at..at + 4].try_into().expect("test"));
            let counts = |at: usize| -> [usize; 6] {
                assert_eq!(&b[at..at + 4], b"TZif", "a TZif file");
                std::array::from_fn(|i| be32(at + 20 + 4 * i) as usize)
            };
            // skip the version 1 block (32-bit times) to the version 2 header
            let [isut, isstd, leap, timecnt, typecnt, charcnt] = counts(0);
            let v2 = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
            assert!(b[4] >= b'2', "TZif version 2 or later");
            let [_, _, _, timecnt, typecnt, _] = counts(v2);
            let times = v2 + 44;
            let indices = times + 8 * timecnt;
            let types = indices + timecnt;
            let transitions = (0..timecnt)
                .map(|i| {
                    let at = i64::from_be_bytes(
                        b[times + 8 * i..times + 8 * i + 8]
                            .try_into()
                            .expect("test"),
                    );
                    let ty = usize::from(b[indices + i]);
                    assert!(ty < typecnt);
                    (at, i64::from(be32(types + 6 * ty)))
                })
                .collect();
            Self { transitions }
        }

        /// The UTC offset in force at Unix second `secs` (after the first transition).
        fn offset_at(&self, secs: i64) -> i64 {
            let i = self.transitions.partition_point(|(at, _)| *at <= secs);
            assert!(i > 0, "before the first transition");
            self.transitions[i - 1].1
        }

        /// The transitions from 1996 (the EU rule) to the file's last one.
        fn eu_rule_transitions(&self) -> Vec<i64> {
            let from = ms_of("1996-01-01T00:00:00Z") / 1000;
            self.transitions
                .iter()
                .map(|(at, _)| *at)
                .filter(|at| *at >= from)
                .collect()
        }

        /// The German date at `ms` by the oracle.
        fn date_at(&self, ms: i64) -> Date {
            let offset = self.offset_at(ms.div_euclid(1000));
            date_of_ms(ms + offset * 1000).expect("test")
        }
    }

    #[test]
    fn the_oracle_knows_the_eu_rule() {
        let z = Zoneinfo::berlin();
        let eu = z.eu_rule_transitions();
        // two switches a year, 1996 to 2037
        assert_eq!(eu.len(), 2 * (2037 - 1996 + 1), "{eu:?}");
        assert_eq!(z.offset_at(ms_of("2026-01-01T00:00:00Z") / 1000), 3600);
        assert_eq!(z.offset_at(ms_of("2026-07-01T00:00:00Z") / 1000), 7200);
    }

    /// Every switch between CET and CEST from 1996 to 2037, minute by minute for three
    /// hours either side, and the millisecond on either side of it.
    #[test]
    fn the_german_date_matches_the_time_zone_database_around_every_switch() {
        let z = Zoneinfo::berlin();
        for at in z.eu_rule_transitions() {
            let at_ms = at * 1000;
            for ms in (-180..=180)
                .map(|m| at_ms + m * 60_000)
                .chain([at_ms - 1, at_ms + 1])
            {
                assert_eq!(
                    german_date_of_ms(ms).expect("test"),
                    z.date_at(ms),
                    "at {}",
                    format_ms(ms)
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Any instant from 1996 to the last switch in the database.
        #[test]
        fn the_german_date_matches_the_time_zone_database(
            ms in ms_of("1996-01-01T00:00:00Z")..ms_of("2037-10-25T01:00:00Z")
        ) {
            let z = Zoneinfo::berlin();
            proptest::prop_assert_eq!(german_date_of_ms(ms).expect("test"), z.date_at(ms));
        }

        /// The last millisecond of a German day and the first of the next, for any day
        /// from 1996 to 2037: German midnight found from the database's offset.
        #[test]
        fn the_german_date_turns_exactly_at_german_midnight(
            day in 0i64..(2037 - 1996) * 365
        ) {
            let z = Zoneinfo::berlin();
            let date = Date::from_calendar_date(1996, time::Month::January, 2).expect("test")
                + time::Duration::days(day);
            // the offset at midnight is the offset of the evening before (no switch
            // happens between 22:00 and 00:00 UTC)
            let utc_midnight = start_of_day_ms(date);
            let midnight = utc_midnight - z.offset_at(utc_midnight / 1000 - 3 * 3600) * 1000;
            proptest::prop_assert_eq!(german_date_of_ms(midnight).expect("test"), date);
            proptest::prop_assert_eq!(
                german_date_of_ms(midnight - 1).expect("test"),
                date.previous_day().expect("test")
            );
            proptest::prop_assert_eq!(german_start_of_day_ms(date), midnight);
        }
    }

    #[test]
    fn german_midnight_is_the_first_millisecond_of_the_german_day() {
        let d = |text: &str| parse_date("d", text).expect("test");
        let at = |date: &str| format_ms(german_start_of_day_ms(d(date)));
        assert_eq!(at("2026-01-15"), "2026-01-14T23:00:00Z");
        assert_eq!(at("2026-07-15"), "2026-07-14T22:00:00Z");
        // the Sundays of the switches begin in the old time, the Mondays in the new
        assert_eq!(at("2026-03-29"), "2026-03-28T23:00:00Z");
        assert_eq!(at("2026-03-30"), "2026-03-29T22:00:00Z");
        assert_eq!(at("2026-10-25"), "2026-10-24T22:00:00Z");
        assert_eq!(at("2026-10-26"), "2026-10-25T23:00:00Z");
    }

    #[test]
    fn dates_round_trip() {
        let d = parse_date("d", "2004-02-29").expect("test");
        assert_eq!(date_of_ms(start_of_day_ms(d)).expect("test"), d);
        assert!(parse_date("d", "2003-02-29").is_err());
        assert!(parse_date("d", "01.03.2004").is_err());
    }
}
