//! One IMAP reader per mailbox when several workers share a database: the worker holding the
//! mailbox's lease (a row in `source_leases`) reads it and renews the lease every few seconds;
//! the others stand by and take over when the lease runs out, or at once when the holder was a
//! worker on this machine whose process is gone.

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;

use crate::store::{Store, StoreError};
use crate::worker::WorkerId;

/// How long a worker's hold on the mailbox lasts unless renewed, and how often it renews it:
/// another worker takes over within `LEAD_LEASE` of a crash (at once on the same machine).
pub const LEAD_LEASE: Duration = Duration::from_secs(10);
pub const LEAD_RENEW: Duration = Duration::from_secs(3);

/// Who reads a mailbox.
pub enum Lead {
    /// This worker reads it.
    Ours,
    /// Another worker does (its name).
    Theirs(String),
}

/// Takes (or renews) the mailbox lease; takes it over at once from a worker on this machine
/// that is gone.
pub async fn lead<S: Store>(store: &S, key: &str, worker: &WorkerId) -> Result<Lead, StoreError> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEAD_LEASE).unwrap_or_default();
    if store.lead_source(key, worker.as_str(), now, until).await? {
        return Ok(Lead::Ours);
    }
    let Some(other) = store.source_leader(key, now).await? else {
        // It ran out between the two questions: ask again next time.
        return Ok(Lead::Theirs("nobody".into()));
    };
    if WorkerId::is_gone(&other)
        && store
            .take_over_source(key, &other, worker.as_str(), until)
            .await?
    {
        tracing::info!(mailbox = %key, from = %other, "took the mailbox over from a worker that stopped");
        return Ok(Lead::Ours);
    }
    Ok(Lead::Theirs(other))
}

/// Renews the lease every `LEAD_RENEW`; tells the reader to stop on shutdown, when another
/// worker holds the lease, or when it could not be renewed before it ran out.
pub async fn keep_lead<S: Store>(
    store: &S,
    key: &str,
    worker: &WorkerId,
    mut shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
) {
    let mut held_until = Instant::now() + LEAD_LEASE;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEAD_RENEW) => {}
            _ = shutdown.changed() => {
                let _ = stop.send(true);
                return;
            }
        }
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(LEAD_LEASE).unwrap_or_default();
        let asked = Instant::now();
        match store.lead_source(key, worker.as_str(), now, until).await {
            Ok(true) => held_until = asked + LEAD_LEASE,
            Ok(false) => {
                tracing::warn!(mailbox = %key, "another worker holds the mailbox lease now");
                let _ = stop.send(true);
                return;
            }
            // Keep reading while the lease surely holds; stop before it may have run out.
            Err(e) if Instant::now() + LEAD_RENEW < held_until => {
                tracing::warn!(mailbox = %key, error = %e, "could not renew the mailbox lease; trying again");
            }
            Err(e) => {
                tracing::warn!(mailbox = %key, error = %e, "could not renew the mailbox lease in time; standing by");
                let _ = stop.send(true);
                return;
            }
        }
    }
}
