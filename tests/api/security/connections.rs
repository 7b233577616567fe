//! The gRPC listener's open connections are bounded: idle HTTP/2
//! connections, handshake done and nothing asked, cannot hold every
//! descriptor; a newcomer beyond the bound closes the quietest
//! connection (idle, and least recently active), and the others stay open.

use std::time::Duration;

use dsr_orchestrator::startup::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::list;
use crate::backends;
use crate::harness::app::{Bearer, Clients, channel};
use crate::harness::*;

backends!(idle_connections_give_way_to_a_newcomer_and_busy_ones_stay);

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// An HTTP/2 connection that has been answered (the server's SETTINGS
/// read) and then asks nothing.
async fn idle_connection(addr: std::net::SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    let mut settings = [0u8; 9];
    conn.read_exact(&mut settings)
        .await
        .expect("the server's SETTINGS");
    assert_eq!(settings[3], 0x4, "a SETTINGS frame: {settings:?}");
    conn
}

/// With room for four connections: the harness's, then three idle ones
/// opened after it. The harness calls, so its connection, the oldest, is
/// the most recently active. A new client's connection is the fifth: it
/// is served, the first idle connection is closed for it, and the other
/// two stay open.
async fn idle_connections_give_way_to_a_newcomer_and_busy_ones_stay(db: TestDb) {
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.max_connections = Some(4);
    })
    .await;
    let harness = app.clients(Bearer::default());
    list(&harness.requests)
        .await
        .expect("the harness is served");
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(idle_connection(app.addr).await);
    }
    list(&harness.requests)
        .await
        .expect("the harness is served");

    let newcomer = Clients::new(channel(app.addr).await, Bearer::default());
    list(&newcomer.requests)
        .await
        .expect("the newcomer is served");
    let mut byte = [0u8; 1];
    let first = tokio::time::timeout(Duration::from_secs(30), async {
        // Frames the server sent before it closed (a SETTINGS
        // acknowledgement) come first; then the end.
        loop {
            match idle[0].read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(first.is_ok(), "the least recently active is closed");
    for (i, conn) in idle.iter_mut().enumerate().skip(1) {
        // What the server sent before (a SETTINGS acknowledgement) is
        // read; then nothing comes, nor the end, for a while.
        let mut rest = [0u8; 64];
        let open = loop {
            match tokio::time::timeout(Duration::from_millis(300), conn.read(&mut rest)).await {
                Err(_) => break true,
                Ok(Ok(0) | Err(_)) => break false,
                Ok(Ok(_)) => {}
            }
        };
        assert!(open, "idle connection {i} stays open");
    }
    list(&harness.requests)
        .await
        .expect("the harness is still served");
    list(&newcomer.requests)
        .await
        .expect("and so is the newcomer");
    // The server dropped the closed one before its end reached the client.
    assert_eq!(app.sample("dsr_grpc_connections").await, 4.0);
    assert_eq!(app.sample("dsr_grpc_connections_max").await, 4.0);
    let closed = r#"dsr_grpc_connections_closed_total{reason="room"}"#;
    assert_eq!(app.sample(closed).await, 1.0);
    drop(idle);
    app.stop().await;
}
