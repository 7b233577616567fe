//! Intake: a request and all its instructions are written in one
//! transaction before `SubmitRequest` answers, so an acknowledged request is
//! never lost and never half-fanned-out. The fan-out is decided here: the
//! named processors, or every active one that handles the kind and accepts
//! one of the subject's identity types; each instruction carries only the
//! identities its processor accepts.
//!
//! # Group commit
//!
//! The cost of taking a request in is dominated by its commit (an fsync on
//! either backend). Submissions therefore go through a writer task per
//! process, which takes every submission waiting at that moment — one when
//! traffic is light, dozens under load — and writes them in a single
//! transaction with multi-row statements. Nobody is answered before that
//! commit, so durability is exactly that of one transaction per request; a
//! batch that fails is retried one request at a time, so one bad request
//! cannot fail its neighbours.
//!
//! On PostgreSQL that transaction is a single statement, its inserts
//! chained by `WITH` and committed on their own: the writer waits for one
//! round trip per batch instead of five. (The fsync is not what a batch
//! waits for here — about 60 µs on the development machines — but
//! PostgreSQL's work on the rows and the trips between the two processes
//! on two busy cores.) On a machine with cores to spare, several writers
//! share the queue ([`Store::batch_writers`]), each with its own copy of
//! the registry: while one batch commits the next is already being
//! written, from what queued meanwhile. Two batches holding the same
//! request id (an idempotent repeat racing its original) meet on the
//! primary key: the second waits for the first's commit and then finds the
//! request there, as it would across replicas.
//!
//! # The processor registry, kept
//!
//! The fan-out is planned from the processor registry, which changes
//! rarely (an operator registers, updates or disables a processor).
//! Reading and decoding it for every batch would put a round trip and a
//! JSON decode per processor in front of the single writer, so the writer
//! keeps the copy it read, with the registry's generation (a number every change to
//! `processors` bumps, by trigger, in the same transaction), and each
//! batch's write states the generation it was planned with: on PostgreSQL
//! a guard inside the batch's one statement, on SQLite a read inside its
//! transaction. If the registry has moved, nothing is written, the copy is
//! read again and the batch planned again, so a change made through any
//! replica counts from the next batch on, as before. A request the copy
//! would reject is checked against a fresh read first (it may name a
//! processor registered since). See
//! `docs/decisions/0004-processor-registry-generation.md`.

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::batches::{Batches, SharedBatches};
use crate::in_progress::Counted;

use super::sql::Sql;
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{
    Actor, InstructionView, NewRequest, Processor, Receipt, RequestId, RequestStatus,
    RequestSummary, Terms, Timestamp,
};

mod insert;
mod plan;

use insert::{Planned, new_instructions};

/// How much longer than the store's wait a submission waits for the
/// writer's answer before giving up on its own.
const ANSWER_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Most submissions written in one transaction.
const MAX_BATCH: usize = 128;

/// What intake did.
#[derive(Debug)]
pub struct Intake {
    /// The request as stored.
    pub request: RequestSummary,
    /// False when this was an idempotent repeat of an earlier submission.
    pub created: bool,
}

/// A submission waiting for the writer.
pub(in crate::store) struct Job {
    req: NewRequest,
    terms: Terms,
    now: Timestamp,
    trace_context: Option<String>,
    /// Who submits it.
    actor: Actor,
    /// When its caller stops waiting (see [`Store::submit`]).
    deadline: tokio::time::Instant,
    done: oneshot::Sender<Result<Intake, StoreError>>,
}

impl Job {
    /// Whether nobody waits for this job's answer any more.
    fn caller_gone(&self) -> bool {
        self.done.is_closed()
    }
}

impl Store {
    /// The intake writer, to run on a task of its own: takes submissions
    /// in batches until `stop`, then answers those already queued and
    /// ends. Submissions made before it starts, or after it stopped, fail
    /// with [`StoreError::Stopped`]. One per store; a second does nothing.
    pub fn intake_writer(
        &self,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let started = self.intake.set(tx).is_ok();
        let store = self.clone();
        async move {
            if !started {
                tracing::warn!("an intake writer is already running");
                return;
            }
            let writers = store.batch_writers();
            SharedBatches::new(Batches::new(rx, MAX_BATCH, stop))
                .run(writers, move |batches| {
                    let store = store.clone();
                    async move {
                        let mut registry = None;
                        while let Some(jobs) = batches.next().await {
                            store.write_batch(jobs, &mut registry).await;
                        }
                    }
                })
                .await;
        }
    }

