//! The store test suite, run once on SQLite and once on PostgreSQL through the public API.
//!
//! Every suite is a generic `async fn suite<S: Store>(store: S)`; the `store_tests!` macro at the
//! bottom stamps out `sqlite::<suite>` and `postgres::<suite>` tests from the same list, so both
//! backends answer to exactly the same assertions.
//!
//! SQLite: a fresh file in a temporary directory per test. PostgreSQL: a fresh database per test
//! on the server named by `POSTDESK_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432`); without that variable the PostgreSQL tests fail and say
//! how to run them (`scripts/test.sh` sets it up).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use postdesk::config::Config;
use postdesk::desk::{
    Action, Decision, MailContext, MatchedBy, Reply, ReplyKind, Role, Status, StatusChange,
    StatusEvent, TicketUpdate, decide, decide_parsed,
};
use postdesk::mail::{QuarantineReason, parse};
use postdesk::pipeline::{Desk, Incoming, Outcome, ingest_batch};
use postdesk::store::postgres::create_database;
use postdesk::store::{InboundRecord, PgStore, SqliteStore, Store, StoreError, StoreTx};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A raw RFC 5322 message from `from` to the support address, with optional Cc.
fn mail(from: &str, subject: &str, message_id: &str, cc: &[&str]) -> Vec<u8> {
    let mut m = String::new();
    m.push_str(&format!("From: {from}\r\n"));
    m.push_str("To: Support <support@example.com>\r\n");
    if !cc.is_empty() {
        m.push_str(&format!("Cc: {}\r\n", cc.join(", ")));
    }
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    m.push_str("Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    m.push_str("\r\n");
    m.push_str("Hello,\r\n\r\nthe printer in room 4 is on fire again.\r\n\r\nJane\r\n");
    m.into_bytes()
}

/// A delivery-status report (bounce) from the mailer daemon.
fn bounce(message_id: &str) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.acme.test>\r\n\
         To: support@example.com\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <{message_id}>\r\n\
         Date: Tue, 03 Mar 2026 10:05:00 +0000\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         This is the mail system. Your message could not be delivered.\r\n\
         --b1\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.acme.test\r\n\
         \r\n\
         Final-Recipient: rfc822; gone@acme.test\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         --b1--\r\n"
    )
    .into_bytes()
}

fn incoming(raw: &[u8]) -> Incoming {
    Incoming {
        raw: raw.to_vec().into(),
        source: "test".into(),
        silent: false,
        truncated_from: None,
    }
}

/// The desk with the embedded defaults, the repository's templates and `extra` settings.
fn desk_with(extra: &[(&str, &str)]) -> Desk {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "POSTDESK_TEMPLATES_DIR".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/templates").into(),
    );
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let config = Config::load_with_env(None, &env).unwrap_or_else(|e| panic!("config: {e}"));
    Desk::from_config(&config).unwrap_or_else(|e| panic!("templates: {e}"))
}

fn desk() -> Desk {
    desk_with(&[])
}

/// A fixed instant (whole seconds, so both backends round-trip it exactly).
fn t0() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// Ingests one message in its own batch and returns its outcome.
async fn ingest_one<S: Store>(store: &S, desk: &Desk, raw: &[u8], now: DateTime<Utc>) -> Outcome {
    let mut out = ingest_batch(store, desk, &[incoming(raw)], now)
        .await
        .unwrap_or_else(|e| panic!("ingest: {e}"));
    assert_eq!(out.len(), 1, "one outcome per message");
    out.remove(0)
}

/// Ingests one message that must open a ticket, and returns its number.
async fn new_ticket<S: Store>(store: &S, desk: &Desk, raw: &[u8], now: DateTime<Utc>) -> i64 {
    ingest_one(store, desk, raw, now)
        .await
        .ticket
        .unwrap_or_else(|| panic!("no ticket opened"))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

/// A new mail becomes: the ticket, the requester and the Cc watchers, the message with its raw
/// bytes whole, the `created` and `severity` events, and exactly one acknowledgement in the outbox
/// that carries the ticket tag and `Auto-Submitted: auto-replied`.
async fn new_ticket_stores_ticket_participants_message_events_and_one_acknowledgement<S: Store>(
    store: S,
) {
    let desk = desk();
    let now = t0();
    let raw = mail(
        "Jane Doe <Jane@Acme.test>",
        "SEV 3 printer on fire",
        "m1@acme.test",
        &[
            "bob@acme.test",
            "Carol Client <carol@globex.test>",
            "support@example.com",
        ],
    );
    let o = ingest_one(&store, &desk, &raw, now).await;
    assert_eq!(
        o.decision.action.name(),
        "new_ticket",
        "{}",
        o.decision.reason
    );
    assert!(o.decision.acknowledge, "{}", o.decision.reason);
    let n = o.ticket.unwrap_or_else(|| panic!("no ticket number"));
    assert_eq!(o.queued.len(), 1);

    let list = store.list_tickets(None).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].number, n);

    let d = store.ticket_detail(n).await.unwrap();
    let t = &d.ticket;
    assert_eq!(t.number, n);
    assert_eq!(t.subject, "SEV 3 printer on fire");
    assert_eq!(t.requester, "jane@acme.test");
    assert_eq!(t.requester_name.as_deref(), Some("Jane Doe"));
    assert_eq!(t.status, "in_triage");
    assert_eq!(t.requested_severity, Some(3));
    assert_eq!(t.assigned_severity, 3);
    assert!(t.severity_given);
    assert!(!t.downgraded);
    assert_eq!(t.created_at, now);

    let people: Vec<(&str, &str, Option<&str>)> = d
        .participants
        .iter()
        .map(|p| (p.address.as_str(), p.role.as_str(), p.name.as_deref()))
        .collect();
    assert_eq!(
        people,
        vec![
            ("jane@acme.test", "requester", Some("Jane Doe")),
            ("bob@acme.test", "watcher", None),
            ("carol@globex.test", "watcher", Some("Carol Client")),
        ],
        "requester first, Cc as watchers, the support address is no watcher"
    );

    assert_eq!(d.messages.len(), 1);
    let m = &d.messages[0];
    assert_eq!(m.message_id, "m1@acme.test");
    assert_eq!(m.direction, "inbound");
    assert_eq!(m.kind, "customer");
    assert_eq!(m.from, "jane@acme.test");
    assert_eq!(m.subject, "SEV 3 printer on fire");
    assert_eq!(m.size, raw.len() as i64, "the raw message is kept whole");
    assert!(m.text.contains("printer in room 4"), "text: {:?}", m.text);

    let created = d
        .history
        .iter()
        .find(|e| e.kind == "created")
        .unwrap_or_else(|| panic!("no created event: {:?}", d.history));
    assert_eq!(created.to.as_deref(), Some("in_triage"));
    assert_eq!(created.actor, "jane@acme.test");
    assert_eq!(created.at, now);
    let severity = d
        .history
        .iter()
        .find(|e| e.kind == "severity")
        .unwrap_or_else(|| panic!("no severity event: {:?}", d.history));
    assert_eq!(severity.from.as_deref(), Some("3"));
    assert_eq!(severity.to.as_deref(), Some("3"));
    assert!(d.history.iter().any(|e| e.kind == "outbound"));

    let due = claim_due(&store, now, 100).await.unwrap();
    assert_eq!(due.len(), 1, "exactly one acknowledgement");
    let ack = &due[0];
    assert_eq!(ack.ticket, Some(n));
    assert_eq!(ack.to, "jane@acme.test");
    assert_eq!(ack.attempts, 0);
    assert_eq!(ack.message_id, o.queued[0].message_id);
    let tag = format!("[#{n}]");
    assert!(
        contains(&ack.rendered, &tag),
        "no {tag} in:\n{}",
        String::from_utf8_lossy(&ack.rendered)
    );
    assert!(
        contains(&ack.rendered, "Auto-Submitted: auto-replied"),
        "no Auto-Submitted in:\n{}",
        String::from_utf8_lossy(&ack.rendered)
    );
    assert!(
        contains(&ack.rendered, "<m1@acme.test>"),
        "the acknowledgement is not threaded into the customer's message"
    );
    assert_eq!(d.outbox.len(), 1);
    assert_eq!(d.outbox[0].template, "acknowledgement");
    assert!(d.outbox[0].sent_at.is_none() && d.outbox[0].failed_at.is_none());

    let c = store.counts().await.unwrap();
    assert_eq!(
        (
            c.tickets,
            c.messages,
            c.outbox_pending,
            c.outbox_sent,
            c.quarantined
        ),
        (1, 1, 1, 0, 0)
    );
}

