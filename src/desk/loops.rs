//! Loop protection (SPEC: Loops, bounces and bad input; RFC 3834): which mail must never get an
//! automatic answer, and which mail is a delivery-status report (a bounce).

use crate::mail::InboundMail;

/// Local parts that only machines send from.
const MACHINE_SENDERS: [&str; 3] = ["mailer-daemon", "postmaster", "mail-daemon"];

/// Why a message gets no automatic reply, or `None` when it may get one.
///
/// The checks run in a fixed order so that the reason shown by `explain` is the most telling one.
pub fn no_reply_reason(
    mail: &InboundMail,
    support_addresses: &[String],
    replies_to_sender_last_hour: u32,
    max_replies_per_hour: u32,
) -> Option<String> {
    let sender = mail.from.key();
    if support_addresses.contains(&sender) {
        return Some(format!(
            "the sender {sender} is a support address (mail loop)"
        ));
    }
    if let Some(why) = machine_signal(mail) {
        return Some(why);
    }
    // Lists and Exchange's suppression request: never answered, but a person may stand behind
    // them, so they are not machine-sent for the status rules.
    let flags = [
        (mail.auto.list_id, "List-Id"),
        (mail.auto.list_unsubscribe, "List-Unsubscribe"),
        (
            mail.auto.x_auto_response_suppress,
            "X-Auto-Response-Suppress",
        ),
    ];
    if let Some((_, header)) = flags.iter().find(|(set, _)| *set) {
        return Some(format!("{header} header present"));
    }
    if replies_to_sender_last_hour >= max_replies_per_hour {
        return Some(format!(
            "rate limit: {replies_to_sender_last_hour} automatic replies to {sender} in the last hour (limit {max_replies_per_hour})"
        ));
    }
    None
}

/// What marks a message as sent by a machine (an auto-reply, a list, a mail system), if anything:
/// such a message is never answered and, on a ticket, never moves its status.
pub fn machine_signal(mail: &InboundMail) -> Option<String> {
    if MACHINE_SENDERS.contains(&mail.from.local_part().as_str()) {
        return Some(format!("the sender {} is a mail system", mail.from.key()));
    }
    if mail.auto.null_return_path {
        return Some("the envelope sender is null (Return-Path: <>)".into());
    }
    if let Some(report) = &mail.auto.report_type {
        return Some(format!("multipart/report ({report})"));
    }
    if let Some(v) = mail.auto.auto_submitted.as_deref().filter(|v| *v != "no") {
        return Some(format!("Auto-Submitted: {v}"));
    }
    if let Some(v) = mail
        .auto
        .precedence
        .as_deref()
        .filter(|v| matches!(*v, "bulk" | "junk" | "list"))
    {
        return Some(format!("Precedence: {v}"));
    }
    let flags = [
        (mail.auto.x_autoreply, "X-Autoreply"),
        (mail.auto.x_autorespond, "X-Autorespond"),
    ];
    if let Some((_, header)) = flags.iter().find(|(set, _)| *set) {
        return Some(format!("{header} header present"));
    }
    None
}

/// Whether a message was sent by a machine (see `machine_signal`).
pub fn is_machine_sent(mail: &InboundMail) -> bool {
    machine_signal(mail).is_some()
}

