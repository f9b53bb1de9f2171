//! Unit-test fixtures shared by the desk's tests and the SLA tick's: one policy and one ticket to
//! start from, which a test changes with struct update syntax where it needs something else.

use chrono::{DateTime, Utc};

use super::decide::{CustomerDomain, Policy};
use super::severity::{DowngradeMap, Severity, SeverityReading};
use super::status::Status;
use super::ticket::{Member, Role, TicketState};

/// Support at example.com (its staff domain), with one customer domain, acme.test, whose account
/// manager is am@example.com; triage@example.com triages, director@example.com is told of
/// escalations.
pub fn policy() -> Policy {
    Policy {
        support_addresses: vec!["support@example.com".into()],
        default_severity: Severity::Sev4,
        downgrade: DowngradeMap::default(),
        max_auto_replies_per_hour: 10,
        tag_prefix: "#".into(),
        staff_domains: vec!["example.com".into()],
        staff_addresses: vec![],
        customers: vec![CustomerDomain {
            domain: "acme.test".into(),
            account_manager: Some("am@example.com".into()),
            calendar: None,
        }],
        reopen_window: chrono::Duration::days(14),
        same_domain_joins: true,
        triage_owners: vec!["triage@example.com".into()],
        require_authenticated: false,
        after_engineer_reply: Status::CustomerPending,
        sla: crate::sla::policy::SlaPolicy::default(),
        calendars: crate::sla::clock::Calendars::default(),
        escalation_contacts: vec!["director@example.com".into()],
    }
}

/// A participant without a display name.
pub fn member(address: &str, role: Role) -> Member {
    Member {
        address: address.into(),
        name: None,
        role,
    }
}

/// Ticket 7, subject "x", Sev 4 by default (none asked for), opened at the Unix epoch, unassigned,
/// without a response, a conversation or clocks.
pub fn ticket(status: Status, participants: Vec<Member>) -> TicketState {
    TicketState {
        number: 7,
        status,
        severity: SeverityReading {
            requested: None,
            assigned: Severity::Sev4,
            given: false,
            downgraded: false,
        },
        subject: "x".into(),
        participants,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        closed_at: None,
        assignee: None,
        first_response_at: None,
        conversation: vec![],
        requester_bounced: false,
        clocks: Default::default(),
    }
}
