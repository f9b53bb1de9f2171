//! The `maildir:` source, the embedded default mailbox. Messages are taken from `new/` and moved
//! to `cur/` with the Seen flag (`:2,S`) only after the store committed them; a crash before the
//! move leaves them in `new/`, and the replay is recognised by Message-ID.

use std::path::{Path, PathBuf};

/// A maildir (`new/`, `cur/`, `tmp/`).
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Opens a maildir, creating its three folders when missing.
    pub fn open(root: &Path) -> std::io::Result<Maildir> {
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Maildir {
            root: root.to_path_buf(),
        })
    }

    /// The folder's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Messages waiting in `new/`, oldest name first (maildir names start with a timestamp).
    pub fn pending(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.root.join("new"))?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        files.sort();
        Ok(files)
    }

    /// Moves a message from `new/` to `cur/` with the Seen flag: it is done.
    pub fn mark_done(&self, path: &Path) -> std::io::Result<()> {
        std::fs::rename(path, self.done_path(path))
    }

    /// Where [`Maildir::mark_done`] moves a message: `cur/`, with the seen flag added.
    pub fn done_path(&self, path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done = match name.split_once(":2,") {
            Some((base, flags)) if flags.contains('S') => format!("{base}:2,{flags}"),
            Some((base, flags)) => {
                let mut f: Vec<char> = flags.chars().chain(['S']).collect();
                f.sort_unstable();
                format!("{base}:2,{}", f.into_iter().collect::<String>())
            }
            None => format!("{name}:2,S"),
        };
        self.root.join("cur").join(done)
    }

    /// Delivers raw bytes into `new/` the maildir way (write in `tmp/`, then rename).
    pub fn deliver(&self, name: &str, raw: &[u8]) -> std::io::Result<PathBuf> {
        let tmp = self.root.join("tmp").join(name);
        std::fs::write(&tmp, raw)?;
        let dest = self.root.join("new").join(name);
        std::fs::rename(&tmp, &dest)?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_mark_done() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let m = Maildir::open(d.path()).unwrap_or_else(|e| panic!("{e}"));
        m.deliver("2.b", b"x").unwrap_or_else(|e| panic!("{e}"));
        m.deliver("1.a:2,F", b"y").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.path().join("new/.hidden"), b"z").unwrap_or_else(|e| panic!("{e}"));
        let p = m.pending().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.len(), 2);
        for f in &p {
            let done = m.done_path(f);
            m.mark_done(f).unwrap_or_else(|e| panic!("{e}"));
            assert!(done.exists(), "{} is where it went", done.display());
        }
        assert!(m.pending().unwrap_or_default().is_empty());
        assert!(d.path().join("cur/2.b:2,S").exists());
        assert!(d.path().join("cur/1.a:2,FS").exists());
    }
}
