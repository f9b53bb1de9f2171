//! One sweep of the SLA clock over a ticket that is due (SPEC: SLA, Statuses). Pure: the
//! ticket as stored, the policy and `now` in; a `Decision` (action `Scheduled`) out, applied
//! like any other in one transaction. Each rule fires once, because what it does moves or clears
//! the due time that made it fire:
//! - customer pending past `close_pending_due`: close pending, `close_pending` to the customer
//!   (the account manager hears of the resolution); past `reminder_due` only: the reminder;
//! - close pending past `auto_close_due`: closed, `closed` to the customer;
//! - with us (in triage, engineer pending) past `update_due`: a `status_update`, and the next one
//!   is due an interval later;
//! - unresolved past `escalation_due`, not yet escalated: flagged, `escalation` to the
//!   escalation contacts and the triage owners;
//! - a response or resolution deadline passed and not met, not yet reported: `breach` to the
//!   triage owners, once per deadline.
//!
//! Scheduled mail carries the instant it was due: with the ticket, template and recipient it
//! makes the Message-ID, so two sweeps racing on one database send one message.

use chrono::{DateTime, Utc};

use super::clock::{SlaPlan, StatusDue, next_update, on_status_change, with_us};
use crate::desk::decide::{
    Action, Decision, Notice, PlannedEvent, PlannedMail, Policy, StatusChange, Target, Template,
    TicketUpdate,
};
use crate::desk::notify;
use crate::desk::{Status, StatusEvent, TicketState};
use crate::mail::Mailbox;

fn due(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    at.filter(|d| *d <= now)
}

fn to_customers(ticket: &TicketState, template: Template, due: DateTime<Utc>) -> Vec<PlannedMail> {
    ticket
        .customers()
        .map(|m| PlannedMail {
            due: Some(due),
            ..PlannedMail::new(template, m.mailbox())
        })
        .collect()
}

fn to_staff(
    addresses: &[&str],
    template: Template,
    why: Notice,
    due: DateTime<Utc>,
) -> Vec<PlannedMail> {
    let mut out: Vec<PlannedMail> = Vec::new();
    for a in addresses {
        let a = a.trim().to_ascii_lowercase();
        if a.is_empty() || out.iter().any(|m| m.to.address == a) {
            continue;
        }
        out.push(PlannedMail {
            due: Some(due),
            ..PlannedMail::notice(
                template,
                Mailbox {
                    name: None,
                    address: a,
                },
                why,
            )
        });
    }
    out
}

