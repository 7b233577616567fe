//! Test harness: databases, the application under test, fake processors.

pub mod app;
pub mod db;
pub mod fake;
pub mod fixtures;

pub use app::TestApp;
pub use db::TestDb;
pub use fake::{FakeProcessor, Reply};
pub use fixtures::*;

/// Generates one `#[tokio::test]` per backend for a test body
/// `async fn name(db: TestDb)`. The PostgreSQL variant is skipped (with a
/// message) when no server is reachable; `.ci/run` makes sure one is.
#[macro_export]
macro_rules! backends {
    ($($name:ident),+ $(,)?) => {
        mod each_backend {
            $(
                pub mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn sqlite() {
                        super::super::$name($crate::harness::TestDb::sqlite().await).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn postgres() {
                        if let Some(db) = $crate::harness::TestDb::postgres().await {
                            super::super::$name(db).await;
                        }
                    }
                }
            )+
        }
    };
}
