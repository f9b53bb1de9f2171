//! Robustness through the built binary: real-world mail from other help desks' test corpora and
//! generated pathological mail must be taken (exit 0) or quarantined (exit 65), never crash,
//! never stall, and leave a database that `tickets list --json` still reads.
//!
//! Every test runs `postdesk` in its own temporary directory with its own SQLite database, outbox
//! and maildir. Wall times are printed (`--nocapture` shows them), not asserted; a child that runs
//! longer than `STALL_LIMIT` is killed and the test fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");
const STALL_LIMIT: Duration = Duration::from_secs(120);
const EX_DATAERR: i32 = 65;

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// One postdesk installation in a temporary directory.
struct Desk {
    dir: tempfile::TempDir,
}

/// What one run of the binary did.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "no exit status".into(),
        }
    }
}

impl Desk {
    fn new() -> Desk {
        Desk {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        // Nothing from the developer's environment (a POSTDESK_CONFIG, a database URL) leaks in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("POSTDESK_") {
                cmd.env_remove(&k);
            }
        }
        let tmp = self.path().display().to_string();
        cmd.args(args)
            .current_dir(self.path())
            .env("POSTDESK_DATABASE_URL", format!("sqlite:{tmp}/db.sqlite"))
            .env(
                "POSTDESK_TEMPLATES_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
            )
            .env("POSTDESK_OUTBOX_URL", format!("file:{tmp}/outbox"))
            .env("POSTDESK_MAILBOX_URL", format!("maildir:{tmp}/mail"))
            .env("POSTDESK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `postdesk ARGS`, killing it (and failing) when it is still running after
    /// `STALL_LIMIT`. Fails when stderr shows a panic.
    fn run(&self, args: &[&str]) -> Run {
        let start = Instant::now();
        let mut child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        // Drain both pipes on their own threads so that a chatty child cannot block on them.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > STALL_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "stalled: `postdesk {}` still running after {} s, killed",
                    args.join(" "),
                    STALL_LIMIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = start.elapsed();
        let stdout = out_reader.join().unwrap();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
        #[cfg(unix)]
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        #[cfg(not(unix))]
        let signal = None;
        let run = Run {
            code: status.code(),
            signal,
            stdout,
            stderr,
            elapsed,
        };
        assert!(
            !run.stderr.contains("panicked"),
            "`postdesk {}` panicked ({}):\n{}",
            args.join(" "),
            run.describe(),
            run.stderr
        );
        run
    }

    /// Writes `raw` to a file in the work directory and runs `postdesk ingest FILE`.
    fn ingest_bytes(&self, name: &str, raw: &[u8]) -> Run {
        let file = self.path().join(name);
        std::fs::write(&file, raw).unwrap();
        let run = self.run(&["ingest", &file.display().to_string()]);
        std::fs::remove_file(&file).unwrap();
        run
    }

    /// `postdesk tickets list --json`, which must succeed and print a JSON array.
    fn tickets(&self) -> Vec<Value> {
        let run = self.run(&["tickets", "list", "--json"]);
        assert_eq!(run.code, Some(0), "tickets list: {}", run.stderr);
        match serde_json::from_slice::<Value>(&run.stdout) {
            Ok(Value::Array(list)) => list,
            Ok(other) => panic!("tickets list --json printed no array: {other}"),
            Err(e) => panic!(
                "tickets list --json is not JSON ({e}):\n{}",
                String::from_utf8_lossy(&run.stdout)
            ),
        }
    }

    /// `postdesk tickets show N --json`.
    fn ticket(&self, number: i64) -> Value {
        let run = self.run(&["tickets", "show", &number.to_string(), "--json"]);
        assert_eq!(run.code, Some(0), "tickets show {number}: {}", run.stderr);
        serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("tickets show --json: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// Top-level `key: value` scalars of a Ruby-tagged YAML document (`--- !ruby/hash:...`): plain,
/// 'single-quoted' (with '' for a quote) and "double-quoted" (with backslash escapes), continued
/// on indented lines that fold into one line with a space. Block scalars (`|`, `>`), nested maps
/// and lists are skipped: only what the comparison needs is read.
fn yaml_scalars(text: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some((key, rest)) = top_level_key(line) else {
            continue;
        };
        let mut segments = vec![rest];
        while i < lines.len() && (lines[i].starts_with(' ') || lines[i].is_empty()) {
            segments.push(lines[i].trim_start());
            i += 1;
        }
        let first = rest.trim_start();
        if first.is_empty()
            || first.starts_with('|')
            || first.starts_with('>')
            || first.starts_with('!')
            || first.starts_with('&')
            || first.starts_with('*')
            || first.starts_with('[')
            || first.starts_with('{')
        {
            continue;
        }
        segments[0] = first;
        let value = if first.starts_with('\'') {
            single_quoted(&fold(&segments, false))
        } else if first.starts_with('"') {
            double_quoted(&fold(&segments, true))
        } else {
            fold(&segments, false).trim().to_string()
        };
        out.insert(key.to_string(), value);
    }
    out
}

/// `key: rest` at column 0, with a key made of letters, digits, `_` and `-`.
fn top_level_key(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = line.split_once(':')?;
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some((key, rest))
}

/// Joins the lines of a flow scalar: a line break becomes one space, empty lines become line
/// breaks; in double quotes a trailing backslash joins the lines without a space.
fn fold(segments: &[&str], double: bool) -> String {
    let mut out = String::new();
    let mut newlines = 0;
    for (n, seg) in segments.iter().enumerate() {
        if n == 0 {
            out.push_str(seg.trim_end_matches([' ', '\t']));
            continue;
        }
        let seg = seg.trim_end_matches([' ', '\t']);
        if seg.is_empty() {
            newlines += 1;
            continue;
        }
        if newlines > 0 {
            out.extend(std::iter::repeat_n('\n', newlines));
            newlines = 0;
        } else if double && ends_with_odd_backslashes(&out) {
            out.pop();
        } else {
            out.push(' ');
        }
        out.push_str(seg);
    }
    out
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

fn single_quoted(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().skip(1).peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                out.push('\'');
            } else {
                break;
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn double_quoted(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().skip(1);
    let hex = |chars: &mut std::iter::Skip<std::str::Chars<'_>>, n: usize| -> char {
        let digits: String = chars.take(n).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}')
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') | Some('\t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('a') => out.push('\u{7}'),
                Some('b') => out.push('\u{8}'),
                Some('e') => out.push('\u{1b}'),
                Some('f') => out.push('\u{c}'),
                Some('v') => out.push('\u{b}'),
                Some('N') => out.push('\u{85}'),
                Some('_') => out.push('\u{a0}'),
                Some('L') => out.push('\u{2028}'),
                Some('P') => out.push('\u{2029}'),
                Some('x') => out.push(hex(&mut chars, 2)),
                Some('u') => out.push(hex(&mut chars, 4)),
                Some('U') => out.push(hex(&mut chars, 8)),
                Some(other) => out.push(other), // \" \\ \/ and "\ " (an escaped space)
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Where postdesk and Zammad legitimately disagree. Each entry is (file, field, what Zammad
/// expects, what postdesk gives, why); it only excuses exactly that pair of values, so a change on
/// either side shows up as a mismatch again.
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str, &str)] = &[
    // None at present. mail016.box (no From, no Sender) used to be one: postdesk now falls back
    // to Reply-To as Zammad does, and agrees with its expectation.
];

#[test]
fn corpus_is_taken_without_panic_and_explain_matches_zammad() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !corpus.is_dir() {
        eprintln!(
            "skipped: no corpus at {} (the shared corpus is not checked out here)",
            corpus.display()
        );
        return;
    }
    let mut files = Vec::new();
    files_under(&corpus, &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.as_deref() != Some("README.md")
                && p.extension().is_none_or(|e| e != "yml" && e != "yaml")
        })
        .collect();
    assert!(!files.is_empty(), "no mail under {}", corpus.display());

    let desk = Desk::new();
    let mut failures: Vec<String> = Vec::new();
    let (mut taken, mut quarantined) = (0, 0);
    for file in &files {
        let rel = file.strip_prefix(&corpus).unwrap_or(file).display();
        let path = file.display().to_string();
        let run = desk.run(&["ingest", &path]);
        match run.code {
            Some(0) => taken += 1,
            Some(EX_DATAERR) => quarantined += 1,
            _ => {
                failures.push(format!("{rel}: ingest {}: {}", run.describe(), run.stderr));
                continue;
            }
        }
        // Nothing that arrived is dropped silently: afterwards the message is known (stored on a
        // ticket or as a bounce) or it was quarantined.
        let explained = desk.run(&["explain", &path, "--json"]);
        let action = serde_json::from_slice::<Value>(&explained.stdout)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_string))
            .unwrap_or_default();
        let expected = if run.code == Some(0) {
            "duplicate"
        } else {
            "quarantine"
        };
        if action != expected {
            failures.push(format!(
                "{rel}: ingest {} but explain afterwards says {action:?} (expected {expected}); {}",
                run.describe(),
                explained.stderr
            ));
        }
        eprintln!(
            "{rel}: ingest {} in {} ms, then {action}",
            run.describe(),
            run.elapsed.as_millis()
        );
    }

