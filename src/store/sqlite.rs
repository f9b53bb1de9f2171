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
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad sqlite URL {url}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(SqliteStore {
            pool,
            writer: Default::default(),
        })
    }

    /// Opens an existing database without ever writing to it (for `explain`).
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
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

    async fn run_migrations(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// [`crate::store::Store::mark_handed_over`]: one UPDATE committed with
    /// `synchronous=NORMAL` (in WAL mode: visible to every reader and safe from a crash of this
    /// process at once; flushed to disk by the next full commit or checkpoint).
    async fn handover(
        &self,
        id: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let _turn = self.writer.clone().lock_owned().await;
        let mut conn = self.pool.acquire().await?;
        let r: Result<(), sqlx::Error> = async {
            sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            sqlx::query(
                "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            // Never hand a connection in an unknown sync mode back to the pool.
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(())
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

sql_store!(SqliteStore, SqliteTx, Sqlite);
