//! The compliance file (`--compliance-file`): the law's clock and the
//! verification the business requires, where they differ from the
//! defaults (see [`crate::domain::DeadlinePolicy`] and
//! [`crate::domain::VerificationPolicy`]). Every key is checked.
//!
//! ```yaml
//! calendars:                         # business days, by calendar name
//!   california:
//!     time_zone: America/Los_Angeles # whose days count (an IANA name); UTC by default
//!     weekend: [saturday, sunday]    # the default
//!     holidays_file: /etc/dsr/holidays/california.txt   # one YYYY-MM-DD per line; `#` comments
//! jurisdictions:                     # each key optional; unnamed ones keep their defaults
//!   CCPA:
//!     confirm_within: 10 business days
//!     respond_within: 45 days
//!     extension_up_to: 45 days       # `none`: no extension
//!     calendar: california
//!   APPI:
//!     respond_within: 14 days        # the business's target: APPI says "without delay"
//! verification:                      # minimum levels, by jurisdiction and need
//!   CCPA: { DELETE: REASONABLY_HIGH, ACCESS_CATEGORIES: REASONABLE, ACCESS_SPECIFIC_PIECES: REASONABLY_HIGH }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Weekday};
use serde::Deserialize;

use crate::domain::{
    Calendar, DeadlinePolicy, ExtensionRule, Jurisdiction, Need, NewRequest, Period, Regime, Terms,
    Timestamp, VerificationLevel, VerificationPolicy,
};

/// The policies the compliance file sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompliancePolicy {
    /// Deadlines.
    pub deadlines: DeadlinePolicy,
    /// Verification minimums.
    pub verification: VerificationPolicy,
}

impl CompliancePolicy {
    /// The terms of `req`, taken in at `now`: its deadlines run from when
    /// the person made it, and its verification is judged against the
    /// minimum for its jurisdiction and need.
    pub fn terms(&self, req: &NewRequest, now: Timestamp) -> Terms {
        let made = req.submitted_at.unwrap_or(now);
        Terms {
            deadlines: self.deadlines.deadlines(req.jurisdiction, made),
            verified: self.verification.suffices(
                req.jurisdiction,
                Need::of(req.kind, req.access_scope),
                req.verification.level,
            ),
        }
    }
}

/// Reads and checks the compliance file at `path`; errors name the file
/// and the key.
pub fn load(path: &Path) -> anyhow::Result<CompliancePolicy> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the compliance file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("compliance file {}: {e}", path.display()))
}

/// Checks the file's text.
pub fn parse(text: &str) -> anyhow::Result<CompliancePolicy> {
    let file: File = serde_yaml_ng::from_str(text)?;
    let mut calendars = BTreeMap::new();
    for (name, c) in file.calendars {
        calendars.insert(name.clone(), calendar(&name, c)?);
    }
    let mut policy = CompliancePolicy::default();
    for (name, j) in file.jurisdictions {
        let jurisdiction: Jurisdiction = name
            .parse()
            .map_err(|_| anyhow::anyhow!("jurisdictions.{name}: unknown jurisdiction"))?;
        let at = |key: &str| format!("jurisdictions.{name}.{key}");
        let defaults = policy.deadlines.regime(jurisdiction).clone();
        let period =
            |key: &str, value: Option<String>, default: Period| -> anyhow::Result<Period> {
                value.map_or(Ok(default), |v| {
                    v.parse().map_err(|e| anyhow::anyhow!("{}: {e}", at(key)))
                })
            };
        let regime = Regime {
            confirm_within: match j.confirm_within.as_deref() {
                None => defaults.confirm_within,
                Some("none") => None,
                Some(v) => Some(
                    v.parse()
                        .map_err(|e| anyhow::anyhow!("{}: {e}", at("confirm_within")))?,
                ),
            },
            respond_within: period("respond_within", j.respond_within, defaults.respond_within)?,
            extension: match j.extension_up_to.as_deref() {
                None => defaults.extension,
                Some("none") => None,
                Some(v) => Some(ExtensionRule {
                    up_to: v
                        .parse()
                        .map_err(|e| anyhow::anyhow!("{}: {e}", at("extension_up_to")))?,
                }),
            },
            calendar: match j.calendar {
                None => defaults.calendar,
                Some(c) => calendars.get(&c).cloned().ok_or_else(|| {
                    anyhow::anyhow!("{}: no calendar {c:?} is defined", at("calendar"))
                })?,
            },
        };
        policy.deadlines = policy.deadlines.with(jurisdiction, regime);
    }
    for (name, needs) in file.verification {
        let jurisdiction: Jurisdiction = name
            .parse()
            .map_err(|_| anyhow::anyhow!("verification.{name}: unknown jurisdiction"))?;
        for (need_name, level) in needs {
            let need = Need::all()
                .into_iter()
                .find(|n| n.name() == need_name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "verification.{name}.{need_name}: unknown need (a request kind, or \
                         ACCESS_CATEGORIES, ACCESS_SPECIFIC_PIECES)"
                    )
                })?;
            let level: VerificationLevel = level.parse().map_err(|_| {
                anyhow::anyhow!(
                    "verification.{name}.{need_name}: unknown level (NONE, REASONABLE, REASONABLY_HIGH)"
                )
            })?;
            policy.verification = policy.verification.with(jurisdiction, need, level);
        }
    }
    Ok(policy)
}

