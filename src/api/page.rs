//! AIP-158 pagination shared by the list methods: page sizes default to 50
//! and are capped at 500; tokens are opaque strings the server issued,
//! bound to the filters they page through ([`bind`]): a token used with
//! other filters is refused rather than read as a position in another
//! listing.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::domain::Violations;

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size; larger requests are lowered to it (AIP-158).
pub const MAX_PAGE_SIZE: u32 = 500;

/// Validates a requested page size.
pub fn page_size(requested: i32) -> Result<u32, Violations> {
    match requested {
        n if n < 0 => Err(Violations::one("", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

/// An empty token means "first page".
pub fn page_token(token: &str) -> Option<&str> {
    (!token.is_empty()).then_some(token)
}

/// Wraps a key as an opaque token.
pub fn encode_key(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// `token` (a cursor as its listing encodes it) bound to `filters` (the
/// request's filter fields and who asks, as bytes): a fingerprint of them
/// goes with it, and [`unbind`] takes it back only with the same.
pub fn bind(token: &str, filters: &[u8]) -> String {
    encode_key(&format!("{}.{token}", fingerprint(filters)))
}

/// The cursor inside a token made by [`bind`] for the same `filters`.
pub fn unbind(token: &str, filters: &[u8]) -> Result<String, Violations> {
    let inner = decode_key(token)?;
    let Some((print, cursor)) = inner.split_once('.') else {
        return Err(not_issued());
    };
    if print != fingerprint(filters) {
        return Err(Violations::one(
            "",
            "was issued for other filters (or another caller): list again without it",
        ));
    }
    Ok(cursor.to_string())
}

/// What a `ListRequests` page token is bound to: every field of the call
/// but the page's own, and who asks (`actor`, as [`crate::domain::Actor`]
/// writes it: callers without the auditor role see only their own
/// submissions).
pub fn request_filters(req: &crate::pb::ListRequestsRequest, actor: &str) -> Vec<u8> {
    let mut filters = prost::Message::encode_to_vec(&crate::pb::ListRequestsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    filters.extend_from_slice(actor.as_bytes());
    filters
}

/// What a `ListInstructions` page token is bound to: every field of the
/// call but the page's own.
pub fn instruction_filters(req: &crate::pb::ListInstructionsRequest) -> Vec<u8> {
    prost::Message::encode_to_vec(&crate::pb::ListInstructionsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    })
}

/// A token this server did not issue.
fn not_issued() -> Violations {
    Violations::one("", "is not a token this server issued")
}

/// 64 bits of the SHA-256 of `filters`, in hex.
fn fingerprint(filters: &[u8]) -> String {
    hex::encode(&Sha256::digest(filters)[..8])
}

/// Unwraps a token made by [`encode_key`].
pub fn decode_key(token: &str) -> Result<String, Violations> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(not_issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_with_its_filters() {
        let token = bind("cursor.with.dots", b"status=OPEN");
        assert_eq!(unbind(&token, b"status=OPEN").unwrap(), "cursor.with.dots");
        assert!(unbind(&token, b"status=CLOSED").is_err());
        assert!(unbind(&encode_key("cursor"), b"status=OPEN").is_err());
        assert!(unbind("not base64!", b"status=OPEN").is_err());
    }
}
