//! Who is told of what (SPEC: People and addresses, Engineers by mail). Pure: the ticket's
//! participants and the policy in, one planned mail per recipient out.
//!
//! - A new ticket: every triage owner and the account manager of the requester's company.
//! - A customer reply: the assignee, or the triage owners while nobody is assigned.
//! - An internal note: the staff participants, the assignee and the account manager; a note
//!   only the account manager would see (or nobody: an account manager's own note on a ticket
//!   no engineer touched yet) goes to the triage owners too.
//! - A resolution (close pending or closed): the account manager.
//! - A requester whose address bounces: the triage owners and the assignee.
//! - An escalation: the escalation contacts and the triage owners; a breached deadline: the
//!   triage owners.
//! - Customer-facing mail (relay, notices, reminders): the requester and the watchers.
//!
//! Nobody is told of their own mail, and nobody twice.

use super::decide::{Notice, PlannedMail, Policy, Template};
use super::ticket::{Role, TicketState};
use crate::mail::Mailbox;

/// Recipients without duplicates and without `except`, in order.
fn people<'a>(
    addresses: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    except: &str,
) -> Vec<Mailbox> {
    let mut out: Vec<Mailbox> = Vec::new();
    for (address, name) in addresses {
        let address = address.trim().to_ascii_lowercase();
        if address.is_empty()
            || address.eq_ignore_ascii_case(except)
            || out.iter().any(|m| m.address == address)
        {
            continue;
        }
        out.push(Mailbox {
            name: name.map(str::to_string),
            address,
        });
    }
    out
}

fn notices(to: Vec<Mailbox>, template: Template, why: Notice) -> Vec<PlannedMail> {
    to.into_iter()
        .map(|m| PlannedMail::notice(template, m, why))
        .collect()
}

fn triage(policy: &Policy) -> impl Iterator<Item = (&str, Option<&str>)> {
    policy.triage_owners.iter().map(|a| (a.as_str(), None))
}

/// The account managers of a ticket: its participant, and the one configured for the
/// requester's domain.
fn account_managers<'a>(
    policy: &'a Policy,
    ticket: &'a TicketState,
) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
    let configured = ticket
        .requester_domain()
        .and_then(|d| policy.account_manager_of(d));
    ticket
        .participants
        .iter()
        .filter(|m| m.role == Role::AccountManager)
        .map(|m| (m.address.as_str(), m.name.as_deref()))
        .chain(configured.map(|a| (a, None)))
}

/// Mail of `template` to the customer side: the requester and the watchers.
pub fn customers(ticket: &TicketState, template: Template) -> Vec<PlannedMail> {
    ticket
        .customers()
        .map(|m| PlannedMail::new(template, m.mailbox()))
        .collect()
}

/// The ticket passed its escalation time: the escalation contacts and the triage owners.
pub fn escalated(policy: &Policy) -> Vec<PlannedMail> {
    let contacts = policy
        .escalation_contacts
        .iter()
        .map(|a| (a.as_str(), None));
    notices(
        people(contacts.chain(triage(policy)), ""),
        Template::Escalation,
        Notice::Escalated,
    )
}

/// A response or resolution deadline passed (`why`): the triage owners.
pub fn breached(policy: &Policy, why: Notice) -> Vec<PlannedMail> {
    notices(people(triage(policy), ""), Template::Breach, why)
}

/// A new ticket from `requester`: the triage owners and the company's account manager.
pub fn new_ticket(policy: &Policy, requester: &Mailbox) -> Vec<PlannedMail> {
    let am = policy.account_manager_of(&requester.domain());
    notices(
        people(
            triage(policy).chain(am.map(|a| (a, None))),
            &requester.address,
        ),
        Template::EngineerNotification,
        Notice::NewTicket,
    )
}

/// A customer replied: the assignee, else the triage owners.
pub fn customer_reply(policy: &Policy, ticket: &TicketState, sender: &Mailbox) -> Vec<PlannedMail> {
    let to = match ticket.assignee.as_deref() {
        Some(a) => people([(a, name_of(ticket, a))], &sender.address),
        None => people(triage(policy), &sender.address),
    };
    notices(to, Template::EngineerNotification, Notice::CustomerReply)
}

/// An internal note by `sender`: staff participants, the assignee (after this mail's `#assign`)
/// and the account manager; the triage owners when that is nobody else.
pub fn internal_note(
    policy: &Policy,
    ticket: &TicketState,
    assignee: Option<&str>,
    sender: &Mailbox,
) -> Vec<PlannedMail> {
    let staff = ticket
        .participants
        .iter()
        .filter(|m| m.role == Role::Staff)
        .map(|m| (m.address.as_str(), m.name.as_deref()));
    let mut to = people(
        assignee
            .map(|a| (a, name_of(ticket, a)))
            .into_iter()
            .chain(staff)
            .chain(account_managers(policy, ticket)),
        &sender.address,
    );
    // Someone besides the account manager must see a note: else triage does.
    if to.iter().all(|m| policy.is_account_manager(&m.address)) {
        let more = people(triage(policy), &sender.address);
        for m in more {
            if !to.iter().any(|t| t.address == m.address) {
                to.push(m);
            }
        }
    }
    to.into_iter()
        .map(|m| PlannedMail::new(Template::InternalNote, m))
        .collect()
}

/// The ticket was solved or closed: its account manager.
pub fn resolved(policy: &Policy, ticket: &TicketState, sender: &Mailbox) -> Vec<PlannedMail> {
    notices(
        people(account_managers(policy, ticket), &sender.address),
        Template::EngineerNotification,
        Notice::Resolved,
    )
}

