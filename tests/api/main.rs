//! Integration tests: the real gRPC server on a free port, a real database
//! per test, and real in-process processor servers, driven through the
//! generated clients. Modules are named by capability.
//!
//! Each module registers its test bodies with `backends!` (once per
//! backend) or `postgres_only!`; this runner turns them into tests, each on
//! a multi-threaded runtime of its own. When the tests' PostgreSQL server
//! cannot be reached, the PostgreSQL tests are reported as ignored (with a
//! note saying why), unless `DSR_REQUIRE_POSTGRES=1` makes that a failure.
//! Logs are written only when `RUST_LOG` asks for them.

mod harness;

mod access_report;
mod adaptive_limits;
mod breakers;
mod cancel_notices;
mod claim_steps;
mod compliance;
mod crash;
mod delivery;
mod echoes;
mod federation;
mod intake;
mod limits;
mod lock_order;
mod metrics_families;
mod observability;
mod opendsr;
mod outages;
mod processors;
mod protection;
mod pull;
mod reflection;
mod replicas;
mod requests;
mod scale;
mod security;
mod shared_limits;
mod store;
mod validation;
mod webhooks;
mod wire;
mod writers;

use dsr_orchestrator::store::ScratchDatabase;
use dsr_orchestrator::store::scratch::test_server_url;
use harness::{Backend, Case, TestDb};
use libtest_mimic::{Arguments, Trial};

fn main() {
    let args = Arguments::from_args();
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let postgres = runtime().block_on(ScratchDatabase::test_server_reachable());
    if !postgres {
        eprintln!(
            "NOTE: PostgreSQL at {} is unreachable: the PostgreSQL tests are ignored \
             (start it, or point DSR_TEST_POSTGRES_URL at one; DSR_REQUIRE_POSTGRES=1 \
             makes this a failure)",
            test_server_url()
        );
    }
    let mut trials: Vec<Trial> = inventory::iter::<Case>
        .into_iter()
        .flat_map(|case| {
            case.backends
                .iter()
                .map(move |&backend| trial(case, backend, postgres))
        })
        .collect();
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    libtest_mimic::run(&args, trials).exit();
}

/// The test of `case` on `backend`: `module::name::backend`.
fn trial(case: &'static Case, backend: Backend, postgres: bool) -> Trial {
    let module = case.module.split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::{}::{}", case.name, backend.name());
    Trial::test(name, move || {
        runtime().block_on(async {
            let db = match backend {
                Backend::Sqlite => TestDb::sqlite().await,
                Backend::Postgres => TestDb::postgres().await,
            };
            (case.body)(db).await;
        });
        Ok(())
    })
    .with_ignored_flag(backend == Backend::Postgres && !postgres)
}

/// What `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]`
/// gives a test.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}
