//! One delivery: send a claimed instruction through the adapter, turn
//! the answer into the result to record (accepted, an outcome, a retry at
//! a time the retry policy picks, or an escalation), count it, and hand it
//! to the recorder. Also the cancel notices to push processors, and the
//! webhook processors' signing secrets.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::Dispatcher;
use super::adapter::{Answer, Delivery, DeliveryError, Endpoint};
use crate::domain::{
    AdapterConfig, AttemptResult, InstructionView, Processor, Timestamp, reply_due,
};
use crate::store::{ClaimKind, Claimed, DeliveryReport, DeliveryResult, StoreError};

impl Dispatcher {
    /// Delivers one claimed instruction and records the answer, in a span
    /// that joins the trace of the call that submitted the request.
    pub(super) async fn deliver(&self, p: &Processor, c: Claimed) {
        let span = tracing::info_span!(
            "deliver",
            otel.kind = "client",
            instruction_id = %c.instruction.id,
            request_id = %c.instruction.request_id,
            processor_id = %p.spec.id,
            attempt = c.attempt(),
            reminder = c.kind == ClaimKind::Reminder,
        );
        crate::telemetry::link_and_parent(&span, c.trace_context.as_deref());
        self.deliver_in_span(p, c).instrument(span).await
    }

    async fn deliver_in_span(&self, p: &Processor, c: Claimed) {
        let delivery = Delivery {
            instruction: &c.instruction,
            identities: &c.identities,
            reminder: c.kind == ClaimKind::Reminder,
        };
        let started = Instant::now();
        let answer = match self.secret_for(p).await {
            Ok(secret) => match Endpoint::of(&p.spec.adapter, &secret) {
                Some(endpoint) => self.adapter.deliver(endpoint, delivery).await,
                None => return,
            },
            Err(e) => Err(e),
        };
        let took = started.elapsed();
        let result = result_of(answer, p, &c, self.clock.now());
        let (counted, code) = match &result {
            DeliveryResult::Accepted { .. } => (AttemptResult::Accepted, None),
            DeliveryResult::Outcome(_) => (AttemptResult::Outcome, None),
            DeliveryResult::RetryAt { code, .. } => (AttemptResult::RetryableError, Some(code)),
            DeliveryResult::Escalate { attempt, code, .. } => (*attempt, Some(code)),
        };
        self.metrics
            .delivery_finished(p.spec.id.as_str(), counted, code.map(String::as_str), took);
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
    async fn secret_for(&self, p: &Processor) -> Result<Arc<str>, DeliveryError> {
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
            Err(e @ (StoreError::Sealed(_) | StoreError::Corrupt(_))) => {
                return Err(DeliveryError::fatal("WEBHOOK_SECRET_SEALED", e.to_string()));
            }
            Err(e) => return Err(DeliveryError::retryable("UNAVAILABLE", e.to_string())),
        };
        self.secrets
            .lock()
            .expect("secrets lock")
            .insert(p.spec.id.clone(), (p.updated_at, secret.clone()));
        Ok(secret)
    }

    /// Best-effort cancel notices to the push processors that had received
    /// the instructions; failures are logged, not retried.
    pub fn notify_cancelled(&self, instructions: Vec<InstructionView>, reason: String) {
        let this = self.clone();
        tokio::spawn(async move {
            for i in instructions {
                let Ok(p) = this.store.processor(&i.processor_id).await else {
                    continue;
                };
                let Ok(secret) = this.secret_for(&p).await else {
                    continue;
                };
                if let Some(endpoint) = Endpoint::of(&p.spec.adapter, &secret)
                    && let Err(e) = this.adapter.cancel(endpoint, &i, &reason).await
                {
                    tracing::info!(instruction_id = %i.id, code = %e.code(), "cancel notice not delivered");
                }
            }
        });
    }
}

/// What to record for the delivery `c` to `p` that got `answer` at `now`:
/// a retryable failure is retried at the time the retry policy picks while
/// the budget lasts, and escalates after it (the attempt itself is kept as
/// what the processor said). Texts from the processor lose the identities
/// it was sent (see [`crate::domain::redact_identities`]).
fn result_of(
    answer: Result<Answer, DeliveryError>,
    p: &Processor,
    c: &Claimed,
    now: Timestamp,
) -> DeliveryResult {
    let policy = &p.spec.retry_policy;
    let instruction = &c.instruction;
    let attempts = instruction.attempts_since_arm;
    let answer = answer
        .map(|a| match a {
            Answer::Done(r) => Answer::Done(r.redacted(&c.identities)),
            accepted => accepted,
        })
        .map_err(|e| e.redacted(&c.identities));
    match answer {
        Ok(Answer::Accepted) => DeliveryResult::Accepted {
            reply_due_at: reply_due(now, p.spec.completion_timeout, instruction.due_at),
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
        }) if policy.allows_another(attempts) => {
            // A processor that named a time is not called again sooner.
            let delay = policy
                .delay_after(attempts, instruction.id)
                .max(after.unwrap_or_default());
            tracing::info!(code = %code, delay_ms = delay.as_millis() as u64, "delivery failed; will retry");
            DeliveryResult::RetryAt {
                at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                code,
                message,
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
