//! The IMAP client of the source: connect (implicit TLS, required STARTTLS, or plain only when
//! configured), log in (password or XOAUTH2), and the few commands the source needs, each under
//! a timeout so a silent server can never hang the worker.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use async_imap::{Authenticator, Client, Session};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::config::{Endpoint, Secret, TlsMode};
use crate::tls::explain_handshake_error;

/// Why an IMAP step failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// TCP connect failed or the connection broke.
    #[error("IMAP connection to {0}")]
    Connection(String),
    /// TLS could not be set up (untrusted certificate, no STARTTLS, ...).
    #[error("{0}")]
    Tls(String),
    /// The server refused the login.
    #[error("IMAP login refused: {0}")]
    Login(String),
    /// The server answered NO/BAD or something unexpected.
    #[error("IMAP {command}: {message}")]
    Command {
        /// The command.
        command: String,
        /// What the server said.
        message: String,
    },
    /// No answer in time.
    #[error("IMAP {0}: no answer within the command timeout")]
    Timeout(String),
}

impl ImapError {
    fn command(command: &str, e: async_imap::error::Error) -> ImapError {
        match e {
            async_imap::error::Error::Io(io) => {
                ImapError::Connection(format!("lost during {command}: {io}"))
            }
            async_imap::error::Error::ConnectionLost => {
                ImapError::Connection(format!("lost during {command}"))
            }
            other => ImapError::Command {
                command: command.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// True for a server's NO/BAD to one command (the connection itself is fine).
    pub fn is_command_refusal(&self) -> bool {
        matches!(self, ImapError::Command { .. })
    }
}

/// One TCP connection, with or without TLS.
pub enum Conn {
    /// Plain TCP (before STARTTLS, or `tls = "none"`).
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conn::Plain(_) => f.write_str("Conn::Plain"),
            Conn::Tls(_) => f.write_str("Conn::Tls"),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How the source logs in.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// LOGIN with a password.
    Password(Secret),
    /// AUTHENTICATE XOAUTH2 with a bearer token, read afresh at every login.
    XOAuth2(TokenSource),
}

/// Where an XOAUTH2 bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A file an external agent keeps fresh.
    File(PathBuf),
    /// A command (run by `sh -c`) that prints the token.
    Command(String),
    /// A fixed token from the config.
    Fixed(Secret),
}

impl TokenSource {
    /// Reads the current token.
    pub async fn token(&self) -> Result<String, ImapError> {
        let token = match self {
            TokenSource::Fixed(s) => s.0.clone(),
            TokenSource::File(p) => tokio::fs::read_to_string(p).await.map_err(|e| {
                ImapError::Login(format!("mailbox.token_file {}: {e}", p.display()))
            })?,
            TokenSource::Command(c) => {
                let out = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(c)
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|e| ImapError::Login(format!("mailbox.token_command: {e}")))?;
                if !out.status.success() {
                    return Err(ImapError::Login(format!(
                        "mailbox.token_command exited with {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                String::from_utf8(out.stdout).map_err(|_| {
                    ImapError::Login("mailbox.token_command printed no UTF-8 token".into())
                })?
            }
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(ImapError::Login("the XOAUTH2 token is empty".into()));
        }
        Ok(token)
    }
}

/// The SASL XOAUTH2 initial response (Google and Microsoft document this format).
pub fn xoauth2_response(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

struct XOAuth2 {
    response: String,
    sent: bool,
}

impl Authenticator for &mut XOAuth2 {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        if self.sent {
            // After a failed XOAUTH2 the server sends an error challenge: answer empty to end.
            String::new()
        } else {
            self.sent = true;
            self.response.clone()
        }
    }
}

/// What the server can do, as far as the source cares.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// RFC 2177 IDLE.
    pub idle: bool,
    /// RFC 6851 MOVE.
    pub moves: bool,
    /// RFC 4315 UIDPLUS (UID EXPUNGE).
    pub uidplus: bool,
}

/// The selected mailbox.
#[derive(Debug, Clone, Copy)]
pub struct Selected {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT (None when the server did not say).
    pub uid_next: Option<u32>,
    /// Messages in it.
    pub exists: u32,
}

/// The keyword set on messages postdesk has taken, with `\Seen`, before moving them.
pub const TAKEN_KEYWORD: &str = "$PostdeskTaken";

/// A logged-in IMAP session with a timeout on every command.
pub struct ImapSession {
    session: Option<Session<Conn>>,
    timeout: Duration,
    /// Whether the server accepts our keyword (assumed until refused).
    keywords: bool,
    /// What the server can do.
    pub caps: Caps,
}

/// Connects and logs in.
pub async fn connect(
    endpoint: &Endpoint,
    credentials: &Credentials,
    tls: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<ImapSession, ImapError> {
    let addr = format!("{}:{}", endpoint.host, endpoint.port);
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| ImapError::Timeout(format!("connect to {addr}")))?
        .map_err(|e| ImapError::Connection(format!("{addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tls_wrap = |tcp: TcpStream| {
        let tls = tls.clone();
        let host = endpoint.host.clone();
        async move {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| ImapError::Tls(format!("TLS: bad server name {host}: {e}")))?;
            let s = tokio::time::timeout(timeout, TlsConnector::from(tls).connect(name, tcp))
                .await
                .map_err(|_| ImapError::Timeout("TLS handshake".into()))?
                .map_err(|e| ImapError::Tls(explain_handshake_error(&e, &host)))?;
            Ok::<Conn, ImapError>(Conn::Tls(Box::new(s)))
        }
    };
    let client = match endpoint.tls {
        TlsMode::Implicit => {
            let mut c = Client::new(tls_wrap(tcp).await?);
            read_greeting(&mut c, timeout).await?;
            c
        }
        TlsMode::None => {
            let mut c = Client::new(Conn::Plain(tcp));
            read_greeting(&mut c, timeout).await?;
            c
        }
        TlsMode::StartTls => {
            let mut c = Client::new(Conn::Plain(tcp));
            read_greeting(&mut c, timeout).await?;
            tokio::time::timeout(timeout, c.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(|_| ImapError::Timeout("STARTTLS".into()))?
                .map_err(|e| {
                    ImapError::Tls(format!(
                        "{addr} refused STARTTLS ({e}); postdesk does not send a password unencrypted unless mailbox.tls = \"none\""
                    ))
                })?;
            let Conn::Plain(tcp) = c.into_inner() else {
                return Err(ImapError::Tls("STARTTLS on a TLS connection".into()));
            };
            Client::new(tls_wrap(tcp).await?)
        }
    };
    let user = endpoint.user.clone().unwrap_or_default();
    let login = async {
        match credentials {
            Credentials::Password(p) => client
                .login(&user, &p.0)
                .await
                .map_err(|(e, _)| ImapError::Login(format!("as {user}: {e}"))),
            Credentials::XOAuth2(source) => {
                let token = source.token().await?;
                let mut auth = XOAuth2 {
                    response: xoauth2_response(&user, &token),
                    sent: false,
                };
                client
                    .authenticate("XOAUTH2", &mut auth)
                    .await
                    .map_err(|(e, _)| ImapError::Login(format!("XOAUTH2 as {user}: {e}")))
            }
        }
    };
    let session = tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| ImapError::Timeout("LOGIN".into()))??;
    let mut s = ImapSession {
        session: Some(session),
        timeout,
        keywords: true,
        caps: Caps::default(),
    };
    let caps = s
        .with_timeout("CAPABILITY", |s| Box::pin(s.capabilities()))
        .await?;
    s.caps = Caps {
        idle: caps.has_str("IDLE"),
        moves: caps.has_str("MOVE"),
        uidplus: caps.has_str("UIDPLUS"),
    };
    Ok(s)
}

async fn read_greeting(c: &mut Client<Conn>, timeout: Duration) -> Result<(), ImapError> {
    match tokio::time::timeout(timeout, c.read_response()).await {
        Err(_) => Err(ImapError::Timeout("greeting".into())),
        Ok(Err(e)) => Err(ImapError::Connection(format!("greeting: {e}"))),
        Ok(Ok(None)) => Err(ImapError::Connection("closed before the greeting".into())),
        Ok(Ok(Some(_))) => Ok(()),
    }
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = async_imap::error::Result<T>> + Send + 'a>>;

/// Renders UIDs as an IMAP sequence set (`1:5,7,9:10`).
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Quotes a mailbox name for a command line.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

impl ImapSession {
    fn session(&mut self) -> Result<&mut Session<Conn>, ImapError> {
        self.session
            .as_mut()
            .ok_or_else(|| ImapError::Connection("session already closed".into()))
    }

    async fn with_timeout<T>(
        &mut self,
        command: &str,
        f: impl for<'a> FnOnce(&'a mut Session<Conn>) -> BoxFut<'a, T>,
    ) -> Result<T, ImapError> {
        let timeout = self.timeout;
        let s = self.session()?;
        match tokio::time::timeout(timeout, f(s)).await {
            Err(_) => Err(ImapError::Timeout(command.into())),
            Ok(r) => r.map_err(|e| ImapError::command(command, e)),
        }
    }

    /// The server's hierarchy delimiter (`LIST "" ""`): `/` or `.` on common servers.
    pub async fn delimiter(&mut self) -> Result<Option<String>, ImapError> {
        self.with_timeout("LIST", |s| {
            Box::pin(async move {
                let list = s.list(Some(""), Some("\"\"")).await?;
                let names: Vec<_> = list.collect().await;
                Ok(names
                    .into_iter()
                    .filter_map(Result::ok)
                    .find_map(|n| n.delimiter().map(str::to_string)))
            })
        })
        .await
    }

    async fn folder_exists(&mut self, name: &str) -> Result<bool, ImapError> {
        let q = quote(name);
        self.with_timeout("LIST", |s| {
            Box::pin(async move {
                let list = s.list(Some(""), Some(&q)).await?;
                let names: Vec<_> = list.collect().await;
                Ok(names.into_iter().any(|n| n.is_ok()))
            })
        })
        .await
    }

    /// Creates a folder unless it exists.
    pub async fn ensure_folder(&mut self, name: &str) -> Result<(), ImapError> {
        if self.folder_exists(name).await? {
            return Ok(());
        }
        // async-imap quotes mailbox names itself (except LIST patterns).
        let q = name.to_string();
        match self.with_timeout("CREATE", |s| Box::pin(s.create(q))).await {
            Ok(()) => Ok(()),
            // Refused: fine if someone else created it meanwhile, an error otherwise.
            Err(e) if e.is_command_refusal() => {
                if self.folder_exists(name).await? {
                    Ok(())
                } else {
                    Err(ImapError::Command {
                        command: format!("CREATE {name}"),
                        message: format!("the folder cannot be created: {e}"),
                    })
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Selects the mailbox.
    pub async fn select(&mut self, name: &str) -> Result<Selected, ImapError> {
        let q = name.to_string();
        let m = self
            .with_timeout("SELECT", |s| Box::pin(s.select(q)))
            .await?;
        Ok(Selected {
            uid_validity: m.uid_validity.unwrap_or(0),
            uid_next: m.uid_next,
            exists: m.exists,
        })
    }

    /// `UID SEARCH query`, sorted.
    pub async fn uid_search(&mut self, query: &str) -> Result<Vec<u32>, ImapError> {
        let q = query.to_string();
        let set: HashSet<u32> = self
            .with_timeout("UID SEARCH", |s| Box::pin(s.uid_search(q)))
            .await?;
        let mut v: Vec<u32> = set.into_iter().collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Sizes (RFC822.SIZE) of the given UIDs; UIDs gone from the mailbox are absent.
    pub async fn sizes(&mut self, uids: &[u32]) -> Result<BTreeMap<u32, u32>, ImapError> {
        let set = uid_set(uids);
        self.fetch_map("UID FETCH RFC822.SIZE", set, "(UID RFC822.SIZE)", |f| {
            f.size
        })
        .await
    }

    /// Whole messages (`BODY.PEEK[]`, so nothing is marked \Seen before it is committed).
    pub async fn bodies(&mut self, uids: &[u32]) -> Result<BTreeMap<u32, Vec<u8>>, ImapError> {
        let set = uid_set(uids);
        self.fetch_map("UID FETCH BODY.PEEK[]", set, "(UID BODY.PEEK[])", |f| {
            f.body().map(<[u8]>::to_vec)
        })
        .await
    }

    /// The first `limit` bytes of messages (oversized ones: never loaded whole).
    pub async fn heads(
        &mut self,
        uids: &[u32],
        limit: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, ImapError> {
        let set = uid_set(uids);
        let query = format!("(UID BODY.PEEK[]<0.{limit}>)");
        self.fetch_map("UID FETCH BODY.PEEK[]<partial>", set, &query, |f| {
            f.body().map(<[u8]>::to_vec)
        })
        .await
    }

    async fn fetch_map<T: Send + 'static>(
        &mut self,
        command: &str,
        set: String,
        query: &str,
        pick: fn(&async_imap::types::Fetch) -> Option<T>,
    ) -> Result<BTreeMap<u32, T>, ImapError> {
        let timeout = self.timeout;
        let query = query.to_string();
        let s = self.session()?;
        let mut stream = match tokio::time::timeout(timeout, s.uid_fetch(set, query)).await {
            Err(_) => return Err(ImapError::Timeout(command.into())),
            Ok(r) => r.map_err(|e| ImapError::command(command, e))?,
        };
        let mut out = BTreeMap::new();
        // The timeout applies to each response, so a large batch is not cut short while data
        // keeps arriving, but a stalled server is.
        loop {
            match tokio::time::timeout(timeout, stream.next()).await {
                Err(_) => return Err(ImapError::Timeout(command.into())),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(ImapError::command(command, e)),
                Ok(Some(Ok(f))) => {
                    if let (Some(uid), Some(v)) = (f.uid, pick(&f)) {
                        out.insert(uid, v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Marks messages \Seen and moves them to `folder` (MOVE, or COPY + \Deleted + EXPUNGE).
    pub async fn mark_and_move(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let set = uid_set(uids);
        // \Seen for people; the keyword tells postdesk, should it die before the move below,
        // that this message was taken (a message that was already \Seen at first start is not).
        if self.keywords {
            match self
                .store_flags(&set, &format!("+FLAGS.SILENT (\\Seen {TAKEN_KEYWORD})"))
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_command_refusal() => {
                    tracing::warn!(error = %e, "the server refuses the {TAKEN_KEYWORD} keyword; flagging \\Seen only");
                    self.keywords = false;
                    self.store_flags(&set, "+FLAGS.SILENT (\\Seen)").await?;
                }
                Err(e) => return Err(e),
            }
        } else {
            self.store_flags(&set, "+FLAGS.SILENT (\\Seen)").await?;
        }
        let q = folder.to_string();
        if self.caps.moves {
            let set = set.clone();
            return self
                .with_timeout("UID MOVE", |s| Box::pin(s.uid_mv(set, q)))
                .await;
        }
        {
            let set = set.clone();
            self.with_timeout("UID COPY", |s| Box::pin(s.uid_copy(set, q)))
                .await?;
        }
        self.store_flags(&set, "+FLAGS.SILENT (\\Deleted)").await?;
        if self.caps.uidplus {
            self.with_timeout("UID EXPUNGE", |s| {
                Box::pin(async move {
                    let st = s.uid_expunge(set).await?;
                    let _: Vec<_> = st.collect().await;
                    Ok(())
                })
            })
            .await
        } else {
            self.with_timeout("EXPUNGE", |s| {
                Box::pin(async move {
                    let st = s.expunge().await?;
                    let _: Vec<_> = st.collect().await;
                    Ok(())
                })
            })
            .await
        }
    }

    async fn store_flags(&mut self, set: &str, what: &str) -> Result<(), ImapError> {
        let set = set.to_string();
        let what = what.to_string();
        self.with_timeout("UID STORE", |s| {
            Box::pin(async move {
                let st = s.uid_store(set, what).await?;
                let _: Vec<_> = st.collect().await;
                Ok(())
            })
        })
        .await
    }

    /// NOOP: lets the server report new mail, and proves the connection is alive.
    pub async fn noop(&mut self) -> Result<(), ImapError> {
        self.with_timeout("NOOP", |s| Box::pin(s.noop())).await
    }

    /// Throws away unsolicited responses seen so far (called before a search, so that what
    /// arrives afterwards is known to be news).
    pub fn drain_unsolicited(&mut self) {
        if let Some(s) = self.session.as_mut() {
            while s.unsolicited_responses.try_recv().is_ok() {}
        }
    }

    /// Waits in IDLE until the mailbox changes, `renew` passes, or `shutdown` turns true.
    /// Returns true when the mailbox may have changed.
    pub async fn idle(
        &mut self,
        renew: Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, ImapError> {
        let timeout = self.timeout;
        let session = self
            .session
            .take()
            .ok_or_else(|| ImapError::Connection("session already closed".into()))?;
        let early = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        match tokio::time::timeout(timeout, handle.init()).await {
            Err(_) => return Err(ImapError::Timeout("IDLE".into())),
            Ok(Err(e)) => return Err(ImapError::command("IDLE", e)),
            Ok(Ok(())) => {}
        }
        // News the server reported before it accepted IDLE went to the unsolicited channel.
        let mut changed = false;
        while let Ok(r) = early.try_recv() {
            if matches!(
                r,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            ) {
                changed = true;
            }
        }
        if !changed && !*shutdown.borrow() {
            let (wait, interrupt) = handle.wait_with_timeout(renew);
            let mut stop = shutdown.clone();
            let stopper = async move {
                loop {
                    if stop.changed().await.is_err() {
                        // Nobody can ask for shutdown any more: only the mailbox ends the wait.
                        std::future::pending::<()>().await;
                    }
                    if *stop.borrow() {
                        break;
                    }
                }
                drop(interrupt);
                std::future::pending::<()>().await
            };
            // The server's keep-alives reset async-imap's own timer: bound the whole wait too.
            let waited = tokio::select! {
                r = tokio::time::timeout(renew, wait) => r,
                _ = stopper => unreachable_pending(),
            };
            match waited {
                Err(_) | Ok(Ok(IdleResponse::Timeout)) | Ok(Ok(IdleResponse::ManualInterrupt)) => {}
                Ok(Ok(IdleResponse::NewData(_))) => changed = true,
                Ok(Err(e)) => return Err(ImapError::command("IDLE", e)),
            }
        }
        let session = match tokio::time::timeout(timeout, handle.done()).await {
            Err(_) => return Err(ImapError::Timeout("IDLE DONE".into())),
            Ok(r) => r.map_err(|e| ImapError::command("IDLE DONE", e))?,
        };
        self.session = Some(session);
        Ok(changed)
    }

    /// Logs out politely (best effort).
    pub async fn logout(mut self) {
        if let Some(mut s) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.logout()).await;
        }
    }
}

/// The stopper branch never completes: it only drops the interrupt, which ends the wait.
fn unreachable_pending<T>() -> T {
    unreachable!("the IDLE stopper future never completes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compact_ranges() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 7, 8, 3]), "1:3,5,7:9");
        assert_eq!(uid_set(&[42]), "42");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn xoauth2_initial_response_has_the_documented_shape() {
        assert_eq!(
            xoauth2_response("support@example.com", "ya29.tok"),
            "user=support@example.com\x01auth=Bearer ya29.tok\x01\x01"
        );
    }

    #[test]
    fn mailbox_names_are_quoted() {
        assert_eq!(quote("postdesk/processed"), "\"postdesk/processed\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[tokio::test]
    async fn token_command_and_file_are_read_and_trimmed() {
        let t = TokenSource::Command("printf ' tok-123\\n'".into());
        assert_eq!(t.token().await.unwrap_or_else(|e| panic!("{e}")), "tok-123");
        let bad = TokenSource::Command("echo nope >&2; exit 3".into());
        let e = bad
            .token()
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(e.to_string().contains("nope"), "{e}");
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = d.path().join("token");
        std::fs::write(&f, "abc\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            TokenSource::File(f)
                .token()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            "abc"
        );
    }
}
