//! What a claim picks, and in which order: each processor's due rows of
//! one state, in due order off that state's partial index, and, among the
//! pending ones, how far each processor of an even pass may lease so that
//! they all lease the same requests (see [`super::claims`]).

use super::Backend;
use super::claims::ClaimOrder;
use super::codec::micros_after;
use super::sql::Sql;
use crate::domain::{ProcessorId, Timestamp};

/// Appends each order's picks (what `pick` appends for it), a union of
/// per-processor index scans: every branch carries its number
/// (`branch`), its lease's end, whether it is aligned and its limit
/// (`lim`) beside its rows, for [`align`] and the lease.
pub(super) fn picked(
    sql: &mut Sql,
    picks: &[(ClaimOrder, u32)],
    now: Timestamp,
    pick: &dyn Fn(&mut Sql, &ClaimOrder, u32),
) {
    for (n, (order, limit)) in picks.iter().enumerate() {
        if n > 0 {
            sql.push(" union all ");
        }
        sql.push(&format!("select {PICKED}, "))
            .bind(micros_after(now, order.lease))
            .push(&format!(" as lease_until, {n} as branch, "))
            .bind(i64::from(order.aligned))
            .push(" as aligned, ")
            .bind(i64::from(*limit))
            .push(" as lim from (");
        pick(sql, order, *limit);
        sql.push(") q");
    }
}

/// The head of the CTE `p` of [`picked`] rows that [`align`] reads.
/// Materialised, so computed once: the cutoff reads the picks several
/// times over, and SQLite would otherwise expand the union of every
/// processor's pick at each reading, a cost that grows with the square of
/// the processors (with a hundred, seconds a pass, holding the one
/// writer). PostgreSQL materialises a CTE read more than once anyway.
pub(super) const PICKS: &str = "with p as materialized (";

/// Appends, after a `with p as (...)` of [`picked`] rows, the CTEs that
/// end in `v (id, lease_until)`: what to lease of them. Picks of orders
/// that are not aligned are all leased. The aligned orders that picked all
/// they were allowed (their queues hold more) set the cutoff: the
/// earliest, in due order, of their last picks. Aligned orders lease their
/// picks up to it and leave the rest in their queues for the next pass.
/// So queues in one order that are offset (one processor behind the
/// others by fewer requests than a pass takes) meet again: the one behind
/// leases its older picks, the others only those it reached too, and the
/// requests past the cutoff go out whole later rather than split now. An
/// order whose last pick is due before the front of the queue furthest
/// ahead (a processor far behind: back from an open breaker, added late,
/// or fed other requests) sets no cutoff: waiting for it would hold the
/// others for passes on end.
pub(super) fn align(sql: &mut Sql) {
    let request = match sql.backend() {
        Backend::Postgres => "p.request_id collate \"C\"",
        Backend::Sqlite => "p.request_id",
    };
    sql.push(&format!(
        ", b as (select branch, count(*) as n, min(next_attempt_at) as lo, \
         max(next_attempt_at) as d from p group by branch), \
         x as (select max(lo) as front from b where branch in \
         (select branch from p where p.aligned = 1)), \
         f as (select p.next_attempt_at as d, max({request}) as r from p \
         join b on b.branch = p.branch and p.next_attempt_at = b.d \
         where p.aligned = 1 and b.n = p.lim and b.d >= (select front from x) \
         group by p.branch, p.next_attempt_at), \
         c as (select d, r from f order by d, r limit 1), \
         v as (select id, lease_until from p where p.aligned = 0 \
         or not exists (select 1 from c) or p.next_attempt_at < (select d from c) \
         or (p.next_attempt_at = (select d from c) and {request} <= (select r from c)))"
    ));
}

