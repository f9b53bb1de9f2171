//! Hostile mail through the binary (issue 15): a mail built to make the MIME parser crawl is
//! quarantined for its part count before that parser runs, and an oversized message from a file or
//! from standard input is quarantined without being held in memory: the process's peak RSS, read
//! from the OS when it exits, does not grow with the input.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Sandbox, code, repo};

const EX_DATAERR: i32 = 65;
/// limits.max_message_size by default.
const LIMIT: u64 = 25 * 1024 * 1024;
/// What is generated for the oversized cases.
const HUGE: u64 = 200 * 1024 * 1024;
/// Peak RSS allowed to `ingest` of HUGE bytes: room for the binary, the runtime, SQLite and one
/// message at the limit (stdin is held up to the limit), far below HUGE. Before bounded reading
/// it was about 800 MB from a file and 600 MB from standard input.
const MAX_RSS_KIB: u64 = 128 * 1024;

/// The pathological mail of the shared corpus, gunzipped into a temp dir; None (and a note) when
/// the corpus is not checked out next to the repository.
fn pathological() -> Option<(tempfile::TempDir, PathBuf)> {
    let gz = repo().join("../shared/corpus/pathological/nested-same-boundary-19mb.eml.gz");
    if !gz.is_file() {
        eprintln!(
            "skipped: no {} (the shared corpus is not here)",
            gz.display()
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pathological.eml");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    std::fs::write(&path, raw).unwrap();
    Some((dir, path))
}

#[test]
fn pathological_mail_is_quarantined_for_its_part_count() {
    let Some((_dir, mail)) = pathological() else {
        return;
    };
    let mail = mail.to_str().unwrap();
    let sb = Sandbox::new();
    let e = sb.json(&["explain", mail, "--json"]);
    assert_eq!(e["action"], "quarantine", "{e}");
    let reason = e["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("too_many_parts:") && reason.contains("is over limits.max_parts = 1000"),
        "{reason}"
    );
    let out = sb.run(&["ingest", mail]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), EX_DATAERR, "{stderr}");
    assert!(stderr.contains("too_many_parts:"), "{stderr}");
    assert!(sb.tickets().is_empty());
}

/// The header of the generated oversized message (lines of `x` follow as its body).
fn huge_head() -> &'static [u8] {
    b"From: Jane <jane@acme.test>\r\nTo: support@example.com\r\nSubject: SEV 3 huge\r\n\
      Message-ID: <huge@acme.test>\r\nContent-Type: text/plain\r\n\r\n"
}

/// Writes the head and then body lines until `total` bytes, without holding them.
fn write_huge(w: &mut impl Write, total: u64) -> std::io::Result<()> {
    let head = huge_head();
    w.write_all(head)?;
    let mut line = vec![b'x'; 1022];
    line.extend_from_slice(b"\r\n");
    let mut left = total - head.len() as u64;
    while left > 0 {
        let n = left.min(line.len() as u64) as usize;
        w.write_all(&line[..n])?;
        left -= n as u64;
    }
    w.flush()
}

/// Runs the command to its end and returns its exit code, stderr and peak RSS in KiB, as the
/// kernel accounted it (`wait4`). `feed` writes its standard input, if any.
fn run_measured(
    mut cmd: Command,
    feed: Option<Box<dyn FnOnce(std::process::ChildStdin) + Send>>,
) -> (i32, String, u64) {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    // Reaped by the wait4 below, which also reads its resource usage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().unwrap();
    let writer = match (feed, child.stdin.take()) {
        (Some(feed), Some(stdin)) => Some(std::thread::spawn(move || feed(stdin))),
        _ => None,
    };
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes only into the two locals; the child is ours and not waited for
    // elsewhere (std's Child does not wait on drop).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    if let Some(w) = writer {
        w.join().unwrap();
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux reports ru_maxrss in KiB.
    (code, reader.join().unwrap(), usage.ru_maxrss as u64)
}