    /// Takes a request in (idempotently on its id). `trace_context` is the
    /// submitting call's W3C `traceparent`, kept with each instruction so
    /// that its deliveries join that trace. Answers after the commit, or
    /// with [`StoreError::Unanswered`] when the database has not answered
    /// within the store's wait (the acquire timeout): the caller is not
    /// kept waiting through an outage. A submission whose caller has gone
    /// (answered so, or hung up) before the writer reaches it is not
    /// written; one already being written may still commit, which a retry
    /// with the same id reveals.
    #[tracing::instrument(name = "store.submit", skip_all, fields(request_id = %req.id))]
    pub async fn submit(
        &self,
        req: &NewRequest,
        terms: Terms,
        actor: &Actor,
        now: Timestamp,
        trace_context: Option<&str>,
    ) -> Result<Intake, StoreError> {
        let Some(writer) = self.intake.get() else {
            return Err(StoreError::Stopped);
        };
        let _submitting = self.submission_started();
        let (done, answer) = oneshot::channel();
        let job = Job {
            req: req.clone(),
            terms,
            now,
            trace_context: trace_context.map(str::to_string),
            actor: actor.clone(),
            deadline: tokio::time::Instant::now() + self.wait,
            done,
        };
        if writer.send(job).await.is_err() {
            return Err(StoreError::Stopped);
        }
        // The writer answers by the job's deadline; a job it dropped
        // unanswered (its batch ran out of time) may or may not have been
        // written. The caller's own wait is a backstop a little longer.
        let answered = tokio::time::timeout(self.wait + ANSWER_MARGIN, answer).await;
        match answered {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(StoreError::Unanswered(self.wait)),
        }
    }

    /// How many submissions this process is taking in at this moment
    /// (waiting for the writer or for their batch's commit). The dispatcher
    /// reads it to hold deliveries back while callers queue for intake.
    pub fn submissions_in_progress(&self) -> usize {
        self.submitting.get()
    }

    /// Counts a submission as in progress until the guard drops: what
    /// [`Store::submit`] does for each call (public so that tests can stand
    /// for callers queuing at intake).
    pub fn submission_started(&self) -> Counted {
        self.submitting.start()
    }

