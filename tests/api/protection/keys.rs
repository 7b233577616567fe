//! Keys: rotation under load reseals every row and keeps every request
//! readable; a removed key's rows are reported, not mangled, and never
//! stop the dispatcher, and an instruction whose payload does not open
//! shows no delivery it did not have; without keys the server refuses to start, but
//! where it is only being tried out (loopback, SQLite) it makes its own.

use tonic::Code;

use dsr_orchestrator::clock::{Clock, ManualClock};
use dsr_orchestrator::pb;
use dsr_orchestrator::seal::Keyring;
use dsr_orchestrator::startup::{Application, Options};

use super::*;
use crate::backends;

backends!(
    rotation_under_load_reseals_every_row,
    an_instruction_that_cannot_be_sent_shows_no_delivery,
    without_keys_only_a_trial_server_starts,
);

/// The sealed values in the database, with their columns, sorted.
async fn sealed_values(db: &TestDb) -> Vec<(String, String)> {
    let mut values: Vec<_> = stored_texts(db)
        .await
        .into_iter()
        .filter(|(c, _)| {
            matches!(
                c.as_str(),
                "requests.subject"
                    | "instructions.payload"
                    | "instructions.sealed_records"
                    | "data_record_chunks.sealed"
            )
        })
        .collect();
    values.sort();
    values
}

