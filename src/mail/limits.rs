//! What one message may cost before it is parsed (issue 15, "Hostile mail"): its size, its number
//! of MIME parts, their nesting and the size of its header blocks. A support address is public, so
//! a message past any of these goes to quarantine with a reason naming the limit and the value
//! found, and the worker goes on.
//!
//! mail-parser's full parse of a message with hundreds of thousands of parts under one reused
//! boundary takes seconds and hundreds of megabytes (its `seek_next_part` looks for the boundary
//! again and again). `scan` counts the same structure in one pass over the lines, before that
//! parse: `--` and an open boundary is a part wherever it stands in a line (mail-parser matches
//! the boundary as a prefix and anywhere, so does this scan, and what follows it on the line is
//! read as the part's first header line); the headers of a part may open a nested multipart; and
//! a `message/rfc822` part (also base64 or quoted-printable, up to mail-parser's three encoded
//! levels) holds a whole message whose structure counts too. The open boundaries are kept in a
//! trie, so a delimiter at the start of a line costs at most the line's length; in the middle of
//! a line only the innermost multipart's boundary is looked for, as mail-parser does inside a
//! part, at the cost of its own search.

use std::path::PathBuf;

use crate::mail::{InboundMail, QuarantineReason, parse};

/// The limits every message is checked against before the full parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message taken, in bytes (`limits.max_message_size`).
    pub max_message_size: usize,
    /// Most MIME parts (body parts of every multipart, at any depth).
    pub max_parts: usize,
    /// Deepest nesting of multiparts and enclosed messages.
    pub max_depth: usize,
    /// Most bytes in all header blocks together (the message's and its parts').
    pub max_header_bytes: usize,
    /// Most header fields in all header blocks together.
    pub max_headers: usize,
    /// Where a message too large to hold in memory is written (`ingest -`).
    pub quarantine_dir: PathBuf,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_parts: 1_000,
            max_depth: 30,
            max_header_bytes: 1024 * 1024,
            max_headers: 5_000,
            quarantine_dir: PathBuf::from("./quarantine"),
        }
    }
}

/// What the scan counted in one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Structure {
    /// MIME body parts (each delimiter line of an open boundary, and those of enclosed messages).
    pub parts: usize,
    /// Deepest nesting: 1 for a plain multipart, 2 for a multipart inside it, and so on; an
    /// enclosed message counts as a level.
    pub depth: usize,
    /// Bytes of all header blocks, line ends included.
    pub header_bytes: usize,
    /// Header fields of all header blocks (folded lines count once).
    pub headers: usize,
}

impl Limits {
    /// The reason a message goes to quarantine before the full parse, if any: its size, then its
    /// structure (parts, depth, header bytes, header fields; the first one past its limit).
    pub fn check(&self, raw: &[u8]) -> Result<Structure, QuarantineReason> {
        if raw.len() > self.max_message_size {
            return Err(QuarantineReason::Oversized {
                size: raw.len(),
                limit: self.max_message_size,
            });
        }
        let s = scan(raw);
        let over = |found: usize, limit: usize| found > limit;
        if over(s.parts, self.max_parts) {
            return Err(QuarantineReason::TooManyParts {
                found: s.parts,
                limit: self.max_parts,
            });
        }
        if over(s.depth, self.max_depth) {
            return Err(QuarantineReason::TooDeep {
                found: s.depth,
                limit: self.max_depth,
            });
        }
        if over(s.header_bytes, self.max_header_bytes) {
            return Err(QuarantineReason::HeaderTooLarge {
                found: s.header_bytes,
                limit: self.max_header_bytes,
            });
        }
        if over(s.headers, self.max_headers) {
            return Err(QuarantineReason::TooManyHeaders {
                found: s.headers,
                limit: self.max_headers,
            });
        }
        Ok(s)
    }
}

/// Checks the limits, then parses: the one way the pipeline turns bytes into a mail.
pub fn parse_within(raw: &[u8], limits: &Limits) -> Result<InboundMail, QuarantineReason> {
    limits.check(raw)?;
    parse(raw, limits.max_message_size)
}

/// mail-parser parses message parts in base64 or quoted-printable this many levels deep.
const MAX_ENCODED_LEVELS: usize = 3;

