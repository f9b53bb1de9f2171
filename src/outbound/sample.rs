//! Sample data for every template: what `templates check` renders each template with, what
//! `templates preview NAME --sample` shows, and what the render benchmark uses. The clock is
//! fixed (2026-11-23 16:00 UTC) so previews are the same every time.
//!
//! Each template has one or more sample variants; together they reach every branch of the
//! shipped templates (the acknowledgement's severity given / not given / downgraded).

use chrono::{DateTime, Duration, Utc};

use super::context::{
    Audience, BreachView, COMMAND_HELP, ClosingView, CompanyView, DEFAULT_ZONE, DeadlinesView,
    EscalationView, MessageView, NotificationView, ParticipantView, PersonView, RejectedCommand,
    RejectionView, ReminderView, SeverityView, StatusChangeView, SupportView, TemplateContext,
    TicketView, UpdateView, audience, format_local,
};
use crate::desk::Status;
use crate::desk::decide::Template;

/// The fixed "now" of sample data.
pub fn sample_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_449_600, 0).unwrap_or_default()
}

/// The customer's Message-ID the sample mail answers.
pub const SAMPLE_MESSAGE_ID: &str = "CAH7xsample42@mail.gmail.com";

/// The sample ticket number.
pub const SAMPLE_TICKET: i64 = 42;

/// The sample variants of a template; the first is the default of `preview --sample`.
pub fn variants(template: Template) -> &'static [&'static str] {
    match template {
        Template::Acknowledgement => &["given", "not_given", "downgraded", "linked"],
        Template::EngineerNotification => &["new_ticket", "customer_reply"],
        _ => &["default"],
    }
}

/// The sample company.
pub fn sample_company() -> CompanyView {
    CompanyView {
        name: "Globex Corporation".into(),
        domain: "globex.test".into(),
        slug: "globex-corporation".into(),
    }
}

fn person(name: &str, address: &str) -> PersonView {
    PersonView::new(Some(name), address)
}

