//! The mail test stack itself (tests/common/mailstack.rs): real Dovecot and Postfix, exercised
//! over SMTP, submission, SMTPS, IMAP, STARTTLS and IMAPS.

#[path = "common/mailstack.rs"]
mod mailstack;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailstack::{ALICE, BOB, CAROL, ENGINEER, MailStack, PASSWORD, SUPPORT, StackOptions, TRIAGE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

const WAIT: Duration = Duration::from_secs(20);

fn mail(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello,\r\n.a line starting with a dot\r\n\
         regards\r\n"
    )
    .into_bytes()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting only the stack's CA.
fn tls_trusting(stack: &MailStack) -> TlsConnector {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&stack.ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A rustls client trusting what the platform trusts (not the test CA).
fn tls_platform() -> TlsConnector {
    let verifier = rustls_platform_verifier::Verifier::new(provider()).unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn smtp_mail_arrives_over_imap() {
    let t = Instant::now();
    let stack = MailStack::start();
    println!("start: {:?}", t.elapsed());

    let sent = stack
        .send(CAROL, ALICE, &mail(CAROL, ALICE, "first-contact"))
        .await;
    assert_eq!(stack.wait_for_count(ALICE, "INBOX", 1, WAIT).await, 1);
    println!("SMTP 250 -> visible over IMAP: {:?}", sent.elapsed());
    let msgs = stack.fetch_all(ALICE, "INBOX").await;
    assert_eq!(msgs.len(), 1);
    assert!(
        contains(&msgs[0], "Subject: first-contact"),
        "{}",
        stack.log()
    );
    assert!(contains(&msgs[0], "\r\n.a line starting with a dot\r\n"));
    assert!(contains(&msgs[0], "Delivered-To: alice@customer.test"));

    // Any local part of customer.test is a mailbox.
    let c123 = mailstack::customer(123);
    assert_eq!(c123, "customer123@customer.test");
    stack
        .send(SUPPORT, &c123, &mail(SUPPORT, &c123, "hi-123"))
        .await;
    assert_eq!(stack.wait_for_count(&c123, "INBOX", 1, WAIT).await, 1);
    assert!(contains(
        &stack.fetch_all(&c123, "INBOX").await[0],
        "hi-123"
    ));

    // Nobody else got anything; a missing folder counts 0 and fetches nothing.
    assert_eq!(stack.count(BOB, "INBOX").await, 0);
    assert_eq!(stack.count(ALICE, "No such folder").await, 0);
    assert!(stack.fetch_all(ALICE, "No such folder").await.is_empty());

    // Unknown users and foreign domains are refused at RCPT time.
    let err = stack
        .try_send(CAROL, "nobody@example.test", b"Subject: x\r\n\r\nx\r\n")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("550"), "{err:#}");
    let err = stack
        .try_send(CAROL, "someone@gmail.com", b"Subject: x\r\n\r\nx\r\n")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("554"), "{err:#}");

    let t = Instant::now();
    drop(stack);
    println!("stop: {:?}", t.elapsed());
}

#[tokio::test]
async fn imaps_and_starttls() {
    let stack = MailStack::start();

    // IMAPS, by name and by IP, trusting the test CA.
    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect(("127.0.0.1", stack.imaps_port))
            .await
            .unwrap();
        let tls = tls_trusting(&stack)
            .connect(ServerName::try_from(name).unwrap().to_owned(), tcp)
            .await
            .unwrap_or_else(|e| panic!("IMAPS handshake for {name}: {e}"));
        let mut client = async_imap::Client::new(tls);
        client.read_response().await.unwrap().unwrap();
        let mut session = client
            .login(SUPPORT, PASSWORD)
            .await
            .map_err(|e| e.0)
            .unwrap();
        session.select("INBOX").await.unwrap();
        session.logout().await.unwrap();
    }

