//! The portable export's JSON document, `access-export.json` (format
//! [`FORMAT`], version [`VERSION`], published as
//! `docs/access-export.schema.json`), written piece by piece.
//!
//! Two writers produce it: the export stream, which sends the bytes to the
//! person, and the transaction that closes an access or portability
//! request, which only hashes them into the completion record's
//! `export_sha256`. Both go through [`ExportJson`], so the digest in the
//! record is the SHA-256 of the file the person receives, checkable with
//! `sha256sum`. That is why the document holds nothing that is not known
//! when the request closes (no time of export, not the record's own
//! digest, which covers this one): every export of a request is the same
//! bytes.

use serde::Serialize;

use super::{AccessScope, CompletionRecord, DataRecord, InstructionState, ProcessorLine};
use super::{RequestKind, Timestamp};

/// The document's format name.
pub const FORMAT: &str = "dsr-orchestrator/access-export";
/// Its version.
pub const VERSION: u32 = 1;

/// Whether a finished request of `kind` has a report, and whether the
/// specific pieces are part of it (and so of an export): always for
/// portability, for access when the person asked for them. `None`: the
/// kind has no report.
pub fn pieces_owed(kind: RequestKind, scope: Option<AccessScope>) -> Option<bool> {
    match kind {
        RequestKind::Portability => Some(true),
        RequestKind::Access => Some(scope == Some(AccessScope::SpecificPieces)),
        _ => None,
    }
}

/// RFC 3339 with microseconds and `Z`, as the HTTP API writes times.
pub fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[derive(Serialize)]
struct Head<'a> {
    format: &'a str,
    version: u32,
    request: RequestPart<'a>,
}

#[derive(Serialize)]
struct RequestPart<'a> {
    request_id: String,
    kind: &'a str,
    jurisdiction: &'a str,
    submitted_at: String,
    responded_at: String,
}

#[derive(Serialize)]
struct Answer<'a> {
    processor_id: &'a str,
    display_name: &'a str,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exception: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// A record as the HTTP API's JSON writes it.
#[derive(Serialize)]
struct Piece<'a> {
    category: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    category_label: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    field: &'a str,
    value: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    purpose: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    collected_at: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    disclosed_to: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sold_or_shared: bool,
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("export values serialise")
}

/// The document's bytes, in order: [`ExportJson::head`], then for each
/// line of the record (in the record's order) [`ExportJson::open`], the
/// line's records through [`ExportJson::record`] when it completed, and
/// [`ExportJson::close`]; last [`ExportJson::tail`].
#[derive(Debug, Default)]
pub struct ExportJson {
    lines: usize,
    records: usize,
}

impl ExportJson {
    /// The opening: format, version, the request's facts, and the start
    /// of the processors' list.
    pub fn head(record: &CompletionRecord) -> (Self, Vec<u8>) {
        let mut out = to_json(&Head {
            format: FORMAT,
            version: VERSION,
            request: RequestPart {
                request_id: record.request_id.to_string(),
                kind: record.kind.as_str(),
                jurisdiction: record.jurisdiction.as_str(),
                submitted_at: rfc3339(record.submitted_at),
                responded_at: rfc3339(record.responded_at),
            },
        });
        out.pop(); // the closing brace: the processors follow
        out.extend_from_slice(br#","processors":["#);
        (Self::default(), out)
    }

    /// A processor's answer, up to the start of its records.
    pub fn open(&mut self, line: &ProcessorLine) -> Vec<u8> {
        let denied = line.exception.is_some();
        let mut out = if self.lines > 0 {
            vec![b',']
        } else {
            Vec::new()
        };
        let mut answer = to_json(&Answer {
            processor_id: line.processor_id.as_str(),
            display_name: &line.display_name,
            state: line.state.as_str(),
            exception: line.exception.map(|e| e.as_str()),
            explanation: denied.then_some(line.explanation.as_str()),
            reason: (line.state == InstructionState::Failed).then_some(line.reason.as_str()),
        });
        answer.pop();
        out.extend_from_slice(&answer);
        out.extend_from_slice(br#","records":["#);
        self.lines += 1;
        self.records = 0;
        out
    }

    /// One record of the open line.
    pub fn record(&mut self, r: &DataRecord) -> Vec<u8> {
        let mut out = if self.records > 0 {
            vec![b',']
        } else {
            Vec::new()
        };
        out.extend_from_slice(&to_json(&Piece {
            category: &r.category,
            category_label: &r.category_label,
            field: &r.field,
            value: &r.value,
            source: &r.source,
            purpose: &r.purpose,
            collected_at: r.collected_at.map(rfc3339),
            disclosed_to: &r.disclosed_to,
            sold_or_shared: r.sold_or_shared,
        }));
        self.records += 1;
        out
    }

    /// The end of the open line.
    pub fn close(&mut self) -> &'static [u8] {
        b"]}"
    }

    /// The end of the document.
    pub fn tail(self) -> &'static [u8] {
        b"]}"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_access_and_portability_owe_pieces() {
        use AccessScope as A;
        assert_eq!(pieces_owed(RequestKind::Portability, None), Some(true));
        assert_eq!(
            pieces_owed(RequestKind::Access, Some(A::SpecificPieces)),
            Some(true)
        );
        assert_eq!(
            pieces_owed(RequestKind::Access, Some(A::Categories)),
            Some(false)
        );
        assert_eq!(pieces_owed(RequestKind::Delete, None), None);
    }

    #[test]
    fn a_record_is_written_as_the_http_api_writes_it() {
        let r = DataRecord {
            category: "other".into(),
            category_label: "loyalty tier".into(),
            field: "tier".into(),
            value: "gold \"plus\"".into(),
            source: String::new(),
            purpose: "rewards".into(),
            collected_at: chrono::DateTime::from_timestamp(1_700_000_000, 5_000),
            disclosed_to: vec!["advertisers".into()],
            sold_or_shared: true,
        };
        let mut doc = ExportJson::default();
        let first = doc.record(&r);
        let second = doc.record(&r);
        assert_eq!(
            String::from_utf8(first).unwrap(),
            r#"{"category":"other","category_label":"loyalty tier","field":"tier","value":"gold \"plus\"","purpose":"rewards","collected_at":"2023-11-14T22:13:20.000005Z","disclosed_to":["advertisers"],"sold_or_shared":true}"#
        );
        assert_eq!(second[0], b',', "records after the first are separated");
    }
}
