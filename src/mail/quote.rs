//! The new text of a reply: quoted history, attribution lines and signatures removed. Implements
//! SPEC.md "Threading": "Quoted history and signatures are stripped from the stored new text (the
//! original is kept whole)". Pure: no IO, never panics, linear in the input.
//!
//! How a reply is read, line by line (the approach of GitHub's email_reply_parser, Mailgun's talon
//! and Discourse's email_reply_trimmer: classify each line, then decide on the sequence):
//! - A line is blank, a `>` quote, an attribution (`On … wrote:` and its forms in German, French,
//!   Spanish, Italian, Dutch, Portuguese, Polish, Swedish, Russian and Chinese, wrapped over up to
//!   three lines as Gmail does), a history separator (`-----Original Message-----`, `Begin
//!   forwarded message:` and their translations), a run of underscores, a header field (`From:`,
//!   `Sent:`, `To:`, `Subject:` in those languages), a signature separator, a mobile signature
//!   (`Sent from my iPhone` and its translations, `Get Outlook for iOS`), or text.
//! - The history starts at the first separator, `-- ` line, underscore run followed by a header,
//!   or header block; everything from there is dropped. Outlook and forwards do not quote their
//!   history with `>`, so nothing after such a marker can be told apart from it.
//! - Within what is left, an attribution followed by `>` lines (or by unquoted text when it names an
//!   address or a time) starts the quote. If unquoted lines follow the quoted ones, the writer
//!   answered below or between the quotes: those answers are kept, and only the `>` lines and
//!   the attribution go. Otherwise (top posting) everything from the attribution on goes.
//! - `>` lines always go. A reply that is nothing but quote comes back whole (trimmed): an empty
//!   ticket entry would hide that the customer wrote at all.
//! - HTML-only replies: Outlook's quoted message (from its `appendonsend` or `divRplyFwdMsg` div
//!   on) is cut off, Gmail's `gmail_attr` and Thunderbird's `moz-cite-prefix` attribution divs are
//!   removed (so an attribution in any language goes), and the rest goes through html_to_text,
//!   which writes blockquotes (Gmail's `gmail_quote`, Apple's `type=cite`) as `>` lines, so
//!   answers written between them survive like in text.
//!
//! Choices made here to stay conservative (a wrongly kept line costs a little reading, a wrongly
//! cut line loses what the customer said):
//! - An attribution needs a digit or an `@` (every client writes a date or an address), so
//!   `On second thought, here is what Bob wrote:` is prose.
//! - A header block needs `From:` (in any of the languages) and either a `Sent:`/`Date:` line with
//!   a digit or at least three different fields, all on consecutive lines. One `From:` line, or a
//!   `From:`/`To:` pair in a change request, is prose.
//! - A mobile signature or a bare `--` counts only where a signature can be: a mobile line must
//!   be followed by nothing but history, a `--` by at most six lines before the history. `-- `
//!   (with its RFC 3676 space) always counts.
//! - `>50%` and `>= 3` at the start of a line are comparisons, not quotes.
//! - Marker patterns only look at lines of at most 400 bytes, and joins are bounded, so a 1 MiB
//!   line or a million `>` cost one pass.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::outbound::html_text::{Parsed, Tag, decode_entities, html_to_text, parse_tag};

/// The new text of a reply: quoted history, attribution lines and signatures removed.
pub fn reply_text(text: &str) -> String {
    let text = normalise_newlines(text);
    let lines: Vec<&str> = text.split('\n').collect();
    let kinds = classify(&lines);
    let end = history_start(&kinds);
    let keep = kept_lines(&kinds, end);
    let out = assemble(&lines, &keep);
    if out.is_empty() {
        text.trim().to_string()
    } else {
        out
    }
}

/// Same for a reply that only has an HTML body: converted to text first (blockquotes become `>`
/// quotes, Gmail's gmail_quote / Outlook's divRplyFwdMsg / appendonsend / Apple's blockquote
/// type=cite / Thunderbird moz-cite-prefix recognised), then reply_text.
pub fn reply_text_from_html(html: &str) -> String {
    reply_text(&html_to_text(&strip_html_history(html)))
}

/// Marker patterns only look at lines up to this long: attributions and headers are short, and
/// the cap keeps a hostile 1 MiB line from going through every pattern.
const MAX_MARKER_BYTES: usize = 400;
/// Longest line read as a mobile signature (`Sent from my Samsung Galaxy smartphone.` is 39).
const MAX_MOBILE_CHARS: usize = 80;
/// Gmail wraps a long attribution; three lines cover a long name and address.
const MAX_ATTRIBUTION_LINES: usize = 3;
/// Most non-blank lines a signature under a bare `--` may have.
const MAX_BARE_DASH_SIGNATURE_LINES: usize = 6;

/// What one line of a reply is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Blank,
    /// Starts with `>`.
    Quote,
    Text,
    /// The first line of an attribution spanning `lines` lines; `strong` when it names an
    /// address or a time, so it counts even without `>` lines after it.
    Attribution {
        lines: usize,
        strong: bool,
    },
    /// A later line of a wrapped attribution.
    AttributionCont,
    /// `-----Original Message-----`, `Begin forwarded message:` and their translations.
    Separator,
    /// A line of underscores (Outlook puts one above its header block).
    Underscores,
    /// `From:`, `Sent:`, `To:`, `Subject:` or a translation; `digit` when the value has one.
    Header {
        field: Field,
        digit: bool,
    },
    /// `-- `: the RFC 3676 signature separator.
    SignatureDash,
    /// `--` without its space, as many clients send it.
    BareDash,
    /// `Sent from my iPhone` and kin.
    Mobile,
}

/// The header fields a quoted header block is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    From,
    Date,
    To,
    Subject,
}

fn normalise_newlines(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

fn classify(lines: &[&str]) -> Vec<Kind> {
    let mut kinds = Vec::with_capacity(lines.len());
    while kinds.len() < lines.len() {
        let kind = classify_line(lines, kinds.len());
        kinds.push(kind);
        if let Kind::Attribution { lines: span, .. } = kind {
            for _ in 1..span {
                kinds.push(Kind::AttributionCont);
            }
        }
    }
    kinds.truncate(lines.len());
    kinds
}

fn classify_line(lines: &[&str], i: usize) -> Kind {
    let line = lines[i];
    let t = line.trim();
    if t.is_empty() {
        return Kind::Blank;
    }
    if let Some(after) = t.strip_prefix('>') {
        // `>50% packet loss`, `>= 3 users`: a comparison, not a quote (quoting clients write
        // `> ` or `>>`).
        if !after.starts_with(|c: char| c.is_ascii_digit() || c == '=') {
            return Kind::Quote;
        }
    }
    if let Some(after) = line.strip_prefix("--") {
        if after.is_empty() {
            return Kind::BareDash;
        }
        if after.trim().is_empty() {
            return Kind::SignatureDash;
        }
    }
    if t.len() > MAX_MARKER_BYTES {
        return Kind::Text;
    }
    if SEPARATOR.is_match(t) {
        return Kind::Separator;
    }
    if t.len() >= 10 && t.bytes().all(|b| b == b'_') {
        return Kind::Underscores;
    }
    if t.chars().count() <= MAX_MOBILE_CHARS && MOBILE.is_match(t) {
        return Kind::Mobile;
    }
    if let Some(kind) = header(t) {
        return kind;
    }
    match attribution_at(lines, i) {
        Some((lines, strong)) => Kind::Attribution { lines, strong },
        None => Kind::Text,
    }
}

/// Outlook's and forwarding clients' lines that start the quoted message.
static SEPARATOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^\*{0,2}-{2,}\s*(?:",
        r"original\s+message|forwarded\s+message|reply\s+message",
        r"|ursprüngliche\s+nachricht|weitergeleitete\s+nachricht",
        r"|message\s+d['’]origine|message\s+transféré",
        r"|mensaje\s+original|mensaje\s+reenviado",
        r"|messaggio\s+originale|messaggio\s+inoltrato",
        r"|oorspronkelijk\s+bericht|doorgestuurd\s+bericht",
        r"|mensagem\s+original|mensagem\s+encaminhada",
        r"|wiadomość\s+oryginalna|oryginalna\s+wiadomość|przekazana\s+wiadomość",
        r"|ursprungligt\s+meddelande|vidarebefordrat\s+meddelande",
        r"|исходное\s+сообщение|пересылаемое\s+сообщение",
        r"|原始邮件|原始郵件|转发邮件|轉寄郵件",
        r")\s*-*\*{0,2}$",
        // Apple Mail's forward line.
        r"|^(?:begin\s+forwarded\s+message|anfang\s+der\s+weitergeleiteten\s+nachricht",
        r"|début\s+du\s+message\s+(?:réexpédié|transféré)|inicio\s+del\s+mensaje\s+reenviado",
        r"|inizio\s+messaggio\s+inoltrato|begin\s+doorgestuurd\s+bericht",
        r"|início\s+da\s+mensagem\s+reencaminhada|början\s+på\s+vidarebefordrat\s+meddelande",
        r"|początek\s+przekazywanej\s+wiadomości|начало\s+переадресованного\s+сообщения",
        r")\s*[:：]$",
    ))
    .expect("separator pattern is valid")
});

/// The line a phone or Outlook mobile adds under the text (the whole trimmed line).
static MOBILE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^(?:",
        r"sent\s+(?:from|with|via|using)\s.+|get\s+outlook\s+for\s.+",
        r"|von\s+meinem\s.+\sgesendet\.?|gesendet\s+von\s+meinem\s.+|outlook\s+für\s.+\sbeziehen",
        r"|envoyé\s+(?:de|depuis|à\s+partir\s+de)\s+mon\s.+|(?:télécharger|obtenir)\s+outlook\s+pour\s.+",
        r"|enviado\s+desde\s+mi\s.+|obtener\s+outlook\s+para\s.+",
        r"|inviato\s+da(?:l\s+mio)?\s.+|scarica\s+outlook\s+per\s.+",
        r"|(?:verzonden|verstuurd)\s+(?:vanaf|met)\s.+|outlook\s+voor\s.+\sdownloaden",
        r"|enviad[oa]\s+do\s+meu\s.+|obter\s+o\s+outlook\s+para\s.+",
        r"|wysłan[eo]\s+z\s.+|pobierz\s+outlook\s+dla\s.+",
        r"|skickat\s+från\s.+|hämta\s+outlook\s+för\s.+",
        r"|отправлено\s+(?:с|из)\s.+",
        r"|(?:发自我的|發自我的|从我的|從我的).+",
        r")$",
    ))
    .expect("mobile signature pattern is valid")
});

