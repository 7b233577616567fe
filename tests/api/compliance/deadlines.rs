//! Statutory deadlines: set at intake from when the person made the
//! request, business days skipping weekends and holidays, days counted in
//! the calendar's time zone, receipt confirmation, the one extension, and
//! the lists by deadline.

use std::time::Duration;

use dsr_orchestrator::pb;
use tonic::Code;

use super::*;
use crate::backends;

backends!(
    ccpa_receipt_deadline_crosses_a_weekend_and_a_holiday,
    deadlines_count_the_days_of_the_calendars_time_zone,
    an_extension_is_declared_once_and_in_time,
    an_extension_moves_a_reminder_the_old_due_time_held_back,
    a_re_armed_instruction_is_reminded_a_wait_after_the_extension,
    gdpr_extension_inside_the_first_month,
    lists_filter_and_order_by_deadline,
);

/// Calendars that name a time zone count its days: a CCPA request made on
/// Friday evening in Los Angeles (Saturday in UTC) runs from Friday, and
/// ends at the end of a Pacific day, in daylight saving time by then; an
/// APPI request made on Saturday morning in Tokyo (Friday in UTC) runs
/// from Saturday, and is overdue once Tokyo's last day ends, not before.
/// A regime whose calendar names no zone keeps UTC days.
async fn deadlines_count_the_days_of_the_calendars_time_zone(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = compliance_file(
        dir.path(),
        "calendars:\n  tokyo: {time_zone: Asia/Tokyo}\n  \
         california: {time_zone: America/Los_Angeles}\n\
         jurisdictions:\n  APPI: {calendar: tokyo}\n  CCPA: {calendar: california}\n",
        &[],
    );
    let (app, clock) = spawn_at(&db, "2026-03-07T03:00:00Z", |c| {
        c.compliance_file = Some(file);
    })
    .await;
    register(&app, manual_processor("records-desk")).await;

    let ccpa = submit(&app, deletion("cleo@example.com")).await;
    assert_eq!(
        time(&ccpa.receipt_confirm_by),
        at("2026-03-20T23:59:59.999999-07:00")
    );
    assert_eq!(
        time(&ccpa.respond_by),
        at("2026-04-20T23:59:59.999999-07:00")
    );
    let mut appi = deletion_under("dai@example.com", pb::Jurisdiction::Appi);
    appi.submitted_at = Some(ts("2026-03-06T23:30:00Z"));
    let appi = submit(&app, appi).await;
    assert_eq!(
        time(&appi.respond_by),
        at("2026-03-21T23:59:59.999999+09:00")
    );
    let gdpr = submit(
        &app,
        deletion_under("eva@example.com", pb::Jurisdiction::Gdpr),
    )
    .await;
    assert_eq!(time(&gdpr.respond_by), at("2026-04-07T23:59:59.999999Z"));

    // 14:59 UTC on 21 March is 23:59 in Tokyo: not overdue yet.
    clock.advance(Duration::from_secs(14 * 86400 + 11 * 3600 + 59 * 60));
    assert!(!get_request(&app, &appi.request_id).await.overdue);
    clock.advance(Duration::from_secs(60));
    assert!(get_request(&app, &appi.request_id).await.overdue);
}

