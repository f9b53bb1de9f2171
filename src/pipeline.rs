//! One message (or a batch) through parse -> decide -> store, with the acknowledgement rendered
//! into the outbox in the same transaction (SPEC: Outbound mail, "Nothing is lost").
//!
//! A batch is one transaction: the worker commits many decisions with one fsync (group commit),
//! each still all-or-nothing, and the source acknowledges the messages only after that commit.
//! If the batch fails, nothing of it was written and the source keeps every message for later.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::{Config, Customer};
use crate::desk::decide::Template;
use crate::desk::{
    Action, Decision, MailContext, Member, Notice, PlannedEvent, PlannedMail, Policy, ReplyKind,
    Role, StaffAuth, Status, StatusChange, decide_parsed, thread,
};
use crate::mail::auth::{self as mail_auth, Verdict};
use crate::mail::dkim::DkimVerifier;
use crate::mail::parse::{AttachmentBody, attachment_bodies, html_body};
use crate::mail::{InboundMail, Limits, Mailbox, QuarantineReason, parse_within, quote};
use crate::outbound::compose::{AutoSubmitted, Letter, compose, outbound_message_id};
pub use crate::outbound::context::SeverityView;
use crate::outbound::context::{
    AttachmentView, Audience, BreachView, COMMAND_HELP, ClosingView, CompanyView, DEFAULT_ZONE,
    EscalationView, FailureView, MessageView, NotificationView, ParticipantView, PersonView,
    RejectedCommand, RejectionView, ReminderView, StatusChangeView, SupportView, TemplateContext,
    TicketView, UpdateView, audience, failure_kind, size_label,
};
use crate::outbound::sanitize::clean_html;
use crate::outbound::templates::{LiveTemplates, Renderer, TemplateErrors, Variant};
use crate::store::{Event, InboundRecord, QueuedMail, RenderedMail, Store, StoreError, StoreTx};

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
    /// What one message may cost: size, MIME parts, nesting, headers.
    pub limits: Limits,
    /// How engineers' mail is relayed and shown.
    pub staff: StaffSettings,
    /// How a staff From is authenticated (`staff.require_authenticated`).
    pub auth: Authenticator,
}

/// How engineers' replies reach customers and what staff notifications carry.
#[derive(Debug, Clone)]
pub struct StaffSettings {
    /// The relay's display name; `NAME` is the engineer's name (`staff.show_name`).
    pub show_name: String,
    /// Show the engineer's address to customers (`staff.reveal_address`).
    pub reveal_address: bool,
    /// Customer attachments attached to notifications, in sum (`staff.max_attachment_size`).
    pub max_attachment_size: usize,
}

/// Decides whether a mail from a staff or account-manager address is authenticated: first the
/// `Authentication-Results` header of the configured receiving host, then postdesk's own DKIM
/// check. Runs before the write transaction: DNS never holds a database lock.
#[derive(Debug)]
pub struct Authenticator {
    /// The receiving host whose `Authentication-Results` is trusted.
    pub authserv_id: Option<String>,
    /// postdesk's own DKIM check, unless `staff.dkim_resolver = "off"`.
    pub dkim: Option<DkimVerifier>,
}

impl Authenticator {
    /// What the policy needs to know about this mail's sender.
    pub async fn check(&self, policy: &Policy, mail: &InboundMail, raw: &[u8]) -> StaffAuth {
        if !policy.needs_authentication(&mail.from.key()) {
            return StaffAuth::NotChecked;
        }
        let domain = mail.from.domain();
        let mut why = Vec::new();
        match &self.authserv_id {
            Some(id) => match mail_auth::from_authentication_results(
                &mail.authentication_results,
                id,
                &domain,
            ) {
                Verdict::Pass { detail, .. } => return StaffAuth::Pass(detail),
                Verdict::Fail { why: w } => why.push(w),
            },
            None => why.push("staff.authserv_id is not set".to_string()),
        }
        match &self.dkim {
            Some(v) => match v.verify(raw, &domain).await {
                Verdict::Pass { detail, .. } => return StaffAuth::Pass(detail),
                Verdict::Fail { why: w } => why.push(w),
            },
            None => why.push("postdesk's own DKIM check is off".to_string()),
        }
        StaffAuth::Fail(why.join("; "))
    }
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
            limits: config.limits.clone(),
            staff: StaffSettings {
                show_name: config.staff_show_name.clone(),
                reveal_address: config.staff_reveal_address,
                max_attachment_size: config.staff_max_attachment_size,
            },
            auth: Authenticator {
                authserv_id: config.staff_authserv_id.clone(),
                dkim: match &config.dkim_resolver {
                    crate::config::DkimResolver::Off => None,
                    crate::config::DkimResolver::System => match DkimVerifier::system() {
                        Ok(v) => Some(v),
                        Err(e) => {
                            tracing::warn!(error = %e, "no system DNS resolver for DKIM: only Authentication-Results can authenticate staff");
                            None
                        }
                    },
                    crate::config::DkimResolver::Nameservers(addrs) => {
                        match DkimVerifier::nameservers(addrs) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                tracing::warn!(error = %e, "DKIM resolver could not be set up: only Authentication-Results can authenticate staff");
                                None
                            }
                        }
                    }
                },
            },
        })
    }

    /// The subject tag of a ticket: `[#42]`.
    pub fn tag(&self, ticket: i64) -> String {
        crate::mail::subject::tag(&self.tag_prefix, ticket)
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
    /// The raw bytes (shared: parsing runs on a blocking thread without copying them).
    pub raw: Bytes,
    /// Where it came from (`maildir:<file>`, `imap:<mailbox>/<uid>`, `stdin`).
    pub source: String,
    /// Take it without sending any mail (`mailbox.on_first_start = "import_silently"`).
    pub silent: bool,
    /// Set when the message is over the size limit and `raw` holds only its first bytes (the
    /// IMAP source and `ingest` never load such a message whole): its full size. It is
    /// quarantined, and `source` says where the whole message is.
    pub truncated_from: Option<usize>,
}

