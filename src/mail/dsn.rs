//! Bounces and feedback reports: failed recipient, status, the original Message-ID.
//! (Placeholder API while the parser is written.)

use serde::Serialize;

/// What kind of report a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// A permanent delivery failure.
    Bounce,
    /// A delay notice.
    Delay,
    /// An ARF feedback (abuse) report.
    Feedback,
    /// A report of another kind.
    Other,
}

/// One recipient a report names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRecipient {
    /// The address, lower-cased.
    pub address: String,
    /// `failed`, `delayed`, ...
    pub action: Option<String>,
    /// `5.1.1`.
    pub status: Option<String>,
    /// The remote server's words, one line.
    pub diagnostic: Option<String>,
}

/// What a bounce or feedback report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Bounce, delay, feedback.
    pub kind: ReportKind,
    /// The recipients it names.
    pub recipients: Vec<FailedRecipient>,
    /// Message-ID of the mail it is about.
    pub original_message_id: Option<String>,
    /// Other Message-IDs of the returned headers.
    pub original_references: Vec<String>,
    /// Subject of the returned original.
    pub original_subject: Option<String>,
    /// The reporting MTA.
    pub reporting_mta: Option<String>,
}

/// Reads a message as a bounce or feedback report; None when it is not one.
pub fn read_report(_msg: &mail_parser::Message<'_>) -> Option<Report> {
    None
}

/// True when the message looks like a bounce or report by its envelope signals alone.
pub fn looks_like_report(_msg: &mail_parser::Message<'_>) -> bool {
    false
}
