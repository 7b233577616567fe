//! Federation: delivering to another dsr-orchestrator (a group company's,
//! say) as one of its callers.
//!
//! An instruction becomes a `SubmitRequest` downstream whose request id is
//! the instruction id, carrying the upstream request's facts (kind, law,
//! when the person asked, channel, requester, verification, access scope)
//! and the identities this processor accepts. The id makes every
//! redelivery an idempotent repeat: after a crash, a lost answer or a
//! retry the downstream answers with the request it already has. The
//! downstream fans out to its own processors; while its request is open
//! the instruction is acknowledged and polled (a reminder, every
//! `poll_interval`, asks `GetRequest`); once it closes, its completion
//! record becomes this instruction's outcome ([`result_of_record`]) and
//! its processor lines this line's sub-processors, so the upstream record
//! shows the whole chain (CCPA 1798.105(c)(3)), and for an access request
//! the data its processors returned comes up with it
//! ([`super::federation_data`]). A cancel notice cancels the downstream
//! request.
//!
//! We authenticate downstream with a bearer token read from a file at each
//! call (so a rotated Secret is used at once), with a client certificate,
//! or both; the downstream principal needs the submitter role.

use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::adapter::{Adapter, Answer, Delivery, DeliveryError, Endpoint, Protocol, local};
use super::federation_data::{self, Carried};
use super::grpc::{Channels, call_to, classify};
use crate::domain::{InstructionId, InstructionResult, is_country_code};
use crate::pb;
use crate::pb::request_service_client::RequestServiceClient;
use crate::wire;

/// Most sub-processors one result names (the domain's limit).
const MAX_SUB_PROCESSORS: usize = 100;
/// Most characters of an explanation or reason (the domain's limit).
const MAX_TEXT: usize = 2000;
/// The label naming the upstream request on the downstream one.
pub const UPSTREAM_LABEL: &str = "dsr.upstream_request_id";

/// Pushes instructions to other orchestrators.
pub struct FederationAdapter {
    channels: Channels,
}

impl FederationAdapter {
    /// An adapter whose connections resolve names through `lookup`.
    pub fn new(lookup: super::lookup::Lookup) -> Self {
        Self {
            channels: Channels::new(lookup),
        }
    }

    fn client(
        &self,
        endpoint: &Endpoint<'_>,
    ) -> Result<RequestServiceClient<Channel>, DeliveryError> {
        self.channels.get(endpoint).map(RequestServiceClient::new)
    }
}

