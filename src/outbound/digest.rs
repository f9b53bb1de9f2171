//! The daily digest (SPEC: SLA): each account manager gets their customers' open tickets, the
//! triage owners all of them, by status with deadlines, breaches and escalations, oldest first.
//!
//! This is the pure part: plain ticket rows in, the `digest` template's [`DigestView`] out. The
//! scheduler picks the rows for each recipient (all open tickets for triage, the tickets of an
//! account manager's customer domains for them), calls [`digest_view`], and sends nothing when
//! it returns none: nobody gets a digest of nothing.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::context::{
    Audience, DeadlinesView, DigestGroup, DigestTicket, DigestView, PersonView, SupportView,
    TemplateContext, format_local,
};
use super::templates::subject_line;
use crate::desk::Status;

/// The statuses a digest shows, in its order: every open one.
pub const DIGEST_STATUSES: [Status; 4] = [
    Status::InTriage,
    Status::EngineerPending,
    Status::CustomerPending,
    Status::ClosePending,
];

/// Whose digest it is: [`DigestView::scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestScope {
    /// A triage owner's: every open ticket.
    All,
    /// An account manager's: their customers' open tickets.
    Customers,
}

impl DigestScope {
    /// `all` or `customers`.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestScope::All => "all",
            DigestScope::Customers => "customers",
        }
    }
}

/// One ticket as the store has it, for [`digest_view`].
#[derive(Debug, Clone)]
pub struct DigestRow {
    /// Ticket number.
    pub number: i64,
    /// Subject as stored.
    pub subject: String,
    /// The requester's address.
    pub requester: String,
    /// The requester's display name.
    pub requester_name: Option<String>,
    /// The requester's company from `[[customers]]`.
    pub company: Option<String>,
    /// Current status; closed tickets are left out of the digest.
    pub status: Status,
    /// Assigned severity, 1-4.
    pub severity: u8,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// The assigned engineer's address.
    pub assignee: Option<String>,
    /// Their display name.
    pub assignee_name: Option<String>,
    /// First public engineer reply due.
    pub response_due_at: Option<DateTime<Utc>>,
    /// Close pending (or closed) due.
    pub resolution_due_at: Option<DateTime<Utc>>,
    /// Next status update due.
    pub update_due_at: Option<DateTime<Utc>>,
    /// Escalation time.
    pub escalation_due_at: Option<DateTime<Utc>>,
    /// When the first public engineer reply went out (meets the response deadline).
    pub first_response_at: Option<DateTime<Utc>>,
    /// True once it reached close pending (meets the resolution deadline); a close-pending
    /// row counts as resolved whatever this says.
    pub resolved: bool,
    /// True when it was escalated.
    pub escalated: bool,
}

/// The digest of `rows` at `now`, times in `zone` (the digest calendar's), tags with
/// `tag_prefix` (`#` → `[#42]`). Closed rows are left out. None when no open ticket is left:
/// then nothing is sent.
///
/// - Groups follow [`DIGEST_STATUSES`]; a status without tickets has no group. Tickets are
///   oldest first (by creation, then number).
/// - A deadline is breached when it is due before `now` and was not met by then: the response
///   when there is no first public reply or it came after the due time; the resolution when
///   the ticket is not resolved.
/// - The next deadline is the earliest one still running and not yet passed: response (no
///   reply yet, not resolved), resolution and escalation (not resolved; escalation also not
///   escalated yet), status update (in triage or engineer pending).
pub fn digest_view(
    rows: &[DigestRow],
    scope: DigestScope,
    now: DateTime<Utc>,
    zone: Tz,
    tag_prefix: &str,
) -> Option<DigestView> {
    let mut groups = Vec::new();
    let (mut total, mut breached, mut escalated) = (0, 0, 0);
    for status in DIGEST_STATUSES {
        let mut of_status: Vec<&DigestRow> = rows.iter().filter(|r| r.status == status).collect();
        if of_status.is_empty() {
            continue;
        }
        of_status.sort_by_key(|r| (r.created_at, r.number));
        let tickets: Vec<DigestTicket> = of_status
            .into_iter()
            .map(|r| ticket(r, now, zone, tag_prefix))
            .collect();
        total += tickets.len();
        breached += tickets.iter().filter(|t| !t.breaches.is_empty()).count();
        escalated += tickets.iter().filter(|t| t.escalated).count();
        groups.push(DigestGroup {
            status: status.as_str().into(),
            status_label: status.label().into(),
            tickets,
        });
    }
    (total > 0).then(|| DigestView {
        date_local: now.with_timezone(&zone).format("%Y-%m-%d").to_string(),
        zone: zone.name().into(),
        scope: scope.as_str().into(),
        total,
        breached,
        escalated,
        groups,
    })
}

