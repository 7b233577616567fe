//! Delivery slots: how many deliveries may be in flight, overall
//! (`max_in_flight`) and per processor (its `max_in_flight`, or the
//! adaptive limit of [`super::concurrency`] when it has none), and how
//! many a pass may fill while callers queue to submit (intake first, see
//! the module documentation of [`super`]).
//!
//! A delivery holds its global slot from its claim until its processor
//! answers, and then, while the recorder writes its result, a write-back
//! slot (as many as `max_in_flight`) in its place: the slot would
//! otherwise stand idle while its answer waits for and rides in a
//! recorder batch (about 9 % more carried with processors answering in
//! 200 ms, see `docs/decisions/0008-deliveries-in-flight.md`). Its
//! processor's slot it holds until the result is written, as the claim
//! counts it against the processor's limit until then. A cancel notice
//! hands its global slot over the same way while its row is written, but
//! frees its processor's slot at the answer: no claim counts notices.
//!
//! The hold counts the deliveries in the replica's own hands (being
//! claimed or written back), not those waiting for a processor's answer:
//! what competes with intake for the cores and the database is each
//! delivery's claim and the write of its result, the same for a processor
//! answering in 200 ms as for one answering at once (see
//! `docs/decisions/0003-intake-first.md`). It gates claims: a held pass
//! claims only up to it, while answers that come back together are
//! written back together.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Dispatcher;
use super::concurrency::{AdaptiveLimit, CEILING, Ticket};
use crate::domain::{MAX_IN_FLIGHT, Processor, Timestamp};
use crate::in_progress::Counted;
use crate::store::StoreError;

/// Submissions in progress at once from which deliveries yield to intake:
/// at the 5–10 ms an idle writer takes, eight at once means callers are
/// queuing for it rather than arriving now and then.
pub const QUEUING_SUBMISSIONS: usize = 8;

/// While deliveries yield, a pass claims only up to `max_in_flight`
/// divided by this in the replica's own hands (not waiting for a
/// processor's answer)...
const YIELDING_SHARE: usize = 4;

/// ... and at most this many slots: what the share keeps at a
/// `max_in_flight` of 256. A larger `max_in_flight` (the default is 2,048)
/// is there to keep slow processors busy and speed the fan-out up, not to
/// slow bursts down with it (see `docs/decisions/0003-intake-first.md`).
pub const HELD_SLOTS: usize = 64;

/// Permits of a processor's semaphore: as many as any limit allows.
const PERMITS: usize = if MAX_IN_FLIGHT > CEILING {
    MAX_IN_FLIGHT as usize
} else {
    CEILING as usize
};

/// A processor's delivery slots on this replica.
pub(super) struct ProcessorSlots {
    /// The processor's `max_in_flight` they follow (`None`: adaptive).
    made_for: Option<u32>,
    /// One permit per delivery in flight. It has [`PERMITS`], more than
    /// any limit: the limit is applied when slots are reserved, so a
    /// changed limit counts the deliveries already in flight.
    semaphore: Arc<Semaphore>,
    /// The adaptive limit, for a processor without a `max_in_flight`.
    adaptive: Option<AdaptiveLimit>,
    /// Whether its last claim took every slot reserved for it (true until
    /// it first claims): more due work is likely waiting in its queue.
    backlogged: bool,
}

impl ProcessorSlots {
    fn new(made_for: Option<u32>) -> Self {
        Self {
            made_for,
            semaphore: Arc::new(Semaphore::new(PERMITS)),
            adaptive: made_for.is_none().then(AdaptiveLimit::default),
            backlogged: true,
        }
    }

    /// Follows a changed `max_in_flight`: a fixed limit holds from the
    /// next reservation; a switch to the adaptive limit starts it afresh.
    fn follow(&mut self, made_for: Option<u32>) {
        if made_for.is_none() && self.adaptive.is_none() {
            self.adaptive = Some(AdaptiveLimit::default());
        } else if made_for.is_some() {
            self.adaptive = None;
        }
        self.made_for = made_for;
    }

    fn in_flight(&self) -> usize {
        PERMITS - self.semaphore.available_permits()
    }

    /// Deliveries that may be in flight now.
    fn limit(&self) -> u32 {
        match &self.adaptive {
            Some(a) => a.get(),
            None => self.made_for.unwrap_or(CEILING),
        }
    }
}

/// One delivery's slot: a global permit and one of its processor's.
pub(super) type Slot = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// What a pass may fill, and the loop waits to refill.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cap {
    /// Deliveries in flight, or (`held`) in the replica's own hands.
    pub most: usize,
    /// Whether deliveries yield to intake: those waiting for processors'
    /// answers do not count against `most`.
    pub held: bool,
}

impl Cap {
    /// Every slot of `max_in_flight`, nothing held.
    pub fn all(max_in_flight: usize) -> Self {
        Self {
            most: max_in_flight,
            held: false,
        }
    }
}

impl Dispatcher {
    /// Deliveries that may start now under `cap` (and `max_in_flight`).
    pub(super) fn free_under(&self, cap: Cap) -> usize {
        let free = self.global.available_permits();
        let mut counted = self.config.max_in_flight - free;
        if cap.held {
            let writing = self.config.max_in_flight - self.writing.available_permits();
            counted = counted.saturating_sub(self.awaiting.get()) + writing;
        }
        cap.most.saturating_sub(counted).min(free)
    }

    /// Whether enough slots are free under `cap` to make a claim worth
    /// its transaction: a quarter of those not waiting for processors'
    /// answers.
    pub(super) fn refilled(&self, cap: Cap) -> bool {
        let waiting = if cap.held { 0 } else { self.awaiting.get() };
        self.free_under(cap) >= (cap.most.saturating_sub(waiting) / 4).max(1)
    }

