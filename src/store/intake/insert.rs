//! Intake's statements: a planned batch written as rows of `requests`,
//! `instructions` and `request_events` (and, for requests no processor
//! matched, their records), as one statement on PostgreSQL or a
//! transaction in the writer's turn on SQLite.

use std::collections::{BTreeMap, HashSet};

use sqlx::Row;

use super::super::codec::{json, micros, request_id};
use super::super::events::{
    EventKind, INSERT_EVENTS, NewEvent, SealedEvent, insert_events, select_events,
};
use super::super::records::write_records;
use super::super::sealed::{PAYLOAD, SUBJECT};
use super::super::sql::{Bind, Col, Sql};
use super::super::trail::seal;
use super::super::{Effects, Store, StoreError, Turn};
use super::Job;
use super::plan::GENERATION;
use crate::domain::{
    AdapterConfig, InstructionId, InstructionState, InstructionView, Processor, RequestId,
    RequestStatus, Timestamp, due_times,
};

impl Store {
    /// PostgreSQL, when every request has instructions: the whole batch as
    /// one statement (inserts chained by `WITH`), committed on its own.
    /// That is one round trip where the transaction took five (`BEGIN`,
    /// three inserts, `COMMIT`), and intake's single writer waits for
    /// each. Returns the ids inserted, or `None` (nothing written) when
    /// `guard` is no longer the registry's generation.
    pub(super) async fn insert_in_one_statement(
        &self,
        planned: &[Planned<'_>],
        now: Timestamp,
        guard: Option<i64>,
    ) -> Result<Option<HashSet<RequestId>>, StoreError> {
        let mut sql = Sql::new(self.backend, "with g as (select ");
        match guard {
            Some(generation) => sql
                .push("1 from processor_registry where id = 1 and generation = ")
                .bind(generation),
            None => sql.push("1"),
        };
        let (events, heads) = first_events(planned.iter(), now);
        sql.push("), r as (")
            .push(INSERT_REQUESTS)
            .select_rows(REQUEST_COLUMNS, request_rows(planned, &heads, self));
        sql.push(
            " where exists (select 1 from g) on conflict (id) do nothing returning id), i as (",
        )
        .push(INSERT_INSTRUCTIONS)
        .push("select * from (")
        .select_rows(
            INSTRUCTION_ROW_COLUMNS,
            instruction_rows(planned.iter(), self)
                .into_iter()
                .map(|(_, row)| row),
        );
        sql.push(") x where x.request_id in (select r.id from r)), e as (")
            .push(INSERT_EVENTS)
            .push("select * from (");
        select_events(&mut sql, &events);
        // A row without an id says the guard failed.
        sql.push(
            ") x where x.request_id in (select r.id from r)) select id from r \
             union all select null where not exists (select 1 from g)",
        )
        .inserts_only();
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut inserted = HashSet::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<Option<String>, _>("id")?.is_none() {
                return Ok(None);
            }
            inserted.insert(request_id(row, "id")?);
        }
        Ok(Some(inserted))
    }

    /// The batch as a transaction of several statements: on SQLite, and on
    /// PostgreSQL when a request matched no processor (it is closed, and
    /// gets its record, in the same transaction). Returns the ids inserted,
    /// or `None` (nothing written) when `guard` is no longer the registry's
    /// generation.
    pub(super) async fn insert_in_transaction(
        &self,
        planned: &[Planned<'_>],
        now: Timestamp,
        guard: Option<i64>,
        effects: &mut Effects,
    ) -> Result<Option<HashSet<RequestId>>, StoreError> {
        // The rows are sealed, hashed and bound before the writer is taken:
        // SQLite's one writer would otherwise wait, holding its lock, while
        // a batch's identities are sealed and its events hashed.
        let (events, heads) = first_events(planned.iter(), now);
        let mut requests = Sql::new(self.backend, INSERT_REQUESTS);
        requests.select_rows(REQUEST_COLUMNS, request_rows(planned, &heads, self));
        // `where true`: SQLite's parser needs it before an upsert clause.
        requests.push(" where true on conflict (id) do nothing returning id");
        let instructions = instruction_rows(planned.iter(), self);
        let mut tx = self.begin_turn(Turn::Intake).await?;
        if let Some(generation) = guard {
            let current: i64 = sqlx::query_scalar(GENERATION).fetch_one(&mut *tx).await?;
            if current != generation {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let inserted: HashSet<RequestId> = requests
            .query()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| request_id(r, "id"))
            .collect::<Result<_, _>>()?;
        let taken: Vec<&Planned> = planned
            .iter()
            .filter(|p| inserted.contains(&p.job.req.id))
            .collect();
        let instructions: Vec<Vec<Bind>> = instructions
            .into_iter()
            .filter(|(request, _)| inserted.contains(request))
            .map(|(_, row)| row)
            .collect();
        if !instructions.is_empty() {
            let mut sql = Sql::new(self.backend, INSERT_INSTRUCTIONS);
            sql.select_rows(INSTRUCTION_ROW_COLUMNS, instructions);
            sql.query().execute(&mut *tx).await?;
        }
        let taken_events: Vec<SealedEvent> = events
            .into_iter()
            .filter(|e| inserted.contains(&e.request))
            .collect();
        insert_events(&mut tx, self.backend, &taken_events).await?;
        let unmatched: Vec<_> = taken
            .iter()
            .filter(|p| p.instructions.is_empty())
            .map(|p| (p.job.req.id, &p.job.actor))
            .collect();
        write_records(&mut tx, self.backend, &self.keys, &unmatched, now, effects).await?;
        tx.commit().await?;
        Ok(Some(inserted))
    }
}

/// A submission of a batch, with the instructions it would get.
pub(super) struct Planned<'a> {
    pub job: &'a Job,
    pub targets: &'a [&'a Processor],
    pub instructions: Vec<InstructionView>,
}

