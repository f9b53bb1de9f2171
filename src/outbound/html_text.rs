//! HTML -> plain text, for templates whose admin wrote only the HTML part (SPEC: Outbound mail,
//! every mail has a plain-text part). Small on purpose: rendered templates are simple,
//! well-formed HTML, so a tag scanner is enough. Paragraphs and headings become blank-line
//! separated blocks, `<br>` a line break, list items `- ` / `1. ` lines, table rows lines, links
//! `text <url>`, blockquotes `> ` lines; `<head>`, `<style>` and `<script>` are dropped, entities
//! decoded, and runs of whitespace collapse as a browser would (except in `<pre>`).
//!
//! It also reads customers' HTML-only replies (mail::quote), so it must stay linear on hostile
//! input: a tag left open at the end of the input ends the text (as in a browser) instead of
//! being re-scanned from every later `<`, links do not nest (HTML forbids it), and quote and list
//! prefixes stop growing past a fixed depth.

/// Converts rendered HTML to the text part of a mail.
pub fn html_to_text(html: &str) -> String {
    let mut w = Writer::default();
    let mut rest = html;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map(|i| &after[i + 3..]).unwrap_or("");
            continue;
        }
        if rest.starts_with('<') {
            match parse_tag(rest) {
                Parsed::Tag(tag, len) => {
                    w.tag(&tag);
                    rest = &rest[len..];
                    // The content of these is not text (and may contain '<').
                    if !tag.closing && matches!(tag.name.as_str(), "script" | "style") {
                        let close = format!("</{}", tag.name);
                        rest = find_ignore_case(rest, &close)
                            .map(|i| &rest[i..])
                            .unwrap_or("");
                    }
                    continue;
                }
                Parsed::NotATag => {
                    w.text("<");
                    rest = &rest[1..];
                    continue;
                }
                // No later `<` could close it either: scanning on would be quadratic.
                Parsed::Unterminated => break,
            }
        }
        let end = rest.find('<').unwrap_or(rest.len());
        w.text(&decode_entities(&rest[..end]));
        rest = &rest[end..];
    }
    w.finish()
}

/// One tag as the scanner read it (also mail::quote's tokenizer for HTML replies).
#[derive(Debug)]
pub(crate) struct Tag {
    /// Lower-cased; `!` for a doctype or processing instruction.
    pub(crate) name: String,
    pub(crate) closing: bool,
    pub(crate) self_closing: bool,
    /// Lower-cased names, entity-decoded values.
    pub(crate) attrs: Vec<(String, String)>,
}

impl Tag {
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What starts at a `<`.
pub(crate) enum Parsed {
    /// A tag and its length in bytes.
    Tag(Tag, usize),
    /// A `<` that is text (`1 < 2`).
    NotATag,
    /// A tag that the input ends inside of.
    Unterminated,
}

/// Parses `<name attr="v" ...>` at the start of `s`.
pub(crate) fn parse_tag(s: &str) -> Parsed {
    let b = s.as_bytes();
    let mut i = 1;
    let closing = b.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    if b.get(i) == Some(&b'!') || b.get(i) == Some(&b'?') {
        // <!DOCTYPE ...>, <?xml ...?>: skipped whole.
        let Some(end) = s.find('>') else {
            return Parsed::Unterminated;
        };
        return Parsed::Tag(
            Tag {
                name: "!".into(),
                closing: false,
                self_closing: true,
                attrs: Vec::new(),
            },
            end + 1,
        );
    }
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b':') {
        i += 1;
    }
    if i == start {
        return Parsed::NotATag;
    }
    let name = s[start..i].to_ascii_lowercase();
    let mut attrs = Vec::new();
    let mut self_closing = false;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        match b.get(i) {
            None => return Parsed::Unterminated,
            Some(b'>') => {
                i += 1;
                break;
            }
            Some(b'/') => {
                self_closing = true;
                i += 1;
                continue;
            }
            _ => {}
        }
        let k0 = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let key = s[k0..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if b.get(i) == Some(&b'=') {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            match b.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let v0 = i + 1;
                    let Some(len) = s[v0..].find(q as char) else {
                        return Parsed::Unterminated;
                    };
                    value = decode_entities(&s[v0..v0 + len]);
                    i = v0 + len + 1;
                }
                _ => {
                    let v0 = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = decode_entities(&s[v0..i]);
                }
            }
        }
        if !key.is_empty() {
            attrs.push((key, value));
        }
    }
    Parsed::Tag(
        Tag {
            name,
            closing,
            self_closing,
            attrs,
        },
        i,
    )
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    (0..h.len().saturating_sub(n.len() - 1)).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Deepest quote or list nesting that still adds a prefix; deeper levels print like this one,
/// so a pile of `<blockquote>`s cannot multiply the output.
const MAX_PREFIX_DEPTH: usize = 16;

