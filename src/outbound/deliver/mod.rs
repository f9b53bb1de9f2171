//! Delivering the outbox (SPEC: Outbound mail): one loop for every transport. Mail is never
//! sent in the step that decides it; the decision wrote a rendered row, and this loop
//!
//! 1. settles what the worker's journal says was handed over, its own and that of workers on
//!    this machine that are gone ([`journal`]);
//! 2. claims due rows with a lease (owner and expiry; PostgreSQL `FOR UPDATE SKIP LOCKED`, so
//!    workers never get the same row);
//! 3. gives each to the transport (`concurrency` at a time): SMTP ([`smtp`]) or files ([`file`]);
//! 4. marks what happened, as the lease owner only: sent, retried with backoff
//!    (`outbox.retry_min` doubling to `outbox.retry_max`), or given up after a 5xx or
//!    `outbox.max_attempts` (an event on the ticket and a notice to the triage owners,
//!    [`failure`]).
//!
//! At least once: a row is marked sent only after the transport took it, so a worker that dies
//! holding rows leaves them to be claimed again (at once by a worker on the same machine, which
//! sees its journal unlocked; elsewhere when the lease runs out) and they go out again with the
//! same Message-ID. When in doubt (no answer to the final dot), the mail is sent again.

pub mod failure;
pub mod file;
pub mod handover;
pub mod journal;
pub mod smtp;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::metrics::{METRICS, Metrics};
use crate::store::{OutboxItem, Store, StoreError};

use self::failure::FailureNotices;
use self::journal::WorkerJournal;

/// How one delivery attempt ended.
#[derive(Debug)]
pub enum Attempt {
    /// The transport took it: mark it sent.
    Delivered,
    /// Taken, and the worker's journal says so (the SMTP hand-over): marked sent when the
    /// journal is settled.
    Recorded,
    /// Not taken; retry later.
    Temporary(String),
    /// Refused for good (5xx).
    Permanent(String),
    /// Not attempted: its claim would have run out before the attempt could end.
    Late,
}

/// A way to deliver one outbox row.
pub trait Transport: Send + Sync + 'static {
    /// Deliveries at once.
    fn concurrency(&self) -> usize;
    /// One attempt; every step has a timeout.
    fn attempt(&self, item: OutboxItem) -> impl Future<Output = (OutboxItem, Attempt)> + Send;
    /// Makes what was delivered durable before the rows say sent (files: the directory).
    fn flush(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
    /// Ends the transport's connections politely.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Mails delivered.
    pub sent: usize,
    /// Mails that failed (retried later, or given up).
    pub failed: usize,
    /// Mails not attempted because the claim was running out (given back).
    pub late: usize,
}

/// How the loop claims and retries.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// This worker's lease owner name.
    pub owner: String,
    /// How long a claim holds.
    pub lease: Duration,
    /// The longest one attempt can take: an attempt starts only while the claim will still
    /// hold at its end, so no row is sent after another worker could have claimed it.
    pub attempt_limit: Duration,
    /// Rows claimed at once.
    pub batch: i64,
    /// First retry delay.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts before a temporarily failing mail is given up.
    pub max_attempts: u32,
}

/// `min` doubling per attempt, capped at `max`: the retry schedule of every transport.
pub fn backoff(min: Duration, max: Duration, attempts: i64) -> Duration {
    let exp = attempts.clamp(0, 30) as u32;
    min.saturating_mul(2u32.saturating_pow(exp)).min(max)
}

/// The outbox sender: one transport, one worker's claims.
pub struct Delivery<T: Transport> {
    transport: Arc<T>,
    settings: DeliverySettings,
    journal: WorkerJournal,
    notices: FailureNotices,
}

