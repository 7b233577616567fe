//! `/metrics` on a fresh replica: every family is there before anything
//! happened (zeros, and the build-info gauge), under the same names real
//! traffic gives them, and every family the operations guide documents.

use std::collections::BTreeMap;

use dsr_orchestrator::pb;

use crate::backends;
use crate::harness::*;

backends!(every_family_is_listed_from_startup,);

/// Family name -> its `# TYPE` kind, each family listed once.
fn families(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let before = out.insert(name.to_string(), kind.to_string());
            assert!(before.is_none(), "{name} is listed twice:\n{text}");
        }
    }
    out
}

/// The metric names in the operations guide's metrics table.
fn documented() -> Vec<String> {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    guide
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let kind = *cells.get(2)?;
            let name = cells.get(1)?.strip_prefix("`dsr_")?.strip_suffix('`')?;
            ["counter", "gauge", "histogram"]
                .contains(&kind)
                .then(|| format!("dsr_{name}"))
        })
        .collect()
}

async fn every_family_is_listed_from_startup(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let (status, fresh) = app.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let at_start = families(&fresh);
    let documented = documented();
    assert!(documented.len() >= 20, "{documented:?}");
    for name in &documented {
        assert!(
            at_start.contains_key(name),
            "{name} missing at start:\n{fresh}"
        );
    }
    for name in at_start.keys() {
        assert!(documented.contains(name), "{name} is not documented");
    }
    // Nothing was counted yet but the dispatcher's passes: every other
    // counter and histogram count is zero.
    for line in fresh
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("dsr_dispatch_passes_total"))
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        if series.contains("_total") || series.contains("_count") {
            assert_eq!(value, "0", "{line}");
        }
    }
    // The listener's bound is there before any call: unset, half the
    // descriptor limit, 256 to 65,536.
    let bound = fresh
        .lines()
        .find_map(|l| l.strip_prefix("dsr_grpc_connections_max "))
        .unwrap_or_else(|| panic!("no dsr_grpc_connections_max:\n{fresh}"));
    let bound: u64 = bound.parse().expect("a whole number");
    assert!((256..=65_536).contains(&bound), "{bound}");
    let backend = if db.postgres_name().is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let info = fresh
        .lines()
        .find(|l| l.starts_with("dsr_build_info{"))
        .unwrap_or_else(|| panic!("no dsr_build_info:\n{fresh}"));
    assert!(info.contains(&format!("backend=\"{backend}\"")), "{info}");
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    assert!(info.ends_with(" 1"), "{info}");

    // Traffic gives the families labelled series under the same names.
    let fakes = push_processors(&app, &["ok"], Reply::done(pb::Outcome::Completed)).await;
    let r = submit(&app, deletion("families@example.com")).await;
    wait_for_state(
        &app,
        &r.instructions[0].instruction_id,
        pb::InstructionState::Completed,
    )
    .await;
    let (_, busy) = app.admin_get("/metrics").await;
    assert_eq!(families(&busy), at_start, "{busy}");
    assert!(
        busy.contains(r#"dsr_instructions_claimed_total{processor="ok",reason="first"} 1"#),
        "{busy}"
    );
    drop(fakes);
    app.stop().await;
}
