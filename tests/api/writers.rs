//! Several write transactions in flight at once (`--write-transactions`):
//! intake and the recorder each keep more than one batch open on
//! PostgreSQL (SQLite writes one at a time whatever the setting), and
//! every guarantee holds: each acknowledged request is stored once, each
//! instruction delivered once, each request closed by exactly one record
//! over a gap-free, intact audit trail.

use std::collections::HashSet;

use dsr_orchestrator::pb;
use dsr_orchestrator::startup::{Application, Options};
use dsr_orchestrator::store::Backend;

use crate::backends;
use crate::harness::app::test_config;
use crate::harness::*;

backends!(
    several_write_transactions_lose_nothing_and_record_once,
    write_transactions_need_connections_to_hold_them,
);

async fn several_write_transactions_lose_nothing_and_record_once(db: TestDb) {
    const CLIENTS: usize = 16;
    const EACH: usize = 8;
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.write_transactions = 3;
        c.rate_limit = 1_000_000.0;
    })
    .await;
    let writers = match app.store.backend() {
        Backend::Postgres => 3,
        Backend::Sqlite => 1,
    };
    assert_eq!(app.store.batch_writers(), writers);
    let mut fakes = Vec::new();
    for id in ["group-co", "platform-vendor", "distributor"] {
        let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
        register(&app, push_processor(id, &fake.endpoint())).await;
        fakes.push(fake);
    }
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let client = app.requests.clone();
        clients.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..EACH {
                let req = deletion(&format!("writer-{c}-{n}@example.com"));
                let answer = client.clone().submit_request(req).await.unwrap();
                ids.push(answer.into_inner().request_id);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(mine) = clients.join_next().await {
        ids.extend(mine.unwrap());
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), CLIENTS * EACH);

    for id in &ids {
        let events = watch_to_end(&app.requests, id).await;
        assert_eq!(
            events.last().unwrap().r#type(),
            pb::RequestEventType::Completed
        );
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        assert_eq!(record(&app, id).await.lines.len(), 3);
        let check = app
            .requests
            .clone()
            .verify_audit_trail(pb::VerifyAuditTrailRequest {
                request_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(check.intact && check.record_checked, "{check:?}");
    }
    for fake in &fakes {
        let delivered: HashSet<String> = fake
            .deliveries()
            .into_iter()
            .map(|d| d.instruction_id)
            .collect();
        assert_eq!(delivered.len(), CLIENTS * EACH);
        assert_eq!(fake.deliveries().len(), CLIENTS * EACH, "each once");
    }
    let records = db
        .texts("select cast(count(*) as text) from completion_records")
        .await;
    assert_eq!(records[0][0].as_deref(), Some("128"));
    app.stop().await;
}

/// On PostgreSQL, writers that would take every pooled connection are
/// refused at startup; SQLite writes one at a time whatever the setting.
async fn write_transactions_need_connections_to_hold_them(db: TestDb) {
    let tweak = |c: &mut dsr_orchestrator::config::Config| {
        c.write_transactions = 4;
        c.db_max_connections = 8;
    };
    if db.postgres_name().is_some() {
        let mut config = test_config(&db);
        tweak(&mut config);
        let refused = Application::build(&config, Options::default())
            .await
            .err()
            .expect("refused");
        // As the server prints it: the error and its causes.
        let refused = format!("{refused:#}");
        assert!(
            refused.contains("--db-max-connections of at least 10"),
            "{refused}"
        );
    } else {
        let app = TestApp::spawn_with(&db, Options::default(), tweak).await;
        assert_eq!(app.store.batch_writers(), 1);
        app.stop().await;
    }
}
