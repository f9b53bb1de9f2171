//! Raw bytes -> `InboundMail` (SPEC: Severity, Loops/bad input). No database, no clock.
//!
//! mail-parser does the RFC 5322/2045/2047 work (any charset, encoded words, broken MIME). This
//! module decides what postdesk needs from a message and when a message is not usable at all:
//! over the size limit, not a message, or without a sender address. Those become a
//! `QuarantineReason` instead of a value, so that nothing that arrived is dropped silently.

use std::borrow::Cow;

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The most text of a body kept as the ticket's readable text; the raw message is always whole.
const MAX_STORED_TEXT: usize = 1 << 20;
/// Caps on lists a hostile message could make huge; what is cut stays in the raw message.
const MAX_REFERENCES: usize = 100;
const MAX_AUTHENTICATION_RESULTS: usize = 20;

/// One address with its display name, as read from a header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    /// The display name, with control characters removed.
    pub name: Option<String>,
    /// The address as written (compare with `eq_ignore_ascii_case`).
    pub address: String,
}

impl Mailbox {
    /// The address lower-cased, for comparisons and storage keys.
    pub fn key(&self) -> String {
        self.address.to_ascii_lowercase()
    }

    /// The part after the last `@`, lower-cased.
    pub fn domain(&self) -> String {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The part before the last `@`, lower-cased.
    pub fn local_part(&self) -> String {
        self.address
            .rsplit_once('@')
            .map(|(l, _)| l.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// Headers that mark a message as machine-sent (RFC 3834 and the de-facto ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AutoSignals {
    /// `Auto-Submitted` value, lower-cased, when present.
    pub auto_submitted: Option<String>,
    /// `Precedence` value, lower-cased, when present.
    pub precedence: Option<String>,
    /// `List-Id` present.
    pub list_id: bool,
    /// `List-Unsubscribe` present.
    pub list_unsubscribe: bool,
    /// `X-Autoreply` present.
    pub x_autoreply: bool,
    /// `X-Autorespond` present.
    pub x_autorespond: bool,
    /// `X-Auto-Response-Suppress` present (Exchange).
    pub x_auto_response_suppress: bool,
    /// `Return-Path: <>`: the null sender of bounces and auto-replies.
    pub null_return_path: bool,
    /// The message is a multipart/report (delivery status or disposition notification).
    pub report_type: Option<String>,
}

/// One attachment (or inline part) of an inbound message. Its bytes stay in the stored raw
/// message: `offset_body..offset_end` of the raw bytes, in `transfer_encoding`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// The file name (`Content-Disposition` filename or `Content-Type` name), control characters
    /// removed.
    pub filename: Option<String>,
    /// `type/subtype`, lower-cased.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: usize,
    /// `Content-ID` without angle brackets.
    pub content_id: Option<String>,
    /// True when shown inline (`Content-Disposition: inline`, or a Content-ID without a
    /// disposition) rather than attached.
    pub inline: bool,
    /// Where the encoded body starts in the raw message.
    pub offset_body: usize,
    /// Where it ends.
    pub offset_end: usize,
    /// `base64`, `quoted-printable`, or `7bit`/`8bit`/`binary` (as is).
    pub transfer_encoding: String,
}

/// The most attachments recorded per message; the rest stay in the raw message.
const MAX_ATTACHMENTS: usize = 200;

/// Everything postdesk uses from one inbound message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InboundMail {
    /// Message-ID without angle brackets.
    pub message_id: String,
    /// True when the message had no usable Message-ID and one was made from its bytes.
    pub message_id_synthesised: bool,
    /// The sender: `From`, else `Sender`, else `Reply-To`.
    pub from: Mailbox,
    /// `To` recipients.
    pub to: Vec<Mailbox>,
    /// `Cc` recipients.
    pub cc: Vec<Mailbox>,
    /// The decoded subject, as the customer wrote it (may contain anything).
    pub subject: String,
    /// Message-IDs from `In-Reply-To`, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// Message-IDs from `References`, without angle brackets.
    pub references: Vec<String>,
    /// Machine-sent markers.
    pub auto: AutoSignals,
    /// Plain text of the body (from HTML when there is no text part), capped at 1 MiB.
    pub text: String,
    /// The HTML body when the message has no text part (a reply's new text is read from it).
    pub html_only: Option<String>,
    /// `Content-Language`, when given.
    pub content_language: Option<String>,
    /// Size of the raw message in bytes.
    pub size: usize,
    /// Attachments and inline parts, in MIME order.
    pub attachments: Vec<Attachment>,
    /// Set when the message is a bounce or feedback report: what it says (possibly nothing
    /// more than that it is one).
    pub report: Option<crate::mail::dsn::Report>,
    /// Raw, unfolded values of every `Authentication-Results` header, top-most (most recently
    /// added) first, at most 20; `mail::auth` decides which of them to believe.
    pub authentication_results: Vec<String>,
}

/// Why a message went to quarantine instead of becoming a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuarantineReason {
    /// Larger than the configured limit.
    Oversized { size: usize, limit: usize },
    /// The bytes are not an RFC 5322 message.
    Unparseable { detail: String },
    /// No `From`, `Sender` or `Reply-To` with a usable address.
    NoSender { detail: String },
    /// More MIME parts than `limits.max_parts`.
    TooManyParts { found: usize, limit: usize },
    /// Multiparts and enclosed messages nested deeper than `limits.max_depth`.
    TooDeep { found: usize, limit: usize },
    /// Header blocks larger than `limits.max_header_bytes` in all.
    HeaderTooLarge { found: usize, limit: usize },
    /// More header fields than `limits.max_headers` in all.
    TooManyHeaders { found: usize, limit: usize },
}

