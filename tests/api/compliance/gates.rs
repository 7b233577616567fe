//! The gates before and after the fan-out: verification by jurisdiction
//! and need, the evidence an agent or parent must show, and the legal
//! grounds a processor may deny on.

use dsr_orchestrator::clock::Clock;
use dsr_orchestrator::pb;
use tonic::Code;

use super::*;
use crate::backends;

backends!(
    an_unverified_deletion_ends_without_fan_out,
    access_needs_its_scope_and_the_matching_verification,
    an_agent_without_evidence_is_rejected,
    denials_must_cite_a_ground_of_the_request_law,
    the_catalogue_is_served_by_law_and_kind,
);

/// `req` verified at `level`.
fn verified(
    mut req: pb::SubmitRequestRequest,
    level: pb::VerificationLevel,
) -> pb::SubmitRequestRequest {
    req.verification = Some(pb::Verification {
        level: level as i32,
        method: "email link".into(),
    });
    req
}

/// An access request for `scope`, verified at `level`.
fn access(
    email: &str,
    scope: pb::AccessScope,
    level: pb::VerificationLevel,
) -> pb::SubmitRequestRequest {
    let mut req = verified(deletion(email), level);
    req.kind = pb::RequestKind::Access as i32;
    req.access_scope = scope as i32;
    req
}

