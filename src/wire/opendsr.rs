//! The JSON of OpenDSR 2.0 (the successor of OpenGDPR), as far as the
//! orchestrator speaks it as a controller: the request it POSTs to a
//! processor's `/opendsr/requests`, the status a processor reports (in
//! the answer to `GET /opendsr/requests/{id}` and in its status
//! callbacks), and its `/discovery` document. Unknown fields are ignored:
//! processors add their own.
//!
//! Mapping from our request kinds: ACCESS is `access`, DELETE `erasure`,
//! PORTABILITY `portability`; OpenDSR has no type for the others, so a
//! processor on OpenDSR cannot be registered for them
//! ([`subject_request_type`]). Identities: EMAIL is an `email`, ACCOUNT_ID
//! a `controller_customer_id`, both `raw`; OpenDSR has no type for our
//! others, so they are not accepted ([`identity_type`]).

use serde::{Deserialize, Serialize};

use crate::domain::{IdentityType, InstructionView, Jurisdiction, RequestKind, SubjectIdentity};

/// The OpenDSR version spoken.
pub const API_VERSION: &str = "2.0";

/// The OpenDSR type of a request kind; `None` for kinds it lacks.
pub fn subject_request_type(kind: RequestKind) -> Option<&'static str> {
    match kind {
        RequestKind::Access => Some("access"),
        RequestKind::Delete => Some("erasure"),
        RequestKind::Portability => Some("portability"),
        RequestKind::Correct | RequestKind::Object | RequestKind::WithdrawConsent => None,
    }
}

/// The OpenDSR type of an identity type; `None` for types it lacks.
pub fn identity_type(kind: IdentityType) -> Option<&'static str> {
    match kind {
        IdentityType::Email => Some("email"),
        IdentityType::AccountId => Some("controller_customer_id"),
        _ => None,
    }
}

/// `POST /opendsr/requests`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewRequest {
    /// Our instruction id: the processor's de-duplication key.
    pub subject_request_id: String,
    /// `access`, `erasure` or `portability`.
    pub subject_request_type: String,
    /// When the person made the request (RFC 3339).
    pub submitted_time: String,
    /// The identities the processor accepts.
    pub subject_identities: Vec<Identity>,
    /// `2.0`.
    pub api_version: String,
    /// Where the processor reports status changes (empty when the
    /// orchestrator has no public URL: it then polls only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_callback_urls: Vec<String>,
    /// The law: `gdpr` or `ccpa` as OpenDSR 2.0 names them; `appi` and
    /// `other` for our other regimes, which a processor that knows only
    /// the two may refuse (the refusal escalates to an operator).
    pub regulation: String,
}

/// One subject identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    /// `email` or `controller_customer_id`.
    pub identity_type: String,
    /// The value (personal data).
    pub identity_value: String,
    /// `raw`: the value as the person gave it.
    pub identity_format: String,
}

/// A processor's status of one request (`GET /opendsr/requests/{id}`,
/// and the body of its status callbacks).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Our instruction id.
    pub subject_request_id: String,
    /// `pending`, `in_progress`, `completed` or `cancelled`.
    pub request_status: String,
    /// When the processor expects to finish (RFC 3339), if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_completion_time: Option<String>,
    /// The processor's OpenDSR version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// What a status means for the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still being worked on (`pending`, `in_progress`).
    Open,
    /// `completed`.
    Completed,
    /// `cancelled` by the processor.
    Cancelled,
}

impl Status {
    /// A status from the body of a processor's answer or callback; the
    /// refusal says where the body went wrong, not what it held (see
    /// [`super::json::decode_error`]).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body)
            .map_err(|e| format!("not an OpenDSR status: {}", super::json::decode_error(&e)))
    }

    /// The progress reported; `None` for a status OpenDSR does not name.
    pub fn progress(&self) -> Option<Progress> {
        match self.request_status.as_str() {
            "pending" | "in_progress" => Some(Progress::Open),
            "completed" => Some(Progress::Completed),
            "cancelled" => Some(Progress::Cancelled),
            _ => None,
        }
    }
}

/// The part of a processor's `GET /discovery` the orchestrator uses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Discovery {
    /// The URL of the PEM certificate whose key signs the processor's
    /// callbacks.
    pub processor_certificate: String,
    /// The processor's OpenDSR version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// The OpenDSR request for `instruction`, carrying `identities` (already
/// filtered to the processor's accepted types; others are left out).
pub fn new_request(
    instruction: &InstructionView,
    identities: &[SubjectIdentity],
    callback_url: Option<String>,
) -> Option<NewRequest> {
    let regulation = match instruction.jurisdiction {
        Jurisdiction::Gdpr => "gdpr",
        Jurisdiction::Ccpa => "ccpa",
        Jurisdiction::Appi => "appi",
        Jurisdiction::Other => "other",
    };
    Some(NewRequest {
        subject_request_id: instruction.id.to_string(),
        subject_request_type: subject_request_type(instruction.kind)?.to_string(),
        submitted_time: instruction
            .submitted_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        subject_identities: identities
            .iter()
            .filter_map(|i| {
                Some(Identity {
                    identity_type: identity_type(i.kind)?.to_string(),
                    identity_value: i.value.clone(),
                    identity_format: "raw".to_string(),
                })
            })
            .collect(),
        api_version: API_VERSION.to_string(),
        status_callback_urls: callback_url.into_iter().collect(),
        regulation: regulation.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let status = |s: &str| Status {
            subject_request_id: "x".into(),
            request_status: s.into(),
            expected_completion_time: None,
            api_version: None,
        };
        assert_eq!(status("pending").progress(), Some(Progress::Open));
        assert_eq!(status("in_progress").progress(), Some(Progress::Open));
        assert_eq!(status("completed").progress(), Some(Progress::Completed));
        assert_eq!(status("cancelled").progress(), Some(Progress::Cancelled));
        assert_eq!(status("done").progress(), None);
        let parsed: Status = serde_json::from_str(
            r#"{"subject_request_id":"a","request_status":"completed","controller_id":"c"}"#,
        )
        .unwrap();
        assert_eq!(parsed.progress(), Some(Progress::Completed));
    }

    #[test]
    fn kinds_opendsr_lacks_have_no_type() {
        assert_eq!(subject_request_type(RequestKind::Delete), Some("erasure"));
        assert_eq!(subject_request_type(RequestKind::Correct), None);
        assert_eq!(identity_type(IdentityType::Phone), None);
    }
}