impl QuarantineReason {
    /// A short stable code (`oversized`, `unparseable`, `no_sender`, `too_many_parts`,
    /// `too_deep`, `header_too_large`, `too_many_headers`).
    pub fn code(&self) -> &'static str {
        match self {
            QuarantineReason::Oversized { .. } => "oversized",
            QuarantineReason::Unparseable { .. } => "unparseable",
            QuarantineReason::NoSender { .. } => "no_sender",
            QuarantineReason::TooManyParts { .. } => "too_many_parts",
            QuarantineReason::TooDeep { .. } => "too_deep",
            QuarantineReason::HeaderTooLarge { .. } => "header_too_large",
            QuarantineReason::TooManyHeaders { .. } => "too_many_headers",
        }
    }
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuarantineReason::Oversized { size, limit } => {
                write!(
                    f,
                    "oversized: {size} bytes is over the limit of {limit} bytes"
                )
            }
            QuarantineReason::Unparseable { detail } => write!(f, "unparseable: {detail}"),
            QuarantineReason::NoSender { detail } => write!(f, "no usable sender: {detail}"),
            QuarantineReason::TooManyParts { found, limit } => write!(
                f,
                "too_many_parts: {} MIME parts is over limits.max_parts = {limit}",
                thousands(*found)
            ),
            QuarantineReason::TooDeep { found, limit } => write!(
                f,
                "too_deep: MIME parts nested {} deep is over limits.max_depth = {limit}",
                thousands(*found)
            ),
            QuarantineReason::HeaderTooLarge { found, limit } => write!(
                f,
                "header_too_large: {} bytes of headers is over limits.max_header_bytes = {limit}",
                thousands(*found)
            ),
            QuarantineReason::TooManyHeaders { found, limit } => write!(
                f,
                "too_many_headers: {} header fields is over limits.max_headers = {limit}",
                thousands(*found)
            ),
        }
    }
}