/// IMAP re-delivery, crash replay, the same mail via Cc: one Message-ID is one message, whether
/// the copies arrive in separate batches or in the same one, and even when their bytes differ.
async fn same_message_id_twice_is_one_ticket_and_one_acknowledgement<S: Store>(store: S) {
    let desk = desk();
    let now = t0();

    // Separate batches.
    let raw = mail("jane@acme.test", "SEV 3 first", "dup-1@acme.test", &[]);
    let first = ingest_one(&store, &desk, &raw, now).await;
    let n = first.ticket.unwrap_or_else(|| panic!("no ticket"));
    let again = ingest_one(&store, &desk, &raw, now + Duration::minutes(1)).await;
    assert_eq!(again.decision.action.name(), "duplicate");
    assert_eq!(again.ticket, Some(n));
    assert!(again.queued.is_empty() && !again.decision.acknowledge);
    // Same Message-ID, different bytes (the copy a Cc'd list or a relay rewrote).
    let rewritten = mail(
        "jane@acme.test",
        "SEV 3 first (via list)",
        "dup-1@acme.test",
        &["list@acme.test"],
    );
    let copy = ingest_one(&store, &desk, &rewritten, now + Duration::minutes(2)).await;
    assert_eq!(copy.decision.action.name(), "duplicate");
    assert_eq!(copy.ticket, Some(n));

    // Twice inside one batch (one transaction).
    let raw2 = mail("bob@acme.test", "SEV 4 second", "dup-2@acme.test", &[]);
    let out = ingest_batch(
        &store,
        &desk,
        &[incoming(&raw2), incoming(&raw2)],
        now + Duration::minutes(3),
    )
    .await
    .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].decision.action.name(), "new_ticket");
    let m = out[0].ticket.unwrap_or_else(|| panic!("no ticket"));
    assert_ne!(m, n);
    assert_eq!(out[1].decision.action.name(), "duplicate");
    assert_eq!(out[1].ticket, Some(m));
    assert!(out[1].queued.is_empty());

    let c = store.counts().await.unwrap();
    assert_eq!((c.tickets, c.messages, c.outbox_pending), (2, 2, 2));
    let due = claim_due(&store, now + Duration::hours(1), 100)
        .await
        .unwrap();
    assert_eq!(due.iter().filter(|i| i.ticket == Some(n)).count(), 1);
    assert_eq!(due.iter().filter(|i| i.ticket == Some(m)).count(), 1);
    assert_eq!(store.ticket_detail(n).await.unwrap().messages.len(), 1);
    assert_eq!(store.ticket_detail(m).await.unwrap().messages.len(), 1);
}

/// A transaction that is dropped without commit leaves nothing behind (a crash mid-decision), and
/// the store takes the next transaction normally afterwards (no lock left held).
async fn dropped_transaction_leaves_nothing<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let reason = QuarantineReason::Unparseable {
        detail: "test".into(),
    };

    // A quarantine entry, and a whole ticket written through the transaction, then dropped.
    let raw = mail(
        "jane@acme.test",
        "SEV 3 never stored",
        "gone@acme.test",
        &[],
    );
    let parsed = parse(&raw, desk.limits.max_message_size).unwrap();
    let decision = decide(&parsed, &MailContext::default(), &desk.policy, now);
    assert!(matches!(decision.action, Action::NewTicket(_)));
    let png = b"\x89PNG not mail";
    let quarantine = decide_parsed(&Err(reason), &MailContext::default(), &desk.policy, now);
    let png_record = InboundRecord {
        raw: png,
        mail: None,
        source: "test",
    };
    {
        let mut tx = store.begin().await.unwrap();
        tx.apply(&quarantine, png_record, &mut |_| Vec::new())
            .await
            .unwrap();
        let record = InboundRecord {
            raw: &raw,
            mail: Some(&parsed),
            source: "test",
        };
        let n = tx
            .apply(&decision, record, &mut |_| Vec::new())
            .await
            .unwrap();
        assert!(n.is_some_and(|n| n > 0));
        drop(tx);
    }
    let c = store.counts().await.unwrap();
    assert_eq!(
        (
            c.tickets,
            c.messages,
            c.outbox_pending,
            c.outbox_sent,
            c.quarantined
        ),
        (0, 0, 0, 0, 0),
        "a dropped transaction left rows behind"
    );
    assert!(store.list_tickets(None).await.unwrap().is_empty());

    // The same work committed is there: the test can tell the difference.
    let mut tx = store.begin().await.unwrap();
    tx.apply(&quarantine, png_record, &mut |_| Vec::new())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.counts().await.unwrap().quarantined, 1);

    // And the message that was rolled back is not known: it opens its ticket now.
    let o = ingest_one(&store, &desk, &raw, now).await;
    assert_eq!(
        o.decision.action.name(),
        "new_ticket",
        "{}",
        o.decision.reason
    );
    assert_eq!(store.counts().await.unwrap().tickets, 1);
}

