//! A small SQL builder: text with the backend's placeholders (`$n` on
//! PostgreSQL, `?` on SQLite) and the values bound to them, in order, plus the
//! row sources that let one statement carry a whole batch.
//! Only our own constants are ever pushed as text; every value is bound.
//!
//! # Batches
//!
//! On PostgreSQL a batch (rows to insert, per-row values of an update, an
//! `IN` list) is bound as a single JSON array and unpacked by
//! `jsonb_array_elements`, rather than spelled out as `VALUES ($1, $2), ($3,
//! $4), ...`: binding hundreds of parameters cost the server as much as the
//! statement itself (fanout benchmark: +14 %). It is `jsonb`, not `json`:
//! unpacked alone, a batch of 500 rows took a quarter to a half less time
//! as `json`, yet the fan-out ran slower with it (alternating runs of
//! 20,000 × 5: 3,152 to 3,490 instructions/s against 3,667 to 4,326, and
//! more CPU per instruction). Such a batch has no size the planner can
//! see, so joins against it are written to probe indexes (see
//! [`Sql::in_list`]).
//!
//! On PostgreSQL a statement that reads a table is sent unprepared (sqlx's
//! `persistent(false)`: the unnamed statement), which PostgreSQL plans for
//! the values bound each time, at the cost of a parse, a plan and a second
//! round trip. Prepared once per connection, it would after five runs get
//! a generic plan, and one made while a table was small is kept as the
//! table grows until ANALYZE refreshes the statistics (a lock of request
//! rows by id taking 36 ms a call instead of about 3 in a benchmark with a
//! long history and autovacuum off). Inserts are prepared once per
//! connection: they read no table (their rows come from bound values;
//! reference and conflict checks probe indexes through plans of
//! PostgreSQL's own), so no plan of theirs can go stale, and preparing
//! them saves about 6 % of the fan-out's CPU. An insert that selected its
//! rows from a table would have to be left out of this rule.
//!
//! The session setting `plan_cache_mode = force_custom_plan` would keep
//! batch statements off generic plans too, but it also re-plans, for every
//! inserted row, the lookups PostgreSQL runs for foreign keys and
//! triggers: it is not used.
//!
//! SQLite keeps `VALUES` lists: it prepares statements cheaply, and its
//! planner, given `json_each`, chose plans that were ten times slower.

use super::Backend;

/// A value bound to a placeholder. Only the two types both backends share
/// through the `Any` driver.
#[derive(Clone, Debug)]
pub(super) enum Bind {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Bind {
    fn from(v: i64) -> Self {
        Bind::Int(Some(v))
    }
}
impl From<Option<i64>> for Bind {
    fn from(v: Option<i64>) -> Self {
        Bind::Int(v)
    }
}
impl From<String> for Bind {
    fn from(v: String) -> Self {
        Bind::Text(Some(v))
    }
}
impl From<&str> for Bind {
    fn from(v: &str) -> Self {
        Bind::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Bind {
    fn from(v: Option<String>) -> Self {
        Bind::Text(v)
    }
}

/// The SQL type of a column unpacked from a JSON batch.
#[derive(Clone, Copy, Debug)]
pub(super) enum Col {
    Text,
    Int,
}

/// Appends `v` to a JSON array being written.
fn push_json(out: &mut String, v: &Bind) {
    match v {
        Bind::Int(Some(n)) => out.push_str(&n.to_string()),
        Bind::Text(Some(t)) => {
            out.push_str(&serde_json::to_string(t).expect("a string serialises"));
        }
        Bind::Int(None) | Bind::Text(None) => out.push_str("null"),
    }
}

/// SQL text with placeholders and their values.
pub(super) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    backend: Backend,
    /// Prepared on PostgreSQL although it does not start with `insert`.
    inserts_only: bool,
}

impl Sql {
    /// The backend the text is written for.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn new(backend: Backend, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
            backend,
            inserts_only: false,
        }
    }

