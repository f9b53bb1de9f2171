//! `postdesk run`: the mailbox source (maildir or IMAP), the outbox sender (file or SMTP) and
//! the optional `/healthz` + `/metrics` endpoint, as tasks under one shutdown signal.
//!
//! SIGINT/SIGTERM lets the batch in hand finish (commit, then mark done on the server or in the
//! maildir) and returns. The source wakes the sender after every commit, so an acknowledgement
//! leaves within milliseconds of its ticket; the sender also polls, for mail whose retry time
//! has come.
//!
//! The readers live in [`crate::inbound::reader`], the delivery loop in
//! [`crate::outbound::deliver`]; this module wires them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::{Config, OutboxUrl};
use crate::inbound::reader::Source;
use crate::metrics::METRICS;
use crate::outbound::deliver::failure::FailureNotices;
use crate::outbound::deliver::file::FileOutbox;
use crate::outbound::deliver::journal::WorkerJournal;
use crate::outbound::deliver::smtp::{FINAL_REPLY, SmtpOutbox, journal_path};
use crate::outbound::deliver::{Delivery, DeliverySettings, Round};
use crate::pipeline::Desk;
use crate::shutdown::pause;
use crate::store::{Store, StoreError};

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration cannot be served (bad TLS file, missing password, busy port, ...).
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

/// Where outbound mail goes.
enum Sender {
    File(Delivery<FileOutbox>),
    Smtp(Delivery<SmtpOutbox>),
}

impl Sender {
    async fn deliver_due<S: Store>(&self, store: &S) -> Result<Round, StoreError> {
        match self {
            Sender::File(d) => d.deliver_due(store).await,
            Sender::Smtp(d) => d.deliver_due(store).await,
        }
    }

    async fn stop<S: Store>(self, store: &S) {
        match self {
            Sender::File(d) => d.stop(store).await,
            Sender::Smtp(d) => d.stop(store).await,
        }
    }
}

/// The name a worker claims outbox rows (and the mailbox) under: host, process and a random
/// part, so a restarted worker is a new owner and two workers never share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerId(String);