/// How much of an oversized message is kept in the quarantine row: the rest stays where it is
/// (the IMAP quarantine folder, the file given, or the file `ingest -` wrote).
pub const OVERSIZED_HEAD: usize = 64 * 1024;

/// Checks the limits and parses each message on a blocking thread: mail-parser on a hostile
/// message can take long, and the async workers meanwhile keep IMAP keep-alives, the outbox and
/// `/healthz` going. A message the parser panics on is quarantined as unparseable.
pub async fn parse_all(
    limits: &Limits,
    items: &[Incoming],
) -> Result<Vec<Result<InboundMail, QuarantineReason>>, StoreError> {
    let limits = limits.clone();
    let work: Vec<(Bytes, Option<usize>)> = items
        .iter()
        .map(|i| (i.raw.clone(), i.truncated_from))
        .collect();
    tokio::task::spawn_blocking(move || {
        work.iter()
            .map(|(raw, truncated_from)| match truncated_from {
                Some(size) => Err(QuarantineReason::Oversized {
                    size: *size,
                    limit: limits.max_message_size,
                }),
                None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    parse_within(raw, &limits)
                }))
                .unwrap_or_else(|_| {
                    tracing::error!("the mail parser panicked; message quarantined");
                    Err(QuarantineReason::Unparseable {
                        detail: "the parser failed on it".into(),
                    })
                }),
            })
            .collect()
    })
    .await
    // Only a runtime shutting down cancels the task: nothing was written, the source keeps
    // the messages for the next run.
    .map_err(|e| StoreError::Unavailable(format!("parsing did not finish: {e}")))
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
    let parsed = parse_all(&desk.limits, items).await?;
    // Staff authentication may ask DNS: also before the write lock.
    let mut auths = Vec::with_capacity(parsed.len());
    for (item, parsed) in items.iter().zip(&parsed) {
        auths.push(match parsed {
            Ok(mail) => desk.auth.check(&desk.policy, mail, &item.raw).await,
            Err(_) => StaffAuth::NotChecked,
        });
    }
    let mut tx = store.begin().await?;
    let ids: Vec<&str> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|m| m.message_id.as_str()))
        .collect();
    tx.lock_message_ids(&ids).await?;
    let mut outcomes = Vec::with_capacity(items.len());
    for ((item, parsed), auth) in items.iter().zip(&parsed).zip(auths) {
        let ctx = match parsed {
            Ok(mail) => {
                let keys = thread::keys(mail, &desk.tag_prefix);
                let mut ctx = tx.context(mail, &keys, rate_window_start(now)).await?;
                ctx.staff_auth = auth;
                ctx
            }
            Err(_) => MailContext::default(),
        };
        let decision = decide_parsed(parsed, &ctx, &desk.policy, now);
        let outcome = apply(&mut tx, desk, item, parsed, &ctx, decision).await?;
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
    ctx: &MailContext,
    mut decision: Decision,
) -> Result<Outcome, StoreError> {
    let mail = parsed.as_ref().ok();
    if item.silent && !decision.outbound.is_empty() {
        decision.outbound.clear();
        if let Some(on) = decision.action.target() {
            decision.events.push(PlannedEvent {
                on: Some(on),
                actor: "postdesk".into(),
                kind: "imported_silently".into(),
                from: None,
                to: None,
                reason: "imported from a mailbox that already held mail (mailbox.on_first_start = import_silently): no mail sent".into(),
                related: None,
            });
        }
    }
    let inbound = InboundRecord {
        raw: &item.raw,
        mail,
        source: &item.source,
    };
    let mut queued = Vec::new();
    let ticket = {
        let decision = &decision;
        let queued = &mut queued;
        let mut render = |number: i64| -> Vec<RenderedMail> {
            let Some(mail) = mail else {
                return Vec::new();
            };
            let parts = InboundParts::new(mail, &item.raw);
            render_all(desk, decision, ctx, number, Some(&parts), queued)
        };
        tx.apply(decision, inbound, &mut render).await?
    };
    Ok(Outcome {
        ticket,
        queued,
        from: mail.map(|m| m.from.address.clone()),
        subject: mail.map(|m| m.subject.clone()),
        decision,
    })
}

/// Renders every planned mail of a decision for ticket `number`, each with the event that
/// records it (`outbound`, or `outbound_failed` with the reason when it cannot be rendered: the
/// change stands and the missing mail is on its record and in the log).
fn render_all(
    desk: &Desk,
    decision: &Decision,
    ctx: &MailContext,
    number: i64,
    inbound: Option<&InboundParts<'_>>,
    queued: &mut Vec<Queued>,
) -> Vec<RenderedMail> {
    let Some(facts) = TicketFacts::of(decision, ctx, number) else {
        return Vec::new();
    };
    decision
        .outbound
        .iter()
        .map(
            |planned| match render_planned(desk, &facts, inbound, planned, decision) {
                Ok(q) => {
                    queued.push(Queued {
                        template: q.template.clone(),
                        to: q.to.clone(),
                        message_id: q.message_id.clone(),
                    });
                    let event = Event {
                        at: decision.at,
                        actor: "postdesk".into(),
                        kind: "outbound".into(),
                        from: None,
                        to: Some(q.to.clone()),
                        reason: format!("{} queued", q.template),
                        related_ticket: None,
                    };
                    RenderedMail {
                        mail: Some(q),
                        event,
                    }
                }
                Err(why) => {
                    tracing::error!(ticket = number, template = %planned.template, error = %why, "mail not queued");
                    RenderedMail {
                        mail: None,
                        event: Event {
                            at: decision.at,
                            actor: "postdesk".into(),
                            kind: "outbound_failed".into(),
                            from: None,
                            to: Some(planned.to.key()),
                            reason: format!("{} not queued: {why}", planned.template.name()),
                            related_ticket: None,
                        },
                    }
                }
            },
        )
        .collect()
}

