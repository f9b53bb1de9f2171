//! A ticket as the decision core sees it (SPEC: People and addresses): who takes part and in
//! which role, and the state the rules read (status, severity, when it closed).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::severity::SeverityReading;
use super::status::Status;
use crate::mail::Mailbox;

/// How someone takes part in a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The customer who opened it.
    Requester,
    /// A customer on Cc, or a colleague who joined: receives public updates.
    Watcher,
    /// An engineer.
    Staff,
    /// The customer's account manager (`[[customers]] account_manager`).
    AccountManager,
}

impl Role {
    /// The stored name (`requester`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Requester => "requester",
            Role::Watcher => "watcher",
            Role::Staff => "staff",
            Role::AccountManager => "account_manager",
        }
    }

    /// Whether this role is the customer's side (requester or watcher).
    pub fn is_customer(self) -> bool {
        matches!(self, Role::Requester | Role::Watcher)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}`: expected requester, watcher, staff or account_manager")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "requester" => Ok(Role::Requester),
            "watcher" => Ok(Role::Watcher),
            "staff" => Ok(Role::Staff),
            "account_manager" => Ok(Role::AccountManager),
            _ => Err(UnknownRole(s.to_string())),
        }
    }
}

/// One participant of an existing ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Address, lower-cased.
    pub address: String,
    /// Display name.
    pub name: Option<String>,
    /// Role.
    pub role: Role,
}

impl Member {
    /// The participant as a mail address with its display name.
    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            name: self.name.clone(),
            address: self.address.clone(),
        }
    }
}

/// What the store knows of an existing ticket when a message names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketState {
    /// The ticket number.
    pub number: i64,
    /// Where it stands.
    pub status: Status,
    /// The severity asked for and the one it has.
    pub severity: SeverityReading,
    /// The subject on one line.
    pub subject: String,
    /// Everyone taking part (the requester among them).
    pub participants: Vec<Member>,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it was last closed (None while open).
    pub closed_at: Option<DateTime<Utc>>,
    /// The engineer the ticket is assigned to (`#assign`), lower-cased.
    pub assignee: Option<String>,
    /// When the first public engineer reply went out (the response clock), if it did.
    pub first_response_at: Option<DateTime<Utc>>,
    /// Message-IDs of the customer conversation (public inbound mail), oldest first: the first
    /// message and the latest ones. A relayed engineer reply threads into them.
    pub conversation: Vec<String>,
    /// A bounce already showed the requester's address fails.
    pub requester_bounced: bool,
    /// The SLA clocks as stored.
    pub clocks: Clocks,
}

/// A ticket's SLA clocks as stored: deadlines, the time-driven status rules' due times, and
/// which one-time notices went out (SPEC: SLA, Statuses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Clocks {
    /// When the current status began.
    pub status_since: Option<DateTime<Utc>>,
    /// The first public engineer reply is due.
    pub response_due: Option<DateTime<Utc>>,
    /// Close pending or closed is due.
    pub resolution_due: Option<DateTime<Utc>>,
    /// The ticket escalates if still unresolved.
    pub escalation_due: Option<DateTime<Utc>>,
    /// The next status update is due.
    pub update_due: Option<DateTime<Utc>>,
    /// Customer pending: the reminder is due.
    pub reminder_due: Option<DateTime<Utc>>,
    /// Customer pending: close pending after silence is due.
    pub close_pending_due: Option<DateTime<Utc>>,
    /// Close pending: closing is due.
    pub auto_close_due: Option<DateTime<Utc>>,
    /// When it escalated.
    pub escalated_at: Option<DateTime<Utc>>,
    /// When triage was told the response deadline passed.
    pub response_breach_at: Option<DateTime<Utc>>,
    /// When triage was told the resolution deadline passed.
    pub resolution_breach_at: Option<DateTime<Utc>>,
    /// When it reached close pending or closed.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When the last public message went out.
    pub last_public_out: Option<DateTime<Utc>>,
    /// Open time waited on the customer so far (added back to the deadlines).
    pub paused: chrono::Duration,
}

impl TicketState {
    /// The role of an address in this ticket (compared case-insensitively).
    pub fn role_of(&self, address: &str) -> Option<Role> {
        self.participants
            .iter()
            .find(|m| m.address.eq_ignore_ascii_case(address))
            .map(|m| m.role)
    }

    /// The requester's address.
    pub fn requester(&self) -> Option<&Member> {
        self.participants.iter().find(|m| m.role == Role::Requester)
    }

    /// The mail domain of the requester.
    pub fn requester_domain(&self) -> Option<&str> {
        self.requester()
            .and_then(|r| r.address.rsplit_once('@'))
            .map(|(_, d)| d)
    }

    /// The customer side: requester first, then watchers.
    pub fn customers(&self) -> impl Iterator<Item = &Member> {
        self.participants
            .iter()
            .filter(|m| m.role == Role::Requester)
            .chain(self.participants.iter().filter(|m| m.role == Role::Watcher))
    }
}