/// The header field names of a quoted message's header block, in the languages of the clients
/// postdesk's customers use (Outlook translates them; `Enviado el`/`Enviada em` are two words).
const HEADER_FIELDS: &[(&str, Field)] = &[
    ("from", Field::From),
    ("von", Field::From),
    ("de", Field::From),
    ("da", Field::From),
    ("van", Field::From),
    ("od", Field::From),
    ("från", Field::From),
    ("fra", Field::From),
    ("от", Field::From),
    ("发件人", Field::From),
    ("寄件者", Field::From),
    ("expéditeur", Field::From),
    ("sent", Field::Date),
    ("date", Field::Date),
    ("gesendet", Field::Date),
    ("datum", Field::Date),
    ("envoyé", Field::Date),
    ("enviado", Field::Date),
    ("enviado el", Field::Date),
    ("enviado em", Field::Date),
    ("enviada em", Field::Date),
    ("fecha", Field::Date),
    ("inviato", Field::Date),
    ("data", Field::Date),
    ("verzonden", Field::Date),
    ("wysłano", Field::Date),
    ("skickat", Field::Date),
    ("sendt", Field::Date),
    ("отправлено", Field::Date),
    ("дата", Field::Date),
    ("发送时间", Field::Date),
    ("日期", Field::Date),
    ("to", Field::To),
    ("an", Field::To),
    ("à", Field::To),
    ("a", Field::To),
    ("para", Field::To),
    ("aan", Field::To),
    ("do", Field::To),
    ("till", Field::To),
    ("til", Field::To),
    ("кому", Field::To),
    ("收件人", Field::To),
    ("cc", Field::To),
    ("kopie", Field::To),
    ("копия", Field::To),
    ("抄送", Field::To),
    ("subject", Field::Subject),
    ("betreff", Field::Subject),
    ("objet", Field::Subject),
    ("asunto", Field::Subject),
    ("oggetto", Field::Subject),
    ("onderwerp", Field::Subject),
    ("assunto", Field::Subject),
    ("temat", Field::Subject),
    ("ämne", Field::Subject),
    ("emne", Field::Subject),
    ("тема", Field::Subject),
    ("主题", Field::Subject),
    ("主旨", Field::Subject),
];

/// A header field line: a known field name (French puts a space before the colon, Gmail's text
/// part writes a bold name as `*From:*`), a colon, a value.
fn header(t: &str) -> Option<Kind> {
    let (colon, c) = t
        .char_indices()
        .take(16)
        .find(|(_, c)| matches!(c, ':' | '：'))?;
    let name = t[..colon].trim_matches(|c: char| c == '*' || c.is_whitespace());
    let mut key = String::with_capacity(name.len());
    for word in name.split_whitespace() {
        if !key.is_empty() {
            key.push(' ');
        }
        key.extend(word.chars().flat_map(char::to_lowercase));
    }
    let field = HEADER_FIELDS.iter().find(|(n, _)| *n == key)?.1;
    let digit = t[colon + c.len_utf8()..]
        .bytes()
        .any(|b| b.is_ascii_digit());
    Some(Kind::Header { field, digit })
}

/// An attribution line, by its end (anchored only there, so the regex crate can match it
/// backwards from the end of the line):
/// - `… wrote:` with the verb last: English, French, Spanish, Italian, Portuguese, Polish,
///   Russian, and Apple Mail's Dutch `het volgende geschreven`;
/// - `Am … schrieb Name:`, `Op … schreef Name:`, `Den … skrev Name:`: the verb before the name;
/// - `在 … 写道：` and Gmail's `Name <a@b> 于… 写道：`;
/// - Gmail in languages that write no verb: `пн, 4 мар. 2024 г. в 10:15, Иван <ivan@x.ru>:`.
static ATTRIBUTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?:",
        r"\s(?:wrote|a\s+écrit|escribió|ha\s+scritto|escreveu|pisze",
        r"|napisał\(a\)|napisała|napisał|пишет|написал\(а\)|написала|написал",
        r"|het\s+volgende\s+geschreven)\s*",
        r"|\s(?:schrieb|schreef|skrev)\s.+",
        r"|写道\s*",
        r"|\d{1,2}:\d{2}.*<[^\s<>@]+@[^\s<>]+>\s*",
        r")[:：]$",
    ))
    .expect("attribution pattern is valid")
});

static TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{1,2}:\d{2}").expect("time pattern is valid"));

/// Whether `t` (one line or a wrapped attribution joined) is an attribution; `Some(strong)`.
fn attribution_text(t: &str) -> Option<bool> {
    if !t.ends_with([':', '：']) {
        return None;
    }
    let address = t.contains('@');
    if !address && !t.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    ATTRIBUTION.is_match(t).then(|| address || TIME.is_match(t))
}

/// Lines `i..i + span` trimmed and joined with spaces, if all are short unquoted text.
fn joined(lines: &[&str], i: usize, span: usize) -> Option<String> {
    let mut out = String::new();
    for line in lines.get(i..i.checked_add(span)?)? {
        let t = line.trim();
        if t.is_empty() || t.starts_with('>') || out.len() + t.len() >= MAX_MARKER_BYTES {
            return None;
        }
        // Gmail breaks `Name <` / `address> wrote:`: no space inside the brackets.
        if !out.is_empty() && !out.ends_with('<') {
            out.push(' ');
        }
        out.push_str(t);
    }
    Some(out)
}

/// An attribution starting at line `i`: how many lines it spans and whether it is strong.
fn attribution_at(lines: &[&str], i: usize) -> Option<(usize, bool)> {
    for span in 1..=MAX_ATTRIBUTION_LINES {
        let last = lines.get(i + span - 1)?.trim_end();
        if !last.ends_with([':', '：']) {
            continue;
        }
        // The colon closes an attribution: lines above it in the same one never end with one.
        if span > 1 && lines[i + span - 2].trim_end().ends_with([':', '：']) {
            return None;
        }
        let text = joined(lines, i, span)?;
        if let Some(strong) = attribution_text(&text) {
            // A later line that is an attribution with its own date starts it, and line `i` is
            // text above it. (`address> wrote:`, the tail of a wrapped one, has no date.)
            let later = (1..span).any(|k| {
                joined(lines, i + k, span - k).is_some_and(|t| {
                    t.bytes().any(|b| b.is_ascii_digit()) && attribution_text(&t).is_some()
                })
            });
            return (!later).then_some((span, strong));
        }
    }
    None
}

/// The next non-blank line at or after `from`, before `end`.
fn next_non_blank(kinds: &[Kind], from: usize, end: usize) -> Option<usize> {
    (from..end).find(|&j| kinds[j] != Kind::Blank)
}

/// Lines that cannot belong to the writer's text or signature: quoted history and its markers,
/// or the start of another signature.
fn is_history(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Quote
            | Kind::Attribution { .. }
            | Kind::Separator
            | Kind::Underscores
            | Kind::Header { .. }
            | Kind::SignatureDash
            | Kind::BareDash
            | Kind::Mobile
    )
}

