//! Delivering the outbox over SMTP (lettre's connection, our own small pool).
//!
//! Exactly once: a server takes responsibility for a message when it reads the final `.` of
//! DATA. So the body is written, then the final dot and its line in a local journal
//! ([`HandoverJournal`]) are written together by a child process the worker's death cannot stop
//! (see [`crate::outbound::handover`]). A crash before that leaves the row due (the server never
//! saw a complete message, so it discards it: no duplicate); a crash after it leaves the dot
//! with the kernel, which still delivers it when the process dies, and the line in the page
//! cache, which the next run marks sent before it looks for due mail. If the server refuses the
//! message after all, the line is taken back. What remains is a power cut before the journal
//! reaches the disk (the journal is not fsynced: it must survive the process, not the machine).
//!
//! Temporary failures (4xx, connection, TLS, timeouts) are retried with exponential backoff;
//! a permanent 5xx (or too many attempts) marks the row failed, records an event on its ticket
//! and queues a notice to the triage owners, in one transaction. The notice is the
//! `delivery_failure` template, rendered with the templates serving now; should that fail, it
//! goes out as fixed text, so a broken template never costs the notice.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::Mutex;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::config::{Config, Endpoint, TlsMode};
use crate::desk::Status;
use crate::desk::decide::Template;
use crate::mail::Mailbox;
use crate::metrics::{METRICS, Metrics};
use crate::outbound::compose::{AutoSubmitted, Letter, compose, outbound_message_id};
use crate::outbound::context::{
    Audience, DEFAULT_ZONE, FailureView, ParticipantView, PersonView, SeverityView, SupportView,
    TemplateContext, TicketView, failure_kind,
};
use crate::outbound::handover::{Handover, HandoverTcp};
use crate::outbound::outbox::{Round, backoff};
use crate::outbound::templates::{LiveTemplates, Rendered, TemplateError, Variant};
use crate::store::{OutboxItem, QueuedMail, Store, StoreError, StoreTx, TicketDetail};

/// Rows fetched per round.
const ROUND: i64 = 256;
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

/// The template name of the notice about a mail that could not be delivered.
pub const DELIVERY_FAILURE: &str = "delivery_failure";

/// Why the SMTP sender could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("outbox: {0}")]
pub struct SmtpSetupError(String);

/// How one delivery attempt ended.
#[derive(Debug)]
enum Attempt {
    /// The server took it.
    Delivered,
    /// Not taken; retry later. The row is unchanged.
    Temporary(String),
    /// Refused for good (5xx).
    Permanent(String),
    /// The database could not record the hand-over; nothing was sent.
    Store(StoreError),
    /// The connection failed after the final dot was written: the server most likely has it.
    /// It stays recorded as sent (a second copy would be a duplicate).
    Uncertain(String),
}

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
    retry_min: Duration,
    retry_max: Duration,
    max_attempts: u32,
    pool: Mutex<Vec<Pooled>>,
    notice: NoticeSettings,
    /// rustls settings for implicit TLS (same trust as the IMAP source).
    rustls: Arc<tokio_rustls::rustls::ClientConfig>,
    /// Rows handed to the server, not yet marked sent in the store.
    journal: HandoverJournal,
}

/// The hand-over journal: a local append-only file of outbox row ids (`+id` handed over,
/// `-id` refused after all); a `+id` line is written together with the final dot by the
/// hand-over child ([`crate::outbound::handover`]). The page cache keeps it when the process
/// dies, so no fsync sits next to the dot. Before every delivery round its entries are marked
/// sent in the store and the file is emptied.
#[derive(Debug)]
pub struct HandoverJournal {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
    /// The file's descriptor, for the hand-over child (appends need no lock: `O_APPEND`).
    fd: std::os::fd::RawFd,
}

