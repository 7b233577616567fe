//! Test harness: databases, the application under test, fake processors,
//! and the registry of test cases the runner in `main.rs` turns into
//! tests, one per backend.

pub mod app;
pub mod db;
pub mod fake;
pub mod fixtures;
pub mod hook;
pub mod opendsr;
pub mod pg_server;
pub mod pki;

use std::future::Future;
use std::pin::Pin;

pub use app::{TEST_KEYS, TestApp, sha256_hex};
pub use db::TestDb;
pub use fake::{FakeProcessor, Reply};
pub use fixtures::*;
pub use hook::{FakeHook, HookReply};
pub use opendsr::FakeOpenDsr;

/// The database a case runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh database on the tests' PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The suffix of the test's name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A test body: `async fn name(db: TestDb)`, boxed.
/// (It need not be `Send`: it runs by `block_on`, as `#[tokio::test]` runs
/// its body.)
pub type Body = fn(TestDb) -> Pin<Box<dyn Future<Output = ()>>>;

/// One registered test body and the backends it runs on.
pub struct Case {
    /// The module it is written in (`api::requests`).
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// One test per backend.
    pub backends: &'static [Backend],
    /// The body.
    pub body: Body,
}

inventory::collect!(Case);

/// Registers `async fn name(db: TestDb)` bodies to run once per backend,
/// as `module::name::sqlite` and `module::name::postgres`. Without a
/// reachable PostgreSQL the second is reported as ignored.
#[macro_export]
macro_rules! backends {
    ($($name:ident),+ $(,)?) => {
        $(
            inventory::submit! {
                $crate::harness::Case {
                    module: module_path!(),
                    name: stringify!($name),
                    backends: &[$crate::harness::Backend::Sqlite, $crate::harness::Backend::Postgres],
                    body: |db| Box::pin($name(db)),
                }
            }
        )+
    };
}

/// Registers bodies that try something only SQLite has (its one write
/// lock), as `module::name::sqlite`.
#[macro_export]
macro_rules! sqlite_only {
    ($($name:ident),+ $(,)?) => {
        $(
            inventory::submit! {
                $crate::harness::Case {
                    module: module_path!(),
                    name: stringify!($name),
                    backends: &[$crate::harness::Backend::Sqlite],
                    body: |db| Box::pin($name(db)),
                }
            }
        )+
    };
}

/// Registers bodies that need PostgreSQL itself (several replicas on one
/// database, the server stopped and started), as `module::name::postgres`.
#[macro_export]
macro_rules! postgres_only {
    ($($name:ident),+ $(,)?) => {
        $(
            inventory::submit! {
                $crate::harness::Case {
                    module: module_path!(),
                    name: stringify!($name),
                    backends: &[$crate::harness::Backend::Postgres],
                    body: |db| Box::pin($name(db)),
                }
            }
        )+
    };
}
