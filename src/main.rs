//! The `dsr-orchestrator` server: reads its configuration, sets up logging
//! and runs the [`Application`] until SIGINT or SIGTERM.

use clap::Parser;
use dsr_orchestrator::config::Config;
use dsr_orchestrator::startup::{Application, Options};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: under load the server
/// allocates and frees many small buffers per row and per message, and
/// glibc's malloc spent a quarter of the server's CPU doing so (`perf`,
/// fanout benchmark).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let config = Config::parse();
    let telemetry = match dsr_orchestrator::telemetry::init(config.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dsr-orchestrator: {e:#}");
            std::process::exit(1);
        }
    };
    let result = async {
        let app = Application::build(&config, Options::default()).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        app.run_until_stopped(shutdown).await
    }
    .await;
    telemetry.shutdown();
    if let Err(e) = result {
        // One readable line: the context chain, outermost first.
        eprintln!("dsr-orchestrator: {e:#}");
        std::process::exit(1);
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
