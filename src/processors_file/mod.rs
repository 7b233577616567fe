//! The declarative processor registry: a YAML file, given with
//! `--processors-file`, that startup upserts so the processors a deployment
//! talks to can live in version control next to its Helm values.
//!
//! ```yaml
//! processors:
//!   - processor_id: platform-vendor       # 2-63 of [a-z0-9-], starts with a letter
//!     display_name: Platform Vendor Inc.
//!     role: VENDOR                        # GROUP_COMPANY, VENDOR, DISTRIBUTOR,
//!                                         # SERVICE_PROVIDER, CONTRACTOR, INTERNAL_SYSTEM
//!     country: US                         # ISO 3166-1 alpha-2
//!     supported_kinds: [DELETE, ACCESS]   # ACCESS, DELETE, PORTABILITY, CORRECT,
//!                                         # OBJECT, WITHDRAW_CONSENT
//!     accepted_identity_types: [EMAIL, ACCOUNT_ID]
//!     adapter: { grpc: { endpoint: "https://dsr.vendor.example:443", timeout: 10s } }
//!     # or `{ webhook: { url, timeout } }` (Standard Webhooks),
//!     # `{ dsr: { endpoint, timeout, token_file, poll_interval } }` (another
//!     # orchestrator), `{ opendsr: { url, timeout, poll_interval } }`,
//!     # `{ pull: {} }` or `{ manual: {} }`; a push adapter may add
//!     # `tls: { ca_file, client_cert_file, client_key_file }`
//!     retry_policy:                       # optional, and so is each field
//!       { initial_backoff: 1s, max_backoff: 5m, multiplier: 2.0, max_attempts: 8 }
//!     ack_timeout: 5m                     # optional, default 5m
//!     completion_timeout: 7d              # optional, default 7d
//!     max_reminders: 3                    # optional, default 3 (0 allowed)
//!     max_in_flight: 16                   # optional, across all replicas; unset: adaptive, from 16, at most 512
//!     max_deliveries_per_second: 50       # optional, default 0 (no limit), across all replicas
//!     safety_margin: 7d                   # optional, default 7d: its answer is due this long before the request's deadline
//! ```
//!
//! Names are the stable upper-case names of the domain enums (the protobuf
//! names without their prefix); durations are `humantime` strings (`100ms`,
//! `10s`, `5m`, `7d`). Unknown keys are rejected, so a typo fails startup
//! instead of silently taking a default.
//!
//! Loading happens in two steps with two kinds of error. Reading the YAML
//! rejects what does not fit the shape (an unknown key, an unknown enum
//! name, a malformed id or duration) with the line it is on. The entries
//! are then checked by the same domain constructors the API uses, with
//! every problem of an entry reported under its field path.

mod apply;
mod entry;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::domain::{ProcessorId, ProcessorSpec, Violations};
pub use apply::apply;
use entry::File;

/// Why a processors file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorsFileError {
    /// The file could not be read.
    #[error("cannot read processors file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("processors file {}{}: {message}", path.display(), at(*line, *column))]
    Yaml {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// What is wrong (the parser's message, with its field path).
        message: String,
    },
    /// An entry breaks a rule of the domain.
    #[error(
        "processors file {}: processors[{index}] ({processor_id}) is invalid: {violations}",
        path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 0-based position in `processors`.
        index: usize,
        /// The entry's id.
        processor_id: ProcessorId,
        /// Every problem of the entry, by field path (e.g.
        /// `adapter.grpc.endpoint`).
        violations: Violations,
    },
    /// Two entries have the same id.
    #[error("processors file {}: processor {processor_id} is declared more than once", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The repeated id.
        processor_id: ProcessorId,
    },
}

/// " at line L, column C", or nothing when the location is unknown.
fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

