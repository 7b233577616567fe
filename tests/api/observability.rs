//! The admin listener: metrics after real traffic (with the right labels and
//! no personal data), readiness following the database, and the dashboard
//! and the chart's alerts querying only metrics that exist.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use dsr_orchestrator::admin::AdminLimits;
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;
use sqlx::Executor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::backends;
use crate::harness::*;
use crate::postgres_only;

backends!(
    metrics_follow_a_fan_out_with_failures,
    a_request_closed_at_intake_is_counted,
    open_requests_are_counted_by_time_left,
    a_probe_is_served_while_others_hold_the_admin_connections,
    an_admin_connection_that_sends_no_whole_head_is_closed,
);
postgres_only!(readiness_follows_the_database,);

/// `name{a="1",b="2"}` (labels sorted) -> value, from the text format.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let mut labels: Vec<&str> = rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .collect();
                labels.sort();
                (n, labels.join(","))
            }
            None => (series, String::new()),
        };
        out.insert(
            format!("{name}{{{labels}}}"),
            value.parse().expect("numeric value"),
        );
    }
    out
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| {
        panic!(
            "no sample {key}; have {:#?}",
            samples.keys().collect::<Vec<_>>()
        )
    })
}

/// Open requests are counted by the time left to their deadlines (never
/// by id), and those whose receipt confirmation is overdue.
async fn open_requests_are_counted_by_time_left(db: TestDb) {
    let clock = dsr_orchestrator::clock::ManualClock::at(
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc(),
    );
    let options = dsr_orchestrator::startup::Options {
        clock: std::sync::Arc::new(clock.clone()),
        run_dispatcher: false,
        ..Default::default()
    };
    let app = TestApp::spawn_with(&db, options, |_| {}).await;
    let mut manual = pull_processor("records-desk", 60_000);
    manual.adapter = Some(pb::Adapter {
        kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
    });
    register(&app, manual).await;
    for jurisdiction in [
        pb::Jurisdiction::Ccpa,
        pb::Jurisdiction::Appi,
        pb::Jurisdiction::Gdpr,
    ] {
        submit(
            &app,
            pb::SubmitRequestRequest {
                jurisdiction: jurisdiction as i32,
                ..deletion("wes@example.com")
            },
        )
        .await;
    }
    // 16 January: APPI overdue (15th), GDPR under 30 days (1 February),
    // CCPA 30 days or more (15 February) with its receipt overdue (15th).
    clock.advance(std::time::Duration::from_secs(15 * 86400));
    let (_, text) = app.admin_get("/metrics").await;
    let m = samples(&text);
    for (bucket, n) in [
        ("overdue", 1.0),
        ("under_1d", 0.0),
        ("under_7d", 0.0),
        ("under_30d", 1.0),
        ("30d_or_more", 1.0),
    ] {
        assert_eq!(
            value(
                &m,
                &format!("dsr_requests_by_time_left{{time_left=\"{bucket}\"}}")
            ),
            n,
            "{bucket}"
        );
    }
    assert_eq!(value(&m, "dsr_requests_receipt_overdue{}"), 1.0);
    app.stop().await;
}