/// The sample context of `template` in `variant` (None: the first variant), with the desk's
/// own support values. Errors name the variants there are.
pub fn sample(
    template: Template,
    variant: Option<&str>,
    support: &SupportView,
) -> Result<TemplateContext, String> {
    let all = variants(template);
    let variant = match variant {
        None => all[0],
        Some(v) => {
            let norm = v.trim().to_ascii_lowercase().replace('-', "_");
            all.iter().copied().find(|a| *a == norm).ok_or_else(|| {
                format!(
                    "{template} has no sample variant `{v}`: it has {}",
                    all.join(", ")
                )
            })?
        }
    };
    let now = sample_now();
    let zone = DEFAULT_ZONE;
    let created = now - Duration::hours(2);
    let (subject, severity) = match (template, variant) {
        (Template::Acknowledgement, "not_given") => (
            "Invoice export is missing rows since Monday",
            SeverityView {
                requested: None,
                assigned: 4,
                given: false,
                downgraded: false,
            },
        ),
        (Template::Acknowledgement, "downgraded") => (
            "Sev-2: Invoice export is missing rows since Monday",
            SeverityView {
                requested: Some(2),
                assigned: 4,
                given: true,
                downgraded: true,
            },
        ),
        _ => (
            "SEV 3 Invoice export is missing rows since Monday",
            SeverityView {
                requested: Some(3),
                assigned: 3,
                given: true,
                downgraded: false,
            },
        ),
    };
    let status = match template {
        Template::Acknowledgement | Template::EngineerNotification => Status::InTriage,
        Template::Relay | Template::CustomerPendingReminder => Status::CustomerPending,
        Template::ClosePending => Status::ClosePending,
        Template::Closed => Status::Closed,
        _ => Status::EngineerPending,
    };
    let requester = person("Raj Patel", "raj.patel@globex.test");
    let engineer = person("Sam Engineer", "sam@example.com");
    let mut ticket = TicketView::new(
        SAMPLE_TICKET,
        format!("[#{SAMPLE_TICKET}]"),
        subject,
        status,
        created,
        zone,
    );
    if (template, variant) == (Template::Acknowledgement, "linked") {
        ticket.linked_tag = Some("[#17]".into());
    }
    let mut ctx = TemplateContext::new(ticket, severity, requester.clone(), support.clone(), zone);
    ctx.company = Some(sample_company());
    ctx.participants = vec![
        ParticipantView::new(Some("Raj Patel"), "raj.patel@globex.test", "requester"),
        ParticipantView::new(Some("Mia Wong"), "mia.wong@globex.test", "watcher"),
        ParticipantView::new(Some("Sam Engineer"), "sam@example.com", "staff"),
        ParticipantView::new(Some("Alex Account"), "am@example.com", "account_manager"),
    ];
    let local = |minutes: i64| format_local(now + Duration::minutes(minutes), zone);
    let with_deadlines = !(template == Template::Acknowledgement && variant != "given");
    if with_deadlines {
        ctx.deadlines = DeadlinesView {
            zone: zone.name().into(),
            response: Some(local(22 * 60)),
            resolution: Some(local(3 * 24 * 60)),
            next_update: Some(local(22 * 60)),
            escalation: Some(local(2 * 24 * 60)),
        };
    }
    ctx.audience = audience(template);
    ctx.recipient = match template {
        Template::CommandRejected => engineer.clone(),
        Template::Escalation => person("Director of Customer Support", "director@example.com"),
        _ if ctx.audience == Audience::Staff => person("Triage", "triage@example.com"),
        _ => requester.clone(),
    };
    let customer_text = "Hello,\n\nsince Monday the invoice export is missing every row after 1,000.\nWe need the full export for month-end closing on Friday.\n\nThanks,\nRaj";
    match template {
        Template::Acknowledgement => {}
        Template::EngineerNotification => {
            ctx.message = Some(MessageView {
                author: requester.clone(),
                text: if variant == "customer_reply" {
                    "The export from this morning is still cut at 1,000 rows. Attached is the log."
                        .into()
                } else {
                    customer_text.into()
                },
                received_local: local(-5),
                internal: false,
            });
            ctx.notification = Some(NotificationView {
                kind: variant.into(),
            });
        }
        Template::Relay => {
            ctx.message = Some(MessageView {
                author: engineer.clone(),
                text: "Hi Raj,\n\nwe found the limit in the export job and raised it. Could you run the export again and tell us if all rows are there?".into(),
                received_local: local(-3),
                internal: false,
            });
        }
        Template::InternalNote => {
            ctx.message = Some(MessageView {
                author: engineer.clone(),
                text: "Export job has a hard-coded 1,000 row page size since release 4.2. Fix is in review.".into(),
                received_local: local(-3),
                internal: true,
            });
        }
        Template::StatusUpdate => {
            ctx.update = Some(UpdateView {
                last_public_local: local(-24 * 60),
                interval: "24 h".into(),
            });
        }
        Template::CustomerPendingReminder => {
            ctx.reminder = Some(ReminderView {
                waiting_since_local: local(-24 * 60),
                close_pending_local: local(24 * 60),
            });
        }
        Template::ClosePending => {
            ctx.status_change = Some(StatusChangeView::new(
                Status::EngineerPending,
                Status::ClosePending,
                "solved by Sam Engineer",
            ));
            ctx.closing = Some(ClosingView {
                auto_close_local: local(7 * 24 * 60),
                business_days: 5,
                confirm_word: "#close".into(),
                reopen_days: 14,
            });
        }
        Template::Closed => {
            ctx.status_change = Some(StatusChangeView::new(
                Status::ClosePending,
                Status::Closed,
                "confirmed by the customer",
            ));
            ctx.closing = Some(ClosingView {
                auto_close_local: local(0),
                business_days: 5,
                confirm_word: "#close".into(),
                reopen_days: 14,
            });
        }
        Template::Reopened => {
            ctx.status_change = Some(StatusChangeView::new(
                Status::Closed,
                Status::EngineerPending,
                "customer replied within the reopen window",
            ));
            ctx.message = Some(MessageView {
                author: requester.clone(),
                text: "Sorry, the export is cut again since this morning.".into(),
                received_local: local(-1),
                internal: false,
            });
        }
        Template::Escalation => {
            ctx.escalation = Some(EscalationView {
                at_local: local(0),
                after: "2 days".into(),
                reason: "unresolved 2 business days after it was opened".into(),
            });
        }
        Template::Breach => {
            ctx.breach = Some(BreachView {
                deadline: "response".into(),
                deadline_label: "Response".into(),
                due_local: local(-35),
                overdue_by: "35 min".into(),
            });
        }
        Template::CommandRejected => {
            ctx.message = Some(MessageView {
                author: engineer.clone(),
                text: "#staus solved\n#severity 7\nRaj, the fix is deployed.".into(),
                received_local: local(-1),
                internal: false,
            });
            ctx.rejection = Some(RejectionView {
                problems: vec![
                    RejectedCommand {
                        line: 1,
                        text: "#staus solved".into(),
                        problem: "unknown command `#staus`".into(),
                    },
                    RejectedCommand {
                        line: 2,
                        text: "#severity 7".into(),
                        problem: "severity must be 1 to 4".into(),
                    },
                ],
                help: COMMAND_HELP.into(),
            });
        }
    }
    Ok(ctx)
}