    // Zammad's expectations for sender and subject.
    let (mut compared, mut matches, mut excused) = (0, 0, 0);
    let mut mismatches: Vec<String> = Vec::new();
    for file in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "box"))
    {
        let yml = file.with_extension("yml");
        if !yml.is_file() {
            continue;
        }
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let expected = yaml_scalars(&std::fs::read_to_string(&yml).unwrap());
        let run = desk.run(&["explain", &file.display().to_string(), "--json"]);
        assert_eq!(run.code, Some(0), "explain {name}: {}", run.stderr);
        let got: Value = serde_json::from_slice(&run.stdout)
            .unwrap_or_else(|e| panic!("explain {name} --json is not JSON: {e}"));
        compared += 1;
        let mut all_match = true;
        for (field, yml_key, case_insensitive) in
            [("from", "from_email", true), ("subject", "subject", false)]
        {
            let want = expected.get(yml_key).map(String::as_str);
            let have = got[field].as_str();
            let same = match (want, have) {
                (Some(w), Some(h)) if case_insensitive => w.eq_ignore_ascii_case(h),
                (w, h) => w == h,
            };
            if same {
                continue;
            }
            let (w, h) = (want.unwrap_or("<none>"), have.unwrap_or("<null>"));
            let known = KNOWN_DIFFERENCES
                .iter()
                .find(|(f, k, kw, kh, _)| *f == name && *k == field && *kw == w && *kh == h);
            all_match = false;
            match known {
                Some((.., why)) => {
                    excused += 1;
                    eprintln!("{name} {field}: known difference ({why})");
                }
                None => {
                    mismatches.push(format!(
                        "{name} {field}:\n    expected {w:?}\n    got      {h:?}"
                    ));
                }
            }
        }
        if all_match {
            matches += 1;
        }
    }

    let list = desk.tickets();
    eprintln!(
        "corpus: {} files taken by ingest: {taken} exit 0, {quarantined} exit 65; {} tickets",
        files.len(),
        list.len()
    );
    eprintln!(
        "zammad: {compared} yml compared, {matches} match on both from and subject, {} mismatches, {excused} known differences",
        mismatches.len()
    );
    for m in &mismatches {
        eprintln!("  mismatch {m}");
    }
    for f in &failures {
        eprintln!("  failure {f}");
    }
    assert!(compared > 0, "no .box with a .yml beside it");
    assert!(
        failures.is_empty() && mismatches.is_empty(),
        "{} failures, {} mismatches (listed above)",
        failures.len(),
        mismatches.len()
    );
}

