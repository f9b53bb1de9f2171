//! Bounces and feedback reports: failed recipient, status, the original Message-ID (SPEC: "Loops,
//! bounces and bad input": a delivery-status report is attached to the ticket it concerns as an
//! event, never a new ticket).
//!
//! This module owns reading one parsed message as such a report: which recipients failed or were
//! delayed, with which RFC 3463 status and diagnostic, and which of our messages it is about (the
//! returned Message-ID, In-Reply-To and References), so the desk can find the ticket. It is pure:
//! no database, no clock, no configuration.
//!
//! Where the answer comes from, most trusted first:
//! 1. RFC 3464 `message/delivery-status` (and RFC 6533 `message/global-delivery-status`): blocks
//!    separated by blank lines, each read as header fields; the first is about the message, the
//!    others (with `Final-Recipient`) about one recipient each.
//! 2. RFC 5965 ARF `message/feedback-report`: `Feedback-Type`, `Original-Mail-From`,
//!    `Original-Rcpt-To`. A report with one is a [`ReportKind::Feedback`] whatever else it holds.
//! 3. The returned original: a `message/rfc822` part, or `text/rfc822-headers` /
//!    `message/rfc822-headers`, else a header block pasted into the text after a marker such as
//!    Exim's "------ This is a copy of the message, including all the headers. ------".
//! 4. Many real bounces carry none of the above (qmail, Exim, Yahoo, old Gmail, Exchange 2003,
//!    Lotus Notes, Domino): `X-Failed-Recipients`, then the human text of the common MTAs. The text
//!    is only trusted when the envelope says a mailer sent it ([`looks_like_report`]), so that a
//!    customer who forwards a bounce to support still gets a ticket.
//!
//! Hostile input costs bounded work: at most [`MAX_RECIPIENTS`] recipients, [`MAX_LINES`] lines
//! and [`MAX_TEXT_BYTES`] of text are looked at, and no function here can panic.

use std::borrow::Cow;

use mail_parser::{HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::Serialize;

use super::parse::{is_clean_message_id, is_usable_address, one_line};

/// Recipients kept per report; a report listing more is cut, the raw message stays whole.
pub const MAX_RECIPIENTS: usize = 100;
/// Lines of human-readable text scanned for the MTA patterns and the pasted header block.
pub const MAX_LINES: usize = 2_000;
/// Bytes of the text body, or of a machine-readable part, that are read at all.
pub const MAX_TEXT_BYTES: usize = 128 * 1024;
/// A diagnostic is one line of at most this many characters.
const MAX_DIAGNOSTIC_CHARS: usize = 500;
/// Non-empty lines of human text gathered into one recipient's diagnostic.
const MAX_DIAGNOSTIC_LINES: usize = 12;
/// MIME parts of the report looked at (mail-parser already bounds nesting depth).
const MAX_PARTS: usize = 256;
/// Header fields read from one block of a machine-readable part.
const MAX_FIELDS: usize = 64;
/// Lines of a pasted header block handed to the header parser.
const MAX_HEADER_BLOCK_LINES: usize = 300;
/// Message-IDs kept in `original_references`.
const MAX_REFERENCES: usize = 20;
/// Longest subject kept (the RFC 5322 line limit; more is never a real subject).
const MAX_SUBJECT_CHARS: usize = 998;

/// What kind of report a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// Delivery failed for good (at least one recipient `Action: failed`).
    Bounce,
    /// Delivery is late and still being retried; nothing failed yet.
    Delay,
    /// An ARF abuse/fraud report (RFC 5965) about a message we sent.
    Feedback,
    /// Another report: a read receipt (MDN) or a success DSN (`delivered`, `relayed`, `expanded`).
    Other,
}

/// One recipient a report speaks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRecipient {
    /// The address, lower-cased.
    pub address: String,
    /// `failed`, `delayed`, `delivered`, ...; for a feedback report its `Feedback-Type` (`abuse`).
    pub action: Option<String>,
    /// RFC 3463 status such as `5.1.1`.
    pub status: Option<String>,
    /// What the remote server said, on one line of at most 500 characters.
    pub diagnostic: Option<String>,
}

/// A bounce, delay notice or feedback report, read from one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What kind of report this is.
    pub kind: ReportKind,
    /// The recipients it speaks about (at most [`MAX_RECIPIENTS`]); empty when it names none.
    pub recipients: Vec<FailedRecipient>,
    /// Message-ID (no angle brackets) of the mail that bounced / was reported, from the returned message/rfc822, text/rfc822-headers, message/rfc822-headers part, or an inline returned header block in the text body.
    ///
    /// Last resorts, in order: `X-Original-Message-ID` of the delivery-status part (Google), the
    /// `Original-Message-ID` of a read receipt, and the report's own `In-Reply-To` (Exchange
    /// Online and Gmail set it to the bounced message).
    pub original_message_id: Option<String>,
    /// Other Message-IDs seen in the returned headers (In-Reply-To/References of the original), to help attach.
    pub original_references: Vec<String>,
    /// Subject of the returned original, when present.
    pub original_subject: Option<String>,
    /// The MTA that wrote the report (`Reporting-MTA`, or the host the text names).
    pub reporting_mta: Option<String>,
}

impl Report {
    /// A message known to be a report only by its envelope signals: nothing in it was read.
    pub fn unread() -> Report {
        Report {
            kind: ReportKind::Other,
            recipients: Vec::new(),
            original_message_id: None,
            original_references: Vec::new(),
            original_subject: None,
            reporting_mta: None,
        }
    }
}

/// Reads a message as a bounce or feedback report; None when it is not one.
pub fn read_report(msg: &Message<'_>) -> Option<Report> {
    let found = collect_parts(msg);
    let report_type = report_type(msg);
    let is_feedback = found.feedback.is_some() || report_type.as_deref() == Some("feedback-report");
    let is_dsn = found.dsn.is_some() || report_type.as_deref() == Some("delivery-status");
    let is_mdn =
        found.disposition.is_some() || report_type.as_deref() == Some("disposition-notification");

    let failed_header = x_failed_recipients(msg);
    let by_mailer = sent_by_mailer(msg);
    // Every ordinary mail leaves here, before its text is read: this runs on all inbound mail.
    if !(is_feedback || is_dsn || is_mdn || by_mailer || !failed_header.is_empty()) {
        return None;
    }
    let subject = msg
        .subject()
        .map(|s| cap_chars(s, MAX_SUBJECT_CHARS).to_ascii_lowercase())
        .unwrap_or_default();
    let text = body_text(msg);
    let scan = scan_text(&text);
    let delay_said = is_delay_text(&subject) || scan.delay;

    // The human text alone makes a report only when a mailer sent it: a customer may paste or
    // forward a bounce, and that mail must still become a ticket.
    let textual = !failed_header.is_empty()
        || (by_mailer && (scan.intro || scan.delay || is_bounce_subject(&subject)));
    if !(is_feedback || is_dsn || is_mdn || textual) {
        return None;
    }

    let dsn = found.dsn.unwrap_or_default();
    let mut kind;
    let mut recipients;
    if is_feedback {
        kind = ReportKind::Feedback;
        recipients = feedback_recipients(found.feedback.as_deref().unwrap_or(&[]), &found.original);
    } else if !dsn.recipients.is_empty() {
        kind = kind_from_recipients(&dsn.recipients, delay_said);
        recipients = dsn.recipients;
    } else if is_mdn && !textual {
        kind = ReportKind::Other;
        recipients = Vec::new();
    } else {
        kind = if delay_said {
            ReportKind::Delay
        } else {
            ReportKind::Bounce
        };
        recipients = scan.recipients.clone();
    }

    if kind != ReportKind::Feedback {
        merge_failed_header(&mut recipients, failed_header, &scan);
        // Recipients read from prose carry no Action: the report's kind is theirs.
        let implied = match kind {
            ReportKind::Delay => Some("delayed"),
            ReportKind::Bounce => Some("failed"),
            _ => None,
        };
        for r in &mut recipients {
            if r.action.is_none() {
                r.action = implied.map(str::to_string);
            }
            if r.status.is_none() {
                r.status = r.diagnostic.as_deref().and_then(status_code);
            }
        }
        // A success notice that also lists X-Failed-Recipients failed after all.
        if kind == ReportKind::Other && recipients.iter().any(is_failed) {
            kind = ReportKind::Bounce;
        }
    }
    recipients.truncate(MAX_RECIPIENTS);

    // The original, most trusted source first; later sources only fill what is still missing.
    let mut original = found.original.unwrap_or_default();
    if let Some(pasted) = scan.returned {
        original.fill_from(pasted);
    }
    let fallback_ids = [
        dsn.original_message_id,
        found
            .disposition
            .as_deref()
            .and_then(|f| field(f, "original-message-id"))
            .and_then(clean_message_id),
        first_id(msg.in_reply_to()),
    ];
    for id in fallback_ids {
        if original.message_id.is_none() {
            original.message_id = id;
        }
    }
    let original_message_id = original.message_id;
    let mut original_references = original.references;
    original_references.retain(|id| Some(id) != original_message_id.as_ref());

    let reporting_mta = dsn
        .reporting_mta
        .or_else(|| {
            found
                .feedback
                .as_deref()
                .and_then(|f| field(f, "reporting-mta"))
                .and_then(host_value)
        })
        .or(scan.reporting_mta);

    Some(Report {
        kind,
        recipients,
        original_message_id,
        original_references,
        original_subject: original.subject,
        reporting_mta,
    })
}