fn ticket(r: &DigestRow, now: DateTime<Utc>, zone: Tz, tag_prefix: &str) -> DigestTicket {
    let resolved = r.resolved || r.status == Status::ClosePending;
    let with_us = matches!(r.status, Status::InTriage | Status::EngineerPending);
    let mut breaches = Vec::new();
    if let Some(due) = r.response_due_at
        && due < now
        && r.first_response_at.is_none_or(|at| at > due)
    {
        breaches.push("response".to_string());
    }
    if let Some(due) = r.resolution_due_at
        && due < now
        && !resolved
    {
        breaches.push("resolution".to_string());
    }
    let next = [
        (
            "response",
            r.response_due_at
                .filter(|_| r.first_response_at.is_none() && !resolved),
        ),
        ("resolution", r.resolution_due_at.filter(|_| !resolved)),
        (
            "escalation",
            r.escalation_due_at.filter(|_| !resolved && !r.escalated),
        ),
        ("update", r.update_due_at.filter(|_| with_us)),
    ]
    .into_iter()
    .filter_map(|(kind, due)| due.filter(|d| *d >= now).map(|d| (kind, d)))
    .min_by_key(|(_, d)| *d);
    DigestTicket {
        number: r.number,
        tag: crate::mail::subject::tag(tag_prefix, r.number),
        subject: subject_line(&r.subject),
        requester: PersonView::new(r.requester_name.as_deref(), &r.requester),
        company: r.company.clone(),
        severity: r.severity,
        age: age_label(now - r.created_at),
        created_local: format_local(r.created_at, zone),
        assignee: r
            .assignee
            .as_deref()
            .map(|a| PersonView::new(r.assignee_name.as_deref(), a)),
        next_due_kind: next.map(|(k, _)| k.to_string()),
        next_due_local: next.map(|(_, d)| format_local(d, zone)),
        breaches,
        escalated: r.escalated,
    }
}

/// A ticket's age for people, wall clock: `45 min` below an hour, `5 h` below a day, then
/// whole days (`1 day`, `3 days`).
pub fn age_label(age: chrono::TimeDelta) -> String {
    let minutes = age.num_minutes().max(0);
    match minutes {
        m if m < 60 => format!("{m} min"),
        m if m < 24 * 60 => format!("{} h", m / 60),
        m if m < 2 * 24 * 60 => "1 day".to_string(),
        m => format!("{} days", m / (24 * 60)),
    }
}