impl WorkerId {
    /// A new name for this process.
    pub fn new() -> WorkerId {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let host = host_part();
        WorkerId(format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            random as u32
        ))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `owner` names a worker on this machine whose process no longer runs (so its
    /// leases can be taken at once instead of when they run out). A worker on another machine,
    /// or one whose name cannot be read, is not known to be gone.
    pub fn is_gone(owner: &str) -> bool {
        let mut parts = owner.rsplitn(3, '-');
        let (Some(_random), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        host == host_part() && pid != std::process::id() && !process_exists(pid)
    }
}

/// Whether a process with this id runs on this machine (`kill(pid, 0)`; elsewhere: assume so).
#[cfg(unix)]
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    true
}

impl Default for WorkerId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// This machine's part of a worker name: its host name, letters, digits and `-` only (at most
/// 40), or `host` when it has none.
fn host_part() -> String {
    let host: String = hostname()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    if host.is_empty() { "host".into() } else { host }
}

/// This machine's name (`/etc/hostname` style), or "" when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The outbox sender of this worker: its transport, its claims and its journal.
fn sender(config: &Config, desk: &Desk, id: &WorkerId) -> Result<Sender, WorkerError> {
    let base = journal_path(config);
    let journal = WorkerJournal::open(&base, id.as_str()).map_err(|error| WorkerError::Io {
        path: PathBuf::from(format!("{}.{id}", base.display())),
        error,
    })?;
    let live = &config.live;
    let mut settings = DeliverySettings {
        owner: id.to_string(),
        lease: Duration::from_secs(120),
        attempt_limit: Duration::from_secs(60),
        batch: 256,
        retry_min: live.retry_min,
        retry_max: live.retry_max,
        max_attempts: live.max_attempts,
    };
    // Delivery-failure notices render with the templates the pipeline serves.
    let notices = FailureNotices::new(config, Some(desk.templates.clone()));
    Ok(match &config.outbox_url {
        OutboxUrl::File(path) => {
            let files = FileOutbox::open(path).map_err(|error| WorkerError::Io {
                path: path.clone(),
                error,
            })?;
            Sender::File(Delivery::new(Arc::new(files), settings, journal, notices))
        }
        OutboxUrl::Smtp(endpoint) => {
            let smtp = SmtpOutbox::from_config(endpoint, config, journal.file())
                .map_err(|e| WorkerError::Unsupported(e.to_string()))?;
            // The longest attempt: connect, envelope and the final reply. A claim lasts five
            // minutes more, in which its mails can start.
            settings.attempt_limit = 3 * live.smtp_timeout + live.smtp_timeout.max(FINAL_REPLY);
            settings.lease = settings.attempt_limit + Duration::from_secs(300);
            Sender::Smtp(Delivery::new(Arc::new(smtp), settings, journal, notices))
        }
    })
}

/// What a supervised task of the worker ends with.
enum TaskEnd {
    /// The mailbox reader: what it took.
    Read(RunSummary),
    /// The outbox sender: how many mails it delivered.
    Sent(u64),
    /// The others.
    Done,
}

/// Runs the worker until `shutdown` turns true (or until idle, with `exit_when_idle`): the
/// mailbox reader, the outbox sender, the SLA clock, the template watcher and `/healthz`, under
/// one supervisor ([`crate::supervise`]).
pub async fn run<S: Store>(
    store: S,
    config: &Config,
    desk: Desk,
    options: RunOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<RunSummary, WorkerError> {
    use crate::supervise::{Task, supervise};
    let worker_id = WorkerId::new();
    let sender = Arc::new(sender(config, &desk, &worker_id)?);
    let source = Arc::new(Source::from_config(config)?);
    // Bound here, so a busy port is a start-up error; a restart after a panic binds again.
    let http = match &config.http_listen {
        Some(listen) => Some((
            listen.clone(),
            Arc::new(tokio::sync::Mutex::new(Some(
                crate::http::bind(listen)
                    .await
                    .map_err(WorkerError::Unsupported)?,
            ))),
        )),
        None => None,
    };
    tracing::info!(
        mailbox = %source.describe(),
        outbox = %describe_outbox(&config.outbox_url),
        worker = %worker_id,
        database = ?config.database_url,
        "postdesk worker started"
    );
    let wake = Arc::new(Notify::new());
    let desk = Arc::new(desk);
    let (source_done_tx, source_done_rx) = watch::channel(false);
    let source_done_tx = Arc::new(source_done_tx);
    let mut tasks: Vec<Task<TaskEnd>> = Vec::new();
    {
        let (store, desk, wake, source, worker) = (
            store.clone(),
            desk.clone(),
            wake.clone(),
            source.clone(),
            worker_id.clone(),
        );
        let (batch, options) = (config.batch_size, options.clone());
        tasks.push(Task {
            name: "mailbox",
            essential: true,
            start: Box::new(move |stop| {
                let (store, desk, wake, source, worker, options, done) = (
                    store.clone(),
                    desk.clone(),
                    wake.clone(),
                    source.clone(),
                    worker.clone(),
                    options.clone(),
                    source_done_tx.clone(),
                );
                Box::pin(async move {
                    let r = source
                        .read(&store, &desk, batch, options, stop, &wake, &worker)
                        .await;
                    // The sender finishes what is due, then stops too.
                    let _ = done.send(true);
                    wake.notify_one();
                    r.map(TaskEnd::Read)
                })
            }),
        });
    }
    {
        let (store, wake, sender) = (store.clone(), wake.clone(), sender.clone());
        let (poll, exit_when_idle) = (config.outbox_poll_interval, options.exit_when_idle);
        tasks.push(Task {
            name: "outbox",
            essential: true,
            start: Box::new(move |stop| {
                let (store, wake, sender, done) = (
                    store.clone(),
                    wake.clone(),
                    sender.clone(),
                    source_done_rx.clone(),
                );
                Box::pin(async move {
                    sender_loop(&store, &sender, poll, stop, done, &wake, exit_when_idle)
                        .await
                        .map(TaskEnd::Sent)
                })
            }),
        });
    }
    // The SLA clock: a sweep every minute and the daily digest, on cron schedules. Not when the
    // worker only drains what is there (`--exit-when-idle`): `postdesk sweep --once` is that.
    if !options.exit_when_idle {
        let (store, desk, wake) = (store.clone(), desk.clone(), wake.clone());
        let digest = (
            config.digest_schedule.clone(),
            config.digest_calendar.clone(),
        );
        tasks.push(Task {
            name: "clock",
            essential: false,
            start: Box::new(move |stop| {
                let (store, desk, wake, digest) =
                    (store.clone(), desk.clone(), wake.clone(), digest.clone());
                Box::pin(async move {
                    clock_loop(&store, &desk, digest, stop, &wake)
                        .await
                        .map(|()| TaskEnd::Done)
                })
            }),
        });
    }
    // Live template reload (templates.watch): good edits serve from the next mail on.
    if config.templates_watch {
        let (templates, config) = (desk.templates.clone(), config.clone());
        tasks.push(Task {
            name: "templates",
            essential: false,
            start: Box::new(move |stop| {
                let watcher = crate::outbound::watch::template_watcher(&templates, &config, stop);
                Box::pin(async move {
                    watcher.await;
                    Ok(TaskEnd::Done)
                })
            }),
        });
    }
    if let Some((listen, listener)) = http {
        tracing::info!(listen = %listen, "serving /healthz and /metrics");
        let store = store.clone();
        tasks.push(Task {
            name: "http",
            essential: false,
            start: Box::new(move |stop| {
                let (store, listener, listen) = (store.clone(), listener.clone(), listen.clone());
                Box::pin(async move {
                    let bound = listener.lock().await.take();
                    let listener = match bound {
                        Some(l) => l,
                        None => crate::http::bind(&listen)
                            .await
                            .map_err(WorkerError::Unsupported)?,
                    };
                    crate::http::serve(listener, store, stop).await;
                    Ok(TaskEnd::Done)
                })
            }),
        });
    }
    let ended = supervise(tasks, shutdown).await;
    // At a clean stop the claims go back at once (a crash leaves them to the lease).
    if let Ok(sender) = Arc::try_unwrap(sender) {
        sender.stop(&store).await;
    }
    let mut summary = RunSummary::default();
    for (_, end) in ended? {
        match end {
            TaskEnd::Read(s) => {
                let sent = summary.sent;
                summary = s;
                summary.sent = sent;
            }
            TaskEnd::Sent(n) => summary.sent = n,
            TaskEnd::Done => {}
        }
    }
    tracing::info!(
        messages = summary.messages,
        quarantined = summary.quarantined,
        sent = summary.sent,
        "postdesk worker stopped"
    );
    Ok(summary)
}

fn describe_outbox(o: &OutboxUrl) -> String {
    match o {
        OutboxUrl::File(p) => format!("file:{}", p.display()),
        OutboxUrl::Smtp(e) => e.to_string(),
    }
}

/// What the clock's cron jobs ask for.
#[derive(Debug, Clone, Copy)]
enum Tick {
    Sweep,
    Digest,
}

/// The SLA clock inside `postdesk run`: tokio-cron-scheduler fires a sweep at second 0 of every
/// minute and the digest at `digest.schedule` in the zone of `digest.calendar` (cron-expression
/// jobs only: its repeated-interval jobs can stop firing under load, upstream issue #113). The
/// jobs only send a tick on a channel; the sweep and the digest run here, one at a time, from
/// due-time queries, so a restart after downtime catches up on the first tick and nothing is
/// kept in memory. A sweep runs at start too.
async fn clock_loop<S: Store>(
    store: &S,
    desk: &Desk,
    (digest_schedule, digest_calendar): (String, String),
    mut shutdown: watch::Receiver<bool>,
    wake: &Notify,
) -> Result<(), WorkerError> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let zone = desk.policy.calendars.zone_of(&digest_calendar);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Tick>(8);
    let scheduler = async {
        let sched = JobScheduler::new().await?;
        let sweep_tx = tx.clone();
        sched
            .add(Job::new_async("0 * * * * *", move |_, _| {
                let tx = sweep_tx.clone();
                Box::pin(async move {
                    let _ = tx.try_send(Tick::Sweep);
                })
            })?)
            .await?;
        sched
            .add(digest_job(&digest_schedule, zone, tx.clone())?)
            .await?;
        sched.start().await?;
        Ok::<_, tokio_cron_scheduler::JobSchedulerError>(sched)
    }
    .await;
    let mut sched = match scheduler {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "the SLA clock's scheduler did not start: sweeping every minute without it");
            None
        }
    };
    let _ = tx.try_send(Tick::Sweep);
    let mut fallback = tokio::time::interval(Duration::from_secs(60));
    fallback.tick().await;
    loop {
        let tick = tokio::select! {
            t = rx.recv() => t,
            _ = fallback.tick(), if sched.is_none() => Some(Tick::Sweep),
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        let Some(tick) = tick else { break };
        let now = chrono::Utc::now();
        match tick {
            Tick::Sweep => match crate::pipeline::sweep(store, desk, now).await {
                Ok(report) => {
                    METRICS
                        .last_tick
                        .store(now.timestamp(), std::sync::atomic::Ordering::Relaxed);
                    count_clock(&report);
                    if report.tickets.iter().any(|t| !t.queued.is_empty()) {
                        wake.notify_one();
                    }
                    for t in &report.tickets {
                        tracing::info!(ticket = t.ticket, queued = t.queued.len(), "{}", t.reason);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "SLA sweep failed; the next tick retries"),
            },
            Tick::Digest => match crate::pipeline::digest(store, desk, zone, now).await {
                Ok(queued) => {
                    tracing::info!(mails = queued.len(), "daily digest queued");
                    if !queued.is_empty() {
                        wake.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "daily digest failed"),
            },
        }
    }
    if let Some(s) = sched.as_mut() {
        let _ = s.shutdown().await;
    }
    Ok(())
}

/// The digest's cron job: `schedule` read in `zone` (08:00 in Chicago, not 08:00 UTC).
fn digest_job(
    schedule: &str,
    zone: chrono_tz::Tz,
    tx: tokio::sync::mpsc::Sender<Tick>,
) -> Result<tokio_cron_scheduler::Job, tokio_cron_scheduler::JobSchedulerError> {
    tokio_cron_scheduler::Job::new_async_tz(schedule, zone, move |_, _| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.try_send(Tick::Digest);
        })
    })
}