/// What cannot be taken is kept whole in quarantine with its reason, once per distinct content.
async fn quarantine_is_stored_once_per_distinct_content<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let o = ingest_one(&store, &desk, &png, now).await;
    assert_eq!(o.decision.action.name(), "quarantine");
    assert!(o.ticket.is_none() && o.queued.is_empty());
    assert_eq!(store.counts().await.unwrap().quarantined, 1);

    // The same bytes again, in a later batch and twice within one batch.
    ingest_one(&store, &desk, &png, now + Duration::minutes(1)).await;
    let out = ingest_batch(&store, &desk, &[incoming(&png), incoming(&png)], now)
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.decision.action.name() == "quarantine"));
    assert_eq!(store.counts().await.unwrap().quarantined, 1);

    // Different content is kept separately: no sender, and a different unparseable blob.
    let no_sender = b"To: support@example.com\r\nSubject: SEV 3 who am I\r\n\r\nbody\r\n";
    let o = ingest_one(&store, &desk, no_sender, now).await;
    assert_eq!(o.decision.action.name(), "quarantine");
    assert!(
        o.decision.reason.contains("sender"),
        "{}",
        o.decision.reason
    );
    ingest_one(&store, &desk, b"{\"not\": \"mail\"}\n", now).await;

    let c = store.counts().await.unwrap();
    assert_eq!((c.quarantined, c.tickets, c.messages), (3, 0, 0));
}

/// A delivery-status report is stored as a message with an event, never as a ticket, and gets no
/// reply; the same report again is a duplicate.
async fn bounce_is_stored_without_a_ticket<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    ingest_one(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 x", "b-base@acme.test", &[]),
        now,
    )
    .await;
    let before = store.counts().await.unwrap();
    assert_eq!((before.tickets, before.messages), (1, 1));

    let raw = bounce("dsn-1@mx.acme.test");
    let o = ingest_one(&store, &desk, &raw, now).await;
    assert_eq!(o.decision.action.name(), "bounce", "{}", o.decision.reason);
    assert!(o.ticket.is_none() && o.queued.is_empty() && !o.decision.acknowledge);

    let after = store.counts().await.unwrap();
    assert_eq!(after.messages, before.messages + 1, "the bounce is stored");
    assert_eq!(after.tickets, before.tickets, "a bounce opens no ticket");
    assert_eq!(after.outbox_pending, before.outbox_pending, "no reply");
    assert_eq!(after.quarantined, 0);

    let again = ingest_one(&store, &desk, &raw, now).await;
    assert_eq!(again.decision.action.name(), "duplicate");
    assert_eq!(again.ticket, None);
    assert_eq!(store.counts().await.unwrap(), after);
}

/// `list_tickets` returns newest first and filters by status.
async fn list_tickets_filters_by_status<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let a = new_ticket(
        &store,
        &desk,
        &mail("a@acme.test", "SEV 3 a", "l-a@acme.test", &[]),
        now,
    )
    .await;
    let b = new_ticket(
        &store,
        &desk,
        &mail("b@acme.test", "SEV 4 b", "l-b@acme.test", &[]),
        now,
    )
    .await;

    // A ticket in another status: a status change applied through the transaction API directly
    // (email alone never moves a ticket out of triage to close_pending).
    let raw = mail("c@acme.test", "SEV 4 c", "l-c@acme.test", &[]);
    let c = new_ticket(&store, &desk, &raw, now).await;
    set_status(&store, c, Status::InTriage, Status::ClosePending, now).await;

    let numbers = |l: Vec<postdesk::store::TicketSummary>| -> Vec<i64> {
        l.into_iter().map(|t| t.number).collect()
    };
    assert_eq!(
        numbers(store.list_tickets(None).await.unwrap()),
        vec![c, b, a]
    );
    assert_eq!(
        numbers(store.list_tickets(Some(Status::InTriage)).await.unwrap()),
        vec![b, a]
    );
    let pending = store
        .list_tickets(Some(Status::ClosePending))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].number, c);
    assert_eq!(pending[0].status, "close_pending");
    assert!(
        store
            .list_tickets(Some(Status::Closed))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_tickets(Some(Status::EngineerPending))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Asking for a ticket that does not exist is `NotFound`, not an empty ticket or another error.
async fn ticket_detail_of_a_missing_number_is_not_found<S: Store>(store: S) {
    let desk = desk();
    match store.ticket_detail(1).await {
        Err(StoreError::NotFound) => {}
        other => panic!("empty store, ticket 1: expected NotFound, got {other:?}"),
    }
    let n = ingest_one(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 x", "nf@acme.test", &[]),
        t0(),
    )
    .await
    .ticket
    .unwrap();
    assert!(store.ticket_detail(n).await.is_ok());
    for missing in [n + 1, n + 1000, 0, -1] {
        match store.ticket_detail(missing).await {
            Err(StoreError::NotFound) => {}
            other => panic!("ticket {missing}: expected NotFound, got {other:?}"),
        }
    }
}

/// A delivered row leaves the due list and counts as sent; the others stay due.
async fn mark_sent_removes_the_row_from_due_outbox<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    for (i, from) in ["a@acme.test", "b@acme.test"].iter().enumerate() {
        ingest_one(
            &store,
            &desk,
            &mail(from, "SEV 3 x", &format!("ms-{i}@acme.test"), &[]),
            now,
        )
        .await;
    }
    let due = claim_due(&store, now, 100).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due[0].id < due[1].id, "oldest first");
    assert_eq!(claim_due(&store, now, 1).await.unwrap().len(), 1, "limit");

    store.mark_sent(T, &[], now).await.unwrap();
    assert_eq!(store.counts().await.unwrap().outbox_sent, 0);

    let sent_at = now + Duration::seconds(5);
    store.mark_sent(T, &[due[0].id], sent_at).await.unwrap();
    let still: Vec<i64> = claim_due(&store, now + Duration::days(1), 100)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(still, vec![due[1].id]);
    let c = store.counts().await.unwrap();
    assert_eq!((c.outbox_sent, c.outbox_pending), (1, 1));

    let d = store
        .ticket_detail(due[0].ticket.unwrap_or_default())
        .await
        .unwrap();
    assert_eq!(d.outbox.len(), 1);
    assert_eq!(d.outbox[0].sent_at, Some(sent_at));
    assert_eq!(d.outbox[0].attempts, 1);

    store.mark_sent(T, &[due[1].id], sent_at).await.unwrap();
    assert!(
        claim_due(&store, now + Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.counts().await.unwrap().outbox_sent, 2);
}

