//! Business-hours calendars: when the SLA clock runs.
//!
//! Owns SPEC.md "SLA": "Business hours: 08:00-17:00 America/Chicago, Monday-Friday, without major
//! US holidays (New Year's Day, Memorial Day, Independence Day, Labor Day, Thanksgiving and the
//! day after, Christmas; observed-day rules when they fall on a weekend), list configurable.
//! Several named calendars may exist" and "Clocks run in the calendar's open time only; `h`/`min`
//! count open time, `days` count business days". A [`Calendar`] is a time zone, open periods per
//! weekday (local wall-clock times) and [`HolidayRule`]s; it adds open time and business days to
//! UTC instants and measures open time between them. Pure: no IO, no clock, `now` is a parameter.
//!
//! Choices (each one is tested below):
//! - Open periods are half-open, `[start, end)`: open at 08:00:00, closed at 17:00:00.
//! - Zero open time from `start` is [`Calendar::next_open`]`(start)`: a deadline of zero open
//!   time is the next opening. A deadline that uses up a day's open time exactly is that day's
//!   closing time (17:00), not the next morning.
//! - Daylight saving: open hours are local wall-clock times. A local time that does not exist
//!   (spring forward) becomes the first instant after the gap, so 02:30 is 03:00 that day; a local
//!   time that exists twice (fall back) is the earlier instant. Open time is always counted in real
//!   elapsed time, so an 8-hour local day across a fall-back hour counts 9 hours.
//! - Every loop walks whole days and stops after [`HORIZON_DAYS`]; an answer further away than
//!   that is [`NEVER`]. Instants outside years 1..=9999 are clamped into them.

use std::fmt;

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

/// How many days any search walks before it gives up (a little over ten years).
pub const HORIZON_DAYS: i64 = 3700;

/// The far-future answer when no open time is found within [`HORIZON_DAYS`]: 9999-12-31T23:59:59Z.
pub const NEVER: DateTime<Utc> = match DateTime::from_timestamp(253_402_300_799, 0) {
    Some(t) => t,
    None => panic!("9999-12-31T23:59:59Z is a valid instant"),
};

/// The earliest instant the calendar works with: 0001-01-01T00:00:00Z (earlier inputs are clamped).
const EARLIEST: DateTime<Utc> = match DateTime::from_timestamp(-62_135_596_800, 0) {
    Some(t) => t,
    None => panic!("0001-01-01T00:00:00Z is a valid instant"),
};

const SECONDS_PER_DAY: u32 = 86_400;

/// Open periods per weekday, Monday first: `(start, end)` local times; an empty list is a closed
/// day, and an `end` of 00:00 means midnight at the end of the day (24:00).
pub type WeekHours = [Vec<(NaiveTime, NaiveTime)>; 7];

/// A rule that names one holiday per year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolidayRule {
    /// A fixed date every year (month, day), shifted to the observed weekday when it falls on a weekend (Sat→Fri, Sun→Mon) if `observed`.
    Fixed {
        name: String,
        month: u32,
        day: u32,
        observed: bool,
    },
    /// The nth weekday of a month (n = 1..=4), or the last one (n = -1), e.g. Thanksgiving = 4th Thursday of November, Memorial Day = last Monday of May.
    NthWeekday {
        name: String,
        month: u32,
        weekday: Weekday,
        n: i8,
    },
    /// The day after another rule's date (the day after Thanksgiving).
    DayAfter { name: String, of: Box<HolidayRule> },
    /// One date (a company shutdown).
    Date { name: String, date: NaiveDate },
}

impl HolidayRule {
    /// The holiday's name.
    pub fn name(&self) -> &str {
        match self {
            HolidayRule::Fixed { name, .. }
            | HolidayRule::NthWeekday { name, .. }
            | HolidayRule::DayAfter { name, .. }
            | HolidayRule::Date { name, .. } => name,
        }
    }

    /// The day off for the occurrence that belongs to `year`, if the rule has one that year.
    ///
    /// An occurrence belongs to the year of its nominal (unshifted) date; the observed day off may
    /// fall in a neighbouring year: New Year's Day 2022 is a Saturday, so `date_in(2022)` is
    /// 2021-12-31. [`Calendar::holiday`] and [`Calendar::holidays_between`] look one year either
    /// side, so such days are found from either year.
    pub fn date_in(&self, year: i32) -> Option<NaiveDate> {
        match self {
            HolidayRule::Fixed {
                month,
                day,
                observed,
                ..
            } => {
                let nominal = NaiveDate::from_ymd_opt(year, *month, *day)?;
                if !observed {
                    return Some(nominal);
                }
                // 5 U.S.C. 6103(b) as OPM applies it: Saturday -> the Friday before, Sunday ->
                // the Monday after (for New Year's Day on a Saturday that is December 31).
                match nominal.weekday() {
                    Weekday::Sat => nominal.pred_opt(),
                    Weekday::Sun => nominal.succ_opt(),
                    _ => Some(nominal),
                }
            }
            HolidayRule::NthWeekday {
                month, weekday, n, ..
            } => match *n {
                1..=4 => NaiveDate::from_weekday_of_month_opt(year, *month, *weekday, *n as u8),
                -1 => {
                    let next_month = if *month == 12 {
                        NaiveDate::from_ymd_opt(year.checked_add(1)?, 1, 1)?
                    } else {
                        NaiveDate::from_ymd_opt(year, month.checked_add(1)?, 1)?
                    };
                    let last = next_month.pred_opt()?;
                    let back = (7 + last.weekday().num_days_from_monday()
                        - weekday.num_days_from_monday())
                        % 7;
                    last.checked_sub_signed(TimeDelta::days(i64::from(back)))
                }
                _ => None,
            },
            HolidayRule::DayAfter { of, .. } => of.date_in(year)?.succ_opt(),
            HolidayRule::Date { date, .. } => (date.year() == year).then_some(*date),
        }
    }

    /// Checks the rule's numbers; the error says what is wrong.
    fn check(&self) -> Result<(), String> {
        match self {
            HolidayRule::Fixed { month, day, .. } => {
                // 2000 is a leap year, so February 29 is accepted (and skipped in other years).
                if NaiveDate::from_ymd_opt(2000, *month, *day).is_none() {
                    return Err(format!("month {month}, day {day} is no date"));
                }
            }
            HolidayRule::NthWeekday { month, n, .. } => {
                if !(1..=12).contains(month) {
                    return Err(format!("month {month} is not 1..=12"));
                }
                if !matches!(n, 1..=4 | -1) {
                    return Err(format!("n = {n}: use 1..=4, or -1 for the last one"));
                }
            }
            HolidayRule::DayAfter { of, .. } => of.check()?,
            HolidayRule::Date { .. } => {}
        }
        if self.name().trim().is_empty() {
            return Err("the holiday has no name".to_string());
        }
        Ok(())
    }
}

