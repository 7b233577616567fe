//! Claims: leasing due instructions for delivery, in batches.
//!
//! An instruction is due when it is PENDING and its `next_attempt_at` has
//! passed, when it is DELIVERING and its lease has expired (the holder
//! crashed or hung: this is the redelivery path), or when it is ACKNOWLEDGED
//! and its outcome is overdue (a reminder). One set-based `UPDATE` leases a
//! batch for several processors at once (a union of per-processor picks,
//! each read in due order off its partial index); on PostgreSQL the
//! candidate rows are picked `FOR UPDATE SKIP LOCKED`, so replicas claiming
//! at the same moment take disjoint rows instead of queueing behind each
//! other. Each processor's picks are read in due order, equal due times
//! in request order, one order for every processor, and the processors
//! the dispatcher evened out are aligned: none leases past the last pick of
//! one that took all it was allowed (see `super::picks`), so a processor that
//! fell behind the others catches up and requests are leased whole. The
//! lease owner and the attempt number together fence the holder: a
//! dispatcher whose lease expired and was re-claimed can no longer record
//! anything for that instruction. Whether a claim's history is written in
//! the same transaction or the next is `super::claim_steps`' business.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;

use super::aftermath::By;
use super::aftermath::after_changes;
use super::claim_steps::Leased;
use super::codec::{instruction, micros, qualified};
use super::picks::{PICKED, PICKS, align, deliveries_since_arm, pick_due, picked};
use super::sealed::PAYLOAD;
use super::sent::restamp_unsent;
use super::sql::Sql;
use super::transition::{AttemptClose, Change, apply};
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{
    AttemptResult, InstructionEvent, InstructionState, InstructionView, ProcessorId,
    SubjectIdentity, Timestamp,
};

/// Why an instruction was claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    /// First delivery.
    First,
    /// A retry after a failure, or a redelivery after an expired lease.
    Retry,
    /// A reminder for an acknowledged instruction whose outcome is overdue.
    Reminder,
}

impl ClaimKind {
    /// The name metrics give it: `first`, `retry` or `reminder`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Retry => "retry",
            Self::Reminder => "reminder",
        }
    }
}

/// A leased instruction, with what the processor must be sent.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The instruction after the claim (state DELIVERING).
    pub instruction: InstructionView,
    /// The identities the processor accepts (personal data).
    pub identities: Vec<SubjectIdentity>,
    /// Why it was claimed.
    pub kind: ClaimKind,
    /// The lease holder, for fencing the result.
    pub owner: String,
    /// The submitting call's W3C `traceparent`, if it had one.
    pub trace_context: Option<String>,
}

impl Claimed {
    /// The attempt number this claim delivers (the fencing token).
    pub fn attempt(&self) -> u32 {
        self.instruction.attempts
    }
}

/// What one processor may claim in a [`Store::claim_many`] pass.
#[derive(Clone, Copy, Debug)]
pub struct ClaimOrder<'a> {
    /// The processor.
    pub processor: &'a ProcessorId,
    /// Its reminder budget (acknowledged instructions past it are not
    /// reminded again but escalated).
    pub max_reminders: u32,
    /// Its delivery budget (an expired lease past it is not delivered
    /// again but escalated).
    pub max_attempts: u32,
    /// Whether its adapter polls: its reminders then spend none of
    /// `max_attempts` (see [`super::picks::deliveries_since_arm`]).
    pub polls: bool,
    /// Most instructions to lease (this replica's free delivery slots).
    pub limit: u32,
    /// Its deliveries in flight at once across every replica.
    pub max_in_flight: u32,
    /// Its deliveries started per second across every replica; 0 for no
    /// limit.
    pub per_second: u32,
    /// How long the lease lasts.
    pub lease: Duration,
    /// Whether its first deliveries and retries are aligned with the other
    /// aligned orders of the pass: when some of them picked all they were
    /// allowed, no aligned order leases past the earliest, in due order,
    /// of their last picks, so that a processor whose queue is a little
    /// behind the others' catches up instead of splitting every request
    /// after (see `super::picks::align`). Orders are aligned only while
    /// every aligned order of the pass has all the slots it asked for: none
    /// went without, and no deployment-wide limit or rate cut one.
    pub aligned: bool,
}

