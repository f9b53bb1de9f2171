//! One message (or a batch) through parse -> decide -> store, with the acknowledgement rendered
//! into the outbox in the same transaction (SPEC: Outbound mail, "Nothing is lost").
//!
//! A batch is one transaction: the worker commits many decisions with one fsync (group commit),
//! each still all-or-nothing, and the source acknowledges the messages only after that commit.
//! If the batch fails, nothing of it was written and the source keeps every message for later.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::{Config, Customer};
use crate::desk::decide::Template;
use crate::desk::{Action, Decision, MailContext, NewTicket, Policy, decide_parsed};
use crate::mail::{InboundMail, Mailbox, QuarantineReason, parse};
use crate::outbound::compose::{AutoSubmitted, Letter, compose, outbound_message_id};
pub use crate::outbound::context::SeverityView;
use crate::outbound::context::{
    CompanyView, DEFAULT_ZONE, ParticipantView, PersonView, SupportView, TemplateContext,
    TicketView,
};
use crate::outbound::templates::{LiveTemplates, Renderer, TemplateErrors, Variant};
use crate::store::{Event, InboundRecord, QueuedMail, Store, StoreError, StoreTx};

/// Everything the pipeline needs besides the store: policy, templates and sender identity.
#[derive(Debug)]
pub struct Desk {
    /// Decision rules.
    pub policy: Policy,
    /// The templates serving now (the watcher swaps in each good edit).
    pub templates: LiveTemplates,
    /// Customer companies: template overrides and language by the requester's domain.
    pub customers: Vec<Customer>,
    /// The address that sends.
    pub from_address: String,
    /// Its display name.
    pub from_name: String,
    /// Phone number for Sev 1/2.
    pub phone: String,
    /// Ticket tag prefix (`#`).
    pub tag_prefix: String,
    /// Largest message taken.
    pub max_message_size: usize,
}

impl Desk {
    /// Builds the desk from config, loading the templates (every error is reported).
    pub fn from_config(config: &Config) -> Result<Desk, TemplateErrors> {
        Ok(Desk {
            policy: config.policy(),
            templates: LiveTemplates::new(Renderer::load(&config.templates_dir)?),
            customers: config.customers.clone(),
            from_address: config.sending_address().to_string(),
            from_name: config.support_name.clone(),
            phone: config.support_phone.clone(),
            tag_prefix: config.tag_prefix.clone(),
            max_message_size: config.max_message_size,
        })
    }

    /// The subject tag of a ticket: `[#42]`.
    pub fn tag(&self, ticket: i64) -> String {
        format!("[{}{ticket}]", self.tag_prefix)
    }

    /// The configured company of an address's domain (`[[customers]]`).
    pub fn company_of(&self, who: &Mailbox) -> Option<&Customer> {
        let domain = who.domain();
        self.customers.iter().find(|c| c.domain == domain)
    }

    /// The desk as templates see it.
    pub fn support_view(&self) -> SupportView {
        SupportView {
            address: self.from_address.clone(),
            name: self.from_name.clone(),
            phone: self.phone.clone(),
        }
    }
}

/// One message from a source.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The raw bytes.
    pub raw: Vec<u8>,
    /// Where it came from (`maildir:<file>`, `imap:<mailbox>/<uid>`, `stdin`).
    pub source: String,
    /// Take it without sending any mail (`mailbox.on_first_start = "import_silently"`).
    pub silent: bool,
    /// Set when the message is over the size limit and `raw` holds only its first bytes (the
    /// IMAP source never loads such a message whole): its full size. It is quarantined.
    pub truncated_from: Option<usize>,
}

/// A mail queued in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct Queued {
    /// Template.
    pub template: String,
    /// Recipient.
    pub to: String,
    /// Message-ID it is sent with.
    pub message_id: String,
}

/// What happened to one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The ticket it opened or belongs to.
    pub ticket: Option<i64>,
    /// Mails queued.
    pub queued: Vec<Queued>,
    /// Sender and subject, when the message parsed.
    pub from: Option<String>,
    /// The decoded subject.
    pub subject: Option<String>,
}

/// The window of the RFC 3834 rate limit.
fn rate_window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::hours(1)
}

