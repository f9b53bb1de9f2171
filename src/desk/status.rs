//! Ticket statuses and their transitions (SPEC: Statuses). The transition table is data: one
//! row per (event, statuses it applies to, status it leads to). Engineer- and time-driven events
//! arrive with their issues as more rows of the same table.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InTriage,
    EngineerPending,
    CustomerPending,
    ClosePending,
    Closed,
}

impl Status {
    /// All statuses in workflow order.
    pub const ALL: [Status; 5] = [
        Status::InTriage,
        Status::EngineerPending,
        Status::CustomerPending,
        Status::ClosePending,
        Status::Closed,
    ];

    /// Solved: close pending or closed (the resolution clock is met; SPEC: SLA).
    pub fn is_resolved(self) -> bool {
        matches!(self, Status::ClosePending | Status::Closed)
    }

    /// The name stored and used on the command line (`in_triage`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InTriage => "in_triage",
            Status::EngineerPending => "engineer_pending",
            Status::CustomerPending => "customer_pending",
            Status::ClosePending => "close_pending",
            Status::Closed => "closed",
        }
    }

    /// The name shown to people (`In Triage`).
    pub fn label(self) -> &'static str {
        match self {
            Status::InTriage => "In Triage",
            Status::EngineerPending => "Engineer Pending",
            Status::CustomerPending => "Customer Pending",
            Status::ClosePending => "Close Pending",
            Status::Closed => "Closed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown status `{0}`: expected in_triage, engineer_pending, customer_pending, close_pending or closed"
)]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == norm)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// What happened to a ticket, as far as its status is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusEvent {
    /// The requester or a watcher wrote (not an automatic reply).
    CustomerReply,
    /// The requester or a watcher confirmed with `#close` on its own line.
    CustomerConfirmsClose,
    /// A customer wrote to a closed ticket within `threading.reopen_window`.
    CustomerReopens,
    /// The first engineer action on a new ticket: an assignment, a note, a command.
    EngineerAction,
    /// An engineer's public reply without a status command (`statuses.after_engineer_reply`).
    EngineerReply,
    /// `#solved`.
    EngineerSolved,
    /// `#status <name>`: any status, set by hand.
    EngineerSetsStatus,
    /// The customer did not answer a customer-pending ticket (`statuses.close_pending_after`).
    CustomerSilent,
    /// A close-pending ticket nobody answered (`statuses.auto_close_after`).
    CloseTimeout,
}

impl StatusEvent {
    /// Words for the history.
    pub fn describe(self) -> &'static str {
        match self {
            StatusEvent::CustomerReply => "customer reply",
            StatusEvent::CustomerConfirmsClose => "customer confirmed with #close",
            StatusEvent::CustomerReopens => "customer reply within the reopen window",
            StatusEvent::EngineerAction => "first engineer action",
            StatusEvent::EngineerReply => "engineer replied to the customer",
            StatusEvent::EngineerSolved => "marked solved by an engineer",
            StatusEvent::EngineerSetsStatus => "set by an engineer",
            StatusEvent::CustomerSilent => "no reply from the customer",
            StatusEvent::CloseTimeout => "no reply while close pending",
        }
    }
}

use Status::*;
use StatusEvent::*;

/// SPEC's table: (event, from any of these, to). An event in a status no row names changes
/// nothing (a customer reply leaves `in_triage` in triage). `#status` (EngineerSetsStatus) is
/// not a row: it sets any status.
pub const TRANSITIONS: &[(StatusEvent, &[Status], Status)] = &[
    (
        CustomerReply,
        &[CustomerPending, ClosePending, EngineerPending],
        EngineerPending,
    ),
    (CustomerConfirmsClose, &[ClosePending], Closed),
    (CustomerReopens, &[Closed], EngineerPending),
    (EngineerAction, &[InTriage], EngineerPending),
    // The target is the default of `statuses.after_engineer_reply` (see `transition_as`).
    (
        EngineerReply,
        &[InTriage, EngineerPending, CustomerPending, ClosePending],
        CustomerPending,
    ),
    (
        EngineerSolved,
        &[InTriage, EngineerPending, CustomerPending],
        ClosePending,
    ),
    (CustomerSilent, &[CustomerPending], ClosePending),
    (CloseTimeout, &[ClosePending], Closed),
];

/// The status an event leads to from `from`, or None when the table leaves it where it is.
pub fn transition(from: Status, event: StatusEvent) -> Option<Status> {
    transition_as(from, event, None)
}

