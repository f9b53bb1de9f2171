//! The worker against a real Dovecot (IMAP, IDLE) and a real Postfix (SMTP), started by the
//! harness in tests/common/mailstack.rs: customers send mail by SMTP, `postdesk run` (the
//! binary) takes it from support@'s INBOX and delivers acknowledgements by SMTP submission
//! (STARTTLS + AUTH), which land in the customers' IMAP inboxes.

#[path = "common/mailstack.rs"]
mod mailstack;
#[path = "common/pg.rs"]
mod pg;

use std::collections::{BTreeMap, HashSet};

use mail_parser::MimeHeaders;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mailstack::{
    ALICE, BOB, CAROL, ENGINEER, GONE, MANAGER, MailStack, OAUTH_TOKEN, PASSWORD, REJECT_AFTER_DOT,
    SUPPORT, StackOptions, TRIAGE, customer,
};

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");
// The configured "postdesk/processed", in Dovecot's maildir++ hierarchy (delimiter ".").
const PROCESSED: &str = "postdesk.processed";
const QUARANTINE: &str = "postdesk.quarantine";
/// How long to wait for something that normally takes well under a second.
const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `postdesk` installation wired to a mail stack: its own SQLite file and log file.
struct Desk {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
    http_port: u16,
}

impl Desk {
    fn new(stack: &MailStack) -> Desk {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let http_port = free_port();
        let mut env = BTreeMap::new();
        for (k, v) in [
            (
                "DATABASE_URL",
                format!("sqlite:{}", dir.path().join("postdesk.db").display()),
            ),
            ("MAILBOX_URL", stack.imap_url(SUPPORT)),
            ("MAILBOX_PASSWORD", PASSWORD.to_string()),
            ("MAILBOX_POLL_INTERVAL", "1s".into()),
            ("MAILBOX_COMMAND_TIMEOUT", "10s".into()),
            ("OUTBOX_URL", stack.submission_url()),
            ("OUTBOX_PASSWORD", PASSWORD.to_string()),
            ("OUTBOX_RETRY_MIN", "1s".into()),
            ("OUTBOX_RETRY_MAX", "2s".into()),
            ("OUTBOX_POLL_INTERVAL", "200ms".into()),
            ("OUTBOX_TIMEOUT", "10s".into()),
            ("TLS_CA_FILE", stack.ca_file.display().to_string()),
            ("SUPPORT_ADDRESSES", SUPPORT.into()),
            ("TRIAGE_OWNERS", TRIAGE.into()),
            (
                "TEMPLATES_DIR",
                repo().join("templates").display().to_string(),
            ),
            ("HTTP_LISTEN", format!("127.0.0.1:{http_port}")),
            ("LOG", "info".into()),
        ] {
            env.insert(format!("POSTDESK_{k}"), v);
        }
        Desk {
            dir,
            env,
            http_port,
        }
    }

