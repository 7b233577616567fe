//! The settings this repository's `.cargo/config.toml` gives the bundled
//! SQLite, checked at startup: a build made elsewhere (outside this
//! directory, or with `LIBSQLITE3_FLAGS` set in the environment) lacks
//! them, serves, and is warned of (see "SQLite: one writer" in
//! `docs/design.md`).

use super::StoreError;

/// Each compile option the server wants: its name, the least value it
/// needs (`DEFAULT_MEMSTATUS` exactly 0), and what the server does
/// without it.
const FLAGS: &[(&str, u64, &str)] = &[
    (
        "DEFAULT_MEMSTATUS",
        0,
        "it keeps memory statistics, which serialise its connections' allocations \
         (about a tenth slower)",
    ),
    (
        "MAX_COMPOUND_SELECT",
        10_000,
        "it refuses compound SELECTs of more than 500 terms, so every claim fails \
         once more than 500 push processors have free slots",
    ),
];

/// Warns of each of [`FLAGS`] the SQLite behind `pool` was built without.
pub(super) async fn warn_of_missing_flags(pool: &sqlx::AnyPool) -> Result<(), StoreError> {
    for why in missing_flags(pool).await? {
        tracing::warn!(
            "this build's SQLite lacks a setting of the repository's .cargo/config.toml: \
             {why}; build from the repository's directory"
        );
    }
    Ok(())
}

/// What the SQLite behind `pool` does without each of [`FLAGS`] it was
/// compiled without.
pub(super) async fn missing_flags(pool: &sqlx::AnyPool) -> Result<Vec<&'static str>, StoreError> {
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(pool)
        .await?;
    Ok(missing(&options))
}

/// What a SQLite whose `PRAGMA compile_options` are `options` does without
/// each of [`FLAGS`] it lacks.
fn missing(options: &[String]) -> Vec<&'static str> {
    let value = |name: &str| {
        options.iter().find_map(|o| {
            let (n, v) = o.split_once('=')?;
            (n == name).then(|| v.parse::<u64>().ok()).flatten()
        })
    };
    FLAGS
        .iter()
        .filter(|(name, wanted, _)| match value(name) {
            Some(v) if *wanted == 0 => v != 0,
            Some(v) => v < *wanted,
            None => true,
        })
        .map(|(_, _, why)| *why)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::missing;

    fn options(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_flag_is_read_by_its_value() {
        let ours = options(&[
            "DEFAULT_MEMSTATUS=0",
            "MAX_COMPOUND_SELECT=10000",
            "THREADSAFE=1",
        ]);
        assert!(missing(&ours).is_empty());
        let higher = options(&["DEFAULT_MEMSTATUS=0", "MAX_COMPOUND_SELECT=50000"]);
        assert!(missing(&higher).is_empty());
        let stock = options(&["MAX_COMPOUND_SELECT=500"]);
        assert_eq!(missing(&stock).len(), 2);
        let counted = options(&["DEFAULT_MEMSTATUS=1", "MAX_COMPOUND_SELECT=10000"]);
        assert_eq!(missing(&counted).len(), 1);
    }
}
