//! postdesk: a support desk that runs on email.
//!
//! The path of every message is visible in the module layout:
//! `inbound` (maildir, stdin) -> `mail::parse` -> `desk::decide` -> `store` (one transaction)
//! -> `outbound` (outbox sender). `pipeline` wires one message (or a batch) through those steps.

pub mod bench;
pub mod config;
pub mod desk;
pub mod http;
pub mod inbound;
pub mod mail;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod shutdown;
pub mod sla;
pub mod store;
pub mod supervise;
pub mod tls;
pub mod worker;
