//! Settings refused at startup, before anything runs.

use std::time::Duration;

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
        ("--db-acquire-timeout", "0s"),
        ("--max-connections", "0"),
        ("--stalled-reader-timeout", "0s"),
        ("--stalled-reader-timeout", "2days"),
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
        "--max-connections",
        "1",
        "--stalled-reader-timeout",
        "500ms",
    ])
    .unwrap();
    assert_eq!(fine.db_max_connections, 1);
    assert_eq!(fine.max_connections, Some(1));
    assert_eq!(fine.limits().stalled_reader, Duration::from_millis(500));
    // Unset: the bound follows the descriptor limit, a report waits a minute.
    let default = Config::try_parse_from(["dsr-orchestrator"]).unwrap();
    assert_eq!(default.max_connections, None);
    assert_eq!(default.limits().stalled_reader, Duration::from_secs(60));
}

/// Asserts that `flag` `bad` parses but is refused by `Config::check`,
/// naming the flag and never the "secret" the value holds.
fn refused_without_the_value(flag: &str, bad: &str) {
    let config = Config::try_parse_from(["dsr-orchestrator", flag, bad]).unwrap();
    let refused = format!("{:#}", config.check().expect_err(bad));
    assert!(refused.starts_with(flag), "{refused}");
    assert!(!refused.contains("secret"), "{refused}");
}

/// The public URL is handed to every OpenDSR processor: a password in
/// it would be too. Its refusal names the setting, never the value.
#[test]
fn a_public_url_with_user_information_is_refused() {
    for bad in [
        "https://user:secret@dsr.example.com",
        "https://secret@dsr.example.com",
        "https://dsr.example.com/?a=secret",
        "ftp://secret.example.com",
    ] {
        refused_without_the_value("--public-url", bad);
    }
    let fine = Config::try_parse_from([
        "dsr-orchestrator",
        "--public-url",
        "https://dsr.example.com/",
    ])
    .unwrap();
    fine.check().unwrap();
}

/// A database the server cannot keep its state in is named before the
/// server starts anything, without the URL (it may hold a password).
#[test]
fn a_database_url_the_server_cannot_use_is_refused() {
    for bad in [
        "mysql://root:secret@localhost/dsr",
        "postgress://app:secret@db/dsr",
        "sqlite://",
        "sqlite::memory:",
        "sqlite://dsr.db?mode=memory",
        "dsr.db",
    ] {
        refused_without_the_value("--database-url", bad);
    }
    for fine in [
        "sqlite://dsr.db",
        "sqlite:dsr.db",
        "sqlite://dsr.db?mode=rwc",
        "postgres://postgres@127.0.0.1/dsr",
        "postgresql://postgres@127.0.0.1/dsr",
    ] {
        let config = Config::try_parse_from(["dsr-orchestrator", "--database-url", fine]).unwrap();
        config.check().expect(fine);
        assert_eq!(config.database_url, fine);
    }
}
