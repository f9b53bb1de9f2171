//! `postdesk templates check` and `postdesk templates preview` (SPEC: Interfaces): what an admin
//! runs after editing templates. `check` validates the whole set the way the worker's reload
//! does and lists every error as `file:line: message`; `preview` renders one template with
//! sample data or a real ticket, prints the headers and the text part, and writes the `.eml`
//! and the `.html` to open in a mail client or browser.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::compose::{AutoSubmitted, Letter, compose, outbound_message_id};
use super::context::{
    Audience, CompanyView, DEFAULT_ZONE, MessageView, ParticipantView, PersonView, SeverityView,
    SupportView, TemplateContext, TicketView, company_slug, format_local,
};
use super::sample;
use super::templates::{Renderer, Variant};
use crate::config::{Config, Customer};
use crate::desk::Status;
use crate::desk::decide::Template;
use crate::mail::Mailbox;
use crate::store::TicketDetail;

/// Exit code of `check` when a template is broken, and of `preview` when it cannot render.
pub const EXIT_BROKEN: u8 = 1;

/// Options of `postdesk templates preview`.
#[derive(Debug, Clone, clap::Args)]
pub struct PreviewArgs {
    /// The template (acknowledgement, engineer_notification, relay, internal_note,
    /// status_update, customer_pending_reminder, close_pending, closed, reopened, escalation,
    /// breach, command_rejected, delivery_failure, digest).
    pub name: Template,
    /// Render with this ticket's data from the database (number, subject, severity, status,
    /// requester, participants, latest message).
    #[arg(long, conflicts_with = "sample")]
    pub ticket: Option<i64>,
    /// Render with sample data (the default).
    #[arg(long)]
    pub sample: bool,
    /// Sample variant (acknowledgement: given, not_given, downgraded, linked;
    /// engineer_notification: new_ticket, customer_reply, resolved; relay: html, text_only;
    /// close_pending and closed: plain, with_message; delivery_failure: undeliverable,
    /// requester_bounced; digest: triage, account_manager).
    #[arg(long)]
    pub variant: Option<String>,
    /// Language of the overrides to use (`de`), as if the mail said `Content-Language: de`.
    #[arg(long)]
    pub lang: Option<String>,
    /// Company whose overrides to use: its name, slug or domain from `[[customers]]`, or a
    /// folder name under templates/companies/.
    #[arg(long)]
    pub company: Option<String>,
    /// Folder to write the .eml and .html to (default: the current folder).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Template folder (default: templates.dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `templates check`: prints every error (`file:line: message`) and warning, then a summary.
/// Returns the exit code: 0 when the set is good, [`EXIT_BROKEN`] otherwise.
pub fn check_command(dir: &Path, out: &mut dyn Write) -> std::io::Result<u8> {
    let (_, report) = Renderer::check(dir);
    for e in &report.errors {
        writeln!(out, "{e}")?;
    }
    for w in &report.warnings {
        writeln!(out, "warning: {w}")?;
    }
    let langs = if report.languages.is_empty() {
        "none".to_string()
    } else {
        report.languages.join(", ")
    };
    let companies = if report.companies.is_empty() {
        "none".to_string()
    } else {
        report.companies.join(", ")
    };
    if report.errors.is_empty() {
        writeln!(
            out,
            "templates OK: {} templates, {} files, {} sample renders; languages: {langs}; companies: {companies} ({})",
            Template::ALL.len(),
            report.files,
            report.renders,
            dir.display()
        )?;
        Ok(0)
    } else {
        let n = report.errors.len();
        writeln!(
            out,
            "{n} template error{} in {} (the worker keeps serving its last good templates until they are fixed)",
            if n == 1 { "" } else { "s" },
            dir.display()
        )?;
        Ok(EXIT_BROKEN)
    }
}

/// What `preview` made.
#[derive(Debug)]
pub struct Preview {
    /// Headers and text part, as printed.
    pub printed: String,
    /// The complete message.
    pub eml: PathBuf,
    /// The HTML part.
    pub html: PathBuf,
}

/// `templates preview`: renders, writes the files, and returns what to print. `ticket` is the
/// ticket's data when `--ticket` was given. Errors are for the admin, one line each.
pub fn preview(
    config: &Config,
    args: &PreviewArgs,
    ticket: Option<&TicketDetail>,
) -> Result<Preview, String> {
    let dir = args.dir.as_deref().unwrap_or(&config.templates_dir);
    let (renderer, report) = Renderer::check(dir);
    let Some(renderer) = renderer else {
        let lines: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "the templates have errors (run `postdesk templates check`):\n{}",
            lines.join("\n")
        ));
    };
    let support = SupportView {
        address: config.sending_address().to_string(),
        name: config.support_name.clone(),
        phone: config.support_phone.clone(),
    };
    let template = args.name;
    if template == Template::Digest && ticket.is_some() {
        return Err("the digest concerns no single ticket: preview it with --sample".into());
    }
    let mut notes = Vec::new();

    let mut ctx = sample::sample(template, args.variant.as_deref(), &support)?;
    let sample_variant = match args.variant.as_deref() {
        Some(v) => v.trim().to_ascii_lowercase().replace('-', "_"),
        None => sample::variants(template)[0].to_string(),
    };
    let tag = |n: i64| format!("[{}{n}]", config.tag_prefix);
    let (answers, date, label) = match ticket {
        None => {
            // A mail of no ticket (the digest) has no tag.
            if ctx.ticket.number != 0 {
                ctx.ticket.tag = tag(ctx.ticket.number);
            }
            (
                sample::SAMPLE_MESSAGE_ID.to_string(),
                sample::sample_now(),
                if sample::variants(template).len() > 1 {
                    format!("sample {sample_variant}")
                } else {
                    "sample".to_string()
                },
            )
        }
        Some(detail) => {
            let answers = ticket_into_context(&mut ctx, detail, &tag(detail.ticket.number));
            (
                answers,
                detail.ticket.created_at,
                format!("ticket #{}", detail.ticket.number),
            )
        }
    };

    // Company: --company, else the requester's domain in config.
    let customer = match &args.company {
        Some(c) => Some(find_customer(config, c).unwrap_or_else(|| CompanyView {
            name: c.clone(),
            domain: String::new(),
            slug: company_slug(c),
        })),
        None if ticket.is_some() => {
            let domain = ctx.requester.address.rsplit('@').next().unwrap_or("");
            config
                .customers
                .iter()
                .find(|c| c.domain.eq_ignore_ascii_case(domain))
                .map(CompanyView::from)
        }
        None => ctx.company.clone(),
    };
    let configured_language = args
        .company
        .as_deref()
        .and_then(|c| customer_entry(config, c))
        .or_else(|| {
            let domain = ctx.requester.address.rsplit('@').next().unwrap_or("");
            config
                .customers
                .iter()
                .find(|c| c.domain.eq_ignore_ascii_case(domain))
        })
        .and_then(|c| c.language.clone());
    let languages: Vec<&str> = args
        .lang
        .as_deref()
        .into_iter()
        .chain(configured_language.as_deref())
        .collect();
    let variant = renderer.select(customer.as_ref().map(|c| c.slug.as_str()), &languages);
    if let Some(l) = &args.lang
        && variant.language.is_none()
    {
        notes.push(format!(
            "no templates in language `{l}`: the defaults are shown"
        ));
    }
    if let Some(c) = &customer
        && args.company.is_some()
        && variant.company.is_none()
    {
        notes.push(format!(
            "no overrides in companies/{}/: the defaults are shown",
            c.slug
        ));
    }
    ctx.company = customer;
    ctx.language = variant.language.clone().unwrap_or_else(|| "en".into());

    let rendered = renderer
        .render(template, &variant, &ctx, &ctx.ticket.tag.clone())
        .map_err(|e| format!("template error in {e}"))?;
    let files = renderer.files_used(template, &variant);

    let to = Mailbox {
        name: ctx.recipient.name.clone(),
        address: ctx.recipient.address.clone(),
    };
    let message_id = outbound_message_id(
        ctx.ticket.number,
        template.name(),
        &answers,
        &to.key(),
        config.sending_address(),
    );
    let raw = compose(&Letter {
        from_name: &config.support_name,
        from_address: config.sending_address(),
        to: &to,
        subject: &rendered.subject,
        text: &rendered.text,
        html: &rendered.html,
        message_id: &message_id,
        // A mail of no ticket answers nothing.
        in_reply_to: (ctx.ticket.number != 0).then_some(answers.as_str()),
        references: &[],
        ticket: ctx.ticket.number,
        auto_submitted: auto_submitted(template),
        date,
        reply_to: None,
        attachments: &[],
    })
    .map_err(|e| e.to_string())?;

    let mut stem = format!("preview-{}", template.name());
    match ticket {
        Some(d) => stem.push_str(&format!("-ticket-{}", d.ticket.number)),
        None if sample::variants(template).len() > 1 => {
            stem.push('-');
            stem.push_str(&sample_variant);
        }
        None => {}
    }
    if let Some(l) = &variant.language {
        stem.push_str(&format!("-{l}"));
    }
    if let Some(c) = &variant.company {
        stem.push_str(&format!("-{c}"));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let eml = args.out.join(format!("{stem}.eml"));
    let html = args.out.join(format!("{stem}.html"));
    std::fs::write(&eml, &raw).map_err(|e| format!("cannot write {}: {e}", eml.display()))?;
    std::fs::write(&html, &rendered.html)
        .map_err(|e| format!("cannot write {}: {e}", html.display()))?;

    let mut printed = String::new();
    printed.push_str(&format!("Template:  {template} ({label})\n"));
    printed.push_str(&format!(
        "Overrides: {}\n",
        if variant == Variant::default() {
            "none (the defaults)".to_string()
        } else {
            variant.describe()
        }
    ));
    printed.push_str(&format!("Files:     {}\n", files.join(" ")));
    if rendered.text_derived {
        printed.push_str("Text part: made from the HTML (no text.txt)\n");
    }
    for n in &notes {
        printed.push_str(&format!("Note:      {n}\n"));
    }
    printed.push('\n');
    printed.push_str(&headers_of(&raw));
    printed.push('\n');
    printed.push_str(&rendered.text);
    if !rendered.text.ends_with('\n') {
        printed.push('\n');
    }
    Ok(Preview { printed, eml, html })
}

