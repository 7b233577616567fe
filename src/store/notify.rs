//! Cross-replica wake-ups. Within one process the store tells watchers and
//! the dispatcher about its own commits directly; on PostgreSQL it also
//! publishes them with `NOTIFY`, and every replica `LISTEN`s, so a
//! `WatchRequest` served by one replica sees changes made by another at once
//! and an idle dispatcher wakes when another replica takes in new work.
//!
//! Notifications are an accelerator, not a source of truth: one lost to a
//! dropped connection (or to a crash between commit and notify) only means
//! the watcher or dispatcher finds the change at its next poll.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use super::Store;
use super::sql::Sql;
use crate::domain::RequestId;

/// Channel carrying comma-separated ids of requests with new events.
const EVENTS: &str = "dsr_events";
/// Channel carrying "new work was committed".
const WORK: &str = "dsr_work";
/// NOTIFY payloads must stay under 8000 bytes: 36-byte ids plus commas.
const IDS_PER_NOTIFY: usize = 200;

/// The listener task; aborted when the last store clone is dropped.
pub(super) struct Listener(JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts listening on `url` and relaying to this process.
pub(super) fn listen(
    url: String,
    work: Arc<Notify>,
    events: broadcast::Sender<RequestId>,
) -> Listener {
    Listener(tokio::spawn(async move {
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
    }))
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
