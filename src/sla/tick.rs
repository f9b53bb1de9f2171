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

/// Scheduled mail carries the instant it was due (its Message-ID is made of it).
fn due_at(mails: Vec<PlannedMail>, at: DateTime<Utc>) -> Vec<PlannedMail> {
    mails
        .into_iter()
        .map(|m| PlannedMail { due: Some(at), ..m })
        .collect()
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
    let resolved = ticket.status.is_resolved();
    // While the clock is paused for the customer, deadlines neither escalate nor breach: the
    // waited open time is added back when the customer answers.
    let stopped = resolved
        || (ticket.status == Status::CustomerPending && policy.sla.pause_when_customer_pending);

    // The time-driven status rules.
    let moved = match ticket.status {
        Status::CustomerPending => {
            match (due(c.close_pending_due, now), due(c.reminder_due, now)) {
                (Some(at), _) => Some((Status::ClosePending, StatusEvent::CustomerSilent, at)),
                (None, Some(at)) => {
                    outbound.extend(due_at(
                        notify::customers(ticket, Template::CustomerPendingReminder),
                        at,
                    ));
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
        outbound.extend(due_at(notify::customers(ticket, template), at));
        if to == Status::ClosePending {
            outbound.extend(due_at(
                notify::resolved(policy, ticket, &Mailbox::default()),
                at,
            ));
        }
        let (plan, _) = on_status_change(policy, ticket, ticket.status, to, None, now);
        sla = Some(plan);
        said.push(format!("status {} -> {to}", ticket.status));
    }

    // The status update while the ticket is with us.
    if with_us(ticket.status)
        && let Some(at) = due(c.update_due, now)
    {
        outbound.extend(due_at(
            notify::customers(ticket, Template::StatusUpdate),
            at,
        ));
        let targets = policy.sla.of(ticket.severity.assigned);
        let calendar = policy
            .calendars
            .for_clock(&targets.clock, policy.customer_calendar(ticket));
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
            paused_total: None,
        });
        plan.next_update = Some(next);
        said.push("status_update".into());
    }

    // Escalation, once.
    if !stopped
        && c.escalated_at.is_none()
        && let Some(at) = due(c.escalation_due, now)
    {
        update.escalated = true;
        outbound.extend(due_at(notify::escalated(policy), at));
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
    if !stopped
        && ticket.first_response_at.is_none()
        && c.response_breach_at.is_none()
        && let Some(at) = due(c.response_due, now)
    {
        update.response_breach = true;
        outbound.extend(due_at(
            notify::breached(policy, Notice::ResponseBreached),
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
    if !stopped
        && c.resolved_at.is_none()
        && c.resolution_breach_at.is_none()
        && let Some(at) = due(c.resolution_due, now)
    {
        update.resolution_breach = true;
        outbound.extend(due_at(
            notify::breached(policy, Notice::ResolutionBreached),
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

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::desk::fixtures::{self, member};
    use crate::desk::severity::{Severity, SeverityReading};
    use crate::desk::ticket::{Clocks, Role};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T18:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn policy() -> Policy {
        Policy {
            escalation_contacts: vec!["director@example.com".into(), "TRIAGE@example.com".into()],
            ..fixtures::policy()
        }
    }

    fn ticket(status: Status, clocks: Clocks) -> TicketState {
        TicketState {
            severity: SeverityReading {
                requested: Some(Severity::Sev3),
                assigned: Severity::Sev3,
                given: true,
                downgraded: false,
            },
            created_at: now() - Duration::days(3),
            clocks,
            ..fixtures::ticket(
                status,
                vec![
                    member("jane@acme.test", Role::Requester),
                    member("bob@acme.test", Role::Watcher),
                ],
            )
        }
    }

    fn mails(d: &Decision) -> Vec<(Template, &str)> {
        d.outbound
            .iter()
            .map(|m| (m.template, m.to.address.as_str()))
            .collect()
    }

    #[test]
    fn what_the_clock_does_when_something_is_due() {
        use Status::*;
        use Template as T;
        let past = now() - Duration::hours(1);
        let later = now() + Duration::hours(1);
        let (j, b, t, d, a) = (
            "jane@acme.test",
            "bob@acme.test",
            "triage@example.com",
            "director@example.com",
            "am@example.com",
        );
        // (case, status, clocks, first response met, status after, mails)
        type Case<'a> = (
            &'a str,
            Status,
            Clocks,
            bool,
            Option<Status>,
            Vec<(Template, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "update_due_while_with_us_sends_a_status_update",
                EngineerPending,
                Clocks {
                    update_due: Some(past),
                    ..Clocks::default()
                },
                false,
                None,
                vec![(T::StatusUpdate, j), (T::StatusUpdate, b)],
            ),
            (
                "update_not_yet_due_does_nothing",
                InTriage,
                Clocks {
                    update_due: Some(later),
                    ..Clocks::default()
                },
                false,
                None,
                vec![],
            ),
            (
                "no_status_update_while_waiting_on_the_customer",
                CustomerPending,
                Clocks {
                    update_due: Some(past),
                    ..Clocks::default()
                },
                false,
                None,
                vec![],
            ),
            (
                "reminder_after_a_day_of_silence",
                CustomerPending,
                Clocks {
                    reminder_due: Some(past),
                    close_pending_due: Some(later),
                    ..Clocks::default()
                },
                true,
                None,
                vec![
                    (T::CustomerPendingReminder, j),
                    (T::CustomerPendingReminder, b),
                ],
            ),
            (
                "silence_moves_to_close_pending_and_tells_the_account_manager",
                CustomerPending,
                Clocks {
                    reminder_due: Some(past),
                    close_pending_due: Some(past),
                    ..Clocks::default()
                },
                true,
                Some(ClosePending),
                vec![
                    (T::ClosePending, j),
                    (T::ClosePending, b),
                    (T::EngineerNotification, a),
                ],
            ),
            (
                "close_pending_closes_by_itself",
                ClosePending,
                Clocks {
                    auto_close_due: Some(past),
                    ..Clocks::default()
                },
                true,
                Some(Closed),
                vec![(T::Closed, j), (T::Closed, b)],
            ),
            (
                "escalation_tells_contacts_and_triage_once_each",
                EngineerPending,
                Clocks {
                    escalation_due: Some(past),
                    ..Clocks::default()
                },
                true,
                None,
                vec![(T::Escalation, d), (T::Escalation, t)],
            ),
            (
                "escalated_already_is_not_escalated_again",
                EngineerPending,
                Clocks {
                    escalation_due: Some(past),
                    escalated_at: Some(past),
                    ..Clocks::default()
                },
                true,
                None,
                vec![],
            ),
            (
                "resolved_tickets_do_not_escalate_or_breach",
                ClosePending,
                Clocks {
                    escalation_due: Some(past),
                    resolution_due: Some(past),
                    response_due: Some(past),
                    ..Clocks::default()
                },
                false,
                None,
                vec![],
            ),
            (
                "response_breach_tells_triage",
                InTriage,
                Clocks {
                    response_due: Some(past),
                    ..Clocks::default()
                },
                false,
                None,
                vec![(T::Breach, t)],
            ),
            (
                "met_response_is_no_breach",
                EngineerPending,
                Clocks {
                    response_due: Some(past),
                    ..Clocks::default()
                },
                true,
                None,
                vec![],
            ),
            (
                "a_breach_is_told_once",
                InTriage,
                Clocks {
                    response_due: Some(past),
                    response_breach_at: Some(past),
                    ..Clocks::default()
                },
                false,
                None,
                vec![],
            ),
            (
                "resolution_breach_tells_triage",
                EngineerPending,
                Clocks {
                    resolution_due: Some(past),
                    ..Clocks::default()
                },
                true,
                None,
                vec![(T::Breach, t)],
            ),
            (
                "no_breach_or_escalation_while_the_clock_waits_on_the_customer",
                CustomerPending,
                Clocks {
                    resolution_due: Some(past),
                    escalation_due: Some(past),
                    ..Clocks::default()
                },
                true,
                None,
                vec![],
            ),
        ];
        for (name, status, clocks, responded, after, want) in cases {
            let mut tk = ticket(status, clocks);
            if responded {
                tk.first_response_at = Some(now() - Duration::days(2));
            }
            let d = sweep(&tk, &policy(), now());
            let got = d.as_ref().map(mails).unwrap_or_default();
            assert_eq!(got, want, "{name}");
            assert_eq!(
                d.as_ref()
                    .and_then(|d| d.status_change.as_ref())
                    .map(|c| c.to),
                after,
                "{name}"
            );
            if let Some(d) = &d {
                assert!(
                    d.outbound
                        .iter()
                        .all(|m| m.due.is_some_and(|due| due <= now())),
                    "{name}: scheduled mail carries the instant it was due"
                );
            }
        }
    }

    #[test]
    fn each_rule_moves_or_clears_its_due_time() {
        let past = now() - Duration::hours(1);
        // The status update's next due time is an interval later.
        let d = sweep(
            &ticket(
                Status::EngineerPending,
                Clocks {
                    update_due: Some(past),
                    ..Clocks::default()
                },
            ),
            &policy(),
            now(),
        );
        let next = d.and_then(|d| d.sla).and_then(|p| p.next_update);
        assert!(next.is_some_and(|n| n > now()), "{next:?}");
        // The reminder clears itself and keeps the silence rule.
        let close = now() + Duration::hours(5);
        let d = sweep(
            &ticket(
                Status::CustomerPending,
                Clocks {
                    reminder_due: Some(past),
                    close_pending_due: Some(close),
                    ..Clocks::default()
                },
            ),
            &policy(),
            now(),
        );
        let timers = d.and_then(|d| d.sla).and_then(|p| p.timers);
        assert_eq!(
            timers.map(|t| (t.reminder, t.close_pending)),
            Some((None, Some(close)))
        );
        // Close pending after silence sets the auto-close time.
        let d = sweep(
            &ticket(
                Status::CustomerPending,
                Clocks {
                    close_pending_due: Some(past),
                    ..Clocks::default()
                },
            ),
            &policy(),
            now(),
        );
        let timers = d.and_then(|d| d.sla).and_then(|p| p.timers);
        assert!(
            timers.is_some_and(
                |t| t.auto_close.is_some_and(|a| a > now()) && t.close_pending.is_none()
            )
        );
        // Escalation and breaches mark the ticket.
        let d = sweep(
            &ticket(
                Status::InTriage,
                Clocks {
                    escalation_due: Some(past),
                    response_due: Some(past),
                    resolution_due: Some(past),
                    ..Clocks::default()
                },
            ),
            &policy(),
            now(),
        );
        let u = d.map(|d| d.update).unwrap_or_default();
        assert!(u.escalated && u.response_breach && u.resolution_breach);
        // Nothing due: no decision.
        assert!(
            sweep(
                &ticket(Status::EngineerPending, Clocks::default()),
                &policy(),
                now()
            )
            .is_none()
        );
    }

    /// Leaving customer pending adds the wait to the running deadlines and to the ticket's
    /// total of waits (kept for a later recomputation from creation).
    #[test]
    fn leaving_customer_pending_adds_the_wait_to_the_deadlines_and_the_total() {
        let policy = policy();
        let t0 = ticket(Status::CustomerPending, Clocks::default());
        let plain = crate::sla::clock::SlaPlan::from_creation(
            &policy.sla,
            &policy.calendars,
            Severity::Sev3,
            None,
            t0.created_at,
            t0.created_at,
            Duration::zero(),
        );
        let due = plain.deadlines.unwrap_or_else(|| panic!("deadlines"));
        let since = now() - Duration::days(1);
        let ticket = ticket(
            Status::CustomerPending,
            Clocks {
                status_since: Some(since),
                response_due: Some(due.response),
                resolution_due: Some(due.resolution),
                escalation_due: Some(due.escalation),
                paused: Duration::hours(2),
                ..Clocks::default()
            },
        );
        let (plan, words) = crate::sla::clock::on_status_change(
            &policy,
            &ticket,
            Status::CustomerPending,
            Status::EngineerPending,
            None,
            now(),
        );
        let cal = policy
            .calendars
            .for_clock(&policy.sla.of(Severity::Sev3).clock, None);
        let waited = cal.open_time_between(since, now());
        assert!(waited > Duration::zero(), "a whole day holds open time");
        assert_eq!(plan.paused_total, Some(Duration::hours(2) + waited));
        let moved = plan.deadlines.unwrap_or_else(|| panic!("moved"));
        assert_eq!(moved.resolution, cal.add_open_time(due.resolution, waited));
        assert!(words.is_some());
    }
}