/// A deletion verified only to a reasonable degree (CCPA regs 7062 ask a
/// reasonably high one) reaches no processor: it closes at once, and its
/// record says it was denied for lack of verification.
async fn an_unverified_deletion_ends_without_fan_out(db: TestDb) {
    let (app, _clock) = spawn_at(&db, "2026-03-02T09:00:00Z", |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;

    let req = verified(
        deletion("lou@example.com"),
        pb::VerificationLevel::Reasonable,
    );
    let denied = submit(&app, req.clone()).await;
    assert_eq!(denied.status(), pb::RequestStatus::Completed);
    assert!(denied.instructions.is_empty());
    app.dispatcher.run_once().await.unwrap();
    assert!(fake.deliveries().is_empty(), "nothing went out");

    let record = record(&app, &denied.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::DeniedUnverified);
    assert!(record.lines.is_empty());
    assert!(record.note.contains("verified"), "{}", record.note);
    assert!(record.on_time);
    // The same submission again is the same request.
    assert_eq!(submit(&app, req).await.request_id, denied.request_id);

    // Verified enough, the same deletion fans out.
    let ok = submit(&app, deletion("lou@example.com")).await;
    assert_eq!(processors_of(&ok), ["vendor"]);
    app.stop().await;
}

/// An access request says what it asks to know; categories need a
/// reasonable degree of certainty, specific pieces a reasonably high one,
/// and the compliance file can ask more of a jurisdiction.
async fn access_needs_its_scope_and_the_matching_verification(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = compliance_file(
        dir.path(),
        "verification:\n  GDPR: { ACCESS_CATEGORIES: REASONABLY_HIGH }\n",
        &[],
    );
    let (app, clock) = spawn_at(&db, "2026-03-02T09:00:00Z", |c| {
        c.compliance_file = Some(file);
    })
    .await;
    register(&app, manual_processor("records-desk")).await;
    use pb::AccessScope::{Categories, SpecificPieces, Unspecified};
    use pb::VerificationLevel::{Reasonable, ReasonablyHigh};

    let unsaid = submit_rejected(&app, access("mo@example.com", Unspecified, ReasonablyHigh)).await;
    assert_eq!(unsaid.code(), Code::InvalidArgument);
    assert_eq!(violations(&unsaid), ["access_scope"]);
    let mut scoped_deletion = deletion("mo@example.com");
    scoped_deletion.access_scope = Categories as i32;
    assert_eq!(
        violations(&submit_rejected(&app, scoped_deletion).await),
        ["access_scope"]
    );

    let categories = submit(&app, access("mo@example.com", Categories, Reasonable)).await;
    assert_eq!(categories.instructions.len(), 1, "fanned out");
    assert_eq!(categories.access_scope(), Categories);
    let pieces = submit(&app, access("mo@example.com", SpecificPieces, Reasonable)).await;
    assert!(pieces.instructions.is_empty());
    assert_eq!(
        record(&app, &pieces.request_id).await.outcome(),
        pb::OverallOutcome::DeniedUnverified
    );
    // Denied, it has no report (an empty one would say nothing is held),
    // and its identities wait for no report window.
    let no_report = app
        .requests
        .clone()
        .get_access_report(pb::GetAccessReportRequest {
            request_id: pieces.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_report.code(), Code::FailedPrecondition);
    assert!(no_report.message().contains("denied"), "{no_report:?}");
    let no_export = app
        .requests
        .clone()
        .export_access_data(pb::ExportAccessDataRequest {
            request_id: pieces.request_id.clone(),
            format: pb::ExportFormat::Json as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(no_export.code(), Code::FailedPrecondition);
    let week = std::time::Duration::from_secs(7 * 86400);
    app.store.erase_finished(clock.now(), week).await.unwrap();
    let erased = get_request(&app, &pieces.request_id).await;
    assert!(erased.identities_erased_at.is_some());
    assert!(
        get_request(&app, &categories.request_id)
            .await
            .identities_erased_at
            .is_none(),
        "an open request keeps them"
    );
    let pieces = submit(
        &app,
        access("mo@example.com", SpecificPieces, ReasonablyHigh),
    )
    .await;
    assert_eq!(pieces.instructions.len(), 1);

    // The file asks more of GDPR.
    let mut gdpr = access("mo@example.com", Categories, Reasonable);
    gdpr.jurisdiction = pb::Jurisdiction::Gdpr as i32;
    let denied = submit(&app, gdpr).await;
    assert!(denied.instructions.is_empty());
    let record = record(&app, &denied.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::DeniedUnverified);
    assert_eq!(record.access_scope(), Categories);
    app.stop().await;
}

/// A request made by an authorized agent or a parent carries a reference
/// to the evidence of their permission; without one it is refused,
/// naming the field.
async fn an_agent_without_evidence_is_rejected(db: TestDb) {
    let (app, _clock) = spawn_at(&db, "2026-03-02T09:00:00Z", |_| {}).await;
    register(&app, manual_processor("records-desk")).await;
    for requester in [
        pb::Requester::AuthorizedAgent,
        pb::Requester::ParentOrGuardian,
    ] {
        let mut req = deletion("nia@example.com");
        req.requester = requester as i32;
        let refused = submit_rejected(&app, req.clone()).await;
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(violations(&refused), ["requester_evidence"]);
        assert!(refused.message().contains("evidence"), "{refused:?}");

        req.requester_evidence = "DMS-2026-0042 (signed permission, scanned)".into();
        let taken = submit(&app, req).await;
        assert_eq!(taken.requester(), requester);
        assert_eq!(
            taken.requester_evidence,
            "DMS-2026-0042 (signed permission, scanned)"
        );
    }
    app.stop().await;
}

/// A denial must rest on a ground of the request's own law that applies
/// to its kind: a GDPR ground for a CCPA deletion, or a deletion ground
/// for an access request, is refused from a processor's callback and from
/// an operator, and a push processor's answer citing one escalates.
async fn denials_must_cite_a_ground_of_the_request_law(db: TestDb) {
    let (app, _clock) = spawn_at(&db, "2026-03-02T09:00:00Z", |_| {}).await;
    let token = register(&app, pull_processor("mainframe", 60_000)).await;
    let denial = |exception: pb::DeletionException| pb::InstructionResult {
        outcome: pb::Outcome::Denied as i32,
        exception: exception as i32,
        explanation: "kept for a pending lawsuit".into(),
        ..Default::default()
    };

    let req = submit(&app, deletion("ora@example.com")).await;
    let id = pull(&app, &token, 1).await[0].instruction_id.clone();
    let complete = |exception| {
        let mut client = app.instructions.clone();
        let request = authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: id.clone(),
                result: Some(denial(exception)),
            },
        );
        async move { client.complete_instruction(request).await }
    };
    let foreign = complete(pb::DeletionException::GdprLegalClaims)
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert_eq!(violations(&foreign), ["result.exception"]);
    assert!(foreign.message().contains("GDPR"), "{foreign:?}");
    complete(pb::DeletionException::CcpaLegalObligation)
        .await
        .expect("a CCPA ground for a CCPA deletion");
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::NotFulfilled);
    assert_eq!(
        record.lines[0].exception(),
        pb::DeletionException::CcpaLegalObligation
    );

    // An operator, for an access request: deletion grounds do not apply.
    register(&app, manual_processor("records-desk")).await;
    let mut access = deletion("ora@example.com");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::Categories as i32;
    access.processor_ids = vec!["records-desk".into()];
    let open = submit(&app, access).await;
    let refused = app
        .instructions
        .clone()
        .resolve_instruction(pb::ResolveInstructionRequest {
            instruction_id: open.instructions[0].instruction_id.clone(),
            result: Some(denial(pb::DeletionException::CcpaLegalObligation)),
            note: "by phone".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&refused), ["result.exception"]);

    // A push processor's answer on a foreign ground goes to an operator.
    let fake =
        FakeProcessor::start(Reply::Done(denial(pb::DeletionException::GdprPublicHealth))).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let mut pushed = deletion("ora@example.com");
    pushed.processor_ids = vec!["vendor".into()];
    let pushed = submit(&app, pushed).await;
    app.dispatcher.run_once().await.unwrap();
    let escalated = wait_for_state(
        &app,
        &pushed.instructions[0].instruction_id,
        pb::InstructionState::Escalated,
    )
    .await;
    let error = &escalated.summary.as_ref().unwrap().last_error;
    assert!(error.contains("ground"), "{error}");
    app.stop().await;
}

/// `ListExceptions` serves the catalogue: every ground with its law,
/// provision and kinds, filtered by jurisdiction (its own grounds and
/// OTHER) and by kind.
async fn the_catalogue_is_served_by_law_and_kind(db: TestDb) {
    let (app, _clock) = spawn_at(&db, "2026-03-02T09:00:00Z", |_| {}).await;
    let list = |jurisdiction: pb::Jurisdiction, kind: pb::RequestKind| {
        let mut client = app.requests.clone();
        async move {
            client
                .list_exceptions(pb::ListExceptionsRequest {
                    jurisdiction: jurisdiction as i32,
                    kind: kind as i32,
                })
                .await
                .unwrap()
                .into_inner()
                .grounds
        }
    };
    let all = list(pb::Jurisdiction::Unspecified, pb::RequestKind::Unspecified).await;
    assert_eq!(all.len(), 16);
    assert!(
        all.iter()
            .all(|g| !g.title.is_empty() && !g.description.is_empty() && !g.kinds.is_empty())
    );

    let ccpa = list(pb::Jurisdiction::Ccpa, pb::RequestKind::Delete).await;
    let own: Vec<_> = ccpa
        .iter()
        .filter(|g| g.jurisdiction() == pb::Jurisdiction::Ccpa)
        .collect();
    assert_eq!(own.len(), 8);
    for (n, g) in own.iter().enumerate() {
        assert_eq!(
            g.provision,
            format!("Cal. Civ. Code 1798.105(d)({})", n + 1)
        );
    }
    assert_eq!(ccpa.len(), 9, "and OTHER");
    let gdpr = list(pb::Jurisdiction::Gdpr, pb::RequestKind::Delete).await;
    assert_eq!(
        gdpr.iter()
            .filter(|g| g.jurisdiction() == pb::Jurisdiction::Gdpr)
            .count(),
        5
    );
    assert!(
        gdpr.iter()
            .all(|g| g.provision.contains("17(3)") || g.code() == pb::DeletionException::Other)
    );
    let appi = list(pb::Jurisdiction::Appi, pb::RequestKind::Unspecified).await;
    assert!(
        appi.iter()
            .filter(|g| g.jurisdiction() == pb::Jurisdiction::Appi)
            .all(|g| g.provision.contains("Art. 35")),
        "{appi:?}"
    );
    assert_eq!(
        appi.iter()
            .filter(|g| g.jurisdiction() == pb::Jurisdiction::Appi)
            .count(),
        2
    );
    let bad = app
        .requests
        .clone()
        .list_exceptions(pb::ListExceptionsRequest {
            jurisdiction: 42,
            kind: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["jurisdiction"]);
    app.stop().await;
}
