//! `google.protobuf.Timestamp` and `Duration` against chrono and std.
//!
//! The well-known types can carry values their own specification forbids
//! (nanos out of range, a duration whose seconds and nanos disagree in
//! sign), so inbound values are checked rather than normalised: a caller
//! sending garbage should hear about it, not get a silently different
//! instant. Timestamps are truncated to the microseconds the store keeps.

use std::time::Duration;

use chrono::DateTime;

use crate::domain::{Timestamp, Violations, truncate_to_micros};

const NANOS_PER_SECOND: u32 = 1_000_000_000;
/// 0001-01-01T00:00:00Z, the earliest valid `Timestamp`.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the latest valid `Timestamp`.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
/// About 10,000 years, the largest valid `Duration`.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// The wire form of a timestamp.
pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        // chrono represents a leap second as nanos >= 1e9; the wire cannot.
        nanos: t.timestamp_subsec_nanos().min(999_999_999) as i32,
    }
}

/// The wire form of an optional timestamp (unset stays unset).
pub fn opt_timestamp(t: Option<Timestamp>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

/// Decodes an optional timestamp field, e.g. a list filter's
/// `submitted_after`; violations are reported under `field`.
pub fn parse_timestamp(
    t: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<Option<Timestamp>, Violations> {
    t.map(|t| super::within(field, from_pb(&t))).transpose()
}

/// Decodes a timestamp, truncated to microseconds.
pub(super) fn from_pb(t: &prost_types::Timestamp) -> Result<Timestamp, Violations> {
    let Some(nanos) = u32::try_from(t.nanos)
        .ok()
        .filter(|&n| n < NANOS_PER_SECOND)
    else {
        return Err(Violations::one("", "nanos must be from 0 to 999999999"));
    };
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&t.seconds) {
        return Err(Violations::one(
            "",
            "must be between 0001-01-01 and 9999-12-31",
        ));
    }
    DateTime::from_timestamp(t.seconds, nanos)
        .map(truncate_to_micros)
        .ok_or_else(|| Violations::one("", "must be a valid timestamp"))
}

/// Decodes a non-negative duration.
pub(super) fn duration(d: &prost_types::Duration) -> Result<Duration, Violations> {
    let valid = (-MAX_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&d.seconds)
        && d.nanos.unsigned_abs() < NANOS_PER_SECOND
        && (d.seconds == 0 || d.nanos == 0 || (d.seconds > 0) == (d.nanos > 0));
    if !valid {
        return Err(Violations::one(
            "",
            "must be a valid duration (seconds and nanos in range and of the same sign)",
        ));
    }
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(seconds), Ok(nanos)) => Ok(Duration::new(seconds, nanos)),
        _ => Err(Violations::one("", "must not be negative")),
    }
}

/// Decodes an optional duration field; unset stays unset.
pub(super) fn opt_duration(
    d: Option<prost_types::Duration>,
) -> Result<Option<Duration>, Violations> {
    d.as_ref().map(duration).transpose()
}

/// The wire form of a duration (saturating; the domain's bounds are far
/// below the wire's).
pub(super) fn duration_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// An RFC 3339 timestamp (microseconds, `Z`), as the JSON of the HTTP
/// callback API and the exports write it.
pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fields;

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    fn dur(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn timestamps_round_trip_at_micro_precision() {
        let t = from_pb(&ts(1_700_000_000, 123_456_789)).unwrap();
        assert_eq!(timestamp(t), ts(1_700_000_000, 123_456_000));
        assert_eq!(from_pb(&timestamp(t)), Ok(t));
    }

    #[test]
    fn bad_timestamps() {
        for bad in [
            ts(0, -1),
            ts(0, 1_000_000_000),
            ts(MIN_TIMESTAMP_SECONDS - 1, 0),
            ts(MAX_TIMESTAMP_SECONDS + 1, 0),
        ] {
            assert!(from_pb(&bad).is_err(), "{bad:?}");
        }
        let r = parse_timestamp(Some(ts(0, -5)), "submitted_after");
        assert_eq!(fields(r), ["submitted_after"]);
        assert_eq!(parse_timestamp(None, "submitted_after"), Ok(None));
    }

    #[test]
    fn durations() {
        assert_eq!(
            duration(&dur(1, 500_000_000)),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(duration(&dur(0, 0)), Ok(Duration::ZERO));
        assert_eq!(
            duration_pb(Duration::from_millis(1500)),
            dur(1, 500_000_000)
        );
        let cases = [
            (dur(-1, 0), "must not be negative"),
            (dur(0, -1), "must not be negative"),
            (dur(1, -1), "must be a valid duration"),
            (dur(0, 1_000_000_000), "must be a valid duration"),
            (dur(MAX_DURATION_SECONDS + 1, 0), "must be a valid duration"),
            (dur(i64::MIN, i32::MIN), "must be a valid duration"),
        ];
        for (bad, why) in cases {
            let err = duration(&bad).unwrap_err();
            let description = &err.iter().next().unwrap().description;
            assert!(description.starts_with(why), "{bad:?}: {description}");
        }
    }
}