fn calendar(name: &str, c: CalendarEntry) -> anyhow::Result<Calendar> {
    let mut calendar = Calendar::default();
    if let Some(zone) = c.time_zone {
        calendar.zone = zone.parse().map_err(|_| {
            anyhow::anyhow!(
                "calendars.{name}.time_zone: unknown time zone {zone:?} (an IANA name, such as \
                 America/Los_Angeles or Asia/Tokyo)"
            )
        })?;
    }
    if let Some(days) = c.weekend {
        calendar.weekend = days
            .iter()
            .map(|d| {
                d.parse::<Weekday>()
                    .map_err(|_| anyhow::anyhow!("calendars.{name}.weekend: unknown day {d:?}"))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(path) = c.holidays_file {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "calendars.{name}.holidays_file: cannot read {}: {e}",
                path.display()
            )
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let day = NaiveDate::parse_from_str(line, "%Y-%m-%d").map_err(|_| {
                anyhow::anyhow!(
                    "{} line {}: expected a date as YYYY-MM-DD",
                    path.display(),
                    n + 1
                )
            })?;
            calendar.holidays.insert(day);
        }
    }
    Ok(calendar)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    calendars: BTreeMap<String, CalendarEntry>,
    #[serde(default)]
    jurisdictions: BTreeMap<String, JurisdictionEntry>,
    #[serde(default)]
    verification: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarEntry {
    time_zone: Option<String>,
    weekend: Option<Vec<String>>,
    holidays_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JurisdictionEntry {
    confirm_within: Option<String>,
    respond_within: Option<String>,
    extension_up_to: Option<String>,
    calendar: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccessScope, RequestKind};

    #[test]
    fn a_file_changes_what_it_names_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let holidays = dir.path().join("ca.txt");
        std::fs::write(
            &holidays,
            "# state holidays\n2026-11-26\n2026-12-25 # Christmas\n",
        )
        .unwrap();
        let policy = parse(&format!(
            "calendars:\n  ca: {{holidays_file: {}, time_zone: America/Los_Angeles}}\n\
             jurisdictions:\n  CCPA: {{calendar: ca}}\n  APPI: {{respond_within: 7 days}}\n\
             verification:\n  GDPR: {{ACCESS_CATEGORIES: REASONABLY_HIGH}}\n",
            holidays.display()
        ))
        .unwrap();
        let ccpa = policy.deadlines.regime(Jurisdiction::Ccpa);
        assert_eq!(ccpa.respond_within, Period::Days(45));
        assert_eq!(ccpa.calendar.holidays.len(), 2);
        assert_eq!(ccpa.calendar.zone, chrono_tz::America::Los_Angeles);
        let appi = policy.deadlines.regime(Jurisdiction::Appi);
        assert_eq!(appi.calendar.zone, chrono_tz::UTC);
        assert_eq!(
            policy.deadlines.regime(Jurisdiction::Appi).respond_within,
            Period::Days(7)
        );
        assert_eq!(
            policy
                .verification
                .minimum(Jurisdiction::Gdpr, Need::Access(AccessScope::Categories)),
            VerificationLevel::ReasonablyHigh
        );
        assert_eq!(
            policy
                .verification
                .minimum(Jurisdiction::Gdpr, Need::Kind(RequestKind::Delete)),
            VerificationLevel::ReasonablyHigh
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            (
                "jurisdictions: {CCPA: {respond_within: soon}}",
                "jurisdictions.CCPA.respond_within",
            ),
            ("jurisdictions: {MARS: {}}", "jurisdictions.MARS"),
            ("jurisdictions: {CCPA: {calendar: nope}}", "no calendar"),
            (
                "calendars: {jp: {time_zone: Asia/Kyoto}}",
                "calendars.jp.time_zone: unknown time zone",
            ),
            (
                "verification: {CCPA: {DELETE: MAYBE}}",
                "verification.CCPA.DELETE",
            ),
            ("deadline: {}", "unknown field"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
