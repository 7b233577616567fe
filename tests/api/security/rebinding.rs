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

async fn a_name_pointed_at_a_metadata_address_gets_no_delivery(db: TestDb) {
    let dns = Pointed(Arc::new(Mutex::new("127.0.0.1".parse().unwrap())));
    let options = Options {
        adapter: Some(Arc::new(PushAdapters::with_lookup(
            None,
            Lookup::new(dns.clone()),
        ))),
        ..Options::default()
    };
    // The names do not resolve on this machine, so the registration takes
    // them; plaintext, as they are not loopback addresses it can see.
    let app = TestApp::spawn_with(&db, options, |c| c.allow_plaintext_processors = true).await;
    let grpc = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
    let renamed = |url: String| url.replace("127.0.0.1", "processor.rebinding.test");
    register(&app, push_processor("crm", &renamed(grpc.endpoint()))).await;
    register(&app, webhook_processor("billing", &renamed(hook.url()))).await;

    // Pointed at the cloud metadata service before the first delivery:
    // no connection is made, and each instruction escalates saying why.
    *dns.0.lock().unwrap() = "169.254.169.254".parse().unwrap();
    let req = submit(&app, deletion("rebind-ann@example.com")).await;
    let ids: Vec<_> = ["crm", "billing"]
        .iter()
        .map(|p| instruction_of(&req, p))
        .collect();
    for id in &ids {
        let escalated = wait_for_state(&app, id, pb::InstructionState::Escalated).await;
        assert_eq!(escalated.attempts, 4, "{id}");
    }
    for line in get_request(&app, &req.request_id).await.instructions {
        assert!(
            line.last_error.contains(
                "processor.rebinding.test resolves to 169.254.169.254, a link-local, \
                 metadata, unspecified or multicast address no delivery may go to"
            ),
            "{}: {}",
            line.processor_id,
            line.last_error
        );
    }
    assert_eq!((grpc.deliveries().len(), hook.received().len()), (0, 0));

    // Pointed back at loopback, where the processors listen, an
    // operator's retry delivers through the same lookup.
    *dns.0.lock().unwrap() = "127.0.0.1".parse().unwrap();
    for id in &ids {
        app.instructions
            .clone()
            .retry_instruction(pb::RetryInstructionRequest {
                instruction_id: id.clone(),
            })
            .await
            .unwrap();
        wait_for_state(&app, id, pb::InstructionState::Completed).await;
    }
    assert_eq!((grpc.deliveries().len(), hook.received().len()), (1, 1));
    app.stop().await;
}

/// Registration takes `http://localhost` as loopback, so plaintext. If the
/// name comes to resolve beyond loopback (here a documentation address,
/// which is no metadata address), the identities would cross the network
/// readable: without `--allow-plaintext-processors` no connection is
/// made there either.
async fn plaintext_goes_only_to_loopback_whatever_a_name_comes_to_resolve_to(db: TestDb) {
    let dns = Pointed(Arc::new(Mutex::new("192.0.2.10".parse().unwrap())));
    let lookup = Lookup::new(dns.clone()).plaintext_beyond_loopback(false);
    let options = Options {
        adapter: Some(Arc::new(PushAdapters::with_lookup(None, lookup))),
        ..Options::default()
    };
    let app = TestApp::spawn_with(&db, options, |_| {}).await;
    let grpc = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
    let renamed = |url: String| url.replace("127.0.0.1", "localhost");
    register(&app, push_processor("crm", &renamed(grpc.endpoint()))).await;
    register(&app, webhook_processor("billing", &renamed(hook.url()))).await;

    let req = submit(&app, deletion("plain-cat@example.com")).await;
    let ids: Vec<_> = ["crm", "billing"]
        .iter()
        .map(|p| instruction_of(&req, p))
        .collect();
    for id in &ids {
        wait_for_state(&app, id, pb::InstructionState::Escalated).await;
    }
    for line in get_request(&app, &req.request_id).await.instructions {
        assert!(
            line.last_error.contains(
                "localhost resolves to 192.0.2.10, beyond loopback, where plaintext http:// \
                 may not go"
            ),
            "{}: {}",
            line.processor_id,
            line.last_error
        );
    }
    assert_eq!((grpc.deliveries().len(), hook.received().len()), (0, 0));

    *dns.0.lock().unwrap() = "127.0.0.1".parse().unwrap();
    for id in &ids {
        app.instructions
            .clone()
            .retry_instruction(pb::RetryInstructionRequest {
                instruction_id: id.clone(),
            })
            .await
            .unwrap();
        wait_for_state(&app, id, pb::InstructionState::Completed).await;
    }
    assert_eq!((grpc.deliveries().len(), hook.received().len()), (1, 1));
    app.stop().await;
}
