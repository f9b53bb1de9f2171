//! The commands at the top of a staff member's mail (SPEC: Engineers by mail): `#status <name>`,
//! `#severity <1-4>`, `#assign <me|address>`, `#note` and `#solved`, parsed from the new text of
//! the reply into typed commands, one rejection per line that is wrong (SPEC: "unknown or
//! malformed commands are rejected back to the engineer by mail"), and the body that is left.
//! Pure: no IO, no clock; who may use which command beyond [`account_manager_limits`] is
//! `decide`'s business.
//!
//! The rules:
//! - A command line is a line whose trimmed text starts with `#` immediately followed by an ASCII
//!   letter; `#1234 is broken` and `# heading` are text. Names are case-insensitive, an optional
//!   `:` may follow the name (`#severity: 4`), and spaces around arguments do not matter.
//! - Only the command block counts: the run of command lines at the very top, with blank lines
//!   allowed before and between them. The first other non-blank line ends it; a `#word` line
//!   below is ordinary text. A quoted line (`>`) is never a command and ends the block.
//! - `#status` takes one of the five statuses as `Status::from_str` reads them (`closed`,
//!   `In Triage`, `engineer-pending`); `#severity` a single number 1..4; `#assign` `me` or one
//!   address `local@domain` (optionally in `<>`), lower-cased; `#note` and `#solved` nothing.
//! - Each line gets one outcome, checked in this order: unknown name (with a suggestion when a
//!   known name is within two edits, and `#solved` / `#status closed` for the customer's
//!   `#close`); the same command a second time; a conflict with an earlier line (`#solved` with
//!   `#status`: both set the status; `#note` with `#solved`: solving tells the customer, and a
//!   note must never reach them); then a missing, extra or invalid argument. `#note` may go
//!   with `#status`, `#severity` and `#assign`: an internal note that also changes fields.
//! - The body is the text after the block, unchanged (line endings included); blank lines that
//!   lead it are dropped, so without a block it is the text without its leading blank lines.
//! - Trailing `\r`, a byte-order mark and non-breaking spaces around a line are not text.

use serde::Serialize;

use crate::desk::severity::Severity;
use crate::desk::status::Status;

/// One thing a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `#status <name>`: set the ticket's status.
    Status(Status),
    /// `#severity <1-4>`: set the ticket's severity.
    Severity(Severity),
    /// `#assign <me|address>`: give the ticket to someone.
    Assign(Assignee),
    /// `#note`: keep this message internal; never sent to the customer.
    Note,
    /// `#solved`: the engineer marks the ticket solved (close_pending, customer told).
    Solved,
}

impl Command {
    /// The command as staff write it (`#status`).
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    fn kind(&self) -> Kind {
        match self {
            Command::Status(_) => Kind::Status,
            Command::Severity(_) => Kind::Severity,
            Command::Assign(_) => Kind::Assign,
            Command::Note => Kind::Note,
            Command::Solved => Kind::Solved,
        }
    }
}

/// Whom `#assign` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignee {
    /// `#assign me`: the sender of the mail.
    Me,
    /// `#assign someone@example.com`, lower-cased.
    Address(String),
}

/// A command line that was understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct CommandLine {
    /// 1-based line number in the text.
    pub line: u32,
    /// The line as written, trimmed.
    pub text: String,
    /// What it asks for.
    pub command: Command,
}

/// A command line that is wrong, with words for the engineer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Rejected {
    /// 1-based line number in the text.
    pub line: u32,
    /// The line as written, trimmed.
    pub text: String,
    /// What is wrong with it, for the rejection mail.
    pub problem: String,
}

/// The command block of a mail and the text that follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Commands {
    /// The understood commands, in line order.
    pub commands: Vec<CommandLine>,
    /// The wrong command lines, in line order.
    pub rejected: Vec<Rejected>,
    /// The text without the command block and without leading blank lines.
    pub body: String,
}

impl Commands {
    /// True when no command line was wrong, so the mail may be acted on.
    pub fn is_accepted(&self) -> bool {
        self.rejected.is_empty()
    }

    /// True when the mail carries `#note` (keep it internal).
    pub fn is_note(&self) -> bool {
        self.has(|c| *c == Command::Note)
    }

    /// True when the mail carries `#solved`.
    pub fn is_solved(&self) -> bool {
        self.has(|c| *c == Command::Solved)
    }

