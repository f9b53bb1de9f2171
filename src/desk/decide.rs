//! The decision for one inbound message (SPEC: Severity, Threading (duplicates), Loops).
//!
//! `decide` is pure: the parsed mail, what the store already knows about it (`MailContext`), the
//! policy from config and `now` go in; a `Decision` comes out. The store applies it in one
//! transaction; `postdesk explain` prints it without applying it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::loops;
use super::severity::{DowngradeMap, Severity, SeverityReading};
use super::status::Status;
use crate::mail::parse::one_line;
use crate::mail::{InboundMail, Mailbox, QuarantineReason};

/// The rules from config that decisions depend on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Support addresses, lower-cased; the first one sends.
    pub support_addresses: Vec<String>,
    /// Severity for mail that names none.
    pub default_severity: Severity,
    /// What email may not open and what it becomes.
    pub downgrade: DowngradeMap,
    /// RFC 3834 rate limit: automatic replies per sender per hour.
    pub max_auto_replies_per_hour: u32,
}

/// What the store knows about a message before the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailContext {
    /// Set when a message with this Message-ID is already stored: `Some(ticket)` or `Some(None)`
    /// for a stored message that belongs to no ticket (a bounce).
    pub known_message: Option<Option<i64>>,
    /// Automatic replies queued to this sender in the last hour.
    pub auto_replies_to_sender_last_hour: u32,
}

/// The mail templates postdesk sends (SPEC: Outbound mail). Each is a folder of that name under
/// `templates/`; the variables each one gets are in `outbound::context` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// The acknowledgement of a new ticket (with its not-given and downgraded variants).
    Acknowledgement,
    /// To engineers and triage: a new ticket or a customer reply, answerable by mail.
    EngineerNotification,
    /// An engineer's public reply, relayed to the requester and watchers from the support address.
    Relay,
    /// An internal note, to staff and the account manager only.
    InternalNote,
    /// The periodic status update while a ticket is open and not waiting on the customer.
    StatusUpdate,
    /// Reminder to a customer who has not answered a ticket waiting on them.
    CustomerPendingReminder,
    /// The ticket is solved and will close unless the customer answers.
    ClosePending,
    /// The ticket is closed.
    Closed,
    /// A closed ticket was reopened by the customer's reply.
    Reopened,
    /// To the escalation contact and triage: a ticket passed its escalation time.
    Escalation,
    /// To triage: a ticket breached its response or resolution deadline.
    Breach,
    /// To an engineer: their mail held an unknown or malformed command; nothing was relayed.
    CommandRejected,
}

impl Template {
    /// Every template, in the order the README lists them.
    pub const ALL: [Template; 12] = [
        Template::Acknowledgement,
        Template::EngineerNotification,
        Template::Relay,
        Template::InternalNote,
        Template::StatusUpdate,
        Template::CustomerPendingReminder,
        Template::ClosePending,
        Template::Closed,
        Template::Reopened,
        Template::Escalation,
        Template::Breach,
        Template::CommandRejected,
    ];

    /// The template's directory name under `templates/`.
    pub fn name(self) -> &'static str {
        match self {
            Template::Acknowledgement => "acknowledgement",
            Template::EngineerNotification => "engineer_notification",
            Template::Relay => "relay",
            Template::InternalNote => "internal_note",
            Template::StatusUpdate => "status_update",
            Template::CustomerPendingReminder => "customer_pending_reminder",
            Template::ClosePending => "close_pending",
            Template::Closed => "closed",
            Template::Reopened => "reopened",
            Template::Escalation => "escalation",
            Template::Breach => "breach",
            Template::CommandRejected => "command_rejected",
        }
    }

    /// The template with this directory name (`-` and `_` are the same, case is ignored).
    pub fn from_name(name: &str) -> Option<Template> {
        let norm = name.trim().to_ascii_lowercase().replace('-', "_");
        Template::ALL.into_iter().find(|t| t.name() == norm)
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Template {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Template::ALL.iter().map(|t| t.name()).collect();
            format!(
                "unknown template `{s}`: expected one of {}",
                names.join(", ")
            )
        })
    }
}

