//! The suppression list (Cal. Civ. Code 1798.105(c)(2)): a person whose
//! deletion was carried out is found by any written form of their
//! identifiers, and nobody else; an operator can take them off again,
//! recorded in the audit trail.

use std::time::Duration;

use dsr_orchestrator::pb;

use super::*;
use crate::backends;

backends!(a_deleted_person_is_found_by_any_form_and_nobody_else);

fn identity(kind: pb::IdentityType, value: &str) -> pb::SubjectIdentity {
    pb::SubjectIdentity {
        r#type: kind as i32,
        value: value.into(),
    }
}

async fn check(app: &TestApp, identities: Vec<pb::SubjectIdentity>) -> Vec<bool> {
    let mut client =
        dsr_orchestrator::pb::data_protection_service_client::DataProtectionServiceClient::new(
            app.channel(),
        );
    client
        .check_suppression(pb::CheckSuppressionRequest { identities })
        .await
        .unwrap()
        .into_inner()
        .results
        .iter()
        .map(|r| r.suppressed)
        .collect()
}

/// A fulfilled deletion puts its person on the list once erased; a
/// cancelled deletion, an unverified one and an access request do not.
async fn a_deleted_person_is_found_by_any_form_and_nobody_else(db: TestDb) {
    let app = TestApp::spawn_with(&db, dsr_orchestrator::startup::Options::default(), |c| {
        c.erase_interval = Duration::from_millis(20);
    })
    .await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let manual = {
        let mut p = pull_processor("desk", 60_000);
        p.adapter = Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
        });
        p
    };
    register(&app, manual).await;

    let mut deleted = deletion_of(
        "Ada.Lovelace@Example.com",
        "+44 20 7946 0958",
        "Ada  Lovelace",
    );
    deleted.processor_ids = vec!["vendor".into()];
    let deleted = submit(&app, deleted).await;
    watch_to_end(&app.requests, &deleted.request_id).await;
    let mut cancelled = deletion("carl.cancel@example.org");
    cancelled.processor_ids = vec!["desk".into()];
    let cancelled = submit(&app, cancelled).await;
    app.requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: cancelled.request_id.clone(),
            reason: "withdrawn".into(),
        })
        .await
        .unwrap();
    let mut unverified = deletion("una.verified@example.org");
    unverified.verification = Some(pb::Verification {
        level: pb::VerificationLevel::None as i32,
        method: String::new(),
    });
    let unverified = submit(&app, unverified).await;
    let mut access = deletion("alex.access@example.org");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::Categories as i32;
    access.processor_ids = vec!["vendor".into()];
    let access = submit(&app, access).await;
    watch_to_end(&app.requests, &access.request_id).await;
    // No processor takes an IP address: fulfilled, by nobody.
    let mut untaken = deletion("unused@example.org");
    untaken.subject_identities = vec![identity(pb::IdentityType::IpAddress, "198.51.100.23")];
    let untaken = submit(&app, untaken).await;
    assert!(untaken.instructions.is_empty());
    for r in [&deleted, &cancelled, &unverified, &untaken] {
        wait_erased(&app, &r.request_id).await;
    }

    use pb::IdentityType::{Email, Name, Phone};
    assert_eq!(
        check(
            &app,
            vec![
                identity(Email, "  ada.lovelace@example.COM "),
                identity(Phone, "0044 20 7946 0958"),
                identity(Phone, "+44 (20) 7946-0958"),
                identity(Name, "ada lovelace"),
                identity(Email, "ada.lovelace@example.net"),
                identity(Email, "carl.cancel@example.org"),
                identity(Email, "una.verified@example.org"),
                identity(Email, "alex.access@example.org"),
                identity(pb::IdentityType::IpAddress, "198.51.100.23"),
            ]
        )
        .await,
        [true, true, true, true, false, false, false, false, false]
    );
    let mut client =
        dsr_orchestrator::pb::data_protection_service_client::DataProtectionServiceClient::new(
            app.channel(),
        );
    let since = client
        .check_suppression(pb::CheckSuppressionRequest {
            identities: vec![identity(Email, "ada.lovelace@example.com")],
        })
        .await
        .unwrap()
        .into_inner()
        .results[0]
        .since;
    assert_eq!(since, record(&app, &deleted.request_id).await.responded_at);
    let bad = client
        .check_suppression(pb::CheckSuppressionRequest { identities: vec![] })
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["identities"]);

    // Asked to be known again: the entry goes, and the deletion's trail
    // says who took it off and why.
    let removed = client
        .remove_suppression(pb::RemoveSuppressionRequest {
            identities: vec![identity(Email, "ADA.LOVELACE@example.com")],
            reason: "the customer signed up again and asked to be contacted".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed, 1);
    assert_eq!(
        check(
            &app,
            vec![
                identity(Email, "ada.lovelace@example.com"),
                identity(Phone, "+442079460958")
            ]
        )
        .await,
        [false, true],
        "only that identity"
    );
    let events = app
        .store
        .events_after(
            dsr_orchestrator::domain::RequestId::parse(&deleted.request_id).unwrap(),
            0,
            100,
        )
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        last.kind,
        dsr_orchestrator::store::EventKind::SuppressionRemoved
    );
    assert_eq!(last.actor.as_ref().unwrap().to_string(), "anonymous");
    assert_eq!(
        last.note.as_deref(),
        Some("the customer signed up again and asked to be contacted")
    );
    let trail = verify_trail(&app, &deleted.request_id).await;
    assert!(trail.intact, "{trail:?}");
    assert_nowhere(
        &db,
        &["ada.lovelace@example.com", "7946 0958", "carl.cancel"],
    )
    .await;
    app.stop().await;
}