/// A failed attempt with a retry time hides the row until then; without one it is given up for
/// good (failed, neither pending nor sent).
async fn failed_attempt_waits_until_retry_at_and_none_gives_up<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let n = new_ticket(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 x", "fail@acme.test", &[]),
        now,
    )
    .await;
    let due = claim_due(&store, now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let id = due[0].id;

    let retry_at = now + Duration::minutes(10);
    store
        .mark_attempt_failed(T, id, "421 try again later", now, Some(retry_at))
        .await
        .unwrap();
    assert!(claim_due(&store, now, 10).await.unwrap().is_empty());
    assert!(
        claim_due(&store, retry_at - Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty(),
        "due before its retry time"
    );
    let back = claim_due(&store, retry_at, 10).await.unwrap();
    assert_eq!(back.len(), 1, "not due again at its retry time");
    assert_eq!(back[0].id, id);
    assert_eq!(back[0].attempts, 1);
    let c = store.counts().await.unwrap();
    assert_eq!((c.outbox_pending, c.outbox_sent), (1, 0));
    let d = store.ticket_detail(n).await.unwrap();
    assert_eq!(
        d.outbox[0].last_error.as_deref(),
        Some("421 try again later")
    );
    assert!(d.outbox[0].failed_at.is_none());

    store
        .mark_attempt_failed(T, id, "550 no such user", retry_at, None)
        .await
        .unwrap();
    assert!(
        claim_due(&store, now + Duration::days(365), 10)
            .await
            .unwrap()
            .is_empty(),
        "a permanently failed row came back"
    );
    let c = store.counts().await.unwrap();
    assert_eq!((c.outbox_pending, c.outbox_sent), (0, 0));
    let d = store.ticket_detail(n).await.unwrap();
    assert_eq!(d.outbox[0].failed_at, Some(retry_at));
    assert_eq!(d.outbox[0].attempts, 2);
    assert_eq!(d.outbox[0].last_error.as_deref(), Some("550 no such user"));
}

/// RFC 3834: at most N automatic replies per sender per hour. Every mail still opens its ticket;
/// the limit counts per sender, inside one batch as well, and the window moves on.
async fn rate_limit_allows_two_acknowledgements_per_sender_per_hour<S: Store>(store: S) {
    let desk = desk_with(&[("POSTDESK_LOOPS_MAX_AUTO_REPLIES_PER_HOUR", "2")]);
    let now = t0();
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let raw = mail(
            "Jane <jane@acme.test>",
            &format!("SEV 3 problem {i}"),
            &format!("rl-{i}@acme.test"),
            &[],
        );
        outcomes.push(ingest_one(&store, &desk, &raw, now + Duration::minutes(10 * i)).await);
    }
    assert!(
        outcomes
            .iter()
            .all(|o| o.decision.action.name() == "new_ticket")
    );
    assert_eq!(
        outcomes
            .iter()
            .map(|o| o.decision.acknowledge)
            .collect::<Vec<_>>(),
        vec![true, true, false]
    );
    assert!(
        outcomes[2].decision.reason.contains("rate limit"),
        "{}",
        outcomes[2].decision.reason
    );
    let c = store.counts().await.unwrap();
    assert_eq!(
        (c.tickets, c.outbox_pending),
        (3, 2),
        "three tickets, two acknowledgements"
    );

    // Another sender is not limited by Jane's replies; within one batch the limit holds too.
    let batch: Vec<Incoming> = (0..3)
        .map(|i| {
            incoming(&mail(
                "bob@acme.test",
                "SEV 4 q",
                &format!("rl-bob-{i}@acme.test"),
                &[],
            ))
        })
        .collect();
    let out = ingest_batch(&store, &desk, &batch, now + Duration::minutes(20))
        .await
        .unwrap();
    assert_eq!(
        out.iter()
            .map(|o| o.decision.acknowledge)
            .collect::<Vec<_>>(),
        vec![true, true, false]
    );
    let c = store.counts().await.unwrap();
    assert_eq!((c.tickets, c.outbox_pending), (6, 4));

    // 61 minutes after the first reply only one of Jane's replies is within the hour.
    let later = ingest_one(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 later", "rl-later@acme.test", &[]),
        now + Duration::minutes(61),
    )
    .await;
    assert!(later.decision.acknowledge, "{}", later.decision.reason);
    assert_eq!(store.counts().await.unwrap().outbox_pending, 5);
}

/// Email cannot open Sev 1 or Sev 2: both the requested and the assigned severity are stored,
/// with the downgrade flagged and explained in history and acknowledgement.
async fn severity_downgrade_is_stored<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let cases = [
        ("[SEV 1] site down", 1, 3, true),
        ("Sev-2: login broken", 2, 4, true),
        ("SEV 4 question", 4, 4, false),
    ];
    for (i, (subject, requested, assigned, downgraded)) in cases.into_iter().enumerate() {
        let o = ingest_one(
            &store,
            &desk,
            &mail(
                "jane@acme.test",
                subject,
                &format!("sev-{i}@acme.test"),
                &[],
            ),
            now,
        )
        .await;
        let n = o.ticket.unwrap();
        let d = store.ticket_detail(n).await.unwrap();
        let t = &d.ticket;
        assert_eq!(t.requested_severity, Some(requested), "{subject}");
        assert_eq!(t.assigned_severity, assigned, "{subject}");
        assert_eq!(t.downgraded, downgraded, "{subject}");
        assert!(t.severity_given, "{subject}");
        let e = d
            .history
            .iter()
            .find(|e| e.kind == "severity")
            .unwrap_or_else(|| panic!("{subject}: no severity event"));
        assert_eq!(e.from, Some(requested.to_string()), "{subject}");
        assert_eq!(e.to, Some(assigned.to_string()), "{subject}");
        if downgraded {
            assert!(e.reason.contains("downgraded"), "{subject}: {}", e.reason);
        }
    }

    // No severity in the subject: the default, marked as not given.
    let o = ingest_one(
        &store,
        &desk,
        &mail("jane@acme.test", "Invoices", "sev-none@acme.test", &[]),
        now,
    )
    .await;
    let t = store.ticket_detail(o.ticket.unwrap()).await.unwrap().ticket;
    assert_eq!(
        (t.requested_severity, t.assigned_severity, t.severity_given),
        (None, 4, false)
    );
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

