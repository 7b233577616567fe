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
//! records, and a result is made of records), and more records than one
//! result holds ([`MAX_DATA_RECORDS`]).

use tokio_stream::StreamExt;

use super::adapter::{Delivery, DeliveryError};
use super::grpc::classify;
use crate::domain::{AccessScope, MAX_DATA_RECORDS, RequestKind};
use crate::pb;

/// Why an answer escalates when the data cannot be carried up.
pub const DATA_NOT_CARRIED: &str = "DATA_NOT_CARRIED";

/// Whether the answer to `delivery` must carry up the data records that
/// `record`'s downstream processors returned: not when there are none to
/// carry (not an access request, not fulfilled, nothing held); an error
/// when they cannot be carried.
pub fn to_carry(
    delivery: &Delivery<'_>,
    record: &pb::CompletionRecord,
) -> Result<bool, DeliveryError> {
    let held: usize = record.lines.iter().map(|l| l.data_records as usize).sum();
    let kind = delivery.instruction.kind;
    let fulfilled = record.outcome == pb::OverallOutcome::Fulfilled as i32;
    if held == 0 || !fulfilled || !matches!(kind, RequestKind::Access | RequestKind::Portability) {
        return Ok(false);
    }
    let pieces = kind == RequestKind::Portability
        || delivery.request.and_then(|r| r.access_scope) == Some(AccessScope::SpecificPieces);
    if !pieces {
        return Err(DeliveryError::fatal(
            DATA_NOT_CARRIED,
            format!(
                "the downstream request holds {held} data records, and a categories-only \
                 request's report does not carry them: read its access report and resolve \
                 this instruction"
            ),
        ));
    }
    if held > MAX_DATA_RECORDS {
        return Err(DeliveryError::fatal(
            DATA_NOT_CARRIED,
            format!(
                "the downstream request holds {held} data records, more than one result \
                 carries ({MAX_DATA_RECORDS}): read its access report and resolve this \
                 instruction"
            ),
        ));
    }
    Ok(true)
}

/// The specific pieces of a downstream access report, every processor's,
/// in the report's order: at most one more than a result holds, which the
/// result's check then refuses.
pub async fn pieces(
    mut report: tonic::Streaming<pb::AccessReportPart>,
) -> Result<Vec<pb::DataRecord>, DeliveryError> {
    let mut records = Vec::new();
    while let Some(part) = report.next().await {
        let part = part.map_err(|s| classify(&s))?;
        if let Some(pb::access_report_part::Part::Pieces(p)) = part.part {
            records.extend(p.records);
            if records.len() > MAX_DATA_RECORDS {
                records.truncate(MAX_DATA_RECORDS + 1);
                break;
            }
        }
    }
    Ok(records)
}
