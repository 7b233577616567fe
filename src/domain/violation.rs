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
