//! Tests of `connections`.

use super::*;

fn opened(connections: &Connections, n: u64) -> Arc<Open> {
    let open = Arc::new(Open::default());
    connections
        .open
        .lock()
        .expect("lock")
        .insert(n, open.clone());
    open
}

#[test]
fn room_is_made_by_closing_the_oldest_idle_connection_only() {
    let connections = Arc::new(Connections::default());
    let (first, second) = (opened(&connections, 1), opened(&connections, 2));
    let busy = first
        .begin(&connections)
        .expect("an open connection begins");
    assert!(connections.make_room(2), "the idle second one closes");
    assert!(second.close.is_cancelled());
    assert!(
        !first.close.is_cancelled(),
        "a request in progress keeps its own"
    );
    assert!(
        second.begin(&connections).is_none(),
        "a closing one begins nothing"
    );
    assert!(!connections.make_room(1), "no idle one left to close");
    drop(busy);
    assert!(connections.make_room(1), "once its response is written");
    assert!(first.close.is_cancelled());
}

/// With room for one connection: the first asks for a response larger
/// than its connection's buffer and reads a piece of it. Once the
/// response's end is handed over, its request counts as done, so a
/// second connection closes it and is served. The first still reads
/// the whole response, then the end.
#[tokio::test]
async fn a_connection_closed_for_a_newer_one_finishes_its_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 256 * 1024;
    let app = Router::new()
        .route("/large", axum::routing::get(|| async { "x".repeat(SIZE) }))
        .route("/quick", axum::routing::get(|| async { "quick" }));
    let (conns_tx, conns_rx) = tokio::sync::mpsc::unbounded_channel();
    let conns = tokio_stream::wrappers::UnboundedReceiverStream::new(conns_rx);
    let limits = AdminLimits {
        connections: 1,
        header_timeout: Duration::from_secs(60),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(conns, app, limits, shutdown.clone()));

    let (mut first, theirs) = tokio::io::duplex(1024);
    conns_tx.send(theirs).expect("the server listens");
    first
        .write_all(b"GET /large HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .expect("request sent");
    let mut response = vec![0u8; 1024];
    let n = first.read(&mut response).await.expect("the first piece");
    response.truncate(n);

    let (mut second, theirs) = tokio::io::duplex(4096);
    conns_tx.send(theirs).expect("the server listens");
    // Bounded, so that a connection held on would fail here, not hang.
    let quick = tokio::time::timeout(Duration::from_secs(30), get(&mut second, "/quick"))
        .await
        .expect("served once the first response's end is handed over");
    assert!(quick.ends_with("quick"), "{quick}");

    tokio::time::timeout(Duration::from_secs(30), first.read_to_end(&mut response))
        .await
        .expect("the end comes")
        .expect("the rest, then the end");
    let text = String::from_utf8(response).expect("text");
    let (_, body) = text.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body.len(), SIZE, "the body was cut short");
    shutdown.cancel();
    server.await.expect("the server stops");
}

/// Connections closed for newer ones finish their responses at most
/// `most` at a time.
#[test]
fn connections_finishing_for_newer_ones_are_bounded() {
    let connections = Connections::default();
    let first = connections.finish(2).expect("room to finish");
    let second = connections.finish(2).expect("room to finish");
    assert!(connections.finish(2).is_none(), "two already finish");
    drop(first);
    assert!(connections.finish(2).is_some(), "once one has finished");
    drop(second);
}

/// The response to `path` on `conn`, read to the end of its body.
async fn get(conn: &mut tokio::io::DuplexStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.expect("request sent");
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .await
        .expect("response read");
    response
}

/// With room for one connection, whose request is in progress, a
/// second connection waits, unserved, until that request is done, and is
/// then served. Time is paused: the wait is seen as an hour in which
/// nothing else could happen.
#[tokio::test(start_paused = true)]
async fn a_connection_beyond_the_bound_waits_while_every_one_is_busy() {
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let held = {
        let release = release.clone();
        move || async move {
            entered_tx.send(()).expect("the test listens");
            release.notified().await;
            "held"
        }
    };
    let app = Router::new()
        .route("/held", axum::routing::get(held))
        .route("/quick", axum::routing::get(|| async { "quick" }));
    let (conns_tx, conns_rx) = tokio::sync::mpsc::unbounded_channel();
    let conns = tokio_stream::wrappers::UnboundedReceiverStream::new(conns_rx);
    let limits = AdminLimits {
        connections: 1,
        header_timeout: Duration::from_secs(24 * 3600),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(conns, app, limits, shutdown.clone()));

    let (mut first, theirs) = tokio::io::duplex(4096);
    conns_tx.send(theirs).expect("the server listens");
    let first = tokio::spawn(async move { get(&mut first, "/held").await });
    entered
        .recv()
        .await
        .expect("the held request is in progress");

    let (mut second, theirs) = tokio::io::duplex(4096);
    conns_tx.send(theirs).expect("the server listens");
    let mut second = tokio::spawn(async move { get(&mut second, "/quick").await });
    let waited = tokio::time::timeout(Duration::from_secs(3600), &mut second).await;
    assert!(waited.is_err(), "served beside a request in progress");

    release.notify_one();
    let first = first.await.expect("the first client");
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("held"),
        "{first}"
    );
    let second = second.await.expect("the second client");
    assert!(
        second.starts_with("HTTP/1.1 200") && second.ends_with("quick"),
        "{second}"
    );
    shutdown.cancel();
    server.await.expect("the server stops");
}
