//! The values templates get (SPEC: Outbound mail). One shared context: the common part (ticket,
//! severity, requester, recipient, participants, company, support desk, deadlines) is filled for
//! every template; the sections only some templates use (`message`, `status_change`, ...) are none
//! elsewhere. [`sections`] says which template gets which section, [`optional_sections`] which
//! it may get (tested with `{% if %}`), and `templates check` rejects a template that uses a
//! variable it does not get. The README lists them per template.
//!
//! Times are formatted here, in the customer's time zone, so that templates print strings and
//! never do date arithmetic.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::config::Customer;
use crate::desk::decide::Template;
use crate::desk::{SeverityReading, Status};
use crate::mail::Mailbox;

/// The zone deadlines are shown in until per-customer calendars exist: the business-hours zone
/// of the severity policy.
pub const DEFAULT_ZONE: Tz = chrono_tz::America::Chicago;

/// How times are shown to people: `2026-11-23 10:00 CST` (no weekday or month names, so that
/// every language can use it as it is).
pub fn format_local(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// Who a template writes to: the customer side or staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Requester and watchers.
    Customer,
    /// Engineers, triage, escalation contacts, account managers.
    Staff,
}

/// Who each template writes to.
pub fn audience(template: Template) -> Audience {
    match template {
        Template::Acknowledgement
        | Template::Relay
        | Template::StatusUpdate
        | Template::CustomerPendingReminder
        | Template::ClosePending
        | Template::Closed
        | Template::Reopened => Audience::Customer,
        Template::EngineerNotification
        | Template::InternalNote
        | Template::Escalation
        | Template::Breach
        | Template::CommandRejected
        | Template::DeliveryFailure
        | Template::Digest => Audience::Staff,
    }
}

/// The variables every template gets.
pub const COMMON: [&str; 10] = [
    "audience",
    "language",
    "ticket",
    "severity",
    "requester",
    "recipient",
    "participants",
    "company",
    "support",
    "deadlines",
];

/// The optional sections a template gets on top of [`COMMON`] (always filled for it).
pub fn sections(template: Template) -> &'static [&'static str] {
    match template {
        Template::Acknowledgement => &[],
        Template::EngineerNotification => &["notification"],
        Template::Relay => &["message"],
        Template::InternalNote => &["message"],
        Template::StatusUpdate => &["update"],
        Template::CustomerPendingReminder => &["reminder"],
        Template::ClosePending => &["status_change", "closing"],
        Template::Closed => &["status_change", "closing"],
        Template::Reopened => &["status_change", "message"],
        Template::Escalation => &["escalation"],
        Template::Breach => &["breach"],
        Template::CommandRejected => &["message", "rejection"],
        Template::DeliveryFailure => &["failure"],
        Template::Digest => &["digest"],
    }
}

/// The sections a template may get on top of [`sections`]: none when there is nothing to show,
/// so the template tests them first (`{% if message %}`). The notification of a resolved ticket
/// has no customer message; a close-pending or closed notice carries the engineer's text only
/// when they wrote one with `#solved`.
pub fn optional_sections(template: Template) -> &'static [&'static str] {
    match template {
        Template::EngineerNotification | Template::ClosePending | Template::Closed => &["message"],
        _ => &[],
    }
}

/// Every optional section name.
pub const SECTIONS: [&str; 11] = [
    "message",
    "notification",
    "status_change",
    "update",
    "reminder",
    "closing",
    "escalation",
    "breach",
    "rejection",
    "failure",
    "digest",
];

