//! Configuration: one TOML file, every key overridable from the environment, validated once at
//! start-up into typed values (SPEC: Interfaces, "Configuration names").
//!
//! Every key has an environment name made mechanically: `[database] url` ->
//! `POSTDESK_DATABASE_URL`; lists are comma-separated there. Any key can instead be read from a
//! file named by `POSTDESK_..._FILE` (for secrets), and secret keys also accept `<key>_file` in
//! the TOML file. A bad value is reported with where it came from (file or variable), the key
//! and what was expected; `main` exits 78 (EX_CONFIG) on it.
//!
//! Flat keys and the nested `[sla.sevN]` tables go through the key table below (file, then
//! environment, then `_FILE`, each value remembering its origin). `[calendars.NAME]` tables
//! are typed serde structs with `deny_unknown_fields`, deserialized one table at a time so an
//! error names `calendars.NAME.<key>`. figment was considered (it resolves and builds here) but
//! not taken: its environment provider cannot map `POSTDESK_MAILBOX_PROCESSED_FOLDER` to
//! `mailbox.processed_folder` without this key table anyway, has no comma lists or `_FILE`
//! secrets, and its errors would need rewriting to keep this wording.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::desk::{DowngradeMap, Policy, Severity, Status};
use crate::mail::parse::is_usable_address;
use crate::sla::calendar::{Calendar, CalendarError, HolidayRule, WeekHours, us_holidays};
use crate::sla::clock::Calendars;
use crate::sla::policy::{BadSpan, ClockKind, SlaPolicy, Span};

/// `digest.schedule` when none is configured: 08:00 on weekdays.
pub const DEFAULT_DIGEST_SCHEDULE: &str = "0 0 8 * * Mon-Fri";

/// The kind of value a key holds, which decides how an environment string is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Secret,
    List,
    Int,
    Bool,
    Map,
}

/// Every key postdesk knows, as (section, key, kind). The contract names from SPEC are all here.
const KEYS: &[(&str, &str, Kind)] = &[
    ("database", "url", Kind::Str),
    ("mailbox", "url", Kind::Str),
    ("mailbox", "password", Kind::Secret),
    ("mailbox", "auth", Kind::Str),
    ("mailbox", "processed_folder", Kind::Str),
    ("mailbox", "quarantine_folder", Kind::Str),
    ("mailbox", "poll_interval", Kind::Str),
    ("mailbox", "tls", Kind::Str),
    ("mailbox", "token_file", Kind::Str),
    ("mailbox", "token_command", Kind::Str),
    ("mailbox", "on_first_start", Kind::Str),
    ("mailbox", "idle_renew", Kind::Str),
    ("mailbox", "command_timeout", Kind::Str),
    ("outbox", "url", Kind::Str),
    ("outbox", "password", Kind::Secret),
    ("outbox", "poll_interval", Kind::Str),
    ("outbox", "tls", Kind::Str),
    ("outbox", "envelope_sender", Kind::Str),
    ("outbox", "concurrency", Kind::Int),
    ("outbox", "retry_min", Kind::Str),
    ("outbox", "retry_max", Kind::Str),
    ("outbox", "max_attempts", Kind::Int),
    ("outbox", "timeout", Kind::Str),
    ("outbox", "journal", Kind::Str),
    ("tls", "ca_file", Kind::Str),
    ("tls", "accept_invalid_certs", Kind::Bool),
    ("support", "addresses", Kind::List),
    ("support", "name", Kind::Str),
    ("support", "phone", Kind::Str),
    ("support", "tag_prefix", Kind::Str),
    ("staff", "domains", Kind::List),
    ("staff", "addresses", Kind::List),
    ("staff", "require_authenticated", Kind::Bool),
    ("staff", "authserv_id", Kind::Str),
    ("staff", "reveal_address", Kind::Bool),
    ("staff", "show_name", Kind::Str),
    ("staff", "max_attachment_size", Kind::Str),
    ("staff", "dkim_resolver", Kind::Str),
    ("statuses", "after_engineer_reply", Kind::Str),
    ("statuses", "reminder_after", Kind::Str),
    ("statuses", "close_pending_after", Kind::Str),
    ("statuses", "auto_close_after", Kind::Str),
    ("sla", "pause_when_customer_pending", Kind::Bool),
    ("sla.sev1", "response", Kind::Str),
    ("sla.sev1", "resolution", Kind::Str),
    ("sla.sev1", "update_every", Kind::Str),
    ("sla.sev1", "escalate_after", Kind::Str),
    ("sla.sev1", "clock", Kind::Str),
    ("sla.sev2", "response", Kind::Str),
    ("sla.sev2", "resolution", Kind::Str),
    ("sla.sev2", "update_every", Kind::Str),
    ("sla.sev2", "escalate_after", Kind::Str),
    ("sla.sev2", "clock", Kind::Str),
    ("sla.sev3", "response", Kind::Str),
    ("sla.sev3", "resolution", Kind::Str),
    ("sla.sev3", "update_every", Kind::Str),
    ("sla.sev3", "escalate_after", Kind::Str),
    ("sla.sev3", "clock", Kind::Str),
    ("sla.sev4", "response", Kind::Str),
    ("sla.sev4", "resolution", Kind::Str),
    ("sla.sev4", "update_every", Kind::Str),
    ("sla.sev4", "escalate_after", Kind::Str),
    ("sla.sev4", "clock", Kind::Str),
    ("calendars", "default", Kind::Str),
    ("digest", "schedule", Kind::Str),
    ("digest", "calendar", Kind::Str),
    ("threading", "reopen_window", Kind::Str),
    ("threading", "same_domain_joins", Kind::Bool),
    ("triage", "owners", Kind::List),
    ("escalation", "contacts", Kind::List),
    ("severity", "default", Kind::Int),
    ("severity", "downgrade", Kind::Map),
    ("templates", "dir", Kind::Str),
    ("templates", "watch", Kind::Bool),
    ("templates", "poll_interval", Kind::Str),
    ("http", "listen", Kind::Str),
    ("limits", "max_message_size", Kind::Str),
    ("loops", "max_auto_replies_per_hour", Kind::Int),
    ("worker", "batch_size", Kind::Int),
    ("log", "format", Kind::Str),
];

/// `POSTDESK_*` variables that are not configuration keys: the config file, the log filter, and
/// those the tests and benchmarks read.
const OTHER_VARS: &[&str] = &[
    "POSTDESK_CONFIG",
    "POSTDESK_LOG",
    "POSTDESK_BLESS",
    "POSTDESK_KEEP_MAILSTACK",
    "POSTDESK_KILL_WAIT_MS",
    "POSTDESK_TEST_POSTGRES_URL",
    "POSTDESK_BENCH_BACKLOG_N",
    "POSTDESK_BENCH_DATABASE",
    "POSTDESK_BENCH_FILE_OUTBOX",
    "POSTDESK_BENCH_LATENCY_N",
    "POSTDESK_BENCH_ONLY",
    "POSTDESK_BENCH_RELAY_N",
];

/// One warning line for each `POSTDESK_*` variable postdesk does not know (it would otherwise be
/// ignored silently), naming the known one it is closest to when that is at most two edits away.
pub fn unknown_env_warnings(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut known: Vec<String> = KEYS
        .iter()
        .flat_map(|(s, k, _)| {
            let name = env_name(s, k);
            [format!("{name}_FILE"), name]
        })
        .collect();
    known.extend(OTHER_VARS.iter().map(|v| v.to_string()));
    env.keys()
        .filter(|v| v.starts_with("POSTDESK_") && !known.contains(v))
        .map(|v| {
            let closest = known
                .iter()
                .map(|k| (edit_distance(v, k), k))
                .filter(|(d, _)| *d <= 2)
                .min();
            match closest {
                Some((_, k)) => {
                    format!("unknown environment variable {v} is ignored (did you mean {k}?)")
                }
                None => format!(
                    "unknown environment variable {v} is ignored (see the README's config reference)"
                ),
            }
        })
        .collect()
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Env(String),
    EnvFile(String, PathBuf),
    /// A built-in default (only named when a default cannot serve, e.g. it is missing).
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "config file {}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::EnvFile(v, p) => write!(f, "file {} (named by {v})", p.display()),
            Origin::Default => f.write_str("the built-in defaults"),
        }
    }
}

/// A configuration problem: where, which key, what was expected.
#[derive(Debug, thiserror::Error)]
#[error("config error in {origin}: key `{key}`: {problem}")]
pub struct ConfigError {
    /// The file or variable the value came from.
    pub origin: String,
    /// The dotted key (`database.url`).
    pub key: String,
    /// What was wrong and what was expected.
    pub problem: String,
}

/// Where postdesk keeps its tickets.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite:PATH` (created when missing).
    Sqlite(String),
    /// `postgres://...` or `postgresql://...`.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses a database URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(url.to_string()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_string()))
        } else {
            Err("expected a URL starting with sqlite: or postgres://".to_string())
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(u) => write!(f, "{u}"),
            DatabaseUrl::Postgres(u) => write!(f, "{}", redact_url_password(u)),
        }
    }
}

/// Hides the password part of `scheme://user:password@host`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Where mail comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxUrl {
    /// A local maildir (`maildir:./mail`).
    Maildir(PathBuf),
    /// An IMAP mailbox (`imaps://user@host:993/INBOX` or `imap://`), served by the IMAP source.
    Imap(Endpoint),
}

