//! The delivery loop's claims, through the library with a real SQLite store and a transport
//! that counts what it is given: a mail is attempted only while its claim will outlast the
//! attempt, and what could not start in time goes back for anyone to claim at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use postdesk::outbound::deliver::failure::FailureNotices;
use postdesk::outbound::deliver::journal::WorkerJournal;
use postdesk::outbound::deliver::{Attempt, Delivery, DeliverySettings, Transport};
use postdesk::store::{OutboxItem, SqliteStore, Store};

/// Takes every mail and counts them.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Transport for Counting {
    fn concurrency(&self) -> usize {
        2
    }

    async fn attempt(&self, item: OutboxItem) -> (OutboxItem, Attempt) {
        self.0.fetch_add(1, Ordering::SeqCst);
        (item, Attempt::Delivered)
    }
}

async fn store_with_acknowledgements(dir: &std::path::Path, n: usize) -> SqliteStore {
    let url = format!("sqlite:{}", dir.join("postdesk.db").display());
    let store = SqliteStore::open(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let config = postdesk::config::Config::load_with_env(
        None,
        &[(
            "POSTDESK_TEMPLATES_DIR".to_string(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/templates").to_string(),
        )]
        .into(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let desk = postdesk::pipeline::Desk::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
    let items: Vec<postdesk::pipeline::Incoming> = (0..n)
        .map(|i| postdesk::pipeline::Incoming {
            raw: common::customer_mail(
                &format!("c{i}@acme.test"),
                "SEV 3 printer",
                &format!("d{i}@acme.test"),
            )
            .into(),
            source: "test".into(),
            silent: false,
            truncated_from: None,
        })
        .collect();
    postdesk::pipeline::ingest_batch(&store, &desk, &items, chrono::Utc::now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
}

fn settings(owner: &str, lease: Duration, attempt_limit: Duration) -> DeliverySettings {
    DeliverySettings {
        owner: owner.into(),
        lease,
        attempt_limit,
        batch: 256,
        retry_min: Duration::from_secs(1),
        retry_max: Duration::from_secs(2),
        max_attempts: 3,
    }
}

fn notices() -> FailureNotices {
    let config = postdesk::config::Config::load_with_env(None, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    FailureNotices::new(&config, None)
}

#[tokio::test]
async fn a_mail_starts_only_while_its_claim_outlasts_the_attempt_and_the_rest_go_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = store_with_acknowledgements(dir.path(), 5).await;
    let journal = |owner: &str| {
        WorkerJournal::open(&dir.path().join("outbox.journal"), owner)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // An attempt may take as long as the whole claim: no mail may start.
    let late = Arc::new(Counting::default());
    let a = Delivery::new(
        late.clone(),
        settings("w-a", Duration::from_secs(60), Duration::from_secs(60)),
        journal("w-a"),
        notices(),
    );
    let round = a
        .deliver_due(&store)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((round.sent, round.late), (0, 5));
    assert_eq!(late.0.load(Ordering::SeqCst), 0, "a mail started too late");
    // Given back at once: another worker sends them now, not when the lease runs out.
    let on_time = Arc::new(Counting::default());
    let b = Delivery::new(
        on_time.clone(),
        settings("w-b", Duration::from_secs(60), Duration::from_secs(10)),
        journal("w-b"),
        notices(),
    );
    let round = b
        .deliver_due(&store)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((round.sent, round.late), (5, 0));
    assert_eq!(on_time.0.load(Ordering::SeqCst), 5);
    assert_eq!(
        store
            .counts()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .outbox_sent,
        5
    );
}