/// Reads and checks the processors file, returning its entries in file
/// order.
pub fn load(path: &Path) -> Result<Vec<ProcessorSpec>, ProcessorsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProcessorsFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: File = serde_yaml_ng::from_str(&text).map_err(|e| {
        let location = e.location();
        ProcessorsFileError::Yaml {
            path: path.to_path_buf(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message: message_without_location(&e),
        }
    })?;
    let mut seen = HashSet::new();
    let mut specs = Vec::with_capacity(file.processors.len());
    for (index, entry) in file.processors.into_iter().enumerate() {
        let processor_id = entry.processor_id.clone();
        let spec = entry
            .into_spec()
            .map_err(|violations| ProcessorsFileError::Invalid {
                path: path.to_path_buf(),
                index,
                processor_id,
                violations,
            })?;
        if !seen.insert(spec.id.clone()) {
            return Err(ProcessorsFileError::Duplicate {
                path: path.to_path_buf(),
                processor_id: spec.id,
            });
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// The parser's message without the " at line L column C" it appends, which
/// the error reports in its own fields.
fn message_without_location(e: &serde_yaml_ng::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(i) if e.location().is_some() => message[..i].to_string(),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::domain::{AdapterConfig, ProcessorRole, RequestKind, RetryPolicy};

    const EXAMPLE: &str = r#"
processors:
  - processor_id: platform-vendor
    display_name: Platform Vendor Inc.
    role: VENDOR
    country: US
    supported_kinds: [DELETE, ACCESS]
    accepted_identity_types: [EMAIL, ACCOUNT_ID]
    adapter: { grpc: { endpoint: "https://dsr.vendor.example:443", timeout: 10s } }
    retry_policy: { initial_backoff: 1s, max_backoff: 5m, multiplier: 2.0, max_attempts: 8 }
    ack_timeout: 5m
    completion_timeout: 7d
    max_reminders: 0
    max_in_flight: 16
    max_deliveries_per_second: 50
  - processor_id: group-co
    display_name: Group Co.
    role: GROUP_COMPANY
    country: JP
    supported_kinds: [DELETE]
    accepted_identity_types: [EMAIL]
    adapter: { pull: {} }
  - processor_id: paper-archive
    display_name: Paper Archive
    role: CONTRACTOR
    country: DE
    supported_kinds: [ACCESS]
    accepted_identity_types: [NAME, POSTAL_ADDRESS]
    adapter:
      manual: {}
    retry_policy: { max_attempts: 3 }
"#;

    fn load_str(yaml: &str) -> Result<Vec<ProcessorSpec>, ProcessorsFileError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(yaml.as_bytes()).unwrap();
        load(file.path())
    }

    /// The example with `from` replaced by `to` (which must occur).
    fn edited(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "{from}");
        EXAMPLE.replacen(from, to, 1)
    }

    #[test]
    fn federated_and_opendsr_processors_load() {
        let dsr = edited(
            "adapter: { pull: {} }",
            "adapter: { dsr: { endpoint: \"https://dsr.group.example:443\", token_file: /run/dsr/token, poll_interval: 1m } }",
        );
        let specs = load_str(&dsr).unwrap();
        assert_eq!(
            specs[1].adapter,
            AdapterConfig::dsr(
                "https://dsr.group.example:443",
                None,
                None,
                Some("/run/dsr/token".into()),
                Some(Duration::from_secs(60))
            )
            .unwrap()
        );
        let opendsr = edited(
            "adapter: { pull: {} }",
            "adapter: { opendsr: { url: \"https://opendsr.vendor.example\" } }",
        );
        let specs = load_str(&opendsr).unwrap();
        assert_eq!(
            specs[1].adapter.poll_interval(),
            Some(AdapterConfig::DEFAULT_POLL_INTERVAL)
        );
        let relative = edited(
            "adapter: { pull: {} }",
            "adapter: { dsr: { endpoint: \"https://dsr.group.example:443\", token_file: token } }",
        );
        let err = load_str(&relative).unwrap_err().to_string();
        assert!(err.contains("adapter.dsr.token_file"), "{err}");
    }

    #[test]
    fn the_documented_example_loads() {
        let specs = load_str(EXAMPLE).unwrap();
        let ids: Vec<_> = specs.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["platform-vendor", "group-co", "paper-archive"]);

        let vendor = &specs[0];
        assert_eq!(vendor.role, ProcessorRole::Vendor);
        assert_eq!(
            vendor.supported_kinds,
            [RequestKind::Access, RequestKind::Delete]
        );
        assert_eq!(
            vendor.adapter,
            AdapterConfig::grpc(
                "https://dsr.vendor.example:443",
                Some(Duration::from_secs(10)),
                None
            )
            .unwrap()
        );
        assert_eq!(vendor.retry_policy, RetryPolicy::default());
        assert_eq!(vendor.completion_timeout, Duration::from_secs(7 * 86400));
        assert_eq!(vendor.max_reminders, 0);
        assert_eq!(vendor.max_deliveries_per_second, 50);

        assert_eq!(specs[1].adapter, AdapterConfig::Pull);
        assert_eq!(specs[1].max_reminders, 3, "default");
        assert_eq!(specs[1].max_deliveries_per_second, 0, "default");
        assert_eq!(specs[2].adapter, AdapterConfig::Manual);
        assert_eq!(specs[2].retry_policy.max_attempts, 3);
        assert_eq!(
            specs[2].retry_policy.initial_backoff,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn shape_errors_carry_their_line() {
        let cases = [
            (edited("role: VENDOR", "role: VENDORS"), 5, "VENDORS"),
            (
                edited("    country: US", "    country: US\n    colour: blue"),
                7,
                "colour",
            ),
            (
                edited("timeout: 10s", "timeout: ten seconds"),
                9,
                "processors[0].adapter.grpc.timeout: invalid duration",
            ),
            (
                edited("processor_id: group-co", "processor_id: Group"),
                16,
                "processors[1].processor_id: \"Group\" must be",
            ),
            (edited("pull: {}", "push: {}"), 22, "push"),
            (edited("manual: {}", "manual: { who: ops }"), 30, "who"),
            (edited("max_attempts: 3", "max_attempts: -3"), 31, "-3"),
        ];
        for (yaml, expected_line, mentions) in cases {
            match load_str(&yaml) {
                Err(ProcessorsFileError::Yaml { line, message, .. }) => {
                    assert_eq!(line, Some(expected_line), "{message}");
                    assert!(message.contains(mentions), "{message}");
                }
                other => panic!("expected a YAML error for {mentions}, got {other:?}"),
            }
        }
    }

    #[test]
    fn domain_errors_list_every_field() {
        let yaml = edited(
            r#"{ grpc: { endpoint: "https://dsr.vendor.example:443", timeout: 10s } }"#,
            r#"{ grpc: { endpoint: "dsr.vendor.example", timeout: 10m } }"#,
        )
        .replacen("country: US", "country: usa", 1)
        .replacen("max_backoff: 5m", "max_backoff: 100ms", 1)
        .replacen("max_in_flight: 16", "max_in_flight: 0", 1);
        let Err(ProcessorsFileError::Invalid {
            index,
            processor_id,
            violations,
            ..
        }) = load_str(&yaml)
        else {
            panic!("expected an invalid entry");
        };
        assert_eq!((index, processor_id.as_str()), (0, "platform-vendor"));
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "adapter.grpc.endpoint",
                "adapter.grpc.timeout",
                "retry_policy.max_backoff",
                "country",
                "max_in_flight",
            ]
        );
    }

    #[test]
    fn duplicates_empty_files_and_missing_files() {
        let twice = edited("processor_id: paper-archive", "processor_id: group-co");
        assert!(matches!(
            load_str(&twice),
            Err(ProcessorsFileError::Duplicate { processor_id, .. }) if processor_id.as_str() == "group-co"
        ));
        assert_eq!(load_str("processors: []\n").unwrap(), []);
        assert!(matches!(
            load_str(""),
            Err(ProcessorsFileError::Yaml { .. })
        ));
        assert!(matches!(
            load(Path::new("/nonexistent/processors.yaml")),
            Err(ProcessorsFileError::Io { .. })
        ));
    }
}
