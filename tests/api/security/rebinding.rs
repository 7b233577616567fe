//! A processor's host name is checked again at every connection, not only
//! at registration: a name that comes to resolve to a cloud metadata
//! address afterwards (DNS rebinding) gets no connection, by gRPC or by
//! webhook. The instruction fails as unreachable, saying why, and
//! escalates; once the name points where the processor listens, a retry
//! delivers. A plaintext endpoint's name likewise gets no connection
//! beyond loopback. The names resolve through a resolver the test holds,
//! handed to the server's push adapters.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use dsr_orchestrator::dispatch::lookup::{Lookup, Resolved, Resolver};
use dsr_orchestrator::dispatch::push::PushAdapters;
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;

use crate::backends;
use crate::harness::*;

backends!(
    a_name_pointed_at_a_metadata_address_gets_no_delivery,
    plaintext_goes_only_to_loopback_whatever_a_name_comes_to_resolve_to
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
    fn to(&self, ip: &str) {
        *self.0.lock().unwrap() = ip.parse().unwrap();
    }
}

/// A server resolving names with `dns` (through `lookup`), with a gRPC
/// processor `crm` and a webhook processor `billing` registered at their
/// fakes' URLs with the host `host`.
struct Rebinding {
    app: TestApp,
    grpc: FakeProcessor,
    hook: FakeHook,
}

impl Rebinding {
    async fn start(db: &TestDb, lookup: Lookup, host: &str, allow_plaintext: bool) -> Self {
        let options = Options {
            adapter: Some(Arc::new(PushAdapters::with_lookup(None, lookup))),
            ..Options::default()
        };
        let app = TestApp::spawn_with(db, options, |c| {
            c.allow_plaintext_processors = allow_plaintext
        })
        .await;
        let grpc = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
        let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
        let renamed = |url: String| url.replace("127.0.0.1", host);
        register(&app, push_processor("crm", &renamed(grpc.endpoint()))).await;
        register(&app, webhook_processor("billing", &renamed(hook.url()))).await;
        Self { app, grpc, hook }
    }

    /// Submits a deletion while `dns` points where no connection may go:
    /// both instructions escalate with `refusal` in their last error and
    /// reach no processor. Then, with `dns` pointed back at loopback, an
    /// operator's retry delivers each through the same lookup.
    async fn refused_then_delivered(self, dns: &Pointed, refusal: &str) {
        let app = &self.app;
        let req = submit(app, deletion("rebind-ann@example.com")).await;
        let ids: Vec<_> = ["crm", "billing"]
            .iter()
            .map(|p| instruction_of(&req, p))
            .collect();
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
        let reached = || (self.grpc.deliveries().len(), self.hook.received().len());
        assert_eq!(reached(), (0, 0));

        dns.to("127.0.0.1");
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
        assert_eq!(reached(), (1, 1));
        self.app.stop().await;
    }
}

/// The name does not resolve on this machine, so the registration takes
/// it (plaintext allowed, as it is no loopback address the registration
/// can see); before the first delivery it is pointed at the cloud
/// metadata service.
async fn a_name_pointed_at_a_metadata_address_gets_no_delivery(db: TestDb) {
    let dns = Pointed(Arc::new(Mutex::new("169.254.169.254".parse().unwrap())));
    let lookup = Lookup::new(dns.clone(), true);
    let rebinding = Rebinding::start(&db, lookup, "processor.rebinding.test", true).await;
    let refusal = "processor.rebinding.test resolves to 169.254.169.254, a link-local, \
                   metadata, unspecified or multicast address no delivery may go to";
    rebinding.refused_then_delivered(&dns, refusal).await;
}

/// Registration takes `http://localhost` as loopback, so plaintext. If the
/// name comes to resolve beyond loopback (here a documentation address,
/// which is no metadata address), the identities would cross the network
/// readable: without `--allow-plaintext-processors` no connection is
/// made there either.
async fn plaintext_goes_only_to_loopback_whatever_a_name_comes_to_resolve_to(db: TestDb) {
    let dns = Pointed(Arc::new(Mutex::new("192.0.2.10".parse().unwrap())));
    let lookup = Lookup::new(dns.clone(), false);
    let rebinding = Rebinding::start(&db, lookup, "localhost", false).await;
    let refusal = "localhost resolves to 192.0.2.10, beyond loopback, where plaintext http:// \
                   may not go";
    rebinding.refused_then_delivered(&dns, refusal).await;
}