/// Everything a template can see. Sections a template does not get are `None` (null).
#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    // Fields in the order templates use them most: minijinja finds a variable by scanning
    // the fields in order, at every use.
    /// The ticket.
    pub ticket: TicketView,
    /// Requested and assigned severity.
    pub severity: SeverityView,
    /// The support desk.
    pub support: SupportView,
    /// `customer` or `staff`: who this mail is for.
    pub audience: Audience,
    /// Who this copy of the mail goes to.
    pub recipient: PersonView,
    /// The customer who opened the ticket.
    pub requester: PersonView,
    /// SLA deadlines in the customer's time zone (none until the SLA engine sets them).
    pub deadlines: DeadlinesView,
    /// The requester's company, when its domain is configured under `[[customers]]`.
    pub company: Option<CompanyView>,
    /// The language the mail is written in (`en` for the defaults, else the override's code).
    pub language: String,
    /// Requester, watchers, staff and account manager.
    pub participants: Vec<ParticipantView>,
    /// A message: the customer's (engineer notification), the engineer's (relay, note,
    /// rejection, the text that came with `#solved` in close pending and closed) or the
    /// reopening reply.
    pub message: Option<MessageView>,
    /// Why engineers are notified.
    pub notification: Option<NotificationView>,
    /// A status change (close pending, closed, reopened).
    pub status_change: Option<StatusChangeView>,
    /// The periodic status update.
    pub update: Option<UpdateView>,
    /// The customer-pending reminder.
    pub reminder: Option<ReminderView>,
    /// Closing (close pending and closed notices).
    pub closing: Option<ClosingView>,
    /// Escalation.
    pub escalation: Option<EscalationView>,
    /// A breached deadline.
    pub breach: Option<BreachView>,
    /// Rejected engineer commands.
    pub rejection: Option<RejectionView>,
    /// A mail that could not be delivered, or the requester's address bouncing.
    pub failure: Option<FailureView>,
    /// The daily digest of open tickets (see [`DigestView`]).
    pub digest: Option<DigestView>,
}

/// The ticket as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    /// Number.
    pub number: i64,
    /// `[#42]`.
    pub tag: String,
    /// Subject on one line, as the customer wrote it.
    pub subject: String,
    /// `in_triage`.
    pub status: &'static str,
    /// `In Triage`.
    pub status_label: &'static str,
    /// Creation time, RFC 3339 in UTC.
    pub created_at: String,
    /// Creation time in the customer's time zone (`2026-11-23 10:00 CST`).
    pub created_local: String,
    /// The tag of the closed ticket this one continues (`[#41]`), when it does.
    pub linked_tag: Option<String>,
    /// The engineer the ticket is assigned to (none: unassigned).
    pub assignee: Option<PersonView>,
}

/// A person as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct PersonView {
    /// Display name, if any.
    pub name: Option<String>,
    /// Address.
    pub address: String,
    /// The name, else the address: what a greeting uses.
    pub display: String,
}

impl PersonView {
    /// From a mailbox.
    pub fn from_mailbox(m: &Mailbox) -> PersonView {
        PersonView::new(m.name.as_deref(), &m.address)
    }

    /// From a name and an address.
    pub fn new(name: Option<&str>, address: &str) -> PersonView {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        PersonView {
            display: name.unwrap_or(address).to_string(),
            name: name.map(str::to_string),
            address: address.to_string(),
        }
    }
}

/// A participant of the ticket.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantView {
    /// Display name, if any.
    pub name: Option<String>,
    /// Address.
    pub address: String,
    /// The name, else the address.
    pub display: String,
    /// `requester`, `watcher`, `staff` or `account_manager`.
    pub role: String,
}

impl ParticipantView {
    /// A participant with a role.
    pub fn new(name: Option<&str>, address: &str, role: &str) -> ParticipantView {
        let p = PersonView::new(name, address);
        ParticipantView {
            name: p.name,
            address: p.address,
            display: p.display,
            role: role.to_string(),
        }
    }
}

/// Severity as templates and `explain` see it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SeverityView {
    /// What the subject asked for (none when not given).
    pub requested: Option<u8>,
    /// What the ticket has.
    pub assigned: u8,
    /// False when the subject named none.
    pub given: bool,
    /// True when email asked for Sev 1/2.
    pub downgraded: bool,
}

impl From<&SeverityReading> for SeverityView {
    fn from(s: &SeverityReading) -> Self {
        SeverityView {
            requested: s.requested.map(|r| r.number()),
            assigned: s.assigned.number(),
            given: s.given,
            downgraded: s.downgraded,
        }
    }
}

