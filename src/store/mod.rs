//! The ticket store: one `Store` trait with a SQLite and a PostgreSQL implementation that pass
//! the same test suite (SPEC: Outbound mail, "Nothing is lost").
//!
//! A decision is applied through a `StoreTx`: the ticket, its participants, the message, the
//! history events and the outbox rows are written in one transaction, so a crash at any point
//! leaves either all of them or none. Both backends share their SQL through the `sql_store!`
//! macro in `sql.rs`; only connecting, migrating and how a write transaction begins differ.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::desk::{Decision, MailContext, Status, ThreadKeys};
use crate::mail::InboundMail;

#[macro_use]
mod sql;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A writer's turn: held for the life of a write transaction where the backend has one writer
/// at a time (SQLite), so that writers in one process queue on a fair async lock instead of
/// SQLite's sleep-and-retry busy handler.
pub type WriterTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

/// What went wrong in the store, and whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is busy, locked or unreachable: try again later (ingest exits 75).
    #[error("database temporarily unavailable: {0}")]
    Unavailable(String),
    /// The thing asked for does not exist.
    #[error("not found")]
    NotFound,
    /// Migrations failed: the schema is not what this postdesk expects.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
    /// A command that only reads found no database at the URL (it never creates one).
    #[error(
        "database {0} does not exist (set database.url or POSTDESK_DATABASE_URL; `postdesk migrate` creates it)"
    )]
    Missing(String),
}

/// `e` from opening the database at `url`, saying which one (the password hidden).
pub(crate) fn naming_url(url: &str, e: StoreError) -> StoreError {
    let url = crate::config::redact_url_password(url);
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("cannot open {url}: {m}")),
        StoreError::Database(m) => StoreError::Database(format!("cannot open {url}: {m}")),
        StoreError::Migrate(m) => StoreError::Migrate(format!("{url}: {m}")),
        other => other,
    }
}

impl StoreError {
    /// True when the same work may succeed later without any change (busy, locked, down).
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(db) => {
                // SQLite: 5 BUSY, 6 LOCKED (extended codes keep the low byte);
                // PostgreSQL: class 08 connection, 53 resources, 57P0x shutdown, 40001/40P01 retry.
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                let sqlite_busy = sqlite_busy(&code);
                let pg_temporary = code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P0")
                    || code == "40001"
                    || code == "40P01";
                if sqlite_busy || pg_temporary {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Database(e.to_string())
                }
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// SQLite's BUSY (5) or LOCKED (6), with any extended code (they keep the low byte).
pub(crate) fn sqlite_busy(code: &str) -> bool {
    code.parse::<i64>()
        .map(|n| matches!(n & 0xff, 5 | 6))
        .unwrap_or(false)
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e.to_string())
    }
}

/// One inbound message as the store keeps it.
#[derive(Debug, Clone, Copy)]
pub struct InboundRecord<'a> {
    /// The original bytes, kept whole.
    pub raw: &'a [u8],
    /// What was parsed from them (None: it did not parse and goes to quarantine).
    pub mail: Option<&'a InboundMail>,
    /// Where it came from (`maildir:...`, `stdin`).
    pub source: &'a str,
}

/// One planned mail once rendered for a ticket: the outbox row (None when rendering failed) and
/// the history event that says so.
#[derive(Debug, Clone)]
pub struct RenderedMail {
    /// The mail to queue.
    pub mail: Option<QueuedMail>,
    /// `outbound` ("acknowledgement queued") or `outbound_failed` with the reason.
    pub event: Event,
}

/// Renders the decision's planned mails once the ticket number is known (a new ticket's number
/// exists only after its row is inserted, inside `apply`).
pub type RenderFn<'a> = dyn FnMut(i64) -> Vec<RenderedMail> + Send + 'a;

/// A rendered mail to put in the outbox.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    /// The ticket it belongs to.
    pub ticket: Option<i64>,
    /// The Message-ID it is sent with (without brackets).
    pub message_id: String,
    /// The template that rendered it.
    pub template: String,
    /// The recipient address.
    pub to: String,
    /// Whether it is an automatic reply (counts toward the RFC 3834 rate limit).
    pub automatic: bool,
    /// The complete RFC 5322 message.
    pub rendered: Vec<u8>,
}

