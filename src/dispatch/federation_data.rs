//! What a closed downstream access request found, brought up.
//!
//! A federated ACCESS or PORTABILITY instruction is answered by the
//! downstream request's completion record, which counts the data records
//! its processors returned but does not hold them. Without them the
//! upstream report and export would leave out everything the group
//! company holds while the record said the request was fulfilled. So
//! before answering, the adapter reads the downstream request's access
//! report (`GetAccessReport`, which its submitter may) and carries its
//! specific pieces up as the instruction's records.
//!
//! A categories-only request's report holds no records, only the seven
//! disclosures of a right-to-know response and how many pieces they were
//! made of. For such a request the adapter carries the report's totals up
//! instead (checked by the rules data records' names keep), sealed where
//! records would be, and the upstream report shows them for this
//! processor as they are: the records stay with the group company, as the
//! person asked only for categories. The record line counts the pieces
//! they were made of as its data records, so an orchestrator further up a
//! chain of federations knows there is something to carry, and the report
//! knows when it was erased.
//!
//! What cannot be carried is not dropped in silence: the instruction
//! escalates (`DATA_NOT_CARRIED`) for an operator, who reads the
//! downstream report and resolves it. That is a downstream request only
//! partly fulfilled that holds records (they cannot come with a denial or
//! a failure); more than one result holds ([`MAX_DATA_RECORDS`] records,
//! [`MAX_DATA_RECORD_BYTES`] of their text, or of the disclosures'
//! names); and a report that does not account for as many records as the
//! record counts (some did not open there).

use tokio_stream::{Stream, StreamExt};

use super::adapter::{Delivery, DeliveryError};
use super::grpc::classify;
use crate::domain::{
    AccessScope, Disclosures, MAX_DATA_RECORD_BYTES, MAX_DATA_RECORDS, RequestKind, Violations,
};
use crate::pb;
use crate::wire;

/// Why an answer escalates when the data cannot be carried up.
pub const DATA_NOT_CARRIED: &str = "DATA_NOT_CARRIED";

/// What an operator does about data that cannot be carried.
const READ_IT_THERE: &str = "read its access report and resolve this instruction";

/// What the answer brings up of the data records a downstream request's
/// processors returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    /// The records themselves (specific pieces, or portability): this many.
    Pieces(usize),
    /// The disclosures a categories-only report made of this many records.
    Disclosures(usize),
}

/// What came up.
#[derive(Clone, Debug, PartialEq)]
pub enum Carried {
    /// The specific pieces, every downstream processor's.
    Records(Vec<pb::DataRecord>),
    /// The categories-only report's totals.
    Disclosures(Disclosures),
}

/// What of the data records `record`'s downstream processors returned the
/// answer to `delivery` must carry up (`None`: nothing to carry: not an
/// access request, nothing held, or a downstream request cancelled, whose
/// answers are not given out); an error when they cannot be.
pub fn to_carry(
    delivery: &Delivery<'_>,
    record: &pb::CompletionRecord,
) -> Result<Option<Carry>, DeliveryError> {
    let held: usize = record.lines.iter().map(|l| l.data_records as usize).sum();
    let kind = delivery.instruction.kind;
    if held == 0 || !kind.returns_data() {
        return Ok(None);
    }
    let not_carried = |why: String| Err(DeliveryError::fatal(DATA_NOT_CARRIED, why));
    match pb::OverallOutcome::try_from(record.outcome) {
        Ok(pb::OverallOutcome::Fulfilled) => {}
        Ok(pb::OverallOutcome::Cancelled | pb::OverallOutcome::DeniedUnverified) => {
            return Ok(None);
        }
        _ => {
            return not_carried(format!(
                "the downstream request was not fulfilled by every processor, and the \
                 {held} data records it holds cannot come with a denial or a failure: \
                 {READ_IT_THERE}"
            ));
        }
    }
    let pieces = kind == RequestKind::Portability
        || delivery.request.and_then(|r| r.access_scope) == Some(AccessScope::SpecificPieces);
    if !pieces {
        return Ok(Some(Carry::Disclosures(held)));
    }
    if held > MAX_DATA_RECORDS {
        return not_carried(format!(
            "the downstream request holds {held} data records, more than one result \
             carries ({MAX_DATA_RECORDS}): {READ_IT_THERE}"
        ));
    }
    Ok(Some(Carry::Pieces(held)))
}

