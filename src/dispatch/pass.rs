//! One dispatcher pass: escalate overdue work, send due cancel notices
//! (see `super::notices`), share the free delivery slots out between push
//! processors (leaving out those whose circuit breaker is open), claim for
//! all of them at once, and start each delivery on its own task (see
//! `super::claim`); and how long to sleep after it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Dispatcher, InFlight, Pass, breaker, concurrency};
use crate::domain::Processor;
use crate::store::{Budget, ClaimOrder};

impl Dispatcher {
    /// How long to sleep: until the earliest due instruction or cancel
    /// notice, at most the poll interval.
    pub(super) async fn sleep_for(&self) -> Duration {
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

    /// Escalates overdue work, sends due cancel notices, and claims due
    /// work for every processor, all processors in one claim (see
    /// `super::claim`).
    pub(super) async fn tick(&self, set: &InFlight) -> Result<Pass, crate::store::StoreError> {
        self.metrics.dispatch_pass();
        let processors = self.store.all_processors().await?;
        let now = self.clock.now();
        let budgets: Vec<_> = processors
            .iter()
            .map(|p| Budget {
                processor: &p.spec.id,
                max_reminders: p.spec.reminder_budget(),
                max_attempts: p.spec.retry_policy.max_attempts,
                polls: p.spec.adapter.polls(),
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
        // half-open one lets this replica probe with one cancel notice or
        // one delivery.
        let (any_breaker, any_notice) = self.store.side_work().await?;
        self.notices_waiting.store(any_notice, Ordering::Relaxed);
        let breakers = if any_breaker {
            self.store.breakers().await?
        } else {
            HashMap::new()
        };
        let mut probes = HashMap::new();
        if !breakers.is_empty() {
            let mut gated = Vec::with_capacity(push.len());
            for (p, timeout) in push {
                match self
                    .gate(p, &breakers, timeout + self.config.lease_margin, now)
                    .await?
                {
                    breaker::Gate::Closed => gated.push((p, timeout)),
                    breaker::Gate::Probe(cooldown) => {
                        probes.insert(p.spec.id.clone(), cooldown);
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
        // goes without twice in a row. A processor's own room (its limit
        // less its deliveries in flight) can be smaller than the share, and
        // differs between processors from pass to pass as their answers
        // come back: see `even_out`.
        if !push.is_empty() {
            let first = self.passes.fetch_add(1, Ordering::Relaxed) % push.len();
            push.rotate_left(first);
        }
        // Probes go first: with fewer free slots than processors, one
        // slot decides whether a whole processor's deliveries resume.
        push.sort_by_key(|(p, _)| !probes.contains_key(&p.spec.id));
        let cap = self.cap(now).await?;
        // Before any call of this pass starts (see `awaiting_answer`).
        self.holding.store(cap.held, Ordering::Relaxed);
        // Cancel notices go first, within the pass's slots (see
        // `super::notices`); a processor whose probe a notice took gets no
        // probe delivery besides.
        let (notices, probing) = match any_notice {
            true => {
                let gated: Vec<_> = (push.iter())
                    .map(|(p, _)| (*p, probes.get(&p.spec.id).copied()))
                    .collect();
                self.send_cancel_notices(&gated, cap, set).await?
            }
            false => (0, HashSet::new()),
        };
        if !probing.is_empty() {
            probes.retain(|id, _| !probing.contains(id));
            push.retain(|(p, _)| !probing.contains(&p.spec.id));
        }
        let mut free = self.free_under(cap);
        // Whether the hold, not the processors' room, may cut this pass
        // short (see `held_back` below).
        let room_beyond_hold =
            cap.held && push.iter().map(|(p, _)| self.room(p)).sum::<usize>() > free;
        let share = (free / push.len().max(1)).max(1);
        let wants: Vec<Want> = push
            .iter()
            .map(|(p, _)| match probes.contains_key(&p.spec.id) {
                true => Want {
                    most: self.room(p).min(1),
                    backlogged: false,
                    probe: true,
                },
                false => Want {
                    most: self.room(p).min(share),
                    backlogged: self.backlogged(p),
                    probe: false,
                },
            })
            .collect();
        let evened = even_out(&wants);
        let slots: Vec<_> = push
            .iter()
            .zip(&evened)
            .map(|((p, _), (most, _))| {
                let slots = self.reserve(p, (*most).min(free));
                free -= slots.len();
                slots
            })
            .collect();
        let orders: Vec<ClaimOrder> = push
            .iter()
            .zip(&slots)
            .zip(&evened)
            .map(|(((p, timeout), slots), (_, aligned))| ClaimOrder {
                processor: &p.spec.id,
                max_reminders: p.spec.reminder_budget(),
                max_attempts: p.spec.retry_policy.max_attempts,
                polls: p.spec.adapter.polls(),
                limit: slots.len() as u32,
                max_in_flight: p.spec.max_in_flight.unwrap_or(concurrency::CEILING),
                per_second: p.spec.max_deliveries_per_second,
                lease: *timeout + self.config.lease_margin,
                aligned: *aligned,
            })
            .collect();
        let (claimed, saturated) = match orders.iter().all(|o| o.limit == 0) {
            // Nothing to claim: every processor is out of room, or evened
            // out to none beside one that is. Wait for deliveries to end,
            // and give back the probes this pass took.
            true => {
                for (p, timeout) in push.iter().filter(|(p, _)| probes.contains_key(&p.spec.id)) {
                    self.unused_probe(p, *timeout, now).await;
                }
                (0, !push.is_empty())
            }
            false => {
                self.claim_and_deliver(push, slots, &orders, &probes, now, set)
                    .await?
            }
        };
        Ok(Pass {
            claimed: claimed + notices,
            saturated,
            // The hold cut it short if a processor filled the slots it was
            // given and the processors had room beyond them: their calls
            // starting make room for the next pass.
            held_back: room_beyond_hold && saturated,
            cap,
        })
    }
}

/// What one processor of a pass may claim, before [`even_out`].
#[derive(Clone, Copy, Debug)]
struct Want {
    /// Its share, within its own room (1 at most for a breaker's probe).
    most: usize,
    /// Whether its last claim took all it was given (its queue has more).
    backlogged: bool,
    /// Whether it is a circuit breaker's probe.
    probe: bool,
}

/// Evens out what the processors of a pass claim: every processor taking
/// part that wants at least half of the most any of them wants gets the
/// least among them, and is aligned with the others (see below); the rest
/// keep theirs. Probes never take part. The most is taken over processors
/// whose last claim took all it was given (their queues have more), or
/// over all when none did, so that an idle processor (all room, nothing
/// due) cannot make the busy ones look far behind; the idle one is evened
/// with them and claims nothing anyway. Processors with little room (a
/// slow one) keep theirs and are not aligned.
///
/// Each processor leases from the front of its queue, and the queues of
/// processors fed alike hold a request's instructions in one order. A
/// processor that claims fewer than the others in one pass falls behind
/// them by the difference, and stays behind while their counts are equal:
/// from then on every pass leaves the same number of requests claimed for
/// some processors and not for others, and those requests are claimed, and
/// recorded, in two transactions each, whose locks of the request rows
/// meet; left to the rooms, such offsets add up pass after pass. A
/// processor far behind the others is not waited for: it could only hold
/// the rest back. Equal counts keep aligned queues aligned, and the claim
/// closes the offsets that remain (no aligned processor leases past the
/// earliest last pick of those that took all they were allowed, see
/// [`crate::store::ClaimOrder::aligned`]), so a processor that fell behind
/// while it had little room catches up once it has room again.
fn even_out(wants: &[Want]) -> Vec<(usize, bool)> {
    let taking_part = || wants.iter().filter(|w| !w.probe);
    let most = taking_part()
        .filter(|w| w.backlogged)
        .map(|w| w.most)
        .max()
        .or_else(|| taking_part().map(|w| w.most).max())
        .unwrap_or(0);
    let close = |w: &Want| !w.probe && 2 * w.most >= most;
    let level = wants
        .iter()
        .filter(|w| close(w))
        .map(|w| w.most)
        .min()
        .unwrap_or(0);
    wants
        .iter()
        .map(|w| {
            if close(w) {
                (level, true)
            } else {
                (w.most, false)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Want, even_out};

    /// What `even_out` gives each processor, without whether it is aligned.
    fn counts(wants: &[Want]) -> Vec<usize> {
        even_out(wants).into_iter().map(|(n, _)| n).collect()
    }

    /// Wants of processors with a backlog.
    fn busy(most: &[usize]) -> Vec<Want> {
        most.iter()
            .map(|&most| Want {
                most,
                backlogged: true,
                probe: false,
            })
            .collect()
    }

    #[test]
    fn processors_close_to_the_most_claim_the_same() {
        assert_eq!(counts(&busy(&[51, 40, 51, 30, 51])), vec![30; 5]);
        assert_eq!(counts(&busy(&[51, 51, 51])), vec![51, 51, 51]);
        // Queues that all ran short: evened all the same.
        let drained: Vec<Want> = busy(&[51, 40])
            .into_iter()
            .map(|w| Want {
                backlogged: false,
                ..w
            })
            .collect();
        assert_eq!(counts(&drained), vec![40, 40]);
    }

    #[test]
    fn processors_far_behind_keep_theirs_and_hold_no_one_back() {
        assert_eq!(counts(&busy(&[51, 1, 45, 10])), vec![45, 1, 45, 10]);
        assert_eq!(counts(&busy(&[1, 1, 50])), vec![1, 1, 50]);
        assert_eq!(counts(&busy(&[0, 51])), vec![0, 51]);
        assert_eq!(counts(&busy(&[0, 0])), vec![0, 0]);
        assert_eq!(counts(&[]), Vec::<usize>::new());
    }

    #[test]
    fn an_idle_processor_does_not_set_the_level_and_probes_keep_theirs() {
        let mut wants = busy(&[50, 48, 45, 52]);
        wants.push(Want {
            most: 200,
            backlogged: false,
            probe: false,
        });
        assert_eq!(counts(&wants), vec![45, 45, 45, 45, 45]);
        let mut wants = busy(&[2, 2]);
        wants.push(Want {
            most: 1,
            backlogged: false,
            probe: true,
        });
        assert_eq!(counts(&wants), vec![2, 2, 1]);
    }

    #[test]
    fn only_the_processors_evened_are_aligned() {
        let aligned =
            |wants: &[Want]| -> Vec<bool> { even_out(wants).into_iter().map(|(_, a)| a).collect() };
        assert_eq!(aligned(&busy(&[51, 1, 45, 10])), [true, false, true, false]);
        let mut wants = busy(&[2, 2]);
        wants.push(Want {
            most: 1,
            backlogged: false,
            probe: true,
        });
        assert_eq!(aligned(&wants), [true, true, false]);
    }
}