    /// Appends raw SQL (our own constants only).
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder bound to `v`: `$n` on PostgreSQL, an
    /// anonymous `?` on SQLite. (Values are bound in order either way; sqlx
    /// looks a named SQLite parameter up by a linear scan of the statement's
    /// names, which made a 2,000-parameter batch insert quadratic.)
    pub fn bind(&mut self, v: impl Into<Bind>) -> &mut Self {
        self.binds.push(v.into());
        match self.backend {
            Backend::Postgres => self.text.push_str(&format!("${}", self.binds.len())),
            Backend::Sqlite => self.text.push('?'),
        }
        self
    }

    /// Appends `($1, $2), ($3, $4), ...`: one parenthesised tuple per row.
    pub fn rows<I, R>(&mut self, rows: I) -> &mut Self
    where
        I: IntoIterator<Item = R>,
        R: IntoIterator<Item = Bind>,
    {
        for (i, row) in rows.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            for (j, v) in row.into_iter().enumerate() {
                if j > 0 {
                    self.push(", ");
                }
                self.bind(v);
            }
            self.push(")");
        }
        self
    }

    /// Appends a complete `SELECT` of `rows`, one output row per input row,
    /// its columns named and typed by `columns`. Ends without a `WHERE` so
    /// callers may add one. On PostgreSQL every row is carried by one bound
    /// JSON array (see the module notes); on SQLite by a `VALUES` list in a
    /// subquery, whose exact size its planner sees.
    pub fn select_rows<I, R>(&mut self, columns: &[(&str, Col)], rows: I) -> &mut Self
    where
        I: IntoIterator<Item = R>,
        R: IntoIterator<Item = Bind>,
    {
        match self.backend {
            Backend::Postgres => self.select_json(columns, rows),
            Backend::Sqlite => self.select_values(columns, rows),
        }
    }

    /// PostgreSQL: `select (e ->> 0) as a, ... from jsonb_array_elements($n)`.
    fn select_json<I, R>(&mut self, columns: &[(&str, Col)], rows: I) -> &mut Self
    where
        I: IntoIterator<Item = R>,
        R: IntoIterator<Item = Bind>,
    {
        let mut json = String::from("[");
        for (i, row) in rows.into_iter().enumerate() {
            json.push_str(if i == 0 { "[" } else { ",[" });
            for (j, v) in row.into_iter().enumerate() {
                if j > 0 {
                    json.push(',');
                }
                push_json(&mut json, &v);
            }
            json.push(']');
        }
        json.push(']');
        self.push("select ");
        for (i, (name, col)) in columns.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            let cell = match col {
                Col::Text => format!("(e ->> {i}) as {name}"),
                Col::Int => format!("(e ->> {i})::bigint as {name}"),
            };
            self.push(&cell);
        }
        self.push(" from jsonb_array_elements(")
            .bind(json)
            .push("::jsonb) e")
    }

    /// SQLite: `select column1 as a, ... from (values (?, ...), ...)`.
    fn select_values<I, R>(&mut self, columns: &[(&str, Col)], rows: I) -> &mut Self
    where
        I: IntoIterator<Item = R>,
        R: IntoIterator<Item = Bind>,
    {
        let mut rows = rows.into_iter().peekable();
        self.push("select ");
        for (i, (name, _)) in columns.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            if rows.peek().is_some() {
                self.push(&format!("column{} as {name}", i + 1));
            } else {
                self.push(&format!("null as {name}"));
            }
        }
        if rows.peek().is_none() {
            // No rows: a FROM that yields none, so callers may still add a
            // WHERE clause.
            return self.push(" from (select 1 limit 0)");
        }
        self.push(" from (values ");
        self.rows(rows);
        self.push(")")
    }

    /// Appends ` limit n`, with `n` bound. On SQLite the bound value goes
    /// through an expression (`limit (? + 0)`): given a bare `limit ?`,
    /// SQLite's planner reads the value bound, and marks the prepared
    /// statement to be prepared again whenever a value is bound to it, so
    /// every execution would parse and plan it anew (a claim's union of
    /// picks for five processors takes about a millisecond to prepare).
    pub fn limit(&mut self, n: i64) -> &mut Self {
        match self.backend {
            Backend::Postgres => self.push(" limit ").bind(n),
            Backend::Sqlite => self.push(" limit (").bind(n).push(" + 0)"),
        }
    }

    /// Appends the predicate `column IN (values)`. On PostgreSQL it is
    /// written `column = any(array(...))` over one bound JSON array, which
    /// can only be answered by probing `column` (its index): an `IN
    /// (subquery)` lets the planner hash the batch against a scan of the
    /// whole table when its statistics lag behind a fast-growing table. On
    /// SQLite it is a plain list of placeholders.
    pub fn in_list<I, S>(&mut self, column: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values = values.into_iter().map(|v| [Bind::Text(Some(v.into()))]);
        self.push(column);
        match self.backend {
            Backend::Postgres => {
                self.push(" = any(array(");
                self.select_json(&[("value", Col::Text)], values);
                self.push("))")
            }
            Backend::Sqlite => {
                self.push(" in (");
                for (i, [v]) in values.enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.bind(v);
                }
                self.push(")")
            }
        }
    }

    /// Appends a predicate that makes a join against a batch (`update t
    /// ... from v where t.id = v.id`) probe `column`'s index instead of
    /// scanning the table: on PostgreSQL the redundant `column = any(array(
    /// select key from cte))`, for the reason given at [`Sql::in_list`]. On
    /// SQLite, which joins only by nested loops and so already probes the
    /// table by key, it is `true` (and the CTE is not read twice).
    pub fn in_cte(&mut self, column: &str, cte: &str, key: &str) -> &mut Self {
        match self.backend {
            Backend::Postgres => {
                self.push(&format!("{column} = any(array(select {key} from {cte}))"))
            }
            Backend::Sqlite => self.push("true"),
        }
    }

    /// Marks a statement made only of inserts from bound rows (a `WITH`
    /// chain of them), which reads no table beyond single rows by primary
    /// key and so is prepared like a plain insert (see the module
    /// documentation).
    pub fn inserts_only(&mut self) -> &mut Self {
        self.inserts_only = true;
        self
    }

    /// The executable query: on PostgreSQL unprepared unless it is an
    /// insert (see the module documentation).
    pub fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let prepared = self.backend == Backend::Sqlite
            || self.inserts_only
            || self.text.starts_with("insert into ");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.as_str())).persistent(prepared);
        for b in &self.binds {
            q = match b {
                Bind::Int(v) => q.bind(*v),
                Bind::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    /// How often SQLite prepared again the statements on `conn` whose text
    /// holds `marker`.
    async fn prepared_again(conn: &mut sqlx::AnyConnection, marker: &str) -> i64 {
        sqlx::query_scalar("select coalesce(sum(reprep), 0) from sqlite_stmt where sql like ?")
            .bind(format!("%{marker}%"))
            .fetch_one(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_limit_does_not_make_sqlite_prepare_its_statement_again() {
        let (_dir, store) = testing::sqlite().await;
        let mut conn = store.pool.acquire().await.unwrap();
        for n in [1, 2] {
            let mut sql = Sql::new(Backend::Sqlite, "select id from requests where id > ");
            sql.bind("built".to_string()).push(" order by id").limit(n);
            sql.query().fetch_all(&mut *conn).await.unwrap();
            // The same with a bare `limit ?`, which SQLite prepares again
            // whenever a value is bound to it.
            sqlx::query("select id from requests where id > 'bare' order by id limit ?")
                .bind(n)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        }
        assert!(prepared_again(&mut conn, "'bare'").await >= 1);
        assert_eq!(prepared_again(&mut conn, "order by id limit (").await, 0);
        drop(conn);
        store.close().await;
    }
}