/// The requester's company.
#[derive(Debug, Clone, Serialize)]
pub struct CompanyView {
    /// Company name from config.
    pub name: String,
    /// Its mail domain.
    pub domain: String,
    /// The folder name of its template overrides (`templates/companies/<slug>/`).
    pub slug: String,
}

impl From<&Customer> for CompanyView {
    fn from(c: &Customer) -> Self {
        CompanyView {
            name: c.company.clone(),
            domain: c.domain.clone(),
            slug: company_slug(&c.company),
        }
    }
}

/// The folder name for a company: lower-case ASCII letters and digits, other runs become `-`
/// (`Globex Corporation` -> `globex-corporation`).
pub fn company_slug(company: &str) -> String {
    let mut out = String::with_capacity(company.len());
    for c in company.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The desk as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct SupportView {
    /// Sending address.
    pub address: String,
    /// Display name.
    pub name: String,
    /// Phone for Sev 1/2.
    pub phone: String,
}

/// SLA deadlines, formatted in the customer's time zone. Each is none while unknown: the
/// acknowledgement of this build has none, since the SLA engine comes later.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeadlinesView {
    /// The zone the times are in (`America/Chicago`).
    pub zone: String,
    /// First public engineer reply due.
    pub response: Option<String>,
    /// Resolution due.
    pub resolution: Option<String>,
    /// Next status update due.
    pub next_update: Option<String>,
    /// Escalation time.
    pub escalation: Option<String>,
}

impl DeadlinesView {
    /// No deadlines known yet, in `zone`.
    pub fn unknown(zone: Tz) -> DeadlinesView {
        DeadlinesView {
            zone: zone.name().to_string(),
            ..DeadlinesView::default()
        }
    }
}

/// A message on the ticket.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    /// Who wrote it. Templates to customers show `author.name` only: an engineer's address
    /// never goes to the customer.
    pub author: PersonView,
    /// Its new text (quotes and signature stripped).
    pub text: String,
    /// The engineer's formatting as an HTML fragment, already sanitised (no scripts, styles
    /// that reach outside, remote content or event handlers; inline images as `cid:`
    /// references to attached parts), so HTML templates print it with `| safe`. None: the
    /// mail had no HTML part, and templates show `text` escaped.
    pub html: Option<String>,
    /// When it arrived, in the customer's time zone.
    pub received_local: String,
    /// True for internal notes (never sent to the customer).
    pub internal: bool,
    /// Its attachments, in the order of the mail.
    pub attachments: Vec<AttachmentView>,
}

/// An attachment of a message.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    /// File name as the sender gave it (a customer value: escaped in HTML like any other).
    pub filename: String,
    /// MIME type (`application/pdf`).
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// The size for people (`1.2 MB`).
    pub size_label: String,
    /// True when it is attached to this mail; false when it is over the limit
    /// (`staff.max_attachment_size`) and stored on the ticket only.
    pub attached: bool,
}

impl AttachmentView {
    /// An attachment of `size` bytes, attached when it is within `limit` bytes.
    pub fn new(filename: &str, content_type: &str, size: u64, limit: u64) -> AttachmentView {
        AttachmentView {
            filename: filename.to_string(),
            content_type: content_type.to_string(),
            size,
            size_label: size_label(size),
            attached: size <= limit,
        }
    }
}

