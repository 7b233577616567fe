//! Delivery slots: how many deliveries may be in flight, overall
//! (`max_in_flight`) and per processor (its `max_in_flight`), and how many
//! a pass may fill while callers queue to submit (intake first, see the
//! module documentation of [`super`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Dispatcher;
use crate::domain::{Processor, Timestamp};
use crate::store::StoreError;

/// Submissions in progress at once from which deliveries yield to intake:
/// at the 5–10 ms an idle writer takes, eight at once means callers are
/// queuing for it rather than arriving now and then.
pub const QUEUING_SUBMISSIONS: usize = 8;

/// While deliveries yield, they keep `max_in_flight` divided by this...
const YIELDING_SHARE: usize = 4;

/// ... and at most this many slots: what the share keeps at a
/// `max_in_flight` of 256. A larger `max_in_flight` (the default is 1,024)
/// is there to keep slow processors busy and speed the fan-out up, not to
/// slow bursts down with it (see `docs/decisions/0003-intake-first.md`).
pub const HELD_SLOTS: usize = 64;

/// A processor's delivery slots and the limit they were sized for.
pub(super) type Slots = (u32, Arc<Semaphore>);

/// One delivery's slot: a global permit and one of its processor's.
pub(super) type Slot = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl Dispatcher {
    /// Deliveries that may start before `cap` are in flight.
    pub(super) fn free_under(&self, cap: usize) -> usize {
        let in_flight = self.config.max_in_flight - self.global.available_permits();
        cap.saturating_sub(in_flight)
    }

    /// The deliveries in flight this pass may fill up to: all of
    /// `max_in_flight`, or a quarter of it (at most [`HELD_SLOTS`]) while
    /// submissions queue and the oldest due work of push processors is
    /// less than `intake_priority` late.
    pub(super) async fn cap(&self, now: Timestamp) -> Result<usize, StoreError> {
        let all = self.config.max_in_flight;
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
        Ok((all / YIELDING_SHARE).clamp(1, HELD_SLOTS))
    }

    /// Takes up to `most` (global, per-processor) slot pairs, as many as
    /// are free now.
    pub(super) fn reserve(&self, p: &Processor, most: usize) -> Vec<Slot> {
        let sem = {
            let mut map = self.per_processor.lock().expect("semaphore map lock");
            let entry = map.entry(p.spec.id.clone()).or_insert_with(|| {
                (
                    p.spec.max_in_flight,
                    Arc::new(Semaphore::new(p.spec.max_in_flight as usize)),
                )
            });
            if entry.0 != p.spec.max_in_flight {
                // Resized: new deliveries use the new limit; old permits
                // drain from the old semaphore.
                *entry = (
                    p.spec.max_in_flight,
                    Arc::new(Semaphore::new(p.spec.max_in_flight as usize)),
                );
            }
            entry.1.clone()
        };
        let mut slots = Vec::new();
        while slots.len() < most
            && let (Ok(g), Ok(s)) = (
                self.global.clone().try_acquire_owned(),
                sem.clone().try_acquire_owned(),
            )
        {
            slots.push((g, s));
        }
        slots
    }
}