/// The requester's address bounces: the triage owners and the assignee.
pub fn requester_bounced(policy: &Policy, ticket: &TicketState) -> Vec<PlannedMail> {
    let assignee = ticket.assignee.as_deref().map(|a| (a, name_of(ticket, a)));
    notices(
        people(triage(policy).chain(assignee), ""),
        Template::DeliveryFailure,
        Notice::RequesterBounced,
    )
}

fn name_of<'a>(ticket: &'a TicketState, address: &str) -> Option<&'a str> {
    ticket
        .participants
        .iter()
        .find(|m| m.address.eq_ignore_ascii_case(address))
        .and_then(|m| m.name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::fixtures::{self, member};
    use crate::desk::status::Status;

    fn policy() -> Policy {
        Policy {
            triage_owners: vec!["triage@example.com".into(), "lead@example.com".into()],
            ..fixtures::policy()
        }
    }

    fn ticket(requester: &str, others: &[(&str, Role)], assignee: Option<&str>) -> TicketState {
        let mut participants = vec![member(requester, Role::Requester)];
        participants.extend(others.iter().map(|(a, r)| member(a, *r)));
        TicketState {
            assignee: assignee.map(str::to_string),
            ..fixtures::ticket(Status::EngineerPending, participants)
        }
    }

    fn mb(a: &str) -> Mailbox {
        Mailbox {
            name: None,
            address: a.into(),
        }
    }

    fn to(mails: &[PlannedMail]) -> Vec<&str> {
        mails.iter().map(|m| m.to.address.as_str()).collect()
    }

    #[test]
    fn who_receives_each_mail() {
        let p = policy();
        let no_am = Policy {
            customers: vec![],
            ..policy()
        };
        let am = ("am@example.com", Role::AccountManager);
        let sam = ("sam@example.com", Role::Staff);
        // (case, mails, expected recipients)
        let cases: Vec<(&str, Vec<PlannedMail>, Vec<&str>)> = vec![
            (
                "new_ticket_tells_triage_and_the_account_manager",
                new_ticket(&p, &mb("jane@acme.test")),
                vec!["triage@example.com", "lead@example.com", "am@example.com"],
            ),
            (
                "new_ticket_of_a_company_without_account_manager_tells_triage",
                new_ticket(&p, &mb("bob@globex.test")),
                vec!["triage@example.com", "lead@example.com"],
            ),
            (
                "a_triage_owner_opening_a_ticket_is_not_told_of_it",
                new_ticket(&p, &mb("TRIAGE@example.com")),
                vec!["lead@example.com"],
            ),
            (
                "customer_reply_unassigned_tells_triage",
                customer_reply(
                    &p,
                    &ticket("jane@acme.test", &[am], None),
                    &mb("jane@acme.test"),
                ),
                vec!["triage@example.com", "lead@example.com"],
            ),
            (
                "customer_reply_assigned_tells_only_the_assignee",
                customer_reply(
                    &p,
                    &ticket("jane@acme.test", &[am, sam], Some("sam@example.com")),
                    &mb("jane@acme.test"),
                ),
                vec!["sam@example.com"],
            ),
            (
                "note_goes_to_staff_assignee_and_account_manager_not_the_author",
                internal_note(
                    &p,
                    &ticket(
                        "jane@acme.test",
                        &[am, sam, ("kim@example.com", Role::Staff)],
                        None,
                    ),
                    Some("sam@example.com"),
                    &mb("kim@example.com"),
                ),
                vec!["sam@example.com", "am@example.com"],
            ),
            (
                "note_never_goes_to_requester_or_watchers",
                internal_note(
                    &p,
                    &ticket(
                        "jane@acme.test",
                        &[("bob@acme.test", Role::Watcher), sam],
                        None,
                    ),
                    None,
                    &mb("kim@example.com"),
                ),
                vec!["sam@example.com", "am@example.com"],
            ),
            (
                "account_manager_note_on_an_untouched_ticket_reaches_triage",
                internal_note(
                    &p,
                    &ticket("jane@acme.test", &[am], None),
                    None,
                    &mb("am@example.com"),
                ),
                vec!["triage@example.com", "lead@example.com"],
            ),
            (
                "engineer_note_with_nobody_else_reaches_triage",
                internal_note(
                    &no_am,
                    &ticket("bob@globex.test", &[sam], None),
                    None,
                    &mb("sam@example.com"),
                ),
                vec!["triage@example.com", "lead@example.com"],
            ),
            (
                "resolution_tells_the_account_manager",
                resolved(
                    &p,
                    &ticket("jane@acme.test", &[am, sam], None),
                    &mb("sam@example.com"),
                ),
                vec!["am@example.com"],
            ),
            (
                "requester_bounce_tells_triage_and_the_assignee",
                requester_bounced(
                    &p,
                    &ticket("jane@acme.test", &[sam], Some("sam@example.com")),
                ),
                vec!["triage@example.com", "lead@example.com", "sam@example.com"],
            ),
            (
                "resolution_without_account_manager_tells_nobody",
                resolved(
                    &no_am,
                    &ticket("bob@globex.test", &[sam], None),
                    &mb("sam@example.com"),
                ),
                vec![],
            ),
        ];
        for (name, mails, want) in cases {
            assert_eq!(to(&mails), want, "{name}");
        }
    }

    #[test]
    fn notices_carry_why_and_the_template() {
        let p = policy();
        let m = new_ticket(&p, &mb("jane@acme.test"));
        assert!(
            m.iter()
                .all(|m| m.template == Template::EngineerNotification
                    && m.notice == Some(Notice::NewTicket))
        );
        let n = internal_note(
            &p,
            &ticket("jane@acme.test", &[], None),
            None,
            &mb("sam@example.com"),
        );
        assert!(n.iter().all(|m| m.template == Template::InternalNote));
    }
}
