//! End-to-end figures against the real mail stack (Dovecot + Postfix, started by the test
//! harness): `cargo bench --bench live`.
//!
//! 1. Latency: 100 customers each send one mail by SMTP, one at a time, to a running
//!    `postdesk run` in IDLE; measured from Postfix's 250 for the customer's DATA to the
//!    acknowledgement being visible in that customer's IMAP INBOX.
//! 2. Backlog: 10,000 messages waiting in support@'s INBOX; `postdesk run` is started and the
//!    clock runs until every acknowledgement has been delivered to the customers' mailboxes.
//!    Peak RSS is the worker's (getrusage of the child).
//!
//! `POSTDESK_BENCH_LATENCY_N` and `POSTDESK_BENCH_BACKLOG_N` change the counts;
//! `POSTDESK_BENCH_DATABASE` (a postgres:// URL of a server where a database may be created)
//! runs the worker on PostgreSQL instead of SQLite.

#[path = "../tests/common/mailstack.rs"]
mod mailstack;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailstack::{MailStack, PASSWORD, SUPPORT, customer};

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

fn mail(from: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nthe export job fails every night since the upgrade ({id}).\r\nLogs attached below.\r\n\r\n-- \r\nCustomer\r\n"
    )
    .into_bytes()
}

fn worker(stack: &MailStack, dir: &std::path::Path, database: &str, extra: &[&str]) -> Child {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    let log = std::fs::File::create(dir.join("worker.log")).unwrap_or_else(|e| panic!("{e}"));
    Command::new(BIN)
        .args(&args)
        .current_dir(dir)
        .env_remove("POSTDESK_CONFIG")
        .env("POSTDESK_DATABASE_URL", database)
        .env("POSTDESK_MAILBOX_URL", stack.imap_url(SUPPORT))
        .env("POSTDESK_MAILBOX_PASSWORD", PASSWORD)
        .env(
            "POSTDESK_OUTBOX_URL",
            match std::env::var("POSTDESK_BENCH_FILE_OUTBOX") {
                // Diagnosis: the IMAP side alone, acknowledgements written as files.
                Ok(_) => format!("file:{}", dir.join("outbox").display()),
                Err(_) => stack.submission_url(),
            },
        )
        .env("POSTDESK_OUTBOX_PASSWORD", PASSWORD)
        .env("POSTDESK_TLS_CA_FILE", &stack.ca_file)
        .env("POSTDESK_SUPPORT_ADDRESSES", SUPPORT)
        .env(
            "POSTDESK_TEMPLATES_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"),
        )
        .env("POSTDESK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Messages delivered to a Dovecot maildir so far (new/ and cur/).
fn delivered(stack: &MailStack, user: &str) -> usize {
    let root = stack.maildir(user);
    ["new", "cur"]
        .iter()
        .map(|d| {
            std::fs::read_dir(root.join(d))
                .map(|rd| rd.count())
                .unwrap_or(0)
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn database(dir: &std::path::Path, tag: &str) -> String {
    match std::env::var("POSTDESK_BENCH_DATABASE") {
        Ok(base) if !base.is_empty() => {
            let name = format!("postdesk_bench_{tag}_{}", std::process::id());
            let out = Command::new("psql")
                .args([&base, "-q", "-c", &format!("CREATE DATABASE {name}")])
                .output()
                .unwrap_or_else(|e| panic!("psql: {e}"));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            format!("{}/{name}", base.trim_end_matches('/'))
        }
        _ => format!("sqlite:{}", dir.join("postdesk.db").display()),
    }
}

async fn latency(n: usize) {
    if n == 0 {
        return;
    }
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = database(dir.path(), "latency");
    let mut child = worker(&stack, dir.path(), &db, &[]);
    // Connected and in IDLE before the first customer writes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.count(SUPPORT, "postdesk.processed").await == 0 {
        // The worker creates the processed folder when it connects; wait for one warm-up mail.
        if Instant::now() > deadline {
            panic!("worker not ready");
        }
        stack
            .send(
                SUPPORT,
                SUPPORT,
                &mail("warmup@customer.test", "warm up", "warmup@bench"),
            )
            .await;
        stack
            .wait_for_count(SUPPORT, "postdesk.processed", 1, Duration::from_secs(5))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let who = customer(i);
        let accepted = stack
            .send(
                &who,
                SUPPORT,
                &mail(
                    &who,
                    &format!("SEV 4 latency {i}"),
                    &format!("lat{i}@bench"),
                ),
            )
            .await;
        let deadline = accepted + Duration::from_secs(30);
        loop {
            if delivered(&stack, &who) >= 1 {
                samples.push(accepted.elapsed());
                break;
            }
            assert!(Instant::now() < deadline, "no acknowledgement for {who}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    println!(
        "latency (SMTP 250 -> acknowledgement in the customer's mailbox), {n} messages one at a time, {}:\n  p50={:.0}ms p95={:.0}ms max={:.0}ms mean={:.0}ms",
        if db.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
        percentile(&samples, 0.50).as_secs_f64() * 1000.0,
        percentile(&samples, 0.95).as_secs_f64() * 1000.0,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        mean.as_secs_f64() * 1000.0,
    );
}

async fn backlog(n: usize) {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = database(dir.path(), "backlog");
    let customers = n.div_ceil(10).max(1);
    let raws: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let who = customer(i % customers);
            mail(&who, &format!("SEV 4 backlog {i}"), &format!("bl{i}@bench"))
        })
        .collect();
    let t = Instant::now();
    stack.append(SUPPORT, "INBOX", &raws).await;
    println!(
        "backlog: {n} messages appended to INBOX in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut child = worker(&stack, dir.path(), &db, &["--exit-when-idle"]);
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    let worker_done = started.elapsed();
    assert!(
        status.success(),
        "worker failed: {}",
        std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default()
    );
    let rss_kib = {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        ru.ru_maxrss
    };
    if std::env::var("POSTDESK_BENCH_FILE_OUTBOX").is_ok() {
        println!(
            "backlog of {n} into tickets and acknowledgement files: {:.2}s ({:.0} msg/s); worker peak RSS {:.1} MiB",
            worker_done.as_secs_f64(),
            n as f64 / worker_done.as_secs_f64(),
            rss_kib as f64 / 1024.0
        );
        return;
    }
    // Every acknowledgement has been accepted by Postfix; wait until all are in the mailboxes.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let have: usize = (0..customers)
            .map(|c| delivered(&stack, &customer(c)))
            .sum();
        if have >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {have} of {n} acknowledgements delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_delivered = started.elapsed();
    println!(
        "backlog of {n} ({}): worker drained INBOX and sent every acknowledgement in {:.2}s ({:.0} msg/s); all {n} acknowledgements in the customers' mailboxes after {:.2}s ({:.0} msg/s); worker peak RSS {:.1} MiB",
        if db.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
        worker_done.as_secs_f64(),
        n as f64 / worker_done.as_secs_f64(),
        all_delivered.as_secs_f64(),
        n as f64 / all_delivered.as_secs_f64(),
        rss_kib as f64 / 1024.0,
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: only run for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        latency(n("POSTDESK_BENCH_LATENCY_N", 100)).await;
        backlog(n("POSTDESK_BENCH_BACKLOG_N", 10_000)).await;
    });
}
