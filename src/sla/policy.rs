//! The SLA targets per severity (SPEC: SLA): response, resolution, status-update interval and
//! escalation time, each a span of open time (`15 min`, `24h`) or of business days (`3 days`),
//! and the clock each severity runs on (`24x7`, or the customer's business-hours calendar).
//! Every figure is configurable (`[sla.sev3] response = "24h"`); the defaults are SPEC's table.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::desk::Severity;

/// How long a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "unit", content = "value", rename_all = "snake_case")]
pub enum Span {
    /// Open time of the calendar, in minutes (`h` and `min` count open time).
    OpenMinutes(i64),
    /// Business days of the calendar (`days`), keeping the time of day.
    BusinessDays(u32),
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Span::OpenMinutes(m) if m % 60 == 0 => write!(f, "{} h", m / 60),
            Span::OpenMinutes(m) => write!(f, "{m} min"),
            Span::BusinessDays(1) => f.write_str("1 day"),
            Span::BusinessDays(d) => write!(f, "{d} days"),
        }
    }
}

/// Why a span does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a span like \"15 min\", \"4h\" or \"3 days\", found \"{0}\"")]
pub struct BadSpan(pub String);

impl FromStr for Span {
    type Err = BadSpan;
    fn from_str(s: &str) -> Result<Span, BadSpan> {
        let bad = || BadSpan(s.to_string());
        let t = s.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let n: i64 = num.parse().map_err(|_| bad())?;
        if n <= 0 || n > 100_000 {
            return Err(bad());
        }
        match unit.trim() {
            "m" | "min" | "mins" | "minute" | "minutes" => Ok(Span::OpenMinutes(n)),
            "h" | "hr" | "hrs" | "hour" | "hours" => Ok(Span::OpenMinutes(n * 60)),
            "d" | "day" | "days" | "business day" | "business days" => {
                Ok(Span::BusinessDays(u32::try_from(n).map_err(|_| bad())?))
            }
            _ => Err(bad()),
        }
    }
}

/// Which clock a severity runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// Around the clock (`24x7`).
    AroundTheClock,
    /// The customer's business-hours calendar (`[[customers]] calendar`, else the default).
    BusinessHours,
    /// A named calendar.
    Named(String),
}

impl FromStr for ClockKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ClockKind, String> {
        match s.trim() {
            "" => Err("expected \"24x7\", \"business\" or a calendar name".into()),
            "24x7" => Ok(ClockKind::AroundTheClock),
            "business" | "business_hours" => Ok(ClockKind::BusinessHours),
            name => Ok(ClockKind::Named(name.to_string())),
        }
    }
}

/// The targets of one severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Targets {
    /// First public engineer reply.
    pub response: Span,
    /// Close pending or closed.
    pub resolution: Span,
    /// A status update goes out when no public message did for this long.
    pub update_every: Span,
    /// An unresolved ticket escalates this long after creation.
    pub escalate_after: Span,
    /// The clock.
    pub clock: ClockKind,
}

/// The SLA of every severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaPolicy {
    /// Targets of Sev 1..4, in that order.
    pub targets: [Targets; 4],
    /// Deadlines stop while a ticket waits on the customer (`sla.pause_when_customer_pending`).
    pub pause_when_customer_pending: bool,
    /// The time-driven status rules (SPEC: Statuses).
    pub timers: StatusTimers,
}

/// How long tickets wait before time moves them (SPEC: Statuses), in business days of the
/// ticket's calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusTimers {
    /// A customer-pending ticket's customer gets a reminder (`statuses.reminder_after`, 1 day).
    pub reminder_after: Span,
    /// A customer-pending ticket moves to close pending (`statuses.close_pending_after`, 2 days).
    pub close_pending_after: Span,
    /// A close-pending ticket closes (`statuses.auto_close_after`, 5 days).
    pub auto_close_after: Span,
}

impl Default for StatusTimers {
    fn default() -> StatusTimers {
        StatusTimers {
            reminder_after: Span::BusinessDays(1),
            close_pending_after: Span::BusinessDays(2),
            auto_close_after: Span::BusinessDays(5),
        }
    }
}

