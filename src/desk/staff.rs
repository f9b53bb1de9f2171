//! Mail from engineers and account managers on a ticket (SPEC: Engineers by mail, Statuses,
//! People and addresses). Pure, like the rest of `decide`.
//!
//! An engineer's mail is read for commands at its top (`desk::commands`). Any unknown or
//! malformed command, or an `#assign` to someone who is not staff, rejects the whole mail: it is
//! kept on the ticket as internal, the engineer gets `command_rejected` saying which line and
//! why, and nothing is relayed or changed (all or nothing). Otherwise:
//! - `#note` keeps the mail internal: stored, and sent to the staff participants, the assignee
//!   and the account manager, never to the requester or watchers;
//! - text without `#note` is a public reply: relayed to the requester and watchers (or carried by
//!   the close-pending / closed notice when the same mail solves or closes the ticket), and the
//!   first one records the response time;
//! - `#assign`, `#severity` (the requested severity is kept), `#status` and `#solved` change the
//!   ticket; without a status command a public reply moves it to
//!   `statuses.after_engineer_reply` and any other first action takes it out of triage;
//! - reaching close pending or closed tells the account manager.
//!
//! An account manager may only add notes: whatever they write is internal (with or without
//! `#note`), and any other command is rejected back to them.

use super::commands::{self, Assignee, Command, Rejected};
use super::decide::{
    Action, Decision, Incoming, Joiner, PlannedEvent, PlannedMail, Policy, Reply, ReplyKind,
    StatusChange, StoredMessage, Template, TicketUpdate, Visibility, reply_text,
};
use super::notify;
use super::status::{Status, StatusEvent, transition_as};
use super::ticket::Role;
use crate::mail::Mailbox;
use crate::sla::clock::SlaPlan;

