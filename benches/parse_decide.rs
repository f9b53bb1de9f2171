//! Hot path: parse + decide for one message, no IO (target: 20,000 messages/s on one core).

use std::hint::black_box;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use postdesk::desk::{MailContext, decide_parsed};
use postdesk::mail::parse;

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let plain = b"From: Jane Doe <jane@acme.test>\r\nTo: support@example.com\r\nCc: bob@acme.test\r\nSubject: RE: AW: [SEV 3] Reports page times out\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench-1@acme.test>\r\nIn-Reply-To: <x@acme.test>\r\nReferences: <r@acme.test> <x@acme.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\nthe reports page times out for every user since this morning.\r\nRegards, Jane\r\n".to_vec();
    let outlook = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/outlook-sev3-plain.eml"
    ))
    .unwrap_or_else(|_| plain.clone());
    let encoded = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/encoded-subject-utf8.eml"
    ))
    .unwrap_or_else(|_| plain.clone());
    vec![
        ("plain", plain),
        ("outlook", outlook),
        ("encoded_subject", encoded),
    ]
}

fn bench(c: &mut Criterion) {
    // The embedded defaults' policy, as `postdesk run` without a config file uses it.
    let Ok(config) = postdesk::config::Config::load_with_env(None, &Default::default()) else {
        panic!("the embedded defaults load");
    };
    let policy = config.policy();
    let ctx = MailContext::default();
    let now = Utc::now();
    let mut group = c.benchmark_group("parse_decide");
    group.throughput(Throughput::Elements(1));
    for (name, raw) in messages() {
        group.bench_function(name, |b| {
            b.iter(|| {
                let parsed = parse(black_box(&raw), 25 * 1024 * 1024);
                black_box(decide_parsed(&parsed, &ctx, &policy, now))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