/// Convenience: parse raw bytes with mail_parser::MessageParser and call read_report.
pub fn read_report_raw(raw: &[u8]) -> Option<Report> {
    let msg = MessageParser::default().parse(raw)?;
    read_report(&msg)
}

/// True when the message looks like a bounce/report by its envelope signals alone (From MAILER-DAEMON/postmaster/"Mail Delivery Subsystem"/"Mail Delivery System", empty or <> sender/Return-Path, multipart/report, X-Failed-Recipients, Content-Type message/delivery-status, ARF feedback-report) — used even when read_report finds no detail.
///
/// An RFC 3834 auto-reply sent with a null Return-Path is true here too (the envelope cannot
/// tell it apart); `read_report` returns None for it.
pub fn looks_like_report(msg: &Message<'_>) -> bool {
    sent_by_mailer(msg)
        || msg
            .headers_raw()
            .any(|(name, _)| name.eq_ignore_ascii_case("x-failed-recipients"))
        // Hotmail's junk-mail reports (JMRP) return the reported mail with this header added.
        || msg.parts.iter().take(MAX_PARTS).any(|part| match &part.body {
            PartType::Message(m) => m
                .headers_raw()
                .any(|(name, _)| name.eq_ignore_ascii_case("x-hmxmroriginalrecipient")),
            _ => false,
        })
        || msg.parts.iter().take(MAX_PARTS).any(|part| {
            part.content_type().is_some_and(|ct| {
                let sub = ct.subtype().unwrap_or_default();
                (ct.ctype().eq_ignore_ascii_case("multipart") && sub.eq_ignore_ascii_case("report"))
                    || (ct.ctype().eq_ignore_ascii_case("message")
                        && MACHINE_PARTS.iter().any(|m| sub.eq_ignore_ascii_case(m)))
            })
        })
}

/// `message/*` subtypes that only a reporting MTA or feedback loop writes.
const MACHINE_PARTS: &[&str] = &[
    "delivery-status",
    "global-delivery-status",
    "feedback-report",
];

/// Local parts that only mail systems send from.
const MAILER_LOCAL_PARTS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "mailerdaemon",
    "mail-daemon",
    "postmaster",
];

/// Display names the common MTAs put on their notices.
const MAILER_NAMES: &[&str] = &[
    "mail delivery subsystem",
    "mail delivery system",
    "mail delivery service",
];

/// From a mailer (by address or display name), or a null/empty Return-Path (RFC 5321 4.5.5: the
/// reverse-path of a notification is null).
fn sent_by_mailer(msg: &Message<'_>) -> bool {
    let from_mailer = msg
        .from()
        .and_then(|a| a.as_list())
        .unwrap_or_default()
        .iter()
        .take(5)
        .any(|addr| {
            addr.address().is_some_and(is_mailer_address)
                || addr.name().is_some_and(|n| {
                    let n = n.to_ascii_lowercase();
                    MAILER_NAMES.iter().any(|m| n.contains(m))
                })
        });
    from_mailer
        || msg.headers_raw().any(|(name, value)| {
            if !name.eq_ignore_ascii_case("return-path") {
                return false;
            }
            let bare = value.trim_matches(|c: char| c == '<' || c == '>' || c.is_whitespace());
            bare.is_empty() || is_mailer_address(bare)
        })
}

fn is_mailer_address(addr: &str) -> bool {
    let (local, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
    let local = local.trim();
    MAILER_LOCAL_PARTS
        .iter()
        .any(|m| local.eq_ignore_ascii_case(m))
        || ["postmaster", "mailerdaemon", "maildaemon"]
            .iter()
            .any(|m| starts_with_word(local, m))
        // Amazon SES bounce and complaint notifications relayed by SNS (JSON in the body).
        || domain.trim().eq_ignore_ascii_case("sns.amazonaws.com")
}

/// Whether `local`, read without punctuation, starts with the word `name` (lower-case letters)
/// that ends there: mail systems also write `post_master`, `Postmaster-<queue id>` or
/// `MAILER-DAEMON.x`, but `postmasterson` is a person.
fn starts_with_word(local: &str, name: &str) -> bool {
    let mut want = name.chars();
    let mut chars = local.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_alphanumeric() {
            continue;
        }
        match want.next() {
            Some(w) if w == c.to_ascii_lowercase() => {}
            _ => return false,
        }
        if want.as_str().is_empty() {
            return chars.peek().is_none_or(|n| !n.is_ascii_alphanumeric());
        }
    }
    false
}