#[test]
fn yaml_reader_reads_the_scalar_forms() {
    let doc = "--- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n\
               from: '\"Günther\" <k@example.com>'\n\
               from_email: K@Example.com\n\
               quoted: 'it''s'\n\
               subject: \"a \\\"b\\\" c\n  \\  d\n  e\"\n\
               plain: one\n  two\n\
               body: |-\n  <div>\n  x: y\n\
               folded: 'long\n  line'\n\
               attachments:\n- !ruby/hash:X\n  data: z\n";
    let y = yaml_scalars(doc);
    assert_eq!(y["from"], "\"Günther\" <k@example.com>");
    assert_eq!(y["from_email"], "K@Example.com");
    assert_eq!(y["quoted"], "it's");
    assert_eq!(y["subject"], "a \"b\" c   d e");
    assert_eq!(y["plain"], "one two");
    assert_eq!(y["folded"], "long line");
    assert!(!y.contains_key("body") && !y.contains_key("attachments") && !y.contains_key("x"));
}

// ---------------------------------------------------------------------------------------------
// Pathological mail
// ---------------------------------------------------------------------------------------------

fn headers(subject: &str, message_id: &str) -> String {
    format!(
        "From: Jane Doe <jane@acme.test>\r\n\
         To: support@example.com\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{message_id}>\r\n\
         Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n"
    )
}

/// Ingests `raw`, prints the wall time, and checks the exit code.
fn ingest_expect(desk: &Desk, case: &str, raw: &[u8], expected: i32) -> Run {
    let run = desk.ingest_bytes("message.eml", raw);
    eprintln!(
        "{case}: {} bytes, ingest {} in {:.2} s",
        raw.len(),
        run.describe(),
        run.elapsed.as_secs_f64()
    );
    assert_eq!(
        run.code,
        Some(expected),
        "{case}: expected exit {expected}, got {}:\n{}",
        run.describe(),
        run.stderr
    );
    run
}

