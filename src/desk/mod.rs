//! The pure decision core: everything SPEC.md says about what postdesk does with a message,
//! without IO and with `now` passed in.

pub mod commands;
pub mod decide;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod loops;
pub mod notify;
pub mod severity;
mod staff;
pub mod status;
pub mod thread;
pub mod ticket;

pub use decide::{
    Action, CustomerDomain, Decision, Joiner, MailContext, NewTicket, Notice, PlannedEvent,
    PlannedMail, Policy, Reply, ReplyKind, ReportOn, StaffAuth, StatusChange, StoredMessage,
    Target, TicketUpdate, Visibility, decide, decide_parsed,
};
pub use severity::{DowngradeMap, Severity, SeverityReading};
pub use status::{Status, StatusEvent};
pub use thread::{MatchedBy, ThreadKeys, Threading};
pub use ticket::{Member, Role, TicketState};