/// A size for people, in binary units as mail clients show them: `512 bytes`, `1.2 KB`,
/// `3.4 MB`, `10 MB` (one decimal below 10, none from 10 on).
pub fn size_label(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KB", "MB", "GB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // Rounding may reach the next unit's threshold (1023.96 KB is shown as 1024 KB): fine.
    if value < 9.95 {
        let s = format!("{value:.1}");
        let s = s.strip_suffix(".0").unwrap_or(&s);
        format!("{s} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Why engineers (or an account manager) get a notification: [`NotificationView::kind`].
pub mod notification_kind {
    /// A new ticket (to engineers and triage, and the account manager of the customer).
    pub const NEW_TICKET: &str = "new_ticket";
    /// The customer wrote on the ticket (to engineers and triage).
    pub const CUSTOMER_REPLY: &str = "customer_reply";
    /// To the account manager: the ticket reached close pending or closed.
    pub const RESOLVED: &str = "resolved";
}

/// Why engineers get a notification.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    /// `new_ticket`, `customer_reply` or `resolved` (see [`notification_kind`]).
    pub kind: String,
    /// For `resolved`: the change to close pending or closed, and why. None otherwise.
    pub status_change: Option<StatusChangeView>,
    /// The largest attachment sent along (`staff.max_attachment_size`, `10 MB`); larger ones
    /// are listed as stored on the ticket.
    pub attachment_limit_label: String,
}

/// A status change.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChangeView {
    /// Status before (`customer_pending`).
    pub from: String,
    /// Its label (`Customer Pending`).
    pub from_label: String,
    /// Status after.
    pub to: String,
    /// Its label.
    pub to_label: String,
    /// Why, in words (`solved by Sam Engineer`, `no reply for 5 business days`).
    pub reason: String,
}

impl StatusChangeView {
    /// A change between two statuses.
    pub fn new(from: Status, to: Status, reason: &str) -> StatusChangeView {
        StatusChangeView {
            from: from.as_str().into(),
            from_label: from.label().into(),
            to: to.as_str().into(),
            to_label: to.label().into(),
            reason: reason.into(),
        }
    }
}

/// The periodic status update.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateView {
    /// When the last public message went out, in the customer's time zone.
    pub last_public_local: String,
    /// The update interval of the ticket's severity, naming its clock: `1 h` on a 24x7 clock,
    /// `24 business hours` on business hours (the customer reads a bare `24 h` as wall time,
    /// and a weekend makes that look broken).
    pub interval: String,
}

/// The customer-pending reminder.
#[derive(Debug, Clone, Serialize)]
pub struct ReminderView {
    /// Since when the ticket waits on the customer.
    pub waiting_since_local: String,
    /// When it moves to close pending if nobody answers.
    pub close_pending_local: String,
}

/// Closing: close-pending and closed notices.
#[derive(Debug, Clone, Serialize)]
pub struct ClosingView {
    /// When a close-pending ticket closes by itself (customer's time zone).
    pub auto_close_local: String,
    /// Business days a ticket stays close pending (`statuses.auto_close_after` in days; 0 when
    /// it is set in open hours).
    pub business_days: u32,
    /// How long a ticket stays close pending, in words (`5 business days`, `40 h of business
    /// hours`).
    pub closes_after: String,
    /// What the customer writes on its own line to close now (`#close`).
    pub confirm_word: String,
    /// How long a closed ticket can be reopened by a reply, in days.
    pub reopen_days: u32,
}

/// Escalation of a ticket.
#[derive(Debug, Clone, Serialize)]
pub struct EscalationView {
    /// When it escalated (customer's time zone).
    pub at_local: String,
    /// The escalation time of the severity (`2 days`).
    pub after: String,
    /// Why, in words.
    pub reason: String,
}

/// A breached deadline.
#[derive(Debug, Clone, Serialize)]
pub struct BreachView {
    /// `response` or `resolution`.
    pub deadline: String,
    /// `Response` or `Resolution`.
    pub deadline_label: String,
    /// When it was due (customer's time zone).
    pub due_local: String,
    /// How late, in words (`35 min`).
    pub overdue_by: String,
}

/// An engineer mail whose commands were rejected.
#[derive(Debug, Clone, Serialize)]
pub struct RejectionView {
    /// Each rejected command line.
    pub problems: Vec<RejectedCommand>,
    /// The accepted commands, one per line, for the reply.
    pub help: String,
}

/// One rejected command line.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedCommand {
    /// Line number in the engineer's message.
    pub line: u32,
    /// The line as written.
    pub text: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What [`FailureView::kind`] says.
pub mod failure_kind {
    /// A mail postdesk sent was refused for good (or retried too often).
    pub const UNDELIVERABLE: &str = "undeliverable";
    /// A bounce says the requester's address fails; the ticket is flagged.
    pub const REQUESTER_BOUNCED: &str = "requester_bounced";
}