/// A CCPA request made on Friday 20 November 2026, with Thanksgiving
/// (Thursday 26th) a holiday of its calendar: receipt must be confirmed by
/// the end of Monday 7 December (the tenth business day), the answer is due
/// 45 calendar days after, on 4 January. Unconfirmed past the 7th, the
/// request needs attention; confirming it records who and when, once.
async fn ccpa_receipt_deadline_crosses_a_weekend_and_a_holiday(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = compliance_file(
        dir.path(),
        "calendars:\n  california:\n    holidays_file: {dir}/california.txt\n\
         jurisdictions:\n  CCPA:\n    calendar: california\n",
        &[(
            "california.txt",
            "# US federal and California holidays\n2026-11-26\n2026-12-25\n",
        )],
    );
    let (app, clock) = spawn_at(&db, "2026-11-20T15:00:00Z", |c| {
        c.compliance_file = Some(file);
    })
    .await;
    register(&app, manual_processor("records-desk")).await;

    let made = submit(&app, deletion("ada@example.com")).await;
    assert_eq!(
        time(&made.receipt_confirm_by),
        at("2026-12-07T23:59:59.999999Z")
    );
    assert_eq!(time(&made.respond_by), at("2027-01-04T23:59:59.999999Z"));
    assert!(!made.receipt_overdue && !made.overdue && !made.needs_attention);
    // A regime without a receipt deadline shows none.
    let gdpr = submit(
        &app,
        deletion_under("bea@example.com", pb::Jurisdiction::Gdpr),
    )
    .await;
    assert_eq!(gdpr.receipt_confirm_by, None);

    // Monday 7 December, late in the day: not overdue yet.
    clock.advance(Duration::from_secs(17 * 86400 + 8 * 3600));
    let still = get_request(&app, &made.request_id).await;
    assert!(!still.receipt_overdue);
    // Tuesday: overdue, and the request needs attention.
    clock.advance(Duration::from_secs(86400));
    let late = get_request(&app, &made.request_id).await;
    assert!(late.receipt_overdue && late.needs_attention, "{late:?}");
    let listed = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest {
            needs_attention: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed
        .requests
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, [made.request_id.as_str()]);

    let confirmed = app
        .requests
        .clone()
        .confirm_receipt(pb::ConfirmReceiptRequest {
            request_id: made.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let when = confirmed.receipt_confirmed_at;
    assert!(when.is_some());
    assert_eq!(confirmed.receipt_confirmed_by, "anonymous");
    assert!(!confirmed.receipt_overdue && !confirmed.needs_attention);
    clock.advance(Duration::from_secs(60));
    let again = app
        .requests
        .clone()
        .confirm_receipt(pb::ConfirmReceiptRequest {
            request_id: made.request_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.receipt_confirmed_at, when, "confirmed once");

    // The confirmation is in the history; once closed, it cannot be
    // confirmed any more.
    app.requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: made.request_id.clone(),
            reason: "withdrawn".into(),
        })
        .await
        .unwrap();
    let events = watch_to_end(&app.requests, &made.request_id).await;
    let kinds: Vec<_> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == pb::RequestEventType::ReceiptConfirmed)
            .count(),
        1,
        "{kinds:?}"
    );
    let record = record(&app, &made.request_id).await;
    assert_eq!(record.receipt_confirmed_at, when);
    let check = verify_trail(&app, &made.request_id).await;
    assert!(check.intact && check.record_checked, "{check:?}");
    app.requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: gdpr.request_id.clone(),
            reason: "withdrawn".into(),
        })
        .await
        .unwrap();
    let closed = app
        .requests
        .clone()
        .confirm_receipt(pb::ConfirmReceiptRequest {
            request_id: gdpr.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition, "{closed:?}");
    app.stop().await;
}