/// An outbox row that is due for delivery.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// Row id.
    pub id: i64,
    /// The ticket it belongs to.
    pub ticket: Option<i64>,
    /// The Message-ID it is sent with.
    pub message_id: String,
    /// The recipient address.
    pub to: String,
    /// The complete message.
    pub rendered: Vec<u8>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The template it was rendered from.
    pub template: String,
}

/// Where an IMAP source stands: the mailbox's UIDVALIDITY and the highest UID that existed when
/// postdesk first saw the mailbox (messages at or below it follow `mailbox.on_first_start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceState {
    /// The mailbox's UIDVALIDITY when the state was written.
    pub uid_validity: u32,
    /// The highest UID present at first start (0: none).
    pub first_start_uid: u32,
}

/// One line of `tickets list`.
#[derive(Debug, Clone, Serialize)]
pub struct TicketSummary {
    /// The ticket number.
    pub number: i64,
    /// The subject on one line.
    pub subject: String,
    /// The requester's address.
    pub requester: String,
    /// The requester's display name.
    pub requester_name: Option<String>,
    /// Current status.
    pub status: String,
    /// Severity the subject asked for.
    pub requested_severity: Option<i64>,
    /// Severity the ticket has.
    pub assigned_severity: i64,
    /// The older ticket this one continues.
    pub linked_ticket: Option<i64>,
    /// True when a bounce said the requester's address fails.
    pub requester_bounced: bool,
    /// When it was closed (None while open).
    pub closed_at: Option<DateTime<Utc>>,
    /// The engineer it is assigned to.
    pub assignee: Option<String>,
    /// When the first public engineer reply went out.
    pub first_response_at: Option<DateTime<Utc>>,
    /// When it reached close pending or closed (since it was last open).
    pub resolved_at: Option<DateTime<Utc>>,
    /// The first public engineer reply is due (SLA).
    pub response_due_at: Option<DateTime<Utc>>,
    /// Close pending or closed is due (SLA).
    pub resolution_due_at: Option<DateTime<Utc>>,
    /// The ticket escalates if still unresolved (SLA).
    pub escalation_due_at: Option<DateTime<Utc>>,
    /// The next status update is due (SLA).
    pub update_due_at: Option<DateTime<Utc>>,
    /// Customer pending: the reminder is due.
    pub reminder_due_at: Option<DateTime<Utc>>,
    /// Customer pending: close pending after silence is due.
    pub close_pending_due_at: Option<DateTime<Utc>>,
    /// Close pending: closing by itself is due.
    pub auto_close_due_at: Option<DateTime<Utc>>,
    /// When it escalated.
    pub escalated_at: Option<DateTime<Utc>>,
    /// When triage was told the response deadline passed.
    pub response_breach_at: Option<DateTime<Utc>>,
    /// When triage was told the resolution deadline passed.
    pub resolution_breach_at: Option<DateTime<Utc>>,
    /// When the current status began.
    pub status_since: Option<DateTime<Utc>>,
    /// When the last public message went out.
    pub last_public_out_at: Option<DateTime<Utc>>,
    /// False when the subject named no severity.
    pub severity_given: bool,
    /// True when email asked for Sev 1/2.
    pub downgraded: bool,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl TicketSummary {
    /// The next SLA deadline still running: `(kind, due)` with kind `response`, `resolution`,
    /// `escalation` or `update` (a status update while the ticket is with us).
    pub fn next_deadline(&self) -> Option<(&'static str, DateTime<Utc>)> {
        let status = self.status.parse::<crate::desk::Status>().ok();
        let resolved = status.is_some_and(crate::desk::Status::is_resolved);
        let with_us = status.is_some_and(crate::sla::clock::with_us);
        [
            (
                "response",
                self.response_due_at
                    .filter(|_| self.first_response_at.is_none() && !resolved),
            ),
            ("resolution", self.resolution_due_at.filter(|_| !resolved)),
            ("escalation", self.escalation_due_at.filter(|_| !resolved)),
            ("update", self.update_due_at.filter(|_| with_us)),
        ]
        .into_iter()
        .filter_map(|(k, due)| due.map(|d| (k, d)))
        .min_by_key(|(_, d)| *d)
    }
}

/// A participant of a ticket.
#[derive(Debug, Clone, Serialize)]
pub struct Participant {
    /// Address, lower-cased.
    pub address: String,
    /// Display name.
    pub name: Option<String>,
    /// requester, watcher, staff or account_manager.
    pub role: String,
}

/// An attachment of a stored message; its bytes are `raw[offset_body..offset_end]` of the
/// message, in `transfer_encoding`.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentSummary {
    /// Position among the message's attachments.
    pub position: i64,
    /// File name.
    pub filename: Option<String>,
    /// `type/subtype`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: i64,
    /// Content-ID.
    pub content_id: Option<String>,
    /// Shown inline rather than attached.
    pub inline: bool,
    /// Start of the encoded body in the raw message.
    pub offset_body: i64,
    /// End of it.
    pub offset_end: i64,
    /// `base64`, `quoted-printable`, `7bit`, ...
    pub transfer_encoding: String,
}

