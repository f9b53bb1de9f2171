//! The HTML of a relayed engineer reply, made safe to send (SPEC: Engineers by mail, "the HTML of
//! a relay keeps the engineer's formatting (sanitised: no script, no remote content that was not
//! in their mail)").
//!
//! An allow-list, not a block-list, built on `ammonia` (html5ever parses the fragment as a
//! browser would, so unclosed and mis-nested tags, entity-encoded or whitespace-split
//! `javascript:` URLs and parser-differential tricks are resolved before anything is judged, and
//! the output is re-serialised, so it is always well-formed):
//! - elements: text formatting, lists, headings, tables, links, images, rules, `font`/`center`
//!   (Outlook still writes them); anything else is unwrapped (its text stays), and `script`,
//!   `style`, `title`, `iframe`, `noscript`, `svg`, `math` and kin go with their content;
//! - attributes: `title`, `align`, a `style` of formatting properties only; `href` on links
//!   (http, https, mailto); `src` on images (`cid:` parts of the relay, `data:image/*` bitmaps,
//!   and `http(s)` as the engineer wrote them: this never adds a remote URL, it only keeps one
//!   that was in their mail); sizes, `colspan`/`rowspan`, `font` colour/face/size;
//! - no event handlers, comments (Outlook's conditional comments included), forms, `meta`,
//!   `base`, `link`, or relative URLs (there is no page they could be relative to).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use ammonia::{Builder, UrlRelative};

/// Elements kept (their allowed attributes below); the rest are unwrapped.
const TAGS: &[&str] = &[
    "p",
    "div",
    "span",
    "br",
    "b",
    "strong",
    "i",
    "em",
    "u",
    "s",
    "strike",
    "sub",
    "sup",
    "blockquote",
    "pre",
    "code",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "td",
    "th",
    "a",
    "img",
    "hr",
    "font",
    "small",
    "big",
    "center",
];
/// Elements removed with everything inside them: their content is code, metadata or a document
/// of its own, never the engineer's text.
const REMOVED_WITH_CONTENT: &[&str] = &[
    "script", "style", "title", "iframe", "noscript", "noembed", "noframes", "template", "svg",
    "math", "object", "xmp",
];
/// Attributes any kept element may have.
const GENERIC_ATTRIBUTES: &[&str] = &["title", "align", "style"];
/// Attributes of particular elements.
const TAG_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("a", &["href"]),
    ("img", &["src", "alt", "width", "height"]),
    (
        "table",
        &["width", "height", "cellpadding", "cellspacing", "border"],
    ),
    ("td", &["width", "height", "colspan", "rowspan", "valign"]),
    ("th", &["width", "height", "colspan", "rowspan", "valign"]),
    ("font", &["color", "face", "size"]),
];
/// CSS properties a `style` attribute keeps: how text looks and how boxes are spaced and ruled.
const STYLE_PROPERTIES: &[&str] = &[
    "color",
    "background-color",
    "font-weight",
    "font-style",
    "text-decoration",
    "font-size",
    "font-family",
    "text-align",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-collapse",
    "border-spacing",
    "border-radius",
];
/// Every scheme any URL attribute may have; which attribute takes which is `url_allowed`.
const URL_SCHEMES: &[&str] = &["http", "https", "mailto", "cid", "data"];
/// Image types a `data:` URL may carry: bitmaps only (an SVG is a document that can script).
const DATA_IMAGE_TYPES: &[&str] = &["png", "gif", "jpeg", "jpg", "webp", "bmp"];

static CLEANER: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut b = Builder::empty();
    b.tags(TAGS.iter().copied().collect())
        .clean_content_tags(REMOVED_WITH_CONTENT.iter().copied().collect())
        .generic_attributes(GENERIC_ATTRIBUTES.iter().copied().collect())
        .tag_attributes(
            TAG_ATTRIBUTES
                .iter()
                .map(|(tag, attrs)| (*tag, attrs.iter().copied().collect::<HashSet<_>>()))
                .collect::<HashMap<_, _>>(),
        )
        .filter_style_properties(STYLE_PROPERTIES.iter().copied().collect())
        .url_schemes(URL_SCHEMES.iter().copied().collect())
        .url_relative(UrlRelative::Deny)
        .strip_comments(true)
        .link_rel(Some("noopener noreferrer"))
        .attribute_filter(|element, attribute, value| match attribute {
            "href" | "src" => {
                url_allowed(element, attribute, value).then_some(Cow::Borrowed(value))
            }
            "style" => style_allowed(value).then_some(Cow::Borrowed(value)),
            _ => Some(Cow::Borrowed(value)),
        });
    b
});