/// `message` as a call to `endpoint`: its deadline, our token, the trace.
fn call<T>(endpoint: &Endpoint<'_>, message: T) -> Result<tonic::Request<T>, DeliveryError> {
    let mut request = call_to(endpoint, message);
    if let Protocol::Dsr {
        token_file: Some(path),
    } = endpoint.protocol
    {
        // A file that cannot be read may be a mount in progress: retried,
        // and escalated if it stays missing.
        let token = std::fs::read_to_string(path).map_err(|e| {
            DeliveryError::retryable(local::TOKEN_FILE, format!("cannot read {path}: {e}"))
        })?;
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
            DeliveryError::fatal(local::TOKEN_FILE, format!("{path} holds no usable token"))
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// The downstream submission of `delivery`.
fn submission(delivery: &Delivery<'_>) -> Result<pb::SubmitRequestRequest, DeliveryError> {
    let Some(facts) = delivery.request else {
        return Err(DeliveryError::retryable(
            local::NO_REQUEST,
            "the request's facts could not be read",
        ));
    };
    let i = delivery.instruction;
    let mut message = pb::SubmitRequestRequest {
        request_id: i.id.to_string(),
        kind: pb::RequestKind::from(i.kind) as i32,
        jurisdiction: pb::Jurisdiction::from(i.jurisdiction) as i32,
        subject_identities: delivery.identities.iter().map(wire::identity_pb).collect(),
        submitted_at: Some(wire::timestamp(i.submitted_at)),
        ..pb::SubmitRequestRequest::default()
    };
    let upstream = wire::request(facts, facts.received_at);
    message.channel = upstream.channel;
    message.requester = upstream.requester;
    message.verification = upstream.verification;
    message.access_scope = upstream.access_scope;
    message.requester_evidence = upstream.requester_evidence;
    message.lookback_start = upstream.lookback_start;
    message
        .labels
        .insert(UPSTREAM_LABEL.to_string(), i.request_id.to_string());
    Ok(message)
}

#[tonic::async_trait]
impl Adapter for FederationAdapter {
    async fn deliver(
        &self,
        endpoint: Endpoint<'_>,
        delivery: Delivery<'_>,
    ) -> Result<Answer, DeliveryError> {
        let mut client = self.client(&endpoint)?;
        let id = delivery.instruction.id.to_string();
        // A reminder asks; a delivery (or a reminder the downstream has
        // no request for) submits, idempotently.
        let known = if delivery.reminder {
            let asked = pb::GetRequestRequest {
                request_id: id.clone(),
            };
            match client.get_request(call(&endpoint, asked)?).await {
                Ok(r) => Some(r.into_inner()),
                Err(s) if s.code() == Code::NotFound => None,
                Err(s) => return Err(classify(&s)),
            }
        } else {
            None
        };
        let downstream = match known {
            Some(r) => r,
            None => client
                .submit_request(call(&endpoint, submission(&delivery)?)?)
                .await
                .map_err(|s| classify(&s))?
                .into_inner(),
        };
        let closed = [
            pb::RequestStatus::Completed as i32,
            pb::RequestStatus::Cancelled as i32,
        ];
        if !closed.contains(&downstream.status) {
            return Ok(Answer::Accepted);
        }
        let asked = pb::GetCompletionRecordRequest {
            request_id: id.clone(),
        };
        let record = client
            .get_completion_record(call(&endpoint, asked)?)
            .await
            .map_err(|s| classify(&s))?
            .into_inner();
        let carried = match federation_data::to_carry(&delivery, &record)? {
            Some(carry) => {
                let asked = pb::GetAccessReportRequest { request_id: id };
                let report = client
                    .get_access_report(call(&endpoint, asked)?)
                    .await
                    .map_err(|s| classify(&s))?
                    .into_inner();
                Some(federation_data::carried(report, carry).await?)
            }
            None => None,
        };
        answer_of_record(&record, carried)
    }

    async fn cancel(
        &self,
        endpoint: Endpoint<'_>,
        instruction: InstructionId,
        reason: &str,
    ) -> Result<(), DeliveryError> {
        let message = pb::CancelRequestRequest {
            request_id: instruction.to_string(),
            reason: reason.chars().take(MAX_TEXT).collect(),
        };
        match self
            .client(&endpoint)?
            .cancel_request(call(&endpoint, message)?)
            .await
        {
            // Never submitted (cancelled before delivery), or closed
            // already: nothing is left to stop.
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(classify(&s)),
        }
    }
}

/// The answer a closed downstream request's completion record gives: its
/// [`result_of_record`] with what was `carried` up from it (see
/// [`federation_data`]), or `INVALID_RESULT` (for good) when that is not a
/// valid result.
pub fn answer_of_record(
    record: &pb::CompletionRecord,
    carried: Option<Carried>,
) -> Result<Answer, DeliveryError> {
    let (records, disclosures) = match carried {
        Some(Carried::Records(records)) => (records, None),
        Some(Carried::Disclosures(d)) => (Vec::new(), Some(Box::new(d))),
        None => (Vec::new(), None),
    };
    let result = pb::InstructionResult {
        records,
        ..result_of_record(record)
    };
    wire::instruction_result(Some(result))
        .map(|result| {
            Answer::Done(InstructionResult {
                carried: disclosures,
                ..result
            })
        })
        .map_err(|v| {
            let why = format!("the downstream completion record makes no valid result: {v}");
            DeliveryError::fatal("INVALID_RESULT", why)
        })
}

/// This instruction's result from the downstream completion record:
///
/// - a cancelled downstream request, or one denied for too weak a
///   verification, FAILED (an operator must look);
/// - any downstream processor FAILED: FAILED, naming them;
/// - else any DENIED: DENIED on the first denial's ground, the
///   explanation naming every denying processor and its ground;
/// - else every line NO_DATA (or none): NO_DATA; else COMPLETED.
///
/// The downstream processors, and the sub-processors they named, become
/// the sub-processors.
pub fn result_of_record(record: &pb::CompletionRecord) -> pb::InstructionResult {
    use pb::InstructionState as S;
    let mut result = pb::InstructionResult {
        sub_processors: sub_processors(record),
        ..pb::InstructionResult::default()
    };
    let lines_in = |state: S| record.lines.iter().filter(move |l| l.state == state as i32);
    let failed: Vec<String> = lines_in(S::Failed)
        .map(|l| format!("{}: {}", l.processor_id, l.reason))
        .collect();
    let denied: Vec<&pb::ProcessorLine> = lines_in(S::Denied).collect();
    let (outcome, reason) = match pb::OverallOutcome::try_from(record.outcome) {
        Ok(pb::OverallOutcome::Cancelled) => (
            pb::Outcome::Failed,
            format!("the downstream request was cancelled: {}", record.note),
        ),
        Ok(pb::OverallOutcome::DeniedUnverified) => (
            pb::Outcome::Failed,
            "the downstream orchestrator denied the request: the verification is below its minimum"
                .to_string(),
        ),
        _ if !failed.is_empty() => (
            pb::Outcome::Failed,
            format!("downstream processors failed: {}", failed.join("; ")),
        ),
        _ if !denied.is_empty() => {
            result.exception = denied[0].exception;
            result.explanation = clip(
                denied
                    .iter()
                    .map(|l| {
                        let ground = pb::DeletionException::try_from(l.exception)
                            .map_or("", |e| e.as_str_name());
                        format!("{}: {ground}: {}", l.processor_id, l.explanation)
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            (pb::Outcome::Denied, String::new())
        }
        _ if record.lines.iter().all(|l| l.state == S::NoData as i32) => {
            (pb::Outcome::NoData, String::new())
        }
        _ => (pb::Outcome::Completed, String::new()),
    };
    result.outcome = outcome as i32;
    result.reason = clip(reason);
    result
}

/// The downstream processors and their own sub-processors, each once. A
/// country this orchestrator does not take as one (a downstream may run
/// a release that took any two letters) becomes unknown (empty) rather
/// than making the downstream's whole answer invalid.
fn sub_processors(record: &pb::CompletionRecord) -> Vec<pb::SubProcessor> {
    let mut out: Vec<pb::SubProcessor> = Vec::new();
    for line in &record.lines {
        let own = pb::SubProcessor {
            name: line.display_name.clone(),
            country: line.country.clone(),
        };
        for s in std::iter::once(&own).chain(&line.sub_processors) {
            let s = pb::SubProcessor {
                name: s.name.clone(),
                country: if is_country_code(&s.country) {
                    s.country.clone()
                } else {
                    String::new()
                },
            };
            if out.len() < MAX_SUB_PROCESSORS && !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// `text` cut to the domain's limit.
fn clip(text: String) -> String {
    if text.chars().count() <= MAX_TEXT {
        text
    } else {
        text.chars().take(MAX_TEXT).collect()
    }
}

#[cfg(test)]
#[path = "federation_tests.rs"]
mod tests;
