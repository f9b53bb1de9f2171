//! Mail that cannot be delivered: the row is given up (an event on its ticket) and the triage
//! owners, and the ticket's assignee, get a notice, in one transaction. The notice is the
//! `delivery_failure` template, rendered with the templates serving now; should that fail, it
//! goes out as fixed text, so a broken template never costs the notice. A notice about a failed
//! notice would loop: those are only logged.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::desk::Status;
use crate::desk::decide::Template;
use crate::mail::Mailbox;
use crate::metrics::{METRICS, Metrics};
use crate::outbound::compose::{AutoSubmitted, Letter, compose, outbound_message_id};
use crate::outbound::context::{
    Audience, DEFAULT_ZONE, FailureView, ParticipantView, PersonView, SeverityView, SupportView,
    TemplateContext, TicketView, failure_kind,
};
use crate::outbound::templates::{LiveTemplates, Rendered, TemplateError, Variant};
use crate::store::{OutboxItem, QueuedMail, Store, StoreError, StoreTx, TicketDetail};

/// The template name of the notice about a mail that could not be delivered.
pub const DELIVERY_FAILURE: &str = "delivery_failure";

/// Who hears about mail that could not be delivered, and as whom postdesk writes.
#[derive(Debug, Clone)]
pub struct FailureNotices {
    triage_owners: Vec<String>,
    from_address: String,
    from_name: String,
    phone: String,
    tag_prefix: String,
    /// The templates serving now (the worker's, shared with the pipeline so an admin's edit
    /// reaches the notice too). None: fixed text.
    templates: Option<LiveTemplates>,
}

impl FailureNotices {
    /// From the config; `templates` None sends fixed text.
    pub fn new(config: &Config, templates: Option<LiveTemplates>) -> Self {
        FailureNotices {
            triage_owners: config.triage_owners.clone(),
            from_address: config.sending_address().to_string(),
            from_name: config.support_name.clone(),
            phone: config.support_phone.clone(),
            tag_prefix: config.tag_prefix.clone(),
            templates,
        }
    }

