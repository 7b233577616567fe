//! Tests of `audit`.

use super::*;

#[test]
fn a_hash_covers_every_part() {
    let base = event_hash(GENESIS, "r", 1, 10, "{}");
    assert_eq!(base.len(), 64);
    assert_ne!(base, event_hash(GENESIS, "r", 2, 10, "{}"));
    assert_ne!(base, event_hash(GENESIS, "r", 1, 11, "{}"));
    assert_ne!(base, event_hash(GENESIS, "s", 1, 10, "{}"));
    assert_ne!(base, event_hash(GENESIS, "r", 1, 10, "{ }"));
    assert_ne!(base, event_hash(&base, "r", 1, 10, "{}"));
}