    // Without the test CA the certificate is refused.
    let tcp = TcpStream::connect(("127.0.0.1", stack.imaps_port))
        .await
        .unwrap();
    let err = tls_platform()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(inner, Some(rustls::Error::InvalidCertificate(_))),
        "expected a certificate error, got {err:?}"
    );

    // STARTTLS on the plain port.
    let tcp = TcpStream::connect(("127.0.0.1", stack.imap_port))
        .await
        .unwrap();
    let mut plain = BufReader::new(tcp);
    let mut line = String::new();
    plain.read_line(&mut line).await.unwrap();
    assert!(line.contains("STARTTLS"), "greeting: {line}");
    plain.get_mut().write_all(b"s1 STARTTLS\r\n").await.unwrap();
    line.clear();
    plain.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("s1 OK"), "STARTTLS: {line}");
    let tls = tls_trusting(&stack)
        .connect(
            ServerName::try_from("localhost").unwrap(),
            plain.into_inner(),
        )
        .await
        .unwrap();
    let client = async_imap::Client::new(tls);
    let mut session = client
        .login(ALICE, PASSWORD)
        .await
        .map_err(|e| e.0)
        .unwrap();
    assert!(session.capabilities().await.unwrap().has_str("IDLE"));
    session.logout().await.unwrap();

    // Plain LOGIN without TLS works too (disable_plaintext_auth = no), wrong passwords do not.
    let mut s = stack.imap_session(ENGINEER).await.unwrap();
    s.logout().await.unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", stack.imap_port))
        .await
        .unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap();
    let t = Instant::now();
    assert!(client.login(ENGINEER, "wrong").await.is_err());
    println!("failed IMAP login took {:?}", t.elapsed());
}

