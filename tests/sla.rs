//! The SLA clock through the binary, travelling in time with `postdesk sweep --once --now`: a
//! Sev 3 ticket's escalation, breach, status update, reminder, close pending after silence and
//! auto-close come out at their instants and exactly once (each sweep is a new process: a
//! restart between every step), and two sweeps racing on one PostgreSQL send each mail once.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::{Sandbox, code, customer_mail};

fn at(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an instant: {v}"))
}

fn run(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    sb.command(args)
        .env("POSTDESK_TRIAGE_OWNERS", "triage@example.com")
        .env("POSTDESK_ESCALATION_CONTACTS", "director@example.com")
        // Long enough for the close-pending wait to span Christmas.
        .env("POSTDESK_STATUSES_AUTO_CLOSE_AFTER", "15 days")
        .output()
        .unwrap()
}

/// `(template, to)` of every outbox row of ticket 1, in order.
fn sent(sb: &Sandbox) -> Vec<(String, String)> {
    let out = run(sb, &["tickets", "show", "1", "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    t["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["template"].as_str().unwrap().to_string(),
                o["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ticket(sb: &Sandbox) -> serde_json::Value {
    let out = run(sb, &["tickets", "show", "1", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["ticket"].clone()
}

fn sweep(sb: &Sandbox, now: DateTime<Utc>) -> serde_json::Value {
    let out = run(
        sb,
        &["sweep", "--once", "--json", "--now", &now.to_rfc3339()],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn queued(report: &serde_json::Value) -> Vec<(String, String)> {
    report["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["queued"].as_array().unwrap().clone())
        .map(|q| {
            (
                q["template"].as_str().unwrap().to_string(),
                q["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(t: &str, to: &str) -> (String, String) {
    (t.to_string(), to.to_string())
}

#[test]
fn a_sev3_tickets_clock_fires_each_rule_once_at_its_instant() {
    let sb = Sandbox::new();
    let first = sb.path().join("first.eml");
    std::fs::write(
        &first,
        customer_mail(
            "jane@acme.test",
            "SEV 3 printer on fire",
            "clock-1@acme.test",
        ),
    )
    .unwrap();
    assert_eq!(code(&run(&sb, &["ingest", first.to_str().unwrap()])), 0);
    let t = ticket(&sb);
    let (escalation, response, update) = (
        at(&t["escalation_due_at"]),
        at(&t["response_due_at"]),
        at(&t["update_due_at"]),
    );
    let second = Duration::seconds(1);

    // Just before the escalation time nothing happens; at it, the ticket escalates, once.
    assert!(queued(&sweep(&sb, escalation - second)).is_empty());
    assert_eq!(
        queued(&sweep(&sb, escalation)),
        vec![
            pair("escalation", "director@example.com"),
            pair("escalation", "triage@example.com")
        ]
    );
    assert!(
        queued(&sweep(&sb, escalation + second)).is_empty(),
        "escalated twice"
    );

    // At the response deadline (and the first status update, due at the same instant on the
    // default table): a breach to triage and a status update to the customer.
    let mut got = queued(&sweep(&sb, response.max(update)));
    got.sort();
    assert_eq!(
        got,
        vec![
            pair("breach", "triage@example.com"),
            pair("status_update", "jane@acme.test")
        ]
    );
    let t = ticket(&sb);
    assert!(
        at(&t["update_due_at"]) > response.max(update),
        "next update moved on: {t}"
    );
    assert!(queued(&sweep(&sb, response.max(update) + second)).is_empty());

    // An engineer answers: customer pending, whose rules now run.
    let reply = sb.path().join("reply.eml");
    std::fs::write(
        &reply,
        "From: Sam <sam@example.com>\r\nTo: support@example.com\r\nSubject: Re: [#1] SEV 3 printer on fire\r\n\
         Message-ID: <clock-2@example.com>\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\n\r\nPlease restart it.\r\n",
    )
    .unwrap();
    let answered = response.max(update) + Duration::minutes(5);
    assert_eq!(
        code(&run(
            &sb,
            &[
                "ingest",
                reply.to_str().unwrap(),
                "--now",
                &answered.to_rfc3339()
            ]
        )),
        0
    );
    let t = ticket(&sb);
    assert_eq!(t["status"], "customer_pending");
    let (reminder, silence) = (at(&t["reminder_due_at"]), at(&t["close_pending_due_at"]));
    assert!(answered < reminder && reminder < silence, "{t}");
    assert!(queued(&sweep(&sb, reminder - second)).is_empty());
    assert_eq!(
        queued(&sweep(&sb, reminder)),
        vec![pair("customer_pending_reminder", "jane@acme.test")]
    );
    assert!(
        queued(&sweep(&sb, reminder + second)).is_empty(),
        "reminded twice"
    );
    assert!(queued(&sweep(&sb, silence - second)).is_empty());
    let report = sweep(&sb, silence);
    assert!(
        queued(&report).contains(&pair("close_pending", "jane@acme.test")),
        "{report}"
    );
    let t = ticket(&sb);
    assert_eq!(t["status"], "close_pending");
    let closes = at(&t["auto_close_due_at"]);
    assert!(closes > silence, "{t}");
    assert!(queued(&sweep(&sb, closes - second)).is_empty());
    assert_eq!(
        queued(&sweep(&sb, closes)),
        vec![pair("closed", "jane@acme.test")]
    );
    assert_eq!(ticket(&sb)["status"], "closed");
    assert!(queued(&sweep(&sb, closes + Duration::days(30))).is_empty());

    // The close-pending notice names the instant the tick closed it: 15 business days on the
    // customer's calendar, past Christmas (Friday December 25, 2026), not 15 weekdays. (Read from the
    // outbox row: its mail is due in the travelled-to future, so no worker would send it now.)
    let notice = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use postdesk::store::Store;
            let url = format!("sqlite:{}", sb.db().display());
            let store = postdesk::store::SqliteStore::open_existing(&url)
                .await
                .unwrap();
            let far = closes + Duration::days(365);
            store.claim_outbox("test", far, far, 100).await.unwrap()
        })
        .into_iter()
        .find(|o| o.template == "close_pending")
        .map(|o| String::from_utf8_lossy(&o.rendered).to_string())
        .expect("the close-pending notice in the outbox")
    };
    let local = closes
        .with_timezone(&chrono_tz::America::Chicago)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string();
    assert!(
        notice.contains(&format!("closes by itself on {local}"))
            && notice.contains("(15 business days)"),
        "expected {local} in\n{notice}"
    );

    // Every scheduled mail went out exactly once.
    let mut all = sent(&sb);
    all.sort();
    all.dedup_by(|a, b| a == b);
    assert_eq!(
        all.len(),
        sent(&sb).len(),
        "a mail queued twice: {:?}",
        sent(&sb)
    );
}

/// Two sweeps at once on one PostgreSQL: every due mail is queued exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweeps_racing_on_postgres_send_each_mail_once() {
    let Ok(admin) = std::env::var("POSTDESK_TEST_POSTGRES_URL") else {
        panic!("POSTDESK_TEST_POSTGRES_URL is not set: scripts/test.sh provides one");
    };
    let name = format!("pd_sla_race_{}", std::process::id());
    let url = postdesk::store::postgres::create_database(&admin, &name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sb = Sandbox::new();
    let with_pg = |args: &[&str]| {
        let mut c = sb.command(args);
        c.env("POSTDESK_DATABASE_URL", &url)
            .env("POSTDESK_TRIAGE_OWNERS", "triage@example.com")
            .env("POSTDESK_ESCALATION_CONTACTS", "director@example.com");
        c
    };
    const TICKETS: usize = 40;
    for i in 0..TICKETS {
        let path = sb.path().join(format!("m{i}.eml"));
        std::fs::write(
            &path,
            customer_mail(
                &format!("c{i}@acme.test"),
                "SEV 3 printer",
                &format!("race-{i}@acme.test"),
            ),
        )
        .unwrap();
        let out = with_pg(&["ingest", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Far enough ahead that escalation, breaches and a status update are all due.
    let now = (Utc::now() + Duration::days(20)).to_rfc3339();
    let a = with_pg(&["sweep", "--once", "--now", &now])
        .spawn()
        .unwrap();
    let b = with_pg(&["sweep", "--once", "--now", &now])
        .spawn()
        .unwrap();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT template, COUNT(*) FROM outbox GROUP BY template ORDER BY template")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let dup: Option<(String, i64)> = sqlx::query_as(
        "SELECT message_id, COUNT(*) FROM outbox GROUP BY message_id HAVING COUNT(*) > 1 LIMIT 1",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    drop(conn);
    postdesk_drop(&admin, &name).await;
    assert!(dup.is_none(), "{dup:?}");
    let n = TICKETS as i64;
    let count = |t: &str| {
        rows.iter()
            .find(|(x, _)| x == t)
            .map(|(_, c)| *c)
            .unwrap_or(0)
    };
    // Per ticket: escalation to the director and triage, two breaches, one status update.
    assert_eq!(count("escalation"), 2 * n, "{rows:?}");
    assert_eq!(count("breach"), 2 * n, "{rows:?}");
    assert_eq!(count("status_update"), n, "{rows:?}");
}

async fn postdesk_drop(admin: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// The digest: each account manager gets their customers' open tickets, triage all of them;
/// nobody with nothing open gets one; once per day.
#[test]
fn the_digest_goes_to_triage_and_each_account_manager_with_their_tickets() {
    let sb = Sandbox::new();
    let config = sb.path().join("postdesk.toml");
    std::fs::write(
        &config,
        "[[customers]]\ndomain = \"acme.test\"\ncompany = \"Acme\"\naccount_manager = \"am@example.com\"\n\
         [[customers]]\ndomain = \"globex.test\"\ncompany = \"Globex\"\naccount_manager = \"gm@example.com\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let go = |args: &[&str]| {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        run(&sb, &all)
    };
    for (i, from) in ["jane@acme.test", "joe@acme.test", "carol@other.test"]
        .iter()
        .enumerate()
    {
        let path = sb.path().join(format!("d{i}.eml"));
        std::fs::write(
            &path,
            customer_mail(from, "SEV 4 question", &format!("digest-{i}@x.test")),
        )
        .unwrap();
        assert_eq!(code(&go(&["ingest", path.to_str().unwrap()])), 0);
    }
    // Now (the rows it queues are due at once), and again a second later: the same local day.
    let now = Utc::now();
    let out = go(&["digest", "--once", "--now", &now.to_rfc3339()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("queued digest to triage@example.com"),
        "{text}"
    );
    assert!(text.contains("queued digest to am@example.com"), "{text}");
    assert!(
        !text.contains("gm@example.com"),
        "nothing open for Globex: {text}"
    );
    assert!(text.contains("2 digest(s) queued"), "{text}");
    // The same day again: nothing new.
    let again = go(&[
        "digest",
        "--once",
        "--now",
        &(now + Duration::seconds(1)).to_rfc3339(),
    ]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 digest(s) queued"));
    // What each got: deliver the outbox to files and read them.
    assert!(go(&["run", "--exit-when-idle"]).status.success());
    let digests: Vec<String> = sb
        .outbox_files()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .filter(|m| m.contains("postdesk.0.digest."))
        .collect();
    assert_eq!(digests.len(), 2);
    let for_am = digests
        .iter()
        .find(|m| m.contains("To: am@example.com"))
        .unwrap();
    let for_triage = digests
        .iter()
        .find(|m| m.contains("To: triage@example.com"))
        .unwrap();
    let body = |m: &str| {
        mail_parser::MessageParser::default()
            .parse(m.as_bytes())
            .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_default()
    };
    let (am, triage) = (body(for_am), body(for_triage));
    // Tickets 1 and 2 are Acme's, 3 is another company's.
    assert!(am.contains("[#1]") && am.contains("[#2]"), "{am}");
    assert!(!am.contains("[#3]"), "another company's ticket: {am}");
    for tag in ["[#1]", "[#2]", "[#3]"] {
        assert!(triage.contains(tag), "{tag} missing:\n{triage}");
    }
}

/// `postdesk run` fires the digest at `digest.schedule` (a cron expression, here every two
/// seconds) and sweeps on its own clock.
#[test]
fn the_worker_sends_the_digest_on_its_cron_schedule() {
    let sb = Sandbox::new();
    let first = sb.path().join("first.eml");
    std::fs::write(
        &first,
        customer_mail("jane@acme.test", "SEV 3 x", "cron-1@acme.test"),
    )
    .unwrap();
    assert_eq!(code(&run(&sb, &["ingest", first.to_str().unwrap()])), 0);
    let mut worker = sb
        .command(&["run"])
        .env("POSTDESK_TRIAGE_OWNERS", "triage@example.com")
        .env("POSTDESK_DIGEST_SCHEDULE", "*/2 * * * * *")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let found = loop {
        let digest = sb.outbox_files().iter().any(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains("postdesk.0.digest.")
        });
        if digest || std::time::Instant::now() > deadline {
            break digest;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    terminate(&mut worker);
    assert!(found, "no digest within 60 s");
}

/// Stops the worker with SIGTERM (it finishes what it holds) and reaps it.
fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
