//! The store beneath the API, where only the database can show it: the
//! references every row keeps, the snapshot a read sees, the notices
//! replicas send each other, and the page layout its updates rely on.

use std::time::Duration;

use dsr_orchestrator::compliance_file::CompliancePolicy;
use dsr_orchestrator::store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use crate::{backends, postgres_only};

backends!(references_hold);
postgres_only!(
    a_reference_check_probes_the_key_however_the_parent_grew,
    a_request_is_read_in_one_snapshot,
    notices_reach_another_replica,
    a_database_migrated_with_an_earlier_comment_still_opens,
    tables_updated_after_their_inserts_keep_half_full_pages
);

/// A migrated, empty database.
async fn migrated(db: &TestDb) {
    Store::connect(&db.url, &StoreOptions::default())
        .await
        .expect("migrate")
        .close()
        .await;
}

/// An insert of a bare instruction row.
fn instruction(id: &str, request: &str, processor: &str) -> String {
    format!(
        "insert into instructions (id, request_id, processor_id, kind, jurisdiction, \
         submitted_at, state, created_at, due_at) \
         values ('{id}', '{request}', '{processor}', 'DELETE', 'CCPA', 0, 'PENDING', 0, 0)"
    )
}

/// An insert of a bare delivery attempt.
fn attempt(instruction: &str) -> String {
    format!(
        "insert into delivery_attempts (instruction_id, attempt, started_at, result) \
         values ('{instruction}', 1, 0, 'pending')"
    )
}

/// An insert of a bare event.
fn event(request: &str, seq: i64) -> String {
    format!(
        "insert into request_events (request_id, seq, occurred_at, body) \
         values ('{request}', {seq}, 0, '{{}}')"
    )
}

/// An insert of a bare completion record.
fn record(request: &str) -> String {
    format!(
        "insert into completion_records (request_id, canonical_json, digest, created_at) \
         values ('{request}', '{{}}', '{}', 0)",
        "0".repeat(64)
    )
}

/// Whether the database takes `statement` (in a transaction rolled back).
async fn takes(db: &TestDb, statement: &str) -> bool {
    db.try_execute(&format!("begin; {statement}; rollback"))
        .await
        .is_ok()
}

/// No row can refer to a missing request, processor or instruction, and no
/// row referred to can go or change its key: foreign keys on SQLite, batch
/// checks and refusals on PostgreSQL (migration 0006).
async fn references_hold(db: TestDb) {
    migrated(&db).await;
    db.execute(&format!(
        "insert into processors (id, display_name, role, country, spec, adapter_kind, \
         status, token_hash, created_at, updated_at) \
         values ('p1', 'P', 'VENDOR', 'JP', '{{}}', 'manual', 'ACTIVE', 'h1', 0, 0); \
         insert into requests (id, kind, jurisdiction, status, submitted_at, received_at, \
         channel, requester, verification_level, verification_method, labels, identity_types, \
         subject, fingerprint, open_instructions, event_seq, respond_by) values ('r1', 'DELETE', \
         'CCPA', 'RECEIVED', 0, 0, 'test', 'SELF', 'NONE', 'none', '{{}}', '[]', null, 'f', 1, 1, 0); \
         {}; {}; {}; {}",
        instruction("i1", "r1", "p1"),
        attempt("i1"),
        event("r1", 1),
        record("r1"),
    ))
    .await;
    assert!(
        takes(&db, &event("r1", 2)).await,
        "a row whose parent exists is taken"
    );
    for refused in [
        instruction("i2", "nope", "p1"),
        instruction("i2", "r1", "nope"),
        attempt("nope"),
        event("nope", 1),
        record("nope"),
        "delete from requests where id = 'r1'".into(),
        "delete from processors where id = 'p1'".into(),
        "delete from instructions where id = 'i1'".into(),
        "delete from request_events where request_id = 'r1'".into(),
        "delete from completion_records where request_id = 'r1'".into(),
        "update requests set id = 'r2' where id = 'r1'".into(),
        "update instructions set request_id = 'nope' where id = 'i1'".into(),
        "update instructions set processor_id = 'nope' where id = 'i1'".into(),
    ] {
        assert!(!takes(&db, &refused).await, "refused: {refused}");
    }
    // The retention purge's own way in, and only it, deletes.
    let gate = match db.postgres_name() {
        Some(_) => "set local dsr.purge = 'on'",
        None => "update purge_gate set open = 1 where id = 1",
    };
    assert!(
        takes(
            &db,
            &format!(
                "{gate}; delete from delivery_attempts where instruction_id = 'i1'; \
                 delete from instructions where id = 'i1'; \
                 delete from request_events where request_id = 'r1'; \
                 delete from completion_records where request_id = 'r1'; \
                 delete from requests where id = 'r1'"
            )
        )
        .await,
        "the purge deletes"
    );
}