/// A delimiter found on a line.
#[derive(Debug, Clone, Copy)]
struct Delimiter {
    /// Where its `--` starts.
    start: usize,
    /// Where it ends (after the boundary, and after the `--` of a close).
    end: usize,
    /// The stack position of the boundary's multipart.
    pos: usize,
    /// `--boundary--`: the multipart ends.
    close: bool,
}

/// Counts the parts, nesting and header blocks of a raw message in one pass.
pub fn scan(raw: &[u8]) -> Structure {
    let mut s = Scanner::default();
    s.run(raw, 0, 0);
    s.found
}

/// One open level: a multipart (its boundary's node in the trie) or an enclosed message.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// The boundary's trie node; `None` for an enclosed message.
    node: Option<usize>,
    /// multipart/digest: its parts are messages unless they say otherwise (RFC 2046 5.1.5).
    digest: bool,
}

/// A trie of the open boundaries: each node knows at which stack positions its boundary is open.
#[derive(Debug, Default)]
struct Node {
    children: Vec<(u8, usize)>,
    open: Vec<usize>,
    /// The boundary that ends here (empty on inner nodes).
    word: Vec<u8>,
}

/// What is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A header block; `digest_parent` when its part's default type is message/rfc822.
    Headers { digest_parent: bool },
    /// A body (or preamble, epilogue).
    Body,
    /// The encoded body of a message part, collected to be decoded and scanned.
    Encoded(Encoding),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Base64,
    QuotedPrintable,
}

/// The fields of one header block the scan needs.
#[derive(Debug, Default)]
struct PartHeaders {
    content_type: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    /// Which of the two the last field was (continuation lines append to it).
    current: Option<Kept>,
}

/// A header field the scan keeps.
#[derive(Debug, Clone, Copy)]
enum Kept {
    ContentType,
    TransferEncoding,
}

#[derive(Debug)]
struct Scanner {
    nodes: Vec<Node>,
    stack: Vec<Level>,
    /// Open multiparts on the stack, innermost last: (stack position, trie node).
    multiparts: Vec<(usize, usize)>,
    found: Structure,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner {
            nodes: vec![Node::default()],
            stack: Vec::new(),
            multiparts: Vec::new(),
            found: Structure::default(),
        }
    }
}

impl Scanner {
    /// Scans one message (the whole input, or a decoded enclosed one) whose levels start at
    /// `base` (the stack depth it is enclosed at) and which is `encoded` levels inside encoded
    /// message parts.
    fn run(&mut self, raw: &[u8], base: usize, encoded: usize) {
        let mut mode = Mode::Headers {
            digest_parent: false,
        };
        let mut headers = PartHeaders::default();
        let mut collected: Vec<u8> = Vec::new();
        for line in raw.split_inclusive(|&b| b == b'\n') {
            // A delimiter ends whatever was being read: headers, a body or an encoded message.
            // What follows it on the same line is read as the next line (mail-parser reads the
            // part's headers from right after the boundary).
            let mut rest = line;
            while !self.multiparts.is_empty()
                && let Some(d) = self.delimiter(trim_eol(rest))
            {
                let before = &rest[..d.start];
                if !before.iter().all(u8::is_ascii_whitespace) {
                    self.line(before, &mut mode, &mut headers, &mut collected, base);
                }
                if let Mode::Encoded(enc) = mode {
                    self.nested(&collected, enc, base, encoded);
                    collected.clear();
                } else if let Mode::Headers { digest_parent } = mode {
                    self.end_headers(&mut headers, digest_parent, base);
                }
                if d.close {
                    self.truncate(d.pos);
                    mode = Mode::Body;
                } else {
                    self.truncate(d.pos + 1);
                    self.found.parts += 1;
                    let digest_parent = self.stack.get(d.pos).is_some_and(|l| l.digest);
                    mode = Mode::Headers { digest_parent };
                }
                rest = &rest[d.end..];
            }
            if rest.len() == line.len() || !trim_eol(rest).iter().all(u8::is_ascii_whitespace) {
                self.line(rest, &mut mode, &mut headers, &mut collected, base);
            }
        }
        match mode {
            Mode::Encoded(enc) => self.nested(&collected, enc, base, encoded),
            Mode::Headers { digest_parent } => {
                self.end_headers(&mut headers, digest_parent, base);
            }
            Mode::Body => {}
        }
    }