/// Where outbound mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxUrl {
    /// A directory of `.eml` files (`file:./outbox`).
    File(PathBuf),
    /// An SMTP server (`smtps://` or `smtp://`), served by the SMTP sender.
    Smtp(Endpoint),
}

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (`imaps://`, `smtps://`).
    Implicit,
    /// Plain connect, then STARTTLS, which is required (`imap://`, `smtp://`).
    StartTls,
    /// No TLS at all: only when the config says `tls = "none"` explicitly.
    None,
}

/// A server named by an `imap(s)://` or `smtp(s)://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured, password removed (for logs and as the source's key).
    pub url: String,
    /// TLS mode.
    pub tls: TlsMode,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login name (percent-decoded), if any.
    pub user: Option<String>,
    /// A password given inside the URL, if any.
    pub password: Option<Secret>,
    /// The path: the IMAP mailbox (`INBOX` when absent).
    pub path: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl Endpoint {
    /// Parses `scheme://[user[:password]@]host[:port][/path]` for one of `schemes`
    /// (name, TLS mode, default port). `user` and `path` are percent-decoded.
    pub fn parse(url: &str, schemes: &[(&str, TlsMode, u16)]) -> Result<Endpoint, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "expected scheme://host".to_string())?;
        let &(_, tls, default_port) = schemes
            .iter()
            .find(|(s, _, _)| s.eq_ignore_ascii_case(scheme))
            .ok_or_else(|| format!("unknown scheme {scheme}://"))?;
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((n, p)) => (Some(percent_decode(n)?), Some(Secret(percent_decode(p)?))),
                None => (Some(percent_decode(u)?), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| "unclosed [ in host".to_string())?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("bad port \"{p}\""))?,
        };
        let path = percent_decode(path.trim_end_matches('/'))?;
        Ok(Endpoint {
            url: redact_url_password(url),
            tls,
            host,
            port,
            user: user.filter(|u| !u.is_empty()),
            password,
            path,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in \"{s}\""))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{s}\" is not UTF-8 once decoded"))
}

/// What the first start on a mailbox that already holds mail does with that mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstStart {
    /// Take the unseen messages as new mail; leave the seen ones where they are.
    ProcessUnseen,
    /// Make tickets of every message there, sending no mail.
    ImportSilently,
    /// Leave every message there; take only what arrives afterwards.
    SkipExisting,
}

/// The IMAP and SMTP settings beyond the URLs.
#[derive(Debug, Clone)]
pub struct LiveMail {
    /// Where the XOAUTH2 bearer token is read from (each login).
    pub token_file: Option<PathBuf>,
    /// A command that prints the XOAUTH2 bearer token (each login).
    pub token_command: Option<String>,
    /// First start behaviour.
    pub on_first_start: FirstStart,
    /// IDLE is ended and re-issued after this long (RFC 2177 says at most 29 minutes).
    pub idle_renew: Duration,
    /// Longest wait for any IMAP response.
    pub command_timeout: Duration,
    /// SMTP envelope sender (bounces go there).
    pub envelope_sender: String,
    /// Parallel SMTP deliveries.
    pub concurrency: usize,
    /// First retry delay after a temporary failure.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts before a temporarily failing mail is given up.
    pub max_attempts: u32,
    /// SMTP connection and command timeout.
    pub smtp_timeout: Duration,
    /// Accept any server certificate (never on by default).
    pub accept_invalid_certs: bool,
    /// The SMTP hand-over journal file (default: next to the SQLite file).
    pub journal: Option<PathBuf>,
}

/// A password or token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where DKIM keys are looked up (`staff.dkim_resolver`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimResolver {
    /// The system's resolver (`/etc/resolv.conf`).
    System,
    /// No lookups: postdesk trusts only `Authentication-Results`.
    Off,
    /// These name servers.
    Nameservers(Vec<std::net::SocketAddr>),
}

/// A customer company: its mail domain, name and account manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Mail domain, lower-cased.
    pub domain: String,
    /// Company name.
    pub company: String,
    /// Account manager's address.
    pub account_manager: Option<String>,
    /// Preferred language for templates.
    pub language: Option<String>,
    /// Business-hours calendar name.
    pub calendar: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// Ticket store.
    pub database_url: DatabaseUrl,
    /// Inbound mailbox.
    pub mailbox_url: MailboxUrl,
    /// Mailbox password.
    pub mailbox_password: Option<Secret>,
    /// Mailbox authentication (`password` or `xoauth2`).
    pub mailbox_auth: String,
    /// IMAP folder for processed mail.
    pub processed_folder: String,
    /// IMAP folder for quarantined mail.
    pub quarantine_folder: String,
    /// How often the mailbox is checked when it cannot push.
    pub poll_interval: Duration,
    /// Outbound transport.
    pub outbox_url: OutboxUrl,
    /// SMTP password.
    pub outbox_password: Option<Secret>,
    /// How often the outbox is checked for due mail.
    pub outbox_poll_interval: Duration,
    /// Extra CA for IMAP and SMTP.
    pub tls_ca_file: Option<PathBuf>,
    /// Support addresses, lower-cased; the first sends.
    pub support_addresses: Vec<String>,
    /// Display name on outbound mail.
    pub support_name: String,
    /// Phone number for Sev 1/2.
    pub support_phone: String,
    /// Ticket tag prefix (`#` gives `[#1234]`).
    pub tag_prefix: String,
    /// Staff mail domains, lower-cased.
    pub staff_domains: Vec<String>,
    /// Staff addresses outside those domains, lower-cased.
    pub staff_addresses: Vec<String>,
    /// Honour engineer commands only with DKIM/SPF pass.
    pub staff_require_authenticated: bool,
    /// The receiving host whose `Authentication-Results` header is trusted, lower-cased.
    pub staff_authserv_id: Option<String>,
    /// Show the engineer's address to customers in relayed replies.
    pub staff_reveal_address: bool,
    /// The display name of relayed replies; `NAME` is the engineer's name.
    pub staff_show_name: String,
    /// Customer attachments larger than this in sum are not attached to engineer notifications.
    pub staff_max_attachment_size: usize,
    /// Where postdesk looks up DKIM keys.
    pub dkim_resolver: DkimResolver,
    /// The status an engineer's public reply without a status command leads to.
    pub after_engineer_reply: Status,
    /// A reply to a closed ticket within this long after closing reopens it.
    pub reopen_window: Duration,
    /// A sender from the requester's own `[[customers]]` domain joins a ticket as a watcher.
    pub same_domain_joins: bool,
    /// Triage owners.
    pub triage_owners: Vec<String>,
    /// Escalation contacts.
    pub escalation_contacts: Vec<String>,
    /// Severity when none is given.
    pub default_severity: Severity,
    /// What email may not open.
    pub downgrade: DowngradeMap,
    /// Template directory.
    pub templates_dir: PathBuf,
    /// Reload templates while the worker runs.
    pub templates_watch: bool,
    /// How often the worker looks for template edits.
    pub templates_poll_interval: Duration,
    /// Local address for /healthz and /metrics.
    pub http_listen: Option<String>,
    /// Largest message taken, in bytes.
    pub max_message_size: usize,
    /// RFC 3834 limit per sender per hour.
    pub max_auto_replies_per_hour: u32,
    /// Messages committed together by the worker (group commit).
    pub batch_size: usize,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Customer companies.
    pub customers: Vec<Customer>,
    /// IMAP and SMTP details.
    pub live: LiveMail,
    /// SLA targets per severity and the status timers (`[sla.sevN]`, `[statuses]`).
    pub sla: SlaPolicy,
    /// The built-in and configured business-hours calendars (`[calendars.NAME]`).
    pub calendars: Calendars,
    /// When the daily digest goes out: a cron expression (`digest.schedule`), checked for its
    /// shape only here.
    pub digest_schedule: String,
    /// The calendar whose zone the digest schedule runs in (`digest.calendar`).
    pub digest_calendar: String,
}

impl Config {
    /// The decision policy derived from this config.
    pub fn policy(&self) -> Policy {
        Policy {
            support_addresses: self.support_addresses.clone(),
            default_severity: self.default_severity,
            downgrade: self.downgrade.clone(),
            max_auto_replies_per_hour: self.max_auto_replies_per_hour,
            tag_prefix: self.tag_prefix.clone(),
            staff_domains: self.staff_domains.clone(),
            staff_addresses: self.staff_addresses.clone(),
            customers: self
                .customers
                .iter()
                .map(|c| crate::desk::CustomerDomain {
                    domain: c.domain.clone(),
                    account_manager: c.account_manager.as_ref().map(|a| a.to_ascii_lowercase()),
                    calendar: c.calendar.clone(),
                })
                .collect(),
            reopen_window: chrono::Duration::from_std(self.reopen_window)
                .unwrap_or(chrono::Duration::days(14)),
            same_domain_joins: self.same_domain_joins,
            triage_owners: self.triage_owners.clone(),
            require_authenticated: self.staff_require_authenticated,
            after_engineer_reply: self.after_engineer_reply,
            sla: self.sla.clone(),
            calendars: self.calendars.clone(),
            escalation_contacts: self.escalation_contacts.clone(),
        }
    }

