//! One delivery: send a claimed instruction through the adapter, turn
//! the answer into the result to record (accepted, an outcome, a retry at
//! a time the retry policy picks, or an escalation), count it, and hand it
//! to the recorder. Also the cancel notices to push processors (see
//! `store::cancel_notices`), and the webhook processors' signing secrets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument;

use super::adapter::{Answer, Delivery, DeliveryError, Endpoint};
use super::concurrency::Ticket;
use super::slots::{Cap, Slot};
use super::{Dispatcher, breaker};
use crate::domain::{AdapterConfig, AttemptResult, Processor, ProcessorId, Timestamp, reply_due};
use crate::store::{CancelNotice, ClaimKind, Claimed, DeliveryReport, DeliveryResult, StoreError};

/// Most cancel notices a dispatcher pass starts.
const CANCEL_NOTICES_PER_PASS: usize = 64;

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
        // Whether the processor was asked: a failure before that is this
        // replica's (its database, its settings), not the processor's,
        // and neither its breaker nor its delivery limit learns from it.
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
                    self.adapter.deliver(endpoint, delivery).await
                }
                None => return,
            },
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        // An adapter that failed before it sent anything did not ask the
        // processor either.
        let sent = sent && !matches!(&answer, Err(e) if e.is_local());
        let took = started.elapsed();
        let now = self.clock.now();
        // The processor's slot is held until the answer is written.
        let (global, _own) = slot;
        let _writing = self.hand_over(global).await;
        let result = result_of(answer, p, &c, now);
        if let Some(ticket) = ticket.filter(|_| sent) {
            self.observe(p, ticket, took, breaker::failed(&result));
        }
        let (counted, code) = match &result {
            DeliveryResult::Accepted { .. } => (AttemptResult::Accepted, None),
            DeliveryResult::Outcome(_) => (AttemptResult::Outcome, None),
            DeliveryResult::RetryAt { code, .. } => (AttemptResult::RetryableError, Some(code)),
            DeliveryResult::Escalate { attempt, code, .. } => (*attempt, Some(code)),
        };
        self.metrics
            .delivery_finished(p.spec.id.as_str(), counted, code.map(String::as_str), took);
        if sent {
            self.after_delivery(p, &result, probe).await;
        }
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
            Err(e) => return Err(unreadable("WEBHOOK_SECRET_SEALED", e)),
        };
        self.secrets
            .lock()
            .expect("secrets lock")
            .insert(p.spec.id.clone(), (p.updated_at, secret.clone()));
        Ok(secret)
    }

    /// Sends due cancel notices to `processors` (push processors), each on
    /// its own task holding a delivery slot, global and of its processor
    /// (a notice is a call like a delivery, and counts against the
    /// processor's limit on this replica): up to
    /// [`CANCEL_NOTICES_PER_PASS`] a pass, within the slots free under the
    /// pass's `cap`. Returns how many it started.
    pub(super) async fn send_cancel_notices(
        &self,
        processors: &[&Processor],
        cap: Cap,
        set: &mut JoinSet<()>,
    ) -> Result<usize, StoreError> {
        let mut free = self.free_under(cap).min(CANCEL_NOTICES_PER_PASS);
        if free == 0 {
            return Ok(0);
        }
        let now = self.clock.now();
        // Who reserves first rotates from pass to pass, so a processor with
        // many notices due cannot take every pass's slots for good.
        let mut due = self.store.due_cancel_notices(now).await?;
        if !due.is_empty() {
            let first = self.passes.load(Ordering::Relaxed) % due.len();
            due.rotate_left(first);
        }
        // Each processor with notices due, and the slots reserved for them.
        let mut slots: HashMap<ProcessorId, (&Processor, Vec<Slot>)> = HashMap::new();
        for (id, due) in due {
            let Some(p) = processors.iter().copied().find(|p| p.spec.id == id) else {
                continue;
            };
            let reserved = self.reserve(p, (due as usize).min(free));
            free -= reserved.len();
            slots.insert(id, (p, reserved));
            if free == 0 {
                break;
            }
        }
        let asks: Vec<(&ProcessorId, u32)> = slots
            .iter()
            .map(|(id, (_, s))| (id, s.len() as u32))
            .collect();
        // Leased past the slowest push processor's deadline.
        let lease = processors
            .iter()
            .filter_map(|p| p.spec.adapter.push_timeout())
            .max()
            .unwrap_or_default()
            + self.config.lease_margin;
        let notices = self.store.lease_cancel_notices(&asks, lease, now).await?;
        let mut started = 0;
        for n in notices {
            // At most as many notices as slots were leased per processor.
            let Some((p, slot)) = slots
                .get_mut(&n.processor_id)
                .and_then(|(p, s)| Some((*p, s.pop()?)))
            else {
                continue;
            };
            let p = p.clone();
            let this = self.clone();
            started += 1;
            set.spawn(async move {
                this.send_cancel_notice(&p, n, slot).await;
            });
        }
        Ok(started)
    }

    /// One cancel notice: done once the processor answered; a retryable
    /// failure is tried again under the processor's retry policy, and
    /// given up (logged and counted) after it or on a fatal one. Its
    /// `slot` is handed over at the answer, as a delivery's is.
    async fn send_cancel_notice(&self, p: &Processor, n: CancelNotice, slot: Slot) {
        let span = tracing::info_span!(
            "cancel_notice",
            otel.kind = "client",
            instruction_id = %n.instruction_id,
            processor_id = %p.spec.id,
            attempt = n.attempts,
        );
        async {
            let sent = match self.secret_for(p).await {
                Ok(secret) => match Endpoint::of(&p.spec.adapter, &secret) {
                    Some(endpoint) => {
                        let _awaiting = self.awaiting_answer();
                        self.adapter.cancel(endpoint, n.instruction_id, &n.reason).await
                    }
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            // Both slots come free at the answer: the processor's, as the
            // claim does not count notices against its limit across
            // replicas; the replica's, handed over while the row is written.
            let (global, own) = slot;
            drop(own);
            let _writing = self.hand_over(global).await;
            let policy = &p.spec.retry_policy;
            // Fenced by the attempt leased: one leased again since is the
            // new holder's to finish.
            let (id, attempt) = (n.instruction_id, n.attempts);
            let (result, written) = match sent {
                Ok(()) => ("sent", self.store.cancel_notice_done(id, Some(attempt)).await),
                Err(DeliveryError::Retryable { after, code, .. })
                    if n.attempts < policy.max_attempts =>
                {
                    let delay = policy
                        .delay_after(n.attempts, n.instruction_id)
                        .max(after.unwrap_or_default());
                    tracing::info!(code = %code, delay_ms = delay.as_millis() as u64, "cancel notice failed; will retry");
                    let at = self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    ("retried", self.store.cancel_notice_retry(id, attempt, at).await)
                }
                Err(e) => {
                    tracing::warn!(code = %e.code(), attempts = n.attempts, "cancel notice given up");
                    ("given_up", self.store.cancel_notice_done(id, Some(attempt)).await)
                }
            };
            self.metrics.cancel_notice(p.spec.id.as_str(), result);
            if let Err(e) = written {
                tracing::warn!(error = %e, "cancel notice not updated; it is sent again when its lease ends");
            }
        }
        .instrument(span)
        .await
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
    // The polls of an adapter that polls are reminders, which count as
    // attempts; they are no failures, so its retry budget leaves them out.
    let attempts = if p.spec.adapter.poll_interval().is_some() {
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
            reply_due_at: reply_due(
                now,
                p.spec
                    .adapter
                    .poll_interval()
                    .unwrap_or(p.spec.completion_timeout),
                instruction.due_at,
            ),
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
