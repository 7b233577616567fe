//! What processors say back never repeats the identities we sent them:
//! not in delivery errors, not in a result's explanation or reason, not in
//! any view of the request (GetRequest, ListRequests, ListInstructions,
//! WatchRequest, the completion record).

use dsr_orchestrator::pb;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(identities_echoed_by_processors_are_redacted);

/// Every identity value the request below carries, in the spellings the
/// processors use (the email is sent with white space around it, which
/// they leave out).
const ECHOED: [&str; 2] = ["zoe.echo@example.com", "acct-778899"];

async fn identities_echoed_by_processors_are_redacted(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    // A push processor whose errors echo the identities, then denies
    // echoing them in its explanation.
    let chatty = FakeProcessor::start(Reply::Done(pb::InstructionResult {
        outcome: pb::Outcome::Denied as i32,
        exception: pb::DeletionException::CcpaLegalObligation as i32,
        explanation: "invoices of ZOE.ECHO@EXAMPLE.COM kept 7 years".into(),
        ..Default::default()
    }))
    .await;
    chatty.script([Reply::Echo(Code::Unavailable)]);
    let mut vendor = push_processor("chatty", &chatty.endpoint());
    vendor.accepted_identity_types = vec![
        pb::IdentityType::Email as i32,
        pb::IdentityType::AccountId as i32,
    ];
    register(&app, vendor).await;
    // A pull processor that fails echoing them in its reason, called back
    // with the scheme spelt in lower case (RFC 7235: case-insensitive).
    let token = register(&app, pull_processor("puller", 60_000)).await;

    let mut request = deletion(&format!("  {} ", ECHOED[0]));
    request.subject_identities.push(pb::SubjectIdentity {
        r#type: pb::IdentityType::AccountId as i32,
        value: ECHOED[1].into(),
    });
    let req = submit(&app, request).await;
    let pulled = pull(&app, &token, 10).await;
    assert_eq!(pulled.len(), 1);
    let mut complete = tonic::Request::new(pb::CompleteInstructionRequest {
        instruction_id: pulled[0].instruction_id.clone(),
        result: Some(pb::InstructionResult {
            outcome: pb::Outcome::Failed as i32,
            reason: format!("lookup of {} failed", ECHOED[0]),
            ..Default::default()
        }),
    });
    complete
        .metadata_mut()
        .insert("authorization", format!("bearer {token}").parse().unwrap());
    app.instructions
        .clone()
        .complete_instruction(complete)
        .await
        .expect("a lower-case bearer scheme is accepted");
    let events = watch_to_end(&app.requests, &req.request_id).await;

    let shown = [
        format!("{:?}", get_request(&app, &req.request_id).await),
        format!("{:?}", all_requests(&app).await),
        format!("{:?}", all_instructions(&app).await),
        format!("{events:?}"),
        format!("{:?}", record(&app, &req.request_id).await),
    ];
    for (view, text) in shown.iter().enumerate() {
        let folded = text.to_lowercase();
        for value in ECHOED {
            assert!(!folded.contains(value), "view {view} shows {value}: {text}");
        }
    }
    // What they said is there, without the identities.
    let history = &all_instructions(&app)
        .await
        .into_iter()
        .find(|i| i.processor_id == "chatty")
        .unwrap()
        .history;
    assert_eq!(
        history[0].error_message,
        "no account for [redacted] or [redacted]"
    );
    let record = record(&app, &req.request_id).await;
    let explanations: Vec<_> = record
        .lines
        .iter()
        .map(|l| {
            (
                l.processor_id.as_str(),
                l.explanation.as_str(),
                l.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        explanations,
        [
            ("chatty", "invoices of [redacted] kept 7 years", ""),
            ("puller", "", "lookup of [redacted] failed"),
        ]
    );
    app.stop().await;
}
