//! The decision for one inbound message (SPEC: Severity, Threading, Statuses, Loops).
//!
//! `decide` is pure: the parsed mail, what the store already knows about it and the tickets it
//! names (`MailContext`), the policy from config and `now` go in; a `Decision` comes out. It says
//! everything that happens and why, in the words the history shows: open a ticket or add to
//! ticket N, attach a report, status and participant changes, events, and each planned mail with
//! its recipient. The store applies it in one transaction and invents nothing; `postdesk
//! explain` prints it without applying it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::commands::Rejected;
use super::loops;
use super::notify;
use super::severity::{DowngradeMap, Severity, SeverityReading};
use super::staff;
use super::status::{Status, StatusEvent, transition};
use super::thread::{MatchedBy, Threading, thread};
use super::ticket::{Role, TicketState};
use crate::mail::dsn::{Report, ReportKind};
use crate::mail::parse::one_line;
use crate::mail::{InboundMail, Mailbox, QuarantineReason, quote};
use crate::sla::clock::{Calendars, SlaPlan, on_status_change};
use crate::sla::policy::SlaPolicy;

/// A customer domain from `[[customers]]`, as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerDomain {
    /// The mail domain, lower-cased.
    pub domain: String,
    /// The account manager's address, lower-cased.
    pub account_manager: Option<String>,
    /// The customer's business-hours calendar (`[[customers]] calendar`).
    pub calendar: Option<String>,
}

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
    /// The ticket tag prefix (`#` in `[#1234]`).
    pub tag_prefix: String,
    /// Staff mail domains, lower-cased.
    pub staff_domains: Vec<String>,
    /// Staff addresses outside those domains, lower-cased.
    pub staff_addresses: Vec<String>,
    /// Customer domains with their account managers.
    pub customers: Vec<CustomerDomain>,
    /// A closed ticket reopens on a customer reply within this long.
    pub reopen_window: chrono::Duration,
    /// A colleague from the requester's `[[customers]]` domain joins as a watcher.
    pub same_domain_joins: bool,
    /// Triage owners, lower-cased: told of every new ticket, and of customer replies on tickets
    /// nobody is assigned to.
    pub triage_owners: Vec<String>,
    /// Staff and account managers count as such only when their mail is authenticated
    /// (`staff.require_authenticated`): see `MailContext::staff_auth`.
    pub require_authenticated: bool,
    /// Where an engineer's public reply without a status command leads
    /// (`statuses.after_engineer_reply`).
    pub after_engineer_reply: Status,
    /// Response, resolution, status-update and escalation targets per severity.
    pub sla: SlaPolicy,
    /// The business-hours calendars.
    pub calendars: Calendars,
    /// Told when a ticket escalates (`escalation.contacts`), lower-cased.
    pub escalation_contacts: Vec<String>,
}

impl Policy {
    /// Whether an address is staff (`staff.domains`, `staff.addresses`).
    pub fn is_staff(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.staff_addresses.contains(&address) || self.staff_domains.iter().any(|d| d == domain)
    }

    /// The account manager of a customer domain (`[[customers]]`), lower-cased.
    pub fn account_manager_of(&self, domain: &str) -> Option<&str> {
        self.customers
            .iter()
            .find(|c| c.domain.eq_ignore_ascii_case(domain))
            .and_then(|c| c.account_manager.as_deref())
    }

    /// The calendar of a customer domain (`[[customers]] calendar`).
    pub fn calendar_of(&self, domain: &str) -> Option<&str> {
        self.customers
            .iter()
            .find(|c| c.domain.eq_ignore_ascii_case(domain))
            .and_then(|c| c.calendar.as_deref())
    }

    /// The business-hours calendar of a ticket's customer (`[[customers]] calendar` of the
    /// requester's domain).
    pub fn customer_calendar(&self, ticket: &TicketState) -> Option<&str> {
        ticket.requester_domain().and_then(|d| self.calendar_of(d))
    }

    /// The SLA clock of a ticket of `severity` created at `created_at` by `requester`.
    pub fn sla_from_creation(
        &self,
        severity: Severity,
        requester: &Mailbox,
        created_at: DateTime<Utc>,
    ) -> SlaPlan {
        SlaPlan::from_creation(
            &self.sla,
            &self.calendars,
            severity,
            self.calendar_of(&requester.domain()),
            created_at,
            created_at,
            chrono::Duration::zero(),
        )
    }

    /// Whether an address is an account manager of some customer.
    pub fn is_account_manager(&self, address: &str) -> bool {
        self.customers.iter().any(|c| {
            c.account_manager
                .as_deref()
                .is_some_and(|am| am.eq_ignore_ascii_case(address))
        })
    }

    /// Whether the sender claims an address whose mail needs authenticating before postdesk
    /// obeys it: staff or an account manager, with `staff.require_authenticated` on.
    pub fn needs_authentication(&self, address: &str) -> bool {
        self.require_authenticated && (self.is_staff(address) || self.is_account_manager(address))
    }

    /// Whether a mail from a staff or account-manager address is trusted as theirs.
    pub fn trusts(&self, auth: &StaffAuth) -> bool {
        !self.require_authenticated || matches!(auth, StaffAuth::Pass(_))
    }
}

/// Whether a mail from a staff or account-manager address is authenticated
/// (`staff.require_authenticated`). The shell checks it before the decision: the receiving
/// host's `Authentication-Results`, else postdesk's own DKIM check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum StaffAuth {
    /// Not checked: authentication is not required, or the sender claims no staff address.
    #[default]
    NotChecked,
    /// Authenticated, and how (`dkim=pass header.d=example.com`).
    Pass(String),
    /// Not authenticated, and why.
    Fail(String),
}

/// What the store knows about a message before the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailContext {
    /// Set when a message with this Message-ID is already stored: `Some(ticket)` or `Some(None)`
    /// for a stored message that belongs to no ticket (a bounce).
    pub known_message: Option<Option<i64>>,
    /// Automatic replies queued to this sender in the last hour.
    pub auto_replies_to_sender_last_hour: u32,
    /// The first of the mail's `ThreadKeys::message_ids` that belongs to a ticket: the ticket and
    /// the Message-ID.
    pub header_match: Option<(i64, String)>,
    /// The state of the tickets the keys name (header match and subject tag) that exist.
    pub tickets: Vec<TicketState>,
    /// Whether the sender's staff or account-manager address is authenticated.
    pub staff_auth: StaffAuth,
}

impl MailContext {
    /// The loaded state of ticket `number`.
    pub fn ticket(&self, number: i64) -> Option<&TicketState> {
        self.tickets.iter().find(|t| t.number == number)
    }
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
    /// To triage (and the assignee): a mail could not be delivered, or the requester's address bounced.
    DeliveryFailure,
    /// The daily digest of open tickets, to each account manager (their customers') and the triage owners (all).
    Digest,
}