    /// Hands a call whose processor answered (a delivery or a cancel
    /// notice) from its `global` slot to a write-back one (waiting while
    /// `max_in_flight` results are being written), so the global slot
    /// starts the next delivery while this one's result is written, and
    /// wakes the loop to refill. The caller keeps or drops its
    /// processor's slot itself.
    pub(super) async fn hand_over(&self, global: OwnedSemaphorePermit) -> OwnedSemaphorePermit {
        let writing = self
            .writing
            .clone()
            .acquire_owned()
            .await
            .expect("the write-back semaphore is never closed");
        drop(global);
        self.freed.notify_one();
        writing
    }

    /// Counts a call to a processor, from now until the returned guard
    /// drops (once the processor answered, or the call failed). Under the
    /// hold, the call leaves the replica's hands as it starts, which frees
    /// room for the next pass: the loop is woken as for a slot handed
    /// over, or after a pass the hold cut short it would wait for an
    /// answer or the poll interval.
    pub(super) fn awaiting_answer(&self) -> Counted {
        let counted = self.awaiting.start();
        if self.holding.load(Ordering::Relaxed) {
            self.freed.notify_one();
        }
        counted
    }

    /// What this pass may fill: all of `max_in_flight`; or, while
    /// submissions queue and the oldest due work of push processors is
    /// less than `intake_priority` late, a quarter of it (at most
    /// [`HELD_SLOTS`]) in the replica's own hands, besides the deliveries
    /// waiting for processors' answers.
    pub(super) async fn cap(&self, now: Timestamp) -> Result<Cap, StoreError> {
        let all = Cap::all(self.config.max_in_flight);
        if self.config.intake_priority.is_zero()
            || self.store.submissions_in_progress() < QUEUING_SUBMISSIONS
        {
            return Ok(all);
        }
        let late = match self.store.next_due().await? {
            Some(due) => (now - due).to_std().unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        };
        if late >= self.config.intake_priority {
            return Ok(all);
        }
        self.metrics.dispatch_yielded();
        Ok(Cap {
            most: (all.most / YIELDING_SHARE).clamp(1, HELD_SLOTS),
            held: true,
        })
    }

    /// How many more deliveries `p` may have in flight now, within its
    /// limit (not counting the global slots).
    pub(super) fn room(&self, p: &Processor) -> usize {
        self.slots_of(p).1
    }

    /// Whether `p`'s last claim took every slot reserved for it.
    pub(super) fn backlogged(&self, p: &Processor) -> bool {
        let map = self.per_processor.lock().expect("slots lock");
        map.get(&p.spec.id).is_none_or(|e| e.backlogged)
    }

    /// Notes what `p`'s claim took: `claimed` of `reserved` slots.
    pub(super) fn note_claim(&self, p: &Processor, claimed: usize, reserved: usize) {
        if reserved == 0 {
            return;
        }
        let mut map = self.per_processor.lock().expect("slots lock");
        if let Some(entry) = map.get_mut(&p.spec.id) {
            entry.backlogged = claimed == reserved;
        }
    }

    /// Takes up to `most` (global, per-processor) slot pairs, as many as
    /// are free now within the processor's limit.
    pub(super) fn reserve(&self, p: &Processor, most: usize) -> Vec<Slot> {
        let (sem, room) = self.slots_of(p);
        let mut slots = Vec::new();
        while slots.len() < most.min(room)
            && let (Ok(g), Ok(s)) = (
                self.global.clone().try_acquire_owned(),
                sem.clone().try_acquire_owned(),
            )
        {
            slots.push((g, s));
        }
        slots
    }

    /// `p`'s slots, made on first sight of it and following its
    /// `max_in_flight` when it changes, and the room left in them.
    fn slots_of(&self, p: &Processor) -> (Arc<Semaphore>, usize) {
        let mut map = self.per_processor.lock().expect("slots lock");
        let made_for = p.spec.max_in_flight;
        let mut changed = false;
        let entry = map.entry(p.spec.id.clone()).or_insert_with(|| {
            changed = true;
            ProcessorSlots::new(made_for)
        });
        if entry.made_for != made_for {
            entry.follow(made_for);
            changed = true;
        }
        if changed {
            self.metrics
                .delivery_limit(p.spec.id.as_str(), entry.limit());
        }
        let room = (entry.limit() as usize).saturating_sub(entry.in_flight());
        (entry.semaphore.clone(), room)
    }

    /// The ticket of the deliveries to `p` a pass starts, holding `unused`
    /// slots it is about to give back; `None` for a fixed limit.
    pub(super) fn ticket(&self, p: &Processor, unused: usize) -> Option<Ticket> {
        let map = self.per_processor.lock().expect("slots lock");
        let entry = map.get(&p.spec.id)?;
        let adaptive = entry.adaptive.as_ref()?;
        Some(adaptive.ticket(entry.in_flight().saturating_sub(unused)))
    }

    /// Teaches `p`'s adaptive limit the answer of a delivery that started
    /// with `ticket`: it `took` this long, and `failed` if `p` could not
    /// cope.
    pub(super) fn observe(&self, p: &Processor, ticket: Ticket, took: Duration, failed: bool) {
        let Some(timeout) = p.spec.adapter.push_timeout() else {
            return;
        };
        let mut map = self.per_processor.lock().expect("slots lock");
        let Some(adaptive) = map.get_mut(&p.spec.id).and_then(|e| e.adaptive.as_mut()) else {
            return;
        };
        let before = adaptive.get();
        adaptive.observe(ticket, took, timeout, failed);
        if adaptive.get() != before {
            self.metrics
                .delivery_limit(p.spec.id.as_str(), adaptive.get());
        }
    }
}