/// Parses, decides and stores a batch in one transaction.
pub async fn ingest_batch<S: Store>(
    store: &S,
    desk: &Desk,
    items: &[Incoming],
    now: DateTime<Utc>,
) -> Result<Vec<Outcome>, StoreError> {
    // Parsing needs no database: do it before taking the write lock.
    let parsed: Vec<Result<InboundMail, QuarantineReason>> = items
        .iter()
        .map(|i| match i.truncated_from {
            Some(size) => Err(QuarantineReason::Oversized {
                size,
                limit: desk.max_message_size,
            }),
            None => parse(&i.raw, desk.max_message_size),
        })
        .collect();
    let mut tx = store.begin().await?;
    let mut outcomes = Vec::with_capacity(items.len());
    for (item, parsed) in items.iter().zip(&parsed) {
        let ctx = match parsed {
            Ok(mail) => tx.context(mail, rate_window_start(now)).await?,
            Err(_) => MailContext::default(),
        };
        let decision = decide_parsed(parsed, &ctx, &desk.policy, now);
        let outcome = apply(&mut tx, desk, item, parsed, decision).await?;
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn apply<T: StoreTx>(
    tx: &mut T,
    desk: &Desk,
    item: &Incoming,
    parsed: &Result<InboundMail, QuarantineReason>,
    decision: Decision,
) -> Result<Outcome, StoreError> {
    let mut outcome = Outcome {
        ticket: None,
        queued: Vec::new(),
        from: parsed.as_ref().ok().map(|m| m.from.address.clone()),
        subject: parsed.as_ref().ok().map(|m| m.subject.clone()),
        decision,
    };
    let mail = match parsed {
        Ok(mail) => mail,
        Err(reason) => {
            tx.quarantine(&item.raw, reason, &item.source, outcome.decision.at)
                .await?;
            return Ok(outcome);
        }
    };
    let record = InboundRecord {
        raw: &item.raw,
        mail,
        source: &item.source,
    };
    match &outcome.decision.action {
        Action::Duplicate { ticket } => outcome.ticket = *ticket,
        Action::Bounce => {
            tx.store_unattached(record, "bounce", &outcome.decision)
                .await?
        }
        Action::Quarantine(reason) => {
            tx.quarantine(&item.raw, reason, &item.source, outcome.decision.at)
                .await?
        }
        Action::NewTicket(ticket) => {
            let number = tx.open_ticket(ticket, record, &outcome.decision).await?;
            outcome.ticket = Some(number);
            if item.silent && !outcome.decision.outbound.is_empty() {
                let e = Event {
                    at: outcome.decision.at,
                    actor: "postdesk".into(),
                    kind: "imported_silently".into(),
                    from: None,
                    to: None,
                    reason: "imported from a mailbox that already held mail (mailbox.on_first_start = import_silently): no mail sent".into(),
                };
                tx.record_event(Some(number), &e).await?;
                return Ok(outcome);
            }
            for planned in &outcome.decision.outbound {
                match render_acknowledgement(
                    desk,
                    number,
                    ticket,
                    mail,
                    planned.template,
                    &outcome.decision,
                ) {
                    Ok(q) => {
                        tx.queue(&q, outcome.decision.at).await?;
                        outcome.queued.push(Queued {
                            template: q.template,
                            to: q.to,
                            message_id: q.message_id,
                        });
                    }
                    Err(why) => {
                        // The ticket stands; the missing mail is on its record and in the log.
                        tracing::error!(ticket = number, error = %why, "acknowledgement not queued");
                        let e = Event {
                            at: outcome.decision.at,
                            actor: "postdesk".into(),
                            kind: "outbound_failed".into(),
                            from: None,
                            to: Some(planned.to.key()),
                            reason: format!("{} not queued: {why}", planned.template.name()),
                        };
                        tx.record_event(Some(number), &e).await?;
                    }
                }
            }
        }
    }
    Ok(outcome)
}

/// Renders one planned mail of a new ticket (today: the acknowledgement) with the templates
/// serving now, in the language and company overrides chosen for the requester. Should the
/// override fail at render time (a case no sample reached), the defaults are tried before the
/// mail is given up, so that an override typo does not cost the customer the mail.
fn render_acknowledgement(
    desk: &Desk,
    number: i64,
    ticket: &NewTicket,
    mail: &InboundMail,
    template: Template,
    decision: &Decision,
) -> Result<QueuedMail, String> {
    let tag = desk.tag(number);
    let company = desk.company_of(&ticket.requester);
    let renderer = desk.templates.current();
    let languages: Vec<&str> = mail
        .content_language
        .as_deref()
        .into_iter()
        .chain(company.and_then(|c| c.language.as_deref()))
        .collect();
    let variant = renderer.select(
        company.map(|c| CompanyView::from(c).slug).as_deref(),
        &languages,
    );
    let zone = DEFAULT_ZONE;
    let requester = PersonView::from_mailbox(&ticket.requester);
    let mut ctx = TemplateContext::new(
        TicketView::new(
            number,
            tag.clone(),
            &ticket.subject,
            ticket.status,
            decision.at,
            zone,
        ),
        SeverityView::from(&ticket.severity),
        requester,
        desk.support_view(),
        zone,
    );
    ctx.language = variant.language.clone().unwrap_or_else(|| "en".into());
    ctx.company = company.map(CompanyView::from);
    ctx.participants.extend(
        ticket
            .watchers
            .iter()
            .map(|w| ParticipantView::new(w.name.as_deref(), &w.address, "watcher")),
    );
    let rendered = match renderer.render(template, &variant, &ctx, &tag) {
        Ok(r) => r,
        Err(e) if variant != Variant::default() => {
            tracing::error!(ticket = number, error = %e, variant = %variant.describe(), "template override failed; using the defaults");
            ctx.language = "en".into();
            renderer
                .render(template, &Variant::default(), &ctx, &tag)
                .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let message_id = outbound_message_id(
        number,
        template.name(),
        &mail.message_id,
        &desk.from_address,
    );
    let raw = compose(&Letter {
        from_name: &desk.from_name,
        from_address: &desk.from_address,
        to: &ticket.requester,
        subject: &rendered.subject,
        text: &rendered.text,
        html: &rendered.html,
        message_id: &message_id,
        in_reply_to: Some(&mail.message_id),
        references: &mail.references,
        ticket: number,
        auto_submitted: AutoSubmitted::AutoReplied,
        date: decision.at,
    })
    .map_err(|e| e.to_string())?;
    Ok(QueuedMail {
        ticket: Some(number),
        message_id,
        template: template.name().to_string(),
        to: ticket.requester.key(),
        automatic: true,
        rendered: raw,
    })
}

/// What `explain` prints: the decision for one message, without changing anything.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// Sender address.
    pub from: Option<String>,
    /// Decoded subject.
    pub subject: Option<String>,
    /// Severity reading.
    pub severity: Option<SeverityView>,
    /// new_ticket, duplicate, bounce or quarantine.
    pub action: &'static str,
    /// The ticket it belongs to (duplicates), or null.
    pub ticket: Option<i64>,
    /// Whether an acknowledgement would be sent.
    pub acknowledge: bool,
    /// Why.
    pub reason: String,
    /// Mails that would be queued.
    pub outbound: Vec<OutboundExplanation>,
    /// The Message-ID used for duplicate detection.
    pub message_id: Option<String>,
}

/// One mail in `explain`.
#[derive(Debug, Serialize)]
pub struct OutboundExplanation {
    /// Template name.
    pub template: &'static str,
    /// Recipient.
    pub to: String,
}

/// Decides for one raw message against what the store knows, changing nothing. Without a store
/// (no database yet) the message is judged as if it were the first one seen.
pub async fn explain<S: Store>(
    store: Option<&S>,
    desk: &Desk,
    raw: &[u8],
    now: DateTime<Utc>,
) -> Result<Explanation, StoreError> {
    let parsed = parse(raw, desk.max_message_size);
    let ctx = match (store, &parsed) {
        (Some(store), Ok(mail)) => store.peek_context(mail, rate_window_start(now)).await?,
        _ => MailContext::default(),
    };
    let d = decide_parsed(&parsed, &ctx, &desk.policy, now);
    let mail = parsed.as_ref().ok();
    Ok(Explanation {
        from: mail.map(|m| m.from.address.clone()),
        subject: mail.map(|m| display_subject(&m.subject)),
        severity: d.severity.as_ref().map(SeverityView::from),
        action: d.action.name(),
        ticket: match d.action {
            Action::Duplicate { ticket } => ticket,
            _ => None,
        },
        acknowledge: d.acknowledge,
        reason: d.reason.clone(),
        outbound: d
            .outbound
            .iter()
            .map(|p| OutboundExplanation {
                template: p.template.name(),
                to: p.to.address.clone(),
            })
            .collect(),
        message_id: mail.map(|m| m.message_id.clone()),
    })
}

/// The decoded subject as `explain` shows it: control characters (CR, LF, ESC, ...) become spaces
/// and surrounding whitespace is trimmed, so nothing from the sender reaches the admin's terminal
/// as a control sequence; inner spacing is kept as written (Zammad's corpus expects runs of
/// ideographic spaces unchanged).
fn display_subject(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}