/// Requests `prefix1` to `prefix{n}`, bare.
fn requests(prefix: &str, n: u32) -> String {
    format!(
        "insert into requests (id, kind, jurisdiction, status, submitted_at, received_at, \
         channel, requester, verification_level, verification_method, labels, identity_types, \
         subject, fingerprint, open_instructions, event_seq, respond_by) select '{prefix}' || g, \
         'DELETE', 'CCPA', 'RECEIVED', 0, 0, 'test', 'SELF', 'NONE', 'none', '{{}}', '[]', null, \
         'f', 1, 1, 0 from generate_series(1, {n}) g"
    )
}

/// The first event of requests `prefix{from}` to `prefix{to}`, in one
/// statement (one reference check).
fn events(prefix: &str, from: u32, to: u32) -> String {
    format!(
        "insert into request_events (request_id, seq, occurred_at, body) \
         select '{prefix}' || g, 1, 0, '{{}}' from generate_series({from}, {to}) g"
    )
}

/// A reference check costs one probe of the parent's primary key per new
/// row, however small the parent was when the session first ran it
/// (PL/pgSQL keeps that plan for the session, and pooled connections live
/// long): first run over ten requests, then over 20,010, ten new events
/// read ten requests, where a plan that matches them against the whole
/// table read all of them.
async fn a_reference_check_probes_the_key_however_the_parent_grew(db: TestDb) {
    use sqlx::{Connection, Row};
    migrated(&db).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for statement in [requests("a", 10), events("a", 1, 10), requests("b", 20_000)] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let fetched = "select idx_tup_fetch + seq_tup_read as n from pg_stat_xact_user_tables \
                   where relname = 'requests'";
    let mut tx = conn.begin().await.unwrap();
    let before: i64 = sqlx::query(fetched)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get("n");
    sqlx::raw_sql(sqlx::AssertSqlSafe(events("b", 19_991, 20_000)))
        .execute(&mut *tx)
        .await
        .unwrap();
    let after: i64 = sqlx::query(fetched)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get("n");
    tx.rollback().await.unwrap();
    assert!(after - before <= 10, "{} requests read", after - before);
}

/// `GetRequest` reads a request and then its instructions, and both
/// statements see one moment (REPEATABLE READ on PostgreSQL): a change
/// committed between them is not seen half. The test holds the read
/// between its two statements with a lock on `instructions`, commits a
/// change to the instruction meanwhile, and then lets the read go on.
async fn a_request_is_read_in_one_snapshot(db: TestDb) {
    use sqlx::Connection;
    let app = TestApp::spawn_without_dispatcher(&db).await;
    register(&app, pull_processor("puller", 60_000)).await;
    let req = submit(&app, deletion("victor@example.com")).await;
    let id = dsr_orchestrator::domain::RequestId::parse(&req.request_id).unwrap();

    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("begin; lock table instructions in access exclusive mode")
        .execute(&mut blocker)
        .await
        .unwrap();
    let reader = {
        let store = app.store.clone();
        tokio::spawn(async move { store.request(id).await })
    };
    // Wait until the read has read the request and waits for the lock.
    let blocked = db
        .until_waiting("query like $1", "%from instructions%")
        .await;
    assert!(blocked, "the read waits for the lock on instructions");
    sqlx::raw_sql("update instructions set attempts = attempts + 7; commit")
        .execute(&mut blocker)
        .await
        .unwrap();
    let read = reader.await.unwrap().unwrap();
    assert_eq!(
        read.instructions[0].attempts, 0,
        "the instructions as they were when the request was read"
    );
    let now = get_request(&app, &req.request_id).await;
    assert_eq!(now.instructions[0].attempts, 7, "and the change is there");
    app.stop().await;
}