/// A delivery failure, for the notice to triage owners (and the assignee). It may concern no
/// ticket: then `ticket.number` is 0 (see [`TicketView::none`]) and templates leave the ticket
/// out (`{% if ticket.number %}`).
#[derive(Debug, Clone, Serialize)]
pub struct FailureView {
    /// `undeliverable` or `requester_bounced` (see [`failure_kind`]).
    pub kind: String,
    /// The address that failed.
    pub recipient: String,
    /// The template of the mail that failed (`relay`); empty for a bounce.
    pub template: String,
    /// The error: the server's answer, or the bounce's status and diagnostic.
    pub error: String,
    /// The Message-ID of the mail that failed (without `<>`).
    pub message_id: String,
}

/// The daily digest (SPEC: SLA): the open tickets of one recipient, by status. A digest concerns
/// no single ticket: its context's `ticket` is [`TicketView::none`] and the `digest` template
/// uses no `ticket.*`. Built by [`crate::outbound::digest::digest_view`], which returns none when
/// nothing is open (nothing is sent then).
#[derive(Debug, Clone, Serialize)]
pub struct DigestView {
    /// The digest's day in the digest calendar's zone (`2026-11-30`).
    pub date_local: String,
    /// That zone (`America/Chicago`); every time below is in it.
    pub zone: String,
    /// `all` (triage owners: every open ticket) or `customers` (an account manager: their
    /// customers' open tickets).
    pub scope: String,
    /// Open tickets in the digest.
    pub total: usize,
    /// How many of them breached their response or resolution deadline.
    pub breached: usize,
    /// How many of them are escalated.
    pub escalated: usize,
    /// The tickets by status, in the order of the statuses (in_triage, engineer_pending,
    /// customer_pending, close_pending); a status without tickets has no group.
    pub groups: Vec<DigestGroup>,
}

/// The digest's tickets of one status.
#[derive(Debug, Clone, Serialize)]
pub struct DigestGroup {
    /// `in_triage`.
    pub status: String,
    /// `In Triage`.
    pub status_label: String,
    /// Its tickets, oldest first.
    pub tickets: Vec<DigestTicket>,
}

/// One ticket of the digest.
#[derive(Debug, Clone, Serialize)]
pub struct DigestTicket {
    /// Number.
    pub number: i64,
    /// `[#42]`.
    pub tag: String,
    /// Subject on one line, as the customer wrote it.
    pub subject: String,
    /// The customer who opened it.
    pub requester: PersonView,
    /// The requester's company from `[[customers]]`, if configured.
    pub company: Option<String>,
    /// Assigned severity, 1-4.
    pub severity: u8,
    /// Time since it was opened, wall clock (`45 min`, `5 h`, `1 day`, `3 days`).
    pub age: String,
    /// When it was opened (`2026-11-23 10:00 CST`).
    pub created_local: String,
    /// The engineer it is assigned to (none: unassigned).
    pub assignee: Option<PersonView>,
    /// The next deadline still ahead: `response`, `resolution`, `escalation` or `update`
    /// (none: no deadline ahead).
    pub next_due_kind: Option<String>,
    /// When it is due.
    pub next_due_local: Option<String>,
    /// The deadlines it missed: `response`, `resolution` (empty: none).
    pub breaches: Vec<String>,
    /// True when it passed its escalation time and was escalated.
    pub escalated: bool,
}

/// The accepted engineer commands (SPEC: Engineers by mail), for rejection mails.
pub const COMMAND_HELP: &str = "#status <in_triage|engineer_pending|customer_pending|close_pending|closed>\n#severity <1-4>\n#assign <me|address>\n#note\n#solved";

