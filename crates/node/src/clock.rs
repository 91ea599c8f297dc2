//! Time as the node sees it: milliseconds since the Unix epoch (UTC) and ISO dates.

use crate::NodeError;
use time::{Date, OffsetDateTime};

pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;

pub fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
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
    fn dates_round_trip() {
        let d = parse_date("d", "2004-02-29").unwrap();
        assert_eq!(date_of_ms(start_of_day_ms(d)).unwrap(), d);
        assert!(parse_date("d", "2003-02-29").is_err());
        assert!(parse_date("d", "01.03.2004").is_err());
    }
}
