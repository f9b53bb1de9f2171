//! Outbound mail: rendering templates, composing RFC 5322 messages, and delivering the outbox.

pub mod compose;
pub mod context;
pub mod deliver;
pub mod digest;
pub mod html_text;
pub mod preview;
pub mod sample;
pub mod sanitize;
pub mod templates;
pub mod watch;