impl Template {
    /// Every template, in the order the README lists them.
    pub const ALL: [Template; 14] = [
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
        Template::DeliveryFailure,
        Template::Digest,
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
            Template::DeliveryFailure => "delivery_failure",
            Template::Digest => "digest",
        }
    }

    /// Whether it goes to the customer side (requester and watchers): a public message.
    pub fn is_public(self) -> bool {
        matches!(
            self,
            Template::Acknowledgement
                | Template::Relay
                | Template::StatusUpdate
                | Template::CustomerPendingReminder
                | Template::ClosePending
                | Template::Closed
                | Template::Reopened
        )
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

/// The ticket an event or mail belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The ticket this decision opens (its number is known once the store inserted it).
    Opened,
    /// An existing ticket.
    Ticket(i64),
}

/// Why staff are told (the `notification.kind` of an engineer notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// A new ticket (triage owners, the account manager).
    NewTicket,
    /// A customer replied (the assignee, else the triage owners).
    CustomerReply,
    /// The ticket reached close pending or closed (the account manager).
    Resolved,
    /// The requester's address bounces (triage owners and the assignee).
    RequesterBounced,
    /// The ticket passed its escalation time (escalation contacts and triage owners).
    Escalated,
    /// The response deadline passed without a public engineer reply (triage owners).
    ResponseBreached,
    /// The resolution deadline passed unresolved (triage owners).
    ResolutionBreached,
}

impl Notice {
    /// The name templates see.
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::NewTicket => "new_ticket",
            Notice::CustomerReply => "customer_reply",
            Notice::Resolved => "resolved",
            Notice::RequesterBounced => "requester_bounced",
            Notice::Escalated => "escalated",
            Notice::ResponseBreached => "response_breached",
            Notice::ResolutionBreached => "resolution_breached",
        }
    }
}

/// One mail to queue in the outbox with the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMail {
    /// Which template renders it.
    pub template: Template,
    /// The recipient (one mail, one outbox row per recipient).
    pub to: Mailbox,
    /// Why staff are told, for staff notices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
    /// For scheduled mail: the instant it was due. With the ticket, template and recipient it
    /// makes the Message-ID, so two sweeps that both send it send one message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
}

impl PlannedMail {
    /// A mail of `template` to `to`.
    pub fn new(template: Template, to: Mailbox) -> PlannedMail {
        PlannedMail {
            template,
            to,
            notice: None,
            due: None,
        }
    }

    /// A staff notice of `template` to `to`, for `why`.
    pub fn notice(template: Template, to: Mailbox, why: Notice) -> PlannedMail {
        PlannedMail {
            template,
            to,
            notice: Some(why),
            due: None,
        }
    }
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
    /// The older ticket this one continues (a reply to a ticket closed past the reopen window).
    pub linked_ticket: Option<i64>,
}

/// A message added to an existing ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// The ticket.
    pub ticket: i64,
    /// How the message was matched to it.
    pub matched_by: MatchedBy,
    /// The sender's role in the ticket.
    pub role: Role,
    /// What kind of reply it is.
    pub kind: ReplyKind,
}

/// What a reply is, by who sent it and what it holds (`explain` prints it as the action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// A customer's (requester's or watcher's) reply, or their machine's.
    Customer,
    /// An engineer's public reply: relayed to the customer.
    EngineerReply,
    /// An engineer's mail with commands and no text for the customer.
    EngineerCommand,
    /// `#note`, or anything an account manager writes: internal, never to the customer.
    InternalNote,
    /// Unknown or malformed commands: answered to the sender, nothing relayed or changed.
    CommandRejected,
}

impl ReplyKind {
    /// The name `explain` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKind::Customer => "reply",
            ReplyKind::EngineerReply => "engineer_reply",
            ReplyKind::EngineerCommand => "engineer_command",
            ReplyKind::InternalNote => "internal_note",
            ReplyKind::CommandRejected => "command_rejected",
        }
    }
}

/// Changes to ticket fields other than status and participants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TicketUpdate {
    /// The new assignee (`#assign`), lower-cased.
    pub assignee: Option<String>,
    /// The new assigned severity (`#severity`); the requested one is kept.
    pub severity: Option<Severity>,
    /// Record the first public engineer reply (`first_response_at`), if none is recorded yet.
    pub first_response: bool,
    /// The ticket escalated (`escalated_at`).
    pub escalated: bool,
    /// Triage was told the response deadline passed.
    pub response_breach: bool,
    /// Triage was told the resolution deadline passed.
    pub resolution_breach: bool,
}

impl TicketUpdate {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.assignee.is_none()
            && self.severity.is_none()
            && !self.first_response
            && !self.escalated
            && !self.response_breach
            && !self.resolution_breach
    }
}

/// A bounce or feedback report, stored and attached where its original is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportOn {
    /// The ticket of the mail it is about, when known.
    pub ticket: Option<i64>,
    /// How it was matched.
    pub matched_by: Option<MatchedBy>,
    /// What it says.
    pub report: Report,
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open a ticket.
    NewTicket(NewTicket),
    /// Add the message to a ticket.
    Reply(Reply),
    /// A bounce or feedback report: stored, attached to its ticket when known, never answered.
    Report(ReportOn),
    /// Already stored: nothing changes.
    Duplicate { ticket: Option<i64> },
    /// Kept whole in quarantine with the reason.
    Quarantine(QuarantineReason),
    /// What the SLA clock does to a ticket that is due (no message).
    Scheduled { ticket: i64 },
}

impl Action {
    /// The name `explain --json` prints.
    pub fn name(&self) -> &'static str {
        match self {
            Action::NewTicket(_) => "new_ticket",
            Action::Reply(r) => r.kind.as_str(),
            Action::Report(_) => "bounce",
            Action::Duplicate { .. } => "duplicate",
            Action::Quarantine(_) => "quarantine",
            Action::Scheduled { .. } => "scheduled",
        }
    }

    /// The ticket the message belongs to once applied (`Opened` for a new one).
    pub fn target(&self) -> Option<Target> {
        match self {
            Action::NewTicket(_) => Some(Target::Opened),
            Action::Reply(r) => Some(Target::Ticket(r.ticket)),
            Action::Report(r) => r.ticket.map(Target::Ticket),
            Action::Duplicate { ticket } => ticket.map(Target::Ticket),
            Action::Quarantine(_) => None,
            Action::Scheduled { ticket } => Some(Target::Ticket(*ticket)),
        }
    }
}

/// Public (the customer may see it) or internal (staff and account manager only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Part of the customer conversation.
    Public,
    /// Staff only.
    Internal,
}

impl Visibility {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Internal => "internal",
        }
    }
}

/// How the inbound message is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    /// `customer`, `automatic`, `staff`, `account_manager`, `bounce`, `feedback_report`.
    pub kind: String,
    /// Public or internal.
    pub visibility: Visibility,
    /// The readable text kept (a reply: without quoted history and signature).
    pub text: String,
}

/// A status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    /// The status before.
    pub from: Status,
    /// The status after.
    pub to: Status,
    /// The event that caused it.
    pub event: StatusEvent,
}

/// Someone who joins the ticket with this message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Joiner {
    /// Who.
    pub mailbox: Mailbox,
    /// As what.
    pub role: Role,
}

