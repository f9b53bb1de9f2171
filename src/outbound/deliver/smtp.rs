//! The SMTP transport of the outbox (lettre's connection, our own small pool).
//!
//! A server takes responsibility for a message when it reads the final `.` of DATA. The body is
//! written, then the final dot and its line in the worker's journal are written together by a
//! child process the worker's death cannot stop (Linux; see [`super::handover`]): a crash before
//! that leaves the row due (the server never saw a complete message and discards it); a crash
//! after it leaves the dot with the kernel, which still delivers it, and the line in the page
//! cache, which the next start settles before it looks for due mail. No duplicate either way.
//!
//! When the server refuses the message after the dot, or never answers it (the connection
//! breaks, or no reply within 10 minutes, RFC 5321 §4.5.3.2.6), the line is taken back and the
//! mail is tried again later with the same Message-ID, as MTAs do (RFC 1047): a duplicate is
//! better than a loss. Temporary failures (4xx, connection, TLS, timeouts) are retried with
//! backoff by the delivery loop; a 5xx gives the row up.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::Mutex;
use tokio_rustls::rustls::pki_types::ServerName;

use super::handover::{Handover, HandoverTcp};
use super::{Attempt, Transport};
use crate::config::{Config, Endpoint, TlsMode};
use crate::store::OutboxItem;

/// How long the server may take to answer the final dot (RFC 5321 §4.5.3.2.6), unless
/// `outbox.timeout` is longer.
pub const FINAL_REPLY: Duration = Duration::from_secs(600);
/// Pooled connections unused this long are closed.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// Yields the message body, then (when lettre asks for more, right before it writes the final
/// dot) arms the connection's hand-over for the row, so the dot's write is the hand-over.
struct ArmBeforeDot<'a> {
    body: Option<&'a [u8]>,
    arm: Option<(&'a Handover, i64)>,
}

impl<'a> Iterator for ArmBeforeDot<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if let Some(b) = self.body.take() {
            return Some(b);
        }
        if let Some((h, id)) = self.arm.take() {
            h.arm(id);
        }
        None
    }
}

/// Why the SMTP sender could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("outbox: {0}")]
pub struct SmtpSetupError(String);

/// A connection and its hand-over slot.
struct Conn {
    smtp: AsyncSmtpConnection,
    handover: Arc<Handover>,
}

struct Pooled {
    conn: Conn,
    last_used: std::time::Instant,
}

/// The SMTP sender.
pub struct SmtpOutbox {
    endpoint: Endpoint,
    credentials: Option<Credentials>,
    tls: Option<TlsParameters>,
    hello: ClientId,
    envelope_from: Address,
    timeout: Duration,
    concurrency: usize,
    pool: Mutex<Vec<Pooled>>,
    /// rustls settings for implicit TLS (same trust as the IMAP source).
    rustls: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The worker's journal, where the hand-over child records each final dot.
    journal: Arc<std::fs::File>,
}

/// An implicit-TLS SMTP connection, handed to lettre as its stream.
#[derive(Debug)]
struct TlsTcp(tokio_rustls::client::TlsStream<HandoverTcp>);

impl tokio::io::AsyncRead for TlsTcp {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncTokioStream for HandoverTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        HandoverTcp::peer_addr(self)
    }
}

impl std::fmt::Debug for SmtpOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpOutbox({})", self.endpoint)
    }
}

impl SmtpOutbox {
    /// Builds the sender from config (no connection is made yet); hand-overs are recorded in
    /// `journal` (the worker's [`super::journal::WorkerJournal`] file).
    pub fn from_config(
        endpoint: &Endpoint,
        config: &Config,
        journal: Arc<std::fs::File>,
    ) -> Result<Self, SmtpSetupError> {
        let live = &config.live;
        let password = config
            .outbox_password
            .clone()
            .or_else(|| endpoint.password.clone());
        let credentials = match (&endpoint.user, password) {
            (Some(user), Some(p)) => Some(Credentials::new(user.clone(), p.0)),
            (Some(user), None) => {
                return Err(SmtpSetupError(format!(
                    "outbox.url names the user {user} but outbox.password (or POSTDESK_OUTBOX_PASSWORD[_FILE]) is not set"
                )));
            }
            (None, _) => None,
        };
        let tls = match endpoint.tls {
            TlsMode::None => None,
            TlsMode::Implicit | TlsMode::StartTls => {
                let mut b = TlsParameters::builder(endpoint.host.clone())
                    .dangerous_accept_invalid_certs(live.accept_invalid_certs);
                if let Some(ca) = &config.tls_ca_file {
                    for der in crate::tls::read_ca_file(ca).map_err(SmtpSetupError)? {
                        b = b.add_root_certificate(
                            Certificate::from_der(der.to_vec())
                                .map_err(|e| SmtpSetupError(format!("tls.ca_file: {e}")))?,
                        );
                    }
                }
                Some(
                    b.build_rustls()
                        .map_err(|e| SmtpSetupError(format!("TLS setup: {e}")))?,
                )
            }
        };
        let envelope_from: Address = live.envelope_sender.parse().map_err(|e| {
            SmtpSetupError(format!(
                "outbox.envelope_sender \"{}\": {e}",
                live.envelope_sender
            ))
        })?;
        let hello = match config.sending_address().rsplit_once('@') {
            Some((_, domain)) if !domain.is_empty() => ClientId::Domain(domain.to_string()),
            _ => ClientId::default(),
        };
        Ok(SmtpOutbox {
            endpoint: endpoint.clone(),
            credentials,
            tls,
            hello,
            envelope_from,
            timeout: live.smtp_timeout,
            concurrency: live.concurrency,
            pool: Mutex::new(Vec::new()),
            journal,
            rustls: crate::tls::client_config(
                config.tls_ca_file.as_deref(),
                live.accept_invalid_certs,
            )
            .map_err(SmtpSetupError)?,
        })
    }

