//! Limits that hold across replicas: a push processor's `max_in_flight`
//! and `max_deliveries_per_second` count what every replica sends, not what
//! one does.
//!
//! Inside the claim transaction, before any row is picked, each processor's
//! grant is worked out from the database: its deliveries in flight anywhere
//! (DELIVERING rows whose lease has not expired, whoever holds them) and,
//! for a rate-limited processor, its row in `delivery_rates`. On PostgreSQL
//! the claim first takes each processor's claim lock, a transaction-scoped
//! advisory lock, all of them in the order of their ids: a replica claiming
//! for a processor another one is claiming for waits for that claim's
//! commit (milliseconds), and the count and the rate it reads after the
//! lock see every claim committed before it. Skipping the processor
//! instead would leave the replica that lost the race idle until its next
//! pass, a poll interval later. SQLite serves one replica through one
//! writer: its transactions take turns already, and the replica's own
//! delivery slots are the count, so only the rate is read there.
//!
//! A lease that expired is not counted: its delivery is over or its holder
//! is gone, and the instruction is due again. A delivery whose answer is
//! still being recorded counts until its row leaves DELIVERING, which errs
//! on the processor's side. Pull processors pace themselves (they ask for
//! a batch size) and are not limited here.

use std::collections::HashMap;

use sqlx::Row;

use super::claims::ClaimOrder;
use super::codec::micros;
use super::sql::{Bind, Col, Sql};
use super::{Backend, Store, StoreError};
use crate::domain::Timestamp;

/// The advisory lock class of claim locks (the first key of PostgreSQL's
/// two-key advisory locks; the second is a hash of the processor id).
const CLAIM_LOCK_CLASS: i64 = 7301;

/// A second, in the microseconds times are stored in.
const SECOND_US: i64 = 1_000_000;

/// What the claims of one pass may take, and the rates to move after.
pub(super) struct Grants {
    /// The most each order may claim, in the order of the orders.
    pub limits: Vec<u32>,
    /// Rate-limited orders (index, rate, paid until before this pass).
    rated: Vec<(usize, u32, i64)>,
}

impl Grants {
    /// Whether no order is rate-limited (nothing to charge).
    pub(super) fn is_free(&self) -> bool {
        self.rated.is_empty()
    }
}