impl HandoverJournal {
    /// Opens (creating) the journal.
    pub fn open(path: &Path) -> std::io::Result<HandoverJournal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(HandoverJournal {
            path: path.to_path_buf(),
            fd: std::os::fd::AsRawFd::as_raw_fd(&file),
            file: std::sync::Mutex::new(file),
        })
    }

    fn append(&self, line: String) -> std::io::Result<()> {
        let mut f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        f.write_all(line.as_bytes())
    }

    /// The line that records row `id`'s hand-over (written by [`Handover`]'s child).
    pub fn line(id: i64) -> String {
        format!("+{id}\n")
    }

    /// Records a hand-over the way a delivery's child does (tests).
    #[cfg(test)]
    fn record(&self, id: i64) -> std::io::Result<()> {
        self.append(Self::line(id))
    }

    /// Takes a hand-over back (the server refused the message after all).
    pub fn cancel(&self, id: i64) -> std::io::Result<()> {
        self.append(format!("-{id}\n"))
    }

    /// The ids handed over and not taken back. A torn last line (no newline) is ignored: its
    /// dot was never written.
    pub fn pending(&self) -> std::io::Result<Vec<i64>> {
        let text = std::fs::read_to_string(&self.path)?;
        let mut ids: Vec<i64> = Vec::new();
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                continue;
            };
            if let Some(id) = line.strip_prefix('+').and_then(|n| n.parse().ok()) {
                ids.push(id);
            } else if let Some(id) = line.strip_prefix('-').and_then(|n| n.parse::<i64>().ok()) {
                ids.retain(|x| *x != id);
            }
        }
        Ok(ids)
    }

    /// Marks the journal's hand-overs sent in the store (a durable commit), then empties it.
    /// Called only while no delivery is in flight.
    pub async fn apply<S: Store>(&self, store: &S) -> Result<(), StoreError> {
        let ids = self
            .pending()
            .map_err(|e| StoreError::Database(format!("{}: {e}", self.path.display())))?;
        if !ids.is_empty() {
            store.mark_sent(&ids, Utc::now()).await?;
        }
        let f = self
            .file
            .lock()
            .map_err(|_| StoreError::Database("journal lock poisoned".into()))?;
        f.set_len(0)
            .map_err(|e| StoreError::Database(format!("{}: {e}", self.path.display())))
    }
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

/// Who hears about mail that could not be delivered, and as whom postdesk writes.
#[derive(Debug, Clone)]
struct NoticeSettings {
    triage_owners: Vec<String>,
    from_address: String,
    from_name: String,
    phone: String,
    tag_prefix: String,
    /// The templates serving now (the worker's, shared with the pipeline so an admin's edit
    /// reaches the notice too). None: fixed text.
    templates: Option<LiveTemplates>,
}

impl std::fmt::Debug for SmtpOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpOutbox({})", self.endpoint)
    }
}