/// The head of an insert of [`request_rows`]' rows, its columns in
/// [`REQUEST_COLUMNS`]' order.
const INSERT_REQUESTS: &str = "insert into requests (id, kind, jurisdiction, status, \
     submitted_at, received_at, channel, requester, verification_level, verification_method, \
     labels, identity_types, subject, fingerprint, open_instructions, event_seq, \
     submitted_by, confirm_by, respond_by, access_scope, requester_evidence, denied, \
     audit_head, lookback_start) ";

/// The columns of [`request_rows`].
const REQUEST_COLUMNS: &[(&str, Col)] = &[
    ("id", Col::Text),
    ("kind", Col::Text),
    ("jurisdiction", Col::Text),
    ("status", Col::Text),
    ("submitted_at", Col::Int),
    ("received_at", Col::Int),
    ("channel", Col::Text),
    ("requester", Col::Text),
    ("verification_level", Col::Text),
    ("verification_method", Col::Text),
    ("labels", Col::Text),
    ("identity_types", Col::Text),
    ("subject", Col::Text),
    ("fingerprint", Col::Text),
    ("open_instructions", Col::Int),
    ("event_seq", Col::Int),
    ("submitted_by", Col::Text),
    ("confirm_by", Col::Int),
    ("respond_by", Col::Int),
    ("access_scope", Col::Text),
    ("requester_evidence", Col::Text),
    ("denied", Col::Text),
    ("audit_head", Col::Text),
    ("lookback_start", Col::Int),
];

/// The planned requests as `requests` rows, each with the head of its
/// audit trail (`heads`, its first event's hash), its subject sealed and
/// its fingerprint keyed.
fn request_rows(
    planned: &[Planned<'_>],
    heads: &BTreeMap<RequestId, String>,
    store: &Store,
) -> Vec<Vec<Bind>> {
    planned
        .iter()
        .map(|p| {
            let (job, req) = (p.job, &p.job.req);
            let deadlines = job.terms.deadlines;
            vec![
                Bind::from(req.id.to_string()),
                Bind::from(req.kind.as_str()),
                Bind::from(req.jurisdiction.as_str()),
                Bind::from("RECEIVED"),
                Bind::from(micros(req.submitted_at.unwrap_or(job.now))),
                Bind::from(micros(job.now)),
                Bind::from(req.channel.as_str()),
                Bind::from(req.requester.as_str()),
                Bind::from(req.verification.level.as_str()),
                Bind::from(req.verification.method.as_str()),
                Bind::from(json(&req.labels)),
                Bind::from(json(&req.subject.types())),
                Bind::from(store.seal_json(&req.subject, SUBJECT, req.id)),
                Bind::from(store.keyed_fingerprint(&req.fingerprint())),
                Bind::from(p.instructions.len() as i64),
                Bind::from(1i64),
                Bind::from(job.actor.to_string()),
                Bind::from(deadlines.confirm_by.map(micros)),
                Bind::from(micros(deadlines.respond_by)),
                Bind::from(req.access_scope.map(|a| a.as_str().to_string())),
                Bind::from(req.requester_evidence.clone()),
                Bind::from((!job.terms.verified).then(|| "UNVERIFIED".to_string())),
                Bind::from(heads.get(&req.id).cloned()),
                Bind::from(req.lookback_start.map(micros)),
            ]
        })
        .collect()
}

/// The head of an insert of [`instruction_rows`]' rows, its columns in
/// [`INSTRUCTION_ROW_COLUMNS`]' order.
const INSERT_INSTRUCTIONS: &str = "insert into instructions (id, request_id, processor_id, \
     kind, jurisdiction, submitted_at, state, payload, next_attempt_at, created_at, \
     trace_context, due_at, escalate_at) ";

/// The columns of [`instruction_rows`].
const INSTRUCTION_ROW_COLUMNS: &[(&str, Col)] = &[
    ("id", Col::Text),
    ("request_id", Col::Text),
    ("processor_id", Col::Text),
    ("kind", Col::Text),
    ("jurisdiction", Col::Text),
    ("submitted_at", Col::Int),
    ("state", Col::Text),
    ("payload", Col::Text),
    ("next_attempt_at", Col::Int),
    ("created_at", Col::Int),
    ("trace_context", Col::Text),
    ("due_at", Col::Int),
    ("escalate_at", Col::Int),
];

/// The planned requests' instructions as `instructions` rows, each with
/// the identities its processor accepts, sealed, and the request it is of.
fn instruction_rows<'p, 'a: 'p>(
    planned: impl Iterator<Item = &'p Planned<'a>>,
    store: &Store,
) -> Vec<(RequestId, Vec<Bind>)> {
    planned
        .flat_map(|p| {
            p.instructions
                .iter()
                .zip(p.targets.iter())
                .map(move |(i, target)| {
                    let payload = p
                        .job
                        .req
                        .subject
                        .restricted_to(&target.spec.accepted_identity_types);
                    let row = vec![
                        Bind::from(i.id.to_string()),
                        Bind::from(i.request_id.to_string()),
                        Bind::from(i.processor_id.as_str()),
                        Bind::from(i.kind.as_str()),
                        Bind::from(i.jurisdiction.as_str()),
                        Bind::from(micros(i.submitted_at)),
                        Bind::from("PENDING"),
                        Bind::from(store.seal_json(&payload, PAYLOAD, i.id)),
                        Bind::from(i.next_attempt_at.map(micros)),
                        Bind::from(micros(i.created_at)),
                        Bind::from(p.job.trace_context.clone()),
                        Bind::from(i.due_at.map(micros)),
                        Bind::from(i.escalate_at.map(micros)),
                    ];
                    (i.request_id, row)
                })
        })
        .collect()
}