    /// Gives up on `item` (held by `owner`): records why on its ticket and queues the notices.
    pub async fn fail_permanently<S: Store>(
        &self,
        store: &S,
        owner: &str,
        item: &OutboxItem,
        why: &str,
    ) -> Result<(), StoreError> {
        Metrics::inc(&METRICS.mails_failed);
        tracing::error!(
            outbox_id = item.id,
            ticket = item.ticket,
            template = %item.template,
            to = %item.to,
            error = %why,
            "mail could not be delivered; triage owners notified"
        );
        let now = Utc::now();
        // A notice about a failed notice would loop: those are only logged.
        let notify = item.template != DELIVERY_FAILURE && !self.triage_owners.is_empty();
        // Read before the write transaction: the ticket's subject, severity and people for the
        // notice. Unreadable, the notice goes out as fixed text.
        let detail = match item.ticket {
            Some(n) if notify => match store.ticket_detail(n).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(ticket = n, error = %e, "cannot read the ticket for the delivery-failure notice; it goes out as fixed text");
                    None
                }
            },
            _ => None,
        };
        let mut tx = store.begin().await?;
        match tx.fail_outbox(owner, item.id, why, now).await {
            Ok(()) => {}
            // Its lease ran out and another worker holds it now: theirs to settle.
            Err(StoreError::NotFound) => {
                tracing::warn!(
                    outbox_id = item.id,
                    "gave up on a mail another worker holds now; left to it"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        if notify {
            // The triage owners, and the engineer the ticket is assigned to.
            let mut to: Vec<String> = self.triage_owners.clone();
            if let Some(a) = detail.as_ref().and_then(|d| d.ticket.assignee.clone())
                && !to.iter().any(|t| t.eq_ignore_ascii_case(&a))
            {
                to.push(a);
            }
            for owner in &to {
                match self.failure_notice(item, owner, why, now, detail.as_ref()) {
                    Ok(q) => {
                        tx.queue(&q, now).await?;
                    }
                    Err(e) => {
                        tracing::error!(to = %owner, error = %e, "could not compose the delivery-failure notice")
                    }
                }
            }
        }
        tx.commit().await
    }

    fn failure_notice(
        &self,
        item: &OutboxItem,
        owner: &str,
        why: &str,
        now: DateTime<Utc>,
        detail: Option<&TicketDetail>,
    ) -> Result<QueuedMail, String> {
        let n = self;
        let (subject, text, html) = match self.render_notice(item, owner, why, now, detail) {
            Ok(Some(r)) => (r.subject, r.text, r.html),
            Ok(None) => fixed_notice(item, why, &n.tag_prefix),
            Err(e) => {
                tracing::error!(outbox_id = item.id, error = %e, "the delivery_failure template failed; the notice goes out as fixed text");
                fixed_notice(item, why, &n.tag_prefix)
            }
        };
        let message_id = outbound_message_id(
            item.ticket.unwrap_or(0),
            DELIVERY_FAILURE,
            &item.message_id,
            owner,
            &n.from_address,
        );
        let to = Mailbox {
            name: None,
            address: owner.to_string(),
        };
        let raw = compose(&Letter {
            from_name: &n.from_name,
            from_address: &n.from_address,
            to: &to,
            subject: &subject,
            text: &text,
            html: &html,
            message_id: &message_id,
            in_reply_to: None,
            references: &[],
            ticket: item.ticket.unwrap_or(0),
            auto_submitted: AutoSubmitted::AutoGenerated,
            date: now,
            reply_to: None,
            attachments: &[],
        })
        .map_err(|e| e.to_string())?;
        Ok(QueuedMail {
            ticket: item.ticket,
            message_id,
            template: DELIVERY_FAILURE.to_string(),
            to: owner.to_string(),
            automatic: true,
            rendered: raw,
        })
    }

    /// The notice rendered from the `delivery_failure` template, or None when there are no
    /// templates or the ticket could not be read (the caller sends the fixed text).
    fn render_notice(
        &self,
        item: &OutboxItem,
        owner: &str,
        why: &str,
        now: DateTime<Utc>,
        detail: Option<&TicketDetail>,
    ) -> Result<Option<Rendered>, TemplateError> {
        let n = self;
        let Some(templates) = &n.templates else {
            return Ok(None);
        };
        if item.ticket.is_some() && detail.is_none() {
            return Ok(None);
        }
        let support = SupportView {
            address: n.from_address.clone(),
            name: n.from_name.clone(),
            phone: n.phone.clone(),
        };
        let ctx = failure_context(item, owner, why, now, detail, support, &n.tag_prefix);
        templates
            .current()
            .render(
                Template::DeliveryFailure,
                &Variant::default(),
                &ctx,
                &ctx.ticket.tag,
            )
            .map(Some)
    }
}

/// The `delivery_failure` context (kind `undeliverable`) for the notice to `owner` about
/// `item`: the ticket from `detail`, or ticket 0 when the mail belonged to none.
fn failure_context(
    item: &OutboxItem,
    owner: &str,
    why: &str,
    now: DateTime<Utc>,
    detail: Option<&TicketDetail>,
    support: SupportView,
    tag_prefix: &str,
) -> TemplateContext {
    let zone = DEFAULT_ZONE;
    let mut ctx = match detail {
        Some(d) => {
            let t = &d.ticket;
            let mut ctx = TemplateContext::new(
                TicketView::new(
                    t.number,
                    crate::mail::subject::tag(tag_prefix, t.number),
                    &t.subject,
                    t.status.parse::<Status>().unwrap_or(Status::InTriage),
                    t.created_at,
                    zone,
                ),
                SeverityView {
                    requested: t.requested_severity.and_then(|s| u8::try_from(s).ok()),
                    assigned: u8::try_from(t.assigned_severity).unwrap_or(4),
                    given: t.severity_given,
                    downgraded: t.downgraded,
                },
                PersonView::new(t.requester_name.as_deref(), &t.requester),
                support,
                zone,
            );
            ctx.participants = d
                .participants
                .iter()
                .map(|p| ParticipantView::new(p.name.as_deref(), &p.address, &p.role))
                .collect();
            ctx
        }
        // No ticket: the templates leave it out (`{% if ticket.number %}`); the requester is a
        // placeholder they do not show.
        None => {
            TemplateContext::without_ticket(PersonView::new(None, &item.to), support, now, zone)
        }
    };
    ctx.audience = Audience::Staff;
    ctx.recipient = PersonView::new(None, owner);
    ctx.failure = Some(FailureView {
        kind: failure_kind::UNDELIVERABLE.into(),
        recipient: item.to.clone(),
        template: item.template.clone(),
        error: why.to_string(),
        message_id: item.message_id.clone(),
    });
    ctx
}

/// The notice as fixed text: what goes out when the template cannot render, so that a broken
/// template never costs it. Returns subject, text and HTML.
fn fixed_notice(item: &OutboxItem, why: &str, tag_prefix: &str) -> (String, String, String) {
    let tag = item
        .ticket
        .map(|t| format!("[{tag_prefix}{t}] "))
        .unwrap_or_default();
    let subject = format!("{tag}Delivery failed: {} to {}", item.template, item.to);
    let ticket_line = item
        .ticket
        .map(|t| format!("Ticket:     {tag_prefix}{t}\n"))
        .unwrap_or_default();
    let text = format!(
        "A mail from the support desk could not be delivered and will not be retried.\n\n\
         {ticket_line}Mail:       {}\nRecipient:  {}\nMessage-ID: {}\nError:      {why}\n\n\
         The customer has not received it. Please reach them another way.\n",
        item.template, item.to, item.message_id
    );
    let html = format!("<pre>{}</pre>", html_escape(&text));
    (subject, text, html)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::templates::Renderer;
    use crate::store::{Participant, TicketSummary};

    fn failed_item(ticket: Option<i64>) -> OutboxItem {
        OutboxItem {
            id: 7,
            ticket,
            message_id: "postdesk.5.relay.0011223344556677@example.com".into(),
            to: "jane@acme.test".into(),
            rendered: Vec::new(),
            attempts: 3,
            template: "relay".into(),
        }
    }

    fn detail() -> TicketDetail {
        let at = DateTime::from_timestamp(1_795_449_600, 0).unwrap_or_default();
        TicketDetail {
            ticket: TicketSummary {
                number: 5,
                subject: "Checkout <fails>".into(),
                requester: "jane@acme.test".into(),
                requester_name: Some("Jane Roe".into()),
                status: "customer_pending".into(),
                requested_severity: Some(1),
                assigned_severity: 3,
                linked_ticket: None,
                requester_bounced: false,
                assignee: None,
                first_response_at: None,
                resolved_at: None,
                response_due_at: None,
                resolution_due_at: None,
                escalation_due_at: None,
                update_due_at: None,
                reminder_due_at: None,
                close_pending_due_at: None,
                auto_close_due_at: None,
                escalated_at: None,
                response_breach_at: None,
                resolution_breach_at: None,
                status_since: None,
                last_public_out_at: None,
                closed_at: None,
                severity_given: true,
                downgraded: true,
                created_at: at,
                updated_at: at,
            },
            participants: vec![Participant {
                address: "jane@acme.test".into(),
                name: Some("Jane Roe".into()),
                role: "requester".into(),
            }],
            messages: Vec::new(),
            history: Vec::new(),
            outbox: Vec::new(),
        }
    }

    fn support() -> SupportView {
        crate::outbound::sample::default_support()
    }

    #[test]
    fn failure_notice_renders_from_the_template_with_the_ticket_or_without_one() {
        let templates =
            Renderer::load(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"))
                .unwrap_or_else(|e| panic!("{e}"));
        let now = Utc::now();
        let why = "550 5.1.1 <jane@acme.test>: user unknown";
        let d = detail();
        let ctx = failure_context(
            &failed_item(Some(5)),
            "triage@example.com",
            why,
            now,
            Some(&d),
            support(),
            "#",
        );
        assert_eq!(ctx.recipient.address, "triage@example.com");
        let out = templates
            .render(
                Template::DeliveryFailure,
                &Variant::default(),
                &ctx,
                &ctx.ticket.tag,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.subject, "[#5] Delivery failed: relay to jane@acme.test");
        for want in [
            "Mail:       relay",
            "Recipient:  jane@acme.test",
            "Message-ID: <postdesk.5.relay.0011223344556677@example.com>",
            why,
            "The customer has not received it; please reach them another way.",
            "Sev 3 assigned; Sev 1 requested",
            "Status:     Customer Pending",
        ] {
            assert!(out.text.contains(want), "{want:?} in {}", out.text);
        }
        assert!(out.html.contains("Checkout &lt;fails&gt;"), "{}", out.html);

        let ctx = failure_context(
            &failed_item(None),
            "triage@example.com",
            why,
            now,
            None,
            support(),
            "#",
        );
        let out = templates
            .render(
                Template::DeliveryFailure,
                &Variant::default(),
                &ctx,
                &ctx.ticket.tag,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.subject, "Delivery failed: relay to jane@acme.test");
        assert!(!out.text.contains("[#"), "{}", out.text);
        assert!(!out.text.contains("The customer"), "{}", out.text);
    }

    #[test]
    fn fixed_notice_is_the_fallback_text() {
        let (subject, text, html) = fixed_notice(&failed_item(Some(5)), "550 <x>", "#");
        assert_eq!(subject, "[#5] Delivery failed: relay to jane@acme.test");
        assert!(text.contains("Ticket:     #5\n"), "{text}");
        assert!(html.contains("550 &lt;x&gt;"), "{html}");
        let (subject, text, _) = fixed_notice(&failed_item(None), "550", "#");
        assert_eq!(subject, "Delivery failed: relay to jane@acme.test");
        assert!(!text.contains("Ticket:"), "{text}");
        assert_eq!(Template::DeliveryFailure.name(), DELIVERY_FAILURE);
    }
}
