//! Three real `dsr-orchestrator` processes against one PostgreSQL database,
//! sharing 500 deletions to four processors; one is killed with SIGKILL
//! mid-run. Every instruction still ends terminal, every request has exactly
//! one record, and the only duplicates are redeliveries of the same
//! instruction id.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use dsr_orchestrator::pb;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use sqlx::Row;

use crate::harness::app::{Authed, Bearer, channel};
use crate::harness::*;
use crate::postgres_only;

postgres_only!(three_replicas_survive_a_sigkill,);

const REQUESTS: usize = 500;
const PROCESSORS: usize = 4;

/// A replica process, killed when dropped so a failing test leaves none.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the built binary on a free port and waits for its "serving" line.
fn start_replica(database_url: &str) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsr-orchestrator"))
        .env("DSR_DATABASE_URL", database_url)
        .env("DSR_LISTEN_ADDR", "127.0.0.1:0")
        .env("DSR_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .env("DSR_LOG_FORMAT", "json")
        .env("DSR_POLL_INTERVAL", "100ms")
        .env("DSR_LEASE_MARGIN", "1s")
        .env("DSR_DB_MAX_CONNECTIONS", "8")
        .env("DSR_KEYS", &*TEST_KEYS)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dsr-orchestrator");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("replica exited before serving")
            .unwrap();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "serving gRPC" {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Replica { child, addr }
}

/// Submits `req`, falling back to the other replicas if one is gone: the
/// request id makes the retry idempotent.
async fn submit_anywhere(
    clients: &[RequestServiceClient<Authed>],
    first: usize,
    req: pb::SubmitRequestRequest,
) {
    for k in 0..clients.len() {
        let mut c = clients[(first + k) % clients.len()].clone();
        if c.submit_request(req.clone()).await.is_ok() {
            return;
        }
    }
    panic!("no replica took the request");
}

async fn three_replicas_survive_a_sigkill(db: TestDb) {
    let mut fakes = Vec::new();
    for _ in 0..PROCESSORS {
        fakes.push(FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await);
    }
    // Three processes migrating the empty database at the same moment.
    let replicas: Vec<Replica> = (0..3).map(|_| start_replica(&db.url)).collect();
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(RequestServiceClient::with_interceptor(
            channel(r.addr).await,
            Bearer::default(),
        ));
    }
    let mut processors =
        pb::processor_service_client::ProcessorServiceClient::new(channel(replicas[0].addr).await);
    for (n, fake) in fakes.iter().enumerate() {
        processors
            .register_processor(pb::RegisterProcessorRequest {
                processor: Some(push_processor(&format!("processor-{n}"), &fake.endpoint())),
            })
            .await
            .unwrap();
    }

    let mut replicas = replicas;
    let requests: Vec<pb::SubmitRequestRequest> = (0..REQUESTS)
        .map(|n| deletion(&format!("s{n}@example.com")))
        .collect();
    let mut submitters = Vec::new();
    for (worker, chunk) in requests.chunks(REQUESTS / 10).enumerate() {
        let clients = clients.clone();
        let chunk = chunk.to_vec();
        submitters.push(tokio::spawn(async move {
            for (i, req) in chunk.into_iter().enumerate() {
                submit_anywhere(&clients, worker + i, req).await;
            }
        }));
    }
    // Mid-run: once the processors have seen a fifth of the work, SIGKILL
    // the third replica (deliveries and submissions in flight).
    let total = || fakes.iter().map(|f| f.deliveries().len()).sum::<usize>();
    fakes[0].wait_for_calls(REQUESTS / 5).await;
    let killed = replicas.pop().unwrap();
    let seen_at_kill = total();
    drop(killed);
    for s in submitters {
        s.await.unwrap();
    }

    // Every request finishes (the dead replica's leases expire and the
    // survivors redeliver).
    let survivor = clients[0].clone();
    for req in &requests {
        let events = watch_to_end(&survivor, &req.request_id).await;
        assert_eq!(
            events.last().unwrap().r#type(),
            pb::RequestEventType::Completed
        );
    }

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<i64, _>("n") as usize
        }
    };
    assert_eq!(count("select count(*) as n from requests").await, REQUESTS);
    assert_eq!(
        count("select count(*) as n from completion_records").await,
        REQUESTS
    );
    assert_eq!(
        count("select count(*) as n from instructions").await,
        REQUESTS * PROCESSORS
    );
    assert_eq!(
        count("select count(*) as n from instructions where state = 'COMPLETED'").await,
        REQUESTS * PROCESSORS
    );
    let ids: BTreeSet<String> = sqlx::query("select id from instructions")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("id"))
        .collect();
    pool.close().await;

    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for fake in &fakes {
        for d in fake.deliveries() {
            *per_id.entry(d.instruction_id).or_default() += 1;
        }
    }
    assert_eq!(
        per_id.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "only our instruction ids"
    );
    let deliveries: usize = per_id.values().sum();
    let redeliveries = deliveries - ids.len();
    println!(
        "replicas: {} instructions, {deliveries} deliveries, {redeliveries} redeliveries \
         (SIGKILL after {seen_at_kill} deliveries)",
        ids.len()
    );
}
