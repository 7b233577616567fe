//! The dispatcher: claim -> deliver -> record, forever.
//!
//! Each tick leases, for every push processor, as many due instructions as
//! it has free delivery slots (a per-processor limit, `max_in_flight`,
//! inside a global one, shared out fairly per pass), all processors in one
//! transaction: a request fanned out to five processors costs one claim
//! commit, not five. Per-processor limits keep one slow processor from
//! starving the others and bound what each receives at once. Every leased
//! instruction is delivered on its own task; the answer is written back
//! fenced by the lease, so a dispatcher that lost its lease (it hung past
//! expiry and someone else re-claimed) records nothing.
//!
//! Failures are classified by the adapter: retryable ones are rescheduled by
//! writing `next_attempt_at` (exponential backoff with jitter, see
//! [`crate::domain::RetryPolicy`]); fatal ones and exhausted budgets escalate
//! to an operator. Nothing sleeps per instruction: the loop sleeps until the
//! earliest due time, the poll interval, a wake-up from intake, or a quarter
//! of its slots coming free, whichever comes first (a wake-up while fewer
//! slots are free waits for them, or at most the poll interval: claims come
//! in batches, not one per submission); a pass that filled its slots skips
//! the due-time lookup, as finishing deliveries wake it anyway. Shutdown
//! stops claiming and waits (up to the drain timeout) for deliveries in
//! flight; any it abandons are redelivered after their lease expires, with
//! the same instruction id.
//!
//! # Intake first
//!
//! Intake and deliveries share the replica's cores and its database. While
//! callers queue to submit ([`QUEUING_SUBMISSIONS`] or more submissions in
//! progress at once), a pass fills only a quarter of `max_in_flight`, and
//! at most [`HELD_SLOTS`], so a burst of submissions is answered faster and
//! the fan-out catches up after it: callers wait on intake synchronously,
//! deliveries have days.
//! The hold is bounded by lateness, not by time: once the oldest due work
//! of push processors (see [`Store::next_due`]) is `intake_priority` late
//! (default 30 s), passes take every free slot
//! again, so under sustained overload deliveries lag by about that much
//! and no more. `intake_priority = 0` turns it off.
//!
//! It is a trade: a burst is answered sooner (about 15 % more intake on
//! PostgreSQL) while over the burst and its fan-out together somewhat
//! fewer requests per second get their records, since intake alone leaves
//! part of the machine idle. The figures and the shares tried are in
//! `docs/decisions/0003-intake-first.md`.

pub mod adapter;
pub mod breaker;
mod deliver;
pub mod destination;
pub mod grpc;
pub mod push;
pub mod recorder;
mod slots;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{Processor, ProcessorId, Timestamp};
use crate::store::{Budget, ClaimKind, ClaimOrder, Store};
use crate::telemetry::Metrics;
use adapter::Adapter;
pub use recorder::Recorder;
pub use slots::{HELD_SLOTS, QUEUING_SUBMISSIONS};

/// Dispatcher settings.
#[derive(Clone, Debug)]
pub struct DispatchConfig {
    /// Most deliveries in flight across all processors.
    pub max_in_flight: usize,
    /// Longest sleep between ticks when nothing wakes the loop.
    pub poll_interval: Duration,
    /// Added to a push delivery's timeout to form its lease.
    pub lease_margin: Duration,
    /// How late due work may run while submissions queue (see "Intake
    /// first" above); zero turns the rule off.
    pub intake_priority: Duration,
    /// How long shutdown waits for deliveries in flight.
    pub drain_timeout: Duration,
    /// Consecutive failures that open a processor's breaker (0: never).
    pub breaker_failures: u32,
    /// The first cool-down of an open breaker.
    pub breaker_cooldown: Duration,
}

/// What one pass did.
struct Pass {
    /// Instructions claimed.
    claimed: usize,
    /// Some processor filled every slot it had (more due work is likely
    /// waiting for slots).
    saturated: bool,
    /// Deliveries in flight the pass filled up to.
    cap: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            poll_interval: Duration::from_secs(1),
            lease_margin: Duration::from_secs(30),
            intake_priority: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            breaker_failures: 10,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// Claims and delivers instructions to push processors.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    adapter: Arc<dyn Adapter>,
    config: DispatchConfig,
    /// Writes delivery results in batches.
    recorder: Recorder,
    /// Lease owner name of this dispatcher (unique per process).
    owner: Arc<str>,
    /// Global delivery slots.
    global: Arc<Semaphore>,
    /// Per-processor delivery slots, created on first sight of a processor
    /// and resized when its `max_in_flight` changes.
    per_processor: Arc<Mutex<HashMap<ProcessorId, slots::Slots>>>,
    /// Delivery and claim metrics.
    metrics: Arc<Metrics>,
    /// When the loop last turned (a monotonic instant; construction before
    /// the first turn), for readiness.
    heartbeat: Arc<Mutex<Instant>>,
    /// Claim passes so far: which processor reserves its slots first.
    passes: Arc<AtomicUsize>,
    /// Webhook processors' signing secrets, opened once per version of
    /// the processor (rotating a secret changes `updated_at`).
    secrets: Arc<Mutex<HashMap<ProcessorId, Secret>>>,
    /// Consecutive failed deliveries per processor, on this replica (see
    /// [`breaker`]).
    failures: Arc<Mutex<HashMap<ProcessorId, u32>>>,
    /// Whether the last pass saw cancel notices waiting.
    notices_waiting: Arc<AtomicBool>,
}