    /// The address outbound mail is sent from.
    pub fn sending_address(&self) -> &str {
        self.support_addresses
            .first()
            .map(String::as_str)
            .unwrap_or("support@localhost")
    }

    /// Loads `file` (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    /// Loads `file` (if any) with the given environment (tests pass their own).
    pub fn load_with_env(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut values = Values::default();
        if let Some(path) = file {
            values.read_file(path)?;
        }
        values.read_env(env)?;
        values.build(file)
    }
}

#[derive(Default)]
struct Values {
    map: BTreeMap<String, (toml::Value, Origin)>,
    customers: Vec<(toml::Table, Origin)>,
    /// `[calendars.NAME]` tables, by name (file only).
    calendars: Vec<(String, toml::Table, Origin)>,
}

/// The environment name of a key: `[sla.sev3] response` -> `POSTDESK_SLA_SEV3_RESPONSE`.
fn env_name(section: &str, key: &str) -> String {
    format!(
        "POSTDESK_{}_{}",
        section.to_uppercase().replace(['.', '-'], "_"),
        key.to_uppercase()
    )
}

fn err(origin: &Origin, key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        origin: origin.to_string(),
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn kind_of(section: &str, key: &str) -> Option<Kind> {
    KEYS.iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map(|(_, _, kind)| *kind)
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string \"{s}\""),
        other => format!("{} {other}", other.type_str()),
    }
}

