//! The embedded default store: one SQLite file in WAL mode with `synchronous=FULL` (a commit is
//! on disk when it returns), a busy timeout, and `BEGIN IMMEDIATE` for writes so that two
//! writers queue on the lock instead of failing half-way through a transaction.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool<Sqlite>,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    /// Opens (creating when missing) the database at a `sqlite:` URL.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, true).await
    }

    /// Opens the database at a `sqlite:` URL only if it exists (for commands that only read:
    /// `tickets`, `sla explain`); a missing file is [`StoreError::Missing`] and stays missing.
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        check_exists(url)?;
        Self::open_with(url, false).await
    }

    async fn open_with(url: &str, create: bool) -> Result<Self, StoreError> {
        Self::connect(url, create)
            .await
            .map_err(|e| super::naming_url(url, e))
    }

    async fn connect(url: &str, create: bool) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad sqlite URL {url}: {e}")))?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Switching a new database to WAL takes a lock the busy timeout does not wait for:
        // when several processes start on a new database at once, the losers look again.
        let mut attempt = 0;
        let pool = loop {
            match SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e))
                    if attempt < 20 && e.code().is_some_and(|c| super::sqlite_busy(&c)) =>
                {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "database busy while opening; looking again");
                    tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(SqliteStore {
            pool,
            writer: Default::default(),
        })
    }

    /// Opens an existing database without ever writing to it (for `explain`); a missing file
    /// is [`StoreError::Missing`].
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        check_exists(url)?;
        Self::connect_read_only(url)
            .await
            .map_err(|e| super::naming_url(url, e))
    }

    async fn connect_read_only(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad sqlite URL {url}: {e}")))?
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        Ok(SqliteStore {
            pool,
            writer: Default::default(),
        })
    }

    /// Applies the migrations. SQLite has no migration lock: when two processes start on a new
    /// database at once (the worker and `tickets list`, say), the loser's migration fails on the
    /// winner's tables; it then finds them applied on a second look.
    async fn run_migrations(&self) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match sqlx::migrate!("./migrations/sqlite").run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 10 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "migration raced another process; looking again");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes this process's writer turn, then `BEGIN IMMEDIATE` (other processes wait on the
    /// busy timeout).
    async fn begin_write(
        &self,
    ) -> Result<(sqlx::Transaction<'static, Sqlite>, WriterTurn), StoreError> {
        let turn = self.writer.clone().lock_owned().await;
        Ok((self.pool.begin_with("BEGIN IMMEDIATE").await?, Some(turn)))
    }
}

/// [`StoreError::Missing`] when the file a `sqlite:` URL names does not exist (in-memory
/// databases always do).
fn check_exists(url: &str) -> Result<(), StoreError> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(());
    }
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Database(format!("bad sqlite URL {url}: {e}")))?;
    if opts.get_filename().exists() {
        Ok(())
    } else {
        Err(StoreError::Missing(url.to_string()))
    }
}

sql_store!(SqliteStore, SqliteTx, Sqlite, "", "");

/// SQLite writers take the database lock at `BEGIN IMMEDIATE`, before anything is read: no
/// Message-ID lock is needed.
async fn lock_message_ids_on(
    _conn: &mut sqlx::SqliteConnection,
    _ids: &[&str],
) -> Result<(), StoreError> {
    Ok(())
}