/// One mail to queue in the outbox once the ticket exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMail {
    /// Which template renders it.
    pub template: Template,
    /// The recipient.
    pub to: Mailbox,
}

/// A ticket to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewTicket {
    /// The subject on one line, as the customer wrote it.
    pub subject: String,
    /// The first sender.
    pub requester: Mailbox,
    /// Cc addresses of the first message, without support addresses and the requester.
    pub watchers: Vec<Mailbox>,
    /// Always `in_triage` for a ticket opened by email.
    pub status: Status,
    /// Requested and assigned severity.
    pub severity: SeverityReading,
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open a ticket.
    NewTicket(NewTicket),
    /// Already stored: nothing changes.
    Duplicate { ticket: Option<i64> },
    /// A delivery-status report: stored, no ticket, no reply.
    Bounce,
    /// Kept whole in quarantine with the reason.
    Quarantine(QuarantineReason),
}

impl Action {
    /// The name `explain --json` prints.
    pub fn name(&self) -> &'static str {
        match self {
            Action::NewTicket(_) => "new_ticket",
            Action::Duplicate { .. } => "duplicate",
            Action::Bounce => "bounce",
            Action::Quarantine(_) => "quarantine",
        }
    }
}

/// The outcome of `decide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The severity reading of the subject (none for quarantined mail).
    pub severity: Option<SeverityReading>,
    /// Whether the sender gets an acknowledgement.
    pub acknowledge: bool,
    /// Why, in words for admins.
    pub reason: String,
    /// Mails to queue with the change.
    pub outbound: Vec<PlannedMail>,
    /// When the decision was made.
    pub at: DateTime<Utc>,
}

/// Decides for a message that parsed, or for one that parsing sent to quarantine.
pub fn decide_parsed(
    parsed: &Result<InboundMail, QuarantineReason>,
    ctx: &MailContext,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    match parsed {
        Ok(mail) => decide(mail, ctx, policy, now),
        Err(reason) => Decision {
            reason: format!("quarantined: {reason}"),
            action: Action::Quarantine(reason.clone()),
            severity: None,
            acknowledge: false,
            outbound: Vec::new(),
            at: now,
        },
    }
}

/// Decides what one parsed inbound message does.
pub fn decide(
    mail: &InboundMail,
    ctx: &MailContext,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    let severity =
        SeverityReading::from_subject(&mail.subject, policy.default_severity, &policy.downgrade);
    let quiet = |action: Action, reason: String| Decision {
        action,
        severity: Some(severity),
        acknowledge: false,
        reason,
        outbound: Vec::new(),
        at: now,
    };

    if let Some(ticket) = ctx.known_message {
        let reason = match ticket {
            Some(n) => format!(
                "Message-ID <{}> is already stored on ticket #{n}",
                mail.message_id
            ),
            None => format!("Message-ID <{}> is already stored", mail.message_id),
        };
        return quiet(Action::Duplicate { ticket }, reason);
    }
    if loops::is_bounce(mail) {
        return quiet(
            Action::Bounce,
            format!(
                "delivery-status report from {}: stored without a ticket, no reply",
                mail.from.address
            ),
        );
    }

    let no_reply = loops::no_reply_reason(
        mail,
        &policy.support_addresses,
        ctx.auto_replies_to_sender_last_hour,
        policy.max_auto_replies_per_hour,
    );
    let ticket = NewTicket {
        subject: ticket_subject(&mail.subject),
        requester: mail.from.clone(),
        watchers: watchers(mail, &policy.support_addresses),
        status: Status::InTriage,
        severity,
    };
    let severity_words = severity_words(&severity);
    let (acknowledge, outbound, reason) = match no_reply {
        Some(why) => (
            false,
            Vec::new(),
            format!("new ticket, {severity_words}; no acknowledgement: {why}"),
        ),
        None => (
            true,
            vec![PlannedMail {
                template: Template::Acknowledgement,
                to: mail.from.clone(),
            }],
            format!(
                "new ticket, {severity_words}; acknowledgement to {}",
                mail.from.address
            ),
        ),
    };
    Decision {
        action: Action::NewTicket(ticket),
        severity: Some(severity),
        acknowledge,
        reason,
        outbound,
        at: now,
    }
}