impl Values {
    fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let origin = Origin::File(path.to_path_buf());
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(&origin, "-", format!("cannot read the file: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(&origin, "-", format!("not valid TOML: {e}")))?;
        for (section, value) in table {
            if section == "customers" {
                let toml::Value::Array(items) = value else {
                    return Err(err(
                        &origin,
                        "customers",
                        "expected an array of tables ([[customers]])",
                    ));
                };
                for item in items {
                    let toml::Value::Table(t) = item else {
                        return Err(err(
                            &origin,
                            "customers",
                            "expected an array of tables ([[customers]])",
                        ));
                    };
                    self.customers.push((t, origin.clone()));
                }
                continue;
            }
            let toml::Value::Table(entries) = value else {
                return Err(err(
                    &origin,
                    &section,
                    format!("expected a [{section}] table, found {}", describe(&value)),
                ));
            };
            self.read_table(&section, entries, &origin)?;
        }
        Ok(())
    }

    /// The keys of one `[section]` (or nested `[section.sub]`) table of the file.
    fn read_table(
        &mut self,
        section: &str,
        entries: toml::Table,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        for (key, v) in entries {
            let dotted = format!("{section}.{key}");
            // `[calendars.NAME]` tables are calendars (file only); `calendars.default` is a key.
            if section == "calendars" && key != "default" {
                let toml::Value::Table(t) = v else {
                    return Err(err(
                        origin,
                        &dotted,
                        format!(
                            "expected a [calendars.{key}] table (zone, hours, holidays), found {}",
                            describe(&v)
                        ),
                    ));
                };
                self.calendars.retain(|(n, _, _)| *n != key);
                self.calendars.push((key, t, origin.clone()));
                continue;
            }
            if let Some(base) = key.strip_suffix("_file")
                && kind_of(section, base) == Some(Kind::Secret)
            {
                let toml::Value::String(p) = &v else {
                    return Err(err(origin, &dotted, "expected a file path string"));
                };
                let secret = read_secret_file(Path::new(p)).map_err(|e| err(origin, &dotted, e))?;
                self.map.insert(
                    format!("{section}.{base}"),
                    (toml::Value::String(secret), origin.clone()),
                );
                continue;
            }
            if kind_of(section, &key).is_none() {
                // A nested table of known keys (`[sla.sev3]`).
                if let toml::Value::Table(t) = v
                    && KEYS.iter().any(|(s, _, _)| *s == dotted)
                {
                    self.read_table(&dotted, t, origin)?;
                    continue;
                }
                return Err(err(
                    origin,
                    &dotted,
                    "unknown key (see the README's config reference)",
                ));
            }
            self.map.insert(dotted, (v, origin.clone()));
        }
        Ok(())
    }

    fn read_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        for (section, key, kind) in KEYS {
            let name = env_name(section, key);
            let dotted = format!("{section}.{key}");
            let file_name = format!("{name}_FILE");
            let (raw, origin) = if let Some(v) = env.get(&name) {
                (v.clone(), Origin::Env(name.clone()))
            } else if let Some(p) = env.get(&file_name) {
                let origin = Origin::EnvFile(file_name.clone(), PathBuf::from(p));
                let v = read_secret_file(Path::new(p)).map_err(|e| err(&origin, &dotted, e))?;
                (v, origin)
            } else {
                continue;
            };
            let value = match kind {
                Kind::Str | Kind::Secret => toml::Value::String(raw),
                Kind::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
                Kind::Int => toml::Value::Integer(raw.trim().parse().map_err(|_| {
                    err(
                        &origin,
                        &dotted,
                        format!("expected an integer, found \"{raw}\""),
                    )
                })?),
                Kind::Bool => {
                    toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        _ => {
                            return Err(err(
                                &origin,
                                &dotted,
                                format!("expected true or false, found \"{raw}\""),
                            ));
                        }
                    })
                }
                Kind::Map => {
                    let mut t = toml::Table::new();
                    for pair in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let (k, v) = pair.split_once('=').ok_or_else(|| {
                            err(
                                &origin,
                                &dotted,
                                format!("expected pairs like 1=3,2=4, found \"{raw}\""),
                            )
                        })?;
                        let v: i64 = v.trim().parse().map_err(|_| {
                            err(
                                &origin,
                                &dotted,
                                format!("expected pairs like 1=3,2=4, found \"{raw}\""),
                            )
                        })?;
                        t.insert(k.trim().to_string(), toml::Value::Integer(v));
                    }
                    toml::Value::Table(t)
                }
            };
            self.map.insert(dotted, (value, origin));
        }
        Ok(())
    }

    fn str_or(&self, key: &str, default: &str) -> Result<(String, Option<Origin>), ConfigError> {
        match self.map.get(key) {
            None => Ok((default.to_string(), None)),
            Some((toml::Value::String(s), o)) => Ok((s.clone(), Some(o.clone()))),
            Some((v, o)) => Err(err(
                o,
                key,
                format!("expected a string, found {}", describe(v)),
            )),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<(String, Origin)>, ConfigError> {
        match self.map.get(key) {
            None => Ok(None),
            Some((toml::Value::String(s), o)) => Ok(Some((s.clone(), o.clone()))),
            Some((v, o)) => Err(err(
                o,
                key,
                format!("expected a string, found {}", describe(v)),
            )),
        }
    }

    fn int_or(&self, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        match self.map.get(key) {
            None => Ok(default),
            Some((toml::Value::Integer(n), _)) if (min..=max).contains(n) => Ok(*n),
            Some((v, o)) => Err(err(
                o,
                key,
                format!(
                    "expected an integer from {min} to {max}, found {}",
                    describe(v)
                ),
            )),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.map.get(key) {
            None => Ok(default),
            Some((toml::Value::Boolean(b), _)) => Ok(*b),
            Some((v, o)) => Err(err(
                o,
                key,
                format!("expected true or false, found {}", describe(v)),
            )),
        }
    }

    fn address_list(&self, key: &str, default: &[&str]) -> Result<Vec<String>, ConfigError> {
        let Some((v, o)) = self.map.get(key) else {
            return Ok(default.iter().map(|s| s.to_string()).collect());
        };
        let toml::Value::Array(items) = v else {
            return Err(err(
                o,
                key,
                format!("expected a list of strings, found {}", describe(v)),
            ));
        };
        items
            .iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(s.trim().to_ascii_lowercase()),
                other => Err(err(
                    o,
                    key,
                    format!("expected a list of strings, found {}", describe(other)),
                )),
            })
            .collect()
    }

    fn build(self, file: Option<&Path>) -> Result<Config, ConfigError> {
        let (db, db_origin) = self.str_or("database.url", "sqlite:./postdesk.db")?;
        let database_url = DatabaseUrl::parse(&db).map_err(|p| {
            err(
                &db_origin.unwrap_or(Origin::Default),
                "database.url",
                format!("{p}, found \"{}\"", redact_url_password(&db)),
            )
        })?;

        let (mb, mb_origin) = self.str_or("mailbox.url", "maildir:./mail")?;
        let tls_none = |key: &str| -> Result<bool, ConfigError> {
            let (v, o) = self.str_or(key, "required")?;
            match v.as_str() {
                "required" => Ok(false),
                "none" => Ok(true),
                other => Err(err(
                    &o.unwrap_or(Origin::Default),
                    key,
                    format!("expected \"required\" or \"none\", found \"{other}\""),
                )),
            }
        };
        let mailbox_tls_none = tls_none("mailbox.tls")?;
        let outbox_tls_none = tls_none("outbox.tls")?;
        let mailbox_url = if let Some(path) = mb.strip_prefix("maildir:") {
            MailboxUrl::Maildir(PathBuf::from(path))
        } else if mb.starts_with("imaps://") || mb.starts_with("imap://") {
            let plain = if mailbox_tls_none {
                TlsMode::None
            } else {
                TlsMode::StartTls
            };
            let mut e = Endpoint::parse(
                &mb,
                &[("imaps", TlsMode::Implicit, 993), ("imap", plain, 143)],
            )
            .map_err(|p| {
                err(
                    &mb_origin.clone().unwrap_or(Origin::Default),
                    "mailbox.url",
                    p,
                )
            })?;
            if e.user.is_none() {
                return Err(err(
                    &mb_origin.unwrap_or(Origin::Default),
                    "mailbox.url",
                    "expected the login name in the URL: imaps://user@host/INBOX (write @ in the name as %40)",
                ));
            }
            if e.path.is_empty() {
                e.path = "INBOX".into();
            }
            MailboxUrl::Imap(e)
        } else {
            return Err(err(
                &mb_origin.unwrap_or(Origin::Default),
                "mailbox.url",
                format!("expected maildir:PATH, imaps://... or imap://..., found \"{mb}\""),
            ));
        };

        let (ob, ob_origin) = self.str_or("outbox.url", "file:./outbox")?;
        let outbox_url = if let Some(path) = ob.strip_prefix("file:") {
            OutboxUrl::File(PathBuf::from(path))
        } else if ob.starts_with("smtps://") || ob.starts_with("smtp://") {
            let plain = if outbox_tls_none {
                TlsMode::None
            } else {
                TlsMode::StartTls
            };
            OutboxUrl::Smtp(
                Endpoint::parse(
                    &ob,
                    &[("smtps", TlsMode::Implicit, 465), ("smtp", plain, 587)],
                )
                .map_err(|p| {
                    err(
                        &ob_origin.clone().unwrap_or(Origin::Default),
                        "outbox.url",
                        p,
                    )
                })?,
            )
        } else {
            return Err(err(
                &ob_origin.unwrap_or(Origin::Default),
                "outbox.url",
                format!("expected file:PATH, smtps://... or smtp://..., found \"{ob}\""),
            ));
        };

        let support_addresses = self.address_list("support.addresses", &["support@example.com"])?;
        let bad_address = |key: &str, list: &[String]| -> Result<(), ConfigError> {
            if let Some(bad) = list.iter().find(|a| !is_usable_address(a)) {
                let origin = self
                    .map
                    .get(key)
                    .map(|(_, o)| o.clone())
                    .unwrap_or(Origin::Default);
                return Err(err(
                    &origin,
                    key,
                    format!("expected mail addresses, found \"{bad}\""),
                ));
            }
            Ok(())
        };
        bad_address("support.addresses", &support_addresses)?;
        if support_addresses.is_empty() {
            let origin = self
                .map
                .get("support.addresses")
                .map(|(_, o)| o.clone())
                .unwrap_or(Origin::Default);
            return Err(err(
                &origin,
                "support.addresses",
                "expected at least one support address",
            ));
        }
        let staff_addresses = self.address_list("staff.addresses", &[])?;
        bad_address("staff.addresses", &staff_addresses)?;
        let triage_owners = self.address_list("triage.owners", &[])?;
        bad_address("triage.owners", &triage_owners)?;
        let escalation_contacts = self.address_list("escalation.contacts", &[])?;
        bad_address("escalation.contacts", &escalation_contacts)?;

        let default_severity =
            Severity::try_from(self.int_or("severity.default", 4, 1, 4)?).unwrap_or(Severity::Sev4);
        let downgrade = match self.map.get("severity.downgrade") {
            None => DowngradeMap::default(),
            Some((toml::Value::Table(t), o)) => {
                let mut pairs = Vec::new();
                for (k, v) in t {
                    let from = k
                        .parse::<Severity>()
                        .map_err(|e| err(o, "severity.downgrade", e.to_string()))?;
                    let to = v
                        .as_integer()
                        .and_then(|n| Severity::try_from(n).ok())
                        .ok_or_else(|| {
                            err(
                                o,
                                "severity.downgrade",
                                format!("expected severities 1-4 as values, found {}", describe(v)),
                            )
                        })?;
                    pairs.push((from, to));
                }
                DowngradeMap::new(pairs)
            }
            Some((v, o)) => {
                return Err(err(
                    o,
                    "severity.downgrade",
                    format!(
                        "expected a table like {{ 1 = 3, 2 = 4 }}, found {}",
                        describe(v)
                    ),
                ));
            }
        };

        let poll_interval = self.duration_or("mailbox.poll_interval", "30s")?;
        let outbox_poll_interval = self.duration_or("outbox.poll_interval", "250ms")?;
        let max_message_size = self.size_or("limits.max_message_size", 25 * 1024 * 1024)?;
        let staff_max_attachment_size =
            self.size_or("staff.max_attachment_size", 10 * 1024 * 1024)?;
        let (after, after_origin) =
            self.str_or("statuses.after_engineer_reply", "customer_pending")?;
        let after_engineer_reply: Status =
            after
                .parse()
                .map_err(|e: crate::desk::status::UnknownStatus| {
                    err(
                        &after_origin.unwrap_or(Origin::Default),
                        "statuses.after_engineer_reply",
                        e.to_string(),
                    )
                })?;
        let (resolver, resolver_origin) = self.str_or("staff.dkim_resolver", "system")?;
        let dkim_resolver = match resolver.trim() {
            "system" => DkimResolver::System,
            "off" | "none" => DkimResolver::Off,
            list => {
                let mut addrs = Vec::new();
                for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                    let parsed = a
                        .parse::<std::net::SocketAddr>()
                        .or_else(|_| format!("{a}:53").parse::<std::net::SocketAddr>());
                    match parsed {
                        Ok(sa) => addrs.push(sa),
                        Err(_) => {
                            return Err(err(
                                &resolver_origin.unwrap_or(Origin::Default),
                                "staff.dkim_resolver",
                                format!(
                                    "expected \"system\", \"off\" or nameserver addresses like \"127.0.0.1:53\", found \"{a}\""
                                ),
                            ));
                        }
                    }
                }
                DkimResolver::Nameservers(addrs)
            }
        };

        let auth = self.str_or("mailbox.auth", "password")?;
        if auth.0 != "password" && auth.0 != "xoauth2" {
            return Err(err(
                &auth.1.unwrap_or(Origin::Default),
                "mailbox.auth",
                format!("expected \"password\" or \"xoauth2\", found \"{}\"", auth.0),
            ));
        }
        let (first, first_origin) = self.str_or("mailbox.on_first_start", "process_unseen")?;
        let on_first_start = match first.as_str() {
            "process_unseen" => FirstStart::ProcessUnseen,
            "import_silently" => FirstStart::ImportSilently,
            "skip_existing" => FirstStart::SkipExisting,
            other => {
                return Err(err(
                    &first_origin.unwrap_or(Origin::Default),
                    "mailbox.on_first_start",
                    format!(
                        "expected \"process_unseen\", \"import_silently\" or \"skip_existing\", found \"{other}\""
                    ),
                ));
            }
        };
        let idle_renew = self.duration_or("mailbox.idle_renew", "10m")?;
        if idle_renew > Duration::from_secs(29 * 60) || idle_renew < Duration::from_secs(1) {
            let o = self.map.get("mailbox.idle_renew").map(|(_, o)| o.clone());
            return Err(err(
                &o.unwrap_or(Origin::Default),
                "mailbox.idle_renew",
                "expected between 1s and 29m (RFC 2177: re-issue IDLE at least every 29 minutes)",
            ));
        }
        let envelope_sender = match self.opt_str("outbox.envelope_sender")? {
            Some((s, o)) => {
                if !is_usable_address(&s) {
                    return Err(err(
                        &o,
                        "outbox.envelope_sender",
                        format!("expected a mail address, found \"{s}\""),
                    ));
                }
                s
            }
            None => support_addresses[0].clone(),
        };
        let live = LiveMail {
            token_file: self
                .opt_str("mailbox.token_file")?
                .map(|(s, _)| PathBuf::from(s)),
            token_command: self.opt_str("mailbox.token_command")?.map(|(s, _)| s),
            on_first_start,
            idle_renew,
            command_timeout: self.duration_or("mailbox.command_timeout", "60s")?,
            envelope_sender,
            concurrency: self.int_or("outbox.concurrency", 4, 1, 256)? as usize,
            retry_min: self.duration_or("outbox.retry_min", "30s")?,
            retry_max: self.duration_or("outbox.retry_max", "1h")?,
            max_attempts: self.int_or("outbox.max_attempts", 60, 1, 100_000)? as u32,
            smtp_timeout: self.duration_or("outbox.timeout", "60s")?,
            accept_invalid_certs: self.bool_or("tls.accept_invalid_certs", false)?,
            journal: self
                .opt_str("outbox.journal")?
                .map(|(s, _)| PathBuf::from(s)),
        };
        if auth.0 == "xoauth2"
            && live.token_file.is_none()
            && live.token_command.is_none()
            && !self.map.contains_key("mailbox.password")
            && matches!(mailbox_url, MailboxUrl::Imap(_))
        {
            return Err(err(
                &auth.1.clone().unwrap_or(Origin::Default),
                "mailbox.auth",
                "xoauth2 needs the bearer token: set mailbox.token_file, mailbox.token_command or mailbox.password",
            ));
        }
        let log_format = self.str_or("log.format", "text")?;
        if log_format.0 != "text" && log_format.0 != "json" {
            return Err(err(
                &log_format.1.unwrap_or(Origin::Default),
                "log.format",
                format!("expected \"text\" or \"json\", found \"{}\"", log_format.0),
            ));
        }

        let calendars = self.calendars()?;
        let known_calendar = |key: &str, name: &str, origin: &Origin| -> Result<(), ConfigError> {
            if calendars.get(name).is_none() {
                return Err(err(
                    origin,
                    key,
                    format!(
                        "unknown calendar \"{name}\": expected one of {}",
                        calendars.names().join(", ")
                    ),
                ));
            }
            Ok(())
        };
        let sla = self.sla_policy(&known_calendar)?;
        let (digest_schedule, schedule_origin) =
            self.str_or("digest.schedule", DEFAULT_DIGEST_SCHEDULE)?;
        check_cron(&digest_schedule).map_err(|p| {
            err(
                &schedule_origin.unwrap_or(Origin::Default),
                "digest.schedule",
                p,
            )
        })?;
        let (digest_calendar, digest_origin) = self.str_or("digest.calendar", "us-central")?;
        known_calendar(
            "digest.calendar",
            &digest_calendar,
            &digest_origin.unwrap_or(Origin::Default),
        )?;

        let mut customers = Vec::new();
        for (t, o) in &self.customers {
            let get = |k: &str| -> Result<Option<String>, ConfigError> {
                match t.get(k) {
                    None => Ok(None),
                    Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                    Some(v) => Err(err(
                        o,
                        &format!("customers.{k}"),
                        format!("expected a string, found {}", describe(v)),
                    )),
                }
            };
            for k in t.keys() {
                if ![
                    "domain",
                    "company",
                    "account_manager",
                    "language",
                    "calendar",
                ]
                .contains(&k.as_str())
                {
                    return Err(err(o, &format!("customers.{k}"), "unknown key"));
                }
            }
            let domain = get("domain")?.ok_or_else(|| {
                err(
                    o,
                    "customers.domain",
                    "every [[customers]] entry needs a domain",
                )
            })?;
            let company = get("company")?.unwrap_or_else(|| domain.clone());
            let calendar = get("calendar")?;
            if let Some(c) = &calendar {
                let known = &calendars;
                if known.get(c).is_none() {
                    return Err(err(
                        o,
                        "customers.calendar",
                        format!(
                            "unknown calendar \"{c}\" for {domain}: expected one of {}",
                            known.names().join(", ")
                        ),
                    ));
                }
            }
            customers.push(Customer {
                domain: domain.to_ascii_lowercase(),
                company,
                account_manager: get("account_manager")?,
                language: get("language")?,
                calendar,
            });
        }

        Ok(Config {
            file: file.map(Path::to_path_buf),
            database_url,
            mailbox_url,
            mailbox_password: self.opt_str("mailbox.password")?.map(|(s, _)| Secret(s)),
            mailbox_auth: auth.0,
            processed_folder: self
                .str_or("mailbox.processed_folder", "postdesk/processed")?
                .0,
            quarantine_folder: self
                .str_or("mailbox.quarantine_folder", "postdesk/quarantine")?
                .0,
            poll_interval,
            outbox_url,
            outbox_password: self.opt_str("outbox.password")?.map(|(s, _)| Secret(s)),
            outbox_poll_interval,
            tls_ca_file: self.opt_str("tls.ca_file")?.map(|(s, _)| PathBuf::from(s)),
            support_addresses,
            support_name: self.str_or("support.name", "Support")?.0,
            support_phone: self.str_or("support.phone", "+1 555 0100")?.0,
            tag_prefix: self.str_or("support.tag_prefix", "#")?.0,
            staff_domains: self.address_list("staff.domains", &["example.com"])?,
            staff_addresses,
            staff_require_authenticated: self.bool_or("staff.require_authenticated", false)?,
            staff_authserv_id: self
                .opt_str("staff.authserv_id")?
                .map(|(s, _)| s.trim().to_ascii_lowercase()),
            staff_reveal_address: self.bool_or("staff.reveal_address", false)?,
            staff_show_name: self.str_or("staff.show_name", "NAME (Support)")?.0,
            staff_max_attachment_size,
            dkim_resolver,
            after_engineer_reply,
            reopen_window: self.duration_or("threading.reopen_window", "14d")?,
            same_domain_joins: self.bool_or("threading.same_domain_joins", true)?,
            triage_owners,
            escalation_contacts,
            default_severity,
            downgrade,
            templates_dir: PathBuf::from(self.str_or("templates.dir", "./templates")?.0),
            templates_watch: self.bool_or("templates.watch", true)?,
            templates_poll_interval: self.duration_or("templates.poll_interval", "200ms")?,
            http_listen: self.opt_str("http.listen")?.map(|(s, _)| s),
            max_message_size,
            max_auto_replies_per_hour: self.int_or(
                "loops.max_auto_replies_per_hour",
                20,
                0,
                1_000_000,
            )? as u32,
            batch_size: self.int_or("worker.batch_size", 64, 1, 10_000)? as usize,
            log_format: log_format.0,
            customers,
            live,
            sla,
            calendars,
            digest_schedule,
            digest_calendar,
        })
    }

    /// The SLA targets: SPEC's table with each configured `[sla.sevN]` key and the
    /// `[statuses]` timers applied.
    fn sla_policy(
        &self,
        known_calendar: &dyn Fn(&str, &str, &Origin) -> Result<(), ConfigError>,
    ) -> Result<SlaPolicy, ConfigError> {
        let mut policy = SlaPolicy::default();
        let span = |key: &str, target: &mut Span| -> Result<(), ConfigError> {
            if let Some((s, o)) = self.opt_str(key)? {
                *target = s
                    .parse()
                    .map_err(|e: BadSpan| err(&o, key, e.to_string()))?;
            }
            Ok(())
        };
        for (i, t) in policy.targets.iter_mut().enumerate() {
            let section = format!("sla.sev{}", i + 1);
            span(&format!("{section}.response"), &mut t.response)?;
            span(&format!("{section}.resolution"), &mut t.resolution)?;
            span(&format!("{section}.update_every"), &mut t.update_every)?;
            span(&format!("{section}.escalate_after"), &mut t.escalate_after)?;
            let key = format!("{section}.clock");
            if let Some((s, o)) = self.opt_str(&key)? {
                let clock: ClockKind = s.parse().map_err(|p: String| err(&o, &key, p))?;
                if let ClockKind::Named(name) = &clock {
                    known_calendar(&key, name, &o).map_err(|mut e| {
                        e.problem = format!(
                            "{} (or \"24x7\", or \"business\" for the customer's calendar)",
                            e.problem
                        );
                        e
                    })?;
                }
                t.clock = clock;
            }
        }
        policy.pause_when_customer_pending =
            self.bool_or("sla.pause_when_customer_pending", true)?;
        span("statuses.reminder_after", &mut policy.timers.reminder_after)?;
        span(
            "statuses.close_pending_after",
            &mut policy.timers.close_pending_after,
        )?;
        span(
            "statuses.auto_close_after",
            &mut policy.timers.auto_close_after,
        )?;
        Ok(policy)
    }

    /// The built-in calendars, each `[calendars.NAME]` table (replacing a built-in of that
    /// name), and `calendars.default`.
    fn calendars(&self) -> Result<Calendars, ConfigError> {
        let mut calendars = Calendars::default();
        for (name, table, origin) in &self.calendars {
            calendars.insert(parse_calendar(name, table, origin)?);
        }
        if let Some((name, origin)) = self.opt_str("calendars.default")? {
            if calendars.get(&name).is_none() {
                return Err(err(
                    &origin,
                    "calendars.default",
                    format!(
                        "unknown calendar \"{name}\": expected one of {}",
                        calendars.names().join(", ")
                    ),
                ));
            }
            calendars.business_default = name;
        }
        Ok(calendars)
    }

    fn size_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.map.get(key) {
            None => Ok(default),
            Some((toml::Value::Integer(n), _)) if *n > 0 => Ok(*n as usize),
            Some((toml::Value::String(s), o)) => parse_size(s).ok_or_else(|| {
                err(
                    o,
                    key,
                    format!("expected a size like \"25MB\", found \"{s}\""),
                )
            }),
            Some((v, o)) => Err(err(
                o,
                key,
                format!("expected a size like \"25MB\", found {}", describe(v)),
            )),
        }
    }

    fn duration_or(&self, key: &str, default: &str) -> Result<Duration, ConfigError> {
        let (s, origin) = self.str_or(key, default)?;
        parse_duration(&s).ok_or_else(|| {
            err(
                &origin.unwrap_or(Origin::Default),
                key,
                format!(
                    "expected a duration like \"30s\", \"500ms\", \"5m\" or \"1h\", found \"{s}\""
                ),
            )
        })
    }
}

