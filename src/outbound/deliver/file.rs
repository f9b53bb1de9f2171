//! The `file:` transport of the outbox: each mail as a complete `.eml` (write to a hidden temp
//! file, fsync, rename), named by its outbox row, so a crash between the rename and "mark sent"
//! rewrites the same file on replay instead of making a second one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Attempt, Transport};
use crate::store::OutboxItem;

/// A directory of `.eml` files.
#[derive(Debug, Clone)]
pub struct FileOutbox {
    dir: PathBuf,
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
}

impl Transport for FileOutbox {
    fn concurrency(&self) -> usize {
        // One writer: the files of a batch are made durable together by `flush`.
        1
    }

    async fn attempt(&self, item: OutboxItem) -> (OutboxItem, Attempt) {
        let this = self.clone();
        let path = self.path_for(&item);
        let copy = item.clone();
        match tokio::task::spawn_blocking(move || this.write(&copy)).await {
            Ok(Ok(())) => (item, Attempt::Delivered),
            Ok(Err(e)) => (item, Attempt::Temporary(format!("{}: {e}", path.display()))),
            Err(e) => (
                item,
                Attempt::Temporary(format!("outbox writer stopped: {e}")),
            ),
        }
    }

    /// The renames are durable before the rows say "sent".
    async fn flush(&self) -> Result<(), String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("{}: {e}", dir.display()))
        })
        .await
        .map_err(|e| format!("outbox writer stopped: {e}"))?
    }
}
