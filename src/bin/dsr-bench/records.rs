//! Following submitted requests to their completion records without
//! disturbing what is measured. Polling the server while it works would add
//! load of the bench's own making, so the bench first waits, asking nobody,
//! until the fake processors have answered DONE for every instruction; only
//! then does it fetch each request's record (`GetCompletionRecord`, 64 at a
//! time), falling back to `WatchRequest` for the few still being written.
//!
//! A request's completion time is taken from its record's `responded_at`,
//! the server's timestamp of the transaction that wrote the record, minus
//! the start of its submit call. Both clocks are this machine's (targets are
//! on loopback), and the figure does not depend on when the bench happens
//! to look.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use dsr_orchestrator::pb;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::fake::Fleet;
use crate::progress;
use crate::submission::Submitted;
use crate::target::Target;

/// Records fetched at once.
const CONCURRENCY: usize = 64;
/// Connections they share.
const CONNECTIONS: usize = 8;

/// The records of a batch of requests.
#[derive(Debug, Default)]
pub struct Records {
    /// Per request with a record: submit start to record, in ms.
    pub completion_ms: Vec<f64>,
    /// The latest `responded_at`.
    pub last_record: Option<SystemTime>,
    /// Requests without a record when the deadline passed.
    pub missing: u64,
    /// Records whose lines do not name every processor.
    pub incomplete: u64,
}

impl Records {
    /// Every request got a record with a line per processor.
    pub fn complete(&self) -> bool {
        self.missing == 0 && self.incomplete == 0
    }
}

/// Waits, asking the server nothing, until the fakes have answered DONE to
/// `expected` distinct instructions, or `deadline`; fails if the spawned
/// server dies meanwhile.
pub async fn await_answers(
    target: &Target,
    fleet: &Fleet,
    expected: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    await_count(target, || fleet.done(), expected, deadline).await
}

/// Waits until `count` reaches `expected`, or `deadline`, polling it (the
/// fakes' counters, in the bench's own memory) every 50 ms; fails if the
/// spawned server dies meanwhile.
pub async fn await_count(
    target: &Target,
    count: impl Fn() -> u64,
    expected: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    let bar = progress::bar("instructions", expected);
    loop {
        let done = count();
        bar.set_position(done.min(expected));
        if done >= expected || Instant::now() >= deadline {
            break;
        }
        target.check_alive()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish();
    Ok(())
}

/// Fetches the record of every request in `submitted`, `CONCURRENCY` at a
/// time, waiting until `deadline` for those still open.
pub async fn verify(
    target: &Target,
    submitted: &[Submitted],
    processors: usize,
    deadline: Instant,
) -> anyhow::Result<Records> {
    let bar = progress::bar("records", submitted.len() as u64);
    let submitted: Arc<[Submitted]> = submitted.into();
    let next = Arc::new(AtomicUsize::new(0));
    let records = Arc::new(Mutex::new(Records::default()));
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(target.channel().await?);
    }
    let mut tasks = Vec::new();
    for n in 0..CONCURRENCY {
        let client = RequestServiceClient::new(channels[n % CONNECTIONS].clone());
        let (submitted, next, records, bar) = (
            submitted.clone(),
            next.clone(),
            records.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = submitted.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let record = fetch(&mut client, &request.request_id, deadline).await?;
                let mut records = records.lock().unwrap_or_else(|p| p.into_inner());
                match record {
                    Some(record) => add(&mut records, request, &record, processors),
                    None => records.missing += 1,
                }
                bar.inc(1);
            }
        }));
    }
    for task in tasks {
        task.await.context("a record fetcher panicked")??;
    }
    bar.finish();
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(records)
}

/// Counts one record.
fn add(
    records: &mut Records,
    request: &Submitted,
    record: &pb::CompletionRecord,
    processors: usize,
) {
    if record.lines.len() != processors {
        records.incomplete += 1;
    }
    let Some(responded) = record.responded_at.and_then(system_time) else {
        records.incomplete += 1;
        return;
    };
    let ms = responded
        .duration_since(request.started)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    records.completion_ms.push(ms);
    records.last_record = Some(records.last_record.map_or(responded, |t| t.max(responded)));
}

/// The record of `request_id`, waiting (until `deadline`) for an open
/// request to finish. `None` if it has none by then.
async fn fetch(
    client: &mut RequestServiceClient<Channel>,
    request_id: &str,
    deadline: Instant,
) -> anyhow::Result<Option<pb::CompletionRecord>> {
    loop {
        let asked = client
            .get_completion_record(pb::GetCompletionRecordRequest {
                request_id: request_id.to_string(),
            })
            .await;
        let status = match asked {
            Ok(record) => return Ok(Some(record.into_inner())),
            Err(status) => status,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match status.code() {
            // Still open: follow it to its terminal event, then ask again.
            Code::FailedPrecondition => {
                let _ = tokio::time::timeout(left, watch_to_end(client, request_id)).await;
            }
            code if crate::submission::is_transient(code) => {
                tokio::time::sleep(Duration::from_millis(100).min(left)).await;
            }
            code => anyhow::bail!(
                "GetCompletionRecord({request_id}) failed: {code:?}: {}",
                status.message()
            ),
        }
    }
}

/// Reads the request's event stream until it ends (after its terminal
/// event) or fails.
async fn watch_to_end(client: &mut RequestServiceClient<Channel>, request_id: &str) {
    let Ok(stream) = client
        .watch_request(pb::WatchRequestRequest {
            request_id: request_id.to_string(),
            after_sequence: 0,
        })
        .await
    else {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return;
    };
    let mut stream = stream.into_inner();
    while let Some(Ok(_event)) = stream.next().await {}
}

/// A protobuf timestamp as a `SystemTime`.
fn system_time(ts: prost_types::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}