/// `335112` as `335,112`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parses one raw message, or says why it goes to quarantine.
pub fn parse(raw: &[u8], max_size: usize) -> Result<InboundMail, QuarantineReason> {
    if raw.len() > max_size {
        return Err(QuarantineReason::Oversized {
            size: raw.len(),
            limit: max_size,
        });
    }
    if !starts_like_a_header(raw) {
        return Err(QuarantineReason::Unparseable {
            detail: "the bytes do not start with a header field".into(),
        });
    }
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| QuarantineReason::Unparseable {
            detail: "no message structure found".into(),
        })?;
    if msg.headers().is_empty() {
        return Err(QuarantineReason::Unparseable {
            detail: "no header fields".into(),
        });
    }

    // From, else Sender, else Reply-To: a broken client that omits From still names someone to
    // answer (Zammad falls back the same way); with none of them the message is quarantined.
    let auto = auto_signals(&msg);
    let report = read_report(&msg, &auto);
    let from = first_mailbox(msg.from())
        .or_else(|| first_mailbox(msg.sender()))
        .or_else(|| first_mailbox(msg.reply_to()))
        // Bounces often come from an empty or `<>` sender: a report is never quarantined for
        // that alone. It is stored as from the mail system, which no rule ever answers.
        .or_else(|| {
            report.as_ref().map(|_| Mailbox {
                name: None,
                address: "MAILER-DAEMON@unknown.invalid".into(),
            })
        })
        .ok_or_else(|| QuarantineReason::NoSender {
            detail: match msg.from().and_then(Address::first) {
                None => "no From, Sender or Reply-To header".into(),
                Some(_) => "From has no valid address".into(),
            },
        })?;

    let message_id = msg
        .message_id()
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|id| is_clean_message_id(id))
        .map(str::to_string);
    let message_id_synthesised = message_id.is_none();
    let message_id = message_id.unwrap_or_else(|| synthesised_message_id(raw));

    let text = msg.body_text(0).map(|t| cap_text(t)).unwrap_or_default();
    let has_text_part = msg.text_body.iter().any(|&i| {
        msg.parts
            .get(i as usize)
            .is_some_and(|p| p.is_text() && !p.is_text_html())
    });
    let html_only = if has_text_part {
        None
    } else {
        msg.body_html(0).map(|h| cap_text(h))
    };
    let content_language = match msg.root_part().content_language() {
        HeaderValue::Text(t) => Some(t.to_string()),
        HeaderValue::TextList(l) => l.first().map(|t| t.to_string()),
        _ => None,
    };

    Ok(InboundMail {
        message_id,
        message_id_synthesised,
        from,
        to: mailboxes(msg.to()),
        cc: mailboxes(msg.cc()),
        subject: msg.subject().unwrap_or_default().to_string(),
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        auto,
        text,
        html_only,
        content_language,
        size: raw.len(),
        attachments: attachments(&msg),
        report,
        // Unfolding (RFC 5322 2.2.3) is removing the line breaks; the WSP after them stays.
        authentication_results: msg
            .headers_raw()
            .filter(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))
            .take(MAX_AUTHENTICATION_RESULTS)
            .map(|(_, value)| value.replace(['\r', '\n'], "").trim().to_string())
            .collect(),
    })
}

/// The report a message is, if it is one: what `dsn` reads from it, or a bare bounce when only
/// the envelope signals say so.
fn read_report(
    msg: &mail_parser::Message<'_>,
    auto: &AutoSignals,
) -> Option<crate::mail::dsn::Report> {
    use crate::mail::dsn;
    // A null sender alone also marks an RFC 3834 auto-reply (an out-of-office answering our
    // acknowledgement): that one is a reply to thread, not a report.
    let auto_reply = auto
        .auto_submitted
        .as_deref()
        .is_some_and(|v| v.starts_with("auto-replied"))
        || auto.x_autoreply
        || auto.x_autorespond;
    dsn::read_report(msg)
        .or_else(|| (!auto_reply && dsn::looks_like_report(msg)).then(dsn::Report::unread))
}

