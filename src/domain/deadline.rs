//! The law's clock: when a request's receipt must be confirmed and when it
//! must be answered, per jurisdiction, and how far it may be extended.
//! Deadlines run from when the person made the request (`submitted_at`),
//! never from the fan-out, and a slow processor never moves them.
//!
//! A period ends at the end of its last day, its days those of the
//! regime's calendar (UTC unless it names a time zone, see
//! [`super::calendar`]): "within 10 business days" of a request made on a
//! Friday ends at 23:59:59.999999 of the tenth business day after that
//! Friday. Business days skip the weekend and the holidays of the
//! calendar. Months are calendar months:
//! one month from the 31st of January ends on the last day of February.
//!
//! | regime | confirm receipt | respond | extension |
//! |---|---|---|---|
//! | CCPA | 10 business days | 45 days | once, up to 45 more days, declared before the first deadline |
//! | GDPR | - | 1 month | once, up to 2 more months, declared inside the first month |
//! | APPI | - | a target (14 days by default) | none |
//! | OTHER | - | 30 days by default | none |

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{Days, Months, NaiveDate};

use super::{Calendar, Jurisdiction, Timestamp};

/// A length of time in the law's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Calendar days.
    Days(u32),
    /// Days that are neither weekend nor holiday in the regime's calendar.
    BusinessDays(u32),
    /// Calendar months.
    Months(u32),
}

impl Period {
    /// The last day of the period that starts the day after `from`'s date.
    fn last_day(self, from: NaiveDate, calendar: &Calendar) -> NaiveDate {
        match self {
            Period::Days(n) => from + Days::new(u64::from(n)),
            Period::Months(n) => from
                .checked_add_months(Months::new(n))
                .unwrap_or(NaiveDate::MAX),
            Period::BusinessDays(n) => {
                let mut day = from;
                let mut counted = 0;
                while counted < n {
                    day = day.succ_opt().unwrap_or(NaiveDate::MAX);
                    if calendar.is_business_day(day) {
                        counted += 1;
                    }
                }
                day
            }
        }
    }

    /// The end of the period begun at `from`: the last instant of its
    /// last day, both days those of the calendar's zone.
    pub fn end(self, from: Timestamp, calendar: &Calendar) -> Timestamp {
        calendar.end_of(self.last_day(calendar.day_of(from), calendar))
    }

    /// The instant this long before `at` (business days skip weekends):
    /// the cutoff of a retention period ending `at`.
    pub fn before(self, at: Timestamp) -> Timestamp {
        match self {
            Period::Days(n) => at - chrono::Duration::days(i64::from(n)),
            Period::Months(n) => at
                .checked_sub_months(Months::new(n))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
            Period::BusinessDays(n) => {
                let calendar = Calendar::default();
                let mut t = at;
                let mut counted = 0;
                while counted < n {
                    t -= chrono::Duration::days(1);
                    if calendar.is_business_day(t.date_naive()) {
                        counted += 1;
                    }
                }
                t
            }
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Days(n) => write!(f, "{n} days"),
            Period::BusinessDays(n) => write!(f, "{n} business days"),
            Period::Months(n) => write!(f, "{n} months"),
        }
    }
}

impl FromStr for Period {
    type Err = String;

    /// `45 days`, `10 business days`, `1 month`, `2 months`.
    fn from_str(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let bad = || format!("{s:?}: expected e.g. `45 days`, `10 business days` or `1 month`");
        let (n, unit) = match words.as_slice() {
            [n, unit] => (n, unit.to_string()),
            [n, "business", unit] => (n, format!("business {unit}")),
            _ => return Err(bad()),
        };
        let n: u32 = n.parse().map_err(|_| bad())?;
        if n == 0 || n > 3660 {
            return Err(format!("{s:?}: must be 1 to 3660"));
        }
        match unit.as_str() {
            "day" | "days" => Ok(Period::Days(n)),
            "business day" | "business days" => Ok(Period::BusinessDays(n)),
            "month" | "months" => Ok(Period::Months(n)),
            _ => Err(bad()),
        }
    }
}

/// How far a regime lets a business extend its response deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionRule {
    /// The most the deadline may move.
    pub up_to: Period,
}

/// One jurisdiction's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regime {
    /// Receipt must be confirmed within this, when the law says so.
    pub confirm_within: Option<Period>,
    /// The request must be answered within this.
    pub respond_within: Period,
    /// The one extension allowed, if any.
    pub extension: Option<ExtensionRule>,
    /// The calendar of its business days.
    pub calendar: Calendar,
}

/// The clocks of every jurisdiction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlinePolicy {
    regimes: BTreeMap<Jurisdiction, Regime>,
}

impl Default for DeadlinePolicy {
    /// The defaults of the module documentation.
    fn default() -> Self {
        let regime = |confirm, respond, extension: Option<Period>| Regime {
            confirm_within: confirm,
            respond_within: respond,
            extension: extension.map(|up_to| ExtensionRule { up_to }),
            calendar: Calendar::default(),
        };
        Self {
            regimes: [
                (
                    Jurisdiction::Ccpa,
                    regime(
                        Some(Period::BusinessDays(10)),
                        Period::Days(45),
                        Some(Period::Days(45)),
                    ),
                ),
                (
                    Jurisdiction::Gdpr,
                    regime(None, Period::Months(1), Some(Period::Months(2))),
                ),
                (Jurisdiction::Appi, regime(None, Period::Days(14), None)),
                (Jurisdiction::Other, regime(None, Period::Days(30), None)),
            ]
            .into(),
        }
    }
}

/// A request's deadlines, as set when it is taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// When receipt must be confirmed, if the law says.
    pub confirm_by: Option<Timestamp>,
    /// When the request must be answered (before any extension).
    pub respond_by: Timestamp,
}