async fn run_sqlite<F, Fut>(suite: F)
where
    F: FnOnce(SqliteStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postdesk.sqlite");
    let store = SqliteStore::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    suite(store).await;
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

fn postgres_admin_url() -> String {
    match std::env::var("POSTDESK_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "POSTDESK_TEST_POSTGRES_URL is not set: the PostgreSQL store tests need a server.\n\
             Set it to a URL that may create databases, e.g.\n  \
             POSTDESK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432 cargo test --test store\n\
             or run the README's test command `scripts/test.sh`, which provides one."
        ),
    }
}

/// Runs `suite` on a fresh database named after the test, and drops that database afterwards
/// (also when the suite fails).
async fn run_postgres<F, Fut>(test: &str, suite: F)
where
    F: FnOnce(PgStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin = postgres_admin_url();
    let raw_name = format!(
        "pd_test_{}_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::SeqCst),
        test
    );
    let name: String = raw_name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(63)
        .collect();
    let url = create_database(&admin, &name)
        .await
        .unwrap_or_else(|e| panic!("creating database {name} on {admin}: {e}"));
    let store = PgStore::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    store.migrate().await.unwrap();
    let result = tokio::spawn(suite(store)).await;
    drop_database(&admin, &name).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn drop_database(admin: &str, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("{admin}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("dropping {name}: {e}"));
}

/// The SMTP hand-over mark takes the row out of the due list at once; a refusal after it puts the
/// row back without counting the attempt twice; a permanent failure records an event; source
/// state round-trips.
async fn a_refused_row_is_due_again_failure_is_recorded_source_state_round_trips<S: Store>(
    store: S,
) {
    let desk = desk();
    let now = t0();
    let n = new_ticket(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 y", "handover@acme.test", &[]),
        now,
    )
    .await;
    let id = claim_due(&store, now, 10).await.unwrap()[0].id;
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.oldest.is_some()), (1, true));
    // The server answered the dot with 451 (or never answered it): due again at its retry
    // time, one attempt so far, and not sent.
    assert!(
        store
            .mark_attempt_failed(T, id, "451 try later", now, Some(now))
            .await
            .unwrap()
    );
    assert_eq!(store.counts().await.unwrap().outbox_sent, 0);
    let back = claim_due(&store, now, 10).await.unwrap();
    assert_eq!((back.len(), back[0].attempts), (1, 1));
    assert_eq!(back[0].template, "acknowledgement");
    // Then 550: failed for good, with an event on the ticket.
    let mut tx = store.begin().await.unwrap();
    tx.fail_outbox(T, id, "550 no such user", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let c = store.counts().await.unwrap();
    assert_eq!((c.outbox_pending, c.outbox_sent), (0, 0));
    // A stale hand-over line for it (its take-back was never written) does not make it sent.
    store.mark_sent(T, &[id], now).await.unwrap();
    assert_eq!(store.counts().await.unwrap().outbox_sent, 0);
    let d = store.ticket_detail(n).await.unwrap();
    assert!(d.outbox[0].failed_at.is_some());
    assert!(d.outbox[0].sent_at.is_none());
    assert!(
        d.history
            .iter()
            .any(|e| e.kind == "delivery_failed" && e.reason.contains("550")),
        "{:?}",
        d.history
    );
    // Source state.
    let key = "imaps://support@example.test@imap.example.test:993/INBOX";
    assert_eq!(store.source_state(key).await.unwrap(), None);
    let st = postdesk::store::SourceState {
        uid_validity: 4_000_000_000,
        first_start_uid: 42,
    };
    store.set_source_state(key, st, now).await.unwrap();
    assert_eq!(store.source_state(key).await.unwrap(), Some(st));
}

// ---------------------------------------------------------------------------------------------
// Conversations: replies, strangers, statuses, reports, attachments
// ---------------------------------------------------------------------------------------------

/// A reply: `from`, `subject`, its own Message-ID, optionally `In-Reply-To`, and a body.
fn reply_mail(
    from: &str,
    subject: &str,
    message_id: &str,
    in_reply_to: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
    );
    if let Some(id) = in_reply_to {
        m.push_str(&format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"));
    }
    m.push_str("Date: Tue, 03 Mar 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&body.replace('\n', "\r\n"));
    m.into_bytes()
}

/// Moves a ticket to `status` the way a later engineer or time rule will: one decision applied.
async fn set_status<S: Store>(store: &S, n: i64, from: Status, to: Status, at: DateTime<Utc>) {
    let change = Decision {
        action: Action::Reply(Reply {
            ticket: n,
            matched_by: MatchedBy::Tag { ticket: n },
            role: Role::Staff,
            kind: ReplyKind::EngineerCommand,
        }),
        severity: None,
        message: None,
        status_change: Some(StatusChange {
            from,
            to,
            event: StatusEvent::EngineerSetsStatus,
        }),
        joiners: vec![],
        requester_bounced: false,
        update: TicketUpdate::default(),
        rejected: vec![],
        sla: None,
        events: vec![],
        acknowledge: false,
        reason: "test".into(),
        ignored: None,
        outbound: vec![],
        at,
    };
    let mut tx = store.begin().await.unwrap();
    let record = InboundRecord {
        raw: b"",
        mail: None,
        source: "test",
    };
    tx.apply(&change, record, &mut |_| Vec::new())
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// The customer's reply to the acknowledgement (by In-Reply-To), a watcher's reply by tag alone
/// and a stranger quoting the tag: two replies on the ticket without acknowledgement, quoted
/// history stripped from the stored text, and the stranger's own ticket, logged on both.
async fn replies_thread_onto_their_ticket_and_strangers_do_not<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let n = new_ticket(
        &store,
        &desk,
        &mail(
            "Jane <jane@acme.test>",
            "SEV 3 printer",
            "c-1@acme.test",
            &["bob@globex.test"],
        ),
        now,
    )
    .await;
    let ack = store.ticket_detail(n).await.unwrap().outbox[0]
        .message_id
        .clone();

    let body = "Still broken after the restart.\n\nOn Tue, 3 Mar 2026 at 10:00, Support <support@example.com> wrote:\n> we have received your request\n";
    let o = ingest_one(
        &store,
        &desk,
        &reply_mail(
            "Jane <JANE@acme.test>",
            "Re: [#1] SEV 3 printer",
            "c-2@acme.test",
            Some(&ack),
            body,
        ),
        now + Duration::minutes(5),
    )
    .await;
    assert_eq!(o.decision.action.name(), "reply", "{}", o.decision.reason);
    assert_eq!(o.ticket, Some(n));
    assert!(
        o.queued.is_empty() && !o.decision.acknowledge,
        "a reply gets no acknowledgement"
    );

    let tag = format!("AW: RE: [#{n}] SEV 3 printer");
    let o = ingest_one(
        &store,
        &desk,
        &reply_mail(
            "bob@globex.test",
            &tag,
            "c-3@globex.test",
            None,
            "Same here.\n",
        ),
        now + Duration::minutes(6),
    )
    .await;
    assert_eq!(
        (o.decision.action.name(), o.ticket),
        ("reply", Some(n)),
        "{}",
        o.decision.reason
    );

    let o = ingest_one(
        &store,
        &desk,
        &reply_mail(
            "mallory@evil.test",
            &tag,
            "c-4@evil.test",
            None,
            "Me too, give me access.\n",
        ),
        now + Duration::minutes(7),
    )
    .await;
    assert_eq!(
        o.decision.action.name(),
        "new_ticket",
        "{}",
        o.decision.reason
    );
    let m = o.ticket.unwrap();
    assert_ne!(m, n);

    let d = store.ticket_detail(n).await.unwrap();
    let kinds: Vec<_> = d
        .messages
        .iter()
        .map(|m| (m.from.as_str(), m.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("jane@acme.test", "customer"),
            ("jane@acme.test", "customer"),
            ("bob@globex.test", "customer")
        ]
    );
    assert_eq!(d.messages[1].text, "Still broken after the restart.");
    assert_eq!(d.outbox.len(), 1, "only the first message was acknowledged");
    assert_eq!(
        d.ticket.status, "in_triage",
        "a reply leaves a ticket in triage"
    );
    let stranger: Vec<_> = d.history.iter().filter(|e| e.kind == "stranger").collect();
    assert_eq!(stranger.len(), 1);
    assert_eq!(stranger[0].related_ticket, Some(m));
    let own = store.ticket_detail(m).await.unwrap();
    assert!(
        own.history
            .iter()
            .any(|e| e.kind == "stranger" && e.related_ticket == Some(n))
    );
    assert_eq!(
        own.participants.len(),
        1,
        "the stranger is alone on their own ticket"
    );
    assert!(
        !d.participants
            .iter()
            .any(|p| p.address == "mallory@evil.test")
    );
}

/// Statuses follow the customer: a reply moves customer_pending to engineer_pending, `#close`
/// closes close_pending, a reply within the window reopens (the reopened mail to requester and
/// watcher, one Message-ID each) and after it opens a new ticket that links the old one.
async fn customer_replies_move_statuses_reopen_and_link<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let n = new_ticket(
        &store,
        &desk,
        &mail(
            "jane@acme.test",
            "SEV 3 printer",
            "s-1@acme.test",
            &["bob@globex.test"],
        ),
        now,
    )
    .await;
    let subject = format!("Re: [#{n}] SEV 3 printer");
    set_status(&store, n, Status::InTriage, Status::CustomerPending, now).await;
    let o = ingest_one(
        &store,
        &desk,
        &reply_mail(
            "jane@acme.test",
            &subject,
            "s-2@acme.test",
            None,
            "Here are the logs.\n",
        ),
        now,
    )
    .await;
    assert_eq!(
        o.decision.status_change.map(|c| c.to),
        Some(Status::EngineerPending)
    );
    assert_eq!(
        store.ticket_detail(n).await.unwrap().ticket.status,
        "engineer_pending"
    );

    set_status(
        &store,
        n,
        Status::EngineerPending,
        Status::ClosePending,
        now,
    )
    .await;
    ingest_one(
        &store,
        &desk,
        &reply_mail(
            "jane@acme.test",
            &subject,
            "s-3@acme.test",
            None,
            "Thanks!\n#close\n",
        ),
        now,
    )
    .await;
    let d = store.ticket_detail(n).await.unwrap();
    assert_eq!(d.ticket.status, "closed");
    assert_eq!(d.ticket.closed_at, Some(now));

    let later = now + Duration::days(3);
    let o = ingest_one(
        &store,
        &desk,
        &reply_mail(
            "jane@acme.test",
            &subject,
            "s-4@acme.test",
            None,
            "It broke again.\n",
        ),
        later,
    )
    .await;
    assert_eq!(
        (o.decision.action.name(), o.ticket),
        ("reply", Some(n)),
        "{}",
        o.decision.reason
    );
    let d = store.ticket_detail(n).await.unwrap();
    assert_eq!(d.ticket.status, "engineer_pending");
    assert!(d.history.iter().any(|e| e.kind == "reopened"));
    let reopened: Vec<_> = d
        .outbox
        .iter()
        .filter(|o| o.template == "reopened")
        .collect();
    let mut to: Vec<_> = reopened.iter().map(|o| o.to.as_str()).collect();
    to.sort();
    assert_eq!(to, vec!["bob@globex.test", "jane@acme.test"]);
    assert_ne!(reopened[0].message_id, reopened[1].message_id);

    set_status(&store, n, Status::EngineerPending, Status::Closed, later).await;
    let much_later = later + Duration::days(15);
    let o = ingest_one(
        &store,
        &desk,
        &reply_mail(
            "jane@acme.test",
            &subject,
            "s-5@acme.test",
            None,
            "Again!\n",
        ),
        much_later,
    )
    .await;
    assert_eq!(
        o.decision.action.name(),
        "new_ticket",
        "{}",
        o.decision.reason
    );
    let m = o.ticket.unwrap();
    let d = store.ticket_detail(m).await.unwrap();
    assert_eq!(d.ticket.linked_ticket, Some(n));
    let ack = claim_due(&store, much_later, 100).await.unwrap();
    let ack = ack.iter().find(|a| a.ticket == Some(m)).unwrap();
    assert!(contains(
        &ack.rendered,
        &format!("It continues ticket [#{n}]")
    ));
    assert_eq!(
        store.ticket_detail(n).await.unwrap().ticket.status,
        "closed"
    );
}

/// A bounce of the acknowledgement lands on its ticket as an event and flags the requester;
/// nothing is answered and no ticket is opened.
async fn bounce_of_our_mail_lands_on_its_ticket<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let n = new_ticket(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 printer", "bb-1@acme.test", &[]),
        now,
    )
    .await;
    let ack = store.ticket_detail(n).await.unwrap().outbox[0]
        .message_id
        .clone();
    let raw = format!(
        "From: MAILER-DAEMON@mx.acme.test (Mail Delivery System)\r\n\
         To: support@example.com\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <dsn-2@mx.acme.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not be delivered.\r\n\
         --b1\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.acme.test\r\n\
         \r\n\
         Final-Recipient: rfc822; jane@acme.test\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <jane@acme.test>: Recipient address rejected\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         From: Support <support@example.com>\r\n\
         To: jane@acme.test\r\n\
         Subject: [#{n}] SEV 3 printer\r\n\
         Message-ID: <{ack}>\r\n\
         \r\n\
         --b1--\r\n"
    );
    let before = store.counts().await.unwrap();
    let o = ingest_one(&store, &desk, raw.as_bytes(), now).await;
    assert_eq!(
        (o.decision.action.name(), o.ticket),
        ("bounce", Some(n)),
        "{}",
        o.decision.reason
    );
    assert!(o.queued.is_empty());
    let after = store.counts().await.unwrap();
    assert_eq!(
        (after.tickets, after.outbox_pending),
        (before.tickets, before.outbox_pending)
    );
    let d = store.ticket_detail(n).await.unwrap();
    assert!(d.ticket.requester_bounced);
    let bounce = d.history.iter().find(|e| e.kind == "bounce").unwrap();
    assert_eq!(bounce.to.as_deref(), Some("jane@acme.test"));
    assert!(bounce.reason.contains("5.1.1"), "{}", bounce.reason);
    assert!(d.history.iter().any(|e| e.kind == "flagged"));
}

