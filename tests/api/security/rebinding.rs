//! A processor's host name is checked again at every connection, not only
//! at registration: a name that comes to resolve to a cloud metadata
//! address afterwards (DNS rebinding) gets no connection, by gRPC,
//! webhook, OpenDSR or federation to another orchestrator. The
//! instruction fails as unreachable, saying why, and
//! escalates; once the name points where the processor listens, a retry
//! delivers. A plaintext endpoint's name likewise gets no connection
//! beyond loopback. The names resolve through a resolver the test holds,
//! handed to the server for registration and connections alike, so a
//! name pointed at a metadata address is refused at registration too.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use dsr_orchestrator::dispatch::lookup::{Resolved, Resolver};
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;

use crate::backends;
use crate::harness::app::HARNESS_TOKEN;
use crate::harness::*;

backends!(
    a_name_pointed_at_a_metadata_address_gets_no_delivery,
    plaintext_goes_only_to_loopback_whatever_a_name_comes_to_resolve_to,
    a_name_that_resolves_to_a_metadata_address_is_not_registered
);

/// Answers every name with one address, which the test may change.
#[derive(Clone)]
struct Pointed(Arc<Mutex<IpAddr>>);

impl Resolver for Pointed {
    fn resolve(&self, _: &str, port: u16) -> Resolved {
        let ip = *self.0.lock().unwrap();
        Box::pin(async move { Ok(vec![SocketAddr::new(ip, port)]) })
    }
}

impl Pointed {
    /// Every name at `ip`.
    fn at(ip: &str) -> Self {
        Self(Arc::new(Mutex::new(ip.parse().unwrap())))
    }

    fn to(&self, ip: &str) {
        *self.0.lock().unwrap() = ip.parse().unwrap();
    }

    /// A server whose processors' names resolve here.
    async fn server(&self, db: &TestDb) -> TestApp {
        let options = Options {
            resolver: Some(Arc::new(self.clone())),
            ..Options::default()
        };
        TestApp::spawn_with(db, options, |_| {}).await
    }
}

/// The processors of [`Rebinding`], one per protocol.
const PROCESSORS: [&str; 4] = ["crm", "billing", "vendor", "group-co"];

/// A server resolving names with `dns`, with a gRPC processor `crm`, a
/// webhook processor `billing`, an OpenDSR processor `vendor` and another
/// orchestrator `group-co` (which has a processor of its own,
/// `warehouse`), each registered at its URL with the host `host`.
struct Rebinding {
    app: TestApp,
    grpc: FakeProcessor,
    hook: FakeHook,
    opendsr: FakeOpenDsr,
    downstream: TestApp,
    warehouse: FakeProcessor,
    _down_db: TestDb,
    _token_dir: tempfile::TempDir,
}

impl Rebinding {
    /// Registers them while `dns` points at loopback, where they listen.
    async fn start(db: &TestDb, dns: &Pointed, host: &str) -> Self {
        dns.to("127.0.0.1");
        let app = dns.server(db).await;
        let grpc = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
        let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
        let opendsr = FakeOpenDsr::start().await;
        let down_db = TestDb::like(db).await;
        // The downstream knows the harness's principal (a submitter); the
        // upstream presents its token.
        let downstream = TestApp::spawn_authenticated(&down_db, "", |_| {}).await;
        let warehouse = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
        register(
            &downstream,
            push_processor("warehouse", &warehouse.endpoint()),
        )
        .await;
        let token_dir = tempfile::tempdir().unwrap();
        let token_file = token_dir.path().join("token");
        std::fs::write(&token_file, HARNESS_TOKEN).unwrap();

        let renamed = |url: String| url.replace("127.0.0.1", host);
        register(&app, push_processor("crm", &renamed(grpc.endpoint()))).await;
        register(&app, webhook_processor("billing", &renamed(hook.url()))).await;
        register(
            &app,
            opendsr_processor("vendor", &renamed(opendsr.url()), 1000),
        )
        .await;
        let down_url = renamed(format!("http://{}", downstream.addr));
        let group = dsr_processor_with_token("group-co", &down_url, 1000, &token_file);
        register(&app, group).await;
        Self {
            app,
            grpc,
            hook,
            opendsr,
            downstream,
            warehouse,
            _down_db: down_db,
            _token_dir: token_dir,
        }
    }

    /// Calls each processor got: gRPC deliveries, webhook POSTs, OpenDSR
    /// calls, and the downstream orchestrator's deliveries to its own
    /// processor (a federated delivery that arrived).
    fn reached(&self) -> [usize; 4] {
        [
            self.grpc.deliveries().len(),
            self.hook.received().len(),
            self.opendsr.posted().len() + self.opendsr.polls(),
            self.warehouse.deliveries().len(),
        ]
    }

