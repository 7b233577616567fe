//! A small SQL builder: text with the backend's placeholders (`$n` on
//! PostgreSQL, `?` on SQLite) and the values bound to them, in order, plus the
//! multi-row `VALUES` lists that let one statement carry a whole batch.
//! Only our own constants are ever pushed as text; every value is bound.

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

/// SQL text with placeholders and their values.
pub(super) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    backend: Backend,
}

impl Sql {
    pub fn new(backend: Backend, text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
            backend,
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

    /// Appends `$1, $2, ...` for an `IN (...)` list.
    pub fn list<I, B>(&mut self, values: I) -> &mut Self
    where
        I: IntoIterator<Item = B>,
        B: Into<Bind>,
    {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v);
        }
        self
    }

    /// The executable query.
    pub fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.as_str()));
        for b in &self.binds {
            q = match b {
                Bind::Int(v) => q.bind(*v),
                Bind::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }
}
