//! Putting the processors file in force at startup: every entry checked,
//! then every entry stored.

use std::path::Path;

use anyhow::Context;

use super::load;
use crate::dispatch::destination;
use crate::dispatch::lookup::Lookup;
use crate::domain::{Actor, Timestamp};
use crate::store::Store;

/// Reads and checks the processors file at `path`, checks where each
/// entry's deliveries may go (through `lookup`), and only then upserts
/// every entry (as the system, at `now`) in one statement: a file refused,
/// or a failure to store it, stores none of its entries, not those before
/// the one at fault. Returns how many.
pub async fn apply(
    path: &Path,
    store: &Store,
    lookup: &Lookup,
    now: Timestamp,
) -> anyhow::Result<usize> {
    // The loader's errors already name the file and the line.
    let specs = load(path)?;
    for spec in &specs {
        destination::check(&spec.adapter, lookup)
            .await
            .map_err(|v| {
                anyhow::anyhow!(
                    "processors file {}: processor {}: {v}",
                    path.display(),
                    spec.id
                )
            })?;
    }
    store
        .upsert_processors(&specs, &Actor::System, now)
        .await
        .with_context(|| format!("cannot store the processors of {}", path.display()))?;
    Ok(specs.len())
}