/// Appends `select id, ... from instructions where processor_id = ? and
/// state = '<state>' and <due> <= now [and <column> < <below>] order by
/// <due> [, request_id] limit n`: one processor's due rows of one state,
/// read in due order off that state's partial `(processor_id, due)` index.
pub(super) fn pick_due(
    sql: &mut Sql,
    processor: &ProcessorId,
    state: &str,
    due: &str,
    now_us: i64,
    below: Option<(&str, i64)>,
    limit: u32,
) {
    sql.push(&format!(
        "select {PICKED} from instructions where processor_id = "
    ))
    .bind(processor.as_str())
    .push(&format!(" and state = '{state}' and {due} <= "))
    .bind(now_us);
    if let Some((column, bound)) = below {
        sql.push(&format!(" and {column} < ")).bind(bound);
    }
    // Pending rows, the ones aligned, with equal due times in request
    // order, byte by byte on both backends (their index carries it), so
    // that every processor's picks and `align` see one order.
    let tie = match (state, sql.backend()) {
        ("PENDING", Backend::Postgres) => ", request_id collate \"C\"",
        ("PENDING", Backend::Sqlite) => ", request_id",
        _ => "",
    };
    sql.push(&format!(" order by {due}{tie}"))
        .limit(i64::from(limit));
}

/// How many deliveries an instruction has had since it was last armed,
/// as SQL over its row (column names after `row`, such as `i.`): its
/// attempts since then, less its reminders where its processor polls
/// (`polls`: SQL that is 1 for an adapter that polls, 0 otherwise).
/// Federation and OpenDSR follow an accepted instruction by polling, and
/// each poll is a reminder, leased and counted like a delivery; polls are
/// no failures, so they spend none of the delivery budget here, as
/// `dispatch::deliver` counts them for a retry. A lease that expired on a
/// poll (its replica died mid-poll) is therefore polled again, however
/// many polls came before, while the budget lasts: the lost poll is
/// redelivered as a delivery and counts as one, so one lost after the
/// deliveries before acceptance spent the budget escalates.
pub(super) fn deliveries_since_arm(row: &str, polls: &str) -> String {
    format!("({row}attempts_since_arm - {row}reminders * {polls})")
}

/// The columns a pick reads.
pub(super) const PICKED: &str = "id, processor_id, request_id, next_attempt_at";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{self, plan};
    use super::*;
    use crate::domain::Timestamp;

    /// However many processors a pass claims for (600 here: past
    /// SQLite's default limit of 500 terms in a compound SELECT, which
    /// the build raises), SQLite computes their picks once, and the plan
    /// grows with them, not with their square.
    #[tokio::test]
    async fn the_picks_are_computed_once_on_sqlite() {
        let (_dir, store) = testing::sqlite().await;
        let ids: Vec<ProcessorId> = (0..600)
            .map(|n| ProcessorId::parse(&format!("p{n}")).unwrap())
            .collect();
        let orders: Vec<(ClaimOrder, u32)> = ids
            .iter()
            .map(|processor| {
                let order = ClaimOrder {
                    processor,
                    max_reminders: 3,
                    max_attempts: 5,
                    polls: false,
                    limit: 10,
                    max_in_flight: 10,
                    per_second: 0,
                    lease: Duration::from_secs(60),
                    aligned: true,
                };
                (order, 10)
            })
            .collect();
        let now = Timestamp::from_timestamp(1_800_000_000, 0).unwrap();
        let mut sql = Sql::new(Backend::Sqlite, PICKS);
        picked(&mut sql, &orders, now, &|sql, order, limit| {
            pick_due(
                sql,
                order.processor,
                "PENDING",
                "next_attempt_at",
                0,
                None,
                limit,
            );
        });
        sql.push(")");
        align(&mut sql);
        sql.push(" select id from v");
        let steps = plan(&store, sql).await;
        let materialised = steps
            .iter()
            .filter(|d| d.starts_with("MATERIALIZE p"))
            .count();
        assert_eq!(materialised, 1, "{steps:#?}");
        // Each processor's pick once (a scan or search of its index and
        // its compound step), and a few steps for the cutoff.
        assert!(steps.len() < 5 * ids.len(), "{} steps", steps.len());
    }
}