/// Like [`transition`], with the row's target replaced by `to` when given: the configurable
/// rows (`statuses.after_engineer_reply`) keep their "from" set and take the configured target.
pub fn transition_as(from: Status, event: StatusEvent, to: Option<Status>) -> Option<Status> {
    if event == StatusEvent::EngineerSetsStatus {
        return to.filter(|t| *t != from);
    }
    TRANSITIONS
        .iter()
        .find(|(e, froms, _)| *e == event && froms.contains(&from))
        .map(|(_, _, row_to)| to.unwrap_or(*row_to))
        .filter(|to| *to != from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_labels_parse() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>().ok(), Some(st));
            assert_eq!(st.label().parse::<Status>().ok(), Some(st));
        }
        assert!("open".parse::<Status>().is_err());
    }

    #[test]
    fn customer_side_transition_table() {
        // (case, from, event, expected)
        let cases = [
            ("reply_in_triage_stays", InTriage, CustomerReply, None),
            (
                "reply_engineer_pending_stays",
                EngineerPending,
                CustomerReply,
                None,
            ),
            (
                "reply_customer_pending_to_engineer",
                CustomerPending,
                CustomerReply,
                Some(EngineerPending),
            ),
            (
                "reply_close_pending_to_engineer",
                ClosePending,
                CustomerReply,
                Some(EngineerPending),
            ),
            ("reply_closed_is_not_this_row", Closed, CustomerReply, None),
            (
                "close_confirms_close_pending",
                ClosePending,
                CustomerConfirmsClose,
                Some(Closed),
            ),
            (
                "close_ignored_in_triage",
                InTriage,
                CustomerConfirmsClose,
                None,
            ),
            (
                "close_ignored_engineer_pending",
                EngineerPending,
                CustomerConfirmsClose,
                None,
            ),
            (
                "close_ignored_customer_pending",
                CustomerPending,
                CustomerConfirmsClose,
                None,
            ),
            ("close_on_closed_stays", Closed, CustomerConfirmsClose, None),
            (
                "reopen_closed_to_engineer",
                Closed,
                CustomerReopens,
                Some(EngineerPending),
            ),
            (
                "reopen_open_ticket_does_nothing",
                CustomerPending,
                CustomerReopens,
                None,
            ),
        ];
        for (name, from, event, want) in cases {
            assert_eq!(transition(from, event), want, "{name}");
        }
    }

    #[test]
    fn engineer_side_transition_table() {
        // (case, from, event, configured target, expected)
        let cases = [
            (
                "first_action_leaves_triage",
                InTriage,
                EngineerAction,
                None,
                Some(EngineerPending),
            ),
            (
                "later_action_changes_nothing",
                CustomerPending,
                EngineerAction,
                None,
                None,
            ),
            (
                "reply_in_triage_waits_on_customer",
                InTriage,
                EngineerReply,
                None,
                Some(CustomerPending),
            ),
            (
                "reply_engineer_pending_waits_on_customer",
                EngineerPending,
                EngineerReply,
                None,
                Some(CustomerPending),
            ),
            (
                "reply_customer_pending_stays",
                CustomerPending,
                EngineerReply,
                None,
                None,
            ),
            (
                "reply_close_pending_reopens_the_wait",
                ClosePending,
                EngineerReply,
                None,
                Some(CustomerPending),
            ),
            (
                "reply_closed_stays_closed",
                Closed,
                EngineerReply,
                None,
                None,
            ),
            (
                "reply_configured_target",
                InTriage,
                EngineerReply,
                Some(EngineerPending),
                Some(EngineerPending),
            ),
            (
                "reply_configured_target_not_on_closed",
                Closed,
                EngineerReply,
                Some(EngineerPending),
                None,
            ),
            (
                "solved_from_open",
                EngineerPending,
                EngineerSolved,
                None,
                Some(ClosePending),
            ),
            (
                "solved_from_triage",
                InTriage,
                EngineerSolved,
                None,
                Some(ClosePending),
            ),
            (
                "solved_close_pending_stays",
                ClosePending,
                EngineerSolved,
                None,
                None,
            ),
            ("solved_closed_stays", Closed, EngineerSolved, None, None),
            (
                "status_sets_any",
                Closed,
                EngineerSetsStatus,
                Some(InTriage),
                Some(InTriage),
            ),
            (
                "status_same_is_no_change",
                CustomerPending,
                EngineerSetsStatus,
                Some(CustomerPending),
                None,
            ),
            (
                "status_without_target_is_nothing",
                InTriage,
                EngineerSetsStatus,
                None,
                None,
            ),
        ];
        for (name, from, event, to, want) in cases {
            assert_eq!(transition_as(from, event, to), want, "{name}");
        }
    }
}