    /// One line (or what is left of it after a delimiter) that is no delimiter.
    fn line(
        &mut self,
        line: &[u8],
        mode: &mut Mode,
        headers: &mut PartHeaders,
        collected: &mut Vec<u8>,
        base: usize,
    ) {
        match *mode {
            Mode::Headers { digest_parent } => {
                self.found.header_bytes += line.len();
                let text = trim_eol(line);
                if text.iter().all(u8::is_ascii_whitespace) {
                    *mode = self.end_headers(headers, digest_parent, base);
                } else {
                    header_line(text, headers, &mut self.found);
                }
            }
            Mode::Body => {}
            Mode::Encoded(_) => collected.extend_from_slice(line),
        }
    }

    /// The first delimiter in `text` (a line without its end). At the start of the line, `--`
    /// and any open boundary (the innermost that fits). In the middle of a line, `--` and the
    /// innermost multipart's boundary: mail-parser finds a boundary anywhere, but in a part it
    /// looks only for that one. Both cost what mail-parser's own search costs.
    fn delimiter(&self, text: &[u8]) -> Option<Delimiter> {
        let found = |start: usize, pos: usize, len: usize| {
            let close = text[start + 2 + len..].starts_with(b"--");
            Delimiter {
                start,
                end: start + 2 + len + if close { 2 } else { 0 },
                pos,
                close,
            }
        };
        if let Some(after) = text.strip_prefix(b"--")
            && let Some((pos, len)) = self.innermost_prefix(after)
        {
            return Some(found(0, pos, len));
        }
        let &(pos, node) = self.multiparts.last()?;
        let boundary = &self.nodes[node].word;
        let mut from = 1;
        while let Some(at) = text
            .get(from..)
            .and_then(|t| t.windows(2).position(|w| w == b"--"))
        {
            let start = from + at;
            if text[start + 2..].starts_with(boundary) {
                return Some(found(start, pos, boundary.len()));
            }
            from = start + 1;
        }
        None
    }

    /// The innermost open boundary that `text` starts with: its stack position and length.
    fn innermost_prefix(&self, text: &[u8]) -> Option<(usize, usize)> {
        let mut node = 0;
        let mut best: Option<(usize, usize)> = None;
        for (i, b) in text.iter().enumerate() {
            let Some(&(_, next)) = self.nodes[node].children.iter().find(|(c, _)| c == b) else {
                break;
            };
            node = next;
            if let Some(&pos) = self.nodes[node].open.last()
                && best.is_none_or(|(p, _)| pos > p)
            {
                best = Some((pos, i + 1));
            }
        }
        best
    }

    /// Closes every level from `len` up.
    fn truncate(&mut self, len: usize) {
        while self.stack.len() > len {
            if let Some(Level {
                node: Some(node), ..
            }) = self.stack.pop()
            {
                self.nodes[node].open.pop();
                self.multiparts.pop();
            }
        }
    }

    fn push(&mut self, level: Level, base: usize) {
        self.stack.push(level);
        if let Some(node) = level.node {
            self.nodes[node].open.push(self.stack.len() - 1);
            self.multiparts.push((self.stack.len() - 1, node));
        }
        self.found.depth = self.found.depth.max(base + self.stack.len());
    }

