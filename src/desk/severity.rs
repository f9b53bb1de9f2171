//! Severity levels and the rule that email cannot open Sev 1 or Sev 2 (SPEC: Severity).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A ticket severity, Sev 1 (highest) to Sev 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "u8")]
pub enum Severity {
    Sev1,
    Sev2,
    Sev3,
    Sev4,
}

impl Severity {
    /// The number people write: 1..=4.
    pub fn number(self) -> u8 {
        match self {
            Severity::Sev1 => 1,
            Severity::Sev2 => 2,
            Severity::Sev3 => 3,
            Severity::Sev4 => 4,
        }
    }
}

impl From<Severity> for u8 {
    fn from(s: Severity) -> u8 {
        s.number()
    }
}

impl TryFrom<i64> for Severity {
    type Error = InvalidSeverity;
    fn try_from(n: i64) -> Result<Self, Self::Error> {
        match n {
            1 => Ok(Severity::Sev1),
            2 => Ok(Severity::Sev2),
            3 => Ok(Severity::Sev3),
            4 => Ok(Severity::Sev4),
            _ => Err(InvalidSeverity(n.to_string())),
        }
    }
}

impl FromStr for Severity {
    type Err = InvalidSeverity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<i64>()
            .map_err(|_| InvalidSeverity(s.to_string()))
            .and_then(Severity::try_from)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sev {}", self.number())
    }
}

/// A value that is not a severity 1..4.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a severity: expected 1, 2, 3 or 4")]
pub struct InvalidSeverity(pub String);

/// What email may not open, and what it becomes instead (default Sev 1 -> 3, Sev 2 -> 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DowngradeMap(BTreeMap<Severity, Severity>);

impl Default for DowngradeMap {
    fn default() -> Self {
        DowngradeMap(BTreeMap::from([
            (Severity::Sev1, Severity::Sev3),
            (Severity::Sev2, Severity::Sev4),
        ]))
    }
}

impl DowngradeMap {
    /// A map from explicit pairs; an empty map downgrades nothing.
    pub fn new(pairs: impl IntoIterator<Item = (Severity, Severity)>) -> Self {
        DowngradeMap(pairs.into_iter().collect())
    }

    /// The severity email may open for a requested one.
    pub fn apply(&self, requested: Severity) -> Severity {
        self.0.get(&requested).copied().unwrap_or(requested)
    }
}

/// What the subject asked for and what the ticket gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeverityReading {
    /// The severity in the subject, if a valid one was there.
    pub requested: Option<Severity>,
    /// The severity the ticket gets.
    pub assigned: Severity,
    /// False when the subject named no valid severity ("severity not given").
    pub given: bool,
    /// True when email asked for a severity it may not open.
    pub downgraded: bool,
}

impl SeverityReading {
    /// Applies the default and the downgrade map to what the subject asked for.
    pub fn assess(requested: Option<Severity>, default: Severity, map: &DowngradeMap) -> Self {
        match requested {
            None => SeverityReading {
                requested: None,
                assigned: default,
                given: false,
                downgraded: false,
            },
            Some(r) => {
                let assigned = map.apply(r);
                SeverityReading {
                    requested: Some(r),
                    assigned,
                    given: true,
                    downgraded: assigned != r,
                }
            }
        }
    }

    /// Reads the subject (already RFC 2047-decoded) and assesses it.
    pub fn from_subject(subject: &str, default: Severity, map: &DowngradeMap) -> Self {
        let requested = crate::mail::subject::requested_severity(subject)
            .and_then(|n| Severity::try_from(i64::from(n)).ok());
        Self::assess(requested, default, map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Severity::*;

    #[test]
    fn downgrade_table() {
        let map = DowngradeMap::default();
        let cases = [
            ("sev1_becomes_sev3", Some(Sev1), Sev3, true, true),
            ("sev2_becomes_sev4", Some(Sev2), Sev4, true, true),
            ("sev3_stays", Some(Sev3), Sev3, true, false),
            ("sev4_stays", Some(Sev4), Sev4, true, false),
            ("none_gets_default_sev4", None, Sev4, false, false),
        ];
        for (name, requested, assigned, given, downgraded) in cases {
            let r = SeverityReading::assess(requested, Sev4, &map);
            assert_eq!(r.assigned, assigned, "{name}");
            assert_eq!(r.given, given, "{name}");
            assert_eq!(r.downgraded, downgraded, "{name}");
            assert_eq!(r.requested, requested, "{name}");
        }
    }

    #[test]
    fn configured_map_and_default() {
        let map = DowngradeMap::new([(Sev1, Sev2)]);
        let r = SeverityReading::assess(Some(Sev1), Sev3, &map);
        assert_eq!((r.assigned, r.downgraded), (Sev2, true));
        let r = SeverityReading::assess(Some(Sev2), Sev3, &map);
        assert_eq!((r.assigned, r.downgraded), (Sev2, false));
        let r = SeverityReading::assess(None, Sev3, &map);
        assert_eq!((r.assigned, r.given), (Sev3, false));
        let none = DowngradeMap::new([]);
        assert_eq!(none.apply(Sev1), Sev1);
    }

    #[test]
    fn parse_severity_values() {
        assert_eq!("3".parse::<Severity>().ok(), Some(Sev3));
        assert!("0".parse::<Severity>().is_err());
        assert!("5".parse::<Severity>().is_err());
        assert!("three".parse::<Severity>().is_err());
        assert_eq!(Sev2.to_string(), "Sev 2");
    }
}
