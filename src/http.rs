//! `/healthz` and Prometheus `/metrics` on a local address (`[http] listen`). A tiny HTTP/1.1
//! responder on tokio: GET only, one request per connection, bounded reads and timeouts.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::{ImapState, METRICS};
use crate::store::Store;

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Binds the listener (errors name the address).
pub async fn bind(listen: &str) -> Result<TcpListener, String> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| format!("http.listen {listen}: {e}"))
}

/// Serves until `shutdown` turns true.
pub async fn serve<S: Store>(listener: TcpListener, store: S, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), handle(conn, &store)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn handle<S: Store>(mut conn: TcpStream, store: &S) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/healthz") => healthz(store).await,
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(store).await,
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

/// 200 when the database answers and the mailbox is connected (or not IMAP); 503 otherwise.
async fn healthz<S: Store>(store: &S) -> (&'static str, &'static str, String) {
    let imap = METRICS.imap_state();
    let db = store.outbox_backlog().await;
    // The SLA clock sweeps every minute; three minutes without a sweep is a stuck clock.
    let last_tick = METRICS.last_tick.load(std::sync::atomic::Ordering::Relaxed);
    let clock_ok = last_tick == 0 || chrono::Utc::now().timestamp() - last_tick <= 180;
    // Every supervised task of the worker: one that is restarting after a panic (or failed)
    // makes the worker degraded.
    let tasks = crate::supervise::states();
    let tasks_ok = tasks.iter().all(|(_, s)| {
        matches!(
            s,
            crate::supervise::TaskState::Running | crate::supervise::TaskState::Done
        )
    });
    let healthy = db.is_ok()
        && clock_ok
        && tasks_ok
        && matches!(
            imap,
            ImapState::Connected | ImapState::NotUsed | ImapState::StandingBy
        );
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "database": match &db { Ok(_) => "ok".to_string(), Err(e) => e.to_string() },
        "imap": imap.label(),
        "outbox_pending": db.as_ref().ok().map(|b| b.pending),
        "templates_broken": METRICS.templates_broken.load(std::sync::atomic::Ordering::Relaxed),
        "sla_clock": if last_tick == 0 { "not_started" } else if clock_ok { "ok" } else { "stuck" },
        "tasks": tasks
            .iter()
            .map(|(name, state)| (name.to_string(), serde_json::Value::from(state.label())))
            .collect::<serde_json::Map<_, _>>(),
    });
    (
        if healthy {
            "200 OK"
        } else {
            "503 Service Unavailable"
        },
        "application/json",
        format!("{body}\n"),
    )
}

/// The Prometheus exposition.
pub async fn metrics_text<S: Store>(store: &S) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &METRICS;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "postdesk_messages_taken_total",
        "counter",
        "Messages taken from the mailbox and committed (any outcome).",
        m.messages_taken.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_messages_quarantined_total",
        "counter",
        "Messages put in quarantine.",
        m.messages_quarantined.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_mails_sent_total",
        "counter",
        "Outbound mails delivered.",
        m.mails_sent.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_mail_retries_total",
        "counter",
        "Outbound delivery attempts that failed temporarily.",
        m.mail_retries.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_mails_failed_total",
        "counter",
        "Outbound mails given up (permanent failure).",
        m.mails_failed.load(Relaxed).to_string(),
    );
    let (depth, oldest) = match store.outbox_backlog().await {
        Ok(b) => (
            b.pending.to_string(),
            b.oldest
                .map(|t| ((Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0).to_string())
                .unwrap_or_else(|| "0".into()),
        ),
        Err(_) => ("NaN".into(), "NaN".into()),
    };
    metric(
        "postdesk_outbox_depth",
        "gauge",
        "Outbound mails waiting to be delivered.",
        depth,
    );
    metric(
        "postdesk_outbox_oldest_unsent_seconds",
        "gauge",
        "Age of the oldest mail waiting in the outbox (0 when none waits).",
        oldest,
    );
    let state = m.imap_state();
    metric(
        "postdesk_imap_connection_state",
        "gauge",
        "IMAP connection: -1 not used (maildir), 0 disconnected, 1 connecting, 2 connected, 3 standing by (another worker reads the mailbox).",
        (state as i64).to_string(),
    );
    metric(
        "postdesk_imap_connected",
        "gauge",
        "1 while the IMAP source is connected.",
        u8::from(state == ImapState::Connected).to_string(),
    );
    metric(
        "postdesk_imap_connects_total",
        "counter",
        "IMAP connections made (reconnects included).",
        m.imap_connects.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_task_restarts_total",
        "counter",
        "Worker tasks started again after a panic.",
        crate::supervise::RESTARTS.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_sla_last_tick_seconds",
        "gauge",
        "Unix time of the SLA clock's last sweep (0: none yet).",
        m.last_tick.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_sla_escalations_total",
        "counter",
        "Tickets escalated by the SLA clock.",
        m.escalations.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_templates_broken",
        "gauge",
        "Template errors in the files on disk (the last good version keeps serving).",
        m.templates_broken.load(Relaxed).to_string(),
    );
    metric(
        "postdesk_template_reloads_total",
        "counter",
        "Successful template reloads.",
        m.templates_reloads.load(Relaxed).to_string(),
    );
    out.push_str("# HELP postdesk_sla_breaches_total SLA deadlines reported breached.\n# TYPE postdesk_sla_breaches_total counter\n");
    for (k, kind) in ["response", "resolution"].iter().enumerate() {
        for sev in 0..4 {
            out.push_str(&format!(
                "postdesk_sla_breaches_total{{kind=\"{kind}\",severity=\"{}\"}} {}\n",
                sev + 1,
                m.breaches[k][sev].load(Relaxed)
            ));
        }
    }
    out
}