/// The planned requests' first events (received), sealed, and the heads
/// of their audit trails.
fn first_events<'p, 'a: 'p>(
    planned: impl Iterator<Item = &'p Planned<'a>>,
    now: Timestamp,
) -> (Vec<SealedEvent>, BTreeMap<RequestId, String>) {
    let events: Vec<NewEvent> = planned
        .map(|p| NewEvent {
            request: p.job.req.id,
            seq: 1,
            kind: EventKind::Received,
            request_status: RequestStatus::Received,
            instruction: None,
            actor: Some(&p.job.actor),
            extension: None,
            note: None,
        })
        .collect();
    let mut heads = BTreeMap::new();
    let sealed = seal(&events, &mut heads, now);
    (sealed, heads)
}

/// The instructions a request fans out to, as they are inserted.
pub(super) fn new_instructions(job: &Job, targets: &[&Processor]) -> Vec<InstructionView> {
    let req = &job.req;
    targets
        .iter()
        .map(|p| {
            let (due_at, escalate_at) = due_times(
                job.terms.deadlines.respond_by,
                p.spec.safety_margin,
                p.spec.ack_timeout,
                job.now,
            );
            InstructionView {
                id: InstructionId::new(),
                request_id: req.id,
                processor_id: p.spec.id.clone(),
                kind: req.kind,
                jurisdiction: req.jurisdiction,
                submitted_at: req.submitted_at.unwrap_or(job.now),
                state: InstructionState::Pending,
                attempts: 0,
                attempts_since_arm: 0,
                reminders: 0,
                last_error: None,
                created_at: job.now,
                first_instructed_at: None,
                acknowledged_at: None,
                resolved_at: None,
                // Manual instructions wait for an operator, never for a
                // dispatcher.
                next_attempt_at: (p.spec.adapter != AdapterConfig::Manual).then_some(job.now),
                lease_expires_at: None,
                reply_due_at: None,
                due_at: Some(due_at),
                escalate_at: Some(escalate_at),
                result: None,
                resolved_by: None,
                data_records: 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column names an insert head lists, in order.
    fn listed(head: &str) -> Vec<String> {
        let (_, list) = head.split_once('(').expect("a column list");
        let (list, _) = list.split_once(')').expect("its end");
        list.split(',').map(|c| c.trim().to_string()).collect()
    }

    /// Each insert head names its rows' columns in the order the rows bind
    /// them, so the two lists cannot drift apart.
    #[test]
    fn the_insert_heads_list_the_rows_columns_in_order() {
        for (head, columns) in [
            (INSERT_REQUESTS, REQUEST_COLUMNS),
            (INSERT_INSTRUCTIONS, INSTRUCTION_ROW_COLUMNS),
        ] {
            let names: Vec<String> = columns.iter().map(|(n, _)| n.to_string()).collect();
            assert_eq!(listed(head), names);
        }
    }
}
