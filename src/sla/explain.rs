//! `postdesk sla explain N`: a ticket's deadlines and how each was computed (SPEC: Interfaces,
//! SLA): the calendar, the open periods counted, the holidays skipped, and every recomputation
//! the history records. Pure: the stored ticket, its history, the policy and `now` go in.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::calendar::Calendar;
use super::clock::Calendars;
use super::policy::{SlaPolicy, Span};
use crate::desk::{Policy, Severity};
use crate::store::{Event, TicketSummary};

/// The explanation of one ticket's SLA.
#[derive(Debug, Clone, Serialize)]
pub struct SlaExplanation {
    /// The ticket.
    pub ticket: i64,
    /// Its assigned severity.
    pub severity: u8,
    /// The calendar its deadlines run on.
    pub calendar: String,
    /// The calendar's time zone.
    pub zone: String,
    /// Response due (RFC 3339 UTC); null once met.
    pub response_due: Option<DateTime<Utc>>,
    /// Resolution due; null once met.
    pub resolution_due: Option<DateTime<Utc>>,
    /// Next status update due; null while the ticket is not with us.
    pub next_update_due: Option<DateTime<Utc>>,
    /// Escalation due; null once resolved.
    pub escalation_due: Option<DateTime<Utc>>,
    /// Each deadline in detail.
    pub deadlines: Vec<DeadlineExplanation>,
    /// The history's SLA events: when deadlines were set or recomputed, and why.
    pub recomputations: Vec<Recomputation>,
}

/// One deadline in detail.
#[derive(Debug, Clone, Serialize)]
pub struct DeadlineExplanation {
    /// `response`, `resolution`, `update` or `escalation`.
    pub kind: &'static str,
    /// The target (`24 h` of open time, `3 days` business days).
    pub target: String,
    /// When it is due (as stored), UTC.
    pub due: Option<DateTime<Utc>>,
    /// The same in the calendar's zone.
    pub due_local: Option<String>,
    /// When it was met, if it was.
    pub met_at: Option<DateTime<Utc>>,
    /// Met late, or not met and past due.
    pub breached: bool,
    /// The open periods counted from creation to the due time, in the calendar's zone.
    pub open_periods: Vec<String>,
    /// Holidays between creation and the due time that the clock skipped.
    pub holidays_skipped: Vec<String>,
}

/// An SLA event of the history.
#[derive(Debug, Clone, Serialize)]
pub struct Recomputation {
    /// When.
    pub at: DateTime<Utc>,
    /// What it says.
    pub reason: String,
}

fn local(calendar: &Calendar, at: DateTime<Utc>) -> String {
    at.with_timezone(&calendar.zone())
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

fn describe(span: Span) -> String {
    match span {
        Span::OpenMinutes(_) => format!("{span} of open time"),
        Span::BusinessDays(_) => format!("{span} (business days, keeping the time of day)"),
    }
}

/// Explains the SLA of `t` as the policy sees it at `now`.
pub fn explain(
    t: &TicketSummary,
    history: &[Event],
    policy: &Policy,
    now: DateTime<Utc>,
) -> SlaExplanation {
    let sla: &SlaPolicy = &policy.sla;
    let calendars: &Calendars = &policy.calendars;
    let severity = Severity::try_from(t.assigned_severity).unwrap_or(Severity::Sev4);
    let targets = sla.of(severity);
    let domain = t.requester.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let calendar = calendars.for_clock(&targets.clock, policy.calendar_of(domain));
    let status = t.status.parse::<crate::desk::Status>().ok();
    let resolved = status.is_some_and(crate::desk::Status::is_resolved);
    let with_us = status.is_some_and(super::clock::with_us);
    let detail = |kind, span, due: Option<DateTime<Utc>>, met_at: Option<DateTime<Utc>>| {
        let (periods, holidays) = match due {
            Some(due) if kind != "update" && due > t.created_at => {
                let periods = calendar
                    .open_periods(t.created_at, due)
                    .into_iter()
                    .take(100)
                    .map(|(a, b)| format!("{} - {}", local(calendar, a), local(calendar, b)))
                    .collect();
                let zone = calendar.zone();
                let holidays = calendar
                    .holidays_between(
                        t.created_at.with_timezone(&zone).date_naive(),
                        due.with_timezone(&zone).date_naive(),
                    )
                    .into_iter()
                    .map(|(d, name)| format!("{d} {name}"))
                    .collect();
                (periods, holidays)
            }
            _ => (Vec::new(), Vec::new()),
        };
        DeadlineExplanation {
            kind,
            target: describe(span),
            due,
            due_local: due.map(|d| local(calendar, d)),
            met_at,
            breached: match (due, met_at) {
                (Some(d), Some(m)) => m > d,
                (Some(d), None) => now > d,
                _ => false,
            },
            open_periods: periods,
            holidays_skipped: holidays,
        }
    };
    let deadlines = vec![
        detail(
            "response",
            targets.response,
            t.response_due_at,
            t.first_response_at,
        ),
        detail(
            "resolution",
            targets.resolution,
            t.resolution_due_at,
            t.resolved_at,
        ),
        detail(
            "update",
            targets.update_every,
            t.update_due_at.filter(|_| with_us),
            None,
        ),
        detail(
            "escalation",
            targets.escalate_after,
            t.escalation_due_at.filter(|_| !resolved),
            None,
        ),
    ];
    SlaExplanation {
        ticket: t.number,
        severity: severity.number(),
        calendar: calendar.name().to_string(),
        zone: calendar.zone().name().to_string(),
        response_due: t.response_due_at.filter(|_| t.first_response_at.is_none()),
        resolution_due: t.resolution_due_at.filter(|_| !resolved),
        next_update_due: t.update_due_at.filter(|_| with_us),
        escalation_due: t.escalation_due_at.filter(|_| !resolved),
        deadlines,
        recomputations: history
            .iter()
            .filter(|e| e.kind == "sla")
            .map(|e| Recomputation {
                at: e.at,
                reason: e.reason.clone(),
            })
            .collect(),
    }
}