/// The key ids the database's sealed values name.
async fn key_ids(db: &TestDb) -> Vec<String> {
    let mut ids: Vec<String> = sealed_values(db)
        .await
        .into_iter()
        .filter_map(|(_, v)| Keyring::key_of(&v).map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Requests sealed under k1; the server restarted with k2 active (k1 kept
/// to open the old ones); a resealing call while submissions keep coming;
/// then k1 removed: every request still reads, every row is under k2.
/// Then k2 removed as well: its rows are reported by the resealing, left
/// as they are, and an instruction that can no longer be sent escalates
/// with the key named, while others are delivered.
async fn rotation_under_load_reseals_every_row(db: TestDb) {
    let (k1, k2, k3) = (new_key(), new_key(), new_key());
    let spawn_with = |keys: String, options: Options| {
        let db = &db;
        async move { TestApp::spawn_with(db, options, move |c| c.keys = Some(keys)).await }
    };
    let spawn = |keys: String| spawn_with(keys, Options::default());
    let app = spawn(keys_file(("k1", &k1), &[])).await;
    let token = register(&app, pull_processor("archive", 60_000)).await;
    let mut before = Vec::new();
    for n in 0..20 {
        before.push(
            submit(&app, deletion(&format!("before-{n}@example.org")))
                .await
                .request_id,
        );
    }
    // An access request whose processor uploaded a chunk of records.
    let mut access = deletion("chunked@example.org");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::SpecificPieces as i32;
    let access = submit(&app, access).await;
    let access_instruction = access.instructions[0].instruction_id.clone();
    upload_one_record(&app, &token, &access_instruction).await;
    assert_eq!(key_ids(&db).await, ["k1"]);
    app.stop().await;

    let app = spawn(keys_file(("k2", &k2), &[("k1", &k1)])).await;
    let submitting = {
        let app_requests = app.requests.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..40 {
                let req = deletion(&format!("during-{n}@example.org"));
                let id = req.request_id.clone();
                app_requests.clone().submit_request(req).await.unwrap();
                ids.push(id);
            }
            ids
        })
    };
    let mut protection =
        pb::data_protection_service_client::DataProtectionServiceClient::new(app.channel());
    let resealed = protection
        .reseal_data(pb::ResealDataRequest { batch_size: 7 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resealed.active_key, "k2");
    assert!(resealed.unreadable.is_empty(), "{resealed:?}");
    let during = submitting.await.unwrap();
    // Whatever the pass did not reach was sealed under k2 to begin with.
    assert_eq!(key_ids(&db).await, ["k2"]);
    app.stop().await;

    // k1 gone: nothing needs it. (No dispatcher: a push instruction
    // stays pending under k2 for what follows.)
    let quiet = Options {
        run_dispatcher: false,
        ..Options::default()
    };
    let app = spawn_with(keys_file(("k2", &k2), &[]), quiet).await;
    let pulled = pull(&app, &token, 100).await;
    assert_eq!(pulled.len(), 61);
    assert!(pulled.iter().all(|i| i.subject_identities.len() == 1));
    // The resealed chunk opens: the request closes with its export digest,
    // hashed from the chunk's record (a chunk that did not open leaves it
    // empty).
    app.instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: access_instruction,
                result: result(pb::Outcome::Completed),
            },
        ))
        .await
        .unwrap();
    watch_to_end(&app.requests, &access.request_id).await;
    assert_eq!(
        record(&app, &access.request_id).await.export_sha256.len(),
        64
    );
    for id in before.iter().chain(&during) {
        get_request(&app, id).await;
    }
    // An idempotent retry still matches its keyed fingerprint.
    let again = submit(&app, deletion("later@example.org")).await;
    assert_eq!(
        submit(
            &app,
            pb::SubmitRequestRequest {
                request_id: again.request_id.clone(),
                ..deletion("later@example.org")
            }
        )
        .await
        .request_id,
        again.request_id
    );
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let mut stranded = deletion("stranded@example.org");
    stranded.processor_ids = vec!["vendor".into()];
    let stranded = submit(&app, stranded).await;
    app.stop().await;

    // k2 removed too, by mistake: its rows are reported, not rewritten.
    let stored = sealed_values(&db).await;
    let app = spawn(keys_file(("k3", &k3), &[])).await;
    let mut protection =
        pb::data_protection_service_client::DataProtectionServiceClient::new(app.channel());
    let report = protection
        .reseal_data(pb::ResealDataRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert_eq!(report.unreadable[0].key_id, "k2");
    assert!(report.unreadable[0].values >= 61, "{report:?}");
    assert_eq!(sealed_values(&db).await, stored, "nothing rewritten");
    // The push instruction sealed under k2 cannot be sent: it escalates,
    // naming the key, and the dispatcher goes on with new work.
    let escalated = wait_for_state(
        &app,
        &stranded.instructions[0].instruction_id,
        pb::InstructionState::Escalated,
    )
    .await;
    let error = &escalated.summary.as_ref().unwrap().last_error;
    assert!(error.contains("\"k2\""), "{error}");
    let mut fresh = deletion("fresh@example.org");
    fresh.processor_ids = vec!["vendor".into()];
    let fresh = submit(&app, fresh).await;
    watch_to_end(&app.requests, &fresh.request_id).await;
    assert_eq!(fake.deliveries().len(), 1, "only the new work went out");
    app.stop().await;
}