/// `report-type` of a root `multipart/report`, lower-cased.
fn report_type(msg: &Message<'_>) -> Option<String> {
    let ct = msg.root_part().content_type()?;
    (ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report")))
    .then(|| {
        ct.attribute("report-type")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
}

/// The machine-readable parts and the returned original, as found among the MIME parts.
#[derive(Default)]
struct Found {
    dsn: Option<DeliveryStatus>,
    feedback: Option<Vec<Field>>,
    disposition: Option<Vec<Field>>,
    original: Option<Original>,
}

fn collect_parts(msg: &Message<'_>) -> Found {
    let mut found = Found::default();
    // The root is skipped as an "original": a message/rfc822 root is the report itself.
    for (i, part) in msg.parts.iter().take(MAX_PARTS).enumerate() {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        match (ct.ctype().to_ascii_lowercase().as_str(), sub.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") if found.dsn.is_none() => {
                found.dsn = Some(parse_delivery_status(&part_text(part)));
            }
            ("message", "feedback-report") if found.feedback.is_none() => {
                found.feedback = Some(all_fields(&part_text(part)));
            }
            ("message", "disposition-notification") if found.disposition.is_none() => {
                found.disposition = Some(all_fields(&part_text(part)));
            }
            ("message", "rfc822" | "global") if i > 0 && found.original.is_none() => {
                found.original = returned_message(part);
            }
            ("text" | "message", "rfc822-headers") if found.original.is_none() => {
                found.original = headers_original(part_bytes(part).as_ref());
            }
            _ => {}
        }
    }
    found
}

/// The bytes of a leaf part, decoded from its transfer encoding, capped.
fn part_bytes<'a>(part: &'a MessagePart<'_>) -> Cow<'a, [u8]> {
    let bytes: &[u8] = match &part.body {
        PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
        PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
        PartType::Message(m) => m.raw_message(),
        PartType::Multipart(_) => &[],
    };
    Cow::Borrowed(bytes.get(..MAX_TEXT_BYTES).unwrap_or(bytes))
}

fn part_text<'a>(part: &'a MessagePart<'_>) -> Cow<'a, str> {
    match part_bytes(part) {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// What we learn about the mail that bounced or was reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Original {
    message_id: Option<String>,
    references: Vec<String>,
    subject: Option<String>,
    to: Vec<String>,
}

impl Original {
    /// Takes from `other` what is still missing here.
    fn fill_from(&mut self, other: Original) {
        if self.message_id.is_none() {
            self.message_id = other.message_id;
        }
        if self.subject.is_none() {
            self.subject = other.subject;
        }
        for id in other.references {
            push_id(&mut self.references, id);
        }
        if self.to.is_empty() {
            self.to = other.to;
        }
    }
}

fn original_of(m: &Message<'_>) -> Original {
    let message_id = m.message_id().and_then(clean_message_id);
    let mut references = Vec::new();
    for id in id_list(m.in_reply_to())
        .into_iter()
        .chain(id_list(m.references()))
    {
        push_id(&mut references, id);
    }
    references.retain(|id| Some(id) != message_id.as_ref());
    let subject = m
        .subject()
        .map(one_line)
        .filter(|s| !s.is_empty())
        .map(|s| cap_chars(&s, MAX_SUBJECT_CHARS).to_string());
    let to = m
        .to()
        .and_then(|a| a.as_list())
        .unwrap_or_default()
        .iter()
        .take(MAX_RECIPIENTS)
        .filter_map(|a| a.address().and_then(clean_address))
        .collect();
    Original {
        message_id,
        references,
        subject,
        to,
    }
}

fn returned_message(part: &MessagePart<'_>) -> Option<Original> {
    match &part.body {
        PartType::Message(m) => {
            let original = original_of(m);
            if original.message_id.is_some() {
                return Some(original);
            }
            // An mbox "From " line before the headers (Yahoo's ARF does this) stops the header
            // parser at once; read the headers again without it.
            let mut again = headers_original(m.raw_message()).unwrap_or_default();
            again.fill_from(original);
            Some(again)
        }
        _ => headers_original(part_bytes(part).as_ref()),
    }
}

/// Reads a header block (a `text/rfc822-headers` part, or a returned message mail-parser left
/// as bytes).
fn headers_original(bytes: &[u8]) -> Option<Original> {
    let bytes = skip_mbox_from_line(bytes);
    let parsed = MessageParser::default().parse_headers(bytes)?;
    Some(original_of(&parsed))
}

fn skip_mbox_from_line(bytes: &[u8]) -> &[u8] {
    if bytes.starts_with(b"From ") {
        let next = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.get(next..).unwrap_or_default()
    } else {
        bytes
    }
}

/// One `Name: value` of a machine-readable part; the name lower-cased, the value unfolded.
type Field = (String, String);

/// Splits a machine-readable part into blocks at blank lines and reads each as header fields.
fn blocks(text: &str) -> Vec<Vec<Field>> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().take(MAX_LINES * 4) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(fields(&current));
                current.clear();
                if out.len() > MAX_RECIPIENTS + 1 {
                    return out;
                }
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(fields(&current));
    }
    out
}

/// All fields of a part, blocks ignored (a feedback report is one block, but some add blank lines).
fn all_fields(text: &str) -> Vec<Field> {
    blocks(text)
        .into_iter()
        .flatten()
        .take(MAX_FIELDS * 4)
        .collect()
}

fn fields(lines: &[&str]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Folded continuation (RFC 5322 2.2.3).
            if let Some((_, value)) = out.last_mut()
                && value.len() < MAX_TEXT_BYTES
            {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if out.len() >= MAX_FIELDS {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) {
            out.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn field<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, v)| n == name && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

/// What a delivery-status part says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DeliveryStatus {
    reporting_mta: Option<String>,
    /// Google's `X-Original-Message-ID` per-message field.
    original_message_id: Option<String>,
    recipients: Vec<FailedRecipient>,
}

fn parse_delivery_status(text: &str) -> DeliveryStatus {
    let mut out = DeliveryStatus::default();
    for block in blocks(text) {
        let address = field(&block, "final-recipient")
            .and_then(clean_address)
            .or_else(|| field(&block, "original-recipient").and_then(clean_address));
        let Some(address) = address else {
            // The per-message block (RFC 3464 2.2), or one we cannot use.
            if out.reporting_mta.is_none() {
                out.reporting_mta = field(&block, "reporting-mta").and_then(host_value);
            }
            if out.original_message_id.is_none() {
                out.original_message_id =
                    field(&block, "x-original-message-id").and_then(clean_message_id);
            }
            continue;
        };
        if out.recipients.len() >= MAX_RECIPIENTS {
            break;
        }
        if out.recipients.iter().any(|r| r.address == address) {
            continue;
        }
        let diagnostic = field(&block, "diagnostic-code").and_then(diagnostic);
        let status = field(&block, "status")
            .and_then(status_code)
            .or_else(|| diagnostic.as_deref().and_then(status_code));
        out.recipients.push(FailedRecipient {
            address,
            action: field(&block, "action").and_then(action_word),
            status,
            diagnostic,
        });
    }
    out
}

fn kind_from_recipients(recipients: &[FailedRecipient], delay_said: bool) -> ReportKind {
    let action = |a: &str| recipients.iter().any(|r| r.action.as_deref() == Some(a));
    if recipients.iter().any(is_failed) {
        ReportKind::Bounce
    } else if action("delayed") {
        ReportKind::Delay
    } else if recipients.iter().all(|r| {
        matches!(
            r.action.as_deref(),
            Some("delivered" | "relayed" | "expanded")
        ) || r.status.as_deref().is_some_and(|s| s.starts_with('2'))
    }) {
        ReportKind::Other
    } else if delay_said {
        // No usable Action: a 4.x.x status is only a delay when the notice says it keeps trying.
        ReportKind::Delay
    } else {
        ReportKind::Bounce
    }
}

fn is_failed(r: &FailedRecipient) -> bool {
    match r.action.as_deref() {
        Some(a) => a == "failed",
        None => r.status.as_deref().is_some_and(|s| s.starts_with('5')),
    }
}

/// Recipients of an ARF report: `Original-Rcpt-To` (or `Removal-Recipient`), else the `To` of the
/// returned message. The action is the `Feedback-Type`; the diagnostic names who sent the mail.
fn feedback_recipients(fields: &[Field], original: &Option<Original>) -> Vec<FailedRecipient> {
    let feedback_type = field(fields, "feedback-type").and_then(action_word);
    let summary = [
        ("Feedback-Type", "feedback-type"),
        ("Original-Mail-From", "original-mail-from"),
        ("Source-IP", "source-ip"),
    ]
    .iter()
    .filter_map(|(label, name)| field(fields, name).map(|v| format!("{label}: {}", v.trim())))
    .collect::<Vec<_>>()
    .join("; ");
    let diagnostic = diagnostic_line(&summary);

    let mut addresses: Vec<String> = Vec::new();
    for (name, value) in fields {
        if (name == "original-rcpt-to" || name == "removal-recipient")
            && let Some(a) = clean_address(value)
            && !addresses.contains(&a)
        {
            addresses.push(a);
        }
    }
    if addresses.is_empty()
        && let Some(o) = original
    {
        addresses = o.to.clone();
    }
    addresses
        .into_iter()
        .take(MAX_RECIPIENTS)
        .map(|address| FailedRecipient {
            address,
            action: feedback_type.clone(),
            status: None,
            diagnostic: diagnostic.clone(),
        })
        .collect()
}

/// Adds the `X-Failed-Recipients` addresses the other sources missed. Exim names a bare local part
/// in its text when the domain is its own, so a lone header address takes the text's diagnostic.
fn merge_failed_header(
    recipients: &mut Vec<FailedRecipient>,
    failed: Vec<String>,
    scan: &TextScan,
) {
    let lone = failed.len() == 1 && recipients.is_empty();
    for address in failed {
        if recipients.len() >= MAX_RECIPIENTS {
            break;
        }
        if recipients.iter().any(|r| r.address == address) {
            continue;
        }
        let diagnostic = scan
            .recipients
            .iter()
            .find(|r| r.address == address)
            .and_then(|r| r.diagnostic.clone())
            .or_else(|| lone.then(|| scan.loose_diagnostic.clone()).flatten());
        recipients.push(FailedRecipient {
            address,
            action: None,
            status: None,
            diagnostic,
        });
    }
}

fn x_failed_recipients(msg: &Message<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, value) in msg
        .headers_raw()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-failed-recipients"))
    {
        for token in value.split(|c: char| c == ',' || c.is_whitespace()) {
            if out.len() >= MAX_RECIPIENTS {
                return out;
            }
            if let Some(a) = clean_address(token)
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
    }
    out
}

/// The first text body (mail-parser turns an HTML-only body into text), capped.
fn body_text(msg: &Message<'_>) -> String {
    let Some(text) = msg.body_text(0) else {
        return String::new();
    };
    cap_bytes(&text, MAX_TEXT_BYTES).to_string()
}

/// What the human-readable text of a notice says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TextScan {
    /// A sentence that introduces the failed recipients was found.
    intro: bool,
    /// A sentence that says delivery is only late was found.
    delay: bool,
    recipients: Vec<FailedRecipient>,
    /// The text after the introduction, for a recipient named only by `X-Failed-Recipients`.
    loose_diagnostic: Option<String>,
    reporting_mta: Option<String>,
    /// The returned original's headers, pasted after a marker line.
    returned: Option<Original>,
}

/// Sentences (lower-case, whitespace collapsed) after which the MTAs list the failed recipients.
const INTRO_PHRASES: &[&str] = &[
    "following address",                       // Exim, qmail, Sendmail, Yahoo, GMX
    "following recipient",                     // Gmail, Outlook.com, Exchange 2003, Courier
    "delivery has failed to these recipients", // Exchange 2007+, Office 365
    "was not delivered to",                    // Domino
    "wasn't delivered to",                     // Gmail since 2016
    "couldn't be delivered", // Office 365 ("Your message to x couldn't be delivered.")
    "failure reasons",       // Lotus Notes
    "was undeliverable",     // Amazon SES
    "could not be delivered to", // Postfix and others, when not wrapped
];

/// A line that is the whole introduction (Postfix writes its recipients after it).
const INTRO_LINES: &[&str] = &["the mail system"];

/// Sentences of delay notices (Sendmail, Postfix, Exchange, Gmail); checked on the subject too.
const DELAY_PHRASES: &[&str] = &[
    "delayed mail (still being retried)",
    "warning: could not send message for past",
    "this is a warning message only",
    "this is a warning only",
    "delivery status notification (delay)",
    "mail delivery delayed",
    "delivery delayed",
    "delivery is delayed",
    "message delayed",
    "not yet been delivered",
    "have not yet received your message",
    "will continue to try",
    "continue trying",
    "will keep trying",
    "still being retried",
];

/// Subjects of bounces; with a mailer sender they make a report even without a known sentence.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undelivered mail",
    "undeliverable",
    "mail delivery failed",
    "returned mail",
    "delivery status notification",
    "failure notice",
    "delivery failure",
    "delivery has failed",
    "non-delivery",
    "nondeliverable",
    "mail delivery failure",
    "could not send message",
    "delayed mail",
];

