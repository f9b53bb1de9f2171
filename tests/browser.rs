//! What the customer sees: rendered HTML opened in a real browser (headless Chromium, Debian's
//! `chromium`). Every template's preview and the acknowledgements the worker actually wrote,
//! one of them for a hostile customer, must show the ticket number and no template syntax, and
//! the hostile subject must stay text: its `<script>` and `onerror` never run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, code, customer_mail};
use postdesk::desk::decide::Template;
use postdesk::outbound::html_text::html_to_text;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The DOM after the page loaded and ran its scripts.
fn dump_dom(file: &Path, profile: &Path) -> String {
    let url = format!("file://{}", file.display());
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {CHROMIUM} ({e}); scripts/test.sh installs Debian's chromium")
        });
    let mut stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish with {url}");
            }
        }
    }
    reader.join().unwrap_or_default()
}

struct Page {
    name: String,
    file: PathBuf,
    tag: &'static str,
    hostile: bool,
    /// The hostile payload unescaped: proves the check would see a script that ran.
    control: bool,
}

fn check_page(p: &Page, dom: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let body_tag = dom
        .find("<body")
        .map(|i| &dom[i..i + dom[i..].find('>').unwrap_or(0)])
        .unwrap_or("");
    if p.control {
        if !body_tag.contains("data-pwned") {
            problems.push(format!(
                "{}: the unescaped payload did not run, so the check proves nothing",
                p.name
            ));
        }
        return problems;
    }
    if !dom.contains("<body") {
        problems.push(format!("{}: no DOM from chromium", p.name));
        return problems;
    }
    let visible = html_to_text(dom);
    if !visible.contains(p.tag) {
        problems.push(format!("{}: {} not shown:\n{visible}", p.name, p.tag));
    }
    for syntax in ["{{", "}}", "{%", "%}", "{#", "#}"] {
        if visible.contains(syntax) || dom.contains(syntax) {
            problems.push(format!("{}: raw template syntax {syntax}", p.name));
        }
    }
    if p.hostile {
        // The payload sets an attribute on <body> if it runs; as text it is only escaped text.
        if body_tag.contains("data-pwned") {
            problems.push(format!("{}: the customer's script ran", p.name));
        }
        if !visible.contains("<script>document.body.setAttribute") {
            problems.push(format!(
                "{}: the hostile subject is not shown as text",
                p.name
            ));
        }
    }
    problems
}

#[test]
fn rendered_html_in_chromium_shows_the_ticket_and_no_template_syntax() {
    let sb = Sandbox::new();
    let out_dir = sb.path().join("previews");
    let mut pages = Vec::new();
    for t in Template::ALL {
        let out = sb.run(&[
            "templates",
            "preview",
            t.name(),
            "--sample",
            "--out",
            out_dir.to_str().unwrap_or_default(),
        ]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let stem = match postdesk::outbound::sample::variants(t) {
            [only] if *only == "default" => t.name().to_string(),
            v => format!("{}-{}", t.name(), v[0]),
        };
        pages.push(Page {
            name: format!("preview {stem}"),
            file: out_dir.join(format!("preview-{stem}.html")),
            tag: "[#42]",
            hostile: false,
            control: false,
        });
    }
    let out = sb.run(&[
        "templates",
        "preview",
        "acknowledgement",
        "--lang",
        "de",
        "--out",
        out_dir.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code(&out), 0);
    pages.push(Page {
        name: "preview acknowledgement (de)".into(),
        file: out_dir.join("preview-acknowledgement-given-de.html"),
        tag: "[#42]",
        hostile: false,
        control: false,
    });

    // The HTML parts the worker really wrote: a plain customer and a hostile one.
    let plain = customer_mail("jane@acme.test", "SEV 3 Reports are slow", "b-1@acme.test");
    let hostile = "From: =?UTF-8?Q?Eve_=3Cimg_src=3Dx_onerror=3D=22document.body.setAttribute('data-pwned','3')=22=3E?= <eve@evil.test>\r\nTo: support@example.com\r\nSubject: SEV 3 <script>document.body.setAttribute('data-pwned','1')</script> <img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> \u{5e9}\u{5dc}\u{5d5}\u{5dd} \u{202e}fdp.exe\r\nMessage-ID: <b-2@evil.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n";
    assert_eq!(code(&sb.run_stdin(&["ingest"], &plain)), 0);
    assert_eq!(code(&sb.run_stdin(&["ingest"], hostile.as_bytes())), 0);
    assert!(sb.run(&["run", "--exit-when-idle"]).status.success());
    let sent = sb.outbox_files();
    assert_eq!(sent.len(), 2);
    for (i, f) in sent.iter().enumerate() {
        let raw = std::fs::read(f).unwrap_or_else(|e| panic!("{e}"));
        let msg = mail_parser::MessageParser::default()
            .parse(&raw)
            .unwrap_or_else(|| panic!("not a message"));
        let html = msg.body_html(0).unwrap_or_default().into_owned();
        let file = sb.path().join(format!("sent-{}.html", i + 1));
        std::fs::write(&file, html).unwrap_or_else(|e| panic!("{e}"));
        pages.push(Page {
            name: format!("sent acknowledgement {}", i + 1),
            file,
            tag: if i == 0 { "[#1]" } else { "[#2]" },
            hostile: i == 1,
            control: false,
        });
    }
    let control = sb.path().join("control.html");
    std::fs::write(
        &control,
        "<html><body><p>[#0] <script>document.body.setAttribute('data-pwned','1')</script></p></body></html>",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    pages.push(Page {
        name: "control page".into(),
        file: control,
        tag: "[#0]",
        hostile: false,
        control: true,
    });

    // A few browsers at a time, each with its own profile.
    let mut problems = Vec::new();
    for (n, batch) in pages.chunks(3).enumerate() {
        let doms: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let profile = sb.path().join(format!("chromium-{n}-{i}"));
                    s.spawn(move || dump_dom(&p.file, &profile))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (p, dom) in batch.iter().zip(&doms) {
            problems.extend(check_page(p, dom));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!("{} pages checked in chromium", pages.len());
}