impl SmtpOutbox {
    /// Builds the sender from config (no connection is made yet).
    pub fn from_config(endpoint: &Endpoint, config: &Config) -> Result<Self, SmtpSetupError> {
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
            retry_min: live.retry_min,
            retry_max: live.retry_max,
            max_attempts: live.max_attempts,
            pool: Mutex::new(Vec::new()),
            journal: HandoverJournal::open(&journal_path(config)).map_err(|e| {
                SmtpSetupError(format!(
                    "outbox.journal {}: {e}",
                    journal_path(config).display()
                ))
            })?,
            rustls: crate::tls::client_config(
                config.tls_ca_file.as_deref(),
                live.accept_invalid_certs,
            )
            .map_err(SmtpSetupError)?,
            notice: NoticeSettings {
                triage_owners: config.triage_owners.clone(),
                from_address: config.sending_address().to_string(),
                from_name: config.support_name.clone(),
                phone: config.support_phone.clone(),
                tag_prefix: config.tag_prefix.clone(),
                templates: None,
            },
        })
    }

    /// Renders delivery-failure notices with `templates` (the set the pipeline serves) instead
    /// of fixed text.
    pub fn with_templates(mut self, templates: LiveTemplates) -> Self {
        self.notice.templates = Some(templates);
        self
    }

    /// Delay before attempt `attempts + 1`: retry_min doubling, capped at retry_max.
    pub fn retry_delay(&self, attempts: i64) -> Duration {
        backoff(self.retry_min, self.retry_max, attempts)
    }

    async fn connect(&self) -> Result<Conn, String> {
        // Our own socket, with TCP_NODELAY: SMTP is a dialogue of small writes (command, body,
        // final dot), which Nagle's algorithm and delayed ACKs would hold back ~40 ms each.
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.endpoint))?;
        let _ = tcp.set_nodelay(true);
        let handover = Handover::new(self.journal.fd);
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

    /// One mail, following the module's exactly-once protocol. Every step has a timeout.
    async fn deliver_one<S: Store>(&self, store: &S, item: &OutboxItem) -> Attempt {
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
        let result = tokio::time::timeout(self.timeout, send).await;
        let handed_over = conn.handover.finish();
        match result {
            Ok(Ok(_)) => {
                self.give_back(conn).await;
                if handed_over {
                    return Attempt::Delivered;
                }
                // Delivered, not yet recorded: keep trying, or it would go out again.
                let mut wait = Duration::from_millis(100);
                let mut last = None;
                for _ in 0..8 {
                    match store.mark_sent(&[item.id], Utc::now()).await {
                        Ok(()) => return Attempt::Delivered,
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                let e = last.unwrap_or(StoreError::Unavailable("mark sent".into()));
                tracing::error!(outbox_id = item.id, error = %e, "delivered but the database cannot record it; it will be sent again");
                Attempt::Store(e)
            }
            // The server answered the dot with a refusal: definitely not delivered.
            Ok(Err(e)) if e.is_permanent() || e.is_transient() => {
                self.give_back(conn).await;
                if handed_over && let Err(je) = self.journal.cancel(item.id) {
                    tracing::error!(outbox_id = item.id, error = %je, "could not take the refused mail out of the hand-over journal");
                }
                classify(&e, "message")
            }
            // The connection broke or went silent. Without a hand-over the dot was never
            // written (or its journal line could not be, which was logged): retry. After one,
            // the server may well have the message: it stays sent.
            other => {
                close_quietly(conn).await;
                let why = match other {
                    Err(_) => format!("no answer within {:?} after the message", self.timeout),
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "unknown".into(),
                };
                if handed_over {
                    Attempt::Uncertain(why)
                } else {
                    Attempt::Temporary(format!("message: {why}"))
                }
            }
        }
    }

    /// Delivers every due row, `concurrency` at a time, until none is due or one fails.
    pub async fn deliver_due<S: Store>(
        self: &Arc<Self>,
        store: &S,
        now: DateTime<Utc>,
    ) -> Result<Round, StoreError> {
        let mut total = Round::default();
        loop {
            // Hand-overs recorded by this or a crashed earlier run become `sent` first, so
            // nothing handed to the server is taken for due.
            self.journal.apply(store).await?;
            let due = store.due_outbox(now, ROUND).await?;
            if due.is_empty() {
                return Ok(total);
            }
            // One task per mail (at most `concurrency` at once): a hand-over holds its own
            // thread only (while its child runs), never the other deliveries.
            let permits = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
            let mut tasks = tokio::task::JoinSet::new();
            for item in due {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                let store = store.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    let a = this.deliver_one(&store, &item).await;
                    (item, a)
                });
            }
            let mut results: Vec<(OutboxItem, Attempt)> = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        tracing::error!(error = %e, "a delivery task failed; its row is retried when due")
                    }
                }
            }
            let mut failed = 0;
            let mut store_error = None;
            for (item, attempt) in results {
                match attempt {
                    Attempt::Delivered => {
                        total.sent += 1;
                        Metrics::inc(&METRICS.mails_sent);
                        tracing::info!(
                            outbox_id = item.id,
                            ticket = item.ticket,
                            template = %item.template,
                            to = %item.to,
                            message_id = %item.message_id,
                            "mail sent"
                        );
                    }
                    Attempt::Temporary(why) if item.attempts + 1 < i64::from(self.max_attempts) => {
                        failed += 1;
                        let delay = self.retry_delay(item.attempts);
                        Metrics::inc(&METRICS.mail_retries);
                        tracing::warn!(
                            outbox_id = item.id,
                            ticket = item.ticket,
                            to = %item.to,
                            attempt = item.attempts + 1,
                            retry_in_s = delay.as_secs(),
                            error = %why,
                            "mail not delivered; will retry"
                        );
                        let retry_at = Utc::now()
                            + chrono::Duration::from_std(delay)
                                .unwrap_or(chrono::Duration::seconds(60));
                        store
                            .mark_attempt_failed(item.id, &why, Utc::now(), Some(retry_at))
                            .await?;
                    }
                    Attempt::Temporary(why) => {
                        failed += 1;
                        let why = format!("gave up after {} attempts: {why}", item.attempts + 1);
                        self.fail_permanently(store, &item, &why).await?;
                    }
                    Attempt::Permanent(why) => {
                        failed += 1;
                        self.fail_permanently(store, &item, &why).await?;
                    }
                    Attempt::Uncertain(why) => {
                        total.sent += 1;
                        tracing::warn!(
                            outbox_id = item.id,
                            ticket = item.ticket,
                            to = %item.to,
                            error = %why,
                            "connection lost after the final dot: the server most likely took the mail; recorded as sent, not sent again"
                        );
                    }
                    Attempt::Store(e) => {
                        tracing::warn!(outbox_id = item.id, error = %e, "could not record the hand-over; mail not sent, will retry");
                        store_error = Some(e);
                    }
                }
            }
            total.failed += failed;
            self.journal.apply(store).await?;
            if let Some(e) = store_error {
                return Err(e);
            }
            if failed > 0 {
                return Ok(total);
            }
        }
    }

    async fn fail_permanently<S: Store>(
        &self,
        store: &S,
        item: &OutboxItem,
        why: &str,
    ) -> Result<(), StoreError> {
        Metrics::inc(&METRICS.mails_failed);
        tracing::error!(
            outbox_id = item.id,
            ticket = item.ticket,
            template = %item.template,
            to = %item.to,
            error = %why,
            "mail could not be delivered; triage owners notified"
        );
        let now = Utc::now();
        // A notice about a failed notice would loop: those are only logged.
        let notify = item.template != DELIVERY_FAILURE && !self.notice.triage_owners.is_empty();
        // Read before the write transaction: the ticket's subject, severity and people for the
        // notice. Unreadable, the notice goes out as fixed text.
        let detail = match item.ticket {
            Some(n) if notify => match store.ticket_detail(n).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(ticket = n, error = %e, "cannot read the ticket for the delivery-failure notice; it goes out as fixed text");
                    None
                }
            },
            _ => None,
        };
        let mut tx = store.begin().await?;
        tx.fail_outbox(item.id, why, now).await?;
        if notify {
            // The triage owners, and the engineer the ticket is assigned to.
            let mut to: Vec<String> = self.notice.triage_owners.clone();
            if let Some(a) = detail.as_ref().and_then(|d| d.ticket.assignee.clone())
                && !to.iter().any(|t| t.eq_ignore_ascii_case(&a))
            {
                to.push(a);
            }
            for owner in &to {
                match self.failure_notice(item, owner, why, now, detail.as_ref()) {
                    Ok(q) => {
                        tx.queue(&q, now).await?;
                    }
                    Err(e) => {
                        tracing::error!(to = %owner, error = %e, "could not compose the delivery-failure notice")
                    }
                }
            }
        }
        tx.commit().await
    }

    fn failure_notice(
        &self,
        item: &OutboxItem,
        owner: &str,
        why: &str,
        now: DateTime<Utc>,
        detail: Option<&TicketDetail>,
    ) -> Result<QueuedMail, String> {
        let n = &self.notice;
        let (subject, text, html) = match self.render_notice(item, owner, why, now, detail) {
            Ok(Some(r)) => (r.subject, r.text, r.html),
            Ok(None) => fixed_notice(item, why, &n.tag_prefix),
            Err(e) => {
                tracing::error!(outbox_id = item.id, error = %e, "the delivery_failure template failed; the notice goes out as fixed text");
                fixed_notice(item, why, &n.tag_prefix)
            }
        };
        let message_id = outbound_message_id(
            item.ticket.unwrap_or(0),
            DELIVERY_FAILURE,
            &item.message_id,
            owner,
            &n.from_address,
        );
        let to = Mailbox {
            name: None,
            address: owner.to_string(),
        };
        let raw = compose(&Letter {
            from_name: &n.from_name,
            from_address: &n.from_address,
            to: &to,
            subject: &subject,
            text: &text,
            html: &html,
            message_id: &message_id,
            in_reply_to: None,
            references: &[],
            ticket: item.ticket.unwrap_or(0),
            auto_submitted: AutoSubmitted::AutoGenerated,
            date: now,
            reply_to: None,
            attachments: &[],
        })
        .map_err(|e| e.to_string())?;
        Ok(QueuedMail {
            ticket: item.ticket,
            message_id,
            template: DELIVERY_FAILURE.to_string(),
            to: owner.to_string(),
            automatic: true,
            rendered: raw,
        })
    }

    /// The notice rendered from the `delivery_failure` template, or None when there are no
    /// templates or the ticket could not be read (the caller sends the fixed text).
    fn render_notice(
        &self,
        item: &OutboxItem,
        owner: &str,
        why: &str,
        now: DateTime<Utc>,
        detail: Option<&TicketDetail>,
    ) -> Result<Option<Rendered>, TemplateError> {
        let n = &self.notice;
        let Some(templates) = &n.templates else {
            return Ok(None);
        };
        if item.ticket.is_some() && detail.is_none() {
            return Ok(None);
        }
        let support = SupportView {
            address: n.from_address.clone(),
            name: n.from_name.clone(),
            phone: n.phone.clone(),
        };
        let ctx = failure_context(item, owner, why, now, detail, support, &n.tag_prefix);
        templates
            .current()
            .render(
                Template::DeliveryFailure,
                &Variant::default(),
                &ctx,
                &ctx.ticket.tag,
            )
            .map(Some)
    }

    /// Closes pooled connections politely.
    pub async fn close(&self) {
        let conns: Vec<Pooled> = std::mem::take(&mut *self.pool.lock().await);
        for mut p in conns {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.conn.smtp.quit()).await;
        }
    }
}