impl Store {
    /// What each of `orders` may claim now under its deployment-wide
    /// limits (never more than its own `limit`), in the claim
    /// transaction `conn`.
    pub(super) async fn grants(
        &self,
        conn: &mut sqlx::AnyConnection,
        orders: &[&ClaimOrder<'_>],
        now: Timestamp,
    ) -> Result<Grants, StoreError> {
        let now_us = micros(now);
        let mut limits: Vec<u32> = orders.iter().map(|o| o.limit).collect();
        if self.backend == Backend::Postgres {
            // In one order (by id), so that two claims never wait for
            // each other's locks crosswise.
            let mut ids: Vec<String> = orders.iter().map(|o| o.processor.to_string()).collect();
            ids.sort();
            ids.dedup();
            let mut sql = Sql::new(
                self.backend,
                format!(
                    "select count(pg_advisory_xact_lock({CLAIM_LOCK_CLASS}::int, \
                     hashtext(v.id))) as locked from (select id from ("
                ),
            );
            sql.select_rows(
                &[("id", Col::Text)],
                ids.iter().map(|id| [Bind::from(id.clone())]),
            )
            .push(") s order by id offset 0) v");
            sql.query().execute(&mut *conn).await?;
            // Counted per processor up to its limit, off its index of
            // leases in a plain index scan, which marks the entries of rows
            // that left DELIVERING as dead for the next count to skip. A
            // count of them all was a bitmap scan, which marks nothing, and
            // visited every row claimed within a lease's length (tens of
            // milliseconds a claim at a few thousand deliveries a second).
            // Each processor up to the largest limit asked for it; orders
            // without a limit need no count.
            let mut caps: HashMap<&str, u32> = HashMap::new();
            for o in orders {
                let cap = caps.entry(o.processor.as_str()).or_default();
                *cap = (*cap).max(o.max_in_flight);
            }
            caps.retain(|_, cap| *cap < u32::MAX);
            let mut sql = Sql::new(self.backend, "");
            for (n, (id, cap)) in caps.iter().enumerate() {
                if n > 0 {
                    sql.push(" union all ");
                }
                sql.push("select cast(")
                    .bind(*id)
                    .push(" as text) as processor_id, (select count(*) from (select 1 from instructions \
                           where processor_id = ")
                    .bind(*id)
                    .push(" and state = 'DELIVERING' and lease_expires_at > ")
                    .bind(now_us)
                    .limit(i64::from(*cap))
                    .push(") x) as n");
            }
            let mut busy: HashMap<String, i64> = HashMap::new();
            let rows = match caps.is_empty() {
                true => Vec::new(),
                false => sql.query().fetch_all(&mut *conn).await?,
            };
            for row in rows {
                busy.insert(row.try_get("processor_id")?, row.try_get("n")?);
            }
            for (limit, order) in limits.iter_mut().zip(orders) {
                let n = busy.get(order.processor.as_str()).copied().unwrap_or(0);
                let room = i64::from(order.max_in_flight).saturating_sub(n).max(0);
                *limit = (*limit).min(u32::try_from(room).unwrap_or(u32::MAX));
            }
        }
        let rated_ids: Vec<String> = orders
            .iter()
            .zip(&limits)
            .filter(|(o, l)| o.per_second > 0 && **l > 0)
            .map(|(o, _)| o.processor.to_string())
            .collect();
        let mut rated = Vec::new();
        if !rated_ids.is_empty() {
            let mut sql = Sql::new(
                self.backend,
                "select processor_id, paid_until from delivery_rates where ",
            );
            sql.in_list("processor_id", rated_ids);
            let mut paid: HashMap<String, i64> = HashMap::new();
            for row in sql.query().fetch_all(&mut *conn).await? {
                paid.insert(row.try_get("processor_id")?, row.try_get("paid_until")?);
            }
            for (i, (limit, order)) in limits.iter_mut().zip(orders).enumerate() {
                if order.per_second == 0 || *limit == 0 {
                    continue;
                }
                let paid_until = paid
                    .get(order.processor.as_str())
                    .copied()
                    .unwrap_or(now_us)
                    .max(now_us);
                *limit = (*limit).min(affordable(order.per_second, paid_until, now_us));
                rated.push((i, order.per_second, paid_until));
            }
        }
        Ok(Grants { limits, rated })
    }

    /// Charges the rate-limited orders of `grants` for what they claimed
    /// (`taken`, by processor id), in the claim transaction `conn`.
    pub(super) async fn charge(
        &self,
        conn: &mut sqlx::AnyConnection,
        orders: &[&ClaimOrder<'_>],
        grants: &Grants,
        taken: &HashMap<String, u32>,
    ) -> Result<(), StoreError> {
        let rows: Vec<[Bind; 2]> = grants
            .rated
            .iter()
            .filter_map(|&(i, rate, paid_until)| {
                let id = orders[i].processor.as_str();
                let n = taken.get(id).copied().filter(|n| *n > 0)?;
                let cost = i64::from(n) * SECOND_US / i64::from(rate);
                Some([Bind::from(id.to_string()), Bind::from(paid_until + cost)])
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let mut sql = Sql::new(
            self.backend,
            "insert into delivery_rates (processor_id, paid_until) ",
        );
        sql.select_rows(
            &[("processor_id", Col::Text), ("paid_until", Col::Int)],
            rows,
        )
        .push(
            " where true on conflict (processor_id) do update \
             set paid_until = excluded.paid_until",
        );
        sql.query().execute(&mut *conn).await?;
        Ok(())
    }
}

/// How many deliveries at `rate` a second fit between `paid_until` (not
/// before now) and a second from `now_us`.
fn affordable(rate: u32, paid_until: i64, now_us: i64) -> u32 {
    let window = (now_us + SECOND_US - paid_until).max(0);
    let n = window.saturating_mul(i64::from(rate)) / SECOND_US;
    u32::try_from(n.min(i64::from(rate))).unwrap_or(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_processor_may_take_a_seconds_worth_and_then_its_rate() {
        let now = 10 * SECOND_US;
        assert_eq!(affordable(5, now, now), 5);
        // Five taken: paid a second ahead, nothing more now...
        assert_eq!(affordable(5, now + SECOND_US, now), 0);
        // ... one more each fifth of a second.
        assert_eq!(affordable(5, now + SECOND_US, now + SECOND_US / 5), 1);
        assert_eq!(affordable(5, now + SECOND_US, now + SECOND_US), 5);
        // A rate above a million a second still grants whole deliveries.
        assert_eq!(affordable(100_000, now, now), 100_000);
        assert_eq!(affordable(100_000, now + 10, now), 99_999);
    }
}
