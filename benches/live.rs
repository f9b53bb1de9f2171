//! End-to-end figures against the real mail stack (Dovecot + Postfix, started by the test
//! harness): `cargo bench --bench live`.
//!
//! 1. Latency: 100 customers each send one mail by SMTP, one at a time, to a running
//!    `postdesk run` in IDLE; measured from Postfix's 250 for the customer's DATA to the
//!    acknowledgement being visible in that customer's IMAP INBOX.
//! 2. Backlog: 10,000 messages waiting in support@'s INBOX; `postdesk run` is started and the
//!    clock runs until every acknowledgement has been delivered to the customers' mailboxes.
//!    Peak RSS is the worker's (getrusage of the child).
//!
//! 3. Engineer relay latency: `postdesk run` in IDLE with `triage@` as triage owner and
//!    `example.test` as staff domain; N customers open a ticket each (one burst), then, one at a
//!    time, `engineer@` answers ticket n's `engineer_notification` (found in triage@'s INBOX by
//!    its `X-Postdesk-Ticket` header; `Re:` its subject, `In-Reply-To` its Message-ID); measured
//!    from Postfix's 250 for the engineer's DATA to the relay being in the customer's mailbox
//!    (the second message there).
//!
//! `POSTDESK_BENCH_WORKERS` (e.g. `1,2,3`, or `1,2,3,3,2,1` to interleave repeated runs;
//! default `1`) runs the backlog once per count listed with that many `postdesk run
//! --exit-when-idle` workers on one database (more than one needs PostgreSQL), and prints the
//! CPU seconds per message spent by the workers, PostgreSQL, Postfix and Dovecot (from /proc,
//! children included), and each worker's CPU seconds, so the scaling on bigger machines can be
//! estimated. The throughput is counted to the last acknowledgement in a customer's mailbox,
//! not to the workers' exit: a standing-by worker exits up to 3 s later, at its next look at the
//! mailbox lease.
//!
//! `POSTDESK_BENCH_LATENCY_N`, `POSTDESK_BENCH_BACKLOG_N` and `POSTDESK_BENCH_RELAY_N` change
//! the counts (a count of 0 skips that part); `POSTDESK_BENCH_ONLY` runs only the parts named in
//! it, comma-separated: `latency`, `backlog`, `relay` (e.g. `POSTDESK_BENCH_ONLY=relay`);
//! `POSTDESK_BENCH_DATABASE` (a postgres:// URL of a server where a database may be created)
//! runs the worker on PostgreSQL instead of SQLite.

#[path = "../tests/common/mailstack.rs"]
mod mailstack;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailstack::{ENGINEER, MailStack, PASSWORD, SUPPORT, TRIAGE, customer, message_id};

const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

fn mail(from: &str, subject: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nthe export job fails every night since the upgrade ({id}).\r\nLogs attached below.\r\n\r\n-- \r\nCustomer\r\n"
    )
    .into_bytes()
}

fn worker(stack: &MailStack, dir: &std::path::Path, database: &str, extra: &[&str]) -> Child {
    worker_with_env(stack, dir, database, extra, &[])
}

