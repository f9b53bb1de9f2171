//! A worker's own file: its hand-over journal, and the sign that it is alive.
//!
//! Each worker opens `<outbox.journal>.<owner>` (its lease owner name), holds an exclusive lock
//! on it for as long as it runs, and appends to it the outbox rows its SMTP hand-over child
//! handed to the server (`+id`, written with the final dot; `-id` when the server refused the
//! message after all). The page cache keeps the lines when the process dies, so no fsync sits
//! next to the dot. Before claiming mail, and after every round, the worker marks its journal's
//! rows sent and empties it.
//!
//! The lock is what lets a restarted or neighbouring worker take over at once instead of waiting
//! for leases to run out: a journal whose lock can be taken belongs to a worker that is gone
//! (the kernel drops the lock with the last descriptor, which a hand-over child still writing
//! its line also holds). Its rows are then marked sent, its other leases released, and the file
//! removed. Workers on other machines do not see each other's files: there the lease expiry
//! (`outbox` rows claimed until `lease_until`) is the fallback.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use crate::store::{Store, StoreError};

/// One worker's journal file, locked while the worker lives.
#[derive(Debug)]
pub struct WorkerJournal {
    path: PathBuf,
    /// `<outbox.journal>`: the other workers' files are `<base>.<owner>` next to it.
    base: PathBuf,
    owner: String,
    file: Arc<File>,
}

impl WorkerJournal {
    /// Creates and locks `<base>.<owner>`.
    pub fn open(base: &Path, owner: &str) -> std::io::Result<WorkerJournal> {
        let path = PathBuf::from(format!("{}.{owner}", base.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::other(format!(
                    "{} is locked by another process",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        Ok(WorkerJournal {
            path,
            base: base.to_path_buf(),
            owner: owner.to_string(),
            file: Arc::new(file),
        })
    }

    /// The file, for the hand-over child's appends (`O_APPEND`: no lock needed).
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line that records row `id`'s hand-over (written by the hand-over child).
    pub fn line(id: i64) -> String {
        format!("+{id}\n")
    }

    /// Records a hand-over the way a delivery's child does (tests).
    #[cfg(test)]
    pub fn record(&self, id: i64) -> std::io::Result<()> {
        (&*self.file).write_all(Self::line(id).as_bytes())
    }

    /// Takes a hand-over back (the server refused the message, or never confirmed it).
    pub fn cancel(&self, id: i64) -> std::io::Result<()> {
        (&*self.file).write_all(format!("-{id}\n").as_bytes())
    }

    /// Marks this worker's hand-overs sent, then those of workers that are gone (releasing the
    /// rest of their leases so their mail goes out now, not when the leases run out). Called
    /// only while none of this worker's deliveries is in flight.
    pub async fn settle<S: Store>(&self, store: &S) -> Result<(), StoreError> {
        let ids = read_ids(&self.path).map_err(|e| io_error(&self.path, e))?;
        if !ids.is_empty() {
            store.mark_sent(&self.owner, &ids, Utc::now()).await?;
        }
        self.file.set_len(0).map_err(|e| io_error(&self.path, e))?;
        for (path, owner) in self.others() {
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            // Held: that worker (or its hand-over child) is still running.
            if file.try_lock().is_err() {
                continue;
            }
            let ids = read_ids(&path).map_err(|e| io_error(&path, e))?;
            let sent = store.mark_sent(&owner, &ids, Utc::now()).await?;
            let released = store.release_outbox(&owner).await?;
            tracing::info!(
                worker = %owner,
                handed_over = sent,
                released,
                "took over the outbox rows of a worker that stopped"
            );
            std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        }
        Ok(())
    }

    /// Gives up the file at a clean stop (its lines were settled).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The other workers' files next to this one: (path, owner).
    fn others(&self) -> Vec<(PathBuf, String)> {
        let dir = match self.base.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(prefix) = self
            .base
            .file_name()
            .map(|n| format!("{}.", n.to_string_lossy()))
        else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let owner = name.strip_prefix(&prefix)?.to_string();
                (owner != self.owner && is_owner_name(&owner)).then(|| (e.path(), owner))
            })
            .collect()
    }
}

/// Owner names are made by [`crate::worker::WorkerId`]: letters, digits, `-` and `_`.
fn is_owner_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The ids handed over and not taken back. A torn last line (no newline) is ignored: its dot
/// was never written.
fn read_ids(path: &Path) -> std::io::Result<Vec<i64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse_ids(&text))
}

fn parse_ids(text: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = Vec::new();
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        if let Some(id) = line.strip_prefix('+').and_then(|n| n.parse().ok()) {
            ids.push(id);
        } else if let Some(id) = line.strip_prefix('-').and_then(|n| n.parse::<i64>().ok()) {
            ids.retain(|x| *x != id);
        }
    }
    ids
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Database(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_keeps_hand_overs_drops_cancelled_and_torn_lines() {
        let cases: &[(&str, &[i64])] = &[
            ("", &[]),
            ("+1\n+2\n", &[1, 2]),
            ("+1\n+2\n-1\n", &[2]),
            ("+1\n+2", &[1]),
            ("+1\ngarbage\n+3\n", &[1, 3]),
            ("-4\n+4\n", &[4]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_ids(text), *want, "{text:?}");
        }
    }

    #[test]
    fn a_live_workers_file_is_locked_and_a_gone_ones_is_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = dir.path().join("postdesk-outbox.journal");
        let a = WorkerJournal::open(&base, "w1-aaaa").unwrap_or_else(|e| panic!("{e}"));
        a.record(7).unwrap_or_else(|e| panic!("{e}"));
        // The same owner cannot open it twice while it lives.
        assert!(WorkerJournal::open(&base, "w1-aaaa").is_err());
        let b = WorkerJournal::open(&base, "w2-bbbb").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.others(),
            vec![(
                dir.path().join("postdesk-outbox.journal.w1-aaaa"),
                "w1-aaaa".into()
            )]
        );
        let other = File::open(&b.others()[0].0).unwrap_or_else(|e| panic!("{e}"));
        assert!(other.try_lock().is_err(), "a live worker's file is locked");
        drop(other);
        drop(a);
        let other = File::open(&b.others()[0].0).unwrap_or_else(|e| panic!("{e}"));
        assert!(other.try_lock().is_ok(), "a gone worker's file is free");
    }
}
