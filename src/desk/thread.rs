//! Which ticket a message joins, and why (SPEC: Threading, People and addresses).
//!
//! Order: (1) `In-Reply-To`/`References` name a Message-ID postdesk stored or sent for a ticket;
//! (2) the subject carries the ticket tag; (3) a new ticket. A match only lets a participant in:
//! the requester, watchers, staff, the customer's account manager, or (when configured) a
//! colleague from the requester's own `[[customers]]` domain, who joins as a watcher. A stranger
//! who quotes a tag or one of our Message-IDs opens a ticket of their own. A reply to a closed
//! ticket reopens it within `threading.reopen_window`, and after that opens a new ticket linked
//! to the old one.
//!
//! The store looks up the keys (`ThreadKeys`) and loads the state of the tickets they name into
//! `MailContext`; `thread` then chooses without IO.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::decide::{MailContext, Policy};
use super::status::Status;
use super::ticket::{Role, TicketState};
use crate::mail::InboundMail;
use crate::mail::subject::ticket_tag;

/// What the store must look up before a decision: Message-IDs the mail refers to, in the order
/// they are tried, and the ticket number its subject tag names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadKeys {
    /// Message-IDs, most telling first: `In-Reply-To`, then `References` newest first; for a
    /// report, the returned original's Message-ID and references first.
    pub message_ids: Vec<String>,
    /// The ticket number of the subject tag (a report: of the returned original's subject).
    pub tag: Option<i64>,
}

/// The most Message-IDs looked up for one message.
const MAX_KEYS: usize = 50;

/// The keys of a mail.
pub fn keys(mail: &InboundMail, tag_prefix: &str) -> ThreadKeys {
    let mut ids: Vec<&str> = Vec::new();
    let tag = match &mail.report {
        Some(report) => {
            ids.extend(report.original_message_id.as_deref());
            ids.extend(report.original_references.iter().rev().map(String::as_str));
            report
                .original_subject
                .as_deref()
                .and_then(|s| ticket_tag(s, tag_prefix))
        }
        None => ticket_tag(&mail.subject, tag_prefix),
    };
    ids.extend(mail.in_reply_to.iter().map(String::as_str));
    ids.extend(mail.references.iter().rev().map(String::as_str));
    let mut message_ids: Vec<String> = Vec::new();
    for id in ids {
        if id != mail.message_id && !message_ids.iter().any(|k| k == id) {
            message_ids.push(id.to_string());
        }
        if message_ids.len() == MAX_KEYS {
            break;
        }
    }
    ThreadKeys { message_ids, tag }
}

/// How a message was matched to a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum MatchedBy {
    /// `In-Reply-To` or `References` named this Message-ID of the ticket.
    Header {
        /// The Message-ID named.
        message_id: String,
    },
    /// The subject carried the ticket tag.
    Tag {
        /// The ticket number in the tag.
        ticket: i64,
    },
}

impl MatchedBy {
    /// Words for the history and `explain`.
    pub fn describe(&self) -> String {
        match self {
            MatchedBy::Header { message_id } => {
                format!("In-Reply-To/References names <{message_id}>")
            }
            MatchedBy::Tag { ticket } => format!("the subject carries the tag of #{ticket}"),
        }
    }
}

/// Where a (non-report) message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Threading {
    /// Nothing names a ticket: a new one.
    New,
    /// The subject tag names a ticket that does not exist: a new ticket.
    UnknownTicket {
        /// The number in the tag.
        tag: i64,
    },
    /// A participant (or a newly joined colleague, staff or account manager) adds to a ticket.
    Join {
        /// The ticket's state.
        ticket: Box<TicketState>,
        /// How it matched.
        by: MatchedBy,
        /// The sender's role in it.
        role: Role,
        /// True when the sender joins the ticket with this message (not yet a participant).
        joins: bool,
        /// True when the ticket is closed and this reply reopens it (within the window).
        reopens: bool,
    },
    /// A sender who is not a participant named the ticket: a ticket of their own.
    Stranger {
        /// The ticket named.
        ticket: i64,
        /// How.
        by: MatchedBy,
    },
    /// A customer wrote to a ticket closed longer ago than the reopen window: a new ticket that
    /// links the old one.
    ClosedPastWindow {
        /// The closed ticket.
        ticket: i64,
        /// How it matched.
        by: MatchedBy,
        /// When it closed.
        closed_at: DateTime<Utc>,
    },
}

/// Chooses the ticket a message joins.
pub fn thread(
    mail: &InboundMail,
    ctx: &MailContext,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Threading {
    let tag = ticket_tag(&mail.subject, &policy.tag_prefix);
    let matched = match &ctx.header_match {
        Some((number, message_id)) => ctx.ticket(*number).map(|t| {
            (
                t,
                MatchedBy::Header {
                    message_id: message_id.clone(),
                },
            )
        }),
        None => tag.and_then(|n| ctx.ticket(n).map(|t| (t, MatchedBy::Tag { ticket: n }))),
    };
    let Some((ticket, by)) = matched else {
        return match tag {
            Some(tag) if ctx.header_match.is_none() => Threading::UnknownTicket { tag },
            _ => Threading::New,
        };
    };
    let trusted = policy.trusts(&ctx.staff_auth);
    let Some((role, joins)) = sender_role(ticket, mail, policy, trusted) else {
        return Threading::Stranger {
            ticket: ticket.number,
            by,
        };
    };
    let mut reopens = false;
    if ticket.status == Status::Closed && role.is_customer() {
        let closed_at = ticket.closed_at.unwrap_or(ticket.created_at);
        if now - closed_at > policy.reopen_window {
            return Threading::ClosedPastWindow {
                ticket: ticket.number,
                by,
                closed_at,
            };
        }
        reopens = true;
    }
    Threading::Join {
        ticket: Box::new(ticket.clone()),
        by,
        role,
        joins,
        reopens,
    }
}

/// The sender's role in a ticket, and whether they join with this message; None for a stranger.
/// The sender's role, and whether they join with this mail. `trusted` is false when staff must
/// authenticate and this mail did not: then the staff and account-manager roles are not
/// granted (a forged From gets no further than a stranger).
fn sender_role(
    ticket: &TicketState,
    mail: &InboundMail,
    policy: &Policy,
    trusted: bool,
) -> Option<(Role, bool)> {
    let sender = mail.from.key();
    if let Some(role) = ticket.role_of(&sender) {
        return (role.is_customer() || trusted).then_some((role, false));
    }
    if !trusted && policy.needs_authentication(&sender) {
        return None;
    }
    let requester_domain = ticket
        .requester()
        .and_then(|r| r.address.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let customer = policy
        .customers
        .iter()
        .find(|c| c.domain == requester_domain);
    if customer
        .and_then(|c| c.account_manager.as_deref())
        .is_some_and(|am| am.eq_ignore_ascii_case(&sender))
    {
        return Some((Role::AccountManager, true));
    }
    if policy.is_staff(&sender) {
        return Some((Role::Staff, true));
    }
    (customer.is_some() && policy.same_domain_joins && mail.from.domain() == requester_domain)
        .then_some((Role::Watcher, true))
}
