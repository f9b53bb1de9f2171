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
    let store = postdesk::store::PgStore::open(&url).await.unwrap();
    let _ = store;
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
