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
//! What cannot be carried is not dropped in silence: the instruction
//! escalates (`DATA_NOT_CARRIED`) for an operator, who reads the
//! downstream report and resolves it. That is a categories-only request
//! whose downstream holds records (its report gives categories, not
//! records, and a result is made of records); a downstream request only
//! partly fulfilled that holds records (they cannot come with a denial or
//! a failure); more than one result holds ([`MAX_DATA_RECORDS`] records,
//! [`MAX_DATA_RECORD_BYTES`] of their text); and a report that does not
//! hold as many records as the record counts (some did not open there).

use tokio_stream::StreamExt;

use super::adapter::{Delivery, DeliveryError};
use super::grpc::classify;
use crate::domain::{AccessScope, MAX_DATA_RECORD_BYTES, MAX_DATA_RECORDS, RequestKind};
use crate::pb;
use crate::wire;

/// Why an answer escalates when the data cannot be carried up.
pub const DATA_NOT_CARRIED: &str = "DATA_NOT_CARRIED";

/// What an operator does about data that cannot be carried.
const READ_IT_THERE: &str = "read its access report and resolve this instruction";

/// How many data records `record`'s downstream processors returned that
/// the answer to `delivery` must carry up (`None`: nothing to carry: not
/// an access request, nothing held, or a downstream request cancelled,
/// whose answers are not given out); an error when they cannot be.
pub fn to_carry(
    delivery: &Delivery<'_>,
    record: &pb::CompletionRecord,
) -> Result<Option<usize>, DeliveryError> {
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
        return not_carried(format!(
            "the downstream request holds {held} data records, and a categories-only \
             request's report does not carry them: {READ_IT_THERE}"
        ));
    }
    if held > MAX_DATA_RECORDS {
        return not_carried(format!(
            "the downstream request holds {held} data records, more than one result \
             carries ({MAX_DATA_RECORDS}): {READ_IT_THERE}"
        ));
    }
    Ok(Some(held))
}

/// The specific pieces of a downstream access report, every processor's,
/// in the report's order: the `held` records its record counts, within
/// what one result carries.
pub async fn pieces(
    mut report: tonic::Streaming<pb::AccessReportPart>,
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
