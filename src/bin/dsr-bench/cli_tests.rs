//! Tests of `cli`: defaults, ranges and the combinations refused.

use super::*;

fn parse(args: &[&str]) -> anyhow::Result<Settings> {
    let mut all = vec!["dsr-bench"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all)?.settings()
}

#[test]
fn each_scenario_has_its_defaults() {
    let intake = parse(&["intake"]).unwrap();
    assert_eq!((intake.clients, intake.processors), (64, 5));
    assert_eq!(intake.duration, Duration::from_secs(10));
    assert!(matches!(intake.target, TargetSpec::Spawn { .. }));
    let fanout = parse(&["fanout"]).unwrap();
    assert_eq!((fanout.requests, fanout.preload), (2000, 0));
    let backlog = parse(&["backlog"]).unwrap();
    assert_eq!((backlog.requests, backlog.preload), (2000, 20_000));
}

#[test]
fn spawn_and_target_exclude_each_other() {
    assert!(parse(&["fanout", "--spawn", "--target", "127.0.0.1:1"]).is_err());
    assert!(parse(&["fanout", "--target", "127.0.0.1:1", "--database-url", "x"]).is_err());
    let remote = parse(&["fanout", "--target", "127.0.0.1:50051"]).unwrap();
    assert!(matches!(
        remote.target,
        TargetSpec::Remote { backend: None, .. }
    ));
}

#[test]
fn server_settings_are_dsr_settings_the_bench_does_not_own() {
    let spawn = parse(&["fanout", "--server-setting", "DSR_MAX_IN_FLIGHT=1024"]).unwrap();
    let TargetSpec::Spawn { settings, .. } = spawn.target else {
        panic!("spawn mode");
    };
    assert_eq!(settings, [("DSR_MAX_IN_FLIGHT".into(), "1024".into())]);
    for bad in [
        "MAX_IN_FLIGHT=1",
        "DSR_MAX_IN_FLIGHT",
        "DSR_=1",
        "DSR_DATABASE_URL=x",
    ] {
        assert!(
            parse(&["fanout", "--server-setting", bad]).is_err(),
            "{bad}"
        );
    }
    let remote = [
        "fanout",
        "--target",
        "127.0.0.1:1",
        "--server-setting",
        "DSR_X=1",
    ];
    assert!(parse(&remote).is_err());
}

#[test]
fn replicas_share_a_postgresql_database() {
    let pg = "postgres://postgres@127.0.0.1:5432/postgres";
    let four = parse(&["fanout", "--replicas", "4", "--database-url", pg]).unwrap();
    assert!(matches!(four.target, TargetSpec::Spawn { replicas: 4, .. }));
    assert!(parse(&["fanout", "--replicas", "2"]).is_err(), "SQLite");
    assert!(parse(&["fanout", "--replicas", "0", "--database-url", pg]).is_err());
    assert!(parse(&["fanout", "--replicas", "2", "--target", "127.0.0.1:1"]).is_err());
}

#[test]
fn flags_of_other_scenarios_are_refused() {
    assert!(parse(&["intake", "--requests", "5"]).is_err());
    assert!(parse(&["fanout", "--preload", "5"]).is_err());
    assert!(parse(&["fanout", "--awaiting", "0"]).is_err());
    assert_eq!(parse(&["backlog", "--awaiting", "5"]).unwrap().awaiting, 5);
    assert!(parse(&["fanout", "--failure-rate", "1"]).is_err());
}