/// A request no processor takes is closed (with its record) by intake
/// itself, whose writer runs on its own handle of the store: the completion
/// is counted all the same.
async fn a_request_closed_at_intake_is_counted(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let r = submit(&app, deletion("nobody@example.com")).await;
    assert_eq!(r.status, pb::RequestStatus::Completed as i32);
    let (_, text) = app.admin_get("/metrics").await;
    let m = samples(&text);
    let completed: Vec<(&String, &f64)> = m
        .iter()
        .filter(|(k, _)| k.starts_with("dsr_requests_completed_total{"))
        .collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert!(completed[0].0.contains(r#"kind="DELETE""#), "{completed:?}");
    assert_eq!(*completed[0].1, 1.0);
    app.stop().await;
}

/// Counters, histograms and gauges after deliveries that succeed, retry,
/// escalate and are acknowledged.
async fn metrics_follow_a_fan_out_with_failures(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let ok = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let flaky = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    flaky.script([
        Reply::Error(Code::Unavailable),
        Reply::Error(Code::Unavailable),
    ]);
    let broken = FakeProcessor::start(Reply::Error(Code::PermissionDenied)).await;
    let slow = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("ok", &ok.endpoint())).await;
    register(&app, push_processor("flaky", &flaky.endpoint())).await;
    register(&app, push_processor("broken", &broken.endpoint())).await;
    let slow_token = register(&app, push_processor("slow", &slow.endpoint())).await;
    register(&app, pull_processor("puller", 60_000)).await;

    let mut requests = Vec::new();
    for n in 0..2 {
        requests.push(submit(&app, deletion(&format!("metrics{n}@example.com"))).await);
    }
    let id_of = |r: &pb::DataSubjectRequest, p: &str| {
        r.instructions
            .iter()
            .find(|i| i.processor_id == p)
            .unwrap()
            .instruction_id
            .clone()
    };
    for r in &requests {
        wait_for_state(&app, &id_of(r, "broken"), pb::InstructionState::Escalated).await;
        wait_for_state(&app, &id_of(r, "flaky"), pb::InstructionState::Completed).await;
        wait_for_state(&app, &id_of(r, "ok"), pb::InstructionState::Completed).await;
        wait_for_state(&app, &id_of(r, "slow"), pb::InstructionState::Acknowledged).await;
    }

    let (status, text) = app.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let m = samples(&text);
    assert_eq!(
        value(
            &m,
            r#"dsr_requests_submitted_total{jurisdiction="CCPA",kind="DELETE"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_delivery_attempts_total{processor="flaky",result="retryable_error"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_delivery_attempts_total{processor="flaky",result="outcome"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_delivery_failures_total{code="UNAVAILABLE",processor="flaky"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_delivery_failures_total{code="PERMISSION_DENIED",processor="broken"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_delivery_attempts_total{processor="slow",result="accepted"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_instructions_escalations_total{processor="broken"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_instructions_finished_total{processor="ok",state="COMPLETED"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_instructions_claimed_total{processor="flaky",reason="retry"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&m, r#"dsr_delivery_duration_seconds_count{processor="ok"}"#),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_time_to_acknowledge_seconds_count{processor="slow"}"#
        ),
        2.0
    );
    // Gauges, read from the database at scrape time.
    assert_eq!(value(&m, r#"dsr_requests_open{status="IN_PROGRESS"}"#), 2.0);
    assert!(
        value(
            &m,
            r#"dsr_requests_oldest_open_age_seconds{status="IN_PROGRESS"}"#
        ) >= 0.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_instructions_open{processor="broken",state="ESCALATED"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_instructions_open{processor="slow",state="ACKNOWLEDGED"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"dsr_instructions_open{processor="puller",state="PENDING"}"#
        ),
        2.0
    );
    assert_eq!(value(&m, r#"dsr_queue_depth{processor="puller"}"#), 2.0);
    assert!(value(&m, "dsr_claim_duration_seconds_count{}") >= 1.0);
    // PostgreSQL writes each claim's history after its leases.
    let histories = value(&m, "dsr_claim_history_duration_seconds_count{}");
    match db.postgres_name() {
        Some(_) => assert!(histories >= 1.0, "{histories}"),
        None => assert_eq!(histories, 0.0),
    }
    // Bounded labels: no request ids, no subject data.
    for r in &requests {
        assert!(!text.contains(&r.request_id));
    }
    assert!(!text.contains("example.com"));

    // Finish the requests: completions are counted by outcome.
    for r in &requests {
        for p in ["broken", "puller"] {
            app.instructions
                .clone()
                .resolve_instruction(pb::ResolveInstructionRequest {
                    instruction_id: id_of(r, p),
                    result: result(pb::Outcome::NoData),
                    note: "checked by hand".into(),
                })
                .await
                .unwrap();
        }
        app.instructions
            .clone()
            .complete_instruction(authed(
                &slow_token,
                pb::CompleteInstructionRequest {
                    instruction_id: id_of(r, "slow"),
                    result: result(pb::Outcome::Completed),
                },
            ))
            .await
            .unwrap();
        watch_to_end(&app.requests, &r.request_id).await;
    }
    let first = m;
    let (_, text) = app.admin_get("/metrics").await;
    let m = samples(&text);
    assert_eq!(
        value(
            &m,
            r#"dsr_requests_completed_total{jurisdiction="CCPA",kind="DELETE",outcome="FULFILLED"}"#
        ),
        2.0
    );
    assert!(!m.contains_key(r#"dsr_requests_open{status="IN_PROGRESS"}"#));

    // The dashboard and the chart's alerts query only metrics that exist
    // (once traffic made every family appear).
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("helm/dsr-orchestrator/dashboards/dsr-orchestrator.json").unwrap(),
    )
    .expect("the dashboard is well-formed JSON");
    let alerts: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string("helm/dsr-orchestrator/alerts/dsr-orchestrator.yaml").unwrap(),
    )
    .expect("the alerts are well-formed YAML");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let panels = exprs.len();
    collect_exprs(&alerts, &mut exprs);
    assert!(panels > 0 && exprs.len() - panels == 9, "{exprs:?}");
    let names: BTreeSet<&str> = first
        .keys()
        .chain(m.keys())
        .map(|k| k.split('{').next().unwrap())
        .collect();
    let mut queried = BTreeSet::new();
    for e in &exprs {
        for (i, _) in e.match_indices("dsr_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            queried.insert(name);
        }
    }
    let missing: Vec<_> = queried
        .iter()
        .filter(|q| !names.contains(q.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts query metrics that do not exist: {missing:?}"
    );

    app.stop().await;
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// `/healthz` answers while the process lives; `/readyz` turns unready when
/// the database goes away and ready again when it returns.
async fn readiness_follows_the_database(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.admin_get("/healthz").await.0, 200);
    assert_eq!(app.admin_get("/readyz").await, (200, "ready\n".to_string()));

    let name = db.postgres_name().unwrap().to_string();
    let admin = TestDb::admin_pool().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "alter database {name} allow_connections false"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'"
        )))
        .await
        .unwrap();
    let (status, body) = app.admin_get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: database unreachable\n")
    );
    assert_eq!(app.admin_get("/healthz").await.0, 200, "alive all the same");

    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "alter database {name} allow_connections true"
        )))
        .await
        .unwrap();
    assert_eq!(app.admin_get("/readyz").await, (200, "ready\n".to_string()));
    admin.close().await;
    app.stop().await;
}