/// Where the unquoted history (or the signature above it) starts: everything from here goes.
fn history_start(kinds: &[Kind]) -> usize {
    let n = kinds.len();
    let mut i = 0;
    while i < n {
        match kinds[i] {
            Kind::Separator | Kind::SignatureDash => return i,
            Kind::Underscores => {
                let next = next_non_blank(kinds, i + 1, n.min(i + 4));
                if next.is_some_and(|j| matches!(kinds[j], Kind::Header { .. })) {
                    return i;
                }
            }
            Kind::Mobile => {
                let next = next_non_blank(kinds, i + 1, n);
                if next.is_none_or(|j| is_history(kinds[j])) {
                    return i;
                }
            }
            Kind::BareDash => {
                let signature_lines = kinds[i + 1..]
                    .iter()
                    .take_while(|k| !is_history(**k))
                    .filter(|k| **k != Kind::Blank)
                    .take(MAX_BARE_DASH_SIGNATURE_LINES + 1)
                    .count();
                if signature_lines <= MAX_BARE_DASH_SIGNATURE_LINES {
                    return i;
                }
            }
            Kind::Header { .. } => {
                let run_end = (i..n)
                    .find(|&j| !matches!(kinds[j], Kind::Header { .. }))
                    .unwrap_or(n);
                if is_header_block(&kinds[i..run_end]) {
                    return i;
                }
                i = run_end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    n
}

/// Consecutive header lines that make a quoted message's header block (see the module doc).
fn is_header_block(run: &[Kind]) -> bool {
    let mut seen = [false; 4];
    let mut dated = false;
    for kind in run {
        if let Kind::Header { field, digit } = *kind {
            seen[field as usize] = true;
            dated |= field == Field::Date && digit;
        }
    }
    let fields = seen.iter().filter(|s| **s).count();
    seen[Field::From as usize] && (dated || fields >= 3)
}

/// Whether the attribution at `i` really starts a quote: `>` lines follow it, nothing follows
/// it, or it is strong enough to stand for unquoted history.
fn introduces_quote(kinds: &[Kind], i: usize, end: usize) -> bool {
    let Kind::Attribution { lines, strong } = kinds[i] else {
        return false;
    };
    match next_non_blank(kinds, i + lines, end) {
        None => true,
        Some(j) => kinds[j] == Kind::Quote || strong,
    }
}

/// Which lines before `end` are the writer's own.
fn kept_lines(kinds: &[Kind], end: usize) -> Vec<bool> {
    let mut keep = vec![false; kinds.len()];
    let first = (0..end).find(|&i| introduces_quote(kinds, i, end));
    let Some(a) = first else {
        for i in 0..end {
            keep[i] = kinds[i] != Kind::Quote;
        }
        return keep;
    };
    let span = match kinds[a] {
        Kind::Attribution { lines, .. } => lines,
        _ => 1,
    };
    // Answers below the quote: some unquoted line after a quoted one that follows the attribution.
    let quoted_first =
        next_non_blank(kinds, a + span, end).is_some_and(|j| kinds[j] == Kind::Quote);
    let mut seen_quote = false;
    let answered_below = quoted_first
        && kinds
            .get(a + span..end)
            .unwrap_or(&[])
            .iter()
            .any(|k| match k {
                Kind::Quote => {
                    seen_quote = true;
                    false
                }
                Kind::Blank | Kind::Attribution { .. } | Kind::AttributionCont => false,
                _ => seen_quote,
            });
    if !answered_below {
        for i in 0..a {
            keep[i] = kinds[i] != Kind::Quote;
        }
        return keep;
    }
    let mut i = 0;
    while i < end {
        match kinds[i] {
            Kind::Quote => {}
            Kind::Attribution { lines, .. } if introduces_quote(kinds, i, end) => {
                i += lines;
                continue;
            }
            _ => keep[i] = true,
        }
        i += 1;
    }
    keep
}

/// The kept lines, with the gaps the removed quotes leave closed to one blank line.
fn assemble(lines: &[&str], keep: &[bool]) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut removed = false;
    for (line, kept) in lines.iter().zip(keep) {
        if !kept {
            removed = true;
            continue;
        }
        let blank = line.trim().is_empty();
        let last_blank = out.last().is_none_or(|l| l.trim().is_empty());
        if blank {
            // Leading blanks, and a second blank where a quote between them was removed.
            if out.is_empty() || (last_blank && removed) {
                continue;
            }
        } else if removed && !last_blank {
            // Two answers that had a quote between them stay two paragraphs.
            out.push("");
        }
        out.push(line);
        removed = false;
    }
    let mut text = out.join("\n");
    text.truncate(text.trim_end().len());
    text
}

/// The HTML with Outlook's quoted message cut off and Gmail's and Thunderbird's attribution
/// blocks removed; Apple's and Gmail's blockquotes stay, for html_to_text to turn into `>` lines
/// (so answers written between them survive).
fn strip_html_history(html: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut pos = 0;
    // The last `</div` search: where it started, the first `</div` after that, and the start of
    // the last `----` between. Attribution divs left open reuse it instead of searching again.
    let mut searched: Option<(usize, Option<usize>, Option<usize>)> = None;
    while let Some(off) = html.get(pos..).and_then(|rest| rest.find('<')) {
        let start = pos + off;
        let tag = match start_tag(&html[start..]) {
            TagScan::Tag(tag) => tag,
            TagScan::Other => {
                pos = start + 1;
                continue;
            }
            TagScan::Unterminated => break,
        };
        let tag_end = start + tag.len;
        // Outlook (desktop, web, mobile) opens its quoted message with `appendonsend` (an empty
        // div before the rule) or `divRplyFwdMsg` (the header block); it never quotes with
        // blockquotes, so nothing after it is the writer's.
        if tag.id.is_some_and(|id| {
            id.eq_ignore_ascii_case("appendonsend") || id.eq_ignore_ascii_case("divRplyFwdMsg")
        }) {
            out.push_str(&html[copied..start]);
            drop_trailing_rules(&mut out);
            return Cow::Owned(out);
        }
        let attribution = tag.name.eq_ignore_ascii_case("div")
            && tag.class.is_some_and(|c| {
                c.split_ascii_whitespace()
                    .any(|c| c == "gmail_attr" || c == "moz-cite-prefix")
            });
        if attribution {
            let (close, dashes) = match searched {
                Some((from, close, dashes))
                    if from <= tag_end && close.is_none_or(|c| tag_end <= c) =>
                {
                    (close, dashes)
                }
                _ => {
                    let close = find_ignore_case(&html[tag_end..], "</div").map(|c| tag_end + c);
                    let region = &html[tag_end..close.unwrap_or(tag_end)];
                    let dashes = region.rfind("----").map(|d| tag_end + d);
                    searched = Some((tag_end, close, dashes));
                    (close, dashes)
                }
            };
            // Gmail puts a forward's `---------- Forwarded message ---------` in a gmail_attr
            // too, above history that is not in a blockquote: leave that for the text rules.
            let forward = dashes.is_some_and(|d| d >= tag_end);
            if let Some(close) = close
                && !forward
            {
                let close_end = html[close..]
                    .find('>')
                    .map_or(html.len(), |e| close + e + 1);
                out.push_str(&html[copied..start]);
                copied = close_end;
                pos = close_end;
                continue;
            }
        }
        pos = tag_end;
    }
    if copied == 0 {
        return Cow::Borrowed(html);
    }
    out.push_str(&html[copied..]);
    Cow::Owned(out)
}

/// Removes trailing whitespace and `<hr>` tags: Outlook draws a rule above its header block.
fn drop_trailing_rules(out: &mut String) {
    loop {
        out.truncate(out.trim_end().len());
        let Some(lt) = out.rfind('<') else {
            return;
        };
        let tail = &out[lt..];
        let is_rule = tail.ends_with('>')
            && tail.get(..3).is_some_and(|t| t.eq_ignore_ascii_case("<hr"))
            && tail[3..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/');
        if !is_rule {
            return;
        }
        out.truncate(lt);
    }
}

/// A start tag's name and the attributes the quote rules look at.
struct StartTag<'a> {
    name: &'a str,
    id: Option<&'a str>,
    class: Option<&'a str>,
    /// Bytes up to and including `>`.
    len: usize,
}

enum TagScan<'a> {
    Tag(StartTag<'a>),
    /// An end tag, a comment, a doctype or a `<` that is text.
    Other,
    /// The input ends inside the tag.
    Unterminated,
}

/// Reads the start tag at the beginning of `s` (which starts with `<`).
fn start_tag(s: &str) -> TagScan<'_> {
    let b = s.as_bytes();
    let name_len = b[1..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if name_len == 0 || !b[1].is_ascii_alphabetic() {
        return TagScan::Other;
    }
    let name = &s[1..1 + name_len];
    let (mut id, mut class) = (None, None);
    let mut i = 1 + name_len;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        match b.get(i) {
            None => return TagScan::Unterminated,
            Some(b'>') => break,
            _ => {}
        }
        let k0 = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let key = &s[k0..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let Some(len) = s[i + 1..].find(q as char) else {
                    return TagScan::Unterminated;
                };
                let v = &s[i + 1..i + 1 + len];
                i += len + 2;
                v
            }
            _ => {
                let v0 = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                &s[v0..i]
            }
        };
        if key.eq_ignore_ascii_case("id") {
            id = Some(value);
        } else if key.eq_ignore_ascii_case("class") {
            class = Some(value);
        }
    }
    TagScan::Tag(StartTag {
        name,
        id,
        class,
        len: i + 1,
    })
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    h.windows(n.len()).position(|w| w.eq_ignore_ascii_case(n))
}

/// The new part of an HTML reply, still HTML (SPEC: Engineers by mail, a relay "carrying only the
/// new text ... the HTML of a relay keeps the engineer's formatting"): quoted history, attribution
/// and signature blocks removed, then the command block at the top.
///
/// The same decisions as `reply_text_from_html`, made on the markup instead of on its text:
/// - Structure first: Outlook's `appendonsend` / `divRplyFwdMsg` and the older
///   `OutlookMessageHeader` cut off the rest; Gmail's `gmail_attr` and Thunderbird's
///   `moz-cite-prefix` attribution divs, Yahoo's `yahoo_quoted` history and the signature blocks
///   (`gmail_signature`, `moz-signature`) are removed whole.
/// - Then the lines a reader sees (blocks and `<br>` end a line; a quoting blockquote's lines
///   read as `>` lines) go through the text rules (`classify`, `history_start`, `kept_lines`),
///   so a `-- ` signature, `-----Original Message-----`, an Outlook `From:`/`Sent:` block under
///   its rule, and top-posted or interleaved quotes are told apart exactly as in text. The
///   markup of a dropped line goes with it; elements left empty by that go too, and elements
///   cut open are closed.
/// - Only `blockquote type="cite"` (Apple Mail, Thunderbird) and `class="gmail_quote"` are
///   quotes: a plain `<blockquote>` is the indent button of Gmail and Outlook, the engineer's
///   formatting. (The text path cannot tell them apart and drops both.)
/// - Leading lines that are blank or a command (`#` and an ASCII letter, after trimming) go,
///   then trailing blank lines and rules. A `#word` after the first real line stays.
/// - A reply that is nothing but quote keeps its quote (only the commands go), as `reply_text`
///   does: an empty relay would hide that the engineer wrote at all.
///
/// Linear in the input and never panics; the result is not sanitised (see
/// `outbound::sanitize::clean_html`).
pub fn reply_html(html: &str) -> String {
    let toks = html_tokens(html);
    let tree = HtmlTree::new(&toks);
    let n = toks.len();
    let mut dropped = vec![false; n];
    let mut cut = strip_html_structure(html, &toks, &tree, &mut dropped);
    let mut lines = html_lines(html, &toks, &dropped, cut);
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let kinds = classify(&texts);
    let end = history_start(&kinds);
    let mut keep = kept_lines(&kinds, end);
    drop_command_block(&lines, &mut keep);
    let writer_wrote = keep
        .iter()
        .zip(&lines)
        .any(|(k, line)| *k && !line.text.trim().is_empty());
    if writer_wrote {
        if let Some(line) = lines.get(end) {
            cut = cut.min(line.toks[0]);
        }
    } else {
        dropped.iter_mut().for_each(|d| *d = false);
        cut = n;
        lines = html_lines(html, &toks, &dropped, cut);
        keep = vec![true; lines.len()];
        drop_command_block(&lines, &mut keep);
    }
    for (k, line) in lines.iter().enumerate().rev() {
        if !keep[k] {
            continue;
        }
        if !line.text.trim().is_empty() {
            // Nor a line break after the last line.
            if let Some(&last) = line.toks.last()
                && matches!(&toks[last].kind, HtmlTok::Start { name, .. } if name == "br")
            {
                dropped[last] = true;
            }
            break;
        }
        keep[k] = false;
    }
    for (line, kept) in lines.iter().zip(&keep) {
        if !kept {
            line.toks.iter().for_each(|&t| dropped[t] = true);
        }
    }
    dropped[cut.min(n)..].iter_mut().for_each(|d| *d = true);
    emit_html(html, &toks, &tree, &dropped)
}

/// The commands at the top, and the blank lines before, between and after them.
fn drop_command_block(lines: &[HtmlLine], keep: &mut [bool]) {
    for (k, line) in lines.iter().enumerate() {
        if !keep[k] {
            continue;
        }
        let t = line.text.trim();
        if !t.is_empty() && !is_command_line(t) {
            break;
        }
        keep[k] = false;
    }
}

/// A command line of an engineer's reply: `#` immediately followed by an ASCII letter
/// (`#severity 4`, `#note`); `# 4` or `#42` is text.
fn is_command_line(trimmed: &str) -> bool {
    trimmed
        .strip_prefix('#')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// Elements HTML never closes.
const VOID_ELEMENTS: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];
/// Elements that start and end a line, as html_to_text writes them.
const BLOCK_ELEMENTS: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "table",
    "tr",
    "blockquote",
    "pre",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "center",
    "figure",
    "form",
    "fieldset",
    "caption",
    "dl",
    "dt",
    "dd",
    "address",
];
/// How far up the open elements an end tag looks for its start; beyond, it is stray. Keeps a
/// pile of unclosed tags followed by a pile of unmatched end tags linear.
const MAX_END_TAG_SEARCH: usize = 64;

/// What the quote rules see in a start tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuoteMark {
    /// Everything from here on is history (Outlook).
    CutHere,
    /// An attribution div: removed unless it introduces a forward.
    Attribution,
    /// History or a signature block, removed whole.
    Remove,
    /// A quoting blockquote: its lines read as `>` lines.
    Cite,
}

#[derive(Debug)]
enum HtmlTok {
    Text,
    Start {
        name: String,
        void: bool,
    },
    End {
        name: String,
    },
    /// Comments, doctypes, raw script/style/title content, an unterminated tag at the end.
    Other,
}

#[derive(Debug)]
struct Tok {
    kind: HtmlTok,
    start: usize,
    end: usize,
    mark: Option<QuoteMark>,
}

