//! The processor registry through the real server: registration and its
//! one-time token, reads and pagination, field-masked updates, disabling,
//! token rotation, and the YAML processors file upserted at startup.

use std::path::PathBuf;

use dsr_orchestrator::pb;
use dsr_orchestrator::startup::{Application, Options};
use prost_types::FieldMask;
use tonic::Code;

use crate::backends;
use crate::harness::app::test_config;
use crate::harness::*;

backends!(
    register_returns_a_token_once_and_ids_are_unique,
    get_and_list_with_pagination,
    update_changes_only_masked_fields,
    concurrent_updates_of_different_fields_keep_each_other,
    disabled_processor_gets_no_new_instructions_but_finishes_old_ones,
    rotated_token_replaces_the_old_one,
    processors_file_is_upserted_at_startup,
    invalid_processors_file_fails_startup_and_stores_nothing,
    a_processors_file_the_database_refuses_stores_none_of_it,
);

async fn get(app: &TestApp, id: &str) -> Result<pb::Processor, tonic::Status> {
    app.processors
        .clone()
        .get_processor(pb::GetProcessorRequest {
            processor_id: id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn list(app: &TestApp, page_size: i32, page_token: &str) -> pb::ListProcessorsResponse {
    app.processors
        .clone()
        .list_processors(pb::ListProcessorsRequest {
            page_size,
            page_token: page_token.into(),
        })
        .await
        .expect("list processors")
        .into_inner()
}

/// Whether timestamp `a` is after `b` (both set).
fn later(a: &Option<prost_types::Timestamp>, b: &Option<prost_types::Timestamp>) -> bool {
    let key = |t: &Option<prost_types::Timestamp>| {
        let t = t.expect("timestamp set");
        (t.seconds, t.nanos)
    };
    key(a) > key(b)
}

fn ids(processors: &[pb::Processor]) -> Vec<&str> {
    processors.iter().map(|p| p.processor_id.as_str()).collect()
}

/// Pulls with `token`; `Err` carries the status code.
async fn pull(app: &TestApp, token: &str) -> Result<Vec<pb::Instruction>, Code> {
    app.instructions
        .clone()
        .pull_instructions(authed(token, pb::PullInstructionsRequest::default()))
        .await
        .map(|r| r.into_inner().instructions)
        .map_err(|s| s.code())
}

/// Registration answers with the stored processor and a `dsrcb_` token,
/// which no read returns again; a second registration of the id is
/// ALREADY_EXISTS and changes neither the processor nor its token.
async fn register_returns_a_token_once_and_ids_are_unique(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let mut client = app.processors.clone();
    let first = client
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(pull_processor("archive", 60_000)),
        })
        .await
        .unwrap()
        .into_inner();
    let token = first.callback_token.clone();
    assert!(token.starts_with("dsrcb_"), "{token}");
    assert!(token.len() > "dsrcb_".len() + 32, "{token}");
    let stored = first.processor.unwrap();
    assert_eq!(stored.processor_id, "archive");
    assert_eq!(stored.status(), pb::ProcessorStatus::Active);
    assert!(stored.created_at.is_some());
    assert_eq!(stored.created_at, stored.updated_at);
    // Defaults filled in for what the registration left unset.
    assert_eq!(stored.completion_timeout.unwrap().seconds, 7 * 86_400);
    // No max_in_flight (0): the limit adapts to the processor's answers.
    assert_eq!((stored.max_reminders, stored.max_in_flight), (Some(3), 0));
    assert_eq!(get(&app, "archive").await.unwrap(), stored);

    let again = client
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(pb::Processor {
                display_name: "Impostor".into(),
                ..pull_processor("archive", 60_000)
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert!(!again.message().contains("dsrcb_"));
    assert_eq!(get(&app, "archive").await.unwrap(), stored);
    assert_eq!(list(&app, 0, "").await.processors.len(), 1);
    // The original token still authenticates; no new one was issued.
    assert_eq!(pull(&app, &token).await, Ok(vec![]));

    // Another processor gets a token of its own.
    let other = register(&app, pull_processor("backup", 60_000)).await;
    assert!(other.starts_with("dsrcb_"));
    assert_ne!(other, token);

    let err = get(&app, "nobody").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

/// Five processors, listed by id two at a time: the tokens chain and the
/// last page has none.
async fn get_and_list_with_pagination(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    for id in ["epsilon", "alpha", "delta", "beta", "gamma"] {
        register(&app, push_processor(id, "http://127.0.0.1:9")).await;
    }
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&app, 2, &token).await;
        pages.push(ids(&page.processors).join(","));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages.len() < 5, "the tokens do not end: {pages:?}");
    }
    assert_eq!(pages, ["alpha,beta", "delta,epsilon", "gamma"]);

    // Unset page size: the default (50) covers everything, no token.
    let all = list(&app, 0, "").await;
    assert_eq!(
        ids(&all.processors),
        ["alpha", "beta", "delta", "epsilon", "gamma"]
    );
    assert!(all.next_page_token.is_empty());
    // A page that ends exactly at the end has no token either.
    assert!(list(&app, 5, "").await.next_page_token.is_empty());
    // Each listed processor is what Get returns.
    for p in &all.processors {
        assert_eq!(&get(&app, &p.processor_id).await.unwrap(), p);
    }
    app.stop().await;
}

/// Only the fields named in the mask change; the others, the status and
/// `created_at` stay, and `updated_at` moves.
async fn update_changes_only_masked_fields(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    register(&app, push_processor("vendor", "http://127.0.0.1:9")).await;
    let before = get(&app, "vendor").await.unwrap();

    let new_policy = pb::RetryPolicy {
        initial_backoff: ms(500),
        max_backoff: ms(60_000),
        multiplier: 3.0,
        max_attempts: 12,
    };
    // The patch changes many fields; the mask names two.
    let patch = pb::Processor {
        display_name: "Vendor (renamed)".into(),
        retry_policy: Some(new_policy),
        country: "DE".into(),
        role: pb::ProcessorRole::Contractor as i32,
        supported_kinds: vec![pb::RequestKind::Object as i32],
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
        }),
        max_in_flight: 1,
        ..pull_processor("vendor", 1000)
    };
    let updated = app
        .processors
        .clone()
        .update_processor(pb::UpdateProcessorRequest {
            processor: Some(patch),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into(), "retry_policy".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Vendor (renamed)");
    assert_eq!(updated.retry_policy, Some(new_policy));
    assert!(later(&updated.updated_at, &before.updated_at));
    assert_eq!(
        pb::Processor {
            display_name: before.display_name.clone(),
            retry_policy: before.retry_policy,
            updated_at: before.updated_at,
            ..updated.clone()
        },
        before,
        "nothing else changed"
    );
    assert_eq!(get(&app, "vendor").await.unwrap(), updated);

    // A masked field left unset in the patch goes back to its default.
    let reset = app
        .processors
        .clone()
        .update_processor(pb::UpdateProcessorRequest {
            processor: Some(pb::Processor {
                processor_id: "vendor".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["retry_policy".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let policy = reset.retry_policy.unwrap();
    assert_eq!(
        (
            policy.initial_backoff.unwrap().seconds,
            policy.max_backoff.unwrap().seconds,
            policy.multiplier,
            policy.max_attempts
        ),
        (1, 300, 2.0, 8)
    );
    assert_eq!(reset.display_name, "Vendor (renamed)");

    let err = app
        .processors
        .clone()
        .update_processor(pb::UpdateProcessorRequest {
            processor: Some(pb::Processor {
                processor_id: "nobody".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

/// After DisableProcessor a new request does not fan out to the processor
/// and naming it is INVALID_ARGUMENT, while its instructions created before
/// (one acknowledged, one not yet delivered) still run to completion. The
/// dispatcher is driven by hand, so "before" and "after" are exact.
async fn disabled_processor_gets_no_new_instructions_but_finishes_old_ones(db: TestDb) {
    let app = TestApp::spawn_without_dispatcher(&db).await;
    let keeper = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    keeper.script([Reply::Accepted]);
    let other = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let token = register(&app, push_processor("keeper", &keeper.endpoint())).await;
    register(&app, push_processor("other", &other.endpoint())).await;

    // First request: keeper accepts and will answer by callback.
    let first = submit(&app, deletion("frank@example.com")).await;
    assert_eq!(first.instructions.len(), 2);
    app.dispatcher.run_once().await.unwrap();
    let kept = first
        .instructions
        .iter()
        .find(|i| i.processor_id == "keeper")
        .unwrap()
        .instruction_id
        .clone();
    wait_for_state(&app, &kept, pb::InstructionState::Acknowledged).await;

    // Second request: instructions created, not yet delivered.
    let second = submit(&app, deletion("grace@example.com")).await;
    assert_eq!(second.instructions.len(), 2);

    let disabled = disable(&app, "keeper").await;
    assert_eq!(disabled.status(), pb::ProcessorStatus::Disabled);
    assert_eq!(
        get(&app, "keeper").await.unwrap().status(),
        pb::ProcessorStatus::Disabled
    );

    // New requests pass it by, and cannot name it.
    let third = submit(&app, deletion("heidi@example.com")).await;
    assert_eq!(processors_of(&third), ["other"]);
    let mut named = deletion("ivan@example.com");
    named.processor_ids = vec!["keeper".into()];
    let err = submit_rejected(&app, named).await;
    assert_eq!(violations(&err), ["processor_ids[0]"]);
    let listed = all_requests(&app).await;
    assert_eq!(listed.len(), 3, "the rejected request was not stored");

    // In-flight work continues: the pending instruction is delivered ...
    app.dispatcher.run_once().await.unwrap();
    // ... and the acknowledged one is completed by callback.
    let done = app
        .instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: kept.clone(),
                result: result(pb::Outcome::Completed),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state(), pb::InstructionState::Completed);

    for (req, lines) in [(&first, 2), (&second, 2), (&third, 1)] {
        let events = watch_to_end(&app.requests, &req.request_id).await;
        assert_eq!(
            events.last().unwrap().r#type(),
            pb::RequestEventType::Completed
        );
        let record = record(&app, &req.request_id).await;
        assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
        assert_eq!(record.lines.len(), lines);
        assert!(
            record
                .lines
                .iter()
                .all(|l| l.state() == pb::InstructionState::Completed)
        );
    }
    let delivered: Vec<_> = keeper
        .deliveries()
        .iter()
        .map(|d| d.request_id.clone())
        .collect();
    assert_eq!(delivered, [first.request_id, second.request_id]);
    assert_eq!(other.deliveries().len(), 3);
    app.stop().await;
}

/// RotateCallbackToken issues a new token and the old one stops working at
/// once, on every callback.
async fn rotated_token_replaces_the_old_one(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let old = register(&app, pull_processor("puller", 60_000)).await;
    let req = submit(&app, deletion("judy@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    let pulled = pull(&app, &old).await.unwrap();
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].instruction_id, id);

    let new = app
        .processors
        .clone()
        .rotate_callback_token(pb::RotateCallbackTokenRequest {
            processor_id: "puller".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .callback_token;
    assert!(new.starts_with("dsrcb_"), "{new}");
    assert_ne!(new, old);

    let ack = |token: &str| {
        authed(
            token,
            pb::AcknowledgeInstructionRequest {
                instruction_id: id.clone(),
            },
        )
    };
    let mut client = app.instructions.clone();
    let err = client.acknowledge_instruction(ack(&old)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(pull(&app, &old).await, Err(Code::Unauthenticated));

    let acked = client
        .acknowledge_instruction(ack(&new))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state(), pb::InstructionState::Acknowledged);
    assert_eq!(pull(&app, &new).await, Ok(vec![]));

    let err = app
        .processors
        .clone()
        .rotate_callback_token(pb::RotateCallbackTokenRequest {
            processor_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

/// A processors file in the documented format (see `src/processors_file.rs`).
fn processors_yaml(vendor_name: &str, archive_name: &str) -> String {
    format!(
        r#"
processors:
  - processor_id: platform-vendor
    display_name: {vendor_name}
    role: VENDOR
    country: US
    supported_kinds: [DELETE, ACCESS]
    accepted_identity_types: [EMAIL, ACCOUNT_ID]
    adapter: {{ grpc: {{ endpoint: "https://dsr.vendor.example:443", timeout: 10s }} }}
    retry_policy: {{ initial_backoff: 1s, max_backoff: 5m, multiplier: 2.0, max_attempts: 8 }}
    ack_timeout: 5m
    completion_timeout: 7d
    max_reminders: 0
    max_in_flight: 16
  - processor_id: paper-archive
    display_name: {archive_name}
    role: CONTRACTOR
    country: DE
    supported_kinds: [DELETE]
    accepted_identity_types: [EMAIL]
    adapter: {{ pull: {{}} }}
"#
    )
}

/// [`processors_yaml`] in a file of its own, and the directory that holds
/// it (keep it as long as the file is used).
fn processors_file(vendor_name: &str, archive_name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("processors.yaml");
    std::fs::write(&path, processors_yaml(vendor_name, archive_name)).unwrap();
    (dir, path)
}

/// Startup upserts the file: new processors are created, known ones
/// updated in place, keeping their status and token.
async fn processors_file_is_upserted_at_startup(db: TestDb) {
    let (_dir, path) = processors_file("Platform Vendor Inc.", "Paper Archive");

    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.processors_file = Some(path.clone())
    })
    .await;
    let listed = list(&app, 0, "").await.processors;
    assert_eq!(ids(&listed), ["paper-archive", "platform-vendor"]);
    let vendor = &listed[1];
    assert_eq!(vendor.display_name, "Platform Vendor Inc.");
    assert_eq!(vendor.role(), pb::ProcessorRole::Vendor);
    assert_eq!(vendor.country, "US");
    assert_eq!(
        vendor.supported_kinds,
        [
            pb::RequestKind::Access as i32,
            pb::RequestKind::Delete as i32
        ]
    );
    assert_eq!(vendor.max_reminders, Some(0), "the file can say 0");
    assert_eq!(vendor.completion_timeout.unwrap().seconds, 7 * 86_400);
    match vendor.adapter.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::adapter::Kind::Grpc(g)) => {
            assert_eq!(g.endpoint, "https://dsr.vendor.example:443");
            assert_eq!(g.timeout.unwrap().seconds, 10);
        }
        other => panic!("expected a gRPC adapter, got {other:?}"),
    }
    let archive = &listed[0];
    assert!(matches!(
        archive.adapter.as_ref().and_then(|a| a.kind.as_ref()),
        Some(pb::adapter::Kind::Pull(_))
    ));
    assert_eq!(archive.max_reminders, Some(3), "default");
    assert!(
        listed
            .iter()
            .all(|p| p.status() == pb::ProcessorStatus::Active)
    );

    // A processor from the file has no usable token until one is rotated.
    let token = app
        .processors
        .clone()
        .rotate_callback_token(pb::RotateCallbackTokenRequest {
            processor_id: "paper-archive".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .callback_token;
    assert_eq!(pull(&app, &token).await, Ok(vec![]));
    // An operator disables the vendor; a reload must not re-enable it.
    disable(&app, "platform-vendor").await;
    app.stop().await;

    // Second start on the same database with renamed processors.
    std::fs::write(
        &path,
        processors_yaml("Platform Vendor GmbH", "Paper Archive II"),
    )
    .unwrap();
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.processors_file = Some(path.clone())
    })
    .await;
    let relisted = list(&app, 0, "").await.processors;
    assert_eq!(ids(&relisted), ["paper-archive", "platform-vendor"]);
    let (archive2, vendor2) = (&relisted[0], &relisted[1]);
    assert_eq!(vendor2.display_name, "Platform Vendor GmbH");
    assert_eq!(archive2.display_name, "Paper Archive II");
    assert_eq!(vendor2.created_at, vendor.created_at);
    assert!(later(&vendor2.updated_at, &vendor.updated_at));
    assert_eq!(vendor2.status(), pb::ProcessorStatus::Disabled);
    assert_eq!(archive2.status(), pb::ProcessorStatus::Active);
    assert_eq!(
        pb::Processor {
            display_name: vendor.display_name.clone(),
            status: vendor.status,
            updated_at: vendor.updated_at,
            ..vendor2.clone()
        },
        *vendor,
        "only the name changed"
    );
    assert_eq!(pull(&app, &token).await, Ok(vec![]), "token kept");
    app.stop().await;
}

/// A file with an invalid entry stops startup with a message naming the
/// entry, before anything of the file is stored.
async fn invalid_processors_file_fails_startup_and_stores_nothing(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("processors.yaml");
    let yaml = processors_yaml("Platform Vendor Inc.", "Paper Archive").replacen(
        "country: DE",
        "country: de",
        1,
    );
    std::fs::write(&path, yaml).unwrap();

    let mut config = test_config(&db);
    config.processors_file = Some(path.clone());
    let err = match Application::build(&config, Options::default()).await {
        Ok(_) => panic!("started with an invalid processors file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("paper-archive"), "{err}");
    assert!(err.contains("country"), "{err}");
    assert!(err.contains("processors.yaml"), "the file is named: {err}");

    // A destination refused once the file has parsed (plaintext beyond
    // loopback) stores none of the entries either.
    let refused = processors_yaml("Platform Vendor Inc.", "Paper Archive").replacen(
        "adapter: { pull: {} }",
        r#"adapter: { webhook: { url: "http://10.1.2.3/hook" } }"#,
        1,
    );
    std::fs::write(&path, refused).unwrap();
    let err = match Application::build(&config, Options::default()).await {
        Ok(_) => panic!("started with a refused destination"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("paper-archive"), "{err}");

    // The valid first entry was not stored either time.
    let app = TestApp::spawn(&db).await;
    assert!(list(&app, 0, "").await.processors.is_empty());
    app.stop().await;
}

/// A file whose second entry the database refuses (here a trigger of the
/// test's) stops startup, and its first entry is not stored either: the
/// file is stored whole or not at all.
async fn a_processors_file_the_database_refuses_stores_none_of_it(db: TestDb) {
    TestApp::spawn(&db).await.stop().await;
    if db.postgres_name().is_some() {
        db.execute(
            "create function refuse_archive() returns trigger language plpgsql as $$ \
             begin if new.id = 'paper-archive' then raise exception 'refused by the test'; \
             end if; return new; end $$; \
             create trigger refuse_archive before insert on processors \
             for each row execute function refuse_archive();",
        )
        .await;
    } else {
        db.execute(
            "create trigger refuse_archive before insert on processors \
             when new.id = 'paper-archive' begin select raise(abort, 'refused by the test'); end;",
        )
        .await;
    }
    let (_dir, path) = processors_file("Platform Vendor Inc.", "Paper Archive");
    let mut config = test_config(&db);
    config.processors_file = Some(path);
    let err = match Application::build(&config, Options::default()).await {
        Ok(_) => panic!("started though the database refused the file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("refused by the test"), "{err}");
    assert!(err.contains("processors.yaml"), "the file is named: {err}");
    let stored = db.texts("select id from processors").await;
    assert!(stored.is_empty(), "{stored:?}");
}

/// Three callers update one processor at once, each its own field, twenty
/// times: every call succeeds and the processor ends with each caller's
/// last value (a merge read before another's write must not undo it).
async fn concurrent_updates_of_different_fields_keep_each_other(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    register(&app, pull_processor("shared", 60_000)).await;
    let update = |edit: fn(&mut pb::Processor, u32), path: &'static str| {
        let mut client = app.processors.clone();
        async move {
            for n in 0..20 {
                let mut patch = pull_processor("shared", 60_000);
                edit(&mut patch, n);
                client
                    .update_processor(pb::UpdateProcessorRequest {
                        processor: Some(patch),
                        update_mask: Some(FieldMask {
                            paths: vec![path.into()],
                        }),
                    })
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(
        update(|p, n| p.display_name = format!("Name {n}"), "display_name"),
        update(|p, n| p.max_in_flight = n + 1, "max_in_flight"),
        update(
            |p, n| p.country = ["DE", "FR", "JP", "US"][n as usize % 4].into(),
            "country"
        ),
    );
    let last = get(&app, "shared").await.unwrap();
    assert_eq!(
        (
            last.display_name.as_str(),
            last.max_in_flight,
            last.country.as_str()
        ),
        ("Name 19", 20, "US")
    );
    app.stop().await;
}