    /// The trie node of a boundary, made on first use.
    fn node_of(&mut self, boundary: &[u8]) -> usize {
        let mut node = 0;
        for &b in boundary {
            node = match self.nodes[node].children.iter().find(|(c, _)| *c == b) {
                Some(&(_, next)) => next,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.push((b, next));
                    next
                }
            };
        }
        if self.nodes[node].word.is_empty() {
            self.nodes[node].word = boundary.to_vec();
        }
        node
    }

    /// A header block ended: opens what it declares and says what comes next.
    fn end_headers(&mut self, h: &mut PartHeaders, digest_parent: bool, base: usize) -> Mode {
        let h = std::mem::take(h);
        let (kind, subtype, boundary) = match &h.content_type {
            Some(v) => content_type(v),
            None if digest_parent => ("message".into(), "rfc822".into(), None),
            None => ("text".into(), "plain".into(), None),
        };
        if kind == "multipart"
            && let Some(boundary) = boundary.filter(|b| !b.is_empty())
        {
            let node = self.node_of(&boundary);
            self.push(
                Level {
                    node: Some(node),
                    digest: subtype == "digest",
                },
                base,
            );
            return Mode::Body;
        }
        if kind == "message" && (subtype == "rfc822" || subtype == "global") {
            let encoding = h
                .encoding
                .as_deref()
                .map(|e| String::from_utf8_lossy(e).trim().to_ascii_lowercase());
            return match encoding.as_deref() {
                Some("base64") => Mode::Encoded(Encoding::Base64),
                Some("quoted-printable") => Mode::Encoded(Encoding::QuotedPrintable),
                _ => {
                    self.push(
                        Level {
                            node: None,
                            digest: false,
                        },
                        base,
                    );
                    Mode::Headers {
                        digest_parent: false,
                    }
                }
            };
        }
        Mode::Body
    }

    /// An encoded message part: decoded and scanned one level deeper, as mail-parser does up to
    /// its limit of encoded levels.
    fn nested(&mut self, body: &[u8], enc: Encoding, base: usize, encoded: usize) {
        if encoded >= MAX_ENCODED_LEVELS {
            return;
        }
        let decoded = match enc {
            Encoding::Base64 => decode_base64(body),
            Encoding::QuotedPrintable => decode_quoted_printable(body),
        };
        let mut inner = Scanner::default();
        inner.run(&decoded, base + self.stack.len() + 1, encoded + 1);
        let f = inner.found;
        self.found.parts += f.parts;
        self.found.header_bytes += f.header_bytes;
        self.found.headers += f.headers;
        self.found.depth = self
            .found
            .depth
            .max(f.depth)
            .max(base + self.stack.len() + 1);
    }
}

/// A line without its line end.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One line of a header block: a new field (counted; Content-Type and Content-Transfer-Encoding
/// kept) or the continuation of the last one.
fn header_line(text: &[u8], h: &mut PartHeaders, found: &mut Structure) {
    if text.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        let field = match h.current {
            Some(Kept::ContentType) => &mut h.content_type,
            Some(Kept::TransferEncoding) => &mut h.encoding,
            None => return,
        };
        field.get_or_insert_default().extend_from_slice(text);
        return;
    }
    found.headers += 1;
    h.current = None;
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return;
    };
    // mail-parser ignores white space inside a field name (`Content-Type :`).
    let name: Vec<u8> = text[..colon]
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .map(u8::to_ascii_lowercase)
        .collect();
    let value = text[colon + 1..].to_vec();
    match name.as_slice() {
        b"content-type" => {
            h.content_type = Some(value);
            h.current = Some(Kept::ContentType);
        }
        b"content-transfer-encoding" => {
            h.encoding = Some(value);
            h.current = Some(Kept::TransferEncoding);
        }
        _ => {}
    }
}

/// Type, subtype (lower-cased) and boundary of a Content-Type value.
fn content_type(value: &[u8]) -> (String, String, Option<Vec<u8>>) {
    let value = String::from_utf8_lossy(value);
    let mut params = split_params(&value).into_iter();
    let media = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let (kind, subtype) = match media.split_once('/') {
        Some((k, s)) => (k.trim().to_string(), s.trim().to_string()),
        None => (media.clone(), String::new()),
    };
    let boundary = params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| {
            let v = value.trim();
            let v = match v.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or_default(),
                None => v,
            };
            v.as_bytes().to_vec()
        })
    });
    (kind, subtype, boundary)
}