/// An extension of a request's response deadline, as declared.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extension {
    /// The statutory deadline it replaced.
    pub original_deadline: Timestamp,
    /// The new deadline.
    pub new_deadline: Timestamp,
    /// Why, as the person is told.
    pub reason: String,
    /// Who declared it.
    pub declared_by: String,
    /// When.
    pub declared_at: Timestamp,
}

/// An instruction's due times: when its processor's answer is due, and
/// when it escalates if still open.
///
/// The one rule: the answer is due `margin` before the request's deadline
/// (`respond_by`), but never before the instruction was created; past that
/// the processor is late. A late processor is reminded (an acknowledged
/// push instruction's outcome falls due, at the latest, at `due_at`: the
/// reminder goes out), and an instruction still open halfway from `due_at`
/// to `respond_by` escalates to an operator, leaving the business the
/// other half of the margin to act; but never sooner than `grace` (the
/// processor's `ack_timeout`) after it was created, so that the
/// instructions of a request that arrives already late still reach their
/// processors before an operator is called. The processor's own clock
/// (retries, `ack_timeout`, `completion_timeout`, reminders) runs as
/// before until then and may escalate sooner; it never moves these times.
pub fn due_times(
    respond_by: Timestamp,
    margin: std::time::Duration,
    grace: std::time::Duration,
    created_at: Timestamp,
) -> (Timestamp, Timestamp) {
    let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
    let due = respond_by
        .checked_sub_signed(margin)
        .unwrap_or(created_at)
        .max(created_at);
    let halfway = if respond_by > due {
        due + (respond_by - due) / 2
    } else {
        due
    };
    let earliest = created_at + chrono::Duration::from_std(grace).unwrap_or_default();
    (due, halfway.max(earliest))
}

/// When an acknowledged instruction's outcome is next due (its reminder):
/// `completion_timeout` after `now`, but no later than its due time while
/// that is still ahead.
pub fn reply_due(
    now: Timestamp,
    completion_timeout: std::time::Duration,
    due_at: Option<Timestamp>,
) -> Timestamp {
    let by_timeout = now + chrono::Duration::from_std(completion_timeout).unwrap_or_default();
    match due_at {
        Some(due) if due > now => by_timeout.min(due),
        _ => by_timeout,
    }
}

/// An acknowledged instruction's reply time once an extension moved its
/// due time from `old_due` to `new_due`, or `None` when it stays: one that
/// [`reply_due`] capped at the old due time is computed again under the new
/// one, with `wait` (the completion timeout, or a polling adapter's
/// interval). It counts from `accepted_at`, the acceptance that set the
/// reply time where that is known and the cap did apply to it, and
/// otherwise from `now`, which no acceptance can be after.
pub fn reply_due_extended(
    reply_due_at: Timestamp,
    old_due: Timestamp,
    new_due: Timestamp,
    accepted_at: Option<Timestamp>,
    wait: std::time::Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    if reply_due_at != old_due {
        return None;
    }
    let span = chrono::Duration::from_std(wait).unwrap_or_default();
    let since = match accepted_at {
        Some(at) if at + span >= old_due => at,
        _ => now,
    };
    Some(reply_due(since, wait, Some(new_due)))
}

/// Why an extension is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionRefused {
    /// The regime allows none.
    #[error("{0} allows no extension of the response deadline")]
    NotAllowed(Jurisdiction),
    /// One was declared already.
    #[error("the response deadline was already extended once")]
    AlreadyExtended,
    /// The original deadline has passed: an extension is declared before it.
    #[error("an extension is declared before the original deadline, which has passed")]
    TooLate,
    /// The new deadline is not later, or later than the regime allows.
    #[error("the new deadline must be after the original and no later than {0}")]
    OutOfRange(Timestamp),
}

impl DeadlinePolicy {
    /// With `regime` for `jurisdiction`.
    pub fn with(mut self, jurisdiction: Jurisdiction, regime: Regime) -> Self {
        self.regimes.insert(jurisdiction, regime);
        self
    }

    /// The clock of `jurisdiction`.
    pub fn regime(&self, jurisdiction: Jurisdiction) -> &Regime {
        &self.regimes[&jurisdiction]
    }

    /// The deadlines of a request of `jurisdiction` made at `submitted_at`.
    pub fn deadlines(&self, jurisdiction: Jurisdiction, submitted_at: Timestamp) -> Deadlines {
        let r = self.regime(jurisdiction);
        Deadlines {
            confirm_by: r.confirm_within.map(|p| p.end(submitted_at, &r.calendar)),
            respond_by: r.respond_within.end(submitted_at, &r.calendar),
        }
    }

    /// The deadline an extension declared `now` may move a request's
    /// `original` deadline to: `requested`, or the latest allowed.
    pub fn extend(
        &self,
        jurisdiction: Jurisdiction,
        original: Timestamp,
        already_extended: bool,
        requested: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Timestamp, ExtensionRefused> {
        let r = self.regime(jurisdiction);
        let rule = r
            .extension
            .ok_or(ExtensionRefused::NotAllowed(jurisdiction))?;
        if already_extended {
            return Err(ExtensionRefused::AlreadyExtended);
        }
        if now > original {
            return Err(ExtensionRefused::TooLate);
        }
        let latest = rule.up_to.end(original, &r.calendar);
        match requested {
            None => Ok(latest),
            Some(t) if t > original && t <= latest => Ok(t),
            Some(_) => Err(ExtensionRefused::OutOfRange(latest)),
        }
    }
}

#[cfg(test)]
#[path = "deadline_tests.rs"]
mod tests;