fn html_tokens(html: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut pos = 0;
    let other = |start, end| Tok {
        kind: HtmlTok::Other,
        start,
        end,
        mark: None,
    };
    while pos < html.len() {
        let rest = &html[pos..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let len = after.find("-->").map_or(rest.len(), |i| i + 7);
            toks.push(other(pos, pos + len));
            pos += len;
            continue;
        }
        let mut text_from = pos;
        if rest.starts_with('<') {
            match parse_tag(rest) {
                Parsed::Tag(tag, len) => {
                    let end = pos + len;
                    if tag.name == "!" {
                        toks.push(other(pos, end));
                    } else if tag.closing {
                        toks.push(Tok {
                            kind: HtmlTok::End { name: tag.name },
                            start: pos,
                            end,
                            mark: None,
                        });
                    } else {
                        let void = tag.self_closing || VOID_ELEMENTS.contains(&tag.name.as_str());
                        let raw =
                            !void && matches!(tag.name.as_str(), "script" | "style" | "title");
                        let close = format!("</{}", tag.name);
                        toks.push(Tok {
                            mark: quote_mark(&tag),
                            kind: HtmlTok::Start {
                                name: tag.name,
                                void,
                            },
                            start: pos,
                            end,
                        });
                        if raw {
                            let c = find_ignore_case(&html[end..], &close)
                                .map_or(html.len(), |i| end + i);
                            if c > end {
                                toks.push(other(end, c));
                            }
                            pos = c;
                            continue;
                        }
                    }
                    pos = end;
                    continue;
                }
                Parsed::NotATag => text_from = pos + 1,
                Parsed::Unterminated => {
                    toks.push(other(pos, html.len()));
                    break;
                }
            }
        }
        let end = html[text_from..]
            .find('<')
            .map_or(html.len(), |i| text_from + i);
        toks.push(Tok {
            kind: HtmlTok::Text,
            start: pos,
            end,
            mark: None,
        });
        pos = end;
    }
    toks
}

fn quote_mark(tag: &Tag) -> Option<QuoteMark> {
    let has_class = |names: &[&str]| {
        tag.attr("class").is_some_and(|c| {
            c.split_ascii_whitespace()
                .any(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)))
        })
    };
    let id = tag.attr("id").unwrap_or("");
    if id.eq_ignore_ascii_case("appendonsend")
        || id.eq_ignore_ascii_case("divRplyFwdMsg")
        || has_class(&["OutlookMessageHeader"])
    {
        Some(QuoteMark::CutHere)
    } else if tag.name == "div" && has_class(&["gmail_attr", "moz-cite-prefix"]) {
        Some(QuoteMark::Attribution)
    } else if has_class(&["gmail_signature", "moz-signature", "yahoo_quoted"]) {
        Some(QuoteMark::Remove)
    } else if tag.name == "blockquote"
        && (tag
            .attr("type")
            .is_some_and(|t| t.eq_ignore_ascii_case("cite"))
            || has_class(&["gmail_quote"]))
    {
        Some(QuoteMark::Cite)
    } else {
        None
    }
}

/// Which start tag each end tag closes, and where each element's content ends.
struct HtmlTree {
    /// For a start tag: the index after its last token (its end tag, or where an outer end tag
    /// or the input closed it). For other tokens: the next index.
    extent: Vec<usize>,
    /// For an end tag: the start tag it closes (`None`: stray).
    start_of: Vec<Option<usize>>,
}

impl HtmlTree {
    fn new(toks: &[Tok]) -> HtmlTree {
        let n = toks.len();
        let mut extent: Vec<usize> = (1..=n).collect();
        let mut start_of = vec![None; n];
        let mut open: Vec<(usize, &str)> = Vec::new();
        for (j, t) in toks.iter().enumerate() {
            match &t.kind {
                HtmlTok::Start { name, void: false } => open.push((j, name)),
                HtmlTok::End { name } => {
                    let found = open
                        .iter()
                        .rev()
                        .take(MAX_END_TAG_SEARCH)
                        .position(|(_, open_name)| open_name == name);
                    if let Some(p) = found {
                        let at = open.len() - 1 - p;
                        for &(inner, _) in &open[at + 1..] {
                            extent[inner] = j;
                        }
                        extent[open[at].0] = j + 1;
                        start_of[j] = Some(open[at].0);
                        open.truncate(at);
                    }
                }
                _ => {}
            }
        }
        for (s, _) in open {
            extent[s] = n;
        }
        HtmlTree { extent, start_of }
    }
}