/// Lines after which the returned original's headers are pasted.
const RETURNED_MARKERS: &[&str] = &[
    "this is a copy of the message",            // Exim
    "this is a copy of your message",           // Exim variants
    "below this line is a copy of the message", // qmail, Yahoo
    "----- original message -----",             // Gmail before 2016
    "returned message",                         // Lotus Notes
    "original message headers",                 // Exchange 2007+
    "header of the original message",           // GMX, Web.de
    "original message follows",                 // several
    "undelivered message headers",              // Postfix text fallback
];

/// Lines that end the list of recipients without returning headers.
const SECTION_ENDS: &[&str] = &[
    "transcript of session follows", // Sendmail
    "original message details",      // Office 365
    "message hops",                  // Office 365
];

fn is_intro(lower: &str) -> bool {
    INTRO_PHRASES.iter().any(|p| lower.contains(p)) || INTRO_LINES.contains(&lower)
}

fn is_delay_text(lower: &str) -> bool {
    DELAY_PHRASES.iter().any(|p| lower.contains(p))
}

fn is_bounce_subject(lower: &str) -> bool {
    BOUNCE_SUBJECTS.iter().any(|p| lower.contains(p))
}

/// Reads the prose of a notice: the recipients after an introduction, their diagnostics, a delay
/// sentence, the reporting host, and a pasted header block.
fn scan_text(text: &str) -> TextScan {
    let mut scan = TextScan::default();
    let lines: Vec<&str> = text.lines().take(MAX_LINES).collect();
    let lower: Vec<String> = lines
        .iter()
        .map(|l| one_line(l).to_ascii_lowercase())
        .collect();

    let returned_at = lower
        .iter()
        .position(|l| RETURNED_MARKERS.iter().any(|m| l.contains(m)));
    let cut = lower
        .iter()
        .position(|l| {
            RETURNED_MARKERS.iter().any(|m| l.contains(m))
                || SECTION_ENDS.iter().any(|m| l.contains(m))
        })
        .unwrap_or(lines.len());

    scan.delay = lower.iter().take(cut).any(|l| is_delay_text(l));
    scan.reporting_mta = lines.iter().take(cut).find_map(|l| reporting_host(l));
    if let Some(at) = returned_at {
        scan.returned = pasted_headers(lines.get(at + 1..).unwrap_or_default());
    }

    let Some(intro) = lower.iter().take(cut).position(|l| is_intro(l)) else {
        return scan;
    };
    scan.intro = true;

    let region_lines = lines.get(intro..cut).unwrap_or_default();
    let region_lower = lower.get(intro..cut).unwrap_or_default();
    let mut loose: Vec<&str> = Vec::new();
    let mut before_first: Vec<&str> = Vec::new();
    // Index into scan.recipients of the recipient whose diagnostic is being gathered.
    let mut current: Option<usize> = None;
    let mut gathered: Vec<Vec<String>> = Vec::new();

    for (i, (line, lower)) in region_lines.iter().zip(region_lower).enumerate() {
        let candidate = if i == 0 {
            // The introduction itself may name the address ("wasn't delivered to x because").
            inline_recipient(lower)
        } else {
            recipient_on_line(line).or_else(|| inline_recipient(lower))
        };
        if let Some((address, rest)) = candidate {
            if let Some(existing) = scan.recipients.iter().position(|r| r.address == address) {
                // Postfix repeats the address in its folded reason; it is part of the reason.
                current = Some(existing);
                if let Some(g) = gathered.get_mut(existing) {
                    g.push(line.trim().to_string());
                }
            } else if scan.recipients.len() < MAX_RECIPIENTS {
                scan.recipients.push(FailedRecipient {
                    address,
                    action: None,
                    status: None,
                    diagnostic: None,
                });
                gathered.push(if rest.is_empty() {
                    Vec::new()
                } else {
                    vec![rest]
                });
                current = scan.recipients.len().checked_sub(1);
            }
            continue;
        }
        if i == 0 || lower.is_empty() {
            continue;
        }
        if scan.recipients.is_empty() && is_intro(lower) {
            // The introduction goes on over several lines (Exim wraps it); what came before the
            // last of them is preamble, not a diagnostic.
            loose.clear();
            before_first.clear();
            continue;
        }
        if is_separator(lower) {
            current = None;
            continue;
        }
        if loose.len() < MAX_DIAGNOSTIC_LINES {
            loose.push(line);
        }
        match current.and_then(|c| gathered.get_mut(c)) {
            Some(g) if g.len() < MAX_DIAGNOSTIC_LINES => g.push(line.trim().to_string()),
            Some(_) => {}
            None if scan.recipients.is_empty() && before_first.len() < MAX_DIAGNOSTIC_LINES => {
                before_first.push(line)
            }
            None => {}
        }
    }

    // Lotus Notes writes the reason before the address.
    let before = diagnostic_line(&before_first.join(" "));
    for (r, g) in scan.recipients.iter_mut().zip(gathered) {
        r.diagnostic = diagnostic_line(&g.join(" ")).or_else(|| before.clone());
    }
    scan.loose_diagnostic = diagnostic_line(&loose.join(" "));
    scan
}

/// An address at the start of a line: `<a@b>:`, `a@b`, `"a@b":`, `a@b on <date>`, `a@b; Action`,
/// or Exchange's `Name<mailto:a@b>`. Returns the address and the rest of the line.
fn recipient_on_line(line: &str) -> Option<(String, String)> {
    if let Some(at) = line.find("<mailto:") {
        let inner = line.get(at + "<mailto:".len()..).unwrap_or_default();
        let end = inner.find('>').unwrap_or(inner.len());
        let head = line.get(..at).unwrap_or_default().trim();
        // Only when the mailto is the line's subject, not inside a sentence.
        if !head.contains(' ') {
            let address = clean_address(inner.get(..end).unwrap_or_default())?;
            let rest = inner.get(end + 1..).unwrap_or_default();
            return Some((address, rest_of_line(rest)));
        }
    }
    let trimmed = line.trim_start().trim_start_matches(['<', '"', '\'']);
    let end = trimmed
        .find(|c: char| {
            c.is_whitespace() || matches!(c, '>' | '"' | '\'' | ':' | ';' | ',' | '<' | '(' | ')')
        })
        .unwrap_or(trimmed.len());
    let token = trimmed.get(..end)?;
    let address = clean_address(token)?;
    let rest = trimmed.get(end..).unwrap_or_default();
    // `<a@b>... User unknown` is Sendmail echoing the server, not a new recipient.
    if rest.trim_start_matches(['>', '"', '\'']).starts_with("...") {
        return None;
    }
    Some((address, rest_of_line(rest)))
}

