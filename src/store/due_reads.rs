//! The reads every dispatcher pass makes of due work, built so that each
//! is a probe of the front of a partial index: whether anything is late,
//! which processors have a spent budget waiting, and the earliest due
//! time. Their cost follows the rows that are due, not the open ones; a
//! unit test checks SQLite's plans (PostgreSQL's are in
//! `docs/benchmarks.md`).

use std::sync::LazyLock;

use super::Backend;
use super::codec::PUSH_KINDS;
use super::due::{Budget, CLOCKED};
use super::picks::deliveries_since_arm;
use super::sql::{Bind, Col, Sql};

/// The ids of open instructions past their escalation time, at most 500,
/// read off the partial index `instructions_escalate`, whose range up to
/// now is empty while nothing is late. SQLite is told to use it: it keeps
/// no statistics and takes the equality on the state for a selective one,
/// so left to itself it walks `instructions_by_state` through every open
/// instruction.
pub(super) fn late_sql(backend: Backend, now_us: i64) -> Sql {
    let hint = match backend {
        Backend::Sqlite => " indexed by instructions_escalate",
        Backend::Postgres => "",
    };
    let mut sql = Sql::new(
        backend,
        format!("select id from instructions{hint} where escalate_at <= "),
    );
    sql.bind(now_us)
        .push(" and state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED') and (")
        .push(CLOCKED)
        .bind(now_us)
        .push(")) order by escalate_at limit 500");
    sql
}

/// For every processor of `budgets`, whether it has an expired lease
/// whose delivery budget is spent (`leases`) and an outcome overdue past
/// its last reminder (`replies`), each 1 or null. The processors come in
/// as rows ([`Sql::select_rows`]), so the statement has one shape however
/// many there are, and each column is a scalar probe of that processor's
/// range of due rows in a partial index (`instructions_due_lease`,
/// `instructions_due_reply`), which stays a per-row index probe on both
/// backends: the cost follows the overdue rows, not the open ones. A
/// `max()` over the state instead reads every instruction waiting for an
/// outcome at every pass, and processors take days to answer.
pub(super) fn spent_sql(backend: Backend, budgets: &[Budget<'_>], now_us: i64) -> Sql {
    let probe = |sql: &mut Sql, state: &str, due: &str, count: &str, budget: &str| {
        // `count` is over the instruction's row, `i`.
        sql.push(&format!(
            "(select cast(1 as bigint) from instructions i where i.processor_id = b.id \
             and i.state = '{state}' and i.{due} <= "
        ))
        .bind(now_us)
        .push(&format!(" and {count} >= b.{budget} limit 1)"));
    };
    let mut sql = Sql::new(backend, "select b.id as processor_id, ");
    probe(
        &mut sql,
        "DELIVERING",
        "lease_expires_at",
        &deliveries_since_arm("i.", "b.polls"),
        "attempts",
    );
    sql.push(" as leases, ");
    probe(
        &mut sql,
        "ACKNOWLEDGED",
        "reply_due_at",
        "i.reminders",
        "reminders",
    );
    sql.push(" as replies from (");
    sql.select_rows(
        &[
            ("id", Col::Text),
            ("attempts", Col::Int),
            ("reminders", Col::Int),
            ("polls", Col::Int),
        ],
        budgets.iter().map(|b| {
            [
                Bind::from(b.processor.to_string()),
                Bind::from(i64::from(b.max_attempts)),
                Bind::from(i64::from(b.max_reminders)),
                Bind::from(i64::from(b.polls)),
            ]
        }),
    )
    .push(") b");
    sql
}

/// The earliest `column` of processor `p.id`'s instructions in `state`:
/// one probe of the front of its partial index.
pub(super) fn first_due(column: &str, state: &str) -> String {
    format!(
        "(select {column} from instructions i where i.processor_id = p.id \
         and i.state = '{state}' and i.{column} is not null order by i.{column} limit 1)"
    )
}

/// The [`Store::next_due`] statement.
pub(super) static NEXT_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "select min(t) as t from (\
         select {} as t from processors p where p.adapter_kind in {PUSH_KINDS} \
         union all select {} from processors p where p.adapter_kind in {PUSH_KINDS} \
         union all select {} from processors p where p.adapter_kind in {PUSH_KINDS}) due",
        first_due("next_attempt_at", "PENDING"),
        first_due("lease_expires_at", "DELIVERING"),
        first_due("reply_due_at", "ACKNOWLEDGED"),
    )
});

#[cfg(test)]
mod tests {
    use super::super::testing::{self, plan};
    use super::*;
    use crate::domain::ProcessorId;

    /// Every pass reads late and spent work off the partial indexes that
    /// hold only due rows, never through all open instructions (SQLite
    /// plans without statistics, so the plan is fixed).
    #[tokio::test]
    async fn per_pass_reads_probe_the_due_indexes_on_sqlite() {
        let (_dir, store) = testing::sqlite().await;
        let late = plan(&store, late_sql(Backend::Sqlite, 1)).await;
        assert!(
            late.iter()
                .any(|d| d.contains("USING INDEX instructions_escalate")),
            "{late:?}"
        );
        let (a, b) = (
            ProcessorId::parse("pa").unwrap(),
            ProcessorId::parse("pb").unwrap(),
        );
        let budgets = [&a, &b].map(|processor| Budget {
            processor,
            max_reminders: 3,
            max_attempts: 5,
            polls: false,
        });
        let spent = plan(&store, spent_sql(Backend::Sqlite, &budgets, 1)).await;
        for index in ["instructions_due_lease", "instructions_due_reply"] {
            assert!(
                spent
                    .iter()
                    .any(|d| d.contains(&format!("USING INDEX {index} (processor_id=? AND"))),
                "{index} probed by processor and due time: {spent:?}"
            );
        }
        // One statement shape for any number of processors (a compound
        // SELECT of an arm each would stop at SQLite's 500 terms).
        let many: Vec<ProcessorId> = (0..600)
            .map(|n| ProcessorId::parse(&format!("p{n}")).unwrap())
            .collect();
        let budgets: Vec<Budget> = many
            .iter()
            .enumerate()
            .map(|(n, processor)| Budget {
                processor,
                max_reminders: 3,
                max_attempts: 5,
                polls: n % 2 == 0,
            })
            .collect();
        let rows = spent_sql(Backend::Sqlite, &budgets, 1)
            .query()
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), 600);
        // No step reads instructions but through a due index.
        for steps in [&late, &spent] {
            assert!(
                steps.iter().all(|d| !d.contains("instructions_by_state")
                    && d != "SCAN i"
                    && !d.starts_with("SCAN i ")
                    && !d.starts_with("SCAN instructions")),
                "{steps:?}"
            );
        }
    }
}
