//! One delivery: send a claimed instruction through the adapter, turn
//! the answer into the result to record (accepted, an outcome, a retry at
//! a time the retry policy picks, or an escalation), count it, and hand it
//! to the recorder. Also the webhook processors' signing secrets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::adapter::{Answer, Delivery, DeliveryError, Endpoint};
use super::concurrency::Ticket;
use super::slots::Slot;
use super::{Dispatcher, breaker};
use crate::domain::{AdapterConfig, AttemptResult, Processor, Timestamp, reply_due};
use crate::store::{ClaimKind, Claimed, DeliveryReport, DeliveryResult, StoreError};

impl Dispatcher {
    /// Delivers one claimed instruction in its `slot` and records the
    /// answer, in a span that joins the trace of the call that submitted
    /// the request. Once the processor answered, the slot's global permit
    /// is handed over to a write-back one ([`Dispatcher::hand_over`]).
    pub(super) async fn deliver(
        &self,
        p: &Processor,
        c: Claimed,
        slot: Slot,
        probe: Option<Duration>,
        ticket: Option<Ticket>,
    ) {
        let span = tracing::info_span!(
            "deliver",
            otel.kind = "client",
            instruction_id = %c.instruction.id,
            request_id = %c.instruction.request_id,
            processor_id = %p.spec.id,
            attempt = c.attempt(),
            reminder = c.kind == ClaimKind::Reminder,
            probe = probe.is_some(),
        );
        crate::telemetry::link_and_parent(&span, c.trace_context.as_deref());
        self.deliver_in_span(p, c, slot, probe, ticket)
            .instrument(span)
            .await
    }