/// Counts breaches and escalations of a sweep for `/metrics`.
fn count_clock(report: &crate::pipeline::SweepReport) {
    use std::sync::atomic::Ordering::Relaxed;
    for t in &report.tickets {
        let sev = usize::from(t.severity.saturating_sub(1)).min(3);
        if t.response_breach {
            METRICS.breaches[0][sev].fetch_add(1, Relaxed);
        }
        if t.resolution_breach {
            METRICS.breaches[1][sev].fetch_add(1, Relaxed);
        }
        if t.escalated {
            METRICS.escalations.fetch_add(1, Relaxed);
        }
    }
}

async fn sender_loop<S: Store>(
    store: &S,
    sender: &Sender,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut source_done: watch::Receiver<bool>,
    wake: &Notify,
    exit_when_idle: bool,
) -> Result<u64, WorkerError> {
    let mut sent = 0u64;
    loop {
        let round = match sender.deliver_due(store).await {
            Ok(round) => round,
            Err(e) if e.is_temporary() => {
                tracing::warn!(error = %e, "outbox: database busy; retrying");
                Round::default()
            }
            Err(e) => return Err(e.into()),
        };
        sent += round.sent as u64;
        if *source_done.borrow() {
            // The source has stopped: deliver what is due now, then stop too. With
            // exit_when_idle, wait for mail that failed temporarily as long as it is retried.
            if round.sent == 0 && round.failed == 0 {
                if exit_when_idle && !*shutdown.borrow() {
                    let pending = store.outbox_backlog().await.map(|b| b.pending).unwrap_or(0);
                    if pending > 0 {
                        pause(poll.max(Duration::from_millis(200)), &mut shutdown).await;
                        continue;
                    }
                }
                return Ok(sent);
            }
            if round.failed > 0 && !exit_when_idle {
                return Ok(sent);
            }
            if round.failed > 0 {
                pause(poll.max(Duration::from_millis(200)), &mut shutdown).await;
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

#[cfg(test)]
mod clock_tests {
    use chrono::{Datelike, Timelike, Utc};

    use super::*;

    #[tokio::test]
    async fn the_digest_fires_at_its_hour_in_its_calendars_zone_on_weekdays() {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        // (zone, schedule, local hour)
        let cases = [
            (chrono_tz::America::Chicago, "0 0 8 * * Mon-Fri", 8),
            (chrono_tz::America::New_York, "0 30 9 * * Mon-Fri", 9),
        ];
        for (zone, schedule, hour) in cases {
            let Ok(mut sched) = tokio_cron_scheduler::JobScheduler::new().await else {
                panic!("scheduler");
            };
            let job = match digest_job(schedule, zone, tx.clone()) {
                Ok(j) => j,
                Err(e) => panic!("{schedule}: {e}"),
            };
            let id = match sched.add(job).await {
                Ok(id) => id,
                Err(e) => panic!("{e}"),
            };
            let next = match sched.next_tick_for_job(id).await {
                Ok(Some(n)) => n,
                other => panic!("{schedule}: no next tick: {other:?}"),
            };
            let local = next.with_timezone(&zone);
            assert_eq!(local.hour(), hour, "{schedule} in {zone}: {local}");
            assert!(local.weekday().num_days_from_monday() < 5, "{local}");
            assert!(next > Utc::now());
            // Not the same hour in UTC: the zone was applied.
            assert_ne!(next.hour(), hour, "{schedule} was read in UTC");
            let _ = sched.shutdown().await;
        }
    }
}
