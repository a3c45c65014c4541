//! Today's date in England, for the edges that stamp a request.
//!
//! The core never reads a clock; the service, the HTTP API and the CLI ask this module for the
//! date to use when a call leaves `as_of` out. England keeps GMT in winter and BST (UTC+1) from
//! 01:00 UTC on the last Sunday in March to 01:00 UTC on the last Sunday in October (the Summer
//! Time Order 2002), so the date turns at midnight local time, not UTC.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};

/// The last Sunday of `month` in `year`, at 01:00 UTC.
fn last_sunday_0100(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let next = if month == 12 { NaiveDate::from_ymd_opt(year + 1, 1, 1)? } else { NaiveDate::from_ymd_opt(year, month + 1, 1)? };
    let last = next.pred_opt()?;
    let back = i64::from(last.weekday().num_days_from_sunday());
    let sunday = last - Duration::days(back);
    debug_assert_eq!(sunday.weekday(), Weekday::Sun);
    Utc.from_utc_datetime(&sunday.and_hms_opt(1, 0, 0)?).into()
}

/// The date in England at instant `t`.
pub fn date_in_england(t: DateTime<Utc>) -> NaiveDate {
    let year = t.year();
    let summer = match (last_sunday_0100(year, 3), last_sunday_0100(year, 10)) {
        (Some(start), Some(end)) => t >= start && t < end,
        _ => false,
    };
    if summer { (t + Duration::hours(1)).date_naive() } else { t.date_naive() }
}

/// The current instant.
pub fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Today's date in England.
pub fn today_in_england() -> NaiveDate {
    date_in_england(now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc)).unwrap_or_default()
    }
    fn d(s: &str) -> NaiveDate {
        crate::facts::parse_date(s).unwrap_or_default()
    }

    #[test]
    fn the_date_turns_at_local_midnight() {
        // Summer: 23:30 UTC on 1 July is already 2 July in England.
        assert_eq!(date_in_england(at("2025-07-01T23:30:00Z")), d("2025-07-02"));
        // Winter: 23:30 UTC on 1 December is still 1 December.
        assert_eq!(date_in_england(at("2025-12-01T23:30:00Z")), d("2025-12-01"));
        // The clocks go forward at 01:00 UTC on Sunday 30 March 2025 and back at 01:00 UTC on
        // Sunday 26 October 2025.
        assert_eq!(date_in_england(at("2025-03-30T00:59:59Z")), d("2025-03-30"));
        assert_eq!(date_in_england(at("2025-03-29T23:30:00Z")), d("2025-03-29"));
        assert_eq!(date_in_england(at("2025-10-25T23:30:00Z")), d("2025-10-26"));
        assert_eq!(date_in_england(at("2025-10-26T23:30:00Z")), d("2025-10-26"));
    }
}