/// Scheduled mail is `auto-generated`; answers to a message are `auto-replied` (RFC 3834).
fn auto_submitted(template: Template) -> AutoSubmitted {
    match template {
        Template::StatusUpdate
        | Template::CustomerPendingReminder
        | Template::ClosePending
        | Template::Closed
        | Template::Escalation
        | Template::Breach
        | Template::DeliveryFailure
        | Template::Digest => AutoSubmitted::AutoGenerated,
        _ => AutoSubmitted::AutoReplied,
    }
}

fn customer_entry<'a>(config: &'a Config, wanted: &str) -> Option<&'a Customer> {
    let w = wanted.trim();
    config.customers.iter().find(|c| {
        c.company.eq_ignore_ascii_case(w)
            || c.domain.eq_ignore_ascii_case(w)
            || company_slug(&c.company) == w
    })
}

fn find_customer(config: &Config, wanted: &str) -> Option<CompanyView> {
    customer_entry(config, wanted).map(CompanyView::from)
}

/// Replaces the sample's ticket, people and message with the ticket's own; returns the
/// Message-ID the mail answers (the latest stored message).
fn ticket_into_context(ctx: &mut TemplateContext, detail: &TicketDetail, tag: &str) -> String {
    let t = &detail.ticket;
    let zone = DEFAULT_ZONE;
    let status = t.status.parse::<Status>().unwrap_or(Status::InTriage);
    ctx.ticket = TicketView::new(
        t.number,
        tag.to_string(),
        &t.subject,
        status,
        t.created_at,
        zone,
    );
    ctx.severity = SeverityView {
        requested: t.requested_severity.and_then(|s| u8::try_from(s).ok()),
        assigned: u8::try_from(t.assigned_severity).unwrap_or(4),
        given: t.severity_given,
        downgraded: t.downgraded,
    };
    ctx.requester = PersonView::new(t.requester_name.as_deref(), &t.requester);
    if ctx.audience == Audience::Customer {
        ctx.recipient = ctx.requester.clone();
    }
    ctx.participants = detail
        .participants
        .iter()
        .map(|p| ParticipantView::new(p.name.as_deref(), &p.address, &p.role))
        .collect();
    let latest = detail
        .messages
        .iter()
        .rev()
        .find(|m| m.direction == "inbound");
    if let (Some(m), Some(view)) = (latest, ctx.message.as_mut()) {
        let author = detail
            .participants
            .iter()
            .find(|p| p.address.eq_ignore_ascii_case(&m.from))
            .and_then(|p| p.name.as_deref());
        // The stored text only: the sample's HTML and attachments belong to the sample.
        *view = MessageView {
            author: PersonView::new(author, &m.from),
            text: m.text.clone(),
            html: None,
            received_local: format_local(m.received_at, zone),
            internal: view.internal,
            attachments: Vec::new(),
        };
    }
    latest
        .or(detail.messages.first())
        .map(|m| m.message_id.clone())
        .unwrap_or_else(|| format!("ticket-{}@postdesk.invalid", t.number))
}