/// What one sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// Tickets looked at (due).
    pub due: usize,
    /// The decisions applied, one per ticket that had something due.
    pub tickets: Vec<SweptTicket>,
}

/// One ticket a sweep changed.
#[derive(Debug, Clone, Serialize)]
pub struct SweptTicket {
    /// The ticket.
    pub ticket: i64,
    /// What happened, in words.
    pub reason: String,
    /// Mails queued.
    pub queued: Vec<Queued>,
    /// Its assigned severity.
    pub severity: u8,
    /// It escalated.
    pub escalated: bool,
    /// Its response deadline was reported breached.
    pub response_breach: bool,
    /// Its resolution deadline was reported breached.
    pub resolution_breach: bool,
}

/// Tickets claimed per transaction by a sweep.
const SWEEP_BATCH: i64 = 200;

/// Runs the SLA clock once at `now`: every due ticket is decided (`sla::tick`) and applied with
/// its mails, a batch per transaction. On PostgreSQL due rows are claimed with `FOR UPDATE SKIP
/// LOCKED`, so sweeps of several workers share the work; a mail two sweeps both decide has one
/// Message-ID (ticket, purpose, due instant, recipient), so it is queued once.
pub async fn sweep<S: Store>(
    store: &S,
    desk: &Desk,
    now: DateTime<Utc>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let paused = desk.policy.sla.pause_when_customer_pending;
    let mut after = 0;
    loop {
        let mut tx = store.begin().await?;
        let fresh = tx.due_tickets(now, after, SWEEP_BATCH, paused).await?;
        let Some(last) = fresh.iter().map(|t| t.number).max() else {
            tx.commit().await?;
            return Ok(report);
        };
        after = last;
        report.due += fresh.len();
        for ticket in fresh {
            let Some(decision) = crate::sla::tick::sweep(&ticket, &desk.policy, now) else {
                continue;
            };
            let severity = ticket.severity.assigned.number();
            let ctx = MailContext {
                tickets: vec![ticket],
                ..MailContext::default()
            };
            let mut queued = Vec::new();
            let number = {
                let mut render = |number: i64| -> Vec<RenderedMail> {
                    render_all(desk, &decision, &ctx, number, None, &mut queued)
                };
                let inbound = InboundRecord {
                    raw: b"",
                    mail: None,
                    source: "sweep",
                };
                tx.apply(&decision, inbound, &mut render).await?
            };
            report.tickets.push(SweptTicket {
                ticket: number.unwrap_or_default(),
                reason: decision.reason.clone(),
                queued,
                severity,
                escalated: decision.update.escalated,
                response_breach: decision.update.response_breach,
                resolution_breach: decision.update.resolution_breach,
            });
        }
        tx.commit().await?;
    }
}

/// What a mail about a ticket is rendered from: the ticket as it stands after the decision.
struct TicketFacts {
    number: i64,
    subject: String,
    status: Status,
    created_at: DateTime<Utc>,
    severity: crate::desk::SeverityReading,
    requester: Mailbox,
    others: Vec<(Mailbox, Role)>,
    linked_ticket: Option<i64>,
    status_change: Option<StatusChange>,
    /// The assignee after the decision.
    assignee: Option<String>,
    /// The customer conversation's Message-IDs (a relay threads into them).
    conversation: Vec<String>,
    /// The SLA clocks as stored.
    clocks: crate::desk::ticket::Clocks,
}

impl TicketFacts {
    fn of(d: &Decision, ctx: &MailContext, number: i64) -> Option<TicketFacts> {
        match &d.action {
            Action::NewTicket(t) => Some(TicketFacts {
                number,
                subject: t.subject.clone(),
                status: t.status,
                created_at: d.at,
                severity: t.severity,
                requester: t.requester.clone(),
                others: t
                    .watchers
                    .iter()
                    .map(|w| (w.clone(), Role::Watcher))
                    .collect(),
                linked_ticket: t.linked_ticket,
                status_change: None,
                assignee: None,
                conversation: Vec::new(),
                clocks: Default::default(),
            }),
            _ => {
                let state = ctx.ticket(number)?;
                let requester = state.requester().map(Member::mailbox)?;
                let others = state
                    .participants
                    .iter()
                    .filter(|m| m.role != Role::Requester)
                    .map(|m| (m.mailbox(), m.role))
                    .chain(d.joiners.iter().map(|j| (j.mailbox.clone(), j.role)))
                    .collect();
                Some(TicketFacts {
                    number,
                    subject: state.subject.clone(),
                    status: d
                        .status_change
                        .as_ref()
                        .map(|c| c.to)
                        .unwrap_or(state.status),
                    created_at: state.created_at,
                    severity: crate::desk::SeverityReading {
                        assigned: d.update.severity.unwrap_or(state.severity.assigned),
                        ..state.severity
                    },
                    requester,
                    others,
                    linked_ticket: None,
                    status_change: d.status_change.clone(),
                    assignee: d.update.assignee.clone().or_else(|| state.assignee.clone()),
                    conversation: state.conversation.clone(),
                    clocks: state.clocks.clone(),
                })
            }
        }
    }
}