/// The only ticket in the desk, with everything `tickets show` prints.
fn only_ticket(desk: &Desk) -> Value {
    let list = desk.tickets();
    assert_eq!(list.len(), 1, "expected one ticket: {list:?}");
    let n = list[0]["number"]
        .as_i64()
        .unwrap_or_else(|| panic!("no number: {}", list[0]));
    desk.ticket(n)
}

fn first_message(ticket: &Value) -> &Value {
    let messages = ticket["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "one message on the ticket");
    &messages[0]
}

#[test]
fn html_only_body_with_5000_links_is_taken() {
    let desk = Desk::new();
    let mut html = String::from("<html><body><p>Our links:</p><ul>\r\n");
    for i in 0..5000 {
        html.push_str(&format!(
            "<li><a href=\"https://example.net/page/{i}?ref=mail&amp;n={i}\">Link {i}</a></li>\r\n"
        ));
    }
    html.push_str("</ul></body></html>\r\n");
    let raw = format!(
        "{}Content-Type: text/html; charset=utf-8\r\n\r\n{html}",
        headers("SEV 3 html with 5000 links", "links@acme.test")
    );
    ingest_expect(&desk, "html_5000_links", raw.as_bytes(), 0);
    let t = only_ticket(&desk);
    let m = first_message(&t);
    assert_eq!(m["size"].as_u64(), Some(raw.len() as u64), "raw kept whole");
    let text = m["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Link 0") && text.contains("Link 4999"),
        "the HTML was not turned into text: {:?}",
        &text[..text.len().min(200)]
    );
}

