//! Sources of inbound mail. They only move bytes and acknowledge: a message is marked done
//! after the store committed it.

pub mod imap;
pub mod lead;
pub mod maildir;
pub mod pipe;
pub mod reader;

pub use maildir::Maildir;