/// The machine-sent markers of a message's headers.
fn auto_signals(msg: &mail_parser::Message<'_>) -> AutoSignals {
    let mut auto = AutoSignals {
        list_id: !msg.list_id().is_empty(),
        list_unsubscribe: !msg.list_unsubscribe().is_empty(),
        ..AutoSignals::default()
    };
    for (name, value) in msg.headers_raw() {
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "auto-submitted" => auto.auto_submitted = Some(first_word(value)),
            "precedence" => auto.precedence = Some(first_word(value)),
            "x-autoreply" => auto.x_autoreply = true,
            "x-autorespond" => auto.x_autorespond = true,
            "x-auto-response-suppress" => auto.x_auto_response_suppress = true,
            "return-path" => {
                auto.null_return_path = value
                    .trim_matches(|c: char| c == '<' || c == '>' || c.is_whitespace())
                    .is_empty()
            }
            _ => {}
        }
    }
    if let Some(ct) = msg.root_part().content_type()
        && ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    {
        auto.report_type = Some(
            ct.attribute("report-type")
                .unwrap_or("unknown")
                .to_ascii_lowercase(),
        );
    }
    auto
}

fn attachments(msg: &mail_parser::Message<'_>) -> Vec<Attachment> {
    msg.attachments
        .iter()
        .filter_map(|&i| msg.parts.get(i as usize))
        .take(MAX_ATTACHMENTS)
        .map(|part| {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase();
            let content_id = part
                .content_id()
                .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
                .filter(|id| is_clean_message_id(id))
                .map(str::to_string);
            let disposition = part
                .content_disposition()
                .map(|d| d.ctype().to_ascii_lowercase());
            let inline = match disposition.as_deref() {
                Some("inline") => true,
                Some(_) => false,
                None => content_id.is_some(),
            };
            let transfer_encoding = part
                .content_transfer_encoding()
                .map(|e| e.trim().to_ascii_lowercase())
                .unwrap_or_else(|| "7bit".into());
            Attachment {
                filename: part
                    .attachment_name()
                    .map(one_line)
                    .filter(|n| !n.is_empty())
                    .map(|n| n.chars().take(255).collect()),
                content_type,
                size: part.len(),
                content_id,
                inline,
                offset_body: part.offset_body as usize,
                offset_end: part.offset_end as usize,
                transfer_encoding,
            }
        })
        .collect()
}

/// One attachment or inline part of a message with its decoded bytes, for mail that carries it
/// on (a relayed engineer reply, an engineer notification of a customer's mail).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachmentBody {
    /// As in `Attachment`.
    pub filename: Option<String>,
    /// As in `Attachment` (`type/subtype`, lower-cased), with `; charset=utf-8` added for text
    /// parts: mail-parser decodes those from their charset to UTF-8.
    pub content_type: String,
    /// As in `Attachment`.
    pub content_id: Option<String>,
    /// As in `Attachment`.
    pub inline: bool,
    /// The decoded bytes (a forwarded message: its raw bytes).
    pub data: Vec<u8>,
}

/// The HTML body of a raw message, when it has one (an engineer's formatted reply): None for a
/// plain-text-only message or bytes that do not parse.
pub fn html_body(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    let id = *msg.html_body.first()?;
    let part = msg.parts.get(id as usize)?;
    if !part.is_text_html() {
        return None;
    }
    part.text_contents().map(str::to_string)
}