#[derive(Default)]
struct Writer {
    out: String,
    /// Newlines owed before the next text (1 line break, 2 paragraph break).
    pending_newlines: usize,
    pending_space: bool,
    /// Inside head/title: nothing is text.
    hidden: usize,
    pre: usize,
    quote: usize,
    /// Open lists: ordered?, next number.
    lists: Vec<(bool, u32)>,
    /// Open links: href and where their text starts in `out`.
    links: Vec<(String, usize)>,
    /// Cells written in the current table row.
    cells: usize,
}

impl Writer {
    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    fn block(&mut self, n: usize) {
        self.pending_newlines = self.pending_newlines.max(n);
        self.pending_space = false;
    }

    fn flush_breaks(&mut self) {
        if self.pending_newlines > 0 && !self.out.is_empty() {
            // Counting only as far as needed keeps a long run of `<br>`s linear.
            let have = self
                .out
                .bytes()
                .rev()
                .take(self.pending_newlines)
                .take_while(|&b| b == b'\n')
                .count();
            for _ in have..self.pending_newlines {
                self.out.push('\n');
            }
        }
        self.pending_newlines = 0;
    }

    fn line_prefix(&mut self) {
        if self.at_line_start() {
            for _ in 0..self.quote.min(MAX_PREFIX_DEPTH) {
                self.out.push_str("> ");
            }
        }
    }