/// The `delivery_failure` context (kind `undeliverable`) for the notice to `owner` about
/// `item`: the ticket from `detail`, or ticket 0 when the mail belonged to none.
fn failure_context(
    item: &OutboxItem,
    owner: &str,
    why: &str,
    now: DateTime<Utc>,
    detail: Option<&TicketDetail>,
    support: SupportView,
    tag_prefix: &str,
) -> TemplateContext {
    let zone = DEFAULT_ZONE;
    let mut ctx = match detail {
        Some(d) => {
            let t = &d.ticket;
            let mut ctx = TemplateContext::new(
                TicketView::new(
                    t.number,
                    crate::mail::subject::tag(tag_prefix, t.number),
                    &t.subject,
                    t.status.parse::<Status>().unwrap_or(Status::InTriage),
                    t.created_at,
                    zone,
                ),
                SeverityView {
                    requested: t.requested_severity.and_then(|s| u8::try_from(s).ok()),
                    assigned: u8::try_from(t.assigned_severity).unwrap_or(4),
                    given: t.severity_given,
                    downgraded: t.downgraded,
                },
                PersonView::new(t.requester_name.as_deref(), &t.requester),
                support,
                zone,
            );
            ctx.participants = d
                .participants
                .iter()
                .map(|p| ParticipantView::new(p.name.as_deref(), &p.address, &p.role))
                .collect();
            ctx
        }
        // No ticket: the templates leave it out (`{% if ticket.number %}`); the requester is a
        // placeholder they do not show.
        None => TemplateContext::new(
            TicketView::none(now, zone),
            SeverityView {
                requested: None,
                assigned: 4,
                given: false,
                downgraded: false,
            },
            PersonView::new(None, &item.to),
            support,
            zone,
        ),
    };
    ctx.audience = Audience::Staff;
    ctx.recipient = PersonView::new(None, owner);
    ctx.failure = Some(FailureView {
        kind: failure_kind::UNDELIVERABLE.into(),
        recipient: item.to.clone(),
        template: item.template.clone(),
        error: why.to_string(),
        message_id: item.message_id.clone(),
    });
    ctx
}

