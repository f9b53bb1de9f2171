//! Process-wide counters and gauges for `/metrics` (Prometheus text format) and `/healthz`.
//!
//! Plain atomics: the hot path pays one relaxed add per message. Gauges that come from the
//! database (outbox depth, oldest unsent mail) are read when `/metrics` is scraped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The IMAP connection state, as exported in `postdesk_imap_connection_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum ImapState {
    /// No IMAP source configured (maildir).
    NotUsed = -1,
    /// Not connected (waiting to reconnect).
    Disconnected = 0,
    /// Connecting or logging in.
    Connecting = 1,
    /// Connected, fetching or waiting in IDLE/poll.
    Connected = 2,
    /// Another worker reads the mailbox; this one takes over if it stops.
    StandingBy = 3,
}

impl ImapState {
    /// The label used in logs and in `/healthz`.
    pub fn label(self) -> &'static str {
        match self {
            ImapState::NotUsed => "not_used",
            ImapState::Disconnected => "disconnected",
            ImapState::Connecting => "connecting",
            ImapState::Connected => "connected",
            ImapState::StandingBy => "standing_by",
        }
    }

    fn from_i64(v: i64) -> ImapState {
        match v {
            0 => ImapState::Disconnected,
            1 => ImapState::Connecting,
            2 => ImapState::Connected,
            3 => ImapState::StandingBy,
            _ => ImapState::NotUsed,
        }
    }
}

/// All counters of this process.
#[derive(Debug)]
pub struct Metrics {
    /// Messages taken from the mailbox (any outcome, committed).
    pub messages_taken: AtomicU64,
    /// Messages quarantined.
    pub messages_quarantined: AtomicU64,
    /// Outbound mails delivered.
    pub mails_sent: AtomicU64,
    /// Outbound mail attempts that failed temporarily (will be retried).
    pub mail_retries: AtomicU64,
    /// Outbound mails that failed permanently.
    pub mails_failed: AtomicU64,
    /// IMAP (re)connections made.
    pub imap_connects: AtomicU64,
    /// IMAP connection state (see [`ImapState`]).
    imap_state: AtomicI64,
    /// Template files that currently fail to load (0 when all are good).
    pub templates_broken: AtomicU64,
    /// Successful template reloads.
    pub templates_reloads: AtomicU64,
    /// When the SLA clock last swept, in Unix seconds (0: never, or no clock in this process).
    pub last_tick: AtomicI64,
    /// SLA breaches reported, per kind (response, resolution) and severity 1-4.
    pub breaches: [[AtomicU64; 4]; 2],
    /// Tickets escalated by the clock.
    pub escalations: AtomicU64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    messages_taken: AtomicU64::new(0),
    messages_quarantined: AtomicU64::new(0),
    mails_sent: AtomicU64::new(0),
    mail_retries: AtomicU64::new(0),
    mails_failed: AtomicU64::new(0),
    imap_connects: AtomicU64::new(0),
    imap_state: AtomicI64::new(ImapState::NotUsed as i64),
    templates_broken: AtomicU64::new(0),
    templates_reloads: AtomicU64::new(0),
    last_tick: AtomicI64::new(0),
    breaches: [
        [
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
        ],
        [
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
        ],
    ],
    escalations: AtomicU64::new(0),
};

impl Metrics {
    /// Sets the IMAP connection state.
    pub fn set_imap_state(&self, state: ImapState) {
        self.imap_state.store(state as i64, Ordering::Relaxed);
    }

    /// The IMAP connection state.
    pub fn imap_state(&self) -> ImapState {
        ImapState::from_i64(self.imap_state.load(Ordering::Relaxed))
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
