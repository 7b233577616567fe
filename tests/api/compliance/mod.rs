//! The compliance clock, driven through the server with a manual clock:
//! statutory deadlines and extensions, escalation of silent work, the
//! verification and requester gates, exception grounds by law, the audit
//! trail and the retention purge.

mod audit;
mod deadlines;
mod escalation;
mod gates;
mod retention;

use chrono::{DateTime, Utc};
use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::config::Config;
use dsr_orchestrator::pb;

use crate::harness::*;

/// An instant written as RFC 3339.
pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// The wire form of an instant written as RFC 3339.
pub fn ts(s: &str) -> prost_types::Timestamp {
    dsr_orchestrator::wire::timestamp(at(s))
}

/// An instant of the wire, as chrono's.
pub fn time(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("a timestamp");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

/// A server whose clock stands at `start` and moves only when told,
/// without its background dispatcher (tests run passes with `run_once`),
/// configured by `tweak`.
pub async fn spawn_at(
    db: &TestDb,
    start: &str,
    tweak: impl FnOnce(&mut Config),
) -> (TestApp, ManualClock) {
    let clock = ManualClock::at(at(start));
    let options = manual_options(&clock);
    (TestApp::spawn_with(db, options, tweak).await, clock)
}

/// A server at `start` (as [`spawn_at`]) with one push processor, `name`,
/// that accepts every delivery and then owes the outcome within
/// `completion_days`, reminded at most `reminders` times (`None`: the
/// default); and one deletion for it, from `email`.
pub async fn accepting_processor(
    db: &TestDb,
    start: &str,
    name: &str,
    completion_days: u64,
    reminders: Option<u32>,
    email: &str,
) -> (TestApp, ManualClock, FakeProcessor, pb::DataSubjectRequest) {
    let (app, clock) = spawn_at(db, start, |_| {}).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    let mut processor = push_processor(name, &fake.endpoint());
    processor.completion_timeout = ms(completion_days * 86_400_000);
    processor.max_reminders = reminders;
    register(&app, processor).await;
    let made = submit(&app, deletion(email)).await;
    (app, clock, fake, made)
}

/// An operator's re-arm of the escalated instruction `id`.
pub async fn rearm(app: &TestApp, id: &str) {
    app.instructions
        .clone()
        .retry_instruction(pb::RetryInstructionRequest {
            instruction_id: id.to_string(),
        })
        .await
        .unwrap();
}

/// A manual processor handling every kind, accepting emails.
pub fn manual_processor(id: &str) -> pb::Processor {
    pb::Processor {
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
        }),
        supported_kinds: vec![
            pb::RequestKind::Delete as i32,
            pb::RequestKind::Access as i32,
            pb::RequestKind::Object as i32,
        ],
        ..push_processor(id, "http://127.0.0.1:1")
    }
}

/// A deletion under `jurisdiction`, for `email`.
pub fn deletion_under(email: &str, jurisdiction: pb::Jurisdiction) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        jurisdiction: jurisdiction as i32,
        ..deletion(email)
    }
}

/// Writes a compliance file (and the files it names) into `dir`; returns
/// its path. `{dir}` in `text` stands for the directory.
pub fn compliance_file(
    dir: &std::path::Path,
    text: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let path = dir.join("compliance.yaml");
    std::fs::write(&path, text.replace("{dir}", &dir.display().to_string())).unwrap();
    path
}