/// One history event the decision records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedEvent {
    /// The ticket it goes on (None: a message that belongs to no ticket).
    pub on: Option<Target>,
    /// Who (an address, or `postdesk`).
    pub actor: String,
    /// What kind (`created`, `severity`, `reply`, `status`, `participant`, `bounce`, ...).
    pub kind: String,
    /// Value before.
    pub from: Option<String>,
    /// Value after.
    pub to: Option<String>,
    /// Why, in words for people.
    pub reason: String,
    /// The other ticket it concerns (a stranger's ticket, a linked ticket).
    pub related: Option<Target>,
}

/// The outcome of `decide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The severity reading of the subject (none for quarantined mail).
    pub severity: Option<SeverityReading>,
    /// How the message is stored (none for duplicates and quarantine).
    pub message: Option<StoredMessage>,
    /// The status change on the ticket it joins.
    pub status_change: Option<StatusChange>,
    /// People who join the ticket.
    pub joiners: Vec<Joiner>,
    /// Set when a bounce says the requester's address fails: the ticket is flagged.
    pub requester_bounced: bool,
    /// Assignee, severity and response-clock changes.
    pub update: TicketUpdate,
    /// The command lines rejected (the `command_rejected` mail lists them).
    pub rejected: Vec<Rejected>,
    /// SLA deadlines set or recomputed (a new ticket, a severity change, a public reply).
    pub sla: Option<SlaPlan>,
    /// History events, in order.
    pub events: Vec<PlannedEvent>,
    /// Whether the sender gets an acknowledgement.
    pub acknowledge: bool,
    /// Why, in words for admins.
    pub reason: String,
    /// Why a header or tag did not join the ticket it named, when that happened.
    pub ignored: Option<String>,
    /// Mails to queue with the change, one per recipient.
    pub outbound: Vec<PlannedMail>,
    /// When the decision was made.
    pub at: DateTime<Utc>,
}

impl Decision {
    /// Whether it sends the customer side a message (the status-update clock restarts).
    pub fn sends_public(&self) -> bool {
        self.outbound.iter().any(|m| m.template.is_public())
    }

    fn quiet(
        action: Action,
        severity: Option<SeverityReading>,
        reason: String,
        at: DateTime<Utc>,
    ) -> Decision {
        Decision {
            action,
            severity,
            message: None,
            status_change: None,
            joiners: Vec::new(),
            requester_bounced: false,
            update: TicketUpdate::default(),
            rejected: Vec::new(),
            sla: None,
            events: Vec::new(),
            acknowledge: false,
            reason,
            ignored: None,
            outbound: Vec::new(),
            at,
        }
    }
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
        Err(reason) => Decision::quiet(
            Action::Quarantine(reason.clone()),
            None,
            format!("quarantined: {reason}"),
            now,
        ),
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

    if let Some(ticket) = ctx.known_message {
        let reason = match ticket {
            Some(n) => format!(
                "Message-ID <{}> is already stored on ticket #{n}",
                mail.message_id
            ),
            None => format!("Message-ID <{}> is already stored", mail.message_id),
        };
        return Decision::quiet(Action::Duplicate { ticket }, Some(severity), reason, now);
    }
    if let Some(report) = &mail.report {
        return decide_report(mail, report, ctx, policy, severity, now);
    }
    if loops::is_bounce(mail) {
        return decide_report(mail, &Report::unread(), ctx, policy, severity, now);
    }

    let no_reply = loops::no_reply_reason(
        mail,
        &policy.support_addresses,
        ctx.auto_replies_to_sender_last_hour,
        policy.max_auto_replies_per_hour,
    );
    let mut d = match thread(mail, ctx, policy, now) {
        Threading::New => new_ticket(mail, policy, severity, no_reply, None, now),
        Threading::UnknownTicket { tag } => {
            let mut d = new_ticket(mail, policy, severity, no_reply, None, now);
            let why = format!("the subject tag names ticket #{tag}, which does not exist");
            d.reason = format!("{}; {why}", d.reason);
            d.ignored = Some(why);
            d
        }
        Threading::Stranger { ticket, by } => {
            let sender = mail.from.key();
            let mut d = new_ticket(mail, policy, severity, no_reply, None, now);
            let why = format!(
                "{sender} is not a participant of #{ticket} ({}): a ticket of their own",
                by.describe()
            );
            d.reason = format!("{}; {why}", d.reason);
            d.events.push(PlannedEvent {
                on: Some(Target::Opened),
                actor: sender.clone(),
                kind: "stranger".into(),
                from: None,
                to: None,
                reason: format!(
                    "opened by {sender}, who named ticket #{ticket} ({}) but is not one of its participants",
                    by.describe()
                ),
                related: Some(Target::Ticket(ticket)),
            });
            d.events.push(PlannedEvent {
                on: Some(Target::Ticket(ticket)),
                actor: sender.clone(),
                kind: "stranger".into(),
                from: None,
                to: None,
                reason: format!(
                    "{sender}, not a participant, named this ticket ({}); their mail opened a ticket of its own and was not added here",
                    by.describe()
                ),
                related: Some(Target::Opened),
            });
            d.ignored = Some(why);
            d
        }
        Threading::ClosedPastWindow {
            ticket,
            by,
            closed_at,
        } => {
            let sender = mail.from.key();
            let mut d = new_ticket(mail, policy, severity, no_reply, Some(ticket), now);
            let why = format!(
                "#{ticket} ({}) closed on {} UTC, longer ago than the reopen window: a new ticket linked to #{ticket}",
                by.describe(),
                closed_at.format("%Y-%m-%d %H:%M")
            );
            d.reason = format!("{}; {why}", d.reason);
            d.events.push(PlannedEvent {
                on: Some(Target::Opened),
                actor: sender.clone(),
                kind: "linked".into(),
                from: None,
                to: Some(ticket.to_string()),
                reason: format!("continues ticket #{ticket}, closed past the reopen window"),
                related: Some(Target::Ticket(ticket)),
            });
            d.events.push(PlannedEvent {
                on: Some(Target::Ticket(ticket)),
                actor: sender,
                kind: "linked".into(),
                from: None,
                to: None,
                reason: "the customer wrote again after the reopen window; a new ticket continues this one".into(),
                related: Some(Target::Opened),
            });
            d.ignored = Some(why);
            d
        }
        Threading::Join {
            ticket,
            by,
            role,
            joins,
            reopens,
        } => reply(
            mail, &ticket, by, role, joins, reopens, no_reply, severity, policy, now,
        ),
    };
    // Time-driven rules follow every status change of an existing ticket.
    if let (Some(change), Some(Target::Ticket(n))) = (&d.status_change, d.action.target())
        && let Some(ticket) = ctx.ticket(n)
    {
        let (plan, words) =
            on_status_change(policy, ticket, change.from, change.to, d.sla.take(), now);
        if let Some(reason) = words {
            d.events.push(PlannedEvent {
                on: Some(Target::Ticket(n)),
                actor: "postdesk".into(),
                kind: "sla".into(),
                from: None,
                to: None,
                reason,
                related: None,
            });
        }
        d.sla = Some(plan);
    }
    // A staff or account-manager From that is not authenticated gets no staff rights; the
    // history says so wherever the mail went.
    let sender = mail.from.key();
    if policy.needs_authentication(&sender) && !policy.trusts(&ctx.staff_auth) {
        let why = match &ctx.staff_auth {
            StaffAuth::Fail(why) => why.clone(),
            StaffAuth::Pass(_) | StaffAuth::NotChecked => "authentication was not checked".into(),
        };
        let words = format!(
            "{sender} is a staff address but this mail is not authenticated ({why}): treated as a customer, commands not honoured"
        );
        d.reason = format!("{}; {words}", d.reason);
        d.events.push(PlannedEvent {
            on: d.action.target(),
            actor: sender,
            kind: "unauthenticated".into(),
            from: None,
            to: None,
            reason: words,
            related: None,
        });
    }
    d
}