/// Half a request head on `addr`'s admin listener: a connection held open
/// without a request.
async fn half_a_head(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut held = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin listener");
    held.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n")
        .await
        .expect("half a head");
    held
}

/// Waits (bounded) for the server to close `stream`.
async fn closed_by_the_server(mut stream: tokio::net::TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closed the connection");
}

/// With every admin connection held open by a client that sends no
/// request, a probe is still answered: the newest connection closes the
/// oldest one without a request in progress.
async fn a_probe_is_served_while_others_hold_the_admin_connections(db: TestDb) {
    let options = Options {
        admin_limits: AdminLimits {
            connections: 2,
            header_timeout: Duration::from_secs(600),
        },
        ..Options::default()
    };
    let app = TestApp::spawn_with(&db, options, |_| {}).await;
    let first = half_a_head(app.admin).await;
    let second = half_a_head(app.admin).await;
    let answered = tokio::time::timeout(Duration::from_secs(10), app.admin_get("/healthz"))
        .await
        .expect("the probe is answered long before the header timeout");
    assert_eq!(answered.0, 200);
    // The probe took the place of the oldest.
    closed_by_the_server(first).await;
    let mut second = second;
    second
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .expect("the rest of the head");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    app.stop().await;
}

/// A connection whose request head does not arrive in time is closed.
async fn an_admin_connection_that_sends_no_whole_head_is_closed(db: TestDb) {
    let options = Options {
        admin_limits: AdminLimits {
            header_timeout: Duration::from_millis(300),
            ..AdminLimits::default()
        },
        ..Options::default()
    };
    let app = TestApp::spawn_with(&db, options, |_| {}).await;
    closed_by_the_server(half_a_head(app.admin).await).await;
    app.stop().await;
}
