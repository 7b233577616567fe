//! The figures of a run, printed as a table for people and, with `--json`,
//! as one JSON object on the last line of stdout for scripts. The JSON keys
//! are a contract: scripts compare runs by them, so keys are only ever
//! added, never renamed; a figure that does not apply to the scenario (or
//! could not be measured, like the memory of a `--target`) is `null`.

use serde::Serialize;

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// "intake", "fanout" or "backlog".
    pub scenario: &'static str,
    /// "sqlite", "postgres" or "unknown".
    pub backend: &'static str,
    /// Requests accepted in the measured phase.
    pub requests: u64,
    /// Processors per request.
    pub processors: u32,
    /// Concurrent clients or submitters.
    pub clients: u32,
    /// Length of the measured phase: intake's submitting time, or fanout's
    /// first submit to last record.
    pub duration_s: f64,
    /// intake: accepted requests per second.
    pub requests_per_sec: Option<f64>,
    /// fanout, backlog: requests x processors / time to the last record.
    pub instructions_per_sec: Option<f64>,
    /// intake: submit latency; fanout, backlog: submit to record.
    pub p50_ms: Option<f64>,
    /// As `p50_ms`.
    pub p90_ms: Option<f64>,
    /// As `p50_ms`.
    pub p99_ms: Option<f64>,
    /// Failed submit calls.
    pub errors: u64,
    /// First submit to the last completion record.
    pub time_to_last_record_s: Option<f64>,
    /// Deliveries the fakes saw beyond one per instruction (retries after
    /// simulated failures, redeliveries after expired leases).
    pub redeliveries: Option<i64>,
    /// Finished requests preloaded before the measured phase.
    pub preload: u64,
    /// backlog: requests waiting for outcomes through the measured phase.
    pub awaiting: u64,
    /// Peak resident memory of the spawned server (`VmHWM`), MiB.
    pub rss_mb: Option<f64>,
    /// Every accepted request got a record with a line per processor.
    pub records_complete: bool,
    /// The largest `VmRSS` seen by sampling every 250 ms, MiB.
    pub rss_sampled_mb: Option<f64>,
    /// backlog: preloaded requests per second (submit to last record).
    pub preload_requests_per_sec: Option<f64>,
    /// backlog: whether the preloaded PostgreSQL database was vacuumed
    /// before the measured phase.
    pub preload_vacuumed: bool,
    /// Server CPU during the measured phase, % of one core (all replicas
    /// together).
    pub server_cpu_pct: Option<f64>,
    /// The bench's own CPU during the measured phase, % of one core.
    pub bench_cpu_pct: Option<f64>,
    /// The whole machine's CPU during the measured phase (servers, bench,
    /// database, anything else), % of all its cores: idle CPU beside a
    /// slow run means waits in series, not a lack of cores.
    pub machine_cpu_pct: Option<f64>,
    /// The machine's cores.
    pub cores: Option<usize>,
    /// Orchestrator replicas sharing the work (spawned on one database).
    pub replicas: usize,
    /// `--server-setting`s the spawned server ran with (`DSR_NAME=value`).
    pub server_settings: Vec<String>,
    /// intake: accepted requests / first submit to the last record: what
    /// the whole pipeline (intake and fan-out) carried, where
    /// `requests_per_sec` counts only submissions, part of whose fan-out
    /// may be left for after the measured phase.
    pub finished_requests_per_sec: Option<f64>,
    /// fanout, backlog on a spawned PostgreSQL server: WAL bytes written
    /// per instruction from the first submit to the last record verified
    /// (the whole cluster's WAL).
    pub wal_bytes_per_instruction: Option<f64>,
    /// access-report: data records uploaded.
    pub records: Option<u64>,
    /// access-report: records uploaded per second (in chunks of 1,000).
    pub upload_records_per_sec: Option<f64>,
    /// access-report: specific pieces streamed per second in the report.
    pub report_records_per_sec: Option<f64>,
    /// access-report: how long the call that completed the instruction
    /// took (closing the request hashes its export into the record).
    pub close_ms: Option<f64>,
}

