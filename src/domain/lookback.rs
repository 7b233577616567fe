//! How far back an access or portability request reaches. Under the CCPA
//! a right-to-know response covers the 12 months before the request, and
//! the person may ask for more, back to 1 January 2022 (Cal. Civ. Code
//! 1798.130(a)(2)(B)); under the other regimes everything held is
//! covered unless the person asks for less. The start asked for is what is
//! stored (so a request's idempotency fingerprint does not change with the
//! default); the start in force is derived from it.

use chrono::{Months, TimeZone, Utc};

use super::{Jurisdiction, RequestKind, Timestamp, Violations};

/// The earliest start the CCPA allows: 2022-01-01T00:00:00Z.
pub fn ccpa_earliest() -> Timestamp {
    Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// Checks the start `asked` for a request of `kind` under `jurisdiction`
/// made at `submitted_at`.
pub fn check(
    kind: RequestKind,
    jurisdiction: Jurisdiction,
    submitted_at: Timestamp,
    asked: Option<Timestamp>,
) -> Result<(), Violations> {
    let Some(start) = asked else {
        return Ok(());
    };
    if !kind.returns_data() {
        return Err(Violations::one(
            "",
            "is only given with ACCESS and PORTABILITY requests",
        ));
    }
    if start > submitted_at {
        return Err(Violations::one(
            "",
            "must not be after the request was made",
        ));
    }
    if jurisdiction == Jurisdiction::Ccpa && start < ccpa_earliest() {
        return Err(Violations::one(
            "",
            "under the CCPA, must not be before 2022-01-01T00:00:00Z",
        ));
    }
    Ok(())
}

/// The start in force: the one asked for, else 12 months before the
/// request under the CCPA (not before 2022), else none (everything);
/// none for kinds that return no data.
pub fn in_force(
    kind: RequestKind,
    jurisdiction: Jurisdiction,
    submitted_at: Timestamp,
    asked: Option<Timestamp>,
) -> Option<Timestamp> {
    if !kind.returns_data() {
        return None;
    }
    asked.or_else(|| {
        (jurisdiction == Jurisdiction::Ccpa)
            .then(|| submitted_at.checked_sub_months(Months::new(12)))
            .flatten()
            .map(|start| start.max(ccpa_earliest()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccpa_looks_back_twelve_months_unless_asked() {
        let at = Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap();
        let year_before = Utc.with_ymd_and_hms(2025, 12, 4, 10, 0, 0).unwrap();
        let (a, c, g) = (RequestKind::Access, Jurisdiction::Ccpa, Jurisdiction::Gdpr);
        assert_eq!(in_force(a, c, at, None), Some(year_before));
        assert_eq!(in_force(a, g, at, None), None);
        assert_eq!(in_force(RequestKind::Delete, c, at, None), None);
        let asked = Some(ccpa_earliest());
        assert_eq!(in_force(a, c, at, asked), asked);
        assert!(check(a, c, at, asked).is_ok());
        assert!(
            check(
                a,
                c,
                at,
                Some(ccpa_earliest() - chrono::Duration::seconds(1))
            )
            .is_err()
        );
        assert!(
            check(
                a,
                g,
                at,
                Some(ccpa_earliest() - chrono::Duration::days(400))
            )
            .is_ok()
        );
        assert!(check(a, c, at, Some(at + chrono::Duration::seconds(1))).is_err());
        assert!(check(RequestKind::Delete, c, at, asked).is_err());
    }
}
