//! Outbound mail: rendering templates, composing RFC 5322 messages, and delivering the outbox.

pub mod compose;
pub mod outbox;
pub mod smtp;
pub mod templates;
