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