    /// Inserts the batch in one transaction and answers each job. On a
    /// database failure of a multi-job batch, hands the jobs back
    /// unanswered (to be retried alone); a single job gets the error. When
    /// `guard` is no longer the registry's generation nothing is written
    /// and every job is handed back.
    async fn insert_batch<'a>(
        &self,
        batch: Vec<(Job, Vec<&'a Processor>)>,
        guard: Option<i64>,
    ) -> Inserted<'a> {
        match self.try_insert_batch(&batch, guard).await {
            Ok(None) => Inserted::Stale(batch.into_iter().map(|(job, _)| job).collect()),
            Ok(Some((inserted, effects))) => {
                self.announce(effects);
                for (job, _) in batch {
                    let result = match inserted.iter().find(|(id, _)| *id == job.req.id) {
                        Some((_, instructions)) => self.summary(&job, instructions.clone()).await,
                        None => self.existing(&job.req, &job.actor).await,
                    };
                    let _ = job.done.send(result);
                }
                Inserted::Answered
            }
            // One request may have failed its neighbours: each is tried
            // alone. A transient failure (the database unreachable) would
            // fail each alone too, and keep callers waiting for nothing.
            Err(e) if batch.len() > 1 && !e.is_transient() => {
                tracing::debug!(error = %e, "batched intake failed");
                Inserted::Failed(batch)
            }
            Err(e) => {
                for (job, _) in batch {
                    let _ = job.done.send(Err(e.shared()));
                }
                Inserted::Answered
            }
        }
    }

    /// Writes the batch: requests (skipping ids that exist), their
    /// instructions, their first events, and the records of requests that
    /// matched no processor. Returns the inserted requests' instructions.
    async fn try_insert_batch(
        &self,
        batch: &[(Job, Vec<&Processor>)],
        guard: Option<i64>,
    ) -> Result<Option<Taken>, StoreError> {
        let planned: Vec<Planned> = batch
            .iter()
            .map(|(job, targets)| Planned {
                job,
                targets,
                instructions: new_instructions(job, targets),
            })
            .collect();
        // One clock reading per batch for the events, the requests' own.
        let now = batch[0].0.now;
        let mut effects = Effects::default();
        let inserted = if self.backend == Backend::Postgres
            && planned.iter().all(|p| !p.instructions.is_empty())
        {
            self.insert_in_one_statement(&planned, now, guard).await?
        } else {
            self.insert_in_transaction(&planned, now, guard, &mut effects)
                .await?
        };
        let Some(inserted) = inserted else {
            return Ok(None);
        };
        let mut taken = Vec::with_capacity(inserted.len());
        for p in planned {
            if inserted.contains(&p.job.req.id) {
                effects.touched.push(p.job.req.id);
                effects.new_work |= !p.instructions.is_empty();
                taken.push((p.job.req.id, p.instructions));
            }
        }
        Ok(Some((taken, effects)))
    }

    /// The answer for a request this batch inserted: built from what was
    /// written, without reading it back (a request that matched nothing was
    /// closed in the same transaction, so it is read).
    async fn summary(
        &self,
        job: &Job,
        mut instructions: Vec<InstructionView>,
    ) -> Result<Intake, StoreError> {
        let req = &job.req;
        if instructions.is_empty() {
            return Ok(Intake {
                request: self.request(req.id).await?,
                created: true,
            });
        }
        instructions.sort_by(|a, b| a.processor_id.cmp(&b.processor_id));
        Ok(Intake {
            request: RequestSummary {
                id: req.id,
                kind: req.kind,
                jurisdiction: req.jurisdiction,
                status: RequestStatus::Received,
                submitted_at: req.submitted_at.unwrap_or(job.now),
                received_at: job.now,
                closed_at: None,
                channel: req.channel.as_str().to_string(),
                requester: req.requester,
                verification: req.verification.clone(),
                labels: req.labels.clone(),
                identity_types: req.subject.types(),
                cancel_reason: None,
                submitted_by: Some(job.actor.clone()),
                access_scope: req.access_scope,
                requester_evidence: req.requester_evidence.clone(),
                lookback_start: crate::domain::lookback::in_force(
                    req.kind,
                    req.jurisdiction,
                    req.submitted_at.unwrap_or(job.now),
                    req.lookback_start,
                ),
                receipt: Receipt {
                    confirm_by: job.terms.deadlines.confirm_by,
                    confirmed_at: None,
                    confirmed_by: None,
                },
                respond_by: job.terms.deadlines.respond_by,
                extension: None,
                denied_unverified: false,
                identities_erased_at: None,
                instructions,
            },
            created: true,
        })
    }

    /// The answer for an id that already existed: the stored request when
    /// the content matches, `AlreadyExists` when it does not.
    async fn existing(&self, req: &NewRequest, actor: &Actor) -> Result<Intake, StoreError> {
        let row = Sql::new(
            self.backend,
            "select fingerprint, submitted_by from requests where id = ",
        )
        .bind(req.id.to_string())
        .query()
        .fetch_one(&self.pool)
        .await?;
        let existing: String = row.try_get("fingerprint")?;
        let submitted_by: Option<String> = row.try_get("submitted_by")?;
        // Fingerprints written before they were keyed are the plain
        // SHA-256, until the resealing pass keys them.
        let content = req.fingerprint();
        let same = if existing.starts_with("h:") {
            existing == self.keyed_fingerprint(&content)
        } else {
            existing == content
        };
        // An id is its submitter's: another caller learns nothing of the
        // request by repeating it.
        if submitted_by.is_some_and(|s| s != actor.to_string()) || !same {
            return Err(StoreError::AlreadyExists(format!(
                "request {} already exists with different content",
                req.id
            )));
        }
        Ok(Intake {
            request: self.request(req.id).await?,
            created: false,
        })
    }
}

/// Requests a batch inserted, with their instructions, and what the
/// transaction did.
type Taken = (Vec<(RequestId, Vec<InstructionView>)>, Effects);

/// What became of a batch given to [`Store::insert_batch`].
enum Inserted<'a> {
    /// Every job was answered.
    Answered,
    /// The write failed; none was answered (retry them one by one).
    Failed(Vec<(Job, Vec<&'a Processor>)>),
    /// The registry had changed; nothing was written or answered.
    Stale(Vec<Job>),
}
