//! Settings refused at startup, before anything runs.

use clap::Parser;
use dsr_orchestrator::config::Config;

/// No slots would mean no deliveries, and a dispatcher passing at every
/// intake commit for nothing.
#[test]
fn a_max_in_flight_below_one_is_refused() {
    for bad in ["0", "many"] {
        let refused = Config::try_parse_from(["dsr-orchestrator", "--max-in-flight", bad]);
        let kind = refused.expect_err(bad).kind();
        assert_eq!(kind, clap::error::ErrorKind::ValueValidation, "{bad}");
    }
    let one = Config::try_parse_from(["dsr-orchestrator", "--max-in-flight", "1"]).unwrap();
    assert_eq!(one.max_in_flight, 1);
}

/// Values that would make the server panic once running, not refuse to
/// start: a pool of no connections, a timer of no period, and a period
/// so long that the readiness check's multiple of it overflows.
#[test]
fn values_a_running_server_could_not_use_are_refused() {
    for (flag, bad) in [
        ("--db-max-connections", "0"),
        ("--reload-interval", "0s"),
        ("--poll-interval", "0s"),
        ("--poll-interval", "100000000000000d"),
        ("--reload-interval", "2days"),
    ] {
        let refused = Config::try_parse_from(["dsr-orchestrator", flag, bad]);
        let kind = refused.expect_err(bad).kind();
        assert_eq!(
            kind,
            clap::error::ErrorKind::ValueValidation,
            "{flag} {bad}"
        );
    }
    let fine = Config::try_parse_from([
        "dsr-orchestrator",
        "--db-max-connections",
        "1",
        "--reload-interval",
        "1day",
        "--poll-interval",
        "50ms",
    ])
    .unwrap();
    assert_eq!(fine.db_max_connections, 1);
}
