//! The orchestrator as a child process: the `dsr-orchestrator` binary built
//! next to the bench, on a free loopback port, logging JSON lines. The
//! bench learns the port from the "serving gRPC" line on its stdout, then
//! keeps draining stdout (a full pipe would stall the server's logging and
//! with it the server) and keeps the last lines of stderr to explain a
//! failed start.
//!
//! The child is killed when this value is dropped, so no error path of the
//! bench leaves a server behind.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::sync::oneshot;

/// How long the server may take to migrate and bind.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of stderr kept for error messages.
const STDERR_LINES: usize = 20;

/// The settings [`Server::start`] gives the server itself, which a
/// `--server-setting` may not replace.
pub const BENCH_OWNED: [&str; 4] = [
    "DSR_LISTEN_ADDR",
    "DSR_ADMIN_LISTEN_ADDR",
    "DSR_DATABASE_URL",
    "DSR_LOG_FORMAT",
];

/// The spawned server's per-caller rate and burst, unless a
/// `--server-setting` says otherwise: far above what one machine submits.
const UNLIMITED_RATE: &str = "1000000000";

/// A running `dsr-orchestrator` child.
pub struct Server {
    child: Child,
    /// Its gRPC address.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts the orchestrator on `database_url` sealing with `keys`, with `settings` (`DSR_*`
    /// name and value) on top of the bench's own, and waits until it serves.
    pub async fn start(
        database_url: &str,
        keys: &str,
        settings: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let binary = binary()?;
        let mut command = Command::new(&binary);
        // Only the settings given here: a DSR_* variable of the caller's
        // shell (a processors file, a listen address) must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DSR_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .env("DSR_LISTEN_ADDR", "127.0.0.1:0")
            // The admin HTTP listener (metrics, health) too: runs side by
            // side, as the smoke tests do, must not fight over its port.
            .env("DSR_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
            .env("DSR_DATABASE_URL", database_url)
            .env("DSR_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,dsr_orchestrator=info")
            // The bench's clients are all one caller: the per-caller rate
            // limit would measure itself, not the pipeline. A
            // `--server-setting` puts one back.
            .env("DSR_RATE_LIMIT", UNLIMITED_RATE)
            .env("DSR_RATE_BURST", UNLIMITED_RATE)
            // Keys of the bench's own: its databases are thrown away.
            .env("DSR_KEYS", keys)
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let stderr_lines = Arc::new(Mutex::new(VecDeque::new()));
        keep_tail(stderr, stderr_lines.clone());
        let (addr_tx, addr_rx) = oneshot::channel();
        drain_stdout(stdout, addr_tx);

        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr: stderr_lines,
        };
        match tokio::time::timeout(START_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => {
                server.addr = addr;
                Ok(server)
            }
            Ok(Err(_)) => {
                // Stdout closed without the line: the server exited.
                let status = server.child.wait().ok();
                Err(anyhow!(
                    "dsr-orchestrator exited before serving ({}): {}",
                    status.map_or("unknown status".into(), |s| s.to_string()),
                    server.last_error()
                ))
            }
            Err(_) => bail!(
                "dsr-orchestrator did not start serving within {}s: {}",
                START_TIMEOUT.as_secs(),
                server.last_error()
            ),
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the server has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "dsr-orchestrator exited during the run ({status}): {}",
                self.last_error()
            ),
            Err(e) => Err(e).context("cannot check on dsr-orchestrator"),
        }
    }

    /// Stops the server (SIGKILL: the run is over, and a fresh database
    /// needs no graceful drain) and reaps it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last stderr line, or a pointer to where the logs would be.
    fn last_error(&self) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| "no message on stderr".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dsr-orchestrator` in the directory of the running bench.
fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the dsr-bench executable")?;
    let path = exe.with_file_name(format!("dsr-orchestrator{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} not found: build it with cargo build --release (or use --target ADDR)",
            path.display()
        );
    }
    Ok(path)
}

/// Reads stdout on a thread of its own: sends the address of the "serving
/// gRPC" line once, then discards the rest until the pipe closes.
fn drain_stdout(stdout: impl Read + Send + 'static, addr_tx: oneshot::Sender<SocketAddr>) {
    std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if addr_tx.is_some()
                && let Some(addr) = serving_addr(&line)
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
}

/// Keeps the last lines of stderr.
fn keep_tail(stderr: impl Read + Send + 'static, lines: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let mut lines = lines.lock().unwrap_or_else(|p| p.into_inner());
            if lines.len() == STDERR_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    });
}

/// The `addr` of a JSON log line whose message is "serving gRPC".
fn serving_addr(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let message = value
        .get("message")
        .or_else(|| value.get("fields")?.get("message"))?;
    if message.as_str()? != "serving gRPC" {
        return None;
    }
    let addr = value
        .get("addr")
        .or_else(|| value.get("fields")?.get("addr"))?;
    addr.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::serving_addr;

    #[test]
    fn finds_the_address_in_the_startup_line() {
        let line = r#"{"timestamp":"2026-11-28T16:02:11Z","level":"INFO","message":"serving gRPC","addr":"127.0.0.1:40123","backend":"sqlite","target":"dsr_orchestrator::startup"}"#;
        assert_eq!(serving_addr(line), Some("127.0.0.1:40123".parse().unwrap()));
        let nested = r#"{"fields":{"message":"serving gRPC","addr":"127.0.0.1:1"}}"#;
        assert_eq!(serving_addr(nested), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(serving_addr(r#"{"message":"dispatcher started"}"#), None);
        assert_eq!(serving_addr("not json"), None);
    }
}