/// The notice as fixed text: what goes out when the template cannot render, so that a broken
/// template never costs it. Returns subject, text and HTML.
fn fixed_notice(item: &OutboxItem, why: &str, tag_prefix: &str) -> (String, String, String) {
    let tag = item
        .ticket
        .map(|t| format!("[{tag_prefix}{t}] "))
        .unwrap_or_default();
    let subject = format!("{tag}Delivery failed: {} to {}", item.template, item.to);
    let ticket_line = item
        .ticket
        .map(|t| format!("Ticket:     {tag_prefix}{t}\n"))
        .unwrap_or_default();
    let text = format!(
        "A mail from the support desk could not be delivered and will not be retried.\n\n\
         {ticket_line}Mail:       {}\nRecipient:  {}\nMessage-ID: {}\nError:      {why}\n\n\
         The customer has not received it. Please reach them another way.\n",
        item.template, item.to, item.message_id
    );
    let html = format!("<pre>{}</pre>", html_escape(&text));
    (subject, text, html)
}

/// Where the hand-over journal lives: `outbox.journal`, else next to the SQLite file, else
/// `./postdesk-outbox.journal`.
fn journal_path(config: &Config) -> PathBuf {
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

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::templates::Renderer;
    use crate::store::{Participant, TicketSummary};

    fn failed_item(ticket: Option<i64>) -> OutboxItem {
        OutboxItem {
            id: 7,
            ticket,
            message_id: "postdesk.5.relay.0011223344556677@example.com".into(),
            to: "jane@acme.test".into(),
            rendered: Vec::new(),
            attempts: 3,
            template: "relay".into(),
        }
    }

    fn detail() -> TicketDetail {
        let at = DateTime::from_timestamp(1_795_449_600, 0).unwrap_or_default();
        TicketDetail {
            ticket: TicketSummary {
                number: 5,
                subject: "Checkout <fails>".into(),
                requester: "jane@acme.test".into(),
                requester_name: Some("Jane Roe".into()),
                status: "customer_pending".into(),
                requested_severity: Some(1),
                assigned_severity: 3,
                linked_ticket: None,
                requester_bounced: false,
                assignee: None,
                first_response_at: None,
                resolved_at: None,
                response_due_at: None,
                resolution_due_at: None,
                escalation_due_at: None,
                update_due_at: None,
                reminder_due_at: None,
                close_pending_due_at: None,
                auto_close_due_at: None,
                escalated_at: None,
                response_breach_at: None,
                resolution_breach_at: None,
                status_since: None,
                last_public_out_at: None,
                closed_at: None,
                severity_given: true,
                downgraded: true,
                created_at: at,
                updated_at: at,
            },
            participants: vec![Participant {
                address: "jane@acme.test".into(),
                name: Some("Jane Roe".into()),
                role: "requester".into(),
            }],
            messages: Vec::new(),
            history: Vec::new(),
            outbox: Vec::new(),
        }
    }

    fn support() -> SupportView {
        crate::outbound::sample::default_support()
    }

    #[test]
    fn failure_notice_renders_from_the_template_with_the_ticket_or_without_one() {
        let templates =
            Renderer::load(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"))
                .unwrap_or_else(|e| panic!("{e}"));
        let now = Utc::now();
        let why = "550 5.1.1 <jane@acme.test>: user unknown";
        let d = detail();
        let ctx = failure_context(
            &failed_item(Some(5)),
            "triage@example.com",
            why,
            now,
            Some(&d),
            support(),
            "#",
        );
        assert_eq!(ctx.recipient.address, "triage@example.com");
        let out = templates
            .render(
                Template::DeliveryFailure,
                &Variant::default(),
                &ctx,
                &ctx.ticket.tag,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.subject, "[#5] Delivery failed: relay to jane@acme.test");
        for want in [
            "Mail:       relay",
            "Recipient:  jane@acme.test",
            "Message-ID: <postdesk.5.relay.0011223344556677@example.com>",
            why,
            "The customer has not received it; please reach them another way.",
            "Sev 3 assigned; Sev 1 requested",
            "Status:     Customer Pending",
        ] {
            assert!(out.text.contains(want), "{want:?} in {}", out.text);
        }
        assert!(out.html.contains("Checkout &lt;fails&gt;"), "{}", out.html);

        let ctx = failure_context(
            &failed_item(None),
            "triage@example.com",
            why,
            now,
            None,
            support(),
            "#",
        );
        let out = templates
            .render(
                Template::DeliveryFailure,
                &Variant::default(),
                &ctx,
                &ctx.ticket.tag,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.subject, "Delivery failed: relay to jane@acme.test");
        assert!(!out.text.contains("[#"), "{}", out.text);
        assert!(!out.text.contains("The customer"), "{}", out.text);
    }

    #[test]
    fn fixed_notice_is_the_fallback_text() {
        let (subject, text, html) = fixed_notice(&failed_item(Some(5)), "550 <x>", "#");
        assert_eq!(subject, "[#5] Delivery failed: relay to jane@acme.test");
        assert!(text.contains("Ticket:     #5\n"), "{text}");
        assert!(html.contains("550 &lt;x&gt;"), "{html}");
        let (subject, text, _) = fixed_notice(&failed_item(None), "550", "#");
        assert_eq!(subject, "Delivery failed: relay to jane@acme.test");
        assert!(!text.contains("Ticket:"), "{text}");
        assert_eq!(Template::DeliveryFailure.name(), DELIVERY_FAILURE);
    }

    #[test]
    fn journal_keeps_hand_overs_drops_cancelled_and_torn_lines() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = d.path().join("journal");
        let j = HandoverJournal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        for id in [3, 5, 7] {
            j.record(id).unwrap_or_else(|e| panic!("{e}"));
        }
        j.cancel(5).unwrap_or_else(|e| panic!("{e}"));
        // A crash in the middle of a write leaves a line without its newline.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"+9"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(j.pending().unwrap_or_else(|e| panic!("{e}")), vec![3, 7]);
        // Reopened after a crash, it still says the same.
        let again = HandoverJournal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again.pending().unwrap_or_else(|e| panic!("{e}")),
            vec![3, 7]
        );
    }

    #[test]
    fn backoff_doubles_from_min_and_caps_at_max() {
        let (min, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        assert_eq!(backoff(min, max, 0), Duration::from_secs(30));
        assert_eq!(backoff(min, max, 1), Duration::from_secs(60));
        assert_eq!(backoff(min, max, 3), Duration::from_secs(240));
        assert_eq!(backoff(min, max, 40), Duration::from_secs(3600));
    }
}