/// The bodies of the parts `InboundMail.attachments` lists, decoded, in the same order, as long
/// as their decoded sizes add up to at most `max_total`. The first part that would go over and
/// every part after it are left out, so the result is always a prefix of that list: the caller
/// lists `mail.attachments[bodies.len()..]` as kept in the stored message instead. Bytes that do
/// not parse as a message give an empty list.
pub fn attachment_bodies(raw: &[u8], max_total: usize) -> Vec<AttachmentBody> {
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    let mut total = 0usize;
    let mut bodies = Vec::new();
    // `attachments()` is what an attachment is; the part each one came from is found again by
    // where its body starts in the raw message.
    for a in attachments(&msg) {
        let Some(part) = msg.attachments.iter().find_map(|&i| {
            msg.parts
                .get(i as usize)
                .filter(|p| p.offset_body as usize == a.offset_body)
        }) else {
            break;
        };
        let data = part.contents();
        total = total.saturating_add(data.len());
        if total > max_total {
            break;
        }
        let content_type = if part.is_text() {
            format!("{}; charset=utf-8", a.content_type)
        } else {
            a.content_type
        };
        bodies.push(AttachmentBody {
            filename: a.filename,
            content_type,
            content_id: a.content_id,
            inline: a.inline,
            data: data.to_vec(),
        });
    }
    bodies
}

/// A Message-ID made from the bytes, so that the same message without one is still recognised.
pub fn synthesised_message_id(raw: &[u8]) -> String {
    let digest = Sha256::digest(raw);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}@synthesised.postdesk.invalid")
}

/// Hex SHA-256 of the raw bytes: the quarantine's key against storing one message twice.
pub fn content_hash(raw: &[u8]) -> String {
    Sha256::digest(raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a string may be used as a Message-ID: visible ASCII, no brackets inside, sane length.
pub fn is_clean_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 900
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// Whether an address is usable as a sender or recipient: one `@`, a local part, a dotted-or-not
/// domain, no spaces or control characters.
pub fn is_usable_address(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && addr.len() <= 320
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && addr.chars().all(|c| !c.is_control() && !c.is_whitespace())
        && domain.chars().all(|c| {
            c.is_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']' || c == ':'
        })
}

/// Removes control characters (CR, LF, NUL, ...) and collapses runs of whitespace into one space.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_control() || c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

fn first_word(v: &str) -> String {
    v.split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn starts_like_a_header(raw: &[u8]) -> bool {
    // mbox "From " separator lines are accepted: some MTAs and archives keep them.
    if raw.starts_with(b"From ") {
        return true;
    }
    let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let line = &raw[..line_end];
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon]
            .iter()
            // RFC 5322 allows any printable name; real mail uses letters, digits, '-' and '_'.
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        _ => false,
    }
}

fn first_mailbox(addr: Option<&Address<'_>>) -> Option<Mailbox> {
    let addr = addr?;
    let all: Box<dyn Iterator<Item = &mail_parser::Addr<'_>>> = match addr {
        Address::List(l) => Box::new(l.iter()),
        Address::Group(g) => Box::new(g.iter().flat_map(|g| g.addresses.iter())),
    };
    all.filter_map(to_mailbox).next()
}

fn mailboxes(addr: Option<&Address<'_>>) -> Vec<Mailbox> {
    match addr {
        None => Vec::new(),
        Some(Address::List(l)) => l.iter().filter_map(to_mailbox).collect(),
        Some(Address::Group(g)) => g
            .iter()
            .flat_map(|g| g.addresses.iter())
            .filter_map(to_mailbox)
            .collect(),
    }
}

fn to_mailbox(a: &mail_parser::Addr<'_>) -> Option<Mailbox> {
    let address = a.address.as_deref()?.trim();
    if !is_usable_address(address) {
        return None;
    }
    let name = a
        .name
        .as_deref()
        .map(one_line)
        .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case(address));
    Some(Mailbox {
        name,
        address: address.to_string(),
    })
}

fn id_list(v: &HeaderValue<'_>) -> Vec<String> {
    let raw: Vec<&str> = match v {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    raw.into_iter()
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|id| is_clean_message_id(id))
        .take(MAX_REFERENCES)
        .map(str::to_string)
        .collect()
}

