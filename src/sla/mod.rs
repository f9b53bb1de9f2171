//! Service levels: the business-hours calendars that SLA clocks run on (SPEC.md "SLA").

pub mod calendar;
pub mod clock;
pub mod explain;
pub mod policy;
pub mod tick;
