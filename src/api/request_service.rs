//! `dsr.v1.RequestService`: submit, read, list, cancel and watch requests,
//! and fetch their completion records.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::error::{ApiError, ApiResult};
use super::page::{bind, page_size, page_token, request_filters, unbind};
use super::watch_limits::WatchLimits;
use super::{access_report, export};
use crate::auth::Caller;
use crate::auth::recheck::Recheck;
use crate::clock::Clock;
use crate::compliance_file::CompliancePolicy;
use crate::domain::{RequestId, RequestSummary, Violations, exceptions};
use crate::pb;
use crate::pb::request_service_server::RequestService;
use crate::store::{RequestCursor, RequestFilter, Store};
use crate::wire;

/// Implementation of `RequestService`.
#[derive(Clone)]
pub struct RequestApi {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    /// Ends open watch streams at shutdown, so graceful shutdown is not held
    /// up by clients following long-running requests.
    pub(crate) shutdown: CancellationToken,
    /// Counts submissions.
    pub(crate) metrics: std::sync::Arc<crate::telemetry::Metrics>,
    /// Bounds the open watch streams.
    pub(crate) watches: Arc<WatchLimits>,
    /// The deadlines and verification minimums of each jurisdiction.
    pub(crate) compliance: Arc<CompliancePolicy>,
}

/// `NOT_FOUND` unless `caller` may see request `r`: a submitter sees only
/// the requests it submitted, and to it the others do not exist.
pub(super) fn visible(caller: &Caller, r: &RequestSummary) -> ApiResult<()> {
    if caller.sees_all_requests() || r.submitted_by.as_ref() == Some(&caller.actor()) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("request {}", r.id)))
    }
}

impl RequestApi {
    /// `NOT_FOUND` unless the request exists and `caller` may see it (and
    /// so change it, where its role allows the change); records the id in
    /// the call's span.
    async fn may_change(&self, caller: &Caller, id: RequestId) -> ApiResult<()> {
        tracing::Span::current().record("request_id", tracing::field::display(id));
        visible(caller, &self.store.request(id).await?)
    }

