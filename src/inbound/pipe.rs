//! The `ingest` source: one message from a file or from standard input (an MTA pipe), read with
//! bounded memory (issue 15, "Hostile mail").
//!
//! A file's size is known before reading: over `limits.max_message_size`, only its head is read
//! and the quarantine entry names the file, which stays where it is. Standard input has no size:
//! at most the limit and one byte are held; when more comes, the bytes read so far and the rest
//! of the stream are written to a new file in `limits.quarantine_dir` (mode 0600) as they arrive,
//! and the entry names that file. Either way the message is quarantined from its head.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::mail::Limits;
use crate::pipeline::{Incoming, OVERSIZED_HEAD};

/// Why a message could not be read (the MTA keeps it and tries again).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file given cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Standard input (or a pipe given by path) cannot be read.
    #[error("cannot read {what}: {source}")]
    Stream {
        /// `standard input` or the path.
        what: String,
        /// What the system said.
        source: io::Error,
    },
    /// An oversized message from standard input cannot be written to the quarantine folder.
    #[error(
        "cannot keep the oversized message in {dir} (limits.quarantine_dir): {source}; check that the folder is writable"
    )]
    Quarantine {
        /// The quarantine folder.
        dir: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// What to do with the rest of a stream over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Write the whole message to a file in the quarantine folder (`ingest`).
    Keep,
    /// Only count its bytes (`explain`, which changes nothing).
    Count,
}

/// Reads the message in `file`, or standard input for `None` or `-`.
pub fn read_message(
    file: Option<&Path>,
    limits: &Limits,
    overflow: Overflow,
) -> Result<Incoming, ReadError> {
    match file {
        Some(p) if p.as_os_str() != "-" => read_file(p, limits, overflow),
        _ => read_stream(&mut io::stdin().lock(), limits, overflow),
    }
}

/// A message from a file: its head only when the file is over the limit. A pipe or device given
/// by path (`ingest /dev/stdin`) has no size and is read like standard input.
pub fn read_file(path: &Path, limits: &Limits, overflow: Overflow) -> Result<Incoming, ReadError> {
    let err = |source| ReadError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    let meta = f.metadata().map_err(err)?;
    let source = format!("file:{}", path.display());
    if !meta.is_file() {
        return read_unsized(
            &mut f,
            &path.display().to_string(),
            source,
            limits,
            overflow,
        );
    }
    let size = meta.len();
    let max = limits.max_message_size as u64;
    if size > max {
        let head = read_up_to(&mut f, OVERSIZED_HEAD as u64).map_err(err)?;
        return Ok(oversized(
            head,
            usize::try_from(size).unwrap_or(usize::MAX),
            source,
        ));
    }
    // The file may grow after the size was read: never read more than the limit and one byte.
    let raw = read_up_to(&mut f, max + 1).map_err(err)?;
    if raw.len() as u64 > max {
        let size = f
            .metadata()
            .map(|m| m.len())
            .unwrap_or(raw.len() as u64)
            .max(raw.len() as u64);
        let head = raw[..OVERSIZED_HEAD.min(raw.len())].to_vec();
        return Ok(oversized(
            head,
            usize::try_from(size).unwrap_or(usize::MAX),
            source,
        ));
    }
    Ok(whole(raw, source))
}

/// A message from a stream (standard input): held in memory up to the limit; beyond it,
/// written to a new file in the quarantine folder as it arrives (or only counted).
pub fn read_stream(
    input: &mut impl Read,
    limits: &Limits,
    overflow: Overflow,
) -> Result<Incoming, ReadError> {
    read_unsized(input, "standard input", "stdin".into(), limits, overflow)
}

/// A stream of unknown size named `what` in errors and `source` in the quarantine entry.
fn read_unsized(
    input: &mut impl Read,
    what: &str,
    source: String,
    limits: &Limits,
    overflow: Overflow,
) -> Result<Incoming, ReadError> {
    let serr = |source| ReadError::Stream {
        what: what.to_string(),
        source,
    };
    let max = limits.max_message_size as u64;
    let raw = read_up_to(input, max + 1).map_err(serr)?;
    if raw.len() as u64 <= max {
        return Ok(whole(raw, source));
    }
    if overflow == Overflow::Count {
        let rest = io::copy(input, &mut io::sink()).map_err(serr)?;
        let head = raw[..OVERSIZED_HEAD.min(raw.len())].to_vec();
        let size = raw.len() as u64 + rest;
        return Ok(oversized(
            head,
            usize::try_from(size).unwrap_or(usize::MAX),
            source,
        ));
    }
    let dir = &limits.quarantine_dir;
    let qerr = |source| ReadError::Quarantine {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(qerr)?;
    let (path, mut file) = new_quarantine_file(dir).map_err(qerr)?;
    let written = (|| -> Result<u64, ReadError> {
        file.write_all(&raw).map_err(qerr)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = raw.len() as u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(serr(e)),
            };
            file.write_all(&buf[..n]).map_err(qerr)?;
            total += n as u64;
        }
        file.sync_all().map_err(qerr)?;
        Ok(total)
    })();
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            // Half a message is no use to anyone: the MTA still has it and tries again.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let head = raw[..OVERSIZED_HEAD.min(raw.len())].to_vec();
    drop(raw);
    Ok(oversized(
        head,
        usize::try_from(size).unwrap_or(usize::MAX),
        format!("{source}, kept whole in {}", path.display()),
    ))
}

