//! `postdesk run`: the maildir source and the outbox sender as tasks under one shutdown signal.
//!
//! SIGINT/SIGTERM lets the batch in hand finish (commit, then mark done), flushes nothing
//! half-done, and returns. The source wakes the sender after every commit, so an
//! acknowledgement is written within milliseconds of its ticket; the sender also polls, for mail
//! whose retry time has come.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Notify, watch};

use crate::config::{Config, MailboxUrl, OutboxUrl};
use crate::inbound::Maildir;
use crate::outbound::outbox::FileOutbox;
use crate::pipeline::{Desk, Incoming, Outcome, ingest_batch};
use crate::store::{Store, StoreError};

/// How often `new/` is scanned when it was empty.
const SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// How long a message whose batch failed for a non-temporary reason is left aside.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configured mailbox or outbox needs a transport this build does not have yet.
    #[error("{0}")]
    Unsupported(String),
    /// A folder could not be used.
    #[error("{path}: {error}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Options beyond config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Return once the mailbox and the outbox are empty (scripts, quick start, benchmarks).
    pub exit_when_idle: bool,
    /// Keep the latency of every message (benchmarks).
    pub record_latencies: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Messages taken (tickets, duplicates, bounces, quarantined).
    pub messages: u64,
    /// Messages quarantined.
    pub quarantined: u64,
    /// Outbox mails delivered.
    pub sent: u64,
    /// Per-message time from being read to being marked done, when recorded.
    pub latencies: Vec<Duration>,
}

/// Runs the worker until `shutdown` turns true (or until idle, with `exit_when_idle`).
pub async fn run<S: Store>(
    store: S,
    config: &Config,
    desk: Desk,
    options: RunOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<RunSummary, WorkerError> {
    let MailboxUrl::Maildir(maildir_path) = &config.mailbox_url else {
        return Err(WorkerError::Unsupported(
            "mailbox.url: this build of postdesk reads maildir: mailboxes; IMAP is not available yet".into(),
        ));
    };
    let OutboxUrl::File(outbox_path) = &config.outbox_url else {
        return Err(WorkerError::Unsupported(
            "outbox.url: this build of postdesk writes file: outboxes; SMTP is not available yet"
                .into(),
        ));
    };
    let maildir = Maildir::open(maildir_path).map_err(|error| WorkerError::Io {
        path: maildir_path.clone(),
        error,
    })?;
    let outbox = FileOutbox::open(outbox_path).map_err(|error| WorkerError::Io {
        path: outbox_path.clone(),
        error,
    })?;
    tracing::info!(
        mailbox = %maildir_path.display(),
        outbox = %outbox_path.display(),
        database = ?config.database_url,
        "postdesk worker started"
    );

    let wake_sender = Arc::new(Notify::new());
    let (source_done_tx, source_done_rx) = watch::channel(false);
    let source = {
        let store = store.clone();
        let wake = wake_sender.clone();
        let shutdown = shutdown.clone();
        let batch = config.batch_size;
        tokio::spawn(async move {
            let r = source_loop(&store, &desk, &maildir, batch, options, shutdown, &wake).await;
            let _ = source_done_tx.send(true);
            wake.notify_one();
            r
        })
    };
    let sender = {
        let store = store.clone();
        let wake = wake_sender.clone();
        let poll = config.outbox_poll_interval;
        tokio::spawn(async move {
            sender_loop(&store, &outbox, poll, shutdown, source_done_rx, &wake).await
        })
    };
    let source_result = source
        .await
        .map_err(|e| StoreError::Database(format!("mailbox task stopped: {e}")));
    let sent = sender
        .await
        .map_err(|e| StoreError::Database(format!("outbox task stopped: {e}")))??;
    let mut summary = source_result??;
    summary.sent = sent;
    tracing::info!(
        messages = summary.messages,
        quarantined = summary.quarantined,
        sent = summary.sent,
        "postdesk worker stopped"
    );
    Ok(summary)
}

async fn source_loop<S: Store>(
    store: &S,
    desk: &Desk,
    maildir: &Maildir,
    batch: usize,
    options: RunOptions,
    mut shutdown: watch::Receiver<bool>,
    wake_sender: &Notify,
) -> Result<RunSummary, WorkerError> {
    let mut summary = RunSummary::default();
    let mut set_aside: HashMap<PathBuf, Instant> = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return Ok(summary);
        }
        set_aside.retain(|_, since| since.elapsed() < SKIP_AFTER_FAILURE);
        let pending: Vec<PathBuf> = maildir
            .pending()
            .map_err(|error| WorkerError::Io {
                path: maildir.root().to_path_buf(),
                error,
            })?
            .into_iter()
            .filter(|p| !set_aside.contains_key(p))
            .collect();
        if pending.is_empty() {
            if options.exit_when_idle {
                return Ok(summary);
            }
            tokio::select! {
                _ = tokio::time::sleep(SCAN_INTERVAL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for chunk in pending.chunks(batch) {
            if *shutdown.borrow() {
                return Ok(summary);
            }
            let started = Instant::now();
            let items = read_files(chunk).await;
            let taken: Vec<PathBuf> = items.iter().map(|(p, _)| p.clone()).collect();
            let incoming: Vec<Incoming> = items.into_iter().map(|(_, i)| i).collect();
            match ingest_batch(store, desk, &incoming, Utc::now()).await {
                Ok(outcomes) => {
                    backoff = Duration::from_millis(100);
                    for (path, outcome) in taken.iter().zip(&outcomes) {
                        log_outcome(path, outcome);
                        if let Err(e) = maildir.mark_done(path) {
                            tracing::warn!(file = %path.display(), error = %e, "committed but could not move to cur/; it will be seen as a duplicate");
                        }
                        summary.messages += 1;
                        if outcome.decision.action.name() == "quarantine" {
                            summary.quarantined += 1;
                        }
                    }
                    if options.record_latencies {
                        let elapsed = started.elapsed();
                        summary
                            .latencies
                            .extend(std::iter::repeat_n(elapsed, outcomes.len()));
                    }
                    wake_sender.notify_one();
                }
                Err(e) if e.is_temporary() => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "database busy or unreachable; messages stay in new/");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    break;
                }
                Err(e) if incoming.len() > 1 => {
                    // One bad message must not hold back the others: take them one by one.
                    tracing::warn!(error = %e, "batch failed; retrying its messages one at a time");
                    for (path, item) in taken.iter().zip(&incoming) {
                        match ingest_batch(store, desk, std::slice::from_ref(item), Utc::now())
                            .await
                        {
                            Ok(outcomes) => {
                                for outcome in &outcomes {
                                    log_outcome(path, outcome);
                                }
                                if let Err(e) = maildir.mark_done(path) {
                                    tracing::warn!(file = %path.display(), error = %e, "could not move to cur/");
                                }
                                summary.messages += 1;
                            }
                            Err(e) => {
                                tracing::error!(file = %path.display(), error = %e, "message not taken; left in new/ and retried later");
                                set_aside.insert(path.clone(), Instant::now());
                            }
                        }
                    }
                    wake_sender.notify_one();
                }
                Err(e) => {
                    for path in &taken {
                        tracing::error!(file = %path.display(), error = %e, "message not taken; left in new/ and retried later");
                        set_aside.insert(path.clone(), Instant::now());
                    }
                }
            }
        }
    }
}