/// Three decimals are plenty and keep the JSON readable.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// Rounds every float to three decimals.
    pub fn rounded(mut self) -> Self {
        let r = |x: &mut Option<f64>| *x = x.map(round);
        self.duration_s = round(self.duration_s);
        for field in [
            &mut self.requests_per_sec,
            &mut self.instructions_per_sec,
            &mut self.p50_ms,
            &mut self.p90_ms,
            &mut self.p99_ms,
            &mut self.time_to_last_record_s,
            &mut self.rss_mb,
            &mut self.rss_sampled_mb,
            &mut self.preload_requests_per_sec,
            &mut self.server_cpu_pct,
            &mut self.bench_cpu_pct,
            &mut self.machine_cpu_pct,
            &mut self.finished_requests_per_sec,
            &mut self.wal_bytes_per_instruction,
            &mut self.upload_records_per_sec,
            &mut self.report_records_per_sec,
            &mut self.close_ms,
        ] {
            r(field);
        }
        self
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let num = |x: Option<f64>, unit: &str| match x {
            Some(x) => format!("{x:.1}{unit}"),
            None => "-".into(),
        };
        let latency = if self.scenario == "intake" {
            "submit latency"
        } else {
            "submit to record"
        };
        let rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.to_string()),
            ("backend", self.backend.to_string()),
            ("requests", self.requests.to_string()),
            ("processors", self.processors.to_string()),
            ("clients", self.clients.to_string()),
            ("replicas", self.replicas.to_string()),
            (
                "server settings",
                if self.server_settings.is_empty() {
                    "defaults".to_string()
                } else {
                    self.server_settings.join(" ")
                },
            ),
            ("preloaded", self.preload.to_string()),
            ("preload rate", num(self.preload_requests_per_sec, " req/s")),
            ("awaiting outcomes", self.awaiting.to_string()),
            (
                "preload vacuumed",
                if self.preload_vacuumed { "yes" } else { "no" }.to_string(),
            ),
            ("duration", format!("{:.2} s", self.duration_s)),
            ("requests/s", num(self.requests_per_sec, "")),
            ("finished req/s", num(self.finished_requests_per_sec, "")),
            ("instructions/s", num(self.instructions_per_sec, "")),
            (
                latency,
                format!(
                    "p50 {}  p90 {}  p99 {}",
                    num(self.p50_ms, " ms"),
                    num(self.p90_ms, " ms"),
                    num(self.p99_ms, " ms")
                ),
            ),
            ("errors", self.errors.to_string()),
            ("last record", num(self.time_to_last_record_s, " s")),
            (
                "redeliveries",
                self.redeliveries.map_or("-".into(), |n| n.to_string()),
            ),
            (
                "server RSS",
                format!(
                    "peak {}  (sampled max {})",
                    num(self.rss_mb, " MiB"),
                    num(self.rss_sampled_mb, " MiB")
                ),
            ),
            (
                "CPU",
                format!(
                    "server {}  bench {}  machine {} of {} cores",
                    num(self.server_cpu_pct, " %"),
                    num(self.bench_cpu_pct, " %"),
                    num(self.machine_cpu_pct, " %"),
                    self.cores.map_or("?".into(), |n| n.to_string())
                ),
            ),
            (
                "WAL/instruction",
                num(self.wal_bytes_per_instruction, " bytes"),
            ),
            (
                "data records",
                format!(
                    "{}  upload {}  close {}  report {}",
                    self.records.map_or("-".into(), |n| n.to_string()),
                    num(self.upload_records_per_sec, "/s"),
                    num(self.close_ms, " ms"),
                    num(self.report_records_per_sec, "/s")
                ),
            ),
            ("records complete", self.records_complete.to_string()),
        ];
        let mut out = String::new();
        for (key, value) in rows {
            out.push_str(&format!("{key:<18} {value}\n"));
        }
        out
    }

    /// The JSON line.
    pub fn json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_keys_are_stable() {
        let report = Report {
            scenario: "intake",
            backend: "sqlite",
            requests_per_sec: Some(1234.56789),
            ..Default::default()
        }
        .rounded();
        let json: serde_json::Value = serde_json::from_str(&report.json().unwrap()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for key in [
            "scenario",
            "backend",
            "requests",
            "processors",
            "clients",
            "duration_s",
            "requests_per_sec",
            "instructions_per_sec",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "errors",
            "time_to_last_record_s",
            "redeliveries",
            "preload",
            "awaiting",
            "rss_mb",
            "records_complete",
            "finished_requests_per_sec",
            "wal_bytes_per_instruction",
        ] {
            assert!(keys.contains(&key), "missing {key}");
        }
        assert_eq!(json["requests_per_sec"], 1234.568);
        assert!(json["instructions_per_sec"].is_null());
        assert!(report.table().contains("requests/s"));
    }
}