/// A stored message, without its bytes.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    /// The Message-ID.
    pub message_id: String,
    /// inbound or outbound.
    pub direction: String,
    /// public or internal.
    pub visibility: String,
    /// customer, auto_reply, bounce, ...
    pub kind: String,
    /// Sender address.
    pub from: String,
    /// Subject.
    pub subject: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Size of the raw message in bytes.
    pub size: i64,
    /// The readable text (a reply: without quoted history and signature).
    pub text: String,
    /// Its attachments.
    pub attachments: Vec<AttachmentSummary>,
}

/// One change in a ticket's history.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (an address, or `postdesk`).
    pub actor: String,
    /// What kind of change.
    pub kind: String,
    /// Value before.
    pub from: Option<String>,
    /// Value after.
    pub to: Option<String>,
    /// Why.
    pub reason: String,
    /// The other ticket it concerns (a stranger's ticket, a linked ticket).
    pub related_ticket: Option<i64>,
}

/// One outbox row, as `tickets show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxSummary {
    /// Row id.
    pub id: i64,
    /// The Message-ID sent.
    pub message_id: String,
    /// The template.
    pub template: String,
    /// The recipient.
    pub to: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
    /// When delivery was given up.
    pub failed_at: Option<DateTime<Utc>>,
    /// The last delivery error.
    pub last_error: Option<String>,
}

/// Everything `tickets show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct TicketDetail {
    /// The ticket itself.
    pub ticket: TicketSummary,
    /// Requester, watchers, staff.
    pub participants: Vec<Participant>,
    /// Messages in arrival order.
    pub messages: Vec<MessageSummary>,
    /// History.
    pub history: Vec<Event>,
    /// Outbound mail.
    pub outbox: Vec<OutboxSummary>,
}

/// Totals for tests, benchmarks and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Tickets.
    pub tickets: i64,
    /// Stored messages.
    pub messages: i64,
    /// Outbox rows not yet sent or failed.
    pub outbox_pending: i64,
    /// Outbox rows sent.
    pub outbox_sent: i64,
    /// Quarantined messages.
    pub quarantined: i64,
}

/// Mail waiting in the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxBacklog {
    /// Rows neither sent nor failed.
    pub pending: i64,
    /// When the oldest of them was queued (None: nothing waits).
    pub oldest: Option<DateTime<Utc>>,
}