impl Store {
    /// Leases `orders`; the claims' history too unless `split`.
    #[tracing::instrument(name = "store.claim", skip_all, fields(processors = orders.len(), claimed))]
    pub(super) async fn lease(
        &self,
        orders: &[ClaimOrder<'_>],
        owner: &str,
        now: Timestamp,
        split: bool,
    ) -> Result<Leased, StoreError> {
        debug_assert_eq!(
            InstructionState::Pending.apply(InstructionEvent::Claim),
            Some(InstructionState::Delivering)
        );
        let mut out: Vec<Vec<Claimed>> = orders.iter().map(|_| Vec::new()).collect();
        let every_aligned_has_slots = orders.iter().filter(|o| o.aligned).all(|o| o.limit > 0);
        let orders: Vec<(usize, &ClaimOrder)> = orders
            .iter()
            .enumerate()
            .filter(|(_, o)| o.limit > 0)
            .collect();
        if orders.is_empty() {
            return Ok(Leased::written(out));
        }
        let now_us = micros(now);
        let lock = match self.backend {
            Backend::Postgres => " for update skip locked",
            Backend::Sqlite => "",
        };
        // Leases the rows of a preceding `v (id, lease_until)`.
        let lease = |sql: &mut Sql| {
            sql.push(
                " update instructions set state = 'DELIVERING', attempts = attempts + 1, \
                 attempts_since_arm = attempts_since_arm + 1, \
                 reminders = reminders + case when state = 'ACKNOWLEDGED' then 1 else 0 end, \
                 next_attempt_at = null, reply_due_at = null, lease_owner = ",
            )
            .bind(owner)
            .push(", lease_expires_at = v.lease_until, first_instructed_at = coalesce(first_instructed_at, ")
            .bind(now_us)
            .push(") from v where instructions.id = v.id and ")
            .in_cte("instructions.id", "v", "id")
            .push(" returning payload, trace_context, ")
            .push(&qualified("instructions"));
        };
        let mut tx = self.begin().await?;
        // What the deployment-wide limits leave each processor (see
        // `super::limits`).
        let asked: Vec<&ClaimOrder> = orders.iter().map(|(_, o)| *o).collect();
        let grants = self.grants(&mut tx, &asked, now).await?;
        // Aligning needs every aligned processor in the pass with all the
        // slots it was given: with fewer slots than processors some go
        // without, and one that a deployment-wide limit or rate holds back
        // would hold the others to its pace; aligning them would only leave
        // slots empty.
        let even = orders
            .iter()
            .zip(&grants.limits)
            .all(|((_, o), limit)| !o.aligned || *limit == o.limit)
            && every_aligned_has_slots;
        let granted: Vec<(usize, ClaimOrder)> = orders
            .iter()
            .zip(&grants.limits)
            .filter(|(_, limit)| **limit > 0)
            .map(|((i, o), limit)| {
                (
                    *i,
                    ClaimOrder {
                        limit: *limit,
                        aligned: even && o.aligned,
                        ..**o
                    },
                )
            })
            .collect();
        if granted.is_empty() {
            tx.commit().await?;
            return Ok(Leased::written(out));
        }
        let orders: Vec<(usize, &ClaimOrder)> = granted.iter().map(|(i, o)| (*i, o)).collect();
        // Due first deliveries and retries, in due order straight off the
        // partial index (the common case, and the bulk of a backlog).
        let picks: Vec<_> = orders.iter().map(|(_, o)| (**o, o.limit)).collect();
        let mut pending = Sql::new(self.backend, PICKS);
        picked(&mut pending, &picks, now, &|sql, order, limit| {
            pick_due(
                sql,
                order.processor,
                "PENDING",
                "next_attempt_at",
                now_us,
                None,
                limit,
            );
            sql.push(lock);
        });
        pending.push(")");
        align(&mut pending);
        lease(&mut pending);
        let mut rows = pending.query().fetch_all(&mut *tx).await?;
        // Where the redeliveries and reminders start among `rows`.
        let first_picks = rows.len();
        let mut taken: HashMap<String, u32> = HashMap::new();
        for row in &rows {
            *taken.entry(row.try_get("processor_id")?).or_default() += 1;
        }
        // Then the rare ones, for processors with room left: expired leases
        // (redeliveries) and overdue outcomes (reminders).
        let room: Vec<_> = orders
            .iter()
            .filter_map(|(_, o)| {
                let used = taken.get(o.processor.as_str()).copied().unwrap_or(0);
                let rest = ClaimOrder {
                    aligned: false,
                    ..**o
                };
                (used < o.limit).then_some((rest, o.limit - used))
            })
            .collect();
        if !room.is_empty() {
            // Each kind is read in due order off its own partial index (one
            // `OR` of both made PostgreSQL scan the table: 0.8 s a pass with
            // a million instructions), at most `limit` of both together.
            let mut others = Sql::new(self.backend, "with v as (select id, lease_until from (");
            picked(&mut others, &room, now, &|sql, order, limit| {
                sql.push(&format!("select {PICKED} from (select {PICKED} from ("));
                pick_due(
                    sql,
                    order.processor,
                    "DELIVERING",
                    "lease_expires_at",
                    now_us,
                    Some((
                        &deliveries_since_arm("", &i64::from(order.polls).to_string()),
                        i64::from(order.max_attempts),
                    )),
                    limit,
                );
                sql.push(lock)
                    .push(&format!(") d union all select {PICKED} from ("));
                let budget = ("reminders", i64::from(order.max_reminders));
                pick_due(
                    sql,
                    order.processor,
                    "ACKNOWLEDGED",
                    "reply_due_at",
                    now_us,
                    Some(budget),
                    limit,
                );
                sql.push(lock).push(") a) o").limit(i64::from(limit));
            });
            others.push(") o)");
            lease(&mut others);
            let more = others.query().fetch_all(&mut *tx).await?;
            for row in &more {
                *taken.entry(row.try_get("processor_id")?).or_default() += 1;
            }
            rows.extend(more);
        }
        if !grants.is_free() {
            self.charge(&mut tx, &asked, &grants, &taken).await?;
        }
        let mut claimed = Vec::with_capacity(rows.len());
        // Payloads that do not open (their key is gone or wrong): leased
        // like the others, then escalated in the same transaction, never
        // sent.
        let mut unreadable: Vec<Change> = Vec::new();
        for row in &rows {
            let view = instruction(row)?;
            let kind = if view.acknowledged_at.is_some() {
                ClaimKind::Reminder
            } else if view.attempts > 1 {
                ClaimKind::Retry
            } else {
                ClaimKind::First
            };
            let identities = match row.try_get::<Option<String>, _>("payload")? {
                Some(text) => self.open_json(&text, PAYLOAD, view.id),
                None => Err(StoreError::Sealed(format!(
                    "{PAYLOAD} of {}: erased",
                    view.id
                ))),
            };
            let identities = match identities {
                Ok(identities) => identities,
                Err(StoreError::Sealed(why) | StoreError::Corrupt(why)) => {
                    let mut c = Change::new(view.id, InstructionEvent::Escalate);
                    c.fence = Some((owner.to_string(), view.attempts));
                    c.last_error = Some(format!("cannot be sent: {why}"));
                    c.close_attempt = Some(AttemptClose {
                        result: AttemptResult::FatalError,
                        code: Some("FAILED_PRECONDITION".into()),
                        message: Some(why),
                    });
                    unreadable.push(c);
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            claimed.push(Claimed {
                identities,
                instruction: view,
                kind,
                owner: owner.to_string(),
                trace_context: row.try_get("trace_context")?,
            });
        }
        let withheld: Vec<_> = unreadable.iter().map(|c| c.id).collect();
        restamp_unsent(
            &mut tx,
            self.backend,
            &mut claimed,
            first_picks,
            &mut unreadable,
            now,
            split,
        )
        .await?;
        let mut effects = Effects::default();
        if !claimed.is_empty() {
            let opened: Vec<_> = claimed
                .iter()
                .map(|c| {
                    let reminder = c.kind == ClaimKind::Reminder;
                    (c.instruction.id, c.instruction.attempts, reminder)
                })
                .collect();
            super::deliveries::open_attempts(&mut tx, self.backend, &opened, now_us).await?;
            // Split, the claims' events are the second step's; those
            // escalated below are not sent, so their history shows none.
            let views: Vec<InstructionView> = claimed
                .iter()
                .filter(|c| !split && !withheld.contains(&c.instruction.id))
                .map(|c| c.instruction.clone())
                .collect();
            after_changes(
                &mut tx,
                self.backend,
                &self.keys,
                &views,
                By::Dispatch,
                now,
                &mut effects,
            )
            .await?;
        }
        if !unreadable.is_empty() {
            tracing::warn!(
                instructions = unreadable.len(),
                "escalated instead of sent: their payloads do not open (see their last_error)"
            );
            apply(
                &mut tx,
                self.backend,
                &self.keys,
                &unreadable,
                By::Dispatch,
                now,
                &mut effects,
            )
            .await?;
            claimed.retain(|c| unreadable.iter().all(|u| u.id != c.instruction.id));
        }
        tx.commit().await?;
        tracing::Span::current().record("claimed", claimed.len());
        self.announce(effects);
        let claimed_any = !claimed.is_empty();
        for c in claimed {
            if let Some((i, _)) = orders
                .iter()
                .find(|(_, o)| *o.processor == c.instruction.processor_id)
            {
                out[*i].push(c);
            }
        }
        Ok(Leased {
            claims: out,
            unwritten: split && claimed_any,
        })
    }
}