/// A CCPA request may be extended once, by up to 45 days, declared before
/// its deadline: the first extension moves the deadline and the open
/// instructions' due times; a second is refused, so is one declared late,
/// and one under APPI, which allows none.
async fn an_extension_is_declared_once_and_in_time(db: TestDb) {
    let (app, clock) = spawn_at(&db, "2026-01-01T00:00:00Z", |_| {}).await;
    register(&app, manual_processor("records-desk")).await;
    let made = submit(&app, deletion("cleo@example.com")).await;
    assert_eq!(time(&made.respond_by), at("2026-02-15T23:59:59.999999Z"));
    let line = &made.instructions[0];
    assert_eq!(time(&line.due_at), at("2026-02-08T23:59:59.999999Z"));
    assert_eq!(time(&line.escalate_at), at("2026-02-12T11:59:59.999999Z"));

    let extend = |id: &str, new_deadline: Option<&str>, reason: &str| {
        let mut client = app.requests.clone();
        let request = pb::ExtendDeadlineRequest {
            request_id: id.into(),
            new_deadline: new_deadline.map(ts),
            reason: reason.into(),
        };
        async move { client.extend_deadline(request).await }
    };
    // Beyond what the regime allows, or without a reason: bad input.
    let far = extend(&made.request_id, Some("2026-04-02T00:00:00Z"), "more time")
        .await
        .unwrap_err();
    assert_eq!(far.code(), Code::InvalidArgument);
    assert_eq!(violations(&far), ["new_deadline"]);
    let bare = extend(&made.request_id, None, " ").await.unwrap_err();
    assert_eq!(violations(&bare), ["reason"]);

    clock.advance(Duration::from_secs(20 * 86400));
    let extended = extend(
        &made.request_id,
        None,
        "records held by an archive vendor must be recalled",
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        time(&extended.respond_by),
        at("2026-04-01T23:59:59.999999Z"),
        "45 days more"
    );
    let x = extended.extension.clone().expect("the extension is shown");
    assert_eq!(
        time(&x.original_deadline),
        at("2026-02-15T23:59:59.999999Z")
    );
    assert_eq!(time(&x.new_deadline), at("2026-04-01T23:59:59.999999Z"));
    assert_eq!(
        x.reason,
        "records held by an archive vendor must be recalled"
    );
    assert_eq!(x.declared_by, "anonymous");
    assert_eq!(time(&x.declared_at), at("2026-01-21T00:00:00Z"));
    assert_eq!(
        time(&extended.instructions[0].due_at),
        at("2026-03-25T23:59:59.999999Z"),
        "the processor's due time moves with the deadline"
    );

    let twice = extend(&made.request_id, None, "again").await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition, "{twice:?}");
    // The extension's event is chained onto the trail.
    let check = verify_trail(&app, &made.request_id).await;
    assert!(check.intact, "{check:?}");
    assert_eq!(check.events, 2, "received and extended");

    // Declared after the original deadline: too late.
    let other = submit(&app, deletion("dora@example.com")).await;
    clock.advance(Duration::from_secs(46 * 86400));
    let overdue = get_request(&app, &other.request_id).await;
    assert!(overdue.overdue);
    let late = extend(&other.request_id, None, "late").await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(late.message().contains("passed"), "{late:?}");

    let appi = submit(
        &app,
        deletion_under("emi@example.com", pb::Jurisdiction::Appi),
    )
    .await;
    let none = extend(&appi.request_id, None, "more time")
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::FailedPrecondition);
    assert!(none.message().contains("APPI"), "{none:?}");

    // The extension is an event of the request's history, with its terms,
    // and the record states the deadline in force.
    app.requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: made.request_id.clone(),
            reason: "done by hand".into(),
        })
        .await
        .unwrap();
    let events = watch_to_end(&app.requests, &made.request_id).await;
    let declared = events
        .iter()
        .find(|e| e.r#type() == pb::RequestEventType::DeadlineExtended)
        .expect("a DEADLINE_EXTENDED event");
    assert_eq!(declared.extension.as_ref(), Some(&x));
    let record = record(&app, &made.request_id).await;
    assert_eq!(record.extension, Some(x));
    assert_eq!(time(&record.respond_by), at("2026-04-01T23:59:59.999999Z"));
    assert!(record.on_time);
    app.stop().await;
}

/// Where the CCPA extension tests below start.
const JANUARY: &str = "2026-01-01T00:00:00Z";

/// A processor that accepted an instruction owes its outcome within its
/// completion timeout, but no later than the instruction's due time: 40
/// days after 1 January is cut to the due time, 8 February. The extension
/// moves the due time to 25 March, and the reminder with it to 40 days
/// after the acceptance (10 February), not at the old due time.
async fn an_extension_moves_a_reminder_the_old_due_time_held_back(db: TestDb) {
    let (app, clock, fake, made) =
        accepting_processor(&db, JANUARY, "archive", 40, None, "fern@example.com").await;
    let id = made.instructions[0].instruction_id.clone();
    assert_eq!(
        time(&made.instructions[0].due_at),
        at("2026-02-08T23:59:59.999999Z")
    );
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;

    clock.advance(Duration::from_secs(20 * 86400));
    let extended = extend_for_the_archive(&app, &made.request_id).await;
    assert_eq!(
        time(&extended.instructions[0].due_at),
        at("2026-03-25T23:59:59.999999Z")
    );

    // Past the old due time: no reminder yet; 40 days after the
    // acceptance: reminded.
    reminded_only_at(
        &app,
        &clock,
        &fake,
        &[(19, "9 February"), (1, "10 February")],
    )
    .await;
    app.stop().await;
}