    /// Points `dns` at `elsewhere`, where no connection may go, and
    /// submits a deletion: every instruction escalates with `refusal` in
    /// its last error and reaches no processor. Then, with `dns` pointed
    /// back at loopback, an operator's retry delivers each.
    async fn refused_then_delivered(self, dns: &Pointed, elsewhere: &str, refusal: &str) {
        let app = &self.app;
        dns.to(elsewhere);
        let req = submit(app, deletion("rebind-ann@example.com")).await;
        let ids: Vec<_> = PROCESSORS.iter().map(|p| instruction_of(&req, p)).collect();
        for id in &ids {
            let escalated = wait_for_state(app, id, pb::InstructionState::Escalated).await;
            assert_eq!(escalated.attempts, 4, "{id}");
        }
        for line in get_request(app, &req.request_id).await.instructions {
            assert!(
                line.last_error.contains(refusal),
                "{}: {}",
                line.processor_id,
                line.last_error
            );
        }
        assert_eq!(self.reached(), [0; 4]);

        dns.to("127.0.0.1");
        // The OpenDSR processor has finished by the time it is asked.
        self.opendsr.set_status(&ids[2], "completed");
        for id in &ids {
            app.instructions
                .clone()
                .retry_instruction(pb::RetryInstructionRequest {
                    instruction_id: id.clone(),
                })
                .await
                .unwrap();
            wait_for_state(app, id, pb::InstructionState::Completed).await;
        }
        // The OpenDSR retry asks first and learns the outcome; the
        // federated one submits downstream, which delivers to its
        // processor, and then polls.
        assert_eq!(self.reached(), [1, 1, 1, 1]);
        self.app.stop().await;
        self.downstream.stop().await;
    }
}

/// The name resolves to loopback at registration; before the first
/// delivery it is pointed at the cloud metadata service.
async fn a_name_pointed_at_a_metadata_address_gets_no_delivery(db: TestDb) {
    let dns = Pointed::at("127.0.0.1");
    let rebinding = Rebinding::start(&db, &dns, "processor.rebinding.test").await;
    let refusal = "processor.rebinding.test resolves to 169.254.169.254, a link-local, \
                   metadata, unspecified or multicast address no delivery may go to";
    rebinding
        .refused_then_delivered(&dns, "169.254.169.254", refusal)
        .await;
}

/// Registration takes `http://localhost` as loopback, so plaintext. If the
/// name comes to resolve beyond loopback (here a documentation address,
/// which is no metadata address), the identities would cross the network
/// readable: without `--allow-plaintext-processors` no connection is
/// made there either.
async fn plaintext_goes_only_to_loopback_whatever_a_name_comes_to_resolve_to(db: TestDb) {
    let dns = Pointed::at("127.0.0.1");
    let rebinding = Rebinding::start(&db, &dns, "localhost").await;
    let refusal = "localhost resolves to 192.0.2.10, beyond loopback, where plaintext http:// \
                   may not go";
    rebinding
        .refused_then_delivered(&dns, "192.0.2.10", refusal)
        .await;
}

/// A name that resolves to a metadata address when it is registered is
/// refused there, whichever protocol, with the field that names it; so is
/// a plaintext endpoint whose name resolves beyond loopback. Nothing is
/// stored.
async fn a_name_that_resolves_to_a_metadata_address_is_not_registered(db: TestDb) {
    let dns = Pointed::at("169.254.169.254");
    let app = dns.server(&db).await;
    let refused = [
        (
            push_processor("crm", "https://crm.rebinding.test:443"),
            "processor.adapter.grpc.endpoint",
        ),
        (
            webhook_processor("billing", "https://billing.rebinding.test/hook"),
            "processor.adapter.webhook.url",
        ),
        (
            opendsr_processor("vendor", "https://vendor.rebinding.test", 1000),
            "processor.adapter.opendsr.url",
        ),
        (
            dsr_processor("group-co", "https://group.rebinding.test:443", 1000),
            "processor.adapter.dsr.endpoint",
        ),
    ];
    let metadata = "must not resolve to a link-local, metadata, unspecified or multicast \
                    address (169.254.169.254)";
    for (processor, field) in refused {
        let refusals = refusals(try_register(&app, processor).await.unwrap_err());
        assert_eq!(refusals, [(field.to_string(), metadata.to_string())]);
    }
    dns.to("192.0.2.10");
    let plaintext = push_processor("crm", "http://crm.rebinding.test:80");
    let refusals = refusals(try_register(&app, plaintext.clone()).await.unwrap_err());
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].0, "processor.adapter.grpc.endpoint");
    assert!(
        refusals[0].1.starts_with("must be https://"),
        "{refusals:?}"
    );
    dns.to("127.0.0.1");
    try_register(&app, plaintext).await.unwrap();
    let listed = app
        .processors
        .clone()
        .list_processors(pb::ListProcessorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .processors;
    let ids: Vec<_> = listed.iter().map(|p| p.processor_id.as_str()).collect();
    assert_eq!(ids, ["crm"]);
    app.stop().await;
}

async fn try_register(app: &TestApp, processor: pb::Processor) -> Result<(), tonic::Status> {
    app.processors
        .clone()
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(processor),
        })
        .await
        .map(|_| ())
}

/// The field violations of an `INVALID_ARGUMENT`: (field, description).
fn refusals(status: tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("field violations")
        .field_violations;
    violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect()
}