    async fn connect(&self) -> Result<Conn, String> {
        // Our own socket, with TCP_NODELAY: SMTP is a dialogue of small writes (command, body,
        // final dot), which Nagle's algorithm and delayed ACKs would hold back ~40 ms each.
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.endpoint))?;
        let _ = tcp.set_nodelay(true);
        let handover = Handover::new(self.journal.clone());
        let tcp = HandoverTcp::new(tcp, handover.clone());
        let stream: Box<dyn AsyncTokioStream> = match self.endpoint.tls {
            TlsMode::Implicit => {
                let name = ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| format!("TLS: bad server name {}: {e}", self.endpoint.host))?;
                let tls = tokio_rustls::TlsConnector::from(self.rustls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        format!(
                            "{}: {}",
                            self.endpoint,
                            crate::tls::explain_handshake_error(&e, &self.endpoint.host)
                        )
                    })?;
                Box::new(TlsTcp(tls))
            }
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| describe_connect_error(&e, &self.endpoint))?;
        if self.endpoint.tls == TlsMode::StartTls
            && let Some(tls) = &self.tls
        {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(format!(
                    "{} does not offer STARTTLS, which outbox.url (smtp://) requires; use outbox.tls = \"none\" only for a trusted local relay",
                    self.endpoint
                ));
            }
            conn.starttls(tls.clone(), &self.hello)
                .await
                .map_err(|e| describe_connect_error(&e, &self.endpoint))?;
        }
        if let Some(c) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c)
                .await
                .map_err(|e| format!("AUTH refused by {}: {e}", self.endpoint))?;
        }
        Ok(Conn {
            smtp: conn,
            handover,
        })
    }

    async fn take_connection(&self) -> Result<Conn, String> {
        loop {
            let pooled = self.pool.lock().await.pop();
            match pooled {
                Some(p) if p.last_used.elapsed() < IDLE_CLOSE && !p.conn.smtp.has_broken() => {
                    return Ok(p.conn);
                }
                Some(p) => close_quietly(p.conn).await,
                None => {
                    return match tokio::time::timeout(self.timeout, self.connect()).await {
                        Ok(r) => r,
                        Err(_) => Err(format!(
                            "{}: no answer within {:?} while connecting",
                            self.endpoint, self.timeout
                        )),
                    };
                }
            }
        }
    }

    async fn give_back(&self, conn: Conn) {
        if !conn.smtp.has_broken() {
            self.pool.lock().await.push(Pooled {
                conn,
                last_used: std::time::Instant::now(),
            });
        }
    }

    /// One mail, following the module's protocol. Every step has a timeout.
    async fn deliver_one(&self, item: &OutboxItem) -> Attempt {
        let to: Address = match item.to.parse() {
            Ok(a) => a,
            Err(e) => return Attempt::Permanent(format!("bad recipient {}: {e}", item.to)),
        };
        let mut conn = match self.take_connection().await {
            Ok(c) => c,
            Err(e) => return Attempt::Temporary(e),
        };
        let mut options = Vec::new();
        if !item.rendered.is_ascii() {
            if conn
                .smtp
                .server_info()
                .supports_feature(Extension::EightBitMime)
            {
                options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
            } else {
                // Our composer writes 7-bit MIME; a raw 8-bit body needs 8BITMIME.
                self.give_back(conn).await;
                return Attempt::Permanent(
                    "8-bit message but the server does not offer 8BITMIME".into(),
                );
            }
        }
        let envelope = async {
            conn.smtp
                .command(Mail::new(Some(self.envelope_from.clone()), options))
                .await?;
            conn.smtp.command(Rcpt::new(to.clone(), vec![])).await?;
            conn.smtp.command(Data).await
        };
        match tokio::time::timeout(self.timeout, envelope).await {
            Err(_) => {
                close_quietly(conn).await;
                return Attempt::Temporary(format!(
                    "envelope: no answer within {:?}",
                    self.timeout
                ));
            }
            Ok(Err(e)) => {
                let attempt = classify(&e, "envelope");
                // Refused before DATA: the connection is still usable after RSET.
                if e.is_permanent() || e.is_transient() {
                    let rset = tokio::time::timeout(
                        Duration::from_secs(5),
                        conn.smtp.command(lettre::transport::smtp::commands::Rset),
                    )
                    .await;
                    if matches!(rset, Ok(Ok(_))) {
                        self.give_back(conn).await;
                    } else {
                        close_quietly(conn).await;
                    }
                } else {
                    close_quietly(conn).await;
                }
                return attempt;
            }
            Ok(Ok(_)) => {}
        }
        // 354: the server waits for the body. The body goes out, then the final dot together
        // with its journal line, in one step the worker's death cannot split.
        let send = conn.smtp.message_iter(ArmBeforeDot {
            body: Some(&item.rendered),
            arm: Some((&conn.handover, item.id)),
        });
        let result = tokio::time::timeout(self.timeout.max(FINAL_REPLY), send).await;
        let handed_over = conn.handover.finish();
        match result {
            Ok(Ok(_)) => {
                self.give_back(conn).await;
                if handed_over {
                    Attempt::Recorded
                } else {
                    // Written by the worker itself: marked sent by the delivery loop.
                    Attempt::Delivered
                }
            }
            // The server answered the dot with a refusal: definitely not delivered.
            Ok(Err(e)) if e.is_permanent() || e.is_transient() => {
                self.give_back(conn).await;
                self.take_back(handed_over, item.id);
                classify(&e, "message")
            }
            // The connection broke or went silent after the message: it may or may not have
            // arrived. Sent again later with the same Message-ID: at worst a duplicate the
            // recipient's software can recognise, never a loss.
            other => {
                close_quietly(conn).await;
                self.take_back(handed_over, item.id);
                let why = match other {
                    Err(_) => format!(
                        "no answer to the final dot within {:?}",
                        self.timeout.max(FINAL_REPLY)
                    ),
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "unknown".into(),
                };
                Attempt::Temporary(format!("message: {why} (sent again, same Message-ID)"))
            }
        }
    }

    /// Takes a recorded hand-over back: the mail was not confirmed.
    fn take_back(&self, handed_over: bool, id: i64) {
        if handed_over && let Err(e) = (&*self.journal).write_all(format!("-{id}\n").as_bytes()) {
            tracing::error!(outbox_id = id, error = %e, "could not take the unconfirmed mail out of the journal; it counts as sent");
        }
    }

    /// Closes pooled connections politely.
    pub async fn close(&self) {
        let conns: Vec<Pooled> = std::mem::take(&mut *self.pool.lock().await);
        for mut p in conns {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.conn.smtp.quit()).await;
        }
    }
}