/// The seven SPEC holidays with the federal observed-day rules.
pub fn us_holidays() -> Vec<HolidayRule> {
    let fixed = |name: &str, month, day| HolidayRule::Fixed {
        name: name.to_string(),
        month,
        day,
        observed: true,
    };
    let nth = |name: &str, month, weekday, n| HolidayRule::NthWeekday {
        name: name.to_string(),
        month,
        weekday,
        n,
    };
    let thanksgiving = nth("Thanksgiving Day", 11, Weekday::Thu, 4);
    vec![
        fixed("New Year's Day", 1, 1),
        nth("Memorial Day", 5, Weekday::Mon, -1),
        fixed("Independence Day", 7, 4),
        nth("Labor Day", 9, Weekday::Mon, 1),
        thanksgiving.clone(),
        // Always a Friday, so never shifted.
        HolidayRule::DayAfter {
            name: "Day after Thanksgiving".to_string(),
            of: Box::new(thanksgiving),
        },
        fixed("Christmas Day", 12, 25),
    ]
}

/// What is wrong with a calendar's definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The calendar has no name.
    #[error("a calendar needs a name")]
    NoName,
    /// The time zone is not in the IANA database.
    #[error(
        "calendar {calendar}: unknown time zone {zone:?}; use an IANA name such as \"America/Chicago\""
    )]
    UnknownZone { calendar: String, zone: String },
    /// An open period does not end after it starts.
    #[error(
        "calendar {calendar}: {weekday} {start}-{end} does not end after it starts (write 00:00 as the end for midnight)"
    )]
    EmptyPeriod {
        calendar: String,
        weekday: Weekday,
        start: NaiveTime,
        end: NaiveTime,
    },
    /// A time has a fraction of a second.
    #[error("calendar {calendar}: {weekday} {time} has a fraction of a second; use whole seconds")]
    FractionalTime {
        calendar: String,
        weekday: Weekday,
        time: NaiveTime,
    },
    /// Two open periods of one weekday overlap.
    #[error("calendar {calendar}: {weekday} periods {first} and {second} overlap")]
    Overlap {
        calendar: String,
        weekday: Weekday,
        first: String,
        second: String,
    },
    /// No weekday has any open hours, so the clock would never run.
    #[error("calendar {calendar}: no weekday has open hours, so its clock would never run")]
    NeverOpen { calendar: String },
    /// A holiday rule's numbers are wrong.
    #[error("calendar {calendar}: holiday {holiday:?}: {problem}")]
    BadHoliday {
        calendar: String,
        holiday: String,
        problem: String,
    },
}

/// A named business-hours calendar: a time zone, open periods per weekday and holidays.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    name: String,
    zone: Tz,
    /// Per weekday (Monday first), sorted, disjoint, non-touching `[start, end)` in seconds since
    /// local midnight; `end` may be 86 400 (24:00).
    hours: [Vec<(u32, u32)>; 7],
    holidays: Vec<HolidayRule>,
    /// Open every second of every day with no holidays: plain UTC arithmetic.
    always_open: bool,
}

/// Monday..Friday `start`-`end`, weekend closed.
pub fn weekdays(start: NaiveTime, end: NaiveTime) -> WeekHours {
    std::array::from_fn(|i| {
        if i < 5 {
            vec![(start, end)]
        } else {
            Vec::new()
        }
    })
}

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn hms(h: u32, m: u32) -> u32 {
    h * 3600 + m * 60
}

fn format_secs(s: u32) -> String {
    format!("{:02}:{:02}", s / 3600, s / 60 % 60)
}

fn clamp(at: DateTime<Utc>) -> DateTime<Utc> {
    at.clamp(EARLIEST, NEVER)
}

impl Calendar {
    /// Builds and validates a calendar; the error says which part is wrong.
    pub fn new(
        name: &str,
        zone: &str,
        hours: WeekHours,
        holidays: Vec<HolidayRule>,
    ) -> Result<Calendar, CalendarError> {
        let calendar = name.trim().to_string();
        if calendar.is_empty() {
            return Err(CalendarError::NoName);
        }
        let tz: Tz = zone.parse().map_err(|_| CalendarError::UnknownZone {
            calendar: calendar.clone(),
            zone: zone.to_string(),
        })?;
        let mut secs: [Vec<(u32, u32)>; 7] = Default::default();
        for (i, periods) in hours.iter().enumerate() {
            let weekday = WEEK[i];
            let mut day = Vec::with_capacity(periods.len());
            for &(start, end) in periods {
                for time in [start, end] {
                    if time.nanosecond() != 0 {
                        return Err(CalendarError::FractionalTime {
                            calendar,
                            weekday,
                            time,
                        });
                    }
                }
                let s = start.num_seconds_from_midnight();
                let e = match end.num_seconds_from_midnight() {
                    0 => SECONDS_PER_DAY,
                    e => e,
                };
                if e <= s {
                    return Err(CalendarError::EmptyPeriod {
                        calendar,
                        weekday,
                        start,
                        end,
                    });
                }
                day.push((s, e));
            }
            day.sort_unstable();
            let mut merged: Vec<(u32, u32)> = Vec::with_capacity(day.len());
            for (s, e) in day {
                match merged.last_mut() {
                    Some(last) if s < last.1 => {
                        return Err(CalendarError::Overlap {
                            calendar,
                            weekday,
                            first: format!("{}-{}", format_secs(last.0), format_secs(last.1)),
                            second: format!("{}-{}", format_secs(s), format_secs(e)),
                        });
                    }
                    // 08:00-12:00 and 12:00-17:00 are one period.
                    Some(last) if s == last.1 => last.1 = e,
                    _ => merged.push((s, e)),
                }
            }
            secs[i] = merged;
        }
        if secs.iter().all(Vec::is_empty) {
            return Err(CalendarError::NeverOpen { calendar });
        }
        for rule in &holidays {
            rule.check().map_err(|problem| CalendarError::BadHoliday {
                calendar: calendar.clone(),
                holiday: rule.name().to_string(),
                problem,
            })?;
        }
        Ok(Calendar::from_parts(calendar, tz, secs, holidays))
    }

    fn from_parts(
        name: String,
        zone: Tz,
        hours: [Vec<(u32, u32)>; 7],
        holidays: Vec<HolidayRule>,
    ) -> Calendar {
        let always_open = holidays.is_empty()
            && hours
                .iter()
                .all(|day| day.as_slice() == [(0, SECONDS_PER_DAY)]);
        Calendar {
            name,
            zone,
            hours,
            holidays,
            always_open,
        }
    }

    /// Open all the time, no holidays, UTC (the `24x7` clock of Sev 1 and 2).
    pub fn always(name: &str) -> Calendar {
        Calendar::from_parts(
            name.to_string(),
            Tz::UTC,
            std::array::from_fn(|_| vec![(0, SECONDS_PER_DAY)]),
            Vec::new(),
        )
    }