impl<T: Transport> Delivery<T> {
    /// A sender for `transport` whose journal is `journal` (the same file the transport's
    /// hand-overs append to, if it has any).
    pub fn new(
        transport: Arc<T>,
        settings: DeliverySettings,
        journal: WorkerJournal,
        notices: FailureNotices,
    ) -> Self {
        Delivery {
            transport,
            settings,
            journal,
            notices,
        }
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<T> {
        &self.transport
    }

    /// Delivers due rows, one claimed batch at a time, until none is due or one fails.
    pub async fn deliver_due<S: Store>(&self, store: &S) -> Result<Round, StoreError> {
        let mut total = Round::default();
        loop {
            // Hand-overs recorded by this worker, or by one that is gone, become `sent` first,
            // so nothing handed to the server is taken for due.
            self.journal.settle(store).await?;
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
            let claimed = store
                .claim_outbox(&self.settings.owner, now, until, self.settings.batch)
                .await?;
            if claimed.is_empty() {
                return Ok(total);
            }
            let start_by = std::time::Instant::now()
                + self
                    .settings
                    .lease
                    .saturating_sub(self.settings.attempt_limit);
            let results = self.attempt_all(claimed, start_by).await;
            if let Err(e) = self.transport.flush().await {
                // Not durable: leave the rows to be delivered again (same file names).
                tracing::warn!(error = %e, "outbox: could not make the delivered mail durable; it is delivered again");
                let _ = store.release_outbox(&self.settings.owner).await;
                total.failed += results.len();
                return Ok(total);
            }
            let round = self.record(store, results).await;
            self.journal.settle(store).await?;
            let round = round?;
            if round.late > 0 {
                // Rows this round could not start in time go back for anyone to claim.
                store.release_outbox(&self.settings.owner).await?;
            }
            total.sent += round.sent;
            total.failed += round.failed;
            total.late += round.late;
            // A failure waits for its retry time, and mail that could not start in time is
            // claimed again by the next pass (of any worker): this pass ends here.
            if round.failed > 0 || round.late > 0 {
                return Ok(total);
            }
        }
    }

    /// One task per mail, at most `concurrency` at once: a slow server holds only its own. A
    /// mail whose turn comes after `start_by` is not attempted ([`Attempt::Late`]).
    async fn attempt_all(
        &self,
        claimed: Vec<OutboxItem>,
        start_by: std::time::Instant,
    ) -> Vec<(OutboxItem, Attempt)> {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.transport.concurrency().max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for item in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            if std::time::Instant::now() > start_by {
                drop(permit);
                tasks.spawn(async move { (item, Attempt::Late) });
                continue;
            }
            let transport = self.transport.clone();
            tasks.spawn(async move {
                let _permit = permit;
                transport.attempt(item).await
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                // Its row stays claimed and is retried when the lease runs out.
                Err(e) => tracing::error!(error = %e, "a delivery task failed"),
            }
        }
        results
    }

    /// Marks each attempt's outcome, as the rows' lease owner.
    async fn record<S: Store>(
        &self,
        store: &S,
        results: Vec<(OutboxItem, Attempt)>,
    ) -> Result<Round, StoreError> {
        let owner = &self.settings.owner;
        let mut round = Round::default();
        let mut delivered = Vec::new();
        for (item, attempt) in results {
            match attempt {
                Attempt::Delivered | Attempt::Recorded => {
                    round.sent += 1;
                    Metrics::inc(&METRICS.mails_sent);
                    tracing::info!(
                        outbox_id = item.id,
                        ticket = item.ticket,
                        template = %item.template,
                        to = %item.to,
                        message_id = %item.message_id,
                        "mail sent"
                    );
                    if matches!(attempt, Attempt::Delivered) {
                        delivered.push(item.id);
                    }
                }
                Attempt::Temporary(why)
                    if item.attempts + 1 < i64::from(self.settings.max_attempts) =>
                {
                    round.failed += 1;
                    let delay = backoff(
                        self.settings.retry_min,
                        self.settings.retry_max,
                        item.attempts,
                    );
                    Metrics::inc(&METRICS.mail_retries);
                    tracing::warn!(
                        outbox_id = item.id,
                        ticket = item.ticket,
                        to = %item.to,
                        attempt = item.attempts + 1,
                        retry_in_s = delay.as_secs(),
                        error = %why,
                        "mail not delivered; will retry"
                    );
                    let now = Utc::now();
                    let retry_at = now
                        + chrono::Duration::from_std(delay)
                            .unwrap_or(chrono::Duration::seconds(60));
                    store
                        .mark_attempt_failed(owner, item.id, &why, now, Some(retry_at))
                        .await?;
                }
                Attempt::Temporary(why) => {
                    round.failed += 1;
                    let why = format!("gave up after {} attempts: {why}", item.attempts + 1);
                    self.notices
                        .fail_permanently(store, owner, &item, &why)
                        .await?;
                }
                Attempt::Permanent(why) => {
                    round.failed += 1;
                    self.notices
                        .fail_permanently(store, owner, &item, &why)
                        .await?;
                }
                Attempt::Late => round.late += 1,
            }
        }
        if !delivered.is_empty() {
            mark_delivered(store, owner, &delivered).await?;
        }
        Ok(round)
    }

    /// At a clean stop: settles the journal, gives back unfinished claims, closes connections
    /// and removes the journal.
    pub async fn stop<S: Store>(self, store: &S) {
        if let Err(e) = self.journal.settle(store).await {
            tracing::warn!(error = %e, "outbox: could not settle the journal at stop; the next start does");
            return;
        }
        if let Err(e) = store.release_outbox(&self.settings.owner).await {
            tracing::warn!(error = %e, "outbox: could not give back claimed rows; they are taken again when their lease runs out");
        }
        self.transport.close().await;
        self.journal.remove();
    }
}

/// Marks delivered rows sent, trying a few times: a row the server took but the database does
/// not record goes out again (a duplicate) once the lease runs out.
async fn mark_delivered<S: Store>(store: &S, owner: &str, ids: &[i64]) -> Result<(), StoreError> {
    let mut wait = Duration::from_millis(100);
    let mut last = None;
    for _ in 0..6 {
        match store.mark_sent(owner, ids, Utc::now()).await {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    let e = last.unwrap_or(StoreError::Unavailable("mark sent".into()));
    tracing::error!(error = %e, rows = ?ids, "delivered but the database cannot record it; these mails will be sent again");
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_min_and_caps_at_max() {
        let (min, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        let cases = [
            (0, 30),
            (1, 60),
            (2, 120),
            (6, 1920),
            (7, 3600),
            (40, 3600),
            (-1, 30),
        ];
        for (attempts, secs) in cases {
            assert_eq!(
                backoff(min, max, attempts),
                Duration::from_secs(secs),
                "{attempts}"
            );
        }
    }
}