/// The engineer's HTML reduced to the formatting the relay may carry (see the module doc).
pub fn clean_html(fragment: &str) -> String {
    CLEANER.clean(fragment).to_string()
}

/// Which scheme each URL attribute may use. ammonia has already parsed the URL (entities
/// decoded, tabs and newlines removed as a browser does) and checked it against `URL_SCHEMES`;
/// this narrows it per attribute.
fn url_allowed(element: &str, attribute: &str, value: &str) -> bool {
    let url: String = value
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .flat_map(char::to_lowercase)
        .collect();
    let scheme = |s: &str| url.strip_prefix(s).and_then(|r| r.strip_prefix(':'));
    match (element, attribute) {
        ("a", "href") => ["http", "https", "mailto"]
            .iter()
            .any(|s| scheme(s).is_some()),
        ("img", "src") => {
            ["cid", "http", "https"].iter().any(|s| scheme(s).is_some())
                || scheme("data")
                    .and_then(|d| d.strip_prefix("image/"))
                    .is_some_and(|d| {
                        DATA_IMAGE_TYPES
                            .iter()
                            .any(|t| d.strip_prefix(t).is_some_and(|r| r.starts_with([';', ','])))
                    })
        }
        _ => false,
    }
}

/// A `style` that names nothing outside itself and runs nothing: no `url(`, no IE
/// `expression(`/`behavior`, no `@import`, no escapes that could spell them. Its properties are
/// then cut down to `STYLE_PROPERTIES`.
fn style_allowed(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    ![
        "url(",
        "expression",
        "@import",
        "behavior",
        "-moz-binding",
        "javascript:",
        "\\",
        "/*",
    ]
    .iter()
    .any(|bad| v.contains(bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_html_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("script_goes_with_its_content", "<p>Hi</p><script>alert(1)</script>", "<p>Hi</p>"),
            ("img_onerror_goes_image_stays", "<img src=\"cid:logo@x\" onerror=\"alert(1)\">", "<img src=\"cid:logo@x\">"),
            ("javascript_href_goes", "<a href=\"javascript:alert(1)\">x</a>", "<a rel=\"noopener noreferrer\">x</a>"),
            ("tab_split_javascript_href_goes", "<a href=\"jav&#x09;ascript:alert(1)\">x</a>", "<a rel=\"noopener noreferrer\">x</a>"),
            ("entity_encoded_javascript_href_goes", "<a href=\"&#106;avascript:alert(1)\">x</a>", "<a rel=\"noopener noreferrer\">x</a>"),
            ("leading_space_and_case_javascript_href_goes", "<a href=\" JaVaScRiPt:alert(1)\">x</a>", "<a rel=\"noopener noreferrer\">x</a>"),
            ("vbscript_href_goes", "<a href=\"vbscript:msgbox(1)\">x</a>", "<a rel=\"noopener noreferrer\">x</a>"),
            ("data_href_goes", "<a href=\"data:text/html,<script>alert(1)</script>\">x</a>", "<a rel=\"noopener noreferrer\">x</a>"),
            ("https_href_stays", "<a href=\"https://example.com/kb?a=1&amp;b=2\">kb</a>", "<a href=\"https://example.com/kb?a=1&amp;b=2\" rel=\"noopener noreferrer\">kb</a>"),
            ("mailto_href_stays", "<a href=\"mailto:support@example.com\">mail</a>", "<a href=\"mailto:support@example.com\" rel=\"noopener noreferrer\">mail</a>"),
            ("relative_href_goes", "<a href=\"/admin\">x</a>", "<a rel=\"noopener noreferrer\">x</a>"),
            ("style_expression_goes", "<p style=\"width: expression(alert(1))\">x</p>", "<p>x</p>"),
            ("style_url_goes", "<p style=\"background-image: url(https://evil.test/t.gif)\">x</p>", "<p>x</p>"),
            ("style_escape_goes", "<p style=\"background:u\\72l(https://evil.test/t.gif)\">x</p>", "<p>x</p>"),
            ("style_import_goes", "<p style=\"@import 'https://evil.test/x.css'\">x</p>", "<p>x</p>"),
            ("style_keeps_formatting_properties", "<span style=\"color: red; position: fixed; font-weight: bold\">x</span>", "<span style=\"color:red;font-weight:bold\">x</span>"),
            ("svg_onload_goes_with_content", "<svg onload=\"alert(1)\"><text>x</text></svg><p>ok</p>", "<p>ok</p>"),
            ("math_goes", "<math><mi href=\"javascript:alert(1)\">x</mi></math>ok", "ok"),
            ("iframe_goes", "<iframe src=\"https://evil.test\">fallback</iframe><p>ok</p>", "<p>ok</p>"),
            ("meta_refresh_goes", "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.test\"><p>ok</p>", "<p>ok</p>"),
            ("base_and_link_go", "<base href=\"https://evil.test/\"><link rel=\"stylesheet\" href=\"https://evil.test/x.css\">ok", "ok"),
            ("form_controls_go_text_stays", "<form action=\"https://evil.test\"><input name=\"p\" value=\"v\"><button>Send</button></form>", "Send"),
            ("object_and_embed_go", "<object data=\"x.swf\">alt</object><embed src=\"x.swf\">ok", "ok"),
            ("comments_go", "<p>a<!-- secret --></p>", "<p>a</p>"),
            ("conditional_comments_go", "<!--[if mso]><style>p{}</style><![endif]--><p>a</p>", "<p>a</p>"),
            ("event_handlers_on_kept_tags_go", "<div onclick=\"x()\" onmouseover=\"y()\">a</div>", "<div>a</div>"),
            ("unclosed_tags_are_closed", "<div><b>bold<i>both", "<div><b>bold<i>both</i></b></div>"),
            ("misnested_tags_are_fixed", "<b><i>x</b></i>", "<b><i>x</i></b>"),
            ("tag_in_attribute_stays_text", "<p title=\"&lt;script&gt;\">a</p>", "<p title=\"&lt;script&gt;\">a</p>"),
            ("broken_script_tag_goes", "<scr<script>ipt>alert(1)</script>", "ipt&gt;alert(1)"),
            ("remote_img_src_is_kept_not_added", "<img src=\"https://example.com/logo.png\" alt=\"logo\">", "<img src=\"https://example.com/logo.png\" alt=\"logo\">"),
            ("data_png_img_stays", "<img src=\"data:image/png;base64,iVBORw0KGgo=\">", "<img src=\"data:image/png;base64,iVBORw0KGgo=\">"),
            ("data_svg_img_goes", "<img src=\"data:image/svg+xml;base64,PHN2Zz4=\">", "<img>"),
            ("javascript_img_src_goes", "<img src=\"javascript:alert(1)\">", "<img>"),
            ("formatting_stays", "<p align=\"center\"><b>B</b> <i>I</i> <u>U</u> <s>S</s> <sub>2</sub></p><ul><li>one</li></ul><blockquote>q</blockquote><pre><code>x  y</code></pre><hr>", "<p align=\"center\"><b>B</b> <i>I</i> <u>U</u> <s>S</s> <sub>2</sub></p><ul><li>one</li></ul><blockquote>q</blockquote><pre><code>x  y</code></pre><hr>"),
            ("tables_stay", "<table border=\"1\"><tbody><tr><th colspan=\"2\">h</th></tr><tr><td rowspan=\"1\">a</td></tr></tbody></table>", "<table border=\"1\"><tbody><tr><th colspan=\"2\">h</th></tr><tr><td rowspan=\"1\">a</td></tr></tbody></table>"),
            ("outlook_font_stays", "<font face=\"Calibri\" color=\"#1F497D\" size=\"2\">x</font>", "<font face=\"Calibri\" color=\"#1F497D\" size=\"2\">x</font>"),
            ("classes_and_ids_go", "<div class=\"gmail_default\" id=\"x\">a</div>", "<div>a</div>"),
        ];
        let failed: Vec<String> = cases
            .iter()
            .filter(|(_, input, want)| clean_html(input) != *want)
            .map(|(name, input, want)| {
                format!("{name}:\n  got  {:?}\n  want {want:?}", clean_html(input))
            })
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }

    #[test]
    fn nothing_executable_survives() {
        let nasty = concat!(
            "<img src=x onerror=alert(1)><svg><script>alert(1)</script></svg>",
            "<a href='jav\nascript:alert(1)'>a</a><a href=\"java&#0000115;cript:alert(1)\">b</a>",
            "<div style=\"behavior: url(x.htc)\">c</div><p/onmouseover=alert(1)>d</p>",
            "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        );
        let out = clean_html(nasty).to_ascii_lowercase();
        for bad in [
            "<script",
            "onerror",
            "onmouseover",
            "javascript",
            "behavior",
            "<svg",
            "<style",
        ] {
            assert!(!out.contains(bad), "{bad} in {out}");
        }
    }
}