/// An engineer's mail on a ticket.
pub(super) fn engineer_reply(input: &Incoming<'_>, policy: &Policy) -> Decision {
    let text = reply_text(input.mail);
    let parsed = commands::parse(&text);
    let mut rejected = parsed.rejected.clone();
    for c in &parsed.commands {
        if let Command::Assign(Assignee::Address(a)) = &c.command
            && !policy.is_staff(a)
        {
            rejected.push(Rejected {
                line: c.line,
                text: c.text.clone(),
                problem: format!(
                    "{a} is not staff (staff.domains, staff.addresses): tickets can only be assigned to staff"
                ),
            });
        }
    }
    if !rejected.is_empty() {
        return rejection(input, text, rejected);
    }

    let ticket = input.ticket;
    let sender = input.sender();
    let on = input.on();
    let (mut joiners, mut events) = input.joining();
    let note = parsed.commands.iter().any(|c| c.command == Command::Note);
    let body = parsed.body.trim().to_string();
    let public = !note && !body.is_empty();
    let mut update = TicketUpdate::default();
    let mut said: Vec<String> = Vec::new();

    events.push(PlannedEvent {
        on,
        actor: sender.clone(),
        kind: if note {
            "note"
        } else if public {
            "reply"
        } else {
            "commands"
        }
        .into(),
        from: None,
        to: None,
        reason: format!(
            "{} from staff ({})",
            if note {
                "internal note"
            } else if public {
                "public reply"
            } else {
                "commands"
            },
            input.by.describe()
        ),
        related: None,
    });

    for c in &parsed.commands {
        match &c.command {
            Command::Assign(who) => {
                let who = match who {
                    Assignee::Me => sender.clone(),
                    Assignee::Address(a) => a.to_ascii_lowercase(),
                };
                if ticket.assignee.as_deref() == Some(who.as_str()) {
                    said.push(format!("already assigned to {who}"));
                    continue;
                }
                events.push(PlannedEvent {
                    on,
                    actor: sender.clone(),
                    kind: "assigned".into(),
                    from: ticket.assignee.clone(),
                    to: Some(who.clone()),
                    reason: format!("assigned to {who} by {sender} (#assign)"),
                    related: None,
                });
                said.push(format!("assigned to {who}"));
                if ticket.role_of(&who).is_none() && !joiners.iter().any(|j| j.mailbox.key() == who)
                {
                    joiners.push(Joiner {
                        mailbox: Mailbox {
                            name: None,
                            address: who.clone(),
                        },
                        role: Role::Staff,
                    });
                    events.push(PlannedEvent {
                        on,
                        actor: sender.clone(),
                        kind: "participant".into(),
                        from: None,
                        to: Some(Role::Staff.as_str().into()),
                        reason: format!("{who} joins as the assignee"),
                        related: None,
                    });
                }
                update.assignee = Some(who);
            }
            Command::Severity(sev) => {
                let before = ticket.severity.assigned;
                if *sev == before {
                    said.push(format!("severity already {sev}"));
                    continue;
                }
                events.push(PlannedEvent {
                    on,
                    actor: sender.clone(),
                    kind: "severity".into(),
                    from: Some(before.number().to_string()),
                    to: Some(sev.number().to_string()),
                    reason: format!(
                        "set to {sev} by {sender} (#severity); requested severity {} kept",
                        ticket
                            .severity
                            .requested
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| "not given".into())
                    ),
                    related: None,
                });
                said.push(format!("severity {before} -> {sev}"));
                update.severity = Some(*sev);
            }
            Command::Status(_) | Command::Solved | Command::Note => {}
        }
    }

    let explicit = parsed.commands.iter().find_map(|c| match c.command {
        Command::Status(s) => Some((StatusEvent::EngineerSetsStatus, Some(s))),
        Command::Solved => Some((StatusEvent::EngineerSolved, None)),
        _ => None,
    });
    let (event, to) = match explicit {
        Some(e) => e,
        None if public => (
            StatusEvent::EngineerReply,
            Some(policy.after_engineer_reply),
        ),
        None => (StatusEvent::EngineerAction, None),
    };
    let status_change = transition_as(ticket.status, event, to).map(|to| StatusChange {
        from: ticket.status,
        to,
        event,
    });
    if let Some(c) = &status_change {
        events.push(PlannedEvent {
            on,
            actor: sender.clone(),
            kind: "status".into(),
            from: Some(c.from.as_str().into()),
            to: Some(c.to.as_str().into()),
            reason: event.describe().into(),
            related: None,
        });
        said.push(format!("status {} -> {}", c.from, c.to));
    }

    let mut outbound = Vec::new();
    let mut to_customers_sent = false;
    let assignee_after = update.assignee.as_deref().or(ticket.assignee.as_deref());
    if note {
        let told = notify::internal_note(policy, ticket, assignee_after, &input.mail.from);
        said.push(if told.is_empty() {
            "internal note stored; nobody else on staff to tell".into()
        } else {
            format!(
                "internal note to {}",
                told.iter()
                    .map(|m| m.to.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        outbound.extend(told);
    } else {
        // One mail to each customer: the close-pending or closed notice when this mail solves
        // or closes the ticket (carrying the engineer's text, if any), else the relay.
        let to_customers = match status_change.as_ref().map(|c| c.to) {
            Some(Status::ClosePending) => Some(Template::ClosePending),
            Some(Status::Closed) => Some(Template::Closed),
            _ if public => Some(Template::Relay),
            _ => None,
        };
        if let Some(t) = to_customers {
            to_customers_sent = true;
            let customers = notify::customers(ticket, t);
            said.push(format!(
                "{t} to {}",
                customers
                    .iter()
                    .map(|m| m.to.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            outbound.extend(customers);
        }
        if public && ticket.first_response_at.is_none() {
            update.first_response = true;
            said.push("first response recorded".into());
        }
    }
    let resolved = Status::is_resolved;
    if let Some(c) = &status_change
        && resolved(c.to)
        && !resolved(c.from)
    {
        outbound.extend(notify::resolved(policy, ticket, &input.mail.from));
    }

    // The SLA clock: a new severity recomputes every deadline from creation; a public message
    // restarts the status-update interval.
    let severity_now = update.severity.unwrap_or(ticket.severity.assigned);
    let customer_calendar = policy.customer_calendar(ticket);
    let restarts_updates = public || to_customers_sent;
    let update_plan = || {
        SlaPlan::update_from(
            &policy.sla,
            &policy.calendars,
            severity_now,
            customer_calendar,
            input.now,
        )
    };
    let sla = match (update.severity.is_some(), restarts_updates) {
        (false, false) => None,
        (false, true) => Some(update_plan()),
        (true, _) => {
            let mut plan = SlaPlan::from_creation(
                &policy.sla,
                &policy.calendars,
                severity_now,
                customer_calendar,
                ticket.created_at,
                ticket.created_at,
                ticket.clocks.paused,
            );
            // The update interval restarts only with a public message; else it stays as stored.
            plan.next_update = restarts_updates
                .then(|| update_plan().next_update)
                .flatten();
            Some(plan)
        }
    };
    if let Some(plan) = &sla {
        events.push(PlannedEvent {
            on,
            actor: "postdesk".into(),
            kind: "sla".into(),
            from: None,
            to: None,
            reason: if plan.deadlines.is_some() {
                format!(
                    "deadlines recomputed from creation: {}",
                    plan.describe(&policy.calendars)
                )
            } else {
                format!("public reply: {}", plan.describe(&policy.calendars))
            },
            related: None,
        });
    }

    let kind = if note {
        ReplyKind::InternalNote
    } else if public {
        ReplyKind::EngineerReply
    } else {
        ReplyKind::EngineerCommand
    };
    let mut reason = format!(
        "{} on ticket #{} from staff ({})",
        kind.as_str().replace('_', " "),
        ticket.number,
        input.by.describe()
    );
    for s in &said {
        reason.push_str("; ");
        reason.push_str(s);
    }
    Decision {
        action: Action::Reply(Reply {
            ticket: ticket.number,
            matched_by: input.by.clone(),
            role: input.role,
            kind,
        }),
        severity: Some(input.severity),
        message: Some(StoredMessage {
            kind: "staff".into(),
            visibility: if public {
                Visibility::Public
            } else {
                Visibility::Internal
            },
            text: if body.is_empty() { text } else { body },
        }),
        status_change,
        joiners,
        requester_bounced: false,
        update,
        rejected: Vec::new(),
        sla,
        events,
        acknowledge: false,
        reason,
        ignored: None,
        outbound,
        at: input.now,
    }
}

/// An account manager's mail on a ticket: an internal note, or rejected when it holds any
/// command other than `#note`.
pub(super) fn account_manager_reply(input: &Incoming<'_>, policy: &Policy) -> Decision {
    let text = reply_text(input.mail);
    let parsed = commands::parse(&text);
    let mut rejected = parsed.rejected.clone();
    rejected.extend(commands::account_manager_limits(&parsed));
    if !rejected.is_empty() {
        return rejection(input, text, rejected);
    }
    let ticket = input.ticket;
    let sender = input.sender();
    let (joiners, mut events) = input.joining();
    events.push(PlannedEvent {
        on: input.on(),
        actor: sender.clone(),
        kind: "note".into(),
        from: None,
        to: None,
        reason: format!(
            "internal note from the account manager ({})",
            input.by.describe()
        ),
        related: None,
    });
    let outbound =
        notify::internal_note(policy, ticket, ticket.assignee.as_deref(), &input.mail.from);
    let body = parsed.body.trim().to_string();
    let reason = format!(
        "internal note on ticket #{} from the account manager ({}); to {}",
        ticket.number,
        input.by.describe(),
        if outbound.is_empty() {
            "nobody else".to_string()
        } else {
            outbound
                .iter()
                .map(|m| m.to.address.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Decision {
        action: Action::Reply(Reply {
            ticket: ticket.number,
            matched_by: input.by.clone(),
            role: input.role,
            kind: ReplyKind::InternalNote,
        }),
        severity: Some(input.severity),
        message: Some(StoredMessage {
            kind: "account_manager".into(),
            visibility: Visibility::Internal,
            text: if body.is_empty() { text } else { body },
        }),
        status_change: None,
        joiners,
        requester_bounced: false,
        update: TicketUpdate::default(),
        rejected: Vec::new(),
        sla: None,
        events,
        acknowledge: false,
        reason,
        ignored: None,
        outbound,
        at: input.now,
    }
}

/// Commands that cannot be obeyed: the mail is kept (internal), the sender is told which line
/// and why, and nothing else happens.
fn rejection(input: &Incoming<'_>, text: String, rejected: Vec<Rejected>) -> Decision {
    let sender = input.sender();
    let lines = rejected
        .iter()
        .map(|r| format!("line {}: {} ({})", r.line, r.text, r.problem))
        .collect::<Vec<_>>()
        .join("; ");
    let events = vec![PlannedEvent {
        on: input.on(),
        actor: sender.clone(),
        kind: "command_rejected".into(),
        from: None,
        to: None,
        reason: format!("commands rejected, nothing relayed or changed: {lines}"),
        related: None,
    }];
    Decision {
        action: Action::Reply(Reply {
            ticket: input.ticket.number,
            matched_by: input.by.clone(),
            role: input.role,
            kind: ReplyKind::CommandRejected,
        }),
        severity: Some(input.severity),
        message: Some(StoredMessage {
            kind: if input.role == Role::AccountManager {
                "account_manager"
            } else {
                "staff"
            }
            .into(),
            visibility: Visibility::Internal,
            text,
        }),
        status_change: None,
        joiners: Vec::new(),
        requester_bounced: false,
        update: TicketUpdate::default(),
        rejected,
        sla: None,
        events,
        acknowledge: false,
        reason: format!(
            "commands from {} on ticket #{} rejected: {lines}; command_rejected to {sender}, nothing relayed or changed",
            input.role_words(),
            input.ticket.number
        ),
        ignored: None,
        outbound: vec![PlannedMail::new(
            Template::CommandRejected,
            input.mail.from.clone(),
        )],
        at: input.now,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::super::decide::{MailContext, Notice, StaffAuth, Target, decide};
    use super::super::severity::{Severity, SeverityReading};
    use super::super::ticket::TicketState;
    use super::*;
    use crate::mail::InboundMail;

    const SAM: &str = "sam@example.com";
    const AM: &str = "am@example.com";
    const JANE: &str = "jane@acme.test";
    const BOB: &str = "bob@acme.test";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    use super::super::fixtures::{self, member};

    fn policy() -> Policy {
        fixtures::policy()
    }

    fn ticket(status: Status) -> TicketState {
        TicketState {
            severity: SeverityReading {
                requested: Some(Severity::Sev1),
                assigned: Severity::Sev3,
                given: true,
                downgraded: true,
            },
            subject: "SEV 1 down".into(),
            created_at: now() - chrono::Duration::days(1),
            conversation: vec!["first@acme.test".into()],
            ..fixtures::ticket(
                status,
                vec![
                    member(JANE, Role::Requester),
                    member(BOB, Role::Watcher),
                    member(AM, Role::AccountManager),
                    member("kim@example.com", Role::Staff),
                ],
            )
        }
    }

    fn mail_from(from: &str, text: &str) -> InboundMail {
        InboundMail {
            message_id: "eng-1@example.com".into(),
            from: Mailbox {
                name: Some("Sam Engineer".into()),
                address: from.into(),
            },
            subject: "Re: [#7] SEV 1 down".into(),
            in_reply_to: vec!["postdesk.7.engineer_notification.x@example.com".into()],
            text: text.into(),
            ..InboundMail::default()
        }
    }

    fn ctx(status: Status) -> MailContext {
        MailContext {
            header_match: Some((7, "postdesk.7.engineer_notification.x@example.com".into())),
            tickets: vec![ticket(status)],
            ..MailContext::default()
        }
    }

    /// (template, recipient) of every planned mail.
    fn mails(d: &Decision) -> Vec<(Template, &str)> {
        d.outbound
            .iter()
            .map(|m| (m.template, m.to.address.as_str()))
            .collect()
    }

    fn kind(d: &Decision) -> Option<ReplyKind> {
        match &d.action {
            Action::Reply(r) => Some(r.kind),
            _ => None,
        }
    }

    #[test]
    fn engineer_mail_decision_table() {
        use Status as S;
        use Status::{CustomerPending, EngineerPending, InTriage};
        use Template as T;
        use Template::{CommandRejected, EngineerNotification, InternalNote, Relay};
        let quoted =
            "Hi Jane,\n\nfixed.\n\nOn Mon, Jane wrote:\n> #status closed\n> it is broken\n";
        // (case, from, text, status before, kind, status after, mails)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Status,
            ReplyKind,
            Option<Status>,
            Vec<(Template, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "public_reply_is_relayed_to_requester_and_watcher_and_waits_on_customer",
                SAM,
                "Hi Jane,\n\nplease restart.\n",
                EngineerPending,
                ReplyKind::EngineerReply,
                Some(CustomerPending),
                vec![(Relay, JANE), (Relay, BOB)],
            ),
            (
                "first_public_reply_leaves_triage",
                SAM,
                "Looking into it.",
                InTriage,
                ReplyKind::EngineerReply,
                Some(CustomerPending),
                vec![(Relay, JANE), (Relay, BOB)],
            ),
            (
                "quoted_commands_in_the_history_do_not_count",
                SAM,
                quoted,
                EngineerPending,
                ReplyKind::EngineerReply,
                Some(CustomerPending),
                vec![(Relay, JANE), (Relay, BOB)],
            ),
            (
                "commands_below_text_do_not_count",
                SAM,
                "Please try:\n#status closed\n",
                EngineerPending,
                ReplyKind::EngineerReply,
                Some(CustomerPending),
                vec![(Relay, JANE), (Relay, BOB)],
            ),
            (
                "severity_command_with_text_relays_without_status_command",
                SAM,
                "#severity 4\n\nHi Jane, lowering this.",
                EngineerPending,
                ReplyKind::EngineerReply,
                Some(CustomerPending),
                vec![(Relay, JANE), (Relay, BOB)],
            ),
            (
                "status_command_wins_over_after_engineer_reply",
                SAM,
                "#status engineer_pending\nStill digging.",
                CustomerPending,
                ReplyKind::EngineerReply,
                Some(EngineerPending),
                vec![(Relay, JANE), (Relay, BOB)],
            ),
            (
                "solved_with_text_sends_close_pending_carrying_it_and_tells_the_account_manager",
                SAM,
                "#solved\nFixed in 2.3.",
                EngineerPending,
                ReplyKind::EngineerReply,
                Some(S::ClosePending),
                vec![
                    (T::ClosePending, JANE),
                    (T::ClosePending, BOB),
                    (EngineerNotification, AM),
                ],
            ),
            (
                "solved_alone_sends_the_close_pending_notice",
                SAM,
                "#solved",
                CustomerPending,
                ReplyKind::EngineerCommand,
                Some(S::ClosePending),
                vec![
                    (T::ClosePending, JANE),
                    (T::ClosePending, BOB),
                    (EngineerNotification, AM),
                ],
            ),
            (
                "status_closed_sends_the_closed_notice",
                SAM,
                "#status closed",
                CustomerPending,
                ReplyKind::EngineerCommand,
                Some(S::Closed),
                vec![
                    (T::Closed, JANE),
                    (T::Closed, BOB),
                    (EngineerNotification, AM),
                ],
            ),
            (
                "commands_only_leave_triage_and_mail_no_customer",
                SAM,
                "#assign me\n#severity 2",
                InTriage,
                ReplyKind::EngineerCommand,
                Some(EngineerPending),
                vec![],
            ),
            (
                "commands_only_later_change_no_status",
                SAM,
                "#severity 2",
                CustomerPending,
                ReplyKind::EngineerCommand,
                None,
                vec![],
            ),
            (
                "note_goes_to_staff_and_account_manager_never_the_customer",
                SAM,
                "#note\nCustomer is on the old build.",
                EngineerPending,
                ReplyKind::InternalNote,
                None,
                vec![(InternalNote, "kim@example.com"), (InternalNote, AM)],
            ),
            (
                "note_is_a_first_action",
                SAM,
                "#note\nlooking",
                InTriage,
                ReplyKind::InternalNote,
                Some(EngineerPending),
                vec![(InternalNote, "kim@example.com"), (InternalNote, AM)],
            ),
            (
                "note_with_status_closed_tells_no_customer",
                SAM,
                "#note\n#status closed\nduplicate of #5",
                EngineerPending,
                ReplyKind::InternalNote,
                Some(S::Closed),
                vec![
                    (InternalNote, "kim@example.com"),
                    (InternalNote, AM),
                    (EngineerNotification, AM),
                ],
            ),
            (
                "reply_on_a_closed_ticket_is_relayed_and_stays_closed",
                SAM,
                "One more thing.",
                S::Closed,
                ReplyKind::EngineerReply,
                None,
                vec![(Relay, JANE), (Relay, BOB)],
            ),
            (
                "unknown_command_is_rejected_to_the_engineer_and_nothing_changes",
                SAM,
                "#sevrity 9\nHi Jane",
                EngineerPending,
                ReplyKind::CommandRejected,
                None,
                vec![(CommandRejected, SAM)],
            ),
            (
                "malformed_severity_rejects_all_commands_of_the_mail",
                SAM,
                "#assign me\n#severity 9\nHi Jane",
                InTriage,
                ReplyKind::CommandRejected,
                None,
                vec![(CommandRejected, SAM)],
            ),
            (
                "assign_to_a_customer_is_rejected",
                SAM,
                "#assign jane@acme.test",
                EngineerPending,
                ReplyKind::CommandRejected,
                None,
                vec![(CommandRejected, SAM)],
            ),
            (
                "note_with_solved_is_rejected",
                SAM,
                "#note\n#solved",
                EngineerPending,
                ReplyKind::CommandRejected,
                None,
                vec![(CommandRejected, SAM)],
            ),
            (
                "account_manager_text_is_an_internal_note",
                AM,
                "They renewed yesterday, be nice.",
                EngineerPending,
                ReplyKind::InternalNote,
                None,
                vec![(InternalNote, "kim@example.com")],
            ),
            (
                "account_manager_note_command_is_an_internal_note",
                AM,
                "#note\nVIP customer.",
                EngineerPending,
                ReplyKind::InternalNote,
                None,
                vec![(InternalNote, "kim@example.com")],
            ),
            (
                "account_manager_may_not_set_severity",
                AM,
                "#note\n#severity 1\nurgent",
                EngineerPending,
                ReplyKind::CommandRejected,
                None,
                vec![(CommandRejected, AM)],
            ),
            (
                "account_manager_may_not_solve",
                AM,
                "#solved",
                EngineerPending,
                ReplyKind::CommandRejected,
                None,
                vec![(CommandRejected, AM)],
            ),
        ];
        for (name, from, text, before, want_kind, after, want_mails) in cases {
            let d = decide(&mail_from(from, text), &ctx(before), &policy(), now());
            assert_eq!(kind(&d), Some(want_kind), "{name}: {}", d.reason);
            assert_eq!(
                d.status_change.as_ref().map(|c| c.to),
                after,
                "{name}: {}",
                d.reason
            );
            assert_eq!(mails(&d), want_mails, "{name}: {}", d.reason);
            let public = d
                .message
                .as_ref()
                .is_some_and(|m| m.visibility == Visibility::Public);
            assert_eq!(
                public,
                want_kind == ReplyKind::EngineerReply,
                "{name}: only an engineer's public reply is public"
            );
            if want_kind == ReplyKind::CommandRejected {
                assert!(!d.rejected.is_empty(), "{name}");
                assert!(
                    d.update.is_empty() && d.joiners.is_empty(),
                    "{name}: nothing changes"
                );
            }
        }
    }

    /// A severity change recomputes the deadlines from creation and keeps the open time the
    /// ticket already waited on the customer (added back), instead of dropping it.
    #[test]
    fn a_severity_change_keeps_the_time_already_waited_on_the_customer() {
        let mut c = ctx(Status::EngineerPending);
        let waited = chrono::Duration::hours(5);
        c.tickets[0].clocks.paused = waited;
        let d = decide(&mail_from(SAM, "#severity 4\n"), &c, &policy(), now());
        let sla = d.sla.unwrap_or_else(|| panic!("no SLA change"));
        let created = now() - chrono::Duration::days(1);
        let plan = |paused| {
            SlaPlan::from_creation(
                &policy().sla,
                &policy().calendars,
                Severity::Sev4,
                None,
                created,
                created,
                paused,
            )
        };
        assert_eq!(sla.deadlines, plan(waited).deadlines);
        assert_ne!(sla.deadlines, plan(chrono::Duration::zero()).deadlines);
    }

    #[test]
    fn relayed_text_has_no_command_lines_and_records_the_first_response() {
        let d = decide(
            &mail_from(
                SAM,
                "#severity 4\n#assign me\n\nHi Jane,\nplease restart.\n",
            ),
            &ctx(Status::EngineerPending),
            &policy(),
            now(),
        );
        let text = d.message.as_ref().map(|m| m.text.as_str()).unwrap_or("");
        assert_eq!(text, "Hi Jane,\nplease restart.");
        assert_eq!(
            d.update,
            TicketUpdate {
                assignee: Some(SAM.into()),
                severity: Some(Severity::Sev4),
                first_response: true,
                ..TicketUpdate::default()
            }
        );
        assert!(
            d.events.iter().any(|e| e.kind == "severity"
                && e.from.as_deref() == Some("3")
                && e.to.as_deref() == Some("4")
                && e.reason.contains("requested severity Sev 1 kept")),
            "{:?}",
            d.events
        );
        assert!(
            d.joiners
                .iter()
                .any(|j| j.mailbox.address == SAM && j.role == Role::Staff)
        );
        // The new severity recomputes every deadline from creation; the public reply restarts
        // the status-update interval from now.
        let sla = d.sla.clone().unwrap_or_else(|| panic!("no SLA change"));
        let expected = SlaPlan::from_creation(
            &policy().sla,
            &policy().calendars,
            Severity::Sev4,
            None,
            now() - chrono::Duration::days(1),
            now(),
            chrono::Duration::zero(),
        );
        assert_eq!(sla.severity, Severity::Sev4);
        assert_eq!(sla.deadlines, expected.deadlines);
        assert_eq!(
            sla.next_update, expected.next_update,
            "counted from the reply"
        );
        assert!(
            d.events
                .iter()
                .any(|e| e.kind == "sla" && e.reason.contains("recomputed"))
        );
        // A second public reply does not move the response clock again.
        let mut c = ctx(Status::CustomerPending);
        c.tickets[0].first_response_at = Some(now());
        let d = decide(&mail_from(SAM, "More."), &c, &policy(), now());
        assert!(!d.update.first_response);
    }

    #[test]
    fn assign_to_someone_else_makes_them_a_participant_and_assignee() {
        let d = decide(
            &mail_from(SAM, "#assign Kim.Other@Example.com"),
            &ctx(Status::InTriage),
            &policy(),
            now(),
        );
        assert_eq!(d.update.assignee.as_deref(), Some("kim.other@example.com"));
        assert!(
            d.joiners
                .iter()
                .any(|j| j.mailbox.address == "kim.other@example.com")
        );
        assert!(d.events.iter().any(|e| e.kind == "assigned"));
    }

    #[test]
    fn after_engineer_reply_is_configurable() {
        let p = Policy {
            after_engineer_reply: Status::EngineerPending,
            ..policy()
        };
        let d = decide(&mail_from(SAM, "On it."), &ctx(Status::InTriage), &p, now());
        assert_eq!(d.status_change.map(|c| c.to), Some(Status::EngineerPending));
    }

    #[test]
    fn unauthenticated_staff_is_not_obeyed() {
        let strict = Policy {
            require_authenticated: true,
            ..policy()
        };
        // (case, auth, staff rights)
        let cases = [
            (
                "pass_is_obeyed",
                StaffAuth::Pass("dkim=pass header.d=example.com".into()),
                true,
            ),
            (
                "fail_is_a_stranger",
                StaffAuth::Fail("no Authentication-Results from mx.example.com".into()),
                false,
            ),
            ("unchecked_is_a_stranger", StaffAuth::NotChecked, false),
        ];
        for (name, auth, obeyed) in cases {
            let mut c = ctx(Status::EngineerPending);
            c.staff_auth = auth;
            let d = decide(&mail_from(SAM, "#status closed\nDone."), &c, &strict, now());
            if obeyed {
                assert_eq!(kind(&d), Some(ReplyKind::EngineerReply), "{name}");
            } else {
                assert!(
                    matches!(d.action, Action::NewTicket(_)),
                    "{name}: {:?}",
                    d.action
                );
                assert!(d.status_change.is_none(), "{name}");
                assert!(
                    d.events.iter().any(|e| e.kind == "unauthenticated"
                        && e.on == Some(Target::Opened)
                        && e.reason.contains("not authenticated")),
                    "{name}: {:?}",
                    d.events
                );
                assert!(
                    !d.outbound.iter().any(|m| m.to.address == JANE),
                    "{name}: nothing reaches the customer"
                );
            }
        }
        // Not required: the same mail without any check is obeyed.
        let d = decide(
            &mail_from(SAM, "Done."),
            &ctx(Status::EngineerPending),
            &policy(),
            now(),
        );
        assert_eq!(kind(&d), Some(ReplyKind::EngineerReply));
    }

    #[test]
    fn customer_reply_tells_the_assignee_or_triage() {
        let mut c = ctx(Status::CustomerPending);
        let mut m = mail_from(JANE, "Still broken.");
        m.in_reply_to = vec!["postdesk.7.relay.x@example.com".into()];
        let d = decide(&m, &c, &policy(), now());
        assert_eq!(
            d.outbound
                .iter()
                .map(|m| (m.to.address.as_str(), m.notice))
                .collect::<Vec<_>>(),
            vec![("triage@example.com", Some(Notice::CustomerReply))]
        );
        c.tickets[0].assignee = Some(SAM.into());
        let d = decide(&m, &c, &policy(), now());
        assert_eq!(
            d.outbound
                .iter()
                .map(|m| m.to.address.as_str())
                .collect::<Vec<_>>(),
            vec![SAM]
        );
    }
}