/// The inbound mail's parts some mails carry (attachments, the HTML of an engineer's reply),
/// read from the raw message once per decision and only when a mail needs them.
struct InboundParts<'a> {
    mail: &'a InboundMail,
    raw: &'a [u8],
    bodies: std::cell::OnceCell<Vec<AttachmentBody>>,
    html: std::cell::OnceCell<Option<String>>,
}

impl<'a> InboundParts<'a> {
    fn new(mail: &'a InboundMail, raw: &'a [u8]) -> InboundParts<'a> {
        InboundParts {
            mail,
            raw,
            bodies: std::cell::OnceCell::new(),
            html: std::cell::OnceCell::new(),
        }
    }

    /// Every attachment and inline part, decoded (the message is within the size limit).
    fn attachments(&self) -> &[AttachmentBody] {
        self.bodies
            .get_or_init(|| attachment_bodies(self.raw, usize::MAX))
    }

    /// The new part of the mail's HTML, sanitised: quotes, signature and command lines cut.
    fn reply_html(&self) -> Option<&str> {
        self.html
            .get_or_init(|| {
                html_body(self.raw)
                    .map(|h| clean_html(&quote::reply_html(&h)))
                    .filter(|h| !h.trim().is_empty())
            })
            .as_deref()
    }
}

/// How one mail is sent besides its rendered parts.
struct Envelope<'a> {
    /// The inbound Message-ID this mail answers (None for scheduled mail).
    answers: Option<&'a str>,
    from_name: String,
    in_reply_to: Option<&'a str>,
    references: &'a [String],
    reply_to: Option<&'a str>,
    attachments: Vec<AttachmentBody>,
    auto_submitted: AutoSubmitted,
    automatic: bool,
}

/// What the close-pending and closed notices say about closing: when a close-pending ticket
/// closes by itself is the auto-close due time the decision set (`statuses.auto_close_after` on
/// the ticket's calendar, holidays skipped), so the notice says exactly what the tick will do.
fn closing_view(
    desk: &Desk,
    decision: &Decision,
    facts: &TicketFacts,
    zone: chrono_tz::Tz,
) -> ClosingView {
    let after = desk.policy.sla.timers.auto_close_after;
    let auto_close = decision
        .sla
        .as_ref()
        .and_then(|p| p.timers)
        .and_then(|t| t.auto_close)
        .or(facts.clocks.auto_close_due)
        .unwrap_or_else(|| {
            let targets = desk.policy.sla.of(facts.severity.assigned);
            let calendar = desk.policy.calendars.for_clock(
                &targets.clock,
                desk.policy.calendar_of(&facts.requester.domain()),
            );
            crate::sla::clock::add(calendar, decision.at, after)
        });
    ClosingView {
        auto_close_local: crate::outbound::context::format_local(auto_close, zone),
        business_days: match after {
            crate::sla::policy::Span::BusinessDays(d) => d,
            crate::sla::policy::Span::OpenMinutes(_) => 0,
        },
        closes_after: match after {
            crate::sla::policy::Span::BusinessDays(1) => "1 business day".into(),
            crate::sla::policy::Span::BusinessDays(d) => format!("{d} business days"),
            crate::sla::policy::Span::OpenMinutes(_) => format!("{after} of business hours"),
        },
        confirm_word: "#close".into(),
        reopen_days: u32::try_from(desk.policy.reopen_window.num_days()).unwrap_or(14),
    }
}

/// Whether the decision is an engineer's public reply: its text (and attachments) go to the
/// customer, with the relay or with the close-pending / closed notice it caused.
fn carries_engineer_reply(decision: &Decision) -> bool {
    matches!(&decision.action, Action::Reply(r) if r.kind == ReplyKind::EngineerReply)
}

fn message_view(
    author: PersonView,
    text: &str,
    at: DateTime<Utc>,
    zone: chrono_tz::Tz,
    internal: bool,
) -> MessageView {
    MessageView {
        author,
        text: text.to_string(),
        received_local: crate::outbound::context::format_local(at, zone),
        internal,
        html: None,
        attachments: Vec::new(),
    }
}

