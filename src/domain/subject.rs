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
    /// characters or bidirectional overrides). Lookups (the suppression
    /// list's) take any such value: entries made from earlier submissions
    /// must stay reachable.
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

    /// For a new submission: whether the value has its type's shape
    /// ([`shape_rule`]), which lookups do not ask.
    pub fn check_shape(&self) -> Result<(), Violations> {
        match shape_rule(self.kind, self.value.trim()) {
            Some(rule) => Err(Violations::one("value", rule)),
            None => Ok(()),
        }
    }
}

/// The rule `value` (trimmed, not empty) breaks for its type, if any,
/// kept loose enough for what people write: an email address has a name
/// and a domain around its `@` and no white space; a telephone number
/// has a digit (in any script; letters, extensions and punctuation are
/// its own); an IP address parses as IPv4 or IPv6, in brackets or with a
/// zone (`fe80::1%eth0`) too. A value that breaks them is a mistake of
/// the caller's (another field's value, a swapped type), which would
/// reach processors that look it up as that type. The other types are
/// free text.
fn shape_rule(kind: IdentityType, value: &str) -> Option<&'static str> {
    match kind {
        IdentityType::Email => {
            let shaped = value
                .rsplit_once('@')
                .is_some_and(|(name, domain)| !name.is_empty() && !domain.is_empty())
                && !value.contains(char::is_whitespace);
            (!shaped).then_some("must be an email address (name@domain)")
        }
        IdentityType::Phone => (!value.chars().any(char::is_numeric))
            .then_some("must be a telephone number (it has no digit)"),
        IdentityType::IpAddress => {
            let bare = value.trim_start_matches('[').trim_end_matches(']');
            let bare = bare
                .split_once('%')
                .map_or(bare, |(address, _zone)| address);
            bare.parse::<std::net::IpAddr>()
                .is_err()
                .then_some("must be an IPv4 or IPv6 address")
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_values_keep_their_shape() {
        let taken = [
            (IdentityType::Email, "Alice@Example.com"),
            (IdentityType::Email, " alice@example.com "),
            (IdentityType::Email, "用户@例子.广告"),
            (IdentityType::Phone, "+1 (415) 555-0199"),
            (IdentityType::Phone, "+1 555 0100 ext. 9"),
            (IdentityType::Phone, "０３－１２３４－５６７８"),
            (IdentityType::Phone, "1-800-FLOWERS"),
            (IdentityType::IpAddress, "192.0.2.7"),
            (IdentityType::IpAddress, "2001:DB8::1"),
            (IdentityType::IpAddress, "[2001:db8::1]"),
            (IdentityType::IpAddress, "fe80::1%eth0"),
            (IdentityType::Name, "Alice Example"),
            (IdentityType::AccountId, "A-1"),
        ];
        let submitted = |kind, value| {
            let identity = SubjectIdentity::new(kind, value)?;
            identity.check_shape().map(|()| identity)
        };
        for (kind, value) in taken {
            assert!(submitted(kind, value).is_ok(), "{kind} {value}");
        }
        let refused = [
            (IdentityType::Email, "alice.example.com"),
            (IdentityType::Email, "@example.com"),
            (IdentityType::Email, "alice@"),
            (IdentityType::Email, "alice @example.com"),
            (IdentityType::Phone, "Xylophone.Qwertz@Piitest.example"),
            (IdentityType::IpAddress, "Xylophone.Qwertz@Piitest.example"),
            (IdentityType::IpAddress, "192.0.2.256"),
        ];
        for (kind, value) in refused {
            let v = submitted(kind, value).expect_err(value);
            let fields: Vec<&str> = v.iter().map(|x| x.field.as_str()).collect();
            assert_eq!(fields, ["value"], "{kind} {value}");
            // A lookup takes it: an entry made before may hold it.
            assert!(SubjectIdentity::new(kind, value).is_ok(), "{kind} {value}");
        }
    }
}