fn lettre_message(from: &str, to: &str, subject: &str) -> lettre::Message {
    lettre::Message::builder()
        .from(from.parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(format!("body of {subject}\r\n"))
        .unwrap()
}

#[tokio::test]
async fn submission_and_smtps_with_auth() {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let stack = MailStack::start();
    let ca = Certificate::from_pem(&std::fs::read(&stack.ca_file).unwrap()).unwrap();
    let params = |host: &str| {
        TlsParameters::builder(host.to_string())
            .add_root_certificate(ca.clone())
            .build()
            .unwrap()
    };
    let transport = |port: u16, tls: Tls, password: &str| {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .tls(tls)
            .credentials(Credentials::new(SUPPORT.into(), password.into()))
            .timeout(Some(Duration::from_secs(10)))
            .build()
    };

    // Submission: STARTTLS then AUTH.
    let sub = transport(
        stack.submission_port,
        Tls::Required(params("localhost")),
        PASSWORD,
    );
    sub.send(lettre_message(SUPPORT, BOB, "via-submission"))
        .await
        .unwrap_or_else(|e| panic!("submission: {e}\n{}", stack.log()));

    // A wrong password is refused with a 5xx.
    let bad = transport(
        stack.submission_port,
        Tls::Required(params("localhost")),
        "wrong password",
    );
    let err = bad
        .send(lettre_message(SUPPORT, BOB, "must-not-arrive"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    let code = err.status().expect("an SMTP status").to_string();
    assert!(code.starts_with('5'), "{code}: {err}");

    // Without AUTH nothing is accepted on the submission port.
    let anonymous = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(stack.submission_port)
        .tls(Tls::Required(params("localhost")))
        .build();
    assert!(
        anonymous
            .send(lettre_message(SUPPORT, BOB, "must-not-arrive"))
            .await
            .is_err()
    );

    // SMTPS (TLS from the first byte), the certificate checked against the IP.
    let smtps = transport(
        stack.smtps_port,
        Tls::Wrapper(params("127.0.0.1")),
        PASSWORD,
    );
    smtps
        .send(lettre_message(SUPPORT, BOB, "via-smtps"))
        .await
        .unwrap_or_else(|e| panic!("smtps: {e}\n{}", stack.log()));
    // Authenticated users may send to every test domain.
    smtps
        .send(lettre_message(SUPPORT, CAROL, "to-other-domain"))
        .await
        .unwrap();

    assert_eq!(stack.wait_for_count(BOB, "INBOX", 2, WAIT).await, 2);
    assert_eq!(stack.wait_for_count(CAROL, "INBOX", 1, WAIT).await, 1);
    let bob = stack.fetch_all(BOB, "INBOX").await;
    assert!(bob.iter().any(|m| contains(m, "Subject: via-submission")));
    assert!(bob.iter().any(|m| contains(m, "Subject: via-smtps")));
    assert!(!bob.iter().any(|m| contains(m, "must-not-arrive")));
    assert!(
        stack
            .submission_url()
            .contains("support%40example.test@127.0.0.1:")
    );
    assert!(
        stack
            .smtps_url()
            .starts_with("smtps://support%40example.test@127.0.0.1:")
    );
}

/// Stopping Dovecot can cut an LMTP delivery after Dovecot stored the message and before Postfix
/// read the 250: Postfix then delivers it again (SMTP and LMTP are at-least-once, RFC 5321
/// section 6.1). So once a daemon has been stopped, mail is asked for by Message-ID: each one
/// present, copies of one allowed, nothing else.
#[tokio::test]
async fn daemons_stop_and_restart_on_the_same_ports() {
    let stack = MailStack::start();
    let ports = (stack.imap_port, stack.smtp_port);
    stack
        .send(CAROL, ALICE, &mail(CAROL, ALICE, "before"))
        .await;
    // Nothing stopped yet: exactly one.
    assert_eq!(stack.wait_for_count(ALICE, "INBOX", 1, WAIT).await, 1);

    let t = Instant::now();
    stack.restart_dovecot();
    println!("restart_dovecot: {:?}", t.elapsed());
    let msgs = stack
        .wait_for_message_ids(ALICE, "INBOX", &["before@test"], WAIT)
        .await;
    mailstack::assert_only_ids(&msgs, &["before@test"], "after restart_dovecot");

    // Postfix down: nothing listens; up again: mail flows.
    let t = Instant::now();
    stack.stop_postfix();
    println!("stop_postfix: {:?}", t.elapsed());
    let err = stack
        .try_send(CAROL, ALICE, &mail(CAROL, ALICE, "while-down"))
        .await
        .unwrap_err();
    let refused = err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(refused, "expected connection refused, got {err:#}");
    let t = Instant::now();
    stack.start_postfix();
    println!("start_postfix: {:?}", t.elapsed());
    stack.send(CAROL, ALICE, &mail(CAROL, ALICE, "after")).await;
    let msgs = stack
        .wait_for_message_ids(ALICE, "INBOX", &["before@test", "after@test"], WAIT)
        .await;
    mailstack::assert_only_ids(&msgs, &["before@test", "after@test"], "after start_postfix");

    // Dovecot down: Postfix queues the mail and delivers it once Dovecot is back.
    stack.stop_dovecot();
    stack
        .send(CAROL, ALICE, &mail(CAROL, ALICE, "queued"))
        .await;
    stack.start_dovecot();
    let t = Instant::now();
    let all = ["before@test", "after@test", "queued@test"];
    stack.wait_for_message_ids(ALICE, "INBOX", &all, WAIT).await;
    println!(
        "queued mail delivered {:?} after start_dovecot",
        t.elapsed()
    );
    // Once Postfix holds nothing more, the inbox is final: only these three, each at least once.
    stack.wait_for_empty_queue(WAIT);
    let msgs = stack.fetch_all(ALICE, "INBOX").await;
    let copies = mailstack::assert_only_ids(&msgs, &all, "at the end");
    println!("copies per Message-ID: {copies:?}");
    assert_eq!((stack.imap_port, stack.smtp_port), ports);
}

#[tokio::test]
async fn recreated_inbox_has_a_new_uidvalidity() {
    let stack = MailStack::start();
    let raws: Vec<Vec<u8>> = (0..3)
        .map(|i| mail(ALICE, ENGINEER, &format!("backlog-{i}")))
        .collect();
    stack.append(ENGINEER, "INBOX", &raws).await;
    stack.append(ENGINEER, "Archive", &raws[..1]).await;
    assert_eq!(stack.count(ENGINEER, "Archive").await, 1);
    let before = stack.uid_validity(ENGINEER, "INBOX").await;
    let archive = stack.uid_validity(ENGINEER, "Archive").await;

    stack.recreate_inbox_with_same_messages(ENGINEER);

    let after = stack.uid_validity(ENGINEER, "INBOX").await;
    assert_ne!(before, after, "UIDVALIDITY must change");
    assert_eq!(stack.count(ENGINEER, "INBOX").await, 3);
    let msgs = stack.fetch_all(ENGINEER, "INBOX").await;
    for i in 0..3 {
        assert!(msgs.iter().any(|m| contains(m, &format!("backlog-{i}"))));
    }
    // Other folders are untouched.
    assert_eq!(stack.uid_validity(ENGINEER, "Archive").await, archive);
}

async fn capabilities(stack: &MailStack) -> Vec<String> {
    let mut s = stack.imap_session(TRIAGE).await.unwrap();
    let caps = s.capabilities().await.unwrap();
    let mut v: Vec<String> = caps
        .iter()
        .map(|c| match c {
            async_imap::types::Capability::Imap4rev1 => "IMAP4rev1".to_string(),
            async_imap::types::Capability::Auth(a) => format!("AUTH={a}"),
            async_imap::types::Capability::Atom(a) => a.to_string(),
        })
        .collect();
    s.logout().await.unwrap();
    v.sort();
    v
}

#[tokio::test]
async fn idle_and_move_can_be_hidden() {
    let default = MailStack::start();
    let no_idle = MailStack::start_with(StackOptions {
        idle: false,
        ..StackOptions::default()
    });
    let no_move = MailStack::start_with(StackOptions {
        moves: false,
        ..StackOptions::default()
    });
    let all = capabilities(&default).await;
    assert!(all.contains(&"IDLE".to_string()), "{all:?}");
    assert!(all.contains(&"MOVE".to_string()), "{all:?}");
    // Exactly one capability less: the explicit list matches Dovecot's own.
    let without =
        |cap: &str| -> Vec<String> { all.iter().filter(|c| *c != cap).cloned().collect() };
    assert_eq!(capabilities(&no_idle).await, without("IDLE"));
    assert_eq!(capabilities(&no_move).await, without("MOVE"));

    // IDLE on the default stack reports a new message.
    let mut s = default.imap_session(SUPPORT).await.unwrap();
    s.select("INBOX").await.unwrap();
    let mut idle = s.idle();
    idle.init().await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(20));
    // init() returned on the server's "+ idling": what arrives from now on is reported.
    let send = async {
        default
            .send(CAROL, SUPPORT, &mail(CAROL, SUPPORT, "wake-up"))
            .await
    };
    let (r, sent) = tokio::join!(wait, send);
    println!(
        "IDLE saw the new message {:?} after SMTP 250",
        sent.elapsed()
    );
    let r = r.unwrap();
    assert!(
        matches!(r, async_imap::extensions::idle::IdleResponse::NewData(_)),
        "{r:?}"
    );
    let mut s = idle.done().await.unwrap();
    s.logout().await.unwrap();
}

#[tokio::test]
async fn send_many_2000() {
    let stack = MailStack::start();
    let mails: Vec<(String, String, Vec<u8>)> = (0..2000)
        .map(|i| {
            let to = if i % 2 == 0 {
                TRIAGE.to_string()
            } else {
                mailstack::customer(i % 7)
            };
            let raw = mail(CAROL, &to, &format!("bulk-{i}"));
            (CAROL.to_string(), to, raw)
        })
        .collect();
    let t = Instant::now();
    stack.send_many(mails).await;
    println!("send_many(2000): accepted in {:?}", t.elapsed());
    assert_eq!(
        stack
            .wait_for_count(TRIAGE, "INBOX", 1000, Duration::from_secs(60))
            .await,
        1000,
        "{}",
        stack
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut total = stack.count(TRIAGE, "INBOX").await;
    for n in 0..7 {
        let c = mailstack::customer(n);
        let expect = (0..2000).filter(|i| i % 2 == 1 && i % 7 == n).count();
        total += stack.wait_for_count(&c, "INBOX", expect, WAIT).await;
    }
    println!("send_many(2000): all delivered after {:?}", t.elapsed());
    assert_eq!(total, 2000);

    // A backlog over IMAP APPEND.
    let raws: Vec<Vec<u8>> = (0..500)
        .map(|i| mail(ALICE, SUPPORT, &format!("backlog-{i}")))
        .collect();
    let t = Instant::now();
    stack.append(SUPPORT, "Backlog", &raws).await;
    println!("append(500): {:?}", t.elapsed());
    assert_eq!(stack.count(SUPPORT, "Backlog").await, 500);
}
