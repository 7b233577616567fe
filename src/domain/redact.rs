//! Keeping the identities we sent out of what comes back. Processors often
//! repeat the identity they were given in their messages ("no account for
//! alice@example.com"); such a text would otherwise be stored with the
//! instruction and shown by `GetRequest`, `WatchRequest` and the listings,
//! whose contract says they hold no personal data we sent. So every text a
//! processor returns (delivery errors, a result's explanation and reason,
//! its sub-processors' names) has those values replaced before it is
//! stored or logged.
//!
//! Values are matched as they were sent, without the white space around
//! them, and in their normal form (see [`super::normal_form`]: a phone
//! number as E.164 digits, a name with its inner white space collapsed),
//! ignoring ASCII case (a processor that lower-cases an email address
//! still echoes it). Other spellings of the same identifier (a phone
//! number with its digits grouped differently) are not recognised. Single
//! characters are left alone: they identify no one, and replacing every
//! `7` would destroy the message; for the same reason a trimmed or normal
//! form shorter than [`MIN_OTHER_FORM`] is not looked for (`1-2` as `12`).
//!
//! The same texts lose the characters no stored text may hold (control
//! characters but line breaks and tabs, bidirectional overrides; see
//! [`super::hidden`]): each becomes U+FFFD. A processor's result is
//! refused for them instead; its error messages are what it said, and are
//! kept.

use super::{SubjectIdentity, hidden_in_text, normal_form};

/// The fewest characters a trimmed or normal form of a value must have to
/// be looked for.
pub const MIN_OTHER_FORM: usize = 5;

/// What an echoed identity value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// `text` with every occurrence of an identity's value replaced by
/// [`REDACTED`], ignoring ASCII case, and hidden characters by U+FFFD.
pub fn redact_identities(text: &str, identities: &[SubjectIdentity]) -> String {
    let mut values: Vec<String> = Vec::new();
    for identity in identities {
        let sent = identity.value.to_ascii_lowercase();
        let others = [identity.value.trim().to_string(), normal_form(identity)];
        for other in others.map(|v| v.to_ascii_lowercase()) {
            if other != sent && other.chars().count() >= MIN_OTHER_FORM {
                values.push(other);
            }
        }
        if sent.chars().count() > 1 {
            values.push(sent);
        }
    }
    // Longest first, so a value that contains another goes whole.
    values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    values.dedup();
    let mut out = text.to_string();
    for value in &values {
        // ASCII lower-casing keeps every byte offset, so positions found
        // in the folded copy hold in the original.
        let folded = out.to_ascii_lowercase();
        if !folded.contains(value.as_str()) {
            continue;
        }
        let mut redacted = String::with_capacity(out.len());
        let mut last = 0;
        for (at, _) in folded.match_indices(value.as_str()) {
            redacted.push_str(&out[last..at]);
            redacted.push_str(REDACTED);
            last = at + value.len();
        }
        redacted.push_str(&out[last..]);
        out = redacted;
    }
    if out.chars().any(hidden_in_text) {
        out = out
            .chars()
            .map(|c| if hidden_in_text(c) { '\u{fffd}' } else { c })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdentityType;

    fn identity(kind: IdentityType, value: &str) -> SubjectIdentity {
        SubjectIdentity::new(kind, value).unwrap()
    }

    #[test]
    fn echoed_values_are_replaced_in_any_ascii_case() {
        let sent = [
            identity(IdentityType::Email, "Alice@Example.com"),
            identity(IdentityType::AccountId, "acct-42"),
        ];
        assert_eq!(
            redact_identities("no account for alice@example.com (ACCT-42, acct-42)", &sent),
            "no account for [redacted] ([redacted], [redacted])"
        );
        assert_eq!(redact_identities("timeout", &sent), "timeout");
    }

    #[test]
    fn longer_values_go_whole_and_single_characters_stay() {
        let sent = [
            identity(IdentityType::AccountId, "42"),
            identity(IdentityType::AccountId, "4242"),
            identity(IdentityType::Other, "7"),
        ];
        assert_eq!(
            redact_identities("id 4242 and 42, 7 retries", &sent),
            "id [redacted] and [redacted], 7 retries"
        );
    }

    #[test]
    fn values_sent_with_white_space_and_other_forms_are_replaced_too() {
        let sent = [
            identity(IdentityType::Email, "  Dave@Example.com "),
            identity(IdentityType::Phone, "+1 (555) 0199-7777"),
            identity(IdentityType::Name, " Dave   Smith"),
        ];
        assert_eq!(
            redact_identities(
                "no account for dave@example.com, +155501997777 or dave smith",
                &sent
            ),
            "no account for [redacted], [redacted] or [redacted]"
        );
        assert_eq!(
            redact_identities("echo:  Dave@Example.com |", &sent),
            "echo:[redacted]|"
        );
    }

    #[test]
    fn short_other_forms_are_not_looked_for() {
        let sent = [identity(IdentityType::Phone, "1-2")];
        assert_eq!(
            redact_identities("error 12 for 1-2", &sent),
            "error 12 for [redacted]"
        );
    }

    #[test]
    fn hidden_characters_become_replacement_characters() {
        assert_eq!(
            redact_identities("bad\u{1b}[2J \u{202e}gnp.exe\nline\ttab\u{0}", &[]),
            "bad\u{fffd}[2J \u{fffd}gnp.exe\nline\ttab\u{fffd}"
        );
    }

    #[test]
    fn text_around_non_ascii_values_survives() {
        let sent = [identity(IdentityType::Name, "Jürgen Müller")];
        assert_eq!(
            redact_identities("kein Konto für Jürgen Müller gefunden", &sent),
            "kein Konto für [redacted] gefunden"
        );
    }
}
