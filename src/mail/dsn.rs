//! Bounces and feedback reports: failed recipient, status, the original Message-ID.