/// `;`-separated pieces of a header value, `;` inside quotes kept.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// Lenient base64: characters outside the alphabet are skipped, a partial tail is dropped.
fn decode_base64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Lenient quoted-printable: `=XX` decoded, soft line breaks removed, anything else kept.
fn decode_quoted_printable(text: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            match (text.get(i + 1), text.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&a), Some(&b)) => {
                    if let (Some(a), Some(b)) = (hex(a), hex(b)) {
                        out.push(a << 4 | b);
                        i += 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message whose top level is a multipart/mixed holding `n` text parts.
    fn parts(n: usize) -> String {
        let mut m = String::from(
            "From: a@acme.test\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n",
        );
        for i in 0..n {
            m.push_str(&format!(
                "--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
            ));
        }
        m.push_str("--b--\r\nepilogue\r\n");
        m
    }

    /// Multiparts nested `depth` deep, each with its own boundary.
    fn nested(depth: usize) -> String {
        let mut m = String::from(
            "From: a@acme.test\r\nSubject: dolls\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n",
        );
        for level in 1..depth {
            m.push_str(&format!(
                "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n",
                level - 1
            ));
        }
        m.push_str(&format!(
            "--b{}\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n",
            depth - 1
        ));
        for level in (0..depth).rev() {
            m.push_str(&format!("--b{level}--\r\n"));
        }
        m
    }

    /// A top-level header block of exactly `bytes` bytes (blank line included).
    fn header_bytes(bytes: usize) -> String {
        let fixed = "From: a@acme.test\r\nX-Pad: \r\n\r\n".len();
        format!(
            "From: a@acme.test\r\nX-Pad: {}\r\n\r\nbody\r\n",
            "p".repeat(bytes - fixed)
        )
    }

    /// `n` header fields, two of them folded over two lines.
    fn header_fields(n: usize) -> String {
        let mut m = String::from("From: a@acme.test\r\nSubject: folded\r\n over two lines\r\n");
        for i in 2..n {
            m.push_str(&format!("X-{i}: v\r\n"));
        }
        m.push_str("\r\nbody\r\n");
        m
    }

    #[test]
    fn each_limit_just_under_is_taken_just_over_is_quarantined() {
        let parts_10 = Limits {
            max_parts: 10,
            ..Limits::default()
        };
        let depth_4 = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        let header_bytes_200 = Limits {
            max_header_bytes: 200,
            ..Limits::default()
        };
        let headers_8 = Limits {
            max_headers: 8,
            ..Limits::default()
        };
        let cases: Vec<(&str, &Limits, String, Option<&str>)> = vec![
            ("parts_at_the_limit", &parts_10, parts(10), None),
            (
                "parts_one_over",
                &parts_10,
                parts(11),
                Some("too_many_parts"),
            ),
            ("depth_at_the_limit", &depth_4, nested(4), None),
            ("depth_one_over", &depth_4, nested(5), Some("too_deep")),
            (
                "header_bytes_at_the_limit",
                &header_bytes_200,
                header_bytes(200),
                None,
            ),
            (
                "header_bytes_one_over",
                &header_bytes_200,
                header_bytes(201),
                Some("header_too_large"),
            ),
            (
                "header_fields_at_the_limit",
                &headers_8,
                header_fields(8),
                None,
            ),
            (
                "header_fields_one_over",
                &headers_8,
                header_fields(9),
                Some("too_many_headers"),
            ),
        ];
        for (name, limits, raw, want) in cases {
            let got = limits.check(raw.as_bytes()).err();
            assert_eq!(got.as_ref().map(|r| r.code()), want, "{name}: {got:?}");
        }
    }

    #[test]
    fn the_first_limit_passed_is_named_parts_first() {
        let tight = Limits {
            max_parts: 2,
            max_depth: 1,
            max_header_bytes: 10,
            max_headers: 1,
            ..Limits::default()
        };
        let got = tight.check(nested(5).as_bytes()).err();
        assert_eq!(got.map(|r| r.code()), Some("too_many_parts"));
    }

    /// Standard base64 with line breaks every 76 characters.
    fn encode_base64(data: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
            if out.len() % 78 == 76 {
                out.push_str("\r\n");
            }
        }
        out
    }

    #[test]
    fn structure_is_counted() {
        // Each header block as written, blank line included: the expected byte counts are sums.
        let top = "From: a@acme.test\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n";
        let text = "Content-Type: text/plain\r\n\r\n";
        let html = "Content-Type: text/html\r\n\r\n";
        let message = "Content-Type: message/rfc822\r\n\r\n";
        let inner_top =
            "From: b@acme.test\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n";
        let inner =
            format!("{inner_top}--inner\r\n{text}x\r\n--inner\r\n{html}<p>x</p>\r\n--inner--\r\n");
        let forwarded =
            format!("{top}--outer\r\n{text}see below\r\n--outer\r\n{message}{inner}--outer--\r\n");
        let base64_part =
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n";
        let encoded = format!(
            "{top}--outer\r\n{base64_part}{}\r\n--outer--\r\n",
            encode_base64(inner.as_bytes())
        );
        let qp_part =
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";
        let qp = format!(
            "{top}--outer\r\n{qp_part}{}\r\n--outer--\r\n",
            inner
                .replace('=', "=3D")
                .replace("multipart/", "multi=\r\npart/")
        );
        let digest_top = "From: a@acme.test\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n";
        let digested_top = "From: b@acme.test\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n";
        let digest = format!(
            "{digest_top}--d\r\n\r\n{digested_top}--m\r\n\r\none\r\n--m\r\n\r\ntwo\r\n--m--\r\n--d--\r\n"
        );
        let plain = "From: a@acme.test\r\nSubject: x\r\n\r\n";
        let inner_bytes = inner_top.len() + text.len() + html.len();
        let cases: Vec<(&str, String, Structure)> = vec![
            (
                "no_multipart_no_parts",
                format!("{plain}--outer\r\n"),
                Structure {
                    parts: 0,
                    depth: 0,
                    header_bytes: plain.len(),
                    headers: 2,
                },
            ),
            (
                "forwarded_message_is_a_level",
                forwarded,
                Structure {
                    parts: 4,
                    depth: 3,
                    header_bytes: top.len() + text.len() + message.len() + inner_bytes,
                    headers: 8,
                },
            ),
            (
                "base64_message_is_decoded",
                encoded,
                Structure {
                    parts: 3,
                    depth: 3,
                    header_bytes: top.len() + base64_part.len() + inner_bytes,
                    headers: 8,
                },
            ),
            (
                "quoted_printable_message_is_decoded",
                qp,
                Structure {
                    parts: 3,
                    depth: 3,
                    header_bytes: top.len() + qp_part.len() + inner_bytes,
                    headers: 8,
                },
            ),
            (
                "digest_parts_are_messages",
                digest,
                Structure {
                    parts: 3,
                    depth: 3,
                    header_bytes: digest_top.len() + 2 + digested_top.len() + 2 + 2,
                    headers: 4,
                },
            ),
        ];
        for (name, raw, want) in cases {
            assert_eq!(scan(raw.as_bytes()), want, "{name}");
        }
    }

    #[test]
    fn boundary_matching() {
        let cases: &[(&str, &str, usize, usize)] = &[
            // (name, body after a top-level multipart/mixed; boundary=a, parts, depth)
            (
                "reused_boundary_counts_every_occurrence",
                "--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nx\r\n",
                3,
                3,
            ),
            // mail-parser takes the boundary as a prefix of the line.
            (
                "prefix_of_the_line",
                "--a trailing junk\r\n\r\nx\r\n--aa\r\n\r\ny\r\n",
                2,
                1,
            ),
            (
                "close_ends_the_level",
                "--a\r\n\r\nx\r\n--a--\r\n--a\r\n\r\nafter the close\r\n",
                1,
                1,
            ),
            (
                "outer_delimiter_closes_inner",
                "--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--a\r\n\r\ny\r\n--b\r\n\r\nb is closed\r\n",
                3,
                2,
            ),
            (
                "quoted_boundary_with_semicolon",
                "--a\r\nContent-Type: multipart/mixed;\r\n boundary=\"x;y\"\r\n\r\n--x;y\r\n\r\nz\r\n--x;y--\r\n--a--\r\n",
                2,
                2,
            ),
            // mail-parser finds a boundary anywhere in a line, and reads headers right after it.
            ("mid_line_like_mail_parser", " --a\r\nx--a\r\n", 2, 1),
            (
                "headers_on_the_delimiter_line",
                "x--aContent-Type: multipart/mixed; boundary=a\r\n\r\nx--a\r\n\r\ny\r\n",
                2,
                2,
            ),
            (
                "two_delimiters_on_one_line",
                "x--a\r\n\r\ny--a y--a\r\n",
                3,
                1,
            ),
            (
                "empty_boundary_is_no_multipart",
                "--a\r\nContent-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n",
                1,
                1,
            ),
            (
                "lf_only_line_ends",
                "--a\nContent-Type: multipart/mixed; boundary=c\n\n--c\n\nx\n--c--\n--a--\n",
                2,
                2,
            ),
        ];
        for (name, body, parts, depth) in cases {
            let raw = format!(
                "From: a@acme.test\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n{body}"
            );
            let s = scan(raw.as_bytes());
            assert_eq!((s.parts, s.depth), (*parts, *depth), "{name}: {s:?}");
        }
        // Mid-line only the innermost multipart's boundary counts (mail-parser seeks that one),
        // however long; at the start of a line, any open one.
        let long = "b".repeat(300);
        let raw = format!(
            "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary={long}\r\n\r\nx--{long}\r\n\r\nx--o\r\n--o\r\n\r\nz\r\n"
        );
        let s = scan(raw.as_bytes());
        assert_eq!((s.parts, s.depth), (3, 2), "{s:?}");
    }

    #[test]
    fn decoders() {
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("base64", b"aGVsbG8=", b"hello"),
            (
                "base64_with_line_breaks_and_junk",
                b"aGVs\r\nbG8*\r\n",
                b"hello",
            ),
            ("base64_partial_tail", b"aGVsbG8gdw", b"hello w"),
            ("base64_lone_sextet_dropped", b"aGVsbG8gd", b"hello "),
        ];
        for (name, input, want) in cases {
            assert_eq!(decode_base64(input), *want, "{name}");
        }
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("qp_hex", b"a=3Db", b"a=b"),
            ("qp_soft_break", b"a=\r\nb=\nc", b"abc"),
            ("qp_broken_escape_kept", b"a=Zz=", b"a=Zz="),
        ];
        for (name, input, want) in cases {
            assert_eq!(decode_quoted_printable(input), *want, "{name}");
        }
    }

    #[test]
    fn oversized_is_checked_first() {
        let limits = Limits {
            max_message_size: 10,
            max_parts: 1,
            ..Limits::default()
        };
        assert_eq!(
            limits.check(parts(20).as_bytes()).err().map(|r| r.code()),
            Some("oversized")
        );
    }

    /// Every file under `dir` whose name passes `keep`.
    fn files_under(dir: &std::path::Path, keep: &dyn Fn(&std::path::Path) -> bool) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p, keep));
            } else if keep(&p) {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn every_fixture_and_corpus_mail_is_within_the_limits() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = files_under(&repo.join("fixtures"), &|p| {
            p.extension().is_some_and(|e| e == "eml")
        });
        assert!(files.len() >= 50, "fixtures: {}", files.len());
        let corpus = repo.join("../shared/corpus");
        if corpus.is_dir() {
            for sub in ["rt", "zammad"] {
                files.extend(files_under(&corpus.join(sub), &|p| {
                    p.extension().is_none_or(|e| e != "yml" && e != "md")
                }));
            }
        } else {
            eprintln!(
                "note: no {} here; only the fixtures were scanned",
                corpus.display()
            );
        }
        let limits = Limits::default();
        let over: Vec<String> = files
            .iter()
            .filter_map(|p| {
                let raw = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                limits
                    .check(&raw)
                    .err()
                    .map(|r| format!("{}: {r}", p.display()))
            })
            .collect();
        assert!(over.is_empty(), "{over:#?}");
    }

    #[test]
    fn pathological_mail_is_over_the_part_limit() {
        use std::io::Read;
        let gz = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/corpus/pathological/nested-same-boundary-19mb.eml.gz");
        let Ok(file) = std::fs::File::open(&gz) else {
            eprintln!(
                "skipped: no {} (the shared corpus is not here)",
                gz.display()
            );
            return;
        };
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("{}: {e}", gz.display()));
        match Limits::default().check(&raw) {
            Err(QuarantineReason::TooManyParts { found, limit }) => {
                assert_eq!(limit, 1000);
                assert!(found > 300_000, "{found} parts");
            }
            other => panic!("expected too_many_parts, got {other:?}"),
        }
        // The same mail with every delimiter moved off the start of its line: mail-parser still
        // splits there (and took as long), so the scan must see it too. Where the bounce spliced
        // into it opens other boundaries, the innermost one is sought, as mail-parser does: the
        // levels left open make it too deep.
        let mid_line: Vec<u8> = raw
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|line| {
                let moved: &[u8] = if line.starts_with(b"--a") { b"x" } else { b"" };
                moved.iter().chain(line).copied()
            })
            .collect();
        let code = Limits::default().check(&mid_line).err().map(|r| r.code());
        assert!(
            matches!(code, Some("too_many_parts" | "too_deep")),
            "delimiters mid-line: {code:?}"
        );
    }
}