impl TemplateContext {
    /// The common part for a ticket, written to the requester in English with no deadlines
    /// known; callers set the recipient, language, company, deadlines and sections they have.
    pub fn new(
        ticket: TicketView,
        severity: SeverityView,
        requester: PersonView,
        support: SupportView,
        zone: Tz,
    ) -> TemplateContext {
        TemplateContext {
            audience: Audience::Customer,
            language: "en".into(),
            participants: vec![ParticipantView::new(
                requester.name.as_deref(),
                &requester.address,
                "requester",
            )],
            recipient: requester.clone(),
            requester,
            ticket,
            severity,
            company: None,
            support,
            deadlines: DeadlinesView::unknown(zone),
            message: None,
            notification: None,
            status_change: None,
            update: None,
            reminder: None,
            closing: None,
            escalation: None,
            breach: None,
            rejection: None,
            failure: None,
            digest: None,
        }
    }

    /// The common part of a mail about no single ticket (number 0, see [`TicketView::none`]),
    /// with a placeholder severity the templates do not show; `requester` is its addressee.
    pub fn without_ticket(
        requester: PersonView,
        support: SupportView,
        now: DateTime<Utc>,
        zone: Tz,
    ) -> TemplateContext {
        TemplateContext::new(
            TicketView::none(now, zone),
            SeverityView {
                requested: None,
                assigned: 4,
                given: false,
                downgraded: false,
            },
            requester,
            support,
            zone,
        )
    }
}

impl TicketView {
    /// A ticket's view; `created_local` is in `zone`.
    pub fn new(
        number: i64,
        tag: String,
        subject: &str,
        status: Status,
        created_at: DateTime<Utc>,
        zone: Tz,
    ) -> TicketView {
        TicketView {
            number,
            tag,
            subject: subject.to_string(),
            status: status.as_str(),
            status_label: status.label(),
            created_at: created_at.to_rfc3339(),
            created_local: format_local(created_at, zone),
            linked_tag: None,
            assignee: None,
        }
    }

    /// Number 0: a mail that concerns no ticket (a delivery failure of a mail without one).
    /// Tag and subject are empty; templates test `{% if ticket.number %}`.
    pub fn none(at: DateTime<Utc>, zone: Tz) -> TicketView {
        TicketView::new(0, String::new(), "", Status::InTriage, at, zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_slugs() {
        for (name, slug) in [
            ("Globex Corporation", "globex-corporation"),
            ("  ACME, Inc. ", "acme-inc"),
            ("Müller & Söhne GmbH", "m-ller-s-hne-gmbh"),
            ("x", "x"),
        ] {
            assert_eq!(company_slug(name), slug, "{name}");
        }
    }

    #[test]
    fn local_times_carry_the_zone() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T16:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format_local(at, DEFAULT_ZONE), "2026-11-23 10:00 CST");
        assert_eq!(
            format_local(at, chrono_tz::Europe::Berlin),
            "2026-11-23 17:00 CET"
        );
    }

    #[test]
    fn every_template_has_an_audience_and_known_sections() {
        for t in Template::ALL {
            let _ = audience(t);
            for s in sections(t) {
                assert!(SECTIONS.contains(s), "{t}: {s}");
            }
            for s in optional_sections(t) {
                assert!(SECTIONS.contains(s), "{t}: {s}");
                assert!(!sections(t).contains(s), "{t}: {s} is both");
            }
        }
    }

    #[test]
    fn sizes_for_people() {
        for (bytes, label) in [
            (0, "0 bytes"),
            (1023, "1023 bytes"),
            (1024, "1 KB"),
            (1536, "1.5 KB"),
            (1_258_291, "1.2 MB"),
            (10 * 1024 * 1024, "10 MB"),
            (25 * 1024 * 1024 + 1, "25 MB"),
            (3 * 1024 * 1024 * 1024, "3 GB"),
        ] {
            assert_eq!(size_label(bytes), label, "{bytes}");
        }
        let a = AttachmentView::new("log.txt", "text/plain", 11 * 1024 * 1024, 10 * 1024 * 1024);
        assert!(!a.attached);
        assert_eq!(a.size_label, "11 MB");
        assert!(
            AttachmentView::new("x", "text/plain", 10 * 1024 * 1024, 10 * 1024 * 1024).attached
        );
    }
}
