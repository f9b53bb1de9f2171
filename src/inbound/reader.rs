//! The mailbox readers inside `postdesk run`: a maildir, or an IMAP mailbox (IDLE, polling as
//! fallback). They only move bytes and acknowledge.
//!
//! The IMAP reader never loses or repeats a message: it reads with `BODY.PEEK[]`, commits, and
//! only then flags `\Seen` and moves the message out of the mailbox. A crash in between leaves
//! the message in the mailbox; read again, it is recognised by its Message-ID as a duplicate and
//! only moved. A message the store refuses stays untouched on the server. With several workers
//! on one database, only the one holding the mailbox lease reads it ([`super::lead`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Notify, watch};

use super::Maildir;
use super::imap::{self, Credentials, ImapError, ImapSession, TokenSource};
use super::lead::{LEAD_RENEW, Lead, keep_lead, lead};
use super::pipe::{Overflow, read_file};
use crate::config::{Config, Endpoint, FirstStart, LiveMail, MailboxUrl};
use crate::mail::Limits;
use crate::metrics::{ImapState, METRICS, Metrics};
use crate::pipeline::{Desk, Incoming, Outcome, ingest_batch};
use crate::shutdown::pause;
use crate::store::{SourceState, Store, StoreError};
use crate::worker::{RunOptions, RunSummary, WorkerError, WorkerId};

/// How often `new/` is scanned when it was empty.
const SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// How long a message whose batch failed for a non-temporary reason is left aside.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Most bytes of message bodies fetched and committed together.
const BATCH_BYTES: u64 = 32 * 1024 * 1024;
/// Bytes kept of an oversized message (its headers and the start of its body).
const OVERSIZED_HEAD: u32 = crate::pipeline::OVERSIZED_HEAD as u32;
/// Reconnect backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(60);

/// The mailbox a worker reads.
pub enum Source {
    /// A local maildir (`mailbox.url = "maildir:PATH"`).
    Maildir(Maildir),
    /// An IMAP mailbox.
    Imap(Box<ImapSource>),
}

impl Source {
    /// The reader `mailbox.url` names (folders are checked; nothing is connected yet).
    pub fn from_config(config: &Config) -> Result<Source, WorkerError> {
        Ok(match &config.mailbox_url {
            MailboxUrl::Maildir(path) => {
                METRICS.set_imap_state(ImapState::NotUsed);
                Source::Maildir(Maildir::open(path).map_err(|error| WorkerError::Io {
                    path: path.clone(),
                    error,
                })?)
            }
            MailboxUrl::Imap(endpoint) => {
                METRICS.set_imap_state(ImapState::Disconnected);
                Source::Imap(Box::new(ImapSource::from_config(endpoint, config)?))
            }
        })
    }

    /// `maildir:PATH` or the IMAP URL without its password, for logs.
    pub fn describe(&self) -> String {
        match self {
            Source::Maildir(m) => format!("maildir:{}", m.root().display()),
            Source::Imap(i) => i.endpoint.to_string(),
        }
    }

    /// Reads until `shutdown` (or until the mailbox is empty, with `exit_when_idle`), waking
    /// the sender after every commit.
    #[allow(clippy::too_many_arguments)]
    pub async fn read<S: Store>(
        &self,
        store: &S,
        desk: &Desk,
        batch: usize,
        options: RunOptions,
        shutdown: watch::Receiver<bool>,
        wake: &Notify,
        worker: &WorkerId,
    ) -> Result<RunSummary, WorkerError> {
        match self {
            Source::Maildir(m) => {
                maildir_loop(store, desk, m, batch, options, shutdown, wake).await
            }
            Source::Imap(src) => imap_loop(store, desk, src, options, shutdown, wake, worker).await,
        }
    }
}

/// What one attempt to take a batch did.
struct Taken<K> {
    /// Committed: the key and its outcome.
    done: Vec<(K, Outcome)>,
    /// Refused for a reason that is not temporary: left where they are, retried later.
    set_aside: Vec<K>,
    /// The store is busy or unreachable: the rest stays where it is.
    temporary: Option<StoreError>,
}

