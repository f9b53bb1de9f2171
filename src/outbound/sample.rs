//! Sample data for every template: what `templates check` renders each template with, what
//! `templates preview NAME --sample` shows, and what the render benchmark uses. The clock is
//! fixed (2026-11-23 16:00 UTC) so previews are the same every time.
//!
//! Each template has one or more sample variants; together they reach every branch of the
//! shipped templates (the acknowledgement's severity given / not given / downgraded, an
//! optional section present and absent, a relay with and without the engineer's HTML).

use chrono::{DateTime, Duration, Utc};

use super::context::{
    AttachmentView, Audience, BreachView, COMMAND_HELP, ClosingView, CompanyView, DEFAULT_ZONE,
    DeadlinesView, DigestView, EscalationView, FailureView, MessageView, NotificationView,
    ParticipantView, PersonView, RejectedCommand, RejectionView, ReminderView, SeverityView,
    StatusChangeView, SupportView, TemplateContext, TicketView, UpdateView, audience, failure_kind,
    format_local, notification_kind, size_label,
};
use super::digest::{DigestRow, DigestScope, digest_context, digest_view};
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

/// The attachment limit of the samples (`staff.max_attachment_size`'s default, 10 MB).
pub const SAMPLE_ATTACHMENT_LIMIT: u64 = 10 * 1024 * 1024;

