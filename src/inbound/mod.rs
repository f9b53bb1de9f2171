//! Sources of inbound mail. They only move bytes and acknowledge: a message is marked done
//! after the store committed it.

pub mod imap;
pub mod maildir;
pub mod pipe;

pub use maildir::Maildir;
