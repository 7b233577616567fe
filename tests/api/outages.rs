//! The database going away under load: calls answer `UNAVAILABLE` within
//! the configured wait (`--db-acquire-timeout`), never `INTERNAL` and never
//! after the caller's own deadline; nothing is lost, nothing is written
//! behind a caller that gave up before the writer reached its request, and
//! a retry with the same `request_id` learns what became of a submission;
//! `/metrics` is served through it, and gRPC health says NOT_SERVING
//! until the database is back.
//!
//! The PostgreSQL outages run on a server of the test's own
//! ([`PgServer`]), stopped and restarted by the test; SQLite's run against
//! its one write lock held by another connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;
use tonic::Code;

use crate::harness::pg_server::PgServer;
use crate::harness::*;
use crate::{postgres_only, sqlite_only};

postgres_only!(
    submissions_during_an_outage_answer_unavailable_and_retries_take_them_in,
    connections_ended_by_a_restart_are_unavailable_never_internal,
    grpc_health_follows_the_database
);
sqlite_only!(a_submission_behind_a_held_write_lock_answers_unavailable);

/// What a call is given: far longer than the server's wait, so an answer
/// that comes after the wait is the server's, not the client's deadline.
const CALLER_DEADLINE: Duration = Duration::from_secs(15);

/// The server's wait for the database in these tests.
const WAIT: Duration = Duration::from_secs(1);

/// A server on `db` that waits at most [`WAIT`] for its database.
async fn app(db: &TestDb) -> TestApp {
    TestApp::spawn_with(db, Options::default(), |c| c.db_acquire_timeout = WAIT).await
}

/// Submits `req` with the caller's deadline `deadline`: the code of the
/// answer (`Ok` for a request taken in).
async fn submit_code(app: &TestApp, req: pb::SubmitRequestRequest, deadline: Duration) -> Code {
    let mut request = tonic::Request::new(req);
    request.set_timeout(deadline);
    match app.requests.clone().submit_request(request).await {
        Ok(_) => Code::Ok,
        Err(status) => {
            if status.code() == Code::Unavailable {
                assert!(
                    status.message().contains("retry"),
                    "an UNAVAILABLE answer says to retry: {status:?}"
                );
            }
            status.code()
        }
    }
}

/// A deletion with the given id.
fn deletion_with(id: &str) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        request_id: id.to_string(),
        ..deletion("outage@example.com")
    }
}

