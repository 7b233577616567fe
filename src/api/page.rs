//! AIP-158 pagination shared by the list methods: page sizes default to 50
//! and are capped at 500; tokens are opaque strings the server issued.

use base64::Engine;

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

/// Unwraps a token made by [`encode_key`].
pub fn decode_key(token: &str) -> Result<String, Violations> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Violations::one("", "is not a token this server issued"))
}