/// Renders one planned mail with the templates serving now, in the language and company
/// overrides chosen for the requester. Should the override fail at render time (a case no
/// sample reached), the defaults are tried before the mail is given up, so that an override typo
/// does not cost the customer the mail.
fn render_planned(
    desk: &Desk,
    facts: &TicketFacts,
    inbound: Option<&InboundParts<'_>>,
    planned: &PlannedMail,
    decision: &Decision,
) -> Result<QueuedMail, String> {
    let mail = inbound.map(|i| i.mail);
    let number = facts.number;
    let template = planned.template;
    let tag = desk.tag(number);
    let company = desk.company_of(&facts.requester);
    let renderer = desk.templates.current();
    let for_staff = audience(template) == Audience::Staff;
    // Staff mail is written in the desk's own language; customer mail in theirs.
    let languages: Vec<&str> = if for_staff {
        Vec::new()
    } else {
        mail.and_then(|m| m.content_language.as_deref())
            .into_iter()
            .chain(company.and_then(|c| c.language.as_deref()))
            .collect()
    };
    let variant = renderer.select(
        company.map(|c| CompanyView::from(c).slug).as_deref(),
        &languages,
    );
    let zone = DEFAULT_ZONE;
    let mut ticket_view = TicketView::new(
        number,
        tag.clone(),
        &facts.subject,
        facts.status,
        facts.created_at,
        zone,
    );
    ticket_view.linked_tag = facts.linked_ticket.map(|n| desk.tag(n));
    ticket_view.assignee = facts.assignee.as_deref().map(|a| {
        let name = facts
            .others
            .iter()
            .find(|(m, _)| m.address.eq_ignore_ascii_case(a))
            .and_then(|(m, _)| m.name.as_deref());
        PersonView::new(name, a)
    });
    let mut ctx = TemplateContext::new(
        ticket_view,
        SeverityView::from(&facts.severity),
        PersonView::from_mailbox(&facts.requester),
        desk.support_view(),
        zone,
    );
    ctx.audience = audience(template);
    ctx.recipient = PersonView::from_mailbox(&planned.to);
    ctx.language = variant.language.clone().unwrap_or_else(|| "en".into());
    ctx.company = company.map(CompanyView::from);
    ctx.participants.extend(
        facts
            .others
            .iter()
            .map(|(m, role)| ParticipantView::new(m.name.as_deref(), &m.address, role.as_str())),
    );
    ctx.status_change = facts
        .status_change
        .as_ref()
        .map(|c| StatusChangeView::new(c.from, c.to, c.event.describe()));

    let text = decision
        .message
        .as_ref()
        .map(|m| m.text.as_str())
        .or(mail.map(|m| m.text.as_str()))
        .unwrap_or("");
    let mut envelope = Envelope {
        answers: mail.map(|m| m.message_id.as_str()),
        from_name: desk.from_name.clone(),
        in_reply_to: mail.map(|m| m.message_id.as_str()),
        references: mail.map(|m| m.references.as_slice()).unwrap_or(&[]),
        reply_to: None,
        attachments: Vec::new(),
        auto_submitted: AutoSubmitted::AutoReplied,
        automatic: true,
    };
    // Mail to customers caused by staff threads into the customer's conversation: they never
    // saw the engineer's mail or the notification it answers.
    let caused_by_staff = matches!(&decision.action, Action::Reply(r) if !r.role.is_customer());
    let scheduled = matches!(&decision.action, Action::Scheduled { .. });
    if !for_staff && (caused_by_staff || scheduled) {
        envelope.in_reply_to = facts.conversation.last().map(String::as_str);
        envelope.references = &facts.conversation;
    }
    if matches!(template, Template::ClosePending | Template::Closed) {
        ctx.closing = Some(closing_view(desk, decision, facts, zone));
    }
    if scheduled {
        envelope.auto_submitted = AutoSubmitted::AutoGenerated;
        scheduled_sections(desk, facts, planned, decision, &mut ctx, zone);
    }
    let Some(inbound) = inbound else {
        return finish(
            desk, facts, planned, decision, &variant, ctx, envelope, &tag,
        );
    };
    let mail = inbound.mail;
    match template {
        Template::EngineerNotification => {
            let limit = desk.staff.max_attachment_size;
            let attached = attachment_bodies(inbound.raw, limit);
            let mut view = message_view(
                PersonView::from_mailbox(&mail.from),
                text,
                decision.at,
                zone,
                false,
            );
            view.attachments = mail
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let mut v = AttachmentView::new(
                        a.filename.as_deref().unwrap_or("attachment"),
                        &a.content_type,
                        a.size as u64,
                        limit as u64,
                    );
                    v.attached = i < attached.len();
                    v
                })
                .collect();
            ctx.message = Some(view);
            ctx.notification = Some(NotificationView {
                kind: planned
                    .notice
                    .unwrap_or(Notice::NewTicket)
                    .as_str()
                    .to_string(),
                status_change: ctx.status_change.clone(),
                attachment_limit_label: size_label(limit as u64),
            });
            envelope.attachments = attached;
            envelope.reply_to = Some(&desk.from_address);
        }
        Template::Relay | Template::ClosePending | Template::Closed
            if carries_engineer_reply(decision) =>
        {
            let name = mail
                .from
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| mail.from.local_part());
            let shown = desk.staff.show_name.replace("NAME", &name);
            // The engineer's address never reaches the customer unless the desk says so.
            let address = if desk.staff.reveal_address {
                mail.from.address.clone()
            } else {
                desk.from_address.clone()
            };
            let mut view = message_view(
                PersonView::new(Some(&name), &address),
                text,
                decision.at,
                zone,
                false,
            );
            view.html = inbound.reply_html().map(str::to_string);
            view.attachments = inbound
                .attachments()
                .iter()
                .map(|a| {
                    AttachmentView::new(
                        a.filename.as_deref().unwrap_or("attachment"),
                        &a.content_type,
                        a.data.len() as u64,
                        u64::MAX,
                    )
                })
                .collect();
            ctx.message = Some(view);
            envelope.from_name = shown;
            envelope.attachments = inbound.attachments().to_vec();
            // A person's reply, not an automatic one: answers and out-of-office replies to it
            // are what the customer's side would send to any engineer.
            envelope.auto_submitted = AutoSubmitted::No;
            envelope.automatic = false;
        }
        Template::InternalNote => {
            let mut view = message_view(
                PersonView::from_mailbox(&mail.from),
                text,
                decision.at,
                zone,
                true,
            );
            view.html = inbound.reply_html().map(str::to_string);
            ctx.message = Some(view);
            envelope.attachments = inbound.attachments().to_vec();
            envelope.reply_to = Some(&desk.from_address);
        }
        Template::CommandRejected => {
            ctx.message = Some(message_view(
                PersonView::from_mailbox(&mail.from),
                text,
                decision.at,
                zone,
                true,
            ));
            ctx.rejection = Some(RejectionView {
                problems: decision
                    .rejected
                    .iter()
                    .map(|r| RejectedCommand {
                        line: r.line,
                        text: r.text.clone(),
                        problem: r.problem.clone(),
                    })
                    .collect(),
                help: COMMAND_HELP.to_string(),
            });
        }
        Template::Reopened => {
            ctx.message = Some(message_view(
                PersonView::from_mailbox(&mail.from),
                text,
                decision.at,
                zone,
                false,
            ));
        }
        Template::DeliveryFailure => {
            let report = match &decision.action {
                Action::Report(r) => Some(&r.report),
                _ => None,
            };
            let failed = report.and_then(|r| {
                r.recipients
                    .iter()
                    .find(|f| f.address.eq_ignore_ascii_case(&facts.requester.address))
            });
            ctx.failure = Some(FailureView {
                kind: failure_kind::REQUESTER_BOUNCED.into(),
                recipient: facts.requester.address.clone(),
                template: String::new(),
                error: failed
                    .map(|f| {
                        [f.status.as_deref(), f.diagnostic.as_deref()]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
                message_id: report
                    .and_then(|r| r.original_message_id.clone())
                    .unwrap_or_default(),
            });
            envelope.auto_submitted = AutoSubmitted::AutoGenerated;
        }
        _ => {}
    }
    finish(
        desk, facts, planned, decision, &variant, ctx, envelope, &tag,
    )
}

