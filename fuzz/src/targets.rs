//! What each fuzz target does with its input, shared by the fuzz binaries (`fuzz/fuzz_targets`)
//! and by the ordinary test build (`tests/fuzz_replay.rs`), which replays the saved corpus and
//! every regression case through these same functions. Each function panics only on a bug: a
//! panic inside postdesk, or a broken invariant checked here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use postdesk::config::Config;
use postdesk::desk::decide::Template;
use postdesk::desk::{MailContext, Policy, commands, decide_parsed, thread};
use postdesk::mail::{Limits, Mailbox, dsn, parse_within, quote, subject};
use postdesk::outbound::compose::{AutoSubmitted, Letter, compose};
use postdesk::outbound::sample::{default_support, sample, sample_now, variants};
use postdesk::outbound::templates::{Renderer, Variant};

/// One fuzz target: it takes any bytes.
pub type Target = fn(&[u8]);

/// The targets by name, as `scripts/fuzz.sh` and the replay test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("parse_decide", parse_decide),
    ("subject", subject_line),
    ("quote", quote_stripping),
    ("dsn", bounce),
    ("commands", staff_commands),
    ("config", config_file),
    ("templates", templates),
];

/// The repository (templates are read from it): this file is built in the repository's tests
/// and in `fuzz/`.
fn repo() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("templates").is_dir() {
        here.to_path_buf()
    } else {
        here.join("..")
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_449_600, 0).unwrap_or_default()
}

/// The embedded defaults' policy, made once.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| match Config::load_with_env(None, &BTreeMap::new()) {
        Ok(c) => c.policy(),
        Err(e) => panic!("the embedded defaults do not load: {e}"),
    })
}

/// Raw bytes -> limits -> parse -> decide, as `postdesk explain` without a database.
pub fn parse_decide(data: &[u8]) {
    let parsed = parse_within(data, &Limits::default());
    if let Ok(mail) = &parsed {
        let _ = thread::keys(mail, "#");
        let _ = postdesk::mail::parse::attachment_bodies(data, 1 << 20);
        let _ = postdesk::mail::parse::html_body(data);
    }
    let d = decide_parsed(&parsed, &MailContext::default(), policy(), now());
    assert_eq!(
        d.action.name() == "quarantine",
        parsed.is_err(),
        "{}",
        d.reason
    );
}

/// The subject rules: prefixes, severity, tag; stripping is idempotent and our own tag is read
/// back behind whatever prefix the input puts in front.
pub fn subject_line(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let stripped = subject::strip_reply_prefixes(&s);
    assert!(s.contains(stripped));
    assert_eq!(subject::strip_reply_prefixes(stripped), stripped, "{s:?}");
    if let Some(n) = subject::requested_severity(&s) {
        assert!((1..=4).contains(&n));
    }
    for prefix in ["#", "TICKET-", ""] {
        // The input as the stack of prefixes a client put in front of our subject, when it is
        // one and holds no tag of its own (the first tag wins).
        if subject::ticket_tag(&s, prefix).is_none()
            && subject::strip_reply_prefixes(&format!("{s}x")) == "x"
        {
            let ours = format!("{s}{} printer down", subject::tag(prefix, 42));
            assert_eq!(subject::ticket_tag(&ours, prefix), Some(42), "{ours:?}");
        }
    }
}

/// Quote stripping of text and HTML replies.
pub fn quote_stripping(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let out = quote::reply_text(&s);
    assert!(out.len() <= s.len());
    let _ = quote::reply_text_from_html(&s);
    let _ = quote::reply_html(&s);
}

/// Bounce and feedback-report reading.
pub fn bounce(data: &[u8]) {
    if let Some(r) = dsn::read_report_raw(data) {
        assert!(r.recipients.len() <= dsn::MAX_RECIPIENTS);
    }
}

/// The command block of a staff mail.
pub fn staff_commands(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let c = commands::parse(&s);
    assert!(s.ends_with(&c.body));
    let _ = commands::account_manager_limits(&c);
}

/// The config loader on a TOML file of these bytes, with no environment.
pub fn config_file(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("postdesk.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Err(e) = Config::load_with_env(Some(&path), &BTreeMap::new()) {
        // Every error names where the value came from.
        assert!(!e.to_string().is_empty());
    }
}

/// The repository's templates, loaded once.
fn renderer() -> &'static Renderer {
    static RENDERER: OnceLock<Renderer> = OnceLock::new();
    RENDERER.get_or_init(|| match Renderer::load(&repo().join("templates")) {
        Ok(r) => r,
        Err(e) => panic!("the repository's templates do not load: {e}"),
    })
}

/// Replaces every string in `v` with the next hostile piece.
fn poison(v: &mut serde_json::Value, pieces: &[&str], next: &mut usize) {
    match v {
        serde_json::Value::String(s) if !pieces.is_empty() => {
            *s = pieces[*next % pieces.len()].to_string();
            *next += 1;
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| poison(x, pieces, next)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| poison(x, pieces, next)),
        _ => {}
    }
}

/// Every template rendered from its sample context with each string replaced by hostile text
/// from the input (split at NUL), then composed: a subject never spans lines.
pub fn templates(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let pieces: Vec<&str> = text.split('\0').collect();
    let template = Template::ALL[usize::from(pick) % Template::ALL.len()];
    let all = variants(template);
    let variant = all[usize::from(pick / 16) % all.len()];
    let Ok(ctx) = sample(template, Some(variant), &default_support()) else {
        return;
    };
    let Ok(mut value) = serde_json::to_value(&ctx) else {
        return;
    };
    let mut next = 0;
    poison(&mut value, &pieces, &mut next);
    let tag = pieces.first().copied().unwrap_or("[#42]");
    let Ok(r) = renderer().render(template, &Variant::default(), &value, tag) else {
        return;
    };
    assert!(!r.subject.contains(['\r', '\n']), "{:?}", r.subject);
    let to = Mailbox {
        name: pieces.get(1).map(|s| s.to_string()),
        address: "jane@acme.test".into(),
    };
    let _ = compose(&Letter {
        from_name: pieces.get(2).copied().unwrap_or("Support"),
        from_address: "support@example.com",
        to: &to,
        subject: &r.subject,
        text: &r.text,
        html: &r.html,
        message_id: "postdesk.42.fuzz@example.com",
        in_reply_to: pieces.get(3).copied(),
        references: &[],
        ticket: 42,
        auto_submitted: AutoSubmitted::AutoReplied,
        date: sample_now(),
        reply_to: None,
        attachments: &[],
    });
}
