//! A ticket's SLA deadlines (SPEC: SLA): response, resolution and escalation counted from
//! creation, and the next status update counted from the last public message, each on the
//! ticket's calendar (`24x7` for Sev 1/2 by default, else the customer's business hours). Open
//! time the ticket spent waiting on the customer is added back (`sla.pause_when_customer_pending`).
//! Pure: the store keeps the results as UTC instants, and a severity change recomputes them from
//! creation.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::calendar::Calendar;
use super::policy::{ClockKind, SlaPolicy, Span, StatusTimers, Targets};
use crate::desk::{Policy, Severity, Status, TicketState};

/// `start` plus `span` on `calendar`.
pub fn add(calendar: &Calendar, start: DateTime<Utc>, span: Span) -> DateTime<Utc> {
    match span {
        Span::OpenMinutes(m) => calendar.add_open_time(start, Duration::minutes(m)),
        Span::BusinessDays(d) => calendar.add_business_days(start, d),
    }
}

/// The deadlines counted from creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Deadlines {
    /// The first public engineer reply is due.
    pub response: DateTime<Utc>,
    /// Close pending or closed is due.
    pub resolution: DateTime<Utc>,
    /// An unresolved ticket escalates.
    pub escalation: DateTime<Utc>,
}

/// The deadlines of a ticket created at `created_at` with `targets` on `calendar`, after
/// `paused` open time spent waiting on the customer (added back to each).
pub fn deadlines(
    targets: &Targets,
    calendar: &Calendar,
    created_at: DateTime<Utc>,
    paused: Duration,
) -> Deadlines {
    let due = |span| {
        let at = add(calendar, created_at, span);
        if paused > Duration::zero() {
            calendar.add_open_time(at, paused)
        } else {
            at
        }
    };
    Deadlines {
        response: due(targets.response),
        resolution: due(targets.resolution),
        escalation: due(targets.escalate_after),
    }
}

/// When the next status update is due: `update_every` after the last public message.
pub fn next_update(
    targets: &Targets,
    calendar: &Calendar,
    last_public: DateTime<Utc>,
) -> DateTime<Utc> {
    add(calendar, last_public, targets.update_every)
}

/// The calendars a desk knows, and which one a ticket runs on.
#[derive(Debug, Clone)]
pub struct Calendars {
    calendars: Vec<Calendar>,
    /// The business-hours calendar of customers without one of their own.
    pub business_default: String,
}

impl Default for Calendars {
    /// `us-central` (the default business hours), `us-east-engineering` and `24x7`.
    fn default() -> Calendars {
        Calendars {
            calendars: vec![
                Calendar::us_central(),
                Calendar::us_east_engineering(),
                Calendar::always(AROUND_THE_CLOCK),
            ],
            business_default: "us-central".into(),
        }
    }
}

/// The name of the around-the-clock calendar.
pub const AROUND_THE_CLOCK: &str = "24x7";

impl Calendars {
    /// The calendar of that name.
    pub fn get(&self, name: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.name() == name)
    }

    /// Adds a calendar, replacing one of the same name (a configured `us-central` replaces the
    /// built-in).
    pub fn insert(&mut self, calendar: Calendar) {
        match self
            .calendars
            .iter_mut()
            .find(|c| c.name() == calendar.name())
        {
            Some(slot) => *slot = calendar,
            None => self.calendars.push(calendar),
        }
    }

    /// The time zone of the calendar of that name (the digest's, `digest.calendar`); Chicago,
    /// SPEC's business-hours zone, when none has that name (config rejects such a name).
    pub fn zone_of(&self, name: &str) -> chrono_tz::Tz {
        self.get(name)
            .map(Calendar::zone)
            .unwrap_or(chrono_tz::America::Chicago)
    }

    /// Every calendar's name.
    pub fn names(&self) -> Vec<&str> {
        self.calendars.iter().map(Calendar::name).collect()
    }

    /// The calendar a ticket's severity runs on: 24x7, a named one, or the business hours of
    /// the customer (`[[customers]] calendar`, else the default).
    pub fn for_clock(&self, clock: &ClockKind, customer_calendar: Option<&str>) -> &Calendar {
        let name = match clock {
            ClockKind::AroundTheClock => AROUND_THE_CLOCK,
            ClockKind::Named(n) => n.as_str(),
            ClockKind::BusinessHours => customer_calendar.unwrap_or(&self.business_default),
        };
        self.get(name)
            .or_else(|| self.get(&self.business_default))
            .or_else(|| self.calendars.first())
            .unwrap_or(&FALLBACK)
    }
}

static FALLBACK: std::sync::LazyLock<Calendar> =
    std::sync::LazyLock::new(|| Calendar::always(AROUND_THE_CLOCK));

