//! `postdesk bench ingest`: end-to-end throughput of the worker, maildir -> tickets +
//! acknowledgements in a `file:` outbox, on generated varied mail, with durable commits.
//!
//! It prints messages per second, p50/p99 of the time each message spends from being read to
//! being marked done (its batch's commit included), and the process's peak RSS. Tests do not time
//! things; this command does, for the README and the issue notes.
//!
//! A run writes a few hundred MB (10,000 messages, their acknowledgements, the database) into a
//! work directory: a temporary one is removed however the run ends ([`WorkDir`]); one given with
//! `--dir` is kept for inspection. The worker's line per message is off during a bench
//! ([`LOG_FILTER`]): 10,000 of them would bury the report and cost time in the measurement.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, DatabaseUrl, MailboxUrl, OutboxUrl};
use crate::inbound::Maildir;
use crate::pipeline::Desk;
use crate::store::{PgStore, SqliteStore, Store, StoreError};
use crate::worker::{self, RunOptions, WorkerError};

pub mod replies;

/// The log filter of `postdesk bench` when `POSTDESK_LOG` is not set: the default one, with the
/// worker's per-message (and start/stop) lines at `info` left out. `POSTDESK_LOG` still wins,
/// e.g. `POSTDESK_LOG=info` shows every message.
pub const LOG_FILTER: &str = "info,sqlx=error,postdesk::worker=warn,postdesk::inbound::reader=warn,postdesk::outbound::deliver=warn";

/// Why a bench run gave no report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The worker or the store failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The store failed outside the worker (schema, counts, the PostgreSQL bench database).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The work directory could not be made.
    #[error("cannot create the work directory {path}: {error}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// Ctrl-C or SIGTERM stopped the run; nothing was measured.
    #[error("interrupted; nothing measured")]
    Interrupted,
}

/// The bench's work directory. A temporary one is removed when this is dropped: after the
/// report, on an error, on a panic (unwinding), and after `shutdown` (Ctrl-C, SIGTERM) stopped
/// the run. One given by the user is left as it is.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    /// A new, empty `postdesk-bench-<pid>-<n>` under the system's temporary folder (never an
    /// existing one: a leftover of an earlier run would mix its mail into this one).
    pub fn temporary() -> Result<WorkDir, BenchError> {
        let base = std::env::temp_dir();
        let mut n = 0u32;
        loop {
            let path = base.join(format!("postdesk-bench-{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(WorkDir { path, remove: true }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(error) => return Err(BenchError::WorkDir { path, error }),
            }
        }
    }

    /// The user's directory (created if missing), kept afterwards.
    pub fn given(path: &Path) -> Result<WorkDir, BenchError> {
        std::fs::create_dir_all(path).map_err(|error| BenchError::WorkDir {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(WorkDir {
            path: path.to_path_buf(),
            remove: false,
        })
    }

    /// Where the run writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove
            && let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the bench work directory");
        }
    }
}

/// The figures one run measured.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Messages generated and taken.
    pub messages: u64,
    /// Tickets in the store afterwards.
    pub tickets: i64,
    /// Acknowledgement files in the outbox afterwards.
    pub outbox_files: usize,
    /// Wall time from start to the last acknowledgement written.
    pub seconds: f64,
    /// Messages per second.
    pub messages_per_second: f64,
    /// Median per-message time, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile per-message time, milliseconds.
    pub p99_ms: f64,
    /// Peak resident memory of this process, MiB.
    pub peak_rss_mib: f64,
    /// Messages per transaction.
    pub batch_size: usize,
}