fn new_ticket(
    mail: &InboundMail,
    policy: &Policy,
    severity: SeverityReading,
    no_reply: Option<String>,
    linked_ticket: Option<i64>,
    now: DateTime<Utc>,
) -> Decision {
    let ticket = NewTicket {
        subject: ticket_subject(&mail.subject),
        requester: mail.from.clone(),
        watchers: watchers(mail, &policy.support_addresses),
        status: Status::InTriage,
        severity,
        linked_ticket,
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
            vec![PlannedMail::new(
                Template::Acknowledgement,
                mail.from.clone(),
            )],
            format!(
                "new ticket, {severity_words}; acknowledgement to {}",
                mail.from.address
            ),
        ),
    };
    let actor = mail.from.key();
    let created = PlannedEvent {
        on: Some(Target::Opened),
        actor,
        kind: "created".into(),
        from: None,
        to: Some(Status::InTriage.as_str().into()),
        reason: reason.clone(),
        related: None,
    };
    let severity_event = PlannedEvent {
        on: Some(Target::Opened),
        actor: "postdesk".into(),
        kind: "severity".into(),
        from: severity.requested.map(|r| r.number().to_string()),
        to: Some(severity.assigned.number().to_string()),
        reason: match severity.requested {
            None => "severity not given in the subject: default applied".to_string(),
            Some(r) if severity.downgraded => format!(
                "{r} requested by email; email cannot open {r}, downgraded to {}",
                severity.assigned
            ),
            Some(r) => format!("{r} requested in the subject"),
        },
        related: None,
    };
    // The account manager of the requester's company is a participant of every ticket of it;
    // triage and the account manager are told of the new ticket.
    let mut joiners = Vec::new();
    let mut events = vec![created, severity_event];
    let mut outbound = outbound;
    if let Some(am) = policy.account_manager_of(&mail.from.domain())
        && !am.eq_ignore_ascii_case(&mail.from.address)
    {
        joiners.push(Joiner {
            mailbox: Mailbox {
                name: None,
                address: am.to_string(),
            },
            role: Role::AccountManager,
        });
        events.push(PlannedEvent {
            on: Some(Target::Opened),
            actor: "postdesk".into(),
            kind: "participant".into(),
            from: None,
            to: Some(Role::AccountManager.as_str().into()),
            reason: format!("{am} is the account manager of {}", mail.from.domain()),
            related: None,
        });
    }
    outbound.extend(notify::new_ticket(policy, &mail.from));
    let sla = policy.sla_from_creation(severity.assigned, &mail.from, now);
    events.push(PlannedEvent {
        on: Some(Target::Opened),
        actor: "postdesk".into(),
        kind: "sla".into(),
        from: None,
        to: None,
        reason: format!("deadlines set: {}", sla.describe(&policy.calendars)),
        related: None,
    });
    Decision {
        action: Action::NewTicket(ticket),
        severity: Some(severity),
        message: Some(StoredMessage {
            kind: if acknowledge { "customer" } else { "automatic" }.into(),
            visibility: Visibility::Public,
            // The first message is kept whole: a customer often forwards a thread as the problem.
            text: mail.text.clone(),
        }),
        status_change: None,
        joiners,
        requester_bounced: false,
        update: TicketUpdate::default(),
        rejected: Vec::new(),
        sla: Some(sla),
        events,
        acknowledge,
        reason,
        ignored: None,
        outbound,
        at: now,
    }
}

/// The new text of a reply: quoted history and signature removed.
pub fn reply_text(mail: &InboundMail) -> String {
    match &mail.html_only {
        Some(html) => quote::reply_text_from_html(html),
        None => quote::reply_text(&mail.text),
    }
}

/// Whether the text holds `#close` on a line of its own.
fn confirms_close(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim().eq_ignore_ascii_case("#close"))
}

/// Who is replying and through what, for the reply rules.
pub(super) struct Incoming<'a> {
    /// The mail.
    pub mail: &'a InboundMail,
    /// The ticket it joins.
    pub ticket: &'a TicketState,
    /// How it matched.
    pub by: MatchedBy,
    /// The sender's role.
    pub role: Role,
    /// The sender joins the ticket with this mail.
    pub joins: bool,
    /// Why the sender gets no automatic answer, if so.
    pub no_reply: Option<String>,
    /// The subject's severity reading (replies never change severity by subject).
    pub severity: SeverityReading,
    /// When.
    pub now: DateTime<Utc>,
}

