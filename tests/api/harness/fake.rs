//! Fake processors: real tonic `ProcessorAdapter` servers on loopback ports,
//! answering according to a script, and recording every call they receive.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use dsr_orchestrator::pb;
use dsr_orchestrator::pb::processor_adapter_server::{ProcessorAdapter, ProcessorAdapterServer};
use tokio::sync::{Notify, watch};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// How the fake answers one delivery.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Final outcome at once.
    Done(pb::InstructionResult),
    /// Accepted; the test completes it later by callback.
    Accepted,
    /// A gRPC error.
    Error(tonic::Code),
    /// A gRPC error whose message repeats every identity the delivery
    /// carried, as many processors' messages do.
    Echo(tonic::Code),
    /// No answer until [`FakeProcessor::release`] (then `Done(COMPLETED)`).
    Hang,
}

impl Reply {
    /// `Done` with a plain outcome.
    pub fn done(outcome: pb::Outcome) -> Self {
        Reply::Done(pb::InstructionResult {
            outcome: outcome as i32,
            ..Default::default()
        })
    }
}

struct State {
    script: VecDeque<Reply>,
    default: Reply,
    deliveries: Vec<pb::DeliverInstructionRequest>,
    /// The `traceparent` metadata of each delivery, in order.
    traceparents: Vec<Option<String>>,
    cancels: Vec<pb::CancelInstructionRequest>,
    /// Cancel notices wait for [`FakeProcessor::release`] before answering.
    cancels_hang: bool,
    /// Cancel notices are answered with this error.
    cancels_fail: Option<tonic::Code>,
}

/// A running fake processor.
#[derive(Clone)]
pub struct FakeProcessor {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    release: Arc<Notify>,
    /// Bumped on every call, so tests can wait for "n deliveries arrived".
    calls: watch::Sender<usize>,
}

#[derive(Clone)]
struct Service(FakeProcessor);

#[tonic::async_trait]
impl ProcessorAdapter for Service {
    async fn deliver_instruction(
        &self,
        request: Request<pb::DeliverInstructionRequest>,
    ) -> Result<Response<pb::DeliverInstructionResponse>, Status> {
        let request_identities = request.get_ref().subject_identities.clone();
        let reply = {
            let mut s = self.0.state.lock().unwrap();
            s.deliveries.push(request.get_ref().clone());
            let traceparent = request
                .metadata()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            s.traceparents.push(traceparent);
            s.script.pop_front().unwrap_or_else(|| s.default.clone())
        };
        // A hanging call waits from before it is counted, so a release
        // that follows `wait_for_calls` reaches it.
        let released = self.0.release.notified();
        self.0.calls.send_modify(|n| *n += 1);
        let reply = match reply {
            Reply::Hang => {
                released.await;
                Reply::done(pb::Outcome::Completed)
            }
            other => other,
        };
        use pb::deliver_instruction_response::Disposition;
        match reply {
            Reply::Done(result) => Ok(Response::new(pb::DeliverInstructionResponse {
                disposition: Disposition::Done as i32,
                result: Some(result),
            })),
            Reply::Accepted => Ok(Response::new(pb::DeliverInstructionResponse {
                disposition: Disposition::Accepted as i32,
                result: None,
            })),
            Reply::Error(code) => Err(Status::new(code, "scripted failure")),
            Reply::Echo(code) => {
                let values: Vec<_> = request_identities
                    .iter()
                    .map(|i| i.value.as_str())
                    .collect();
                Err(Status::new(
                    code,
                    format!("no account for {}", values.join(" or ")),
                ))
            }
            Reply::Hang => unreachable!(),
        }
    }

    async fn cancel_instruction(
        &self,
        request: Request<pb::CancelInstructionRequest>,
    ) -> Result<Response<pb::CancelInstructionResponse>, Status> {
        let (hang, fail) = {
            let mut s = self.0.state.lock().unwrap();
            s.cancels.push(request.into_inner());
            (s.cancels_hang, s.cancels_fail)
        };
        let released = self.0.release.notified();
        self.0.calls.send_modify(|n| *n += 1);
        if hang {
            released.await;
        }
        match fail {
            Some(code) => Err(Status::new(code, "scripted failure")),
            None => Ok(Response::new(pb::CancelInstructionResponse {})),
        }
    }
}

impl FakeProcessor {
    /// Starts a fake that answers `default` unless scripted otherwise.
    pub async fn start(default: Reply) -> Self {
        Self::start_with(default, None).await
    }

    /// Starts a fake serving TLS with `tls` (a certificate, and a client
    /// CA for mutual TLS). Its endpoint is `https://localhost:<port>`.
    pub async fn start_tls(default: Reply, tls: tonic::transport::ServerTlsConfig) -> Self {
        Self::start_with(default, Some(tls)).await
    }

    async fn start_with(default: Reply, tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeProcessor {
            addr,
            state: Arc::new(Mutex::new(State {
                script: VecDeque::new(),
                default,
                deliveries: Vec::new(),
                traceparents: Vec::new(),
                cancels: Vec::new(),
                cancels_hang: false,
                cancels_fail: None,
            })),
            release: Arc::new(Notify::new()),
            calls: watch::channel(0).0,
        };
        let service = ProcessorAdapterServer::new(Service(fake.clone()));
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("a TLS configuration");
        }
        tokio::spawn(
            server
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
        );
        fake
    }

    /// Answers the next deliveries with `replies`, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Makes cancel notices wait for [`FakeProcessor::release`] before
    /// they are answered.
    pub fn hang_cancels(&self) {
        self.state.lock().unwrap().cancels_hang = true;
    }

    /// Answers cancel notices with `code` (`None`: at once, as done).
    pub fn fail_cancels(&self, code: Option<tonic::Code>) {
        self.state.lock().unwrap().cancels_fail = code;
    }

    /// Changes the answer used when the script is empty.
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    /// The endpoint URI to register.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The endpoint URI of a fake serving TLS (its certificate names
    /// `localhost`).
    pub fn tls_endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Every delivery received so far.
    pub fn deliveries(&self) -> Vec<pb::DeliverInstructionRequest> {
        self.state.lock().unwrap().deliveries.clone()
    }

    /// The `traceparent` each delivery carried (the processor's view of
    /// the trace it joins).
    #[allow(dead_code)] // used by the telemetry test binary only
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().traceparents.clone()
    }

    /// Every cancel notice received so far.
    pub fn cancels(&self) -> Vec<pb::CancelInstructionRequest> {
        self.state.lock().unwrap().cancels.clone()
    }

    /// Lets every hanging delivery answer.
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Waits until at least `n` calls (deliveries + cancels) have arrived.
    pub async fn wait_for_calls(&self, n: usize) {
        let mut rx = self.calls.subscribe();
        tokio::time::timeout(std::time::Duration::from_secs(30), rx.wait_for(|c| *c >= n))
            .await
            .expect("timed out waiting for processor calls")
            .unwrap();
    }
}