/// Attachments are recorded with name, type, size, Content-ID and inline flag, and their bytes
/// are the stored raw mail's `offset_body..offset_end`.
async fn attachments_are_recorded_and_reachable<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let raw = "From: jane@acme.test\r\nTo: support@example.com\r\nSubject: SEV 3 logs\r\n\
        Message-ID: <att-1@acme.test>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
        --m\r\nContent-Type: text/plain\r\n\r\nLogs attached.\r\n\
        --m\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n\
        Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n\
        --m\r\nContent-Type: image/png\r\nContent-ID: <logo@acme.test>\r\n\
        Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n\
        --m--\r\n";
    let n = new_ticket(&store, &desk, raw.as_bytes(), now).await;
    let d = store.ticket_detail(n).await.unwrap();
    let a = &d.messages[0].attachments;
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0].filename.as_deref(), Some("report.pdf"));
    assert_eq!(
        (a[0].content_type.as_str(), a[0].size, a[0].inline),
        ("application/pdf", 12, false)
    );
    assert_eq!(a[1].content_id.as_deref(), Some("logo@acme.test"));
    assert!(a[1].inline);
    let body = &raw.as_bytes()[a[0].offset_body as usize..a[0].offset_end as usize];
    assert!(
        String::from_utf8_lossy(body).trim() == "JVBERi0xLjQKJcfs",
        "{:?}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(a[0].transfer_encoding, "base64");
}