/// Commits a batch; if it fails for a reason other than an unreachable store, takes its
/// messages one by one so one bad message never holds back the others.
async fn take<S: Store, K: Clone>(store: &S, desk: &Desk, items: Vec<(K, Incoming)>) -> Taken<K> {
    let mut taken = Taken {
        done: Vec::new(),
        set_aside: Vec::new(),
        temporary: None,
    };
    let (keys, incoming): (Vec<K>, Vec<Incoming>) = items.into_iter().unzip();
    match ingest_batch(store, desk, &incoming, Utc::now()).await {
        Ok(outcomes) => {
            for ((key, item), outcome) in keys.into_iter().zip(&incoming).zip(outcomes) {
                record_outcome(&item.source, &outcome);
                taken.done.push((key, outcome));
            }
        }
        Err(e) if e.is_temporary() => taken.temporary = Some(e),
        Err(e) if incoming.len() > 1 => {
            tracing::warn!(error = %e, "batch failed; retrying its messages one at a time");
            for (key, item) in keys.into_iter().zip(&incoming) {
                if taken.temporary.is_some() {
                    break;
                }
                match ingest_batch(store, desk, std::slice::from_ref(item), Utc::now()).await {
                    Ok(mut outcomes) => {
                        if let Some(outcome) = outcomes.pop() {
                            record_outcome(&item.source, &outcome);
                            taken.done.push((key, outcome));
                        }
                    }
                    Err(e) if e.is_temporary() => taken.temporary = Some(e),
                    Err(e) => {
                        tracing::error!(source = %item.source, error = %e, "message not taken; left where it is and retried later");
                        taken.set_aside.push(key);
                    }
                }
            }
        }
        Err(e) => {
            for (key, item) in keys.into_iter().zip(&incoming) {
                tracing::error!(source = %item.source, error = %e, "message not taken; left where it is and retried later");
                taken.set_aside.push(key);
            }
        }
    }
    taken
}

fn is_quarantine(o: &Outcome) -> bool {
    o.decision.action.name() == "quarantine"
}

fn record_outcome(source: &str, o: &Outcome) {
    Metrics::inc(&METRICS.messages_taken);
    if is_quarantine(o) {
        Metrics::inc(&METRICS.messages_quarantined);
    }
    let d = &o.decision;
    tracing::info!(
        source = %source,
        action = d.action.name(),
        ticket = o.ticket,
        from = o.from.as_deref(),
        requested = d.severity.and_then(|s| s.requested).map(|s| s.number()),
        assigned = d.severity.map(|s| s.assigned.number()),
        acknowledge = d.acknowledge && !o.queued.is_empty(),
        reason = %d.reason,
        "message taken"
    );
}

fn count<K>(summary: &mut RunSummary, done: &[(K, Outcome)], started: Instant, record: bool) {
    summary.messages += done.len() as u64;
    summary.quarantined += done.iter().filter(|(_, o)| is_quarantine(o)).count() as u64;
    if record {
        let elapsed = started.elapsed();
        summary
            .latencies
            .extend(std::iter::repeat_n(elapsed, done.len()));
    }
}

async fn maildir_loop<S: Store>(
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
            pause(SCAN_INTERVAL, &mut shutdown).await;
            continue;
        }
        for chunk in pending.chunks(batch) {
            if *shutdown.borrow() {
                return Ok(summary);
            }
            let started = Instant::now();
            let items = read_files(maildir, chunk, &desk.limits).await;
            let taken = take(store, desk, items).await;
            for (path, _) in &taken.done {
                if let Err(e) = maildir.mark_done(path) {
                    tracing::warn!(file = %path.display(), error = %e, "committed but could not move to cur/; it will be seen as a duplicate");
                }
            }
            count(&mut summary, &taken.done, started, options.record_latencies);
            for p in taken.set_aside {
                set_aside.insert(p, Instant::now());
            }
            if !taken.done.is_empty() {
                wake_sender.notify_one();
            }
            if let Some(e) = taken.temporary {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "database busy or unreachable; messages stay in new/");
                pause(backoff, &mut shutdown).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                break;
            }
            backoff = Duration::from_millis(100);
        }
    }
}