/// The sample variants of a template; the first is the default of `preview --sample`.
pub fn variants(template: Template) -> &'static [&'static str] {
    match template {
        Template::Acknowledgement => &["given", "not_given", "downgraded", "linked"],
        Template::EngineerNotification => &["new_ticket", "customer_reply", "resolved"],
        Template::Relay => &["html", "text_only"],
        Template::ClosePending | Template::Closed => &["plain", "with_message"],
        Template::DeliveryFailure => &["undeliverable", "requester_bounced"],
        Template::Digest => &["triage", "account_manager"],
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
    if template == Template::Digest {
        return Ok(sample_digest(variant, support));
    }
    // Mail sent by a timer is about an older ticket, opened so that the timer is due now on
    // the Sev 3 business-hours clock (08:00-17:00 Chicago, Thanksgiving 11-26/27 off).
    let created = now
        - match template {
            // Opened Wed 12:30, answered 13:00: 24 open hours later (now) an update is due.
            Template::StatusUpdate => Duration::minutes(7050),
            // Opened Wed 12:25: the 24 h response was due today 09:25.
            Template::Breach => Duration::minutes(7055),
            // Opened Thu 10:00: 2 business days later (now) it escalates.
            Template::CustomerPendingReminder
            | Template::ClosePending
            | Template::Closed
            | Template::Escalation => Duration::days(4),
            _ => Duration::hours(2),
        };
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
    let status = match (template, variant) {
        (Template::EngineerNotification, "customer_reply") => Status::EngineerPending,
        (Template::EngineerNotification, "resolved") => Status::ClosePending,
        _ => match template {
            Template::Acknowledgement | Template::EngineerNotification => Status::InTriage,
            Template::Relay | Template::CustomerPendingReminder => Status::CustomerPending,
            Template::ClosePending => Status::ClosePending,
            Template::Closed => Status::Closed,
            _ => Status::EngineerPending,
        },
    };
    let requester = person("Raj Patel", "raj.patel@globex.test");
    let engineer = person("Sam Engineer", "sam@example.com");
    let account_manager = person("Alex Account", "am@example.com");
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
    // Assigned once an engineer took it; a new ticket is not yet.
    if !matches!(
        (template, variant),
        (Template::Acknowledgement, _) | (Template::EngineerNotification, "new_ticket")
    ) {
        ticket.assignee = Some(engineer.clone());
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
    // Timer mail of an answered ticket: the response is met (no longer shown), the resolution
    // due 3 business days after opening; a solved or closed ticket has met both.
    match template {
        Template::StatusUpdate => {
            ctx.deadlines.response = None;
            ctx.deadlines.resolution = Some(local(150));
            ctx.deadlines.next_update = Some(local(2 * 24 * 60 + 6 * 60));
            ctx.deadlines.escalation = Some(local(-3 * 24 * 60 + 150));
        }
        Template::CustomerPendingReminder | Template::Escalation => {
            ctx.deadlines.response = None;
            ctx.deadlines.resolution = Some(local(24 * 60));
            ctx.deadlines.next_update = None;
            ctx.deadlines.escalation = Some(local(0));
        }
        Template::ClosePending | Template::Closed => {
            ctx.deadlines.response = None;
            ctx.deadlines.resolution = None;
            ctx.deadlines.next_update = None;
        }
        Template::Breach => {
            ctx.deadlines.response = Some(local(-35));
            ctx.deadlines.resolution = Some(local(145));
            ctx.deadlines.escalation = Some(local(-3 * 24 * 60 + 145));
        }
        _ => {}
    }
    ctx.audience = audience(template);
    ctx.recipient = match (template, variant) {
        (Template::EngineerNotification, "resolved") => account_manager.clone(),
        _ => match template {
            Template::CommandRejected => engineer.clone(),
            Template::Escalation => person("Director of Customer Support", "director@example.com"),
            _ if ctx.audience == Audience::Staff => person("Triage", "triage@example.com"),
            _ => requester.clone(),
        },
    };
    let customer_text = "Hello,\n\nsince Monday the invoice export is missing every row after 1,000.\nWe need the full export for month-end closing on Friday.\n\nThanks,\nRaj";
    match template {
        Template::Acknowledgement => {}
        Template::EngineerNotification => {
            let limit = SAMPLE_ATTACHMENT_LIMIT;
            ctx.message = match variant {
                "new_ticket" => Some(MessageView {
                    author: requester.clone(),
                    text: customer_text.into(),
                    html: None,
                    received_local: local(-5),
                    internal: false,
                    attachments: Vec::new(),
                }),
                "customer_reply" => Some(MessageView {
                    author: requester.clone(),
                    text: "The export from this morning is still cut at 1,000 rows. Attached is the log, and the full export for comparison.".into(),
                    html: None,
                    received_local: local(-5),
                    internal: false,
                    attachments: vec![
                        AttachmentView::new("export-job.log", "text/plain", 48_213, limit),
                        AttachmentView::new(
                            "invoices-full-export.csv",
                            "text/csv",
                            24_536_678,
                            limit,
                        ),
                    ],
                }),
                // The account manager hears that the ticket is solved: no customer text.
                _ => None,
            };
            ctx.notification = Some(NotificationView {
                kind: match variant {
                    "customer_reply" => notification_kind::CUSTOMER_REPLY,
                    "resolved" => notification_kind::RESOLVED,
                    _ => notification_kind::NEW_TICKET,
                }
                .into(),
                status_change: (variant == "resolved").then(|| {
                    StatusChangeView::new(
                        Status::EngineerPending,
                        Status::ClosePending,
                        "solved by Sam Engineer",
                    )
                }),
                attachment_limit_label: size_label(limit),
            });
        }
        Template::Relay => {
            // What the sanitiser leaves of the engineer's HTML: structure and emphasis, and the
            // inline image as a reference to its attached part.
            let html = "<p>Hi Raj,</p>\n<p>we found the limit in the export job and <strong>raised it</strong>. Could you</p>\n<ol>\n<li>run the export again, and</li>\n<li>tell us if all <em>4,312</em> rows are there?</li>\n</ol>\n<p>This is what the export should look like:<br><img src=\"cid:rows-chart.1@example.com\" alt=\"rows per export\" width=\"480\"></p>";
            ctx.message = Some(MessageView {
                author: engineer.clone(),
                text: "Hi Raj,\n\nwe found the limit in the export job and raised it. Could you\n\n1. run the export again, and\n2. tell us if all 4,312 rows are there?\n\nThis is what the export should look like:\n[rows per export]".into(),
                html: (variant == "html").then(|| html.into()),
                received_local: local(-3),
                internal: false,
                attachments: if variant == "html" {
                    vec![AttachmentView::new(
                        "rows-chart.png",
                        "image/png",
                        83_114,
                        SAMPLE_ATTACHMENT_LIMIT,
                    )]
                } else {
                    Vec::new()
                },
            });
        }
        Template::InternalNote => {
            ctx.message = Some(MessageView {
                author: engineer.clone(),
                text: "Export job has a hard-coded 1,000 row page size since release 4.2. Fix is in review.".into(),
                html: None,
                received_local: local(-3),
                internal: true,
                attachments: Vec::new(),
            });
        }
        Template::StatusUpdate => {
            ctx.update = Some(UpdateView {
                // The engineer's reply half an hour after opening.
                last_public_local: format_local(created + Duration::minutes(30), zone),
                // Sev 3 runs on business hours: say so, or 5 days of silence read as a broken
                // promise of "every 24 h".
                interval: "24 business hours".into(),
            });
        }
        Template::CustomerPendingReminder => {
            ctx.reminder = Some(ReminderView {
                // The engineer asked on Friday; 2 business days of silence end Tuesday.
                waiting_since_local: local(-3 * 24 * 60),
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
                // 5 business days from now: Thanksgiving and the day after are off.
                auto_close_local: local(9 * 24 * 60),
                business_days: 5,
                closes_after: "5 business days".into(),
                confirm_word: "#close".into(),
                reopen_days: 14,
            });
            if variant == "with_message" {
                ctx.message = Some(engineer_message(
                    &engineer,
                    "Hi Raj,\n\nrelease 4.2.3 with the fix is live: the export has every row again.",
                    local(-2),
                ));
            }
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
                closes_after: "5 business days".into(),
                confirm_word: "#close".into(),
                reopen_days: 14,
            });
            if variant == "with_message" {
                ctx.message = Some(engineer_message(
                    &engineer,
                    "Thanks for confirming, Raj. We added a test so the limit cannot come back.",
                    local(-2),
                ));
            }
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
                html: None,
                received_local: local(-1),
                internal: false,
                attachments: Vec::new(),
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
                html: None,
                received_local: local(-1),
                internal: false,
                attachments: Vec::new(),
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
        // Returned above.
        Template::Digest => {}
        Template::DeliveryFailure => {
            ctx.failure = Some(if variant == "requester_bounced" {
                FailureView {
                    kind: failure_kind::REQUESTER_BOUNCED.into(),
                    recipient: requester.address.clone(),
                    template: String::new(),
                    error: "5.1.1 (mailbox unavailable): 550 5.1.1 <raj.patel@globex.test>: user unknown".into(),
                    message_id: "postdesk.42.acknowledgement.6d0f3e2a91c4b7e5@example.com".into(),
                }
            } else {
                FailureView {
                    kind: failure_kind::UNDELIVERABLE.into(),
                    recipient: requester.address.clone(),
                    template: "relay".into(),
                    error: "550 5.7.1 <raj.patel@globex.test>: message refused: mailbox over quota for 30 days".into(),
                    message_id: "postdesk.42.relay.1b9e44c07a2d5f38@example.com".into(),
                }
            });
        }
    }
    Ok(ctx)
}

/// The digest samples: `triage` has every open ticket (every status, two breaches, one
/// escalation, a subject with markup to escape, a requester of no configured company);
/// `account_manager` the Globex tickets only.
fn sample_digest(variant: &str, support: &SupportView) -> TemplateContext {
    let now = sample_now();
    let zone = DEFAULT_ZONE;
    let h = |hours: i64| Some(now + Duration::hours(hours));
    let sam = Some(("sam@example.com", "Sam Engineer"));
    let dana = Some(("dana@example.com", "Dana Dev"));
    let globex = Some("Globex Corporation");
    let initech = Some("Initech");
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i64,
        &str,
        (&str, Option<&str>),
        Option<&str>,
        Status,
        u8,
        i64,
        Option<(&str, &str)>,
    )> = vec![
        (
            57,
            "Sev-2: Checkout page returns 500 for EU customers",
            ("lena.vogel@initech.test", Some("Lena Vogel")),
            initech,
            Status::InTriage,
            4,
            0,
            None,
        ),
        (
            51,
            "Cannot log in after password reset",
            ("pat.kim@example.org", None),
            None,
            Status::InTriage,
            3,
            -30,
            None,
        ),
        (
            42,
            "SEV 3 Invoice export is missing rows since Monday",
            ("raj.patel@globex.test", Some("Raj Patel")),
            globex,
            Status::EngineerPending,
            3,
            -75,
            sam,
        ),
        (
            48,
            "API rate limit <429> & retries on \"bulk\" import",
            ("mia.wong@globex.test", Some("Mia Wong")),
            globex,
            Status::EngineerPending,
            3,
            -26,
            dana,
        ),
        (
            45,
            "SSO certificate rotation for the staging tenant",
            ("lena.vogel@initech.test", Some("Lena Vogel")),
            initech,
            Status::CustomerPending,
            4,
            -50,
            sam,
        ),
        (
            39,
            "Duplicate emails from the notification service",
            ("raj.patel@globex.test", Some("Raj Patel")),
            globex,
            Status::ClosePending,
            4,
            -146,
            dana,
        ),
    ];
    let rows: Vec<DigestRow> = rows
        .into_iter()
        .map(
            |(
                number,
                subject,
                (requester, requester_name),
                company,
                status,
                severity,
                created,
                assignee,
            )| {
                let created_at = now + Duration::hours(created) - Duration::minutes(40);
                let mut row = DigestRow {
                    number,
                    subject: subject.into(),
                    requester: requester.into(),
                    requester_name: requester_name.map(str::to_string),
                    company: company.map(str::to_string),
                    status,
                    severity,
                    created_at,
                    assignee: assignee.map(|a| a.0.to_string()),
                    assignee_name: assignee.map(|a| a.1.to_string()),
                    response_due_at: None,
                    resolution_due_at: None,
                    update_due_at: None,
                    escalation_due_at: None,
                    first_response_at: None,
                    resolved: status == Status::ClosePending,
                    escalated: false,
                };
                match number {
                    // New: the response is due tomorrow morning.
                    57 => {
                        row.response_due_at = h(23);
                        row.resolution_due_at = h(5 * 24);
                        row.escalation_due_at = h(3 * 24);
                    }
                    // Nobody answered in time.
                    51 => {
                        row.response_due_at = h(-2);
                        row.resolution_due_at = h(2 * 24);
                        row.escalation_due_at = h(24);
                    }
                    // Answered, but unresolved past its escalation and resolution times.
                    42 => {
                        row.first_response_at = h(-70);
                        row.response_due_at = h(-60);
                        row.escalation_due_at = h(-25);
                        row.resolution_due_at = h(-1);
                        row.update_due_at = h(6);
                        row.escalated = true;
                    }
                    48 => {
                        row.first_response_at = h(-24);
                        row.response_due_at = h(-3);
                        row.update_due_at = h(5);
                        row.escalation_due_at = h(22);
                        row.resolution_due_at = h(46);
                    }
                    45 => {
                        row.first_response_at = h(-48);
                        row.response_due_at = h(-10);
                        row.escalation_due_at = h(20);
                        row.resolution_due_at = h(70);
                    }
                    _ => {
                        row.first_response_at = h(-140);
                        row.response_due_at = h(-120);
                    }
                }
                row
            },
        )
        .filter(|r| variant != "account_manager" || r.company.as_deref() == globex)
        .collect();
    let (scope, recipient) = if variant == "account_manager" {
        (
            DigestScope::Customers,
            person("Alex Account", "am@example.com"),
        )
    } else {
        (DigestScope::All, person("Triage", "triage@example.com"))
    };
    let view = digest_view(&rows, scope, now, zone, "#").unwrap_or_else(|| DigestView {
        date_local: String::new(),
        zone: zone.name().into(),
        scope: scope.as_str().into(),
        total: 0,
        breached: 0,
        escalated: 0,
        groups: Vec::new(),
    });
    digest_context(view, recipient, support.clone(), now, zone)
}

