//! The pure decision core: everything SPEC.md says about what postdesk does with a message,
//! without IO and with `now` passed in.

pub mod decide;
pub mod loops;
pub mod severity;
pub mod status;

pub use decide::{
    Action, Decision, MailContext, NewTicket, PlannedMail, Policy, decide, decide_parsed,
};
pub use severity::{DowngradeMap, Severity, SeverityReading};
pub use status::Status;
