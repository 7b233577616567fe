//! `GetAccessReport`: what the business owes the person for a completed
//! access or portability request, streamed.
//!
//! The report is built from the completion record (which processor
//! answered what, under which display name) and each completed
//! instruction's stored data records (those of its result, then each
//! uploaded chunk; or, for a categories-only federated answer, the
//! disclosures it carried up), one batch at a time: a part for the processor's
//! disclosures, then its specific pieces in parts of [`PIECES_PER_PART`]
//! when the person asked for them, then the totals. Only one batch (at
//! most 10,000 records) and the sets of category, source, purpose and
//! recipient names are held, never the whole answer, and the stream's
//! channel is short, so a slow reader holds the producer back instead of
//! the server buffering the report.

use tokio::sync::mpsc;
use tonic::{Request, Status};

use super::error::{ApiError, ApiResult};
use super::request_service::{RequestApi, visible};
use crate::auth::Caller;
use crate::domain::export::pieces_owed;
use crate::domain::{
    AccessScope, CompletionRecord, DataRecord, Disclosures, InstructionId, InstructionState,
    OverallOutcome, ProcessorLine, RequestStatus,
};
use crate::pb;
use crate::pb::access_report_part::Part;
use crate::store::{RecordBatch, Store};
use crate::wire;

impl RequestApi {
    /// The completion record of a completed access or portability request
    /// `caller` may see, its scope, and whether the specific pieces are
    /// part of what the person gets.
    pub(super) async fn finished_access<T>(
        &self,
        request: &Request<T>,
        id: &str,
    ) -> ApiResult<(CompletionRecord, Option<AccessScope>, bool)> {
        let id = wire::parse_request_id(id, "request_id")?;
        tracing::Span::current().record("request_id", tracing::field::display(id));
        let summary = self.store.request(id).await?;
        visible(&Caller::of(request), &summary)?;
        // Open: FAILED_PRECONDITION, the record is written when it finishes.
        let (record, _, _) = self.store.completion_record(id).await?;
        let pieces = scope_of(&record, summary.access_scope)?;
        // Withdrawn: what processors answered before the cancel is not
        // given out.
        if summary.status == RequestStatus::Cancelled {
            return Err(ApiError::FailedPrecondition(format!(
                "request {id} was cancelled: a cancelled request has no access report or export"
            )));
        }
        // Denied at the gate: no processor was asked, and an empty report
        // would read as "nothing is held about you".
        if record.outcome == OverallOutcome::DeniedUnverified {
            return Err(ApiError::FailedPrecondition(format!(
                "request {id} was denied: its verification is below the minimum for its \
                 kind, no processor was asked, and it has no access report or export"
            )));
        }
        if summary.identities_erased_at.is_some() {
            return Err(erased(id));
        }
        Ok((record, summary.access_scope, pieces))
    }

    /// Who fetches a report or an export, now.
    pub(super) fn fetch<T>(&self, request: &Request<T>) -> Fetch {
        Fetch {
            actor: Caller::of(request).actor(),
            at: self.clock.now(),
        }
    }
}

/// Most specific pieces in one part of the stream.
pub const PIECES_PER_PART: usize = 500;

/// What the report covers, checked before the stream starts: the record
/// of a finished ACCESS or PORTABILITY request, and whether the specific
/// pieces are in it.
pub fn scope_of(record: &CompletionRecord, scope: Option<AccessScope>) -> ApiResult<bool> {
    pieces_owed(record.kind, scope).ok_or_else(|| {
        ApiError::FailedPrecondition(format!("a {} request has no access report", record.kind))
    })
}

/// Sends the report of `record` into `tx`, stopping early if the reader
/// went away; a failure to read is the stream's last item.
pub async fn stream(
    store: Store,
    record: CompletionRecord,
    scope: Option<AccessScope>,
    pieces: bool,
    fetched: Fetch,
    tx: mpsc::Sender<Result<pb::AccessReportPart, Status>>,
) {
    if let Err(status) = produce(&store, &record, scope, pieces, &fetched, &tx).await {
        let _ = tx.send(Err(status)).await;
    }
}