/// One `sqlite::<suite>` and one `postgres::<suite>` test per suite.
macro_rules! store_tests {
    ($($suite:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $suite() {
                    super::run_sqlite(super::$suite::<super::SqliteStore>).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $suite() {
                    super::run_postgres(stringify!($suite), super::$suite::<super::PgStore>)
                        .await;
                }
            )*
        }
    };
}

/// The owner the suites claim outbox rows as.
const T: &str = "test-worker";

/// The rows due at `now`, claimed by [`T`] with a lease that ends at `now` (so the next call
/// at the same instant sees them again, as a plain query would).
async fn claim_due<S: Store>(
    store: &S,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<postdesk::store::OutboxItem>, StoreError> {
    store.claim_outbox(T, now, now, limit).await
}

/// Several claimers at once (PostgreSQL: concurrent transactions) never get the same row, and
/// together they get every due row.
async fn two_claimers_never_get_the_same_row<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let raws: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            mail(
                &format!("c{i}@acme.test"),
                "SEV 3 x",
                &format!("claim-{i}@acme.test"),
                &[],
            )
        })
        .collect();
    for raw in &raws {
        ingest_one(&store, &desk, raw, now).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            let owner = format!("worker-{w}");
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim_outbox(&owner, now, now + Duration::minutes(5), 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.iter().map(|i| i.id));
                tokio::task::yield_now().await;
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "a row was claimed twice");
    assert_eq!(total, 40, "every due row was claimed once");
}

/// A lease keeps a row from others until it runs out; then another worker takes it over, and
/// from then on only the new holder marks it. A released row is free at once.
async fn an_expired_lease_is_taken_over_and_only_the_owner_marks<S: Store>(store: S) {
    let desk = desk();
    let now = t0();
    let n = new_ticket(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 x", "lease@acme.test", &[]),
        now,
    )
    .await;
    let lease = Duration::minutes(2);
    let a = store.claim_outbox("a", now, now + lease, 10).await.unwrap();
    assert_eq!(a.len(), 1);
    let id = a[0].id;
    assert!(
        store
            .claim_outbox("b", now + Duration::minutes(1), now + lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "claimed while another holds it"
    );
    // Worker a is gone; its lease runs out and b takes the row over.
    let later = now + lease;
    let b = store
        .claim_outbox("b", later, later + lease, 10)
        .await
        .unwrap();
    assert_eq!(b.iter().map(|i| i.id).collect::<Vec<_>>(), vec![id]);
    // a comes back too late: it can mark nothing.
    assert_eq!(store.mark_sent("a", &[id], later).await.unwrap(), 0);
    assert!(
        !store
            .mark_attempt_failed("a", id, "421", later, Some(later))
            .await
            .unwrap()
    );
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.fail_outbox("a", id, "550", later).await,
        Err(StoreError::NotFound)
    ));
    drop(tx);
    // b releases it (a clean stop): c gets it at once, and c's mark counts.
    assert_eq!(store.release_outbox("b").await.unwrap(), 1);
    let c = store
        .claim_outbox("c", later, later + lease, 10)
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(store.mark_sent("b", &[id], later).await.unwrap(), 0);
    assert_eq!(store.mark_sent("c", &[id], later).await.unwrap(), 1);
    let d = store.ticket_detail(n).await.unwrap();
    assert_eq!(d.outbox[0].sent_at, Some(later));
    assert_eq!(d.outbox[0].attempts, 1);
    assert!(
        store
            .claim_outbox(
                "d",
                later + Duration::days(1),
                later + Duration::days(2),
                10
            )
            .await
            .unwrap()
            .is_empty()
    );
}

