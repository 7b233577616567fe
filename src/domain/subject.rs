//! Who a request is about: the subject's identifiers, each checked, and no
//! two alike once normalised. Identities are personal data:
//! [`SubjectIdentity`] has a redacting `Debug`, and nothing here is ever
//! logged whole.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::violation::check_len;
use super::{IdentityType, Violations};

/// Most identities one request may carry.
pub const MAX_IDENTITIES: usize = 20;
/// One identifier of the subject.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectIdentity {
    /// What the value is.
    #[serde(rename = "type")]
    pub kind: IdentityType,
    /// The identifier (personal data).
    pub value: String,
}

impl SubjectIdentity {
    /// Checks the value's length (1 to 1024 characters, no control
    /// characters or bidirectional overrides).
    pub fn new(kind: IdentityType, value: &str) -> Result<Self, Violations> {
        let mut v = Violations::new();
        v.take("value", check_len(value, 1, 1024));
        if value.chars().any(super::violation::hidden) {
            v.add("value", super::violation::HIDDEN_RULE);
        }
        if value.trim().is_empty() && !value.is_empty() {
            v.add("value", "must not be blank");
        }
        v.finish(|| Self {
            kind,
            value: value.to_string(),
        })
    }
}

impl fmt::Debug for SubjectIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectIdentity({}, <redacted>)", self.kind)
    }
}

/// The subject's identities: 1 to [`MAX_IDENTITIES`], no two of one type
/// with one normal form (see [`super::normal_form`]): `a@b.com` and
/// ` A@B.com` are one identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Subject(Vec<SubjectIdentity>);

impl Subject {
    /// Checks count and duplicates.
    pub fn new(identities: Vec<SubjectIdentity>) -> Result<Self, Violations> {
        if identities.is_empty() {
            return Err(Violations::one("", "at least one identity is required"));
        }
        if identities.len() > MAX_IDENTITIES {
            return Err(Violations::one(
                "",
                format!("at most {MAX_IDENTITIES} identities"),
            ));
        }
        let forms: Vec<_> = identities
            .iter()
            .map(|i| (i.kind, super::normal_form(i)))
            .collect();
        for (i, form) in forms.iter().enumerate() {
            if forms[..i].contains(form) {
                return Err(Violations::one(
                    format!("[{i}]"),
                    "duplicate identity (the same identifier as one before it, once written alike)",
                ));
            }
        }
        Ok(Self(identities))
    }

    /// The identities.
    pub fn identities(&self) -> &[SubjectIdentity] {
        &self.0
    }

    /// The distinct identity types, sorted.
    pub fn types(&self) -> Vec<IdentityType> {
        let mut t: Vec<_> = self.0.iter().map(|i| i.kind).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Only the identities whose type is in `accepted` (data minimisation).
    pub fn restricted_to(&self, accepted: &[IdentityType]) -> Vec<SubjectIdentity> {
        self.0
            .iter()
            .filter(|i| accepted.contains(&i.kind))
            .cloned()
            .collect()
    }
}