    /// True when some understood command matches `pred`.
    pub fn has(&self, pred: impl Fn(&Command) -> bool) -> bool {
        self.commands.iter().any(|c| pred(&c.command))
    }

    /// The status `#status` asks for.
    pub fn status(&self) -> Option<Status> {
        self.commands.iter().find_map(|c| match c.command {
            Command::Status(s) => Some(s),
            _ => None,
        })
    }

    /// The severity `#severity` asks for.
    pub fn severity(&self) -> Option<Severity> {
        self.commands.iter().find_map(|c| match c.command {
            Command::Severity(s) => Some(s),
            _ => None,
        })
    }

    /// Whom `#assign` names.
    pub fn assignee(&self) -> Option<&Assignee> {
        self.commands.iter().find_map(|c| match &c.command {
            Command::Assign(a) => Some(a),
            _ => None,
        })
    }
}

/// Reads the command block at the top of `text` (see the module doc for the rules).
pub fn parse(text: &str) -> Commands {
    let mut commands = Vec::new();
    let mut rejected = Vec::new();
    // The first line of each known command, for duplicates and conflicts.
    let mut seen: Vec<(Kind, u32)> = Vec::new();
    let mut body_start = text.len();
    let mut offset = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += raw.len();
        let trimmed = trim(raw);
        if trimmed.is_empty() {
            continue;
        }
        if !is_command_line(trimmed) {
            body_start = start;
            break;
        }
        let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
        match read_line(trimmed, &mut seen, line) {
            Ok(command) => commands.push(CommandLine {
                line,
                text: trimmed.to_string(),
                command,
            }),
            Err(problem) => rejected.push(Rejected {
                line,
                text: trimmed.to_string(),
                problem,
            }),
        }
    }
    let body = text[body_start..]
        .trim_start_matches('\u{feff}')
        .to_string();
    Commands {
        commands,
        rejected,
        body,
    }
}

/// The commands an account manager may use: #note only. Returns a Rejected per other command line.
pub fn account_manager_limits(c: &Commands) -> Vec<Rejected> {
    c.commands
        .iter()
        .filter(|l| l.command != Command::Note)
        .map(|l| Rejected {
            line: l.line,
            text: l.text.clone(),
            problem: format!(
                "account managers may only add notes with #note; {} is for engineers",
                l.command.name()
            ),
        })
        .collect()
}

/// The commands by name, without their arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Status,
    Severity,
    Assign,
    Note,
    Solved,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Status,
        Kind::Severity,
        Kind::Assign,
        Kind::Note,
        Kind::Solved,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Status => "#status",
            Kind::Severity => "#severity",
            Kind::Assign => "#assign",
            Kind::Note => "#note",
            Kind::Solved => "#solved",
        }
    }

    /// Reads a name written without `#`, in any case.
    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str()[1..].eq_ignore_ascii_case(name))
    }

    /// Why `self` may not follow `earlier` in one mail, if it may not.
    fn conflict(self, earlier: Kind) -> Option<&'static str> {
        match (self, earlier) {
            (Kind::Solved, Kind::Status) | (Kind::Status, Kind::Solved) => {
                Some("both set the status (#solved means close_pending); use one of them")
            }
            (Kind::Solved, Kind::Note) | (Kind::Note, Kind::Solved) => {
                Some("#solved tells the customer and a note must never reach them; send them apart")
            }
            _ => None,
        }
    }
}