/// Reads the files of a chunk off the executor. A file over the size limit is read from its head
/// only (it stays in the maildir, and the quarantine entry names it). Each message's source is
/// where it is once taken: in `cur/`, where [`Maildir::mark_done`] moves it after the commit.
async fn read_files(
    maildir: &Maildir,
    paths: &[PathBuf],
    limits: &Limits,
) -> Vec<(PathBuf, Incoming)> {
    let work: Vec<(PathBuf, PathBuf)> = paths
        .iter()
        .map(|p| (p.clone(), maildir.done_path(p)))
        .collect();
    let limits = limits.clone();
    tokio::task::spawn_blocking(move || {
        work.into_iter()
            .filter_map(|(p, done)| match read_file(&p, &limits, Overflow::Keep) {
                Ok(mut item) => {
                    item.source = format!("maildir:{}", done.display());
                    Some((p, item))
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

/// The IMAP source's settings.
pub struct ImapSource {
    endpoint: Endpoint,
    credentials: Credentials,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    live: LiveMail,
    processed: String,
    quarantine: String,
    poll: Duration,
    batch: usize,
    max_size: usize,
}

impl ImapSource {
    fn from_config(endpoint: &Endpoint, config: &Config) -> Result<ImapSource, WorkerError> {
        let live = config.live.clone();
        let secret = config
            .mailbox_password
            .clone()
            .or_else(|| endpoint.password.clone());
        let credentials = if config.mailbox_auth == "xoauth2" {
            let source = if let Some(f) = &live.token_file {
                TokenSource::File(f.clone())
            } else if let Some(c) = &live.token_command {
                TokenSource::Command(c.clone())
            } else if let Some(s) = secret {
                TokenSource::Fixed(s)
            } else {
                return Err(WorkerError::Unsupported(
                    "mailbox.auth = \"xoauth2\" needs mailbox.token_file, mailbox.token_command or mailbox.password".into(),
                ));
            };
            Credentials::XOAuth2(source)
        } else {
            Credentials::Password(secret.ok_or_else(|| {
                WorkerError::Unsupported(format!(
                    "mailbox.url is {endpoint} but mailbox.password (or POSTDESK_MAILBOX_PASSWORD[_FILE]) is not set"
                ))
            })?)
        };
        if config.processed_folder.trim().is_empty() {
            return Err(WorkerError::Unsupported(
                "mailbox.processed_folder must name a folder: taken messages are moved there"
                    .into(),
            ));
        }
        let tls =
            crate::tls::client_config(config.tls_ca_file.as_deref(), live.accept_invalid_certs)
                .map_err(WorkerError::Unsupported)?;
        Ok(ImapSource {
            endpoint: endpoint.clone(),
            credentials,
            tls,
            live,
            processed: config.processed_folder.clone(),
            quarantine: config.quarantine_folder.clone(),
            poll: config.poll_interval,
            batch: config.batch_size,
            max_size: config.max_message_size,
        })
    }
}

/// Adds up to 25% of random-ish jitter, so many workers do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// Why a session ended.
enum SessionEnd {
    /// Shutdown, or idle with `exit_when_idle`.
    Stop,
    /// Connection or protocol trouble: reconnect.
    Imap(ImapError),
    /// The store failed in a way a reconnect does not fix... but a later try might.
    Store(StoreError),
}

impl From<ImapError> for SessionEnd {
    fn from(e: ImapError) -> Self {
        SessionEnd::Imap(e)
    }
}

impl From<StoreError> for SessionEnd {
    fn from(e: StoreError) -> Self {
        SessionEnd::Store(e)
    }
}

/// State of the IMAP source kept across reconnects.
struct ImapProgress {
    summary: RunSummary,
    set_aside: HashMap<(u32, u32), Instant>,
    backoff: Duration,
    store_backoff: Duration,
    /// A login has succeeded in this run (from then on, TLS and login errors are retried).
    connected_once: bool,
}

/// Reads the mailbox while this worker leads it (one IMAP consumer per mailbox, elected with a
/// lease in the store); stands by while another does.
async fn imap_loop<S: Store>(
    store: &S,
    desk: &Desk,
    src: &ImapSource,
    options: RunOptions,
    mut shutdown: watch::Receiver<bool>,
    wake: &Notify,
    worker: &WorkerId,
) -> Result<RunSummary, WorkerError> {
    let mut p = ImapProgress {
        summary: RunSummary::default(),
        set_aside: HashMap::new(),
        backoff: RECONNECT_MIN,
        store_backoff: Duration::from_millis(100),
        connected_once: false,
    };
    let key = src.endpoint.to_string();
    let mut standing_by: Option<String> = None;
    loop {
        if *shutdown.borrow() {
            return Ok(p.summary);
        }
        match lead(store, &key, worker).await {
            Ok(Lead::Ours) => {}
            Ok(Lead::Theirs(other)) => {
                if standing_by.as_deref() != Some(other.as_str()) {
                    tracing::info!(mailbox = %key, leader = %other, "standing by: another worker reads the mailbox");
                    standing_by = Some(other);
                }
                METRICS.set_imap_state(ImapState::StandingBy);
                pause(LEAD_RENEW, &mut shutdown).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(mailbox = %key, error = %e, "cannot reach the database to lead the mailbox; retrying");
                pause(LEAD_RENEW, &mut shutdown).await;
                continue;
            }
        }
        standing_by = None;
        tracing::info!(mailbox = %key, worker = %worker, "this worker reads the mailbox");
        // Serving stops on shutdown or when the lease cannot be kept.
        let (stop_tx, stop_rx) = watch::channel(false);
        let keeper = {
            let (store, key, worker, shutdown) =
                (store.clone(), key.clone(), worker.clone(), shutdown.clone());
            tokio::spawn(async move { keep_lead(&store, &key, &worker, shutdown, stop_tx).await })
        };
        let served = read_mailbox(store, desk, src, &options, stop_rx, wake, &mut p).await;
        keeper.abort();
        if *shutdown.borrow() || served.is_err() || options.exit_when_idle {
            if let Err(e) = store.release_source(&key, worker.as_str()).await {
                tracing::warn!(mailbox = %key, error = %e, "could not give up the mailbox lease; another worker takes over when it runs out");
            }
            served?;
            return Ok(p.summary);
        }
        tracing::warn!(mailbox = %key, "lost the mailbox lease; standing by");
    }
}

/// Reads the mailbox, reconnecting as needed, until `stop` turns true.
async fn read_mailbox<S: Store>(
    store: &S,
    desk: &Desk,
    src: &ImapSource,
    options: &RunOptions,
    mut shutdown: watch::Receiver<bool>,
    wake: &Notify,
    p: &mut ImapProgress,
) -> Result<(), WorkerError> {
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        METRICS.set_imap_state(ImapState::Connecting);
        let end = imap_session(store, desk, src, options, &mut shutdown, wake, p).await;
        METRICS.set_imap_state(ImapState::Disconnected);
        let why = match end {
            SessionEnd::Stop => return Ok(()),
            // A certificate nobody trusts or a refused login at the very first connection is a
            // configuration problem: stop with a clear error. Once the mailbox has worked, the
            // same errors are retried (a server certificate renewal, a token refresh).
            SessionEnd::Imap(e @ (ImapError::Tls(_) | ImapError::Login(_)))
                if !p.connected_once =>
            {
                return Err(WorkerError::Unsupported(format!(
                    "mailbox {}: {e}",
                    src.endpoint
                )));
            }
            SessionEnd::Imap(e) => e.to_string(),
            SessionEnd::Store(e) => format!("store: {e}"),
        };
        let wait = jitter(p.backoff);
        tracing::warn!(
            mailbox = %src.endpoint,
            state = ImapState::Disconnected.label(),
            error = %why,
            retry_in_ms = wait.as_millis() as u64,
            "IMAP disconnected; reconnecting"
        );
        pause(wait, &mut shutdown).await;
        p.backoff = (p.backoff * 2).min(RECONNECT_MAX);
    }
}

async fn imap_session<S: Store>(
    store: &S,
    desk: &Desk,
    src: &ImapSource,
    options: &RunOptions,
    shutdown: &mut watch::Receiver<bool>,
    wake: &Notify,
    p: &mut ImapProgress,
) -> SessionEnd {
    let mut session = match imap::connect(
        &src.endpoint,
        &src.credentials,
        src.tls.clone(),
        src.live.command_timeout,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return SessionEnd::Imap(e),
    };
    METRICS.set_imap_state(ImapState::Connected);
    Metrics::inc(&METRICS.imap_connects);
    p.connected_once = true;
    tracing::info!(
        mailbox = %src.endpoint,
        state = ImapState::Connected.label(),
        idle = session.caps.idle,
        r#move = session.caps.moves,
        "IMAP connected"
    );
    let end = serve_mailbox(store, desk, src, options, shutdown, wake, p, &mut session).await;
    if matches!(end, SessionEnd::Stop) {
        session.logout().await;
    }
    end
}

#[allow(clippy::too_many_arguments)]
async fn serve_mailbox<S: Store>(
    store: &S,
    desk: &Desk,
    src: &ImapSource,
    options: &RunOptions,
    shutdown: &mut watch::Receiver<bool>,
    wake: &Notify,
    p: &mut ImapProgress,
    s: &mut ImapSession,
) -> SessionEnd {
    let r: Result<(), SessionEnd> = async {
        // Folder names are configured with `/` between levels; servers use their own delimiter.
        let delimiter = s.delimiter().await?.unwrap_or_else(|| "/".into());
        let processed = src.processed.replace('/', &delimiter);
        let quarantine = src.quarantine.replace('/', &delimiter);
        s.ensure_folder(&processed).await?;
        s.ensure_folder(&quarantine).await?;
        let folders = Folders {
            processed: &processed,
            quarantine: &quarantine,
        };
        let selected = s.select(&src.endpoint.path).await?;
        // Only a session that got this far resets the reconnect backoff.
        p.backoff = RECONNECT_MIN;
        let state = source_state(store, src, s, selected).await?;
        loop {
            if *shutdown.borrow() {
                return Err(SessionEnd::Stop);
            }
            s.drain_unsolicited();
            p.set_aside
                .retain(|_, since| since.elapsed() < SKIP_AFTER_FAILURE);
            let work = candidates(s, state, src.live.on_first_start, &p.set_aside).await?;
            if work.is_empty() {
                if options.exit_when_idle {
                    return Err(SessionEnd::Stop);
                }
                if s.caps.idle {
                    s.idle(src.live.idle_renew, shutdown).await?;
                } else {
                    pause(src.poll, shutdown).await;
                    s.noop().await?;
                }
                continue;
            }
            let sizes = s
                .sizes(&work.iter().map(|(u, _)| *u).collect::<Vec<_>>())
                .await?;
            for chunk in chunks(work, &sizes, src.batch, src.max_size) {
                if *shutdown.borrow() {
                    return Err(SessionEnd::Stop);
                }
                take_chunk(
                    store,
                    desk,
                    src,
                    &folders,
                    options,
                    shutdown,
                    wake,
                    p,
                    s,
                    selected.uid_validity,
                    &chunk,
                )
                .await?;
            }
        }
    }
    .await;
    match r {
        Ok(()) => SessionEnd::Stop,
        Err(e) => e,
    }
}

/// The messages to take, `(uid, silent, size)`, in batches of at most `batch` messages and
/// `BATCH_BYTES` (an oversized message counts as the head that is fetched of it). A message
/// without a size is gone meanwhile (another client moved it) and left out.
fn chunks(
    work: Vec<(u32, bool)>,
    sizes: &std::collections::BTreeMap<u32, u32>,
    batch: usize,
    max_size: usize,
) -> Vec<Vec<(u32, bool, u32)>> {
    let mut out: Vec<Vec<(u32, bool, u32)>> = Vec::new();
    let mut bytes = 0u64;
    for (uid, silent) in work {
        let Some(&size) = sizes.get(&uid) else {
            continue;
        };
        let counted = if size as usize > max_size {
            u64::from(OVERSIZED_HEAD)
        } else {
            u64::from(size)
        };
        match out.last_mut() {
            Some(chunk) if chunk.len() < batch.max(1) && bytes + counted <= BATCH_BYTES => {
                chunk.push((uid, silent, size));
                bytes += counted;
            }
            _ => {
                out.push(vec![(uid, silent, size)]);
                bytes = counted;
            }
        }
    }
    out
}

/// Reads (or, on first start, writes) the source's state, and handles a UIDVALIDITY change.
async fn source_state<S: Store>(
    store: &S,
    src: &ImapSource,
    s: &mut ImapSession,
    selected: imap::Selected,
) -> Result<SourceState, SessionEnd> {
    let key = &src.endpoint.url;
    match store.source_state(key).await? {
        Some(st) if st.uid_validity == selected.uid_validity => Ok(st),
        Some(st) => {
            tracing::warn!(
                mailbox = %src.endpoint,
                old = st.uid_validity,
                new = selected.uid_validity,
                messages = selected.exists,
                "UIDVALIDITY changed (mailbox recreated or restored): reading every message in it again; those already taken are recognised by their Message-ID and only moved"
            );
            let st = SourceState {
                uid_validity: selected.uid_validity,
                first_start_uid: 0,
            };
            store.set_source_state(key, st, Utc::now()).await?;
            Ok(st)
        }
        None => {
            let all = s.uid_search("ALL").await?;
            let floor = match selected.uid_next {
                Some(n) if n > 0 => n - 1,
                _ => all.last().copied().unwrap_or(0),
            };
            let unseen = if all.is_empty() {
                0
            } else {
                s.uid_search("UNSEEN").await?.len()
            };
            let (taking, leaving) = match src.live.on_first_start {
                FirstStart::ProcessUnseen => (unseen, all.len() - unseen.min(all.len())),
                FirstStart::ImportSilently => (all.len(), 0),
                FirstStart::SkipExisting => (0, all.len()),
            };
            tracing::info!(
                mailbox = %src.endpoint,
                messages = all.len(),
                unseen,
                on_first_start = ?src.live.on_first_start,
                taking,
                leaving,
                "first start on this mailbox"
            );
            let st = SourceState {
                uid_validity: selected.uid_validity,
                first_start_uid: floor,
            };
            store.set_source_state(key, st, Utc::now()).await?;
            Ok(st)
        }
    }
}

/// The messages to take now, oldest first, each with "take silently".
async fn candidates(
    s: &mut ImapSession,
    state: SourceState,
    mode: FirstStart,
    set_aside: &HashMap<(u32, u32), Instant>,
) -> Result<Vec<(u32, bool)>, ImapError> {
    let floor = state.first_start_uid;
    let mut work: Vec<(u32, bool)> = Vec::new();
    if floor > 0 {
        let (query, silent) = match mode {
            // Unseen ones, and ones a run that died before moving them had flagged as taken.
            FirstStart::ProcessUnseen => (
                Some(format!(
                    "UID 1:{floor} OR UNSEEN KEYWORD {}",
                    imap::TAKEN_KEYWORD
                )),
                false,
            ),
            FirstStart::ImportSilently => (Some(format!("UID 1:{floor}")), true),
            FirstStart::SkipExisting => (None, false),
        };
        if let Some(q) = query {
            for uid in s.uid_search(&q).await? {
                if uid <= floor {
                    work.push((uid, silent));
                }
            }
        }
    }
    for uid in s.uid_search(&format!("UID {}:*", floor + 1)).await? {
        // `n:*` always includes the highest UID, even when it is below n.
        if uid > floor {
            work.push((uid, false));
        }
    }
    work.retain(|(uid, _)| !set_aside.contains_key(&(state.uid_validity, *uid)));
    work.sort_unstable();
    work.dedup_by_key(|(u, _)| *u);
    Ok(work)
}

/// Where taken messages go, in the server's own folder names.
struct Folders<'a> {
    processed: &'a str,
    quarantine: &'a str,
}

#[allow(clippy::too_many_arguments)]
async fn take_chunk<S: Store>(
    store: &S,
    desk: &Desk,
    src: &ImapSource,
    folders: &Folders<'_>,
    options: &RunOptions,
    shutdown: &mut watch::Receiver<bool>,
    wake: &Notify,
    p: &mut ImapProgress,
    s: &mut ImapSession,
    uid_validity: u32,
    chunk: &[(u32, bool, u32)],
) -> Result<(), SessionEnd> {
    let started = Instant::now();
    let (big, normal): (Vec<_>, Vec<_>) = chunk
        .iter()
        .partition(|(_, _, size)| *size as usize > src.max_size);
    let mut raws = if normal.is_empty() {
        Default::default()
    } else {
        let uids: Vec<u32> = normal.iter().map(|(u, _, _)| *u).collect();
        match s.bodies(&uids).await {
            Ok(m) => m,
            // One message the server cannot serve must not block the others: one by one.
            Err(e) if e.is_command_refusal() && uids.len() > 1 => {
                let mut m = std::collections::BTreeMap::new();
                for uid in uids {
                    match s.bodies(&[uid]).await {
                        Ok(one) => m.extend(one),
                        Err(e) if e.is_command_refusal() => {
                            tracing::error!(uid, error = %e, "IMAP server cannot serve this message; left in the mailbox and retried later");
                            p.set_aside.insert((uid_validity, uid), Instant::now());
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                m
            }
            Err(e) => return Err(e.into()),
        }
    };
    let heads = if big.is_empty() {
        Default::default()
    } else {
        let uids: Vec<u32> = big.iter().map(|(u, _, _)| *u).collect();
        s.heads(&uids, OVERSIZED_HEAD).await?
    };
    let mut items = Vec::with_capacity(chunk.len());
    for &(uid, silent, size) in chunk {
        let source = format!("{} uid {uid_validity}/{uid}", src.endpoint.url);
        let (raw, truncated_from) = if size as usize > src.max_size {
            match heads.get(&uid) {
                Some(h) => (h.clone().into(), Some(size as usize)),
                None => continue,
            }
        } else {
            match raws.remove(&uid) {
                Some(r) => (r.into(), None),
                None => continue,
            }
        };
        items.push((
            uid,
            Incoming {
                raw,
                source,
                silent,
                truncated_from,
            },
        ));
    }
    let taken = take(store, desk, items).await;
    let (to_quarantine, to_processed): (Vec<_>, Vec<_>) =
        taken.done.iter().partition(|(_, o)| is_quarantine(o));
    let processed: Vec<u32> = to_processed.iter().map(|(u, _)| *u).collect();
    let quarantined: Vec<u32> = to_quarantine.iter().map(|(u, _)| *u).collect();
    if !taken.done.is_empty() {
        wake.notify_one();
    }
    count(
        &mut p.summary,
        &taken.done,
        started,
        options.record_latencies,
    );
    for uid in taken.set_aside {
        p.set_aside.insert((uid_validity, uid), Instant::now());
    }
    // Committed: now (and only now) flag and move them out of the mailbox.
    s.mark_and_move(&processed, folders.processed).await?;
    s.mark_and_move(&quarantined, folders.quarantine).await?;
    if let Some(e) = taken.temporary {
        tracing::warn!(error = %e, retry_in_ms = p.store_backoff.as_millis() as u64, "database busy or unreachable; messages stay untouched on the server");
        pause(p.store_backoff, shutdown).await;
        p.store_backoff = (p.store_backoff * 2).min(Duration::from_secs(30));
        // Keep the connection alive while the database recovers.
        s.noop().await?;
    } else {
        p.store_backoff = Duration::from_millis(100);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_at_most_a_batch_and_batch_bytes_and_skip_gone_messages() {
        let mb = 1024 * 1024;
        let sizes: std::collections::BTreeMap<u32, u32> = [
            (1, 10),
            (2, 20),
            (3, 30),
            (5, 20 * mb),
            (6, 20 * mb),
            (7, 100 * mb),
            (8, 1),
        ]
        .into_iter()
        .collect();
        let uids = |c: &Vec<(u32, bool, u32)>| c.iter().map(|(u, _, _)| *u).collect::<Vec<_>>();
        let work = |ids: &[u32]| ids.iter().map(|u| (*u, false)).collect::<Vec<_>>();
        // (work, batch, expected uids per chunk)
        type Case<'a> = (&'a [u32], usize, &'a [&'a [u32]]);
        let cases: &[Case] = &[
            (&[1, 2, 3], 2, &[&[1, 2], &[3]]),
            (&[1, 4, 2], 10, &[&[1, 2]]),
            // 20 + 20 MiB is over the 32 MiB a batch may fetch.
            (&[5, 6, 1], 10, &[&[5], &[6, 1]]),
            // Over the size limit: only its head counts.
            (&[7, 8], 10, &[&[7, 8]]),
            (&[], 10, &[]),
        ];
        for (ids, batch, want) in cases {
            let got: Vec<Vec<u32>> = chunks(work(ids), &sizes, *batch, 25 * mb as usize)
                .iter()
                .map(uids)
                .collect();
            let want: Vec<Vec<u32>> = want.iter().map(|c| c.to_vec()).collect();
            assert_eq!(got, want, "{ids:?} batch {batch}");
        }
    }
}