/// A downstream access report as it streams in.
pub trait Report: Stream<Item = Result<pb::AccessReportPart, tonic::Status>> + Unpin {}

impl<S: Stream<Item = Result<pb::AccessReportPart, tonic::Status>> + Unpin> Report for S {}

/// Reads what `carry` says from a downstream access `report`.
pub async fn carried(report: impl Report, carry: Carry) -> Result<Carried, DeliveryError> {
    match carry {
        Carry::Pieces(held) => pieces(report, held).await.map(Carried::Records),
        Carry::Disclosures(held) => disclosures(report, held).await.map(Carried::Disclosures),
    }
}

/// The specific pieces of a downstream access report, every processor's,
/// in the report's order: the `held` records its record counts, within
/// what one result carries.
async fn pieces(
    mut report: impl Report,
    held: usize,
) -> Result<Vec<pb::DataRecord>, DeliveryError> {
    let not_carried = |why: String| Err(DeliveryError::fatal(DATA_NOT_CARRIED, why));
    let mut records = Vec::with_capacity(held);
    let mut bytes = 0;
    while let Some(part) = report.next().await {
        let part = part.map_err(|s| classify(&s))?;
        let Some(pb::access_report_part::Part::Pieces(p)) = part.part else {
            continue;
        };
        bytes += p
            .records
            .iter()
            .map(wire::data_record_text_bytes)
            .sum::<usize>();
        records.extend(p.records);
        if bytes > MAX_DATA_RECORD_BYTES {
            return not_carried(format!(
                "the downstream request's data records hold more text than one result \
                 carries ({MAX_DATA_RECORD_BYTES} bytes): {READ_IT_THERE}"
            ));
        }
        if records.len() > held {
            break;
        }
    }
    if records.len() != held {
        return not_carried(format!(
            "the downstream report gave {} data records where its record counts {held} \
             (some may not open there): {READ_IT_THERE}",
            records.len()
        ));
    }
    Ok(records)
}

/// The totals of a downstream categories-only access report: the
/// disclosures of the `held` records its record counts, their names
/// within what one result's text may hold.
async fn disclosures(mut report: impl Report, held: usize) -> Result<Disclosures, DeliveryError> {
    let not_carried = |why: String| Err(DeliveryError::fatal(DATA_NOT_CARRIED, why));
    let mut totals = None;
    while let Some(part) = report.next().await {
        let part = part.map_err(|s| classify(&s))?;
        if let Some(pb::access_report_part::Part::Totals(t)) = part.part {
            totals = Some(t);
            break;
        }
    }
    let Some(t) = totals else {
        return not_carried(format!(
            "the downstream report ended without its totals: {READ_IT_THERE}"
        ));
    };
    let names = [
        &t.categories,
        &t.sources,
        &t.purposes,
        &t.third_parties,
        &t.sold_or_shared,
        &t.disclosed_for_business_purpose,
    ];
    let bytes: usize = names.into_iter().flatten().map(String::len).sum();
    if bytes > MAX_DATA_RECORD_BYTES {
        return not_carried(format!(
            "the downstream report's disclosures hold more text than one result carries \
             ({MAX_DATA_RECORD_BYTES} bytes): {READ_IT_THERE}"
        ));
    }
    if t.pieces != held as u64 {
        return not_carried(format!(
            "the downstream report's disclosures were made of {} data records where its \
             record counts {held} (some may not open there): {READ_IT_THERE}",
            t.pieces
        ));
    }
    let set = |list: Vec<String>| list.into_iter().collect();
    let disclosures = Disclosures {
        categories: set(t.categories),
        sources: set(t.sources),
        purposes: set(t.purposes),
        third_parties: set(t.third_parties),
        sold_or_shared: set(t.sold_or_shared),
        disclosed_for_business_purpose: set(t.disclosed_for_business_purpose),
        pieces: t.pieces,
    };
    // They go into the person's report as they are.
    let mut v = Violations::new();
    disclosures.check(&mut v);
    if !v.is_empty() {
        let why =
            format!("the downstream report's disclosures break the rules of data records: {v}");
        return Err(DeliveryError::fatal("INVALID_RESULT", why));
    }
    Ok(disclosures)
}

#[cfg(test)]
#[path = "federation_data_tests.rs"]
mod tests;