/// A webhook processor's signing secret, and the `updated_at` of the
/// processor it was read with.
type Secret = (Timestamp, Arc<str>);

impl Dispatcher {
    /// A dispatcher over `store` delivering through `adapter`, writing
    /// results through `recorder`.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        adapter: Arc<dyn Adapter>,
        recorder: Recorder,
        config: DispatchConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            metrics,
            // Counted from construction: a replica is ready as soon as its
            // database answers, not only once the loop's task has first
            // been scheduled (a race readiness probes could lose), and one
            // whose loop never starts turns unready like a stalled one.
            heartbeat: Arc::new(Mutex::new(Instant::now())),
            recorder,
            store,
            clock,
            adapter,
            global: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            owner: format!("dispatcher-{}", uuid::Uuid::new_v4()).into(),
            per_processor: Arc::default(),
            passes: Arc::default(),
            secrets: Arc::default(),
            failures: Arc::default(),
            notices_waiting: Arc::default(),
        }
    }

    /// Runs until `shutdown` fires, then drains deliveries in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.store.work_notifier();
        let mut in_flight = JoinSet::new();
        tracing::info!(owner = %self.owner, "dispatcher started");
        'outer: loop {
            *self.heartbeat.lock().expect("heartbeat lock") = Instant::now();
            let Pass {
                claimed,
                saturated,
                cap,
            } = match self.tick(&mut in_flight).await {
                Ok(pass) => pass,
                Err(e) => {
                    tracing::warn!(error = %e, "dispatcher tick failed; will retry");
                    Pass {
                        claimed: 0,
                        saturated: false,
                        cap: self.config.max_in_flight,
                    }
                }
            };
            // Reap finished deliveries so the set does not grow.
            while in_flight.try_join_next().is_some() {}
            // A pass that filled its slots leaves due work waiting for them:
            // finishing deliveries wake the loop, no need to look up the
            // next due time. Due work this pass could not take is no reason
            // to pass again at once either: wait for deliveries instead.
            let pause = if saturated {
                self.config.poll_interval
            } else {
                match self.sleep_for().await {
                    d if claimed == 0 && d.is_zero() => self.config.poll_interval,
                    d => d,
                }
            };
            let sleep = tokio::time::sleep(pause);
            tokio::pin!(sleep);
            // Wait for a reason to claim again: new work, due work, or
            // enough finished deliveries to make a claim worth its
            // transaction (a quarter of the pass's slots, or all of them). New
            // work with most slots busy waits for that refill too: under a
            // stream of submissions every intake commit wakes the loop, and
            // claiming at once filled the one or two slots just freed, in a
            // claim transaction (and request bumps) of its own each time.
            let refill = (cap / 4).max(1);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    _ = wake.notified() => {
                        if in_flight.is_empty() || self.free_under(cap) >= refill {
                            break;
                        }
                    }
                    _ = &mut sleep => break,
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {
                        while in_flight.try_join_next().is_some() {}
                        if in_flight.is_empty() || self.free_under(cap) >= refill {
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!(in_flight = in_flight.len(), "dispatcher draining");
        let drained = tokio::time::timeout(self.config.drain_timeout, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = in_flight.len(),
                "drain timed out; abandoned deliveries will be redelivered after their leases expire"
            );
            in_flight.abort_all();
        }
        tracing::info!("dispatcher stopped");
    }

    /// Whether the loop turned recently enough to call this replica ready:
    /// within three poll intervals (at least ten seconds).
    pub fn is_turning(&self) -> bool {
        let limit = (self.config.poll_interval * 3).max(Duration::from_secs(10));
        self.heartbeat.lock().expect("heartbeat lock").elapsed() < limit
    }

    /// One tick, then waits for every delivery it started: lets tests drain
    /// the queue deterministically. Returns how many were claimed.
    pub async fn run_once(&self) -> Result<usize, crate::store::StoreError> {
        let mut set = JoinSet::new();
        let pass = self.tick(&mut set).await?;
        while set.join_next().await.is_some() {}
        Ok(pass.claimed)
    }

    /// How long to sleep: until the earliest due instruction or cancel
    /// notice, at most the poll interval.
    async fn sleep_for(&self) -> Duration {
        let due = self.store.next_due().await.ok().flatten();
        let notice = match self.notices_waiting.load(Ordering::Relaxed) {
            true => self.store.next_cancel_notice().await.ok().flatten(),
            false => None,
        };
        match due.into_iter().chain(notice).min() {
            Some(due) => (due - self.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.config.poll_interval),
            None => self.config.poll_interval,
        }
    }

    /// Escalates overdue work and claims due work for every processor, all
    /// processors in one claim transaction.
    async fn tick(&self, set: &mut JoinSet<()>) -> Result<Pass, crate::store::StoreError> {
        let processors = self.store.all_processors().await?;
        let now = self.clock.now();
        let budgets: Vec<_> = processors
            .iter()
            .map(|p| Budget {
                processor: &p.spec.id,
                max_reminders: p.spec.max_reminders,
                max_attempts: p.spec.retry_policy.max_attempts,
            })
            .collect();
        self.store.escalate_overdue(&budgets, now).await?;
        // Free slots are shared out fairly, so the first processor of a pass
        // cannot take them all and leave the others to claim a few at a time.
        let mut push: Vec<(&Processor, Duration)> = processors
            .iter()
            .filter_map(|p| p.spec.adapter.push_timeout().map(|t| (p, t)))
            .collect();
        // Open breakers leave their processors out of the pass; a
        // half-open one lets this replica probe with one delivery.
        let (any_breaker, any_notice) = self.store.side_work().await?;
        self.notices_waiting.store(any_notice, Ordering::Relaxed);
        let breakers = if any_breaker {
            self.store.breakers().await?
        } else {
            HashMap::new()
        };
        let mut probes = Vec::new();
        if !breakers.is_empty() {
            let mut gated = Vec::with_capacity(push.len());
            for (p, timeout) in push {
                match self
                    .gate(p, &breakers, timeout + self.config.lease_margin, now)
                    .await?
                {
                    breaker::Gate::Closed => gated.push((p, timeout)),
                    breaker::Gate::Probe => {
                        probes.push(p.spec.id.clone());
                        gated.push((p, timeout));
                    }
                    breaker::Gate::Open => {}
                }
            }
            push = gated;
        }
        // Every processor gets the same share, rounded down: the remainder
        // (fewer slots than processors) waits for the next pass. Processors
        // given equal counts take the same requests from their queues, so a
        // request fanned out to them is claimed, and then recorded, in one
        // transaction each; handing the remainder to the first few split
        // one or two requests at every pass, whose rows the next claim and
        // the recorder then both locked, each waiting for the other's
        // commit. Only when there are fewer free slots than processors does
        // a processor go without in a pass; who goes first rotates, so none
        // goes without twice in a row.
        if !push.is_empty() {
            let first = self.passes.fetch_add(1, Ordering::Relaxed) % push.len();
            push.rotate_left(first);
        }
        let cap = self.cap(now).await?;
        let mut free = self.free_under(cap);
        let share = (free / push.len().max(1)).max(1);
        let slots: Vec<_> = push
            .iter()
            .map(|(p, _)| {
                let probe = probes.contains(&p.spec.id);
                let slots =
                    self.reserve(p, share.min(free).min(if probe { 1 } else { usize::MAX }));
                free -= slots.len();
                slots
            })
            .collect();
        let orders: Vec<ClaimOrder> = push
            .iter()
            .zip(&slots)
            .map(|((p, timeout), slots)| ClaimOrder {
                processor: &p.spec.id,
                max_reminders: p.spec.max_reminders,
                max_attempts: p.spec.retry_policy.max_attempts,
                limit: slots.len() as u32,
                lease: *timeout + self.config.lease_margin,
            })
            .collect();
        if orders.iter().all(|o| o.limit == 0) {
            return Ok(Pass {
                claimed: 0,
                saturated: !push.is_empty(),
                cap,
            });
        }
        let started = Instant::now();
        let claims = self.store.claim_many(&orders, &self.owner, now).await?;
        let took = started.elapsed();
        let mut claimed_total = 0;
        let mut saturated = false;
        for (((p, _), slots), claimed) in push.into_iter().zip(slots).zip(claims) {
            claimed_total += claimed.len();
            saturated |= !slots.is_empty() && claimed.len() == slots.len();
            let kinds: Vec<ClaimKind> = claimed.iter().map(|c| c.kind).collect();
            self.metrics
                .claim_finished(p.spec.id.as_str(), took, &kinds);
            let probe = probes.contains(&p.spec.id);
            let p = Arc::new(p.clone());
            // Unused slots are released when their permits drop here.
            for (c, permits) in claimed.into_iter().zip(slots) {
                let this = self.clone();
                let p = p.clone();
                set.spawn(async move {
                    let _permits = permits;
                    this.deliver(&p, c, probe).await;
                });
            }
        }
        if any_notice {
            claimed_total += self.send_cancel_notices(&processors, set).await?;
        }
        Ok(Pass {
            claimed: claimed_total,
            saturated,
            cap,
        })
    }
}
