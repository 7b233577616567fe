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

impl Memory {
    /// The larger of each figure (for the largest of several replicas).
    pub fn max(self, other: Memory) -> Memory {
        let larger = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Memory {
            peak_mb: larger(self.peak_mb, other.peak_mb),
            sampled_mb: larger(self.sampled_mb, other.sampled_mb),
        }
    }
}

/// The machine's CPU time so far, from the first line of `/proc/stat`:
/// (busy, all) in clock ticks, summed over every core. Waiting for I/O
/// counts as idle.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user and nice).
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((all - idle, all))
}

/// CPU used by the servers, by the bench and by the whole machine between
/// two points.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    server: Option<f64>,
    bench: Option<f64>,
    machine: Option<(u64, u64)>,
}

/// CPU use over a phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// The servers together, % of one core.
    pub server: Option<f64>,
    /// The bench, % of one core.
    pub bench: Option<f64>,
    /// The machine (servers, bench, database and anything else), % of all
    /// its cores.
    pub machine: Option<f64>,
}

impl CpuMark {
    /// Reads the counters now; the server's is the sum over `server_pids`
    /// (unknown when there are none).
    pub fn now(server_pids: &[&str]) -> Self {
        let server = match server_pids {
            [] => None,
            pids => pids.iter().map(|p| cpu_seconds(p)).sum(),
        };
        Self {
            server,
            bench: cpu_seconds("self"),
            machine: machine_ticks(),
        }
    }

    /// CPU used since `self` over `wall`.
    pub fn since(&self, later: &CpuMark, wall: Duration) -> CpuUse {
        let secs = wall.as_secs_f64().max(1e-9);
        let pct = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs * 100.0);
        let machine = match (self.machine, later.machine) {
            (Some((busy0, all0)), Some((busy1, all1))) if all1 > all0 => {
                Some((busy1 - busy0) as f64 / (all1 - all0) as f64 * 100.0)
            }
            _ => None,
        };
        CpuUse {
            server: pct(self.server, later.server),
            bench: pct(self.bench, later.bench),
            machine,
        }
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
        let (busy, all) = machine_ticks().unwrap();
        assert!(busy <= all && all > 0);
    }
}