/// The ticket store.
pub trait Store: Clone + Send + Sync + 'static {
    /// The write transaction type.
    type Tx: StoreTx;
    /// Brings the schema up to date.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Starts a write transaction (SQLite: `BEGIN IMMEDIATE`).
    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;
    /// What the store knows about a message, read without writing (for `explain`).
    fn peek_context(
        &self,
        mail: &InboundMail,
        keys: &ThreadKeys,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<MailContext, StoreError>> + Send;
    /// Tickets, newest first, optionally of one status.
    fn list_tickets(
        &self,
        status: Option<Status>,
    ) -> impl Future<Output = Result<Vec<TicketSummary>, StoreError>> + Send;
    /// One ticket with everything about it.
    fn ticket_detail(
        &self,
        number: i64,
    ) -> impl Future<Output = Result<TicketDetail, StoreError>> + Send;
    /// Claims up to `limit` outbox rows due at `now` for `owner` until `until` (a lease), oldest
    /// first: rows nobody holds, and rows whose lease has run out (their worker died). Two
    /// claimers never get the same row (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    fn claim_outbox(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;
    /// Marks rows delivered, those `owner` holds (and any not held by anyone: a hand-over
    /// journal names rows whose lease may have been released); returns how many it marked.
    fn mark_sent(
        &self,
        owner: &str,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Records a failed attempt on a row `owner` holds; `retry_at` None gives up (permanent
    /// failure). False when `owner` does not hold it (its lease ran out and another took it).
    fn mark_attempt_failed(
        &self,
        owner: &str,
        id: i64,
        error: &str,
        now: DateTime<Utc>,
        retry_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Gives back every row `owner` holds and has not finished (a worker stopping, or a dead
    /// worker's rows taken over early); returns how many.
    fn release_outbox(&self, owner: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Totals.
    fn counts(&self) -> impl Future<Output = Result<Counts, StoreError>> + Send;
    /// Mail waiting in the outbox: how many, and when the oldest was queued (one cheap query,
    /// for `/metrics` and `/healthz`).
    fn outbox_backlog(&self) -> impl Future<Output = Result<OutboxBacklog, StoreError>> + Send;
    /// The saved state of a mailbox source (`imap://user@host/INBOX`).
    fn source_state(
        &self,
        source: &str,
    ) -> impl Future<Output = Result<Option<SourceState>, StoreError>> + Send;
    /// Takes or renews the lease on reading mailbox `source` for `owner` until `until`: true
    /// when `owner` holds it now (it was free, theirs, or run out at `now`).
    fn lead_source(
        &self,
        source: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Takes the lease on `source` from `from` (a worker known to be gone) for `owner` until
    /// `until`; false when `from` no longer holds it.
    fn take_over_source(
        &self,
        source: &str,
        from: &str,
        owner: &str,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Gives up `owner`'s lease on `source` (a clean stop), so another worker takes over at once.
    fn release_source(
        &self,
        source: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Who holds the lease on `source` at `now`, if anyone.
    fn source_leader(
        &self,
        source: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Saves the state of a mailbox source.
    fn set_source_state(
        &self,
        source: &str,
        state: SourceState,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A write transaction: everything one decision changes, committed together.
pub trait StoreTx: Send {
    /// What the store knows about the message: is it a duplicate, how many automatic replies
    /// its sender got lately, which ticket its headers name, and the state of the tickets its
    /// keys name. On PostgreSQL those ticket rows are locked until the transaction ends, so two
    /// writers cannot interleave decisions on one ticket.
    fn context(
        &mut self,
        mail: &InboundMail,
        keys: &ThreadKeys,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<MailContext, StoreError>> + Send;
    /// The tickets whose SLA clock is due at `now` with a number above `after` (at most
    /// `limit`, in id order), with their state; `paused`: customer-pending tickets neither
    /// escalate nor breach. On PostgreSQL the rows are locked until the transaction ends and rows
    /// another sweep holds are skipped, so two workers never act on one ticket twice.
    fn due_tickets(
        &mut self,
        now: DateTime<Utc>,
        after: i64,
        limit: i64,
        paused: bool,
    ) -> impl Future<Output = Result<Vec<crate::desk::TicketState>, StoreError>> + Send;
    /// Applies a decision: the ticket it opens or changes, participants, the message and its
    /// attachments (or the quarantined bytes), history events, and the planned mails `render`
    /// produces for the ticket's number. Returns the ticket the message belongs to.
    fn apply(
        &mut self,
        decision: &Decision,
        inbound: InboundRecord<'_>,
        render: &mut RenderFn<'_>,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    /// Puts a rendered mail in the outbox and records it in the ticket's history; false when a
    /// mail with its Message-ID is already there (nothing is written).
    fn queue(
        &mut self,
        mail: &QueuedMail,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Locks these inbound Message-IDs until the transaction ends (PostgreSQL; SQLite's writers
    /// already take turns), before their contexts are read: a second writer taking the same
    /// message waits for the first to commit, then sees it and records a duplicate instead of
    /// failing its batch on the unique Message-ID.
    fn lock_message_ids(
        &mut self,
        ids: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Gives up on an outbox row `owner` holds (permanent failure) and records why on its
    /// ticket; `NotFound` when `owner` does not hold it.
    fn fail_outbox(
        &mut self,
        owner: &str,
        id: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Commits everything.
    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
