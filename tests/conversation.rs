//! A conversation through the `postdesk` binary: `explain` says how a reply would thread (which
//! header or tag matched, or why a tag was ignored, the status change, the text it would keep),
//! `ingest` then does exactly that, and `tickets show` prints the conversation in order.

mod common;

use common::{Sandbox, code, customer_mail};
use mail_parser::MimeHeaders;

/// A reply from `from` with `subject`, In-Reply-To `parent` when given, and `body`.
fn reply(from: &str, subject: &str, message_id: &str, parent: Option<&str>, body: &str) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: support@example.com\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\nMessage-ID: <{message_id}>\r\n"
    );
    if let Some(p) = parent {
        m.push_str(&format!("In-Reply-To: <{p}>\r\nReferences: <{p}>\r\n"));
    }
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&body.replace('\n', "\r\n"));
    m.into_bytes()
}

fn write(sb: &Sandbox, name: &str, raw: &[u8]) -> String {
    let path = sb.path().join(name);
    std::fs::write(&path, raw).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn explain_predicts_and_ingest_threads_a_reply() {
    let sb = Sandbox::new();
    let first = write(
        &sb,
        "first.eml",
        &customer_mail("jane@acme.test", "SEV 3 printer on fire", "first@acme.test"),
    );
    assert_eq!(code(&sb.run(&["ingest", &first])), 0);
    let show = sb.json(&["tickets", "show", "1", "--json"]);
    let ack = show["outbox"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_string();

    let body = "Still on fire.\n\nOn Mon, 23 Nov 2026 at 10:00, Support <support@example.com> wrote:\n> we have received your request and opened ticket [#1].\n";
    let answer = write(
        &sb,
        "reply.eml",
        &reply(
            "Jane <jane@acme.test>",
            "Re: [#1] SEV 3 printer on fire",
            "r1@acme.test",
            Some(&ack),
            body,
        ),
    );
    let e = sb.json(&["explain", &answer, "--json"]);
    assert_eq!(e["action"], "reply", "{e}");
    assert_eq!(e["ticket"], 1);
    assert_eq!(e["matched"]["by"], "header");
    assert_eq!(e["matched"]["message_id"], ack.as_str());
    assert_eq!(e["acknowledge"], false);
    assert_eq!(e["outbound"].as_array().map(Vec::len), Some(0));
    assert!(e["status_change"].is_null(), "a reply leaves triage: {e}");
    assert_eq!(e["text"], "Still on fire.");

    // The human form says the same.
    let out = sb.run(&["explain", &answer]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("action:    reply (ticket #1)"), "{text}");
    assert!(
        text.contains("matched:   In-Reply-To/References names"),
        "{text}"
    );

    assert_eq!(code(&sb.run(&["ingest", &answer])), 0);
    let show = sb.json(&["tickets", "show", "1", "--json"]);
    let messages = show["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["text"], "Still on fire.");
    assert_eq!(
        show["outbox"].as_array().map(Vec::len),
        Some(1),
        "no second acknowledgement"
    );
    assert_eq!(sb.tickets().len(), 1);

    // Ingested again (IMAP re-delivery, Cc to a second support address): one message.
    assert_eq!(code(&sb.run(&["ingest", &answer])), 0);
    let show = sb.json(&["tickets", "show", "1", "--json"]);
    assert_eq!(show["messages"].as_array().map(Vec::len), Some(2));

    // `tickets show` prints the conversation in order with the stored text.
    let out = sb.run(&["tickets", "show", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let first_at = text
        .find("Hello, something is broken.")
        .unwrap_or(usize::MAX);
    let ack_at = text.find("outbound acknowledgement").unwrap_or(usize::MAX);
    let reply_at = text.find("| Still on fire.").unwrap_or(usize::MAX);
    assert!(first_at < ack_at && ack_at < reply_at, "{text}");
    assert!(
        !text.contains("> we have received"),
        "quoted history is not stored: {text}"
    );
}

#[test]
fn explain_says_why_a_tag_was_ignored() {
    let sb = Sandbox::new();
    let first = write(
        &sb,
        "first.eml",
        &customer_mail("jane@acme.test", "SEV 3 printer", "f@acme.test"),
    );
    assert_eq!(code(&sb.run(&["ingest", &first])), 0);

    let stranger = write(
        &sb,
        "stranger.eml",
        &reply(
            "mallory@evil.test",
            "Re: [#1] SEV 3 printer",
            "s@evil.test",
            None,
            "me too\n",
        ),
    );
    let e = sb.json(&["explain", &stranger, "--json"]);
    assert_eq!(e["action"], "new_ticket", "{e}");
    assert!(
        e["ignored"]
            .as_str()
            .unwrap_or("")
            .contains("not a participant of #1"),
        "{e}"
    );
    assert_eq!(e["acknowledge"], true);

    let unknown = write(
        &sb,
        "unknown.eml",
        &reply(
            "jane@acme.test",
            "Re: [#4711] printer",
            "u@acme.test",
            None,
            "hello?\n",
        ),
    );
    let e = sb.json(&["explain", &unknown, "--json"]);
    assert_eq!(e["action"], "new_ticket", "{e}");
    assert!(
        e["ignored"]
            .as_str()
            .unwrap_or("")
            .contains("#4711, which does not exist"),
        "{e}"
    );

    // A tag the requester quotes joins; explain changed nothing, so ingest agrees.
    let by_tag = write(
        &sb,
        "tag.eml",
        &reply(
            "JANE@ACME.TEST",
            "AW: RE: [#1] SEV 3 printer",
            "t@acme.test",
            None,
            "more logs\n",
        ),
    );
    let e = sb.json(&["explain", &by_tag, "--json"]);
    assert_eq!(
        (e["action"].as_str(), e["matched"]["by"].as_str()),
        (Some("reply"), Some("tag")),
        "{e}"
    );
    assert_eq!(code(&sb.run(&["ingest", &stranger])), 0);
    assert_eq!(code(&sb.run(&["ingest", &by_tag])), 0);
    assert_eq!(sb.tickets().len(), 2);
    let show = sb.json(&["tickets", "show", "1", "--json"]);
    assert_eq!(show["messages"].as_array().map(Vec::len), Some(2));
    let history = show["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["kind"] == "stranger" && h["related_ticket"] == 2),
        "{show}"
    );
}

/// Every real bounce and feedback report in `fixtures/bounces` (Postfix, Exim, qmail, Sendmail,
/// Exchange, Gmail, Yahoo, Amazon SES, Domino, Courier, ARF from AOL, Yahoo, ...) goes through
/// `ingest`: none opens a ticket, none is answered, none is quarantined; the two samples that are
/// not bounces (a vacation reply, a forwarded bounce) are not taken for one.
#[test]
fn real_bounces_never_open_answer_or_quarantine() {
    let sb = Sandbox::new();
    let dir = common::repo().join("fixtures/bounces");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "{} samples", files.len());
    let mut reports = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let path = file.to_string_lossy().into_owned();
        let e = sb.json(&["explain", &path, "--json"]);
        if name.starts_with("not-bounce") {
            assert_ne!(e["action"], "bounce", "{name}: {e}");
            continue;
        }
        reports += 1;
        assert_eq!(e["action"], "bounce", "{name}: {e}");
        assert_eq!(e["acknowledge"], false, "{name}");
        assert_eq!(e["outbound"].as_array().map(Vec::len), Some(0), "{name}");
        assert_eq!(code(&sb.run(&["ingest", &path])), 0, "{name}");
    }
    assert!(reports >= 20);
    assert!(sb.tickets().is_empty(), "a report opened a ticket");
    let counts = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use postdesk::store::Store;
            let url = format!("sqlite:{}", sb.db().display());
            let store = postdesk::store::SqliteStore::open(&url).await.unwrap();
            store.counts().await.unwrap()
        });
    assert_eq!(counts.messages, reports as i64, "every report is stored");
    assert_eq!((counts.tickets, counts.quarantined), (0, 0));
    assert_eq!(
        counts.outbox_pending + counts.outbox_sent,
        0,
        "nothing answered"
    );
}

/// `explain` classifies staff mail and says who would receive what, changing nothing.
#[test]
fn explain_classifies_engineer_mail_and_names_every_recipient() {
    let sb = Sandbox::new();
    let run = |args: &[&str]| {
        sb.command(args)
            .env("POSTDESK_TRIAGE_OWNERS", "triage@example.com")
            .output()
            .unwrap()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let out = run(args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    };
    let first = write(
        &sb,
        "first.eml",
        &customer_mail("jane@acme.test", "SEV 3 printer on fire", "first@acme.test"),
    );
    assert_eq!(code(&run(&["ingest", &first])), 0);
    let show = json(&["tickets", "show", "1", "--json"]);
    let outbox = show["outbox"].as_array().unwrap();
    let sent: Vec<(&str, &str)> = outbox
        .iter()
        .map(|o| (o["template"].as_str().unwrap(), o["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("acknowledgement", "jane@acme.test"),
            ("engineer_notification", "triage@example.com")
        ]
    );
    let notification = outbox[1]["message_id"].as_str().unwrap().to_string();

    let engineer = |name: &str, body: &str| {
        write(
            &sb,
            name,
            &reply(
                "Sam Engineer <sam@example.com>",
                "Re: [#1] New ticket (Sev 3): SEV 3 printer on fire",
                &format!("{name}@example.com"),
                Some(&notification),
                body,
            ),
        )
    };
    // (case, body, action, outbound, status change to)
    let cases = [
        (
            "public_reply_is_relayed",
            "#severity 4\n\nHi Jane, please restart it.\n",
            "engineer_reply",
            vec![("relay", "jane@acme.test")],
            Some("customer_pending"),
        ),
        (
            "note_goes_to_triage_when_nobody_else_is_on_staff",
            "#note\nold firmware\n",
            "internal_note",
            vec![("internal_note", "triage@example.com")],
            Some("engineer_pending"),
        ),
        (
            "commands_only_mail_nobody",
            "#assign me\n",
            "engineer_command",
            vec![],
            Some("engineer_pending"),
        ),
        (
            "typo_is_rejected_to_the_engineer",
            "#sevrity 9\nHi Jane\n",
            "command_rejected",
            vec![("command_rejected", "sam@example.com")],
            None,
        ),
    ];
    for (name, body, action, outbound, to) in cases {
        let file = engineer(name, body);
        let e = json(&["explain", &file, "--json"]);
        assert_eq!(e["action"], action, "{name}: {e}");
        assert_eq!(e["ticket"], 1, "{name}");
        let got: Vec<(&str, &str)> = e["outbound"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["template"].as_str().unwrap(), o["to"].as_str().unwrap()))
            .collect();
        assert_eq!(got, outbound, "{name}: {e}");
        assert_eq!(e["status_change"]["to"].as_str(), to, "{name}: {e}");
    }
    let typo = engineer("typo_again", "#sevrity 9\nHi Jane\n");
    let e = json(&["explain", &typo, "--json"]);
    assert_eq!(e["rejected"][0]["line"], 1, "{e}");
    assert!(
        e["rejected"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("#severity"),
        "{e}"
    );
    let text = String::from_utf8_lossy(&run(&["explain", &typo]).stdout).into_owned();
    assert!(
        text.contains("action:    command_rejected (ticket #1)"),
        "{text}"
    );
    assert!(text.contains("rejected:  line 1: #sevrity 9"), "{text}");
    // explain changed nothing.
    let after = json(&["tickets", "show", "1", "--json"]);
    assert_eq!(after["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(after["ticket"]["status"], "in_triage");
}

/// An engineer's formatted HTML reply with an inline image reaches the customer with its
/// formatting, sanitised, the image as an inline part its `cid:` still names, and without the
/// command line, the quote or anything executable.
#[test]
fn a_relayed_html_reply_keeps_formatting_and_inline_images_and_loses_scripts() {
    let sb = Sandbox::new();
    let first = write(
        &sb,
        "first.eml",
        &customer_mail("jane@acme.test", "SEV 3 printer on fire", "first@acme.test"),
    );
    assert_eq!(code(&sb.run(&["ingest", &first])), 0);
    let html = "<div>#solved</div><div><br></div><div>Hi Jane, <b>restart</b> the <i>spooler</i>:</div>\
                <img src=\"cid:shot@sam\" alt=\"screen\"><script>alert(1)</script>\
                <img src=\"x\" onerror=\"alert(2)\"><a href=\"javascript:alert(3)\">x</a>\
                <div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon, Jane wrote:</div>\
                <blockquote class=\"gmail_quote\">Hello, something is broken.</blockquote></div>";
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
    let raw = format!(
        "From: Sam Engineer <sam@example.com>\r\nTo: support@example.com\r\nSubject: Re: [#1] SEV 3 printer on fire\r\n\
         Date: Mon, 23 Nov 2026 11:00:00 +0000\r\nMessage-ID: <html-1@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/related; boundary=\"r\"\r\n\r\n\
         --r\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n\
         --a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n#solved\r\n\r\nHi Jane, restart the spooler:\r\n\r\nOn Mon, Jane wrote:\r\n> Hello, something is broken.\r\n\
         --a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--a--\r\n\
         --r\r\nContent-Type: image/png\r\nContent-ID: <shot@sam>\r\nContent-Disposition: inline; filename=\"shot.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{png}\r\n--r--\r\n"
    );
    let file = write(&sb, "engineer.eml", raw.as_bytes());
    assert_eq!(code(&sb.run(&["ingest", &file])), 0);
    assert!(sb.run(&["run", "--exit-when-idle"]).status.success());
    let sent: Vec<Vec<u8>> = sb
        .outbox_files()
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let notice = sent
        .iter()
        .find(|m| String::from_utf8_lossy(m).contains("postdesk.1.close_pending."))
        .unwrap_or_else(|| panic!("no close_pending notice in {} mails", sent.len()));
    let msg = mail_parser::MessageParser::default().parse(notice).unwrap();
    let html = msg.body_html(0).unwrap_or_default().into_owned();
    let text = msg.body_text(0).unwrap_or_default().into_owned();
    assert!(
        html.contains("<b>restart</b>") && html.contains("<i>spooler</i>"),
        "{html}"
    );
    assert!(html.contains("cid:shot@sam"), "{html}");
    for bad in [
        "<script",
        "alert(",
        "onerror",
        "javascript:",
        "#solved",
        "something is broken",
    ] {
        assert!(!html.contains(bad), "{bad} in\n{html}");
    }
    for bad in ["#solved", "something is broken", "sam@example.com"] {
        assert!(!text.contains(bad), "{bad} in\n{text}");
    }
    assert!(text.contains("restart the spooler"), "{text}");
    let inline: Vec<_> = msg
        .parts
        .iter()
        .filter(|p| p.content_id() == Some("shot@sam"))
        .collect();
    assert_eq!(
        inline.len(),
        1,
        "the inline image travels with its Content-ID"
    );
    assert!(!String::from_utf8_lossy(notice).contains("sam@example.com"));
    let show = sb.json(&["tickets", "show", "1", "--json"]);
    assert_eq!(show["ticket"]["status"], "close_pending");
}