/// A context with every section filled: the shape `templates check` compares variable names
/// against.
pub fn full_context(support: &SupportView) -> TemplateContext {
    let mut all = Template::ALL
        .into_iter()
        .filter_map(|t| sample(t, None, support).ok());
    let Some(mut ctx) = all.next() else {
        // Unreachable in practice (sample() only fails for unknown variants), but never a panic.
        return TemplateContext::new(
            TicketView::new(
                0,
                String::new(),
                "",
                Status::InTriage,
                sample_now(),
                DEFAULT_ZONE,
            ),
            SeverityView {
                requested: None,
                assigned: 4,
                given: false,
                downgraded: false,
            },
            PersonView::new(None, "x@example.com"),
            support.clone(),
            DEFAULT_ZONE,
        );
    };
    for other in all {
        ctx.message = ctx.message.or(other.message);
        ctx.notification = ctx.notification.or(other.notification);
        ctx.status_change = ctx.status_change.or(other.status_change);
        ctx.update = ctx.update.or(other.update);
        ctx.reminder = ctx.reminder.or(other.reminder);
        ctx.closing = ctx.closing.or(other.closing);
        ctx.escalation = ctx.escalation.or(other.escalation);
        ctx.breach = ctx.breach.or(other.breach);
        ctx.rejection = ctx.rejection.or(other.rejection);
    }
    ctx.company = Some(sample_company());
    ctx
}

/// The support values samples use when no config is at hand.
pub fn default_support() -> SupportView {
    SupportView {
        address: "support@example.com".into(),
        name: "Support".into(),
        phone: "+1 555 0100".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_a_sample_with_its_sections() {
        let support = default_support();
        for t in Template::ALL {
            for v in variants(t) {
                let ctx = sample(t, Some(v), &support).unwrap_or_else(|e| panic!("{e}"));
                let json = serde_json::to_value(&ctx).unwrap_or_else(|e| panic!("{e}"));
                for s in super::super::context::sections(t) {
                    assert!(!json[s].is_null(), "{t}/{v}: section {s} is empty");
                }
            }
        }
        assert!(sample(Template::Acknowledgement, Some("nope"), &support).is_err());
        assert_eq!(
            sample_now().to_rfc3339(),
            "2026-11-23T16:00:00+00:00",
            "the sample clock"
        );
    }

    #[test]
    fn full_context_has_every_section() {
        let json = serde_json::to_value(full_context(&default_support()))
            .unwrap_or_else(|e| panic!("{e}"));
        for s in super::super::context::SECTIONS {
            assert!(!json[s].is_null(), "{s}");
        }
    }
}
