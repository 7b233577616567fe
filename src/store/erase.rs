//! Erasure of finished requests' personal data, and the suppression list.
//!
//! A final instruction is never sent again (only PENDING, DELIVERING and
//! ACKNOWLEDGED ones are ever claimed), so its payload goes with the update
//! that makes it final. Once a request is finished (COMPLETED or
//! CANCELLED) all its instructions are final, and its subject's identities
//! and the data records processors returned are erased here
//! (`requests.identities_erased_at` says when): at once for most kinds,
//! after the report window for completed access and portability requests,
//! whose data the business still has to pass on (a cancelled one's is
//! never passed on, and goes like any other kind's).
//! The completion record and the audit trail never held them and stay.
//!
//! Before a finished deletion's identities go, the keyed hashes of their
//! normal forms ([`crate::domain::normal_form`]) join the suppression list
//! (Cal. Civ. Code 1798.105(c)(2)): deletions whose outcome is FULFILLED or
//! PARTIALLY_FULFILLED with at least one processor line, the ones that were
//! carried out at least in part. A cancelled deletion, one denied for lack
//! of verification, one no processor carried out (NOT_FULFILLED) and one no
//! processor took do not count: nothing was deleted because the person
//! asked.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::Row;

use super::codec::{micros, parsed, request_id, time};
use super::events::EventKind;
use super::fetches::{Note, append_notes};
use super::sealed::SUBJECT;
use super::sql::{Bind, Col, Sql};
use super::{Effects, Store, StoreError};
use crate::domain::{
    Actor, CompletionRecord, OverallOutcome, RequestKind, RequestStatus, Subject, SubjectIdentity,
    Timestamp, normal_form,
};

/// Requests erased per transaction.
const BATCH: i64 = 100;

/// What one pass of [`Store::erase_finished`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    /// Requests whose personal data was erased.
    pub requests: usize,
    /// Entries added to the suppression list.
    pub suppressed: usize,
    /// Requests left as they were because their subject does not open
    /// (its key is missing or wrong): by key id or reason.
    pub unreadable: BTreeMap<String, usize>,
}

/// A suppression list entry's hash: the keyed hash of the identity's type
/// and normal form.
fn entry(store: &Store, identity: &SubjectIdentity) -> String {
    store.keys.keyed_hash(&[
        "suppression",
        identity.kind.as_str(),
        &normal_form(identity),
    ])
}

/// When finished requests' personal data goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErasureSchedule {
    /// How often each replica erases (`--erase-interval`).
    pub every: Duration,
    /// How long a completed access or portability request keeps its data
    /// for the report (`--report-window`); the others are due once
    /// finished.
    pub report_window: Duration,
}

impl ErasureSchedule {
    /// Erasure every `every`; access and portability data kept for
    /// `report_window`.
    pub fn new(every: Duration, report_window: Duration) -> Self {
        Self {
            every,
            report_window,
        }
    }

    /// How long past its due time a request's erasure may take before it
    /// counts as overdue: two passes.
    pub fn grace(self) -> Duration {
        self.every.saturating_mul(2)
    }
}