impl Incoming<'_> {
    /// The sender as the history names them.
    pub fn sender(&self) -> String {
        self.mail.from.key()
    }

    /// The history target.
    pub fn on(&self) -> Option<Target> {
        Some(Target::Ticket(self.ticket.number))
    }

    /// The joiner and its event when the sender joins the ticket with this mail.
    pub fn joining(&self) -> (Vec<Joiner>, Vec<PlannedEvent>) {
        if !self.joins {
            return (Vec::new(), Vec::new());
        }
        let sender = self.sender();
        let joiner = Joiner {
            mailbox: self.mail.from.clone(),
            role: self.role,
        };
        let event = PlannedEvent {
            on: self.on(),
            actor: sender.clone(),
            kind: "participant".into(),
            from: None,
            to: Some(self.role.as_str().into()),
            reason: match self.role {
                Role::Watcher => format!(
                    "{sender} is from the requester's company domain and joins as a watcher (threading.same_domain_joins)"
                ),
                Role::AccountManager => format!("{sender} is the customer's account manager"),
                _ => format!("{sender} is staff"),
            },
            related: None,
        };
        (vec![joiner], vec![event])
    }

    /// The sender's role in words.
    pub fn role_words(&self) -> &'static str {
        match self.role {
            Role::Requester => "the requester",
            Role::Watcher if self.joins => "a colleague from the requester's company",
            Role::Watcher => "a watcher",
            Role::Staff => "staff",
            Role::AccountManager => "the account manager",
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn reply(
    mail: &InboundMail,
    ticket: &TicketState,
    by: MatchedBy,
    role: Role,
    joins: bool,
    reopens: bool,
    no_reply: Option<String>,
    severity: SeverityReading,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Decision {
    let input = Incoming {
        mail,
        ticket,
        by,
        role,
        joins,
        no_reply,
        severity,
        now,
    };
    // An automatic reply from anyone (an out-of-office answering our notification) is stored
    // and obeyed in nothing: the customer rules below store it without a status change.
    if !loops::is_machine_sent(mail) {
        match role {
            Role::Staff => return staff::engineer_reply(&input, policy),
            Role::AccountManager => return staff::account_manager_reply(&input, policy),
            Role::Requester | Role::Watcher => {}
        }
    }
    customer_reply(&input, reopens, policy)
}

fn customer_reply(input: &Incoming<'_>, reopens: bool, policy: &Policy) -> Decision {
    let Incoming {
        mail,
        ticket,
        role,
        no_reply,
        now,
        ..
    } = input;
    let sender = input.sender();
    let number = ticket.number;
    let text = reply_text(mail);
    let automatic = loops::is_machine_sent(mail);
    let on = input.on();
    let (joiners, mut events) = input.joining();
    let mut outbound = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let role_words = input.role_words();
    let by = &input.by;

    let kind = if automatic {
        "automatic"
    } else {
        match role {
            Role::Requester | Role::Watcher => "customer",
            Role::Staff => "staff",
            Role::AccountManager => "account_manager",
        }
    };
    // Only the customer side speaks in public; a machine's answer from a staff address stays
    // internal.
    let visibility = if role.is_customer() {
        Visibility::Public
    } else {
        Visibility::Internal
    };
    events.push(PlannedEvent {
        on,
        actor: sender.clone(),
        kind: "reply".into(),
        from: None,
        to: None,
        reason: format!(
            "{} from {role_words} ({})",
            if automatic {
                "automatic reply"
            } else {
                "reply"
            },
            by.describe()
        ),
        related: None,
    });

    // Status: only a person on the customer's side moves it; an automatic reply (an
    // out-of-office answering our mail) is stored and changes nothing.
    let mut status_change = None;
    if automatic {
        notes.push(format!(
            "machine-sent ({}): stored, status unchanged, no answer",
            no_reply.as_deref().unwrap_or("automatic")
        ));
    } else if role.is_customer() {
        let event = if reopens {
            StatusEvent::CustomerReopens
        } else if confirms_close(&text) {
            StatusEvent::CustomerConfirmsClose
        } else {
            StatusEvent::CustomerReply
        };
        let mut next = transition(ticket.status, event).map(|to| (event, to));
        if next.is_none() && event == StatusEvent::CustomerConfirmsClose {
            notes.push(format!(
                "#close ignored: the ticket is {}, not close_pending",
                ticket.status
            ));
            next = transition(ticket.status, StatusEvent::CustomerReply)
                .map(|to| (StatusEvent::CustomerReply, to));
        }
        if let Some((event, to)) = next {
            events.push(PlannedEvent {
                on,
                actor: sender.clone(),
                kind: if event == StatusEvent::CustomerReopens {
                    "reopened"
                } else {
                    "status"
                }
                .into(),
                from: Some(ticket.status.as_str().into()),
                to: Some(to.as_str().into()),
                reason: event.describe().into(),
                related: None,
            });
            status_change = Some(StatusChange {
                from: ticket.status,
                to,
                event,
            });
            if event == StatusEvent::CustomerReopens {
                match &no_reply {
                    Some(why) => notes.push(format!("no reopened notice: {why}")),
                    None => outbound.extend(notify::customers(ticket, Template::Reopened)),
                }
            }
        }
        // Engineers hear of every customer reply: the assignee, else triage.
        let told = notify::customer_reply(policy, ticket, &mail.from);
        if told.is_empty() {
            notes.push("no engineer notified: no assignee and no triage owners".into());
        }
        outbound.extend(told);
    }
    let mut reason = format!(
        "reply to ticket #{number} from {role_words} ({}); no acknowledgement for replies",
        by.describe()
    );
    if let Some(c) = &status_change {
        reason.push_str(&format!("; status {} -> {}", c.from, c.to));
    }
    for n in &notes {
        reason.push_str("; ");
        reason.push_str(n);
    }
    Decision {
        action: Action::Reply(Reply {
            ticket: number,
            matched_by: by.clone(),
            role: *role,
            kind: ReplyKind::Customer,
        }),
        severity: Some(input.severity),
        message: Some(StoredMessage {
            kind: kind.into(),
            visibility,
            text,
        }),
        status_change,
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
        at: *now,
    }
}

fn decide_report(
    mail: &InboundMail,
    report: &Report,
    ctx: &MailContext,
    policy: &Policy,
    severity: SeverityReading,
    now: DateTime<Utc>,
) -> Decision {
    let matched = ctx
        .header_match
        .as_ref()
        .and_then(|(n, id)| {
            ctx.ticket(*n).map(|t| {
                (
                    t,
                    MatchedBy::Header {
                        message_id: id.clone(),
                    },
                )
            })
        })
        .or_else(|| {
            // A tag read from the returned original's subject (see `thread::keys`).
            ctx.tickets
                .first()
                .filter(|_| ctx.header_match.is_none())
                .map(|t| (t, MatchedBy::Tag { ticket: t.number }))
        });
    let kind = match report.kind {
        ReportKind::Feedback => "feedback_report",
        ReportKind::Delay => "delivery_delayed",
        ReportKind::Bounce => "bounce",
        // A success notice, a read receipt, or a mail system's message nothing more is known of.
        ReportKind::Other => "report",
    };
    let actor = report
        .reporting_mta
        .clone()
        .unwrap_or_else(|| mail.from.key());
    let on = matched.as_ref().map(|(t, _)| Target::Ticket(t.number));
    let mut events = Vec::new();
    let mut requester_bounced = false;
    for r in &report.recipients {
        let mut why = match report.kind {
            ReportKind::Feedback => format!("{} reported our mail to {}", actor, r.address),
            ReportKind::Delay => format!("delivery to {} is delayed", r.address),
            ReportKind::Bounce => format!("delivery to {} failed", r.address),
            ReportKind::Other => format!(
                "report on delivery to {} ({})",
                r.address,
                r.action.as_deref().unwrap_or("no action given")
            ),
        };
        if let Some(s) = &r.status {
            why.push_str(&format!(": {s}"));
        }
        if let Some(d) = &r.diagnostic {
            why.push_str(&format!(" ({d})"));
        }
        events.push(PlannedEvent {
            on,
            actor: actor.clone(),
            kind: kind.into(),
            from: None,
            to: Some(r.address.clone()),
            reason: why,
            related: None,
        });
        let permanent = report.kind == ReportKind::Bounce
            && r.action
                .as_deref()
                .is_none_or(|a| a.eq_ignore_ascii_case("failed"));
        if permanent
            && let Some((t, _)) = &matched
            && t.requester()
                .is_some_and(|q| q.address.eq_ignore_ascii_case(&r.address))
        {
            requester_bounced = true;
        }
    }
    if events.is_empty() {
        events.push(PlannedEvent {
            on,
            actor: actor.clone(),
            kind: kind.into(),
            from: None,
            to: None,
            reason: format!("{kind} from {}: no recipient named", mail.from.address),
            related: None,
        });
    }
    let mut outbound = Vec::new();
    if requester_bounced {
        // Triage and the assignee hear of it once: the first bounce flags the ticket.
        if let Some((t, _)) = &matched
            && !t.requester_bounced
        {
            outbound = notify::requester_bounced(policy, t);
        }
        events.push(PlannedEvent {
            on,
            actor: "postdesk".into(),
            kind: "flagged".into(),
            from: None,
            to: Some("requester_bounced".into()),
            reason: "the requester's address bounced: the customer may not be getting our mail"
                .into(),
            related: None,
        });
    }
    let reason = match &matched {
        Some((t, by)) => format!(
            "{kind} about ticket #{} ({}): stored on it, never answered",
            t.number,
            by.describe()
        ),
        None => format!(
            "{kind} from {}: the mail it is about is not ours or not known; stored without a ticket, never answered",
            mail.from.address
        ),
    };
    Decision {
        action: Action::Report(ReportOn {
            ticket: matched.as_ref().map(|(t, _)| t.number),
            matched_by: matched.map(|(_, by)| by),
            report: report.clone(),
        }),
        severity: Some(severity),
        message: Some(StoredMessage {
            kind: kind.into(),
            visibility: Visibility::Internal,
            text: mail.text.clone(),
        }),
        status_change: None,
        joiners: Vec::new(),
        requester_bounced,
        update: TicketUpdate::default(),
        rejected: Vec::new(),
        sla: None,
        events,
        acknowledge: false,
        reason,
        ignored: None,
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
    use crate::mail::dsn::FailedRecipient;
    use Severity::*;

    fn policy() -> Policy {
        Policy {
            staff_addresses: vec!["contractor@freelance.test".into()],
            ..crate::desk::fixtures::policy()
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
            ..InboundMail::default()
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
            let to: Vec<_> = d
                .outbound
                .iter()
                .map(|p| (p.template, p.to.address.as_str(), p.notice))
                .collect();
            assert_eq!(
                to,
                vec![
                    (Template::Acknowledgement, "jane@acme.test", None),
                    (
                        Template::EngineerNotification,
                        "triage@example.com",
                        Some(Notice::NewTicket)
                    ),
                    (
                        Template::EngineerNotification,
                        "am@example.com",
                        Some(Notice::NewTicket)
                    ),
                ],
                "{name}"
            );
            assert_eq!(
                d.joiners,
                vec![Joiner {
                    mailbox: Mailbox {
                        name: None,
                        address: "am@example.com".into()
                    },
                    role: Role::AccountManager
                }],
                "{name}: the account manager is a participant of every ticket of the company"
            );
            let sla = d.sla.as_ref().unwrap_or_else(|| panic!("{name}: no SLA"));
            assert_eq!(sla.severity, assigned, "{name}");
            assert_eq!(
                sla.calendar,
                if matches!(assigned, Sev1 | Sev2) {
                    "24x7"
                } else {
                    "us-central"
                },
                "{name}"
            );
            assert!(sla.deadlines.is_some_and(|x| x.response > now()), "{name}");
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
        // No answer to the machine; triage still hears of the new ticket.
        assert!(!d.acknowledge && customer_mails(&d).is_empty());
        assert!(
            d.outbound
                .iter()
                .all(|m| m.notice == Some(Notice::NewTicket)),
            "{:?}",
            d.outbound
        );
        assert!(d.reason.contains("Auto-Submitted"), "{}", d.reason);
    }

    #[test]
    fn bounce_is_stored_without_ticket_or_reply() {
        let mut m = mail("Undelivered Mail Returned to Sender");
        m.from.address = "MAILER-DAEMON@mx.acme.test".into();
        m.auto.report_type = Some("delivery-status".into());
        let d = decide(&m, &MailContext::default(), &policy(), now());
        assert!(matches!(
            d.action,
            Action::Report(ReportOn { ticket: None, .. })
        ));
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

    // ---- threading, statuses and reports: the decision table ---------------------------------

    use crate::desk::ticket::Role;

    const JANE: &str = "jane@acme.test";
    const WATCHER: &str = "bob@globex.test";

    fn state(number: i64, status: Status, closed_days_ago: Option<i64>) -> TicketState {
        use crate::desk::fixtures::{member, ticket};
        TicketState {
            number,
            severity: SeverityReading {
                requested: Some(Sev3),
                assigned: Sev3,
                given: true,
                downgraded: false,
            },
            subject: "SEV 3 printer on fire".into(),
            created_at: now() - chrono::Duration::days(60),
            closed_at: closed_days_ago.map(|d| now() - chrono::Duration::days(d)),
            ..ticket(
                status,
                vec![
                    member(JANE, Role::Requester),
                    member(WATCHER, Role::Watcher),
                ],
            )
        }
    }

    /// How the store answers: the header match (if any) and the tickets the keys name.
    fn ctx_of(header: Option<i64>, tickets: Vec<TicketState>) -> MailContext {
        MailContext {
            header_match: header
                .map(|n| (n, format!("postdesk.{n}.acknowledgement.x@example.com"))),
            tickets,
            ..MailContext::default()
        }
    }

    fn from(m: &mut InboundMail, address: &str) {
        m.from = Mailbox {
            name: Some("Someone Else".into()),
            address: address.into(),
        };
    }

    fn reply_mail(subject: &str) -> InboundMail {
        let mut m = mail(subject);
        m.in_reply_to = vec!["postdesk.7.acknowledgement.x@example.com".into()];
        m
    }

    /// What a case expects, in short.
    #[derive(Debug, PartialEq)]
    enum Want {
        New,
        NewLinked(i64),
        Stranger(i64),
        Reply {
            ticket: i64,
            to: Option<Status>,
            mails: usize,
        },
        Duplicate,
        Report(Option<i64>),
    }

    /// The mails to the customer side (not staff notices, notes or rejections).
    fn customer_mails(d: &Decision) -> Vec<&PlannedMail> {
        d.outbound
            .iter()
            .filter(|m| {
                !matches!(
                    m.template,
                    Template::EngineerNotification
                        | Template::InternalNote
                        | Template::CommandRejected
                )
            })
            .collect()
    }

    fn summary(d: &Decision) -> Want {
        match &d.action {
            Action::NewTicket(t) => match t.linked_ticket {
                Some(n) => Want::NewLinked(n),
                None if d.events.iter().any(|e| e.kind == "stranger") => d
                    .events
                    .iter()
                    .find_map(|e| match e.on {
                        Some(Target::Ticket(n)) => Some(Want::Stranger(n)),
                        _ => None,
                    })
                    .unwrap_or(Want::New),
                None => Want::New,
            },
            Action::Reply(r) => Want::Reply {
                ticket: r.ticket,
                to: d.status_change.as_ref().map(|c| c.to),
                mails: customer_mails(d).len(),
            },
            Action::Duplicate { .. } => Want::Duplicate,
            Action::Report(r) => Want::Report(r.ticket),
            Action::Quarantine(_) | Action::Scheduled { .. } => panic!("{:?}", d.action),
        }
    }

    #[test]
    fn threading_decision_table() {
        use Status::*;
        let t7 = |s| state(7, s, None);
        let closed = |days| state(7, Closed, Some(days));
        let reply = |to: Option<Status>| Want::Reply {
            ticket: 7,
            to,
            mails: 0,
        };
        type Setup = Box<dyn Fn(&mut InboundMail)>;
        let none: Setup = Box::new(|_| {});
        let cases: Vec<(&str, InboundMail, Setup, MailContext, Policy, Want)> = vec![
            (
                "no_header_no_tag_opens_a_ticket",
                mail("SEV 3 printer"),
                none,
                ctx_of(None, vec![]),
                policy(),
                Want::New,
            ),
            (
                "in_reply_to_our_acknowledgement_joins",
                reply_mail("Re: printer"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "references_only_joins",
                mail("Re: printer"),
                Box::new(|m| {
                    m.references = vec![
                        "a@x".into(),
                        "postdesk.7.acknowledgement.x@example.com".into(),
                    ]
                }),
                ctx_of(Some(7), vec![t7(EngineerPending)]),
                policy(),
                reply(None),
            ),
            (
                "reply_in_triage_stays_in_triage",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "reply_customer_pending_to_engineer_pending",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "reply_close_pending_to_engineer_pending",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![t7(ClosePending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "reply_engineer_pending_stays",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![t7(EngineerPending)]),
                policy(),
                reply(None),
            ),
            (
                "tag_without_headers_joins",
                mail("Re: [#7] printer"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(CustomerPending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "aw_re_stacked_tag_joins",
                mail("AW: RE: [#7] printer"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(CustomerPending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "sv_vs_antw_tag_joins",
                mail("SV: VS: Antw: [#7] printer"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "chinese_prefix_tag_joins",
                mail("回复: 答复: [#7] 打印机"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "tag_moved_to_the_end_joins",
                mail("printer still broken [#7]"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "external_marker_before_tag_joins",
                mail("[EXTERNAL] Re: [#7] printer"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "full_width_tag_joins",
                mail("Re: ［＃７］ printer"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "folded_subject_tag_joins",
                mail("Re:\r\n [#7]\tprinter"),
                Box::new(|_| {}),
                ctx_of(None, vec![t7(InTriage)]),
                policy(),
                reply(None),
            ),
            (
                "tag_of_missing_ticket_opens_a_ticket",
                mail("Re: [#99] printer"),
                Box::new(|_| {}),
                ctx_of(None, vec![]),
                policy(),
                Want::New,
            ),
            (
                "header_naming_nothing_known_opens_a_ticket",
                mail("Re: printer"),
                Box::new(|m| m.in_reply_to = vec!["unknown@x".into()]),
                ctx_of(None, vec![]),
                policy(),
                Want::New,
            ),
            (
                "header_wins_over_another_tag",
                reply_mail("Re: [#8] printer"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![t7(InTriage), state(8, InTriage, None)]),
                policy(),
                reply(None),
            ),
            (
                "other_tag_prefix_is_no_tag",
                mail("Re: [INC7] printer"),
                Box::new(|_| {}),
                ctx_of(None, vec![]),
                policy(),
                Want::New,
            ),
            (
                "stranger_quoting_the_tag_gets_own_ticket",
                mail("Re: [#7] printer"),
                Box::new(|m| from(m, "mallory@evil.test")),
                ctx_of(None, vec![t7(InTriage)]),
                policy(),
                Want::Stranger(7),
            ),
            (
                "stranger_quoting_our_message_id_gets_own_ticket",
                reply_mail("Re: printer"),
                Box::new(|m| from(m, "mallory@evil.test")),
                ctx_of(Some(7), vec![t7(InTriage)]),
                policy(),
                Want::Stranger(7),
            ),
            (
                "watcher_reply_all_is_a_customer_reply",
                reply_mail("Re: x"),
                Box::new(|m| from(m, WATCHER)),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "requester_address_compared_case_insensitively",
                reply_mail("Re: x"),
                Box::new(|m| from(m, "JANE@ACME.TEST")),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "same_domain_colleague_joins_as_watcher",
                reply_mail("AW: RE: x"),
                Box::new(|m| from(m, "carol@acme.test")),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "same_domain_joining_switched_off_is_a_stranger",
                reply_mail("Re: x"),
                Box::new(|m| from(m, "carol@acme.test")),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                Policy {
                    same_domain_joins: false,
                    ..policy()
                },
                Want::Stranger(7),
            ),
            (
                "same_domain_not_in_customers_is_a_stranger",
                reply_mail("Re: x"),
                Box::new(|m| from(m, "carol@acme.test")),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                Policy {
                    customers: vec![],
                    ..policy()
                },
                Want::Stranger(7),
            ),
            (
                "account_manager_joins_without_moving_status",
                reply_mail("Re: x"),
                Box::new(|m| from(m, "am@example.com")),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                reply(None),
            ),
            (
                "staff_domain_sender_joins_and_is_relayed_to_requester_and_watcher",
                reply_mail("Re: x"),
                Box::new(|m| from(m, "sam@example.com")),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                Want::Reply {
                    ticket: 7,
                    to: None,
                    mails: 2,
                },
            ),
            (
                "staff_address_outside_domains_joins_and_is_relayed",
                reply_mail("Re: x"),
                Box::new(|m| from(m, "contractor@freelance.test")),
                ctx_of(Some(7), vec![t7(EngineerPending)]),
                policy(),
                Want::Reply {
                    ticket: 7,
                    to: Some(CustomerPending),
                    mails: 2,
                },
            ),
            (
                "closed_within_window_reopens_and_tells_requester_and_watcher",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![closed(3)]),
                policy(),
                Want::Reply {
                    ticket: 7,
                    to: Some(EngineerPending),
                    mails: 2,
                },
            ),
            (
                "closed_exactly_at_window_still_reopens",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![closed(14)]),
                policy(),
                Want::Reply {
                    ticket: 7,
                    to: Some(EngineerPending),
                    mails: 2,
                },
            ),
            (
                "closed_past_window_opens_a_linked_ticket",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                ctx_of(Some(7), vec![closed(15)]),
                policy(),
                Want::NewLinked(7),
            ),
            (
                "closed_past_window_by_tag_opens_a_linked_ticket",
                mail("Re: [#7] x"),
                Box::new(|_| {}),
                ctx_of(None, vec![closed(40)]),
                policy(),
                Want::NewLinked(7),
            ),
            (
                "hash_close_closes_a_close_pending_ticket",
                reply_mail("Re: x"),
                Box::new(|m| m.text = "Works now, thanks.\n#close\n".into()),
                ctx_of(Some(7), vec![t7(ClosePending)]),
                policy(),
                reply(Some(Closed)),
            ),
            (
                "hash_close_from_a_watcher_closes",
                reply_mail("Re: x"),
                Box::new(|m| {
                    from(m, WATCHER);
                    m.text = "#CLOSE".into()
                }),
                ctx_of(Some(7), vec![t7(ClosePending)]),
                policy(),
                reply(Some(Closed)),
            ),
            (
                "hash_close_on_an_open_ticket_is_a_plain_reply",
                reply_mail("Re: x"),
                Box::new(|m| m.text = "#close".into()),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "hash_close_inside_a_sentence_does_not_count",
                reply_mail("Re: x"),
                Box::new(|m| m.text = "should I write #close here?".into()),
                ctx_of(Some(7), vec![t7(ClosePending)]),
                policy(),
                reply(Some(EngineerPending)),
            ),
            (
                "out_of_office_is_stored_and_changes_nothing",
                reply_mail("Automatic reply: x"),
                Box::new(|m| m.auto.auto_submitted = Some("auto-replied".into())),
                ctx_of(Some(7), vec![t7(CustomerPending)]),
                policy(),
                reply(None),
            ),
            (
                "out_of_office_does_not_reopen_a_closed_ticket",
                reply_mail("Out of office"),
                Box::new(|m| m.auto.x_autoreply = true),
                ctx_of(Some(7), vec![closed(2)]),
                policy(),
                reply(None),
            ),
            (
                "same_message_id_again_is_a_duplicate",
                reply_mail("Re: x"),
                Box::new(|_| {}),
                MailContext {
                    known_message: Some(Some(7)),
                    ..ctx_of(Some(7), vec![t7(InTriage)])
                },
                policy(),
                Want::Duplicate,
            ),
            (
                "bounce_lands_on_the_ticket_of_the_mail_it_returns",
                mail("Undelivered Mail"),
                Box::new(|m| m.report = Some(bounce_of(JANE))),
                ctx_of(Some(7), vec![t7(InTriage)]),
                policy(),
                Want::Report(Some(7)),
            ),
            (
                "bounce_of_unknown_mail_attaches_nowhere",
                mail("Undelivered Mail"),
                Box::new(|m| m.report = Some(bounce_of(JANE))),
                ctx_of(None, vec![]),
                policy(),
                Want::Report(None),
            ),
            (
                "bounce_with_the_tag_in_its_own_subject_attaches_nowhere_by_tag",
                mail("Undelivered: [#7] x"),
                Box::new(|m| m.report = Some(bounce_of(JANE))),
                ctx_of(None, vec![]),
                policy(),
                Want::Report(None),
            ),
        ];
        assert!(cases.len() >= 30);
        for (name, mut m, setup, ctx, policy, want) in cases {
            setup(&mut m);
            let d = decide(&m, &ctx, &policy, now());
            assert_eq!(summary(&d), want, "{name}: {}", d.reason);
            if matches!(d.action, Action::Reply(_)) {
                assert!(!d.acknowledge, "{name}: replies are never acknowledged");
            }
        }
    }

    fn bounce_of(address: &str) -> Report {
        Report {
            kind: ReportKind::Bounce,
            recipients: vec![FailedRecipient {
                address: address.into(),
                action: Some("failed".into()),
                status: Some("5.1.1".into()),
                diagnostic: Some("550 5.1.1 user unknown".into()),
            }],
            original_message_id: Some("postdesk.7.acknowledgement.x@example.com".into()),
            original_references: vec![],
            original_subject: None,
            reporting_mta: Some("mx.acme.test".into()),
        }
    }

    #[test]
    fn stranger_is_logged_on_both_tickets() {
        let mut m = mail("Re: [#7] me too");
        from(&mut m, "mallory@evil.test");
        let d = decide(
            &m,
            &ctx_of(None, vec![state(7, Status::InTriage, None)]),
            &policy(),
            now(),
        );
        let on: Vec<_> = d
            .events
            .iter()
            .filter(|e| e.kind == "stranger")
            .map(|e| (e.on, e.related))
            .collect();
        assert_eq!(
            on,
            vec![
                (Some(Target::Opened), Some(Target::Ticket(7))),
                (Some(Target::Ticket(7)), Some(Target::Opened))
            ]
        );
        assert!(d.acknowledge, "the stranger's own ticket is acknowledged");
        assert!(d.ignored.is_some_and(|i| i.contains("not a participant")));
    }

    #[test]
    fn colleague_joins_as_watcher_with_an_event() {
        let mut m = reply_mail("AW: RE: x");
        from(&mut m, "carol@acme.test");
        let d = decide(
            &m,
            &ctx_of(Some(7), vec![state(7, Status::CustomerPending, None)]),
            &policy(),
            now(),
        );
        assert_eq!(d.joiners.len(), 1);
        assert_eq!(d.joiners[0].role, Role::Watcher);
        assert!(
            d.events
                .iter()
                .any(|e| e.kind == "participant" && e.to.as_deref() == Some("watcher"))
        );
        assert_eq!(
            d.message.as_ref().map(|m| m.kind.as_str()),
            Some("customer")
        );
    }

    #[test]
    fn reopen_mails_each_customer_with_the_reopened_template() {
        let d = decide(
            &reply_mail("Re: x"),
            &ctx_of(Some(7), vec![state(7, Status::Closed, Some(1))]),
            &policy(),
            now(),
        );
        let to: Vec<_> = customer_mails(&d)
            .iter()
            .map(|p| (p.template, p.to.address.as_str()))
            .collect();
        assert_eq!(
            to,
            vec![(Template::Reopened, JANE), (Template::Reopened, WATCHER)]
        );
        assert!(
            d.events
                .iter()
                .any(|e| e.kind == "reopened" && e.from.as_deref() == Some("closed"))
        );
    }

    #[test]
    fn reply_text_is_what_is_stored_and_first_message_is_whole() {
        let mut m = reply_mail("Re: x");
        m.text = "It works.\n".into();
        let d = decide(
            &m,
            &ctx_of(Some(7), vec![state(7, Status::InTriage, None)]),
            &policy(),
            now(),
        );
        assert_eq!(d.message.map(|s| s.text), Some("It works.".to_string()));
        let mut first = mail("SEV 3 x");
        first.text = "Problem\n\n> forwarded thread\n".into();
        let d = decide(&first, &MailContext::default(), &policy(), now());
        assert_eq!(
            d.message.map(|s| s.text),
            Some("Problem\n\n> forwarded thread\n".to_string())
        );
    }

    #[test]
    fn bounce_of_the_requester_flags_the_ticket_and_a_watcher_does_not() {
        let mut m = mail("Undelivered");
        m.report = Some(bounce_of(JANE));
        let ctx = ctx_of(Some(7), vec![state(7, Status::InTriage, None)]);
        let d = decide(&m, &ctx, &policy(), now());
        assert!(d.requester_bounced && !d.acknowledge);
        // Triage hears of it, as a delivery-failure notice, the first time only.
        assert_eq!(
            d.outbound
                .iter()
                .map(|p| (p.template, p.to.address.as_str(), p.notice))
                .collect::<Vec<_>>(),
            vec![(
                Template::DeliveryFailure,
                "triage@example.com",
                Some(Notice::RequesterBounced)
            )]
        );
        let mut flagged = ctx.clone();
        flagged.tickets[0].requester_bounced = true;
        let again = decide(&m, &flagged, &policy(), now());
        assert!(again.requester_bounced && again.outbound.is_empty());
        assert!(
            d.events
                .iter()
                .any(|e| e.kind == "bounce" && e.reason.contains("5.1.1"))
        );
        m.report = Some(bounce_of(WATCHER));
        let d = decide(&m, &ctx, &policy(), now());
        assert!(!d.requester_bounced);
        // A success notice about the requester is a report on the ticket, not a bounce.
        let mut delivered = bounce_of(JANE);
        delivered.kind = ReportKind::Other;
        delivered.recipients[0].action = Some("delivered".into());
        m.report = Some(delivered);
        let d = decide(&m, &ctx, &policy(), now());
        assert!(!d.requester_bounced);
        assert!(
            d.events
                .iter()
                .any(|e| e.kind == "report" && e.reason.contains("(delivered)")),
            "{:?}",
            d.events
        );
    }
}
