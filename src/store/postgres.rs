//! The PostgreSQL store, for teams that run several workers against one database. Message-ID
//! uniqueness is enforced by the database, so two workers that race on the same message end
//! with one ticket: the loser's transaction fails and its retry sees a duplicate.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Pool, Postgres};

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Postgres>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

impl PgStore {
    /// Connects to a `postgres://` URL.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| super::naming_url(url, e.into()))?;
        Ok(PgStore { pool })
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// PostgreSQL has row locks: writers need no turn.
    async fn begin_write(
        &self,
    ) -> Result<(sqlx::Transaction<'static, Postgres>, WriterTurn), StoreError> {
        Ok((self.pool.begin().await?, None))
    }
}

/// Runs administrative statements about database `name` on the server of `admin_url`.
async fn admin(admin_url: &str, name: &str, statements: &[&str]) -> Result<(), StoreError> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::Database(format!(
            "invalid database name {name}"
        )));
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await?;
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.replace("{name}", name)))
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    Ok(())
}

/// Creates an empty database `name` on the server of `admin_url` (for tests and benchmarks)
/// and returns the URL of the new database.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    let Some((scheme, rest)) = admin_url.split_once("://") else {
        return Err(StoreError::Database("admin URL has no scheme".into()));
    };
    admin(
        admin_url,
        name,
        &["DROP DATABASE IF EXISTS {name}", "CREATE DATABASE {name}"],
    )
    .await?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let query = rest.find('?').map(|q| &rest[q..]).unwrap_or("");
    Ok(format!("{scheme}://{}/{name}{query}", &rest[..host_end]))
}

/// Drops database `name` on the server of `admin_url`, closing its connections.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    admin(
        admin_url,
        name,
        &["DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
    )
    .await
}

sql_store!(
    PgStore,
    PgTx,
    Postgres,
    " FOR UPDATE",
    " FOR UPDATE SKIP LOCKED"
);

/// Locks each Message-ID of a batch until the transaction ends, in one order (volatile
/// functions run after ORDER BY) so two batches never wait on each other in a circle: a second
/// writer of the same message waits for the first to commit, then sees it.
async fn lock_message_ids_on(
    conn: &mut sqlx::PgConnection,
    ids: &[&str],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(m, 0) AS k FROM unnest($1::text[]) AS m) ids ORDER BY k",
    )
    .bind(ids)
    .execute(conn)
    .await?;
    Ok(())
}