/// A line without surrounding whitespace, `\r`, non-breaking spaces or a byte-order mark.
fn trim(line: &str) -> &str {
    line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// `#` and then an ASCII letter; `#1234` and `# heading` are text.
fn is_command_line(trimmed: &str) -> bool {
    let mut chars = trimmed.chars();
    chars.next() == Some('#') && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// The command on one command line, or the problem with it. Records the line in `seen` the
/// first time its command appears, right or wrong, so later lines are judged against it.
fn read_line(trimmed: &str, seen: &mut Vec<(Kind, u32)>, line: u32) -> Result<Command, String> {
    let after_hash = &trimmed[1..];
    let name_end = after_hash
        .find(|c: char| c.is_whitespace() || c == ':')
        .unwrap_or(after_hash.len());
    let name = &after_hash[..name_end];
    let rest = after_hash[name_end..].trim_start();
    let argument = trim(rest.strip_prefix(':').unwrap_or(rest));

    let kind = Kind::from_name(name).ok_or_else(|| unknown(name))?;
    if let Some((_, first)) = seen.iter().find(|(k, _)| *k == kind) {
        return Err(format!(
            "{} is given twice (first on line {first}); give each command once",
            kind.as_str()
        ));
    }
    let conflict = seen
        .iter()
        .find_map(|&(k, at)| kind.conflict(k).map(|why| (k, at, why)));
    seen.push((kind, line));
    if let Some((other, at, why)) = conflict {
        return Err(format!(
            "{} cannot go with {} on line {at}: {why}",
            kind.as_str(),
            other.as_str()
        ));
    }
    read_argument(kind, argument)
}

fn read_argument(kind: Kind, argument: &str) -> Result<Command, String> {
    let words: Vec<&str> = argument.split_whitespace().collect();
    match kind {
        Kind::Status if words.is_empty() => Err(format!(
            "#status needs a status: {}",
            status_names().join(", ")
        )),
        // Spaces inside are the label's (`In Triage`); runs of them count as one.
        Kind::Status => words
            .join(" ")
            .parse::<Status>()
            .map(Command::Status)
            .map_err(|e| e.to_string()),
        Kind::Severity => match words.as_slice() {
            [] => Err("#severity needs a number: 1, 2, 3 or 4".to_string()),
            [n] => n
                .parse::<Severity>()
                .map(Command::Severity)
                .map_err(|e| e.to_string()),
            _ => Err(format!(
                "#severity takes one number, 1, 2, 3 or 4, not `{argument}`"
            )),
        },
        Kind::Assign => match words.as_slice() {
            [] => Err("#assign needs `me` or an address".to_string()),
            [who] if who.eq_ignore_ascii_case("me") => Ok(Command::Assign(Assignee::Me)),
            [who] => address(who)
                .map(|a| Command::Assign(Assignee::Address(a)))
                .ok_or_else(|| {
                    format!(
                        "`{who}` is not an address: write #assign me or #assign name@example.com"
                    )
                }),
            _ => Err(format!(
                "#assign takes `me` or one address, not `{argument}`"
            )),
        },
        Kind::Note if words.is_empty() => Ok(Command::Note),
        Kind::Note => Err(format!(
            "#note takes nothing after it (`{argument}`); write the note below the command lines"
        )),
        Kind::Solved if words.is_empty() => Ok(Command::Solved),
        Kind::Solved => Err(format!(
            "#solved takes nothing after it (`{argument}`); write the message below the command lines"
        )),
    }
}

fn status_names() -> Vec<&'static str> {
    Status::ALL.iter().map(|s| s.as_str()).collect()
}

/// The problem for a name no command has, with the nearest known one as a hint.
fn unknown(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    // `#close` is the customer's word; engineers reaching for it mean one of these.
    if lower == "close" || lower == "closed" {
        return format!("unknown command `#{name}` (did you mean #solved, or #status closed?)");
    }
    let nearest = Kind::ALL
        .into_iter()
        .map(|k| (edit_distance(&lower, &k.as_str()[1..]), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d);
    match nearest {
        Some((_, k)) => format!("unknown command `#{name}` (did you mean {}?)", k.as_str()),
        None => format!(
            "unknown command `#{name}`: the commands are #status, #severity, #assign, #note and #solved"
        ),
    }
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// A plausible address, lower-cased: one `@`, a non-empty local part without specials, and a
/// domain of non-empty dot-separated labels (a dot is not required: `eng@localhost`).
fn address(word: &str) -> Option<String> {
    let word = word
        .strip_prefix('<')
        .and_then(|w| w.strip_suffix('>'))
        .unwrap_or(word);
    let (local, domain) = word.split_once('@')?;
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"<>()[]\\,;:\"@".contains(c));
    let domain_ok = domain
        .split('.')
        .all(|label| !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-'));
    (local_ok && domain_ok).then(|| word.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::{Assign, Note, Solved};

    /// (rule, text, understood commands by line, rejections as (line, words the problem holds)).
    type Case = (
        &'static str,
        &'static str,
        Vec<(u32, Command)>,
        Vec<(u32, &'static str)>,
    );

    fn st(s: Status) -> Command {
        Command::Status(s)
    }

    fn sev(n: i64) -> Command {
        match Severity::try_from(n) {
            Ok(s) => Command::Severity(s),
            Err(e) => panic!("test table: {e}"),
        }
    }

    fn addr(a: &str) -> Command {
        Assign(Assignee::Address(a.to_string()))
    }

    fn check(cases: Vec<Case>) {
        for (rule, text, want_commands, want_rejected) in cases {
            let got = parse(text);
            let commands: Vec<(u32, Command)> = got
                .commands
                .iter()
                .map(|c| (c.line, c.command.clone()))
                .collect();
            assert_eq!(commands, want_commands, "{rule}: commands");
            assert_eq!(
                got.rejected.len(),
                want_rejected.len(),
                "{rule}: rejected {:?}",
                got.rejected
            );
            for (r, (line, words)) in got.rejected.iter().zip(want_rejected) {
                assert_eq!(r.line, line, "{rule}: rejected line");
                assert!(
                    r.problem.contains(words),
                    "{rule}: problem {:?} should say {words:?}",
                    r.problem
                );
            }
        }
    }

    #[test]
    fn each_command_alone() {
        check(vec![
            (
                "status_by_name",
                "#status closed\nDone.",
                vec![(1, st(Status::Closed))],
                vec![],
            ),
            (
                "status_by_label",
                "#status In Triage",
                vec![(1, st(Status::InTriage))],
                vec![],
            ),
            (
                "status_with_hyphen",
                "#status engineer-pending",
                vec![(1, st(Status::EngineerPending))],
                vec![],
            ),
            (
                "status_label_spaces_collapse",
                "#status  customer   pending",
                vec![(1, st(Status::CustomerPending))],
                vec![],
            ),
            ("severity_number", "#severity 2", vec![(1, sev(2))], vec![]),
            (
                "severity_with_colon",
                "#severity: 4",
                vec![(1, sev(4))],
                vec![],
            ),
            (
                "colon_without_space",
                "#severity:3",
                vec![(1, sev(3))],
                vec![],
            ),
            (
                "assign_me",
                "#assign me",
                vec![(1, Assign(Assignee::Me))],
                vec![],
            ),
            (
                "assign_me_any_case",
                "#assign ME",
                vec![(1, Assign(Assignee::Me))],
                vec![],
            ),
            (
                "assign_address_lower_cased",
                "#assign Jane.Doe@Example.COM",
                vec![(1, addr("jane.doe@example.com"))],
                vec![],
            ),
            (
                "assign_address_in_brackets",
                "#assign <jane@example.com>",
                vec![(1, addr("jane@example.com"))],
                vec![],
            ),
            (
                "assign_dotless_domain",
                "#assign eng@localhost",
                vec![(1, addr("eng@localhost"))],
                vec![],
            ),
            ("note", "#note\nCustomer is upset.", vec![(1, Note)], vec![]),
            (
                "solved",
                "#solved\nFixed in 2.3.",
                vec![(1, Solved)],
                vec![],
            ),
            (
                "names_case_insensitive",
                "#STATUS Closed\n#Severity 3\n#NoTe",
                vec![(1, st(Status::Closed)), (2, sev(3)), (3, Note)],
                vec![],
            ),
            (
                "extra_spaces_everywhere",
                "   #status   :   closed   ",
                vec![(1, st(Status::Closed))],
                vec![],
            ),
        ]);
    }

    #[test]
    fn block_rules() {
        check(vec![
            (
                "several_commands_together",
                "#assign me\n#severity 3\n#status customer_pending\n\nPlease send logs.",
                vec![
                    (1, Assign(Assignee::Me)),
                    (2, sev(3)),
                    (3, st(Status::CustomerPending)),
                ],
                vec![],
            ),
            (
                "note_combines_with_field_changes",
                "#note\n#status engineer_pending\n#severity 1\n#assign a@b",
                vec![
                    (1, Note),
                    (2, st(Status::EngineerPending)),
                    (3, sev(1)),
                    (4, addr("a@b")),
                ],
                vec![],
            ),
            (
                "no_commands",
                "Hello,\nthanks for the logs.",
                vec![],
                vec![],
            ),
            ("empty_text", "", vec![], vec![]),
            (
                "blank_lines_before_and_inside_block",
                "\n\n#status closed\n\n   \n#severity 4\n\nText",
                vec![(3, st(Status::Closed)), (6, sev(4))],
                vec![],
            ),
            (
                "command_below_text_is_text",
                "Please run\n#status closed",
                vec![],
                vec![],
            ),
            (
                "block_ends_at_first_text_line",
                "#note\nsee below\n#solved\n#sevrity 9",
                vec![(1, Note)],
                vec![],
            ),
            (
                "quoted_command_is_not_a_command",
                "> #status closed\n> #solved",
                vec![],
                vec![],
            ),
            (
                "quote_ends_the_block",
                "#note\n> #solved\n#status closed",
                vec![(1, Note)],
                vec![],
            ),
            (
                "indented_quote_ends_the_block",
                "  > #status closed",
                vec![],
                vec![],
            ),
            (
                "hash_number_is_text",
                "#1234 is broken\n#status closed",
                vec![],
                vec![],
            ),
            (
                "hash_space_heading_is_text",
                "# Heading\n#status closed",
                vec![],
                vec![],
            ),
            (
                "hash_non_ascii_letter_is_text",
                "#état des lieux",
                vec![],
                vec![],
            ),
            (
                "crlf_line_endings",
                "#status closed\r\n\r\n#severity 3\r\nBody\r\n",
                vec![(1, st(Status::Closed)), (3, sev(3))],
                vec![],
            ),
            (
                "bom_and_non_breaking_spaces",
                "\u{feff}#note\n\u{a0}\u{a0}#assign me\u{a0}\r\n",
                vec![(1, Note), (2, Assign(Assignee::Me))],
                vec![],
            ),
        ]);
    }

    #[test]
    fn rejections() {
        check(vec![
            (
                "unknown_with_suggestion",
                "#sevrity 9",
                vec![],
                vec![(1, "unknown command `#sevrity` (did you mean #severity?)")],
            ),
            (
                "unknown_suggests_nearest",
                "#stats closed",
                vec![],
                vec![(1, "did you mean #status?")],
            ),
            (
                "unknown_without_suggestion",
                "#escalate now",
                vec![],
                vec![(1, "unknown command `#escalate`: the commands are")],
            ),
            (
                "close_hints_solved_or_status",
                "#close",
                vec![],
                vec![(1, "did you mean #solved, or #status closed?")],
            ),
            (
                "closed_hints_solved_or_status",
                "#Closed",
                vec![],
                vec![(1, "#status closed")],
            ),
            (
                "unknown_does_not_stop_the_block",
                "#foo\n#status closed",
                vec![(2, st(Status::Closed))],
                vec![(1, "unknown command `#foo`")],
            ),
            (
                "status_missing_argument",
                "#status",
                vec![],
                vec![(
                    1,
                    "#status needs a status: in_triage, engineer_pending, customer_pending, close_pending, closed",
                )],
            ),
            (
                "status_colon_no_argument",
                "#status:",
                vec![],
                vec![(1, "#status needs a status")],
            ),
            (
                "status_unknown_lists_valid",
                "#status open",
                vec![],
                vec![(
                    1,
                    "unknown status `open`: expected in_triage, engineer_pending",
                )],
            ),
            (
                "status_extra_word",
                "#status closed now",
                vec![],
                vec![(1, "unknown status `closed now`")],
            ),
            (
                "severity_missing",
                "#severity",
                vec![],
                vec![(1, "#severity needs a number")],
            ),
            (
                "severity_out_of_range",
                "#severity 5",
                vec![],
                vec![(1, "`5` is not a severity")],
            ),
            (
                "severity_zero",
                "#severity 0",
                vec![],
                vec![(1, "`0` is not a severity")],
            ),
            (
                "severity_not_a_number",
                "#severity high",
                vec![],
                vec![(1, "`high` is not a severity")],
            ),
            (
                "severity_sev_prefix_is_strict",
                "#severity sev3",
                vec![],
                vec![(1, "`sev3` is not a severity")],
            ),
            (
                "severity_two_numbers",
                "#severity 3 4",
                vec![],
                vec![(1, "#severity takes one number")],
            ),
            (
                "assign_missing",
                "#assign",
                vec![],
                vec![(1, "#assign needs `me` or an address")],
            ),
            (
                "assign_no_at",
                "#assign jane",
                vec![],
                vec![(1, "`jane` is not an address")],
            ),
            (
                "assign_two_ats",
                "#assign a@b@c",
                vec![],
                vec![(1, "is not an address")],
            ),
            (
                "assign_empty_local",
                "#assign @example.com",
                vec![],
                vec![(1, "is not an address")],
            ),
            (
                "assign_empty_domain",
                "#assign jane@",
                vec![],
                vec![(1, "is not an address")],
            ),
            (
                "assign_bad_domain_label",
                "#assign jane@example..com",
                vec![],
                vec![(1, "is not an address")],
            ),
            (
                "assign_two_words",
                "#assign jane doe",
                vec![],
                vec![(1, "#assign takes `me` or one address")],
            ),
            (
                "note_with_argument",
                "#note customer is upset",
                vec![],
                vec![(1, "#note takes nothing after it")],
            ),
            (
                "solved_with_argument",
                "#solved yes",
                vec![],
                vec![(1, "#solved takes nothing after it")],
            ),
        ]);
    }

    #[test]
    fn duplicates_and_conflicts() {
        check(vec![
            (
                "status_twice_same_value",
                "#status closed\n#status closed",
                vec![(1, st(Status::Closed))],
                vec![(2, "#status is given twice (first on line 1)")],
            ),
            (
                "status_twice_other_value",
                "#status closed\n#status in_triage",
                vec![(1, st(Status::Closed))],
                vec![(2, "#status is given twice")],
            ),
            (
                "severity_twice",
                "#severity 3\n\n#severity: 3",
                vec![(1, sev(3))],
                vec![(3, "#severity is given twice (first on line 1)")],
            ),
            (
                "assign_twice",
                "#assign me\n#assign a@b",
                vec![(1, Assign(Assignee::Me))],
                vec![(2, "#assign is given twice")],
            ),
            (
                "note_twice",
                "#note\n#NOTE",
                vec![(1, Note)],
                vec![(2, "#note is given twice")],
            ),
            (
                "solved_twice",
                "#solved\n#solved",
                vec![(1, Solved)],
                vec![(2, "#solved is given twice")],
            ),
            (
                "malformed_first_still_counts_for_duplicates",
                "#severity 9\n#severity 3",
                vec![],
                vec![
                    (1, "`9` is not a severity"),
                    (2, "#severity is given twice"),
                ],
            ),
            (
                "solved_after_status_conflicts",
                "#status closed\n#solved",
                vec![(1, st(Status::Closed))],
                vec![(2, "#solved cannot go with #status on line 1")],
            ),
            (
                "status_after_solved_conflicts",
                "#solved\n#status closed",
                vec![(1, Solved)],
                vec![(2, "#status cannot go with #solved on line 1")],
            ),
            (
                "solved_after_note_conflicts",
                "#note\n#solved",
                vec![(1, Note)],
                vec![(
                    2,
                    "#solved cannot go with #note on line 1: #solved tells the customer",
                )],
            ),
            (
                "note_after_solved_conflicts",
                "#solved\n#note",
                vec![(1, Solved)],
                vec![(2, "#note cannot go with #solved")],
            ),
            (
                "solved_with_severity_and_assign_is_fine",
                "#solved\n#severity 4\n#assign me",
                vec![(1, Solved), (2, sev(4)), (3, Assign(Assignee::Me))],
                vec![],
            ),
        ]);
    }

    #[test]
    fn body_is_the_text_after_the_block() {
        // (rule, text, body)
        let cases = [
            (
                "body_after_commands",
                "#status closed\n#severity 3\n\nFixed.\n\nRegards",
                "Fixed.\n\nRegards",
            ),
            (
                "body_without_block_drops_leading_blanks",
                "\n \n\nHello\n\n#status closed\n",
                "Hello\n\n#status closed\n",
            ),
            (
                "body_keeps_line_endings",
                "#note\r\n\r\nLine one\r\nLine two\r\n",
                "Line one\r\nLine two\r\n",
            ),
            (
                "body_keeps_first_line_indent",
                "#note\n\n    indented code\n",
                "    indented code\n",
            ),
            (
                "body_of_only_commands_is_empty",
                "#note\n\n#assign me\n\n",
                "",
            ),
            (
                "body_keeps_quotes",
                "#note\n> #status closed\n",
                "> #status closed\n",
            ),
            ("body_drops_bom", "\u{feff}Hello", "Hello"),
            ("body_keeps_rejected_lines_out", "#sevrity 3\nText", "Text"),
            ("body_of_empty_text", "", ""),
        ];
        for (rule, text, body) in cases {
            assert_eq!(parse(text).body, body, "{rule}");
        }
    }

    #[test]
    fn lines_keep_their_text_and_number() {
        let got = parse("\r\n  #Severity:  3  \r\n#bogus x\r\n");
        assert_eq!(got.commands[0].line, 2);
        assert_eq!(got.commands[0].text, "#Severity:  3");
        assert_eq!(got.rejected[0].line, 3);
        assert_eq!(got.rejected[0].text, "#bogus x");
    }

    #[test]
    fn helpers_read_the_commands() {
        let c = parse("#note\n#status closed\n#severity 2\n#assign A@B");
        assert!(c.is_accepted());
        assert!(c.is_note());
        assert!(!c.is_solved());
        assert_eq!(c.status(), Some(Status::Closed));
        assert_eq!(c.severity(), Some(Severity::Sev2));
        assert_eq!(c.assignee(), Some(&Assignee::Address("a@b".into())));
        assert!(c.has(|c| matches!(c, Assign(_))));
        let none = parse("Just text");
        assert!(none.is_accepted() && !none.is_note() && none.status().is_none());
        assert!(!parse("#solved x").is_accepted());
        assert!(parse("#solved").is_solved());
    }

    #[test]
    fn account_manager_may_only_note() {
        // (rule, text, rejected lines, words the problem holds)
        let cases: [(&str, &str, Vec<u32>, &str); 5] = [
            ("note_alone_is_fine", "#note\nHeads-up.", vec![], ""),
            ("plain_text_is_fine", "Heads-up.", vec![], ""),
            (
                "note_and_severity_rejects_the_severity_line",
                "#note\n#severity 2",
                vec![2],
                "#severity is for engineers",
            ),
            (
                "solved_is_for_engineers",
                "#solved",
                vec![1],
                "account managers may only add notes with #note",
            ),
            (
                "each_other_command_rejected",
                "#status closed\n#assign me\n#note",
                vec![1, 2],
                "account managers may only add notes with #note",
            ),
        ];
        for (rule, text, lines, words) in cases {
            let got = account_manager_limits(&parse(text));
            assert_eq!(
                got.iter().map(|r| r.line).collect::<Vec<_>>(),
                lines,
                "{rule}"
            );
            for r in &got {
                assert!(r.problem.contains(words), "{rule}: {:?}", r.problem);
            }
        }
    }

    #[test]
    fn suggestions_use_edit_distance() {
        let cases = [
            ("same", "note", "note", 0),
            ("one_deletion", "sevrity", "severity", 1),
            ("one_substitution", "node", "note", 1),
            ("transposition_is_two", "assgin", "assign", 2),
            ("empty", "", "solved", 6),
        ];
        for (rule, a, b, d) in cases {
            assert_eq!(edit_distance(a, b), d, "{rule}");
        }
    }

    #[test]
    fn serializes_snake_case() {
        let c = parse("#status closed\n#assign me\n#severity 3");
        let json = serde_json::to_value(&c.commands).unwrap_or_default();
        assert_eq!(json[0]["command"]["status"], "closed");
        assert_eq!(json[1]["command"]["assign"], "me");
        assert_eq!(json[2]["command"]["severity"], 3);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const LINES: &[&str] = &[
            "#status closed",
            "#status In Triage",
            "#STATUS: engineer-pending",
            "#status",
            "#severity 3",
            "#severity: 9",
            "#severity 1 2",
            "#assign me",
            "#assign <A@B.test>",
            "#assign a b",
            "#note",
            "#solved",
            "#close",
            "#sevirity 2",
            "#1234 is broken",
            "# heading",
            "> #note",
            "",
            "  ",
            "\u{feff}#note",
            "\u{a0}#solved\u{a0}",
            "text",
            "#",
            "#é",
            "#status \u{0}",
        ];

        fn mail_like() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(prop::sample::select(LINES), 0..12)
                    .prop_map(|v| v.join("\n")),
                prop::collection::vec(prop::sample::select(LINES), 0..12)
                    .prop_map(|v| v.join("\r\n")),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn every_line_gets_at_most_one_outcome_and_the_body_is_the_rest(text in mail_like()) {
                let c = parse(&text);
                prop_assert!(text.ends_with(&c.body), "body {:?} of {:?}", c.body, text);
                let lines = text.split_inclusive('\n').count();
                prop_assert!(c.commands.len() + c.rejected.len() <= lines);
                let mut numbers: Vec<u32> = c
                    .commands
                    .iter()
                    .map(|l| l.line)
                    .chain(c.rejected.iter().map(|r| r.line))
                    .collect();
                numbers.sort_unstable();
                numbers.dedup();
                prop_assert_eq!(numbers.len(), c.commands.len() + c.rejected.len());
                let _ = account_manager_limits(&c);
            }
        }
    }
}
