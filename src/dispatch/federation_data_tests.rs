use super::*;
use pb::access_report_part::Part;

/// A report stream of `parts`.
fn report(
    parts: Vec<Result<Part, tonic::Status>>,
) -> impl Stream<Item = Result<pb::AccessReportPart, tonic::Status>> + Unpin {
    tokio_stream::iter(
        parts
            .into_iter()
            .map(|p| p.map(|part| pb::AccessReportPart { part: Some(part) })),
    )
}

fn totals(categories: &[&str], pieces: u64) -> Part {
    Part::Totals(pb::Disclosures {
        categories: categories.iter().map(|c| c.to_string()).collect(),
        sources: vec!["the consumer".into()],
        pieces,
        ..pb::Disclosures::default()
    })
}

fn piece(value: &str) -> pb::DataRecord {
    pb::DataRecord {
        category: "identifiers".into(),
        value: value.into(),
        ..pb::DataRecord::default()
    }
}

fn code(e: DeliveryError) -> (String, bool) {
    match e {
        DeliveryError::Fatal { code, .. } => (code, false),
        DeliveryError::Retryable { code, .. } => (code, true),
    }
}

#[tokio::test]
async fn a_categories_report_brings_up_its_totals() {
    let parts = vec![
        Ok(Part::Header(pb::AccessReportHeader::default())),
        Ok(totals(&["identifiers", "other: loyalty tier"], 3)),
    ];
    let Carried::Disclosures(d) = carried(report(parts), Carry::Disclosures(3)).await.unwrap()
    else {
        panic!("records from a categories report");
    };
    assert_eq!(d.pieces, 3);
    assert_eq!(
        d.categories.into_iter().collect::<Vec<_>>(),
        ["identifiers", "other: loyalty tier"]
    );
}

#[tokio::test]
async fn a_categories_report_that_does_not_add_up_is_not_carried() {
    let cases = [
        // Fewer pieces than the record counts.
        (vec![Ok(totals(&["identifiers"], 2))], "DATA_NOT_CARRIED"),
        // No totals at all.
        (vec![], "DATA_NOT_CARRIED"),
        // A category no record may have.
        (vec![Ok(totals(&["gossip"], 3))], "INVALID_RESULT"),
        // A label on two lines.
        (
            vec![Ok(totals(&["other: loyalty\ntier"], 3))],
            "INVALID_RESULT",
        ),
        // The count is settled before the names.
        (vec![Ok(totals(&["gossip"], 2))], "DATA_NOT_CARRIED"),
        // More text than one result holds.
        (
            vec![Ok(totals(&[&"x".repeat(MAX_DATA_RECORD_BYTES + 1)], 3))],
            "DATA_NOT_CARRIED",
        ),
    ];
    for (parts, expected) in cases {
        let e = carried(report(parts), Carry::Disclosures(3))
            .await
            .unwrap_err();
        assert_eq!(code(e), (expected.to_string(), false));
    }
}

#[tokio::test]
async fn a_report_that_breaks_off_is_asked_again() {
    for carry in [Carry::Disclosures(1), Carry::Pieces(2)] {
        let parts = vec![
            Ok(Part::Pieces(pb::SpecificPieces {
                processor_id: "warehouse".into(),
                records: vec![piece("a")],
            })),
            Err(tonic::Status::unavailable("connection reset")),
        ];
        let e = carried(report(parts), carry).await.unwrap_err();
        assert_eq!(code(e), ("UNAVAILABLE".to_string(), true), "{carry:?}");
    }
}

#[tokio::test]
async fn pieces_come_up_only_as_many_as_the_record_counts() {
    let part = |values: &[&str]| {
        Ok(Part::Pieces(pb::SpecificPieces {
            processor_id: "warehouse".into(),
            records: values.iter().map(|v| piece(v)).collect(),
        }))
    };
    let parts = vec![part(&["a"]), part(&["b"])];
    let Carried::Records(records) = carried(report(parts), Carry::Pieces(2)).await.unwrap() else {
        panic!("disclosures from a pieces report");
    };
    assert_eq!(records.len(), 2);
    for held in [1, 3] {
        let parts = vec![part(&["a"]), part(&["b"])];
        let e = carried(report(parts), Carry::Pieces(held))
            .await
            .unwrap_err();
        assert_eq!(code(e), ("DATA_NOT_CARRIED".to_string(), false), "{held}");
    }
}