/// One worker reads a mailbox: it holds the lease while it renews it; another takes over only
/// once the lease has run out, or at once when it is given up.
async fn one_worker_leads_a_mailbox_and_another_takes_over_when_its_lease_runs_out<S: Store>(
    store: S,
) {
    let src = "imaps://support%40example.test@imap.example.test:993/INBOX";
    let now = t0();
    let s = Duration::seconds;
    assert_eq!(store.source_leader(src, now).await.unwrap(), None);
    assert!(store.lead_source(src, "a", now, now + s(10)).await.unwrap());
    assert!(
        !store
            .lead_source(src, "b", now + s(1), now + s(11))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .source_leader(src, now + s(1))
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
    // a renews; b still waits.
    assert!(
        store
            .lead_source(src, "a", now + s(5), now + s(15))
            .await
            .unwrap()
    );
    assert!(
        !store
            .lead_source(src, "b", now + s(12), now + s(22))
            .await
            .unwrap()
    );
    // a stops renewing (dead): b takes over when the lease runs out, and a cannot take it back.
    assert!(
        store
            .lead_source(src, "b", now + s(15), now + s(25))
            .await
            .unwrap()
    );
    assert!(
        !store
            .lead_source(src, "a", now + s(16), now + s(26))
            .await
            .unwrap()
    );
    store.release_source(src, "a").await.unwrap();
    assert_eq!(
        store
            .source_leader(src, now + s(16))
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );
    // b stops cleanly: a takes over at once.
    store.release_source(src, "b").await.unwrap();
    assert_eq!(store.source_leader(src, now + s(16)).await.unwrap(), None);
    assert!(
        store
            .lead_source(src, "a", now + s(16), now + s(26))
            .await
            .unwrap()
    );
    // Another mailbox is another lease.
    assert!(
        store
            .lead_source("maildir:/x", "b", now + s(16), now + s(26))
            .await
            .unwrap()
    );
}

/// Two writers take the same message at the same moment (a worker and `ingest` from the MTA,
/// or two workers during a failover): one opens the ticket, the other records a duplicate, and
/// neither batch fails on the unique Message-ID.
async fn a_message_id_race_between_two_writers_is_a_duplicate_not_a_failed_batch<S: Store>(
    store: S,
) {
    let desk = std::sync::Arc::new(desk());
    let now = t0();
    for round in 0..20 {
        let raw = mail(
            &format!("r{round}@acme.test"),
            "SEV 3 race",
            &format!("race-{round}@acme.test"),
            &[],
        );
        let mut writers = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let (store, desk, raw) = (store.clone(), desk.clone(), raw.clone());
            writers.spawn(async move { ingest_batch(&store, &desk, &[incoming(&raw)], now).await });
        }
        let mut actions = Vec::new();
        while let Some(r) = writers.join_next().await {
            let out = r
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a batch failed: {e}"));
            actions.push(out[0].decision.action.name().to_string());
        }
        actions.sort();
        assert_eq!(actions, vec!["duplicate", "new_ticket"], "round {round}");
    }
    assert_eq!(store.counts().await.unwrap().tickets, 20);
}

store_tests!(
    new_ticket_stores_ticket_participants_message_events_and_one_acknowledgement,
    same_message_id_twice_is_one_ticket_and_one_acknowledgement,
    dropped_transaction_leaves_nothing,
    quarantine_is_stored_once_per_distinct_content,
    bounce_is_stored_without_a_ticket,
    list_tickets_filters_by_status,
    ticket_detail_of_a_missing_number_is_not_found,
    mark_sent_removes_the_row_from_due_outbox,
    failed_attempt_waits_until_retry_at_and_none_gives_up,
    rate_limit_allows_two_acknowledgements_per_sender_per_hour,
    severity_downgrade_is_stored,
    a_refused_row_is_due_again_failure_is_recorded_source_state_round_trips,
    replies_thread_onto_their_ticket_and_strangers_do_not,
    customer_replies_move_statuses_reopen_and_link,
    bounce_of_our_mail_lands_on_its_ticket,
    attachments_are_recorded_and_reachable,
    two_claimers_never_get_the_same_row,
    an_expired_lease_is_taken_over_and_only_the_owner_marks,
    one_worker_leads_a_mailbox_and_another_takes_over_when_its_lease_runs_out,
    a_message_id_race_between_two_writers_is_a_duplicate_not_a_failed_batch,
);

/// On PostgreSQL the ticket a decision reads is locked until its transaction ends, so a second
/// writer cannot decide on the same ticket in between (checked with `FOR UPDATE NOWAIT`, which
/// answers at once instead of waiting: no timing in the test).
#[tokio::test]
async fn postgres_locks_the_ticket_a_decision_reads_until_it_commits() {
    let admin = postgres_admin_url();
    let name = format!("pd_test_{}_ticket_lock", std::process::id());
    let url = create_database(&admin, &name)
        .await
        .unwrap_or_else(|e| panic!("creating database {name} on {admin}: {e}"));
    let result = tokio::spawn(ticket_lock(url)).await;
    drop_database(&admin, &name).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn ticket_lock(url: String) {
    use sqlx::Connection;
    let store = PgStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let desk = desk();
    let now = t0();
    let n = new_ticket(
        &store,
        &desk,
        &mail("jane@acme.test", "SEV 3 x", "lk-1@acme.test", &[]),
        now,
    )
    .await;
    let raw = reply_mail(
        "jane@acme.test",
        &format!("Re: [#{n}] SEV 3 x"),
        "lk-2@acme.test",
        None,
        "more\n",
    );
    let reply = parse(&raw, desk.limits.max_message_size).unwrap();
    let keys = postdesk::desk::thread::keys(&reply, "#");
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let ctx = tx.context(&reply, &keys, now).await.unwrap();
    assert!(ctx.ticket(n).is_some(), "the tag's ticket was read");
    match try_lock(&mut other, n).await {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("55P03"), "{e}"),
        other => panic!("the ticket row was not locked: {other:?}"),
    }
    tx.commit().await.unwrap();
    assert_eq!(
        try_lock(&mut other, n).await.unwrap().len(),
        1,
        "free after the commit"
    );
}

async fn try_lock(
    conn: &mut sqlx::PgConnection,
    n: i64,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    sqlx::query("SELECT id FROM tickets WHERE id = $1 FOR UPDATE NOWAIT")
        .bind(n)
        .fetch_all(conn)
        .await
}