/// Claimed instructions whose payloads do not open (here: sealed under a
/// key that is not configured) escalate instead of being sent, and their
/// history shows no delivery for that lease: one never delivered before
/// keeps no first delivery time (a first lease, even when its request's
/// history does not read), and cancelling its request owes its processor
/// no notice; one whose first delivery went out (and failed)
/// keeps that delivery's time, and its processor is told of the cancel.
async fn an_instruction_that_cannot_be_sent_shows_no_delivery(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    fake.script([Reply::Error(Code::Unavailable)]);
    let sent = submit(&app, deletion("sent@example.org")).await;
    let sent_instruction = sent.instructions[0].instruction_id.clone();
    let sent_at = clock.now();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    wait_for_state(&app, &sent_instruction, pb::InstructionState::Pending).await;
    let unsent = submit(&app, deletion("unsent@example.org")).await;
    // A first lease was never sent, even where the history cannot say.
    let garbled = submit(&app, deletion("garbled@example.org")).await;
    db.execute(&format!(
        "update request_events set body = '{{\"DELIVERING\"' where request_id = '{}'",
        garbled.request_id
    ))
    .await;

    db.execute("update instructions set payload = 'v1:gone:AAAA'")
        .await;
    clock.advance(Duration::from_secs(3600));
    app.dispatcher.run_once().await.unwrap();
    let id = &garbled.instructions[0].instruction_id;
    let escalated = wait_for_state(&app, id, pb::InstructionState::Escalated).await;
    assert_eq!(escalated.summary.unwrap().first_instructed_at, None);
    for request in [&sent, &unsent] {
        let id = &request.instructions[0].instruction_id;
        let escalated = wait_for_state(&app, id, pb::InstructionState::Escalated).await;
        let error = &escalated.summary.as_ref().unwrap().last_error;
        assert!(error.starts_with("cannot be sent: "), "{error}");
        cancel(&app, &request.request_id, "withdrawn").await;
    }
    assert_eq!(fake.deliveries().len(), 1, "the first delivery only");

    let states = |events: &[pb::RequestEvent]| -> Vec<pb::InstructionState> {
        events
            .iter()
            .filter_map(|e| e.instruction.as_ref().map(|i| i.state()))
            .collect()
    };
    let events = watch_to_end(&app.requests, &unsent.request_id).await;
    assert_eq!(
        states(&events),
        [
            pb::InstructionState::Escalated,
            pb::InstructionState::Cancelled
        ]
    );
    let escalated = events.iter().find_map(|e| e.instruction.as_ref()).unwrap();
    assert_eq!(escalated.first_instructed_at, None);
    let line = &record(&app, &unsent.request_id).await.lines[0];
    assert_eq!(line.first_instructed_at, None);
    let events = watch_to_end(&app.requests, &sent.request_id).await;
    assert_eq!(
        states(&events),
        [
            pb::InstructionState::Delivering,
            pb::InstructionState::Pending,
            pb::InstructionState::Escalated,
            pb::InstructionState::Cancelled
        ]
    );
    let escalated = events
        .iter()
        .filter_map(|e| e.instruction.as_ref())
        .nth(2)
        .unwrap();
    let line = &record(&app, &sent.request_id).await.lines[0];
    for first in [&escalated.first_instructed_at, &line.first_instructed_at] {
        let first = first.as_ref().expect("the first delivery's");
        assert_eq!(first.seconds, sent_at.timestamp());
    }
    let notices = db.texts("select instruction_id from cancel_notices").await;
    assert_eq!(notices, [[Some(sent_instruction)]]);
    app.stop().await;
}

/// No keys: refused anywhere but on loopback with a SQLite file, where a
/// development key file is made beside the database, readable by its
/// owner only, and used again at the next start.
async fn without_keys_only_a_trial_server_starts(db: TestDb) {
    let mut config = crate::harness::app::test_config(&db);
    config.keys = None;
    let built = Application::build(&config, Options::default()).await;
    match db.postgres_name() {
        Some(_) => {
            let err = built.err().expect("refused without keys").to_string();
            assert!(err.contains("--keys-file"), "{err}");
        }
        None => {
            let app = built.expect("a trial server starts");
            drop(app);
            let file = format!("{}.keys", db.url.trim_start_matches("sqlite://"));
            let meta = std::fs::metadata(&file).expect("a development key file");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            }
            let first = std::fs::read_to_string(&file).unwrap();
            Application::build(&config, Options::default())
                .await
                .expect("starts again");
            assert_eq!(std::fs::read_to_string(&file).unwrap(), first, "kept");
            // Beyond loopback, even SQLite needs keys.
            config.listen = "0.0.0.0:0".parse().unwrap();
            config.insecure_no_auth = true;
            let err = Application::build(&config, Options::default())
                .await
                .err()
                .expect("refused beyond loopback")
                .to_string();
            assert!(err.contains("--keys-file"), "{err}");
        }
    }
}