/// The engineer's text that came with a command (`#solved`): plain text, no attachments.
fn engineer_message(engineer: &PersonView, text: &str, received_local: String) -> MessageView {
    MessageView {
        author: engineer.clone(),
        text: text.into(),
        html: None,
        received_local,
        internal: false,
        attachments: Vec::new(),
    }
}

/// Every sample of every template and variant merged into one JSON value: the shape
/// `templates check` compares variable names against. An attribute is known when any sample
/// has it, and its fields are known when any sample fills it: a none in one sample (a ticket
/// without assignee, a notification without status change) does not hide them from the check.
pub fn schema(support: &SupportView) -> serde_json::Value {
    let mut out = serde_json::Value::Null;
    for t in Template::ALL {
        for v in variants(t) {
            if let Ok(json) = sample(t, Some(v), support)
                .and_then(|ctx| serde_json::to_value(&ctx).map_err(|e| e.to_string()))
            {
                merge(&mut out, json);
            }
        }
    }
    out
}

/// Fills `into`'s nulls (and empty lists) from `from`, object by object.
fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    use serde_json::Value;
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.is_empty() {
                *a = b;
            }
        }
        (slot, v) => {
            if slot.is_null() {
                *slot = v;
            }
        }
    }
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
            // An optional section is there in one sample and none in another, so that
            // `templates check` renders both branches of its `{% if %}`.
            for s in super::super::context::optional_sections(t) {
                let filled: Vec<bool> = variants(t)
                    .iter()
                    .map(|v| {
                        let ctx = sample(t, Some(v), &support).unwrap_or_else(|e| panic!("{e}"));
                        let json = serde_json::to_value(&ctx).unwrap_or_else(|e| panic!("{e}"));
                        !json[s].is_null()
                    })
                    .collect();
                assert!(
                    filled.contains(&true) && filled.contains(&false),
                    "{t}: optional {s} in {filled:?}"
                );
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
    fn schema_has_every_section_and_nested_option() {
        let json = schema(&default_support());
        for s in super::super::context::SECTIONS {
            assert!(json[s].is_object(), "{s}");
        }
        for (a, b) in [
            ("ticket", "assignee"),
            ("message", "html"),
            ("notification", "status_change"),
            ("company", "slug"),
        ] {
            assert!(json[a][b].is_object() || json[a][b].is_string(), "{a}.{b}");
        }
        assert!(json["message"]["attachments"][0]["size_label"].is_string());
    }
}