/// The sections of mail the SLA clock sends: the status update, the reminder, escalation and
/// breach notices (close-pending and closed get theirs like any other).
fn scheduled_sections(
    desk: &Desk,
    facts: &TicketFacts,
    planned: &PlannedMail,
    decision: &Decision,
    ctx: &mut TemplateContext,
    zone: chrono_tz::Tz,
) {
    let local = |at: DateTime<Utc>| crate::outbound::context::format_local(at, zone);
    let targets = desk.policy.sla.of(facts.severity.assigned);
    let clocks = &facts.clocks;
    match planned.template {
        Template::StatusUpdate => {
            ctx.update = Some(UpdateView {
                last_public_local: local(clocks.last_public_out.unwrap_or(facts.created_at)),
                interval: targets.update_every.to_string(),
            });
        }
        Template::CustomerPendingReminder => {
            ctx.reminder = Some(ReminderView {
                waiting_since_local: local(clocks.status_since.unwrap_or(facts.created_at)),
                close_pending_local: clocks.close_pending_due.map(local).unwrap_or_default(),
            });
        }
        Template::Escalation => {
            ctx.escalation = Some(EscalationView {
                at_local: local(planned.due.unwrap_or(decision.at)),
                after: targets.escalate_after.to_string(),
                reason: format!("unresolved {} after it was opened", targets.escalate_after),
            });
        }
        Template::Breach => {
            let (deadline, label, due) = match planned.notice {
                Some(Notice::ResolutionBreached) => {
                    ("resolution", "Resolution", clocks.resolution_due)
                }
                _ => ("response", "Response", clocks.response_due),
            };
            let due = due.unwrap_or(decision.at);
            let late = (decision.at - due).num_minutes().max(0);
            ctx.breach = Some(BreachView {
                deadline: deadline.into(),
                deadline_label: label.into(),
                due_local: local(due),
                overdue_by: if late >= 120 {
                    format!("{} h", late / 60)
                } else {
                    format!("{late} min")
                },
            });
        }
        _ => {}
    }
}

