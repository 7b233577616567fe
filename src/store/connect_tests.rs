//! Tests of `connect`.

use super::super::testing;
use super::*;

#[test]
fn passwords_are_hidden_and_only_passwords() {
    for (url, shown) in [
        (
            "postgres://dsr:secret@db:5432/dsr",
            "postgres://dsr:***@db:5432/dsr",
        ),
        ("postgres://dsr@db/dsr", "postgres://dsr@db/dsr"),
        ("postgres://db/dsr?user=x", "postgres://db/dsr?user=x"),
        ("postgres://u:p@ss@db/x", "postgres://u:***@db/x"),
        ("sqlite://dsr.db", "sqlite://dsr.db"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn sqlite_paths() {
    assert_eq!(
        sqlite_path("sqlite://dsr.db"),
        Some(PathBuf::from("dsr.db"))
    );
    assert_eq!(
        sqlite_path("sqlite:///var/lib/dsr/dsr.db?mode=rwc"),
        Some(PathBuf::from("/var/lib/dsr/dsr.db"))
    );
    assert_eq!(sqlite_path("sqlite::memory:"), None);
    assert_eq!(
        sqlite_path("sqlite://dsr.db?cache=shared&mode=memory"),
        None
    );
}

#[tokio::test]
async fn a_write_transaction_dropped_without_commit_is_rolled_back() {
    let (_dir, store) = testing::sqlite().await;
    let mut tx = store.begin().await.unwrap();
    testing::insert_processor(&mut tx, 1).await;
    drop(tx);
    // The next writer gets the connection, with the abandoned change
    // undone, and can write the same row itself.
    let mut tx = store.begin().await.unwrap();
    let count: i64 = sqlx::query_scalar("select count(*) from processors")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count, 0);
    testing::insert_processor(&mut tx, 1).await;
    tx.commit().await.unwrap();
    let count: i64 = sqlx::query_scalar("select count(*) from processors")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    store.close().await;
}

/// A write transaction dropped unfinished (its task failed or was
/// cancelled, as when an RPC's caller goes away) gives SQLite's write
/// lock back at once, not at the next writer's turn: a pooled write
/// outside the turns (processor registration) then goes through
/// instead of waiting in its busy handler and failing.
#[tokio::test]
async fn a_dropped_write_releases_sqlite_at_once() {
    let (_dir, store) = testing::sqlite().await;
    let mut tx = store.begin().await.unwrap();
    testing::insert_processor(&mut tx, 1).await;
    drop(tx);
    let mut conn = store.pool.acquire().await.unwrap();
    sqlx::raw_sql("PRAGMA busy_timeout = 2000")
        .execute(&mut *conn)
        .await
        .unwrap();
    testing::insert_processor(&mut conn, 2).await;
    drop(conn);
    let ids: Vec<String> = sqlx::query_scalar("select id from processors order by id")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(
        ids,
        ["p2"],
        "the dropped transaction's insert was rolled back"
    );
    store.close().await;
}

#[tokio::test]
async fn a_second_process_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/dsr.db", dir.path().display());
    let first = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    let err = Store::connect(&url, &StoreOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::InUse(_)), "{err}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    first.close().await;
    drop(first);
    Store::connect(&url, &StoreOptions::default())
        .await
        .expect("free again");
}

/// SQLite is compiled with `.cargo/config.toml`'s flags: without its
/// memory statistics, which put every allocation of every connection
/// behind one process-wide mutex, and with room for a claim's compound
/// SELECT over many processors; a build that lost them fails here rather
/// than quietly carrying less, and the server warns at startup.
#[tokio::test]
async fn sqlite_is_built_with_the_repositorys_flags() {
    let (_dir, store) = testing::sqlite().await;
    let missing = super::super::sqlite_build::missing_flags(&store.pool)
        .await
        .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    store.close().await;
}