/// An address named inside an introduction sentence: "delivered to x", "message to <x> was".
fn inline_recipient(lower: &str) -> Option<(String, String)> {
    for key in ["delivered to ", "message to "] {
        let Some(at) = lower.find(key) else {
            continue;
        };
        let after = lower.get(at + key.len()..).unwrap_or_default();
        let token = after
            .split(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default();
        if let Some(address) = clean_address(token) {
            return Some((address, String::new()));
        }
    }
    None
}

fn rest_of_line(rest: &str) -> String {
    rest.trim_start_matches(|c: char| {
        matches!(c, '>' | '"' | '\'' | ':' | ';' | ',') || c.is_whitespace()
    })
    .trim_end()
    .to_string()
}

fn is_separator(lower: &str) -> bool {
    lower.len() >= 5
        && lower
            .chars()
            .all(|c| matches!(c, '-' | '=' | '_' | '*' | '#' | ' '))
}

/// The host a notice says it comes from.
fn reporting_host(line: &str) -> Option<String> {
    const PREFIXES: &[&str] = &[
        "this is the mail system at host ",             // Postfix
        "this is the qmail-send program at ",           // qmail
        "generating server: ",                          // Exchange
        "reporting-mta: ",                              // a DSN pasted as text
        "this is a delivery status notification from ", // Courier
    ];
    let trimmed = line.trim();
    // ASCII lower-casing keeps byte offsets, so a match in `lower` is a boundary in `trimmed`.
    let lower = trimmed.to_ascii_lowercase();
    PREFIXES.iter().find_map(|p| {
        let at = lower.find(p)?;
        trimmed.get(at + p.len()..).and_then(host_value)
    })
}

/// Reads the header block pasted after a marker line: blank lines skipped, then header lines up
/// to the next blank line (lines that are neither a field nor a continuation are left out).
fn pasted_headers(lines: &[&str]) -> Option<Original> {
    let start = lines.iter().take(20).position(|l| !l.trim().is_empty())?;
    let mut block = String::new();
    for line in lines.iter().skip(start).take(MAX_HEADER_BLOCK_LINES) {
        let is_header = line.starts_with([' ', '\t'])
            || line
                .split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()));
        if line.trim().is_empty() {
            break;
        }
        // GMX and others wrap long header lines without folding them; the stray piece is
        // dropped so that the fields after it are still read.
        if !is_header {
            continue;
        }
        block.push_str(line);
        block.push('\n');
    }
    if block.is_empty() {
        return None;
    }
    block.push('\n');
    let mut found = headers_original(block.as_bytes())?;
    if found.message_id.is_none() {
        // Some MTAs fold the block oddly; a Message-ID line further down still identifies it.
        found.message_id = lines
            .iter()
            .skip(start)
            .take(MAX_HEADER_BLOCK_LINES)
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("message-id")
                    .then(|| clean_message_id(value))
                    .flatten()
            });
    }
    Some(found)
}

/// RFC 3463 status (`class.subject.detail`, class 2, 4 or 5) found in a string, such as
/// `5.0.0 (permanent failure)` or `550 5.1.1 <x>... User unknown`. IP addresses do not match.
fn status_code(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits = |from: usize| -> Option<usize> {
        let n = b
            .get(from..)?
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_digit())
            .count();
        (1..=3).contains(&n).then_some(from + n)
    };
    for i in 0..b.len() {
        if !matches!(b[i], b'2' | b'4' | b'5') {
            continue;
        }
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.') {
            continue;
        }
        if b.get(i + 1) != Some(&b'.') {
            continue;
        }
        let Some(j) = digits(i + 2) else { continue };
        if b.get(j) != Some(&b'.') {
            continue;
        }
        let Some(k) = digits(j + 1) else { continue };
        let dotted_on = b.get(k) == Some(&b'.') && b.get(k + 1).is_some_and(u8::is_ascii_digit);
        if b.get(k).is_some_and(u8::is_ascii_alphanumeric) || dotted_on {
            continue;
        }
        return s.get(i..k).map(str::to_string);
    }
    None
}

/// Strips an RFC 3464 type prefix (`rfc822;`, `dns;`, `smtp;`, `x-unix;`).
fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind.trim().len() <= 32
                && kind
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') =>
        {
            rest.trim()
        }
        _ => value.trim(),
    }
}

/// A usable, lower-cased address from `rfc822; <a@b>`, `"a@b":`, `mailto:a@b` and the like.
fn clean_address(raw: &str) -> Option<String> {
    let s = strip_type(raw);
    let s = s.strip_prefix("mailto:").unwrap_or(s);
    let s = s.trim_matches(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '"' | '\'' | ':' | ';' | ',' | '(' | ')' | '.' | '[' | ']'
            )
    });
    let s = s.strip_prefix("mailto:").unwrap_or(s);
    let lower = s.to_lowercase();
    is_usable_address(&lower).then_some(lower)
}

fn clean_message_id(raw: &str) -> Option<String> {
    let id = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    // `<id> (comment)` in a pasted header: keep what is inside the brackets.
    let id = id.split(['>', ' ']).next().unwrap_or_default();
    is_clean_message_id(id).then(|| id.to_string())
}

fn id_list(v: &HeaderValue<'_>) -> Vec<String> {
    let raw: Vec<&str> = match v {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().take(MAX_REFERENCES).map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    raw.into_iter().filter_map(clean_message_id).collect()
}

fn first_id(v: &HeaderValue<'_>) -> Option<String> {
    id_list(v).into_iter().next()
}

fn push_id(ids: &mut Vec<String>, id: String) {
    if ids.len() < MAX_REFERENCES && !ids.contains(&id) {
        ids.push(id);
    }
}

/// `dns; mx.example.com` -> `mx.example.com` (one line, no trailing dot or comment).
fn host_value(value: &str) -> Option<String> {
    let v = strip_type(value);
    let host = v
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(')
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_graphic()))
        .then_some(host)
}

/// `failed`, `Delayed (retrying)` -> `delayed`: the first word, lower-cased.
fn action_word(value: &str) -> Option<String> {
    let word: String = value
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    (!word.is_empty()).then_some(word)
}

/// A Diagnostic-Code value without its type, on one line.
fn diagnostic(value: &str) -> Option<String> {
    diagnostic_line(strip_type(value))
}

fn diagnostic_line(s: &str) -> Option<String> {
    let line = one_line(cap_bytes(s, MAX_TEXT_BYTES));
    let line = cap_chars(&line, MAX_DIAGNOSTIC_CHARS).trim_end();
    (!line.is_empty()).then(|| line.to_string())
}

fn cap_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