/// Whether a message is a delivery-status report about mail postdesk sent.
pub fn is_bounce(mail: &InboundMail) -> bool {
    mail.auto.report_type.as_deref() == Some("delivery-status")
        || mail.from.local_part() == "mailer-daemon"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::{AutoSignals, Mailbox};

    fn mail(from: &str, auto: AutoSignals) -> InboundMail {
        InboundMail {
            message_id: "m@x".into(),
            message_id_synthesised: false,
            from: Mailbox {
                name: None,
                address: from.into(),
            },
            to: vec![],
            cc: vec![],
            subject: "SEV 3 hello".into(),
            in_reply_to: vec![],
            references: vec![],
            auto,
            text: String::new(),
            content_language: None,
            size: 10,
            ..InboundMail::default()
        }
    }

    #[test]
    fn auto_reply_rules() {
        let support = vec!["support@example.com".to_string()];
        let base = AutoSignals::default();
        let cases: Vec<(&str, InboundMail, u32, Option<&str>)> = vec![
            (
                "plain_customer_mail_gets_a_reply",
                mail("jane@acme.test", base.clone()),
                0,
                None,
            ),
            (
                "auto_submitted_no_is_a_person",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        auto_submitted: Some("no".into()),
                        ..base.clone()
                    },
                ),
                0,
                None,
            ),
            (
                "auto_submitted_auto_replied",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        auto_submitted: Some("auto-replied".into()),
                        ..base.clone()
                    },
                ),
                0,
                Some("Auto-Submitted: auto-replied"),
            ),
            (
                "auto_submitted_auto_generated",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        auto_submitted: Some("auto-generated".into()),
                        ..base.clone()
                    },
                ),
                0,
                Some("Auto-Submitted: auto-generated"),
            ),
            (
                "precedence_bulk",
                mail(
                    "news@acme.test",
                    AutoSignals {
                        precedence: Some("bulk".into()),
                        ..base.clone()
                    },
                ),
                0,
                Some("Precedence: bulk"),
            ),
            (
                "precedence_junk",
                mail(
                    "news@acme.test",
                    AutoSignals {
                        precedence: Some("junk".into()),
                        ..base.clone()
                    },
                ),
                0,
                Some("Precedence: junk"),
            ),
            (
                "precedence_list",
                mail(
                    "news@acme.test",
                    AutoSignals {
                        precedence: Some("list".into()),
                        ..base.clone()
                    },
                ),
                0,
                Some("Precedence: list"),
            ),
            (
                "precedence_first_class_is_a_person",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        precedence: Some("first-class".into()),
                        ..base.clone()
                    },
                ),
                0,
                None,
            ),
            (
                "list_id",
                mail(
                    "list@acme.test",
                    AutoSignals {
                        list_id: true,
                        ..base.clone()
                    },
                ),
                0,
                Some("List-Id header present"),
            ),
            (
                "list_unsubscribe",
                mail(
                    "list@acme.test",
                    AutoSignals {
                        list_unsubscribe: true,
                        ..base.clone()
                    },
                ),
                0,
                Some("List-Unsubscribe header present"),
            ),
            (
                "x_autoreply",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        x_autoreply: true,
                        ..base.clone()
                    },
                ),
                0,
                Some("X-Autoreply header present"),
            ),
            (
                "x_autorespond",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        x_autorespond: true,
                        ..base.clone()
                    },
                ),
                0,
                Some("X-Autorespond header present"),
            ),
            (
                "x_auto_response_suppress",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        x_auto_response_suppress: true,
                        ..base.clone()
                    },
                ),
                0,
                Some("X-Auto-Response-Suppress header present"),
            ),
            (
                "mailer_daemon",
                mail("MAILER-DAEMON@mx.acme.test", base.clone()),
                0,
                Some("mail system"),
            ),
            (
                "postmaster",
                mail("postmaster@acme.test", base.clone()),
                0,
                Some("mail system"),
            ),
            (
                "null_return_path",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        null_return_path: true,
                        ..base.clone()
                    },
                ),
                0,
                Some("envelope sender is null"),
            ),
            (
                "support_address_itself",
                mail("Support@Example.com", base.clone()),
                0,
                Some("support address"),
            ),
            (
                "delivery_report",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        report_type: Some("delivery-status".into()),
                        ..base.clone()
                    },
                ),
                0,
                Some("multipart/report"),
            ),
            (
                "read_receipt",
                mail(
                    "jane@acme.test",
                    AutoSignals {
                        report_type: Some("disposition-notification".into()),
                        ..base.clone()
                    },
                ),
                0,
                Some("disposition-notification"),
            ),
            (
                "rate_limit_reached",
                mail("jane@acme.test", base.clone()),
                10,
                Some("rate limit"),
            ),
            (
                "rate_limit_not_reached",
                mail("jane@acme.test", base.clone()),
                9,
                None,
            ),
        ];
        for (name, m, sent, expected) in cases {
            let got = no_reply_reason(&m, &support, sent, 10);
            match (expected, &got) {
                (None, None) => {}
                (Some(want), Some(got)) => {
                    assert!(got.contains(want), "{name}: {got} lacks {want}")
                }
                _ => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bounce_detection() {
        let report = AutoSignals {
            report_type: Some("delivery-status".into()),
            ..AutoSignals::default()
        };
        assert!(is_bounce(&mail(
            "mailer-daemon@mx.acme.test",
            AutoSignals::default()
        )));
        assert!(is_bounce(&mail("postmaster@acme.test", report)));
        assert!(!is_bounce(&mail(
            "postmaster@acme.test",
            AutoSignals::default()
        )));
        let mdn = AutoSignals {
            report_type: Some("disposition-notification".into()),
            ..AutoSignals::default()
        };
        assert!(!is_bounce(&mail("jane@acme.test", mdn)));
    }
}
