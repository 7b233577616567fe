//! Cross-replica wake-ups. Within one process the store tells watchers and
//! the dispatcher about its own commits directly; on PostgreSQL it also
//! publishes them with `NOTIFY`, and every replica `LISTEN`s, so a
//! `WatchRequest` served by one replica sees changes made by another at once
//! and an idle dispatcher wakes when another replica takes in new work.
//!
//! Notifications are an accelerator, not a source of truth: one lost to a
//! dropped connection (or to a crash between commit and notify) only means
//! the watcher or dispatcher finds the change at its next poll.
//!
//! So no writer waits for them: a committed transaction hands its notice to
//! one publisher task and goes on, and the publisher sends, in one round of
//! `NOTIFY`s, every notice waiting (the same request named once). A
//! `NOTIFY` after each commit, on a pooled connection fetched and returned
//! around it, would put a round trip on the path of every serial writer
//! (intake, claims, recorded results): about 10 % of intake on PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::batches::Batches;

use super::sql::Sql;
use super::{Backend, Store};
use crate::domain::RequestId;

/// Channel carrying comma-separated ids of requests with new events.
const EVENTS: &str = "dsr_events";
/// Channel carrying "new work was committed".
const WORK: &str = "dsr_work";
/// NOTIFY payloads must stay under 8000 bytes: 36-byte ids plus commas.
const IDS_PER_NOTIFY: usize = 200;

/// Most notices merged into one round of `NOTIFY`s.
const NOTICES_PER_ROUND: usize = 256;

/// What one committed transaction tells other replicas.
pub(super) struct Notice {
    /// Requests with new events.
    pub touched: Vec<RequestId>,
    /// Whether it committed due work.
    pub new_work: bool,
}

impl Store {
    /// PostgreSQL's notice publisher, to run on a task of its own: sends
    /// every notice waiting in one round of `NOTIFY`s, until `stop` (then
    /// what is queued). `None` on SQLite. A notice that finds the queue
    /// full is dropped by its sender: the queue is that far behind only
    /// when the database is, and pollers will find the change.
    pub fn notice_publisher(
        &self,
        stop: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        if self.backend != Backend::Postgres {
            return None;
        }
        let (tx, rx) = mpsc::channel::<Notice>(4 * NOTICES_PER_ROUND);
        let started = self.publisher.set(tx).is_ok();
        let store = self.clone();
        Some(async move {
            if !started {
                tracing::warn!("a notice publisher is already running");
                return;
            }
            let mut batches = Batches::new(rx, NOTICES_PER_ROUND, stop);
            while let Some(notices) = batches.next().await {
                let mut seen = HashSet::new();
                let mut touched = Vec::new();
                let mut new_work = false;
                for notice in notices {
                    new_work |= notice.new_work;
                    touched.extend(notice.touched.into_iter().filter(|id| seen.insert(*id)));
                }
                store.publish(&touched, new_work).await;
            }
        })
    }

    /// PostgreSQL's notice listener, to run on a task of its own until
    /// `stop`: `LISTEN`s on its own connection (reconnecting when it
    /// drops) and relays other replicas' notices to this process's
    /// watchers and dispatcher. `None` on SQLite.
    pub fn notice_listener(
        &self,
        stop: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        if self.backend != Backend::Postgres {
            return None;
        }
        let (url, work, events) = (self.url.clone(), self.work.clone(), self.events.clone());
        Some(async move {
            let listen = async {
                loop {
                    match PgListener::connect(&url).await {
                        Ok(mut listener) => {
                            if let Err(e) = listener.listen_all([EVENTS, WORK]).await {
                                tracing::warn!(error = %e, "LISTEN failed; retrying");
                            } else {
                                relay(&mut listener, &work, &events).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "notification listener cannot connect; retrying")
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = listen => {}
            }
        })
    }
}

/// Relays notifications until the listener fails for good. (`recv`
/// reconnects by itself after a dropped connection.)
async fn relay(listener: &mut PgListener, work: &Notify, events: &broadcast::Sender<RequestId>) {
    loop {
        match listener.recv().await {
            Ok(n) if n.channel() == WORK => work.notify_one(),
            Ok(n) => {
                for id in n
                    .payload()
                    .split(',')
                    .filter_map(|s| RequestId::parse(s).ok())
                {
                    let _ = events.send(id);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "notification listener failed; reconnecting");
                return;
            }
        }
    }
}

impl Store {
    /// Publishes a committed transaction's effects to other replicas.
    pub(super) async fn publish(&self, touched: &[RequestId], new_work: bool) {
        let mut failed = None;
        for chunk in touched.chunks(IDS_PER_NOTIFY) {
            let ids = chunk
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            if let Err(e) = Sql::new(self.backend, "select pg_notify(")
                .bind(EVENTS)
                .push(", ")
                .bind(ids)
                .push(") is null as sent")
                .query()
                .execute(&self.pool)
                .await
            {
                failed = Some(e);
            }
        }
        if new_work
            && let Err(e) = Sql::new(self.backend, "select pg_notify(")
                .bind(WORK)
                .push(", '') is null as sent")
                .query()
                .execute(&self.pool)
                .await
        {
            failed = Some(e);
        }
        if let Some(e) = failed {
            tracing::debug!(error = %e, "NOTIFY failed; other replicas will poll");
        }
    }
}