async fn read_files(paths: &[PathBuf]) -> Vec<(PathBuf, Incoming)> {
    let paths = paths.to_vec();
    tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .filter_map(|p| match std::fs::read(&p) {
                Ok(raw) => {
                    let source = format!("maildir:{}", p.display());
                    Some((
                        p,
                        Incoming {
                            raw,
                            source,
                            silent: false,
                        },
                    ))
                }
                // Gone (another worker took it) or unreadable: the next scan decides.
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "cannot read message");
                    None
                }
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

fn log_outcome(path: &std::path::Path, o: &Outcome) {
    let d = &o.decision;
    tracing::info!(
        file = %path.display(),
        action = d.action.name(),
        ticket = o.ticket,
        from = o.from.as_deref(),
        requested = d.severity.and_then(|s| s.requested).map(|s| s.number()),
        assigned = d.severity.map(|s| s.assigned.number()),
        acknowledge = d.acknowledge,
        reason = %d.reason,
        "message taken"
    );
}

async fn sender_loop<S: Store>(
    store: &S,
    outbox: &FileOutbox,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut source_done: watch::Receiver<bool>,
    wake: &Notify,
) -> Result<u64, WorkerError> {
    let mut sent = 0u64;
    loop {
        let round = match outbox.deliver_due(store, Utc::now()).await {
            Ok(round) => round,
            Err(e) if e.is_temporary() => {
                tracing::warn!(error = %e, "outbox: database busy; retrying");
                Default::default()
            }
            Err(e) => return Err(e.into()),
        };
        sent += round.sent as u64;
        if *source_done.borrow() {
            // The source has stopped: deliver what it committed, then stop too.
            if round.sent == 0 {
                return Ok(sent);
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
            _ = source_done.changed() => {}
        }
    }
}
