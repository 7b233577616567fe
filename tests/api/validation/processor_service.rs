//! ProcessorService's other RPCs: lookups by processor id, ListProcessors
//! and UpdateProcessor. (RegisterProcessor has its own module.)

use dsr_orchestrator::pb;
use prost_types::FieldMask;

use super::*;
use crate::backends;
use crate::harness::*;

backends!(
    processor_lookups_table,
    list_processors_table,
    update_processor_table,
);

/// GetProcessor, DisableProcessor and RotateCallbackToken: the id.
async fn processor_lookups_table(db: TestDb) {
    let (app, token) = app_with_pull_processor(&db).await;
    let bad_ids: Table<&str> = vec![
        ("missing processor_id", "", &["processor_id"]),
        ("upper-case processor_id", "Intake", &["processor_id"]),
        ("one character", "i", &["processor_id"]),
        ("starts with a digit", "1ntake", &["processor_id"]),
        ("contains a space", "in take", &["processor_id"]),
    ];
    let mut client = app.processors.clone();
    expect_rejections(
        "GetProcessor",
        bad_ids.clone(),
        async |id| {
            client
                .get_processor(pb::GetProcessorRequest {
                    processor_id: id.into(),
                })
                .await
        },
        async || all_processors(&app).await,
    )
    .await;
    expect_rejections(
        "DisableProcessor",
        bad_ids.clone(),
        async |id| {
            client
                .disable_processor(pb::DisableProcessorRequest {
                    processor_id: id.into(),
                })
                .await
        },
        async || all_processors(&app).await,
    )
    .await;
    expect_rejections(
        "RotateCallbackToken",
        bad_ids,
        async |id| {
            client
                .rotate_callback_token(pb::RotateCallbackTokenRequest {
                    processor_id: id.into(),
                })
                .await
        },
        async || all_processors(&app).await,
    )
    .await;
    // The token was not rotated: it still authenticates.
    app.instructions
        .clone()
        .pull_instructions(authed(&token, pb::PullInstructionsRequest::default()))
        .await
        .unwrap();
    app.stop().await;
}

/// ListProcessors: page size and page token.
async fn list_processors_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let cases: Table<pb::ListProcessorsRequest> = vec![
        (
            "negative page_size",
            pb::ListProcessorsRequest {
                page_size: -1,
                page_token: String::new(),
            },
            &["page_size"],
        ),
        (
            "garbage page_token",
            pb::ListProcessorsRequest {
                page_size: 0,
                page_token: "garbage!".into(),
            },
            &["page_token"],
        ),
        (
            "page_token that is not a processor id",
            pb::ListProcessorsRequest {
                page_size: 0,
                // base64url of "Not An Id".
                page_token: "Tm90IEFuIElk".into(),
            },
            &["page_token"],
        ),
        (
            "both wrong",
            pb::ListProcessorsRequest {
                page_size: -100,
                page_token: "garbage!".into(),
            },
            &["page_size", "page_token"],
        ),
    ];
    let mut client = app.processors.clone();
    expect_rejections(
        "ListProcessors",
        cases,
        async |msg| client.list_processors(msg).await,
        async || (),
    )
    .await;
    assert_eq!(all_processors(&app).await.len(), 1);
    app.stop().await;
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// An update of `vendor` with `edit` applied to a copy of its registration
/// and `paths` as the mask.
fn update(edit: impl FnOnce(&mut pb::Processor), paths: &[&str]) -> pb::UpdateProcessorRequest {
    let mut p = push_processor("vendor", "http://127.0.0.1:9");
    edit(&mut p);
    pb::UpdateProcessorRequest {
        processor: Some(p),
        update_mask: mask(paths),
    }
}

/// UpdateProcessor: the mask, the id, and the merged processor.
async fn update_processor_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    register(&app, push_processor("vendor", "http://127.0.0.1:9")).await;
    let cases: Table<pb::UpdateProcessorRequest> = vec![
        (
            "missing update_mask",
            pb::UpdateProcessorRequest {
                update_mask: None,
                ..update(|p| p.display_name = "Renamed".into(), &[])
            },
            &["update_mask"],
        ),
        (
            "empty update_mask",
            update(|p| p.display_name = "Renamed".into(), &[]),
            &["update_mask"],
        ),
        (
            "unknown update_mask path",
            update(
                |p| p.display_name = "Renamed".into(),
                &["display_name", "colour"],
            ),
            &["update_mask.paths[1]"],
        ),
        (
            "nested update_mask path",
            update(|_| {}, &["adapter.grpc.endpoint"]),
            &["update_mask.paths[0]"],
        ),
        (
            "a field named twice in the mask",
            update(|_| {}, &["display_name", "role", "display_name"]),
            &["update_mask.paths[2]"],
        ),
        (
            "processor_id in the mask",
            update(|_| {}, &["processor_id"]),
            &["update_mask.paths[0]"],
        ),
        (
            "output-only fields in the mask",
            update(|_| {}, &["status", "created_at", "updated_at"]),
            &[
                "update_mask.paths[0]",
                "update_mask.paths[1]",
                "update_mask.paths[2]",
            ],
        ),
        (
            "missing processor_id",
            update(|p| p.processor_id.clear(), &["display_name"]),
            &["processor.processor_id"],
        ),
        (
            "malformed processor_id",
            update(|p| p.processor_id = "Vendor".into(), &["display_name"]),
            &["processor.processor_id"],
        ),
        (
            "masked display_name empty",
            update(|p| p.display_name.clear(), &["display_name"]),
            &["processor.display_name"],
        ),
        (
            "masked country lower-case",
            update(|p| p.country = "jp".into(), &["country"]),
            &["processor.country"],
        ),
        (
            "masked role unknown",
            update(|p| p.role = 99, &["role"]),
            &["processor.role"],
        ),
        (
            "masked adapter with malformed endpoint",
            update(
                |p| p.adapter = grpc_adapter("vendor.example", 2000),
                &["adapter"],
            ),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "masked adapter unset",
            update(|p| p.adapter = None, &["adapter"]),
            &["processor.adapter"],
        ),
        (
            "masked retry policy inconsistent",
            update(
                |p| {
                    p.retry_policy = Some(pb::RetryPolicy {
                        initial_backoff: ms(100),
                        max_backoff: ms(50),
                        multiplier: 2.0,
                        max_attempts: 3,
                    })
                },
                &["retry_policy"],
            ),
            &["processor.retry_policy.max_backoff"],
        ),
        (
            "masked ack_timeout over 7d",
            update(|p| p.ack_timeout = days(8), &["ack_timeout"]),
            &["processor.ack_timeout"],
        ),
        (
            "masked max_in_flight over 1000",
            update(|p| p.max_in_flight = 1001, &["max_in_flight"]),
            &["processor.max_in_flight"],
        ),
        (
            "bad mask and bad values",
            update(|p| p.country = "jp".into(), &["country", "nope"]),
            &["update_mask.paths[1]"],
        ),
    ];
    let mut client = app.processors.clone();
    expect_rejections(
        "UpdateProcessor",
        cases,
        async |msg| client.update_processor(msg).await,
        async || all_processors(&app).await,
    )
    .await;
    app.stop().await;
}
