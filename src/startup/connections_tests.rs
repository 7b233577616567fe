//! Tests of `connections`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

/// A table of at most `most`, and what it counts.
fn table(most: usize) -> (Connections, Arc<ConnectionStats>) {
    let stats = Arc::new(ConnectionStats::default());
    (Connections::new(most, stats.clone()), stats)
}

#[test]
fn the_most_open_is_half_the_descriptors_within_its_bounds() {
    let most = max_connections();
    assert!(
        (MIN_CONNECTIONS..=MAX_CONNECTIONS).contains(&most),
        "{most}"
    );
}

#[tokio::test]
async fn a_connection_beyond_the_most_closes_the_least_recently_active() {
    let (connections, stats) = table(2);
    let (first, mut first_peer) = duplex(64);
    let (second, _second_peer) = duplex(64);
    let mut first = connections.admit(first);
    let mut second = connections.admit(second);
    assert_eq!(connections.len(), 2);
    // The first admitted reads after the second was admitted, so the
    // second is the least recently active.
    first_peer.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).await.unwrap();
    let (third, _third_peer) = duplex(64);
    let _third = connections.admit(third);
    assert_eq!(connections.len(), 2, "one gave way");
    assert_eq!(stats.closed_for(ConnectionClosed::Room), 1);
    let err = second
        .read(&mut byte)
        .await
        .expect_err("the quietest is closed");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    second
        .write_all(b"z")
        .await
        .expect_err("and cannot write either");
    first_peer.write_all(b"w").await.unwrap();
    first
        .read_exact(&mut byte)
        .await
        .expect("the active one stays");
    drop(first);
    drop(second);
    assert_eq!(connections.len(), 1, "a dropped one leaves");
    assert_eq!(stats.open(), 1, "counted out as it is dropped");
}

#[tokio::test]
async fn a_closed_connection_waiting_to_read_is_woken() {
    let (connections, _) = table(1);
    let (quiet, _quiet_peer) = duplex(64);
    let mut quiet = connections.admit(quiet);
    let waiting = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        quiet.read(&mut byte).await
    });
    // The read waits (this runtime has one thread: the spawned task ran
    // until it waited), then admitting the next closes it and wakes it.
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "the read waits");
    let (next, _next_peer) = duplex(64);
    let _next = connections.admit(next);
    let read = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(
        read.expect_err("closed").kind(),
        io::ErrorKind::ConnectionAborted
    );
}

#[tokio::test]
async fn a_connection_with_a_call_in_progress_outlasts_idle_ones() {
    let (connections, _) = table(2);
    let (watching, _watching_peer) = duplex(64);
    let watching = connections.admit(watching);
    // A watch open on the first connection, which then says nothing.
    let watch = watching.handle().calling();
    let (idle, _idle_peer) = duplex(64);
    let mut idle = connections.admit(idle);
    let (next, _next_peer) = duplex(64);
    let _next = connections.admit(next);
    assert!(!watching.handle().closed(), "the quieter one has a call");
    let mut byte = [0u8; 1];
    idle.read(&mut byte)
        .await
        .expect_err("the idle one gave way");
    drop(watch);
    let (last, _last_peer) = duplex(64);
    let _last = connections.admit(last);
    assert!(
        watching.handle().closed(),
        "its call over, it is the quietest"
    );
}

#[test]
fn a_full_table_closes_a_sixty_fourth_of_itself_at_once() {
    let (connections, stats) = table(128);
    let open: Vec<_> = (0..128).map(|_| connections.admit(duplex(8).0)).collect();
    let _next = connections.admit(duplex(8).0);
    assert_eq!(connections.len(), 127, "two closed, one admitted");
    assert_eq!(stats.closed_for(ConnectionClosed::Room), 2);
    let closed: Vec<bool> = open.iter().map(|c| c.handle().closed()).collect();
    assert_eq!(closed.iter().filter(|c| **c).count(), 2);
    assert!(closed[0] && closed[1], "the two quietest: {closed:?}");
    let _another = connections.admit(duplex(8).0);
    assert_eq!(connections.len(), 128, "room without closing another");
}

#[test]
fn a_connection_closed_twice_is_counted_once() {
    let (connections, stats) = table(4);
    let conn = connections.admit(duplex(8).0);
    conn.handle().close(ConnectionClosed::StalledReader);
    conn.handle().close(ConnectionClosed::StalledReader);
    assert_eq!(stats.closed_for(ConnectionClosed::StalledReader), 1);
    assert_eq!(stats.closed_for(ConnectionClosed::Room), 0);
}

#[test]
fn a_connection_closed_for_a_stalled_reader_is_not_counted_again_for_room() {
    let (connections, stats) = table(1);
    let stalled = connections.admit(duplex(8).0);
    stalled.handle().close(ConnectionClosed::StalledReader);
    let _next = connections.admit(duplex(8).0);
    assert!(stalled.handle().closed());
    assert_eq!(stats.closed_for(ConnectionClosed::StalledReader), 1);
    assert_eq!(stats.closed_for(ConnectionClosed::Room), 0);
}

#[test]
fn a_close_after_the_connection_is_dropped_is_not_counted() {
    let (connections, stats) = table(4);
    let conn = connections.admit(duplex(8).0);
    let handle = conn.handle();
    drop(conn);
    handle.close(ConnectionClosed::StalledReader);
    assert_eq!(stats.closed_for(ConnectionClosed::StalledReader), 0);
    assert_eq!(stats.open(), 0);
}