/// What a decision sets on a ticket's SLA clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaPlan {
    /// The calendar the deadlines run on.
    pub calendar: String,
    /// The severity they are for.
    pub severity: Severity,
    /// Response, resolution and escalation (set at creation and on a severity change).
    pub deadlines: Option<Deadlines>,
    /// The next status update (set at creation and whenever a public message goes out).
    pub next_update: Option<DateTime<Utc>>,
    /// Set on a status change: the time-driven rules' due times for the new status (each None
    /// clears its column).
    pub timers: Option<StatusDue>,
    /// Set when a wait on the customer ends: the open time waited so far, in all.
    pub paused_total: Option<Duration>,
}

/// When the time-driven status rules fire for a ticket in its current status (SPEC: Statuses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusDue {
    /// Customer pending: the reminder to the customer.
    pub reminder: Option<DateTime<Utc>>,
    /// Customer pending: close pending after the customer's silence.
    pub close_pending: Option<DateTime<Utc>>,
    /// Close pending: closed.
    pub auto_close: Option<DateTime<Utc>>,
}

impl StatusDue {
    /// The due times for a ticket that entered `status` at `at`.
    pub fn entering(
        status: Status,
        timers: &StatusTimers,
        calendar: &Calendar,
        at: DateTime<Utc>,
    ) -> StatusDue {
        match status {
            Status::CustomerPending => StatusDue {
                reminder: Some(add(calendar, at, timers.reminder_after)),
                close_pending: Some(add(calendar, at, timers.close_pending_after)),
                auto_close: None,
            },
            Status::ClosePending => StatusDue {
                auto_close: Some(add(calendar, at, timers.auto_close_after)),
                ..StatusDue::default()
            },
            _ => StatusDue::default(),
        }
    }
}

/// Whether the ticket is with us (the status-update clock runs).
pub fn with_us(status: Status) -> bool {
    matches!(status, Status::InTriage | Status::EngineerPending)
}

/// What a status change does to the SLA clock of `ticket` at `now`, on top of `plan` (what the
/// decision set already, if anything): the time-driven rules of the new status; leaving customer
/// pending adds the open time waited on the customer back to the running deadlines
/// (`sla.pause_when_customer_pending`); coming back to us restarts the status-update interval.
/// Returns the plan and, when deadlines moved, the words for the history.
pub fn on_status_change(
    policy: &Policy,
    ticket: &TicketState,
    from: Status,
    to: Status,
    plan: Option<SlaPlan>,
    now: DateTime<Utc>,
) -> (SlaPlan, Option<String>) {
    let severity = plan
        .as_ref()
        .map(|p| p.severity)
        .unwrap_or(ticket.severity.assigned);
    let targets = policy.sla.of(severity);
    let calendar = policy
        .calendars
        .for_clock(&targets.clock, policy.customer_calendar(ticket));
    let mut plan = plan.unwrap_or_else(|| SlaPlan {
        calendar: calendar.name().to_string(),
        severity,
        deadlines: None,
        next_update: None,
        timers: None,
        paused_total: None,
    });
    plan.timers = Some(StatusDue::entering(to, &policy.sla.timers, calendar, now));
    let mut words = None;
    let c = &ticket.clocks;
    if from == Status::CustomerPending
        && policy.sla.pause_when_customer_pending
        && plan.deadlines.is_none()
        && let (Some(since), Some(response), Some(resolution), Some(escalation)) = (
            c.status_since,
            c.response_due,
            c.resolution_due,
            c.escalation_due,
        )
    {
        let paused = calendar.open_time_between(since, now);
        if paused > Duration::zero() {
            let shift = |at: DateTime<Utc>| calendar.add_open_time(at, paused);
            let moved = Deadlines {
                // A met response deadline stays where it was.
                response: if ticket.first_response_at.is_some() {
                    response
                } else {
                    shift(response)
                },
                resolution: shift(resolution),
                escalation: shift(escalation),
            };
            plan.deadlines = Some(moved);
            plan.paused_total = Some(c.paused + paused);
            words = Some(format!(
                "{} min of open time waiting on the customer added back: {}",
                paused.num_minutes(),
                plan.describe(&policy.calendars)
            ));
        }
    }
    if with_us(to) && !with_us(from) && plan.next_update.is_none() {
        plan.next_update = Some(next_update(targets, calendar, now));
    }
    (plan, words)
}

impl SlaPlan {
    /// The deadlines of a ticket of `severity` created at `created_at` that has waited
    /// `paused` open time on the customer so far (added back), the next status update counted
    /// from `last_public`.
    pub fn from_creation(
        policy: &SlaPolicy,
        calendars: &Calendars,
        severity: Severity,
        customer_calendar: Option<&str>,
        created_at: DateTime<Utc>,
        last_public: DateTime<Utc>,
        paused: Duration,
    ) -> SlaPlan {
        let targets = policy.of(severity);
        let calendar = calendars.for_clock(&targets.clock, customer_calendar);
        SlaPlan {
            calendar: calendar.name().to_string(),
            severity,
            deadlines: Some(deadlines(targets, calendar, created_at, paused)),
            next_update: Some(next_update(targets, calendar, last_public)),
            timers: None,
            paused_total: None,
        }
    }

