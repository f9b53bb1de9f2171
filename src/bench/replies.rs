//! `postdesk bench replies`: reply ingest against a large store. The store is seeded in bulk
//! (tickets, their requesters, inbound messages and one sent acknowledgement per ticket), then
//! customer replies are taken through the same path the worker uses (`ingest_batch`: parse,
//! thread lookup, decide, apply, one durable commit per batch): half of them thread by
//! In-Reply-To naming the acknowledgement, half by the subject tag alone.
//!
//! It prints replies per second and p50/p99 of the time a reply waits for its batch's commit,
//! for a small store (only the tickets the replies answer) and for the large one, so that a
//! lookup that scans shows as the difference between the two.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use sqlx::Connection;

use crate::config::Config;
use crate::desk::Action;
use crate::pipeline::{Desk, Incoming, ingest_batch};
use crate::store::{PgStore, SqliteStore, Store, StoreError};

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct RepliesReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Tickets in the store before the replies.
    pub tickets: i64,
    /// Messages in the store before the replies.
    pub messages: i64,
    /// Replies taken.
    pub replies: usize,
    /// How many of them threaded onto their ticket.
    pub threaded: usize,
    /// Seconds spent seeding the store.
    pub seed_seconds: f64,
    /// Seconds taking the replies.
    pub seconds: f64,
    /// Replies per second.
    pub replies_per_second: f64,
    /// Median time a reply waits for its batch's commit, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of it.
    pub p99_ms: f64,
    /// Replies per transaction.
    pub batch_size: usize,
}

/// What to seed and measure.
#[derive(Debug, Clone, Copy)]
pub struct RepliesPlan {
    /// Tickets seeded.
    pub tickets: i64,
    /// Inbound messages seeded (spread evenly over the tickets).
    pub messages: i64,
    /// Replies taken.
    pub replies: usize,
}

const SEED_SUBJECT: &str = "SEV 3 seeded ticket";

/// Seeds a new store and takes the replies: a SQLite file in a temporary work directory (removed
/// afterwards), or with a `postgres://` server URL a new database there (dropped afterwards).
pub async fn bench(
    config: &Config,
    database: Option<&str>,
    plan: RepliesPlan,
) -> Result<RepliesReport, super::BenchError> {
    match database {
        Some(admin) if admin.starts_with("postgres") => {
            let name = format!("postdesk_bench_replies_{}", std::process::id());
            let url = crate::store::postgres::create_database(admin, &name).await?;
            let measured = run(config, &url, plan).await;
            let dropped = crate::store::postgres::drop_database(admin, &name).await;
            let report = measured?;
            dropped?;
            Ok(report)
        }
        Some(url) => Ok(run(config, url, plan).await?),
        None => {
            let work = super::WorkDir::temporary()?;
            let url = format!("sqlite:{}", work.path().join("replies.db").display());
            Ok(run(config, &url, plan).await?)
        }
    }
}

/// Seeds a store at `url` (a `sqlite:` file or a `postgres://` database) and takes the replies.
pub async fn run(
    config: &Config,
    url: &str,
    plan: RepliesPlan,
) -> Result<RepliesReport, StoreError> {
    let desk = Desk::from_config(config).map_err(|e| StoreError::Database(e.to_string()))?;
    if url.starts_with("postgres") {
        let store = PgStore::open(url).await?;
        store.migrate().await?;
        let started = Instant::now();
        let mut conn = sqlx::PgConnection::connect(url).await?;
        seed_pg(&mut conn, plan).await?;
        conn.close().await?;
        let seed_seconds = started.elapsed().as_secs_f64();
        measure("postgres", &store, &desk, config, plan, seed_seconds).await
    } else {
        let store = SqliteStore::open(url).await?;
        store.migrate().await?;
        let started = Instant::now();
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        seed_sqlite(&mut conn, plan).await?;
        conn.close().await?;
        let seed_seconds = started.elapsed().as_secs_f64();
        measure("sqlite", &store, &desk, config, plan, seed_seconds).await
    }
}

/// The bulk seed, one statement per table (a recursive counter both backends understand).
const SEED_TICKETS: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
     INSERT INTO tickets (id, subject, requester, status, requested_severity, assigned_severity,
                          severity_given, downgraded, created_at, updated_at)
     SELECT i, 'SEV 3 seeded ticket ' || i, 'user' || i || '@seed.test',
            CASE i % 4 WHEN 0 THEN 'in_triage' WHEN 1 THEN 'engineer_pending'
                       WHEN 2 THEN 'customer_pending' ELSE 'close_pending' END,
            3, 3, $3, $4, $2, $2 FROM n";
const SEED_PARTICIPANTS: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
     INSERT INTO participants (ticket_id, address, role, added_at)
     SELECT i, 'user' || i || '@seed.test', 'requester', $2 FROM n";
const SEED_MESSAGES: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
     INSERT INTO messages (ticket_id, message_id, direction, visibility, kind, from_addr, subject,
                           body_text, source, received_at, raw)
     SELECT ((i - 1) % $3) + 1, 'seed-' || i || '@seed.test', 'inbound', 'public', 'customer',
            'user' || (((i - 1) % $3) + 1) || '@seed.test', 'SEV 3 seeded ticket',
            'The reports page times out for every user since this morning.', 'seed', $2, $4 FROM n";