    fn set(&mut self, key: &str, value: &str) -> &mut Desk {
        self.env
            .insert(format!("POSTDESK_{key}"), value.to_string());
        self
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("worker.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("POSTDESK_CONFIG")
            .envs(&self.env);
        c
    }

    /// `postdesk run` in the background, its log appended to worker.log.
    fn spawn(&self, extra: &[&str]) -> Worker {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        self.command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map(|c| Worker(Some(c)))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `postdesk run --exit-when-idle` to the end.
    fn run_until_idle(&self) -> Output {
        let child = self.spawn(&["--exit-when-idle"]);
        wait_with_timeout(child, Duration::from_secs(120))
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn tickets(&self) -> Vec<serde_json::Value> {
        let out = self.output(&["tickets", "list", "--json"]);
        // Until the worker has made the database, there are no tickets (read-only commands
        // never create one).
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not exist")
        {
            return Vec::new();
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn ticket(&self, n: i64) -> serde_json::Value {
        let out = self.output(&["tickets", "show", &n.to_string(), "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port)).await {
                let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
                s.write_all(req.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut buf = String::new();
                s.read_to_string(&mut buf)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let status = buf
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let body = buf
                    .split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_default();
                return (status, body);
            }
            assert!(Instant::now() < deadline, "http.listen never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
    }

    /// Polls ticket `n` until `ok` holds for it and returns it; panics with the worker's log after
    /// `timeout`.
    fn wait_for_ticket(
        &self,
        n: i64,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.ticket(n);
            if ok(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "ticket {n}: timed out waiting for {what}: {t}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the database holds `n` tickets.
    async fn wait_for_tickets(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.tickets().len();
            if have >= n || Instant::now() > deadline {
                return have;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The quarantine table's rows (reason, source) read straight from SQLite.
    async fn quarantine_rows(&self) -> Vec<(String, String)> {
        let url = format!("sqlite:{}", self.dir.path().join("postdesk.db").display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT reason, source FROM quarantine")
            .fetch_all(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        pool.close().await;
        rows
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A running `postdesk run`, killed if a failing test leaves it behind.
struct Worker(Option<Child>);

impl Worker {
    fn child(&mut self) -> &mut Child {
        self.0
            .as_mut()
            .unwrap_or_else(|| panic!("worker already taken"))
    }
    fn take(mut self) -> Child {
        self.0
            .take()
            .unwrap_or_else(|| panic!("worker already taken"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_with_timeout(worker: Worker, timeout: Duration) -> Output {
    let mut child = worker.take();
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().unwrap_or_else(|e| panic!("{e}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                panic!("postdesk run did not finish within {timeout:?}");
            }
        }
    }
}

fn stop(worker: Worker) -> Output {
    let mut child = worker.take();
    // SIGTERM: finish the message in hand, exit 0.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("postdesk run did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mail(from: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, something is broken ({id}).\r\n"
    )
    .into_bytes()
}

fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut()
            && (line.starts_with(' ') || line.starts_with('\t'))
        {
            v.push_str(line.trim_start());
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_string());
        }
    }
    value
}

/// Puts `raws` in the support INBOX, runs the worker until idle and waits until `to` holds
/// `total` messages.
async fn run_until_acknowledged(
    stack: &MailStack,
    desk: &Desk,
    raws: &[Vec<u8>],
    to: &str,
    total: usize,
) {
    stack.append(SUPPORT, "INBOX", raws).await;
    let out = desk.run_until_idle();
    assert!(out.status.success(), "{}", desk.log());
    assert_eq!(
        stack
            .wait_for_count(to, "INBOX", total, Duration::from_secs(20))
            .await,
        total
    );
}

/// `n` mails from one customer, subjects `SEV 4 <what> <i>`, Message-IDs `<what><i>@customer.test`.
fn numbered_mails(from: &str, n: usize, what: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            mail(
                from,
                &format!("SEV 4 {what} {i}"),
                &format!("{what}{i}@customer.test"),
            )
        })
        .collect()
}

fn message_ids(raws: &[Vec<u8>]) -> Vec<String> {
    raws.iter()
        .map(|r| header(r, "Message-ID").unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_mail_is_acknowledged_in_their_inbox_through_idle() {
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    let worker = desk.spawn(&[]);
    // The worker is connected and idle before the customer writes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !desk.log().contains("IMAP connected") {
        assert!(
            Instant::now() < deadline,
            "never connected:\n{}",
            desk.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack
        .send(
            ALICE,
            SUPPORT,
            &mail(ALICE, "SEV 3 printer on fire", "first@customer.test"),
        )
        .await;
    let n = stack
        .wait_for_count(ALICE, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert_eq!(n, 1, "no acknowledgement arrived:\n{}", desk.log());
    let ack = &stack.fetch_all(ALICE, "INBOX").await[0];
    let subject = header(ack, "Subject").unwrap_or_default();
    assert!(subject.contains("[#1]"), "subject: {subject}");
    assert_eq!(
        header(ack, "In-Reply-To").as_deref(),
        Some("<first@customer.test>")
    );
    assert!(
        header(ack, "References")
            .unwrap_or_default()
            .contains("<first@customer.test>")
    );
    assert_eq!(
        header(ack, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    // The Message-ID the outbox row records is the one that arrived. The row is marked sent
    // after the server's 250, which can come after Dovecot already has the mail.
    let t = desk.wait_for_ticket(1, "the acknowledgement marked sent", WAIT, |t| {
        t["outbox"][0]["sent_at"].is_string()
    });
    let recorded = t["outbox"][0]["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let arrived = header(ack, "Message-ID").unwrap_or_default();
    assert!(
        arrived.contains(recorded.trim_matches(['<', '>'])),
        "{recorded} vs {arrived}"
    );
    // The customer's mail left the INBOX for the processed folder, flagged \Seen (another
    // session may see a MOVE in both folders for a moment).
    assert_eq!(
        stack
            .wait_for_count(SUPPORT, PROCESSED, 1, Duration::from_secs(5))
            .await,
        1,
        "{}",
        desk.log()
    );
    assert_eq!(stack.wait_for_empty(SUPPORT, "INBOX", WAIT).await, 0);
    // Metrics and health.
    assert_eq!(desk.metric("postdesk_imap_connected").await, 1.0);
    assert_eq!(desk.metric("postdesk_messages_taken_total").await, 1.0);
    // The acknowledgement and triage's new-ticket notification.
    assert_eq!(desk.metric("postdesk_mails_sent_total").await, 2.0);
    assert_eq!(desk.metric("postdesk_outbox_depth").await, 0.0);
    let (status, body) = desk.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"imap\":\"connected\""), "{body}");
    let out = stop(worker);
    assert!(
        out.status.success(),
        "exit {:?}:\n{}",
        out.status,
        desk.log()
    );
    assert_eq!(desk.tickets().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_restart_reconnects_and_nothing_is_lost_or_repeated() {
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    let worker = desk.spawn(&[]);
    let batch = |range: std::ops::Range<usize>| {
        range
            .map(|i| {
                let from = customer(i);
                (
                    from.clone(),
                    SUPPORT.to_string(),
                    mail(
                        &from,
                        &format!("restart {i}"),
                        &format!("r{i}@customer.test"),
                    ),
                )
            })
            .collect::<Vec<_>>()
    };
    stack.send_many(batch(0..20)).await;
    assert_eq!(
        desk.wait_for_tickets(20, Duration::from_secs(30)).await,
        20,
        "{}",
        desk.log()
    );
    // The restart must hit the worker, not Postfix's LMTP deliveries to Dovecot (one cut after
    // Dovecot stored the mail and before Postfix read the 250 is made again: at-least-once) nor
    // a MOVE to the processed folder. So the first acknowledgements arrive, Postfix's queue is
    // empty (every LMTP delivery finished) and the worker has moved every message: then no
    // copy the restart could cause is in flight, and the exact counts below are the worker's.
    for i in 0..20 {
        stack
            .wait_for_count(&customer(i), "INBOX", 1, Duration::from_secs(30))
            .await;
    }
    stack.wait_for_empty_queue(WAIT);
    assert_eq!(
        stack
            .wait_for_count(SUPPORT, PROCESSED, 20, Duration::from_secs(30))
            .await,
        20,
        "{}",
        desk.log()
    );
    assert_eq!(stack.wait_for_empty(SUPPORT, "INBOX", WAIT).await, 0);
    stack.restart_dovecot();
    stack.send_many(batch(20..40)).await;
    assert_eq!(
        desk.wait_for_tickets(40, Duration::from_secs(60)).await,
        40,
        "{}",
        desk.log()
    );
    for i in 0..40 {
        let n = stack
            .wait_for_count(&customer(i), "INBOX", 1, Duration::from_secs(30))
            .await;
        assert_eq!(n, 1, "customer {i}: {}", desk.log());
    }
    // The worker is done once every acknowledgement is marked sent and every message moved;
    // stopped, it sends nothing more, and once Postfix's queue is empty the inboxes are final.
    for n in 1..=40 {
        desk.wait_for_ticket(n, "the acknowledgement marked sent", WAIT, |t| {
            t["outbox"][0]["sent_at"].is_string()
        });
    }
    assert_eq!(
        stack
            .wait_for_count(SUPPORT, PROCESSED, 40, Duration::from_secs(30))
            .await,
        40
    );
    let out = stop(worker);
    assert!(out.status.success(), "{}", desk.log());
    stack.wait_for_empty_queue(WAIT);
    assert_eq!(desk.tickets().len(), 40);
    for i in 0..40 {
        assert_eq!(
            stack.count(&customer(i), "INBOX").await,
            1,
            "customer {i} got a repeat"
        );
    }
    assert_eq!(stack.count(SUPPORT, PROCESSED).await, 40);
    let log = desk.log();
    assert!(log.contains("IMAP disconnected; reconnecting"), "{log}");
    assert!(log.matches("IMAP connected").count() >= 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postfix_stopped_mail_waits_in_the_outbox_and_goes_once_it_is_back() {
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    stack.stop_postfix();
    let worker = desk.spawn(&[]);
    // Postfix is down, so the customer's mail reaches the mailbox another way.
    stack
        .append(
            SUPPORT,
            "INBOX",
            &[mail(BOB, "SEV 4 waiting", "wait@customer.test")],
        )
        .await;
    assert_eq!(
        desk.wait_for_tickets(1, Duration::from_secs(30)).await,
        1,
        "{}",
        desk.log()
    );
    // A few attempts fail while the server is away; the mail waits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while desk.metric("postdesk_mail_retries_total").await < 2.0 {
        assert!(Instant::now() < deadline, "{}", desk.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The acknowledgement itself has failed twice (triage's notification fails alongside).
    desk.wait_for_ticket(1, "two failed attempts of the acknowledgement", WAIT, |t| {
        t["outbox"][0]["attempts"].as_i64().unwrap_or(0) >= 2
    });
    // The acknowledgement and triage's new-ticket notification wait.
    assert_eq!(desk.metric("postdesk_outbox_depth").await, 2.0);
    assert!(desk.metric("postdesk_outbox_oldest_unsent_seconds").await > 0.0);
    stack.start_postfix();
    let n = stack
        .wait_for_count(BOB, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert_eq!(n, 1, "{}", desk.log());
    // No stop or crash after Postfix came back, so exactly one hand-over and one copy. The
    // worker is done with the row once it is marked sent (a sent row is never due again);
    // stopped, it sends nothing more, and once Postfix's queue is empty Bob's inbox is final.
    let t = desk.wait_for_ticket(1, "the acknowledgement marked sent", WAIT, |t| {
        t["outbox"][0]["sent_at"].is_string()
    });
    let out = stop(worker);
    assert!(out.status.success());
    stack.wait_for_empty_queue(WAIT);
    let id = t["outbox"][0]["message_id"]
        .as_str()
        .unwrap_or_default()
        .trim_matches(['<', '>']);
    assert_eq!(stack.accepted(id), 1, "handed over twice:\n{}", desk.log());
    assert_eq!(stack.count(BOB, "INBOX").await, 1, "delivered twice");
    assert!(t["outbox"][0]["attempts"].as_i64().unwrap_or(0) >= 3, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_through_sigkills_make_exactly_a_thousand_tickets_and_acks() {
    const CUSTOMERS: usize = 100;
    const EACH: usize = 10;
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    let mut raws = Vec::new();
    for round in 0..EACH {
        for c in 0..CUSTOMERS {
            let from = customer(c);
            raws.push(mail(
                &from,
                &format!("SEV 4 kill test {round}"),
                &format!("k{round}-{c}@customer.test"),
            ));
        }
    }
    stack.append(SUPPORT, "INBOX", &raws).await;
    // Kill at random moments until a run gets to the end on its own.
    let mut seed = 0x9e37_79b9_u64 ^ std::process::id() as u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // POSTDESK_KILL_WAIT_MS=MIN-MAX changes how long each run lives (default 100-1000 ms):
    // shorter runs mean more kills per minute when hunting for a rare window.
    let (min_wait, max_wait) = std::env::var("POSTDESK_KILL_WAIT_MS")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        })
        .filter(|(a, b)| a < b)
        .unwrap_or((100, 1000));
    let mut kills = 0;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no end in sight:\n{}",
            desk.log()
        );
        let mut child = desk.spawn(&["--exit-when-idle"]);
        let wait = Duration::from_millis(min_wait + next() % (max_wait - min_wait));
        std::thread::sleep(wait);
        match child.child().try_wait() {
            Ok(Some(status)) => {
                assert!(status.success(), "exit {status:?}:\n{}", desk.log());
                break;
            }
            _ => {
                let _ = child.child().kill();
                let _ = child.child().wait();
                kills += 1;
            }
        }
    }
    eprintln!("kill test: {kills} SIGKILLs");
    assert!(
        kills >= 3,
        "the worker was hardly interrupted ({kills} kills)"
    );
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), CUSTOMERS * EACH);
    let mut total = 0;
    for c in 0..CUSTOMERS {
        let n = stack
            .wait_for_count(&customer(c), "INBOX", EACH, Duration::from_secs(60))
            .await;
        total += n;
    }
    // The last run exited on its own (outbox empty); once Postfix's queue is empty nothing is
    // in flight: count again, exactly one each (only the worker was killed, never Postfix or
    // Dovecot, and the hand-over journal makes a kill cost no duplicate).
    stack.wait_for_empty_queue(Duration::from_secs(60));
    let mut ids = HashSet::new();
    let mut recount = 0;
    let desk_log = desk.log();
    for c in 0..CUSTOMERS {
        let msgs = stack.fetch_all(&customer(c), "INBOX").await;
        if msgs.len() != EACH {
            // Say which acknowledgement is missing or doubled and what happened to it.
            let got = message_ids(&msgs);
            let mut report = String::new();
            for t in &tickets {
                if t["requester"].as_str() != Some(customer(c).as_str()) {
                    continue;
                }
                let n = t["number"].as_i64().unwrap_or(0);
                let detail = desk.ticket(n);
                for o in detail["outbox"].as_array().cloned().unwrap_or_default() {
                    let id = o["message_id"].as_str().unwrap_or("").to_string();
                    let arrived = got.iter().filter(|g| g.contains(&id)).count();
                    if arrived != 1 {
                        let worker_lines: Vec<&str> =
                            desk_log.lines().filter(|l| l.contains(&id)).collect();
                        let postfix_lines: Vec<String> = stack
                            .log()
                            .lines()
                            .filter(|l| l.contains(&id))
                            .map(str::to_string)
                            .collect();
                        report.push_str(&format!(
                            "ticket {n} ack {id} arrived {arrived}x; row {o}\nworker: {worker_lines:#?}\npostfix: {postfix_lines:#?}\n"
                        ));
                    }
                }
            }
            panic!(
                "customer {c} has {} acknowledgements, not {EACH}:\n{report}",
                msgs.len()
            );
        }
        recount += msgs.len();
        for id in message_ids(&msgs) {
            assert!(ids.insert(id.clone()), "duplicate acknowledgement {id}");
        }
    }
    assert_eq!(total, CUSTOMERS * EACH);
    assert_eq!(recount, CUSTOMERS * EACH);
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_mailbox_with_a_new_uidvalidity_makes_no_duplicate_tickets() {
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    let raws = numbered_mails(ALICE, 5, "uidvalidity");
    stack.append(SUPPORT, "INBOX", &raws).await;
    let out = desk.run_until_idle();
    assert!(out.status.success(), "{}", desk.log());
    assert_eq!(desk.tickets().len(), 5);
    // The mailbox is restored from a backup: the same messages, under a new UIDVALIDITY.
    let before = stack.uid_validity(SUPPORT, "INBOX").await;
    stack.append(SUPPORT, "INBOX", &raws).await;
    stack.recreate_inbox_with_same_messages(SUPPORT);
    let after = stack.uid_validity(SUPPORT, "INBOX").await;
    assert_ne!(before, after);
    let out = desk.run_until_idle();
    assert!(out.status.success(), "{}", desk.log());
    assert!(desk.log().contains("UIDVALIDITY changed"), "{}", desk.log());
    assert_eq!(desk.tickets().len(), 5, "duplicate tickets");
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
    assert_eq!(stack.count(SUPPORT, PROCESSED).await, 10);
    // The worker exited with an empty outbox; once Postfix's queue is empty Alice's inbox is
    // final. (recreate_inbox_with_same_messages waited for the queue before stopping Dovecot, so
    // no acknowledgement was cut mid-delivery: exactly 5.)
    stack.wait_for_empty_queue(WAIT);
    assert_eq!(
        stack.count(ALICE, "INBOX").await,
        5,
        "duplicate acknowledgements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_goes_to_quarantine_and_the_worker_goes_on() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack);
    desk.set("LIMITS_MAX_MESSAGE_SIZE", "100KB");
    let mut big = mail(BOB, "SEV 4 huge attachment", "big@customer.test");
    big.extend(std::iter::repeat_n(b'x', 300 * 1024));
    big.extend_from_slice(b"\r\n");
    stack
        .append(
            SUPPORT,
            "INBOX",
            &[big, mail(ALICE, "SEV 4 small", "small@customer.test")],
        )
        .await;
    let out = desk.run_until_idle();
    assert!(out.status.success(), "{}", desk.log());
    assert_eq!(stack.count(SUPPORT, QUARANTINE).await, 1);
    assert_eq!(stack.count(SUPPORT, PROCESSED).await, 1);
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let q = desk.quarantine_rows().await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].0.contains("oversized"), "{q:?}");
    // The whole message is still on the server, in the quarantine folder.
    let kept = stack.fetch_all(SUPPORT, QUARANTINE).await;
    assert!(kept[0].len() > 300 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_ca_works_and_without_it_is_refused_clearly() {
    let stack = MailStack::start();
    // IMAPS (implicit TLS) and SMTPS with the CA.
    let mut desk = Desk::new(&stack);
    desk.set("MAILBOX_URL", &stack.imaps_url(SUPPORT))
        .set("OUTBOX_URL", &stack.smtps_url());
    let raws = [mail(ALICE, "SEV 4 over imaps", "tls1@customer.test")];
    run_until_acknowledged(&stack, &desk, &raws, ALICE, 1).await;
    assert_eq!(desk.tickets().len(), 1);
    // STARTTLS on the plain port (the default Desk) with the CA.
    let desk2 = Desk::new(&stack);
    let raws = [mail(BOB, "SEV 4 over starttls", "tls2@customer.test")];
    run_until_acknowledged(&stack, &desk2, &raws, BOB, 1).await;
    // Without the CA: refused at once with a clear error, exit 78, the message untouched.
    for url in [stack.imaps_url(SUPPORT), stack.imap_url(SUPPORT)] {
        let mut desk3 = Desk::new(&stack);
        desk3.set("MAILBOX_URL", &url);
        desk3.env.remove("POSTDESK_TLS_CA_FILE");
        let log = refused_at_first_login(&stack, &desk3, "tls3@customer.test").await;
        assert!(
            log.contains("not trusted") && log.contains("tls.ca_file"),
            "{url}: {log}"
        );
        // Clean up for the next round.
        let desk4 = Desk::new(&stack);
        assert!(desk4.run_until_idle().status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_logs_in_with_a_token_from_a_file_or_a_command_and_a_bad_one_is_refused() {
    let stack = MailStack::start();
    let token_file = stack.dir.join("token");
    // An OAuth agent keeps the file fresh; the worker reads it at every login.
    std::fs::write(&token_file, format!("{OAUTH_TOKEN}\n")).unwrap_or_else(|e| panic!("{e}"));
    let logins = |log: &str| log.matches("method=XOAUTH2").count();
    let mut seen = 0;
    for (i, (key, value)) in [
        ("MAILBOX_TOKEN_FILE", token_file.display().to_string()),
        (
            "MAILBOX_TOKEN_COMMAND",
            format!("printf '%s' {OAUTH_TOKEN}"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut desk = Desk::new(&stack);
        desk.set("MAILBOX_AUTH", "xoauth2").set(key, &value);
        desk.env.remove("POSTDESK_MAILBOX_PASSWORD");
        stack
            .append(
                SUPPORT,
                "INBOX",
                &[mail(
                    ALICE,
                    "SEV 4 over xoauth2",
                    &format!("oauth{i}@customer.test"),
                )],
            )
            .await;
        let out = desk.run_until_idle();
        assert!(out.status.success(), "{key}: {}", desk.log());
        assert_eq!(desk.tickets().len(), 1, "{key}: {}", desk.log());
        assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
        assert_eq!(
            stack
                .wait_for_count(ALICE, "INBOX", i + 1, Duration::from_secs(20))
                .await,
            i + 1
        );
        // Dovecot says how the worker logged in.
        let log = stack.log();
        assert!(logins(&log) > seen, "{key}: no XOAUTH2 login:\n{log}");
        seen = logins(&log);
    }
    // An expired or wrong token: refused at the first login, exit 78, the mail left alone.
    std::fs::write(&token_file, "ya29.expired\n").unwrap_or_else(|e| panic!("{e}"));
    let mut desk = Desk::new(&stack);
    desk.set("MAILBOX_AUTH", "xoauth2")
        .set("MAILBOX_TOKEN_FILE", &token_file.display().to_string());
    desk.env.remove("POSTDESK_MAILBOX_PASSWORD");
    let log = refused_at_first_login(&stack, &desk, "oauth-bad@customer.test").await;
    assert!(log.contains("XOAUTH2"), "{log}");
    assert_eq!(desk.tickets().len(), 0);
}

/// A mail waits in an empty support INBOX; the worker, refused at its first login, exits 78
/// and leaves the mail there. Returns the worker's log.
async fn refused_at_first_login(stack: &MailStack, desk: &Desk, id: &str) -> String {
    stack
        .append(SUPPORT, "INBOX", &[mail(ALICE, "SEV 4 refused", id)])
        .await;
    let out = desk.run_until_idle();
    assert_eq!(out.status.code(), Some(78), "{}", desk.log());
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 1);
    desk.log()
}

/// A trusted local relay without TLS (`outbox.tls = "none"`, no AUTH): the hand-over works on
/// the plain socket too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_local_relay_without_tls_delivers() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack);
    desk.set("OUTBOX_URL", &stack.plain_smtp_url())
        .set("OUTBOX_TLS", "none");
    desk.env.remove("POSTDESK_OUTBOX_PASSWORD");
    let raws = numbered_mails(BOB, 3, "plain-relay");
    run_until_acknowledged(&stack, &desk, &raws, BOB, 3).await;
    for n in 1..=3 {
        let t = desk.ticket(n);
        assert!(t["outbox"][0]["sent_at"].is_string(), "{t}");
        assert_eq!(t["outbox"][0]["attempts"], 1, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idle_or_move_the_worker_polls_and_copies() {
    let stack = MailStack::start_with(StackOptions {
        idle: false,
        moves: false,
    });
    let desk = Desk::new(&stack);
    let worker = desk.spawn(&[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !desk.log().contains("IMAP connected") {
        assert!(Instant::now() < deadline, "{}", desk.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(desk.log().contains("idle=false"), "{}", desk.log());
    stack
        .send(
            ALICE,
            SUPPORT,
            &mail(ALICE, "SEV 4 polled", "poll@customer.test"),
        )
        .await;
    assert_eq!(
        stack
            .wait_for_count(ALICE, "INBOX", 1, Duration::from_secs(30))
            .await,
        1
    );
    assert_eq!(
        stack
            .wait_for_count(SUPPORT, PROCESSED, 1, Duration::from_secs(10))
            .await,
        1
    );
    // COPY + \Deleted + EXPUNGE left nothing behind (once the EXPUNGE is through).
    assert_eq!(stack.wait_for_empty(SUPPORT, "INBOX", WAIT).await, 0);
    assert!(stop(worker).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_marks_the_mail_failed_and_tells_triage() {
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    // other.test has a fixed user list: Postfix answers 550 for this recipient.
    let (t, ack) = failed_acknowledgement(
        &stack,
        &desk,
        "nobody@other.test",
        "SEV 4 unknown user",
        "nobody@other.test.id",
    )
    .await;
    assert!(
        ack["last_error"].as_str().unwrap_or("").contains("55"),
        "{t}"
    );
    let history = t["history"].to_string();
    assert!(history.contains("delivery_failed"), "{history}");
    // Triage: the new-ticket notification and the delivery-failure notice.
    assert_eq!(
        stack
            .wait_for_count(TRIAGE, "INBOX", 2, Duration::from_secs(20))
            .await,
        2
    );
    let subjects: Vec<String> = stack
        .fetch_all(TRIAGE, "INBOX")
        .await
        .iter()
        .map(|m| header(m, "Subject").unwrap_or_default())
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("[#1]") && s.contains("nobody@other.test")),
        "{subjects:?}"
    );
}

/// A customer's mail waits in the support INBOX; the worker takes it and its acknowledgement
/// cannot be delivered. Returns ticket #1 and its failed acknowledgement row.
async fn failed_acknowledgement(
    stack: &MailStack,
    desk: &Desk,
    from: &str,
    subject: &str,
    id: &str,
) -> (serde_json::Value, serde_json::Value) {
    stack
        .append(SUPPORT, "INBOX", &[mail(from, subject, id)])
        .await;
    let out = desk.run_until_idle();
    assert!(out.status.success(), "{}", desk.log());
    let t = desk.ticket(1);
    let ack = t["outbox"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["to"] == from).cloned())
        .unwrap_or_else(|| panic!("{t}"));
    assert!(ack["failed_at"].is_string(), "{t}");
    (t, ack)
}

/// The server reads the whole message, final dot included, and then refuses it (a content
/// filter): the hand-over recorded with the dot is taken back, so the row ends failed, not sent,
/// and a later run does not send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_the_final_dot_takes_the_hand_over_back() {
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    let subject = format!("SEV 4 {REJECT_AFTER_DOT}");
    let (t, ack) =
        failed_acknowledgement(&stack, &desk, ALICE, &subject, "after-dot@customer.test").await;
    assert!(
        ack["sent_at"].is_null(),
        "refused mail recorded as sent: {t}"
    );
    assert!(
        ack["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("refused after the final dot"),
        "{t}"
    );
    assert!(
        stack.log().contains("refused after the final dot"),
        "{}",
        stack.log()
    );
    // Triage hears of it (and of its own new-ticket notification, whose subject the filter
    // refuses the same way); a second run sends nothing more.
    assert_eq!(
        stack
            .wait_for_count(TRIAGE, "INBOX", 2, Duration::from_secs(20))
            .await,
        2
    );
    let out = desk.run_until_idle();
    assert!(out.status.success(), "{}", desk.log());
    let again = desk.ticket(1);
    assert_eq!(again["outbox"], t["outbox"], "{again}");
    assert_eq!(stack.count(ALICE, "INBOX").await, 0);
}

/// Three messages already read by someone and two unseen ones wait when postdesk first meets the
/// mailbox; `mailbox.on_first_start` decides what happens to them, and the log says how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_on_a_full_mailbox_does_what_the_config_says() {
    use futures::TryStreamExt;
    for mode in ["process_unseen", "import_silently", "skip_existing"] {
        let stack = MailStack::start();
        let mut desk = Desk::new(&stack);
        desk.set("MAILBOX_ON_FIRST_START", mode);
        let raws: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let who = customer(i);
                mail(
                    &who,
                    &format!("SEV 4 old {i}"),
                    &format!("old{i}@customer.test"),
                )
            })
            .collect();
        stack.append(SUPPORT, "INBOX", &raws).await;
        // Someone read the first three.
        let mut s = stack
            .imap_session(SUPPORT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.select("INBOX").await.unwrap_or_else(|e| panic!("{e}"));
        let _: Vec<_> = s
            .uid_store("1:3", "+FLAGS (\\Seen)")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = s.logout().await;

        let out = desk.run_until_idle();
        assert!(out.status.success(), "{mode}: {}", desk.log());
        let log = desk.log();
        let line = log
            .lines()
            .find(|l| l.contains("first start on this mailbox"))
            .unwrap_or_else(|| panic!("{mode}: no first-start line:\n{log}"));
        assert!(
            line.contains("messages=5") && line.contains("unseen=2"),
            "{line}"
        );
        let tickets = desk.tickets().len();
        let left = stack.count(SUPPORT, "INBOX").await;
        match mode {
            "process_unseen" => {
                assert!(
                    line.contains("taking=2") && line.contains("leaving=3"),
                    "{line}"
                );
                assert_eq!((tickets, left), (2, 3), "{mode}");
                let n = stack
                    .wait_for_count(&customer(4), "INBOX", 1, Duration::from_secs(20))
                    .await;
                assert_eq!(n, 1, "{mode}");
                // The worker exited with an empty outbox: once Postfix's queue is empty, what
                // was not sent will not arrive.
                stack.wait_for_empty_queue(WAIT);
                assert_eq!(stack.count(&customer(0), "INBOX").await, 0, "{mode}");
            }
            "import_silently" => {
                assert!(
                    line.contains("taking=5") && line.contains("leaving=0"),
                    "{line}"
                );
                assert_eq!((tickets, left), (5, 0), "{mode}");
                // No mail queued, the worker exited, Postfix's queue is empty: nothing was
                // sent and nothing is on its way.
                for n in 1..=5 {
                    let t = desk.ticket(n);
                    assert!(t["outbox"].as_array().is_some_and(|o| o.is_empty()), "{t}");
                    assert!(
                        t["history"].to_string().contains("imported_silently"),
                        "{t}"
                    );
                }
                stack.wait_for_empty_queue(WAIT);
                for i in 0..5 {
                    assert_eq!(
                        stack.count(&customer(i), "INBOX").await,
                        0,
                        "{mode}: mail sent"
                    );
                }
            }
            _ => {
                assert!(
                    line.contains("taking=0") && line.contains("leaving=5"),
                    "{line}"
                );
                assert_eq!((tickets, left), (0, 5), "{mode}");
                // What arrives afterwards is taken.
                stack
                    .append(
                        SUPPORT,
                        "INBOX",
                        &[mail(ALICE, "SEV 4 new", "new@customer.test")],
                    )
                    .await;
                assert!(desk.run_until_idle().status.success());
                assert_eq!(desk.tickets().len(), 1, "{mode}");
                assert_eq!(stack.count(SUPPORT, "INBOX").await, 5, "{mode}");
            }
        }
    }
}

/// Waits until `done` holds for what `desk` shows, or fails with the worker's log.
async fn wait_until(desk: &Desk, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            desk.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The customer's side of a conversation on the real mail stack, through `postdesk run`.
/// Alice writes with Bob on Cc; Bob answers the acknowledgement from a client that stacks
/// "AW: RE:" and drops In-Reply-To; Alice's vacation responder answers the acknowledgement; a
/// stranger copies the subject with the tag; a customer whose mailbox is gone writes, and
/// Postfix's own bounce of our acknowledgement comes back. Every mail is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_threads_replies_and_keeps_auto_replies_bounces_and_strangers_in_place() {
    let stack = MailStack::start();
    let desk = Desk::new(&stack);
    let worker = desk.spawn(&[]);
    wait_until(&desk, "IMAP connected", || {
        desk.log().contains("IMAP connected")
    })
    .await;
    let messages = |n: i64| -> Vec<serde_json::Value> {
        if desk.tickets().len() < n as usize {
            return Vec::new();
        }
        desk.ticket(n)["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };

    // Alice writes, Bob on Cc: one ticket, one acknowledgement to Alice.
    let first = format!(
        "From: Alice <{ALICE}>\r\nTo: {SUPPORT}\r\nCc: Bob <{BOB}>\r\nSubject: SEV 3 printer on fire\r\n\
         Message-ID: <story-1@customer.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n\
         The printer in room 4 is on fire.\r\n"
    );
    stack.send(ALICE, SUPPORT, first.as_bytes()).await;
    assert_eq!(
        stack
            .wait_for_count(ALICE, "INBOX", 1, Duration::from_secs(30))
            .await,
        1,
        "{}",
        desk.log()
    );
    let ack = stack.fetch_all(ALICE, "INBOX").await.remove(0);
    let ack_id = header(&ack, "Message-ID").unwrap_or_default();
    let subject = header(&ack, "Subject").unwrap_or_default();
    assert!(subject.starts_with("[#1]"), "{subject}");

    // Bob answers from a client that stacks prefixes and drops In-Reply-To.
    let bob = format!(
        "From: Bob <{BOB}>\r\nTo: {SUPPORT}\r\nSubject: AW: RE: {subject}\r\n\
         Message-ID: <story-2@customer.test>\r\nDate: Mon, 23 Nov 2026 10:30:00 +0000\r\n\r\n\
         It is the toner; the second printer too.\r\n\r\n\
         Am Mo., 23. Nov. 2026 um 10:01 Uhr schrieb Support <{SUPPORT}>:\r\n\
         > we have received your request and opened ticket [#1].\r\n"
    );
    stack.send(BOB, SUPPORT, bob.as_bytes()).await;
    wait_until(&desk, "Bob's reply on #1", || messages(1).len() == 2).await;

    // Alice's vacation responder answers the acknowledgement.
    let vacation = format!(
        "From: Alice <{ALICE}>\r\nTo: {SUPPORT}\r\nSubject: Automatic reply: {subject}\r\n\
         Message-ID: <story-3@customer.test>\r\nIn-Reply-To: {ack_id}\r\nAuto-Submitted: auto-replied\r\n\
         Date: Mon, 23 Nov 2026 10:31:00 +0000\r\n\r\nI am out of the office until Monday.\r\n"
    );
    stack.send(ALICE, SUPPORT, vacation.as_bytes()).await;
    wait_until(&desk, "the vacation reply on #1", || messages(1).len() == 3).await;

    // A stranger copies the subject with the tag: a ticket of their own, acknowledged.
    let stranger = format!(
        "From: Carol <{CAROL}>\r\nTo: {SUPPORT}\r\nSubject: Re: {subject}\r\n\
         Message-ID: <story-4@other.test>\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\n\r\nI have the same problem.\r\n"
    );
    stack.send(CAROL, SUPPORT, stranger.as_bytes()).await;
    assert_eq!(
        stack
            .wait_for_count(CAROL, "INBOX", 1, Duration::from_secs(30))
            .await,
        1,
        "{}",
        desk.log()
    );

    // A customer whose mailbox is gone writes: our acknowledgement bounces (Postfix's own DSN,
    // to the envelope sender, the support address) and the bounce lands on that ticket.
    let gone = format!(
        "From: {GONE}\r\nTo: {SUPPORT}\r\nSubject: SEV 4 where is my invoice\r\n\
         Message-ID: <story-5@other.test>\r\nDate: Mon, 23 Nov 2026 11:30:00 +0000\r\n\r\nWhere is it?\r\n"
    );
    stack.send(GONE, SUPPORT, gone.as_bytes()).await;
    wait_until(&desk, "the bounce on #3", || {
        desk.tickets().len() >= 3
            && desk.ticket(3)["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|e| e["kind"] == "bounce"))
    })
    .await;
    // Everything taken and sent, nothing in flight: the counts below cannot change any more.
    assert_eq!(
        stack
            .wait_for_empty(SUPPORT, "INBOX", Duration::from_secs(30))
            .await,
        0,
        "{}",
        desk.log()
    );
    let out = stop(worker);
    assert!(out.status.success(), "{}", desk.log());
    stack.wait_for_empty_queue(Duration::from_secs(30));

    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 3, "{tickets:?}");
    let one = desk.ticket(1);
    let kinds: Vec<(String, String)> = one["messages"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap_or("").to_string(),
                m["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let pair = |a: &str, k: &str| (a.to_string(), k.to_string());
    assert_eq!(
        kinds,
        vec![
            pair(ALICE, "customer"),
            pair(BOB, "customer"),
            pair(ALICE, "automatic")
        ]
    );
    assert_eq!(
        one["messages"][1]["text"],
        "It is the toner; the second printer too."
    );
    assert_eq!(
        one["ticket"]["status"], "in_triage",
        "SPEC: a customer reply leaves in_triage"
    );
    let templates_of = |t: &serde_json::Value| -> Vec<String> {
        t["outbox"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["template"].as_str().unwrap_or(""),
                    o["to"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(
        templates_of(&one),
        vec![
            format!("acknowledgement {ALICE}"),
            format!("engineer_notification {TRIAGE}"),
            format!("engineer_notification {TRIAGE}"),
        ],
        "no second acknowledgement; triage told of the ticket and of Bob's reply, not of the vacation reply"
    );
    let history = one["history"].as_array().cloned().unwrap_or_default();
    assert!(
        history
            .iter()
            .any(|e| e["kind"] == "stranger" && e["related_ticket"] == 2),
        "{one}"
    );
    assert!(
        !one["participants"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .any(|p| p["address"] == CAROL)
    );

    let two = desk.ticket(2);
    assert_eq!(two["ticket"]["requester"], CAROL);
    let three = desk.ticket(3);
    assert_eq!(three["ticket"]["requester_bounced"], true, "{three}");
    let bounce = three["history"].as_array().cloned().unwrap_or_default();
    let bounce = bounce
        .iter()
        .find(|e| e["kind"] == "bounce")
        .cloned()
        .unwrap_or_default();
    assert_eq!(bounce["to"], GONE);
    assert!(
        bounce["reason"].as_str().unwrap_or("").contains("5.1.1"),
        "{bounce}"
    );

    // Count the mails: one acknowledgement each to Alice, Carol and the gone address; nothing to
    // Bob, nothing for the vacation reply, nothing for the bounce.
    assert_eq!(stack.count(ALICE, "INBOX").await, 1);
    assert_eq!(stack.count(BOB, "INBOX").await, 0);
    assert_eq!(stack.count(CAROL, "INBOX").await, 1);
    let carol = stack.fetch_all(CAROL, "INBOX").await.remove(0);
    assert!(
        header(&carol, "Subject")
            .unwrap_or_default()
            .starts_with("[#2]")
    );
    let acknowledgements: usize = tickets
        .iter()
        .map(|t| {
            templates_of(&desk.ticket(t["number"].as_i64().unwrap_or(0)))
                .iter()
                .filter(|m| m.starts_with("acknowledgement "))
                .count()
        })
        .sum();
    assert_eq!(
        acknowledgements, 3,
        "three acknowledgements, nothing else to customers"
    );
    assert_eq!(
        templates_of(&three),
        vec![
            format!("acknowledgement {GONE}"),
            format!("engineer_notification {TRIAGE}"),
            format!("delivery_failure {TRIAGE}"),
        ],
        "triage hears that the requester's address bounces"
    );
}

/// The whole message as text, with quoted-printable soft breaks and base64 text parts decoded
/// well enough to search it: mail-parser reads it.
fn readable(raw: &[u8]) -> String {
    let Some(m) = mail_parser::MessageParser::default().parse(raw) else {
        return String::new();
    };
    let mut s = String::new();
    for i in 0..m.text_body_count() {
        s.push_str(&m.body_text(i).unwrap_or_default());
    }
    for i in 0..m.html_body_count() {
        s.push_str(&m.body_html(i).unwrap_or_default());
    }
    s
}

fn attachment_names(raw: &[u8]) -> Vec<String> {
    mail_parser::MessageParser::default()
        .parse(raw)
        .map(|m| {
            m.attachments()
                .filter_map(|a| a.attachment_name().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Engineers answer from their own mail client, on the real mail stack through `postdesk run`
/// with an account manager configured. Alice writes with Bob on Cc; triage and the account
/// manager are told; the engineer answers the notification over SMTP (`Re:`, In-Reply-To,
/// quoted text below) with `#severity 4` on top and a PDF attached: Alice and Bob get the relay
/// from the support address without the engineer's address, the quote or the command line, with
/// the PDF. A `#note` reaches the account manager and never the customers; `#sevrity 9` is
/// rejected back to the engineer and nothing reaches the customers; a staff From forged from
/// outside (no Authentication-Results of our receiving host) is not obeyed. Every inbox is
/// counted at the end.
///
/// The harness's Postfix runs no DKIM milter, so the engineer's genuine mail carries the
/// `Authentication-Results` header a receiving host (`staff.authserv_id = mx.example.test`) would
/// add; the forged one carries none of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engineers_answer_by_mail_with_relays_notes_rejections_and_forgeries_refused() {
    let stack = MailStack::start();
    let mut desk = Desk::new(&stack);
    desk.set("STAFF_DOMAINS", "example.test")
        .set("STAFF_REQUIRE_AUTHENTICATED", "true")
        .set("STAFF_AUTHSERV_ID", "mx.example.test")
        .set("STAFF_DKIM_RESOLVER", "off");
    let config = desk.dir.path().join("postdesk.toml");
    std::fs::write(
        &config,
        format!(
            "[[customers]]\ndomain = \"customer.test\"\ncompany = \"Customer Inc\"\naccount_manager = \"{MANAGER}\"\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = config.display().to_string();
    let worker = desk.spawn(&["--config", &config]);
    wait_until(&desk, "IMAP connected", || {
        desk.log().contains("IMAP connected")
    })
    .await;

    // Alice writes, Bob on Cc: the acknowledgement to Alice; triage and the account manager told.
    let first = format!(
        "From: Alice <{ALICE}>\r\nTo: {SUPPORT}\r\nCc: Bob <{BOB}>\r\nSubject: SEV 3 printer on fire\r\n\
         Message-ID: <eng-story-1@customer.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n\
         The printer in room 4 is on fire.\r\n"
    );
    stack.send(ALICE, SUPPORT, first.as_bytes()).await;
    for (who, n) in [(ALICE, 1), (TRIAGE, 1), (MANAGER, 1)] {
        assert_eq!(
            stack.wait_for_count(who, "INBOX", n, WAIT).await,
            n,
            "{who}: {}",
            desk.log()
        );
    }
    let notification = stack.fetch_all(TRIAGE, "INBOX").await.remove(0);
    let notification_id = header(&notification, "Message-ID").unwrap_or_default();
    let notification_subject = header(&notification, "Subject").unwrap_or_default();
    assert!(
        notification_subject.contains("[#1]"),
        "{notification_subject}"
    );
    assert_eq!(header(&notification, "Reply-To").as_deref(), Some(SUPPORT));
    assert!(readable(&notification).contains("The printer in room 4 is on fire."));
    let manager = stack.fetch_all(MANAGER, "INBOX").await.remove(0);
    assert!(
        header(&manager, "Subject")
            .unwrap_or_default()
            .contains("[#1]")
    );

    // The engineer answers the notification from a mail client: command on top, text, a
    // signature, the quote below, a PDF attached.
    let pdf = "%PDF-1.4 steps to replace the toner";
    let reply = format!(
        "From: Sam Engineer <{ENGINEER}>\r\nTo: Support <{SUPPORT}>\r\nSubject: Re: {notification_subject}\r\n\
         Message-ID: <eng-story-2@example.test>\r\nIn-Reply-To: {notification_id}\r\nReferences: {notification_id}\r\n\
         Authentication-Results: mx.example.test; dkim=pass header.d=example.test header.s=s1\r\n\
         Date: Mon, 23 Nov 2026 10:20:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         #severity 4\r\n\r\nHi Alice,\r\n\r\nplease replace the toner; the steps are attached.\r\n\r\n\
         -- \r\nSam Engineer, {ENGINEER}\r\n\r\n\
         On Mon, 23 Nov 2026 at 10:01, Support <{SUPPORT}> wrote:\r\n\
         > The printer in room 4 is on fire.\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"toner.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"toner.pdf\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
         {pdf}\r\n--b1--\r\n"
    );
    stack.send(ENGINEER, SUPPORT, reply.as_bytes()).await;
    for (who, n) in [(ALICE, 2), (BOB, 1)] {
        assert_eq!(
            stack.wait_for_count(who, "INBOX", n, WAIT).await,
            n,
            "{who}: {}",
            desk.log()
        );
    }
    let relays = [
        stack.fetch_all(ALICE, "INBOX").await.remove(1),
        stack.fetch_all(BOB, "INBOX").await.remove(0),
    ];
    for relay in &relays {
        let raw = String::from_utf8_lossy(relay);
        let text = readable(relay);
        assert!(
            header(relay, "From").unwrap_or_default().contains(SUPPORT),
            "from the support address: {raw}"
        );
        assert!(
            !raw.contains(ENGINEER),
            "the engineer's address leaked:\n{raw}"
        );
        assert!(text.contains("please replace the toner"), "{text}");
        assert!(
            !text.contains("#severity"),
            "the command line was relayed:\n{text}"
        );
        assert!(
            !text.contains("room 4 is on fire"),
            "the quote was relayed:\n{text}"
        );
        assert!(
            text.contains("Sam Engineer"),
            "the engineer's name is shown: {text}"
        );
        assert_eq!(attachment_names(relay), vec!["toner.pdf".to_string()]);
        assert_eq!(
            header(relay, "In-Reply-To").as_deref(),
            Some("<eng-story-1@customer.test>"),
            "threaded into the customer's conversation"
        );
        assert!(
            header(relay, "Subject")
                .unwrap_or_default()
                .contains("[#1]")
        );
    }
    let one = desk.ticket(1);
    assert_eq!(one["ticket"]["assigned_severity"], 4, "{one}");
    assert_eq!(one["ticket"]["requested_severity"], 3, "{one}");
    assert_eq!(one["ticket"]["status"], "customer_pending", "{one}");
    assert!(one["ticket"]["first_response_at"].is_string(), "{one}");

    // An internal note: the account manager gets it, the customers never do.
    let note = format!(
        "From: Sam Engineer <{ENGINEER}>\r\nTo: {SUPPORT}\r\nSubject: Re: {notification_subject}\r\n\
         Message-ID: <eng-story-3@example.test>\r\nIn-Reply-To: {notification_id}\r\n\
         Authentication-Results: mx.example.test; dkim=pass header.d=example.test header.s=s1\r\n\
         Date: Mon, 23 Nov 2026 10:25:00 +0000\r\n\r\n\
         #note\r\nThey still run the 2019 firmware.\r\n"
    );
    stack.send(ENGINEER, SUPPORT, note.as_bytes()).await;
    assert_eq!(
        stack.wait_for_count(MANAGER, "INBOX", 2, WAIT).await,
        2,
        "{}",
        desk.log()
    );
    let noted = stack.fetch_all(MANAGER, "INBOX").await.remove(1);
    assert!(readable(&noted).contains("2019 firmware"));

    // A malformed command: rejected back to the engineer, nothing relayed or changed.
    let typo = format!(
        "From: Sam Engineer <{ENGINEER}>\r\nTo: {SUPPORT}\r\nSubject: Re: {notification_subject}\r\n\
         Message-ID: <eng-story-4@example.test>\r\nIn-Reply-To: {notification_id}\r\n\
         Authentication-Results: mx.example.test; dkim=pass header.d=example.test header.s=s1\r\n\
         Date: Mon, 23 Nov 2026 10:30:00 +0000\r\n\r\n\
         #sevrity 9\r\nHi Alice, one more thing.\r\n"
    );
    stack.send(ENGINEER, SUPPORT, typo.as_bytes()).await;
    assert_eq!(
        stack.wait_for_count(ENGINEER, "INBOX", 1, WAIT).await,
        1,
        "{}",
        desk.log()
    );
    let rejection = stack.fetch_all(ENGINEER, "INBOX").await.remove(0);
    let why = readable(&rejection);
    assert!(
        why.contains("#sevrity 9") && why.contains("#severity"),
        "{why}"
    );

    // A staff From forged from outside: no Authentication-Results of our host. Not obeyed: the
    // ticket stays as it is, and the mail opens a ticket of its own, which says why.
    let forged = format!(
        "From: Sam Engineer <{ENGINEER}>\r\nTo: {SUPPORT}\r\nSubject: Re: {notification_subject}\r\n\
         Message-ID: <eng-story-5@other.test>\r\nIn-Reply-To: {notification_id}\r\n\
         Authentication-Results: mx.other.test; dkim=pass header.d=example.test\r\n\
         Date: Mon, 23 Nov 2026 10:35:00 +0000\r\n\r\n\
         #status closed\r\nClosing this, send your password to carol@other.test.\r\n"
    );
    stack.send(CAROL, SUPPORT, forged.as_bytes()).await;
    wait_until(&desk, "the forged mail's ticket", || {
        desk.tickets().len() == 2
    })
    .await;
    assert_eq!(
        stack.wait_for_empty(SUPPORT, "INBOX", WAIT).await,
        0,
        "{}",
        desk.log()
    );
    let out = stop(worker);
    assert!(out.status.success(), "{}", desk.log());
    stack.wait_for_empty_queue(WAIT);

    let one = desk.ticket(1);
    assert_eq!(
        one["ticket"]["status"], "customer_pending",
        "not closed by the forgery: {one}"
    );
    assert_eq!(
        one["ticket"]["assigned_severity"], 4,
        "not changed by the typo: {one}"
    );
    let two = desk.ticket(2);
    let history = two["history"].as_array().cloned().unwrap_or_default();
    assert!(
        history.iter().any(|e| e["kind"] == "unauthenticated"
            && e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("not authenticated")),
        "{two}"
    );

    // Every inbox: Alice the acknowledgement and the relay; Bob the relay; the account manager
    // the new ticket and the note; the engineer the rejection and the acknowledgement of the
    // forged mail's ticket (it went to the address it claimed); triage the two new tickets and
    // the note (nobody but the account manager would have seen it); Carol nothing.
    for (who, n) in [
        (ALICE, 2),
        (BOB, 1),
        (MANAGER, 2),
        (ENGINEER, 2),
        (TRIAGE, 3),
        (CAROL, 0),
    ] {
        assert_eq!(stack.count(who, "INBOX").await, n, "{who}");
    }
    for raw in stack
        .fetch_all(ALICE, "INBOX")
        .await
        .iter()
        .chain(&stack.fetch_all(BOB, "INBOX").await)
    {
        let text = readable(raw);
        assert!(
            !text.contains("2019 firmware"),
            "the note reached a customer"
        );
        assert!(
            !text.contains("one more thing"),
            "the rejected mail reached a customer"
        );
        assert!(!text.contains("password"), "the forgery reached a customer");
    }
}

/// A TCP proxy in front of Postfix that, once, passes a whole message on (final dot
/// included), lets Postfix take it, and then cuts the connection instead of passing on
/// Postfix's reply: the sender cannot know the mail arrived.
struct DotCutter {
    port: u16,
}

impl DotCutter {
    async fn start(upstream: u16) -> DotCutter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                tokio::spawn(cut_after_dot(client, server, done.clone()));
            }
        });
        DotCutter { port }
    }
}

async fn cut_after_dot(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cbuf, mut sbuf) = (vec![0u8; 65536], vec![0u8; 65536]);
    let mut tail: Vec<u8> = Vec::new();
    let (mut in_data, mut cutting) = (false, false);
    loop {
        tokio::select! {
            n = client.read(&mut cbuf) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                let chunk = &cbuf[..n];
                if !in_data && chunk.eq_ignore_ascii_case(b"DATA\r\n") {
                    in_data = true;
                    tail.clear();
                } else if in_data {
                    tail.extend_from_slice(chunk);
                    if tail.windows(5).any(|w| w == b"\r\n.\r\n") {
                        in_data = false;
                        cutting = !done.swap(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    let keep = tail.len().saturating_sub(4);
                    tail.drain(..keep);
                }
                if server.write_all(chunk).await.is_err() {
                    return;
                }
            }
            n = server.read(&mut sbuf) => {
                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                // Postfix's answer to the final dot: dropped with the connection.
                if cutting {
                    return;
                }
                if client.write_all(&sbuf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The connection is lost after the final dot, before the server's reply: postdesk cannot
/// know whether the mail arrived, so it sends it again with the same Message-ID (RFC 5321
/// §4.5.3.2.6, RFC 1047): the customer may see it twice, never zero times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_after_the_final_dot_is_sent_again_with_the_same_message_id() {
    let stack = MailStack::start();
    let cutter = DotCutter::start(stack.smtp_port).await;
    let mut desk = Desk::new(&stack);
    desk.set("OUTBOX_URL", &format!("smtp://127.0.0.1:{}", cutter.port))
        .set("OUTBOX_TLS", "none");
    for k in ["POSTDESK_OUTBOX_PASSWORD", "POSTDESK_TRIAGE_OWNERS"] {
        desk.env.remove(k);
    }
    let worker = desk.spawn(&[]);
    stack
        .append(
            SUPPORT,
            "INBOX",
            &[mail(BOB, "SEV 4 cut off", "cut@customer.test")],
        )
        .await;
    assert_eq!(desk.wait_for_tickets(1, WAIT).await, 1, "{}", desk.log());
    let t = desk.wait_for_ticket(
        1,
        "the acknowledgement sent on a second attempt",
        WAIT,
        |t| t["outbox"][0]["sent_at"].is_string(),
    );
    let out = stop(worker);
    assert!(out.status.success(), "{}", desk.log());
    assert_eq!(t["outbox"][0]["attempts"].as_i64(), Some(2), "{t}");
    let id = t["outbox"][0]["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    stack.wait_for_empty_queue(WAIT);
    assert_eq!(stack.accepted(&id), 2, "Postfix took it twice");
    let n = stack.wait_for_count(BOB, "INBOX", 2, WAIT).await;
    assert_eq!(n, 2, "{}", desk.log());
    let ids = message_ids(&stack.fetch_all(BOB, "INBOX").await);
    assert!(
        ids.iter().all(|m| m.trim_matches(['<', '>']) == id),
        "{ids:?} vs {id}"
    );
    assert!(
        desk.log().contains("sent again, same Message-ID"),
        "{}",
        desk.log()
    );
}

/// Two workers on one PostgreSQL and one mailbox: one reads it, the other stands by; the
/// reader is SIGKILLed with work in hand and the other takes the mailbox (and the dead one's
/// outbox rows) over at once. Every mail makes one ticket and one acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_postgres_one_reads_the_mailbox_and_the_other_takes_over() {
    let Ok(admin) = std::env::var("POSTDESK_TEST_POSTGRES_URL") else {
        panic!("POSTDESK_TEST_POSTGRES_URL is not set: scripts/test.sh provides one");
    };
    let name = format!("pd_live_failover_{}", std::process::id());
    let url = postdesk::store::postgres::create_database(&admin, &name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stack = MailStack::start();
    let journals = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let journal = journals.path().join("outbox.journal").display().to_string();
    let (mut a, mut b) = (Desk::new(&stack), Desk::new(&stack));
    for d in [&mut a, &mut b] {
        d.set("DATABASE_URL", &url).set("OUTBOX_JOURNAL", &journal);
        d.env.remove("POSTDESK_TRIAGE_OWNERS");
    }
    let mut wa = a.spawn(&[]);
    wait_until(&a, "worker a reads the mailbox", || {
        a.log().contains("this worker reads the mailbox")
    })
    .await;
    let wb = b.spawn(&[]);
    wait_until(&b, "worker b stands by", || b.log().contains("standing by")).await;
    const CUSTOMERS: usize = 10;
    const EACH: usize = 20;
    let batch = |round: usize| -> Vec<Vec<u8>> {
        (0..CUSTOMERS)
            .flat_map(|c| {
                (0..EACH / 2).map(move |i| {
                    mail(
                        &customer(c),
                        &format!("SEV 4 failover {round}-{i}"),
                        &format!("f{round}-{i}-{c}@customer.test"),
                    )
                })
            })
            .collect()
    };
    stack.append(SUPPORT, "INBOX", &batch(0)).await;
    let half = CUSTOMERS * EACH / 2;
    assert_eq!(
        a.wait_for_tickets(half, Duration::from_secs(60)).await,
        half,
        "{}",
        a.log()
    );
    // Killed with acknowledgements still going out.
    let _ = wa.child().kill();
    let _ = wa.child().wait();
    wait_until(&b, "worker b takes the mailbox over", || {
        b.log().contains("took the mailbox over")
    })
    .await;
    stack.append(SUPPORT, "INBOX", &batch(1)).await;
    assert_eq!(
        b.wait_for_tickets(2 * half, Duration::from_secs(60)).await,
        2 * half,
        "{}",
        b.log()
    );
    for c in 0..CUSTOMERS {
        let n = stack
            .wait_for_count(&customer(c), "INBOX", EACH, Duration::from_secs(60))
            .await;
        assert_eq!(n, EACH, "customer {c}:\n{}\n{}", a.log(), b.log());
    }
    let out = stop(wb);
    assert!(out.status.success(), "{}", b.log());
    stack.wait_for_empty_queue(Duration::from_secs(60));
    let mut seen = HashSet::new();
    for c in 0..CUSTOMERS {
        let msgs = stack.fetch_all(&customer(c), "INBOX").await;
        assert_eq!(msgs.len(), EACH, "customer {c}");
        for id in message_ids(&msgs) {
            assert!(seen.insert(id.clone()), "duplicate acknowledgement {id}");
        }
    }
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// Scale-out through the binary: three `postdesk run` workers on one PostgreSQL and one
/// mailbox, 1,000 customer mails; a random worker is SIGKILLed at random moments and started
/// again, again and again, and PostgreSQL itself is stopped (immediate: connections break) and
/// started mid-run. Exactly 1,000 tickets and exactly one acknowledgement per mail reach the
/// customers; the mailbox reader fails over each time its worker dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_through_sigkills_and_a_database_restart_make_one_ticket_and_ack_per_mail() {
    const CUSTOMERS: usize = 100;
    const EACH: usize = 10;
    const KILLS: usize = 8;
    let pg = pg::PrivatePostgres::start();
    let url = postdesk::store::postgres::create_database(&pg.url(), "postdesk_scale")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stack = MailStack::start();
    let journal = pg.dir().join("outbox.journal").display().to_string();
    let desks: Vec<Desk> = (0..3)
        .map(|_| {
            let mut d = Desk::new(&stack);
            d.set("DATABASE_URL", &url).set("OUTBOX_JOURNAL", &journal);
            d.env.remove("POSTDESK_TRIAGE_OWNERS");
            d
        })
        .collect();
    let mut workers: Vec<Worker> = desks.iter().map(|d| d.spawn(&[])).collect();
    let mut raws = Vec::new();
    for round in 0..EACH {
        for c in 0..CUSTOMERS {
            raws.push(mail(
                &customer(c),
                &format!("SEV 4 scale {round}"),
                &format!("s{round}-{c}@customer.test"),
            ));
        }
    }
    stack.append(SUPPORT, "INBOX", &raws).await;
    let logs = || {
        desks
            .iter()
            .enumerate()
            .map(|(i, d)| format!("--- worker {i}\n{}", d.log()))
            .collect::<String>()
    };
    let mut seed = 0x2545_f491_u64 ^ u64::from(std::process::id());
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    for kill in 0..KILLS {
        // Each worker lives 200-1200 ms of the run before one of them dies.
        std::thread::sleep(Duration::from_millis(200 + next() % 1000));
        // Every third kill is the mailbox reader's (the one holding the lease), so the reader
        // fails over whatever the random choices; the others are any worker.
        let leader = if kill % 3 == 1 {
            reader_pid(&url).await
        } else {
            None
        };
        let i = leader
            .and_then(|pid| workers.iter_mut().position(|w| w.child().id() == pid))
            .unwrap_or((next() % 3) as usize);
        let done = desks[0].tickets().len();
        eprintln!("scale test: kill {kill} of worker {i} with {done} tickets made");
        let _ = workers[i].child().kill();
        let _ = workers[i].child().wait();
        workers[i] = desks[i].spawn(&[]);
        if kill == KILLS / 2 {
            pg.stop();
            std::thread::sleep(Duration::from_millis(300 + next() % 700));
            pg.start_again();
        }
    }
    eprintln!(
        "scale test: {KILLS} SIGKILLs and a database restart in {:?}",
        started.elapsed()
    );
    let tickets = desks[0]
        .wait_for_tickets(CUSTOMERS * EACH, Duration::from_secs(180))
        .await;
    assert_eq!(tickets, CUSTOMERS * EACH, "{}", logs());
    for c in 0..CUSTOMERS {
        let n = stack
            .wait_for_count(&customer(c), "INBOX", EACH, Duration::from_secs(120))
            .await;
        assert_eq!(n, EACH, "customer {c}:\n{}", logs());
    }
    for w in workers {
        let out = stop(w);
        assert!(out.status.success(), "{}", logs());
    }
    stack.wait_for_empty_queue(Duration::from_secs(60));
    let mut seen = HashSet::new();
    for c in 0..CUSTOMERS {
        let msgs = stack.fetch_all(&customer(c), "INBOX").await;
        assert_eq!(msgs.len(), EACH, "customer {c}:\n{}", logs());
        for id in message_ids(&msgs) {
            assert!(seen.insert(id.clone()), "duplicate acknowledgement {id}");
        }
    }
    assert_eq!(stack.count(SUPPORT, "INBOX").await, 0);
    let all = logs();
    eprintln!(
        "scale test: mailbox taken {} times ({} at once from a dead worker), outbox rows of dead workers settled {} times",
        all.matches("this worker reads the mailbox").count(),
        all.matches("took the mailbox over").count(),
        all.matches("took over the outbox rows").count(),
    );
    assert!(
        all.matches("this worker reads the mailbox").count() >= 2,
        "the mailbox reader never failed over:\n{all}"
    );
}

/// The process id of the worker that holds the mailbox lease (its owner name is
/// `host-pid-random`), if any.
async fn reader_pid(url: &str) -> Option<u32> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let owner: Option<(String,)> = sqlx::query_as("SELECT owner FROM source_leases LIMIT 1")
        .fetch_optional(&mut conn)
        .await
        .ok()?;
    owner?.0.rsplit('-').nth(1)?.parse().ok()
}
