//! Working days and calendar months, on an England and Wales bank-holiday calendar.
//!
//! Statutory timescales are counted in working days (Monday to Friday, not a bank holiday) and
//! calendar months. The calendar itself is data (`rules/calendar/bank-holidays.toml`) that a
//! policy lead can update; this module parses it and does the arithmetic exactly as the
//! specification defines it:
//!
//! - "within N working days of D" is the Nth working day after D;
//! - "within N months of D" is D plus N calendar months (clamped to the end of a shorter month),
//!   moved back to the last working day on or before it.
//!
//! Years the government has not yet published are projected from the statutory pattern (New
//! Year's Day, Good Friday, Easter Monday, the early May, spring and summer bank holidays,
//! Christmas Day and Boxing Day, with substitute weekdays) up to the file's `project_until`, and
//! marked provisional, so a due date that rests on one says so. One-off holidays cannot be
//! projected; when a year is published, list it and it replaces the projection.
//!
//! A date outside the years the calendar covers is an error, never a guess.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Months, NaiveDate, Weekday};
use serde::Deserialize;

/// Bank holidays for a contiguous range of years.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    holidays: BTreeSet<NaiveDate>,
    /// year → provisional?
    years: BTreeMap<i32, bool>,
}

/// Why a calendar file or a calculation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The calendar file is malformed.
    #[error("bank-holiday calendar: {0}")]
    Invalid(String),
    /// A calculation needed a year the calendar does not cover.
    #[error("{date} is outside the bank-holiday calendar ({first}–{last}); add the year to rules/calendar/bank-holidays.toml")]
    OutOfRange {
        /// The date that fell outside.
        date: NaiveDate,
        /// First covered year.
        first: i32,
        /// Last covered year.
        last: i32,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Project the statutory pattern for every year after the last listed one, up to this one.
    #[serde(default)]
    project_until: Option<i32>,
    year: Vec<YearEntry>,
}

/// Easter Sunday of `year` (the Gregorian computus: anonymous algorithm).
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

fn first_monday(year: i32, month: u32) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Mon, 1)
}

fn last_monday(year: i32, month: u32) -> Option<NaiveDate> {
    let next = if month == 12 { NaiveDate::from_ymd_opt(year + 1, 1, 1)? } else { NaiveDate::from_ymd_opt(year, month + 1, 1)? };
    let last = next.pred_opt()?;
    last.checked_sub_days(chrono::Days::new(u64::from(last.weekday().num_days_from_monday())))
}