    /// SPEC's default `us-central`: 08:00-17:00 America/Chicago, Monday-Friday, US holidays.
    pub fn us_central() -> Calendar {
        Calendar::from_parts(
            "us-central".to_string(),
            chrono_tz::America::Chicago,
            std::array::from_fn(|i| {
                if i < 5 {
                    vec![(hms(8, 0), hms(17, 0))]
                } else {
                    Vec::new()
                }
            }),
            us_holidays(),
        )
    }

    /// The shipped example `us-east-engineering`: 09:00-13:00 America/New_York, Monday-Friday, US holidays.
    pub fn us_east_engineering() -> Calendar {
        Calendar::from_parts(
            "us-east-engineering".to_string(),
            chrono_tz::America::New_York,
            std::array::from_fn(|i| {
                if i < 5 {
                    vec![(hms(9, 0), hms(13, 0))]
                } else {
                    Vec::new()
                }
            }),
            us_holidays(),
        )
    }

    /// The calendar's name, as config refers to it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time zone its open hours are written in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The holiday rules.
    pub fn holiday_rules(&self) -> &[HolidayRule] {
        &self.holidays
    }

    /// The name of the holiday (day off) on that local date, if any; the first matching rule wins.
    pub fn holiday(&self, date: NaiveDate) -> Option<&str> {
        let year = date.year();
        self.holidays
            .iter()
            .find(|rule| {
                [year.checked_sub(1), Some(year), year.checked_add(1)]
                    .into_iter()
                    .flatten()
                    .any(|y| rule.date_in(y) == Some(date))
            })
            .map(HolidayRule::name)
    }

    /// The days off from `from` to `to` (both inclusive, local dates), sorted, one name per date.
    pub fn holidays_between(&self, from: NaiveDate, to: NaiveDate) -> Vec<(NaiveDate, &str)> {
        let mut found: Vec<(NaiveDate, usize)> = Vec::new();
        if to < from {
            return Vec::new();
        }
        // A year's occurrence may be observed in the year before or after.
        for year in from.year().saturating_sub(1)..=to.year().saturating_add(1) {
            for (i, rule) in self.holidays.iter().enumerate() {
                if let Some(date) = rule.date_in(year).filter(|d| (from..=to).contains(d)) {
                    found.push((date, i));
                }
            }
        }
        found.sort_unstable();
        found.dedup_by_key(|(date, _)| *date);
        found
            .into_iter()
            .map(|(date, i)| (date, self.holidays[i].name()))
            .collect()
    }

    /// An open weekday that is no holiday.
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        !self.day_hours(date).is_empty() && self.holiday(date).is_none()
    }

    /// Whether the clock runs at that instant.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.next_open(at) == clamp(at) && at < NEVER
    }

    /// The first open instant at or after `at` (`at` itself when open), or [`NEVER`].
    pub fn next_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let at = clamp(at);
        if at >= NEVER {
            return NEVER;
        }
        if self.always_open {
            return at;
        }
        self.periods_after(at)
            .next()
            .map_or(NEVER, |(open, _)| open.max(at))
    }

    /// The instant when `d` of open time has passed after `start` (negative counts as zero).
    ///
    /// Zero is the next opening; a deadline that uses up a day's open time exactly is that day's
    /// closing time. Further than [`HORIZON_DAYS`] away: [`NEVER`].
    pub fn add_open_time(&self, start: DateTime<Utc>, d: TimeDelta) -> DateTime<Utc> {
        let start = clamp(start);
        let d = d.max(TimeDelta::zero());
        if self.always_open {
            return start.checked_add_signed(d).map_or(NEVER, |t| t.min(NEVER));
        }
        let mut left = d;
        for (open, close) in self.periods_after(start) {
            let from = open.max(start);
            let available = close - from;
            if left <= available {
                return from + left;
            }
            left -= available;
        }
        NEVER
    }

    /// The same local time of day `days` business days later.
    ///
    /// A start outside open time first moves to the next opening. When the target day is not
    /// open at that time of day (days with other hours), it is the next opening that day, or that
    /// day's closing time when none follows. Further than [`HORIZON_DAYS`] away: [`NEVER`].
    pub fn add_business_days(&self, start: DateTime<Utc>, days: u32) -> DateTime<Utc> {
        let opening = self.next_open(start);
        if opening >= NEVER {
            return NEVER;
        }
        if days == 0 {
            return opening;
        }
        if i64::from(days) > HORIZON_DAYS {
            return NEVER;
        }
        let local = opening.with_timezone(&self.zone).naive_local();
        let mut date = local.date();
        let time_of_day = local.time().num_seconds_from_midnight();
        let mut left = days;
        for _ in 0..HORIZON_DAYS {
            let Some(next) = date.succ_opt() else {
                return NEVER;
            };
            date = next;
            if self.is_business_day(date) {
                left -= 1;
                if left == 0 {
                    return self.same_time_on(date, time_of_day);
                }
            }
        }
        NEVER
    }

    /// Open time from `a` to `b`; zero when `b <= a`; [`TimeDelta::MAX`] when they are more
    /// than [`HORIZON_DAYS`] - 2 days apart (the day walk covers no more).
    pub fn open_time_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> TimeDelta {
        let (a, b) = (clamp(a), clamp(b));
        if b <= a {
            return TimeDelta::zero();
        }
        if self.always_open {
            return b - a;
        }
        if b - a > TimeDelta::days(HORIZON_DAYS - 2) {
            return TimeDelta::MAX;
        }
        self.open_periods(a, b)
            .into_iter()
            .fold(TimeDelta::zero(), |sum, (open, close)| sum + (close - open))
    }

    /// The open periods between `from` and `to`, clipped to them, touching ones merged (for `sla explain`).
    ///
    /// Lists at most [`HORIZON_DAYS`] days of periods after `from`.
    pub fn open_periods(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let (from, to) = (clamp(from), clamp(to));
        let mut periods: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        if to <= from {
            return periods;
        }
        if self.always_open {
            periods.push((from, to));
            return periods;
        }
        for (open, close) in self.periods_after(from) {
            if open >= to {
                break;
            }
            let (open, close) = (open.max(from), close.min(to));
            match periods.last_mut() {
                Some(last) if last.1 == open => last.1 = close,
                _ => periods.push((open, close)),
            }
        }
        periods
    }

    /// The weekday's open periods in seconds since local midnight.
    fn day_hours(&self, date: NaiveDate) -> &[(u32, u32)] {
        &self.hours[date.weekday().num_days_from_monday() as usize]
    }

    /// The open periods (as UTC instants) that end after `at`, in order,
    /// over at most [`HORIZON_DAYS`] days. `at` must be clamped.
    fn periods_after(
        &self,
        at: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        // Start a day early: near midnight, a period of the previous local date (one that ends at
        // 24:00, or one moved by a DST change at midnight) may still be running at `at`.
        let first = at.with_timezone(&self.zone).date_naive();
        let first = first.pred_opt().unwrap_or(first);
        first
            .iter_days()
            .take(HORIZON_DAYS as usize)
            .filter(|date| self.holiday(*date).is_none())
            .flat_map(move |date| {
                self.day_hours(date).iter().filter_map(move |&(s, e)| {
                    let open = self.local_instant(date, s);
                    let close = self.local_instant(date, e);
                    // A period inside a spring-forward gap has no real time.
                    (open < close).then_some((open, close))
                })
            })
            .filter(move |&(_, close)| close > at)
    }

    /// `time_of_day` on `date`, or the next opening that day, or that day's closing time.
    fn same_time_on(&self, date: NaiveDate, time_of_day: u32) -> DateTime<Utc> {
        let hours = self.day_hours(date);
        let target = match hours.iter().find(|&&(_, e)| time_of_day < e) {
            Some(&(s, _)) => time_of_day.max(s),
            None => hours.last().map_or(time_of_day, |&(_, e)| e),
        };
        self.local_instant(date, target)
    }

    /// The instant of the local wall-clock time `secs` after midnight on `date` (86 400 = 24:00).
    ///
    /// A time in a spring-forward gap is the first instant after the gap; a time that happens
    /// twice (fall back) is the earlier one. Both are "the first instant whose local time is at
    /// or after it", which keeps the mapping monotonic, so periods never overlap.
    fn local_instant(&self, date: NaiveDate, secs: u32) -> DateTime<Utc> {
        let Some(local) = date
            .and_time(NaiveTime::MIN)
            .checked_add_signed(TimeDelta::seconds(i64::from(secs)))
        else {
            return NEVER;
        };
        match local.and_local_timezone(self.zone).earliest() {
            Some(t) => clamp(t.with_timezone(&Utc)),
            None => self.end_of_gap(local),
        }
    }

    /// The first instant whose local time is at or after `local`, for a `local` in a gap.
    fn end_of_gap(&self, local: NaiveDateTime) -> DateTime<Utc> {
        // UTC offsets lie within -12h..=+14h, so `local` read as UTC minus 15 hours is before
        // it and plus 13 hours after it; bisect to the second between them.
        let as_utc = local.and_utc().timestamp();
        let (mut before, mut after) = (as_utc - 15 * 3600, as_utc + 13 * 3600);
        while after - before > 1 {
            let mid = before + (after - before) / 2;
            let reached = DateTime::from_timestamp(mid, 0)
                .is_none_or(|t| t.with_timezone(&self.zone).naive_local() >= local);
            if reached {
                after = mid;
            } else {
                before = mid;
            }
        }
        DateTime::from_timestamp(after, 0).map_or(NEVER, clamp)
    }
}