/// Renders the template and composes the mail.
#[allow(clippy::too_many_arguments)]
fn finish<'a>(
    desk: &'a Desk,
    facts: &TicketFacts,
    planned: &PlannedMail,
    decision: &Decision,
    variant: &Variant,
    mut ctx: TemplateContext,
    mut envelope: Envelope<'a>,
    tag: &str,
) -> Result<QueuedMail, String> {
    let number = facts.number;
    let template = planned.template;
    let renderer = desk.templates.current();
    if audience(template) == Audience::Staff {
        envelope.reply_to = envelope.reply_to.or(Some(&desk.from_address));
    }
    let rendered = match renderer.render(template, variant, &ctx, tag) {
        Ok(r) => r,
        Err(e) if *variant != Variant::default() => {
            tracing::error!(ticket = number, error = %e, variant = %variant.describe(), "template override failed; using the defaults");
            ctx.language = "en".into();
            renderer
                .render(template, &Variant::default(), &ctx, tag)
                .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    // The Message-ID answers the inbound message, or for scheduled mail the instant it was due:
    // a replay or a second sweep makes the same one.
    let answers = match (envelope.answers, planned.due) {
        (Some(id), _) => id.to_string(),
        (None, Some(due)) => format!("due:{}", due.to_rfc3339()),
        (None, None) => format!("at:{}", decision.at.to_rfc3339()),
    };
    let message_id = outbound_message_id(
        number,
        template.name(),
        &answers,
        &planned.to.key(),
        &desk.from_address,
    );
    let raw = compose(&Letter {
        from_name: &envelope.from_name,
        from_address: &desk.from_address,
        to: &planned.to,
        subject: &rendered.subject,
        text: &rendered.text,
        html: &rendered.html,
        message_id: &message_id,
        in_reply_to: envelope.in_reply_to,
        references: envelope.references,
        ticket: number,
        auto_submitted: envelope.auto_submitted,
        date: decision.at,
        reply_to: envelope.reply_to,
        attachments: &envelope.attachments,
    })
    .map_err(|e| e.to_string())?;
    Ok(QueuedMail {
        ticket: Some(number),
        message_id,
        template: template.name().to_string(),
        to: planned.to.key(),
        automatic: envelope.automatic,
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
    /// new_ticket, reply, duplicate, bounce or quarantine.
    pub action: &'static str,
    /// The ticket it joins (reply, duplicate, bounce) or continues (a new ticket linked to a
    /// closed one), or null.
    pub ticket: Option<i64>,
    /// How it matched its ticket: `{"by": "header", "message_id": ...}` or `{"by": "tag",
    /// "ticket": N}`.
    pub matched: Option<crate::desk::MatchedBy>,
    /// Why a header or tag did not join the ticket it named (stranger, unknown ticket, closed
    /// past the reopen window).
    pub ignored: Option<String>,
    /// The status change it would make.
    pub status_change: Option<StatusChangeExplanation>,
    /// The text it would store (a reply: without quoted history and signature).
    pub text: Option<String>,
    /// Whether an acknowledgement would be sent.
    pub acknowledge: bool,
    /// Why.
    pub reason: String,
    /// Mails that would be queued.
    pub outbound: Vec<OutboundExplanation>,
    /// History events it would record.
    pub events: Vec<crate::desk::PlannedEvent>,
    /// What a bounce or feedback report says.
    pub report: Option<crate::mail::dsn::Report>,
    /// Command lines that would be rejected (engineer and account-manager mail).
    pub rejected: Vec<crate::desk::commands::Rejected>,
    /// Assignee, severity and response-clock changes.
    pub update: crate::desk::TicketUpdate,
    /// Whether a staff From is authenticated (`staff.require_authenticated`).
    pub staff_auth: crate::desk::StaffAuth,
    /// The Message-ID used for duplicate detection.
    pub message_id: Option<String>,
}

/// A status change in `explain`.
#[derive(Debug, Serialize)]
pub struct StatusChangeExplanation {
    /// Before.
    pub from: &'static str,
    /// After.
    pub to: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// One mail in `explain`.
#[derive(Debug, Serialize)]
pub struct OutboundExplanation {
    /// Template name.
    pub template: &'static str,
    /// Recipient.
    pub to: String,
    /// Why staff are told (`new_ticket`, `customer_reply`, `resolved`, `requester_bounced`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<&'static str>,
}

/// Decides for one message against what the store knows, changing nothing. Without a store
/// (no database yet) the message is judged as if it were the first one seen.
pub async fn explain<S: Store>(
    store: Option<&S>,
    desk: &Desk,
    item: &Incoming,
    now: DateTime<Utc>,
) -> Result<Explanation, StoreError> {
    let raw: &[u8] = &item.raw;
    let parsed = parse_all(&desk.limits, std::slice::from_ref(item))
        .await?
        .pop()
        .unwrap_or_else(|| {
            Err(QuarantineReason::Unparseable {
                detail: "no message".into(),
            })
        });
    let mut ctx = match (store, &parsed) {
        (Some(store), Ok(mail)) => {
            let keys = thread::keys(mail, &desk.tag_prefix);
            store
                .peek_context(mail, &keys, rate_window_start(now))
                .await?
        }
        _ => MailContext::default(),
    };
    if let Ok(mail) = &parsed {
        ctx.staff_auth = desk.auth.check(&desk.policy, mail, raw).await;
    }
    let d = decide_parsed(&parsed, &ctx, &desk.policy, now);
    let mail = parsed.as_ref().ok();
    let (ticket, matched, report) = match &d.action {
        Action::Duplicate { ticket } => (*ticket, None, None),
        Action::Reply(r) => (Some(r.ticket), Some(r.matched_by.clone()), None),
        Action::Report(r) => (r.ticket, r.matched_by.clone(), Some(r.report.clone())),
        Action::NewTicket(t) => (t.linked_ticket, None, None),
        Action::Quarantine(_) => (None, None, None),
        Action::Scheduled { ticket } => (Some(*ticket), None, None),
    };
    Ok(Explanation {
        from: mail.map(|m| m.from.address.clone()),
        subject: mail.map(|m| display_subject(&m.subject)),
        severity: d.severity.as_ref().map(SeverityView::from),
        action: d.action.name(),
        ticket,
        matched,
        ignored: d.ignored.clone(),
        status_change: d.status_change.as_ref().map(|c| StatusChangeExplanation {
            from: c.from.as_str(),
            to: c.to.as_str(),
            reason: c.event.describe(),
        }),
        text: d.message.as_ref().map(|m| m.text.clone()),
        acknowledge: d.acknowledge,
        reason: d.reason.clone(),
        outbound: d
            .outbound
            .iter()
            .map(|p| OutboundExplanation {
                template: p.template.name(),
                to: p.to.address.clone(),
                notice: p.notice.map(|n| n.as_str()),
            })
            .collect(),
        events: d.events.clone(),
        report,
        rejected: d.rejected.clone(),
        update: d.update.clone(),
        staff_auth: ctx.staff_auth.clone(),
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

/// Queues the daily digest (SPEC: SLA, daily digest): each account manager gets their
/// customers' open tickets, the triage owners all of them, times in `zone` (`digest.calendar`).
/// Nothing goes to someone with nothing open. The Message-ID is made of the recipient and the
/// local date, so a second run on the same day (another worker, a restart) queues nothing new.
pub async fn digest<S: Store>(
    store: &S,
    desk: &Desk,
    zone: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Result<Vec<Queued>, StoreError> {
    use crate::outbound::digest::{DigestRow, DigestScope, digest_context, digest_view};
    let open: Vec<DigestRow> = store
        .list_tickets(None)
        .await?
        .into_iter()
        .filter_map(|t| {
            let status: Status = t.status.parse().ok()?;
            (status != Status::Closed).then(|| {
                let requester = Mailbox {
                    name: t.requester_name.clone(),
                    address: t.requester.clone(),
                };
                DigestRow {
                    number: t.number,
                    subject: t.subject.clone(),
                    company: desk.company_of(&requester).map(|c| c.company.clone()),
                    requester: t.requester.clone(),
                    requester_name: t.requester_name.clone(),
                    status,
                    severity: u8::try_from(t.assigned_severity).unwrap_or(4),
                    created_at: t.created_at,
                    assignee: t.assignee.clone(),
                    assignee_name: None,
                    response_due_at: t.response_due_at,
                    resolution_due_at: t.resolution_due_at,
                    update_due_at: t.update_due_at,
                    escalation_due_at: t.escalation_due_at,
                    first_response_at: t.first_response_at,
                    resolved: t.resolved_at.is_some() || status == Status::ClosePending,
                    escalated: t.escalated_at.is_some(),
                }
            })
        })
        .collect();
    let mut recipients: Vec<(String, DigestScope, Vec<DigestRow>)> = desk
        .policy
        .triage_owners
        .iter()
        .map(|a| (a.clone(), DigestScope::All, open.clone()))
        .collect();
    for c in &desk.policy.customers {
        let Some(am) = &c.account_manager else {
            continue;
        };
        let theirs: Vec<DigestRow> = open
            .iter()
            .filter(|r| {
                r.requester
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&c.domain))
            })
            .cloned()
            .collect();
        match recipients
            .iter_mut()
            .find(|(a, s, _)| a == am && *s == DigestScope::Customers)
        {
            Some((_, _, rows)) => rows.extend(theirs),
            None => recipients.push((am.clone(), DigestScope::Customers, theirs)),
        }
    }
    let date = now.with_timezone(&zone).format("%Y-%m-%d").to_string();
    let renderer = desk.templates.current();
    let mut tx = store.begin().await?;
    let mut queued = Vec::new();
    for (address, scope, rows) in recipients {
        let Some(view) = digest_view(&rows, scope, now, zone, &desk.tag_prefix) else {
            continue;
        };
        let to = Mailbox {
            name: None,
            address: address.clone(),
        };
        let ctx = digest_context(
            view,
            PersonView::from_mailbox(&to),
            desk.support_view(),
            now,
            zone,
        );
        let rendered = match renderer.render(Template::Digest, &Variant::default(), &ctx, "") {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(to = %address, error = %e, "digest not queued: the template failed");
                continue;
            }
        };
        let message_id = outbound_message_id(
            0,
            Template::Digest.name(),
            &format!("digest:{date}"),
            &to.key(),
            &desk.from_address,
        );
        let raw = match compose(&Letter {
            from_name: &desk.from_name,
            from_address: &desk.from_address,
            to: &to,
            subject: &rendered.subject,
            text: &rendered.text,
            html: &rendered.html,
            message_id: &message_id,
            in_reply_to: None,
            references: &[],
            ticket: 0,
            auto_submitted: AutoSubmitted::AutoGenerated,
            date: now,
            reply_to: Some(&desk.from_address),
            attachments: &[],
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(to = %address, error = %e, "digest not queued");
                continue;
            }
        };
        let q = QueuedMail {
            ticket: None,
            message_id: message_id.clone(),
            template: Template::Digest.name().to_string(),
            to: to.key(),
            automatic: true,
            rendered: raw,
        };
        if tx.queue(&q, now).await? {
            queued.push(Queued {
                template: q.template,
                to: q.to,
                message_id,
            });
        }
    }
    tx.commit().await?;
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// A mail that keeps the parser busy for a while, under every limit: 800 parts of 16 KiB.
    fn many_parts() -> Vec<u8> {
        let mut raw = String::from(
            "From: jane@acme.test\r\nTo: support@example.com\r\nSubject: SEV 4 parts\r\n\
             Message-ID: <parts@acme.test>\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
        );
        let line = format!("{}\r\n", "x".repeat(62));
        for _ in 0..800 {
            raw.push_str("--b\r\nContent-Type: text/plain\r\n\r\n");
            for _ in 0..256 {
                raw.push_str(&line);
            }
        }
        raw.push_str("--b--\r\n");
        raw.into_bytes()
    }

    /// On a single-threaded runtime another task can run while a batch is parsed only if the
    /// parse is off the executor: parsed in place, `parse_all` would finish before that task was
    /// polled once.
    #[tokio::test(flavor = "current_thread")]
    async fn parse_all_leaves_the_executor_free_while_it_parses() {
        let items = vec![Incoming {
            raw: Bytes::from(many_parts()),
            source: "test".into(),
            silent: false,
            truncated_from: None,
        }];
        let done = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicUsize::new(0));
        let other = tokio::spawn({
            let (done, polls) = (done.clone(), polls.clone());
            async move {
                while !done.load(Ordering::SeqCst) {
                    polls.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }
        });
        let parsed = parse_all(&Limits::default(), &items).await;
        done.store(true, Ordering::SeqCst);
        other.await.unwrap_or_else(|e| panic!("{e}"));
        match parsed.as_deref() {
            Ok([Ok(mail)]) => assert_eq!(mail.subject, "SEV 4 parts"),
            other => panic!("not parsed: {other:?}"),
        }
        assert!(
            polls.load(Ordering::SeqCst) > 0,
            "no other task ran while the batch was parsed: the parse held the executor"
        );
    }
}