    /// Only the next status update, counted from a public message at `at`.
    pub fn update_from(
        policy: &SlaPolicy,
        calendars: &Calendars,
        severity: Severity,
        customer_calendar: Option<&str>,
        at: DateTime<Utc>,
    ) -> SlaPlan {
        let targets = policy.of(severity);
        let calendar = calendars.for_clock(&targets.clock, customer_calendar);
        SlaPlan {
            calendar: calendar.name().to_string(),
            severity,
            deadlines: None,
            next_update: Some(next_update(targets, calendar, at)),
            timers: None,
            paused_total: None,
        }
    }

    /// The history's words: which calendar, and each instant in its zone.
    pub fn describe(&self, calendars: &Calendars) -> String {
        let zone = calendars
            .get(&self.calendar)
            .map(Calendar::zone)
            .unwrap_or(chrono_tz::UTC);
        let local = |at: DateTime<Utc>| {
            at.with_timezone(&zone)
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        };
        let mut parts = Vec::new();
        if let Some(d) = &self.deadlines {
            parts.push(format!("response {}", local(d.response)));
            parts.push(format!("resolution {}", local(d.resolution)));
            parts.push(format!("escalation {}", local(d.escalation)));
        }
        if let Some(u) = self.next_update {
            parts.push(format!("next status update {}", local(u)));
        }
        format!(
            "{} on {}: {}",
            self.severity,
            self.calendar,
            parts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn deadlines_per_severity_from_creation() {
        let policy = SlaPolicy::default();
        let cals = Calendars::default();
        // (case, severity, customer calendar, created (UTC), response, resolution, escalation, next update)
        let cases = [
            (
                "sev3_friday_1630_central_runs_on_business_hours",
                Severity::Sev3,
                None,
                // Friday 2026-02-06 16:30 CST = 22:30 UTC.
                "2026-02-06T22:30:00Z",
                // 24 open hours: 0.5 Fri + 9 Mon + 9 Tue + 5.5 Wed = Wed 13:30 CST.
                "2026-02-11T19:30:00Z",
                // 3 business days keeping the time of day (16:30 is open): Wed 16:30 CST.
                "2026-02-11T22:30:00Z",
                // 2 business days: Tue 16:30 CST.
                "2026-02-10T22:30:00Z",
                "2026-02-11T19:30:00Z",
            ),
            (
                "sev1_at_new_year_runs_around_the_clock",
                Severity::Sev1,
                None,
                "2026-12-31T23:50:00Z",
                "2027-01-01T00:05:00Z",
                "2027-01-01T03:50:00Z",
                "2027-01-01T00:50:00Z",
                "2027-01-01T00:50:00Z",
            ),
            (
                "sev4_of_a_customer_on_the_new_york_engineering_day",
                Severity::Sev4,
                Some("us-east-engineering"),
                // Monday 2026-02-09 12:30 EST = 17:30 UTC; 4 open hours a day (09:00-13:00).
                "2026-02-09T17:30:00Z",
                // 48 open hours: 0.5 Mon + 4 x 11 days (Tue..) + 3.5 h: 0.5+44 = 44.5, +3.5 on the 12th open day.
                "2026-02-25T17:30:00Z",
                // 5 business days keeping 12:30: Mon 16th is Presidents' Day? not in the list, so Feb 16.
                "2026-02-16T17:30:00Z",
                "2026-02-12T17:30:00Z",
                "2026-02-25T17:30:00Z",
            ),
        ];
        for (name, sev, customer, created, response, resolution, escalation, update) in cases {
            let plan = SlaPlan::from_creation(
                &policy,
                &cals,
                sev,
                customer,
                utc(created),
                utc(created),
                Duration::zero(),
            );
            let d = plan.deadlines.unwrap_or_else(|| panic!("{name}"));
            assert_eq!(d.response, utc(response), "{name}: response");
            assert_eq!(d.resolution, utc(resolution), "{name}: resolution");
            assert_eq!(d.escalation, utc(escalation), "{name}: escalation");
            assert_eq!(plan.next_update, Some(utc(update)), "{name}: next update");
        }
    }

    #[test]
    fn paused_open_time_is_added_back() {
        let policy = SlaPolicy::default();
        let cal = Calendar::us_central();
        let created = utc("2026-02-09T14:00:00Z"); // Monday 08:00 CST
        let plain = deadlines(policy.of(Severity::Sev3), &cal, created, Duration::zero());
        let paused = deadlines(policy.of(Severity::Sev3), &cal, created, Duration::hours(3));
        for (a, b) in [
            (plain.response, paused.response),
            (plain.resolution, paused.resolution),
            (plain.escalation, paused.escalation),
        ] {
            assert_eq!(cal.open_time_between(a, b), Duration::hours(3));
        }
    }

    #[test]
    fn unknown_customer_calendar_falls_back_to_the_default() {
        let cals = Calendars::default();
        let c = cals.for_clock(&ClockKind::BusinessHours, Some("nowhere"));
        assert_eq!(c.name(), "us-central");
        assert_eq!(
            cals.for_clock(&ClockKind::AroundTheClock, Some("us-east-engineering"))
                .name(),
            AROUND_THE_CLOCK
        );
    }
}