fn severity_words(s: &SeverityReading) -> String {
    match s.requested {
        None => format!("severity not given, default {}", s.assigned),
        Some(r) if s.downgraded => format!(
            "{r} requested, downgraded to {} (email cannot open {r})",
            s.assigned
        ),
        Some(r) => format!("{r} requested"),
    }
}

fn ticket_subject(subject: &str) -> String {
    let line = one_line(subject);
    if line.is_empty() {
        "(no subject)".to_string()
    } else {
        line
    }
}

fn watchers(mail: &InboundMail, support: &[String]) -> Vec<Mailbox> {
    let requester = mail.from.key();
    let mut seen = std::collections::HashSet::new();
    mail.cc
        .iter()
        .filter(|m| {
            let key = m.key();
            key != requester && !support.contains(&key) && seen.insert(key)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::AutoSignals;
    use Severity::*;

    fn policy() -> Policy {
        Policy {
            support_addresses: vec!["support@example.com".into()],
            default_severity: Sev4,
            downgrade: DowngradeMap::default(),
            max_auto_replies_per_hour: 10,
        }
    }

    fn mail(subject: &str) -> InboundMail {
        InboundMail {
            message_id: "m1@acme.test".into(),
            message_id_synthesised: false,
            from: Mailbox {
                name: Some("Jane".into()),
                address: "jane@acme.test".into(),
            },
            to: vec![Mailbox {
                name: None,
                address: "support@example.com".into(),
            }],
            cc: vec![],
            subject: subject.into(),
            in_reply_to: vec![],
            references: vec![],
            auto: AutoSignals::default(),
            text: "help".into(),
            content_language: None,
            size: 100,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn new_ticket_severity_and_acknowledgement() {
        let cases = [
            (
                "sev3_is_taken_as_asked",
                "SEV 3 reports slow",
                Some(Sev3),
                Sev3,
                false,
            ),
            (
                "sev1_is_downgraded_to_sev3",
                "[SEV 1] site down",
                Some(Sev1),
                Sev3,
                true,
            ),
            (
                "sev2_is_downgraded_to_sev4",
                "Sev-2: login broken",
                Some(Sev2),
                Sev4,
                true,
            ),
            (
                "no_severity_gets_default",
                "Question about invoices",
                None,
                Sev4,
                false,
            ),
        ];
        for (name, subject, requested, assigned, downgraded) in cases {
            let d = decide(&mail(subject), &MailContext::default(), &policy(), now());
            let Action::NewTicket(t) = &d.action else {
                panic!("{name}: {:?}", d.action)
            };
            assert_eq!(t.status, Status::InTriage, "{name}");
            assert_eq!(t.severity.requested, requested, "{name}");
            assert_eq!(t.severity.assigned, assigned, "{name}");
            assert_eq!(t.severity.downgraded, downgraded, "{name}");
            assert_eq!(t.severity.given, requested.is_some(), "{name}");
            assert!(d.acknowledge, "{name}");
            assert_eq!(d.outbound.len(), 1, "{name}");
            assert_eq!(d.outbound[0].template, Template::Acknowledgement, "{name}");
            assert_eq!(d.outbound[0].to.address, "jane@acme.test", "{name}");
        }
    }

    #[test]
    fn same_message_id_again_is_a_duplicate_without_mail() {
        let ctx = MailContext {
            known_message: Some(Some(7)),
            ..MailContext::default()
        };
        let d = decide(&mail("SEV 3 x"), &ctx, &policy(), now());
        assert_eq!(d.action, Action::Duplicate { ticket: Some(7) });
        assert!(!d.acknowledge && d.outbound.is_empty());
        assert!(d.reason.contains("#7"));
    }

    #[test]
    fn auto_reply_opens_ticket_without_acknowledgement() {
        let mut m = mail("Automatic reply: SEV 3 x");
        m.auto.auto_submitted = Some("auto-replied".into());
        let d = decide(&m, &MailContext::default(), &policy(), now());
        assert!(matches!(d.action, Action::NewTicket(_)));
        assert!(!d.acknowledge && d.outbound.is_empty());
        assert!(d.reason.contains("Auto-Submitted"), "{}", d.reason);
    }

    #[test]
    fn bounce_is_stored_without_ticket_or_reply() {
        let mut m = mail("Undelivered Mail Returned to Sender");
        m.from.address = "MAILER-DAEMON@mx.acme.test".into();
        m.auto.report_type = Some("delivery-status".into());
        let d = decide(&m, &MailContext::default(), &policy(), now());
        assert_eq!(d.action, Action::Bounce);
        assert!(!d.acknowledge && d.outbound.is_empty());
    }

    #[test]
    fn rate_limit_withholds_acknowledgement() {
        let ctx = MailContext {
            auto_replies_to_sender_last_hour: 10,
            ..MailContext::default()
        };
        let d = decide(&mail("SEV 3 again"), &ctx, &policy(), now());
        assert!(matches!(d.action, Action::NewTicket(_)));
        assert!(!d.acknowledge);
        assert!(d.reason.contains("rate limit"));
    }

    #[test]
    fn watchers_are_cc_without_support_and_requester() {
        let mut m = mail("SEV 4 x");
        let mb = |a: &str| Mailbox {
            name: None,
            address: a.into(),
        };
        m.cc = vec![
            mb("bob@acme.test"),
            mb("SUPPORT@example.com"),
            mb("jane@acme.test"),
            mb("Bob@acme.test"),
            mb("carol@globex.test"),
        ];
        let d = decide(&m, &MailContext::default(), &policy(), now());
        let Action::NewTicket(t) = d.action else {
            panic!("not a ticket")
        };
        let w: Vec<_> = t.watchers.iter().map(|w| w.address.as_str()).collect();
        assert_eq!(w, vec!["bob@acme.test", "carol@globex.test"]);
    }

    #[test]
    fn subject_is_one_line_and_never_empty() {
        let d = decide(
            &mail("SEV 3 a\r\nBcc: x@evil.test"),
            &MailContext::default(),
            &policy(),
            now(),
        );
        let Action::NewTicket(t) = d.action else {
            panic!("not a ticket")
        };
        assert_eq!(t.subject, "SEV 3 a Bcc: x@evil.test");
        let d = decide(&mail("  "), &MailContext::default(), &policy(), now());
        let Action::NewTicket(t) = d.action else {
            panic!("not a ticket")
        };
        assert_eq!(t.subject, "(no subject)");
    }

    #[test]
    fn template_names_round_trip() {
        for t in Template::ALL {
            assert_eq!(Template::from_name(t.name()), Some(t));
            assert_eq!(t.name().parse::<Template>().ok(), Some(t));
            assert_eq!(
                serde_json::to_value(t).ok(),
                Some(serde_json::Value::String(t.name().into()))
            );
        }
        assert_eq!(
            Template::from_name("Command-Rejected"),
            Some(Template::CommandRejected)
        );
        assert!("acknowledgment".parse::<Template>().is_err());
    }

    #[test]
    fn quarantine_carries_reason() {
        let parsed = Err(QuarantineReason::NoSender {
            detail: "no From, Sender or Reply-To header".into(),
        });
        let d = decide_parsed(&parsed, &MailContext::default(), &policy(), now());
        assert_eq!(d.action.name(), "quarantine");
        assert!(d.severity.is_none() && !d.acknowledge);
        assert!(d.reason.contains("no usable sender"));
    }
}
