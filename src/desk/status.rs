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
}

impl StatusEvent {
    /// Words for the history.
    pub fn describe(self) -> &'static str {
        match self {
            StatusEvent::CustomerReply => "customer reply",
            StatusEvent::CustomerConfirmsClose => "customer confirmed with #close",
            StatusEvent::CustomerReopens => "customer reply within the reopen window",
        }
    }
}

use Status::*;
use StatusEvent::*;

/// SPEC's table, customer side: (event, from any of these, to). An event in a status no row
/// names changes nothing (a customer reply leaves `in_triage` in triage).
pub const TRANSITIONS: &[(StatusEvent, &[Status], Status)] = &[
    (
        CustomerReply,
        &[CustomerPending, ClosePending, EngineerPending],
        EngineerPending,
    ),
    (CustomerConfirmsClose, &[ClosePending], Closed),
    (CustomerReopens, &[Closed], EngineerPending),
];

/// The status an event leads to from `from`, or None when the table leaves it where it is.
pub fn transition(from: Status, event: StatusEvent) -> Option<Status> {
    TRANSITIONS
        .iter()
        .find(|(e, froms, _)| *e == event && froms.contains(&from))
        .map(|(_, _, to)| *to)
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
}
