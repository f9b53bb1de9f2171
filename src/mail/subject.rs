//! Reading a subject line: strips the reply/forward prefixes that mail clients stack in front of
//! it, finds the severity the customer asked for, and finds the ticket tag. Implements SPEC.md
//! "Severity" (token parsed from the RFC 2047-decoded subject, case-insensitive, reply prefixes in
//! common languages ignored, token anywhere, first one wins, `SEVERAL`/`sev30` and numbers outside
//! 1..4 do not count) and the subject half of SPEC.md "Threading" rule 2 (the ticket tag, default
//! `[#1234]` with a configurable prefix, found however the client prefixed or re-encoded the
//! subject). Pure: no IO, never panics, and allocates only when the subject holds full-width forms.
//!
//! Choices the SPEC leaves open, made here:
//! - Full-width ASCII forms (U+FF01..U+FF5E) and the ideographic space (U+3000) are read as their
//!   ASCII counterparts, because CJK input methods produce them: `ＳＥＶ３` and `ＲＥ：` count.
//! - A token is `sev` or `severity`, optional whitespace holding at most one of `- _ : # = – —`,
//!   then exactly one digit: `SEV3`, `Sev-3`, `SEV: 3`, `sev_3`, `SEV#3`, `Sev – 3` all count.
//! - The word must not follow a letter or digit (`ASEV 3` does not count; `x_sev_3` does), and the
//!   digit must not be followed by a letter or digit (`SEV30`, `SEV 03`, `SEV 3a` do not count).
//! - Invalid tokens (`SEV 0`, `SEV 5`, `SEV 30`) are skipped and the scan goes on, so the first
//!   *valid* token wins: `SEV 5 then SEV 3` asks for 3.
//! - `requested_severity` scans the whole subject, so it needs no prefix stripping first; no reply
//!   prefix can contain a token.
//! - A reply prefix needs a colon (ASCII or full-width) after it, optionally after spaces (French
//!   `RE :`) or a counter (`Re[2]:`, `Re(3):`, `Re^2:`), so `Reports page` keeps its `Re`.
//! - Known gateway tags (`[EXTERNAL]`, `[EXT]`, `(External Sender)`, `[SPAM]`, ...) are always
//!   stripped. Any other bracket tag (`[acme-support]`) only when a reply prefix or gateway tag
//!   follows it, and never one that holds `#` (the ticket tag) or a severity token (`[SEV 3]`).
//! - An old-style wrapped forward `[Fwd: subject]` loses its closing bracket too.
//! - A ticket tag is `[`, the configured prefix, ASCII digits, `]`, after full-width folding (so
//!   `［＃４２］` counts). `ticket_tag` scans the whole subject, so it needs no prefix stripping
//!   and finds the tag at the front, in the middle, at the end or glued to words (`x[#42]y`); it
//!   reads the raw subject because `strip_reply_prefixes` takes a leading `[TICKET-42]` followed by
//!   `Re:` for a list tag when the prefix holds no `#`.
//! - The prefix is compared case-insensitively (`[ticket-42]` for `TICKET-`) and as text, not as a
//!   pattern; it is trimmed, and whitespace inside it (`Acme #`) matches any run of whitespace but
//!   not none. Any whitespace (space, tab, CR, LF, no-break or ideographic space) may stand after
//!   `[`, between prefix and digits, and before `]`; none inside the digits (`[#4 2]` does not
//!   count). An empty prefix makes a bare `[42]` a tag.
//! - The number is 1..=999_999_999_999 with leading zeros ignored (`[#0042]` is 42); no sign, no
//!   other digit scripts. `[#0]` and longer numbers are not tags, and like invalid severity tokens
//!   they are skipped: the first *valid* tag wins.
//! - When several tags are present the first one wins: clients put each new `Re:`/`Fwd:` in front,
//!   so the leftmost tag is the nearest reply context (a customer who forwards ticket A's mail into
//!   ticket B's thread writes `Re: [#B] Fwd: [#A] ...`). A tag the client moved to the end only
//!   loses to one written before it.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// One reply/forward prefix at the start, optionally opened by `[` (group 1).
static REPLY_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    // Alternatives listed longest-first where one is a prefix of another only for readability;
    // the colon requirement makes the regex pick the one that fits.
    Regex::new(concat!(
        r"(?i)^\s*(\[\s*)?",
        r"(?:re|fwd?|aw|wg|sv|vs|antw(?:ort)?|rif|r|i|tr|r(?:é|e\x{301}?)f|odp|pd|enc|res|rv",
        r"|ynt|[iİı]lt|doorst|vá|tov|απ|σχετ|отв(?:ет)?|пересл",
        r"|回复|回覆|答复|答覆|转发|轉寄|轉發|返信|転送|회신|전달)",
        r"(?:\s*(?:\[[0-9]{1,4}\]|\([0-9]{1,4}\)|\^[0-9]{1,4}))?",
        r"\s*[:：]",
    ))
    .expect("reply prefix pattern is valid")
});