    async fn deliver_in_span(
        &self,
        p: &Processor,
        c: Claimed,
        slot: Slot,
        probe: Option<Duration>,
        ticket: Option<Ticket>,
    ) {
        let started = Instant::now();
        // A federated processor is given a request of its own, made of
        // the request's facts; an access instruction says what the person
        // asks (scope, how far back). Without them nothing is sent: a
        // failed read is retried, an unreadable request escalates.
        let facts = matches!(p.spec.adapter, AdapterConfig::Dsr { .. })
            || c.instruction.kind.returns_data();
        let request = match facts {
            true => match self.store.request(c.instruction.request_id).await {
                Ok(request) => Ok(Some(request)),
                Err(e) => Err(unreadable("REQUEST_UNREADABLE", e)),
            },
            false => Ok(None),
        };
        // Whether the processor was asked (see `breaker::reached`).
        let mut sent = false;
        let answer = match (request, self.secret_for(p).await) {
            (Ok(request), Ok(secret)) => match Endpoint::of(&p.spec.adapter, &secret) {
                Some(endpoint) => {
                    sent = true;
                    let delivery = Delivery {
                        instruction: &c.instruction,
                        identities: &c.identities,
                        reminder: c.kind == ClaimKind::Reminder,
                        request: request.as_ref(),
                    };
                    let _awaiting = self.awaiting_answer();
                    // The whole call ends with the lease, however many
                    // requests the adapter makes (OpenDSR asks before it
                    // posts; a federated delivery reads the record and the
                    // report after): past it, another replica may claim
                    // the instruction and deliver it beside this call.
                    let left = match c.instruction.lease_expires_at {
                        Some(at) => (at - self.clock.now()).to_std().unwrap_or_default(),
                        None => Duration::MAX,
                    };
                    tokio::time::timeout(left, self.adapter.deliver(endpoint, delivery))
                        .await
                        .unwrap_or_else(|_| {
                            Err(DeliveryError::retryable(
                                "DEADLINE_EXCEEDED",
                                "the processor did not answer within the delivery's lease",
                            ))
                        })
                }
                None => return,
            },
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let sent = breaker::reached(sent, &answer);
        let failed = sent && breaker::failed(&answer);
        let took = started.elapsed();
        let now = self.clock.now();
        // The breaker learns of the answer before the hand-over, which
        // waits for a write-back slot while the recorder is stalled: a
        // probe's answer closes or reopens its breaker within the probe's
        // lease, whatever the database does. A probe that opened it again
        // spends no budget.
        let reopened = match sent {
            true => self.after_call(p, failed, probe).await,
            false => false,
        };
        let result = result_of(answer, p, &c, now, reopened);
        if let Some(ticket) = ticket.filter(|_| sent) {
            self.observe(p, ticket, took, failed);
        }
        let (counted, code) = match &result {
            DeliveryResult::Accepted { .. } => (AttemptResult::Accepted, None),
            DeliveryResult::Outcome(_) => (AttemptResult::Outcome, None),
            DeliveryResult::RetryAt { code, .. } => (AttemptResult::RetryableError, Some(code)),
            DeliveryResult::Escalate { attempt, code, .. } => (*attempt, Some(code)),
        };
        self.metrics
            .delivery_finished(p.spec.id.as_str(), counted, code.map(String::as_str), took);
        // The processor's slot is held until the answer is written.
        let (global, _own) = slot;
        let _writing = self.hand_over(global).await;
        let report = DeliveryReport {
            id: c.instruction.id,
            owner: c.owner.clone(),
            attempt: c.attempt(),
            result,
        };
        if !self.recorder.record(report).await {
            tracing::info!(
                "result not recorded (lease lost to a newer claim, or the write failed); \
                 the instruction's current holder decides"
            );
        }
    }

    /// The signing secret of a webhook processor (empty for other kinds),
    /// opened once per version of the processor. A secret never issued,
    /// or sealed under a key this replica lacks, is fatal: an operator
    /// rotates it (or supplies the key); a database that does not answer
    /// is retried.
    pub(super) async fn secret_for(&self, p: &Processor) -> Result<Arc<str>, DeliveryError> {
        if !matches!(p.spec.adapter, AdapterConfig::Webhook { .. }) {
            return Ok(Arc::from(""));
        }
        if let Some((version, secret)) = self.secrets.lock().expect("secrets lock").get(&p.spec.id)
            && *version == p.updated_at
        {
            return Ok(secret.clone());
        }
        let secret: Arc<str> = match self.store.webhook_secret(&p.spec.id).await {
            Ok(Some(secret)) => secret.into(),
            Ok(None) => {
                return Err(DeliveryError::fatal(
                    "NO_WEBHOOK_SECRET",
                    "no webhook secret was issued for this processor: issue one with RotateWebhookSecret",
                ));
            }
            Err(e) => return Err(unreadable("WEBHOOK_SECRET_SEALED", e)),
        };
        self.secrets
            .lock()
            .expect("secrets lock")
            .insert(p.spec.id.clone(), (p.updated_at, secret.clone()));
        Ok(secret)
    }
}

/// A failure to read what a delivery needs: retried when the database
/// may answer later (a transient failure); fatal, as `code`, otherwise
/// (sealed under a key this replica lacks, a row that does not decode,
/// one that is gone).
fn unreadable(code: &str, e: StoreError) -> DeliveryError {
    if e.is_transient() {
        DeliveryError::retryable("UNAVAILABLE", e.to_string())
    } else {
        DeliveryError::fatal(code, e.to_string())
    }
}

/// What to record for the delivery `c` to `p` that got `answer` at `now`:
/// a retryable failure is retried at the time the retry policy picks while
/// the budget lasts, and escalates after it (the attempt itself is kept as
/// what the processor said). The retryable failure of a circuit breaker's
/// probe that opened the breaker again (`reopened`) is retried and gives
/// back what it spent of the retry budget: it shows the outage goes on,
/// and an outage spends no instruction's budget (the breaker holds the
/// instruction back meanwhile). Texts from the processor lose the
/// identities it was sent (see [`crate::domain::redact_identities`]).
fn result_of(
    answer: Result<Answer, DeliveryError>,
    p: &Processor,
    c: &Claimed,
    now: Timestamp,
    reopened: bool,
) -> DeliveryResult {
    let policy = &p.spec.retry_policy;
    let instruction = &c.instruction;
    // The polls of an adapter that polls are reminders, which count as
    // attempts; they are no failures, so its retry budget leaves them out
    // (as the claim and the escalation sweep do for an expired lease).
    let polls = p.spec.adapter.polls();
    // Once a polling adapter's processor has accepted, every call that
    // follows is a poll, or the retry of a failed one (which asks the same,
    // see `dispatch::federation` and `dispatch::opendsr`): a failure of
    // the processor's (away for a while) spends no budget either, and the
    // next call goes after the poll interval. The instruction's escalation
    // time ends them, so only while it has one (an operator's re-arm past
    // it clears it, and the budget counts again); a failure of ours (a
    // token file, a request that does not read) is no poll's.
    let failed_poll = polls
        && instruction.acknowledged_at.is_some()
        && instruction.escalate_at.is_some()
        && answer.as_ref().err().is_some_and(|e| !e.is_local());
    // A failed breaker probe that opened the breaker again gives its try
    // back too.
    let refund = failed_poll || reopened;
    let attempts = if polls {
        instruction
            .attempts_since_arm
            .saturating_sub(instruction.reminders)
    } else {
        instruction.attempts_since_arm
    };
    let answer = answer
        .map(|a| match a {
            Answer::Done(r) => Answer::Done(r.redacted(&c.identities)),
            accepted => accepted,
        })
        .map_err(|e| e.redacted(&c.identities));
    match answer {
        // An adapter that polls asks again after its poll interval.
        Ok(Answer::Accepted) => DeliveryResult::Accepted {
            reply_due_at: reply_due(now, p.spec.reply_wait(), instruction.due_at),
        },
        Ok(Answer::Done(r)) => {
            match r.misapplied_ground(instruction.jurisdiction, instruction.kind) {
                // A denial on a ground the request's law does not give cannot
                // close the instruction: an operator takes it up.
                Some(why) => {
                    tracing::warn!(
                        "denial on a ground that does not apply; escalated to an operator"
                    );
                    DeliveryResult::Escalate {
                        attempt: AttemptResult::FatalError,
                        code: "INVALID_ARGUMENT".into(),
                        message: format!(
                            "the processor denied on a ground that does not apply: {why}"
                        ),
                    }
                }
                None => DeliveryResult::Outcome(r),
            }
        }
        Err(DeliveryError::Retryable {
            code,
            message,
            after,
        }) if refund || policy.allows_another(attempts) => {
            // A processor that named a time is not called again sooner.
            let delay = if failed_poll {
                p.spec.reply_wait()
            } else {
                policy.delay_after(attempts, instruction.id)
            }
            .max(after.unwrap_or_default());
            tracing::info!(code = %code, delay_ms = delay.as_millis() as u64, "delivery failed; will retry");
            DeliveryResult::RetryAt {
                at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                code,
                message,
                refund,
            }
        }
        Err(DeliveryError::Retryable { code, message, .. }) => {
            tracing::warn!(code = %code, attempts, "retries exhausted; escalated to an operator");
            DeliveryResult::Escalate {
                attempt: AttemptResult::RetryableError,
                code,
                message: format!("retries exhausted after {attempts} attempts: {message}"),
            }
        }
        Err(e @ DeliveryError::Fatal { .. }) => {
            tracing::warn!(code = %e.code(), "delivery escalated to an operator");
            let attempt = e.attempt_result();
            let (code, message) = e.into_parts();
            DeliveryResult::Escalate {
                attempt,
                code,
                message,
            }
        }
    }
}
