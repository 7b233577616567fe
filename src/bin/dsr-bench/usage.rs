//! Resource use of a process, read from Linux's `/proc`: resident memory
//! (the "peak server RSS" is the kernel's own high-water mark,
//! `VmHWM`, backed up by sampling `VmRSS` every 250 ms) and CPU time (to
//! tell whether the server, the database or the bench itself was the busy
//! one). Elsewhere than Linux these read as unknown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

/// Clock ticks per second of `/proc/<pid>/stat` times. `USER_HZ` is 100 on
/// every Linux architecture the bench runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// How often the sampler reads `VmRSS`.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A `Vm*` field of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its
    // closing parenthesis are plain. utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Samples a process's `VmRSS` in the background and keeps the largest.
pub struct RssSampler {
    pid: String,
    max_kib: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let pid = pid.to_string();
        let max_kib = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let pid = pid.clone();
            let max_kib = max_kib.clone();
            async move {
                let mut every = tokio::time::interval(SAMPLE_EVERY);
                loop {
                    every.tick().await;
                    match status_kib(&pid, "VmRSS") {
                        Some(kib) => {
                            max_kib.fetch_max(kib, Ordering::Relaxed);
                        }
                        // The process is gone.
                        None => return,
                    }
                }
            }
        });
        Self { pid, max_kib, task }
    }

    /// The process id, as `/proc` names it.
    pub fn pid(&self) -> &str {
        &self.pid
    }

    /// Stops sampling; returns (peak `VmHWM`, largest sampled `VmRSS`) in
    /// MiB. Call before the process exits.
    pub fn finish(self) -> Memory {
        self.task.abort();
        let sampled = self.max_kib.load(Ordering::Relaxed);
        let sampled = status_kib(&self.pid, "VmRSS").map_or(sampled, |now| now.max(sampled));
        let peak = status_kib(&self.pid, "VmHWM");
        Memory {
            peak_mb: peak.map(|kib| kib.max(sampled) as f64 / 1024.0),
            sampled_mb: (sampled > 0).then(|| sampled as f64 / 1024.0),
        }
    }
}

/// A process's memory, in MiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// The kernel's high-water mark of resident memory (`VmHWM`).
    pub peak_mb: Option<f64>,
    /// The largest `VmRSS` seen by sampling.
    pub sampled_mb: Option<f64>,
}

/// CPU used by the server and by the bench between two points.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    server: Option<f64>,
    bench: Option<f64>,
}

impl CpuMark {
    /// Reads both counters now.
    pub fn now(server_pid: Option<&str>) -> Self {
        Self {
            server: server_pid.and_then(cpu_seconds),
            bench: cpu_seconds("self"),
        }
    }

    /// CPU used since `self` as a percentage of one core over `wall`:
    /// (server, bench).
    pub fn percent_since(&self, later: &CpuMark, wall: Duration) -> (Option<f64>, Option<f64>) {
        let secs = wall.as_secs_f64().max(1e-9);
        let pct = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs * 100.0);
        (pct(self.server, later.server), pct(self.bench, later.bench))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        assert!(status_kib("self", "VmRSS").is_some_and(|kib| kib > 0));
        assert!(status_kib("self", "VmHWM").is_some());
        assert!(cpu_seconds("self").is_some());
    }
}
