//! Smoke test of the `dsr-bench` binary: each scenario at a tiny size, on a
//! spawned orchestrator (the debug `dsr-orchestrator` cargo builds next to
//! the bench for integration tests), on SQLite and, when reachable, on
//! PostgreSQL (reported as ignored when the tests' server is unreachable,
//! unless `DSR_REQUIRE_POSTGRES=1`). It checks only that a run completes
//! and that every request got its record: speed is the benchmark's
//! business, never a test's.

use std::process::Command;

use dsr_orchestrator::store::ScratchDatabase;
use dsr_orchestrator::store::scratch::test_server_url as postgres_url;
use libtest_mimic::{Arguments, Trial};

/// Runs the bench with `--spawn --json` plus `args`; returns the JSON line.
fn bench(args: &[String]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_dsr-bench"))
        .args(["--spawn", "--json", "--timeout", "120"])
        .args(args)
        .output()
        .expect("run dsr-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dsr-bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {last:?}\n{stderr}"))
}

/// Runs `scenario` with `args` and checks the report.
fn run(scenario: &str, args: &[impl AsRef<str>]) {
    let mut all = vec![scenario.to_string()];
    all.extend(args.iter().map(|a| a.as_ref().to_string()));
    let report = bench(&all);
    assert_eq!(report["scenario"], scenario, "{report}");
    assert_eq!(report["records_complete"], true, "{report}");
    if scenario == "access-report" {
        assert_eq!(report["records"], 2500, "{report}");
        assert!(
            report["report_records_per_sec"].as_f64().is_some(),
            "{report}"
        );
        assert!(report["close_ms"].as_f64().is_some(), "{report}");
        return;
    }
    if scenario == "backlog" {
        assert_eq!(report["awaiting"], 5, "{report}");
    }
    if scenario == "intake" {
        let rate = report["requests_per_sec"].as_f64().unwrap_or_default();
        assert!(rate > 0.0, "{report}");
        let finished = report["finished_requests_per_sec"]
            .as_f64()
            .unwrap_or_default();
        assert!(finished > 0.0, "{report}");
    } else {
        // The write-ahead log figure exists exactly where it can be read.
        let wal = &report["wal_bytes_per_instruction"];
        if report["backend"] == "postgres" {
            assert!(wal.as_f64().is_some_and(|b| b > 0.0), "{report}");
        } else {
            assert!(wal.is_null(), "{report}");
        }
    }
}

const INTAKE: &[&str] = &["--duration", "1", "--clients", "4"];
const FANOUT: &[&str] = &["--requests", "20", "--processors", "3"];
const BACKLOG: &[&str] = &["--preload", "20", "--awaiting", "5", "--requests", "10"];
const ACCESS_REPORT: &[&str] = &["--requests", "2500"];

fn on_postgres(args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--database-url".to_string(), postgres_url()]);
    all
}

fn main() {
    let args = Arguments::from_args();
    let reachable = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(ScratchDatabase::test_server_reachable());
    if !reachable {
        eprintln!(
            "NOTE: PostgreSQL at {} is unreachable: the PostgreSQL bench smoke tests are \
             ignored (DSR_REQUIRE_POSTGRES=1 makes this a failure)",
            postgres_url()
        );
    }
    let mut trials = Vec::new();
    for (scenario, args) in [
        ("intake", INTAKE),
        ("fanout", FANOUT),
        ("backlog", BACKLOG),
        ("access-report", ACCESS_REPORT),
    ] {
        trials.push(Trial::test(format!("{scenario}_sqlite"), move || {
            run(scenario, args);
            Ok(())
        }));
        trials.push(
            Trial::test(format!("{scenario}_postgres"), move || {
                run(scenario, &on_postgres(args));
                Ok(())
            })
            .with_ignored_flag(!reachable),
        );
    }
    // Three replicas on one database share the work: every request still
    // gets exactly its record, and the report says how many served.
    trials.push(
        Trial::test("fanout_postgres_three_replicas", move || {
            let mut all = vec!["fanout".to_string(), "--replicas".into(), "3".into()];
            all.extend(on_postgres(FANOUT));
            let report = bench(&all);
            assert_eq!(report["records_complete"], true, "{report}");
            assert_eq!(report["replicas"], 3, "{report}");
            assert!(report["server_cpu_pct"].as_f64().is_some(), "{report}");
            assert!(report["machine_cpu_pct"].as_f64().is_some(), "{report}");
            Ok(())
        })
        .with_ignored_flag(!reachable),
    );
    libtest_mimic::run(&args, trials).exit();
}