fn worker_with_env(
    stack: &MailStack,
    dir: &std::path::Path,
    database: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Child {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    let log = std::fs::File::create(dir.join("worker.log")).unwrap_or_else(|e| panic!("{e}"));
    Command::new(BIN)
        .args(&args)
        .current_dir(dir)
        .env_remove("POSTDESK_CONFIG")
        .env("POSTDESK_DATABASE_URL", database)
        .env("POSTDESK_MAILBOX_URL", stack.imap_url(SUPPORT))
        .env("POSTDESK_MAILBOX_PASSWORD", PASSWORD)
        .env(
            "POSTDESK_OUTBOX_URL",
            match std::env::var("POSTDESK_BENCH_FILE_OUTBOX") {
                // Diagnosis: the IMAP side alone, acknowledgements written as files.
                Ok(_) => format!("file:{}", dir.join("outbox").display()),
                Err(_) => stack.submission_url(),
            },
        )
        .env("POSTDESK_OUTBOX_PASSWORD", PASSWORD)
        .env("POSTDESK_TLS_CA_FILE", &stack.ca_file)
        .env("POSTDESK_SUPPORT_ADDRESSES", SUPPORT)
        .env(
            "POSTDESK_TEMPLATES_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"),
        )
        .env("POSTDESK_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Messages delivered to a Dovecot maildir so far (new/ and cur/).
fn delivered(stack: &MailStack, user: &str) -> usize {
    let root = stack.maildir(user);
    ["new", "cur"]
        .iter()
        .map(|d| {
            std::fs::read_dir(root.join(d))
                .map(|rd| rd.count())
                .unwrap_or(0)
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn database(dir: &std::path::Path, tag: &str) -> String {
    match std::env::var("POSTDESK_BENCH_DATABASE") {
        Ok(base) if !base.is_empty() => {
            // One database per run: a worker count may be listed more than once.
            static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("postdesk_bench_{tag}_{}_{run}", std::process::id());
            let out = Command::new("psql")
                .args([&base, "-q", "-c", &format!("CREATE DATABASE {name}")])
                .output()
                .unwrap_or_else(|e| panic!("psql: {e}"));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            format!("{}/{name}", base.trim_end_matches('/'))
        }
        _ => format!("sqlite:{}", dir.join("postdesk.db").display()),
    }
}

/// Waits until the worker is connected and in IDLE: it creates the processed folder when it
/// connects; one warm-up mail has to be processed.
async fn warm_up(stack: &MailStack) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.count(SUPPORT, "postdesk.processed").await == 0 {
        if Instant::now() > deadline {
            panic!("worker not ready");
        }
        stack
            .send(
                SUPPORT,
                SUPPORT,
                &mail("warmup@customer.test", "warm up", "warmup@bench"),
            )
            .await;
        stack
            .wait_for_count(SUPPORT, "postdesk.processed", 1, Duration::from_secs(5))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn latency(n: usize) {
    if n == 0 {
        return;
    }
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = database(dir.path(), "latency");
    let mut child = worker(&stack, dir.path(), &db, &[]);
    // Connected and in IDLE before the first customer writes.
    warm_up(&stack).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let who = customer(i);
        let accepted = stack
            .send(
                &who,
                SUPPORT,
                &mail(
                    &who,
                    &format!("SEV 4 latency {i}"),
                    &format!("lat{i}@bench"),
                ),
            )
            .await;
        let deadline = accepted + Duration::from_secs(30);
        loop {
            if delivered(&stack, &who) >= 1 {
                samples.push(accepted.elapsed());
                break;
            }
            assert!(Instant::now() < deadline, "no acknowledgement for {who}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    println!(
        "latency (SMTP 250 -> acknowledgement in the customer's mailbox), {n} messages one at a time, {}:\n  p50={:.0}ms p95={:.0}ms max={:.0}ms mean={:.0}ms",
        if db.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
        percentile(&samples, 0.50).as_secs_f64() * 1000.0,
        percentile(&samples, 0.95).as_secs_f64() * 1000.0,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        mean.as_secs_f64() * 1000.0,
    );
}

/// CPU seconds (user + system, with reaped children) of each process on this machine, with who
/// it belongs to: `postgres`, `postfix` (its `master` and the programs it starts), `dovecot`,
/// `postdesk`. Per process, so that one that exits between two readings (the mail stack of an
/// earlier run shutting down) is not taken off the CPU of this one.
fn cpu_by_process() -> std::collections::HashMap<i64, (&'static str, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let mut comm_of: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    let mut stats: Vec<(i64, i64, String, f64)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ... utime(14) stime(15) cutime(16) cstime(17)
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let num = |i: usize| {
            rest.get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let ppid = rest.get(1).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let cpu = (num(11) + num(12) + num(13) + num(14)) / tick;
        comm_of.insert(pid, comm.clone());
        stats.push((pid, ppid, comm, cpu));
    }
    let mut out = std::collections::HashMap::new();
    for (pid, ppid, comm, cpu) in stats {
        let parent = comm_of.get(&ppid).map(String::as_str).unwrap_or("");
        let owner = match comm.as_str() {
            c if c.starts_with("postgres") => "postgres",
            "postdesk" => "postdesk",
            "master" | "smtpd" | "cleanup" | "qmgr" | "trivial-rewrite" | "smtp" | "pickup"
            | "anvil" | "tlsmgr" | "proxymap" | "bounce" => "postfix",
            "lmtp" if parent == "master" => "postfix",
            "dovecot" | "imap" | "imap-login" | "lmtp" | "auth" | "config" | "log" | "stats" => {
                "dovecot"
            }
            _ => continue,
        };
        out.insert(pid, (owner, cpu));
    }
    out
}

/// CPU seconds by owner spent between two readings of [`cpu_by_process`].
fn cpu_used(
    before: &std::collections::HashMap<i64, (&'static str, f64)>,
    after: &std::collections::HashMap<i64, (&'static str, f64)>,
) -> std::collections::BTreeMap<&'static str, f64> {
    let mut out = std::collections::BTreeMap::new();
    for (pid, (owner, cpu)) in after {
        let earlier = before
            .get(pid)
            .filter(|(o, _)| o == owner)
            .map_or(0.0, |(_, c)| *c);
        *out.entry(*owner).or_insert(0.0) += (cpu - earlier).max(0.0);
    }
    out
}

/// CPU seconds (user + system) of this process's reaped children: the workers it waited for.
fn children_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

async fn backlog(n: usize, workers: usize) {
    let stack = MailStack::start();
    let dirs: Vec<tempfile::TempDir> = (0..workers)
        .map(|_| tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let db = database(dirs[0].path(), &format!("backlog{workers}"));
    assert!(
        workers == 1 || db.starts_with("postgres"),
        "POSTDESK_BENCH_WORKERS > 1 needs POSTDESK_BENCH_DATABASE (PostgreSQL)"
    );
    let journal = dirs[0].path().join("outbox.journal").display().to_string();
    let customers = n.div_ceil(10).max(1);
    let raws: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let who = customer(i % customers);
            mail(&who, &format!("SEV 4 backlog {i}"), &format!("bl{i}@bench"))
        })
        .collect();
    let t = Instant::now();
    stack.append(SUPPORT, "INBOX", &raws).await;
    println!(
        "backlog: {n} messages appended to INBOX in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let cpu_before = cpu_by_process();
    let workers_before = children_cpu();
    let started = Instant::now();
    let mut children: Vec<Child> = dirs
        .iter()
        .map(|d| {
            worker_with_env(
                &stack,
                d.path(),
                &db,
                &["--exit-when-idle"],
                &[("POSTDESK_OUTBOX_JOURNAL", journal.as_str())],
            )
        })
        .collect();
    // Count the acknowledgements in the customers' mailboxes while the workers run: with
    // --exit-when-idle a standing-by worker exits only after its next look at the mailbox lease
    // (up to 3 s after the reader is done), which is not mail throughput.
    let file_outbox = std::env::var("POSTDESK_BENCH_FILE_OUTBOX").is_ok();
    let expected: Vec<usize> = (0..customers)
        .map(|c| (c..n).step_by(customers).count())
        .collect();
    let mut counts = vec![0usize; customers];
    let mut have = 0;
    let mut all_delivered: Option<Duration> = None;
    let mut exited: Vec<Option<Duration>> = vec![None; workers];
    let mut worker_cpu = vec![0f64; workers];
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        for (((child, d), exit), cpu) in children
            .iter_mut()
            .zip(&dirs)
            .zip(exited.iter_mut())
            .zip(worker_cpu.iter_mut())
        {
            if exit.is_some() {
                continue;
            }
            // wait4 rather than try_wait: it also gives the CPU time of each worker.
            let mut status = 0;
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            let pid =
                unsafe { libc::wait4(child.id() as i32, &mut status, libc::WNOHANG, &mut ru) };
            if pid > 0 {
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "worker failed ({status}): {}",
                    std::fs::read_to_string(d.path().join("worker.log")).unwrap_or_default()
                );
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                *exit = Some(started.elapsed());
                *cpu = secs(ru.ru_utime) + secs(ru.ru_stime);
            }
        }
        if !file_outbox && all_delivered.is_none() {
            for (c, count) in counts.iter_mut().enumerate() {
                if *count < expected[c] {
                    *count = delivered(&stack, &customer(c)).max(*count);
                }
            }
            have = counts.iter().sum();
            if have >= n {
                all_delivered = Some(started.elapsed());
            }
        }
        if exited.iter().all(Option::is_some) && (file_outbox || all_delivered.is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {have} of {n} acknowledgements delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let worker_done = exited.iter().flatten().max().copied().unwrap_or_default();
    let workers_cpu = children_cpu() - workers_before;
    let rss_kib = {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        ru.ru_maxrss
    };
    if file_outbox {
        println!(
            "backlog of {n} into tickets and acknowledgement files: {:.2}s ({:.0} msg/s); worker peak RSS {:.1} MiB",
            worker_done.as_secs_f64(),
            n as f64 / worker_done.as_secs_f64(),
            rss_kib as f64 / 1024.0
        );
        return;
    }
    let all_delivered = all_delivered.unwrap_or_default();
    let cpu_after = cpu_used(&cpu_before, &cpu_by_process());
    println!(
        "backlog of {n} ({}, {workers} worker{}): all {n} acknowledgements in the customers' mailboxes after {:.2}s ({:.0} msg/s; {have} delivered); last worker exited after {:.2}s; worker peak RSS {:.1} MiB",
        if db.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
        if workers == 1 { "" } else { "s" },
        all_delivered.as_secs_f64(),
        n as f64 / all_delivered.as_secs_f64(),
        worker_done.as_secs_f64(),
        rss_kib as f64 / 1024.0,
    );
    if workers > 1 {
        let each: Vec<String> = worker_cpu.iter().map(|c| format!("{c:.2} s")).collect();
        println!("  CPU of each worker: {}", each.join(", "));
    }
    let mut per_msg: Vec<String> = vec![format!(
        "postdesk workers {:.0} µs",
        workers_cpu / n as f64 * 1e6
    )];
    per_msg.extend(
        cpu_after
            .iter()
            .map(|(owner, used)| format!("{owner} {:.0} µs", used.max(0.0) / n as f64 * 1e6)),
    );
    println!("  CPU per message: {}", per_msg.join(", "));
}

/// A header's value (first occurrence, name in any case, folded lines joined, trimmed).
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    head.split("\r\n").find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// The ticket number of a message postdesk sent: `X-Postdesk-Ticket`, else the `[#N]` tag.
fn ticket_number(raw: &[u8]) -> Option<i64> {
    if let Some(n) = header(raw, "X-Postdesk-Ticket").and_then(|v| v.parse().ok()) {
        return Some(n);
    }
    let subject = header(raw, "Subject")?;
    let rest = &subject[subject.find("[#")? + 2..];
    rest[..rest.find(']')?].trim().parse().ok()
}

/// The messages in a Dovecot maildir (new/ and cur/), oldest file name first.
fn maildir_messages(stack: &MailStack, user: &str) -> Vec<Vec<u8>> {
    let root = stack.maildir(user);
    let mut files: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
        .collect();
    files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    // Dovecot stores LF line ends; IMAP would serve CRLF.
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|m| m.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes())
        .collect()
}

/// Stops the worker and panics with what it logged.
fn give_up(child: &mut Child, dir: &std::path::Path, what: &str) -> ! {
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "{what}\n===== worker.log =====\n{}",
        std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
    );
}

async fn relay(n: usize) {
    if n == 0 {
        return;
    }
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = database(dir.path(), "relay");
    let mut child = worker_with_env(
        &stack,
        dir.path(),
        &db,
        &[],
        &[
            ("POSTDESK_TRIAGE_OWNERS", TRIAGE),
            ("POSTDESK_STAFF_DOMAINS", "example.test"),
        ],
    );
    warm_up(&stack).await;

    // N tickets, opened in one burst.
    let opened = Instant::now();
    stack
        .send_many(
            (0..n)
                .map(|i| {
                    let who = customer(i);
                    let raw = mail(&who, &format!("SEV 4 relay {i}"), &format!("rel{i}@bench"));
                    (who, SUPPORT.to_string(), raw)
                })
                .collect(),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let missing = (0..n)
            .filter(|i| delivered(&stack, &customer(*i)) < 1)
            .count();
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            give_up(
                &mut child,
                dir.path(),
                &format!("{missing} of {n} acknowledgements missing"),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each customer's ticket, from its acknowledgement.
    let tickets: Vec<i64> = (0..n)
        .map(|i| {
            let msgs = maildir_messages(&stack, &customer(i));
            msgs.first()
                .and_then(|m| ticket_number(m))
                .unwrap_or_else(|| {
                    give_up(
                        &mut child,
                        dir.path(),
                        &format!("no ticket number in {}'s acknowledgement", customer(i)),
                    )
                })
        })
        .collect();
    // Each ticket's engineer_notification in triage@'s INBOX: (subject, Message-ID).
    let mut notifications: std::collections::HashMap<i64, (String, String)> = Default::default();
    loop {
        notifications.clear();
        for m in stack.fetch_all(TRIAGE, "INBOX").await {
            if let (Some(t), Some(subject), Some(id)) =
                (ticket_number(&m), header(&m, "Subject"), message_id(&m))
            {
                notifications.insert(t, (subject, id));
            }
        }
        let missing = tickets
            .iter()
            .filter(|t| !notifications.contains_key(t))
            .count();
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            give_up(
                &mut child,
                dir.path(),
                &format!("{missing} of {n} engineer notifications missing in {TRIAGE}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "relay: {n} tickets opened, acknowledged and notified to triage in {:.1}s",
        opened.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut samples = Vec::with_capacity(n);
    for (i, ticket) in tickets.iter().enumerate() {
        let who = customer(i);
        let (subject, notification) = &notifications[ticket];
        let raw = format!(
            "From: Engineer <{ENGINEER}>\r\nTo: {SUPPORT}\r\nSubject: Re: {subject}\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\nMessage-ID: <eng{i}@bench>\r\nIn-Reply-To: <{notification}>\r\nReferences: <{notification}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi,\r\n\r\nplease restart the export job ({i}).\r\n\r\nOn Mon, 23 Nov 2026, Customer wrote:\r\n> the export job fails every night since the upgrade\r\n"
        );
        let accepted = stack.send(ENGINEER, SUPPORT, raw.as_bytes()).await;
        let deadline = accepted + Duration::from_secs(30);
        loop {
            if delivered(&stack, &who) >= 2 {
                samples.push(accepted.elapsed());
                break;
            }
            if Instant::now() > deadline {
                give_up(
                    &mut child,
                    dir.path(),
                    &format!(
                        "no relay for {who} (ticket {ticket}) 30 s after the engineer's reply"
                    ),
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // What arrived second is the relay of the engineer's text (checked outside the clock).
    for i in 0..n {
        let who = customer(i);
        let needle = format!("please restart the export job ({i})");
        let msgs = maildir_messages(&stack, &who);
        assert!(
            msgs.iter()
                .any(|m| String::from_utf8_lossy(m).contains(&needle)),
            "{who}: no message carries {needle:?}: {:?}",
            msgs.iter()
                .map(|m| header(m, "Subject").unwrap_or_default())
                .collect::<Vec<_>>()
        );
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    println!(
        "engineer relay latency (SMTP 250 -> relay in the customer's mailbox), {n} replies one at a time, {}:\n  p50={:.0}ms p95={:.0}ms max={:.0}ms mean={:.0}ms",
        if db.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
        percentile(&samples, 0.50).as_secs_f64() * 1000.0,
        percentile(&samples, 0.95).as_secs_f64() * 1000.0,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        mean.as_secs_f64() * 1000.0,
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: only run for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let only = std::env::var("POSTDESK_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| {
        only.trim().is_empty() || only.split(',').any(|p| p.trim().eq_ignore_ascii_case(part))
    };
    rt.block_on(async {
        if run("latency") {
            latency(n("POSTDESK_BENCH_LATENCY_N", 100)).await;
        }
        if run("backlog") {
            let counts = std::env::var("POSTDESK_BENCH_WORKERS").unwrap_or_else(|_| "1".into());
            for workers in counts
                .split(',')
                .filter_map(|w| w.trim().parse::<usize>().ok())
            {
                backlog(n("POSTDESK_BENCH_BACKLOG_N", 10_000), workers.max(1)).await;
            }
        }
        if run("relay") {
            relay(n("POSTDESK_BENCH_RELAY_N", 100)).await;
        }
    });
}