/// A tag that mail gateways put in front of the subject, stripped wherever it stands in the run.
static GATEWAY_TAG: LazyLock<Regex> = LazyLock::new(|| {
    let tags = concat!(
        r"external(?:[\s\-]+(?:email|e-mail|mail|sender|message))?|ext|extern|externe",
        r"|caution|spam|suspected[\s\-]+spam|possible[\s\-]+spam",
    );
    Regex::new(&format!(
        r"(?i)^\s*(?:\[\s*(?:{tags})\s*\]|\(\s*(?:{tags})\s*\))"
    ))
    .expect("gateway tag pattern is valid")
});

/// Any other bracket tag, such as a mailing list's `[acme-support]`; content in group 1.
static LIST_TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*\[([^\[\]#\r\n]{1,64})\]").expect("list tag pattern is valid")
});

/// A severity word and its digit run (group 1); boundaries are checked in code, see module doc.
static SEVERITY_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)sev(?:erity)?\s*(?:[\-_:#=\x{2013}\x{2014}]\s*)?([0-9]+)")
        .expect("severity token pattern is valid")
});

/// Removes reply/forward prefixes (any number, any mix, bracketed or not) from the front of a subject.
pub fn strip_reply_prefixes(subject: &str) -> &str {
    let folded = fold_full_width(subject);
    let (start, end) = stripped_span(&folded);
    let (start, end) = match folded {
        Cow::Borrowed(_) => (start, end),
        Cow::Owned(ref folded) => (
            original_offset(subject, folded, start),
            original_offset(subject, folded, end),
        ),
    };
    subject.get(start..end).unwrap_or(subject)
}

/// The severity the subject asks for: the first valid token anywhere in the subject, 1..=4.
pub fn requested_severity(subject: &str) -> Option<u8> {
    let folded = fold_full_width(subject);
    severity_digits(&folded).find_map(|digits| match digits {
        "1" => Some(1),
        "2" => Some(2),
        "3" => Some(3),
        "4" => Some(4),
        _ => None,
    })
}

/// The ticket number the subject's tag names (`[#1234]` with prefix `#`), wherever the tag stands.
pub fn ticket_tag(subject: &str, prefix: &str) -> Option<i64> {
    let subject = fold_full_width(subject);
    let prefix = fold_full_width(prefix);
    let prefix = prefix.trim();
    subject.match_indices('[').find_map(|(at, open)| {
        let number = tag_number(subject.get(at + open.len()..)?, prefix)?;
        (!is_reply_counter(&subject, at)).then_some(number)
    })
}

/// True when the `[` at byte `at` opens the counter of a reply prefix (`Re[2]:`), which an empty
/// tag prefix would otherwise read as the tag of ticket 2.
fn is_reply_counter(subject: &str, at: usize) -> bool {
    let Some(before) = subject.get(..at) else {
        return false;
    };
    let word = before.trim_end();
    let start = word
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphabetic() || !c.is_ascii() && !c.is_whitespace())
        .last()
        .map_or(word.len(), |(i, _)| i);
    start < word.len()
        && subject
            .get(start..)
            .and_then(|rest| REPLY_PREFIX.find(rest))
            .is_some_and(|m| start + m.end() > at)
}

/// The subject tag of ticket `number` (`[#42]` with prefix `#`), the one form postdesk writes.
pub fn tag(prefix: &str, number: i64) -> String {
    format!("[{prefix}{number}]")
}

/// Highest ticket number a tag may name: twelve digits.
const MAX_TAGGED_TICKET: i64 = 999_999_999_999;

/// The number of a valid tag that `rest`, the text just after a `[`, completes; see module doc.
fn tag_number(rest: &str, prefix: &str) -> Option<i64> {
    let rest = strip_prefix_ignoring_case(rest.trim_start(), prefix)?.trim_start();
    let digit_count = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, rest) = rest.split_at_checked(digit_count)?;
    if !rest.trim_start().starts_with(']') {
        return None;
    }
    // Only ASCII digits reach the parse, so no sign; too many digits fail it or the range.
    let number: i64 = digits.parse().ok()?;
    (1..=MAX_TAGGED_TICKET).contains(&number).then_some(number)
}

/// `s` without `prefix` in front, letters compared case-insensitively, whitespace as any run of it.
fn strip_prefix_ignoring_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let mut rest = s;
    let mut wanted = prefix.chars().peekable();
    while let Some(p) = wanted.next() {
        if p.is_whitespace() {
            while wanted.next_if(|c| c.is_whitespace()).is_some() {}
            let trimmed = rest.trim_start();
            if trimmed.len() == rest.len() {
                return None;
            }
            rest = trimmed;
        } else {
            let mut chars = rest.chars();
            let c = chars.next()?;
            if c != p && !c.to_lowercase().eq(p.to_lowercase()) {
                return None;
            }
            rest = chars.as_str();
        }
    }
    Some(rest)
}

