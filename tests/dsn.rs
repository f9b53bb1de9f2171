//! Bounces and feedback reports from real MTAs and providers (fixtures/bounces, see SOURCES.md):
//! each sample is read through the library's public API and must give the kind, the recipients
//! with their status, and the Message-ID of the mail it is about, as read off the sample by hand.
//! The shared corpus (../shared/corpus), when checked out, adds one more bounce and many mails
//! that are not reports.

use std::path::{Path, PathBuf};

use mail_parser::MessageParser;
use postdesk::mail::dsn::{ReportKind, looks_like_report, read_report, read_report_raw};

/// What one sample must give. `kind: None` means "not a report".
struct Case {
    file: &'static str,
    kind: Option<ReportKind>,
    /// Every recipient, in order: (address, status).
    recipients: &'static [(&'static str, Option<&'static str>)],
    original_message_id: Option<&'static str>,
}

use ReportKind::{Bounce, Delay, Feedback};

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Text-only bounces: X-Failed-Recipients and the MTA's prose, original in a pasted block.
    Case { file: "qmail-user-unknown.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.ne.jp", Some("5.5.0"))],
        original_message_id: Some("000000000.9999999999999.JavaMail.postmaster@mailhub") },
    Case { file: "exim-two-recipients.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.jp", Some("5.1.1")), ("sabatora@example.jp", Some("5.2.1"))],
        original_message_id: Some("E1X58pB-0004bW-2s@marutamachi.example.org") },
    Case { file: "exim-mail-from-rejected.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.ed.jp", Some("5.7.0"))],
        original_message_id: Some("E1P1ce6-000Egt-GZ@e1.example.org") },
    Case { file: "yahoo-user-unknown.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.org", Some("5.1.1"))],
        original_message_id: Some("6AE6249A-E7A8-4980-862C-F499F6B8E7C5@y.example.co.jp") },
    Case { file: "gmail-failed-permanently.eml", kind: Some(Bounce),
        recipients: &[("aougoueioaldljgoiuiorghladkgke@example.fr", Some("5.1.1"))],
        original_message_id: Some("45B7FBD7-1218-4FCD-ACA1-4706F111E682@gmail.com") },
    Case { file: "gmail-recipient-rejected.eml", kind: Some(Bounce),
        recipients: &[("awfawfawfawfawfaw@someserverhere.com", Some("5.1.0"))],
        original_message_id: Some("CAKsfaBUUGqVZiaMrmH3TRPfq1odQPtM7Ey5YW1SgyJJRHtAjgw@mail.gmail.com") },
    Case { file: "gmx-header-copy.eml", kind: Some(Bounce),
        recipients: &[("shironeko@example.jp", Some("5.1.1"))],
        original_message_id: Some("trinity-fde69d4e-12a0-462b-9dcd-7312ce506d03-1417194013122@3capp-mailcom-lxa07") },
    Case { file: "domino-not-listed.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.jp", None)],
        original_message_id: None },
    Case { file: "lotusnotes-failure-reasons.eml", kind: Some(Bounce),
        recipients: &[("kijitora@u1.example.co.jp", None)],
        original_message_id: Some("000000000.0000000000000.notes@example.co.jp") },
    // Exchange 2003: prose plus a message/rfc822 part, no delivery-status.
    Case { file: "exchange2003-recipient-not-recognized.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.jp", None)],
        original_message_id: Some("00000000000.ffffffffffff.ff@example.net") },
    // RFC 3464 multipart/report.
    Case { file: "exchange2007-auth-required.eml", kind: Some(Bounce),
        recipients: &[("neko-nyaan@example.jp", Some("5.7.1"))],
        original_message_id: Some("78f44d2b2ea5763064d21edacd9d8d18@example.net") },
    Case { file: "exchange2007-recipient-not-found.eml", kind: Some(Bounce),
        recipients: &[("mikeneko@example.co.jp", Some("5.1.1"))],
        original_message_id: None },
    Case { file: "outlookcom-two-recipients.eml", kind: Some(Bounce),
        recipients: &[("sabineko@example.co.jp", Some("5.1.1")), ("mikeneko@example.co.jp", Some("5.2.2"))],
        original_message_id: Some("BLU436-SMTP695D62048105F50EF3A1B8BA770@phx.gbl") },
    Case { file: "gmail-address-not-found.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.de", Some("5.0.0"))],
        original_message_id: Some("00222222-2222-2222-2222-FF00FFFF0000@example.jp") },
    Case { file: "amazonses-mailbox-full.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.jp", Some("5.0.0"))],
        original_message_id: Some("00000132d6ca0cd4-ff6d8ee5-29a0-4501-a68a-3ff8695254bb-000000@email.amazonses.com") },
    Case { file: "sendmail-user-unknown.eml", kind: Some(Bounce),
        recipients: &[("userunknown@bouncehammer.jp", Some("5.1.1"))],
        original_message_id: Some("E1C50F1B-1C83-4820-BC36-AC6FBFBE8568@example.org") },
    Case { file: "sendmail-rfc3464-example.eml", kind: Some(Bounce),
        recipients: &[("louisl@larry.slip.umd.edu", Some("4.0.0"))],
        original_message_id: None },
    Case { file: "postfix-two-recipients.eml", kind: Some(Bounce),
        recipients: &[("filtered@example.co.jp", Some("5.2.1")), ("userunknown@example.co.jp", Some("5.1.1"))],
        original_message_id: None },
    Case { file: "postfix-connection-timed-out.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.com", Some("4.4.1"))],
        original_message_id: Some("143E20AB-3911-4809-8B49-BB1A17513571@mail.ru") },
    Case { file: "courier-user-unknown.eml", kind: Some(Bounce),
        recipients: &[("kijitora@example.co.jp", Some("5.0.0"))],
        original_message_id: None },
    // Delay notices, the original as text/rfc822-headers.
    Case { file: "delay-rfc822-headers.eml", kind: Some(Delay),
        recipients: &[("kijitora@example.net", Some("4.4.0"))],
        original_message_id: Some("000000000000000@list.example.jp") },
    Case { file: "postfix-delayed-quota.eml", kind: Some(Delay),
        recipients: &[("kijitora-cat@mx4.gr3.example.jp", Some("4.3.0"))],
        original_message_id: Some("00000000000000000000000000000000000000000@example.org") },
    // ARF feedback loops.
    Case { file: "arf-terra-abuse.eml", kind: Some(Feedback),
        recipients: &[],
        original_message_id: Some("f6fbba8a761ce682e1b00a323a21b372@example.net") },
    Case { file: "arf-bluetie-many-recipients.eml", kind: Some(Feedback),
        recipients: &[
            ("db0555c94208f7bc605b02cf12c0535a@hotmail.com", None),
            ("d26177554864b21eb92fbced1e696da7@gmail.com", None),
            ("6b54b77d9b4cd5b40b86311fcb74ee5b@yahoo.com", None),
            ("c6da7aca97ea42c2d6e9df5a8bace588@buffaloirishcenter.com", None),
            ("51712cc5a93bc0b4f54fcc6dc2034bf1@olv-bvs.org", None),
            ("eede0a60fc602ccf4d31ea2d4d98ecd8@yahoo.com", None),
            ("1fdde07d0bba4ebabf4c7a71bdc5fe86@gmail.com", None),
            ("30d6bd9f82cf8d96a074a869555177d9@gmail.com", None),
            ("294ff460c489fd67651f538343c3364b@yahoo.com", None),
            ("06584cbe54a02c263a357fa6f8ed4cd5@uh.edu", None),
            ("b87646bcf4b7c616b0ec02455095856a@yahoo.com", None),
            ("965899d0e3d2222e286d5aa8defb97e2@aol.com", None),
            ("af37159eeb4a5afa82e1060680a5caf5@gmail.com", None),
            ("1e8821ea9308765e64a61837be6feb26@gmail.com", None),
            ("2686ee43da772e92c443e1075ed1c9c0@yahoo.com", None),
            ("47c9ee628c4b1b9bbbd5c0480e8e6ef8@yahoo.com", None),
            ("ebd6377114aafdc0a62977c874e92df6@yahoo.com", None),
            ("5e9e489a2485e4b55b6e437e10988015@excite.com", None),
            ("be91f91b7356e42c377a4d39a566b912@roadrunner.com", None),
            ("f9bace9796bc041f086fc361d2f24f87@yahoo.com", None),
        ],
        original_message_id: Some("b29c41a473f2$cf33f360$db78e61a$@example.net") },
    Case { file: "arf-yahoo-abuse.eml", kind: Some(Feedback),
        recipients: &[("user@yahoo.com", None)],
        original_message_id: Some("20120711015015.4A8BE2E088E@www.example.com") },
    Case { file: "arf-aol-abuse.eml", kind: Some(Feedback),
        recipients: &[("redacted@aol.com", None)],
        original_message_id: Some("20101117174130.28884.55421@luna") },
    // Not reports.
    Case { file: "not-bounce-zimbra-vacation.eml", kind: None, recipients: &[], original_message_id: None },
    Case { file: "not-bounce-forwarded-as-attachment.eml", kind: None, recipients: &[], original_message_id: None },
];