/// The headers of a composed message as a mail client shows them (encoded words decoded).
fn headers_of(raw: &[u8]) -> String {
    let Some(msg) = mail_parser::MessageParser::default().parse(raw) else {
        return String::from_utf8_lossy(raw)
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_string();
    };
    let addr = |a: Option<&mail_parser::Address<'_>>| -> String {
        a.and_then(|a| a.first())
            .map(|a| match (a.name(), a.address()) {
                (Some(n), Some(ad)) => format!("{n} <{ad}>"),
                (None, Some(ad)) => ad.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .unwrap_or_default()
    };
    let ids = |v: &mail_parser::HeaderValue<'_>| -> String {
        match v {
            mail_parser::HeaderValue::Text(t) => format!("<{t}>"),
            mail_parser::HeaderValue::TextList(l) => l
                .iter()
                .map(|t| format!("<{t}>"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    };
    let raw_header = |name: &str| {
        msg.header_raw(name)
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let date: Option<DateTime<Utc>> = msg
        .date()
        .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0));
    let mut out = String::new();
    for (name, value) in [
        ("From", addr(msg.from())),
        ("To", addr(msg.to())),
        ("Subject", msg.subject().unwrap_or("").to_string()),
        ("Date", date.map(|d| d.to_rfc2822()).unwrap_or_default()),
        (
            "Message-ID",
            msg.message_id()
                .map(|m| format!("<{m}>"))
                .unwrap_or_default(),
        ),
        ("In-Reply-To", ids(msg.in_reply_to())),
        ("References", ids(msg.references())),
        ("Auto-Submitted", raw_header("Auto-Submitted")),
        (
            "X-Auto-Response-Suppress",
            raw_header("X-Auto-Response-Suppress"),
        ),
        ("X-Postdesk-Ticket", raw_header("X-Postdesk-Ticket")),
    ] {
        if !value.is_empty() {
            out.push_str(&format!("{name}: {value}\n"));
        }
    }
    out
}