/// Where the workers' journals live: `<this>.<owner>` for `outbox.journal`, else next to the
/// SQLite file, else `./postdesk-outbox.journal`.
pub fn journal_path(config: &Config) -> PathBuf {
    if let Some(p) = &config.live.journal {
        return p.clone();
    }
    match &config.database_url {
        crate::config::DatabaseUrl::Sqlite(url) => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            PathBuf::from(format!("{path}-outbox-journal"))
        }
        crate::config::DatabaseUrl::Postgres(_) => PathBuf::from("./postdesk-outbox.journal"),
    }
}

/// Drops a connection, saying QUIT if the server answers within a second.
async fn close_quietly(mut conn: Conn) {
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.smtp.abort()).await;
}

fn classify(e: &lettre::transport::smtp::Error, stage: &str) -> Attempt {
    if e.is_permanent() {
        Attempt::Permanent(format!("{stage}: {e}"))
    } else {
        Attempt::Temporary(format!("{stage}: {e}"))
    }
}

fn describe_connect_error(e: &lettre::transport::smtp::Error, endpoint: &Endpoint) -> String {
    use std::error::Error as _;
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_tls() || chain.contains("certificate") {
        format!(
            "TLS with {endpoint} failed ({chain}); if the certificate is not trusted, add its CA with tls.ca_file"
        )
    } else {
        format!("cannot connect to {endpoint}: {chain}")
    }
}

impl Transport for SmtpOutbox {
    fn concurrency(&self) -> usize {
        self.concurrency
    }

    async fn attempt(&self, item: OutboxItem) -> (OutboxItem, Attempt) {
        let attempt = self.deliver_one(&item).await;
        (item, attempt)
    }

    async fn close(&self) {
        SmtpOutbox::close(self).await
    }
}