/// Marks the attribution, history and signature blocks as dropped; returns the token where
/// Outlook's history starts (or the number of tokens).
fn strip_html_structure(html: &str, toks: &[Tok], tree: &HtmlTree, dropped: &mut [bool]) -> usize {
    let mut i = 0;
    while i < toks.len() {
        let end = tree.extent[i];
        match toks[i].mark {
            Some(QuoteMark::CutHere) => return i,
            Some(QuoteMark::Remove) => {
                dropped[i..end].iter_mut().for_each(|d| *d = true);
                i = end;
                continue;
            }
            Some(QuoteMark::Attribution) => {
                // Gmail puts a forward's `---------- Forwarded message ---------` in a gmail_attr
                // too, above history that is not quoted: that is left to the text rules.
                let text_end = toks.get(end - 1).map_or(html.len(), |t| t.end);
                if !html[toks[i].end.min(text_end)..text_end].contains("----") {
                    dropped[i..end].iter_mut().for_each(|d| *d = true);
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    toks.len()
}

/// One line a reader sees: its text (trimmed, whitespace folded, `> ` for quoted lines) and the
/// tokens that are its content (text, `<br>` that ends it, images, rules).
#[derive(Default)]
struct HtmlLine {
    text: String,
    toks: Vec<usize>,
    quoted: bool,
}

fn html_lines(html: &str, toks: &[Tok], dropped: &[bool], cut: usize) -> Vec<HtmlLine> {
    fn flush(lines: &mut Vec<HtmlLine>, cur: &mut HtmlLine) {
        if cur.toks.is_empty() {
            return;
        }
        let mut line = std::mem::take(cur);
        let folded = line.text.split_whitespace().collect::<Vec<_>>().join(" ");
        line.text = if line.quoted && !folded.is_empty() {
            format!("> {folded}")
        } else {
            folded
        };
        lines.push(line);
    }
    let mut lines = Vec::new();
    let mut cur = HtmlLine::default();
    // Open blockquotes: whether each quotes; how many of them do.
    let mut quotes: Vec<bool> = Vec::new();
    let mut quote_depth = 0usize;
    let mut head = 0usize;
    for (i, t) in toks.iter().enumerate().take(cut) {
        if dropped[i] {
            continue;
        }
        let quoted = quote_depth > 0;
        let add = |cur: &mut HtmlLine, text: &str| {
            if cur.toks.is_empty() {
                cur.quoted = quoted;
            }
            cur.toks.push(i);
            cur.text.push_str(text);
        };
        match &t.kind {
            HtmlTok::Start { name, void } => {
                if name == "head" {
                    head += usize::from(!void);
                    continue;
                }
                if BLOCK_ELEMENTS.contains(&name.as_str()) {
                    flush(&mut lines, &mut cur);
                }
                match name.as_str() {
                    "blockquote" if !void => {
                        let cite = t.mark == Some(QuoteMark::Cite);
                        quotes.push(cite);
                        quote_depth += usize::from(cite);
                    }
                    "br" => {
                        add(&mut cur, "");
                        flush(&mut lines, &mut cur);
                    }
                    "hr" => {
                        add(&mut cur, "");
                        flush(&mut lines, &mut cur);
                    }
                    "img" if head == 0 => add(&mut cur, "\u{fffc}"),
                    _ => {}
                }
            }
            HtmlTok::End { name } => {
                if name == "head" {
                    head = head.saturating_sub(1);
                    continue;
                }
                if BLOCK_ELEMENTS.contains(&name.as_str()) {
                    flush(&mut lines, &mut cur);
                }
                if name == "blockquote" && quotes.pop() == Some(true) {
                    quote_depth -= 1;
                }
            }
            HtmlTok::Text if head == 0 => {
                let text = decode_entities(&html[t.start..t.end]);
                // Whitespace between blocks is not a line of its own; a `&nbsp;` paragraph is
                // Outlook's blank line.
                if !cur.toks.is_empty() || !text.trim().is_empty() || text.contains('\u{a0}') {
                    add(&mut cur, &text);
                }
            }
            _ => {}
        }
    }
    flush(&mut lines, &mut cur);
    lines
}

/// The kept tokens as HTML: elements whose content was all dropped go too, and an element whose
/// end tag was cut off is closed where that tag was.
fn emit_html(html: &str, toks: &[Tok], tree: &HtmlTree, dropped: &[bool]) -> String {
    struct Open {
        start: usize,
        dropped: bool,
        content: bool,
    }
    /// Settles the open elements that end before token `j`: pruned when something in them was
    /// dropped and nothing they still hold shows.
    fn close_before(j: usize, open: &mut Vec<Open>, tree: &HtmlTree, pruned: &mut [bool]) {
        while open.last().is_some_and(|o| tree.extent[o.start] <= j) {
            let Some(o) = open.pop() else { break };
            let empty = o.dropped && !o.content;
            pruned[o.start] = empty;
            if let Some(parent) = open.last_mut() {
                parent.dropped |= o.dropped;
                parent.content |= o.content && !empty;
            }
        }
    }
    let n = toks.len();
    let mut pruned = vec![false; n];
    let mut open: Vec<Open> = Vec::new();
    for (j, t) in toks.iter().enumerate() {
        close_before(j, &mut open, tree, &mut pruned);
        let content = match &t.kind {
            HtmlTok::Start { void: false, .. } => {
                open.push(Open {
                    start: j,
                    dropped: dropped[j],
                    content: false,
                });
                continue;
            }
            HtmlTok::Start { void: true, .. } => true,
            HtmlTok::Text => !decode_entities(&html[t.start..t.end]).trim().is_empty(),
            HtmlTok::End { .. } | HtmlTok::Other => false,
        };
        if let Some(o) = open.last_mut() {
            if dropped[j] {
                o.dropped = true;
            } else {
                o.content |= content;
            }
        }
    }
    close_before(n, &mut open, tree, &mut pruned);
    let mut out = String::with_capacity(html.len());
    let mut j = 0;
    while j < n {
        let t = &toks[j];
        match &t.kind {
            HtmlTok::Start { void: false, .. } if dropped[j] || pruned[j] => {
                j = tree.extent[j].max(j + 1);
                continue;
            }
            HtmlTok::End { name } if dropped[j] && tree.start_of[j].is_some() => {
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
            _ if dropped[j] => {}
            _ => out.push_str(&html[t.start..t.end]),
        }
        j += 1;
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            (
                "gmail_en_top_posted",
                "Thanks, the restart fixed it.\n\nOn Mon, Mar 4, 2024 at 10:15 AM Acme Support <support@acme.example> wrote:\n\n> Hello Dana,\n>\n> please restart the gateway.\n",
                "Thanks, the restart fixed it.",
            ),
            (
                "gmail_en_attribution_wrapped_over_two_lines",
                "Done.\n\nOn Mon, Mar 4, 2024 at 10:15 AM Acme Support Team Europe <\nsupport-europe@acme.example> wrote:\n\n> Could you try again?\n",
                "Done.",
            ),
            (
                "gmail_en_attribution_wrapped_over_three_lines",
                "Still broken.\n\nOn Mon, Mar 4, 2024 at 10:15 AM\nBartholomew Fitzgerald-Oyelaran <bartholomew.fo@customer.example>\nwrote:\n> first try\n",
                "Still broken.",
            ),
            (
                "gmail_de_top_posted",
                "Danke, läuft wieder.\n\nAm Mo., 4. März 2024 um 10:15 Uhr schrieb Acme Support <support@acme.example>:\n\n> Hallo Herr Meier,\n> bitte neu starten.\n",
                "Danke, läuft wieder.",
            ),
            (
                "gmail_fr_top_posted_nbsp_before_colon",
                "Merci, c'est réglé.\n\nLe lun. 4 mars 2024 à 10:15, Acme Support <support@acme.example> a écrit\u{a0}:\n\n> Bonjour,\n> pouvez-vous redémarrer ?\n",
                "Merci, c'est réglé.",
            ),
            (
                "gmail_es_top_posted",
                "Gracias, ya funciona.\n\nEl lun, 4 mar 2024 a las 10:15, Acme Support (<support@acme.example>) escribió:\n\n> Hola Lucía,\n> reinicie el equipo.\n",
                "Gracias, ya funciona.",
            ),
            (
                "gmail_it_top_posted",
                "Grazie, risolto.\n\nIl giorno lun 4 mar 2024 alle ore 10:15 Acme Support <support@acme.example> ha scritto:\n\n> Buongiorno,\n> riavvii il server.\n",
                "Grazie, risolto.",
            ),
            (
                "gmail_nl_top_posted",
                "Bedankt, het werkt.\n\nOp ma 4 mrt 2024 om 10:15 schreef Acme Support <support@acme.example>:\n\n> Beste Joost,\n> herstart de router.\n",
                "Bedankt, het werkt.",
            ),
            (
                "gmail_pt_top_posted",
                "Obrigado, resolvido.\n\nEm seg., 4 de mar. de 2024 às 10:15, Acme Support <support@acme.example> escreveu:\n\n> Olá Rafael,\n> reinicie o roteador.\n",
                "Obrigado, resolvido.",
            ),
            (
                "gmail_pl_top_posted",
                "Dziękuję, działa.\n\npon., 4 mar 2024 o 10:15 Acme Support <support@acme.example> napisał(a):\n\n> Dzień dobry,\n> proszę zrestartować.\n",
                "Dziękuję, działa.",
            ),
            (
                "thunderbird_pl_w_dniu_pisze",
                "Nadal nie działa.\n\nW dniu 4.03.2024 o 10:15, Acme Support pisze:\n> Proszę spróbować ponownie.\n",
                "Nadal nie działa.",
            ),
            (
                "gmail_sv_top_posted",
                "Tack, nu fungerar det.\n\nmån 4 mars 2024 kl 10:15 skrev Acme Support <support@acme.example>:\n\n> Hej Elin,\n> starta om routern.\n",
                "Tack, nu fungerar det.",
            ),
            (
                "apple_mail_sv_den_skrev",
                "Tack!\n\nDen 4 mars 2024 kl. 10:15 skrev Acme Support <support@acme.example>:\n\n> Hej,\n> prova igen.\n",
                "Tack!",
            ),
            (
                "thunderbird_ru_pishet",
                "Спасибо, заработало.\n\n04.03.2024 10:15, Acme Support пишет:\n> Здравствуйте,\n> перезагрузите роутер.\n",
                "Спасибо, заработало.",
            ),
            (
                "gmail_ru_date_and_address",
                "Спасибо, заработало.\n\nпн, 4 мар. 2024 г. в 10:15, Acme Support <support@acme.example>:\n\n> Здравствуйте!\n",
                "Спасибо, заработало.",
            ),
            (
                "gmail_ru_wrapped_date_and_address",
                "Спасибо\nпн, 4 мар. 2024 г. в 10:15, Служба поддержки Acme <\nsupport@acme.example>:\n> Здравствуйте!\n",
                "Спасибо",
            ),
            (
                "gmail_zh_yu_xiedao",
                "谢谢，已经好了。\n\n张伟 <zhangwei@acme.example> 于2024年3月4日周一 10:15写道：\n\n> 您好，请重启路由器。\n",
                "谢谢，已经好了。",
            ),
            (
                "apple_mail_zh_zai_xiedao",
                "收到，谢谢。\n\n在 2024年3月4日，10:15，Acme Support <support@acme.example> 写道：\n\n> 您好！\n",
                "收到，谢谢。",
            ),
            (
                "chinese_qq_original_message",
                "好的，明天再试。\n\n------------------ 原始邮件 ------------------\n发件人: \"Acme Support\"<support@acme.example>;\n发送时间: 2024年3月4日(星期一) 上午10:15\n收件人: \"王芳\"<wangfang@customer.example>;\n主题: 回复：[#1234] 无法登录\n\n您好，请重启。\n",
                "好的，明天再试。",
            ),
            (
                "outlook_desktop_en_header_block",
                "The export works now.\n\nRegards,\nPriya\n\nFrom: Acme Support <support@acme.example>\nSent: Monday, March 4, 2024 10:15 AM\nTo: Priya Raman <priya@customer.example>\nSubject: RE: [#1234] Export fails\n\nHello Priya,\nplease retry.\n",
                "The export works now.\n\nRegards,\nPriya",
            ),
            (
                "outlook_desktop_en_header_block_with_cc",
                "Adding my colleague.\n\nFrom: Acme Support <support@acme.example>\nSent: Monday, March 4, 2024 10:15 AM\nTo: Priya Raman <priya@customer.example>\nCc: Tom Berg <tom@customer.example>\nSubject: RE: [#1234] Export fails\n\nHello Priya,\n",
                "Adding my colleague.",
            ),
            (
                "outlook_desktop_en_underscore_line",
                "Works, thanks.\n\n________________________________\nFrom: Acme Support <support@acme.example>\nSent: Monday, March 4, 2024 10:15\nTo: Priya Raman\nSubject: [#1234] Export fails\n\nHello,\n",
                "Works, thanks.",
            ),
            (
                "outlook_desktop_en_original_message",
                "Please close the ticket.\n\n-----Original Message-----\nFrom: Acme Support [mailto:support@acme.example]\nSent: Monday, March 4, 2024 10:15 AM\nTo: Priya Raman\nSubject: [#1234] Export fails\n\nHello,\n",
                "Please close the ticket.",
            ),
            (
                "outlook_desktop_de_header_block",
                "Vielen Dank, das hat geholfen.\n\nMit freundlichen Grüßen\nJonas Weber\n\nVon: Acme Support <support@acme.example>\nGesendet: Montag, 4. März 2024 10:15\nAn: Jonas Weber <jonas@kunde.example>\nBetreff: AW: [#1234] Drucker offline\n\nHallo Herr Weber,\n",
                "Vielen Dank, das hat geholfen.\n\nMit freundlichen Grüßen\nJonas Weber",
            ),
            (
                "outlook_desktop_de_ursprungliche_nachricht",
                "Bitte schließen.\n\n-----Ursprüngliche Nachricht-----\nVon: Acme Support <support@acme.example>\nGesendet: Montag, 4. März 2024 10:15\n",
                "Bitte schließen.",
            ),
            (
                "outlook_desktop_fr_header_block",
                "C'est bon pour nous.\n\nDe : Acme Support <support@acme.example>\nEnvoyé : lundi 4 mars 2024 10:15\nÀ : Claire Martin <claire@client.example>\nObjet : RE: [#1234] Imprimante\n\nBonjour,\n",
                "C'est bon pour nous.",
            ),
            (
                "outlook_desktop_fr_message_d_origine",
                "Merci.\n\n-----Message d'origine-----\nDe : Acme Support\nEnvoyé : lundi 4 mars 2024 10:15\n",
                "Merci.",
            ),
            (
                "outlook_desktop_es_header_block",
                "Ya está resuelto.\n\nDe: Acme Support <support@acme.example>\nEnviado el: lunes, 4 de marzo de 2024 10:15\nPara: Lucía Gómez <lucia@cliente.example>\nAsunto: RE: [#1234] Impresora\n\nHola,\n",
                "Ya está resuelto.",
            ),
            (
                "outlook_desktop_it_header_block",
                "Tutto a posto.\n\nDa: Acme Support <support@acme.example>\nInviato: lunedì 4 marzo 2024 10:15\nA: Marco Bianchi <marco@cliente.example>\nOggetto: R: [#1234] Stampante\n\nBuongiorno,\n",
                "Tutto a posto.",
            ),
            (
                "outlook_desktop_nl_header_block",
                "Opgelost, dank je.\n\nVan: Acme Support <support@acme.example>\nVerzonden: maandag 4 maart 2024 10:15\nAan: Joost Bakker <joost@klant.example>\nOnderwerp: RE: [#1234] Printer\n\nBeste Joost,\n",
                "Opgelost, dank je.",
            ),
            (
                "outlook_desktop_pt_header_block",
                "Funcionou, obrigado.\n\nDe: Acme Support <support@acme.example>\nEnviada em: segunda-feira, 4 de março de 2024 10:15\nPara: Rafael Souza <rafael@cliente.example>\nAssunto: RE: [#1234] Impressora\n\nOlá,\n",
                "Funcionou, obrigado.",
            ),
            (
                "outlook_desktop_pl_header_block",
                "Działa, dziękuję.\n\nOd: Acme Support <support@acme.example>\nWysłano: poniedziałek, 4 marca 2024 10:15\nDo: Anna Nowak <anna@klient.example>\nTemat: RE: [#1234] Drukarka\n\nDzień dobry,\n",
                "Działa, dziękuję.",
            ),
            (
                "outlook_desktop_sv_header_block",
                "Det fungerar nu.\n\nFrån: Acme Support <support@acme.example>\nSkickat: den 4 mars 2024 10:15\nTill: Elin Lund <elin@kund.example>\nÄmne: SV: [#1234] Skrivare\n\nHej,\n",
                "Det fungerar nu.",
            ),
            (
                "outlook_desktop_ru_header_block",
                "Всё работает.\n\nОт: Acme Support <support@acme.example>\nОтправлено: 4 марта 2024 г. 10:15\nКому: Иван Петров <ivan@client.example>\nТема: RE: [#1234] Принтер\n\nЗдравствуйте,\n",
                "Всё работает.",
            ),
            (
                "outlook_desktop_zh_header_block",
                "已解决。\n\n发件人: Acme Support <support@acme.example>\n发送时间: 2024年3月4日 10:15\n收件人: 王芳 <wangfang@customer.example>\n主题: 答复: [#1234] 打印机\n\n您好，\n",
                "已解决。",
            ),
            (
                "outlook_mac_en_from_date_block",
                "Confirmed.\n\nFrom: Acme Support <support@acme.example>\nDate: Monday, 4 March 2024 at 10:15\nTo: Priya Raman <priya@customer.example>\nSubject: Re: [#1234] Export fails\n\nHello,\n",
                "Confirmed.",
            ),
            (
                "outlook_ios_get_outlook",
                "Yes, go ahead.\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n________________________________\nFrom: Acme Support <support@acme.example>\nSent: Monday, March 4, 2024 10:15:02 AM\nTo: Priya Raman <priya@customer.example>\nSubject: Re: [#1234] Export fails\n\nHello,\n",
                "Yes, go ahead.",
            ),
            (
                "outlook_android_get_outlook",
                "Will test tonight.\n\nGet Outlook for Android\n\nFrom: Acme Support <support@acme.example>\nSent: Monday, March 4, 2024 10:15:02 AM\nTo: Priya Raman <priya@customer.example>\nSubject: Re: [#1234] Export fails\n",
                "Will test tonight.",
            ),
            (
                "apple_mail_en_top_posted",
                "Perfect, thank you.\n\n> On 4 Mar 2024, at 10:15, Acme Support <support@acme.example> wrote:\n>\n> Hello Dana,\n",
                "Perfect, thank you.",
            ),
            (
                "apple_mail_en_unquoted_attribution",
                "Perfect, thank you.\n\nOn Mar 4, 2024, at 10:15, Acme Support <support@acme.example> wrote:\n\n> Hello Dana,\n",
                "Perfect, thank you.",
            ),
            (
                "apple_mail_fr",
                "Parfait, merci.\n\nLe 4 mars 2024 à 10:15, Acme Support <support@acme.example> a écrit :\n\n> Bonjour,\n",
                "Parfait, merci.",
            ),
            (
                "apple_mail_de",
                "Passt, danke.\n\nAm 04.03.2024 um 10:15 schrieb Acme Support <support@acme.example>:\n\n> Hallo,\n",
                "Passt, danke.",
            ),
            (
                "apple_mail_nl_het_volgende_geschreven",
                "Top, bedankt.\n\nOp 4 mrt. 2024 om 10:15 heeft Acme Support <support@acme.example> het volgende geschreven:\n\n> Beste Joost,\n",
                "Top, bedankt.",
            ),
            (
                "iphone_en_signature",
                "On my way to the office, will check.\n\nSent from my iPhone\n\n> On 4 Mar 2024, at 10:15, Acme Support <support@acme.example> wrote:\n>\n> Hello,\n",
                "On my way to the office, will check.",
            ),
            (
                "iphone_de_signature",
                "Passt.\n\nVon meinem iPhone gesendet\n\n> Am 04.03.2024 um 10:15 schrieb Acme Support <support@acme.example>:\n",
                "Passt.",
            ),
            (
                "iphone_fr_signature",
                "D'accord.\n\nEnvoyé de mon iPhone\n\n> Le 4 mars 2024 à 10:15, Acme Support <support@acme.example> a écrit :\n",
                "D'accord.",
            ),
            (
                "iphone_es_signature",
                "De acuerdo.\n\nEnviado desde mi iPhone\n\n> El 4 mar 2024, a las 10:15, Acme Support <support@acme.example> escribió:\n",
                "De acuerdo.",
            ),
            (
                "iphone_it_signature",
                "Va bene.\n\nInviato da iPhone\n\n> Il giorno 4 mar 2024, alle ore 10:15, Acme Support <support@acme.example> ha scritto:\n",
                "Va bene.",
            ),
            (
                "iphone_nl_signature",
                "Prima.\n\nVerzonden vanaf mijn iPhone\n\n> Op 4 mrt. 2024 om 10:15 heeft Acme Support <support@acme.example> het volgende geschreven:\n",
                "Prima.",
            ),
            (
                "iphone_pt_signature",
                "Combinado.\n\nEnviado do meu iPhone\n\n> Em 4 de mar. de 2024, à(s) 10:15, Acme Support <support@acme.example> escreveu:\n",
                "Combinado.",
            ),
            (
                "iphone_pl_signature",
                "Dobrze.\n\nWysłane z iPhone'a\n\n> Wiadomość napisana przez Acme Support <support@acme.example> w dniu 04.03.2024, o godz. 10:15:\n",
                "Dobrze.",
            ),
            (
                "iphone_sv_signature",
                "Okej.\n\nSkickat från min iPhone\n\n> 4 mars 2024 kl. 10:15 skrev Acme Support <support@acme.example>:\n",
                "Okej.",
            ),
            (
                "iphone_ru_signature",
                "Хорошо.\n\nОтправлено с iPhone\n\n> 4 марта 2024 г., в 10:15, Acme Support <support@acme.example> написал(а):\n",
                "Хорошо.",
            ),
            (
                "iphone_zh_signature",
                "好的。\n\n发自我的iPhone\n\n> 在 2024年3月4日，10:15，Acme Support <support@acme.example> 写道：\n",
                "好的。",
            ),
            (
                "samsung_en_original_message",
                "Thanks!\n\nSent from my Samsung Galaxy smartphone.\n\n-------- Original message --------\nFrom: Acme Support <support@acme.example>\nDate: 04/03/2024 10:15 (GMT+01:00)\nTo: dana@customer.example\nSubject: [#1234] Login\n\nHello,\n",
                "Thanks!",
            ),
            (
                "yahoo_en_unquoted_history",
                "Thanks, all good now.\n\nOn Monday, March 4, 2024, 10:15:00 AM GMT+1, Acme Support <support@acme.example> wrote:\n\nHello Dana,\nplease restart the gateway.\n",
                "Thanks, all good now.",
            ),
            (
                "android_gmail_en_top_posted",
                "Ok\n\nOn Mon, 4 Mar 2024, 10:15 Acme Support, <support@acme.example> wrote:\n\n> Hello,\n",
                "Ok",
            ),
            (
                "thunderbird_en_bottom_posted",
                "On 04/03/2024 10:15, Acme Support wrote:\n> Could you send the log file?\n\nAttached, see line 40.\n\n-- \nDana Novak\nCustomer Inc.\n",
                "Attached, see line 40.",
            ),
            (
                "thunderbird_de_top_posted",
                "Hier das Log.\n\nAm 04.03.24 um 10:15 schrieb Acme Support:\n> Bitte senden Sie das Log.\n",
                "Hier das Log.",
            ),
            (
                "thunderbird_en_forwarded",
                "FYI, this is the error our finance team gets.\n\n-------- Forwarded Message --------\nSubject: Invoice export failed\nDate: Mon, 4 Mar 2024 10:15:00 +0100\nFrom: Finance <finance@customer.example>\nTo: Dana Novak <dana@customer.example>\n\nExport failed with code 7.\n",
                "FYI, this is the error our finance team gets.",
            ),
            (
                "gmail_en_forwarded",
                "See below.\n\n---------- Forwarded message ---------\nFrom: Finance <finance@customer.example>\nDate: Mon, Mar 4, 2024 at 10:15 AM\nSubject: Invoice export failed\nTo: Dana Novak <dana@customer.example>\n\nExport failed.\n",
                "See below.",
            ),
            (
                "gmail_en_forwarded_bold_headers",
                "See below.\n\n*From:* Finance <finance@customer.example>\n*Date:* Mon, Mar 4, 2024 at 10:15 AM\n*Subject:* Invoice export failed\n",
                "See below.",
            ),
            (
                "apple_mail_en_begin_forwarded",
                "Look at this one.\n\nBegin forwarded message:\n\nFrom: Finance <finance@customer.example>\nSubject: Invoice export failed\nDate: 4 March 2024 at 10:15:00 CET\nTo: Dana Novak <dana@customer.example>\n\nExport failed.\n",
                "Look at this one.",
            ),
            (
                "interleaved_en_answers_between_quotes",
                "On Mon, Mar 4, 2024 at 10:15 AM Acme Support <support@acme.example> wrote:\n> Which version do you run?\n\n4.2.1\n\n> Does it fail every time?\n\nOnly after midnight.\n",
                "4.2.1\n\nOnly after midnight.",
            ),
            (
                "interleaved_en_answers_directly_under_quotes",
                "On 04/03/2024 10:15, Acme Support wrote:\n> Which version?\n4.2.1\n> Every time?\nOnly after midnight.\n",
                "4.2.1\n\nOnly after midnight.",
            ),
            (
                "interleaved_with_intro_above_attribution",
                "Answers inline.\n\nOn Mon, Mar 4, 2024 at 10:15 AM Acme Support <support@acme.example> wrote:\n> Which version?\n\n4.2.1\n\nDana\n",
                "Answers inline.\n\n4.2.1\n\nDana",
            ),
            (
                "quote_without_attribution_bottom_posted",
                "> Which version do you run?\n\n4.2.1, on Windows.\n",
                "4.2.1, on Windows.",
            ),
            (
                "nested_quotes_all_dropped",
                "Agreed.\n\n> > older text\n> newer text\n>> more\n",
                "Agreed.",
            ),
            (
                "reply_only_quote_keeps_text",
                "On Mon, Mar 4, 2024 at 10:15 AM Acme Support <support@acme.example> wrote:\n> Hello\n\n",
                "On Mon, Mar 4, 2024 at 10:15 AM Acme Support <support@acme.example> wrote:\n> Hello",
            ),
            (
                "forward_without_comment_keeps_text",
                "---------- Forwarded message ---------\nFrom: Finance <finance@customer.example>\nDate: Mon, Mar 4, 2024 at 10:15 AM\n\nExport failed.\n",
                "---------- Forwarded message ---------\nFrom: Finance <finance@customer.example>\nDate: Mon, Mar 4, 2024 at 10:15 AM\n\nExport failed.",
            ),
            (
                "signature_dash_space_cut",
                "The fix works.\n\n-- \nDana Novak\nHead of IT, Customer Inc.\n+1 555 0100\n",
                "The fix works.",
            ),
            (
                "signature_bare_double_dash_short_block_cut",
                "The fix works.\n--\nDana Novak\nCustomer Inc.\n",
                "The fix works.",
            ),
            (
                "signature_bare_double_dash_above_quote_cut",
                "Works.\n--\nDana\n\nOn 04/03/2024 10:15, Acme Support wrote:\n> Try again\n",
                "Works.",
            ),
            (
                "double_dash_before_long_text_is_kept",
                "Steps so far:\n--\n1. restarted\n2. cleared cache\n3. reinstalled\n4. rebooted\n5. new profile\n6. other PC\n7. still fails\n",
                "Steps so far:\n--\n1. restarted\n2. cleared cache\n3. reinstalled\n4. rebooted\n5. new profile\n6. other PC\n7. still fails",
            ),
            (
                "prose_with_wrote_word_is_kept",
                "Yesterday I wrote to your billing team and nobody answered.\nAs the vendor wrote: the patch is in 2.4.\nI wrote the config exactly as your guide says:\nport 8443\n",
                "Yesterday I wrote to your billing team and nobody answered.\nAs the vendor wrote: the patch is in 2.4.\nI wrote the config exactly as your guide says:\nport 8443",
            ),
            (
                "prose_line_ending_wrote_without_date_is_kept",
                "On second thought, here is what Bob wrote:\n\nthe build fails on step three.\n",
                "On second thought, here is what Bob wrote:\n\nthe build fails on step three.",
            ),
            (
                "prose_wrote_with_date_but_no_quote_is_kept",
                "On 4 March our auditor wrote:\nall invoices must carry the VAT number.\n",
                "On 4 March our auditor wrote:\nall invoices must carry the VAT number.",
            ),
            (
                "prose_line_starting_from_is_kept",
                "From: the logs it looks like the job never starts.\nSubject to your approval we will retry tonight.\n",
                "From: the logs it looks like the job never starts.\nSubject to your approval we will retry tonight.",
            ),
            (
                "prose_from_to_mapping_is_kept",
                "Please change the forwarding:\nFrom: old-desk@customer.example\nTo: new-desk@customer.example\n\nThanks\n",
                "Please change the forwarding:\nFrom: old-desk@customer.example\nTo: new-desk@customer.example\n\nThanks",
            ),
            (
                "prose_sent_from_my_laptop_followed_by_text_is_kept",
                "Sent from my laptop at home, the VPN works there.\nAt the office it does not.\n",
                "Sent from my laptop at home, the VPN works there.\nAt the office it does not.",
            ),
            (
                "prose_greater_than_number_is_kept",
                ">50% packet loss since Monday.\n>= 3 sites affected.\n",
                ">50% packet loss since Monday.\n>= 3 sites affected.",
            ),
            (
                "underscore_line_without_headers_is_kept",
                "Before\n__________\nAfter\n",
                "Before\n__________\nAfter",
            ),
            (
                "crlf_normalised",
                "Line one\r\nLine two\r\n\r\nOn Mon, Mar 4, 2024 at 10:15 AM Acme Support <support@acme.example> wrote:\r\n> quoted\r\n",
                "Line one\nLine two",
            ),
            (
                "trailing_blank_lines_trimmed",
                "\n\nJust this.   \n\n  \n\n",
                "Just this.",
            ),
            (
                "user_blank_lines_kept_inside_text",
                "First.\n\n\nSecond.\n",
                "First.\n\n\nSecond.",
            ),
            ("empty_input", "", ""),
        ];
        assert!(cases.len() >= 45, "{} cases", cases.len());
        for (name, input, want) in cases {
            assert_eq!(reply_text(input), *want, "{name}");
        }
    }

    #[test]
    fn reply_text_from_html_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            (
                "gmail_html_gmail_quote",
                concat!(
                    "<div dir=\"ltr\">Thanks, the restart fixed it.</div><br>",
                    "<div class=\"gmail_quote gmail_quote_container\"><div dir=\"ltr\" class=\"gmail_attr\">",
                    "On Mon, Mar 4, 2024 at 10:15 AM Acme Support &lt;<a href=\"mailto:support@acme.example\">support@acme.example</a>&gt; wrote:<br></div>",
                    "<blockquote class=\"gmail_quote\" style=\"margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex\">",
                    "<div dir=\"ltr\">Hello Dana,<br>please restart the gateway.</div></blockquote></div>",
                ),
                "Thanks, the restart fixed it.",
            ),
            (
                "gmail_html_attribution_in_unknown_language",
                concat!(
                    "<div dir=\"ltr\">감사합니다</div><br><div class=\"gmail_quote\">",
                    "<div dir=\"ltr\" class=\"gmail_attr\">2024년 3월 4일 (월) 오전 10:15, Acme Support &lt;support@acme.example&gt;님이 작성:<br></div>",
                    "<blockquote class=\"gmail_quote\">안녕하세요</blockquote></div>",
                ),
                "감사합니다",
            ),
            (
                "gmail_html_forward",
                concat!(
                    "<div dir=\"ltr\">See below.<br><br><div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">",
                    "---------- Forwarded message ---------<br>From: <strong>Finance</strong> &lt;finance@customer.example&gt;<br>",
                    "Date: Mon, Mar 4, 2024 at 10:15 AM<br>Subject: Export failed<br></div><br><br>",
                    "<div dir=\"ltr\">Export failed with code 7.</div></div></div>",
                ),
                "See below.",
            ),
            (
                "outlook_web_html_div_rply_fwd_msg",
                concat!(
                    "<html><head><style>p{margin:0}</style></head><body><div dir=\"ltr\">",
                    "<div style=\"font-family:Calibri\">Yes, please go ahead.</div>",
                    "<div id=\"appendonsend\"></div><hr style=\"display:inline-block;width:98%\" tabindex=\"-1\">",
                    "<div id=\"divRplyFwdMsg\" dir=\"ltr\"><font face=\"Calibri, sans-serif\"><b>From:</b> Acme Support &lt;support@acme.example&gt;<br>",
                    "<b>Sent:</b> Monday, March 4, 2024 10:15 AM<br><b>To:</b> Priya<br><b>Subject:</b> [#1234] Export</font><div>&nbsp;</div></div>",
                    "<div>Hello Priya, may we restart the server?</div></div></body></html>",
                ),
                "Yes, please go ahead.",
            ),
            (
                "outlook_html_div_rply_fwd_msg_without_appendonsend",
                concat!(
                    "<p>Approved.</p><hr style=\"display:inline-block\">",
                    "<div id=\"divRplyFwdMsg\"><b>From:</b> Acme Support<br><b>Sent:</b> Monday, March 4, 2024 10:15 AM</div>",
                    "<div>Hello Priya</div>",
                ),
                "Approved.",
            ),
            (
                "outlook_desktop_html_header_paragraph",
                concat!(
                    "<div class=\"WordSection1\"><p class=\"MsoNormal\">Works now.<o:p></o:p></p>",
                    "<div style=\"border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm\">",
                    "<p class=\"MsoNormal\"><b>Von:</b> Acme Support &lt;support@acme.example&gt; <br>",
                    "<b>Gesendet:</b> Montag, 4. März 2024 10:15<br><b>An:</b> Jonas Weber<br><b>Betreff:</b> AW: Drucker<o:p></o:p></p></div>",
                    "<p class=\"MsoNormal\">Hallo Herr Weber,<o:p></o:p></p></div>",
                ),
                "Works now.",
            ),
            (
                "apple_mail_html_blockquote_type_cite",
                concat!(
                    "<html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=utf-8\"></head>",
                    "<body dir=\"auto\">Works now, thanks!<br><br><div dir=\"ltr\">Sent from my iPhone</div>",
                    "<div dir=\"ltr\"><br><blockquote type=\"cite\">On 4 Mar 2024, at 10:15, Acme Support &lt;support@acme.example&gt; wrote:<br><br></blockquote></div>",
                    "<blockquote type=\"cite\"><div dir=\"ltr\">Hello Dana,<br>please restart.</div></blockquote></body></html>",
                ),
                "Works now, thanks!",
            ),
            (
                "apple_mail_html_answers_between_blockquotes",
                concat!(
                    "<div>On 4 Mar 2024, at 10:15, Acme Support &lt;support@acme.example&gt; wrote:</div>",
                    "<blockquote type=\"cite\"><div>Which version?</div></blockquote><div>4.2.1</div>",
                    "<blockquote type=\"cite\"><div>Every time?</div></blockquote><div>Only after midnight.</div>",
                ),
                "4.2.1\n\nOnly after midnight.",
            ),
            (
                "thunderbird_html_moz_cite_prefix",
                concat!(
                    "<html><body><p>Here is the log.</p><div class=\"moz-cite-prefix\">Am 04.03.24 um 10:15 schrieb Acme Support:<br></div>",
                    "<blockquote type=\"cite\" cite=\"mid:abc@acme.example\">Bitte senden Sie das Log.</blockquote></body></html>",
                ),
                "Here is the log.",
            ),
            (
                "html_only_quote_keeps_text",
                "<blockquote type=\"cite\">Hello</blockquote>",
                "> Hello",
            ),
        ];
        for (name, html, want) in cases {
            assert_eq!(reply_text_from_html(html), *want, "{name}");
        }
    }

    #[test]
    fn reply_html_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            (
                "gmail_top_post_drops_gmail_quote_and_attribution",
                concat!(
                    "<div dir=\"ltr\"><div>Hi Jane,</div><div><br></div><div>the fix is <b>deployed</b>.</div></div><br>",
                    "<div class=\"gmail_quote gmail_quote_container\"><div dir=\"ltr\" class=\"gmail_attr\">",
                    "On Mon, Mar 4, 2024 at 10:15 AM Jane Doe &lt;<a href=\"mailto:jane@acme.test\">jane@acme.test</a>&gt; wrote:<br></div>",
                    "<blockquote class=\"gmail_quote\" style=\"margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex\">",
                    "<div dir=\"ltr\">The portal is down.</div></blockquote></div>",
                ),
                "<div dir=\"ltr\"><div>Hi Jane,</div><div><br></div><div>the fix is <b>deployed</b>.</div></div>",
            ),
            (
                "gmail_command_block_goes_with_blank_lines",
                concat!(
                    "<div dir=\"ltr\"><div>#severity 4</div><div>#status customer_pending</div><div><br></div><div>Hi Jane,</div>",
                    "<div>please try again.</div></div><br><div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">",
                    "On Mon, Mar 4, 2024 at 10:15 AM Jane Doe &lt;jane@acme.test&gt; wrote:<br></div>",
                    "<blockquote class=\"gmail_quote\"><div>Down again.</div></blockquote></div>",
                ),
                "<div dir=\"ltr\"><div>Hi Jane,</div><div>please try again.</div></div>",
            ),
            (
                "gmail_signature_block_goes",
                concat!(
                    "<div dir=\"ltr\">Restarted it.<br clear=\"all\"><div><br></div><span class=\"gmail_signature_prefix\">-- </span><br>",
                    "<div dir=\"ltr\" class=\"gmail_signature\" data-smartmail=\"gmail_signature\">Bob<br>Acme Support</div></div>",
                ),
                "<div dir=\"ltr\">Restarted it.</div>",
            ),
            (
                "gmail_interleaved_answers_stay",
                concat!(
                    "<div dir=\"ltr\">See below.</div><br><div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">",
                    "On Mon, Mar 4, 2024 at 10:15 AM Jane &lt;jane@acme.test&gt; wrote:<br></div>",
                    "<blockquote class=\"gmail_quote\">Which version?</blockquote><div>4.2, <i>released</i> today.</div>",
                    "<blockquote class=\"gmail_quote\">Thanks</blockquote></div>",
                ),
                "<div dir=\"ltr\">See below.</div><br><div class=\"gmail_quote\"><div>4.2, <i>released</i> today.</div></div>",
            ),
            (
                "outlook_web_appendonsend_cuts_the_rest",
                concat!(
                    "<html><head><style type=\"text/css\" style=\"display:none;\"> P {margin-top:0;margin-bottom:0;} </style></head>",
                    "<body dir=\"ltr\"><div class=\"elementToProof\" style=\"font-family: Aptos; font-size: 12pt;\">#solved</div>",
                    "<div class=\"elementToProof\" style=\"font-family: Aptos; font-size: 12pt;\">Closing this one, thanks!</div>",
                    "<div id=\"appendonsend\"></div><hr style=\"display:inline-block;width:98%\" tabindex=\"-1\">",
                    "<div id=\"divRplyFwdMsg\" dir=\"ltr\"><font face=\"Calibri, sans-serif\" style=\"font-size:11pt\" color=\"#000000\">",
                    "<b>From:</b> Jane Doe &lt;jane@acme.test&gt;<br><b>Sent:</b> Monday, March 4, 2024 10:15 AM</font></div>",
                    "<div>It works now.</div></body></html>",
                ),
                concat!(
                    "<html><head><style type=\"text/css\" style=\"display:none;\"> P {margin-top:0;margin-bottom:0;} </style></head>",
                    "<body dir=\"ltr\">",
                    "<div class=\"elementToProof\" style=\"font-family: Aptos; font-size: 12pt;\">Closing this one, thanks!</div>",
                    "</body></html>",
                ),
            ),
            (
                "outlook_desktop_rule_and_header_block_cut_the_rest",
                concat!(
                    "<div class=\"WordSection1\"><p class=\"MsoNormal\">Hi Jane,<o:p></o:p></p><p class=\"MsoNormal\"><o:p>&nbsp;</o:p></p>",
                    "<p class=\"MsoNormal\">The patch is attached.<o:p></o:p></p><p class=\"MsoNormal\"><o:p>&nbsp;</o:p></p>",
                    "<div><div style=\"border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in\">",
                    "<p class=\"MsoNormal\"><b>From:</b> Jane Doe &lt;jane@acme.test&gt; <br><b>Sent:</b> Monday, March 4, 2024 10:15 AM<br>",
                    "<b>To:</b> Support &lt;support@example.com&gt;<br><b>Subject:</b> [#7] Portal down<o:p></o:p></p></div></div>",
                    "<p class=\"MsoNormal\">The portal is down.<o:p></o:p></p></div>",
                ),
                concat!(
                    "<div class=\"WordSection1\"><p class=\"MsoNormal\">Hi Jane,<o:p></o:p></p><p class=\"MsoNormal\"><o:p>&nbsp;</o:p></p>",
                    "<p class=\"MsoNormal\">The patch is attached.<o:p></o:p></p></div>",
                ),
            ),
            (
                "outlook_message_header_div_cuts_the_rest",
                "<div>#assign me</div><div>On it.</div><div class=\"OutlookMessageHeader\"><hr>From: Jane</div><div>old</div>",
                "<div>On it.</div>",
            ),
            (
                "thunderbird_cite_prefix_blockquote_and_moz_signature_go",
                concat!(
                    "<html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=UTF-8\"></head><body>",
                    "<p>#severity 2<br>#status in_progress</p><p>Hi Jane,</p><p>we are on it.</p>",
                    "<div class=\"moz-signature\">-- <br>Bob, Acme Support</div>",
                    "<div class=\"moz-cite-prefix\">On 04.03.24 10:15, Jane Doe wrote:<br></div>",
                    "<blockquote type=\"cite\" cite=\"mid:abc@acme.test\"><p>The portal is down.</p></blockquote></body></html>",
                ),
                concat!(
                    "<html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=UTF-8\"></head><body>",
                    "<p>Hi Jane,</p><p>we are on it.</p></body></html>",
                ),
            ),
            (
                "thunderbird_without_classes_attribution_and_quote_go_by_text_rules",
                "<p>Fixed in 4.2.</p><p>On 04.03.24 10:15, Jane Doe wrote:</p><blockquote type=\"cite\">Broken</blockquote>",
                "<p>Fixed in 4.2.</p>",
            ),
            (
                "apple_mail_cite_blockquote_goes",
                concat!(
                    "<html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=utf-8\"></head>",
                    "<body dir=\"auto\"><div dir=\"ltr\"></div><div dir=\"ltr\">#note</div><div dir=\"ltr\"><br></div>",
                    "<div dir=\"ltr\">Customer is on the old build, see <img src=\"cid:F1E2@apple\" alt=\"shot.png\"></div>",
                    "<div dir=\"ltr\"><br><blockquote type=\"cite\">On 4. Mar 2024, at 10:15, Jane Doe &lt;jane@acme.test&gt; wrote:<br><br></blockquote></div>",
                    "<blockquote type=\"cite\"><div dir=\"ltr\">The portal is down.</div></blockquote></body></html>",
                ),
                concat!(
                    "<html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=utf-8\"></head>",
                    "<body dir=\"auto\"><div dir=\"ltr\"></div>",
                    "<div dir=\"ltr\">Customer is on the old build, see <img src=\"cid:F1E2@apple\" alt=\"shot.png\"></div>",
                    "</body></html>",
                ),
            ),
            (
                "apple_mail_attribution_outside_the_quote_goes",
                concat!(
                    "<div>Yes, that is expected.</div><div><br><div><div>On Mar 4, 2024, at 10:15 AM, Jane Doe &lt;jane@acme.test&gt; wrote:</div>",
                    "<br class=\"Apple-interchange-newline\"><blockquote type=\"cite\"><div>Is that expected?</div></blockquote></div></div>",
                ),
                "<div>Yes, that is expected.</div>",
            ),
            (
                "yahoo_quoted_goes",
                "<div>Done.</div><div class=\"yahoo_quoted\"><div>On Monday, Jane wrote:</div><div>x</div></div>",
                "<div>Done.</div>",
            ),
            (
                "dash_space_signature_line_goes",
                "<div>Thanks!</div><div>-- </div><div>Bob</div><div>Acme</div>",
                "<div>Thanks!</div>",
            ),
            (
                "original_message_separator_cuts",
                "<p>Done.</p><p>-----Original Message-----<br>From: Jane</p><p>old</p>",
                "<p>Done.</p>",
            ),
            (
                "hash_word_after_text_stays",
                "<div>Hi Jane,</div><div>#severity 4 is the lowest.</div>",
                "<div>Hi Jane,</div><div>#severity 4 is the lowest.</div>",
            ),
            (
                "hash_digit_is_not_a_command",
                "<div>#42 is the ticket</div>",
                "<div>#42 is the ticket</div>",
            ),
            (
                "plain_blockquote_is_formatting",
                "<div>Run this:</div><blockquote style=\"margin:0 0 0 40px\">systemctl restart portal</blockquote>",
                "<div>Run this:</div><blockquote style=\"margin:0 0 0 40px\">systemctl restart portal</blockquote>",
            ),
            (
                "nothing_but_quote_keeps_the_quote",
                "<div>#note</div><blockquote type=\"cite\">Old text</blockquote>",
                "<blockquote type=\"cite\">Old text</blockquote>",
            ),
            (
                "unterminated_history_is_closed",
                "<div><b>New</b><p>-----Original Message-----<p>old",
                "<div><b>New</b>",
            ),
        ];
        let failed: Vec<String> = cases
            .iter()
            .filter(|(_, html, want)| reply_html(html) != *want)
            .map(|(name, html, want)| {
                format!("{name}:\n  got  {:?}\n  want {want:?}", reply_html(html))
            })
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }

    /// The HTML and the text of a reply keep the same words.
    #[test]
    fn reply_html_agrees_with_reply_text_from_html() {
        let samples = [
            "<div>Fixed.</div><div><br></div><div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon, Mar 4, 2024 at 10:15 AM J &lt;j@a.test&gt; wrote:</div><blockquote class=\"gmail_quote\">old</blockquote></div>",
            "<p>Answer one</p><blockquote type=\"cite\">q1</blockquote><p>Answer two</p><blockquote type=\"cite\">q2</blockquote>",
            "<p>Done.</p><p><b>From:</b> Jane<br><b>Sent:</b> Monday, March 4, 2024 10:15<br><b>To:</b> S<br><b>Subject:</b> x</p><p>old</p>",
        ];
        for html in samples {
            assert_eq!(
                reply_text_from_html(&reply_html(html)),
                reply_text_from_html(html),
                "{html}"
            );
        }
    }

    #[test]
    fn hostile_input_returns() {
        let mib = 1 << 20;
        let inputs = [
            ">".repeat(mib),
            "a".repeat(mib),
            "\n".repeat(mib),
            "> x\n".repeat(mib / 4),
            "--\n".repeat(mib / 3),
            "On 1 wrote:\n".repeat(mib / 12),
            "From: a\nSent: 1\n".repeat(mib / 17),
            "Sent from my iPhone\n\n".repeat(mib / 21),
            format!("On Mon, Mar 4, 2024 at {} wrote:\n", "1".repeat(mib)),
            "é:".repeat(mib / 3),
        ];
        for input in &inputs {
            let out = reply_text(input);
            assert!(out.len() <= input.len());
        }
        let html = [
            "<".repeat(mib),
            "<!".repeat(mib / 2),
            "<a ".repeat(mib / 3),
            "<a x=\"".repeat(mib / 6),
            "<blockquote>x<br>".repeat(mib / 17),
            "<ul><li>x".repeat(mib / 9),
            "<a href=\"h\">x".repeat(mib / 14),
            "<p><br>".repeat(mib / 7),
            "<div class=\"gmail_attr\">".repeat(mib / 24),
            "<div id=\"x\" class=\"moz-cite-prefix\">a</div>".repeat(mib / 42),
        ];
        for input in &html {
            let _ = reply_text_from_html(input);
            assert!(reply_html(input).len() <= input.len());
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Lines of replies: text, quotes, attributions, separators, headers, signatures.
        const LINES: &[&str] = &[
            "Thanks, the printer works again.",
            "",
            "   ",
            "> quoted",
            ">> deeper",
            ">50% of pages",
            "On Mon, 2 Mar 2026 at 10:00, Bob <bob@acme.test> wrote:",
            "Am 02.03.2026 um 10:00 schrieb Bob <bob@acme.test>:",
            "-----Original Message-----",
            "Begin forwarded message:",
            "________________________________",
            "From: Bob <bob@acme.test>",
            "Sent: Monday, March 2, 2026 10:00 AM",
            "To: support@example.com",
            "Subject: Re: [#12] printer",
            "-- ",
            "--",
            "Sent from my iPhone",
            "#status closed",
            "\r",
            "<div class=\"gmail_quote\">",
            "<blockquote type=\"cite\">",
            "</blockquote></div>",
            "<div id=\"divRplyFwdMsg\">",
            "<p>answer</p><br>",
            "&gt; &amp;",
        ];

        fn reply_like() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(prop::sample::select(LINES), 0..20)
                    .prop_map(|v| v.join("\n")),
                prop::collection::vec(prop::sample::select(LINES), 0..20)
                    .prop_map(|v| v.join("\r\n")),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn reply_text_only_removes_lines(text in reply_like()) {
                let out = reply_text(&text);
                let normal = normalise_newlines(&text);
                let input: Vec<&str> = normal.split('\n').map(str::trim).collect();
                prop_assert!(out.len() <= text.len());
                for line in out.split('\n') {
                    prop_assert!(line.trim().is_empty() || input.contains(&line.trim()), "{:?} not in {:?}", line, text);
                }
            }

            #[test]
            fn html_replies_do_not_panic(html in reply_like()) {
                let _ = reply_text_from_html(&html);
                let _ = reply_html(&html);
            }
        }
    }
}
