//! How sure the business must be of who is asking before it acts (CCPA
//! regs 7062): to disclose categories, a *reasonable* degree of
//! certainty; to disclose specific pieces or to delete, a *reasonably
//! high* one. A request verified below its minimum is not fanned out: it
//! ends at once with a record saying it was denied for lack of
//! verification, so the person can be told why.
//!
//! The minimum is set per jurisdiction and need, defaults below, each
//! configurable in the compliance file:
//!
//! | need | default |
//! |---|---|
//! | access to categories | REASONABLE |
//! | access to specific pieces, portability | REASONABLY_HIGH |
//! | deletion, correction | REASONABLY_HIGH |
//! | objection, withdrawal of consent | NONE |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::violation::check_line;
use super::{Jurisdiction, RequestKind, VerificationLevel, Violations};

/// What an access request asks to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessScope {
    /// The categories of personal information (and sources, purposes,
    /// recipients), not the data itself.
    Categories,
    /// The specific pieces of personal information.
    SpecificPieces,
}

impl AccessScope {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Categories => "CATEGORIES",
            Self::SpecificPieces => "SPECIFIC_PIECES",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Categories, Self::SpecificPieces]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// What a request needs verified, as the policy is keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Need {
    /// A request of this kind (not an access request).
    Kind(RequestKind),
    /// An access request for this much.
    Access(AccessScope),
}

impl Need {
    /// The need of a request of `kind` (with `scope` for access).
    pub fn of(kind: RequestKind, scope: Option<AccessScope>) -> Self {
        match (kind, scope) {
            (RequestKind::Access, Some(s)) => Need::Access(s),
            (RequestKind::Access, None) => Need::Access(AccessScope::SpecificPieces),
            (kind, _) => Need::Kind(kind),
        }
    }

    /// Its name in the compliance file: the kind's, or `ACCESS_CATEGORIES`
    /// and `ACCESS_SPECIFIC_PIECES`.
    pub fn name(self) -> String {
        match self {
            Need::Kind(k) => k.as_str().to_string(),
            Need::Access(s) => format!("ACCESS_{}", s.as_str()),
        }
    }

    /// Every need.
    pub fn all() -> Vec<Need> {
        let mut all = vec![
            Need::Access(AccessScope::Categories),
            Need::Access(AccessScope::SpecificPieces),
        ];
        all.extend(
            RequestKind::ALL
                .iter()
                .filter(|k| **k != RequestKind::Access)
                .map(|k| Need::Kind(*k)),
        );
        all
    }
}

/// The minimum verification per jurisdiction and need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationPolicy {
    minimum: BTreeMap<(Jurisdiction, Need), VerificationLevel>,
}

/// The default minimum of `need`, in every jurisdiction.
fn default_minimum(need: Need) -> VerificationLevel {
    use VerificationLevel::*;
    match need {
        Need::Access(AccessScope::Categories) => Reasonable,
        Need::Access(AccessScope::SpecificPieces) => ReasonablyHigh,
        Need::Kind(RequestKind::Portability | RequestKind::Delete | RequestKind::Correct) => {
            ReasonablyHigh
        }
        Need::Kind(RequestKind::Object | RequestKind::WithdrawConsent) => None,
        Need::Kind(RequestKind::Access) => ReasonablyHigh,
    }
}

impl Default for VerificationPolicy {
    fn default() -> Self {
        let mut minimum = BTreeMap::new();
        for j in Jurisdiction::ALL {
            for need in Need::all() {
                minimum.insert((*j, need), default_minimum(need));
            }
        }
        Self { minimum }
    }
}

impl VerificationPolicy {
    /// With `level` the minimum for `need` under `jurisdiction`.
    pub fn with(
        mut self,
        jurisdiction: Jurisdiction,
        need: Need,
        level: VerificationLevel,
    ) -> Self {
        self.minimum.insert((jurisdiction, need), level);
        self
    }

    /// The minimum for `need` under `jurisdiction`.
    pub fn minimum(&self, jurisdiction: Jurisdiction, need: Need) -> VerificationLevel {
        self.minimum[&(jurisdiction, need)]
    }

    /// Whether `level` is enough for `need` under `jurisdiction`.
    pub fn suffices(
        &self,
        jurisdiction: Jurisdiction,
        need: Need,
        level: VerificationLevel,
    ) -> bool {
        level >= self.minimum(jurisdiction, need)
    }
}

/// Verification done by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Degree of certainty.
    pub level: VerificationLevel,
    /// How it was reached (no personal data), at most 512 characters.
    pub method: String,
}

impl Verification {
    /// Checks the method text.
    pub fn new(level: VerificationLevel, method: &str) -> Result<Self, Violations> {
        let mut v = Violations::new();
        v.take("method", check_line(method, 0, 512));
        v.finish(|| Self {
            level,
            method: method.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VerificationLevel as L;

    #[test]
    fn defaults_follow_7062() {
        let p = VerificationPolicy::default();
        let j = Jurisdiction::Ccpa;
        assert!(p.suffices(j, Need::Access(AccessScope::Categories), L::Reasonable));
        assert!(!p.suffices(j, Need::Access(AccessScope::SpecificPieces), L::Reasonable));
        assert!(!p.suffices(j, Need::Kind(RequestKind::Delete), L::Reasonable));
        assert!(p.suffices(j, Need::Kind(RequestKind::Delete), L::ReasonablyHigh));
        assert!(p.suffices(j, Need::Kind(RequestKind::Object), L::None));
        let strict = p.with(j, Need::Kind(RequestKind::Object), L::Reasonable);
        assert!(!strict.suffices(j, Need::Kind(RequestKind::Object), L::None));
    }
}