/// A commit on one replica reaches another replica's watchers and
/// dispatcher through PostgreSQL's notifications (not its polling).
async fn notices_reach_another_replica(db: TestDb) {
    let one = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let other = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(one.intake_writer(stop.clone()));
    tokio::spawn(one.notice_publisher(stop.clone()).unwrap());
    tokio::spawn(other.notice_listener(stop.clone()).unwrap());
    let mut events = other.subscribe_events();
    let work = other.work_notifier();
    // The other replica's listener starts on its own task: submit until it
    // has heard one (each round waits a bounded time for it). With no
    // processor registered each request closes at once, a change to
    // announce all the same.
    let mut heard = None;
    for _ in 0..50 {
        let woken = work.notified();
        let request = new_request();
        let id = request.id;
        let actor = dsr_orchestrator::domain::Actor::System;
        let now = chrono::Utc::now();
        let terms = CompliancePolicy::default().terms(&request, now);
        one.submit(&request, terms, &actor, now, None)
            .await
            .unwrap();
        if let Ok(Ok(got)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            heard = Some((id, got));
            let _ = tokio::time::timeout(Duration::from_millis(10), woken).await;
            break;
        }
    }
    stop.cancel();
    let (sent, got) = heard.expect("a notice reached the other replica");
    assert_eq!(got, sent);
    one.close().await;
    other.close().await;
}

/// A database that applied migration 0008 with the wording it was first
/// released with (the same SQL, other comments) still opens: the server
/// brings the recorded checksum up to date before the migrator checks it.
async fn a_database_migrated_with_an_earlier_comment_still_opens(db: TestDb) {
    migrated(&db).await;
    db.execute(
        "update _sqlx_migrations set checksum = decode('abfe4eb6f8c0d4079ede7ab3f3fd83ed8e28009c\
         2ec4b11f5ef5b45af98c0ab78afa6c299dfb1d0f0db98e7cfc25db3a', 'hex') where version = 8",
    )
    .await;
    migrated(&db).await;
}

/// Decision 0002: the rows updated within seconds of their insert get
/// half-full pages, so those updates stay on the row's page. A later
/// migration that rebuilt one of these tables without the setting would
/// lose it silently; this says which.
async fn tables_updated_after_their_inserts_keep_half_full_pages(db: TestDb) {
    migrated(&db).await;
    for table in ["requests", "instructions", "delivery_attempts"] {
        let options = db
            .texts(&format!(
                "select array_to_string(reloptions, ',') from pg_class \
                 where relname = '{table}' and relkind = 'r'"
            ))
            .await;
        let options = options[0][0].clone().unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "fillfactor=50"),
            "{table}: {options}"
        );
    }
}

/// A valid deletion request for the store, with a fresh id.
fn new_request() -> dsr_orchestrator::domain::NewRequest {
    use dsr_orchestrator::domain::*;
    NewRequest {
        id: RequestId::parse(&new_id()).unwrap(),
        kind: RequestKind::Delete,
        jurisdiction: Jurisdiction::Ccpa,
        subject: Subject::new(vec![
            SubjectIdentity::new(IdentityType::Email, "wendy@example.com").unwrap(),
        ])
        .unwrap(),
        submitted_at: None,
        channel: Channel::parse("web_form").unwrap(),
        requester: Requester::SelfRequest,
        verification: Verification::new(VerificationLevel::Reasonable, "").unwrap(),
        processor_ids: vec![],
        labels: Labels::default(),
        access_scope: None,
        requester_evidence: None,
        lookback_start: None,
    }
}
