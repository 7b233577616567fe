//! A regime's calendar: which days are business days, and in which time
//! zone its days begin and end. A period of the law counts the days of
//! the place the business answers from: a request made at 23:30 UTC on a
//! Friday was made on Saturday in Tokyo, and "14 days" from it ends at the
//! end of a Tokyo day, 15:00 UTC. The zone is an IANA name (`Asia/Tokyo`,
//! `America/Los_Angeles`), so daylight saving time moves the end of a day
//! as it moves the business's clocks; UTC unless the compliance file names
//! one.

use std::collections::BTreeSet;

use chrono::{Datelike, LocalResult, NaiveDate, TimeZone, Weekday};
use chrono_tz::Tz;

use super::Timestamp;

/// Which days are business days, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    /// Days of the week that are never business days.
    pub weekend: Vec<Weekday>,
    /// Dates that are not business days.
    pub holidays: BTreeSet<NaiveDate>,
    /// The time zone whose days the calendar counts.
    pub zone: Tz,
}

impl Default for Calendar {
    /// Saturday and Sunday off, no holidays, days in UTC.
    fn default() -> Self {
        Self {
            weekend: vec![Weekday::Sat, Weekday::Sun],
            holidays: BTreeSet::new(),
            zone: Tz::UTC,
        }
    }
}

impl Calendar {
    /// Whether `day` is a business day.
    pub fn is_business_day(&self, day: NaiveDate) -> bool {
        !self.weekend.contains(&day.weekday()) && !self.holidays.contains(&day)
    }

    /// The day `at` falls on, in the calendar's zone.
    pub fn day_of(&self, at: Timestamp) -> NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }

    /// The last instant (microseconds) of `day` in the calendar's zone:
    /// just before the next day begins there. Where clocks skip midnight
    /// (a change of offset at 00:00), the next day begins at its first
    /// instant that exists, found by bisection between the instants 26
    /// hours either side of it, whatever the size of the jump.
    pub fn end_of(&self, day: NaiveDate) -> Timestamp {
        let last = || {
            let max = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros();
            chrono::DateTime::from_timestamp_micros(max).expect("the latest microsecond")
        };
        let Some(next) = day.succ_opt() else {
            return last();
        };
        let midnight = next.and_hms_opt(0, 0, 0).expect("midnight exists");
        let begins = match self.zone.from_local_datetime(&midnight) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.to_utc(),
            LocalResult::None => {
                // In microseconds. No offset is beyond ±26 hours: `before`
                // is on `day` or earlier, `after` on a later day.
                let hours = 26 * 3_600_000_000;
                let naive = midnight.and_utc().timestamp_micros();
                let (mut before, mut after) = (naive - hours, naive + hours);
                let instant = |us: i64| match chrono::DateTime::from_timestamp_micros(us) {
                    Some(t) => t,
                    None if us < 0 => chrono::DateTime::<chrono::Utc>::MIN_UTC,
                    None => last(),
                };
                while after - before > 1 {
                    let middle = before + (after - before) / 2;
                    if self.day_of(instant(middle)) > day {
                        after = middle;
                    } else {
                        before = middle;
                    }
                }
                instant(after)
            }
        };
        begins - chrono::Duration::microseconds(1)
    }
}