/// What the clock does to `ticket` at `now`; None when nothing is due.
pub fn sweep(ticket: &TicketState, policy: &Policy, now: DateTime<Utc>) -> Option<Decision> {
    let c = &ticket.clocks;
    let n = ticket.number;
    let on = Some(Target::Ticket(n));
    let event =
        |kind: &str, from: Option<String>, to: Option<String>, reason: String| PlannedEvent {
            on,
            actor: "postdesk".into(),
            kind: kind.into(),
            from,
            to,
            reason,
            related: None,
        };
    let mut events = Vec::new();
    let mut outbound = Vec::new();
    let mut update = TicketUpdate::default();
    let mut status_change = None;
    let mut sla: Option<SlaPlan> = None;
    let mut said: Vec<String> = Vec::new();
    let resolved = matches!(ticket.status, Status::ClosePending | Status::Closed);

    // The time-driven status rules.
    let moved = match ticket.status {
        Status::CustomerPending => {
            match (due(c.close_pending_due, now), due(c.reminder_due, now)) {
                (Some(at), _) => Some((Status::ClosePending, StatusEvent::CustomerSilent, at)),
                (None, Some(at)) => {
                    outbound.extend(to_customers(ticket, Template::CustomerPendingReminder, at));
                    events.push(event(
                        "reminder",
                        None,
                        None,
                        "the customer has not answered: reminder sent".into(),
                    ));
                    said.push("customer_pending_reminder".into());
                    // The reminder is done; the silence rule still runs.
                    let (mut plan, _) = on_status_change(
                        policy,
                        ticket,
                        Status::CustomerPending,
                        Status::CustomerPending,
                        None,
                        now,
                    );
                    plan.timers = Some(StatusDue {
                        reminder: None,
                        close_pending: c.close_pending_due,
                        auto_close: None,
                    });
                    sla = Some(plan);
                    None
                }
                (None, None) => None,
            }
        }
        Status::ClosePending => {
            due(c.auto_close_due, now).map(|at| (Status::Closed, StatusEvent::CloseTimeout, at))
        }
        _ => None,
    };
    if let Some((to, why, at)) = moved {
        events.push(event(
            "status",
            Some(ticket.status.as_str().into()),
            Some(to.as_str().into()),
            why.describe().into(),
        ));
        status_change = Some(StatusChange {
            from: ticket.status,
            to,
            event: why,
        });
        let template = if to == Status::Closed {
            Template::Closed
        } else {
            Template::ClosePending
        };
        outbound.extend(to_customers(ticket, template, at));
        if to == Status::ClosePending {
            for mut m in notify::resolved(policy, ticket, &Mailbox::default()) {
                m.due = Some(at);
                outbound.push(m);
            }
        }
        let (plan, _) = on_status_change(policy, ticket, ticket.status, to, None, now);
        sla = Some(plan);
        said.push(format!("status {} -> {to}", ticket.status));
    }

    // The status update while the ticket is with us.
    if with_us(ticket.status)
        && let Some(at) = due(c.update_due, now)
    {
        outbound.extend(to_customers(ticket, Template::StatusUpdate, at));
        let targets = policy.sla.of(ticket.severity.assigned);
        let calendar = policy.calendars.for_clock(
            &targets.clock,
            ticket
                .requester()
                .and_then(|r| r.address.rsplit_once('@'))
                .and_then(|(_, d)| policy.calendar_of(d)),
        );
        let next = next_update(targets, calendar, now);
        events.push(event(
            "status_update",
            None,
            Some(next.to_rfc3339()),
            format!(
                "no public message for {}: status update sent; next one due {}",
                targets.update_every,
                next.with_timezone(&calendar.zone())
                    .format("%Y-%m-%d %H:%M %Z")
            ),
        ));
        let plan = sla.get_or_insert_with(|| SlaPlan {
            calendar: calendar.name().to_string(),
            severity: ticket.severity.assigned,
            deadlines: None,
            next_update: None,
            timers: None,
        });
        plan.next_update = Some(next);
        said.push("status_update".into());
    }

    // Escalation, once.
    if !resolved
        && c.escalated_at.is_none()
        && let Some(at) = due(c.escalation_due, now)
    {
        update.escalated = true;
        let mut to: Vec<&str> = policy
            .escalation_contacts
            .iter()
            .map(String::as_str)
            .collect();
        to.extend(policy.triage_owners.iter().map(String::as_str));
        outbound.extend(to_staff(&to, Template::Escalation, Notice::Escalated, at));
        events.push(event(
            "escalated",
            None,
            None,
            format!(
                "unresolved at its escalation time ({} after creation): escalated",
                policy.sla.of(ticket.severity.assigned).escalate_after
            ),
        ));
        said.push("escalated".into());
    }

    // Breaches, once per deadline.
    let triage: Vec<&str> = policy.triage_owners.iter().map(String::as_str).collect();
    if !resolved
        && ticket.first_response_at.is_none()
        && c.response_breach_at.is_none()
        && let Some(at) = due(c.response_due, now)
    {
        update.response_breach = true;
        outbound.extend(to_staff(
            &triage,
            Template::Breach,
            Notice::ResponseBreached,
            at,
        ));
        events.push(event(
            "breach",
            None,
            Some("response".into()),
            "no public engineer reply by the response deadline".into(),
        ));
        said.push("response breached".into());
    }
    if !resolved
        && c.resolved_at.is_none()
        && c.resolution_breach_at.is_none()
        && let Some(at) = due(c.resolution_due, now)
    {
        update.resolution_breach = true;
        outbound.extend(to_staff(
            &triage,
            Template::Breach,
            Notice::ResolutionBreached,
            at,
        ));
        events.push(event(
            "breach",
            None,
            Some("resolution".into()),
            "not resolved by the resolution deadline".into(),
        ));
        said.push("resolution breached".into());
    }

    if events.is_empty() {
        return None;
    }
    Some(Decision {
        action: Action::Scheduled { ticket: n },
        severity: None,
        message: None,
        status_change,
        joiners: Vec::new(),
        requester_bounced: false,
        update,
        rejected: Vec::new(),
        sla,
        events,
        acknowledge: false,
        reason: format!("SLA clock of #{n}: {}", said.join(", ")),
        ignored: None,
        outbound,
        at: now,
    })
}