fn cap_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_finds_rfc3463_codes_and_not_ip_addresses() {
        let cases: &[(&str, Option<&str>)] = &[
            ("5.1.1", Some("5.1.1")),
            ("5.0.0 (permanent failure)", Some("5.0.0")),
            ("smtp; 550 5.1.1 <x@y>... User unknown", Some("5.1.1")),
            ("550 #5.1.0 Address rejected.", Some("5.1.0")),
            ("(#5.5.0)", Some("5.5.0")),
            ("4.4.7", Some("4.4.7")),
            ("2.0.0 ok", Some("2.0.0")),
            ("5.7.26 unauthenticated", Some("5.7.26")),
            ("550 5.7.510 Access denied", Some("5.7.510")),
            ("host mx [192.0.2.153]: 550 user unknown", None),
            ("connect to 5.6.7.8: timed out", None),
            ("version 15.20.776.10", None),
            ("3.1.1 is not a class", None),
            ("5.1", None),
            ("5.1.1234", None),
            ("x5.1.1", None),
            ("", None),
            ("5.", None),
            ("5.1.", None),
        ];
        for (input, want) in cases {
            assert_eq!(status_code(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn clean_address_strips_types_brackets_and_quotes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("rfc822; kijitora@example.jp", Some("kijitora@example.jp")),
            ("RFC822; <Demo@Example.com>", Some("demo@example.com")),
            (
                "rfc822;neko-nyaan@cat.example.jp",
                Some("neko-nyaan@cat.example.jp"),
            ),
            ("<kijitora@example.ne.jp>:", Some("kijitora@example.ne.jp")),
            ("\"shironeko@example.jp\":", Some("shironeko@example.jp")),
            ("mailto:a@b.example", Some("a@b.example")),
            ("<a@b.example>.", Some("a@b.example")),
            ("kijitora", None),
            ("x400; /C=US/ADMD=/", None),
            ("", None),
            ("two words@example.com", None),
            ("a@b@", None),
        ];
        for (input, want) in cases {
            assert_eq!(clean_address(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn strip_type_removes_only_an_atom_before_the_semicolon() {
        let cases = [
            ("dns; mx.example.org", "mx.example.org"),
            ("smtp;550 5.1.1 unknown", "550 5.1.1 unknown"),
            ("X-mPOP-Fallback_MX; connect to x", "connect to x"),
            ("550 5.1.1 user; unknown", "550 5.1.1 user; unknown"),
            ("no type at all", "no type at all"),
            (";", ";"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_type(input), want, "input {input:?}");
        }
    }

    #[test]
    fn action_host_and_message_id_values() {
        let actions = [
            ("failed", Some("failed")),
            ("Delayed", Some("delayed")),
            ("delivered (to mailbox)", Some("delivered")),
            ("  ", None),
        ];
        for (input, want) in actions {
            assert_eq!(action_word(input).as_deref(), want, "action {input:?}");
        }
        let hosts = [
            ("dns; smtpgw.example.jp", Some("smtpgw.example.jp")),
            (
                "dns;BLU004-OMC3S20.o.example.com",
                Some("blu004-omc3s20.o.example.com"),
            ),
            ("mx4.example.jp.", Some("mx4.example.jp")),
            (
                "dns; mail.example.org (192.0.2.222)",
                Some("mail.example.org"),
            ),
            ("dns;", None),
        ];
        for (input, want) in hosts {
            assert_eq!(host_value(input).as_deref(), want, "host {input:?}");
        }
        let ids = [
            ("<abc@example.org>", Some("abc@example.org")),
            (
                "  <abc@example.org> (added by relay)",
                Some("abc@example.org"),
            ),
            ("abc@example.org", Some("abc@example.org")),
            ("<>", None),
            ("", None),
        ];
        for (input, want) in ids {
            assert_eq!(clean_message_id(input).as_deref(), want, "id {input:?}");
        }
    }

    #[test]
    fn diagnostic_is_one_line_without_type_and_capped() {
        let long = format!("smtp; 550 {}", "x".repeat(2_000));
        let cases: Vec<(String, Option<String>)> = vec![
            (
                "smtp; 550 5.1.1 <a@b>...\n    User Unknown".into(),
                Some("550 5.1.1 <a@b>... User Unknown".into()),
            ),
            ("smtp;".into(), None),
            (long.clone(), Some(format!("550 {}", "x".repeat(496)))),
        ];
        for (input, want) in cases {
            assert_eq!(diagnostic(&input), want, "input {input:?}");
        }
        let multibyte = "é".repeat(600);
        assert_eq!(
            diagnostic_line(&multibyte).map(|d| d.chars().count()),
            Some(MAX_DIAGNOSTIC_CHARS)
        );
    }

    #[test]
    fn delivery_status_blocks_per_message_and_per_recipient() {
        let dsn = "Reporting-MTA: dns; mx.example.org\r\n\
                   X-Original-Message-ID: <orig@example.jp>\r\n\
                   \r\n\
                   Final-Recipient: rfc822; One@Example.com\r\n\
                   Action: failed\r\n\
                   Status: 5.1.1\r\n\
                   Diagnostic-Code: smtp; 550 5.1.1 <one@example.com>...\r\n\
                   \tUser unknown\r\n\
                   \r\n\
                   Original-Recipient: rfc822;two@example.com\r\n\
                   Action: delayed\r\n\
                   Status: 4.4.7 (delivery time expired)\r\n\
                   \r\n\
                   Final-Recipient: x400; /C=XX/\r\n\
                   Action: failed\r\n";
        let got = parse_delivery_status(dsn);
        assert_eq!(got.reporting_mta.as_deref(), Some("mx.example.org"));
        assert_eq!(got.original_message_id.as_deref(), Some("orig@example.jp"));
        let want = vec![
            FailedRecipient {
                address: "one@example.com".into(),
                action: Some("failed".into()),
                status: Some("5.1.1".into()),
                diagnostic: Some("550 5.1.1 <one@example.com>... User unknown".into()),
            },
            FailedRecipient {
                address: "two@example.com".into(),
                action: Some("delayed".into()),
                status: Some("4.4.7".into()),
                diagnostic: None,
            },
        ];
        assert_eq!(got.recipients, want);
    }

    #[test]
    fn delivery_status_is_capped_at_max_recipients() {
        let mut dsn = String::from("Reporting-MTA: dns; mx.example.org\n\n");
        for i in 0..(MAX_RECIPIENTS * 3) {
            dsn.push_str(&format!(
                "Final-Recipient: rfc822; r{i}@example.com\nAction: failed\nStatus: 5.1.1\n\n"
            ));
        }
        assert_eq!(parse_delivery_status(&dsn).recipients.len(), MAX_RECIPIENTS);
    }

    #[test]
    fn kind_follows_the_actions() {
        let r = |action: Option<&str>, status: Option<&str>| FailedRecipient {
            address: "a@example.com".into(),
            action: action.map(str::to_string),
            status: status.map(str::to_string),
            diagnostic: None,
        };
        #[rustfmt::skip]
        let cases = [
            ("one failed is a bounce", vec![r(Some("delayed"), None), r(Some("failed"), None)], false, ReportKind::Bounce),
            ("all delayed is a delay", vec![r(Some("delayed"), Some("4.4.7"))], false, ReportKind::Delay),
            ("failed with 4.x.x is still a bounce", vec![r(Some("failed"), Some("4.4.1"))], false, ReportKind::Bounce),
            ("delivered is other", vec![r(Some("delivered"), Some("2.0.0"))], false, ReportKind::Other),
            ("relayed is other", vec![r(Some("relayed"), None)], false, ReportKind::Other),
            ("no action, 5.x.x", vec![r(None, Some("5.1.1"))], false, ReportKind::Bounce),
            ("no action, 4.x.x, warning text", vec![r(None, Some("4.4.7"))], true, ReportKind::Delay),
            ("no action, 4.x.x, no warning", vec![r(None, Some("4.4.7"))], false, ReportKind::Bounce),
            ("nothing known", vec![r(None, None)], false, ReportKind::Bounce),
        ];
        for (name, recipients, delay_said, want) in cases {
            assert_eq!(
                kind_from_recipients(&recipients, delay_said),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn recipient_lines_of_the_common_mtas() {
        // (MTA, line, (address, rest of the line)).
        type LineCase = (
            &'static str,
            &'static str,
            Option<(&'static str, &'static str)>,
        );
        #[rustfmt::skip]
        let cases: &[LineCase] = &[
            ("qmail", "<kijitora@example.ne.jp>:", Some(("kijitora@example.ne.jp", ""))),
            ("postfix", "<a@example.co.jp>: host mx[192.0.2.1] said: 550 5.2.1", Some(("a@example.co.jp", "host mx[192.0.2.1] said: 550 5.2.1"))),
            ("postfix folded reason", "    <a@example.co.jp>... User Unknown", None),
            ("exim", "  kijitora@example.jp", Some(("kijitora@example.jp", ""))),
            ("exim local part only", "  kijitora", None),
            ("gmx", "\"shironeko@example.jp\":", Some(("shironeko@example.jp", ""))),
            ("exchange 2003", "kijitora@example.jp on Thu, 29 Apr 2010", Some(("kijitora@example.jp", "on Thu, 29 Apr 2010"))),
            ("exchange mailto", "Neko<mailto:mikeneko@example.co.jp>", Some(("mikeneko@example.co.jp", ""))),
            ("exchange address and mailto", "a@example.jp<mailto:a@example.jp>", Some(("a@example.jp", ""))),
            ("mailto inside a sentence", "Please write to us at <mailto:help@example.com>", None),
            ("delay list", "kijitora@example.net; Action: Delayed", Some(("kijitora@example.net", "Action: Delayed"))),
            ("sendmail transcript", "<<< 550 5.1.1 <u@example.jp>... User Unknown", None),
            ("courier command", ">>> RCPT TO:<u@example.jp>", None),
            ("prose", "SMTP error from remote mail server after RCPT TO:<k@example.jp>:", None),
            ("blank", "", None),
        ];
        for (name, line, want) in cases {
            let got = recipient_on_line(line);
            let got = got.as_ref().map(|(a, r)| (a.as_str(), r.as_str()));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn inline_recipients_in_introductions() {
        #[rustfmt::skip]
        let cases = [
            ("your message wasn't delivered to kijitora@example.de because the address couldn't be found.", Some("kijitora@example.de")),
            ("the following message to <kijitora@example.jp> was undeliverable.", Some("kijitora@example.jp")),
            ("your message to noname@example.com couldn't be delivered.", Some("noname@example.com")),
            ("your message to the following recipients cannot be delivered:", None),
            ("could not be delivered to one or more recipients.", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                inline_recipient(line).map(|(a, _)| a).as_deref(),
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn scan_text_of_exim_qmail_sendmail_and_notes() {
        let exim = "This message was created automatically by mail delivery software.\n\n\
            A message that you sent could not be delivered to one or more of its\n\
            recipients. This is a permanent error. The following address(es) failed:\n\n\
            \x20 a@example.jp\n\
            \x20   SMTP error from remote mail server after RCPT TO:<a@example.jp>:\n\
            \x20   host mx.example.jp [192.0.2.153]: 550 5.1.1 <a@example.jp>... User Unknown\n\
            \x20 b@example.jp\n\
            \x20   host mx.example.jp [192.0.2.153]: 550 5.2.2 mailbox full\n\n\
            ------ This is a copy of the message, including all the headers. ------\n\n\
            Return-path: <s@example.jp>\n\
            Message-Id: <orig-1@example.jp>\n\
            Subject: hello\n\n\
            body\n";
        let scan = scan_text(exim);
        assert!(scan.intro);
        assert!(!scan.delay);
        let got: Vec<(&str, Option<String>)> = scan
            .recipients
            .iter()
            .map(|r| {
                (
                    r.address.as_str(),
                    r.diagnostic.as_deref().and_then(status_code),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a@example.jp", Some("5.1.1".into())),
                ("b@example.jp", Some("5.2.2".into()))
            ]
        );
        let returned = scan.returned.unwrap_or_default();
        assert_eq!(returned.message_id.as_deref(), Some("orig-1@example.jp"));
        assert_eq!(returned.subject.as_deref(), Some("hello"));

        let qmail = "Hi. This is the qmail-send program at mx4.example.jp.\n\
            I'm afraid I wasn't able to deliver your message to the following addresses.\n\
            This is a permanent error; I've given up. Sorry it didn't work out.\n\n\
            <k@example.ne.jp>:\n\
            remote host 192.0.2.32 said: 550 Unknown user k@example.ne.jp\n\
            . (#5.5.0)\n\n\
            --- Below this line is a copy of the message.\n\n\
            Message-ID: <q@mailhub>\n";
        let scan = scan_text(qmail);
        assert_eq!(scan.reporting_mta.as_deref(), Some("mx4.example.jp"));
        assert_eq!(scan.recipients.len(), 1);
        assert_eq!(scan.recipients[0].address, "k@example.ne.jp");
        assert_eq!(
            scan.recipients[0].diagnostic.as_deref(),
            Some("remote host 192.0.2.32 said: 550 Unknown user k@example.ne.jp . (#5.5.0)")
        );
        assert_eq!(
            scan.returned.and_then(|o| o.message_id).as_deref(),
            Some("q@mailhub")
        );

        let sendmail = "   ----- The following addresses had permanent fatal errors -----\n\
            <u@example.jp>\n\
            \x20   (reason: 550 5.1.1 <u@example.jp>... User Unknown)\n\n\
            \x20  ----- Transcript of session follows -----\n\
            <other@example.jp>... Deferred\n";
        let scan = scan_text(sendmail);
        let got: Vec<&str> = scan.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(got, vec!["u@example.jp"]);
        assert_eq!(scan.returned, None);

        let notes = "------- Failure Reasons  --------\n\n\
            User not listed in public Name & Address Book\n\
            k@u1.example.co.jp\n\n\
            ------- Returned Message --------\n\
            Message-ID: <n@example.co.jp>\n";
        let scan = scan_text(notes);
        assert_eq!(scan.recipients.len(), 1);
        assert_eq!(
            scan.recipients[0].diagnostic.as_deref(),
            Some("User not listed in public Name & Address Book")
        );
    }

    #[test]
    fn scan_text_of_postfix_and_delay_notices() {
        let postfix = "This is the mail system at host smtp.example.com.\n\n\
            I'm sorry to have to inform you that your message could not\n\
            be delivered to one or more recipients. It's attached below.\n\n\
            \x20                  The mail system\n\n\
            <f@example.co.jp>: host mx.example.co.jp[192.0.2.153] said: 550 5.2.1\n\
            \x20   <f@example.co.jp>... User Unknown (in reply to RCPT TO command)\n";
        let scan = scan_text(postfix);
        assert_eq!(scan.reporting_mta.as_deref(), Some("smtp.example.com"));
        assert_eq!(scan.recipients.len(), 1);
        assert_eq!(
            scan.recipients[0].diagnostic.as_deref(),
            Some(
                "host mx.example.co.jp[192.0.2.153] said: 550 5.2.1 <f@example.co.jp>... User Unknown (in reply to RCPT TO command)"
            )
        );

        let delays = [
            "    **      THIS IS A WARNING MESSAGE ONLY      **",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "The server will continue trying for up to 21 hours.",
        ];
        for line in delays {
            assert!(scan_text(line).delay, "{line}");
        }
        assert!(!scan_text("This is a permanent error; I've given up.").delay);
    }

    #[test]
    fn pasted_headers_stop_at_the_first_blank_line() {
        let lines = [
            "",
            "Return-path: <s@example.jp>",
            "Message-Id: <first@example.jp>",
            "In-Reply-To: <parent@example.jp>",
            "References: <root@example.jp> <parent@example.jp>",
            "Received: from [192.0.2.135] by mx.example.jp (via",
            "HTTP); Fri, 28 Nov 2014 18:00:13 +0100",
            "Subject: =?UTF-8?B?44OG44K544OI?=",
            "",
            "Message-Id: <in-the-body@example.jp>",
        ];
        let got = pasted_headers(&lines).unwrap_or_default();
        assert_eq!(got.message_id.as_deref(), Some("first@example.jp"));
        assert_eq!(got.references, vec!["parent@example.jp", "root@example.jp"]);
        assert_eq!(got.subject.as_deref(), Some("テスト"));
        assert_eq!(pasted_headers(&["", "", "not a header line"]), None);
        assert_eq!(pasted_headers(&[]), None);
    }

    #[test]
    fn looks_like_report_by_envelope_signals() {
        #[rustfmt::skip]
        let cases = [
            ("mailer-daemon", "From: MAILER-DAEMON@mx.example.org\nSubject: x\n\nbody", true),
            ("postmaster", "From: Postmaster <postmaster@example.org>\n\nbody", true),
            ("postfix comment", "From: MAILER-DAEMON@smtp.example.com (Mail Delivery System)\n\nbody", true),
            ("display name", "From: Mail Delivery Subsystem <bounces@example.org>\n\nbody", true),
            ("null return path", "Return-Path: <>\nFrom: a@example.org\n\nbody", true),
            ("empty return path", "Return-Path: \nFrom: a@example.org\n\nbody", true),
            ("x-failed-recipients", "From: a@example.org\nX-Failed-Recipients: b@example.org\n\nbody", true),
            ("multipart/report", "From: a@example.org\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n\ntext\n--b--\n", true),
            ("delivery-status root", "From: a@example.org\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; b@example.org\n", true),
            ("feedback-report part", "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n--b--\n", true),
            ("customer", "Return-Path: <c@example.com>\nFrom: Customer <c@example.com>\nSubject: Undeliverable: my printer\n\nhelp", false),
            ("post_master", "From: post_master@vtext.example.com\nSubject: Re: x\n\nbody", true),
            ("postmaster with queue id", "From: postmaster-abc/def@example.org\nSubject: Undeliverable message\n\nbody", true),
            ("amazon sns notification", "From: AWS Notifications <no-reply@sns.amazonaws.com>\nSubject: AWS Notification Message\n\n{\"notificationType\":\"Bounce\"}", true),
            ("hotmail jmrp", "From: staff@hotmail.com\nSubject: complaint about message from 192.0.2.1\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nX-HmXmrOriginalRecipient: a@hotmail.com\nFrom: us@example.org\nSubject: x\n\nhi\n--b--\n", true),
            ("postmasterson is a person", "From: postmasterson@example.org\nSubject: hi\n\nbody", false),
        ];
        for (name, raw, want) in cases {
            let msg = MessageParser::default().parse(raw.as_bytes());
            assert_eq!(msg.as_ref().map(looks_like_report), Some(want), "{name}");
        }
    }

    #[test]
    fn a_customer_pasting_a_bounce_is_not_a_report() {
        let raw = "From: Customer <c@example.com>\nSubject: Fwd: Undelivered Mail Returned to Sender\n\n\
            Your mail bounced, see below.\n\n\
            This is the mail system at host smtp.example.com.\n\n\
            \x20                  The mail system\n\n\
            <support@example.org>: host mx said: 550 5.1.1 User unknown\n";
        assert_eq!(read_report_raw(raw.as_bytes()), None);
    }

    #[test]
    fn read_report_of_a_minimal_dsn_and_an_mdn() {
        let dsn = "From: MAILER-DAEMON@mx.example.org\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n\
            --b\nContent-Type: text/plain\n\nfailed\n\
            --b\nContent-Type: message/delivery-status\n\n\
            Reporting-MTA: dns; mx.example.org\n\n\
            Final-Recipient: rfc822; gone@example.com\nAction: failed\nStatus: 5.1.1\n\n\
            --b\nContent-Type: text/rfc822-headers\n\n\
            Message-ID: <ours@desk.example.org>\nReferences: <older@desk.example.org>\nSubject: [#12] Printer\n\n\
            --b--\n";
        let got = read_report_raw(dsn.as_bytes());
        let want = Report {
            kind: ReportKind::Bounce,
            recipients: vec![FailedRecipient {
                address: "gone@example.com".into(),
                action: Some("failed".into()),
                status: Some("5.1.1".into()),
                diagnostic: None,
            }],
            original_message_id: Some("ours@desk.example.org".into()),
            original_references: vec!["older@desk.example.org".into()],
            original_subject: Some("[#12] Printer".into()),
            reporting_mta: Some("mx.example.org".into()),
        };
        assert_eq!(got, Some(want));

        let mdn = "From: Reader <r@example.com>\n\
            Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n\n\
            --b\nContent-Type: text/plain\n\nRead.\n\
            --b\nContent-Type: message/disposition-notification\n\n\
            Final-Recipient: rfc822; r@example.com\n\
            Original-Message-ID: <ours@desk.example.org>\n\
            Disposition: manual-action/MDN-sent-manually; displayed\n\n\
            --b--\n";
        let got = read_report_raw(mdn.as_bytes());
        assert_eq!(got.as_ref().map(|r| r.kind), Some(ReportKind::Other));
        assert_eq!(
            got.and_then(|r| r.original_message_id).as_deref(),
            Some("ours@desk.example.org")
        );
    }

    #[test]
    fn read_report_of_an_exchange_ndr_in_prose_only() {
        // The Exchange 2010 / Office 365 wording, as forwarded by relays that drop the DSN part.
        let raw = "From: Microsoft Outlook <postmaster@example.onmicrosoft.com>\n\
            Subject: Undeliverable: [#42] Printer\n\
            In-Reply-To: <ours@desk.example.org>\n\n\
            Delivery has failed to these recipients or groups:\n\n\
            gone@example.com (gone@example.com)\n\
            The e-mail address you entered couldn't be found.\n\n\
            Diagnostic information for administrators:\n\n\
            Generating server: DB5PR06MB1800.eurprd06.prod.outlook.com\n\n\
            gone@example.com\n\
            Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'\n\n\
            Original message headers:\n\n\
            From: Support <support@desk.example.org>\n\
            Subject: [#42] Printer\n\n";
        let got = read_report_raw(raw.as_bytes());
        let r = got.as_ref().and_then(|r| r.recipients.first());
        assert_eq!(r.map(|r| r.address.as_str()), Some("gone@example.com"));
        assert_eq!(r.and_then(|r| r.status.as_deref()), Some("5.1.1"));
        assert_eq!(r.and_then(|r| r.action.as_deref()), Some("failed"));
        assert!(
            r.and_then(|r| r.diagnostic.as_deref())
                .is_some_and(|d| d.contains("Remote Server returned '550 5.1.1")),
            "{r:?}"
        );
        // The pasted headers carry no Message-ID; the NDR's own In-Reply-To names the original.
        assert_eq!(
            got.as_ref().and_then(|r| r.original_message_id.as_deref()),
            Some("ours@desk.example.org")
        );
        assert_eq!(
            got.as_ref().and_then(|r| r.original_subject.as_deref()),
            Some("[#42] Printer")
        );
        assert_eq!(
            got.and_then(|r| r.reporting_mta),
            Some("db5pr06mb1800.eurprd06.prod.outlook.com".to_string())
        );
    }

    #[test]
    fn hostile_input_is_bounded_and_never_panics() {
        let mut many = String::from("From: MAILER-DAEMON@mx.example.org\nX-Failed-Recipients: ");
        for i in 0..5_000 {
            many.push_str(&format!("r{i}@example.com, "));
        }
        many.push_str("\n\nThe following address(es) failed:\n\n");
        for i in 0..5_000 {
            many.push_str(&format!("  t{i}@example.com\n    550 5.1.1 unknown\n"));
        }
        let got = read_report_raw(many.as_bytes());
        assert_eq!(got.map(|r| r.recipients.len()), Some(MAX_RECIPIENTS));

        let odd_inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\n\n\n".to_vec(),
            b"From: MAILER-DAEMON\n\n\xff\xfe\x00<@>:\n".to_vec(),
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"\"\n\n--\n--\n".to_vec(),
            b"Content-Type: message/delivery-status\n\nFinal-Recipient:\nAction:\nStatus: 5.\n".to_vec(),
            b"Content-Type: message/rfc822\n\nFrom MAILER-DAEMON\n".to_vec(),
            "From: postmaster@x\n\nThe following address failed:\n\n\u{00e9}@\u{00e9}.\u{00e9}\n".into(),
            format!("From: postmaster@x\n\nThe mail system\n\n{}\n", "<".repeat(100_000)).into_bytes(),
        ];
        for raw in odd_inputs {
            let _ = read_report_raw(&raw);
            if let Some(msg) = MessageParser::default().parse(&raw) {
                let _ = looks_like_report(&msg);
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// The bounce fixtures, read once.
        fn bounces() -> &'static [Vec<u8>] {
            static BOUNCES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
            BOUNCES.get_or_init(|| {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bounces");
                let mut files: Vec<_> = std::fs::read_dir(dir)
                    .map(|rd| rd.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                files.sort();
                files
                    .iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                    .filter_map(|p| std::fs::read(p).ok())
                    .collect()
            })
        }

        /// A real bounce, cut short, with bytes spliced in, or random bytes.
        fn bounce_like() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                any::<Vec<u8>>(),
                (
                    any::<prop::sample::Index>(),
                    any::<prop::sample::Index>(),
                    any::<prop::sample::Index>(),
                    any::<Vec<u8>>()
                )
                    .prop_map(|(which, cut, at, splice)| {
                        let all = bounces();
                        if all.is_empty() {
                            return splice;
                        }
                        let b = &all[which.index(all.len())];
                        let mut out = b[..cut.index(b.len() + 1)].to_vec();
                        let at = at.index(out.len() + 1);
                        out.splice(at..at, splice);
                        out
                    }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn any_bytes_are_read_without_panic_and_within_the_caps(raw in bounce_like()) {
                if let Some(r) = read_report_raw(&raw) {
                    prop_assert!(r.recipients.len() <= MAX_RECIPIENTS);
                }
                if let Some(msg) = MessageParser::default().parse(&raw) {
                    let _ = looks_like_report(&msg);
                }
            }
        }
    }
}