async fn produce(
    store: &Store,
    record: &CompletionRecord,
    scope: Option<AccessScope>,
    pieces: bool,
    fetched: &Fetch,
    tx: &mpsc::Sender<Result<pb::AccessReportPart, Status>>,
) -> Result<(), Status> {
    let send = |part: Part| async move {
        tx.send(Ok(pb::AccessReportPart { part: Some(part) }))
            .await
            .map_err(|_| Status::cancelled("the reader went away"))
    };
    let header = pb::AccessReportHeader {
        request_id: record.request_id.to_string(),
        kind: pb::RequestKind::from(record.kind) as i32,
        jurisdiction: pb::Jurisdiction::from(record.jurisdiction) as i32,
        access_scope: if pieces {
            pb::AccessScope::SpecificPieces as i32
        } else {
            scope.map_or(0, |_| pb::AccessScope::Categories as i32)
        },
        submitted_at: Some(wire::timestamp(record.submitted_at)),
        responded_at: Some(wire::timestamp(record.responded_at)),
    };
    send(Part::Header(header)).await?;
    let mut totals = Disclosures::default();
    for line in &record.lines {
        // The disclosures come first, so the records are read twice: once
        // to fold them, once (when asked for) to send them, one batch at
        // a time.
        let batches = batches_of(store, line).await?;
        let mut disclosed = Disclosures::default();
        for batch in &batches {
            let batch = store
                .batch_disclosures(line.instruction_id, *batch)
                .await
                .map_err(ApiError::from)?;
            disclosed.merge(&batch);
        }
        if disclosed.pieces < u64::from(line.data_records) {
            return Err(erased(record.request_id).into());
        }
        totals.merge(&disclosed);
        let explanation = match line.state {
            InstructionState::Failed => line.reason.clone(),
            _ => line.explanation.clone(),
        };
        send(Part::Processor(pb::ProcessorDisclosures {
            processor_id: line.processor_id.to_string(),
            display_name: line.display_name.clone(),
            state: wire::instruction_state_pb(line.state) as i32,
            exception: line
                .exception
                .map_or(0, |e| pb::DeletionException::from(e) as i32),
            explanation,
            disclosures: Some(disclosures_pb(&disclosed)),
        }))
        .await?;
        if pieces {
            for batch in &batches {
                let records = read(store, line.instruction_id, *batch).await?;
                for chunk in records.chunks(PIECES_PER_PART) {
                    send(Part::Pieces(pieces_pb(line.processor_id.as_str(), chunk))).await?;
                }
            }
        }
    }
    // The fetch is on the audit trail before the report is whole.
    fetched
        .record(
            store,
            record,
            if pieces {
                "access report with specific pieces"
            } else {
                "access report"
            },
        )
        .await?;
    send(Part::Totals(disclosures_pb(&totals))).await
}

/// The answer once a request's data is gone.
fn erased(id: crate::domain::RequestId) -> ApiError {
    ApiError::FailedPrecondition(format!(
        "the data of request {id} was erased after its report window"
    ))
}

/// Who is fetching, for the audit trail.
pub struct Fetch {
    /// The caller.
    pub actor: crate::domain::Actor,
    /// When.
    pub at: crate::domain::Timestamp,
}

impl Fetch {
    /// Appends the fetch of `what` to the request's audit trail.
    pub(super) async fn record(
        &self,
        store: &Store,
        record: &CompletionRecord,
        what: &str,
    ) -> Result<(), Status> {
        store
            .record_fetch(record.request_id, what, &self.actor, self.at)
            .await
            .map_err(|e| ApiError::from(e).into())
    }
}

/// The batches of a completed line's records, in the store's one order;
/// none for a line that did not complete.
pub(super) async fn batches_of(
    store: &Store,
    line: &ProcessorLine,
) -> Result<Vec<RecordBatch>, Status> {
    if line.state != InstructionState::Completed {
        return Ok(Vec::new());
    }
    Ok(store
        .record_batches(line.instruction_id)
        .await
        .map_err(ApiError::from)?)
}

pub(super) async fn read(
    store: &Store,
    id: InstructionId,
    batch: RecordBatch,
) -> Result<Vec<DataRecord>, Status> {
    Ok(store
        .batch_records(id, batch)
        .await
        .map_err(ApiError::from)?)
}

fn pieces_pb(processor: &str, records: &[DataRecord]) -> pb::SpecificPieces {
    pb::SpecificPieces {
        processor_id: processor.to_string(),
        records: records.iter().map(wire::data_record_pb).collect(),
    }
}

fn disclosures_pb(d: &Disclosures) -> pb::Disclosures {
    let list = |set: &std::collections::BTreeSet<String>| set.iter().cloned().collect();
    pb::Disclosures {
        categories: list(&d.categories),
        sources: list(&d.sources),
        purposes: list(&d.purposes),
        third_parties: list(&d.third_parties),
        sold_or_shared: list(&d.sold_or_shared),
        disclosed_for_business_purpose: list(&d.disclosed_for_business_purpose),
        pieces: d.pieces,
    }
}
