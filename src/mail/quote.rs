//! The new text of a reply: quoted history, attribution lines and signatures removed.
//! (Placeholder while the stripper is written.)

/// The new text of a reply.
pub fn reply_text(text: &str) -> String {
    text.trim().to_string()
}

/// The new text of an HTML-only reply.
pub fn reply_text_from_html(html: &str) -> String {
    reply_text(&crate::outbound::html_text::html_to_text(html))
}