impl SlaPolicy {
    /// The targets of a severity.
    pub fn of(&self, severity: Severity) -> &Targets {
        let i = usize::from(severity.number()).saturating_sub(1).min(3);
        &self.targets[i]
    }
}

impl Default for SlaPolicy {
    /// SPEC's table.
    fn default() -> SlaPolicy {
        let t = |response, resolution, update_every, escalate_after, clock| Targets {
            response,
            resolution,
            update_every,
            escalate_after,
            clock,
        };
        use ClockKind::*;
        use Span::*;
        SlaPolicy {
            targets: [
                t(
                    OpenMinutes(15),
                    OpenMinutes(4 * 60),
                    OpenMinutes(60),
                    OpenMinutes(60),
                    AroundTheClock,
                ),
                t(
                    OpenMinutes(30),
                    OpenMinutes(6 * 60),
                    OpenMinutes(60),
                    OpenMinutes(2 * 60),
                    AroundTheClock,
                ),
                t(
                    OpenMinutes(24 * 60),
                    BusinessDays(3),
                    OpenMinutes(24 * 60),
                    BusinessDays(2),
                    BusinessHours,
                ),
                t(
                    OpenMinutes(48 * 60),
                    BusinessDays(5),
                    OpenMinutes(48 * 60),
                    BusinessDays(3),
                    BusinessHours,
                ),
            ],
            pause_when_customer_pending: true,
            timers: StatusTimers::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_as_people_write_them() {
        // (case, text, expected)
        let cases = [
            ("minutes_spaced", "15 min", Some(Span::OpenMinutes(15))),
            ("minutes_tight", "30min", Some(Span::OpenMinutes(30))),
            ("hours_short", "4h", Some(Span::OpenMinutes(240))),
            ("hours_word", "24 hours", Some(Span::OpenMinutes(1440))),
            (
                "days_are_business_days",
                "3 days",
                Some(Span::BusinessDays(3)),
            ),
            ("one_day", "1 day", Some(Span::BusinessDays(1))),
            ("d_short", "5d", Some(Span::BusinessDays(5))),
            ("upper_case", "2 Days", Some(Span::BusinessDays(2))),
            ("zero_is_not_a_target", "0h", None),
            ("negative", "-4h", None),
            ("no_unit", "24", None),
            ("unknown_unit", "3 weeks", None),
            ("empty", "", None),
            ("absurd", "99999999h", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(text.parse::<Span>().ok(), want, "{name}");
        }
    }

    #[test]
    fn spans_print_back_as_they_parse() {
        for s in ["15 min", "4 h", "3 days", "1 day", "90 min"] {
            let span: Span = s.parse().unwrap_or(Span::OpenMinutes(1));
            assert_eq!(span.to_string().parse::<Span>().ok(), Some(span), "{s}");
        }
    }

    #[test]
    fn defaults_are_specs_table() {
        let p = SlaPolicy::default();
        let row = |s| {
            let t = p.of(s);
            (
                t.response.to_string(),
                t.resolution.to_string(),
                t.update_every.to_string(),
                t.escalate_after.to_string(),
                t.clock.clone(),
            )
        };
        use Severity::*;
        let h = |s: &str| s.to_string();
        assert_eq!(
            row(Sev1),
            (
                h("15 min"),
                h("4 h"),
                h("1 h"),
                h("1 h"),
                ClockKind::AroundTheClock
            )
        );
        assert_eq!(
            row(Sev2),
            (
                h("30 min"),
                h("6 h"),
                h("1 h"),
                h("2 h"),
                ClockKind::AroundTheClock
            )
        );
        assert_eq!(
            row(Sev3),
            (
                h("24 h"),
                h("3 days"),
                h("24 h"),
                h("2 days"),
                ClockKind::BusinessHours
            )
        );
        assert_eq!(
            row(Sev4),
            (
                h("48 h"),
                h("5 days"),
                h("48 h"),
                h("3 days"),
                ClockKind::BusinessHours
            )
        );
        assert!(p.pause_when_customer_pending);
    }
}
