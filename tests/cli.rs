//! The `postdesk` binary as users and MTAs see it: fixtures become the right tickets, duplicates
//! are one ticket, `explain` changes nothing, hostile subjects cannot add headers, bad config
//! exits 78.

mod common;

use common::{Sandbox, code, customer_mail, repo};

fn expected() -> toml::Table {
    let text = std::fs::read_to_string(repo().join("fixtures/expected.toml")).unwrap();
    text.parse().unwrap()
}

#[test]
fn every_fixture_gives_the_expected_outcome() {
    let sb = Sandbox::new();
    let expected = expected();
    assert!(
        expected.len() >= 15,
        "fixtures/expected.toml lists {} fixtures",
        expected.len()
    );
    let mut checked = 0;
    for (name, want) in &expected {
        let file = repo().join("fixtures").join(name);
        let file_s = file.to_str().unwrap();
        let want_action = want["action"].as_str().unwrap();

        // explain first: it must predict exactly what ingest then does.
        let e = sb.json(&["explain", file_s, "--json"]);
        assert_eq!(e["action"], want_action, "{name}: explain action: {e}");
        assert_eq!(
            e["acknowledge"],
            want["acknowledge"].as_bool().unwrap(),
            "{name}: acknowledge: {e}"
        );
        if let Some(from) = want.get("from").and_then(|v| v.as_str()) {
            assert_eq!(
                e["from"].as_str().map(str::to_lowercase).as_deref(),
                Some(from),
                "{name}: from"
            );
        }
        if let Some(subject) = want.get("subject").and_then(|v| v.as_str()) {
            assert_eq!(e["subject"], subject, "{name}: subject");
        }
        if want_action == "new_ticket" {
            let s = &e["severity"];
            assert_eq!(
                s["requested"].as_i64(),
                want.get("requested").and_then(|v| v.as_integer()),
                "{name}: requested"
            );
            assert_eq!(
                s["assigned"].as_i64(),
                want["assigned"].as_integer(),
                "{name}: assigned"
            );
            assert_eq!(
                s["given"],
                want["given"].as_bool().unwrap(),
                "{name}: given"
            );
            assert_eq!(
                s["downgraded"],
                want["downgraded"].as_bool().unwrap(),
                "{name}: downgraded"
            );
            let outbound = e["outbound"].as_array().unwrap();
            assert_eq!(
                outbound.len(),
                usize::from(want["acknowledge"].as_bool().unwrap()),
                "{name}: outbound"
            );
        }

        let before = sb.tickets().len();
        let out = sb.run(&["ingest", file_s]);
        let want_code = if want_action == "quarantine" { 65 } else { 0 };
        assert_eq!(
            code(&out),
            want_code,
            "{name}: ingest exit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tickets = sb.tickets();
        let new_tickets = tickets.len() - before;
        assert_eq!(
            new_tickets,
            usize::from(want_action == "new_ticket"),
            "{name}: tickets made"
        );
        if want_action == "new_ticket" {
            let t = &tickets[0];
            assert_eq!(t["status"], "in_triage", "{name}");
            assert_eq!(
                t["assigned_severity"].as_i64(),
                want["assigned"].as_integer(),
                "{name}"
            );
            assert_eq!(
                t["severity_given"],
                want["given"].as_bool().unwrap(),
                "{name}"
            );
            let number = t["number"].as_i64().unwrap().to_string();
            let d = sb.json(&["tickets", "show", &number, "--json"]);
            let outbox = d["outbox"].as_array().unwrap();
            assert_eq!(
                outbox.len(),
                usize::from(want["acknowledge"].as_bool().unwrap()),
                "{name}: outbox rows"
            );
            assert_eq!(
                d["messages"].as_array().unwrap().len(),
                1,
                "{name}: messages"
            );
            if let Some(watchers) = want.get("watchers").and_then(|v| v.as_array()) {
                let got: Vec<&str> = d["participants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["role"] == "watcher")
                    .map(|p| p["address"].as_str().unwrap())
                    .collect();
                let want: Vec<String> = watchers
                    .iter()
                    .map(|w| w.as_str().unwrap().to_lowercase())
                    .collect();
                assert_eq!(got, want, "{name}: watchers");
            }
        }
        checked += 1;
    }
    // The worker then writes one acknowledgement file per acknowledged ticket.
    let out = sb.run(&["run", "--exit-when-idle"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks = expected
        .values()
        .filter(|w| w["acknowledge"].as_bool() == Some(true))
        .count();
    assert_eq!(sb.outbox_files().len(), acks);
    eprintln!("{checked} fixtures checked, {acks} acknowledgements written");
}

#[test]
fn the_same_message_twice_is_one_ticket_and_one_acknowledgement() {
    let sb = Sandbox::new();
    let raw = customer_mail(
        "jane@acme.test",
        "SEV 3 Reports page times out",
        "twice@acme.test",
    );
    for _ in 0..2 {
        let out = sb.run_stdin(&["ingest", "-"], &raw);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Also through the maildir, as an IMAP re-delivery would arrive.
    std::fs::create_dir_all(sb.maildir().join("new")).unwrap();
    std::fs::write(sb.maildir().join("new/1.redelivered"), &raw).unwrap();
    assert!(sb.run(&["run", "--exit-when-idle"]).status.success());
    assert_eq!(sb.tickets().len(), 1);
    assert_eq!(sb.outbox_files().len(), 1);
    let e = sb.json(&["explain", "-", "--json"]);
    // explain with '-' reads stdin: empty stdin is not mail.
    assert_eq!(e["action"], "quarantine");
    let file = sb.path().join("again.eml");
    std::fs::write(&file, &raw).unwrap();
    let e = sb.json(&["explain", file.to_str().unwrap(), "--json"]);
    assert_eq!(e["action"], "duplicate");
    assert_eq!(e["ticket"], 1);
    assert_eq!(e["acknowledge"], false);
}

#[test]
fn explain_leaves_the_database_byte_for_byte_unchanged() {
    let sb = Sandbox::new();
    for i in 0..3 {
        let raw = customer_mail(
            &format!("c{i}@acme.test"),
            "SEV 4 x",
            &format!("m{i}@acme.test"),
        );
        assert_eq!(code(&sb.run_stdin(&["ingest"], &raw)), 0);
    }
    // (file name, size, SHA-256) of the database and its write-ahead log. The -shm file is
    // SQLite's shared-memory index, where every reader records its read mark; it holds no data
    // and is rebuilt from the WAL, so it is not part of "the database". Nor is an empty -wal:
    // SQLite may create one when a read-only connection opens a WAL database after the last
    // writer removed it (it cannot delete it again); it holds no frames.
    let snapshot = |sb: &Sandbox| -> Vec<(String, usize, String)> {
        use sha2::Digest;
        let mut files: Vec<(String, usize, String)> = std::fs::read_dir(sb.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("postdesk.db"))
            .filter(|e| !e.file_name().to_string_lossy().ends_with("-shm"))
            .filter(|e| {
                !(e.file_name().to_string_lossy().ends_with("-wal")
                    && e.metadata().map(|m| m.len() == 0).unwrap_or(false))
            })
            .map(|e| {
                let bytes = std::fs::read(e.path()).unwrap();
                let hash = format!("{:x}", sha2::Sha256::digest(&bytes));
                (
                    e.file_name().to_string_lossy().into_owned(),
                    bytes.len(),
                    hash,
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot(&sb);
    assert!(!before.is_empty());
    for fixture in [
        "outlook-sev3-plain.eml",
        "no-sender.eml",
        "bounce-multipart-report.eml",
    ] {
        let f = repo().join("fixtures").join(fixture);
        let e = sb.json(&["explain", f.to_str().unwrap(), "--json"]);
        assert!(e["action"].is_string());
        let plain = sb.run(&["explain", f.to_str().unwrap()]);
        assert!(plain.status.success());
    }
    let dup = sb.path().join("dup.eml");
    std::fs::write(
        &dup,
        customer_mail("c1@acme.test", "SEV 4 x", "m1@acme.test"),
    )
    .unwrap();
    assert_eq!(
        sb.json(&["explain", dup.to_str().unwrap(), "--json"])["action"],
        "duplicate"
    );
    assert_eq!(snapshot(&sb), before, "explain changed the database files");
}

#[test]
fn explain_json_has_the_documented_shape() {
    let sb = Sandbox::new();
    let f = repo().join("fixtures/gmail-sev2-downgraded.eml");
    let e = sb.json(&["explain", f.to_str().unwrap(), "--json"]);
    for key in [
        "from",
        "subject",
        "severity",
        "action",
        "ticket",
        "acknowledge",
        "reason",
        "outbound",
    ] {
        assert!(e.get(key).is_some(), "missing {key}: {e}");
    }
    assert_eq!(e["severity"]["requested"], 2);
    assert_eq!(e["severity"]["assigned"], 4);
    assert_eq!(e["severity"]["downgraded"], true);
    assert_eq!(e["outbound"][0]["template"], "acknowledgement");
    assert!(e["reason"].as_str().unwrap().contains("downgraded"));
    // No database file was created by explain.
    assert!(!sb.db().exists());
}

#[test]
fn hostile_subject_is_escaped_in_html_and_cannot_add_a_header() {
    let sb = Sandbox::new();
    let f = repo().join("fixtures/subject-injection-script.eml");
    assert_eq!(code(&sb.run(&["ingest", f.to_str().unwrap()])), 0);
    assert!(sb.run(&["run", "--exit-when-idle"]).status.success());
    let files = sb.outbox_files();
    assert_eq!(files.len(), 1);
    let raw = std::fs::read(&files[0]).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (headers, _) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        !headers
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "a header was injected:\n{headers}"
    );
    let subject_lines: Vec<&str> = headers
        .lines()
        .filter(|l| l.starts_with("Subject:"))
        .collect();
    assert_eq!(subject_lines.len(), 1);
    // Parse it back as a mail client would and look at the parts.
    let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let subject = msg.subject().unwrap();
    assert!(subject.starts_with("[#1] "), "{subject}");
    assert!(!subject.contains('\n') && !subject.contains('\r'));
    let html = msg.body_html(0).unwrap();
    assert!(!html.contains("<script>"), "unescaped script in HTML part");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(msg.header("Bcc").is_none());
}

#[test]
fn acknowledgement_threads_into_the_customer_conversation() {
    let sb = Sandbox::new();
    let raw = customer_mail("jane@acme.test", "Sev 1 site down", "thread-1@acme.test");
    assert_eq!(code(&sb.run_stdin(&["ingest"], &raw)), 0);
    assert!(sb.run(&["run", "--exit-when-idle"]).status.success());
    let files = sb.outbox_files();
    assert_eq!(files.len(), 1);
    let raw = std::fs::read(&files[0]).unwrap();
    let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(msg.subject(), Some("[#1] Sev 1 site down"));
    assert_eq!(msg.in_reply_to().as_text(), Some("thread-1@acme.test"));
    assert!(
        msg.message_id()
            .unwrap()
            .starts_with("postdesk.1.acknowledgement.")
    );
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("support@example.com")
    );
    let text = msg.body_text(0).unwrap();
    assert!(
        text.contains("Sev 1 and Sev 2 cannot be opened by email"),
        "{text}"
    );
    assert!(text.contains("+1 555 0100"), "{text}");
    // The ticket's history says what happened and the outbox row is marked sent.
    let d = sb.json(&["tickets", "show", "1", "--json"]);
    let kinds: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["created", "severity", "sla", "outbound"]);
    assert!(d["outbox"][0]["sent_at"].is_string());
}

#[test]
fn severity_not_given_acknowledgement_explains_how_to_set_it() {
    let sb = Sandbox::new();
    let raw = customer_mail(
        "jane@acme.test",
        "Question about invoices",
        "nogiven@acme.test",
    );
    assert_eq!(code(&sb.run_stdin(&["ingest"], &raw)), 0);
    assert!(sb.run(&["run", "--exit-when-idle"]).status.success());
    let raw = std::fs::read(&sb.outbox_files()[0]).unwrap();
    let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let text = msg.body_text(0).unwrap();
    assert!(text.contains("did not name a severity"), "{text}");
    assert!(text.contains("SEV 3"), "{text}");
}

#[test]
fn bad_config_exits_78_naming_file_key_and_expectation() {
    let sb = Sandbox::new();
    let cfg = sb.path().join("bad.toml");
    std::fs::write(&cfg, "[severity]\ndefault = \"high\"\n").unwrap();
    let out = sb.run(&["--config", cfg.to_str().unwrap(), "tickets", "list"]);
    assert_eq!(code(&out), 78);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("severity.default") && err.contains("integer"),
        "{err}"
    );

    let out = sb
        .command(&["tickets", "list"])
        .env("POSTDESK_DATABASE_URL", "mysql://x")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("POSTDESK_DATABASE_URL") && err.contains("database.url"),
        "{err}"
    );

    // A broken template is a config problem too, named by file and line.
    let tdir = sb.path().join("templates");
    copy_dir(&repo().join("templates"), &tdir);
    std::fs::write(tdir.join("acknowledgement/html.html"), "<p>\n{% if %}\n").unwrap();
    let f = repo().join("fixtures/outlook-sev3-plain.eml");
    let out = sb
        .command(&["ingest", f.to_str().unwrap()])
        .env("POSTDESK_TEMPLATES_DIR", &tdir)
        .output()
        .unwrap();
    assert_eq!(code(&out), 78);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("acknowledgement/html.html:2"), "{err}");
}

#[test]
fn ingest_exits_75_when_the_database_cannot_be_reached() {
    let sb = Sandbox::new();
    let raw = customer_mail("jane@acme.test", "SEV 3 x", "down@acme.test");
    let out = sb
        .command(&["ingest"])
        .env(
            "POSTDESK_DATABASE_URL",
            "postgres://postdesk@127.0.0.1:1/none",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&raw)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(code(&out), 75, "{}", String::from_utf8_lossy(&out.stderr));
    // A SQLite database held by another writer past the busy timeout is "try later" too: a
    // directory where the database file should be cannot be opened at all.
    let out = sb
        .command(&["ingest"])
        .env(
            "POSTDESK_DATABASE_URL",
            format!("sqlite:{}/no/such/dir/db", sb.path().display()),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 75, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn tickets_list_filters_by_status_and_show_reports_missing() {
    let sb = Sandbox::new();
    assert_eq!(
        code(&sb.run_stdin(
            &["ingest"],
            &customer_mail("a@acme.test", "SEV 3 a", "a@acme.test")
        )),
        0
    );
    assert_eq!(
        sb.json(&["tickets", "list", "--status", "in_triage", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        sb.json(&["tickets", "list", "--status", "closed", "--json"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let out = sb.run(&["tickets", "list", "--status", "bogus"]);
    assert!(!out.status.success());
    let out = sb.run(&["tickets", "show", "99"]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ticket #99"));
    let table = sb.run(&["tickets", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("in_triage") && table.contains("a@acme.test"),
        "{table}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn run_notices_new_mail_and_exits_0_on_sigterm() {
    let sb = Sandbox::new();
    let child = sb
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Deliver the maildir way once the worker is up (it creates new/ at start).
    let new = sb.maildir().join("new");
    let tmp = sb.maildir().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(new.is_dir() && tmp.is_dir()) {
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not create the maildir"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let raw = customer_mail("live@acme.test", "SEV 3 live", "live-1@acme.test");
    std::fs::write(tmp.join("1.live"), &raw).unwrap();
    std::fs::rename(tmp.join("1.live"), new.join("1.live")).unwrap();
    while sb.outbox_files().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no acknowledgement while running"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sb.maildir().join("cur/1.live:2,S").exists());
    assert_eq!(sb.tickets().len(), 1);
}

/// Several processes starting on a new database at once (`migrate` from several deploy hooks,
/// say) all get the schema: the one that loses the race looks again instead of failing.
/// (`tickets list` used to serve here; it no longer creates a database.)
#[test]
fn concurrent_first_starts_on_a_new_database_all_succeed() {
    for _ in 0..20 {
        let sb = Sandbox::new();
        let children: Vec<_> = (0..8)
            .map(|_| {
                sb.command(&["migrate"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `bench ingest` cleans up after itself: its temporary work directory (a few hundred MB on a
/// real run) is gone after a report and after an error, a `--dir` is the user's and stays, and
/// the worker's line per message is not logged during the bench.
#[test]
fn bench_ingest_removes_its_work_dir_and_logs_no_line_per_message() {
    const MESSAGES: usize = 50;
    let sb = Sandbox::new();
    let tmp = sb.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let left = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let bench = |extra: &[&str]| {
        let n = MESSAGES.to_string();
        let mut args = vec!["bench", "ingest", "--messages", n.as_str()];
        args.extend_from_slice(extra);
        let mut c = sb.command(&args);
        // The work directory goes under TMPDIR; the log filter is the bench's own default.
        c.env("TMPDIR", &tmp).env_remove("POSTDESK_LOG");
        c
    };

    let out = bench(&[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(
        stdout.contains("messages=50 tickets=50 acknowledgements=50"),
        "{stdout}"
    );
    assert_eq!(
        left(),
        Vec::<std::path::PathBuf>::new(),
        "work dir left behind"
    );
    assert!(
        stderr.lines().count() < MESSAGES,
        "a log line per message?\n{stderr}"
    );

    // An error after the mail was generated (no templates): removed as well.
    let out = bench(&[])
        .env("POSTDESK_TEMPLATES_DIR", sb.path().join("no-templates"))
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-templates"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        left(),
        Vec::<std::path::PathBuf>::new(),
        "work dir left behind"
    );

    // A directory the user names is kept, with what the run made in it.
    let keep = sb.path().join("keep");
    let out = bench(&["--dir", keep.to_str().unwrap()]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_dir(keep.join("outbox")).unwrap().count(),
        MESSAGES
    );
    assert_eq!(left(), Vec::<std::path::PathBuf>::new());
}

/// `sla explain` shows the stored deadlines and how they were computed; an engineer's
/// `#severity` recomputes them from creation on the new severity's calendar.
#[test]
fn sla_explain_shows_deadlines_and_their_recomputation() {
    let sb = Sandbox::new();
    let first = sb.path().join("first.eml");
    std::fs::write(
        &first,
        customer_mail("jane@acme.test", "SEV 3 printer on fire", "sla-1@acme.test"),
    )
    .unwrap();
    assert_eq!(code(&sb.run(&["ingest", first.to_str().unwrap()])), 0);
    let e = sb.json(&["sla", "explain", "1", "--json"]);
    let t = sb.json(&["tickets", "show", "1", "--json"]);
    assert_eq!(e["calendar"], "us-central", "{e}");
    assert_eq!(e["zone"], "America/Chicago");
    for (explained, stored) in [
        ("response_due", "response_due_at"),
        ("resolution_due", "resolution_due_at"),
        ("escalation_due", "escalation_due_at"),
        ("next_update_due", "update_due_at"),
    ] {
        let a = chrono::DateTime::parse_from_rfc3339(e[explained].as_str().unwrap()).unwrap();
        let b =
            chrono::DateTime::parse_from_rfc3339(t["ticket"][stored].as_str().unwrap()).unwrap();
        assert_eq!(a, b, "{explained}");
    }
    // 24 h of open time on 9-hour days is spread over at least three open periods.
    assert!(
        e["deadlines"][0]["open_periods"].as_array().unwrap().len() >= 3,
        "{e}"
    );
    assert_eq!(e["recomputations"].as_array().map(Vec::len), Some(1));

    // An engineer raises it to Sev 1: 24x7, response 15 minutes after creation.
    let raise = sb.path().join("raise.eml");
    std::fs::write(
        &raise,
        "From: Sam <sam@example.com>\r\nTo: support@example.com\r\nSubject: Re: [#1] SEV 3 printer on fire\r\n\
         Message-ID: <sla-2@example.com>\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\n\r\n#severity 1\r\n",
    )
    .unwrap();
    assert_eq!(code(&sb.run(&["ingest", raise.to_str().unwrap()])), 0);
    let e = sb.json(&["sla", "explain", "1", "--json"]);
    let t = sb.json(&["tickets", "show", "1", "--json"]);
    assert_eq!(e["calendar"], "24x7", "{e}");
    assert_eq!(e["severity"], 1);
    let created =
        chrono::DateTime::parse_from_rfc3339(t["ticket"]["created_at"].as_str().unwrap()).unwrap();
    let response =
        chrono::DateTime::parse_from_rfc3339(e["response_due"].as_str().unwrap()).unwrap();
    assert_eq!(response - created, chrono::Duration::minutes(15), "{e}");
    assert_eq!(e["recomputations"].as_array().map(Vec::len), Some(2), "{e}");
    // The human form names the calendar and each deadline.
    let out = sb.run(&["sla", "explain", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Sev 1 on calendar 24x7"), "{text}");
    assert!(
        text.contains("response") && text.contains("escalation"),
        "{text}"
    );
    assert_eq!(code(&sb.run(&["sla", "explain", "9"])), 1);
}

/// A typo'd variable is warned about (with the name it probably meant), and the read-only
/// `tickets list` then finds no database: it says which one and how to make it, exits non-zero
/// and creates nothing.
#[test]
fn typo_in_an_env_var_is_warned_and_tickets_list_creates_no_database() {
    let sb = Sandbox::new();
    let out = sb
        .command(&["tickets", "list"])
        .env_remove("POSTDESK_DATABASE_URL")
        .env("POSTDESK_DATBASE_URL", "sqlite:./elsewhere.db")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(code(&out), 0, "{err}");
    assert!(
        err.contains("warning")
            && err.contains("POSTDESK_DATBASE_URL")
            && err.contains("did you mean POSTDESK_DATABASE_URL?"),
        "{err}"
    );
    assert!(
        err.contains("database sqlite:./postdesk.db does not exist")
            && err.contains("postdesk migrate"),
        "{err}"
    );
    assert!(!sb.path().join("postdesk.db").exists());
    assert!(!sb.path().join("elsewhere.db").exists());

    // sla explain and tickets show are read-only too; explain judges without a database.
    for args in [&["tickets", "show", "1"][..], &["sla", "explain", "1"][..]] {
        let out = sb.run(args);
        assert_ne!(code(&out), 0, "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not exist"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let f = repo().join("fixtures/outlook-sev3-plain.eml");
    let out = sb.run(&["explain", f.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("new_ticket"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!sb.db().exists());

    // Known variables, including the tests' own, are not warned about.
    let out = sb
        .command(&["tickets", "list"])
        .env("POSTDESK_TEST_POSTGRES_URL", "postgres://x@h/db")
        .env("POSTDESK_SLA_SEV3_RESPONSE", "12h")
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A variable far from any known one is still named.
    let out = sb
        .command(&["tickets", "list"])
        .env("POSTDESK_SOMETHING_ELSE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown environment variable POSTDESK_SOMETHING_ELSE")
            && !err.contains("did you mean"),
        "{err}"
    );
}

/// A database that cannot be opened is named (password hidden) instead of SQLite's bare
/// "unable to open database file".
#[test]
fn a_database_that_cannot_be_opened_is_named() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("dir.db")).unwrap();
    let url = format!("sqlite:{}", sb.path().join("dir.db").display());
    let out = sb
        .command(&["tickets", "list"])
        .env("POSTDESK_DATABASE_URL", &url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(code(&out), 0);
    assert!(err.contains(&url), "{err}");
    let out = sb
        .command(&["tickets", "list"])
        .env(
            "POSTDESK_DATABASE_URL",
            "postgres://postdesk:hunter2@127.0.0.1:1/none",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(code(&out), 0);
    assert!(
        err.contains("postgres://postdesk:***@127.0.0.1:1/none") && !err.contains("hunter2"),
        "{err}"
    );
}

/// The SLA, calendar and digest tables from a file reach `sla explain`; their errors exit 78
/// naming the file or variable and the key.
#[test]
fn sla_and_calendar_tables_configure_deadlines_and_bad_ones_exit_78() {
    let sb = Sandbox::new();
    let cfg = sb.path().join("postdesk.toml");
    std::fs::write(
        &cfg,
        "[sla.sev3]\nresponse = \"2h\"\nclock = \"emea\"\n\
         [calendars.emea]\nzone = \"Europe/Berlin\"\nhours.monday = \"08:00-17:00\"\n\
         hours.tuesday = \"08:00-12:00,13:00-17:00\"\nholidays = [\"us\", \"2026-12-24 Christmas Eve\"]\n\
         [digest]\nschedule = \"0 30 7 * * Mon-Fri\"\ncalendar = \"emea\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let f = repo().join("fixtures/outlook-sev3-plain.eml");
    let out = sb.run(&["--config", c, "ingest", f.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let e = sb.json(&["--config", c, "sla", "explain", "1", "--json"]);
    assert_eq!(e["calendar"], "emea", "{e}");
    assert_eq!(e["zone"], "Europe/Berlin", "{e}");

    std::fs::write(
        &cfg,
        "[calendars.emea]\nzone = \"Europe/Berlin\"\nhours.monday = \"8-17\"\n",
    )
    .unwrap();
    let out = sb.run(&["--config", c, "tickets", "list"]);
    assert_eq!(code(&out), 78);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("postdesk.toml")
            && err.contains("calendars.emea.hours.monday")
            && err.contains("expected \"HH:MM-HH:MM\"")
            && err.contains("found \"8-17\""),
        "{err}"
    );
    let out = sb
        .command(&["tickets", "list"])
        .env("POSTDESK_SLA_SEV3_RESPONSE", "soon")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("POSTDESK_SLA_SEV3_RESPONSE") && err.contains("sla.sev3.response"),
        "{err}"
    );
}