fn whole(raw: Vec<u8>, source: String) -> Incoming {
    Incoming {
        raw: raw.into(),
        source,
        silent: false,
        truncated_from: None,
    }
}

fn oversized(head: Vec<u8>, size: usize, source: String) -> Incoming {
    Incoming {
        raw: head.into(),
        source,
        silent: false,
        truncated_from: Some(size),
    }
}

/// At most `limit` bytes from `r`.
fn read_up_to(r: &mut impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A new file `YYYYMMDDTHHMMSSZ-<random>.eml` in `dir`, readable by its owner only.
fn new_quarantine_file(dir: &Path) -> io::Result<(PathBuf, File)> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    loop {
        // RandomState is seeded from the OS for every instance: a random name without a crate.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let path = dir.join(format!("{stamp}-{random:016x}.eml"));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(dir: &Path, max: usize) -> Limits {
        Limits {
            max_message_size: max,
            quarantine_dir: dir.join("quarantine"),
            ..Limits::default()
        }
    }

    /// A reader that hands out `n` bytes of `x` in small reads, without holding them.
    struct Generated {
        left: u64,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.left as usize).min(1000);
            buf[..n].fill(b'x');
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn stream_at_the_limit_is_whole_over_it_is_spilled() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cases: &[(&str, u64, Option<usize>)] = &[
            ("empty", 0, None),
            ("at_the_limit", 100_000, None),
            ("one_over", 100_001, Some(100_001)),
            ("far_over", 3_000_000, Some(3_000_000)),
        ];
        for &(name, n, truncated) in cases {
            let got = read_stream(
                &mut Generated { left: n },
                &limits(d.path(), 100_000),
                Overflow::Keep,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.truncated_from, truncated, "{name}");
            match truncated {
                None => {
                    assert_eq!(got.raw.len() as u64, n, "{name}");
                    assert_eq!(got.source, "stdin");
                }
                Some(size) => {
                    assert_eq!(got.raw.len(), OVERSIZED_HEAD, "{name}: head only");
                    let path = got
                        .source
                        .strip_prefix("stdin, kept whole in ")
                        .unwrap_or_else(|| panic!("{name}: {}", got.source));
                    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(meta.len() as usize, size, "{name}: the whole message kept");
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::PermissionsExt;
                        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn file_over_the_limit_is_named_not_copied() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cases: &[(&str, usize, Option<usize>)] = &[
            ("at_the_limit", 100_000, None),
            ("one_over", 100_001, Some(100_001)),
        ];
        for &(name, n, truncated) in cases {
            let path = d.path().join(format!("{name}.eml"));
            std::fs::write(&path, vec![b'y'; n]).unwrap_or_else(|e| panic!("{e}"));
            let got = read_file(&path, &limits(d.path(), 100_000), Overflow::Keep)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.truncated_from, truncated, "{name}");
            assert_eq!(got.source, format!("file:{}", path.display()), "{name}");
            let kept = if truncated.is_some() {
                OVERSIZED_HEAD
            } else {
                n
            };
            assert_eq!(got.raw.len(), kept, "{name}");
        }
        assert!(
            !d.path().join("quarantine").exists(),
            "a file given by path is not copied"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_given_by_path_is_read_like_standard_input() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = d.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        assert!(status.success());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&fifo)
                    .unwrap_or_else(|e| panic!("{e}"));
                io::copy(&mut Generated { left: 250_000 }, &mut f).unwrap_or_else(|e| panic!("{e}"))
            })
        };
        let got = read_file(&fifo, &limits(d.path(), 100_000), Overflow::Keep)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(writer.join().ok(), Some(250_000));
        assert_eq!(
            got.truncated_from,
            Some(250_000),
            "its size is what was read"
        );
        let kept = got
            .source
            .strip_prefix(&format!("file:{}, kept whole in ", fifo.display()))
            .unwrap_or_else(|| panic!("{}", got.source));
        assert_eq!(std::fs::metadata(kept).map(|m| m.len()).ok(), Some(250_000));
    }

    #[test]
    fn explain_counts_the_overflow_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let got = read_stream(
            &mut Generated { left: 300_000 },
            &limits(d.path(), 100_000),
            Overflow::Count,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.truncated_from, Some(300_000));
        assert_eq!(got.raw.len(), OVERSIZED_HEAD);
        assert!(!d.path().join("quarantine").exists());
    }

    #[test]
    fn unwritable_quarantine_folder_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // A file where the folder should be.
        std::fs::write(d.path().join("quarantine"), b"").unwrap_or_else(|e| panic!("{e}"));
        let err = read_stream(
            &mut Generated { left: 200 },
            &limits(d.path(), 100),
            Overflow::Keep,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("limits.quarantine_dir"), "{err}");
    }
}