fn cap_text(t: Cow<'_, str>) -> String {
    if t.len() <= MAX_STORED_TEXT {
        return t.into_owned();
    }
    let mut end = MAX_STORED_TEXT;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 25 * 1024 * 1024;

    #[test]
    fn quarantine_reasons() {
        let cases: [(&str, &[u8], &str); 6] = [
            (
                "binary_bytes_are_not_mail",
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
                "unparseable",
            ),
            (
                "json_is_not_mail",
                b"{\"hello\": \"world\"}\n",
                "unparseable",
            ),
            ("empty_input_is_not_mail", b"", "unparseable"),
            (
                "no_from_no_sender",
                b"To: support@example.com\r\nSubject: SEV 3 hi\r\n\r\nbody\r\n",
                "no_sender",
            ),
            (
                "from_without_address",
                b"From: Jane Doe\r\nTo: support@example.com\r\nSubject: hi\r\n\r\nbody\r\n",
                "no_sender",
            ),
            (
                "from_with_broken_address",
                b"From: <jane at acme>\r\nSubject: hi\r\n\r\nbody\r\n",
                "no_sender",
            ),
        ];
        for (name, raw, code) in cases {
            match parse(raw, LIMIT) {
                Err(reason) => assert_eq!(reason.code(), code, "{name}: {reason}"),
                Ok(m) => panic!("{name}: expected quarantine {code}, parsed {:?}", m.from),
            }
        }
    }

    #[test]
    fn limit_reasons_name_the_limit_and_the_value_found() {
        let cases = [
            (
                QuarantineReason::TooManyParts {
                    found: 335_112,
                    limit: 1000,
                },
                "too_many_parts: 335,112 MIME parts is over limits.max_parts = 1000",
            ),
            (
                QuarantineReason::TooDeep {
                    found: 31,
                    limit: 30,
                },
                "too_deep: MIME parts nested 31 deep is over limits.max_depth = 30",
            ),
            (
                QuarantineReason::HeaderTooLarge {
                    found: 1_048_577,
                    limit: 1_048_576,
                },
                "header_too_large: 1,048,577 bytes of headers is over limits.max_header_bytes = 1048576",
            ),
            (
                QuarantineReason::TooManyHeaders {
                    found: 5001,
                    limit: 5000,
                },
                "too_many_headers: 5,001 header fields is over limits.max_headers = 5000",
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(reason.to_string(), want);
        }
    }

    #[test]
    fn oversized_is_quarantined_before_parsing() {
        let raw = b"From: a@b.test\r\n\r\n0123456789";
        let err = parse(raw, 10).err();
        assert_eq!(
            err,
            Some(QuarantineReason::Oversized {
                size: raw.len(),
                limit: 10
            })
        );
    }

    #[test]
    fn sender_falls_back_to_reply_to() {
        let raw = b"Reply-To: jane@acme.test\r\nSubject: x\r\n\r\nbody";
        let m = parse(raw, LIMIT).map_err(|e| e.to_string());
        assert_eq!(m.map(|m| m.from.address), Ok("jane@acme.test".to_string()));
    }

    #[test]
    fn sender_falls_back_to_sender_header() {
        let raw = b"Sender: list-bot@lists.test\r\nSubject: x\r\n\r\nbody";
        let m = parse(raw, LIMIT).map_err(|e| e.to_string());
        assert_eq!(
            m.map(|m| m.from.address),
            Ok("list-bot@lists.test".to_string())
        );
    }

    #[test]
    fn missing_message_id_is_synthesised_stably() {
        let raw = b"From: a@acme.test\r\nSubject: x\r\n\r\nbody";
        let a = parse(raw, LIMIT).map_err(|e| e.to_string());
        let b = parse(raw, LIMIT).map_err(|e| e.to_string());
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("{e}")),
            b.unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(a.message_id_synthesised);
        assert_eq!(a.message_id, b.message_id);
        let other = parse(b"From: a@acme.test\r\nSubject: y\r\n\r\nbody", LIMIT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.message_id, other.message_id);
    }

    #[test]
    fn auto_signals_are_read() {
        let raw = b"From: a@acme.test\r\nAuto-Submitted: Auto-Replied; owner=x\r\nPrecedence: BULK\r\nList-Id: <l.acme.test>\r\nX-Auto-Response-Suppress: All\r\nReturn-Path: <>\r\nSubject: x\r\n\r\nbody";
        let m = parse(raw, LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.auto.auto_submitted.as_deref(), Some("auto-replied"));
        assert_eq!(m.auto.precedence.as_deref(), Some("bulk"));
        assert!(m.auto.list_id && m.auto.x_auto_response_suppress && m.auto.null_return_path);
        assert!(!m.auto.x_autoreply && !m.auto.list_unsubscribe);
    }

    #[test]
    fn encoded_subject_and_references() {
        let raw = "From: =?UTF-8?Q?J=C3=BCrgen?= <j@acme.test>\r\nSubject: =?UTF-8?B?U0VWIDMg4oCTIETDvHNzZWxkb3Jm?=\r\nIn-Reply-To: <a@x>\r\nReferences: <r1@x> <r2@x>\r\nMessage-ID: <m1@acme.test>\r\n\r\nbody";
        let m = parse(raw.as_bytes(), LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.subject, "SEV 3 – Düsseldorf");
        assert_eq!(m.from.name.as_deref(), Some("Jürgen"));
        assert_eq!(m.message_id, "m1@acme.test");
        assert_eq!(m.in_reply_to, vec!["a@x"]);
        assert_eq!(m.references, vec!["r1@x", "r2@x"]);
    }

    #[test]
    fn attachment_bodies_are_decoded_in_attachment_order_up_to_the_cap() {
        let raw = concat!(
            "From: jane@acme.test\r\nSubject: logs\r\nMIME-Version: 1.0\r\n",
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n",
            "--b1\r\nContent-Type: multipart/related; boundary=\"b2\"\r\n\r\n",
            "--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p><img src=\"cid:img1@acme.test\"></p>\r\n",
            "--b2\r\nContent-Type: image/png\r\nContent-ID: <img1@acme.test>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n",
            "--b2--\r\n",
            "--b1\r\nContent-Type: text/plain; charset=iso-8859-1; name=\"gr=FC=DFe.txt\"\r\n",
            "Content-Disposition: attachment; filename=\"log.txt\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ngr=FC=DFe\r\n",
            "--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"big.pdf\"\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjcKJSVFT0YK\r\n",
            "--b1--\r\n",
        );
        let mail = parse(raw.as_bytes(), LIMIT).unwrap_or_else(|e| panic!("{e}"));
        let all = attachment_bodies(raw.as_bytes(), usize::MAX);
        assert_eq!(all.len(), mail.attachments.len());
        for (body, listed) in all.iter().zip(&mail.attachments) {
            assert_eq!(body.filename, listed.filename);
            assert_eq!(body.content_id, listed.content_id);
            assert_eq!(body.inline, listed.inline);
            assert_eq!(body.data.len(), listed.size);
        }
        assert_eq!(all[0].content_type, "image/png");
        assert_eq!(all[0].content_id.as_deref(), Some("img1@acme.test"));
        assert!(all[0].inline);
        assert_eq!(all[0].data, b"\x89PNG\r\n\x1a\n");
        assert_eq!(all[1].content_type, "text/plain; charset=utf-8");
        assert_eq!(all[1].data, "grüße".as_bytes());
        assert_eq!(all[2].data, b"%PDF-1.7\n%%EOF\n");
        // A prefix: the part that goes over the cap and every one after it are left out.
        let capped = attachment_bodies(raw.as_bytes(), 8 + 6 + 5);
        assert_eq!(capped.len(), 2);
        assert!(attachment_bodies(raw.as_bytes(), 7).is_empty());
        assert!(attachment_bodies(b"", usize::MAX).is_empty());
    }

    #[test]
    fn one_line_removes_controls() {
        assert_eq!(one_line("a\r\nBcc: x\tb  c"), "a Bcc: x b c");
        assert_eq!(one_line("\r\n x"), "x");
    }
}
