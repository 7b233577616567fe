//! Tests of `deadline`.

use super::*;

fn at(s: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

#[test]
fn business_days_skip_weekends_and_holidays() {
    // Friday 2026-11-20; Thanksgiving Thursday 2026-11-26 a holiday.
    let calendar = Calendar {
        holidays: [day("2026-11-26")].into(),
        ..Calendar::default()
    };
    let end = Period::BusinessDays(10).end(at("2026-11-20T15:00:00Z"), &calendar);
    // Mon 23, Tue 24, Wed 25, (Thu 26 off), Fri 27, Mon 30, Tue 1,
    // Wed 2, Thu 3, Fri 4, Mon 7: the tenth is Monday 7 December.
    assert_eq!(end, at("2026-12-07T23:59:59.999999Z"));
}

#[test]
fn calendar_days_and_months() {
    let c = Calendar::default();
    assert_eq!(
        Period::Days(45).end(at("2026-01-01T10:00:00Z"), &c),
        at("2026-02-15T23:59:59.999999Z")
    );
    assert_eq!(
        Period::Months(1).end(at("2026-01-31T10:00:00Z"), &c),
        at("2026-02-28T23:59:59.999999Z")
    );
}

#[test]
fn days_are_the_calendars_own() {
    // 23:30 UTC on Friday 6 March is Saturday 08:30 in Tokyo: 14 days run
    // from Saturday and end at the end of a Tokyo day.
    let tokyo = Calendar {
        zone: chrono_tz::Asia::Tokyo,
        ..Calendar::default()
    };
    let made = at("2026-03-06T23:30:00Z");
    assert_eq!(
        Period::Days(14).end(made, &Calendar::default()),
        at("2026-03-20T23:59:59.999999Z")
    );
    assert_eq!(
        Period::Days(14).end(made, &tokyo),
        at("2026-03-21T23:59:59.999999+09:00")
    );
    // 03:00 UTC on Saturday 7 March is Friday 19:00 in Los Angeles; ten
    // business days end on Friday 20 March, after the clocks went
    // forward on 8 March, so at 23:59:59.999999 Pacific Daylight Time.
    let california = Calendar {
        zone: chrono_tz::America::Los_Angeles,
        ..Calendar::default()
    };
    let made = at("2026-03-07T03:00:00Z");
    assert_eq!(
        Period::BusinessDays(10).end(made, &california),
        at("2026-03-20T23:59:59.999999-07:00")
    );
    // An extension counts from the original deadline's own day.
    let regime = Regime {
        confirm_within: None,
        respond_within: Period::Days(45),
        extension: Some(ExtensionRule {
            up_to: Period::Days(45),
        }),
        calendar: california,
    };
    let policy = DeadlinePolicy::default().with(Jurisdiction::Ccpa, regime);
    let respond_by = policy.deadlines(Jurisdiction::Ccpa, made).respond_by;
    assert_eq!(respond_by, at("2026-04-20T23:59:59.999999-07:00"));
    let latest = policy.extend(Jurisdiction::Ccpa, respond_by, false, None, made);
    assert_eq!(latest, Ok(at("2026-06-04T23:59:59.999999-07:00")));
}

#[test]
fn a_day_ends_just_before_the_next_begins_wherever_clocks_jump() {
    // Santiago skips midnight when summer time begins (00:00 becomes
    // 01:00), Lord Howe moves by half an hour, London by an hour at 01:00.
    let zones = [
        chrono_tz::UTC,
        chrono_tz::Asia::Tokyo,
        chrono_tz::America::Los_Angeles,
        chrono_tz::America::Santiago,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Europe::London,
    ];
    for zone in zones {
        let calendar = Calendar {
            zone,
            ..Calendar::default()
        };
        let mut day = day("2026-01-01");
        while day < self::day("2027-01-01") {
            let end = calendar.end_of(day);
            let next = end + chrono::Duration::microseconds(1);
            assert_eq!(calendar.day_of(end), day, "{zone} {day}");
            assert_eq!(
                calendar.day_of(next),
                day.succ_opt().unwrap(),
                "{zone} {day}"
            );
            day = day.succ_opt().unwrap();
        }
    }
    // The day before Santiago's clocks skip midnight ends at 24:00, -04
    // (01:00, -03); the day before Kathmandu's went from +05:30 to +05:45
    // at 00:00 on 1 January 1986, it ended at 24:00, +05:30 (00:15,
    // +05:45).
    let santiago = Calendar {
        zone: chrono_tz::America::Santiago,
        ..Calendar::default()
    };
    assert_eq!(
        santiago.end_of(day("2026-09-05")),
        at("2026-09-05T23:59:59.999999-04:00")
    );
    let kathmandu = Calendar {
        zone: chrono_tz::Asia::Kathmandu,
        ..Calendar::default()
    };
    assert_eq!(
        kathmandu.end_of(day("1985-12-31")),
        at("1985-12-31T23:59:59.999999+05:30")
    );
    assert_eq!(
        kathmandu.day_of(at("1985-12-31T18:30:00Z")),
        day("1986-01-01")
    );
    let latest = Calendar::default().end_of(NaiveDate::MAX);
    assert_eq!(latest.date_naive(), NaiveDate::MAX);
    assert_eq!(latest.timestamp_subsec_nanos() % 1000, 0);
}

#[test]
fn extensions_follow_the_regime() {
    let policy = DeadlinePolicy::default();
    let made = at("2026-01-01T00:00:00Z");
    let d = policy.deadlines(Jurisdiction::Ccpa, made);
    let inside = at("2026-01-20T00:00:00Z");
    let latest = policy
        .extend(Jurisdiction::Ccpa, d.respond_by, false, None, inside)
        .unwrap();
    assert_eq!(latest, at("2026-04-01T23:59:59.999999Z"));
    assert_eq!(
        policy.extend(Jurisdiction::Ccpa, d.respond_by, true, None, inside),
        Err(ExtensionRefused::AlreadyExtended)
    );
    assert_eq!(
        policy.extend(
            Jurisdiction::Ccpa,
            d.respond_by,
            false,
            None,
            at("2026-03-01T00:00:00Z")
        ),
        Err(ExtensionRefused::TooLate)
    );
    assert!(matches!(
        policy.extend(Jurisdiction::Ccpa, d.respond_by, false, Some(made), inside),
        Err(ExtensionRefused::OutOfRange(_))
    ));
    assert_eq!(
        policy.extend(Jurisdiction::Appi, d.respond_by, false, None, inside),
        Err(ExtensionRefused::NotAllowed(Jurisdiction::Appi))
    );
    let gdpr = policy.deadlines(Jurisdiction::Gdpr, made);
    assert_eq!(gdpr.respond_by, at("2026-02-01T23:59:59.999999Z"));
    assert_eq!(gdpr.confirm_by, None);
}

#[test]
fn due_times_leave_the_business_half_the_margin() {
    let made = at("2026-01-01T00:00:00Z");
    let week = std::time::Duration::from_secs(7 * 86400);
    let respond_by = at("2026-02-15T00:00:00Z");
    let five_minutes = std::time::Duration::from_secs(300);
    let (due, escalate) = due_times(respond_by, week, five_minutes, made);
    assert_eq!(due, at("2026-02-08T00:00:00Z"));
    assert_eq!(escalate, at("2026-02-11T12:00:00Z"));
    // Late on arrival: due at once, escalated halfway to the deadline.
    let late = at("2026-02-14T00:00:00Z");
    assert_eq!(
        due_times(respond_by, week, five_minutes, late),
        (late, at("2026-02-14T12:00:00Z"))
    );
    // Past the deadline on arrival: escalated once the processor has
    // had its grace to take it up.
    let past = at("2026-02-20T00:00:00Z");
    assert_eq!(
        due_times(respond_by, week, five_minutes, past),
        (past, at("2026-02-20T00:05:00Z"))
    );
    // Reminders fall due by the due time, then every timeout.
    let day = std::time::Duration::from_secs(86400);
    assert_eq!(
        reply_due(made, 40 * day, Some(due)),
        at("2026-02-08T00:00:00Z")
    );
    assert_eq!(reply_due(made, day, Some(due)), at("2026-01-02T00:00:00Z"));
    assert_eq!(reply_due(due, day, Some(due)), at("2026-02-09T00:00:00Z"));
}

#[test]
fn an_extension_lifts_a_reply_time_capped_at_the_old_due_time() {
    let day = std::time::Duration::from_secs(86400);
    let acked = at("2026-01-01T00:00:00Z");
    let old_due = at("2026-02-08T00:00:00Z");
    let new_due = at("2026-03-25T00:00:00Z");
    let now = at("2026-01-21T00:00:00Z");
    let capped = reply_due(acked, 40 * day, Some(old_due));
    assert_eq!(capped, old_due);
    // Counted from the acceptance the cap cut short.
    assert_eq!(
        reply_due_extended(capped, old_due, new_due, Some(acked), 40 * day, now),
        Some(at("2026-02-10T00:00:00Z"))
    );
    // The acceptance unknown: from now.
    assert_eq!(
        reply_due_extended(capped, old_due, new_due, None, 40 * day, now),
        Some(at("2026-03-02T00:00:00Z"))
    );
    // An acceptance the cap did not cut short cannot be the one: from now.
    assert_eq!(
        reply_due_extended(capped, old_due, new_due, Some(acked), 30 * day, now),
        Some(at("2026-02-20T00:00:00Z"))
    );
    // Capped by the new due time too.
    assert_eq!(
        reply_due_extended(capped, old_due, new_due, Some(acked), 90 * day, now),
        Some(new_due)
    );
    // Not capped: it stays.
    let uncapped = reply_due(acked, day, Some(old_due));
    assert_eq!(
        reply_due_extended(uncapped, old_due, new_due, Some(acked), day, now),
        None
    );
}

#[test]
fn retention_cutoffs() {
    let now = at("2026-12-04T10:00:00Z");
    assert_eq!(Period::Months(24).before(now), at("2024-12-04T10:00:00Z"));
    assert_eq!(Period::Days(30).before(now), at("2026-11-04T10:00:00Z"));
    // Friday 4 December, 2 business days back: Wednesday.
    assert_eq!(
        Period::BusinessDays(2).before(now),
        at("2026-12-02T10:00:00Z")
    );
}

#[test]
fn periods_are_read_as_written() {
    assert_eq!("10 business days".parse(), Ok(Period::BusinessDays(10)));
    assert_eq!("1 month".parse(), Ok(Period::Months(1)));
    assert_eq!("45 days".parse(), Ok(Period::Days(45)));
    assert!("0 days".parse::<Period>().is_err());
    assert!("fortnight".parse::<Period>().is_err());
}