    async fn list(
        &self,
        req: pb::ListRequestsRequest,
        caller: &Caller,
    ) -> ApiResult<pb::ListRequestsResponse> {
        let now = self.clock.now();
        let mut v = Violations::new();
        let size = v.take("page_size", page_size(req.page_size));
        let filter = RequestFilter {
            status: v.take("status", wire::request_status(req.status)).flatten(),
            kind: v
                .take("kind", wire::request_kind_filter(req.kind))
                .flatten(),
            jurisdiction: v
                .take("jurisdiction", wire::jurisdiction_filter(req.jurisdiction))
                .flatten(),
            submitted_after: v
                .take(
                    "",
                    wire::parse_timestamp(req.submitted_after, "submitted_after"),
                )
                .flatten(),
            submitted_before: v
                .take(
                    "",
                    wire::parse_timestamp(req.submitted_before, "submitted_before"),
                )
                .flatten(),
            submitted_by: (!caller.sees_all_requests()).then(|| caller.actor()),
            due_before: v
                .take("", wire::parse_timestamp(req.due_before, "due_before"))
                .flatten(),
            overdue_at: req.overdue.then_some(now),
            needs_attention_at: req.needs_attention.then_some(now),
            order: v
                .take("order_by", wire::request_order(req.order_by))
                .unwrap_or_default(),
        };
        let filters = request_filters(&req, &caller.actor().to_string());
        let after = page_token(&req.page_token).and_then(|t| {
            v.take(
                "page_token",
                unbind(t, &filters).and_then(|c| RequestCursor::decode(&c, filter.order)),
            )
        });
        let (Some(size), true) = (size, v.is_empty()) else {
            return Err(v.into());
        };
        let page = self
            .store
            .list_requests(&filter, after.as_ref(), size)
            .await?;
        Ok(pb::ListRequestsResponse {
            requests: page
                .requests
                .iter()
                .map(|r| wire::request(r, now))
                .collect(),
            next_page_token: page
                .next_page_token
                .map(|t| bind(&t, &filters))
                .unwrap_or_default(),
        })
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RequestEvent, Status>> + Send>>;
type ReportStream = Pin<Box<dyn Stream<Item = Result<pb::AccessReportPart, Status>> + Send>>;
type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl RequestService for RequestApi {
    #[tracing::instrument(skip_all, fields(request_id = tracing::field::Empty))]
    async fn submit_request(
        &self,
        request: Request<pb::SubmitRequestRequest>,
    ) -> Result<Response<pb::DataSubjectRequest>, Status> {
        let now = self.clock.now();
        let actor = Caller::of(&request).actor();
        let new = wire::new_request(request.into_inner(), now).map_err(ApiError::from)?;
        tracing::Span::current().record("request_id", tracing::field::display(new.id));
        let trace = crate::telemetry::current_traceparent();
        let terms = self.compliance.terms(&new, now);
        let intake = self
            .store
            .submit(&new, terms, &actor, now, trace.as_deref())
            .await
            .map_err(ApiError::from)?;
        if intake.created {
            self.metrics
                .request_submitted(new.kind.as_str(), new.jurisdiction.as_str());
            tracing::info!(
                kind = %new.kind,
                jurisdiction = %new.jurisdiction,
                instructions = intake.request.instructions.len(),
                verified = terms.verified,
                "request received"
            );
        }
        Ok(Response::new(wire::request(&intake.request, now)))
    }

    async fn get_request(
        &self,
        request: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::DataSubjectRequest>, Status> {
        let id = wire::parse_request_id(&request.get_ref().request_id, "request_id")
            .map_err(ApiError::from)?;
        let r = self.store.request(id).await.map_err(ApiError::from)?;
        visible(&Caller::of(&request), &r)?;
        Ok(Response::new(wire::request(&r, self.clock.now())))
    }

    async fn list_requests(
        &self,
        request: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let caller = Caller::of(&request);
        Ok(Response::new(
            self.list(request.into_inner(), &caller).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(request_id = tracing::field::Empty))]
    async fn cancel_request(
        &self,
        request: Request<pb::CancelRequestRequest>,
    ) -> Result<Response<pb::DataSubjectRequest>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.take("request_id", RequestId::parse(&req.request_id));
        wire::check_reason(&mut v, "reason", &req.reason);
        let (Some(id), true) = (id, v.is_empty()) else {
            return Err(ApiError::from(v).into());
        };
        self.may_change(&caller, id).await?;
        let actor = caller.actor();
        let (summary, notices) = self
            .store
            .cancel(id, &req.reason, &actor, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(notices, %actor, "request cancelled");
        Ok(Response::new(wire::request(&summary, self.clock.now())))
    }

    type WatchRequestStream = EventStream;

    async fn watch_request(
        &self,
        request: Request<pb::WatchRequestRequest>,
    ) -> Result<Response<Self::WatchRequestStream>, Status> {
        let caller = Caller::of(&request);
        let recheck = request.extensions().get::<Recheck>().cloned();
        let req = request.into_inner();
        let id = wire::parse_request_id(&req.request_id, "request_id").map_err(ApiError::from)?;
        // Subscribe before the first read so no notice can slip between.
        let notices = self.store.subscribe_events();
        visible(
            &caller,
            &self.store.request(id).await.map_err(ApiError::from)?,
        )?;
        let watching = self.watches.open(&caller)?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(super::watch::follow(
            watching,
            recheck,
            self.store.clone(),
            id,
            req.after_sequence,
            notices,
            tx,
            self.shutdown.clone(),
        ));
        let stream = super::watch::to_reader(rx, self.shutdown.clone());
        Ok(Response::new(Box::pin(stream)))
    }

    type GetAccessReportStream = ReportStream;

    #[tracing::instrument(skip_all, fields(request_id = tracing::field::Empty))]
    async fn get_access_report(
        &self,
        request: Request<pb::GetAccessReportRequest>,
    ) -> Result<Response<Self::GetAccessReportStream>, Status> {
        let (record, scope, pieces) = self
            .finished_access(&request, &request.get_ref().request_id)
            .await?;
        let fetch = self.fetch(&request);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(access_report::stream(
            self.store.clone(),
            record,
            scope,
            pieces,
            fetch,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExportAccessDataStream = ExportStream;

    #[tracing::instrument(skip_all, fields(request_id = tracing::field::Empty))]
    async fn export_access_data(
        &self,
        request: Request<pb::ExportAccessDataRequest>,
    ) -> Result<Response<Self::ExportAccessDataStream>, Status> {
        let format = pb::ExportFormat::try_from(request.get_ref().format).map_err(|_| {
            ApiError::from(Violations::one(
                "format",
                "must be one of EXPORT_FORMAT_JSON, EXPORT_FORMAT_CSV",
            ))
        })?;
        let (record, _, pieces) = self
            .finished_access(&request, &request.get_ref().request_id)
            .await?;
        export::exportable(pieces)?;
        let fetch = self.fetch(&request);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(export::stream(
            self.store.clone(),
            record,
            format,
            fetch,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_completion_record(
        &self,
        request: Request<pb::GetCompletionRecordRequest>,
    ) -> Result<Response<pb::CompletionRecord>, Status> {
        let id = wire::parse_request_id(&request.get_ref().request_id, "request_id")
            .map_err(ApiError::from)?;
        let caller = Caller::of(&request);
        if !caller.sees_all_requests() {
            visible(
                &caller,
                &self.store.request(id).await.map_err(ApiError::from)?,
            )?;
        }
        let (record, digest, bytes) = self
            .store
            .completion_record(id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(wire::completion_record(
            &record, &digest, bytes,
        )))
    }

    #[tracing::instrument(skip_all, fields(request_id = tracing::field::Empty))]
    async fn confirm_receipt(
        &self,
        request: Request<pb::ConfirmReceiptRequest>,
    ) -> Result<Response<pb::DataSubjectRequest>, Status> {
        let caller = Caller::of(&request);
        let id = wire::parse_request_id(&request.get_ref().request_id, "request_id")
            .map_err(ApiError::from)?;
        self.may_change(&caller, id).await?;
        let now = self.clock.now();
        let r = self
            .store
            .confirm_receipt(id, &caller.actor(), now)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(actor = %caller.actor(), "receipt confirmed");
        Ok(Response::new(wire::request(&r, now)))
    }

    #[tracing::instrument(skip_all, fields(request_id = tracing::field::Empty))]
    async fn extend_deadline(
        &self,
        request: Request<pb::ExtendDeadlineRequest>,
    ) -> Result<Response<pb::DataSubjectRequest>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.take("request_id", RequestId::parse(&req.request_id));
        let requested = v
            .take("", wire::parse_timestamp(req.new_deadline, "new_deadline"))
            .flatten();
        wire::check_reason(&mut v, "reason", &req.reason);
        let (Some(id), true) = (id, v.is_empty()) else {
            return Err(ApiError::from(v).into());
        };
        self.may_change(&caller, id).await?;
        let now = self.clock.now();
        let r = self
            .store
            .extend_deadline(
                id,
                &self.compliance.deadlines,
                requested,
                &req.reason,
                &caller.actor(),
                now,
            )
            .await
            .map_err(ApiError::from)?;
        tracing::info!(actor = %caller.actor(), "response deadline extended");
        Ok(Response::new(wire::request(&r, now)))
    }

    async fn list_exceptions(
        &self,
        request: Request<pb::ListExceptionsRequest>,
    ) -> Result<Response<pb::ListExceptionsResponse>, Status> {
        let (jurisdiction, kind) = wire::list_filters(request.get_ref()).map_err(ApiError::from)?;
        let grounds = exceptions::CATALOGUE
            .iter()
            .filter(|g| {
                jurisdiction.is_none_or(|j| g.jurisdiction.is_none_or(|own| own == j))
                    && kind.is_none_or(|k| g.kinds.contains(&k))
            })
            .map(wire::exception_ground)
            .collect();
        Ok(Response::new(pb::ListExceptionsResponse { grounds }))
    }

    async fn verify_audit_trail(
        &self,
        request: Request<pb::VerifyAuditTrailRequest>,
    ) -> Result<Response<pb::AuditTrailVerification>, Status> {
        let id = wire::parse_request_id(&request.get_ref().request_id, "request_id")
            .map_err(ApiError::from)?;
        let check = self.store.verify_trail(id).await.map_err(ApiError::from)?;
        if let Some((sequence, problem)) = &check.first_break {
            tracing::warn!(request_id = %id, sequence, problem, "audit trail broken");
        }
        Ok(Response::new(wire::trail_check(&id.to_string(), &check)))
    }
}