/// The quarantine rows (reason, detail, source, size, length of the kept bytes).
fn quarantine_rows(db: &Path) -> Vec<(String, String, String, i64, i64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
            .await
            .unwrap();
        let rows = sqlx::query_as(
            "SELECT reason, detail, source, size, length(raw) FROM quarantine ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    })
}

/// `ingest` of HUGE bytes from `from` exited 65 naming the size and the limit, with a peak RSS
/// that does not grow with the input.
fn quarantined_as_oversized_in_bounded_memory(
    from: &str,
    (code, stderr, rss_kib): (i32, String, u64),
) {
    eprintln!("ingest of {HUGE} bytes from {from}: exit {code}, peak RSS {rss_kib} KiB");
    assert_eq!(code, EX_DATAERR, "{stderr}");
    let reason = format!("oversized: {HUGE} bytes is over the limit of {LIMIT} bytes");
    assert!(stderr.contains(&reason), "{stderr}");
    assert!(rss_kib < MAX_RSS_KIB, "peak RSS {rss_kib} KiB");
}

#[test]
fn oversized_file_is_quarantined_from_its_head_in_bounded_memory() {
    let sb = Sandbox::new();
    let file = sb.path().join("huge.eml");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    write_huge(&mut w, HUGE).unwrap();
    drop(w);
    let run = run_measured(sb.command(&["ingest", file.to_str().unwrap()]), None);
    quarantined_as_oversized_in_bounded_memory("a file", run);
    let rows = quarantine_rows(&sb.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (reason, _, source, size, kept) = &rows[0];
    assert_eq!(reason, "oversized");
    assert_eq!(
        *source,
        format!("file:{}", file.display()),
        "names the file"
    );
    assert_eq!(
        (*size, *kept),
        (HUGE as i64, 64 * 1024),
        "whole size, head kept"
    );
    assert!(
        !sb.path().join("quarantine").exists(),
        "a file given by path is not copied"
    );
}

#[test]
fn oversized_stdin_is_streamed_to_the_quarantine_folder_in_bounded_memory() {
    let sb = Sandbox::new();
    let feed = Box::new(|mut stdin: std::process::ChildStdin| {
        // postdesk may stop reading early if it fails; the assertions below say why.
        let _ = write_huge(&mut stdin, HUGE);
    });
    let run = run_measured(sb.command(&["ingest", "-"]), Some(feed));
    quarantined_as_oversized_in_bounded_memory("stdin", run);
    let kept: Vec<PathBuf> = std::fs::read_dir(sb.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let meta = std::fs::metadata(&kept[0]).unwrap();
    assert_eq!(meta.len(), HUGE, "the whole message is on disk");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let rows = quarantine_rows(&sb.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (reason, detail, source, size, head) = &rows[0];
    assert_eq!(reason, "oversized");
    assert!(detail.contains(&HUGE.to_string()) && detail.contains(&LIMIT.to_string()));
    assert!(
        source.ends_with(&kept[0].file_name().unwrap().to_string_lossy().into_owned()),
        "the entry names the kept file: {source}"
    );
    assert_eq!((*size, *head), (HUGE as i64, 64 * 1024));
}

#[test]
fn oversized_maildir_message_stays_whole_where_its_quarantine_entry_says() {
    let sb = Sandbox::new();
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(sb.maildir().join(d)).unwrap();
    }
    // Over a 1 MiB limit, so that the test stays small.
    let size = 3 * 1024 * 1024;
    let file = sb.maildir().join("new/1700000000.big.host");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    write_huge(&mut w, size).unwrap();
    drop(w);
    let mut cmd = sb.command(&["run", "--exit-when-idle"]);
    cmd.env("POSTDESK_LIMITS_MAX_MESSAGE_SIZE", "1 MiB");
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let rows = quarantine_rows(&sb.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (reason, _, source, size_row, kept) = &rows[0];
    assert_eq!(reason, "oversized");
    assert_eq!((*size_row, *kept), (size as i64, 64 * 1024));
    let path = source
        .strip_prefix("maildir:")
        .unwrap_or_else(|| panic!("source {source}"));
    let meta = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("the entry names {path}, which is not there: {e}"));
    assert_eq!(
        meta.len(),
        size,
        "the whole message is where the entry says"
    );
    assert!(
        std::fs::read_dir(sb.maildir().join("new"))
            .unwrap()
            .next()
            .is_none(),
        "taken out of new/"
    );
}