/// The statutory bank holidays of England and Wales for `year`, with substitute weekdays: what
/// a year looks like when no one-off holiday is added.
pub fn projected_holidays(year: i32) -> Vec<NaiveDate> {
    let d = |m, day| NaiveDate::from_ymd_opt(year, m, day);
    let mut out = Vec::new();
    // New Year's Day, or the Monday after when it falls at a weekend.
    if let Some(ny) = d(1, 1) {
        out.push(match ny.weekday() {
            Weekday::Sat => ny + chrono::Duration::days(2),
            Weekday::Sun => ny + chrono::Duration::days(1),
            _ => ny,
        });
    }
    if let Some(easter) = easter_sunday(year) {
        out.push(easter - chrono::Duration::days(2));
        out.push(easter + chrono::Duration::days(1));
    }
    out.extend([first_monday(year, 5), last_monday(year, 5), last_monday(year, 8)].into_iter().flatten());
    // Christmas Day and Boxing Day; a holiday at a weekend moves to the next free weekday.
    if let (Some(christmas), Some(boxing)) = (d(12, 25), d(12, 26)) {
        let (c, b) = match christmas.weekday() {
            Weekday::Fri => (Some(christmas), d(12, 28)),
            Weekday::Sat => (d(12, 27), d(12, 28)),
            Weekday::Sun => (d(12, 27), Some(boxing)),
            _ => (Some(christmas), Some(boxing)),
        };
        out.extend([c, b].into_iter().flatten());
    }
    out.sort();
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YearEntry {
    year: i32,
    #[serde(default)]
    provisional: bool,
    dates: Vec<String>,
}

impl Calendar {
    /// Parses the calendar's TOML text, checking every date is real, in its year, and a weekday,
    /// and that the years are contiguous. Reports every problem found.
    pub fn from_toml(text: &str) -> Result<Calendar, CalendarError> {
        let file: File = toml::from_str(text).map_err(|e| CalendarError::Invalid(e.to_string()))?;
        let mut problems = Vec::new();
        let mut holidays = BTreeSet::new();
        let mut years = BTreeMap::new();
        for entry in &file.year {
            if years.insert(entry.year, entry.provisional).is_some() {
                problems.push(format!("year {} is listed twice", entry.year));
            }
            for d in &entry.dates {
                match crate::facts::parse_date(d) {
                    None => problems.push(format!("`{d}` is not a YYYY-MM-DD date")),
                    Some(date) if date.year() != entry.year => {
                        problems.push(format!("{d} is listed under year {}", entry.year))
                    }
                    Some(date) if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) => {
                        problems.push(format!("{d} is a weekend day; list the substitute weekday instead"))
                    }
                    Some(date) => {
                        if !holidays.insert(date) {
                            problems.push(format!("{d} is listed twice"));
                        }
                    }
                }
            }
        }
        if let (Some(until), Some(&last)) = (file.project_until, years.keys().next_back()) {
            if until < last {
                problems.push(format!("project_until = {until} is before the last listed year {last}"));
            }
            if until > last + 50 {
                problems.push(format!("project_until = {until} is more than 50 years ahead of the last listed year"));
            }
            for y in last + 1..=until.min(last + 50) {
                years.insert(y, true);
                holidays.extend(projected_holidays(y));
            }
        }
        if years.is_empty() {
            problems.push("no years are listed".into());
        } else {
            let first = *years.keys().next().unwrap_or(&0);
            let last = *years.keys().next_back().unwrap_or(&0);
            for y in first..=last {
                if !years.contains_key(&y) {
                    problems.push(format!("year {y} is missing: the years must be contiguous"));
                }
            }
        }
        if problems.is_empty() {
            Ok(Calendar { holidays, years })
        } else {
            Err(CalendarError::Invalid(problems.join("; ")))
        }
    }

    /// First and last covered years.
    pub fn range(&self) -> (i32, i32) {
        let first = self.years.keys().next().copied().unwrap_or(0);
        let last = self.years.keys().next_back().copied().unwrap_or(0);
        (first, last)
    }

    fn covered(&self, date: NaiveDate) -> Result<(), CalendarError> {
        if self.years.contains_key(&date.year()) {
            Ok(())
        } else {
            // The range only for the error: this runs for every day a date helper counts.
            let (first, last) = self.range();
            Err(CalendarError::OutOfRange { date, first, last })
        }
    }

    /// Whether `date` falls in a year whose holidays are provisional.
    pub fn is_provisional(&self, date: NaiveDate) -> bool {
        self.years.get(&date.year()).copied().unwrap_or(false)
    }

    /// Whether `date` is a bank holiday.
    pub fn is_bank_holiday(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        self.covered(date)?;
        Ok(self.holidays.contains(&date))
    }

    /// Whether `date` is a working day (Monday–Friday and not a bank holiday).
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        self.covered(date)?;
        Ok(!matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&date))
    }

    /// The `n`th working day after `date` ("within n working days of date").
    pub fn working_days_after(&self, date: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let mut d = date;
        let mut left = n;
        while left > 0 {
            d = d.succ_opt().ok_or_else(|| CalendarError::OutOfRange { date: d, first: self.range().0, last: self.range().1 })?;
            if self.is_working_day(d)? {
                left -= 1;
            }
        }
        Ok(d)
    }

    /// `date` plus `n` calendar months, clamped to the month's end, moved back to the last
    /// working day on or before it ("within n months of date").
    pub fn months_after(&self, date: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let (first, last) = self.range();
        let mut d = date
            .checked_add_months(Months::new(n))
            .ok_or(CalendarError::OutOfRange { date, first, last })?;
        while !self.is_working_day(d)? {
            d = d.pred_opt().ok_or(CalendarError::OutOfRange { date: d, first, last })?;
        }
        Ok(d)
    }

    /// Working days strictly after `from` up to and including `to` (negative when `to` is earlier).
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> Result<i64, CalendarError> {
        let (a, b, sign) = if from <= to { (from, to, 1) } else { (to, from, -1) };
        self.covered(a)?;
        self.covered(b)?;
        let mut count = 0;
        let mut d = a;
        while d < b {
            d = d.succ_opt().unwrap_or(b);
            if self.is_working_day(d)? {
                count += 1;
            }
        }
        Ok(sign * count)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_projection_reproduces_every_published_year_without_a_one_off() {
        let text = include_str!("../rules/calendar/bank-holidays.toml");
        let cal = Calendar::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
        // 2020 (VE Day moved), 2022 (Jubilee, State Funeral) and 2023 (Coronation) had one-offs.
        for year in [2021, 2024, 2025, 2026, 2027, 2028] {
            let listed: Vec<NaiveDate> = cal.holidays.iter().copied().filter(|d| d.year() == year).collect();
            assert_eq!(projected_holidays(year), listed, "{year}");
        }
    }

    #[test]
    fn projected_years_run_to_2035_and_are_provisional() {
        let cal = Calendar::from_toml(include_str!("../rules/calendar/bank-holidays.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cal.range(), (2020, 2035));
        let d = |s: &str| crate::facts::parse_date(s).unwrap_or_default();
        assert!(cal.is_provisional(d("2031-06-01")));
        assert!(!cal.is_provisional(d("2027-06-01")));
        // Christmas 2032 is a Saturday: substitutes on Monday 27 and Tuesday 28.
        assert_eq!(cal.is_bank_holiday(d("2032-12-27")), Ok(true));
        assert_eq!(cal.is_bank_holiday(d("2032-12-28")), Ok(true));
        // Easter 2035 is 25 March: Good Friday 23 March.
        assert_eq!(cal.is_bank_holiday(d("2035-03-23")), Ok(true));
        assert!(matches!(cal.is_bank_holiday(d("2036-01-01")), Err(CalendarError::OutOfRange { .. })));
    }

    use super::*;

    fn cal() -> Calendar {
        Calendar::from_toml(include_str!("../rules/calendar/bank-holidays.toml")).expect("bundled calendar parses")
    }
    fn d(s: &str) -> NaiveDate {
        crate::facts::parse_date(s).expect("test date")
    }

    #[test]
    fn bundled_calendar_lists_2020_to_2028_with_2028_provisional() {
        let c = cal();
        assert!(c.is_provisional(d("2028-06-01")));
        assert!(!c.is_provisional(d("2027-06-01")));
    }

    #[test]
    fn christmas_and_new_year_skip_substitute_days() {
        let c = cal();
        // Wed 2022-12-21 + 5 working days: Thu 22, Fri 23, (Mon 26, Tue 27 holidays) Wed 28, Thu 29, Fri 30.
        assert_eq!(c.working_days_after(d("2022-12-21"), 5).unwrap(), d("2022-12-30"));
        // Fri 2022-12-30 + 1: Mon 2023-01-02 is the New Year substitute, so Tue 3rd.
        assert_eq!(c.working_days_after(d("2022-12-30"), 1).unwrap(), d("2023-01-03"));
        // 2026: Christmas Fri 25th, Boxing Day substitute Mon 28th.
        assert_eq!(c.working_days_after(d("2026-12-24"), 1).unwrap(), d("2026-12-29"));
    }

    #[test]
    fn easter_and_one_off_holidays() {
        let c = cal();
        // Thu 2025-04-17 + 1: Good Friday 18th, Easter Monday 21st → Tue 22nd.
        assert_eq!(c.working_days_after(d("2025-04-17"), 1).unwrap(), d("2025-04-22"));
        // Platinum Jubilee: Wed 2022-06-01 + 1 → Mon 6th (2nd and 3rd are holidays).
        assert_eq!(c.working_days_after(d("2022-06-01"), 1).unwrap(), d("2022-06-06"));
        // State Funeral Mon 2022-09-19: Fri 16th + 1 → Tue 20th.
        assert_eq!(c.working_days_after(d("2022-09-16"), 1).unwrap(), d("2022-09-20"));
        // Coronation Mon 2023-05-08 (and early May Mon 1st): Fri 2023-04-28 + 2 → Wed 3rd.
        assert_eq!(c.working_days_after(d("2023-04-28"), 2).unwrap(), d("2023-05-03"));
        assert_eq!(c.working_days_after(d("2023-05-05"), 1).unwrap(), d("2023-05-09"));
    }

    #[test]
    fn fifteen_working_days_over_easter() {
        // Strategy discussion Mon 2024-03-18; Good Fri 29th and Easter Mon 1 April are holidays.
        assert_eq!(cal().working_days_after(d("2024-03-18"), 15).unwrap(), d("2024-04-10"));
    }

    #[test]
    fn months_clamp_and_move_back_to_a_working_day() {
        let c = cal();
        // 30 Nov + 3 months → 28 Feb 2025 (clamped), a Friday.
        assert_eq!(c.months_after(d("2024-11-30"), 3).unwrap(), d("2025-02-28"));
        // 31 Aug 2024 + 6 months → 28 Feb 2025.
        assert_eq!(c.months_after(d("2024-08-31"), 6).unwrap(), d("2025-02-28"));
        // 2025-01-25 + 3 → Sun 2025-04-25? No: Fri 25 April 2025 is a working day.
        assert_eq!(c.months_after(d("2025-01-25"), 3).unwrap(), d("2025-04-25"));
        // 2024-12-21 + 6 → Sat 2025-06-21 → back to Fri 20th.
        assert_eq!(c.months_after(d("2024-12-21"), 6).unwrap(), d("2025-06-20"));
        // 2025-02-21 + 2 → Mon 21 April 2025 is Easter Monday → back over the weekend and Good Friday to Thu 17th.
        assert_eq!(c.months_after(d("2025-02-21"), 2).unwrap(), d("2025-04-17"));
        // Leap year: 2023-11-29 + 3 → Thu 2024-02-29.
        assert_eq!(c.months_after(d("2023-11-29"), 3).unwrap(), d("2024-02-29"));
    }

    #[test]
    fn refuses_dates_outside_the_calendar() {
        let c = cal();
        assert!(matches!(c.working_days_after(d("2035-12-28"), 5), Err(CalendarError::OutOfRange { .. })));
        assert!(matches!(c.months_after(d("2019-10-01"), 3), Err(CalendarError::OutOfRange { .. })));
    }

    #[test]
    fn counts_working_days_between() {
        let c = cal();
        assert_eq!(c.working_days_between(d("2025-04-17"), d("2025-04-22")).unwrap(), 1);
        assert_eq!(c.working_days_between(d("2025-04-22"), d("2025-04-17")).unwrap(), -1);
    }

    #[test]
    fn reports_every_problem_in_a_bad_file() {
        let err = Calendar::from_toml(
            "[[year]]\nyear = 2024\ndates = [\"2024-13-01\", \"2025-01-01\", \"2024-06-01\"]\n[[year]]\nyear = 2026\ndates = []\n",
        )
        .unwrap_err()
        .to_string();
        for needle in ["2024-13-01", "listed under year 2024", "weekend", "year 2025 is missing"] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
    }
}