const SEED_OUTBOX: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
     INSERT INTO outbox (ticket_id, message_id, template, to_addr, automatic, rendered, created_at,
                         next_attempt_at, sent_at, attempts)
     SELECT i, 'postdesk.' || i || '.acknowledgement.seed@example.com', 'acknowledgement',
            'user' || i || '@seed.test', $3, $4, $2, $2, $2, 1 FROM n";
const SEED_EVENTS: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
     INSERT INTO events (ticket_id, at, actor, kind, reason)
     SELECT ((i - 1) % $3) + 1, $2, 'postdesk', 'seeded', 'seeded by postdesk bench replies' FROM n";

macro_rules! seed_with {
    ($conn:expr, $plan:expr) => {{
        let now = Utc::now() - chrono::Duration::hours(1);
        let raw = vec![b'x'; 2048];
        let plan: RepliesPlan = $plan;
        let tickets = plan.tickets.max(1);
        sqlx::query(SEED_TICKETS)
            .bind(tickets)
            .bind(now)
            .bind(true)
            .bind(false)
            .execute(&mut *$conn)
            .await?;
        sqlx::query(SEED_PARTICIPANTS)
            .bind(tickets)
            .bind(now)
            .execute(&mut *$conn)
            .await?;
        if plan.messages > 0 {
            sqlx::query(SEED_MESSAGES)
                .bind(plan.messages)
                .bind(now)
                .bind(tickets)
                .bind(&raw)
                .execute(&mut *$conn)
                .await?;
        }
        sqlx::query(SEED_OUTBOX)
            .bind(tickets)
            .bind(now)
            .bind(true)
            .bind(&raw)
            .execute(&mut *$conn)
            .await?;
        sqlx::query(SEED_EVENTS)
            .bind(tickets * 2)
            .bind(now)
            .bind(tickets)
            .execute(&mut *$conn)
            .await?;
    }};
}

async fn seed_sqlite(
    conn: &mut sqlx::SqliteConnection,
    plan: RepliesPlan,
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    seed_with!(&mut *tx, plan);
    tx.commit().await?;
    // A store in use has its statistics and a checkpointed WAL: without these the first replies
    // would pay for the bulk seed (a WAL of gigabytes written back), not for their lookups.
    sqlx::query("ANALYZE").execute(&mut *conn).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn seed_pg(conn: &mut sqlx::PgConnection, plan: RepliesPlan) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    seed_with!(&mut *tx, plan);
    // Rows were inserted with explicit ids: move the identity sequences past them.
    for table in ["tickets", "messages", "outbox", "events"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT MAX(id) FROM {table}), 1))"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

/// Reply `r` of the run: to a ticket spread over the whole store, by header or by tag.
fn reply(r: usize, tickets: i64) -> Vec<u8> {
    let t = 1 + (r as i64 * 7919) % tickets.max(1);
    let threading = if r.is_multiple_of(2) {
        format!(
            "Subject: Re: {SEED_SUBJECT} {t}\r\nIn-Reply-To: <postdesk.{t}.acknowledgement.seed@example.com>\r\nReferences: <seed-{t}@seed.test> <postdesk.{t}.acknowledgement.seed@example.com>\r\n"
        )
    } else {
        format!("Subject: AW: RE: [#{t}] {SEED_SUBJECT} {t}\r\n")
    };
    format!(
        "From: User {t} <user{t}@seed.test>\r\nTo: support@example.com\r\n{threading}Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench-reply-{r}@seed.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHere are the logs you asked for; it failed again at 11:02.\r\n\r\nOn Mon, 23 Nov 2026 at 10:00, Support <support@example.com> wrote:\r\n> we have received your request and opened ticket [#{t}].\r\n> An engineer will look at it.\r\n"
    )
    .into_bytes()
}

async fn measure<S: Store>(
    backend: &'static str,
    store: &S,
    desk: &Desk,
    config: &Config,
    plan: RepliesPlan,
    seed_seconds: f64,
) -> Result<RepliesReport, StoreError> {
    let counts = store.counts().await?;
    let items: Vec<Incoming> = (0..plan.replies)
        .map(|r| Incoming {
            raw: reply(r, plan.tickets).into(),
            source: "bench".into(),
            silent: false,
            truncated_from: None,
        })
        .collect();
    let batch = config.batch_size.max(1);
    let mut waits: Vec<Duration> = Vec::with_capacity(items.len());
    let mut threaded = 0;
    let started = Instant::now();
    for chunk in items.chunks(batch) {
        let t = Instant::now();
        let outcomes = ingest_batch(store, desk, chunk, Utc::now()).await?;
        let took = t.elapsed();
        threaded += outcomes
            .iter()
            .filter(|o| matches!(o.decision.action, Action::Reply(_)))
            .count();
        waits.extend(std::iter::repeat_n(took, chunk.len()));
    }
    let seconds = started.elapsed().as_secs_f64();
    waits.sort();
    Ok(RepliesReport {
        backend,
        tickets: counts.tickets,
        messages: counts.messages,
        replies: plan.replies,
        threaded,
        seed_seconds,
        seconds,
        replies_per_second: plan.replies as f64 / seconds.max(1e-9),
        p50_ms: super::percentile(&waits, 0.50),
        p99_ms: super::percentile(&waits, 0.99),
        batch_size: batch,
    })
}