/// The instant `span` before `at` (the earliest instant there is, for a
/// span longer than the calendar).
pub(super) fn before(at: Timestamp, span: Duration) -> Timestamp {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|d| at.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Appends the condition of a request whose personal data is due for
/// erasure (`requests_to_erase` holds them and a few more): finished, not
/// yet erased, and, for a completed access or portability request, closed
/// before `window_start`, when its report window began. An access request
/// denied for too weak a verification has nothing to pass on (no
/// processor was asked) and waits no more than a cancelled one. `alias`
/// prefixes the `requests` columns.
pub(super) fn due_for_erasure(sql: &mut Sql, alias: &str, window_start: i64) {
    let r = alias;
    sql.push(&format!(
        "{r}identities_erased_at is null and {r}status in ('COMPLETED', 'CANCELLED') \
         and ({r}kind not in ('ACCESS', 'PORTABILITY') or {r}status = 'CANCELLED' \
         or {r}denied is not null or {r}closed_at < "
    ))
    .bind(window_start)
    .push(")");
}

impl Store {
    /// The data protection task, to run on a task of its own: one
    /// resealing pass at start (values written before sealing existed, or
    /// under an older key), then, every `schedule.every` until `stop`, the
    /// erasure of finished requests' personal data.
    pub fn protector(
        &self,
        schedule: ErasureSchedule,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.clone();
        async move {
            match store.reseal(500).await {
                Ok(r) if r == super::Resealed::default() => {}
                Ok(r) => tracing::info!(
                    values = r.values,
                    fingerprints = r.fingerprints,
                    unreadable = ?r.unreadable,
                    active_key = store.keys.active(),
                    "resealed personal data at rest"
                ),
                Err(e) => tracing::warn!(error = %e, "resealing failed; ResealData repeats it"),
            }
            let mut ticks = tokio::time::interval(schedule.every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match store
                    .erase_finished(clock.now(), schedule.report_window)
                    .await
                {
                    Ok(e) if e == Erased::default() => {}
                    Ok(e) if !e.unreadable.is_empty() => tracing::warn!(
                        requests = e.requests,
                        suppressed = e.suppressed,
                        unreadable = ?e.unreadable,
                        "finished requests left unerased: their subjects do not open \
                         (configure the keys named)"
                    ),
                    Ok(e) => tracing::info!(
                        requests = e.requests,
                        suppressed = e.suppressed,
                        unreadable = ?e.unreadable,
                        "erased the personal data of finished requests"
                    ),
                    Err(StoreError::Database(e)) if matches!(*e, sqlx::Error::PoolClosed) => return,
                    Err(e) => tracing::warn!(error = %e, "erasure failed; will retry"),
                }
            }
        }
    }

    /// Erases the personal data of requests finished by `now` (completed
    /// access and portability ones once `report_window` has passed since),
    /// adding carried-out deletions to the suppression list first.
    pub async fn erase_finished(
        &self,
        now: Timestamp,
        report_window: Duration,
    ) -> Result<Erased, StoreError> {
        let window_start = micros(before(now, report_window));
        let mut done = Erased::default();
        let mut after: Option<(i64, String)> = None;
        loop {
            let mut sql = Sql::new(
                self.backend,
                "select r.id as id, r.kind as kind, r.status as status, r.closed_at as closed_at, \
                 r.subject as subject, c.canonical_json as record from requests r \
                 left join completion_records c on c.request_id = r.id where ",
            );
            due_for_erasure(&mut sql, "r.", window_start);
            if let Some((closed, id)) = &after {
                // A row-value comparison, so that the scan starts at the
                // key in `requests_to_erase` instead of walking from the
                // start past the entries of requests erased moments ago
                // (dead until vacuum): an `or` of the two cases is no
                // index range, and made each batch slower than the last.
                sql.push(" and (r.closed_at, r.id) > (")
                    .bind(*closed)
                    .push(", ")
                    .bind(id.clone())
                    .push(")");
            }
            sql.push(" order by r.closed_at, r.id").limit(BATCH);
            let rows = sql.query().fetch_all(&self.pool).await?;
            let Some(last) = rows.last() else {
                return Ok(done);
            };
            after = Some((last.try_get("closed_at")?, last.try_get::<String, _>("id")?));
            let mut erase: Vec<String> = Vec::with_capacity(rows.len());
            let mut entries: Vec<(String, &'static str, String, i64)> = Vec::new();
            for row in &rows {
                let id = request_id(row, "id")?;
                let suppress = parsed(row, "kind", |s| s.parse::<RequestKind>().ok())?
                    == RequestKind::Delete
                    && parsed(row, "status", RequestStatus::parse)? == RequestStatus::Completed
                    && row
                        .try_get::<Option<String>, _>("record")?
                        .and_then(|r| serde_json::from_str::<CompletionRecord>(&r).ok())
                        .is_some_and(|r| {
                            // Carried out by at least one processor (one no
                            // processor took is fulfilled, but by none).
                            !r.lines.is_empty()
                                && matches!(
                                    r.outcome,
                                    OverallOutcome::Fulfilled | OverallOutcome::PartiallyFulfilled
                                )
                        });
                if suppress && let Some(text) = row.try_get::<Option<String>, _>("subject")? {
                    let subject: Subject = match self.open_json(&text, SUBJECT, id) {
                        Ok(subject) => subject,
                        Err(StoreError::Sealed(_) | StoreError::Corrupt(_)) => {
                            let key = crate::seal::Keyring::key_of(&text).unwrap_or("unreadable");
                            *done.unreadable.entry(key.to_string()).or_default() += 1;
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let since = micros(time(row, "closed_at")?);
                    for identity in subject.identities() {
                        entries.push((
                            entry(self, identity),
                            identity.kind.as_str(),
                            id.to_string(),
                            since,
                        ));
                    }
                }
                erase.push(id.to_string());
            }
            if erase.is_empty() {
                continue;
            }
            let mut tx = self.begin().await?;
            let mut suppressed = 0;
            if !entries.is_empty() {
                let mut sql = Sql::new(
                    self.backend,
                    "insert into suppressions (hash, identity_type, request_id, since) ",
                );
                sql.select_rows(
                    &[
                        ("hash", Col::Text),
                        ("identity_type", Col::Text),
                        ("request_id", Col::Text),
                        ("since", Col::Int),
                    ],
                    entries.iter().map(|(hash, kind, request, since)| {
                        vec![
                            Bind::from(hash.clone()),
                            Bind::from(kind.to_string()),
                            Bind::from(request.clone()),
                            Bind::from(*since),
                        ]
                    }),
                )
                .push(" where true on conflict (hash) do nothing");
                suppressed = sql.query().execute(&mut *tx).await?.rows_affected() as usize;
            }
            let mut sql = Sql::new(
                self.backend,
                "update instructions set payload = null, sealed_records = null \
                 where (payload is not null or sealed_records is not null) and ",
            );
            sql.in_list("request_id", erase.clone());
            sql.query().execute(&mut *tx).await?;
            let mut sql = Sql::new(
                self.backend,
                "delete from data_record_chunks where instruction_id in \
                 (select id from instructions where ",
            );
            sql.in_list("request_id", erase.clone()).push(")");
            sql.query().execute(&mut *tx).await?;
            let mut sql = Sql::new(
                self.backend,
                "update requests set subject = null, identities_erased_at = ",
            );
            sql.bind(micros(now))
                .push(" where identities_erased_at is null and ")
                .in_list("id", erase.clone());
            let erased = sql.query().execute(&mut *tx).await?.rows_affected() as usize;
            tx.commit().await?;
            done.requests += erased;
            done.suppressed += suppressed;
            if let Some(observer) = self.observer.get() {
                observer.personal_data_erased(erased, suppressed);
            }
        }
    }

    /// For each of `identities`: since when it is on the suppression list,
    /// if it is.
    pub async fn suppressed(
        &self,
        identities: &[SubjectIdentity],
    ) -> Result<Vec<Option<Timestamp>>, StoreError> {
        let hashes: Vec<String> = identities.iter().map(|i| entry(self, i)).collect();
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(self.backend, "select hash, since from suppressions where ");
        sql.in_list("hash", hashes.clone());
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut found: BTreeMap<String, Timestamp> = BTreeMap::new();
        for row in &rows {
            found.insert(row.try_get("hash")?, time(row, "since")?);
        }
        Ok(hashes.iter().map(|h| found.get(h).copied()).collect())
    }

    /// Removes `identities` from the suppression list, and records that in
    /// the audit trail of each request that put them there (which may
    /// have been purged since). Returns how many entries went.
    pub async fn remove_suppression(
        &self,
        identities: &[SubjectIdentity],
        reason: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let hashes: Vec<String> = identities.iter().map(|i| entry(self, i)).collect();
        let mut tx = self.begin().await?;
        let mut sql = Sql::new(self.backend, "delete from suppressions where ");
        sql.in_list("hash", hashes).push(" returning request_id");
        let removed = sql.query().fetch_all(&mut *tx).await?;
        let mut requests: Vec<String> = removed
            .iter()
            .map(|r| r.try_get::<String, _>("request_id"))
            .collect::<Result<_, _>>()?;
        requests.sort();
        requests.dedup();
        let note = Note {
            kind: EventKind::SuppressionRemoved,
            actor,
            text: reason,
        };
        let touched = append_notes(&mut tx, self.backend, requests, note, now).await?;
        let effects = Effects {
            touched,
            ..Effects::default()
        };
        tx.commit().await?;
        self.announce(effects);
        Ok(removed.len())
    }
}
