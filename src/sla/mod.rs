//! Service levels: the business-hours calendars that SLA clocks run on (SPEC.md "SLA").

pub mod calendar;
