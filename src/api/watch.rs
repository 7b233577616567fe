//! `WatchRequest`'s stream: a request's history, then its changes as
//! they are committed (notices from this process, polling for the other
//! replicas'), until the terminal event. A watch may stay open for days,
//! longer than its credential: before each read and each event it sends
//! it asks again (see [`Recheck`]: a comparison while nothing changed),
//! and ends with the refusal once the token is taken out, the JWT or the
//! client certificate expires, or the roles no longer allow it. A stopping
//! server ends it at once, ahead of any events still queued for a slow
//! reader, with the status that tells the reader to resume
//! ([`to_reader`]).

use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::error::ApiError;
use super::watch_limits::Watching;
use crate::auth::recheck::Recheck;
use crate::domain::RequestId;
use crate::pb;
use crate::store::{EventKind, RequestEvent, Store};
use crate::wire;

/// How often a watcher re-reads the history when no notice arrives: the
/// fallback that lets a watcher see changes made by another replica.
const WATCH_POLL: Duration = Duration::from_millis(500);

pub(super) fn event_pb(e: &RequestEvent) -> pb::RequestEvent {
    let kind = match e.kind {
        EventKind::Received => pb::RequestEventType::Received,
        EventKind::InstructionChanged => pb::RequestEventType::InstructionChanged,
        EventKind::Completed => pb::RequestEventType::Completed,
        EventKind::Cancelled => pb::RequestEventType::Cancelled,
        EventKind::ReceiptConfirmed => pb::RequestEventType::ReceiptConfirmed,
        EventKind::DeadlineExtended => pb::RequestEventType::DeadlineExtended,
        EventKind::SuppressionRemoved => pb::RequestEventType::SuppressionRemoved,
        EventKind::DataFetched => pb::RequestEventType::DataFetched,
    };
    pb::RequestEvent {
        request_id: e.request_id.to_string(),
        sequence: e.seq,
        occurred_at: Some(wire::timestamp(e.occurred_at)),
        r#type: kind as i32,
        request_status: wire::request_status_pb(e.request_status) as i32,
        instruction: e.instruction.as_ref().map(wire::snapshot_summary),
        actor: e
            .actor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        extension: e.extension.as_ref().map(wire::extension_pb),
        previous_hash: e.prev_hash.clone().unwrap_or_default(),
        hash: e.hash.clone().unwrap_or_default(),
        note: e.note.clone().unwrap_or_default(),
    }
}

/// Streams the history of `id` from `after`, then follows it until the
/// terminal event, until the client goes away, or until its credential
/// (`recheck`, which the auth layer gives every watch) no longer allows
/// it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn follow(
    _watching: Watching,
    mut recheck: Option<Recheck>,
    store: Store,
    id: RequestId,
    mut after: u64,
    mut notices: broadcast::Receiver<RequestId>,
    tx: mpsc::Sender<Result<pb::RequestEvent, Status>>,
    shutdown: CancellationToken,
) {
    let mut terminal_checked = false;
    // An end sent to the reader; a stopping server does not wait for a
    // slow one (the reader's stream ends at once then, see `to_reader`).
    let end = async |status: Status| {
        tokio::select! {
            _ = tx.send(Err(status)) => {}
            () = shutdown.cancelled() => {}
        }
    };
    // Asked before each read and each event sent: a reader slow to take
    // a long history would otherwise hold the producer inside one batch,
    // sending it on after its credential stopped proving it. While the
    // auth settings and the credential's expiry stand, asking is a
    // comparison; a check after they changed may wait on the JWKS (up to
    // its fetch timeout), and a stopping server does not wait for it.
    let allowed = async |recheck: &mut Option<Recheck>| match recheck {
        Some(recheck) => tokio::select! {
            answer = recheck.still_allowed() => answer,
            () = shutdown.cancelled() => Err(shutting_down()),
        },
        None => Ok(()),
    };
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(refused) = allowed(&mut recheck).await {
            end(refused).await;
            return;
        }
        let events = match store.events_after(id, after, 500).await {
            Ok(events) => events,
            Err(e) => {
                end(ApiError::from(e).into()).await;
                return;
            }
        };
        for e in &events {
            // Room first: the wait for a slow reader comes before the
            // check, not between the check and the event.
            let room = tokio::select! {
                room = tx.reserve() => room,
                () = shutdown.cancelled() => return,
            };
            let Ok(room) = room else {
                return;
            };
            if let Err(refused) = allowed(&mut recheck).await {
                room.send(Err(refused));
                return;
            }
            room.send(Ok(event_pb(e)));
            after = e.seq;
            if e.kind.is_terminal() {
                return;
            }
        }
        if !events.is_empty() {
            continue;
        }
        // Nothing new. If the request is finished, its terminal event may
        // have been written after our read: read once more, and end only
        // when there is truly nothing left (a client resuming after the
        // terminal event gets an empty, finished stream).
        match store.request(id).await {
            Ok(r) if r.status.is_terminal() => {
                if terminal_checked {
                    return;
                }
                terminal_checked = true;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                end(ApiError::from(e).into()).await;
                return;
            }
        }
        let wait = async {
            loop {
                match notices.recv().await {
                    Ok(changed) if changed == id => return true,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::select! {
            open = wait => if !open { return },
            _ = tokio::time::sleep(WATCH_POLL) => {}
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The stream a watch's reader takes: the events [`follow`] sends into
/// `rx` until the server stops, and then, at once (ahead of any events
/// still queued for a slow reader), the end that tells it to resume. A
/// stopping server waits for its open streams, so it must not wait on a
/// reader.
pub(super) fn to_reader(
    rx: mpsc::Receiver<Result<pb::RequestEvent, Status>>,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<pb::RequestEvent, Status>> + Send + 'static {
    use futures::StreamExt as _;
    let stopped = shutdown.clone();
    let end =
        futures::stream::once(async move { stopped.is_cancelled().then(|| Err(shutting_down())) })
            .filter_map(std::future::ready);
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .take_until(shutdown.cancelled_owned())
        .chain(end)
}

/// How a watch ends when the server stops.
fn shutting_down() -> Status {
    Status::unavailable("server shutting down; resume with after_sequence")
}