/// Checks a cron expression's shape: 6 or 7 fields (seconds first, an optional year last) of
/// digits, names (`Mon-Fri`, `JAN`) and `* , - / ?`. The scheduler checks the rest.
fn check_cron(s: &str) -> Result<(), String> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    let expected = || {
        format!(
            "expected a cron expression of 6 or 7 fields (sec min hour day month weekday [year]) like \"{DEFAULT_DIGEST_SCHEDULE}\", found \"{s}\""
        )
    };
    if !(6..=7).contains(&fields.len()) {
        return Err(expected());
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || c.is_whitespace() || "*,-/?#".contains(*c)))
    {
        return Err(format!("{} ('{bad}' is not allowed)", expected()));
    }
    Ok(())
}

/// One `[calendars.NAME]` table as written. Unknown keys are errors.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarToml {
    /// IANA time zone.
    zone: Option<String>,
    /// Open hours per weekday; an absent day is closed.
    #[serde(default)]
    hours: HoursToml,
    /// `"us"`, a rule name (`"new_years_day"`), or `"2026-12-24 [name]"`.
    #[serde(default)]
    holidays: Vec<String>,
}

/// `hours.monday = "08:00-17:00"` ... `hours.sunday`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HoursToml {
    monday: Option<String>,
    tuesday: Option<String>,
    wednesday: Option<String>,
    thursday: Option<String>,
    friday: Option<String>,
    saturday: Option<String>,
    sunday: Option<String>,
}

