//! Who did something: the principal of every change (a submission, a
//! cancellation, an operator's retry or resolution, a change to the
//! processor registry), kept with the change and shown in the request's
//! history. Principals are the authenticated callers' names (a service,
//! or a person's account for operators); processors act by their callback
//! tokens; the orchestrator itself acts as `system`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ProcessorId, Violations};

/// The author of a change.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Actor {
    /// An authenticated caller, by its principal name.
    Principal(PrincipalName),
    /// A processor, by its callback token.
    Processor(ProcessorId),
    /// The orchestrator itself (deliveries, escalations, expiries).
    System,
    /// A caller of a server that authenticates no one (loopback
    /// development, or `--insecure-no-auth`).
    Anonymous,
}

/// A principal's name, as the authentication configuration gives it
/// (`privacy-portal`, `alice@corp.example`, `spiffe://corp/ns/dsr/sa/portal`):
/// 1 to 256 printable characters without spaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrincipalName(String);

impl PrincipalName {
    /// Checks the name.
    pub fn parse(s: &str) -> Result<Self, Violations> {
        let ok = (1..=256).contains(&s.chars().count())
            && s.chars()
                .all(|c| c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()))
            && !s.starts_with("processor:")
            && !matches!(s, "system" | "anonymous");
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(Violations::one(
                "",
                "must be 1 to 256 printable characters without spaces, and not `system`, \
                 `anonymous` or `processor:...`",
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PrincipalName {
    type Error = Violations;
    fn try_from(s: String) -> Result<Self, Violations> {
        Self::parse(&s)
    }
}

impl From<PrincipalName> for String {
    fn from(p: PrincipalName) -> String {
        p.0
    }
}

impl fmt::Display for PrincipalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Principal(p) => p.fmt(f),
            Actor::Processor(p) => write!(f, "processor:{p}"),
            Actor::System => f.write_str("system"),
            Actor::Anonymous => f.write_str("anonymous"),
        }
    }
}

impl Actor {
    /// Parses the form [`Display`](fmt::Display) writes.
    pub fn parse(s: &str) -> Result<Self, Violations> {
        match s {
            "system" => Ok(Actor::System),
            "anonymous" => Ok(Actor::Anonymous),
            _ => match s.strip_prefix("processor:") {
                Some(p) => ProcessorId::parse(p).map(Actor::Processor),
                None => PrincipalName::parse(s).map(Actor::Principal),
            },
        }
    }
}

impl TryFrom<String> for Actor {
    type Error = Violations;
    fn try_from(s: String) -> Result<Self, Violations> {
        Self::parse(&s)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_round_trip_through_their_names() {
        for name in [
            "privacy-portal",
            "processor:vendor-a",
            "system",
            "anonymous",
            "alice@corp.example",
        ] {
            assert_eq!(Actor::parse(name).unwrap().to_string(), name);
        }
        assert!(Actor::parse("processor:Bad!").is_err());
        assert!(PrincipalName::parse("has space").is_err());
        assert!(PrincipalName::parse("").is_err());
        assert!(PrincipalName::parse("system").is_err());
    }
}