/// Byte span of `s` that remains once the leading prefixes and tags are gone.
fn stripped_span(s: &str) -> (usize, usize) {
    let mut pos = 0;
    // End of the last reply prefix or gateway tag; list tags only count once one follows them.
    let mut kept = 0;
    let mut wrapped = 0usize;
    while let Some(rest) = s.get(pos..) {
        if let Some(caps) = REPLY_PREFIX.captures(rest) {
            pos += caps.get(0).map_or(0, |m| m.end());
            wrapped += usize::from(caps.get(1).is_some());
            kept = pos;
        } else if let Some(m) = GATEWAY_TAG.find(rest) {
            pos += m.end();
            kept = pos;
        } else if let Some(caps) = LIST_TAG.captures(rest)
            && let (Some(whole), Some(inner)) = (caps.get(0), caps.get(1))
            && severity_digits(inner.as_str()).next().is_none()
        {
            pos += whole.end();
        } else {
            break;
        }
    }
    if kept == 0 {
        return (0, s.len());
    }
    let body = s.get(kept..).unwrap_or("").trim_start();
    let start = s.len() - body.len();
    (start, start + unwrap_len(body, wrapped))
}

/// Length of `body` without the closing brackets of `wrapped` `[Fwd: ...]` openers, if unmatched.
fn unwrap_len(body: &str, wrapped: usize) -> usize {
    let opens = body.matches('[').count();
    let closes = body.matches(']').count();
    let mut body = body;
    for _ in 0..wrapped.min(closes.saturating_sub(opens)) {
        match body.trim_end().strip_suffix(']') {
            Some(inner) => body = inner.trim_end(),
            None => break,
        }
    }
    body.len()
}

/// Digit runs of the severity tokens in `s` (already folded), valid number or not, in order.
fn severity_digits(s: &str) -> impl Iterator<Item = &str> {
    SEVERITY_TOKEN.captures_iter(s).filter_map(move |caps| {
        let (whole, digits) = (caps.get(0)?, caps.get(1)?);
        let free_before = s.get(..whole.start())?.chars().next_back();
        let free_after = s.get(digits.end()..)?.chars().next();
        let is_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        (!is_word(free_before) && !is_word(free_after)).then_some(digits.as_str())
    })
}

/// `s` with full-width ASCII forms and the ideographic space read as ASCII; borrowed if none.
fn fold_full_width(s: &str) -> Cow<'_, str> {
    // Every full-width form starts with byte 0xEF and U+3000 with 0xE3: a cheap first look.
    if !s.bytes().any(|b| b == 0xEF || b == 0xE3) || !s.chars().any(is_full_width) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(ascii_of_full_width).collect())
}

fn is_full_width(c: char) -> bool {
    matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{3000}')
}

fn ascii_of_full_width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FF5E}' => u8::try_from(u32::from(c) - 0xFEE0).map_or(c, char::from),
        _ => c,
    }
}