const WEEKDAY_KEYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A serde error inside the table at `prefix`, as our key and problem: toml names the path
/// below the table (`in `hours.monday``) and serde the unknown field.
fn serde_error(origin: &Origin, prefix: &str, e: &toml::de::Error) -> ConfigError {
    let text = e.to_string();
    let (problem, path) = match text.split_once("\nin `") {
        Some((p, rest)) => (p.trim(), rest.trim().trim_end_matches('`')),
        None => (text.trim(), ""),
    };
    let mut key = prefix.to_string();
    if !path.is_empty() {
        key = format!("{key}.{path}");
    }
    if let Some(field) = problem
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
        .map(|(f, _)| f)
    {
        key = format!("{key}.{field}");
        let expected = problem.split_once(", ").map(|(_, e)| e).unwrap_or("");
        return err(origin, &key, format!("unknown key ({expected})"));
    }
    err(origin, &key, problem.to_string())
}

/// `"08:00-17:00"`, `"09:00-12:00,13:00-17:00"` or `"closed"`; `24:00` ends at midnight.
fn parse_hours(s: &str) -> Option<Vec<(chrono::NaiveTime, chrono::NaiveTime)>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("closed") {
        return Some(Vec::new());
    }
    let time = |t: &str| -> Option<chrono::NaiveTime> {
        let t = t.trim();
        let (h, m) = t.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        if (h, m) == (24, 0) {
            return Some(chrono::NaiveTime::MIN);
        }
        chrono::NaiveTime::from_hms_opt(h, m, 0)
    };
    s.split(',')
        .map(|p| {
            let (a, b) = p.split_once('-')?;
            Some((time(a)?, time(b)?))
        })
        .collect()
}

/// The seven SPEC holidays by the names config uses (`new_years_day`, ..., `christmas_day`).
fn holiday_slug(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().filter(|c| *c != '\'') {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('_') {
            slug.push('_');
        }
    }
    slug.trim_matches('_').to_string()
}

/// One `holidays` item: `"us"`, a rule name, or `"YYYY-MM-DD [name]"`.
fn parse_holiday(item: &str) -> Result<Vec<HolidayRule>, String> {
    let item = item.trim();
    if item.eq_ignore_ascii_case("us") {
        return Ok(us_holidays());
    }
    let wanted = match item.to_ascii_lowercase().as_str() {
        "thanksgiving" => "thanksgiving_day".to_string(),
        "christmas" => "christmas_day".to_string(),
        "new_year" | "new_years" => "new_years_day".to_string(),
        other => other.to_string(),
    };
    if let Some(rule) = us_holidays()
        .into_iter()
        .find(|r| holiday_slug(r.name()) == wanted)
    {
        return Ok(vec![rule]);
    }
    let (date, name) = match item.split_once(char::is_whitespace) {
        Some((d, n)) => (d, n.trim()),
        None => (item, ""),
    };
    if let Ok(date) = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d") {
        let name = if name.is_empty() {
            format!("Holiday {date}")
        } else {
            name.to_string()
        };
        return Ok(vec![HolidayRule::Date { name, date }]);
    }
    let names: Vec<String> = us_holidays()
        .iter()
        .map(|r| holiday_slug(r.name()))
        .collect();
    Err(format!(
        "expected \"us\", one of {} or a date like \"2026-12-24 Christmas Eve\", found \"{item}\"",
        names.join(", ")
    ))
}