impl fmt::Display for Calendar {
    /// `us-central (America/Chicago)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::{Chicago, New_York};

    /// A local wall-clock time ("2026-02-06 16:30") in `zone`, the earlier instant if ambiguous.
    fn local(zone: Tz, s: &str) -> DateTime<Utc> {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap_or_else(|e| panic!("bad test time {s:?}: {e}"));
        naive
            .and_local_timezone(zone)
            .earliest()
            .unwrap_or_else(|| panic!("{s} does not exist in {zone}"))
            .with_timezone(&Utc)
    }

    fn ct(s: &str) -> DateTime<Utc> {
        local(Chicago, s)
    }

    fn et(s: &str) -> DateTime<Utc> {
        local(New_York, s)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        local(Tz::UTC, s)
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("bad date {s:?}: {e}"))
    }

    fn time(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
    }

    fn every_day(periods: &[(&str, &str)]) -> WeekHours {
        std::array::from_fn(|_| periods.iter().map(|(s, e)| (time(s), time(e))).collect())
    }

    /// Open 00:30-03:30 Chicago time every day: its periods straddle both DST changes.
    fn night_shift() -> Calendar {
        Calendar::new(
            "night-shift",
            "America/Chicago",
            every_day(&[("00:30", "03:30")]),
            Vec::new(),
        )
        .expect("valid calendar")
    }

    /// Open around the clock in Chicago, with one holiday long ago so the day-by-day path runs.
    fn chicago_around_the_clock() -> Calendar {
        let long_ago = HolidayRule::Date {
            name: "long ago".to_string(),
            date: date("1990-01-01"),
        };
        Calendar::new(
            "chicago-24x7",
            "America/Chicago",
            every_day(&[("00:00", "00:00")]),
            vec![long_ago],
        )
        .expect("valid calendar")
    }

    /// 08:00-12:00 and 13:00-17:00 Chicago, Monday-Friday, US holidays.
    fn lunch_break() -> Calendar {
        let hours = std::array::from_fn(|i| {
            if i < 5 {
                vec![
                    (time("13:00"), time("17:00")),
                    (time("08:00"), time("12:00")),
                ]
            } else {
                Vec::new()
            }
        });
        Calendar::new("lunch-break", "America/Chicago", hours, us_holidays())
            .expect("valid calendar")
    }

    #[test]
    fn shipped_calendars_pass_validation() {
        let cases = [
            (
                Calendar::us_central(),
                Calendar::new(
                    "us-central",
                    "America/Chicago",
                    weekdays(time("08:00"), time("17:00")),
                    us_holidays(),
                ),
            ),
            (
                Calendar::us_east_engineering(),
                Calendar::new(
                    "us-east-engineering",
                    "America/New_York",
                    weekdays(time("09:00"), time("13:00")),
                    us_holidays(),
                ),
            ),
            (
                Calendar::always("24x7"),
                Calendar::new("24x7", "UTC", every_day(&[("00:00", "00:00")]), Vec::new()),
            ),
        ];
        for (shipped, built) in cases {
            assert_eq!(Ok(&shipped), built.as_ref(), "{}", shipped.name());
        }
        assert!(Calendar::always("24x7").always_open);
        assert!(!Calendar::us_central().always_open);
        assert_eq!(Calendar::us_central().zone(), Chicago);
        assert_eq!(
            Calendar::us_central().to_string(),
            "us-central (America/Chicago)"
        );
    }

    #[test]
    fn new_rejects_bad_definitions_and_says_why() {
        let nine_to_five = || weekdays(time("09:00"), time("17:00"));
        let rule = |month, n| HolidayRule::NthWeekday {
            name: "Odd Day".to_string(),
            month,
            weekday: Weekday::Mon,
            n,
        };
        let cases: Vec<(&str, Result<Calendar, CalendarError>, &str)> = vec![
            (
                "unknown zone",
                Calendar::new("x", "America/Chicag", nine_to_five(), Vec::new()),
                "calendar x: unknown time zone \"America/Chicag\"; use an IANA name such as \"America/Chicago\"",
            ),
            (
                "end before start",
                Calendar::new(
                    "x",
                    "UTC",
                    weekdays(time("17:00"), time("09:00")),
                    Vec::new(),
                ),
                "calendar x: Mon 17:00:00-09:00:00 does not end after it starts (write 00:00 as the end for midnight)",
            ),
            (
                "empty period",
                Calendar::new(
                    "x",
                    "UTC",
                    weekdays(time("09:00"), time("09:00")),
                    Vec::new(),
                ),
                "calendar x: Mon 09:00:00-09:00:00 does not end after it starts (write 00:00 as the end for midnight)",
            ),
            (
                "overlapping periods",
                Calendar::new(
                    "x",
                    "UTC",
                    every_day(&[("09:00", "13:00"), ("12:00", "17:00")]),
                    Vec::new(),
                ),
                "calendar x: Mon periods 09:00-13:00 and 12:00-17:00 overlap",
            ),
            (
                "never open",
                Calendar::new("x", "UTC", Default::default(), Vec::new()),
                "calendar x: no weekday has open hours, so its clock would never run",
            ),
            (
                "month 13",
                Calendar::new("x", "UTC", nine_to_five(), vec![rule(13, 1)]),
                "calendar x: holiday \"Odd Day\": month 13 is not 1..=12",
            ),
            (
                "fifth Monday",
                Calendar::new("x", "UTC", nine_to_five(), vec![rule(5, 5)]),
                "calendar x: holiday \"Odd Day\": n = 5: use 1..=4, or -1 for the last one",
            ),
            (
                "February 30",
                Calendar::new(
                    "x",
                    "UTC",
                    nine_to_five(),
                    vec![HolidayRule::Fixed {
                        name: "Never".to_string(),
                        month: 2,
                        day: 30,
                        observed: true,
                    }],
                ),
                "calendar x: holiday \"Never\": month 2, day 30 is no date",
            ),
            (
                "no name",
                Calendar::new(" ", "UTC", nine_to_five(), Vec::new()),
                "a calendar needs a name",
            ),
        ];
        for (case, result, message) in cases {
            match result {
                Ok(_) => panic!("{case}: accepted"),
                Err(e) => assert_eq!(e.to_string(), message, "{case}"),
            }
        }
    }

    #[test]
    fn touching_periods_are_one_and_unsorted_periods_are_sorted() {
        let split = Calendar::new(
            "x",
            "America/Chicago",
            every_day(&[("12:00", "17:00"), ("08:00", "12:00")]),
            Vec::new(),
        )
        .expect("valid");
        let whole = Calendar::new(
            "x",
            "America/Chicago",
            every_day(&[("08:00", "17:00")]),
            Vec::new(),
        )
        .expect("valid");
        assert_eq!(split, whole);
    }

    #[test]
    fn holiday_rules_give_the_observed_day_off() {
        let cal = Calendar::us_central();
        let cases = [
            ("thanksgiving 2026", "2026-11-26", Some("Thanksgiving Day")),
            (
                "day after thanksgiving 2026",
                "2026-11-27",
                Some("Day after Thanksgiving"),
            ),
            (
                "july 4 on a saturday: friday off",
                "2026-07-03",
                Some("Independence Day"),
            ),
            (
                "july 4 on a saturday: the saturday is no day off",
                "2026-07-04",
                None,
            ),
            (
                "christmas on a sunday: monday off",
                "2022-12-26",
                Some("Christmas Day"),
            ),
            (
                "christmas on a saturday: friday off",
                "2021-12-24",
                Some("Christmas Day"),
            ),
            (
                "new year on a saturday: friday dec 31 of the old year",
                "2021-12-31",
                Some("New Year's Day"),
            ),
            (
                "new year on a saturday: the saturday is no day off",
                "2022-01-01",
                None,
            ),
            (
                "new year on a sunday: monday off",
                "2023-01-02",
                Some("New Year's Day"),
            ),
            (
                "new year 2101 observed in 2100",
                "2100-12-31",
                Some("New Year's Day"),
            ),
            (
                "memorial day 2026: last monday of may",
                "2026-05-25",
                Some("Memorial Day"),
            ),
            (
                "memorial day 2021 on may 31",
                "2021-05-31",
                Some("Memorial Day"),
            ),
            (
                "labor day 2026: first monday of september",
                "2026-09-07",
                Some("Labor Day"),
            ),
            (
                "labor day 2025 on september 1",
                "2025-09-01",
                Some("Labor Day"),
            ),
            ("an ordinary monday", "2026-06-01", None),
        ];
        for (case, day, expected) in cases {
            assert_eq!(cal.holiday(date(day)), expected, "{case}");
        }
    }

    #[test]
    fn an_occurrence_belongs_to_the_year_of_its_nominal_date() {
        let new_year = &us_holidays()[0];
        assert_eq!(new_year.date_in(2022), Some(date("2021-12-31")));
        assert_eq!(new_year.date_in(2021), Some(date("2021-01-01")));
        let shutdown = HolidayRule::Date {
            name: "Shutdown".to_string(),
            date: date("2026-12-28"),
        };
        assert_eq!(shutdown.date_in(2026), Some(date("2026-12-28")));
        assert_eq!(shutdown.date_in(2027), None);
        let leap = HolidayRule::Fixed {
            name: "Leap Day".to_string(),
            month: 2,
            day: 29,
            observed: false,
        };
        assert_eq!(leap.date_in(2027), None);
        assert_eq!(leap.date_in(2028), Some(date("2028-02-29")));
    }

    #[test]
    fn holidays_between_crosses_year_ends() {
        let cal = Calendar::us_central();
        let got = cal.holidays_between(date("2021-12-01"), date("2022-01-31"));
        assert_eq!(
            got,
            vec![
                (date("2021-12-24"), "Christmas Day"),
                (date("2021-12-31"), "New Year's Day")
            ]
        );
        let got = cal.holidays_between(date("2022-01-01"), date("2022-12-31"));
        assert_eq!(
            got.len(),
            6,
            "2022's New Year's Day was taken in 2021: {got:?}"
        );
        assert!(
            cal.holidays_between(date("2022-02-01"), date("2022-01-01"))
                .is_empty()
        );
    }

    /// The fixture comes from python-holidays (scripts/check-holidays.py): an independent source.
    #[test]
    fn us_holidays_match_python_holidays_2000_to_2100() {
        let expected: Vec<&str> = include_str!("../../fixtures/holidays/us-2000-2100.txt")
            .lines()
            .collect();
        let cal = Calendar::us_central();
        let ours: Vec<String> = cal
            .holidays_between(date("2000-01-01"), date("2100-12-31"))
            .into_iter()
            .map(|(day, name)| format!("{day} {name}"))
            .collect();
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|line| !ours.iter().any(|o| o == **line))
            .collect();
        let extra: Vec<&String> = ours
            .iter()
            .filter(|o| !expected.contains(&o.as_str()))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "python-holidays only: {missing:?}\nours only: {extra:?}"
        );
        assert_eq!(ours.len(), 7 * 101);
    }

    #[test]
    fn business_days_are_open_weekdays_without_holidays() {
        let cal = Calendar::us_central();
        let cases = [
            ("a wednesday", "2026-02-11", true),
            ("a saturday", "2026-02-14", false),
            ("a sunday", "2026-02-15", false),
            ("thanksgiving", "2026-11-26", false),
            ("observed new year in the old year", "2021-12-31", false),
        ];
        for (case, day, expected) in cases {
            assert_eq!(cal.is_business_day(date(day)), expected, "{case}");
        }
    }

    #[test]
    fn open_and_next_opening() {
        let central = Calendar::us_central();
        // (case, calendar, at, open?, next opening)
        let cases = [
            (
                "opening instant is open",
                &central,
                ct("2026-02-10 08:00"),
                true,
                ct("2026-02-10 08:00"),
            ),
            (
                "during the day",
                &central,
                ct("2026-02-10 16:59"),
                true,
                ct("2026-02-10 16:59"),
            ),
            (
                "closing instant is closed",
                &central,
                ct("2026-02-10 17:00"),
                false,
                ct("2026-02-11 08:00"),
            ),
            (
                "at night",
                &central,
                ct("2026-02-10 23:00"),
                false,
                ct("2026-02-11 08:00"),
            ),
            (
                "before opening",
                &central,
                ct("2026-02-11 06:00"),
                false,
                ct("2026-02-11 08:00"),
            ),
            (
                "saturday",
                &central,
                ct("2026-02-14 11:00"),
                false,
                ct("2026-02-16 08:00"),
            ),
            (
                "thanksgiving",
                &central,
                ct("2026-11-26 10:00"),
                false,
                ct("2026-11-30 08:00"),
            ),
            (
                "observed new year in the old year",
                &central,
                ct("2021-12-30 17:30"),
                false,
                ct("2022-01-03 08:00"),
            ),
        ];
        for (case, cal, at, open, next) in cases {
            assert_eq!(cal.is_open(at), open, "{case}: is_open");
            assert_eq!(cal.next_open(at), next, "{case}: next_open");
        }
    }

    #[test]
    fn add_open_time_cases() {
        let central = Calendar::us_central();
        let east = Calendar::us_east_engineering();
        let always = Calendar::always("24x7");
        let night = night_shift();
        let lunch = lunch_break();
        let h = TimeDelta::hours;
        let m = TimeDelta::minutes;
        // (case, calendar, start, open time, deadline)
        let cases = [
            (
                "sev 3 friday 16:30 + 24h: 0.5h fri, 9h mon, 9h tue, 5.5h wed",
                &central,
                ct("2026-02-06 16:30"),
                h(24),
                ct("2026-02-11 13:30"),
            ),
            (
                "friday 16:30 + 30min stays at friday closing",
                &central,
                ct("2026-02-06 16:30"),
                m(30),
                ct("2026-02-06 17:00"),
            ),
            (
                "a whole day from opening ends at that day's closing",
                &central,
                ct("2026-02-11 08:00"),
                h(9),
                ct("2026-02-11 17:00"),
            ),
            (
                "zero open time at night is the next opening",
                &central,
                ct("2026-02-10 22:00"),
                h(0),
                ct("2026-02-11 08:00"),
            ),
            (
                "zero open time while open is now",
                &central,
                ct("2026-02-10 10:00"),
                h(0),
                ct("2026-02-10 10:00"),
            ),
            (
                "negative counts as zero",
                &central,
                ct("2026-02-10 22:00"),
                h(-5),
                ct("2026-02-11 08:00"),
            ),
            (
                "mail at night starts at the next opening",
                &central,
                ct("2026-02-10 23:10"),
                h(2),
                ct("2026-02-11 10:00"),
            ),
            (
                "mail on a holiday starts after it",
                &central,
                ct("2026-11-26 09:00"),
                h(1),
                ct("2026-11-30 09:00"),
            ),
            (
                "wednesday before thanksgiving + 2h",
                &central,
                ct("2026-11-25 16:00"),
                h(2),
                ct("2026-11-30 09:00"),
            ),
            (
                "mail on observed july 4",
                &central,
                ct("2026-07-03 09:00"),
                h(1),
                ct("2026-07-06 09:00"),
            ),
            (
                "across the year end and new year's day",
                &central,
                ct("2026-12-31 16:00"),
                h(2),
                ct("2027-01-04 09:00"),
            ),
            (
                "48h of sev 4 is 5 days and 3h",
                &central,
                ct("2026-02-09 08:00"),
                h(48),
                ct("2026-02-16 11:00"),
            ),
            (
                "across the march dst weekend",
                &central,
                ct("2026-03-06 12:00"),
                h(9),
                local(Chicago, "2026-03-09 12:00"),
            ),
            (
                "engineering 12:30 + 1h is next day 09:30",
                &east,
                et("2026-02-10 12:30"),
                h(1),
                et("2026-02-11 09:30"),
            ),
            (
                "engineering friday 12:00 + 1h ends at friday 13:00 closing",
                &east,
                et("2026-02-13 12:00"),
                h(1),
                et("2026-02-13 13:00"),
            ),
            (
                "engineering friday 12:30 + 1h is monday 09:30",
                &east,
                et("2026-02-13 12:30"),
                h(1),
                et("2026-02-16 09:30"),
            ),
            (
                "sev 1 at 23:50 dec 31 + 15min",
                &always,
                utc("2025-12-31 23:50"),
                m(15),
                utc("2026-01-01 00:05"),
            ),
            (
                "sev 1 24x7 is plain utc",
                &always,
                utc("2026-03-07 12:00"),
                h(24),
                utc("2026-03-08 12:00"),
            ),
            (
                "lunch break is skipped",
                &lunch,
                ct("2026-02-10 10:00"),
                h(4),
                ct("2026-02-10 15:00"),
            ),
            (
                "morning ends at 12:00, not 13:00",
                &lunch,
                ct("2026-02-10 10:00"),
                h(2),
                ct("2026-02-10 12:00"),
            ),
            (
                "night shift on spring-forward day has 2h",
                &night,
                ct("2026-03-08 00:30"),
                h(2),
                utc("2026-03-08 08:30"),
            ),
            (
                "night shift on fall-back day has 4h",
                &night,
                ct("2026-11-01 00:30"),
                h(4),
                utc("2026-11-01 09:30"),
            ),
        ];
        for (case, cal, start, d, expected) in cases {
            let got = cal.add_open_time(start, d);
            assert_eq!(got, expected, "{case}: got {got}, expected {expected}");
            let from = cal.next_open(start);
            assert_eq!(
                cal.open_time_between(from, got),
                d.max(TimeDelta::zero()),
                "{case}: between"
            );
        }
    }

    #[test]
    fn add_business_days_cases() {
        let central = Calendar::us_central();
        let always = Calendar::always("24x7");
        // (case, calendar, start, days, deadline)
        let cases = [
            (
                "two days over thanksgiving and a weekend",
                &central,
                ct("2026-11-25 10:15"),
                2,
                ct("2026-12-01 10:15"),
            ),
            (
                "one day over observed july 4 and a weekend",
                &central,
                ct("2026-07-02 14:00"),
                1,
                ct("2026-07-06 14:00"),
            ),
            (
                "one day over new year's day",
                &central,
                ct("2026-12-31 10:00"),
                1,
                ct("2027-01-04 10:00"),
            ),
            (
                "keeps local time across spring forward",
                &central,
                ct("2026-03-06 09:00"),
                1,
                ct("2026-03-09 09:00"),
            ),
            (
                "keeps local time across fall back",
                &central,
                ct("2026-10-30 16:45"),
                1,
                ct("2026-11-02 16:45"),
            ),
            (
                "start on a saturday moves to monday's opening",
                &central,
                ct("2026-11-28 09:00"),
                1,
                ct("2026-12-01 08:00"),
            ),
            (
                "start after closing moves to next opening",
                &central,
                ct("2026-02-10 17:00"),
                3,
                ct("2026-02-16 08:00"),
            ),
            (
                "zero days is the next opening",
                &central,
                ct("2026-02-10 20:00"),
                0,
                ct("2026-02-11 08:00"),
            ),
            (
                "five days close pending",
                &central,
                ct("2026-02-10 11:00"),
                5,
                ct("2026-02-17 11:00"),
            ),
            (
                "24x7 counts every day",
                &always,
                utc("2026-12-31 23:50"),
                2,
                utc("2027-01-02 23:50"),
            ),
        ];
        for (case, cal, start, days, expected) in cases {
            let got = cal.add_business_days(start, days);
            assert_eq!(got, expected, "{case}: got {got}, expected {expected}");
        }
    }

    #[test]
    fn business_days_on_a_day_with_other_hours() {
        // Friday closes at 12:00; Monday-Thursday 08:00-17:00.
        let mut hours = weekdays(time("08:00"), time("17:00"));
        hours[4] = vec![(time("10:00"), time("12:00"))];
        let cal =
            Calendar::new("short-friday", "America/Chicago", hours, Vec::new()).expect("valid");
        let cases = [
            (
                "after friday's closing: friday's closing",
                ct("2026-02-12 15:00"),
                ct("2026-02-13 12:00"),
            ),
            (
                "before friday's opening: friday's opening",
                ct("2026-02-12 08:30"),
                ct("2026-02-13 10:00"),
            ),
            (
                "within friday's hours: same time",
                ct("2026-02-12 11:00"),
                ct("2026-02-13 11:00"),
            ),
        ];
        for (case, start, expected) in cases {
            assert_eq!(cal.add_business_days(start, 1), expected, "{case}");
        }
    }

    #[test]
    fn open_time_between_counts_real_hours_across_dst() {
        let central = Calendar::us_central();
        let night = night_shift();
        let clock = chicago_around_the_clock();
        let always = Calendar::always("24x7");
        let h = TimeDelta::hours;
        // (case, calendar, from, to, open time)
        let cases = [
            (
                "central across the march weekend",
                &central,
                ct("2026-03-06 12:00"),
                ct("2026-03-09 12:00"),
                h(9),
            ),
            (
                "central across the november weekend",
                &central,
                ct("2026-10-30 12:00"),
                ct("2026-11-02 12:00"),
                h(9),
            ),
            (
                "night shift on spring-forward day",
                &night,
                ct("2026-03-08 00:00"),
                ct("2026-03-08 12:00"),
                h(2),
            ),
            (
                "night shift on fall-back day",
                &night,
                ct("2026-11-01 00:00"),
                ct("2026-11-01 12:00"),
                h(4),
            ),
            (
                "night shift on an ordinary day",
                &night,
                ct("2026-11-02 00:00"),
                ct("2026-11-02 12:00"),
                h(3),
            ),
            (
                "chicago 24x7 spring-forward day has 23h",
                &clock,
                ct("2026-03-08 00:00"),
                ct("2026-03-09 00:00"),
                h(23),
            ),
            (
                "chicago 24x7 fall-back day has 25h",
                &clock,
                ct("2026-11-01 00:00"),
                ct("2026-11-02 00:00"),
                h(25),
            ),
            (
                "reversed interval is zero",
                &central,
                ct("2026-02-11 12:00"),
                ct("2026-02-10 12:00"),
                h(0),
            ),
            (
                "weekend is zero",
                &central,
                ct("2026-02-14 00:00"),
                ct("2026-02-16 08:00"),
                h(0),
            ),
            (
                "24x7 over the year end",
                &always,
                utc("2025-12-31 23:00"),
                utc("2026-01-01 01:00"),
                h(2),
            ),
        ];
        for (case, cal, from, to, expected) in cases {
            assert_eq!(cal.open_time_between(from, to), expected, "{case}");
        }
    }

    #[test]
    fn spring_forward_gap_moves_forward_and_fall_back_takes_the_earlier() {
        let gap = Calendar::new(
            "gap",
            "America/Chicago",
            every_day(&[("02:00", "02:30"), ("02:45", "04:00")]),
            Vec::new(),
        )
        .expect("valid");
        // 2026-03-08: 02:00-03:00 CST does not exist; 02:00-02:30 vanishes, 02:45 is 03:00 CDT.
        assert_eq!(
            gap.open_periods(ct("2026-03-08 00:00"), ct("2026-03-08 12:00")),
            vec![(utc("2026-03-08 08:00"), utc("2026-03-08 09:00"))]
        );
        let repeat = Calendar::new(
            "repeat",
            "America/Chicago",
            every_day(&[("01:15", "01:45")]),
            Vec::new(),
        )
        .expect("valid");
        // 2026-11-01: 01:00-02:00 happens twice; the first pass (CDT, UTC-5) counts.
        assert_eq!(
            repeat.open_periods(ct("2026-11-01 00:00"), ct("2026-11-01 12:00")),
            vec![(utc("2026-11-01 06:15"), utc("2026-11-01 06:45"))]
        );
    }

    #[test]
    fn open_periods_for_sla_explain() {
        let central = Calendar::us_central();
        assert_eq!(
            central.open_periods(ct("2026-02-06 16:00"), ct("2026-02-10 09:00")),
            vec![
                (ct("2026-02-06 16:00"), ct("2026-02-06 17:00")),
                (ct("2026-02-09 08:00"), ct("2026-02-09 17:00")),
                (ct("2026-02-10 08:00"), ct("2026-02-10 09:00")),
            ]
        );
        // Around the clock, days touch at midnight: one period.
        let clock = chicago_around_the_clock();
        assert_eq!(
            clock.open_periods(ct("2026-03-07 12:00"), ct("2026-03-09 12:00")),
            vec![(ct("2026-03-07 12:00"), ct("2026-03-09 12:00"))]
        );
        assert!(
            central
                .open_periods(ct("2026-02-10 09:00"), ct("2026-02-10 09:00"))
                .is_empty()
        );
    }

    #[test]
    fn a_calendar_whose_open_days_are_all_holidays_gives_up() {
        // Open on Mondays only, and every date of the year is a holiday.
        let mut hours: WeekHours = Default::default();
        hours[0] = vec![(time("09:00"), time("17:00"))];
        let every_date = (1..=12)
            .flat_map(|month| (1..=31).map(move |day| (month, day)))
            .filter(|&(month, day)| NaiveDate::from_ymd_opt(2000, month, day).is_some())
            .map(|(month, day)| HolidayRule::Fixed {
                name: format!("{month}-{day}"),
                month,
                day,
                observed: false,
            })
            .collect();
        let cal = Calendar::new("closed", "UTC", hours, every_date).expect("valid");
        let start = utc("2026-02-09 10:00");
        assert_eq!(cal.next_open(start), NEVER);
        assert!(!cal.is_open(start));
        assert_eq!(cal.add_open_time(start, TimeDelta::hours(1)), NEVER);
        assert_eq!(cal.add_business_days(start, 1), NEVER);
        assert_eq!(
            cal.open_time_between(start, start + TimeDelta::days(30)),
            TimeDelta::zero()
        );
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let tokyo = Calendar::new(
            "tokyo",
            "Asia/Tokyo",
            weekdays(time("09:00"), time("17:00")),
            Vec::new(),
        )
        .expect("valid");
        let samoa = Calendar::new(
            "apia",
            "Pacific/Apia",
            weekdays(time("09:00"), time("17:00")),
            Vec::new(),
        )
        .expect("valid");
        for cal in [
            tokyo,
            samoa,
            Calendar::us_central(),
            Calendar::always("24x7"),
        ] {
            for at in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC, NEVER] {
                assert!(cal.next_open(at) <= NEVER, "{cal}");
                assert!(cal.add_open_time(at, TimeDelta::MAX) <= NEVER, "{cal}");
                assert!(cal.add_business_days(at, u32::MAX) <= NEVER, "{cal}");
                let _ = cal.open_periods(at, NEVER);
            }
            assert_eq!(cal.next_open(DateTime::<Utc>::MAX_UTC), NEVER, "{cal}");
            if !cal.always_open {
                let span =
                    cal.open_time_between(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
                assert_eq!(span, TimeDelta::MAX, "{cal}");
            }
        }
        // Samoa skipped 2011-12-30 entirely: that Friday has no open time.
        let samoa = Calendar::new(
            "apia",
            "Pacific/Apia",
            weekdays(time("09:00"), time("17:00")),
            Vec::new(),
        )
        .expect("valid");
        let thursday = local(chrono_tz::Pacific::Apia, "2011-12-29 17:00");
        assert_eq!(
            samoa.next_open(thursday),
            local(chrono_tz::Pacific::Apia, "2012-01-02 09:00")
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn calendars() -> Vec<Calendar> {
            vec![
                Calendar::us_central(),
                Calendar::us_east_engineering(),
                Calendar::always("24x7"),
                night_shift(),
                lunch_break(),
                chicago_around_the_clock(),
            ]
        }

        /// Any second from 2019 to 2031.
        fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
            (1_546_300_800_i64..1_924_992_000)
                .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or(NEVER))
        }

        /// A second in the first half of March or November (the US DST weekends), 2000-2040.
        fn near_dst() -> impl Strategy<Value = DateTime<Utc>> {
            (2000_i32..2040, prop::bool::ANY, 1_u32..16, 0_i64..86_400).prop_map(
                |(year, march, day, secs)| {
                    let month = if march { 3 } else { 11 };
                    NaiveDate::from_ymd_opt(year, month, day)
                        .map(|d| d.and_time(NaiveTime::MIN).and_utc() + TimeDelta::seconds(secs))
                        .unwrap_or(NEVER)
                },
            )
        }

        fn start() -> impl Strategy<Value = DateTime<Utc>> {
            prop_oneof![any_instant(), near_dst()]
        }

        /// Up to 400 hours of open time, to the second.
        fn open_time() -> impl Strategy<Value = TimeDelta> {
            (0_i64..1_440_000).prop_map(TimeDelta::seconds)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn add_open_time_is_monotonic_in_duration(c in 0..6_usize, s in start(), a in open_time(), b in open_time()) {
                let cal = &calendars()[c];
                let (small, large) = (a.min(b), a.max(b));
                prop_assert!(cal.add_open_time(s, small) <= cal.add_open_time(s, large));
            }

            #[test]
            fn add_open_time_is_monotonic_in_start(c in 0..6_usize, s in start(), later in 0_i64..1_000_000, d in open_time()) {
                let cal = &calendars()[c];
                let t = s + TimeDelta::seconds(later);
                prop_assert!(cal.add_open_time(s, d) <= cal.add_open_time(t, d));
            }

            #[test]
            fn open_time_between_undoes_add_open_time(c in 0..6_usize, s in start(), d in open_time()) {
                let cal = &calendars()[c];
                let deadline = cal.add_open_time(s, d);
                prop_assert_eq!(cal.open_time_between(cal.next_open(s), deadline), d);
                prop_assert_eq!(cal.open_time_between(s, deadline), d);
            }

            #[test]
            fn open_time_between_is_additive(c in 0..6_usize, a in start(), x in 0_i64..2_000_000, y in 0_i64..2_000_000) {
                let cal = &calendars()[c];
                let b = a + TimeDelta::seconds(x);
                let end = b + TimeDelta::seconds(y);
                let whole = cal.open_time_between(a, end);
                prop_assert_eq!(whole, cal.open_time_between(a, b) + cal.open_time_between(b, end));
                prop_assert!(whole <= end - a);
            }

            #[test]
            fn open_periods_are_open_and_sum_to_open_time(c in 0..6_usize, a in start(), x in 0_i64..1_000_000) {
                let cal = &calendars()[c];
                let b = a + TimeDelta::seconds(x);
                let periods = cal.open_periods(a, b);
                let mut sum = TimeDelta::zero();
                for &(open, close) in &periods {
                    prop_assert!(a <= open && open < close && close <= b);
                    prop_assert!(cal.is_open(open));
                    prop_assert!(cal.is_open(close - TimeDelta::seconds(1)));
                    sum += close - open;
                }
                prop_assert!(periods.windows(2).all(|w| w[0].1 < w[1].0));
                prop_assert_eq!(sum, cal.open_time_between(a, b));
            }

            #[test]
            fn add_business_days_keeps_the_time_of_day(s in start(), days in 0_u32..40) {
                let cal = Calendar::us_central();
                let from = cal.next_open(s).with_timezone(&Chicago);
                let to = cal.add_business_days(s, days).with_timezone(&Chicago);
                prop_assert_eq!(from.time(), to.time());
                prop_assert!(cal.is_business_day(to.date_naive()));
                let counted = from.date_naive().iter_days().skip(1).take_while(|d| *d <= to.date_naive())
                    .filter(|d| cal.is_business_day(*d)).count();
                prop_assert_eq!(counted, days as usize);
            }
        }
    }
}
