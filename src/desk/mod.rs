//! The pure decision core: everything SPEC.md says about what postdesk does with a message,
//! without IO and with `now` passed in.

pub mod decide;
pub mod loops;
pub mod severity;
pub mod status;
pub mod thread;
pub mod ticket;

pub use decide::{
    Action, CustomerDomain, Decision, Joiner, MailContext, NewTicket, PlannedEvent, PlannedMail,
    Policy, Reply, ReportOn, StatusChange, StoredMessage, Target, Visibility, decide,
    decide_parsed,
};
pub use severity::{DowngradeMap, Severity, SeverityReading};
pub use status::{Status, StatusEvent};
pub use thread::{MatchedBy, ThreadKeys, Threading};
pub use ticket::{Member, Role, TicketState};
