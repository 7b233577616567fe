//! Planning a batch: each submission's fan-out against the writer's copy
//! of the processor registry, the copy read again when a batch's write
//! finds the registry has moved (see "The processor registry, kept" in
//! [`super`]).

use std::collections::HashSet;

use super::super::{Store, StoreError};
use super::{Inserted, Job};
use crate::domain::{Processor, fan_out};

impl Store {
    /// Writes a batch of submissions; answers every job. `registry` is the
    /// writer's copy of the processor registry (`None`: read it first).
    pub(super) async fn write_batch(&self, mut jobs: Vec<Job>, registry: &mut Option<Registry>) {
        // A caller that has gone (it gave up waiting, or hung up) gets no
        // request written behind its back, nor does one whose wait is over.
        let now = tokio::time::Instant::now();
        jobs.retain(|job| !job.caller_gone());
        let (late, jobs): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.deadline <= now);
        for job in late {
            let _ = job.done.send(Err(StoreError::Unanswered(self.wait)));
        }
        // The batch gets as long as its most pressed caller waits: past
        // that, its unfinished work is dropped, and every job of it is
        // answered as dropped (it may or may not have been written).
        let Some(deadline) = jobs.iter().map(|j| j.deadline).min() else {
            return;
        };
        let written = tokio::time::timeout_at(deadline, self.write_in_time(jobs, registry));
        if written.await.is_err() {
            tracing::warn!("the database did not take a batch of submissions in time");
        }
    }

    /// [`Store::write_batch`]'s work, answering every job.
    async fn write_in_time(&self, mut jobs: Vec<Job>, registry: &mut Option<Registry>) {
        for round in 1.. {
            let read_now = registry.is_none();
            if read_now {
                match self.read_registry().await {
                    Ok(r) => *registry = Some(r),
                    Err(e) => {
                        for job in jobs {
                            let _ = job.done.send(Err(e.shared()));
                        }
                        return;
                    }
                }
            }
            let current = registry.as_ref().expect("read above");
            // The generation is checked by the batch's own write; after a
            // few moves in a row (processors changing as fast as batches
            // are written) the batch is written against the copy read
            // just before it, as every batch was before the copy was kept.
            let guard = (round <= STALE_ROUNDS).then_some(current.generation);
            match self
                .write_planned(jobs, &current.processors, guard, read_now)
                .await
            {
                None => return,
                Some(stale) => {
                    tracing::debug!(round, "the processor registry changed; planning again");
                    *registry = None;
                    jobs = stale;
                }
            }
        }
    }

    /// Reads the processor registry and its generation (the generation
    /// first: a change committed between the two reads leaves the copy
    /// newer than its generation, which the next write then rejects).
    async fn read_registry(&self) -> Result<Registry, StoreError> {
        let generation: i64 = sqlx::query_scalar(GENERATION).fetch_one(&self.pool).await?;
        Ok(Registry {
            generation,
            processors: self.all_processors().await?,
        })
    }

    /// Plans and writes a batch against `processors`; answers every job,
    /// or hands them all back unanswered when `guard` is no longer the
    /// registry's generation, or when a job would be rejected by a copy
    /// not `read_now` (a processor it names may have been registered
    /// since).
    async fn write_planned(
        &self,
        jobs: Vec<Job>,
        processors: &[Processor],
        guard: Option<i64>,
        read_now: bool,
    ) -> Option<Vec<Job>> {
        // Requests no processor list accepts are answered at once; a
        // second submission of an id already in this batch waits until the
        // first is committed and is then answered like any repeat.
        let mut seen = HashSet::new();
        let mut fresh = Vec::with_capacity(jobs.len());
        let mut repeats = Vec::new();
        let mut invalid = Vec::new();
        for job in jobs {
            // A request verified below its minimum goes to no processor.
            let targets = if job.terms.verified {
                fan_out(&job.req, processors)
            } else {
                Ok(Vec::new())
            };
            match targets {
                Err(v) => invalid.push((job, v)),
                Ok(targets) if seen.insert(job.req.id) => fresh.push((job, targets)),
                Ok(_) => repeats.push(job),
            }
        }
        let mut stale = Vec::new();
        let doubtful = !invalid.is_empty() && !read_now;
        if doubtful {
            stale.extend(fresh.into_iter().map(|(job, _)| job));
        } else if fresh.len() > 1 {
            // Keep the batch's own jobs if it fails, to retry them alone.
            let requests = fresh.len();
            match self.insert_batch(fresh, guard).await {
                Inserted::Answered => {}
                Inserted::Stale(jobs) => stale = jobs,
                Inserted::Failed(left) => {
                    tracing::info!(requests, "a batched intake failed; retrying one by one");
                    for one in left.into_iter().filter(|(job, _)| !job.caller_gone()) {
                        if let Inserted::Stale(jobs) = self.insert_batch(vec![one], guard).await {
                            stale.extend(jobs);
                        }
                    }
                }
            }
        } else if !fresh.is_empty()
            && let Inserted::Stale(jobs) = self.insert_batch(fresh, guard).await
        {
            stale = jobs;
        }
        if doubtful || !stale.is_empty() {
            // Planned again as a whole: the rejections and repeats too, so
            // that none is answered from the old copy.
            stale.extend(invalid.into_iter().map(|(job, _)| job));
            stale.extend(repeats);
            return Some(stale);
        }
        for (job, v) in invalid {
            let _ = job.done.send(Err(StoreError::Invalid(v)));
        }
        for job in repeats {
            let result = self.existing(&job.req, &job.actor).await;
            let _ = job.done.send(result);
        }
        None
    }
}

/// The processor registry as the intake writer last read it.
pub(super) struct Registry {
    /// `processor_registry.generation` when it was read.
    generation: i64,
    /// Every processor.
    processors: Vec<Processor>,
}

/// Reads the registry's generation.
pub(super) const GENERATION: &str = "select generation from processor_registry where id = 1";

/// Batches planned against copies this many times in a row, each found
/// stale by its write, before the next is written unguarded.
const STALE_ROUNDS: usize = 4;
