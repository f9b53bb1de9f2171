//! Delivering the outbox (SPEC: Outbound mail). Mail is never sent in the step that decides it:
//! the decision wrote a rendered row; this sender delivers due rows and marks them sent only
//! after the transport took them. The `file:` transport writes each mail as a complete `.eml`
//! (write to a hidden temp file, fsync, rename), named by its outbox row, so a crash between the
//! rename and "mark sent" rewrites the same file on replay instead of making a second one.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::store::{OutboxItem, Store, StoreError};

/// Rows fetched per round.
const ROUND: i64 = 256;

/// A directory of `.eml` files.
#[derive(Debug, Clone)]
pub struct FileOutbox {
    dir: PathBuf,
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Mails delivered.
    pub sent: usize,
    /// Mails that failed and wait for a retry.
    pub failed: usize,
}

impl FileOutbox {
    /// Uses (and creates) `dir`; removes temp files a crash left behind.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(FileOutbox {
            dir: dir.to_path_buf(),
        })
    }

    /// The file a row is delivered to.
    pub fn path_for(&self, item: &OutboxItem) -> PathBuf {
        let ticket = item
            .ticket
            .map(|t| t.to_string())
            .unwrap_or_else(|| "none".into());
        self.dir.join(format!("{:08}-ticket-{ticket}.eml", item.id))
    }

    fn write(&self, item: &OutboxItem) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".tmp-{}", item.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&item.rendered)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.path_for(item))
    }

    /// Delivers every due row, one round at a time, until none is due.
    pub async fn deliver_due<S: Store>(
        &self,
        store: &S,
        now: DateTime<Utc>,
    ) -> Result<Round, StoreError> {
        let mut total = Round::default();
        loop {
            let due = store.due_outbox(now, ROUND).await?;
            if due.is_empty() {
                return Ok(total);
            }
            let this = self.clone();
            let (sent, failed) = tokio::task::spawn_blocking(move || {
                let mut sent = Vec::new();
                let mut failed = Vec::new();
                for item in &due {
                    match this.write(item) {
                        Ok(()) => sent.push(item.id),
                        Err(e) => failed.push((item.id, item.attempts, e.to_string())),
                    }
                }
                // The renames are durable before the rows say "sent".
                if let Ok(d) = std::fs::File::open(&this.dir) {
                    let _ = d.sync_all();
                }
                (sent, failed)
            })
            .await
            .map_err(|e| StoreError::Database(format!("outbox writer stopped: {e}")))?;
            store.mark_sent(&sent, now).await?;
            for (id, attempts, error) in &failed {
                tracing::warn!(outbox_id = id, error = %error, "outbox file write failed; will retry");
                store
                    .mark_attempt_failed(*id, error, now, Some(now + retry_delay(*attempts)))
                    .await?;
            }
            for id in &sent {
                tracing::debug!(outbox_id = id, "outbox mail written");
            }
            total.sent += sent.len();
            total.failed += failed.len();
            if !failed.is_empty() {
                return Ok(total);
            }
        }
    }
}

/// `min` doubling per attempt, capped at `max`: the retry schedule of both transports.
pub fn backoff(
    min: std::time::Duration,
    max: std::time::Duration,
    attempts: i64,
) -> std::time::Duration {
    let exp = attempts.clamp(0, 30) as u32;
    min.saturating_mul(2u32.saturating_pow(exp)).min(max)
}

/// The file outbox's retries: 30 s, 1 min, 2 min, ... capped at 1 h.
pub fn retry_delay(attempts: i64) -> Duration {
    let d = backoff(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(3600),
        attempts,
    );
    Duration::from_std(d).unwrap_or(Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(retry_delay(0), Duration::seconds(30));
        assert_eq!(retry_delay(1), Duration::seconds(60));
        assert_eq!(retry_delay(20), Duration::seconds(3600));
    }
}
