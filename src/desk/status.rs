//! Ticket statuses (SPEC: Statuses). Transitions beyond "new ticket -> in_triage" arrive with the
//! conversation issue; the names and labels are fixed here.

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
}
