//! Validation failures, collected rather than returned one at a time, so a
//! caller fixing a request sees every problem at once. The API layer turns
//! them into `google.rpc.BadRequest` field violations.

use std::fmt;

/// One invalid field: its path in the request (e.g.
/// `subject_identities[1].value`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the field, as named in the protobuf contract.
    pub field: String,
    /// Human-readable reason; never contains the offending value.
    pub description: String,
}

/// A non-empty list of violations: the error of every checked constructor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// A single violation.
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = Self::new();
        v.add(field, description);
        v
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Keeps the value of `result`, or records its violations under `prefix`.
    pub fn take<T>(&mut self, prefix: &str, result: Result<T, Violations>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(errs) => {
                for e in errs.0 {
                    let field = match (prefix.is_empty(), e.field.is_empty()) {
                        (true, _) => e.field,
                        (false, true) => prefix.to_string(),
                        (false, false) if e.field.starts_with('[') => {
                            format!("{prefix}{}", e.field)
                        }
                        (false, false) => format!("{prefix}.{}", e.field),
                    };
                    self.0.push(Violation {
                        field,
                        description: e.description,
                    });
                }
                None
            }
        }
    }

    /// `Ok(value)` when nothing was recorded, otherwise the violations.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Violations> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded violations.
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// Checks that `value` has between `min` and `max` characters.
pub(crate) fn check_len(value: &str, min: usize, max: usize) -> Result<(), Violations> {
    let n = value.chars().count();
    if n < min || n > max {
        let what = if min == 0 {
            format!("must be at most {max} characters")
        } else if n == 0 {
            "is required".to_string()
        } else {
            format!("must be {min} to {max} characters")
        };
        return Err(Violations::one("", what));
    }
    Ok(())
}

/// Characters no stored text may hold: control characters, the line and
/// paragraph separators (U+2028, U+2029: line breaks that are not `\n`),
/// and the bidirectional overrides and isolates that make a text show
/// other than it reads (U+202A to U+202E, U+2066 to U+2069).
pub(crate) fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// A [`hidden`] character that free text may not hold either: all of them
/// but line breaks and tabs.
pub(crate) fn hidden_in_text(c: char) -> bool {
    hidden(c) && !matches!(c, '\n' | '\r' | '\t')
}

/// What a violation says of a text holding a [`hidden`] character.
pub(crate) const HIDDEN_RULE: &str =
    "must not contain control characters or bidirectional overrides";

/// Checks that `value`, one line of text, has between `min` and `max`
/// characters and none that is [`hidden`]: texts are stored, shown by the
/// API and written into records and exports, where a NUL, a terminal
/// escape, a line break or a right-to-left override would travel with
/// them.
pub(crate) fn check_line(value: &str, min: usize, max: usize) -> Result<(), Violations> {
    check_chars(value, min, max, hidden, HIDDEN_RULE)
}

/// The same for free text, which may run over several lines: line breaks
/// and tabs are the control characters it may hold.
pub(crate) fn check_text(value: &str, min: usize, max: usize) -> Result<(), Violations> {
    check_chars(
        value,
        min,
        max,
        hidden_in_text,
        "must not contain control characters (but line breaks and tabs) or \
         bidirectional overrides",
    )
}

/// [`check_len`], then no character that is `refused` (`rule` says which).
fn check_chars(
    value: &str,
    min: usize,
    max: usize,
    refused: fn(char) -> bool,
    rule: &str,
) -> Result<(), Violations> {
    check_len(value, min, max)?;
    if value.chars().any(refused) {
        return Err(Violations::one("", rule));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_texts_hold_no_hidden_characters() {
        assert!(check_line("Backup Co (Tel Aviv)", 1, 200).is_ok());
        assert!(check_text("kept:\n\tinvoices\r\n", 0, 2000).is_ok());
        for bad in [
            "a\u{0}b",
            "a\u{1b}[31mb",
            "a\u{7f}b",
            "a\u{85}b",
            "abc\u{202e}fed",
            "a\u{2066}b",
            "a\u{2028}b",
        ] {
            assert!(check_line(bad, 0, 200).is_err(), "{bad:?}");
            assert!(check_text(bad, 0, 200).is_err(), "{bad:?}");
        }
        assert!(check_line("two\nlines", 0, 200).is_err());
        assert!(check_line("tab\there", 0, 200).is_err());
        assert!(check_line("", 1, 200).is_err());
    }
}
