//! The dispatcher: claim -> deliver -> record, forever.
//!
//! Each tick leases, for every push processor, as many due instructions as
//! it has free delivery slots (a per-processor limit, `max_in_flight` or
//! the adaptive one of [`concurrency`], inside a global one, shared out
//! fairly per pass), all processors at once: a request fanned out to five
//! processors costs one claim, not five (on PostgreSQL two transactions,
//! the leases and then their history; see `claim`). Per-processor limits
//! keep one slow processor from starving the others and bound what each
//! receives at once. Every leased
//! instruction is delivered on its own task; the answer is written back
//! fenced by the lease, so a dispatcher that lost its lease (it hung past
//! expiry and someone else re-claimed) records nothing.
//!
//! Failures are classified by the adapter: retryable ones are rescheduled by
//! writing `next_attempt_at` (exponential backoff with jitter, see
//! [`crate::domain::RetryPolicy`]); fatal ones and exhausted budgets escalate
//! to an operator. Nothing sleeps per instruction: the loop sleeps until the
//! earliest due time, the poll interval, a wake-up from intake, or a
//! refill coming free (a quarter of the slots not waiting for processors'
//! answers), whichever comes first (a wake-up while fewer slots are free
//! waits for them, or at most the poll interval: claims come in batches,
//! not one per submission); a pass that filled its slots skips
//! the due-time lookup, as finishing deliveries wake it anyway. Shutdown
//! stops claiming and waits (up to the drain timeout) for deliveries in
//! flight, and for claims whose history is being written, which then
//! start theirs; any it abandons are redelivered after their lease
//! expires, with the same instruction id.
//!
//! # Intake first
//!
//! Intake and deliveries share the replica's cores and its database. While
//! callers queue to submit ([`QUEUING_SUBMISSIONS`] or more submissions in
//! progress at once), a pass claims only while fewer than a quarter of
//! `max_in_flight`, and at most [`HELD_SLOTS`], are in the replica's own
//! hands (being claimed or written back, not waiting for a processor's
//! answer), so a burst of submissions is answered faster and the fan-out
//! catches up after it: callers wait on intake synchronously, deliveries
//! have days.
//! Deliveries waiting for slow processors cost intake little and are not
//! held (see the `slots` module).
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
mod callback_keys;
mod claim;
pub mod concurrency;
mod deliver;
pub mod destination;
pub mod federation;
pub mod federation_data;
pub mod grpc;
mod http_clients;
mod in_flight;
pub mod lookup;
mod notices;
pub mod opendsr;
mod pass;
pub mod push;
pub mod recorder;
mod slots;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{ProcessorId, Timestamp};
use crate::in_progress::InProgress;
use crate::store::Store;
use crate::telemetry::Metrics;
use adapter::Adapter;
use in_flight::InFlight;
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
    /// The hold left processors with room out of the pass (their calls
    /// starting make room under it).
    held_back: bool,
    /// What the pass filled up to.
    cap: slots::Cap,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 2048,
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
    /// Global delivery slots, held from the claim to the processor's
    /// answer.
    global: Arc<Semaphore>,
    /// Write-back slots, held from the processor's answer until its result
    /// is written (see the `slots` module).
    writing: Arc<Semaphore>,
    /// Told when a delivery hands its global slot over, and under the
    /// hold when a call starts.
    freed: Arc<Notify>,
    /// Per-processor delivery slots, created on first sight of a processor
    /// and made again when its `max_in_flight` changes.
    per_processor: Arc<Mutex<HashMap<ProcessorId, slots::ProcessorSlots>>>,
    /// Delivery and claim metrics.
    metrics: Arc<Metrics>,
    /// When the loop last turned (a monotonic instant; construction before
    /// the first turn), for readiness.
    heartbeat: Arc<Mutex<Instant>>,
    /// Claim passes so far: which processor reserves its slots (and its
    /// cancel notices' slots) first.
    passes: Arc<AtomicUsize>,
    /// Webhook processors' signing secrets, opened once per version of
    /// the processor (rotating a secret changes `updated_at`).
    secrets: Arc<Mutex<HashMap<ProcessorId, Secret>>>,
    /// Consecutive failed deliveries per processor, on this replica (see
    /// [`breaker`]).
    failures: Arc<Mutex<HashMap<ProcessorId, u32>>>,
    /// Whether the last pass saw cancel notices waiting.
    notices_waiting: Arc<AtomicBool>,
    /// Whether the last pass held deliveries back for intake: a call
    /// starting then frees room under the hold.
    holding: Arc<AtomicBool>,
    /// Calls to processors waiting for their answers (deliveries and
    /// cancel notices), which intake first does not hold back.
    awaiting: InProgress,
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
            writing: Arc::new(Semaphore::new(config.max_in_flight)),
            freed: Arc::default(),
            config,
            owner: format!("dispatcher-{}", uuid::Uuid::new_v4()).into(),
            per_processor: Arc::default(),
            passes: Arc::default(),
            secrets: Arc::default(),
            failures: Arc::default(),
            notices_waiting: Arc::default(),
            holding: Arc::default(),
            awaiting: InProgress::default(),
        }
    }

    /// Runs until `shutdown` fires, then drains deliveries in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.store.work_notifier();
        let in_flight = InFlight::default();
        tracing::info!(owner = %self.owner, "dispatcher started");
        'outer: loop {
            // A wait that ended for another reason as shutdown fired
            // (`select!` picks among ready branches at random) claims
            // nothing more.
            if shutdown.is_cancelled() {
                break;
            }
            *self.heartbeat.lock().expect("heartbeat lock") = Instant::now();
            let Pass {
                claimed,
                saturated,
                held_back,
                cap,
            } = match self.tick(&in_flight).await {
                Ok(pass) => pass,
                Err(e) => {
                    tracing::warn!(error = %e, "dispatcher tick failed; will retry");
                    Pass {
                        claimed: 0,
                        saturated: false,
                        held_back: false,
                        cap: slots::Cap::all(self.config.max_in_flight),
                    }
                }
            };
            // Reap finished deliveries so the set does not grow.
            in_flight.reap();
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
            // enough slots freed to make a claim worth its transaction (a
            // quarter of the pass's slots not waiting for processors'
            // answers, or all of them): slots waiting on slow processors
            // would otherwise make the ones freed wait long for a pass.
            // While deliveries yield to intake, those sent on to processors
            // count as finished: each call starting wakes the loop as a
            // slot freed does (see `Dispatcher::awaiting_answer`). New
            // work with most slots busy waits for that refill too: under a
            // stream of submissions every intake commit wakes the loop, and
            // claiming at once filled the one or two slots just freed, in a
            // claim transaction (and request bumps) of its own each time.
            // After a pass in which no processor had room, new work waits
            // for a delivery to end: until then it could not be claimed, and
            // every intake commit of a burst would start a pass for nothing.
            // (A pass the hold cut short had room, under the hold.)
            let no_room = saturated && claimed == 0 && !held_back;
            // A delivery handing its slot over at the answer frees a slot
            // of the replica's, not of its processor's: a reason to pass
            // only if the replica's slots were short of a refill, or the
            // hold cut the pass short (a call starting frees room under it
            // too).
            let short = !self.refilled(cap) || held_back;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    _ = wake.notified() => {
                        if in_flight.is_empty() || !no_room && self.refilled(cap) {
                            break;
                        }
                    }
                    _ = &mut sleep => break,
                    _ = self.freed.notified() => {
                        if short && self.refilled(cap) {
                            break;
                        }
                    }
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {
                        in_flight.reap();
                        if in_flight.is_empty() || self.refilled(cap) {
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!(in_flight = in_flight.len(), "dispatcher draining");
        let drained = tokio::time::timeout(self.config.drain_timeout, in_flight.drain()).await;
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
        let set = InFlight::default();
        let pass = self.tick(&set).await?;
        set.drain().await;
        Ok(pass.claimed)
    }
}