    fn text(&mut self, s: &str) {
        if self.hidden > 0 {
            return;
        }
        if self.pre > 0 {
            for c in s.chars() {
                if c == '\n' {
                    self.out.push('\n');
                } else {
                    self.flush_breaks();
                    self.line_prefix();
                    self.out.push(c);
                }
            }
            return;
        }
        for c in s.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                self.pending_space = true;
                continue;
            }
            self.flush_breaks();
            if self.pending_space && !self.at_line_start() {
                self.out.push(' ');
            }
            self.pending_space = false;
            self.line_prefix();
            self.out.push(if c == '\u{a0}' { ' ' } else { c });
        }
    }

    /// Text that is not from the document (list markers, link targets): no whitespace folding.
    fn raw(&mut self, s: &str) {
        self.flush_breaks();
        if self.pending_space && !self.at_line_start() {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.line_prefix();
        self.out.push_str(s);
    }

    fn tag(&mut self, t: &Tag) {
        let name = t.name.as_str();
        if matches!(name, "head" | "title" | "script" | "style" | "template") {
            if t.closing {
                self.hidden = self.hidden.saturating_sub(1);
            } else if !t.self_closing {
                self.hidden += 1;
            }
            return;
        }
        if self.hidden > 0 {
            return;
        }
        match (name, t.closing) {
            ("br", _) => {
                self.flush_breaks();
                self.out.push('\n');
                self.pending_space = false;
            }
            ("p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "dl" | "address", _) => {
                self.block(2)
            }
            ("blockquote", closing) => {
                self.block(2);
                if closing {
                    self.quote = self.quote.saturating_sub(1);
                } else {
                    self.quote += 1;
                }
            }
            ("pre", closing) => {
                self.block(2);
                if closing {
                    self.pre = self.pre.saturating_sub(1);
                } else {
                    self.pre += 1;
                }
            }
            ("ul" | "ol", false) => {
                self.block(if self.lists.is_empty() { 2 } else { 1 });
                self.lists.push((name == "ol", 1));
            }
            ("ul" | "ol", true) => {
                self.lists.pop();
                self.block(if self.lists.is_empty() { 2 } else { 1 });
            }
            ("li", false) => {
                self.block(1);
                let depth = self.lists.len().saturating_sub(1).min(MAX_PREFIX_DEPTH);
                let marker = match self.lists.last_mut() {
                    Some((true, n)) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => "- ".to_string(),
                };
                self.raw(&format!("{}{marker}", "  ".repeat(depth)));
            }
            ("li" | "dt" | "dd", true) => self.block(1),
            ("tr", false) => {
                self.block(1);
                self.cells = 0;
            }
            ("tr", true) => self.block(1),
            ("td" | "th", false) => {
                if self.cells > 0 {
                    self.raw("  ");
                }
                self.cells += 1;
            }
            ("hr", false) => {
                self.block(2);
                self.raw("----");
                self.block(2);
            }
            (
                "div" | "section" | "article" | "header" | "footer" | "main" | "nav" | "center"
                | "figure" | "form" | "fieldset" | "caption" | "dt" | "dd",
                _,
            ) => self.block(1),
            ("img", false) => {
                if let Some(alt) = t.attr("alt").filter(|a| !a.trim().is_empty()) {
                    self.text(alt);
                }
            }
            ("a", false) => {
                // An `<a>` inside an open one closes it first, as in a browser; nested links
                // would also copy the outer text once per level.
                if !self.links.is_empty() {
                    self.tag(&Tag {
                        name: "a".into(),
                        closing: true,
                        self_closing: false,
                        attrs: Vec::new(),
                    });
                }
                let href = t.attr("href").unwrap_or("").trim().to_string();
                self.links.push((href, self.out.len()));
            }
            ("a", true) => {
                if let Some((href, start)) = self.links.pop() {
                    let text = self.out.get(start..).unwrap_or("").trim().to_string();
                    if shows_link(&href, &text) {
                        if text.is_empty() {
                            self.raw(&href);
                        } else {
                            // Text never ends in a space here (spaces wait in `pending_space`).
                            self.out.push_str(&format!(" <{href}>"));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(mut self) -> String {
        self.pending_newlines = 0;
        let all: Vec<&str> = self.out.lines().map(str::trim_end).collect();
        let first = all.iter().position(|l| !l.is_empty()).unwrap_or(all.len());
        let last = all
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(first, |i| i + 1);
        let lines = &all[first..last.max(first)];
        let mut out = String::with_capacity(self.out.len() + 1);
        let mut blank = 0;
        for &l in lines {
            if l.is_empty() {
                blank += 1;
                if blank > 1 {
                    continue;
                }
            } else {
                blank = 0;
            }
            out.push_str(l);
            out.push('\n');
        }
        self.out = out;
        self.out
    }
}

/// Whether a link's target is worth printing after its text: not for in-page anchors, and not
/// when the text already says it (`<a href="mailto:x@y">x@y</a>`, `tel:` numbers, bare URLs).
fn shows_link(href: &str, text: &str) -> bool {
    if href.is_empty() || href.starts_with('#') {
        return false;
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '(' | ')' | '.'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let target = href
        .strip_prefix("mailto:")
        .or_else(|| href.strip_prefix("tel:"))
        .unwrap_or(href);
    squash(target) != squash(text) && squash(href) != squash(text)
}

/// Decodes HTML character references: the named ones mail templates use, and all numeric ones.
/// Unknown names are left as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest
            .char_indices()
            .take(34)
            .find(|&(_, c)| c == ';')
            .map(|(j, _)| j);
        let decoded = end.and_then(|j| entity(&rest[1..j]).map(|c| (c, j)));
        match decoded {
            Some((c, j)) => {
                out.push(c);
                rest = &rest[j + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let n = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(n).filter(|c| *c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "laquo" => '«',
        "raquo" => '»',
        "lsaquo" => '‹',
        "rsaquo" => '›',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "deg" => '°',
        "times" => '×',
        "divide" => '÷',
        "rarr" => '→',
        "larr" => '←',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "eacute" => 'é',
        "egrave" => 'è',
        "ecirc" => 'ê',
        "agrave" => 'à',
        "aacute" => 'á',
        "acirc" => 'â',
        "ccedil" => 'ç',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "ntilde" => 'ñ',
        "Eacute" => 'É',
        "iexcl" => '¡',
        "iquest" => '¿',
        "shy" => '\u{ad}',
        "zwj" => '\u{200d}',
        "zwnj" => '\u{200c}',
        "lrm" => '\u{200e}',
        "rlm" => '\u{200f}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "paragraphs_are_separated_by_a_blank_line",
                "<p>Hello Raj,</p>\n  <p>we have   your\nrequest.</p>",
                "Hello Raj,\n\nwe have your request.\n",
            ),
            (
                "br_is_a_line_break",
                "<p>Support<br>support@example.com<br/>+1 555</p>",
                "Support\nsupport@example.com\n+1 555\n",
            ),
            (
                "lists",
                "<p>Do:</p><ul><li>one</li><li>two <b>bold</b></li></ul><ol><li>first</li><li>second</li></ol>",
                "Do:\n\n- one\n- two bold\n\n1. first\n2. second\n",
            ),
            (
                "links_show_text_and_url",
                "<p>See <a href=\"https://example.com/kb/1\">the article</a>.</p>",
                "See the article <https://example.com/kb/1>.\n",
            ),
            (
                "mailto_and_tel_links_that_repeat_their_text_are_text",
                "<a href=\"mailto:support@example.com\">support@example.com</a> or <a href=\"tel:+15550100\">+1 555 0100</a>",
                "support@example.com or +1 555 0100\n",
            ),
            (
                "entities_are_decoded",
                "<p>&lt;script&gt; &amp; &ldquo;SEV&nbsp;3&rdquo; &#8211; &#x263A; &unknown; AT&T</p>",
                "<script> & “SEV 3” – ☺ &unknown; AT&T\n",
            ),
            (
                "head_style_script_and_comments_are_dropped",
                "<html><head><title>T</title><style>p{color:red}</style></head><body><!-- note --><script>x<1</script><p>Body</p></body></html>",
                "Body\n",
            ),
            (
                "table_rows_are_lines",
                "<table><tr><td>Severity</td><td>Sev 4</td></tr><tr><td>Status</td><td>In Triage</td></tr></table>",
                "Severity  Sev 4\nStatus  In Triage\n",
            ),
            (
                "blockquote_is_quoted",
                "<p>You wrote:</p><blockquote>Site is down</blockquote><p>Thanks</p>",
                "You wrote:\n\n> Site is down\n\nThanks\n",
            ),
            ("pre_keeps_its_lines", "<pre>a  b\n  c</pre>", "a  b\n  c\n"),
            (
                "images_give_their_alt_text",
                "<p><img src=\"logo.png\" alt=\"Example Corp\"> Support</p>",
                "Example Corp Support\n",
            ),
            (
                "divs_are_lines",
                "<div>one</div><div>two</div>",
                "one\ntwo\n",
            ),
            ("stray_less_than_is_text", "<p>1 < 2</p>", "1 < 2\n"),
            (
                "nested_blockquotes_nest_prefixes",
                "<p>Top</p><blockquote>a<br>b<blockquote>c</blockquote></blockquote>",
                "Top\n\n> a\n> b\n\n> > c\n",
            ),
            (
                "blockquote_divs_are_quoted_lines",
                "<blockquote type=\"cite\"><div>one</div><div>two</div></blockquote>",
                "> one\n> two\n",
            ),
            (
                "unterminated_tag_at_end_is_dropped",
                "<p>Hello</p><a href=\"https://example.com",
                "Hello\n",
            ),
            (
                "link_inside_open_link_closes_it",
                "<a href=\"https://a.example\">one <a href=\"https://b.example\">two</a></a>",
                "one <https://a.example> two <https://b.example>\n",
            ),
            (
                "deep_quotes_stop_adding_prefixes",
                &format!("{}x", "<blockquote>".repeat(40)),
                &format!("{}x\n", "> ".repeat(MAX_PREFIX_DEPTH)),
            ),
        ];
        for (name, html, want) in cases {
            assert_eq!(html_to_text(html), *want, "{name}");
        }
    }

    /// Each of these was quadratic (or worse) before: the test is that it returns at all.
    #[test]
    fn hostile_html_returns() {
        let mib = 1 << 20;
        let inputs = [
            "<!".repeat(mib / 2),
            "<a ".repeat(mib / 3),
            "<a x=\"".repeat(mib / 6),
            "<a href=\"h\">x".repeat(mib / 14),
            "<p><br>".repeat(mib / 7),
            "<ul><li>x".repeat(mib / 9),
            "<blockquote>x<br>".repeat(mib / 17),
            format!("{}x", "<br>".repeat(mib / 4)),
        ];
        for html in &inputs {
            let text = html_to_text(html);
            assert!(text.len() <= 40 * html.len());
        }
    }

    #[test]
    fn decode_entities_handles_edges() {
        assert_eq!(decode_entities("a &amp b"), "a &amp b");
        assert_eq!(decode_entities("&#0;&#xD800;"), "&#0;&#xD800;");
        assert_eq!(decode_entities("&&amp;"), "&&");
    }
}