/// Generates `n` varied messages into `maildir/new`.
pub fn generate(maildir: &Maildir, n: usize) -> std::io::Result<()> {
    const SUBJECTS: [&str; 12] = [
        "SEV 3 Reports page times out",
        "[SEV 1] Production API returns 502",
        "Sev-2: login fails for SSO users",
        "Question about our invoice",
        "RE: AW: [Sev 4] Export to CSV drops umlauts",
        "SEV:3 Dashboard slow since upgrade",
        "Severity 4 - typo in the PDF footer",
        "Fwd: SEV3 webhook retries never stop",
        "Several questions about the API",
        "(sev 2) replication lag",
        "SEV 4 Bitte um Rückruf wegen Lizenz",
        "回复：SEV 3 服务器无法连接",
    ];
    let mut body = String::new();
    for i in 0..n {
        let customer = i % 2000;
        let domain = [
            "acme.test",
            "globex.test",
            "initech.test",
            "umbrella.test",
            "hooli.test",
        ][i % 5];
        let subject = SUBJECTS[i % SUBJECTS.len()];
        let encoded_subject = if subject.is_ascii() {
            subject.to_string()
        } else {
            format!("=?UTF-8?B?{}?=", base64(subject.as_bytes()))
        };
        body.clear();
        let lines = 5 + (i * 7919) % 60;
        for l in 0..lines {
            let _ = writeln!(
                body,
                "Line {l}: when we open the reports page for account {customer} it spins and then fails.\r"
            );
        }
        let content = match i % 3 {
            0 => format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"),
            1 => format!(
                "Content-Type: multipart/alternative; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n--b{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<div dir=\"ltr\"><p>{}</p></div>\r\n--b{i}--\r\n",
                body.replace("\r\n", "<br>")
            ),
            _ => format!(
                "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>{}</p><a href=\"https://acme.test/t/{i}\">link</a></body></html>\r\n",
                body.replace("\r\n", "<br>")
            ),
        };
        let raw = format!(
            "Return-Path: <user{customer}@{domain}>\r\nFrom: User {customer} <user{customer}@{domain}>\r\nTo: support@example.com\r\nSubject: {encoded_subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench-{i}-{customer}@{domain}>\r\nMIME-Version: 1.0\r\n{content}"
        );
        maildir.deliver(&format!("{:010}.bench{i}.localhost", i), raw.as_bytes())?;
    }
    Ok(())
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(T[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Generates `messages` mails in a work directory (`dir`, kept; `None`: a temporary one,
/// removed however this returns) and drains them with the worker into `database` (`None`: a new
/// SQLite file in the work directory; a `postgres://` admin URL: a new database there, dropped
/// afterwards). `shutdown` turning true (Ctrl-C, SIGTERM) stops the worker as in `postdesk run`
/// and returns [`BenchError::Interrupted`], the work directory removed.
pub async fn ingest(
    base: &Config,
    dir: Option<&Path>,
    messages: usize,
    database: Option<&str>,
    shutdown: watch::Receiver<bool>,
) -> Result<BenchReport, BenchError> {
    let work = match dir {
        Some(d) => WorkDir::given(d)?,
        None => WorkDir::temporary()?,
    };
    let result = run(base, work.path(), messages, database, shutdown.clone()).await;
    if *shutdown.borrow() {
        return Err(BenchError::Interrupted);
    }
    result
}

async fn run(
    base: &Config,
    dir: &Path,
    messages: usize,
    database: Option<&str>,
    shutdown: watch::Receiver<bool>,
) -> Result<BenchReport, BenchError> {
    let maildir_path = dir.join("mail");
    let outbox_path = dir.join("outbox");
    let maildir = Maildir::open(&maildir_path).map_err(|error| WorkerError::Io {
        path: maildir_path.clone(),
        error,
    })?;
    generate(&maildir, messages).map_err(|error| WorkerError::Io {
        path: maildir_path.clone(),
        error,
    })?;
    let mut config = base.clone();
    config.mailbox_url = MailboxUrl::Maildir(maildir_path);
    config.outbox_url = OutboxUrl::File(outbox_path.clone());
    let desk = Desk::from_config(&config).map_err(|e| WorkerError::Unsupported(e.to_string()))?;
    if *shutdown.borrow() {
        return Err(BenchError::Interrupted);
    }
    let options = RunOptions {
        exit_when_idle: true,
        record_latencies: true,
    };
    let started = Instant::now();
    let (backend, summary, tickets) = match database {
        Some(admin) if admin.starts_with("postgres") => {
            let name = format!("postdesk_bench_{}", std::process::id());
            let url = crate::store::postgres::create_database(admin, &name).await?;
            config.database_url = DatabaseUrl::Postgres(url.clone());
            let measured: Result<_, BenchError> = async {
                let store = PgStore::open(&url).await?;
                store.migrate().await?;
                let summary = worker::run(store.clone(), &config, desk, options, shutdown).await?;
                let tickets = store.counts().await?.tickets;
                Ok((summary, tickets))
            }
            .await;
            // Dropped whether the run worked or not, like the work directory.
            let dropped = crate::store::postgres::drop_database(admin, &name).await;
            let (summary, tickets) = measured?;
            dropped?;
            ("postgres", summary, tickets)
        }
        other => {
            let url = match other {
                Some(u) => u.to_string(),
                None => format!("sqlite:{}", dir.join("bench.db").display()),
            };
            config.database_url = DatabaseUrl::Sqlite(url.clone());
            let store = SqliteStore::open(&url).await?;
            store.migrate().await?;
            let summary = worker::run(store.clone(), &config, desk, options, shutdown).await?;
            ("sqlite", summary, store.counts().await?.tickets)
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut lat = summary.latencies.clone();
    lat.sort();
    let outbox_files = std::fs::read_dir(&outbox_path)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0);
    Ok(BenchReport {
        backend,
        messages: summary.messages,
        tickets,
        outbox_files,
        seconds,
        messages_per_second: summary.messages as f64 / seconds.max(1e-9),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        peak_rss_mib: peak_rss_mib(),
        batch_size: config.batch_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }
}
