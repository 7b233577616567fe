//! What the server does before it takes a call: it refuses to listen
//! beyond loopback without authentication unless told to accept the risk,
//! and then says so.

use dsr_orchestrator::startup::{Application, Options};

use crate::backends;
use crate::harness::app::test_config;
use crate::harness::*;

backends!(listening_beyond_loopback_needs_authentication);

async fn listening_beyond_loopback_needs_authentication(db: TestDb) {
    let mut config = test_config(&db);
    config.listen = "0.0.0.0:0".parse().unwrap();
    let refused = Application::build(&config, Options::default())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(refused.contains("--auth-file"), "{refused}");
    assert!(refused.contains("--insecure-no-auth"), "{refused}");

    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.insecure_no_auth = true;
    })
    .await;
    let (status, body) = app.admin_get("/readyz").await;
    assert_eq!(status, 200);
    assert!(body.contains("insecure"), "{body}");
    app.stop().await;
}