/// Byte offset in `original` of the char at byte `offset` in its folded copy (chars map 1:1).
fn original_offset(original: &str, folded: &str, offset: usize) -> usize {
    let nth = folded.get(..offset).map_or(0, |head| head.chars().count());
    original
        .char_indices()
        .nth(nth)
        .map_or(original.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_severity_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, Option<u8>)] = &[
            // Token spellings from SPEC.md.
            ("spaced token", "SEV 3 printer down", Some(3)),
            ("joined token", "SEV3 printer down", Some(3)),
            ("dashed token", "Sev-3 printer down", Some(3)),
            ("bracketed token", "[SEV 3] printer down", Some(3)),
            ("colon token", "SEV:3 printer down", Some(3)),
            ("colon space token", "SEV: 3 printer down", Some(3)),
            ("long word", "Severity 3 printer down", Some(3)),
            ("long word with colon", "Severity: 2 printer down", Some(2)),
            ("trailing dash after number", "Sev 3 - printer down", Some(3)),
            ("parenthesised token", "printer down (sev 2)", Some(2)),
            ("underscore separator counts", "sev_3 printer", Some(3)),
            ("hash separator counts", "SEV#3 printer", Some(3)),
            ("spaced dash separator counts", "Sev - 1 outage", Some(1)),
            ("en dash separator counts", "Sev – 4 question", Some(4)),
            ("equals separator counts", "sev=2 outage", Some(2)),
            // Case-insensitive.
            ("lower case", "sev 4 question", Some(4)),
            ("mixed case", "sEvErItY 1 outage", Some(1)),
            // Anywhere in the subject.
            ("token at end", "printer down SEV 2", Some(2)),
            ("token in middle", "printer SEV 4 down", Some(4)),
            ("token after punctuation", "outage,SEV1", Some(1)),
            ("token ends subject with period", "Database slow. Sev 3.", Some(3)),
            ("token followed by slash", "Sev 2/Sev 3 unsure", Some(2)),
            // Languages and reply prefixes in front.
            ("german reply prefix", "AW: SEV 2 Drucker", Some(2)),
            ("german forward prefix", "WG: Sev 3 Drucker defekt", Some(3)),
            ("chinese reply full-width colon", "回复：SEV 3 服务器", Some(3)),
            ("chinese forward", "转发: SEV 4 服务器", Some(4)),
            ("japanese reply", "返信: SEV 2 サーバー停止", Some(2)),
            ("japanese forward", "転送：[SEV 1] 障害", Some(1)),
            ("russian reply", "Отв: SEV 3 не работает", Some(3)),
            ("russian forward", "Пересл: Sev-4 вопрос", Some(4)),
            ("french reply with space", "RE : SEV 3 imprimante", Some(3)),
            ("french forward", "TR: Sévère panne SEV 2", Some(2)),
            ("greek reply", "ΑΠ: SEV 3 πρόβλημα", Some(3)),
            ("stacked prefixes", "RE: AW: Fwd: [SEV 3] x", Some(3)),
            ("counted prefix", "Re[2]: SEV 4", Some(4)),
            ("external tag in front", "[EXTERNAL] RE: SEV 2 outage", Some(2)),
            // Full-width forms are folded to ASCII.
            ("full-width token", "ＳＥＶ３ 障害", Some(3)),
            ("full-width spaced token", "ＳＥＶ　２ 障害", Some(2)),
            ("full-width bracketed token", "［ｓｅｖ　４］ 質問", Some(4)),
            // First valid token wins; invalid ones are skipped.
            ("first token wins", "SEV 2 printer, was SEV 3", Some(2)),
            ("invalid then valid", "SEV 5 then SEV 3", Some(3)),
            ("zero then valid", "SEV 0 no, Sev 4", Some(4)),
            ("two-digit then valid", "SEV 30 or SEV 1", Some(1)),
            ("glued word then valid", "ASEV 3 and SEV 2", Some(2)),
            // Near misses.
            ("no token", "printer down", None),
            ("empty subject", "", None),
            ("word several", "SEVERAL 3 printers down", None),
            ("word severe", "severe 3 outages", None),
            ("word seven", "seven 3 printers", None),
            ("glued two digits", "sev30 printers", None),
            ("spaced two digits", "SEV 30 printers", None),
            ("zero padded", "SEV 03 printers", None),
            ("letter after digit", "SEV 3a printers", None),
            ("digit glued to word", "SEV3x printers", None),
            ("letter before word", "ASEV 3 printers", None),
            ("digit before word", "9sev 3 printers", None),
            ("severity five", "SEV 5 printers", None),
            ("severity zero", "SEV 0 printers", None),
            ("severity nine", "Severity 9 printers", None),
            ("bare word", "SEV", None),
            ("word and dash", "SEV - printers", None),
            ("word at end", "printers SEV", None),
            ("s shorthand", "S3 printers", None),
            ("p shorthand", "P3 printers", None),
            ("priority word", "Priority 3 printers", None),
            ("two separators", "SEV -: 3 printers", None),
            ("non-ascii digit", "SEV ٣ printers", None),
            ("unicode letter before", "éSEV 2", None),
        ];
        assert!(cases.len() >= 50);
        for (name, subject, expected) in cases {
            assert_eq!(
                requested_severity(subject),
                *expected,
                "case {name:?}: subject {subject:?}"
            );
        }
    }

    #[test]
    fn strip_reply_prefixes_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("no prefix unchanged", "Printer down", "Printer down"),
            ("prefix needs colon", "Reports page broken", "Reports page broken"),
            ("prefix word inside word", "Fwding rules", "Fwding rules"),
            ("leading spaces kept without prefix", "  Printer", "  Printer"),
            ("plain reply", "Re: Printer down", "Printer down"),
            ("upper reply", "RE: Printer down", "Printer down"),
            ("no space after colon", "Re:Printer down", "Printer down"),
            ("forward", "Fwd: Printer down", "Printer down"),
            ("short forward", "FW: Printer down", "Printer down"),
            ("repeated", "Re: Re: Re: Printer", "Printer"),
            ("stacked mix", "RE: AW: Fwd: [SEV 3] x", "[SEV 3] x"),
            ("square counter", "Re[2]: SEV 4", "SEV 4"),
            ("round counter", "Re(3): Printer", "Printer"),
            ("caret counter", "Re^2: Printer", "Printer"),
            ("french space before colon", "RE : Imprimante", "Imprimante"),
            ("french no-break space", "RE\u{a0}: Imprimante", "Imprimante"),
            ("french ref accented", "Réf: Facture", "Facture"),
            ("french ref decomposed", "Re\u{301}f: Facture", "Facture"),
            ("french transfer", "TR: Imprimante", "Imprimante"),
            ("german", "AW: WG: Antwort: Drucker", "Drucker"),
            ("dutch", "Antw: Printer", "Printer"),
            ("scandinavian", "SV: VS: Skrivare", "Skrivare"),
            ("italian", "R: RIF: I: Stampante", "Stampante"),
            ("polish", "Odp: PD: Drukarka", "Drukarka"),
            ("portuguese", "ENC: Res: Impressora", "Impressora"),
            ("spanish forward", "RV: Impresora", "Impresora"),
            ("turkish", "YNT: İLT: Yazıcı", "Yazıcı"),
            ("greek", "Απ: ΣΧΕΤ: Εκτυπωτής", "Εκτυπωτής"),
            ("russian", "Ответ: Пересл: Отв: Принтер", "Принтер"),
            ("chinese full-width colon", "回复：答复：转发：打印机", "打印机"),
            ("chinese traditional", "回覆: 轉寄: 印表機", "印表機"),
            ("japanese", "返信：転送：プリンタ", "プリンタ"),
            ("full-width latin prefix", "ＲＥ：ＦＷ：プリンタ", "プリンタ"),
            ("full-width keeps rest intact", "ＲＥ： ＳＥＶ３ 障害", "ＳＥＶ３ 障害"),
            ("external tag", "[EXTERNAL] Printer", "Printer"),
            ("external tag mixed case", "[External] Re: Printer", "Printer"),
            ("ext tag", "[EXT] RE: Printer", "Printer"),
            ("external sender parenthesised", "(External Sender) Printer", "Printer"),
            ("external after prefix", "RE: [EXTERNAL] FW: Printer", "Printer"),
            ("list tag before prefix", "[acme-support] Re: Printer", "Printer"),
            ("list tags chained", "[acme] [support] Re: Printer", "Printer"),
            ("list tag alone kept", "[acme-support] Printer", "[acme-support] Printer"),
            ("list tag after prefix kept", "Re: [acme-support] Printer", "[acme-support] Printer"),
            ("severity tag kept", "[SEV 3] Re: Printer", "[SEV 3] Re: Printer"),
            ("ticket tag kept", "[#1234] Re: Printer", "[#1234] Re: Printer"),
            ("ticket tag after prefix", "Re: [#1234] Printer", "[#1234] Printer"),
            ("wrapped forward", "[Fwd: Printer down]", "Printer down"),
            ("wrapped forward inner brackets", "[Fwd: [SEV 3] disk]", "[SEV 3] disk"),
            ("wrapped forward unbalanced kept", "[Fwd: Printer [SEV 3]", "Printer [SEV 3]"),
            ("only prefixes", "RE: RE:", ""),
            ("prefix then spaces only", "Fwd:    ", ""),
            ("trailing text untouched", "Re: Printer  ", "Printer  "),
        ];
        assert!(cases.len() >= 20);
        for (name, subject, expected) in cases {
            assert_eq!(
                strip_reply_prefixes(subject),
                *expected,
                "case {name:?}: subject {subject:?}"
            );
        }
    }

    #[test]
    fn ticket_tag_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, Option<i64>)] = &[
            // The tag itself.
            ("plain_tag", "[#42] Printer down", "#", Some(42)),
            ("tag_alone", "[#42]", "#", Some(42)),
            ("four_digit_tag", "[#1234] Printer down", "#", Some(1234)),
            // Reply and forward prefixes, stacked and localised.
            ("re_prefix", "Re: [#42] Printer down", "#", Some(42)),
            ("upper_re_prefix", "RE: [#42] Printer down", "#", Some(42)),
            ("fwd_prefix", "Fwd: [#42] Printer down", "#", Some(42)),
            ("fw_outlook_forward", "FW: [#42] Printer down", "#", Some(42)),
            ("aw_re_stacked_german_outlook", "AW: RE: AW: [#42] Drucker", "#", Some(42)),
            ("wg_german_forward", "WG: [#42] Drucker", "#", Some(42)),
            ("sv_swedish", "SV: [#42] Skrivare", "#", Some(42)),
            ("vs_finnish", "VS: SV: [#42] Tulostin", "#", Some(42)),
            ("antw_dutch", "Antw: [#42] Printer", "#", Some(42)),
            ("doorst_dutch_forward", "Doorst: [#42] Printer", "#", Some(42)),
            ("r_rif_italian", "R: RIF: [#42] Stampante", "#", Some(42)),
            ("tr_french_forward", "TR: RE : [#42] Imprimante", "#", Some(42)),
            ("enc_res_portuguese", "ENC: RES: [#42] Impressora", "#", Some(42)),
            ("rv_spanish_forward", "RV: [#42] Impresora", "#", Some(42)),
            ("odp_pd_polish", "Odp: PD: [#42] Drukarka", "#", Some(42)),
            ("chinese_reply_prefix", "回复：[#42] 打印机", "#", Some(42)),
            ("chinese_stacked_prefixes", "答复: 回复: 转发：[#42] 打印机", "#", Some(42)),
            ("counted_reply_prefix", "Re[3]: [#42] Printer", "#", Some(42)),
            // Markers and other bracket tags in front.
            ("external_marker_then_tag", "[EXTERNAL] RE: [#42] Printer", "#", Some(42)),
            ("external_sender_then_tag", "(External Sender) [#42] Printer", "#", Some(42)),
            ("list_tag_then_tag", "[acme-support] Re: [#42] Printer", "#", Some(42)),
            ("wrapped_forward", "[Fwd: [#42] Printer down]", "#", Some(42)),
            ("nested_brackets", "[[#42]] Printer", "#", Some(42)),
            // Wherever the tag stands.
            ("tag_moved_to_end", "Re: Printer down [#42]", "#", Some(42)),
            ("tag_in_middle", "Re: Printer [#42] down", "#", Some(42)),
            ("tag_glued_to_words", "Printer[#42]down", "#", Some(42)),
            // Full-width forms from CJK input methods.
            ("full_width_tag", "［＃４２］ 障害", "#", Some(42)),
            ("full_width_prefix_and_tag", "ＲＥ：［＃４２］障害", "#", Some(42)),
            ("full_width_mixed_with_ascii", "[＃42] 障害", "#", Some(42)),
            ("full_width_configured_prefix", "[#42] Printer", "＃", Some(42)),
            // Configurable prefix.
            ("custom_prefix", "Re: [TICKET-42] Printer", "TICKET-", Some(42)),
            ("prefix_case_insensitive", "Re: [ticket-42] Printer", "TICKET-", Some(42)),
            ("prefix_with_space", "[Acme #42] Printer", "Acme #", Some(42)),
            ("prefix_space_matches_any_whitespace", "[acme\t \n#42] Printer", "Acme #", Some(42)),
            ("prefix_space_is_required", "[Acme#42] Printer", "Acme #", None),
            ("prefix_trimmed_from_config", "[#42] Printer", " # ", Some(42)),
            ("prefix_is_text_not_pattern", "[a.b42] Printer", "a.b", Some(42)),
            ("prefix_dot_is_literal", "[axb42] Printer", "a.b", None),
            ("empty_prefix_bare_number", "Re: [42] Printer", "", Some(42)),
            // Found by the property test: a reply counter is no tag, even for an empty prefix.
            ("empty_prefix_counter_is_no_tag", "Re[2]: [42] Printer", "", Some(42)),
            ("empty_prefix_spaced_counter", "AW [3]: Re(2): [42] Printer", "", Some(42)),
            ("empty_prefix_counter_alone", "Re[2]: Printer", "", None),
            ("empty_prefix_bracket_after_word", "Printer [42] down", "", Some(42)),
            ("hash_tag_ignored_for_custom_prefix", "[#42] Printer", "TICKET-", None),
            // Whitespace inside the brackets, any kind.
            ("spaces_inside_brackets", "[ #42 ] Printer", "#", Some(42)),
            ("spaces_between_prefix_and_number", "[#  42] Printer", "#", Some(42)),
            ("tabs_and_newlines_inside", "Re:\t[\t#\r\n42\n] Printer", "#", Some(42)),
            ("ideographic_space_inside", "［　＃４２　］", "#", Some(42)),
            ("no_break_space_inside", "[#\u{a0}42] Printer", "#", Some(42)),
            // The number.
            ("leading_zeros_tolerated", "[#0042] Printer", "#", Some(42)),
            ("many_leading_zeros_tolerated", "[#0000000000000000000001] Printer", "#", Some(1)),
            ("largest_number", "[#999999999999] Printer", "#", Some(999_999_999_999)),
            ("zero_is_no_tag", "[#0] Printer", "#", None),
            ("zeros_are_no_tag", "[#000] Printer", "#", None),
            ("overflow_is_no_tag", "[#1000000000000] Printer", "#", None),
            ("i64_overflow_is_no_tag", "[#99999999999999999999999] Printer", "#", None),
            ("minus_sign_no_tag", "[#-42] Printer", "#", None),
            ("plus_sign_no_tag", "[#+42] Printer", "#", None),
            ("decimal_no_tag", "[#4.2] Printer", "#", None),
            ("empty_number_no_tag", "[#] Printer", "#", None),
            ("arabic_indic_digits_no_tag", "[#٤٢] Printer", "#", None),
            // Several tags: the first valid one wins.
            ("first_tag_wins", "Re: [#7] Fwd: [#3] Printer", "#", Some(7)),
            ("first_tag_wins_over_tag_at_end", "[#7] Printer [#3]", "#", Some(7)),
            ("invalid_tag_skipped", "[#0] Re: [#42] Printer", "#", Some(42)),
            ("other_prefix_then_tag", "[INC1234] Re: [#42] Printer", "#", Some(42)),
            // Near misses.
            ("no_brackets_no_tag", "Re: #42 Printer", "#", None),
            ("other_prefix_no_tag", "[INC1234] Printer", "#", None),
            ("words_before_prefix_no_tag", "[Ticket #42] Printer", "#", None),
            ("doubled_prefix_no_tag", "[##42] Printer", "#", None),
            ("letter_after_digits_no_tag", "[#42a] Printer", "#", None),
            ("space_inside_number_no_tag", "[#4 2] Printer", "#", None),
            ("missing_closing_bracket_no_tag", "[#42 Printer", "#", None),
            ("missing_opening_bracket_no_tag", "#42] Printer", "#", None),
            ("parentheses_no_tag", "(#42) Printer", "#", None),
            ("severity_bracket_no_tag", "[SEV 3] Printer", "#", None),
            ("severity_hash_token_no_tag", "[SEV#3] Printer", "#", None),
            ("tag_inside_severity_bracket_not_confused", "[SEV#3] [SEV 2] [#42]", "#", Some(42)),
            ("empty_subject", "", "#", None),
        ];
        assert!(cases.len() >= 35);
        for (name, subject, prefix, expected) in cases {
            assert_eq!(
                ticket_tag(subject, prefix),
                *expected,
                "case {name:?}: subject {subject:?}, prefix {prefix:?}"
            );
        }
    }

    #[test]
    fn tag_is_read_back_by_ticket_tag() {
        assert_eq!(tag("#", 42), "[#42]");
        assert_eq!(tag("TICKET-", 7), "[TICKET-7]");
        for prefix in ["#", "TICKET-", "Acme #", "", "＃"] {
            for number in [1, 42, 1234, MAX_TAGGED_TICKET] {
                let subject = format!("Re: {} Printer", tag(prefix, number));
                assert_eq!(
                    ticket_tag(&subject, prefix),
                    Some(number),
                    "prefix {prefix:?}"
                );
            }
        }
    }

    /// Stands in for proptest (not a dependency): odd subjects from a fixed LCG, same every run.
    #[test]
    fn ticket_tag_on_generated_subjects() {
        const PIECES: &[&str] = &[
            "[",
            "]",
            "［",
            "］",
            "#",
            "＃",
            "##",
            " ",
            "\t",
            "\r\n",
            "\u{3000}",
            "\u{a0}",
            "0",
            "7",
            "42",
            "０",
            "４２",
            "٤",
            "999999999999",
            "1000000000000",
            "-",
            "+",
            ".",
            "a",
            "é",
            "\u{301}",
            "İ",
            "Re:",
            "AW: ",
            "回复：",
            "[EXTERNAL]",
            "[SEV 3]",
            "TICKET-",
            "ticket-",
            "Acme",
            "(",
            ")",
            "\u{FEFF}",
            "\0",
            "\u{10FFFF}",
        ];
        const PREFIXES: &[&str] = &["#", "TICKET-", "Acme #", "", "＃", "İ"];
        let mut state: u64 = 0x5eed;
        let mut next = |bound: usize| {
            // Knuth's MMIX constants; the high bits are the well-mixed ones.
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(state >> 33).unwrap_or(0) % bound
        };
        let mut found = 0;
        for _ in 0..5_000 {
            let prefix = PREFIXES[next(PREFIXES.len())];
            let mut subject = String::new();
            for _ in 0..next(16) {
                // One piece in three is a near-tag: bracket, space, prefix, space, digits, space,
                // bracket, each drawn from the pieces or the real thing, so tags form often.
                if next(3) == 0 {
                    for real in ["[", " ", prefix, " ", "42", " ", "]"] {
                        subject.push_str(if next(4) == 0 {
                            PIECES[next(PIECES.len())]
                        } else if real == " " && next(2) == 0 {
                            ""
                        } else {
                            real
                        });
                    }
                } else {
                    subject.push_str(PIECES[next(PIECES.len())]);
                }
            }
            if let Some(number) = ticket_tag(&subject, prefix) {
                found += 1;
                assert!(
                    (1..=MAX_TAGGED_TICKET).contains(&number),
                    "{number} from {subject:?}"
                );
                assert!(
                    fold_full_width(&subject).contains(&number.to_string()),
                    "{number} not in {subject:?}"
                );
            }
            // A tag written in front is the first one, whatever follows it.
            let tagged = format!("{} {subject}", tag(prefix, 42));
            assert_eq!(ticket_tag(&tagged, prefix), Some(42), "{tagged:?}");
        }
        // The generator must reach the interesting path, or the test proves little.
        assert!(found > 1_000, "only {found} generated subjects held a tag");
    }

    #[test]
    fn folding_borrows_when_no_full_width_forms() {
        assert!(matches!(
            fold_full_width("RE: SEV 3 printer"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(fold_full_width("回复：SEV 3"), Cow::Owned(_)));
        assert!(matches!(fold_full_width("服务器 ï"), Cow::Borrowed(_)));
    }

    #[test]
    fn weird_subjects_do_not_panic() {
        let long_prefixes = "Re: ".repeat(25_000);
        let long_fold = "ＲＥ：".repeat(30_000);
        let long_tags = "[a] ".repeat(25_000);
        let long_text = "é".repeat(100_000);
        let long_sev = "SEV 9 ".repeat(20_000);
        let long_open_tags = "[# ".repeat(30_000);
        let long_number = format!("[#{}]", "9".repeat(100_000));
        let weird = [
            "",
            " ",
            "RE: RE:",
            ":",
            "：",
            "[",
            "]",
            "[]",
            "[Fwd:",
            "[Fwd: ]]]]",
            "Re[",
            "Re[99999]:",
            "SEV",
            "SEV ",
            "SEV -",
            "e\u{301}\u{301}\u{301}SEV\u{301} 3\u{301}",
            "R\u{301}e\u{301}:\u{301}",
            "\u{FEFF}RE: \u{200B}SEV 3",
            "ＲＥ：",
            "\u{FF5E}\u{FF01}\u{3000}",
            "\0\u{7f}\u{10FFFF}",
            &long_prefixes,
            &long_fold,
            &long_tags,
            &long_text,
            &long_sev,
            &long_open_tags,
            &long_number,
        ];
        for subject in weird {
            let stripped = strip_reply_prefixes(subject);
            assert!(
                subject.contains(stripped),
                "not a slice of the input: {subject:?}"
            );
            let _ = requested_severity(subject);
            let _ = ticket_tag(subject, "#");
        }
        assert_eq!(strip_reply_prefixes(&long_prefixes), "");
        assert_eq!(strip_reply_prefixes(&long_fold), "");
        assert_eq!(requested_severity(&long_sev), None);
        assert_eq!(ticket_tag(&long_open_tags, "#"), None);
        assert_eq!(ticket_tag(&long_number, "#"), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// What clients and gateways stack in front of a subject, as they write it.
        const PREFIXES: &[&str] = &[
            "Re: ",
            "RE: ",
            "re:",
            "AW: ",
            "Aw: ",
            "WG: ",
            "Fwd: ",
            "FW: ",
            "Fw: ",
            "SV: ",
            "VS: ",
            "Antw: ",
            "Antwort: ",
            "RIF: ",
            "R: ",
            "I: ",
            "TR: ",
            "RÉF : ",
            "Odp: ",
            "Enc: ",
            "Res: ",
            "RV: ",
            "Ynt: ",
            "İLT: ",
            "回复：",
            "回复: ",
            "答复: ",
            "转发: ",
            "返信: ",
            "転送: ",
            "회신: ",
            "Отв: ",
            "ΑΠ: ",
            "Re[2]: ",
            "Re(3): ",
            "Re^2: ",
            "RE : ",
            "ＲＥ：",
            "[EXTERNAL] ",
            "[External] ",
            "(External Sender) ",
            "[EXT] ",
            "[SPAM] ",
            "[Fwd: ",
            "[acme-support] ",
            "  ",
            "\t",
        ];
        /// `support.tag_prefix` values: the default, words, inner whitespace, none at all.
        const TAG_PREFIXES: &[&str] = &["#", "TICKET-", "Acme #", "case ", ""];
        /// Pieces of subjects, for strings that look like subjects more often than random text.
        const PIECES: &[&str] = &[
            "Re:",
            "AW:",
            "[",
            "]",
            "[#12]",
            "[#0]",
            "[12]",
            "SEV 3",
            "sev30",
            "Severity: 2",
            "ＲＥ：",
            "［＃７］",
            "\u{3000}",
            ":",
            " ",
            "printer",
            "[EXTERNAL]",
            "(External)",
            "[Fwd: x]",
            "#",
            "é",
            "e\u{301}",
            "\r\n ",
        ];

        fn stacked() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(PREFIXES), 0..8).prop_map(|v| v.concat())
        }

        fn subject_like() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(prop::sample::select(PIECES), 0..12).prop_map(|v| v.concat()),
                (stacked(), any::<String>()).prop_map(|(p, s)| p + &s),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn no_subject_panics(s in subject_like(), p in prop::sample::select(TAG_PREFIXES)) {
                let stripped = strip_reply_prefixes(&s);
                prop_assert!(s.contains(stripped));
                if let Some(n) = requested_severity(&s) {
                    prop_assert!((1..=4).contains(&n));
                }
                if let Some(n) = ticket_tag(&s, p) {
                    prop_assert!((1..=MAX_TAGGED_TICKET).contains(&n));
                }
            }

            #[test]
            fn stripping_is_idempotent(s in subject_like()) {
                let once = strip_reply_prefixes(&s);
                prop_assert_eq!(strip_reply_prefixes(once), once);
            }

            #[test]
            fn our_tag_is_read_back_whatever_is_stacked_in_front(
                front in stacked(),
                p in prop::sample::select(TAG_PREFIXES),
                n in 1..=MAX_TAGGED_TICKET,
                rest in any::<String>(),
            ) {
                // What postdesk sends (`{{ ticket.tag }} {{ ticket.subject }}`), then the client's
                // prefixes in front; the customer's own subject may hold anything, tags too.
                let subject = format!("{front}{} {rest}", tag(p, n));
                prop_assert_eq!(ticket_tag(&subject, p), Some(n), "{:?}", subject);
            }
        }
    }
}