/// PostgreSQL stopped: every submission answers UNAVAILABLE within the
/// server's wait; one whose caller gives up first is not written later;
/// once the server is back, retries with the same ids take each request
/// in, once.
async fn submissions_during_an_outage_answer_unavailable_and_retries_take_them_in(_shared: TestDb) {
    let pg = PgServer::start();
    pg.create_database("dsr");
    let db = TestDb::existing(pg.url("dsr"));
    let app = app(&db).await;
    register(&app, pull_processor("puller", 60_000)).await;
    submit(&app, deletion("before@example.com")).await;
    let (_, before) = app.admin_get("/metrics").await;
    let open_requests = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with("dsr_requests_open{"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(open_requests(&before).len(), 1, "{before}");

    pg.stop();
    let ids: Vec<String> = (0..8).map(|_| new_id()).collect();
    let codes = futures::future::join_all(
        ids.iter()
            .map(|id| submit_code(&app, deletion_with(id), CALLER_DEADLINE)),
    )
    .await;
    assert_eq!(
        codes,
        [Code::Unavailable; 8],
        "answered by the server's wait"
    );
    let read = app
        .requests
        .clone()
        .get_request(pb::GetRequestRequest {
            request_id: ids[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::Unavailable);
    // The metrics are still served: the process's own counters, and the
    // open-work gauges' last values beside `dsr_database_up 0`.
    let (status, metrics) = app.admin_get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("\ndsr_database_up 0\n"), "{metrics}");
    assert_eq!(open_requests(&metrics), open_requests(&before));
    let submitted = metrics
        .lines()
        .find(|l| l.starts_with("dsr_requests_submitted_total{"))
        .expect("the submission before the outage is counted");
    assert!(submitted.ends_with(" 1"), "{submitted}");

    // A caller that gives up before the database answers...
    let gone = new_id();
    let code = submit_code(&app, deletion_with(&gone), Duration::from_millis(200)).await;
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}"
    );
    // ... and one more behind it, answered after the writer is done with
    // the first (it takes submissions in order), so the server can come
    // back without the first one's write still in flight.
    assert_eq!(
        submit_code(&app, deletion_with(&new_id()), CALLER_DEADLINE).await,
        Code::Unavailable
    );
    pg.start_again();

    for id in &ids {
        assert_eq!(
            submit_code(&app, deletion_with(id), CALLER_DEADLINE).await,
            Code::Ok,
            "the retry of {id} is taken in"
        );
    }
    let missing = app
        .requests
        .clone()
        .get_request(pb::GetRequestRequest {
            request_id: gone.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        missing.code(),
        Code::NotFound,
        "nothing was written for the caller that gave up"
    );
    let stored: Vec<String> = all_requests(&app)
        .await
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    for id in &ids {
        assert_eq!(stored.iter().filter(|s| *s == id).count(), 1, "{id}");
    }
    assert_eq!(stored.len(), 1 + ids.len());
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(metrics.contains("\ndsr_database_up 1\n"), "{metrics}");
    app.stop().await;
}

/// PostgreSQL restarted (`terminating connection due to administrator
/// command`) in the middle of a stream of submissions: each answer is OK
/// or UNAVAILABLE, never INTERNAL, and the UNAVAILABLE ones retried with
/// their ids are taken in; every request exists exactly once.
async fn connections_ended_by_a_restart_are_unavailable_never_internal(_shared: TestDb) {
    const CLIENTS: usize = 4;
    const EACH: usize = 40;
    let pg = PgServer::start();
    pg.create_database("dsr");
    let db = TestDb::existing(pg.url("dsr"));
    let app = Arc::new(app(&db).await);
    register(&app, pull_processor("puller", 60_000)).await;

    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (app, answered) = (app.clone(), answered.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..EACH {
                    let id = new_id();
                    let code = submit_code(&app, deletion_with(&id), CALLER_DEADLINE).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                    outcomes.push((id, code));
                }
                outcomes
            })
        })
        .collect();
    // Restart once a quarter of the submissions have been answered.
    while answered.load(Ordering::Relaxed) < CLIENTS * EACH / 4 {
        tokio::task::yield_now().await;
    }
    pg.restart();
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|(_, c)| !matches!(c, Code::Ok | Code::Unavailable))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    for (id, code) in &outcomes {
        if *code == Code::Unavailable {
            assert_eq!(
                submit_code(&app, deletion_with(id), CALLER_DEADLINE).await,
                Code::Ok
            );
        }
    }
    let stored = all_requests(&app).await;
    assert_eq!(stored.len(), CLIENTS * EACH);
    for (id, _) in &outcomes {
        assert_eq!(
            stored.iter().filter(|r| &r.request_id == id).count(),
            1,
            "{id}"
        );
    }
    Arc::into_inner(app)
        .expect("the clients are done")
        .stop()
        .await;
}

/// SQLite's one write lock held by another connection longer than the
/// server's wait: the submission answers UNAVAILABLE instead of waiting;
/// once the lock is free, a retry with the same id tells what became of
/// it (taken in, by this retry or by the write that was under way).
async fn a_submission_behind_a_held_write_lock_answers_unavailable(db: TestDb) {
    use sqlx::Connection;
    let app = app(&db).await;
    register(&app, pull_processor("puller", 60_000)).await;
    let mut holder = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let id = new_id();
    assert_eq!(
        submit_code(&app, deletion_with(&id), CALLER_DEADLINE).await,
        Code::Unavailable
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    holder.close().await.unwrap();
    assert_eq!(
        submit_code(&app, deletion_with(&id), CALLER_DEADLINE).await,
        Code::Ok
    );
    let stored = all_requests(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].request_id, id);
    app.stop().await;
}

/// `grpc.health.v1.Health` says NOT_SERVING, for the server and each
/// service, while the database is away, and SERVING once it is back: a
/// client watching it sees both changes, and its watch ends with a last
/// NOT_SERVING when the server stops rather than holding the shutdown.
async fn grpc_health_follows_the_database(_shared: TestDb) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    let pg = PgServer::start();
    pg.create_database("dsr");
    let db = TestDb::existing(pg.url("dsr"));
    let app = app(&db).await;
    let mut health = HealthClient::new(app.channel());
    let ask = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let mut watch = health.watch(ask("")).await.unwrap().into_inner();
    let mut next = async || -> Option<ServingStatus> {
        let seen: Option<HealthCheckResponse> =
            tokio::time::timeout(CALLER_DEADLINE, watch.message())
                .await
                .expect("a change within the deadline")
                .unwrap();
        seen.map(|s| s.status())
    };
    assert_eq!(next().await, Some(ServingStatus::Serving));

    pg.stop();
    assert_eq!(next().await, Some(ServingStatus::NotServing));
    let service = health
        .check(ask("dsr.v1.RequestService"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(service.status(), ServingStatus::NotServing);

    pg.start_again();
    assert_eq!(next().await, Some(ServingStatus::Serving));
    submit(&app, deletion("health@example.com")).await;

    app.stop().await;
    let mut after = Vec::new();
    while let Some(status) = next().await {
        after.push(status);
    }
    assert_eq!(after, [ServingStatus::NotServing], "the watch's last word");
}
