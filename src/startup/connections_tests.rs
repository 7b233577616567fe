//! Tests of `connections`.

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

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
    let connections = Connections::new(2);
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
    assert_eq!(connections.len(), 1, "a dropped one leaves");
}

#[tokio::test]
async fn a_closed_connection_waiting_to_read_is_woken() {
    let connections = Connections::new(1);
    let (quiet, _quiet_peer) = duplex(64);
    let mut quiet = connections.admit(quiet);
    let waiting = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        quiet.read(&mut byte).await
    });
    // Admitting the next closes the first, whether or not its read
    // has started waiting yet: a read that starts later sees it
    // closed at once, and one already waiting is woken.
    tokio::task::yield_now().await;
    let (next, _next_peer) = duplex(64);
    let _next = connections.admit(next);
    let read = waiting.await.unwrap();
    assert_eq!(
        read.expect_err("closed").kind(),
        io::ErrorKind::ConnectionAborted
    );
}