#[test]
fn single_line_body_of_20_mb_is_taken() {
    let desk = Desk::new();
    let mut raw = headers("SEV 4 one long line", "long-line@acme.test");
    raw.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    let mut raw = raw.into_bytes();
    raw.extend(std::iter::repeat_n(b'x', 20 * 1000 * 1000));
    raw.extend_from_slice(b"\r\n");
    assert!(raw.len() < 25 * 1024 * 1024, "under the default limit");
    ingest_expect(&desk, "single_line_20mb", &raw, 0);
    let t = only_ticket(&desk);
    let m = first_message(&t);
    assert_eq!(m["size"].as_u64(), Some(raw.len() as u64), "raw kept whole");
    let text = m["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("xxxx"), "no body text stored");
    assert!(
        text.len() <= 1 << 20,
        "stored text not capped: {}",
        text.len()
    );
}

#[test]
fn message_of_30_mb_is_quarantined() {
    let desk = Desk::new();
    let mut raw = headers("SEV 3 huge attachment", "huge@acme.test");
    raw.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    let mut raw = raw.into_bytes();
    let line = [b'y'; 76];
    while raw.len() < 30 * 1024 * 1024 {
        raw.extend_from_slice(&line);
        raw.extend_from_slice(b"\r\n");
    }
    let run = ingest_expect(&desk, "message_30mb", &raw, EX_DATAERR);
    assert!(
        run.stderr.contains("oversized"),
        "quarantine reason not given: {}",
        run.stderr
    );
    assert!(
        desk.tickets().is_empty(),
        "an oversized message opened a ticket"
    );
}

/// Multiparts nested `depth` deep, each with its own boundary, the text at the bottom.
fn nested_multiparts(depth: usize, message_id: &str) -> String {
    let mut raw = headers("SEV 4 russian dolls", message_id);
    raw.push_str("Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    // Levels 0..depth-1 are multiparts; each one's only part is the next multipart.
    for level in 1..depth {
        raw.push_str(&format!(
            "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n",
            level - 1
        ));
    }
    raw.push_str(&format!(
        "--b{}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nthe innermost text\r\n",
        depth - 1
    ));
    for level in (0..depth).rev() {
        raw.push_str(&format!("--b{level}--\r\n"));
    }
    raw
}

#[test]
fn multipart_nested_30_deep_is_taken_31_deep_is_quarantined() {
    // limits.max_depth is 30.
    let desk = Desk::new();
    let raw = nested_multiparts(30, "nested-30@acme.test");
    ingest_expect(&desk, "multipart_nested_30", raw.as_bytes(), 0);
    let t = only_ticket(&desk);
    let m = first_message(&t);
    assert_eq!(m["size"].as_u64(), Some(raw.len() as u64), "raw kept whole");
    let text = m["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("the innermost text"),
        "the text at depth 30 was not found: {text:?}"
    );
    for depth in [31, 100] {
        let raw = nested_multiparts(depth, &format!("nested-{depth}@acme.test"));
        let run = ingest_expect(&desk, "multipart_nested_deeper", raw.as_bytes(), EX_DATAERR);
        assert!(
            run.stderr.contains(&format!(
                "too_deep: MIME parts nested {depth} deep is over limits.max_depth = 30"
            )),
            "{}",
            run.stderr
        );
    }
    assert_eq!(desk.tickets().len(), 1, "no ticket for the deeper ones");
}

#[test]
fn ten_thousand_to_and_cc_recipients_are_taken_with_watchers() {
    const N: usize = 10_000;
    let desk = Desk::new();
    let to: Vec<String> = (0..N).map(|i| format!("to{i}@acme.test")).collect();
    let cc: Vec<String> = (0..N)
        .map(|i| format!("Watcher {i} <cc{i}@globex.test>"))
        .collect();
    let raw = format!(
        "From: Jane Doe <jane@acme.test>\r\n\
         To: support@example.com,\r\n {}\r\n\
         Cc: {}\r\n\
         Subject: SEV 3 everybody\r\n\
         Message-ID: <crowd@acme.test>\r\n\
         Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n\
         Content-Type: text/plain\r\n\r\nhello all\r\n",
        to.join(",\r\n "),
        cc.join(",\r\n ")
    );
    ingest_expect(&desk, "to_cc_10000", raw.as_bytes(), 0);
    let t = only_ticket(&desk);
    let participants = t["participants"].as_array().unwrap();
    let watchers = participants
        .iter()
        .filter(|p| p["role"] == "watcher")
        .count();
    assert_eq!(watchers, N, "every Cc address is a watcher");
    assert_eq!(participants[0]["role"], "requester");
    assert_eq!(participants[0]["address"], "jane@acme.test");
}

/// limits.max_header_bytes: all header blocks of a message together.
const MAX_HEADER_BYTES: usize = 1 << 20;

#[test]
fn header_block_just_under_one_mebibyte_is_taken() {
    let desk = Desk::new();
    let tail = "Content-Type: text/plain\r\n\r\n";
    // Unfolded: one line that fills the header block to the limit.
    let top = headers("SEV 4 big header", "junk-1@acme.test");
    let room = MAX_HEADER_BYTES - top.len() - "X-Junk: \r\n".len() - tail.len();
    let unfolded = format!("{top}X-Junk: {}\r\n{tail}body\r\n", "j".repeat(room));
    ingest_expect(&desk, "header_1mib_unfolded", unfolded.as_bytes(), 0);
    // Folded over lines of 76 characters, just under the limit.
    let top = headers("SEV 4 big folded header", "junk-2@acme.test");
    let room = MAX_HEADER_BYTES - top.len() - "X-Junk: \r\n".len() - tail.len();
    let line = "j".repeat(76);
    let folded_value = vec![line.as_str(); room / 79].join("\r\n ");
    let folded = format!("{top}X-Junk: {folded_value}\r\n{tail}body\r\n");
    ingest_expect(&desk, "header_1mib_folded", folded.as_bytes(), 0);
    // A subject of nearly 1 MiB, folded: the ticket subject stays one line.
    let subject: Vec<String> = (0..(MAX_HEADER_BYTES - 1024) / 61)
        .map(|i| format!("SEV 4 word{i:06} padding padding padding padding pad"))
        .collect();
    let long_subject = format!(
        "From: jane@acme.test\r\nTo: support@example.com\r\nSubject: {}\r\n\
         Message-ID: <junk-3@acme.test>\r\nContent-Type: text/plain\r\n\r\nbody\r\n",
        subject.join("\r\n ")
    );
    ingest_expect(&desk, "subject_1mib_folded", long_subject.as_bytes(), 0);
    let list = desk.tickets();
    assert_eq!(list.len(), 3, "three tickets");
    for t in &list {
        let s = t["subject"].as_str().unwrap_or_default();
        assert!(
            !s.contains('\n') && !s.contains('\r'),
            "subject not one line"
        );
    }
    // One byte more than the limit: quarantined, naming the limit.
    let top = headers("SEV 4 too big header", "junk-4@acme.test");
    let room = MAX_HEADER_BYTES + 1 - top.len() - "X-Junk: \r\n".len() - tail.len();
    let over = format!("{top}X-Junk: {}\r\n{tail}body\r\n", "j".repeat(room));
    let run = ingest_expect(&desk, "header_over_1mib", over.as_bytes(), EX_DATAERR);
    assert!(
        run.stderr.contains(
            "header_too_large: 1,048,577 bytes of headers is over limits.max_header_bytes = 1048576"
        ),
        "{}",
        run.stderr
    );
}