/// The context of a digest to `recipient`: the common part has no ticket (number 0, see
/// [`TicketView::none`]); `requester` is the recipient too, since there is no customer.
pub fn digest_context(
    view: DigestView,
    recipient: PersonView,
    support: SupportView,
    now: DateTime<Utc>,
    zone: Tz,
) -> TemplateContext {
    let mut ctx = TemplateContext::without_ticket(recipient.clone(), support, now, zone);
    ctx.audience = Audience::Staff;
    ctx.recipient = recipient;
    ctx.participants = Vec::new();
    ctx.deadlines = DeadlinesView::unknown(zone);
    ctx.digest = Some(view);
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Monday 2026-11-30 08:00 CST.
    fn now() -> DateTime<Utc> {
        at("2026-11-30T14:00:00Z")
    }

    fn row(number: i64, status: Status, created_hours_ago: i64) -> DigestRow {
        DigestRow {
            number,
            subject: format!("Ticket {number}"),
            requester: format!("c{number}@globex.test"),
            requester_name: None,
            company: Some("Globex Corporation".into()),
            status,
            severity: 3,
            created_at: now() - Duration::hours(created_hours_ago),
            assignee: None,
            assignee_name: None,
            response_due_at: None,
            resolution_due_at: None,
            update_due_at: None,
            escalation_due_at: None,
            first_response_at: None,
            resolved: false,
            escalated: false,
        }
    }

    fn hours(h: i64) -> Option<DateTime<Utc>> {
        Some(now() + Duration::hours(h))
    }

    fn view(rows: &[DigestRow]) -> DigestView {
        digest_view(
            rows,
            DigestScope::All,
            now(),
            chrono_tz::America::Chicago,
            "#",
        )
        .unwrap_or_else(|| panic!("no digest of {rows:?}"))
    }

    #[test]
    fn nothing_open_is_no_digest() {
        let zone = chrono_tz::America::Chicago;
        for rows in [vec![], vec![row(1, Status::Closed, 5)]] {
            assert!(digest_view(&rows, DigestScope::Customers, now(), zone, "#").is_none());
        }
    }

    #[test]
    fn groups_in_status_order_tickets_oldest_first() {
        let rows = vec![
            row(5, Status::CustomerPending, 10),
            row(1, Status::EngineerPending, 3),
            row(2, Status::EngineerPending, 30),
            row(3, Status::Closed, 100),
            row(4, Status::InTriage, 1),
            row(6, Status::EngineerPending, 30),
            row(7, Status::ClosePending, 2),
        ];
        let v = view(&rows);
        let got: Vec<(&str, Vec<i64>)> = v
            .groups
            .iter()
            .map(|g| {
                (
                    g.status.as_str(),
                    g.tickets.iter().map(|t| t.number).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("in_triage", vec![4]),
                ("engineer_pending", vec![2, 6, 1]),
                ("customer_pending", vec![5]),
                ("close_pending", vec![7]),
            ]
        );
        assert_eq!(v.total, 6);
        assert_eq!(v.groups[1].status_label, "Engineer Pending");
        assert_eq!(
            (v.date_local.as_str(), v.zone.as_str()),
            ("2026-11-30", "America/Chicago")
        );
        assert_eq!(v.scope, "all");
        // A status without tickets has no group.
        let only = view(&[row(1, Status::CustomerPending, 1)]);
        assert_eq!(only.groups.len(), 1);
    }

    #[test]
    fn the_day_is_the_digest_zones() {
        // 2026-12-01 03:00 UTC is still Nov 30 in Chicago.
        let late = at("2026-12-01T03:00:00Z");
        let rows = [row(1, Status::InTriage, 1)];
        let v = digest_view(
            &rows,
            DigestScope::All,
            late,
            chrono_tz::America::Chicago,
            "#",
        );
        assert_eq!(v.map(|v| v.date_local).as_deref(), Some("2026-11-30"));
        let v = digest_view(
            &rows,
            DigestScope::All,
            late,
            chrono_tz::Europe::Berlin,
            "#",
        );
        assert_eq!(v.map(|v| v.date_local).as_deref(), Some("2026-12-01"));
    }

    #[test]
    fn breaches() {
        type Case = (&'static str, fn(&mut DigestRow), &'static [&'static str]);
        let cases: Vec<Case> = vec![
            ("no deadlines", |_| {}, &[]),
            ("response due later", |r| r.response_due_at = hours(1), &[]),
            (
                "response passed, no reply",
                |r| r.response_due_at = hours(-1),
                &["response"],
            ),
            (
                "response passed, replied in time",
                |r| {
                    r.response_due_at = hours(-3);
                    r.first_response_at = Some(now() - Duration::hours(4));
                },
                &[],
            ),
            (
                "response passed, replied late",
                |r| {
                    r.response_due_at = hours(-3);
                    r.first_response_at = Some(now() - Duration::hours(2));
                },
                &["response"],
            ),
            (
                "resolution passed",
                |r| r.resolution_due_at = hours(-1),
                &["resolution"],
            ),
            (
                "resolution passed but resolved",
                |r| {
                    r.resolution_due_at = hours(-1);
                    r.resolved = true;
                },
                &[],
            ),
            (
                "resolution passed, close pending",
                |r| {
                    r.resolution_due_at = hours(-1);
                    r.status = Status::ClosePending;
                },
                &[],
            ),
            (
                "both",
                |r| {
                    r.response_due_at = hours(-5);
                    r.resolution_due_at = hours(-1);
                },
                &["response", "resolution"],
            ),
            (
                "escalation and update passing are no breach",
                |r| {
                    r.escalation_due_at = hours(-5);
                    r.update_due_at = hours(-1);
                },
                &[],
            ),
        ];
        for (what, set, want) in cases {
            let mut r = row(1, Status::EngineerPending, 48);
            set(&mut r);
            let v = view(&[r]);
            assert_eq!(v.groups[0].tickets[0].breaches, want, "{what}");
            assert_eq!(v.breached, usize::from(!want.is_empty()), "{what}");
        }
    }

    #[test]
    fn next_deadline() {
        type Case = (
            &'static str,
            Status,
            fn(&mut DigestRow),
            Option<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            ("none", Status::InTriage, |_| {}, None),
            (
                "earliest ahead",
                Status::InTriage,
                |r| {
                    r.response_due_at = hours(5);
                    r.resolution_due_at = hours(50);
                    r.escalation_due_at = hours(30);
                    r.update_due_at = hours(3);
                },
                Some(("update", "2026-11-30 11:00 CST")),
            ),
            (
                "passed ones are breaches, not next",
                Status::EngineerPending,
                |r| {
                    r.response_due_at = hours(-5);
                    r.resolution_due_at = hours(26);
                },
                Some(("resolution", "2026-12-01 10:00 CST")),
            ),
            (
                "response met",
                Status::EngineerPending,
                |r| {
                    r.response_due_at = hours(1);
                    r.first_response_at = hours(-1);
                    r.resolution_due_at = hours(2);
                },
                Some(("resolution", "2026-11-30 10:00 CST")),
            ),
            (
                "no update while waiting on the customer",
                Status::CustomerPending,
                |r| {
                    r.update_due_at = hours(1);
                    r.escalation_due_at = hours(4);
                },
                Some(("escalation", "2026-11-30 12:00 CST")),
            ),
            (
                "escalated: escalation is done",
                Status::EngineerPending,
                |r| {
                    r.escalation_due_at = hours(1);
                    r.escalated = true;
                },
                None,
            ),
            (
                "close pending: nothing runs",
                Status::ClosePending,
                |r| {
                    r.response_due_at = hours(1);
                    r.resolution_due_at = hours(2);
                    r.escalation_due_at = hours(3);
                    r.update_due_at = hours(4);
                },
                None,
            ),
        ];
        for (what, status, set, want) in cases {
            let mut r = row(1, status, 1);
            set(&mut r);
            let v = view(&[r]);
            let t = &v.groups[0].tickets[0];
            let got = t.next_due_kind.as_deref().zip(t.next_due_local.as_deref());
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn ticket_fields() {
        let mut r = row(42, Status::EngineerPending, 75);
        r.subject = "Export\r\n broken \u{202e}now".into();
        r.requester_name = Some("Raj Patel".into());
        r.assignee = Some("sam@example.com".into());
        r.assignee_name = Some("Sam Engineer".into());
        r.severity = 2;
        r.escalated = true;
        let mut other = row(43, Status::EngineerPending, 1);
        other.company = None;
        let v = view(&[r, other]);
        assert_eq!(v.escalated, 1);
        let t = &v.groups[0].tickets[0];
        assert_eq!(t.tag, "[#42]");
        assert_eq!(t.subject, "Export broken now");
        assert_eq!(t.requester.display, "Raj Patel");
        assert_eq!(t.company.as_deref(), Some("Globex Corporation"));
        assert_eq!(t.severity, 2);
        assert_eq!(t.age, "3 days");
        assert_eq!(t.created_local, "2026-11-27 05:00 CST");
        assert_eq!(
            t.assignee.as_ref().map(|a| a.display.as_str()),
            Some("Sam Engineer")
        );
        assert!(t.escalated);
        let o = &v.groups[0].tickets[1];
        assert!(o.assignee.is_none() && o.company.is_none() && !o.escalated);
        let custom = digest_view(
            &[row(7, Status::InTriage, 1)],
            DigestScope::Customers,
            now(),
            chrono_tz::America::Chicago,
            "PD-",
        );
        let custom = custom.unwrap_or_else(|| panic!("no digest"));
        assert_eq!(custom.groups[0].tickets[0].tag, "[PD-7]");
        assert_eq!(custom.scope, "customers");
    }

    #[test]
    fn ages() {
        for (minutes, label) in [
            (-5, "0 min"),
            (0, "0 min"),
            (59, "59 min"),
            (60, "1 h"),
            (23 * 60 + 59, "23 h"),
            (24 * 60, "1 day"),
            (47 * 60, "1 day"),
            (48 * 60, "2 days"),
            (30 * 24 * 60, "30 days"),
        ] {
            assert_eq!(age_label(Duration::minutes(minutes)), label, "{minutes}");
        }
    }

    #[test]
    fn the_context_has_no_ticket() {
        let v = view(&[row(1, Status::InTriage, 1)]);
        let ctx = digest_context(
            v,
            PersonView::new(Some("Triage"), "triage@example.com"),
            super::super::sample::default_support(),
            now(),
            chrono_tz::America::Chicago,
        );
        assert_eq!(ctx.ticket.number, 0);
        assert_eq!(ctx.ticket.tag, "");
        assert_eq!(ctx.audience, Audience::Staff);
        assert!(ctx.digest.is_some());
    }
}