/// Builds one `[calendars.NAME]` table; errors name `calendars.NAME.<key>`.
fn parse_calendar(
    name: &str,
    table: &toml::Table,
    origin: &Origin,
) -> Result<Calendar, ConfigError> {
    let prefix = format!("calendars.{name}");
    let raw: CalendarToml = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e| serde_error(origin, &prefix, &e))?;
    let zone = raw.zone.ok_or_else(|| {
        err(
            origin,
            &format!("{prefix}.zone"),
            "every calendar needs a zone: an IANA name such as \"America/Chicago\"",
        )
    })?;
    let h = &raw.hours;
    let days = [
        &h.monday,
        &h.tuesday,
        &h.wednesday,
        &h.thursday,
        &h.friday,
        &h.saturday,
        &h.sunday,
    ];
    let mut hours: WeekHours = Default::default();
    for (i, day) in days.iter().enumerate() {
        if let Some(text) = day {
            hours[i] = parse_hours(text).ok_or_else(|| {
                err(
                    origin,
                    &format!("{prefix}.hours.{}", WEEKDAY_KEYS[i]),
                    format!(
                        "expected \"HH:MM-HH:MM\" (several comma-separated, or \"closed\"), found \"{text}\""
                    ),
                )
            })?;
        }
    }
    let mut holidays = Vec::new();
    for item in &raw.holidays {
        holidays.extend(
            parse_holiday(item).map_err(|p| err(origin, &format!("{prefix}.holidays"), p))?,
        );
    }
    Calendar::new(name, &zone, hours, holidays).map_err(|e| {
        let weekday_key = |w: chrono::Weekday| {
            format!(
                "{prefix}.hours.{}",
                WEEKDAY_KEYS[w.num_days_from_monday() as usize]
            )
        };
        let key = match &e {
            CalendarError::NoName => prefix.clone(),
            CalendarError::UnknownZone { .. } => format!("{prefix}.zone"),
            CalendarError::EmptyPeriod { weekday, .. }
            | CalendarError::FractionalTime { weekday, .. }
            | CalendarError::Overlap { weekday, .. } => weekday_key(*weekday),
            CalendarError::NeverOpen { .. } => format!("{prefix}.hours"),
            CalendarError::BadHoliday { .. } => format!("{prefix}.holidays"),
        };
        err(origin, &key, e.to_string())
    })
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" | "sec" | "secs" => n.checked_mul(1000)?,
        "m" | "min" | "mins" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Parses `25MB`, `512KiB`, `1 GB`, or a plain number of bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("postdesk.toml");
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    #[test]
    fn embedded_defaults() {
        let c = Config::load_with_env(None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.database_url,
            DatabaseUrl::Sqlite("sqlite:./postdesk.db".into())
        );
        assert_eq!(c.mailbox_url, MailboxUrl::Maildir("./mail".into()));
        assert_eq!(c.outbox_url, OutboxUrl::File("./outbox".into()));
        assert_eq!(c.templates_dir, PathBuf::from("./templates"));
        assert_eq!(c.default_severity, Severity::Sev4);
        assert_eq!(c.max_message_size, 25 * 1024 * 1024);
    }

    #[test]
    fn env_overrides_file_and_lists_split_on_commas() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = write(
            dir.path(),
            "[database]\nurl = \"sqlite:/x.db\"\n[support]\naddresses = [\"a@x.test\"]\n",
        );
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        let c = Config::load_with_env(
            Some(&p),
            &env(&[
                ("POSTDESK_DATABASE_URL", "postgres://u@h/db"),
                ("POSTDESK_SUPPORT_ADDRESSES", "Help@x.test, b@x.test"),
                (
                    "POSTDESK_MAILBOX_PASSWORD_FILE",
                    secret.to_str().unwrap_or_default(),
                ),
                ("POSTDESK_SEVERITY_DOWNGRADE", "1=2"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.database_url,
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(c.support_addresses, vec!["help@x.test", "b@x.test"]);
        assert_eq!(c.mailbox_password, Some(Secret("s3cret".into())));
        assert_eq!(c.downgrade.apply(Severity::Sev1), Severity::Sev2);
        assert_eq!(c.downgrade.apply(Severity::Sev2), Severity::Sev2);
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (
                "bad_severity",
                "[severity]\ndefault = 7\n",
                "severity.default",
                "integer from 1 to 4",
            ),
            (
                "bad_db_scheme",
                "[database]\nurl = \"mysql://x\"\n",
                "database.url",
                "sqlite: or postgres://",
            ),
            (
                "unknown_key",
                "[database]\nuri = \"sqlite:x\"\n",
                "database.uri",
                "unknown key",
            ),
            (
                "list_expected",
                "[support]\naddresses = \"a@x.test\"\n",
                "support.addresses",
                "list of strings",
            ),
            (
                "bad_address",
                "[triage]\nowners = [\"nobody\"]\n",
                "triage.owners",
                "mail addresses",
            ),
            (
                "bad_duration",
                "[mailbox]\npoll_interval = \"soon\"\n",
                "mailbox.poll_interval",
                "duration",
            ),
            ("bad_toml", "[database\nurl=1", "-", "not valid TOML"),
            (
                "bad_downgrade",
                "[severity]\ndowngrade = { 1 = 9 }\n",
                "severity.downgrade",
                "severities 1-4",
            ),
            (
                "imap_without_user",
                "[mailbox]\nurl = \"imaps://imap.example.com/INBOX\"\n",
                "mailbox.url",
                "login name",
            ),
            (
                "bad_port",
                "[outbox]\nurl = \"smtp://h:99999\"\n",
                "outbox.url",
                "bad port",
            ),
            (
                "bad_first_start",
                "[mailbox]\non_first_start = \"import_all\"\n",
                "mailbox.on_first_start",
                "skip_existing",
            ),
            (
                "idle_too_long",
                "[mailbox]\nidle_renew = \"30m\"\n",
                "mailbox.idle_renew",
                "29m",
            ),
            (
                "bad_tls_mode",
                "[mailbox]\ntls = \"optional\"\n",
                "mailbox.tls",
                "\"none\"",
            ),
            (
                "xoauth2_without_token",
                "[mailbox]\nurl = \"imaps://u%40x.test@h/INBOX\"\nauth = \"xoauth2\"\n",
                "mailbox.auth",
                "token_file",
            ),
            (
                "bad_envelope_sender",
                "[outbox]\nenvelope_sender = \"bounces\"\n",
                "outbox.envelope_sender",
                "mail address",
            ),
        ];
        for (name, text, key, expected) in cases {
            let p = write(dir.path(), text);
            let e = Config::load_with_env(Some(&p), &env(&[]))
                .err()
                .unwrap_or_else(|| panic!("{name}: accepted"));
            assert_eq!(e.key, key, "{name}: {e}");
            assert!(e.problem.contains(expected), "{name}: {e}");
            assert!(e.to_string().contains("postdesk.toml"), "{name}: {e}");
        }
    }

    #[test]
    fn mail_urls_become_endpoints_with_tls_modes_and_decoded_names() {
        let c = Config::load_with_env(
            None,
            &env(&[
                (
                    "POSTDESK_MAILBOX_URL",
                    "imap://support%40example.com:s%3Acret@imap.example.com/Support%20Desk",
                ),
                ("POSTDESK_OUTBOX_URL", "smtps://mailer@[::1]"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let MailboxUrl::Imap(m) = &c.mailbox_url else {
            panic!("{:?}", c.mailbox_url)
        };
        assert_eq!(m.tls, TlsMode::StartTls);
        assert_eq!((m.host.as_str(), m.port), ("imap.example.com", 143));
        assert_eq!(m.user.as_deref(), Some("support@example.com"));
        assert_eq!(m.password.as_ref().map(|p| p.0.as_str()), Some("s:cret"));
        assert_eq!(m.path, "Support Desk");
        assert!(!m.url.contains("cret"), "{}", m.url);
        let OutboxUrl::Smtp(o) = &c.outbox_url else {
            panic!("{:?}", c.outbox_url)
        };
        assert_eq!(
            (o.tls, o.host.as_str(), o.port),
            (TlsMode::Implicit, "::1", 465)
        );
        assert_eq!(c.live.on_first_start, FirstStart::ProcessUnseen);
        assert_eq!(c.live.envelope_sender, "support@example.com");
        let plain = Config::load_with_env(
            None,
            &env(&[
                ("POSTDESK_OUTBOX_URL", "smtp://relay.internal:25"),
                ("POSTDESK_OUTBOX_TLS", "none"),
                ("POSTDESK_MAILBOX_URL", "imaps://u@h"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let OutboxUrl::Smtp(o) = &plain.outbox_url else {
            panic!()
        };
        assert_eq!((o.tls, o.port), (TlsMode::None, 25));
        let MailboxUrl::Imap(m) = &plain.mailbox_url else {
            panic!()
        };
        assert_eq!(
            (m.tls, m.port, m.path.as_str()),
            (TlsMode::Implicit, 993, "INBOX")
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = Config::load_with_env(None, &env(&[("POSTDESK_SEVERITY_DEFAULT", "high")]))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(e.to_string().contains("POSTDESK_SEVERITY_DEFAULT"), "{e}");
        assert_eq!(e.key, "severity.default");
    }

    fn load_err(text: &str, vars: &[(&str, &str)]) -> ConfigError {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = write(dir.path(), text);
        Config::load_with_env(Some(&p), &env(vars))
            .err()
            .unwrap_or_else(|| panic!("accepted: {text} {vars:?}"))
    }

    fn load_ok(text: &str, vars: &[(&str, &str)]) -> Config {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = write(dir.path(), text);
        Config::load_with_env(Some(&p), &env(vars)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sla_defaults_are_specs_table_and_keys_override_one_figure_each() {
        let c = load_ok("", &[]);
        assert_eq!(c.sla, SlaPolicy::default());
        assert_eq!(c.policy().sla, SlaPolicy::default());
        let c = load_ok(
            "[sla]\npause_when_customer_pending = false\n[sla.sev3]\nresponse = \"12h\"\nclock = \"24x7\"\n\
             [sla.sev1]\nescalate_after = \"30 min\"\n\
             [statuses]\nauto_close_after = \"10 days\"\n",
            &[
                ("POSTDESK_SLA_SEV4_RESOLUTION", "7 days"),
                ("POSTDESK_STATUSES_REMINDER_AFTER", "2 days"),
            ],
        );
        let d = SlaPolicy::default();
        assert_eq!(c.sla.of(Severity::Sev3).response, Span::OpenMinutes(720));
        assert_eq!(c.sla.of(Severity::Sev3).clock, ClockKind::AroundTheClock);
        // Unset keys keep SPEC's figure for that severity.
        assert_eq!(
            c.sla.of(Severity::Sev3).resolution,
            d.of(Severity::Sev3).resolution
        );
        assert_eq!(
            c.sla.of(Severity::Sev1).escalate_after,
            Span::OpenMinutes(30)
        );
        assert_eq!(
            c.sla.of(Severity::Sev1).response,
            d.of(Severity::Sev1).response
        );
        assert_eq!(c.sla.of(Severity::Sev4).resolution, Span::BusinessDays(7));
        assert!(!c.sla.pause_when_customer_pending);
        assert_eq!(c.sla.timers.auto_close_after, Span::BusinessDays(10));
        assert_eq!(c.sla.timers.reminder_after, Span::BusinessDays(2));
        assert_eq!(c.sla.timers.close_pending_after, Span::BusinessDays(2));
        assert_eq!(c.policy().sla, c.sla);
    }

    #[test]
    fn calendars_from_the_file_add_to_and_replace_the_built_ins() {
        let c = load_ok("", &[]);
        assert_eq!(
            c.calendars.names(),
            vec!["us-central", "us-east-engineering", "24x7"]
        );
        assert_eq!(c.calendars.business_default, "us-central");
        assert_eq!(c.digest_schedule, "0 0 8 * * Mon-Fri");
        assert_eq!(c.digest_calendar, "us-central");
        let c = load_ok(
            "[calendars]\ndefault = \"emea\"\n\
             [calendars.emea]\nzone = \"Europe/Berlin\"\nhours.monday = \"08:00-17:00\"\n\
             hours.friday = \"09:00-12:00,13:00-17:00\"\nhours.saturday = \"closed\"\n\
             holidays = [\"christmas_day\", \"2026-12-24 Christmas Eve\", \"2026-12-31\"]\n\
             [calendars.us-central]\nzone = \"America/Chicago\"\nhours.monday = \"08:00-24:00\"\nholidays = [\"us\"]\n\
             [digest]\nschedule = \"0 30 7 * * Mon-Fri *\"\ncalendar = \"emea\"\n\
             [[customers]]\ndomain = \"acme.test\"\ncalendar = \"emea\"\n\
             [sla.sev2]\nclock = \"emea\"\n",
            &[],
        );
        assert_eq!(c.calendars.business_default, "emea");
        assert_eq!(
            c.calendars.names(),
            vec!["us-central", "us-east-engineering", "24x7", "emea"]
        );
        let emea = c.calendars.get("emea").unwrap_or_else(|| panic!("no emea"));
        assert_eq!(emea.zone(), chrono_tz::Europe::Berlin);
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        assert_eq!(emea.holiday(day("2026-12-24")), Some("Christmas Eve"));
        assert_eq!(emea.holiday(day("2026-12-25")), Some("Christmas Day"));
        assert!(emea.holiday(day("2026-12-31")).is_some());
        assert!(emea.is_business_day(day("2026-02-09")), "a Monday");
        assert!(
            !emea.is_business_day(day("2026-02-10")),
            "Tuesday is closed"
        );
        // The configured us-central replaced the built-in: Mondays only, until midnight.
        let central = c.calendars.get("us-central").unwrap_or_else(|| panic!());
        assert!(!central.is_business_day(day("2026-02-10")));
        assert_eq!(central.holiday(day("2026-11-26")), Some("Thanksgiving Day"));
        assert_eq!(c.digest_calendar, "emea");
        assert_eq!(c.digest_schedule, "0 30 7 * * Mon-Fri *");
        assert_eq!(
            c.sla.of(Severity::Sev2).clock,
            ClockKind::Named("emea".into())
        );
        assert_eq!(c.policy().calendars.business_default, "emea");
    }

    #[test]
    fn new_table_errors_name_file_or_variable_key_and_expectation() {
        // (case, file text, env, key, expected in the problem, expected in the origin)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a str,
            &'a str,
            &'a str,
        );
        let cases: &[Case] = &[
            (
                "bad_span",
                "[sla.sev3]\nresponse = \"soon\"\n",
                &[],
                "sla.sev3.response",
                "expected a span like \"15 min\"",
                "postdesk.toml",
            ),
            (
                "bad_span_env",
                "",
                &[("POSTDESK_SLA_SEV1_UPDATE_EVERY", "hourly")],
                "sla.sev1.update_every",
                "found \"hourly\"",
                "POSTDESK_SLA_SEV1_UPDATE_EVERY",
            ),
            (
                "unknown_clock",
                "[sla.sev4]\nclock = \"mars\"\n",
                &[],
                "sla.sev4.clock",
                "unknown calendar \"mars\"",
                "postdesk.toml",
            ),
            (
                "unknown_severity_table",
                "[sla.sev5]\nresponse = \"1h\"\n",
                &[],
                "sla.sev5",
                "unknown key",
                "postdesk.toml",
            ),
            (
                "unknown_sla_key",
                "[sla.sev1]\nrespond = \"1h\"\n",
                &[],
                "sla.sev1.respond",
                "unknown key",
                "postdesk.toml",
            ),
            (
                "bad_timer_env",
                "",
                &[("POSTDESK_STATUSES_AUTO_CLOSE_AFTER", "never")],
                "statuses.auto_close_after",
                "span",
                "POSTDESK_STATUSES_AUTO_CLOSE_AFTER",
            ),
            (
                "bad_pause",
                "[sla]\npause_when_customer_pending = \"yes\"\n",
                &[],
                "sla.pause_when_customer_pending",
                "true or false",
                "postdesk.toml",
            ),
            (
                "bad_hours",
                "[calendars.emea]\nzone = \"Europe/Berlin\"\nhours.monday = \"8-17\"\n",
                &[],
                "calendars.emea.hours.monday",
                "expected \"HH:MM-HH:MM\" (several comma-separated, or \"closed\"), found \"8-17\"",
                "postdesk.toml",
            ),
            (
                "hours_end_before_start",
                "[calendars.emea]\nzone = \"Europe/Berlin\"\nhours.tuesday = \"17:00-08:00\"\n",
                &[],
                "calendars.emea.hours.tuesday",
                "does not end after it starts",
                "postdesk.toml",
            ),
            (
                "hours_overlap",
                "[calendars.emea]\nzone = \"Europe/Berlin\"\nhours.friday = \"08:00-12:00,11:00-17:00\"\n",
                &[],
                "calendars.emea.hours.friday",
                "overlap",
                "postdesk.toml",
            ),
            (
                "never_open",
                "[calendars.emea]\nzone = \"Europe/Berlin\"\nhours.sunday = \"closed\"\n",
                &[],
                "calendars.emea.hours",
                "never run",
                "postdesk.toml",
            ),
            (
                "unknown_zone",
                "[calendars.emea]\nzone = \"Europe/Atlantis\"\nhours.monday = \"08:00-17:00\"\n",
                &[],
                "calendars.emea.zone",
                "unknown time zone",
                "postdesk.toml",
            ),
            (
                "missing_zone",
                "[calendars.emea]\nhours.monday = \"08:00-17:00\"\n",
                &[],
                "calendars.emea.zone",
                "needs a zone",
                "postdesk.toml",
            ),
            (
                "unknown_weekday",
                "[calendars.emea]\nzone = \"UTC\"\nhours.mondy = \"08:00-17:00\"\n",
                &[],
                "calendars.emea.hours.mondy",
                "unknown key",
                "postdesk.toml",
            ),
            (
                "unknown_calendar_key",
                "[calendars.emea]\nzone = \"UTC\"\nholiday = [\"us\"]\n",
                &[],
                "calendars.emea.holiday",
                "unknown key",
                "postdesk.toml",
            ),
            (
                "hours_not_a_string",
                "[calendars.emea]\nzone = \"UTC\"\nhours.monday = 8\n",
                &[],
                "calendars.emea.hours.monday",
                "expected a string",
                "postdesk.toml",
            ),
            (
                "bad_holiday",
                "[calendars.emea]\nzone = \"UTC\"\nhours.monday = \"08:00-17:00\"\nholidays = [\"boxing_day\"]\n",
                &[],
                "calendars.emea.holidays",
                "new_years_day",
                "postdesk.toml",
            ),
            (
                "calendar_not_a_table",
                "[calendars]\nemea = \"Europe/Berlin\"\n",
                &[],
                "calendars.emea",
                "table",
                "postdesk.toml",
            ),
            (
                "unknown_default_calendar",
                "",
                &[("POSTDESK_CALENDARS_DEFAULT", "emea")],
                "calendars.default",
                "unknown calendar \"emea\"",
                "POSTDESK_CALENDARS_DEFAULT",
            ),
            (
                "customer_on_unconfigured_calendar",
                "[[customers]]\ndomain = \"acme.test\"\ncalendar = \"emea\"\n",
                &[],
                "customers.calendar",
                "unknown calendar \"emea\"",
                "postdesk.toml",
            ),
            (
                "cron_field_count",
                "[digest]\nschedule = \"0 8 * * *\"\n",
                &[],
                "digest.schedule",
                "6 or 7 fields",
                "postdesk.toml",
            ),
            (
                "cron_characters",
                "",
                &[("POSTDESK_DIGEST_SCHEDULE", "0 0 8 * * Mon;Fri")],
                "digest.schedule",
                "';' is not allowed",
                "POSTDESK_DIGEST_SCHEDULE",
            ),
            (
                "digest_calendar",
                "[digest]\ncalendar = \"emea\"\n",
                &[],
                "digest.calendar",
                "unknown calendar \"emea\"",
                "postdesk.toml",
            ),
        ];
        for (name, text, vars, key, problem, origin) in cases {
            let e = load_err(text, vars);
            assert_eq!(e.key, *key, "{name}: {e}");
            assert!(e.problem.contains(problem), "{name}: {e}");
            assert!(e.origin.contains(origin), "{name}: {e}");
        }
    }

    #[test]
    fn unknown_postdesk_variables_are_warned_with_the_closest_known_name() {
        let w = unknown_env_warnings(&env(&[
            ("POSTDESK_DATBASE_URL", "sqlite:x"),
            ("POSTDESK_SLA_SEV3_RESPONS", "1h"),
            ("POSTDESK_NOTHING_LIKE_IT", "1"),
            ("POSTDESK_DATABASE_URL", "sqlite:x"),
            ("POSTDESK_MAILBOX_PASSWORD_FILE", "/x"),
            ("POSTDESK_CONFIG", "x"),
            ("POSTDESK_LOG", "x"),
            ("POSTDESK_BENCH_ONLY", "x"),
            ("POSTDESK_TEST_POSTGRES_URL", "x"),
            ("POSTDESK_DIGEST_SCHEDULE", "x"),
            ("HOME", "/root"),
        ]));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w.iter().any(|l| l.contains("POSTDESK_DATBASE_URL")
                && l.contains("did you mean POSTDESK_DATABASE_URL?")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|l| l.contains("POSTDESK_SLA_SEV3_RESPONS ")
                && l.contains("POSTDESK_SLA_SEV3_RESPONSE?")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|l| l.contains("POSTDESK_NOTHING_LIKE_IT") && !l.contains("did you mean")),
            "{w:?}"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn hours_holidays_and_cron_shapes() {
        let t = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default();
        assert_eq!(parse_hours("08:00-17:00"), Some(vec![(t(8, 0), t(17, 0))]));
        assert_eq!(
            parse_hours("09:00-12:00, 13:00-17:00"),
            Some(vec![(t(9, 0), t(12, 0)), (t(13, 0), t(17, 0))])
        );
        assert_eq!(parse_hours("Closed"), Some(vec![]));
        assert_eq!(parse_hours("20:00-24:00"), Some(vec![(t(20, 0), t(0, 0))]));
        for bad in ["8-17", "08:00", "8:00-17:00", "08:00-25:00", ""] {
            assert_eq!(parse_hours(bad), None, "{bad}");
        }
        assert_eq!(parse_holiday("us").map(|v| v.len()), Ok(7));
        for name in [
            "new_years_day",
            "memorial_day",
            "independence_day",
            "labor_day",
            "thanksgiving_day",
            "day_after_thanksgiving",
            "christmas_day",
            "thanksgiving",
            "christmas",
        ] {
            assert_eq!(parse_holiday(name).map(|v| v.len()), Ok(1), "{name}");
        }
        assert!(parse_holiday("2026-02-30").is_err());
        assert!(check_cron("0 0 8 * * Mon-Fri").is_ok());
        assert!(check_cron("0 */15 8-17 ? * MON-FRI 2026").is_ok());
        assert!(check_cron("0 0 8 * *").is_err());
        assert!(check_cron("0 0 8 * * * * *").is_err());
        assert!(check_cron("0 0 8 * * Mon|Fri").is_err());
    }

    #[test]
    fn durations_sizes_and_redaction() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_size("25MB"), Some(25 * 1024 * 1024));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("3 parsecs"), None);
        assert_eq!(
            redact_url_password("postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(format!("{:?}", Secret("x".into())), "***");
    }
}
