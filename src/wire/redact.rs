//! Redacting `Debug` for the generated messages that carry personal data.
//!
//! `build.rs` tells prost not to derive `Debug` for `SubjectIdentity` and
//! `DataRecord`, so a stray `{:?}` on a request, an instruction or a tonic
//! error cannot print an email address or an access-request answer into the
//! logs. The impls here print what kind of value a message holds and replace
//! the value itself with `<redacted>`; every message that contains these two
//! (requests, instructions, results) keeps its derived `Debug` and inherits
//! the redaction.

use std::fmt;

use crate::pb;

/// Stands in for a personal value in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The name of an `IdentityType` wire value, or the bare number when the
/// sender used one this build does not know.
struct IdentityTypeName(i32);

impl fmt::Debug for IdentityTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match pb::IdentityType::try_from(self.0) {
            Ok(t) => f.write_str(t.as_str_name()),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for pb::SubjectIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectIdentity")
            .field("type", &IdentityTypeName(self.r#type))
            .field("value", &Redacted)
            .finish()
    }
}

impl fmt::Debug for pb::DataRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `category` and `source` are categories ("identifiers", "web
        // analytics"), not information about the person.
        f.debug_struct("DataRecord")
            .field("category", &self.category)
            .field("value", &Redacted)
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_show_their_type_only() {
        let identity = pb::SubjectIdentity {
            r#type: pb::IdentityType::Email as i32,
            value: "jane@example.com".into(),
        };
        let shown = format!("{identity:?}");
        assert_eq!(
            shown,
            "SubjectIdentity { type: IDENTITY_TYPE_EMAIL, value: <redacted> }"
        );

        let unknown = pb::SubjectIdentity {
            r#type: 99,
            value: "x".into(),
        };
        assert_eq!(
            format!("{unknown:?}"),
            "SubjectIdentity { type: 99, value: <redacted> }"
        );
    }

    #[test]
    fn data_records_hide_their_value_even_nested() {
        let result = pb::InstructionResult {
            outcome: pb::Outcome::Completed as i32,
            records: vec![pb::DataRecord {
                category: "identifiers".into(),
                value: "jane@example.com".into(),
                source: "signup form".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let shown = format!("{result:?}");
        assert!(!shown.contains("jane@example.com"), "{shown}");
        assert!(shown.contains(r#"category: "identifiers""#), "{shown}");
        assert!(shown.contains("value: <redacted>"), "{shown}");
    }
}