/// The deadline of `request` extended by its regime's default, for an
/// archive vendor's recall.
async fn extend_for_the_archive(app: &TestApp, request: &str) -> pb::DataSubjectRequest {
    app.requests
        .clone()
        .extend_deadline(pb::ExtendDeadlineRequest {
            request_id: request.to_string(),
            new_deadline: None,
            reason: "records held by an archive vendor must be recalled".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Moves `clock` on by each step's days and runs a pass: nothing is sent
/// until the last step, whose pass reminds the processor `fake` plays.
async fn reminded_only_at(
    app: &TestApp,
    clock: &ManualClock,
    fake: &FakeProcessor,
    steps: &[(u64, &str)],
) {
    let before = fake.deliveries().len();
    for (i, (days, day)) in steps.iter().enumerate() {
        clock.advance(Duration::from_secs(days * 86400));
        let sent = usize::from(i + 1 == steps.len());
        assert_eq!(app.dispatcher.run_once().await.unwrap(), sent, "{day}");
    }
    let d = fake.deliveries();
    assert_eq!(d.len(), before + 1);
    assert!(d[before].reminder);
}

/// As `an_extension_moves_a_reminder_the_old_due_time_held_back`, for an
/// instruction re-armed after it escalated: its first
/// acknowledgement is not the acceptance that set its reply time, so the
/// reply time counts from the extension instead, a wait late at most and
/// never early. Accepted on 1 January, escalated with no reminder to send,
/// given 40 days and a reminder, re-armed and accepted again on 7 January
/// (reply capped at the due time, 8 February), extended on 21 January: the
/// reminder goes on 2 March, not on 10 February as counted from the first
/// acceptance.
async fn a_re_armed_instruction_is_reminded_a_wait_after_the_extension(db: TestDb) {
    let (app, clock, fake, made) =
        accepting_processor(&db, JANUARY, "archive", 5, Some(0), "gil@example.com").await;
    let id = made.instructions[0].instruction_id.clone();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    clock.advance(Duration::from_secs(5 * 86400));
    app.dispatcher.run_once().await.unwrap();
    wait_for_state(&app, &id, pb::InstructionState::Escalated).await;

    app.processors
        .clone()
        .update_processor(pb::UpdateProcessorRequest {
            processor: Some(pb::Processor {
                processor_id: "archive".into(),
                completion_timeout: ms(40 * 86_400_000),
                max_reminders: Some(1),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["completion_timeout".into(), "max_reminders".into()],
            }),
        })
        .await
        .unwrap();
    clock.advance(Duration::from_secs(86400));
    rearm(&app, &id).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    let again = wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    let summary = again.summary.unwrap();
    assert_eq!(summary.attempts, 2);
    assert_eq!(
        time(&summary.acknowledged_at),
        at("2026-01-01T00:00:00Z"),
        "the first acknowledgement is kept"
    );

    clock.advance(Duration::from_secs(14 * 86400));
    extend_for_the_archive(&app, &made.request_id).await;
    reminded_only_at(
        &app,
        &clock,
        &fake,
        &[(20, "10 February"), (19, "1 March"), (1, "2 March")],
    )
    .await;
    assert_eq!(fake.deliveries().len(), 3);
    app.stop().await;
}

/// GDPR: one month from the request, extensible by up to two more months
/// when declared inside the first.
async fn gdpr_extension_inside_the_first_month(db: TestDb) {
    let (app, clock) = spawn_at(&db, "2026-01-31T10:00:00Z", |_| {}).await;
    register(&app, manual_processor("records-desk")).await;
    let made = submit(
        &app,
        deletion_under("fay@example.com", pb::Jurisdiction::Gdpr),
    )
    .await;
    assert_eq!(time(&made.respond_by), at("2026-02-28T23:59:59.999999Z"));

    clock.advance(Duration::from_secs(20 * 86400));
    let mut client = app.requests.clone();
    let beyond = client
        .extend_deadline(pb::ExtendDeadlineRequest {
            request_id: made.request_id.clone(),
            new_deadline: Some(ts("2026-04-29T00:00:00Z")),
            reason: "complex request".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&beyond), ["new_deadline"], "two months at most");
    let extended = client
        .extend_deadline(pb::ExtendDeadlineRequest {
            request_id: made.request_id.clone(),
            new_deadline: Some(ts("2026-04-15T00:00:00Z")),
            reason: "complex request spanning three group companies".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(time(&extended.respond_by), at("2026-04-15T00:00:00Z"));

    // Past its first month, another GDPR request cannot be extended.
    let other = submit(
        &app,
        deletion_under("gus@example.com", pb::Jurisdiction::Gdpr),
    )
    .await;
    clock.advance(Duration::from_secs(32 * 86400));
    let late = client
        .extend_deadline(pb::ExtendDeadlineRequest {
            request_id: other.request_id.clone(),
            new_deadline: None,
            reason: "too late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    app.stop().await;
}

/// Lists by deadline: requests in deadline order, page by page; only
/// those due before a time; only the overdue; only those needing
/// attention. Instructions likewise by due time.
async fn lists_filter_and_order_by_deadline(db: TestDb) {
    let (app, clock) = spawn_at(&db, "2026-01-01T00:00:00Z", |_| {}).await;
    register(&app, manual_processor("records-desk")).await;
    let ccpa = submit(
        &app,
        deletion_under("a@example.com", pb::Jurisdiction::Ccpa),
    )
    .await;
    let gdpr = submit(
        &app,
        deletion_under("b@example.com", pb::Jurisdiction::Gdpr),
    )
    .await;
    let appi = submit(
        &app,
        deletion_under("c@example.com", pb::Jurisdiction::Appi),
    )
    .await;
    let other = submit(
        &app,
        deletion_under("d@example.com", pb::Jurisdiction::Other),
    )
    .await;

    let list = |req: pb::ListRequestsRequest| {
        let mut client = app.requests.clone();
        async move { client.list_requests(req).await.unwrap().into_inner() }
    };
    let ids = |page: &pb::ListRequestsResponse| -> Vec<String> {
        page.requests.iter().map(|r| r.request_id.clone()).collect()
    };
    // Deadline order: APPI (15 Jan), OTHER (31 Jan), GDPR (1 Feb), CCPA
    // (15 Feb), two to a page.
    let first = list(pb::ListRequestsRequest {
        page_size: 2,
        order_by: pb::RequestOrder::Deadline as i32,
        ..Default::default()
    })
    .await;
    let second = list(pb::ListRequestsRequest {
        page_size: 2,
        order_by: pb::RequestOrder::Deadline as i32,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        [ids(&first), ids(&second)].concat(),
        [&appi, &other, &gdpr, &ccpa].map(|r| r.request_id.clone())
    );
    // A token of one order is refused by the other.
    let mixed = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&mixed), ["page_token"]);

    let due = list(pb::ListRequestsRequest {
        due_before: Some(ts("2026-02-01T00:00:00Z")),
        order_by: pb::RequestOrder::Deadline as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&due), [&appi, &other].map(|r| r.request_id.clone()));

    // 20 January: the APPI request is overdue, and its instruction
    // escalated on the way; the CCPA request's receipt is unconfirmed
    // past its ten business days (15 January).
    clock.advance(Duration::from_secs(19 * 86400));
    app.dispatcher.run_once().await.unwrap();
    let overdue = list(pb::ListRequestsRequest {
        overdue: true,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&overdue), std::slice::from_ref(&appi.request_id));
    let mut attention = ids(&list(pb::ListRequestsRequest {
        needs_attention: true,
        ..Default::default()
    })
    .await);
    attention.sort();
    let mut expected = vec![appi.request_id.clone(), ccpa.request_id.clone()];
    expected.sort();
    assert_eq!(attention, expected);

    let instructions = |req: pb::ListInstructionsRequest| {
        let mut client = app.instructions.clone();
        async move {
            client
                .list_instructions(req)
                .await
                .unwrap()
                .into_inner()
                .instructions
                .into_iter()
                .map(|i| i.request_id)
                .collect::<Vec<_>>()
        }
    };
    let mut by_due = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .instructions
            .clone()
            .list_instructions(pb::ListInstructionsRequest {
                page_size: 3,
                page_token,
                order_by: pb::InstructionOrder::Due as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        by_due.extend(page.instructions.into_iter().map(|i| i.request_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        by_due,
        [&appi, &other, &gdpr, &ccpa].map(|r| r.request_id.clone())
    );
    let late = instructions(pb::ListInstructionsRequest {
        overdue: true,
        ..Default::default()
    })
    .await;
    assert_eq!(
        late,
        std::slice::from_ref(&appi.request_id),
        "due 8 January"
    );
    let soon = instructions(pb::ListInstructionsRequest {
        due_before: Some(ts("2026-01-25T00:00:00Z")),
        order_by: pb::InstructionOrder::Due as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(soon, [&appi, &other].map(|r| r.request_id.clone()));
    let escalated = instructions(pb::ListInstructionsRequest {
        needs_attention: true,
        ..Default::default()
    })
    .await;
    assert_eq!(escalated, std::slice::from_ref(&appi.request_id));
    app.stop().await;
}