fn bounces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bounces")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_sample_gives_kind_recipients_status_and_original() {
    let mut failures = Vec::new();
    for case in CASES {
        let raw = read(&bounces_dir().join(case.file));
        let report = read_report_raw(&raw);
        let kind = report.as_ref().map(|r| r.kind);
        let recipients: Vec<(String, Option<String>)> = report
            .as_ref()
            .map(|r| {
                r.recipients
                    .iter()
                    .map(|x| (x.address.clone(), x.status.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let want_recipients: Vec<(String, Option<String>)> = case
            .recipients
            .iter()
            .map(|(a, s)| (a.to_string(), s.map(str::to_string)))
            .collect();
        let original = report.as_ref().and_then(|r| r.original_message_id.clone());
        if kind != case.kind
            || recipients != want_recipients
            || original.as_deref() != case.original_message_id
        {
            failures.push(format!(
                "{}:\n  kind {kind:?}, want {:?}\n  recipients {recipients:?}\n  want       {want_recipients:?}\n  original {original:?}, want {:?}",
                case.file, case.kind, case.original_message_id
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_file_is_in_the_table_and_in_sources() {
    let sources = String::from_utf8_lossy(&read(&bounces_dir().join("SOURCES.md"))).into_owned();
    let mut names: Vec<String> = std::fs::read_dir(bounces_dir())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    names.sort();
    assert!(names.len() >= 25, "only {} samples", names.len());
    for name in &names {
        assert!(
            CASES.iter().any(|c| c.file == name),
            "{name} has no expectation in CASES"
        );
        assert!(
            sources.contains(name.as_str()),
            "{name} is not in SOURCES.md"
        );
    }
}

#[test]
fn reports_look_like_reports_by_envelope() {
    // Every report in the set carries at least one envelope signal; of the two that are not
    // reports, the Zimbra vacation reply was sent with a null Return-Path (RFC 3834 asks for it),
    // so only the forwarded mail is clean by envelope.
    for case in CASES {
        let raw = read(&bounces_dir().join(case.file));
        let Some(msg) = MessageParser::default().parse(&raw) else {
            panic!("{} does not parse", case.file);
        };
        let want = case.file != "not-bounce-forwarded-as-attachment.eml";
        assert_eq!(looks_like_report(&msg), want, "{}", case.file);
        // read_report on a parsed message and on raw bytes agree.
        assert_eq!(read_report(&msg), read_report_raw(&raw), "{}", case.file);
    }
}

#[test]
fn actions_subjects_references_and_mtas_of_some_samples() {
    let report = |file: &str| {
        read_report_raw(&read(&bounces_dir().join(file)))
            .unwrap_or_else(|| panic!("{file} is not read as a report"))
    };

    // Delay notices mark each recipient delayed; bounces read from prose say failed.
    let delay = report("postfix-delayed-quota.eml");
    assert_eq!(delay.recipients[0].action.as_deref(), Some("delayed"));
    assert_eq!(delay.original_subject.as_deref(), Some("Nyaaaan"));
    assert_eq!(delay.reporting_mta.as_deref(), Some("mx4.gr3.example.jp"));
    let exim = report("exim-two-recipients.eml");
    assert_eq!(exim.recipients[1].action.as_deref(), Some("failed"));
    assert_eq!(exim.original_subject.as_deref(), Some("test from Exim 1"));
    assert!(
        exim.recipients[0]
            .diagnostic
            .as_deref()
            .is_some_and(|d| d.contains("User Unknown")),
        "{:?}",
        exim.recipients[0].diagnostic
    );

    // The Exim diagnostic names the local part only; X-Failed-Recipients gives the address.
    let exim_mail_from = report("exim-mail-from-rejected.eml");
    assert!(
        exim_mail_from.recipients[0]
            .diagnostic
            .as_deref()
            .is_some_and(|d| d.contains("Please use the smtp server of your ISP")),
        "{:?}",
        exim_mail_from.recipients[0].diagnostic
    );

    // ARF: the feedback type as action, who sent the reported mail in the diagnostic.
    let bluetie = report("arf-bluetie-many-recipients.eml");
    assert_eq!(bluetie.kind, ReportKind::Feedback);
    assert_eq!(bluetie.recipients.len(), 20);
    assert_eq!(
        bluetie.recipients[0].address,
        "db0555c94208f7bc605b02cf12c0535a@hotmail.com"
    );
    assert_eq!(
        bluetie.recipients[19].address,
        "f9bace9796bc041f086fc361d2f24f87@yahoo.com"
    );
    assert_eq!(bluetie.recipients[0].action.as_deref(), Some("abuse"));
    assert!(
        bluetie.recipients[0]
            .diagnostic
            .as_deref()
            .is_some_and(|d| d.contains("Original-Mail-From: cpinto@example.net")),
        "{:?}",
        bluetie.recipients[0].diagnostic
    );
    assert_eq!(
        bluetie.original_message_id.as_deref(),
        Some("b29c41a473f2$cf33f360$db78e61a$@example.net")
    );
    assert_eq!(
        report("arf-yahoo-abuse.eml").original_subject.as_deref(),
        Some("Some subject")
    );

    // Reporting-MTA from the delivery-status part, or from the text of a prose bounce.
    let mtas = [
        ("sendmail-user-unknown.eml", Some("smtpgw.example.jp")),
        (
            "outlookcom-two-recipients.eml",
            Some("blu004-omc3s20.o.example.com"),
        ),
        (
            "exchange2007-recipient-not-found.eml",
            Some("mx4.example.org"),
        ),
        ("qmail-user-unknown.eml", Some("mx4.example.jp")),
        ("sendmail-rfc3464-example.eml", Some("cs.utk.edu")),
    ];
    for (file, want) in mtas {
        assert_eq!(report(file).reporting_mta.as_deref(), want, "{file}");
    }

    // Gmail's own delivery-status part repeats the original Message-ID; the returned copy has it
    // too, and its subject.
    let gmail = report("gmail-address-not-found.eml");
    assert_eq!(gmail.original_subject.as_deref(), Some("Nyaaan"));
    assert!(gmail.original_references.is_empty());
}

#[test]
fn bounces_survive_mangling_without_panic() {
    // Truncations and byte flips of every sample: read_report must return, never panic.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in CASES {
        let raw = read(&bounces_dir().join(case.file));
        for cut in [
            0,
            1,
            raw.len() / 3,
            raw.len() / 2,
            raw.len().saturating_sub(1),
        ] {
            let _ = read_report_raw(raw.get(..cut).unwrap_or_default());
        }
        for _ in 0..20 {
            let mut mangled = raw.clone();
            for _ in 0..8 {
                let len = mangled.len().max(1) as u64;
                let at = (next() % len) as usize;
                if let Some(b) = mangled.get_mut(at) {
                    *b = (next() & 0xff) as u8;
                }
            }
            let _ = read_report_raw(&mangled);
        }
    }
}

/// Every file under `dir`, sorted, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn shared_corpus_bounce_and_figures() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let mut corpus_files = Vec::new();
    if corpus.is_dir() {
        files_under(&corpus, &mut corpus_files);
    } else {
        eprintln!(
            "no shared corpus at {}; figures cover fixtures only",
            corpus.display()
        );
    }
    // Reference data only: README and expectation files are not mail, and the gzipped
    // pathological message needs a decompressor this crate does not depend on.
    corpus_files.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name != "README.md" && !name.ends_with(".yml") && !name.ends_with(".gz")
    });

    if let Some(bounce) = corpus_files
        .iter()
        .find(|p| p.ends_with("rt/multipart-report"))
    {
        let report =
            read_report_raw(&read(bounce)).unwrap_or_else(|| panic!("rt/multipart-report"));
        assert_eq!(report.kind, ReportKind::Bounce);
        assert_eq!(report.recipients.len(), 1);
        assert_eq!(
            report.recipients[0].address,
            "jesmund@mailbox.other.example.com"
        );
        assert_eq!(report.recipients[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(
            report.original_message_id.as_deref(),
            Some("200308221615.h7MGFGac020135@mx12.other.example.com")
        );
        assert_eq!(report.original_subject.as_deref(), Some("Thank you!"));
    }

    let mut fixture_files = Vec::new();
    files_under(&bounces_dir(), &mut fixture_files);
    fixture_files.retain(|p| p.extension().is_some_and(|e| e == "eml"));

    for (label, files) in [
        ("fixtures/bounces", &fixture_files),
        ("shared corpus", &corpus_files),
    ] {
        let (mut some, mut with_id, mut recipients) = (0, 0, 0);
        let mut reports = Vec::new();
        for file in files {
            if let Some(r) = read_report_raw(&read(file)) {
                some += 1;
                recipients += r.recipients.len();
                if r.original_message_id.is_some() {
                    with_id += 1;
                }
                reports.push(file.file_name().map(|n| n.to_string_lossy().into_owned()));
            }
        }
        eprintln!(
            "{label}: {} files, read_report Some for {some} ({recipients} recipient entries), {with_id} with an original Message-ID",
            files.len()
        );
        if label == "shared corpus" {
            // Only rt/multipart-report is a report; the rest are customer mail.
            assert!(some <= 1, "corpus reports: {reports:?}");
        }
    }
}
