//! Turning raw bytes into a plain `InboundMail` value: parsing, addresses and the subject rules.

pub mod auth;
pub mod dkim;
pub mod dsn;
pub mod limits;
pub mod parse;
pub mod quote;
pub mod subject;

pub use limits::{Limits, parse_within};
pub use parse::{Attachment, AutoSignals, InboundMail, Mailbox, QuarantineReason, parse};
