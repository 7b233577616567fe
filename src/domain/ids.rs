//! Identifiers. Request ids are chosen by callers (a UUID, the idempotency
//! key); instruction ids are minted here (UUIDv7, so they sort by creation);
//! processor ids are operator-chosen slugs. These are the only values that
//! may appear in logs, spans and metrics.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Violations;

/// A request's id: a caller-chosen UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(Uuid);

impl RequestId {
    /// Parses the canonical hyphenated form (any UUID version, not nil).
    pub fn parse(s: &str) -> Result<Self, Violations> {
        parse_uuid(s).map(Self)
    }
    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

/// An instruction's id, minted by the orchestrator when the request is taken
/// in. Stable across every delivery, so processors de-duplicate on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstructionId(Uuid);

impl InstructionId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
    /// Parses the canonical hyphenated form.
    pub fn parse(s: &str) -> Result<Self, Violations> {
        parse_uuid(s).map(Self)
    }
    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for InstructionId {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, Violations> {
    if s.is_empty() {
        return Err(Violations::one("", "is required"));
    }
    // Only the canonical 36-character form, so that one id has one spelling
    // and the idempotency key cannot be dodged by changing case or braces.
    match Uuid::try_parse(s) {
        Ok(u) if s.len() == 36 && !u.is_nil() && s == u.hyphenated().to_string() => Ok(u),
        _ => Err(Violations::one(
            "",
            "must be a non-nil UUID in lower-case hyphenated form",
        )),
    }
}

/// A processor's id: 2 to 63 characters of `[a-z0-9-]`, starting with a
/// letter and not ending with `-` (safe in URLs, metric labels and Helm).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessorId(String);

impl ProcessorId {
    /// Checks the slug rules.
    pub fn parse(s: &str) -> Result<Self, Violations> {
        let ok = (2..=63).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if s.is_empty() {
            Err(Violations::one("", "is required"))
        } else if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Violations::one(
                "",
                "must be 2 to 63 characters of [a-z0-9-], start with a letter and not end with '-'",
            ))
        }
    }
    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProcessorId {
    type Error = Violations;
    fn try_from(s: String) -> Result<Self, Violations> {
        Self::parse(&s)
    }
}

impl From<ProcessorId> for String {
    fn from(p: ProcessorId) -> String {
        p.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Display for InstructionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Display for ProcessorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_one_spelling() {
        let id = "6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6";
        assert!(RequestId::parse(id).is_ok());
        assert!(RequestId::parse(&id.to_uppercase()).is_err());
        assert!(RequestId::parse(&id.replace('-', "")).is_err());
        assert!(RequestId::parse("00000000-0000-0000-0000-000000000000").is_err());
        assert!(RequestId::parse("").is_err());
    }

    #[test]
    fn processor_ids_are_slugs() {
        for ok in ["platform-vendor", "ab", "group-co-2"] {
            assert!(ProcessorId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Vendor",
            "1vendor",
            "vendor-",
            "ven dor",
            &"a".repeat(64),
        ] {
            assert!(ProcessorId::parse(bad).is_err(), "{bad}");
        }
    }
}
