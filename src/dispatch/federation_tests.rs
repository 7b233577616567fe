use super::*;
use pb::InstructionState as S;

fn line(id: &str, state: S) -> pb::ProcessorLine {
    pb::ProcessorLine {
        processor_id: id.into(),
        display_name: format!("{id} Ltd"),
        country: "JP".into(),
        state: state as i32,
        ..pb::ProcessorLine::default()
    }
}

fn record(outcome: pb::OverallOutcome, lines: Vec<pb::ProcessorLine>) -> pb::CompletionRecord {
    pb::CompletionRecord {
        outcome: outcome as i32,
        lines,
        ..pb::CompletionRecord::default()
    }
}

#[test]
fn outcomes_follow_the_downstream_lines() {
    use pb::OverallOutcome as O;
    let done = record(
        O::Fulfilled,
        vec![line("a", S::Completed), line("b", S::NoData)],
    );
    assert_eq!(
        result_of_record(&done).outcome,
        pb::Outcome::Completed as i32
    );
    let none = record(O::Fulfilled, vec![line("a", S::NoData)]);
    assert_eq!(result_of_record(&none).outcome, pb::Outcome::NoData as i32);
    let mut kept = line("b", S::Denied);
    kept.exception = pb::DeletionException::CcpaLegalObligation as i32;
    kept.explanation = "tax records kept 7 years".into();
    let partial = record(O::PartiallyFulfilled, vec![line("a", S::Completed), kept]);
    let r = result_of_record(&partial);
    assert_eq!(r.outcome, pb::Outcome::Denied as i32);
    assert_eq!(
        r.exception,
        pb::DeletionException::CcpaLegalObligation as i32
    );
    assert_eq!(
        r.explanation,
        "b: DELETION_EXCEPTION_CCPA_LEGAL_OBLIGATION: tax records kept 7 years"
    );
    let mut broken = line("c", S::Failed);
    broken.reason = "disk full".into();
    let failed = record(O::PartiallyFulfilled, vec![line("a", S::Completed), broken]);
    let r = result_of_record(&failed);
    assert_eq!(r.outcome, pb::Outcome::Failed as i32);
    assert_eq!(r.reason, "downstream processors failed: c: disk full");
    let cancelled = record(O::Cancelled, vec![line("a", S::Cancelled)]);
    assert_eq!(
        result_of_record(&cancelled).outcome,
        pb::Outcome::Failed as i32
    );
}

#[test]
fn the_chain_becomes_sub_processors_once_each() {
    let mut a = line("a", S::Completed);
    a.sub_processors = vec![pb::SubProcessor {
        name: "b Ltd".into(),
        country: "JP".into(),
    }];
    let r = result_of_record(&record(
        pb::OverallOutcome::Fulfilled,
        vec![a, line("b", S::Completed)],
    ));
    let names: Vec<&str> = r.sub_processors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a Ltd", "b Ltd"]);
    assert!(wire::instruction_result(Some(r)).is_ok());
}

#[test]
fn a_country_not_taken_here_becomes_unknown() {
    let mut a = line("a", S::Completed);
    a.country = "UK".into();
    a.sub_processors = vec![pb::SubProcessor {
        name: "Archive GmbH".into(),
        country: "DE".into(),
    }];
    let r = result_of_record(&record(pb::OverallOutcome::Fulfilled, vec![a]));
    let countries: Vec<&str> = r
        .sub_processors
        .iter()
        .map(|s| s.country.as_str())
        .collect();
    assert_eq!(countries, ["", "DE"]);
    assert!(wire::instruction_result(Some(r)).is_ok());
}
