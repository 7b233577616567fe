//! Fake processors: real tonic `ProcessorAdapter` servers on loopback ports
//! inside the bench's own process, so the orchestrator pays the full cost of
//! a gRPC push per instruction while the processor side costs next to
//! nothing. They answer DONE/COMPLETED at once, or after a configured delay,
//! or (a configured fraction of the time) UNAVAILABLE, which the
//! orchestrator retries. While told to accept ([`Fleet::set_accepting`])
//! they answer ACCEPTED instead and never send the outcome: the
//! instruction waits, acknowledged, for days.
//!
//! The fleet counts what it sees: every delivery (so retries and
//! redeliveries show up as deliveries beyond one per instruction) and the
//! distinct instructions answered DONE. The latter tells the bench, without
//! asking the server anything, when the last record is about to be written;
//! the bench then confirms each record through the API.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use dsr_orchestrator::pb;
use dsr_orchestrator::pb::deliver_instruction_response::Disposition;
use dsr_orchestrator::pb::processor_adapter_server::{ProcessorAdapter, ProcessorAdapterServer};
use dsr_orchestrator::pb::processor_service_client::ProcessorServiceClient;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How the fakes answer.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Wait this long before answering.
    pub latency: Duration,
    /// Fraction of deliveries answered UNAVAILABLE.
    pub failure_rate: f64,
}

/// Distinct instruction ids, and how many, readable without the lock.
#[derive(Default)]
struct Seen {
    ids: Mutex<HashSet<String>>,
    count: AtomicU64,
}

impl Seen {
    fn insert(&self, id: String) {
        // A poisoned lock only means another delivery panicked; the set is
        // still a valid set.
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.insert(id) {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn clear(&self) {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.count.store(0, Ordering::Relaxed);
    }
}

/// What all fakes of the fleet have seen since the last [`Fleet::reset`].
#[derive(Default)]
struct Counters {
    /// Every DeliverInstruction call, answered or not.
    deliveries: AtomicU64,
    /// Instructions answered DONE at least once.
    done: Seen,
    /// Whether deliveries are answered ACCEPTED.
    accepting: AtomicBool,
    /// Instructions answered ACCEPTED.
    accepted: Seen,
}

/// The service behind every fake (they share the counters).
#[derive(Clone)]
struct Fake {
    behaviour: Behaviour,
    counters: Arc<Counters>,
}

#[tonic::async_trait]
impl ProcessorAdapter for Fake {
    async fn deliver_instruction(
        &self,
        request: Request<pb::DeliverInstructionRequest>,
    ) -> Result<Response<pb::DeliverInstructionResponse>, Status> {
        self.counters.deliveries.fetch_add(1, Ordering::Relaxed);
        if !self.behaviour.latency.is_zero() {
            tokio::time::sleep(self.behaviour.latency).await;
        }
        if self.behaviour.failure_rate > 0.0 && rand::random::<f64>() < self.behaviour.failure_rate
        {
            return Err(Status::unavailable("dsr-bench: simulated outage"));
        }
        let id = request.into_inner().instruction_id;
        if self.counters.accepting.load(Ordering::Relaxed) {
            self.counters.accepted.insert(id);
            return Ok(Response::new(pb::DeliverInstructionResponse {
                disposition: Disposition::Accepted as i32,
                result: None,
            }));
        }
        self.counters.done.insert(id);
        Ok(Response::new(pb::DeliverInstructionResponse {
            disposition: Disposition::Done as i32,
            result: Some(pb::InstructionResult {
                outcome: pb::Outcome::Completed as i32,
                ..Default::default()
            }),
        }))
    }

    async fn cancel_instruction(
        &self,
        _request: Request<pb::CancelInstructionRequest>,
    ) -> Result<Response<pb::CancelInstructionResponse>, Status> {
        Ok(Response::new(pb::CancelInstructionResponse {}))
    }
}

/// N running fake processors, registered with the orchestrator.
pub struct Fleet {
    /// Processor ids, in order (`bench-p0`, `bench-p1`, ...).
    ids: Vec<String>,
    counters: Arc<Counters>,
    servers: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts `count` fakes on free loopback ports and registers them as
    /// push processors, with `max_in_flight` if given (unset: the adaptive
    /// limit). `tag`, when given, is appended to every id so that runs
    /// against a long-lived orchestrator do not collide.
    pub async fn start(
        count: u32,
        behaviour: Behaviour,
        max_in_flight: Option<u32>,
        tag: Option<&str>,
        processors: &mut ProcessorServiceClient<Channel>,
    ) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let mut fleet = Fleet {
            ids: Vec::new(),
            counters: counters.clone(),
            servers: Vec::new(),
        };
        for n in 0..count {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("cannot bind a fake processor on 127.0.0.1")?;
            let addr = listener.local_addr()?;
            let service = ProcessorAdapterServer::new(Fake {
                behaviour,
                counters: counters.clone(),
            });
            fleet.servers.push(tokio::spawn(async move {
                // Nagle off on the accepted sockets themselves (the
                // builder's setting does not reach a listener of our own).
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                let served = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await;
                if let Err(e) = served {
                    eprintln!("dsr-bench: fake processor on {addr} stopped: {e}");
                }
            }));
            let id = match tag {
                Some(tag) => format!("bench-p{n}-{tag}"),
                None => format!("bench-p{n}"),
            };
            processors
                .register_processor(pb::RegisterProcessorRequest {
                    processor: Some(definition(&id, addr, max_in_flight)),
                })
                .await
                .with_context(|| format!("cannot register fake processor {id}"))?;
            fleet.ids.push(id);
        }
        Ok(fleet)
    }

    /// The registered processor ids.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Forgets what was seen so far (between preload and measured phase).
    pub fn reset(&self) {
        self.counters.done.clear();
        self.counters.accepted.clear();
        self.counters.deliveries.store(0, Ordering::Relaxed);
    }

    /// Whether deliveries from now on are answered ACCEPTED (the outcome
    /// never follows) instead of DONE.
    pub fn set_accepting(&self, accepting: bool) {
        self.counters.accepting.store(accepting, Ordering::Relaxed);
    }

    /// Distinct instructions answered ACCEPTED since the last reset.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.len()
    }

    /// Deliveries received since the last reset.
    pub fn deliveries(&self) -> u64 {
        self.counters.deliveries.load(Ordering::Relaxed)
    }

    /// Distinct instructions answered DONE since the last reset.
    pub fn done(&self) -> u64 {
        self.counters.done.len()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// A push processor taking deletions of e-mail identities, with fast
/// retries (10 ms doubling to 1 s) and the largest retry budget, so that a
/// simulated failure rate delays instructions but never escalates them;
/// `max_in_flight` if given; on every other setting the defaults.
fn definition(id: &str, addr: SocketAddr, max_in_flight: Option<u32>) -> pb::Processor {
    pb::Processor {
        processor_id: id.to_string(),
        display_name: format!("dsr-bench fake processor {id}"),
        role: pb::ProcessorRole::Vendor as i32,
        country: "JP".into(),
        supported_kinds: vec![pb::RequestKind::Delete as i32],
        accepted_identity_types: vec![pb::IdentityType::Email as i32],
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Grpc(pb::GrpcAdapter {
                endpoint: format!("http://{addr}"),
                timeout: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                tls: None,
            })),
        }),
        retry_policy: Some(pb::RetryPolicy {
            initial_backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 10_000_000,
            }),
            max_backoff: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            multiplier: 2.0,
            max_attempts: 100,
        }),
        max_in_flight: max_in_flight.unwrap_or(0),
        ..Default::default()
    }
}
